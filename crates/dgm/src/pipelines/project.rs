//! Projection onto the measurements (the range–null-space decomposition of DDNM, Wang, Yu & Zhang 2023,
//! "Zero-shot image restoration using denoising diffusion null-space model", arXiv:2212.00490, eq. 10; for CT
//! the data-consistency step of Song, Shen, Xing & Ermon 2022, arXiv:2111.08005): at every step the model's
//! clean-data estimate is corrected to agree with the measurement,
//!
//! x̂₀ ← x̂₀ + A⁺(y − A x̂₀) = A⁺y + (I − A⁺A) x̂₀,
//!
//! keeping what the model says in the null space of A and taking the range from y. Where A has no cheap
//! pseudo-inverse (CT) A⁺ is applied by `cg_iters` CGLS iterations on the residual.
//!
//! Projection alone is biased towards the prior: the model's x̂₀ of the missing part sees only the noisy
//! sample, not y. DDNM's "time travel" (their section 3.3, the same schedule as RePaint's resampling: jump back
//! `jump` levels, `resample` passes) lets the two parts agree; with an exact Gaussian denoiser it brings the
//! samples to the true posterior (the tests measure both).
//!
//! Supports: every operator and model, noise-free measurements (σ_y = 0: the projection would copy the
//! noise; use DPS), samplers with one evaluation per step.

use candle_core::Tensor;

use super::{check_jumps, check_resampler, resampling_plan, Action, Guide, Pipeline};
use crate::ops::{cgls, check_batch, LinearOperator};
use crate::schedulers::{Level, Sampler};
use crate::{Error, Result};

/// The projection solver's hooks for one measurement.
pub struct Project<'a> {
    op: &'a dyn LinearOperator,
    y: Tensor,
    cg_iters: usize,
    jump: usize,
    resample: usize,
}

impl<'a> Project<'a> {
    /// Projection onto `y = A x` for the operator `op`, noise `sigma_y` (must be 0); `cg_iters` ≥ 1 CGLS
    /// iterations stand in for A⁺ where the operator has none; time travel of `jump` levels, `resample` passes
    /// (1 = none).
    pub fn new(
        op: &'a dyn LinearOperator,
        y: &Tensor,
        sigma_y: f64,
        cg_iters: usize,
        jump: usize,
        resample: usize,
    ) -> Result<Self> {
        check_jumps(jump, resample)?;
        if sigma_y != 0.0 {
            return Err(Error::invalid(
                "sigma_y",
                format!("{sigma_y}: solver 'project' takes noise-free measurements (sigma_y = 0); use 'dps' for noisy ones"),
            ));
        }
        if cg_iters == 0 {
            return Err(Error::invalid("cg_iters", "must be at least 1"));
        }
        check_batch(&op.name(), "measurement", y, op.output_shape())?;
        Ok(Self {
            op,
            y: y.clone(),
            cg_iters,
            jump,
            resample,
        })
    }

    /// A⁺ r, or its CGLS approximation.
    fn pinv(&self, r: &Tensor) -> Result<Tensor> {
        match self.op.pseudo_inverse(r)? {
            Some(p) => Ok(p),
            None => cgls(self.op, r, self.cg_iters),
        }
    }
}

impl Guide for Project<'_> {
    fn plan(&self, num_evals: usize) -> Vec<Action> {
        resampling_plan(num_evals, self.jump, self.resample)
    }

    fn check_sampler(&self, sampler: &dyn Sampler) -> Result<()> {
        check_resampler(sampler, self.resample, "project")
    }

    fn x0(&mut self, pipe: &Pipeline, _i: usize, x: &Tensor, level: &Level) -> Result<Tensor> {
        let x0 = pipe.x0(x, level)?.detach();
        let r = (&self.y - self.op.apply(&x0)?)?; // y − A x̂₀
        Ok((x0 + self.pinv(&r)?)?)
    }
}
