//! Controlled sampling of diffusion models, diffusers style: the [`Denoiser`] that DDPM, EDM and NCSN implement,
//! the one sampling loop ([`Pipeline::run`]) that plain sampling, classifier-free guidance, SDEdit and every
//! inverse-problem solver share, and the solvers ([`sdedit`](mod@sdedit), [`repaint`], [`project`], [`dps`]).
//!
//! Like [`crate::schedulers`] and [`crate::ops`], this module imports no model: a model enters only through the
//! [`Denoiser`] trait, so every solver works with every diffusion model, and the tests run each one against an
//! exact Gaussian denoiser with no network.
//!
//! The loop (in [`Pipeline::run`]), with the solver's hooks (a [`Guide`]) in plain sight:
//!
//! ```text
//! for action in guide.plan(sampler.num_evals()) {          // in order, or with RePaint's jumps back
//!     Step(i):    level = sampler.level(i)
//!                 x0 = guide.x0(pipe, i, x, level)          // the (guided) denoiser D(x; level, c), detached
//!                 x  = sampler.step(i, x, x0, rng)          // scheduler step
//!                 x  = guide.after_step(i, x, level', rng)  // measurement consistency, where a solver has one
//!     Renoise:    x  = renoise(x, from, to, rng)            // forward diffusion back to a noisier level
//! }
//! ```
//!
//! Conditioning: a [`Cond`] (class ids, or none) goes with every model call; classifier-free guidance
//! (Ho & Salimans 2022, arXiv:2207.12598) evaluates the conditional and the null condition in one batched call
//! and returns D(x; ∅) + s·(D(x; c) − D(x; ∅)). A start level ([`start_levels`], SDEdit's strength) runs only
//! the last part of any sampler's levels from a partly noised input.

pub mod dps;
pub mod edit;
pub mod project;
pub mod repaint;
pub mod sdedit;
#[cfg(test)]
mod tests;

pub use dps::Dps;
pub use edit::{edit, Edit, EditOptions, Input, Task};
pub use project::Project;
pub use repaint::RePaint;
pub use sdedit::sdedit;

use candle_core::{Device, Tensor};

use crate::conditioning::{check_guidance, Cond, CondKind};
use crate::model::{SampleAbilities, SampleOptions};
use crate::rng::Rng;
use crate::schedulers::{self, noise_like, Level, NoiseSchedule, Sampler, SamplerOptions};
use crate::{Error, Result};

/// A model's default sampler, number of steps and sampler settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerDefaults {
    /// Sampler name (one of [`schedulers::SAMPLERS`]).
    pub sampler: String,
    /// Number of sampling steps.
    pub steps: usize,
    /// The samplers' settings (DDIM η, Langevin steps and step size, …).
    pub options: SamplerOptions,
}

/// What the pipeline needs to know about a denoiser besides its schedule and its outputs.
#[derive(Clone, Copy, Debug)]
pub struct DenoiserInfo<'a> {
    /// Registry name (`ddpm`, `edm`, `ncsn`), for messages.
    pub name: &'a str,
    /// The shape of one example.
    pub example_shape: &'a [usize],
    /// The device of the model's tensors.
    pub device: &'a Device,
    /// What the model is conditioned on (classes, captions or nothing).
    pub cond: CondKind<'a>,
    /// Whether the model was trained with condition dropout, so that it has the null-condition denoiser
    /// that classifier-free guidance needs.
    pub has_null_class: bool,
    /// Clip D to the data range [−1, 1] while sampling (images, when the config asks for it).
    pub clip_denoised: bool,
    /// Clamp final samples to the data range [−1, 1] (images).
    pub clamp_samples: bool,
}

impl DenoiserInfo<'_> {
    /// What `Model::sample` accepts: a sampler and steps always, guidance with a null class.
    pub fn sample_abilities(&self) -> SampleAbilities {
        SampleAbilities {
            sampler: true,
            guidance: self.cond.is_conditional() && self.has_null_class,
            captions: matches!(self.cond, CondKind::Caption(_)),
            ..SampleAbilities::default()
        }
    }
}

