//! Latent-variable models: the VAE family (VAE, IWAE, conditional VAE, β-VAE).
//!
//! [`model`] is the model (encoder / decoder, objectives, trait impls), [`config`] its hyper-parameters and
//! presets, [`decoders`] the observation models p(x | z) (Bernoulli, Gaussian, discretized logistic).

pub mod config;
pub mod decoders;
pub mod model;

pub use config::{prepare, preset, VaeConfig};
pub use model::{gaussian_kl, Vae};

#[cfg(test)]
mod tests;
