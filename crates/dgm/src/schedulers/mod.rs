//! Noise schedules and samplers for diffusion / score-based models. This module never imports `models/`: a
//! sampler sees only noise levels and the model's prediction of the clean data, so every sampler works with
//! every model family (DDPM, EDM, NCSN) and can be tested against an analytic denoiser with no network.
//!
//! Conventions (Kingma et al. 2021; Karras et al. 2022): at a noise [`Level`] the noisy sample is
//! `x = α·x₀ + σ·ε`, ε ~ N(0, I). A model is queried for its estimate of the clean data, the *denoiser*
//! `D(x; level) ≈ E[x₀ | x]`; from it `ε̂ = (x − α·D)/σ` and the score `∇ log p(x) = (α·D − x)/σ²`.
//! Variance-preserving schedules (DDPM) have α² + σ² = 1; variance-exploding ones (NCSN, EDM) have α = 1.
//!
//! The sampling loop, diffusers style — the model call and the scheduler step are both visible to the reader:
//!
//! ```text
//! let mut sampler = schedulers::build(name, schedule, steps, &opts)?;
//! let mut x = sampler.init_noise(shape, &mut rng, device)?;
//! for i in 0..sampler.num_evals() {
//!     let level = sampler.level(i);             // where the model is evaluated
//!     let x0 = model.denoise(&x, &level)?;      // model output → estimate of the clean data
//!     x = sampler.step(i, &x, &x0, &mut rng)?;  // scheduler step
//! }
//! ```
//!
//! Samplers that evaluate the model more than once per noise interval (Heun, Langevin, predictor–corrector)
//! list every evaluation in `level(i)` and keep their state between calls, so the loop stays the same.

use candle_core::{Device, Shape, Tensor};

use crate::rng::Rng;
use crate::Result;

/// One noise level: `x = alpha·x₀ + sigma·ε`, and `t`, the schedule's own time coordinate that the model is
/// conditioned on (the discrete step index for DDPM, the level index for NCSN, σ for EDM).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    /// Signal scale α.
    pub alpha: f64,
    /// Noise scale σ.
    pub sigma: f64,
    /// The model's time input at this level.
    pub t: f64,
}

impl Level {
    /// The clean end of every schedule: α = 1, σ = 0.
    pub const CLEAN: Level = Level {
        alpha: 1.0,
        sigma: 0.0,
        t: 0.0,
    };
}

/// A model's noise schedule: which levels exist, and which to visit when sampling with a given number of steps.
pub trait NoiseSchedule: Send + Sync {
    /// Short name, e.g. `linear`, `cosine`, `geometric`, `karras`.
    fn name(&self) -> &str;

    /// The levels to visit when sampling with `steps` intervals, from the noisiest to the least noisy, followed
    /// by [`Level::CLEAN`] (so `steps + 1` entries). Errors when `steps` is 0 or more than the schedule has.
    fn sampling_levels(&self, steps: usize) -> Result<Vec<Level>>;
}

/// Settings of the samplers that have any.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerOptions {
    /// DDIM's η: 0 = deterministic (probability-flow-like), 1 = DDPM's posterior noise.
    pub eta: f64,
    /// Langevin / corrector steps per noise level.
    pub langevin_steps: usize,
    /// Langevin step size ε of annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1), at the last level.
    pub langevin_eps: f64,
    /// Signal-to-noise ratio r of the predictor–corrector's Langevin corrector (Song et al. 2021, Algorithm 4).
    pub snr: f64,
    /// Replace the sampler's last noisy output by the denoiser's output (Song & Ermon 2020, "denoising").
    pub final_denoise: bool,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        Self {
            eta: 0.0,
            langevin_steps: 5,
            langevin_eps: 2e-5,
            snr: 0.16,
            final_denoise: true,
        }
    }
}

/// A sampler: turns noise into data through repeated denoiser evaluations (see the module docs for the loop).
pub trait Sampler {
    /// Registry name (one of [`SAMPLERS`]).
    fn name(&self) -> &'static str;