/// A diffusion model as the samplers and solvers see it: its estimate of the clean data at a noise level.
///
/// At a [`Level`] (x = α·x₀ + σ·ε) the model answers D(x; level, c) ≈ E[x₀ | x, c]; the noise estimate
/// ε̂ = (x − α·D)/σ and the score ∇ₓ log p(x | c) = (α·D − x)/σ² follow from it ([`Denoiser::eps`],
/// [`Denoiser::score`]).
pub trait Denoiser {
    /// Name, shapes, classes and clipping.
    fn info(&self) -> DenoiserInfo<'_>;

    /// The noise schedule the samplers walk.
    fn schedule(&self) -> &dyn NoiseSchedule;

    /// Default sampler, steps and sampler settings.
    fn sampler_defaults(&self) -> SamplerDefaults;

    /// D(x; level, c), unclipped, for a batch `x` of `(b, example_shape…)` and a condition of b entries;
    /// differentiable in `x` (DPS takes its gradient).
    fn x0(&self, x: &Tensor, level: &Level, cond: &Cond) -> Result<Tensor>;

    /// ε̂ = (x − α·D)/σ at a noisy level (σ > 0).
    fn eps(&self, x: &Tensor, level: &Level, cond: &Cond) -> Result<Tensor> {
        let d = self.x0(x, level, cond)?;
        Ok(((x - (d * level.alpha)?)? * (1.0 / level.sigma))?)
    }

    /// The score ∇ₓ log p(x | c) = (α·D − x)/σ² at a noisy level (σ > 0).
    fn score(&self, x: &Tensor, level: &Level, cond: &Cond) -> Result<Tensor> {
        let d = self.x0(x, level, cond)?;
        Ok((((d * level.alpha)? - x)? * (1.0 / (level.sigma * level.sigma)))?)
    }
}

/// One entry of a loop's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Evaluate the model at the sampler's evaluation `i` and take the sampler's step.
    Step(usize),
    /// Move the sample from the level of evaluation `from` back to the noisier level of evaluation `to` by
    /// forward diffusion (RePaint's resampling).
    Renoise {
        /// The evaluation index whose level the sample is at.
        from: usize,
        /// The (earlier, noisier) evaluation index to go back to.
        to: usize,
    },
}

/// A solver's hooks into the loop; the defaults make plain sampling.
pub trait Guide {
    /// The actions for a sampler with `num_evals` evaluations (default: every step once, in order).
    fn plan(&self, num_evals: usize) -> Vec<Action> {
        (0..num_evals).map(Action::Step).collect()
    }

    /// The clean-data estimate handed to the sampler at evaluation `i` (default: the pipeline's guided
    /// denoiser, detached — candle has no no-grad mode, and a tracked x̂₀ would keep every step's activations
    /// alive through the chain of samples).
    fn x0(&mut self, pipe: &Pipeline, i: usize, x: &Tensor, level: &Level) -> Result<Tensor> {
        let _ = i;
        Ok(pipe.x0(x, level)?.detach())
    }

    /// Refuses a sampler the solver cannot use (default: any is fine; [`solve`] also requires one model
    /// evaluation per step).
    fn check_sampler(&self, sampler: &dyn Sampler) -> Result<()> {
        let _ = sampler;
        Ok(())
    }

    /// The sample after the sampler's step from evaluation `i`; it is now at `level` (default: unchanged).
    fn after_step(&mut self, i: usize, x: Tensor, level: &Level, rng: &mut Rng) -> Result<Tensor> {
        let _ = (i, level, rng);
        Ok(x)
    }
}

/// Plain sampling: no hooks.
pub struct Plain;

impl Guide for Plain {}

/// A model with its condition and guidance scale: what every step of the loop asks.
pub struct Pipeline<'a> {
    model: &'a dyn Denoiser,
    cond: Cond,
    /// The null condition and the scale, under classifier-free guidance.
    guidance: Option<(Cond, f64)>,
    /// Told of each action of the loop's plan.
    progress: crate::model::Progress,
}

