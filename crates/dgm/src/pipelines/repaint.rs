//! RePaint (Lugmayr et al. 2022, "RePaint: inpainting using denoising diffusion probabilistic models",
//! arXiv:2201.09865): inpainting with an unconditional model. After every sampler step the observed pixels are
//! replaced by the measurement noised to the sample's new level (their eq. 8),
//!
//! x ← m ⊙ (α·y + σ·z) + (1 − m) ⊙ x,   z ~ N(0, I),
//!
//! and, to let the generated region agree with the known one, the sample is sent back `jump` levels by forward
//! diffusion and the block re-run, `resample` times in all (their Algorithm 1 with jump length j and
//! resampling count r; their schedule plot, Fig. 9, uses j = 10, r = 10). `resample` = 1 is plain replacement.
//!
//! Supports: masks ([`crate::ops::Mask`]) without measurement noise (σ_y = 0; use DPS for noisy pixels), every
//! model, and the samplers that keep no state between steps ([`super::RESAMPLERS`]; any sampler with one
//! evaluation per step when `resample` = 1).

use candle_core::Tensor;

use super::{check_jumps, check_resampler, resampling_plan, Action, Guide};
use crate::ops::{check_batch, LinearOperator};
use crate::rng::Rng;
use crate::schedulers::{Level, Sampler};
use crate::{Error, Result};

/// RePaint's hooks for one masked measurement.
pub struct RePaint {
    keep: Tensor,
    y: Tensor,
    jump: usize,
    resample: usize,
}

impl RePaint {
    /// Inpainting of `y` (a batch of masked images, zeros where missing) under the mask `op`, with measurement
    /// noise `sigma_y` (must be 0), jump length `jump` ≥ 1 and `resample` ≥ 1 passes per block.
    pub fn new(
        op: &dyn LinearOperator,
        y: &Tensor,
        sigma_y: f64,
        jump: usize,
        resample: usize,
    ) -> Result<Self> {
        let Some(mask) = op.as_mask() else {
            return Err(Error::invalid(
                "operator",
                format!(
                    "solver 'repaint' inpaints masks only, got '{}'; use 'dps' or 'project'",
                    op.name()
                ),
            ));
        };
        if sigma_y != 0.0 {
            return Err(Error::invalid(
                "sigma_y",
                format!("{sigma_y}: solver 'repaint' takes noise-free pixels (sigma_y = 0); use 'dps' for noisy measurements"),
            ));
        }
        check_jumps(jump, resample)?;
        check_batch(&op.name(), "measurement", y, op.output_shape())?;
        Ok(Self {
            keep: mask.keep().to_dtype(y.dtype())?,
            y: y.clone(),
            jump,
            resample,
        })
    }
}

impl Guide for RePaint {
    fn check_sampler(&self, sampler: &dyn Sampler) -> Result<()> {
        check_resampler(sampler, self.resample, "repaint")
    }

    fn plan(&self, num_evals: usize) -> Vec<Action> {
        resampling_plan(num_evals, self.jump, self.resample)
    }

    fn after_step(&mut self, _i: usize, x: Tensor, level: &Level, rng: &mut Rng) -> Result<Tensor> {
        // the observed pixels, noised to the sample's level: α·y + σ·z
        let known = super::noised(&self.y, level, rng)?;
        // m ⊙ known + (1 − m) ⊙ x, with m ∈ {0, 1}
        Ok((&x + (known - &x)?.broadcast_mul(&self.keep)?)?)
    }
}
