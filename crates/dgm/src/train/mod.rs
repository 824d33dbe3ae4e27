//! Training: the run configuration, AdamW with warm-up + cosine schedule, gradient clipping and
//! accumulation, EMA of weights, seeded data order, checkpoints that resume bit for bit, metrics and plots.
//!
//! The loop ([`trainer`]) drives a [`step::TrainStep`] over [`step::Optimizers`], one AdamW per parameter
//! group: [`step::LossStep`] minimises one loss; families with several losses and optimisers (GANs) bring their
//! own step.

pub mod config;
pub mod ema;
pub mod loader;
pub mod log;
pub mod optim;
pub mod plot;
pub mod run;
pub mod step;
pub mod trainer;

pub use config::{DataConfig, ModelSection, RunConfig, TrainConfig};
pub use run::{LoadedRun, RunDir, Weights};
pub use step::{GroupSpec, LossStep, Optimizers, Schedule, StepContext, StepReport, TrainStep};
pub use trainer::{optimizers_for, train, TrainOptions, TrainOutcome};