impl<'a> Pipeline<'a> {
    /// A pipeline for `model` with condition `cond` (one entry per sample) and an optional classifier-free
    /// guidance scale. Errors: guidance on an unconditional model, without a condition, on a model trained
    /// without class dropout, or a scale that is negative or not finite.
    pub fn new(model: &'a dyn Denoiser, cond: Cond, guidance: Option<f64>) -> Result<Self> {
        let info = model.info();
        check_guidance(guidance, info.cond, info.name)?;
        let guidance = match guidance {
            None => None,
            Some(s) => {
                if !info.has_null_class {
                    return Err(Error::invalid(
                        "guidance",
                        format!(
                            "model '{}' was trained without class dropout (model.class_dropout = 0), so it has no unconditional denoiser to guide with",
                            info.name
                        ),
                    ));
                }
                let Some(null) = cond.null(info.cond.num_classes())? else {
                    return Err(Error::invalid(
                        "guidance",
                        "classifier-free guidance needs a condition (a class or a caption) to guide towards",
                    ));
                };
                Some((null, s))
            }
        };
        Ok(Self {
            model,
            cond,
            guidance,
            progress: Default::default(),
        })
    }

    /// The pipeline, reporting each action of [`Pipeline::run`]'s plan (done, total) to `progress`.
    pub fn with_progress(mut self, progress: crate::model::Progress) -> Self {
        self.progress = progress;
        self
    }

    /// The model.
    pub fn model(&self) -> &dyn Denoiser {
        self.model
    }

    /// The guided denoiser at `level`: D(x; c), or D(x; ∅) + s·(D(x; c) − D(x; ∅)) under guidance (one
    /// batched call for both), clipped to [−1, 1] when the model clips. Tracks gradients when `x` does.
    pub fn x0(&self, x: &Tensor, level: &Level) -> Result<Tensor> {
        let d = match &self.guidance {
            None => self.model.x0(x, level, &self.cond)?,
            Some((null, s)) => {
                let b = x.dim(0)?;
                let both =
                    self.model
                        .x0(&Tensor::cat(&[x, x], 0)?, level, &self.cond.cat(null)?)?; // (2b, …): conditional, then unconditional
                let (cond, uncond) = (both.narrow(0, 0, b)?, both.narrow(0, b, b)?);
                (&uncond + ((cond - &uncond)? * *s)?)?
            }
        };
        match self.model.info().clip_denoised {
            true => Ok(d.clamp(-1f32, 1f32)?),
            false => Ok(d),
        }
    }

    /// The sampler `name` (default: the model's) over `steps` steps (default: the model's), started
    /// `strength` ∈ (0, 1] of the way ([`start_levels`]; 1 = from pure noise). Errors when the strength leaves
    /// no step to run.
    pub fn sampler(
        &self,
        name: Option<&str>,
        steps: Option<usize>,
        strength: f64,
    ) -> Result<Box<dyn Sampler>> {
        self.sampler_if_any(name, steps, strength)?.ok_or_else(|| {
            Error::invalid(
                "strength",
                format!("{strength} leaves no sampling step; use a larger strength or more steps"),
            )
        })
    }

    /// [`Pipeline::sampler`], with `None` when the strength leaves no step to run.
    pub fn sampler_if_any(
        &self,
        name: Option<&str>,
        steps: Option<usize>,
        strength: f64,
    ) -> Result<Option<Box<dyn Sampler>>> {
        let d = self.model.sampler_defaults();
        let name = name.unwrap_or(&d.sampler);
        if !schedulers::SAMPLERS.contains(&name) {
            return Err(Error::unknown("sampler", name, schedulers::SAMPLERS));
        }
        let levels = start_levels(self.model.schedule(), steps.unwrap_or(d.steps), strength)?;
        if levels.len() < 2 {
            return Ok(None);
        }
        schedulers::build_from_levels(name, levels, &d.options).map(Some)
    }

    /// `n` draws of `sampler`'s initial noise, shaped like the model's examples.
    pub fn init_noise(&self, sampler: &dyn Sampler, n: usize, rng: &mut Rng) -> Result<Tensor> {
        let info = self.model.info();
        let mut shape = vec![n];
        shape.extend_from_slice(info.example_shape);
        sampler.init_noise(&shape.into(), rng, info.device)
    }

