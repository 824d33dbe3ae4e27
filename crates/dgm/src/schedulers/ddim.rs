//! DDIM (Song, Meng & Ermon 2021, "Denoising diffusion implicit models", arXiv:2010.02502, eq. 12), for any
//! pair of levels t > s, and its inversion (encoding data into noise with the same deterministic map).
//!
//! With the denoiser's x̂₀ at level t and the implied noise ε̂ = (x_t − α_t x̂₀)/σ_t, eq. 12 reads
//!
//! x_s = α_s x̂₀ + √(σ_s² − c²)·ε̂ + c·z,   c = η·√(σ²_{t|s} σ_s²/σ_t²),   z ~ N(0, I),
//!
//! where σ²_{t|s} σ_s²/σ_t² is the DDPM posterior variance ([`crate::schedulers::posterior`]). η = 1 gives
//! exactly the DDPM ancestral step (same mean and variance); η = 0 is deterministic and equals the Euler step
//! of the probability-flow ODE in the scaled variables x/α, σ/α ([`crate::schedulers::Euler`]). The last step
//! (s clean) returns x̂₀.
//!
//! Inversion ([`DdimInversion`], [`ddim_invert`]) runs the η = 0 update the other way, from the clean level
//! to the noisiest: x_t = α_t x̂₀' + σ_t ε̂ with x̂₀' = (x_s − σ_s ε̂)/α_s. The exact inverse of a decoding step
//! needs ε̂ = (x_t − α_t D(x_t; t))/σ_t at the unknown x_t. The usual approximation (the encoding of Song et
//! al. 2021, §5.4; diffusers' `DDIMInverseScheduler`) evaluates the model at the *target* level t with the
//! current x_s; it is first order, so decoding the code reconstructs x₀ only up to O(1/steps).
//! Optional fixed-point refinements (Pan et al. 2023, "Effective real image editing with accelerated
//! iterative diffusion inversion", ICCV) re-evaluate the model at t with the latest estimate of x_t and
//! solve x_t = (α_t/α_s) x_s + k·ε̂(x_t), k = σ_t − α_t σ_s/α_s, whose fixed point is exactly the x_t that
//! the DDIM step maps to x_s; for the first interval (from the clean level) it is the x_t with
//! D(x_t; t) = x₀.
//! Across the large jumps in σ/α at the noisy end (e.g. the cosine schedule's last step) that iteration
//! hardly contracts, and the equivalent x_t = (σ_t/σ_s)(x_s − b·D(x_t)) is iterated instead (see
//! `solve_for_x`). The model is always evaluated at the levels decoding uses, and σ = 0 is never divided by.

use candle_core::Tensor;

use crate::rng::Rng;
use crate::schedulers::{
    check_levels, combine, noise_like, posterior, step_out_of_range, Level, NoiseSchedule, Sampler,
};
use crate::{Error, Result};

/// DDIM sampler with parameter η ∈ [0, 1]: one evaluation per interval.
#[derive(Clone, Debug)]
pub struct Ddim {
    levels: Vec<Level>,
    eta: f64,
}

impl Ddim {
    /// The sampler over `levels` (noisiest first, ending with [`Level::CLEAN`]) with η = `eta` ∈ [0, 1].
    pub fn new(levels: Vec<Level>, eta: f64) -> Result<Self> {
        check_levels(&levels)?;
        if !(0.0..=1.0).contains(&eta) {
            return Err(Error::invalid(
                "eta",
                format!("DDIM's eta must lie in [0, 1] (0 = deterministic, 1 = DDPM), got {eta}"),
            ));
        }
        Ok(Self { levels, eta })
    }

    /// η.
    pub fn eta(&self) -> f64 {
        self.eta
    }
}

impl Sampler for Ddim {
    fn name(&self) -> &'static str {
        "ddim"
    }

    fn levels(&self) -> &[Level] {
        &self.levels
    }

    fn step(&mut self, i: usize, x: &Tensor, x0: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        if i >= self.num_evals() {
            return Err(step_out_of_range(self.name(), i, self.num_evals()));
        }
        let (t, s) = (self.levels[i], self.levels[i + 1]);
        let c = self.eta * posterior(&t, &s).variance.sqrt();
        // √(σ_s² − c²) ε̂ with ε̂ = (x − α_t x̂₀)/σ_t, expanded into coefficients of x̂₀ and x
        let k = (s.sigma * s.sigma - c * c).max(0.0).sqrt() / t.sigma;
        let out = combine(&[(s.alpha - k * t.alpha, x0), (k, x)])?;
        if c > 0.0 {
            let z = noise_like(x, rng)?;
            Ok((out + z.affine(c, 0.0)?)?)
        } else {
            Ok(out)
        }
    }
}

/// DDIM inversion (η = 0 run from the clean level to the noisiest, see the module docs), with the loop of
/// the samplers: `for i in 0..inv.num_evals() { x0 = model(x, inv.level(i)); x = inv.step(i, &x, &x0)? }`.
/// Each interval takes 1 + `refinements` evaluations, all at its target (noisier) level.
#[derive(Clone, Debug)]
pub struct DdimInversion {
    /// Sampling order (noisiest first, clean last).
    levels: Vec<Level>,
    refinements: usize,
    /// (interval, the sample at its less noisy end) while an interval is being refined.
    start: Option<(usize, Tensor)>,
}

