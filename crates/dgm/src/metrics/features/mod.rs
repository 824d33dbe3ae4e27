//! dgm's own feature network for sample-quality metrics ("FID-MNIST", "FID-shapes").
//!
//! The Fréchet Inception Distance (Heusel et al., 2017, "GANs Trained by a Two Time-Scale Update Rule
//! Converge to a Local Nash Equilibrium", eq. 6: d² = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2(Σ_r Σ_g)^{1/2})), the
//! Kernel Inception Distance (Bińkowski et al., 2018) and precision / recall (Kynkäänniemi et al., 2019) all
//! compare real and generated images in the feature space of a classifier: Inception-v3's 2048-d pool layer
//! (Szegedy et al., 2016) for ImageNet-like data. Those weights cannot be downloaded here and ImageNet
//! features are a poor fit for 28×28 digits anyway, so, as is common for MNIST, dgm trains a small
//! domain-specific CNN classifier and uses its penultimate layer as the feature space. Numbers computed
//! with it are comparable only between runs that use the *same* feature network (same data, config and
//! seed); they are not comparable with published FIDs.
//!
//! The network ([`FeatureNet`]): inputs are images `(n, c, h, w)` with values in [0, 1] (raw 8-bit pixel /
//! 255, see [`dataset_images`] and [`samples_to_images`]), mapped to [−1, 1] inside the net; then stages of
//! 3×3 convolutions, each followed by group normalisation (Wu & He, 2018) and SiLU, where a stage may start
//! with a stride-2 convolution instead of pooling; then the flattened map goes through
//! `f = silu(W_f · h + b_f)` (the features, [`FeatureNetConfig::feature_dim`]) and the logits `z = W_z f + b_z`.
//! It is trained with the softmax cross-entropy −log softmax(z)_y, AdamW (Loshchilov & Hutter, 2019) and a
//! linear warm-up then cosine learning-rate decay (Loshchilov & Hutter, 2017), with optional random
//! translations of up to [`FeatureTrainConfig::max_shift`] pixels (edges replicated). Data order and
//! augmentation come from dgm's seeded [`Rng`], and dgm's CPU kernels do not depend on the thread count, so
//! training is bit-for-bit reproducible for a given seed.
//!
//! A trained network lives in a directory ([`default_dir`]: `features/<data name>`) as `features.safetensors`
//! (weights) and `features.json` ([`FeatureNetInfo`]: what it was trained on, how, and its test accuracy).
//!
//! [`Rng`]: crate::rng::Rng

mod config;
mod images;
mod io;
mod net;
#[cfg(test)]
mod tests;
mod train;

pub use config::{FeatureNetConfig, FeatureTrainConfig};
pub use images::{dataset_images, samples_to_images};
pub use io::{default_dir, load, FeatureNetInfo, TrainedFeatureNet, INFO_FILE, WEIGHTS_FILE};
pub use net::{Embedding, FeatureNet};
pub use train::{train_feature_net, train_feature_net_on};
