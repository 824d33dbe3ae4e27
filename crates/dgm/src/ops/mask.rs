//! The pixel mask of inpainting: A x = m ⊙ x with m ∈ {0, 1} (1 = observed). A is diagonal, so Aᵀ = A, and
//! idempotent, so A⁺ = A. The measurement keeps the image's shape with zeros where pixels are missing (the
//! convention of RePaint and DPS, which makes A, Aᵀ and A⁺ elementwise).

use std::path::Path;

use candle_core::{Device, Tensor};

use super::{check_batch, image_shape, LinearOperator};
use crate::rng::Rng;
use crate::{Error, Result};

/// A pixel mask over `(c, h, w)` images: the same pixels are observed in every channel.
#[derive(Clone, Debug)]
pub struct Mask {
    shape: Vec<usize>,
    /// `(1, 1, h, w)`: 1 where observed, 0 where missing.
    keep: Tensor,
    observed: usize,
}

impl Mask {
    /// A mask from `keep`, `h × w` values in row-major order that are each 0 (missing) or 1 (observed).
    pub fn new(shape: &[usize], keep: Vec<f32>, device: &Device) -> Result<Self> {
        let [_, h, w] = image_shape("mask", shape)?;
        if keep.len() != h * w {
            return Err(Error::invalid(
                "mask",
                format!(
                    "{} values for a {h}×{w} image ({} expected)",
                    keep.len(),
                    h * w
                ),
            ));
        }
        if let Some(v) = keep.iter().find(|&&v| v != 0.0 && v != 1.0) {
            return Err(Error::invalid(
                "mask",
                format!("{v}: mask values must be 0 (missing) or 1 (observed)"),
            ));
        }
        let observed = keep.iter().filter(|&&v| v == 1.0).count();
        Ok(Self {
            shape: shape.to_vec(),
            keep: Tensor::from_vec(keep, (1, 1, h, w), device)?,
            observed,
        })
    }

    /// The rectangle of `height × width` pixels with top-left corner (`top`, `left`) missing, the rest observed.
    pub fn rect(
        shape: &[usize],
        top: usize,
        left: usize,
        height: usize,
        width: usize,
        device: &Device,
    ) -> Result<Self> {
        let [_, h, w] = image_shape("mask", shape)?;
        if height == 0 || width == 0 || top + height > h || left + width > w {
            return Err(Error::invalid(
                "mask",
                format!(
                    "a {height}×{width} rectangle at row {top}, column {left} does not fit a {h}×{w} image \
                     (or is empty)"
                ),
            ));
        }
        let keep = (0..h * w)
            .map(|i| {
                let (r, c) = (i / w, i % w);
                let inside = (top..top + height).contains(&r) && (left..left + width).contains(&c);
                if inside {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        Self::new(shape, keep, device)
    }

    /// The centred `side × side` box missing (the usual "centre box" inpainting task; at 28×28, side 14
    /// hides a quarter of the image).
    pub fn centre_box(shape: &[usize], side: usize, device: &Device) -> Result<Self> {
        let [_, h, w] = image_shape("mask", shape)?;
        if side == 0 || side > h.min(w) {
            return Err(Error::invalid(
                "mask",
                format!(
                    "box side {side} must be in 1..={} for a {h}×{w} image",
                    h.min(w)
                ),
            ));
        }
        Self::rect(shape, (h - side) / 2, (w - side) / 2, side, side, device)
    }

    /// The bottom half missing (rows `h/2..h`).
    pub fn bottom_half(shape: &[usize], device: &Device) -> Result<Self> {
        let [_, h, w] = image_shape("mask", shape)?;
        if h < 2 {
            return Err(Error::invalid(
                "mask",
                format!("an image of height {h} has no bottom half"),
            ));
        }
        Self::rect(shape, h / 2, 0, h - h / 2, w, device)
    }

    /// Each pixel missing independently with probability `missing` ∈ [0, 1] (seeded).
    pub fn random_pixels(
        shape: &[usize],
        missing: f64,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Self> {
        let [_, h, w] = image_shape("mask", shape)?;
        if !(0.0..=1.0).contains(&missing) {
            return Err(Error::invalid(
                "mask",
                format!("{missing}: the fraction of missing pixels must be in [0, 1]"),
            ));
        }
        let keep = (0..h * w)
            .map(|_| {
                if rng.uniform_f64() < missing {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        Self::new(shape, keep, device)
    }

    /// A free-form mask drawn as a grey or colour image file of exactly `h × w` pixels: **white = missing** (to
    /// be filled), black = observed, as in diffusers' inpainting pipelines. Any other grey level is refused.
    pub fn from_image(path: &Path, shape: &[usize], device: &Device) -> Result<Self> {
        let [_, h, w] = image_shape("mask", shape)?;
        let pixels = crate::image_io::load_image(path, 1, h, w)?;
        Self::from_pixels(&path.display().to_string(), &pixels, shape, device)
    }

    /// [`Mask::from_image`] for an image file held in memory (a mask painted in the studio); errors name it
    /// `name`.
    pub fn from_image_bytes(
        name: &str,
        bytes: &[u8],
        shape: &[usize],
        device: &Device,
    ) -> Result<Self> {
        let [_, h, w] = image_shape("mask", shape)?;
        let pixels = crate::image_io::image_from_bytes(name, bytes, 1, h, w)?;
        Self::from_pixels(name, &pixels, shape, device)
    }

    /// A mask from `h × w` grey levels: 255 = missing, 0 = observed, anything else refused.
    fn from_pixels(name: &str, pixels: &[u8], shape: &[usize], device: &Device) -> Result<Self> {
        let [_, h, w] = image_shape("mask", shape)?;
        let grey = pixels.iter().filter(|&&p| p != 0 && p != 255).count();
        if grey > 0 {
            return Err(Error::invalid(
                name.to_string(),
                format!(
                    "a mask must be black (observed) and white (missing) only; {grey} of its {} pixels are \
                     grey",
                    h * w
                ),
            ));
        }
        let keep = pixels
            .iter()
            .map(|&p| if p == 255 { 0.0 } else { 1.0 })
            .collect();
        Self::new(shape, keep, device)
    }

    /// The mask `(1, 1, h, w)`: 1 where observed.
    pub fn keep(&self) -> &Tensor {
        &self.keep
    }

    /// Number of observed pixels (per channel).
    pub fn observed(&self) -> usize {
        self.observed
    }
}

impl LinearOperator for Mask {
    fn name(&self) -> String {
        let total = self.shape[1] * self.shape[2];
        format!("mask, {} of {total} pixels observed", self.observed)
    }

    fn input_shape(&self) -> &[usize] {
        &self.shape
    }

    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        check_batch("mask", "image", x, &self.shape)?;
        Ok(x.broadcast_mul(&self.keep.to_dtype(x.dtype())?)?)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        self.apply(y)
    }

    fn pseudo_inverse(&self, y: &Tensor) -> Result<Option<Tensor>> {
        self.apply(y).map(Some)
    }

    fn as_mask(&self) -> Option<&Mask> {
        Some(self)
    }
}
