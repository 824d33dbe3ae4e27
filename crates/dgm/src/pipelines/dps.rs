//! Diffusion posterior sampling (Chung, Kim, Mccann, Klasky & Ye 2023, "Diffusion posterior sampling for
//! general noisy inverse problems", arXiv:2209.14687, Algorithm 1): after each sampler step from x_i, move
//! against the gradient of the measurement residual of the model's clean-data estimate,
//!
//! x_{i+1} ← x_{i+1} − ζ·∇_{x_i} ‖y − A x̂₀(x_i)‖,
//!
//! with the step ζ of their released code (the gradient of the norm, not of its square; ζ = 1 for
//! inpainting and super-resolution there, with 1000 steps; with fewer steps a larger ζ does better — on MNIST
//! at 50 steps ζ = 5 beat 1 and 20, see docs/control.md). It needs only ∇ₓ of the denoiser, which candle's backward pass
//! gives, and handles noisy measurements: y = A x + σ_y ε with σ_y in the model's value space ([−1, 1] for
//! images, the pitfall the paper's code warns about).
//!
//! Supports: every operator and model, σ_y ≥ 0, samplers with one evaluation per step.

use candle_core::{Tensor, Var};

use super::{Guide, Pipeline};
use crate::ops::{check_batch, LinearOperator};
use crate::rng::Rng;
use crate::schedulers::Level;
use crate::{Error, Result};

/// The DPS hooks for one measurement.
pub struct Dps<'a> {
    op: &'a dyn LinearOperator,
    y: Tensor,
    scale: f64,
    /// ζ·∇_{x_i} ‖y − A x̂₀(x_i)‖ from the last evaluation.
    correction: Option<Tensor>,
}

impl<'a> Dps<'a> {
    /// DPS for `y = A x + noise` with operator `op` and step `scale` ζ > 0.
    pub fn new(op: &'a dyn LinearOperator, y: &Tensor, scale: f64) -> Result<Self> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::invalid(
                "dps_scale",
                format!("{scale} must be positive and finite"),
            ));
        }
        check_batch(&op.name(), "measurement", y, op.output_shape())?;
        Ok(Self {
            op,
            y: y.clone(),
            scale,
            correction: None,
        })
    }
}

impl Guide for Dps<'_> {
    fn x0(&mut self, pipe: &Pipeline, _i: usize, x: &Tensor, level: &Level) -> Result<Tensor> {
        let xv = Var::from_tensor(&x.detach())?;
        let x0 = pipe.x0(xv.as_tensor(), level)?;
        let r = (&self.y - self.op.apply(&x0)?)?; // y − A x̂₀(x)
        let n = r.dim(0)?;
        // Σ over the batch of ‖rᵢ‖ (each example's gradient is its own); the 1e-12 keeps √ differentiable at 0
        let norms = (r.reshape((n, ()))?.sqr()?.sum(1)? + 1e-12)?.sqrt()?;
        let grads = norms.sum_all()?.backward()?;
        let g = grads.get(xv.as_tensor()).ok_or_else(|| {
            Error::invalid(
                "dps",
                format!(
                    "model '{}' gave no gradient with respect to its input",
                    pipe.model().info().name
                ),
            )
        })?;
        self.correction = Some((g * self.scale)?.detach());
        Ok(x0.detach())
    }

    fn after_step(
        &mut self,
        _i: usize,
        x: Tensor,
        _level: &Level,
        _rng: &mut Rng,
    ) -> Result<Tensor> {
        match self.correction.take() {
            Some(c) => {
                let c = c.to_dtype(x.dtype())?;
                Ok((x - c)?)
            }
            None => Ok(x),
        }
    }
}