impl DdimInversion {
    /// Inversion of the DDIM sampler over the same `levels` (sampling order: noisiest first, clean last),
    /// with `refinements` fixed-point iterations per interval (0: the one-evaluation approximation).
    pub fn new(levels: Vec<Level>, refinements: usize) -> Result<Self> {
        check_levels(&levels)?;
        Ok(Self {
            levels,
            refinements,
            start: None,
        })
    }

    fn intervals(&self) -> usize {
        self.levels.len() - 1
    }

    /// Number of model evaluations: (1 + refinements) per interval.
    pub fn num_evals(&self) -> usize {
        self.intervals() * (1 + self.refinements)
    }

    /// The level of evaluation `i`: the target level of its interval, the least noisy interval first and the
    /// noisiest last ([`Level::CLEAN`] past the end).
    pub fn level(&self, i: usize) -> Level {
        match i < self.num_evals() {
            true => self.levels[self.intervals() - 1 - i / (1 + self.refinements)],
            false => Level::CLEAN,
        }
    }

    /// One evaluation: given the current `x` and the denoiser's output `x0` for `x` at
    /// [`DdimInversion::level`]`(i)`, the (next estimate of the) sample at that level.
    pub fn step(&mut self, i: usize, x: &Tensor, x0: &Tensor) -> Result<Tensor> {
        let (n, per) = (self.intervals(), 1 + self.refinements);
        if i >= self.num_evals() {
            return Err(step_out_of_range("ddim inversion", i, self.num_evals()));
        }
        let (j, q) = (i / per, i % per);
        if q == 0 {
            self.start = Some((j, x.clone()));
        }
        let x_s = match &self.start {
            Some((jj, x_s)) if *jj == j => x_s.clone(),
            _ => {
                return Err(Error::invalid(
                    "ddim inversion step",
                    format!("evaluation {i} refines interval {j}, but its first evaluation did not come before"),
                ))
            }
        };
        let (t, s) = (self.levels[n - 1 - j], self.levels[n - j]);
        let k = t.sigma - t.alpha * s.sigma / s.alpha;
        if q > 0 && solve_for_x(&t, &s) {
            // x_s = (σ_s/σ_t) x_t + b D(x_t), b = α_s k/σ_t, solved for x_t with D at the current estimate
            let (a, b) = (s.sigma / t.sigma, s.alpha * k / t.sigma);
            return combine(&[(1.0 / a, &x_s), (-b / a, x0)]);
        }
        // x_t = (α_t/α_s) x_s + k ε̂ with ε̂ = (x − α_t x̂₀)/σ_t, the noise the model sees at level t in x
        // (x_s itself on the first evaluation, the current estimate of x_t after)
        combine(&[
            (t.alpha / s.alpha, &x_s),
            (k / t.sigma, x),
            (-k * t.alpha / t.sigma, x0),
        ])
    }
}

/// Which fixed-point form refines the inversion of the interval t → s (s less noisy). The decoding step is
/// x_s = (σ_s/σ_t) x_t + b·D(x_t), b = α_s k/σ_t, k = σ_t − α_t σ_s/α_s, and can be iterated either as
/// x_t ← (α_t/α_s) x_s + k ε̂(x_t) (form A, contraction (1 − r)·p) or as x_t ← (x_s − b D(x_t))/(σ_s/σ_t)
/// (form B, contraction (1/r − 1)(1 − p)), with r = σ̃_s/σ̃_t and p = σ̃_t²/(s² + σ̃_t²) for Gaussian data of
/// std s. Form A converges near the clean
/// end (p ≈ 0), form B across the large jumps in σ̃ at the noisy end (p ≈ 1); the smaller factor for unit
/// data (s = 1) decides. From the clean level only form A exists.
fn solve_for_x(t: &Level, s: &Level) -> bool {
    if s.sigma == 0.0 {
        return false;
    }
    let (st, ss) = (t.sigma / t.alpha, s.sigma / s.alpha);
    let (r, p) = (ss / st, st * st / (1.0 + st * st));
    (1.0 / r - 1.0) * (1.0 - p) < (1.0 - r) * p
}

/// Encodes `x0` into the noise of the noisiest level of `schedule.sampling_levels(steps)` by DDIM inversion
/// with `refinements` fixed-point iterations per interval; `denoise(x, level)` is the model's estimate of the
/// clean data. Decoding the result with the `ddim` sampler (η = 0) over the same schedule and steps
/// reconstructs `x0` up to the fixed-point residual (refinements ≥ 1) or the discretisation error (0).
pub fn ddim_invert<F>(
    schedule: &dyn NoiseSchedule,
    steps: usize,
    refinements: usize,
    x0: &Tensor,
    mut denoise: F,
) -> Result<Tensor>
where
    F: FnMut(&Tensor, &Level) -> Result<Tensor>,
{
    if steps == 0 {
        return Err(Error::invalid(
            "steps",
            "the number of inversion steps must be at least 1, got 0",
        ));
    }
    let mut inv = DdimInversion::new(schedule.sampling_levels(steps)?, refinements)?;
    let mut x = x0.clone();
    for i in 0..inv.num_evals() {
        let level = inv.level(i);
        let d = denoise(&x, &level)?;
        x = inv.step(i, &x, &d)?;
    }
    Ok(x)
}
