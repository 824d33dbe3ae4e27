//! # dgm: deep generative models in Rust
//!
//! One API for every family of deep generative model (see [`model`]): autoregressive models, normalizing
//! flows, latent-variable models (VAEs), implicit models (GANs), energy-based models and diffusion /
//! score-based models, on top of candle. Likelihoods are comparable across families (exact / bound / estimate,
//! in nats and bits/dim on the same preprocessing), randomness is seeded through [`rng::Rng`], and training
//! runs are reproducible bit for bit.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod conditioning;
pub mod data;
pub mod distributions;
pub mod error;
pub mod events;
pub mod image_io;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod models;
pub mod nn;
pub mod ops;
pub mod pipelines;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod schedulers;
pub mod train;

pub use error::{Error, Result};
