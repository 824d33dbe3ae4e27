//! Langevin dynamics on an energy E(x): the MCMC sampler of energy-based models (Du & Mordatch 2019, "Implicit
//! generation and generalization in energy-based models"; Nijkamp et al. 2019, short-run MCMC).
//!
//! One step, with step size λ and noise scale ε kept apart as in the reference code:
//!
//!   x ← x − λ · clip(∇ₓE(x)) + ε ξ,   ξ ~ N(0, I).
//!
//! With ε² = 2λ this is the unadjusted Langevin algorithm for p(x) ∝ exp(−E(x)); with λ and ε set apart it is the
//! same algorithm for the *tempered* density exp(−E(x)/T) with T = ε²/(2λ) ([`LangevinConfig::temperature`]): the
//! reference settings (λ large, ε small) sample a sharpened, colder distribution than the model's. Either way the
//! stationary distribution carries an O(λ) discretisation bias (no Metropolis correction), and a short run from
//! noise is far from stationary — what Nijkamp et al. call short-run MCMC, a sampler in its own right. `clip`
//! clamps each gradient element to [−c, c] when c > 0 (a guard against a few huge gradients early in training).
//! Gradients need first-order autodiff only.

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::{Error, Result};

/// Settings of a Langevin run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LangevinConfig {
    /// Number of steps.
    pub steps: usize,
    /// Step size λ multiplying the energy gradient.
    pub step_size: f64,
    /// Noise scale ε (ε² = 2λ samples exp(−E) itself).
    pub noise: f64,
    /// Clamp each gradient element to [−c, c] (0 = no clamping).
    pub grad_clip: f64,
}

impl LangevinConfig {
    /// Plain Langevin dynamics on exp(−E): noise ε = √(2λ), no clamping.
    pub fn exact(steps: usize, step_size: f64) -> Self {
        Self {
            steps,
            step_size,
            noise: (2.0 * step_size).sqrt(),
            grad_clip: 0.0,
        }
    }

    /// The temperature T = ε²/(2λ) of the density exp(−E/T) the chain targets (1 = the model's own).
    pub fn temperature(&self) -> f64 {
        self.noise * self.noise / (2.0 * self.step_size)
    }

    /// Refuses settings that cannot run, naming the bad value.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::invalid(
                "langevin.steps",
                "must be at least 1, got 0",
            ));
        }
        for (name, v) in [
            ("langevin.step_size", self.step_size),
            ("langevin.noise", self.noise),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::invalid(
                    name,
                    format!("must be a positive finite number, got {v}"),
                ));
            }
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return Err(Error::invalid(
                "langevin.grad_clip",
                format!(
                    "must be a finite number ≥ 0 (0 = no clamping), got {}",
                    self.grad_clip
                ),
            ));
        }
        Ok(())
    }
}

/// ∇ₓE(x) for a batch `x` `(n, …)`, where `energy` maps it to one energy per example `(n,)`.
pub fn energy_grad(energy: &dyn Fn(&Tensor) -> Result<Tensor>, x: &Tensor) -> Result<Tensor> {
    let xv = Var::from_tensor(&x.detach())?;
    let e = energy(xv.as_tensor())?;
    if e.dims() != [x.dim(0)?] {
        return Err(Error::invalid(
            "energy",
            format!(
                "gives shape {:?} for a batch of {:?}: one energy per example expected",
                e.dims(),
                x.dims()
            ),
        ));
    }
    let grads = e.to_dtype(DType::F32)?.sum_all()?.backward()?;
    Ok(match grads.get(xv.as_tensor()) {
        Some(g) => g.detach(),
        None => x.zeros_like()?, // an energy that does not depend on x
    })
}

