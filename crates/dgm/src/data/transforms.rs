//! Preprocessing: how raw 8-bit pixels become model inputs. The choice is recorded in the run's config, and
//! [`crate::model::bits_per_dim`] uses it so that likelihoods from different families line up.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::{Error, Result};

/// The seed of the fixed ("static") binarisation used for evaluation.
pub const STATIC_BINARIZATION_SEED: u64 = 0xB1_7A_12_ED;

/// The interval pixels are scaled into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Range {
    /// [0, 1]
    ZeroOne,
    /// [−1, 1]
    MinusOneOne,
}

impl Range {
    /// (lo, hi).
    pub fn bounds(&self) -> (f32, f32) {
        match self {
            Range::ZeroOne => (0.0, 1.0),
            Range::MinusOneOne => (-1.0, 1.0),
        }
    }
}

/// How raw data become model inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Preprocessing {
    /// Binary pixels: each pixel/255 is the probability of a 1. `dynamic = true` draws afresh every time an
    /// image is drawn (from the run's RNG); `dynamic = false` is one fixed binarisation per example (seed
    /// [`STATIC_BINARIZATION_SEED`] and the example's index), used for evaluation.
    Binarize {
        /// Resample every time (training) or fixed per example (evaluation).
        dynamic: bool,
    },
    /// Pixels scaled into `range`. With `dequantize`, uniform noise is added first: x = (k + u) / 256,
    /// u ~ U[0, 1), then mapped to the range; without it, x = k / 255 mapped to the range.
    Scale {
        /// Target interval.
        range: Range,
        /// Add uniform dequantisation noise.
        dequantize: bool,
    },
    /// Values used as they are (2-D points, text tokens).
    Identity,
}

impl Preprocessing {
    /// A short human-readable description, e.g. "dynamically binarized".
    pub fn describe(&self) -> String {
        match self {
            Preprocessing::Binarize { dynamic: true } => {
                "dynamically binarized (Bernoulli(pixel/255), redrawn each time)".into()
            }
            Preprocessing::Binarize { dynamic: false } => {
                format!("statically binarized (Bernoulli(pixel/255), fixed seed {STATIC_BINARIZATION_SEED:#x})")
            }
            Preprocessing::Scale { range, dequantize } => {
                let (lo, hi) = range.bounds();
                if *dequantize {
                    format!("uniformly dequantized, scaled to [{lo}, {hi}]")
                } else {
                    format!("scaled to [{lo}, {hi}] (no dequantization)")
                }
            }
            Preprocessing::Identity => "raw values".into(),
        }
    }

    /// The preprocessing to evaluate a model trained with `self`: dynamic binarisation becomes the fixed one.
    pub fn for_eval(&self) -> Preprocessing {
        match self {
            Preprocessing::Binarize { .. } => Preprocessing::Binarize { dynamic: false },
            p => p.clone(),
        }
    }

    /// Width of one 8-bit pixel bin in the preprocessed space, for densities over scaled pixels;
    /// `None` when the data are discrete (binarized) or genuinely continuous.
    pub fn bin_width(&self) -> Option<f64> {
        match self {
            Preprocessing::Scale { range, .. } => {
                let (lo, hi) = range.bounds();
                Some((hi - lo) as f64 / 256.0)
            }
            _ => None,
        }
    }

    /// Preprocesses one example of raw pixels (example number `index` of its split), appending to `out`.
    pub fn apply_u8(
        &self,
        pixels: &[u8],
        index: usize,
        rng: &mut Rng,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        match self {
            Preprocessing::Binarize { dynamic } => {
                let mut fixed;
                let r = if *dynamic {
                    rng
                } else {
                    fixed = Rng::stream(STATIC_BINARIZATION_SEED, index as u64);
                    &mut fixed
                };
                out.extend(pixels.iter().map(|&p| {
                    if r.uniform() < p as f32 / 255.0 {
                        1.0
                    } else {
                        0.0
                    }
                }));
            }
            Preprocessing::Scale { range, dequantize } => {
                let (lo, hi) = range.bounds();
                let w = hi - lo;
                if *dequantize {
                    out.extend(
                        pixels
                            .iter()
                            .map(|&p| lo + w * (p as f32 + rng.uniform()) / 256.0),
                    );
                } else {
                    out.extend(pixels.iter().map(|&p| lo + w * p as f32 / 255.0));
                }
            }
            Preprocessing::Identity => {
                return Err(Error::invalid(
                    "data.preprocessing",
                    "8-bit images need binarize or scale preprocessing, not identity",
                ))
            }
        }
        Ok(())
    }

    /// Preprocesses one example of real values (2-D points), appending to `out`.
    pub fn apply_f32(&self, values: &[f32], out: &mut Vec<f32>) -> Result<()> {
        match self {
            Preprocessing::Identity => {
                out.extend_from_slice(values);
                Ok(())
            }
            other => Err(Error::invalid(
                "data.preprocessing",
                format!(
                    "real-valued data use identity preprocessing, not {}",
                    other.describe()
                ),
            )),
        }
    }

    /// Maps model outputs in the preprocessed space back to 8-bit pixels (for PNGs).
    pub fn to_u8(&self, x: f32) -> u8 {
        let v = match self {
            Preprocessing::Scale { range, .. } => {
                let (lo, hi) = range.bounds();
                (x - lo) / (hi - lo)
            }
            _ => x,
        };
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}
