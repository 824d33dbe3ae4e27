//! Measurements of trained models. Today: negative log-likelihood over a data split, with its kind and
//! bits/dim on the run's preprocessing.

pub mod likelihood;

pub use likelihood::{evaluate_nll, NllReport};
