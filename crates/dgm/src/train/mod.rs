//! Training: the run configuration, AdamW with warm-up + cosine schedule, gradient clipping and
//! accumulation, EMA of weights, seeded data order, checkpoints that resume bit for bit, metrics and plots.
//!
//! Families whose training is not "minimise one loss" (GANs: two optimisers) write their own loop from the
//! same pieces: [`optim::AdamW`], [`run::RunDir`], [`loader::Loader`], [`ema::Ema`] and [`log::MetricsLog`].

pub mod config;
pub mod ema;
pub mod loader;
pub mod log;
pub mod optim;
pub mod plot;
pub mod run;
pub mod trainer;

pub use config::{DataConfig, ModelSection, RunConfig, TrainConfig};
pub use run::{LoadedRun, RunDir, Weights};
pub use trainer::{train, TrainOptions, TrainOutcome};
