//! The Gated PixelCNN's hyper-parameters ([`PixelCnnConfig`]), its memory estimate and how a config is
//! prepared for its data.

use serde::{Deserialize, Serialize};

use crate::data::{Preprocessing, Range};
use crate::{Error, Result};

/// Output distributions (`auto` picks from the preprocessing).
pub const OUTPUTS: &[&str] = &["auto", "bernoulli", "softmax", "logistic_mixture"];

/// Gated PixelCNN hyper-parameters (`[model]` in a run's config). The defaults (32 channels, a 7×7 first
/// layer and 6 gated 3×3 layers, 266k parameters) are sized for binarized MNIST on 2 CPU cores: one training
/// step of 64 images took 1.4–1.7 s there (2.3–4.9 s while other builds shared the cores), about 1200 steps
/// in 30 minutes (in a trial run on MNIST the NLL fell from 518 to about 120 nats in the first 80 steps).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PixelCnnConfig {
    /// Shape of one image `[c, h, w]`; filled by [`prepare`].
    pub example_shape: Vec<usize>,
    /// Hidden channels p of each stack (the gates' convolutions output 2p).
    pub channels: usize,
    /// Gated residual layers after the first layer.
    pub layers: usize,
    /// Kernel size of the gated layers (odd).
    pub kernel: usize,
    /// Kernel size of the first layer (odd, ≥ 3).
    pub first_kernel: usize,
    /// `auto` (Bernoulli for binarized data, logistic mixture for 8-bit), `bernoulli`, `softmax` or
    /// `logistic_mixture`; `prepare` resolves `auto`.
    pub output: String,
    /// Components of the discretized logistic mixture.
    pub mixtures: usize,
    /// Condition on the class label (eq. 4 of the paper).
    pub class_conditional: bool,
    /// Number of classes (0 = unconditional); filled by [`prepare`].
    pub num_classes: usize,
    /// Build the original PixelCNN stack of mask-A / mask-B convolutions, which has the blind spot.
    pub blind_spot: bool,
    /// Number of pixel levels: 2 for binarized data, 256 for 8-bit; filled by [`prepare`].
    pub levels: usize,
    /// The interval the levels are scaled into (the preprocessing's range); filled by [`prepare`].
    pub range: Range,
}

impl Default for PixelCnnConfig {
    fn default() -> Self {
        Self {
            example_shape: vec![],
            channels: 32,
            layers: 6,
            kernel: 3,
            first_kernel: 7,
            output: "auto".into(),
            mixtures: 5,
            class_conditional: false,
            num_classes: 0,
            blind_spot: false,
            levels: 2,
            range: Range::ZeroOne,
        }
    }
}

impl PixelCnnConfig {
    /// A small config for tests.
    pub fn tiny() -> Self {
        Self {
            channels: 8,
            layers: 2,
            first_kernel: 3,
            mixtures: 2,
            ..Self::default()
        }
    }

    /// The output distribution with `auto` resolved from the number of levels.
    pub(super) fn resolved_output(&self) -> &str {
        match (self.output.as_str(), self.levels) {
            ("auto", 2) => "bernoulli",
            ("auto", _) => "logistic_mixture",
            (o, _) => o,
        }
    }

