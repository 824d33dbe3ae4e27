//! Measurements of trained models: likelihoods (with their kind and bits/dim), sample quality in a learned
//! feature space (FID, KID, precision / recall, classifier scores), two-sample tests, and anomaly /
//! out-of-distribution detection.

pub mod ais;
pub mod attributes;
pub mod energy;
pub mod features;
pub(crate) mod json;
pub mod likelihood;
pub mod linalg;
pub mod mmd;
pub mod ood;
pub mod quality;
pub mod restoration;
pub mod suite;
pub mod translation;

pub use likelihood::{evaluate_nll, nll_report, per_example_nll, NllReport, PerExampleNll};