    /// The loop: from `x` at the sampler's first level, the plan of `guide` (see the module docs); final
    /// samples are clamped to [−1, 1] for images.
    pub fn run(
        &self,
        sampler: &mut dyn Sampler,
        mut x: Tensor,
        guide: &mut dyn Guide,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let plan = guide.plan(sampler.num_evals());
        let total = plan.len();
        for (done, action) in plan.into_iter().enumerate() {
            self.progress.report(done, total);
            match action {
                Action::Step(i) => {
                    let level = sampler.level(i);
                    let x0 = guide.x0(self, i, &x, &level)?; // model output → x̂₀
                    x = sampler.step(i, &x, &x0, rng)?; // scheduler step
                    x = guide.after_step(i, x, &sampler.level(i + 1), rng)?;
                }
                Action::Renoise { from, to } => {
                    x = renoise(&x, &sampler.level(from), &sampler.level(to), rng)?;
                }
            }
        }
        self.progress.report(total, total);
        match self.model.info().clamp_samples {
            true => Ok(x.clamp(-1f32, 1f32)?),
            false => Ok(x),
        }
    }
}

/// `Model::sample` of every diffusion model: `n` draws from the sampler's initial noise (times
/// `opts.temperature`), with `opts`' sampler, steps, class and guidance or the model's defaults.
pub fn sample(model: &dyn Denoiser, n: usize, opts: &SampleOptions) -> Result<Tensor> {
    if n == 0 {
        return Err(Error::invalid("n", "the number of samples must be ≥ 1"));
    }
    let info = model.info();
    let cond = Cond::from_condition(&opts.condition, info.cond, n, info.name, info.device)?;
    let pipe = Pipeline::new(model, cond, opts.guidance)?.with_progress(opts.progress.clone());
    let mut sampler = pipe.sampler(opts.sampler.as_deref(), opts.steps, 1.0)?;
    let mut rng = Rng::new(opts.seed);
    let mut x = pipe.init_noise(sampler.as_ref(), n, &mut rng)?;
    if opts.temperature != 1.0 {
        x = (x * opts.temperature)?;
    }
    pipe.run(sampler.as_mut(), x, &mut Plain, &mut rng)
}

/// Solves an inverse problem with the hooks of solver `solver` (its name, for messages): `n` samples from the
/// initial noise of the sampler `sampler` over `steps` steps (defaults: the model's), which must make one model
/// evaluation per step and suit the solver. When no sampler is named and the model's default does not suit the
/// solver (EDM's Heun, NCSN's Langevin), DDPM's ancestral sampler is used, the one the solvers' papers use.
pub fn solve(
    pipe: &Pipeline,
    guide: &mut dyn Guide,
    solver: &str,
    n: usize,
    sampler: Option<&str>,
    steps: Option<usize>,
    rng: &mut Rng,
) -> Result<Tensor> {
    Ok(solve_with(pipe, guide, solver, n, sampler, steps, rng)?.0)
}

/// [`solve`], also returning the name of the sampler it used.
pub fn solve_with(
    pipe: &Pipeline,
    guide: &mut dyn Guide,
    solver: &str,
    n: usize,
    sampler: Option<&str>,
    steps: Option<usize>,
    rng: &mut Rng,
) -> Result<(Tensor, &'static str)> {
    let mut chosen = pipe.sampler(sampler, steps, 1.0)?;
    let suits = |s: &dyn Sampler, guide: &dyn Guide| -> Result<()> {
        one_eval_per_level(s, solver)?;
        guide.check_sampler(s)
    };
    if sampler.is_none() && suits(chosen.as_ref(), guide).is_err() {
        chosen = pipe.sampler(Some("ddpm"), steps, 1.0)?; // the solvers' fallback
    }
    suits(chosen.as_ref(), guide)?;
    let x = pipe.init_noise(chosen.as_ref(), n, rng)?;
    let name = chosen.name();
    Ok((pipe.run(chosen.as_mut(), x, guide, rng)?, name))
}

/// The levels a sampler with `steps` steps visits when started `strength` ∈ (0, 1] of the way: the last
/// round(strength·steps) intervals of `schedule.sampling_levels(steps)` (so strength 1 is the whole schedule,
/// and a strength below 1/(2·steps) leaves only [`Level::CLEAN`]). Errors: strength outside (0, 1].
pub fn start_levels(
    schedule: &dyn NoiseSchedule,
    steps: usize,
    strength: f64,
) -> Result<Vec<Level>> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(Error::invalid(
            "strength",
            format!("{strength} must be in (0, 1] (1 = start from pure noise)"),
        ));
    }
    if steps == 0 {
        return Err(Error::invalid(
            "steps",
            "the number of sampling steps must be at least 1, got 0",
        ));
    }
    let levels = schedule.sampling_levels(steps)?;
    let intervals = levels.len() - 1;
    let run = ((strength * intervals as f64).round() as usize).min(intervals);
    Ok(levels[intervals - run..].to_vec())
}

