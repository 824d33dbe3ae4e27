//! Annealed Langevin dynamics (Song & Ermon 2019, "Generative modeling by estimating gradients of the data
//! distribution", arXiv:1907.05600, Algorithm 1), for any noisy levels.
//!
//! For each visited level i = 1..L (noisiest first) with noise σ_i, and T = `langevin_steps` times:
//!
//! x ← x + (ε_i/2)·s(x; i) + √ε_i·z,   ε_i = ε·σ_i²/σ_L²,   z ~ N(0, I),
//!
//! with ε = `langevin_eps`, σ_L the least noisy visited level (σ_min when the schedule's ends are both
//! visited, as for [`crate::schedulers::VeSchedule`]) and the score s = ∇ log p_i(x) = (α·D − x)/σ² from
//! the denoiser (Tweedie's formula; for VE levels α = 1 and s = (D − x)/σ²). Langevin dynamics never reaches
//! σ = 0: its output is a sample of the data convolved with N(0, σ_L² I). With `final_denoise` one more
//! evaluation at the last level returns D = E[x₀ | x] instead (Song & Ermon 2020, "Improved techniques for
//! training score-based generative models", arXiv:2006.09011, Appendix B: x + σ_L²·s for α = 1).
//! Evaluations: L·T (+1 with `final_denoise`).

use candle_core::Tensor;

use crate::rng::Rng;
use crate::schedulers::{check_levels, combine, noise_like, step_out_of_range, Level, Sampler};
use crate::{Error, Result};

/// Annealed Langevin dynamics sampler.
#[derive(Clone, Debug)]
pub struct AnnealedLangevin {
    /// The noisy levels (without the clean end).
    levels: Vec<Level>,
    steps_per_level: usize,
    eps: f64,
    final_denoise: bool,
}

impl AnnealedLangevin {
    /// The sampler over `levels` (noisiest first, ending with [`Level::CLEAN`], which Langevin dynamics
    /// itself does not visit) with `steps_per_level` ≥ 1 steps per level, step size `eps` > 0 at the last
    /// level, and an optional final denoising evaluation.
    pub fn new(
        levels: Vec<Level>,
        steps_per_level: usize,
        eps: f64,
        final_denoise: bool,
    ) -> Result<Self> {
        check_levels(&levels)?;
        if steps_per_level == 0 {
            return Err(Error::invalid(
                "langevin_steps",
                "annealed Langevin dynamics needs at least 1 step per noise level, got 0",
            ));
        }
        if !(eps.is_finite() && eps > 0.0) {
            return Err(Error::invalid(
                "langevin_eps",
                format!("the Langevin step size must be positive and finite, got {eps}"),
            ));
        }
        let mut levels = levels;
        levels.pop();
        Ok(Self {
            levels,
            steps_per_level,
            eps,
            final_denoise,
        })
    }

    /// The step size ε_i = ε·σ_i²/σ_L² at visited level `i`.
    pub fn step_size(&self, i: usize) -> f64 {
        let last = self.levels[self.levels.len() - 1].sigma;
        let s = self.levels[i.min(self.levels.len() - 1)].sigma;
        self.eps * (s / last) * (s / last)
    }

    fn langevin_evals(&self) -> usize {
        self.levels.len() * self.steps_per_level
    }
}

impl Sampler for AnnealedLangevin {
    fn name(&self) -> &'static str {
        "langevin"
    }

    fn num_evals(&self) -> usize {
        self.langevin_evals() + usize::from(self.final_denoise)
    }

    /// The level of evaluation `i`: level ⌊i/T⌋, and the last level for the final denoising ([`Level::CLEAN`]
    /// past the end).
    fn level(&self, i: usize) -> Level {
        if i >= self.num_evals() {
            return Level::CLEAN;
        }
        self.levels[(i / self.steps_per_level).min(self.levels.len() - 1)]
    }

    fn levels(&self) -> &[Level] {
        &self.levels
    }

    fn step(&mut self, i: usize, x: &Tensor, x0: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        if i >= self.num_evals() {
            return Err(step_out_of_range(self.name(), i, self.num_evals()));
        }
        if i == self.langevin_evals() {
            return Ok(x0.clone()); // final denoising: D at the last level
        }
        let k = i / self.steps_per_level;
        let l = self.levels[k];
        let eps = self.step_size(k);
        // x + (ε/2)(αD − x)/σ² + √ε z
        let c = 0.5 * eps / (l.sigma * l.sigma);
        let z = noise_like(x, rng)?;
        combine(&[(1.0 - c, x), (c * l.alpha, x0), (eps.sqrt(), &z)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::VeSchedule;
    use candle_core::Device;

    /// One step against Algorithm 1 written out by hand, with the noise replayed from a clone of the RNG.
    #[test]
    fn one_step_is_algorithm_1() -> Result<()> {
        let ve = VeSchedule::new(1.0, 0.01, 10)?;
        let levels = crate::schedulers::NoiseSchedule::sampling_levels(&ve, 10)?;
        let mut s = AnnealedLangevin::new(levels.clone(), 4, 2e-5, true)?;
        assert_eq!(s.num_evals(), 41);
        let dev = Device::Cpu;
        let x = Tensor::new(&[[0.3f32, -1.0], [2.0, 0.5]], &dev)?;
        let d = Tensor::new(&[[0.1f32, 0.2], [0.3, 0.4]], &dev)?;
        let mut rng = Rng::new(3);
        let z = rng
            .clone()
            .randn((2, 2), &dev)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        // evaluation 5 is the 2nd step at level 1: σ₁ = 0.01^(1/9), α₁ = ε σ₁²/σ_L² (σ_L = 0.01)
        let sig = 0.01f64.powf(1.0 / 9.0);
        assert_eq!(s.level(5).sigma, levels[1].sigma);
        assert!((levels[1].sigma - sig).abs() < 1e-12);
        let a = 2e-5 * sig * sig / 1e-4;
        let out = s
            .step(5, &x, &d, &mut rng)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (xv, dv) = (
            x.flatten_all()?.to_vec1::<f32>()?,
            d.flatten_all()?.to_vec1::<f32>()?,
        );
        for i in 0..4 {
            let score = (dv[i] as f64 - xv[i] as f64) / (sig * sig);
            let want = xv[i] as f64 + a / 2.0 * score + a.sqrt() * z[i] as f64;
            assert!(
                (out[i] as f64 - want).abs() < 1e-5,
                "{i}: {} vs {want}",
                out[i]
            );
        }
        // the final evaluation returns the denoiser's output at the last level
        assert_eq!(s.level(40), levels[9]);
        assert_eq!(
            s.step(40, &x, &d, &mut rng)?.to_vec2::<f32>()?,
            d.to_vec2::<f32>()?
        );
        let no_denoise = AnnealedLangevin::new(levels, 4, 2e-5, false)?;
        assert_eq!(no_denoise.num_evals(), 40);
        Ok(())
    }
}
