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

    /// Number of model evaluations the loop makes.
    fn num_evals(&self) -> usize;

    /// The level of model evaluation `i` (`i < num_evals()`).
    fn level(&self, i: usize) -> Level;

    /// The starting point: pure noise at the first level, `alpha·0 + sigma·z`.
    fn init_noise(&self, shape: &Shape, rng: &mut Rng, device: &Device) -> Result<Tensor>;

    /// One step: given the current sample `x` at evaluation `i` and the denoiser's output `x0` there, returns
    /// the sample for evaluation `i + 1` (after the last evaluation: the final sample).
    fn step(&mut self, i: usize, x: &Tensor, x0: &Tensor, rng: &mut Rng) -> Result<Tensor>;
}

/// Names [`build`] accepts.
pub const SAMPLERS: &[&str] = &["ddpm", "ddim", "euler", "heun", "dpm++2m", "langevin", "pc"];