    /// The levels the sampler moves through, noisiest first, ending with [`Level::CLEAN`].
    fn levels(&self) -> &[Level];

    /// Number of model evaluations the loop makes (default: one per interval between levels).
    fn num_evals(&self) -> usize {
        self.levels().len() - 1
    }

    /// The level of model evaluation `i` (default: the interval's start; [`Level::CLEAN`] past the end).
    fn level(&self, i: usize) -> Level {
        match i < self.num_evals() {
            true => self.levels()[i],
            false => Level::CLEAN,
        }
    }

    /// The starting point: pure noise at the first level, `alpha·0 + sigma·z`.
    fn init_noise(&self, shape: &Shape, rng: &mut Rng, device: &Device) -> Result<Tensor> {
        noise_at(&self.levels()[0], shape, rng, device)
    }

    /// One step: given the current sample `x` at evaluation `i` and the denoiser's output `x0` there, returns
    /// the sample for evaluation `i + 1` (after the last evaluation: the final sample).
    fn step(&mut self, i: usize, x: &Tensor, x0: &Tensor, rng: &mut Rng) -> Result<Tensor>;
}

/// Names [`build`] accepts.
pub const SAMPLERS: &[&str] = &["ddpm", "ddim", "euler", "heun", "dpm++2m", "langevin", "pc"];

pub mod ddim;
pub mod ddpm;
pub mod dpm_solver;
pub mod euler;
pub mod heun;
pub mod langevin;
pub mod pc;
pub mod schedules;

#[cfg(test)]
mod tests;

pub use ddim::{ddim_invert, Ddim, DdimInversion};
pub use ddpm::{posterior, Ddpm, Posterior};
pub use dpm_solver::DpmSolver2M;
pub use euler::Euler;
pub use heun::Heun;
pub use langevin::AnnealedLangevin;
pub use pc::PredictorCorrector;
pub use schedules::{KarrasSchedule, VeSchedule, VpSchedule, VP_SCHEDULES};

use crate::Error;

/// Builds the sampler `name` (one of [`SAMPLERS`]) over `schedule.sampling_levels(steps)`.
///
/// Which options each sampler reads: `ddim` η; `langevin` `langevin_steps`, `langevin_eps` and
/// `final_denoise`; `pc` `langevin_steps` (corrector steps, 0 = plain ancestral sampling) and `snr`. The
/// samplers that end at the clean level (all but `langevin`) return the denoiser's output at their last step,
/// so they are always "denoised".
///
/// Errors: an unknown name (listing [`SAMPLERS`]), `steps` = 0 or more than the schedule has, and options
/// outside their range (`eta` ∉ [0, 1]; `langevin_steps` = 0 for `langevin`; `langevin_eps` ≤ 0 for
/// `langevin`; `snr` ≤ 0 for `pc` with corrector steps).
pub fn build(
    name: &str,
    schedule: &dyn NoiseSchedule,
    steps: usize,
    opts: &SamplerOptions,
) -> Result<Box<dyn Sampler>> {
    if !SAMPLERS.contains(&name) {
        return Err(Error::unknown("sampler", name, SAMPLERS));
    }
    if steps == 0 {
        return Err(Error::invalid(
            "steps",
            format!("the number of sampling steps must be at least 1, got 0 (sampler '{name}')"),
        ));
    }
    build_from_levels(name, schedule.sampling_levels(steps)?, opts)
}