    /// Parameters per pixel and colour of the output distribution.
    pub(super) fn params_per_colour(&self) -> usize {
        match self.resolved_output() {
            "bernoulli" => 1,
            "softmax" => self.levels,
            _ => 3 * self.mixtures,
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        let [c, h, w] = self.example_shape[..] else {
            return Err(Error::invalid(
                "model.example_shape",
                format!(
                    "{:?}: pixelcnn models images [c, h, w] (run prepare with image data)",
                    self.example_shape
                ),
            ));
        };
        if c == 0 || h == 0 || w == 0 {
            return Err(Error::invalid(
                "model.example_shape",
                format!("{:?} has an empty dimension", self.example_shape),
            ));
        }
        if self.channels < c {
            return Err(Error::invalid(
                "model.channels",
                format!("{} must be at least the {c} image channels", self.channels),
            ));
        }
        for (key, k, min) in [
            ("model.kernel", self.kernel, 1),
            ("model.first_kernel", self.first_kernel, 3),
        ] {
            if k < min || k.is_multiple_of(2) {
                return Err(Error::invalid(key, format!("{k} must be odd and ≥ {min}")));
            }
        }
        if !OUTPUTS.contains(&self.output.as_str()) {
            return Err(Error::unknown("model.output", &self.output, OUTPUTS));
        }
        if self.levels < 2 {
            return Err(Error::invalid(
                "model.levels",
                format!("{} must be ≥ 2", self.levels),
            ));
        }
        if self.resolved_output() == "bernoulli" && self.levels != 2 {
            return Err(Error::invalid(
                "model.output",
                format!("bernoulli needs binarized data, these have {} levels; use softmax or logistic_mixture", self.levels),
            ));
        }
        if self.mixtures == 0 {
            return Err(Error::invalid("model.mixtures", "must be at least 1"));
        }
        if self.class_conditional != (self.num_classes > 0) {
            return Err(Error::invalid(
                "model.num_classes",
                format!("{} with class_conditional = {}: a conditional model needs ≥ 1 class (run prepare with labelled data), an unconditional one 0", self.num_classes, self.class_conditional),
            ));
        }
        Ok(())
    }
}

/// The memory estimate of a prepared config (see [`crate::models::Footprint`]): per pixel, each of the
/// `layers` gated layers keeps its vertical and horizontal stacks' 2p-channel gate inputs, their gated p-channel
/// outputs and the residual sum (about 7p values); the first layer 2p; the output keeps c × the output
/// distribution's parameters per colour; × 2 for the gradients.
pub fn footprint(cfg: &PixelCnnConfig) -> crate::models::Footprint {
    use crate::models::{sat_mul, sat_prod, sat_sum};
    let pixels = sat_prod(cfg.example_shape.get(1..).unwrap_or(&[]));
    let c = cfg.example_shape.first().copied().unwrap_or(1) as u64;
    let p = cfg.channels as u64;
    let per_pixel = sat_sum([
        c,
        sat_mul(2, p),
        sat_mul(cfg.layers as u64, sat_mul(7, p)),
        sat_mul(c, cfg.params_per_colour() as u64),
    ]);
    crate::models::Footprint {
        buffers: 0,
        activations_per_example: sat_mul(2, sat_mul(pixels, per_pixel)),
    }
}

/// Fills the data-dependent fields (shape, levels and range, classes), resolves `output = "auto"`, and rejects
/// data PixelCNN cannot model.
pub fn prepare(cfg: &mut PixelCnnConfig, data: &crate::models::DataInfo) -> Result<()> {
    if data.tokenizer.is_some() || data.example_shape.len() != 3 {
        return Err(Error::invalid(
            "model",
            format!("pixelcnn models images [c, h, w], not data of shape {:?}; use made for vectors or gpt for text", data.example_shape),
        ));
    }
    cfg.example_shape = data.example_shape.clone();
    (cfg.levels, cfg.range) =
        match &data.preprocessing {
            Preprocessing::Binarize { .. } => (2, Range::ZeroOne),
            Preprocessing::Scale {
                range,
                dequantize: false,
            } => (256, *range),
            Preprocessing::Scale {
                dequantize: true, ..
            } => {
                return Err(Error::invalid(
                    "data.preprocessing",
                    "pixelcnn models the 256 discrete levels: set dequantize = false",
                ))
            }
            Preprocessing::Identity => return Err(Error::invalid(
                "data.preprocessing",
                "pixelcnn needs binarize or scale (dequantize = false) preprocessing, not identity",
            )),
        };
    cfg.num_classes = crate::models::autoregressive::classes_for(
        cfg.class_conditional,
        data.num_classes,
        "pixelcnn",
    )?;
    if cfg.output == "auto" {
        cfg.output = cfg.resolved_output().to_string();
    }
    cfg.validate()
}