/// `x₀` noised to `level`: α·x₀ + σ·z, z ~ N(0, I) from `rng`.
pub fn noised(x0: &Tensor, level: &Level, rng: &mut Rng) -> Result<Tensor> {
    let z = noise_like(x0, rng)?;
    Ok((x0.affine(level.alpha, 0.0)? + z.affine(level.sigma, 0.0)?)?)
}

/// Forward diffusion from level `a` to the noisier level `b`: x_b = (α_b/α_a)·x_a + √(σ_b² − (α_b/α_a)²·σ_a²)·z,
/// which turns a sample of the data noised to `a` into one noised to `b`.
pub fn renoise(x: &Tensor, a: &Level, b: &Level, rng: &mut Rng) -> Result<Tensor> {
    let r = b.alpha / a.alpha;
    let var = b.sigma * b.sigma - r * r * a.sigma * a.sigma;
    if var < 0.0 || !var.is_finite() {
        return Err(Error::invalid(
            "renoise",
            format!(
                "level (alpha {}, sigma {}) is not noisier than (alpha {}, sigma {})",
                b.alpha, b.sigma, a.alpha, a.sigma
            ),
        ));
    }
    let z = noise_like(x, rng)?;
    Ok((x.affine(r, 0.0)? + z.affine(var.sqrt(), 0.0)?)?)
}

/// The samplers that keep no state from one step to the next, so a solver can send the sample back and
/// repeat steps (RePaint's resampling, DDNM's time travel).
pub const RESAMPLERS: &[&str] = &["ddpm", "ddim", "euler"];

/// The plan of resampling solvers over `n` evaluations (RePaint's Algorithm 1, DDNM's time travel): blocks of
/// `jump` steps, each run `resample` times with a jump back to the block's start by forward diffusion between
/// runs. `resample` = 1 is the plain loop.
pub fn resampling_plan(n: usize, jump: usize, resample: usize) -> Vec<Action> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + jump.max(1)).min(n);
        for r in 0..resample {
            out.extend((start..end).map(Action::Step));
            if r + 1 < resample {
                out.push(Action::Renoise {
                    from: end,
                    to: start,
                });
            }
        }
        start = end;
    }
    out
}

/// Checks a resampling solver's jump length and number of passes (both ≥ 1).
pub(crate) fn check_jumps(jump: usize, resample: usize) -> Result<()> {
    match jump >= 1 && resample >= 1 {
        true => Ok(()),
        false => Err(Error::invalid(
            "resample",
            format!("jump ({jump}) and resample ({resample}) must both be at least 1"),
        )),
    }
}

/// Refuses, for `solver` resampling `resample` > 1 times, a sampler that keeps state between steps.
pub(crate) fn check_resampler(sampler: &dyn Sampler, resample: usize, solver: &str) -> Result<()> {
    match resample == 1 || RESAMPLERS.contains(&sampler.name()) {
        true => Ok(()),
        false => Err(Error::invalid(
            "sampler",
            format!(
                "solver '{solver}' resamples ({resample} passes) and needs a sampler without state between steps ({}), got '{}'",
                RESAMPLERS.join(", "),
                sampler.name()
            ),
        )),
    }
}

/// Refuses a sampler that does not make exactly one model evaluation per level (Heun, annealed Langevin,
/// predictor–corrector) for `solver`, whose measurement step needs the sample's level after each step.
pub(crate) fn one_eval_per_level(sampler: &dyn Sampler, solver: &str) -> Result<()> {
    match sampler.num_evals() + 1 == sampler.levels().len() {
        true => Ok(()),
        false => Err(Error::invalid(
            "sampler",
            format!(
                "solver '{solver}' needs a sampler with one model evaluation per step (ddpm, ddim, euler, dpm++2m), got '{}'",
                sampler.name()
            ),
        )),
    }
}
