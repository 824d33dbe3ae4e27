//! DDPM ancestral sampling (Ho, Jain & Abbeel 2020, "Denoising diffusion probabilistic models",
//! arXiv:2006.11239, eqs. 6–7 and Algorithm 2), written for any pair of levels t > s of any schedule.
//!
//! The forward process from s to t is x_t | x_s ~ N(α_{t|s} x_s, σ²_{t|s} I) with
//! α_{t|s} = α_t/α_s and σ²_{t|s} = σ_t² − α_{t|s}² σ_s² (Kingma et al. 2021, "Variational diffusion
//! models", eq. 3–4). Its posterior given x₀ (Ho et al. eq. 6–7 for adjacent DDPM steps; Kingma et al. eq. 33
//! in general) is q(x_s | x_t, x₀) = N(μ, v I) with
//!
//! μ = (α_s σ²_{t|s}/σ_t²)·x₀ + (α_{t|s} σ_s²/σ_t²)·x_t,   v = σ²_{t|s} σ_s²/σ_t².
//!
//! The sampler replaces x₀ by the denoiser's x̂₀ and draws x_s ~ N(μ, v I). For adjacent DDPM steps
//! v = β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t), Ho et al.'s "σ_t² = β̃_t" choice; for VE levels (α = 1) it is
//! Song et al. 2021's ancestral sampler (eq. 47). At the last step s is clean (σ_s = 0): μ = x̂₀ and v = 0,
//! so the output is the denoised sample, without noise.

use candle_core::Tensor;

use crate::rng::Rng;
use crate::schedulers::{check_levels, combine, noise_like, step_out_of_range, Level, Sampler};
use crate::Result;

/// The Gaussian q(x_s | x_t, x₀) = N(coef_x0·x₀ + coef_x·x_t, variance·I) between two levels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Posterior {
    /// Coefficient of x₀ in the mean, α_s σ²_{t|s}/σ_t².
    pub coef_x0: f64,
    /// Coefficient of x_t in the mean, α_{t|s} σ_s²/σ_t².
    pub coef_x: f64,
    /// Variance σ²_{t|s} σ_s²/σ_t².
    pub variance: f64,
}

/// The posterior q(x_s | x_t, x₀) from the noisier level `t` to the less noisy level `s` (see the module
/// docs). σ²_{t|s} is clamped at 0 against rounding. If `t` is clean (σ_t = 0) there is nothing to undo and
/// the result is the identity (coef_x = 1).
pub fn posterior(t: &Level, s: &Level) -> Posterior {
    if t.sigma == 0.0 {
        return Posterior {
            coef_x0: 0.0,
            coef_x: 1.0,
            variance: 0.0,
        };
    }
    let a_ts = t.alpha / s.alpha;
    let (st2, ss2) = (t.sigma * t.sigma, s.sigma * s.sigma);
    let var_ts = (st2 - a_ts * a_ts * ss2).max(0.0);
    Posterior {
        coef_x0: s.alpha * var_ts / st2,
        coef_x: a_ts * ss2 / st2,
        variance: var_ts * ss2 / st2,
    }
}

/// One ancestral step x_t → x_s with the denoiser's `x0`: the posterior mean plus √v·z (no noise when v = 0).
pub(crate) fn ancestral_step(
    t: &Level,
    s: &Level,
    x: &Tensor,
    x0: &Tensor,
    rng: &mut Rng,
) -> Result<Tensor> {
    let p = posterior(t, s);
    let mean = combine(&[(p.coef_x0, x0), (p.coef_x, x)])?;
    if p.variance > 0.0 {
        let z = noise_like(x, rng)?;
        Ok((mean + z.affine(p.variance.sqrt(), 0.0)?)?)
    } else {
        Ok(mean)
    }
}

/// DDPM ancestral sampler: one evaluation per interval, `levels.len() − 1` in all.
#[derive(Clone, Debug)]
pub struct Ddpm {
    levels: Vec<Level>,
}

impl Ddpm {
    /// The sampler over `levels` (noisiest first, ending with [`Level::CLEAN`]; see
    /// [`crate::schedulers::check_levels`]).
    pub fn new(levels: Vec<Level>) -> Result<Self> {
        check_levels(&levels)?;
        Ok(Self { levels })
    }

    /// The levels visited, ending with the clean one.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }
}

impl Sampler for Ddpm {
    fn name(&self) -> &'static str {
        "ddpm"
    }

    fn levels(&self) -> &[Level] {
        &self.levels
    }

    fn step(&mut self, i: usize, x: &Tensor, x0: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        if i >= self.num_evals() {
            return Err(step_out_of_range(self.name(), i, self.num_evals()));
        }
        ancestral_step(&self.levels[i], &self.levels[i + 1], x, x0, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::{NoiseSchedule, VpSchedule};
    use candle_core::{Device, Shape};

    /// For adjacent DDPM steps the general formula must give Ho et al.'s eq. 7 written with β and ᾱ.
    #[test]
    fn posterior_matches_ho_et_al_eq_7() -> Result<()> {
        let s = VpSchedule::linear(1000)?;
        let (b, ab) = (s.betas(), s.alphas_cumprod());
        for k in [1usize, 10, 500, 999] {
            let p = posterior(&s.level(k), &s.level(k - 1));
            let coef_x0 = ab[k - 1].sqrt() * b[k] / (1.0 - ab[k]);
            let coef_x = (1.0 - b[k]).sqrt() * (1.0 - ab[k - 1]) / (1.0 - ab[k]);
            let var = b[k] * (1.0 - ab[k - 1]) / (1.0 - ab[k]);
            assert!(
                (p.coef_x0 - coef_x0).abs() < 1e-12 * coef_x0.max(1.0),
                "k = {k}"
            );
            assert!((p.coef_x - coef_x).abs() < 1e-12, "k = {k}");
            assert!((p.variance - var).abs() < 1e-12 * var, "k = {k}");
        }
        // VE (α = 1), σ_t = 2 → σ_s = 1: σ²_{t|s} = 3, mean = ¾·x₀ + ¼·x, variance = 3·1/4
        let (t, u) = (
            Level {
                alpha: 1.0,
                sigma: 2.0,
                t: 0.0,
            },
            Level {
                alpha: 1.0,
                sigma: 1.0,
                t: 1.0,
            },
        );
        assert_eq!(
            posterior(&t, &u),
            Posterior {
                coef_x0: 0.75,
                coef_x: 0.25,
                variance: 0.75
            }
        );
        // to the clean level: the mean is x₀ and there is no noise
        let p = posterior(&s.level(5), &Level::CLEAN);
        assert!((p.coef_x0 - 1.0).abs() < 1e-12 && p.coef_x == 0.0 && p.variance == 0.0);
        Ok(())
    }

    #[test]
    fn one_step_returns_the_denoised_sample() -> Result<()> {
        let s = VpSchedule::cosine(100)?;
        let mut d = Ddpm::new(s.sampling_levels(1)?)?;
        assert_eq!(d.num_evals(), 1);
        assert_eq!(d.level(0), s.level(99));
        let mut rng = Rng::new(0);
        let x = d.init_noise(&Shape::from((3, 2)), &mut rng, &Device::Cpu)?;
        let x0 = Tensor::new(&[[1f32, 2.0], [3.0, 4.0], [5.0, 6.0]], &Device::Cpu)?;
        let out = d.step(0, &x, &x0, &mut rng)?;
        let err = (out - &x0)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-5, "{err}");
        assert!(d.step(1, &x, &x0, &mut rng).is_err());
        Ok(())
    }
}
