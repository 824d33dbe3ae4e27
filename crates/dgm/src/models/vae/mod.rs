//! Latent-variable models: the VAE family (VAE, IWAE, conditional VAE, β-VAE).
//!
//! [`model`] holds the model (config, encoder / decoder, objectives, trait impls); [`decoders`] the
//! observation models p(x | z) (Bernoulli, Gaussian, discretized logistic).

pub mod decoders;
pub mod model;

pub use model::{gaussian_kl, prepare, preset, Vae, VaeConfig};

#[cfg(test)]
mod tests;
