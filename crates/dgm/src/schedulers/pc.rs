//! Predictor–corrector sampling (Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole 2021, "Score-based
//! generative modeling through stochastic differential equations", arXiv:2011.13456, Algorithms 2–4), for
//! any levels.
//!
//! For each interval t → s (noisiest first), `langevin_steps` = M corrector evaluations at t and then one
//! predictor evaluation at t, the order of the authors' `pc_sampler` (corrector, then predictor, at each t):
//!
//! * Corrector: Langevin MCMC for p_t with the step size set by the signal-to-noise ratio r (Algorithm 4):
//!   g = (α_t·D − x)/σ_t² (the score), z ~ N(0, I), ε = 2·a·(r‖z‖/‖g‖)², x ← x + ε·g + √(2ε)·z.
//!   The norms are averages over the batch of per-example Euclidean norms, as in the authors' code. Their VP
//!   corrector multiplies by a = 1 − β_i of the discrete DDPM step; with subsampled levels no single β
//!   exists, and 1 − β ≥ 0.98 for the DDPM schedules, so we use a = 1 for every level family (Algorithm 4 as
//!   written for VE). The step is capped at ε ≤ σ_t², the step that moves x + ε·g exactly onto α_t·D: as
//!   ‖g‖ → 0 (x at the mode, or a score at rounding level) the formula's ε grows without bound, and one
//!   such step would throw the sample far away. With r = 0.16 the SNR rule gives ε ≈ 0.05·σ_t² on typical
//!   samples, far below the cap.
//! * Predictor: the ancestral step with the posterior q(x_s | x_t, x̂₀) ([`crate::schedulers::Ddpm`]); for
//!   VE levels this is the paper's ancestral / reverse-diffusion predictor (eq. 47, Algorithm 2), for VP
//!   levels Ho et al.'s step. The last predictor step (to σ = 0) returns x̂₀ without noise, which is the
//!   authors' final "denoise" step.
//!
//! Evaluations: N·(M + 1) for N intervals; M = 0 reduces to DDPM ancestral sampling.

use candle_core::{DType, Tensor};

use crate::rng::Rng;
use crate::schedulers::ddpm::ancestral_step;
use crate::schedulers::{check_levels, combine, noise_like, step_out_of_range, Level, Sampler};
use crate::{Error, Result};

/// Predictor–corrector sampler (ancestral predictor, Langevin corrector with SNR step size).
#[derive(Clone, Debug)]
pub struct PredictorCorrector {
    levels: Vec<Level>,
    corrector_steps: usize,
    snr: f64,
}

impl PredictorCorrector {
    /// The sampler over `levels` (noisiest first, ending with [`Level::CLEAN`]) with `corrector_steps`
    /// Langevin steps per level and signal-to-noise ratio `snr` > 0.
    pub fn new(levels: Vec<Level>, corrector_steps: usize, snr: f64) -> Result<Self> {
        check_levels(&levels)?;
        if corrector_steps > 0 && !(snr.is_finite() && snr > 0.0) {
            return Err(Error::invalid(
                "snr",
                format!(
                    "the corrector's signal-to-noise ratio must be positive and finite, got {snr}"
                ),
            ));
        }
        Ok(Self {
            levels,
            corrector_steps,
            snr,
        })
    }

    fn intervals(&self) -> usize {
        self.levels.len() - 1
    }

    /// (interval, corrector?) of evaluation `i`.
    fn locate(&self, i: usize) -> (usize, bool) {
        let per = self.corrector_steps + 1;
        (i / per, i % per < self.corrector_steps)
    }
}

