//! The settings of a feature network: its architecture ([`FeatureNetConfig`]) and how it is trained
//! ([`FeatureTrainConfig`]), each with its defaults and validation.

use serde::{Deserialize, Serialize};

use crate::data::GeneratedSizes;
use crate::{Error, Result};

/// The architecture of a [`FeatureNet`](super::FeatureNet).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureNetConfig {
    /// Channels of each stage.
    pub channels: Vec<usize>,
    /// Stride (1 or 2) of the first convolution of each stage, one entry per stage; a stride of 2 halves
    /// the resolution, rounding up (28 → 14 → 7 → 4, 32 → 16 → 8 → 4).
    pub strides: Vec<usize>,
    /// 3×3 convolutions per stage (at least 1), each followed by group norm and SiLU.
    pub convs_per_stage: usize,
    /// Group-norm groups; every entry of `channels` must be a multiple of it.
    pub groups: usize,
    /// Size of the feature layer (the penultimate layer, the metric's feature space).
    pub feature_dim: usize,
}

impl Default for FeatureNetConfig {
    /// The default: three stride-2 stages of 32, 64 and 64 channels (28 → 14 → 7 → 4), one convolution
    /// each, 8 groups, 128 features. Trained with the default [`FeatureTrainConfig`] it reaches 99.2–99.3 %
    /// on the MNIST test set (seeds 0, 1, 2) in 1–1.5 minutes on 2 CPU cores.
    fn default() -> Self {
        Self {
            channels: vec![32, 64, 64],
            strides: vec![2, 2, 2],
            convs_per_stage: 1,
            groups: 8,
            feature_dim: 128,
        }
    }
}

impl FeatureNetConfig {
    /// A very small network for tests: two stride-2 stages of 8 and 16 channels, 32 features.
    pub fn tiny() -> Self {
        Self {
            channels: vec![8, 16],
            strides: vec![2, 2],
            convs_per_stage: 1,
            groups: 4,
            feature_dim: 32,
        }
    }

    /// Checks the values; the error names the bad key.
    pub fn validate(&self) -> Result<()> {
        if self.channels.is_empty() || self.channels.contains(&0) {
            return Err(Error::invalid(
                "features.channels",
                format!(
                    "{:?}: need at least one stage, each with at least 1 channel",
                    self.channels
                ),
            ));
        }
        if self.strides.len() != self.channels.len()
            || self.strides.iter().any(|s| !(1..=2).contains(s))
        {
            return Err(Error::invalid(
                "features.strides",
                format!(
                    "{:?}: need one stride, 1 or 2, per stage ({} stages)",
                    self.strides,
                    self.channels.len()
                ),
            ));
        }
        if self.convs_per_stage == 0 {
            return Err(Error::invalid(
                "features.convs_per_stage",
                "must be at least 1",
            ));
        }
        if self.groups == 0 {
            return Err(Error::invalid("features.groups", "must be at least 1"));
        }
        if let Some(c) = self
            .channels
            .iter()
            .find(|c| !c.is_multiple_of(self.groups))
        {
            return Err(Error::invalid(
                "features.groups",
                format!(
                    "{} groups do not divide the {c} channels of a stage (channels {:?}); use a common divisor",
                    self.groups, self.channels
                ),
            ));
        }
        if self.feature_dim == 0 {
            return Err(Error::invalid("features.feature_dim", "must be at least 1"));
        }
        Ok(())
    }
}

/// How a [`FeatureNet`](super::FeatureNet) is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureTrainConfig {
    /// Passes over the training split (used when `steps` is 0).
    pub epochs: usize,
    /// Number of optimiser steps; 0 means `epochs` × (training examples / `batch_size`).
    pub steps: u64,
    /// Examples per step.
    pub batch_size: usize,
    /// Peak learning rate of AdamW.
    pub lr: f64,
    /// Linear warm-up steps before the cosine decay.
    pub warmup_steps: u64,
    /// The learning rate at the last step, as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Random translations of up to this many pixels along each axis (edges replicated); 0 turns them off.
    pub max_shift: usize,
    /// Seed of the initial weights, the data order and the augmentation.
    pub seed: u64,
    /// Training examples generated for generated data sets (`shapes`); ignored for MNIST.
    pub generated_train: usize,
    /// Test examples generated for generated data sets (`shapes`); ignored for MNIST.
    pub generated_test: usize,
    /// Report the mean training loss every this many steps (0: only at the end).
    pub log_every: u64,
}

impl Default for FeatureTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 3,
            steps: 0,
            batch_size: 128,
            lr: 3e-3,
            warmup_steps: 100,
            min_lr_ratio: 0.0,
            weight_decay: 1e-4,
            max_shift: 1,
            seed: 0,
            generated_train: GeneratedSizes::default().train,
            generated_test: GeneratedSizes::default().test,
            log_every: 100,
        }
    }
}

impl FeatureTrainConfig {
    /// Checks the values; the error names the bad key.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 && self.steps == 0 {
            return Err(Error::invalid(
                "features.epochs",
                "set epochs or steps to at least 1",
            ));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("features.batch_size", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid(
                "features.lr",
                format!("{}: must be a positive number", self.lr),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(Error::invalid(
                "features.min_lr_ratio",
                format!("{}: must be in [0, 1]", self.min_lr_ratio),
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::invalid(
                "features.weight_decay",
                format!("{}: must be a non-negative number", self.weight_decay),
            ));
        }
        Ok(())
    }
}