/// Builds the sampler `name` (one of [`SAMPLERS`]) over given `levels` (noisiest first, ending with
/// [`Level::CLEAN`]; checked as [`check_levels`] says): the tail of a schedule's levels starts a sampler part of
/// the way, as SDEdit and img2img need.
pub fn build_from_levels(
    name: &str,
    levels: Vec<Level>,
    opts: &SamplerOptions,
) -> Result<Box<dyn Sampler>> {
    Ok(match name {
        "ddpm" => Box::new(Ddpm::new(levels)?),
        "ddim" => Box::new(Ddim::new(levels, opts.eta)?),
        "euler" => Box::new(Euler::new(levels)?),
        "heun" => Box::new(Heun::new(levels)?),
        "dpm++2m" => Box::new(DpmSolver2M::new(levels)?),
        "langevin" => Box::new(AnnealedLangevin::new(
            levels,
            opts.langevin_steps,
            opts.langevin_eps,
            opts.final_denoise,
        )?),
        "pc" => Box::new(PredictorCorrector::new(
            levels,
            opts.langevin_steps,
            opts.snr,
        )?),
        other => return Err(Error::unknown("sampler", other, SAMPLERS)),
    })
}

/// Checks a level sequence as the samplers need it: at least one noisy level followed by [`Level::CLEAN`]
/// last, every value finite, α > 0, σ > 0 before the end, and the noise-to-signal ratio σ/α strictly
/// decreasing (noisiest first).
pub fn check_levels(levels: &[Level]) -> Result<()> {
    let bad = |msg: String| Err(Error::invalid("sampling levels", msg));
    let n = levels.len();
    if n < 2 {
        return bad(format!(
            "need at least one noisy level followed by the clean level, got {n} level(s)"
        ));
    }
    let last = levels[n - 1];
    if last.sigma != 0.0 || last.alpha != 1.0 {
        return bad(format!(
            "the last level must be clean (alpha = 1, sigma = 0), got alpha = {}, sigma = {}",
            last.alpha, last.sigma
        ));
    }
    for (i, l) in levels[..n - 1].iter().enumerate() {
        if !(l.alpha.is_finite() && l.sigma.is_finite() && l.t.is_finite())
            || l.alpha <= 0.0
            || l.sigma <= 0.0
        {
            return bad(format!(
                "level {i} must have finite alpha > 0 and sigma > 0, got alpha = {}, sigma = {}, t = {}",
                l.alpha, l.sigma, l.t
            ));
        }
        let next = levels[i + 1];
        if next.sigma / next.alpha >= l.sigma / l.alpha {
            return bad(format!(
                "noise-to-signal ratio sigma/alpha must decrease from level {i} ({}) to level {} ({})",
                l.sigma / l.alpha,
                i + 1,
                next.sigma / next.alpha
            ));
        }
    }
    Ok(())
}

/// `Σ c_k · x_k` for tensors of one shape, the coefficients computed on the host in f64. Terms with a zero
/// coefficient are skipped (so a tensor that does not contribute, e.g. `x` at the clean end, cannot bring in
/// a NaN).
pub(crate) fn combine(terms: &[(f64, &Tensor)]) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for &(c, x) in terms {
        if c == 0.0 {
            continue;
        }
        let term = x.affine(c, 0.0)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    match (acc, terms.first()) {
        (Some(a), _) => Ok(a),
        (None, Some(&(_, x))) => Ok(x.zeros_like()?),
        (None, None) => Err(Error::invalid("combine", "no terms")),
    }
}

/// Standard normal noise with the shape, dtype and device of `x`, drawn from `rng`.
pub(crate) fn noise_like(x: &Tensor, rng: &mut Rng) -> Result<Tensor> {
    Ok(rng.randn(x.shape(), x.device())?.to_dtype(x.dtype())?)
}

/// Pure noise at `level`: `alpha·0 + sigma·z`, z ~ N(0, I) from `rng` (f32).
pub(crate) fn noise_at(
    level: &Level,
    shape: &Shape,
    rng: &mut Rng,
    device: &Device,
) -> Result<Tensor> {
    Ok(rng.randn(shape.clone(), device)?.affine(level.sigma, 0.0)?)
}

/// The error for `step(i, ..)` with `i` out of range.
pub(crate) fn step_out_of_range(sampler: &str, i: usize, n: usize) -> Error {
    Error::invalid(
        format!("{sampler} step"),
        format!("evaluation index {i} is out of range: the sampler makes {n} evaluation(s)"),
    )
}