/// The mean over the batch (first dimension) of the per-example Euclidean norms of `t`.
fn mean_example_norm(t: &Tensor) -> Result<f64> {
    let b = if t.rank() >= 2 { t.dim(0)? } else { 1 };
    let norms = t
        .to_dtype(DType::F32)?
        .reshape((b, ()))?
        .sqr()?
        .sum(1)?
        .sqrt()?;
    Ok(norms.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl Sampler for PredictorCorrector {
    fn name(&self) -> &'static str {
        "pc"
    }

    fn num_evals(&self) -> usize {
        self.intervals() * (self.corrector_steps + 1)
    }

    /// The level of evaluation `i`: every evaluation of interval k is at its start t_k ([`Level::CLEAN`]
    /// past the end).
    fn level(&self, i: usize) -> Level {
        if i >= self.num_evals() {
            return Level::CLEAN;
        }
        self.levels[self.locate(i).0]
    }

    fn levels(&self) -> &[Level] {
        &self.levels
    }

    fn step(&mut self, i: usize, x: &Tensor, x0: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        if i >= self.num_evals() {
            return Err(step_out_of_range(self.name(), i, self.num_evals()));
        }
        let (k, corrector) = self.locate(i);
        let t = self.levels[k];
        if !corrector {
            return ancestral_step(&t, &self.levels[k + 1], x, x0, rng);
        }
        let inv_var = 1.0 / (t.sigma * t.sigma);
        let g = combine(&[(t.alpha * inv_var, x0), (-inv_var, x)])?;
        let z = noise_like(x, rng)?;
        let (g_norm, z_norm) = (mean_example_norm(&g)?, mean_example_norm(&z)?);
        let cap = t.sigma * t.sigma;
        let eps = match g_norm > 0.0 {
            true => (2.0 * (self.snr * z_norm / g_norm).powi(2)).min(cap),
            false => cap,
        };
        combine(&[(1.0, x), (eps, &g), ((2.0 * eps).sqrt(), &z)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::{posterior, NoiseSchedule, VpSchedule};
    use candle_core::Device;

    /// The corrector step against Algorithm 4 written out by hand (noise replayed from a clone of the RNG),
    /// and the predictor step against the posterior.
    #[test]
    fn corrector_is_algorithm_4_and_predictor_is_ancestral() -> Result<()> {
        let sch = VpSchedule::cosine(100)?;
        let levels = sch.sampling_levels(5)?;
        let mut pc = PredictorCorrector::new(levels.clone(), 2, 0.16)?;
        assert_eq!(pc.num_evals(), 15);
        let dev = Device::Cpu;
        let x = Tensor::new(&[[0.3f32, -1.0, 0.2], [2.0, 0.5, -0.7]], &dev)?;
        let d = Tensor::new(&[[0.1f32, 0.2, 0.0], [0.3, 0.4, -0.1]], &dev)?;
        let (xv, dv) = (x.to_vec2::<f32>()?, d.to_vec2::<f32>()?);
        // evaluation 4 is the second corrector step of interval 1, at level 1
        let l = levels[1];
        assert_eq!(pc.level(4), l);
        let mut rng = Rng::new(5);
        let z = rng.clone().randn((2, 3), &dev)?.to_vec2::<f32>()?;
        let out = pc.step(4, &x, &d, &mut rng)?.to_vec2::<f32>()?;
        let g: Vec<Vec<f64>> = (0..2)
            .map(|b| {
                (0..3)
                    .map(|j| (l.alpha * dv[b][j] as f64 - xv[b][j] as f64) / (l.sigma * l.sigma))
                    .collect()
            })
            .collect();
        let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
        let g_norm = (norm(&g[0]) + norm(&g[1])) / 2.0;
        let z64: Vec<Vec<f64>> = z
            .iter()
            .map(|r| r.iter().map(|&a| a as f64).collect())
            .collect();
        let z_norm = (norm(&z64[0]) + norm(&z64[1])) / 2.0;
        let eps = 2.0 * (0.16 * z_norm / g_norm).powi(2);
        for b in 0..2 {
            for j in 0..3 {
                let want = xv[b][j] as f64 + eps * g[b][j] + (2.0 * eps).sqrt() * z64[b][j];
                assert!(
                    (out[b][j] as f64 - want).abs() < 1e-5,
                    "{b},{j}: {} vs {want}",
                    out[b][j]
                );
            }
        }
        // evaluation 5 is the predictor of interval 1: level 1 → level 2
        assert_eq!(pc.level(5), l);
        let p = posterior(&l, &levels[2]);
        let z = rng.clone().randn((2, 3), &dev)?.to_vec2::<f32>()?;
        let out = pc.step(5, &x, &d, &mut rng)?.to_vec2::<f32>()?;
        for b in 0..2 {
            for j in 0..3 {
                let want = p.coef_x0 * dv[b][j] as f64
                    + p.coef_x * xv[b][j] as f64
                    + p.variance.sqrt() * z[b][j] as f64;
                assert!((out[b][j] as f64 - want).abs() < 1e-5);
            }
        }
        // at the mode (a score at rounding level) the step is capped at ε = σ²: x + σ² g + √2 σ z
        let at_mode = (&d * l.alpha)?;
        assert_eq!(pc.level(3), l);
        let z = rng.clone().randn((2, 3), &dev)?.to_vec2::<f32>()?;
        let out = pc.step(3, &at_mode, &d, &mut rng)?.to_vec2::<f32>()?;
        let xm = at_mode.to_vec2::<f32>()?;
        for b in 0..2 {
            for j in 0..3 {
                let want = xm[b][j] as f64 + 2f64.sqrt() * l.sigma * z[b][j] as f64;
                assert!(
                    (out[b][j] as f64 - want).abs() < 1e-4,
                    "{} vs {want}",
                    out[b][j]
                );
            }
        }
        Ok(())
    }
}
