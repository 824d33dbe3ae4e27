//! Probability distributions over data, shared by the model families: log-probabilities (with fused CPU
//! kernels where a training step spends its time) and samplers. A model keeps its network; what the network
//! outputs becomes a distribution here.
//!
//! * [`bernoulli`]: binary values (the VAE's Bernoulli decoder, MADE, PixelCNN's `bernoulli` output).
//! * [`gaussian`]: the Gaussian density (the VAE's Gaussian decoder) and the Gaussian discretized over the bins
//!   of quantized data (the decoder p(x₀ | x₁) of the diffusion models' variational bound).
//! * [`logistic`]: the discretized logistic over 256 levels (the VAE's logistic decoder) and the discretized
//!   mixture of logistics (PixelCNN++'s output).
//! * [`categorical`]: a softmax over the data's levels (PixelCNN's `softmax` output).
//!
//! Tensor log-probabilities are summed over the last dimension unless they say otherwise.

pub mod bernoulli;
pub mod categorical;
pub mod gaussian;
pub mod logistic;

use candle_core::Tensor;

use crate::Result;

pub use bernoulli::{bernoulli_log_prob, bernoulli_terms};
pub use categorical::{log_softmax, softmax_levels_log_prob};
pub use gaussian::{gaussian_log_prob, log_gaussian_interval};
pub use logistic::{discretized_logistic_log_prob, discretized_logistic_mixture_log_prob};

/// softplus(t) = log(1 + eᵗ) = max(t, 0) + log(1 + e^−|t|), stable for any t.
pub fn softplus(t: &Tensor) -> Result<Tensor> {
    let tail = (t.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((t.relu()? + tail)?)
}
