//! Energy-based models, p(x) = exp(−E(x)) / Z with any network as the energy E: the family's shared pieces.
//! [`langevin`] is the MCMC sampler that contrastive-divergence training and `dgm sample` run on an energy;
//! [`buffer`] holds contrastive divergence's persistent chains (saved with the weights) and [`cd`] is its loss;
//! [`nce`] is noise-contrastive estimation's objective, which also learns log Z. [`ebm`] builds the models
//! `ebm` (CD or NCE) and `jem` on them.
//!
//! Score matching of an energy (∇ₓ log p = −∇ₓE) would need the gradient of a gradient, and candle has no
//! second-order autodiff (candle#2462); this family therefore trains by contrastive divergence and
//! noise-contrastive estimation, which need first-order gradients only.

pub mod buffer;
pub mod cd;
pub mod config;
#[allow(clippy::module_inception)]
pub mod ebm;
pub mod langevin;
pub mod nce;
mod net;
mod noise;