/// Runs `cfg.steps` Langevin steps from `x0` `(n, …)` on `energy` (one energy per example), noise from `rng`;
/// returns the final states (no gradient). With a `domain` [lo, hi] every value is clamped to it after each step
/// (Du & Mordatch 2019 clamp to the image range: the density lives on that box).
pub fn langevin(
    energy: &dyn Fn(&Tensor) -> Result<Tensor>,
    x0: &Tensor,
    cfg: &LangevinConfig,
    domain: Option<(f64, f64)>,
    rng: &mut Rng,
) -> Result<Tensor> {
    cfg.validate()?;
    if let Some((lo, hi)) = domain {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::invalid(
                "langevin domain",
                format!("needs finite lo < hi, got [{lo}, {hi}]"),
            ));
        }
    }
    let mut x = x0.detach();
    for _ in 0..cfg.steps {
        let mut g = energy_grad(energy, &x)?;
        if cfg.grad_clip > 0.0 {
            g = g.clamp(-cfg.grad_clip, cfg.grad_clip)?;
        }
        let noise = rng.randn(x.shape(), x.device())?.to_dtype(x.dtype())?;
        x = ((&x - (g * cfg.step_size)?)? + (noise * cfg.noise)?)?;
        if let Some((lo, hi)) = domain {
            x = x.clamp(lo, hi)?;
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::mmd::mmd_test;
    use candle_core::Device;

    /// E(x) = −log Σ_k ¼ N(x; μ_k, s²I) for four Gaussians at (±1.5, ±1.5), s = 0.5: (n, 2) → (n,).
    fn mixture_energy(x: &Tensor) -> Result<Tensor> {
        let s2 = 0.25f64;
        let mu = Tensor::new(
            &[[1.5f32, 1.5], [1.5, -1.5], [-1.5, 1.5], [-1.5, -1.5]],
            x.device(),
        )?;
        let d = x.unsqueeze(1)?.broadcast_sub(&mu.unsqueeze(0)?)?; // (n, 4, 2)
        let logp = (d.sqr()?.sum(2)? * (-0.5 / s2))?; // (n, 4), up to a constant
        let m = logp.max_keepdim(1)?.detach(); // log-sum-exp with the max held fixed: the same gradient
        let lse = (logp.broadcast_sub(&m)?.exp()?.sum(1)?.log()? + m.squeeze(1)?)?;
        Ok(lse.neg()?)
    }

    /// The fraction of 2-D points nearest each mode (±1.5, ±1.5) (quadrant order of the energy's modes) and the
    /// variance of each coordinate about its nearest mode.
    fn mode_stats(p: &[f32]) -> ([f64; 4], f64) {
        let (mut count, mut ss) = ([0usize; 4], 0.0f64);
        for q in p.chunks(2) {
            let k = 2 * usize::from(q[0] < 0.0) + usize::from(q[1] < 0.0);
            count[k] += 1;
            ss += (q[0].abs() as f64 - 1.5).powi(2) + (q[1].abs() as f64 - 1.5).powi(2);
        }
        let n = (p.len() / 2) as f64;
        (count.map(|c| c as f64 / n), ss / (2.0 * n))
    }

    fn points(t: &Tensor) -> Result<Vec<f32>> {
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }

    /// With the exact energy of a Gaussian mixture, chains started from a broad Gaussian end (after 1000 steps,
    /// λ = 0.01, ε = √(2λ)) distributed like the mixture: the kernel two-sample test against exact draws does
    /// not reject, while the starting points and a chain at twice the temperature are rejected; the run is
    /// bit-reproducible.
    #[test]
    fn langevin_on_an_exact_mixture_energy_samples_the_mixture() -> Result<()> {
        let dev = Device::Cpu;
        let n = 1500;
        let x0 = (Rng::new(5).randn((n, 2), &dev)? * 1.5)?;
        let cfg = LangevinConfig::exact(1000, 0.01);
        assert!((cfg.temperature() - 1.0).abs() < 1e-12);
        let x = langevin(&mixture_energy, &x0, &cfg, None, &mut Rng::new(7))?;
        // exact draws: a uniform component, then N(μ_k, 0.25 I)
        let mut r = Rng::new(6);
        let exact: Vec<f32> = (0..n)
            .flat_map(|_| {
                let k = r.below(4);
                let (sx, sy) = (
                    if k < 2 { 1.5 } else { -1.5 },
                    if k.is_multiple_of(2) { 1.5 } else { -1.5 },
                );
                [sx + 0.5 * r.normal(), sy + 0.5 * r.normal()]
            })
            .collect();
        let after = mmd_test(&points(&x)?, &exact, 2, 200, 1)?;
        let before = mmd_test(&points(&x0)?, &exact, 2, 200, 1)?;
        assert!(after.p_value > 0.01, "samples vs the mixture: {after:?}");
        assert!(before.p_value < 0.01, "the start should differ: {before:?}");
        // the median-bandwidth MMD sees the layout of the modes; their weights and widths are checked directly:
        // a quarter of the chains near each mode, each coordinate's variance about its mode 0.25 (+ 2 % bias)
        let (occupancy, var) = mode_stats(&points(&x)?);
        assert!(
            occupancy.iter().all(|o| (o - 0.25).abs() < 0.04) && (var - 0.25).abs() < 0.025,
            "occupancy {occupancy:?}, within-mode variance {var}"
        );
        // ... which sees a wrong stationary distribution: at twice the temperature the variance is 0.5
        let hot = LangevinConfig {
            noise: 2.0 * cfg.step_size.sqrt(),
            ..cfg.clone()
        };
        let hot = langevin(&mixture_energy, &x0, &hot, None, &mut Rng::new(7))?;
        let (_, hot_var) = mode_stats(&points(&hot)?);
        assert!(hot_var > 0.4, "T = 2: within-mode variance {hot_var}");
        let same = langevin(&mixture_energy, &x0, &cfg, None, &mut Rng::new(7))?;
        let other = langevin(&mixture_energy, &x0, &cfg, None, &mut Rng::new(8))?;
        assert_eq!(points(&same)?, points(&x)?);
        assert_ne!(points(&other)?, points(&x)?); // another noise stream gives other chains
        Ok(())
    }

    /// With λ and ε set apart, the chain samples exp(−E/T), T = ε²/(2λ): on a Gaussian energy E = ½ xᵀ diag(1/v) x
    /// the sample variances are T·v (here T = ¼), within the sampling error and the O(λ) discretisation bias.
    #[test]
    fn decoupled_noise_samples_a_tempered_density() -> Result<()> {
        let dev = Device::Cpu;
        let v = [0.5f32, 2.0];
        let inv = Tensor::new(&[1.0 / v[0], 1.0 / v[1]], &dev)?;
        let energy =
            |x: &Tensor| -> Result<Tensor> { Ok((x.sqr()?.broadcast_mul(&inv)?.sum(1)? * 0.5)?) };
        let cfg = LangevinConfig {
            steps: 800,
            step_size: 0.02,
            noise: 0.1,
            grad_clip: 0.0,
        };
        let t = cfg.temperature();
        assert!((t - 0.25).abs() < 1e-12);
        let x = langevin(
            &energy,
            &Tensor::zeros((4000, 2), DType::F32, &dev)?,
            &cfg,
            None,
            &mut Rng::new(2),
        )?;
        let var: Vec<f32> = x.sqr()?.mean(0)?.to_vec1()?;
        for d in 0..2 {
            let want = t as f32 * v[d];
            assert!(
                (var[d] - want).abs() < 0.08 * want,
                "dim {d}: variance {} vs {want}",
                var[d]
            );
        }
        Ok(())
    }

    #[test]
    fn bad_settings_are_refused_by_name() -> Result<()> {
        let ok = LangevinConfig::exact(10, 0.01);
        for (bad, key) in [
            (
                LangevinConfig {
                    steps: 0,
                    ..ok.clone()
                },
                "langevin.steps",
            ),
            (
                LangevinConfig {
                    step_size: 0.0,
                    ..ok.clone()
                },
                "langevin.step_size",
            ),
            (
                LangevinConfig {
                    noise: -1.0,
                    ..ok.clone()
                },
                "langevin.noise",
            ),
            (
                LangevinConfig {
                    grad_clip: f64::NAN,
                    ..ok.clone()
                },
                "langevin.grad_clip",
            ),
        ] {
            assert!(
                bad.validate().is_err_and(|e| e.to_string().contains(key)),
                "{key}"
            );
        }
        // an energy with the wrong shape is refused
        let x = Tensor::zeros((3, 2), DType::F32, &candle_core::Device::Cpu)?;
        let e = |x: &Tensor| -> Result<Tensor> { Ok(x.sum_all()?) };
        assert!(langevin(&e, &x, &ok, None, &mut Rng::new(0)).is_err());
        // so is an empty domain; a domain holds every value of the chains
        let quad = |x: &Tensor| -> Result<Tensor> { Ok((x.sqr()?.sum(1)? * 0.5)?) };
        assert!(langevin(&quad, &x, &ok, Some((1.0, 1.0)), &mut Rng::new(0)).is_err());
        let wide = LangevinConfig::exact(20, 0.5);
        let y = langevin(&quad, &x, &wide, Some((-0.1, 0.2)), &mut Rng::new(0))?;
        let v = y.flatten_all()?.to_vec1::<f32>()?;
        assert!(v.iter().all(|&u| (-0.1..=0.2).contains(&u)), "{v:?}");
        assert!(v.contains(&-0.1) && v.contains(&0.2));
        Ok(())
    }
}
