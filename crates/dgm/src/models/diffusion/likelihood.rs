//! Likelihoods of diffusion models, on the same accounting as the other families (nats per example; bits per
//! dimension of the 8-bit data for images). Two estimators, both driven by the denoiser D(x; level) = x̂₀ that
//! the samplers use, so they work for every model of this family:
//!
//! * [`vlb_nats`] — the variational bound of Ho et al. (2020, eq. 5) for a discrete-time VP model:
//!   −log p(x₀) ≤ L_T + Σ_{k=1}^{T−1} L_k + L_0, with
//!   L_T = KL(q(x_T|x₀) ‖ N(0, I)),
//!   L_k = KL(q(x_{k−1}|x_k, x₀) ‖ p(x_{k−1}|x_k)) = c_k²‖x₀ − x̂₀‖² / (2 β̃_k) (same variance β̃_k on both sides,
//!   c_k the posterior's coefficient of x₀), and
//!   L_0 = −log p(x₀|x₁) from the discretized Gaussian decoder N(x̂₀, β₁) integrated over each pixel's bin
//!   (Ho et al. eq. 13; the outer bins reach to ±∞). For 8-bit images this is a probability of the discrete
//!   pixel values: no dequantization is needed. The KL terms are a Monte-Carlo estimate over the noise (one draw
//!   per term, as in Ho et al.) and, optionally, over the timesteps (stratified, unbiased).
//! * [`ode_log_likelihood`] — the probability-flow ODE (Song et al. 2021, arXiv:2011.13456, section 4.3 and
//!   appendix D.2). In the coordinates y = x/α, s = σ/α every schedule is variance-exploding, y = x₀ + s·ε, and
//!   the ODE is dy/dℓ = y − D(α·y; level) with ℓ = ln s (Karras et al. 2022, eq. 4 with σ → s). The
//!   instantaneous change of variables gives log p₀(y₀) = log p_L(y_L) + ∫ (d − ∇·D) dℓ. The divergence is
//!   exact (d backward passes, small d) or a Hutchinson estimate with Rademacher probes (unbiased); the integral
//!   is Heun's method over the given levels; the prior at the noisiest level is N(0, (σ² + α²)/α²·I) in y
//!   (exactly the VP marginal for unit-variance data; for VE schedules the data variance is negligible next to
//!   σ_max²). The result is the log-density of the data blurred by the least noisy level's s₀, an estimate.

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::conditioning::{batch_cond, Cond, CondKind};
use crate::data::Batch;
use crate::data::Preprocessing;
use crate::distributions::gaussian::{discretized_gaussian_log_prob, gaussian_log_density};
use crate::model::{LikelihoodKind, LikelihoodOptions, LikelihoodSpace, LogLikelihood};
use crate::rng::Rng;
use crate::schedulers::{posterior, Level, VpSchedule};
use crate::{Error, Result};

/// How a model's data are quantized, which the likelihoods need to know (a `[model.quantization]` table,
/// filled by each diffusion model's `prepare` from the preprocessing).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quantization {
    /// Values per data dimension: 256 for 8-bit images scaled without dequantization, 2 for binarized ones,
    /// 0 for continuous data.
    pub levels: usize,
    /// The lowest and highest data value.
    pub range: [f64; 2],
}

impl Default for Quantization {
    fn default() -> Self {
        Self {
            levels: 0,
            range: [-1.0, 1.0],
        }
    }
}

impl Quantization {
    /// The quantization `prep` produces (identity: continuous over the default range).
    pub fn from_preprocessing(prep: &Preprocessing) -> Self {
        match prep {
            Preprocessing::Scale { range, dequantize } => {
                let (lo, hi) = range.bounds();
                Self {
                    levels: if *dequantize { 0 } else { 256 },
                    range: [lo as f64, hi as f64],
                }
            }
            Preprocessing::Binarize { .. } => Self {
                levels: 2,
                range: [0.0, 1.0],
            },
            Preprocessing::Identity => Self::default(),
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        let [lo, hi] = self.range;
        if self.levels == 1 || !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::invalid(
                "model.quantization",
                format!(
                    "{} levels over {:?}: need 0 (continuous) or ≥ 2 levels over a range lo < hi",
                    self.levels, self.range
                ),
            ));
        }
        Ok(())
    }

    /// The decoder of the variational bound: discretized over the data's values, or a density.
    pub fn decoder(&self) -> Decoder {
        let [lo, hi] = self.range;
        match self.levels {
            0 | 1 => Decoder::Gaussian,
            n => Decoder::Discretized {
                half_width: 0.5 * (hi - lo) / (n - 1) as f64,
                lo,
                hi,
            },
        }
    }

    /// Whether likelihoods of these data are probabilities of discrete values or densities.
    pub fn space(&self) -> LikelihoodSpace {
        match self.levels {
            0 | 1 => LikelihoodSpace::Continuous,
            _ => LikelihoodSpace::Discrete,
        }
    }
}

/// [`ode_log_likelihood`] of a batch of data as a model reports it: for discrete data (see [`Quantization`])
/// the data are dequantized uniformly within each value's bin and D·ln(bin width) is added, which makes the
/// result an estimate of a lower bound on the probability of the discrete values (Theis et al. 2016); the
/// divergence is exact for ≤ 8 dimensions, else Hutchinson's with `probes` probes.
pub fn ode_data_log_likelihood<F>(
    x: &Tensor,
    levels: &[Level],
    quantization: &Quantization,
    probes: usize,
    rng: &mut Rng,
    denoise: F,
) -> Result<Vec<f64>>
where
    F: FnMut(&Tensor, &Level) -> Result<Tensor>,
{
    let x = x.to_dtype(DType::F32)?;
    let dims = x.elem_count() / x.dim(0)?.max(1);
    let divergence = if dims <= 8 {
        Divergence::Exact
    } else {
        Divergence::Hutchinson(probes.max(1))
    };
    let (x, log_bin) = match quantization.decoder() {
        Decoder::Discretized { half_width, .. } => {
            let w = 2.0 * half_width;
            let u = rng.rand(x.shape(), x.device())?; // U[0, 1)
            (x.add(&u.affine(w, -0.5 * w)?)?, dims as f64 * w.ln())
        }
        Decoder::Gaussian => (x, 0.0),
    };
    let ll = ode_log_likelihood(&x, levels, divergence, rng, denoise)?;
    Ok(ll.into_iter().map(|v| v + log_bin).collect())
}

/// [`Density::log_likelihood`](crate::model::Density::log_likelihood) of a variance-exploding model (EDM,
/// NCSN), whose one estimator is `ode`: [`ode_data_log_likelihood`] over `opts.steps` Heun steps (default
/// `default_steps`) from σ_min to σ_max evenly in ln σ, with `opts.samples` Hutchinson probes.
/// `denoise(x, level, class)` is the model's unclipped denoiser; `model` names it in messages.
#[allow(clippy::too_many_arguments)]
pub fn ve_ode_density<F>(
    batch: &Batch,
    opts: &LikelihoodOptions,
    model: &str,
    cond_kind: CondKind,
    sigmas: (f64, f64),
    default_steps: usize,
    quantization: &Quantization,
    denoise: F,
) -> Result<LogLikelihood>
where
    F: Fn(&Tensor, &Level, &Cond) -> Result<Tensor>,
{
    match opts.estimator.as_deref().unwrap_or("ode") {
        "ode" => {}
        other => return Err(Error::unknown("estimator", other, &["ode"])),
    }
    let cond = batch_cond(batch, cond_kind, model)?;
    let levels = geometric_levels(sigmas.0, sigmas.1, opts.steps.unwrap_or(default_steps))?;
    let mut rng = Rng::new(opts.seed);
    let nats = ode_data_log_likelihood(
        &batch.x,
        &levels,
        quantization,
        opts.samples,
        &mut rng,
        |x, l| denoise(x, l, &cond),
    )?;
    Ok(LogLikelihood {
        nats,
        kind: LikelihoodKind::Estimate("ODE".into()),
        space: quantization.space(),
    })
}

/// `steps + 1` variance-exploding levels (α = 1) from σ_min to σ_max, evenly spaced in ln σ (least noisy
/// first), for [`ode_log_likelihood`]; `t` is σ (models compute their time input from σ).
pub fn geometric_levels(sigma_min: f64, sigma_max: f64, steps: usize) -> Result<Vec<Level>> {
    if steps == 0 || !(sigma_min > 0.0 && sigma_max > sigma_min) {
        return Err(Error::invalid(
            "ode likelihood levels",
            format!("need steps ≥ 1 and 0 < σ_min < σ_max, got {steps} steps over [{sigma_min}, {sigma_max}]"),
        ));
    }
    Ok((0..=steps)
        .map(|i| {
            let sigma = sigma_min * (sigma_max / sigma_min).powf(i as f64 / steps as f64);
            Level {
                alpha: 1.0,
                sigma,
                t: sigma,
            }
        })
        .collect())
}

/// The decoder p(x₀ | x₁) at the end of the VLB.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decoder {
    /// 8-bit data scaled to [lo, lo + 255·2h]: a Gaussian integrated over each value's bin of half-width `h`
    /// (1/255 for [−1, 1]); the result is a probability of the discrete values.
    Discretized {
        /// Half the spacing of the data values.
        half_width: f64,
        /// The lowest data value (its bin reaches to −∞).
        lo: f64,
        /// The highest data value (its bin reaches to +∞).
        hi: f64,
    },
    /// Continuous data: the Gaussian density itself.
    Gaussian,
}

/// log p(x | mean, scale) of `decoder` for one value.
fn decoder_log_prob(decoder: &Decoder, x: f64, mean: f64, scale: f64) -> f64 {
    match *decoder {
        Decoder::Discretized { half_width, lo, hi } => {
            discretized_gaussian_log_prob(x, mean, scale, half_width, lo, hi)
        }
        Decoder::Gaussian => gaussian_log_density(x, mean, scale),
    }
}

/// Per-example sums of `f(x₀, x̂₀)` over the data dimensions, on the host in f64.
fn per_example(a: &Tensor, b: &Tensor, f: impl Fn(f64, f64) -> f64) -> Result<Vec<f64>> {
    let n = a.dim(0)?;
    let a = a.flatten_from(1)?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let b = b.flatten_from(1)?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    Ok((0..n)
        .map(|i| a[i].iter().zip(&b[i]).map(|(&x, &y)| f(x, y)).sum())
        .collect())
}

/// The variational bound L ≥ −log p(x₀) of Ho et al. (see the module docs) for each example of `x0`, in nats.
///
/// `timesteps`: how many of the T − 1 KL terms to evaluate; `None` (or ≥ T − 1) sums all of them, fewer picks
/// one step per equal stratum of 1..T−1 (shared by the batch) and scales the sum by (T − 1)/K, which keeps
/// each example's estimate unbiased. `denoise(x, level)` is the model's x̂₀.
pub fn vlb_nats<F>(
    x0: &Tensor,
    schedule: &VpSchedule,
    decoder: &Decoder,
    timesteps: Option<usize>,
    rng: &mut Rng,
    mut denoise: F,
) -> Result<Vec<f64>>
where
    F: FnMut(&Tensor, &Level) -> Result<Tensor>,
{
    let t_max = schedule.num_steps();
    if t_max < 2 {
        return Err(Error::invalid(
            "vlb",
            format!("the bound needs at least 2 diffusion steps, the schedule has {t_max}"),
        ));
    }
    let n_kl = t_max - 1;
    let k = match timesteps {
        Some(0) => {
            return Err(Error::invalid(
                "vlb timesteps",
                "must be at least 1 (or unset for all of them)",
            ))
        }
        Some(k) => k.min(n_kl),
        None => n_kl,
    };
    let steps: Vec<usize> = if k == n_kl {
        (1..t_max).collect()
    } else {
        // stratum j covers steps 1 + [j·n/k, (j+1)·n/k)
        (0..k)
            .map(|j| {
                let (lo, hi) = (j * n_kl / k, (j + 1) * n_kl / k);
                1 + lo + rng.below(hi - lo)
            })
            .collect()
    };
    let weight = n_kl as f64 / k as f64;
    let mut total = vec![0.0f64; x0.dim(0)?];
    let noisy = |level: &Level, rng: &mut Rng| -> Result<Tensor> {
        let eps = rng.randn(x0.shape(), x0.device())?;
        Ok(((x0 * level.alpha)? + (eps * level.sigma)?)?)
    };
    // L_T: KL(N(α x₀, σ²) ‖ N(0, 1)) per dimension
    let last = schedule.level(t_max - 1);
    let (a2, s2) = (last.alpha * last.alpha, last.sigma * last.sigma);
    let prior = per_example(x0, x0, |x, _| 0.5 * (a2 * x * x + s2 - 1.0 - s2.ln()))?;
    // L_k for the chosen k
    for &step in &steps {
        let (lt, ls) = (schedule.level(step), schedule.level(step - 1));
        let post = posterior(&lt, &ls);
        let xt = noisy(&lt, rng)?;
        let x0_hat = denoise(&xt, &lt)?.detach();
        let c = post.coef_x0 * post.coef_x0 / (2.0 * post.variance);
        let kl = per_example(x0, &x0_hat, |x, y| c * (x - y) * (x - y))?;
        total.iter_mut().zip(kl).for_each(|(t, v)| *t += weight * v);
    }
    // L_0: −log p(x₀ | x at step 0) under the decoder N(x̂₀, β₀)
    let l0 = schedule.level(0);
    let x1 = noisy(&l0, rng)?;
    let mean = denoise(&x1, &l0)?.detach();
    let scale = schedule.betas()[0].sqrt();
    let nll0 = per_example(x0, &mean, |x, m| -decoder_log_prob(decoder, x, m, scale))?;
    Ok(total
        .iter()
        .zip(prior)
        .zip(nll0)
        .map(|((kl, p), d)| kl + p + d)
        .collect())
}

/// How the divergence ∇·D is computed in [`ode_log_likelihood`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Divergence {
    /// The exact trace of the Jacobian, one backward pass per data dimension (for low-dimensional data).
    Exact,
    /// Hutchinson's estimator with this many Rademacher probes (each one backward pass).
    Hutchinson(usize),
}

/// The ODE's drift y − D and the divergence ∇_y·D per example, at `y` on `level`.
fn drift_and_divergence<F>(
    y: &Tensor,
    level: &Level,
    divergence: Divergence,
    rng: &mut Rng,
    denoise: &mut F,
) -> Result<(Tensor, Vec<f64>)>
where
    F: FnMut(&Tensor, &Level) -> Result<Tensor>,
{
    let b = y.dim(0)?;
    let dims = y.elem_count() / b.max(1);
    let var = Var::from_tensor(&y.detach())?;
    let d = denoise(&(var.as_tensor() * level.alpha)?, level)?; // D(α·y), like y
    let drift = (y - d.detach())?;
    let mut div = vec![0.0f64; b];
    // Σ_b vᵀ J_b v from one backward pass of Σ (D ⊙ v): the gradient with respect to y is vᵀJ per example
    let mut quadratic = |v: &Tensor, scale: f64| -> Result<()> {
        let grads = (&d * v)?.sum_all()?.backward()?;
        let g = grads.get(var.as_tensor()).ok_or_else(|| {
            Error::invalid(
                "ode likelihood",
                "the denoiser's output does not depend on its input (no gradient)",
            )
        })?;
        let q = per_example(&(g * v)?, &g.zeros_like()?, |x, _| x)?;
        div.iter_mut().zip(q).for_each(|(a, q)| *a += scale * q);
        Ok(())
    };
    match divergence {
        Divergence::Exact => {
            for j in 0..dims {
                let mut e = vec![0f32; b * dims];
                (0..b).for_each(|i| e[i * dims + j] = 1.0);
                quadratic(&Tensor::from_vec(e, y.shape(), y.device())?, 1.0)?;
            }
        }
        Divergence::Hutchinson(0) => {
            return Err(Error::invalid(
                "ode likelihood probes",
                "Hutchinson's estimator needs at least 1 probe",
            ))
        }
        Divergence::Hutchinson(p) => {
            for _ in 0..p {
                let signs: Vec<f32> = (0..b * dims)
                    .map(|_| if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 })
                    .collect();
                quadratic(
                    &Tensor::from_vec(signs, y.shape(), y.device())?,
                    1.0 / p as f64,
                )?;
            }
        }
    }
    Ok((drift, div))
}

/// log p(x) per example (nats) by the probability-flow ODE, integrated with Heun's method in ℓ = ln(σ/α) over
/// `levels` (least noisy first, increasing noise-to-signal ratio, σ > 0 everywhere); see the module docs.
/// `x` is taken as the sample at `levels[0]`. `denoise(x, level)` must be differentiable in `x` (no clipping).
pub fn ode_log_likelihood<F>(
    x: &Tensor,
    levels: &[Level],
    divergence: Divergence,
    rng: &mut Rng,
    mut denoise: F,
) -> Result<Vec<f64>>
where
    F: FnMut(&Tensor, &Level) -> Result<Tensor>,
{
    if levels.len() < 2 {
        return Err(Error::invalid(
            "ode likelihood",
            format!(
                "needs at least 2 noise levels to integrate over, got {}",
                levels.len()
            ),
        ));
    }
    let ell = |l: &Level| (l.sigma / l.alpha).ln();
    for (i, w) in levels.windows(2).enumerate() {
        if !(w[0].sigma > 0.0 && w[0].alpha > 0.0 && ell(&w[1]) > ell(&w[0])) {
            return Err(Error::invalid(
                "ode likelihood",
                format!("levels must have σ > 0 and increasing σ/α, not at level {i}"),
            ));
        }
    }
    let b = x.dim(0)?;
    let dims = (x.elem_count() / b.max(1)) as f64;
    let mut y = x.to_dtype(DType::F32)?.detach();
    let mut integral = vec![0.0f64; b]; // ∫ (d − ∇·D) dℓ
    for w in levels.windows(2) {
        let h = ell(&w[1]) - ell(&w[0]);
        let (f1, div1) = drift_and_divergence(&y, &w[0], divergence, rng, &mut denoise)?;
        let y_pred = (&y + (&f1 * h)?)?;
        let (f2, div2) = drift_and_divergence(&y_pred, &w[1], divergence, rng, &mut denoise)?;
        y = (&y + ((f1 + f2)? * (0.5 * h))?)?.detach();
        for (acc, (a, b)) in integral.iter_mut().zip(div1.iter().zip(&div2)) {
            *acc += 0.5 * h * ((dims - a) + (dims - b));
        }
    }
    let top = levels[levels.len() - 1];
    let v = (top.sigma * top.sigma + top.alpha * top.alpha) / (top.alpha * top.alpha);
    let log_prior = per_example(&y, &y, |u, _| {
        -0.5 * u * u / v - 0.5 * (2.0 * std::f64::consts::PI * v).ln()
    })?;
    Ok(log_prior
        .iter()
        .zip(&integral)
        .map(|(p, i)| p + i)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributions::log_gaussian_interval;
    use crate::schedulers::{KarrasSchedule, NoiseSchedule};
    use candle_core::Device;

    /// E[x₀ | x] for data N(μ, c²·I) at level (α, σ): μ + α c² (x − α μ)/(α² c² + σ²).
    fn gaussian_denoiser(mu: f64, c: f64) -> impl FnMut(&Tensor, &Level) -> Result<Tensor> {
        move |x: &Tensor, l: &Level| {
            let g = l.alpha * c * c / (l.alpha * l.alpha * c * c + l.sigma * l.sigma);
            Ok(x.affine(g, mu - g * l.alpha * mu)?)
        }
    }

    fn log_normal(x: &[f32], mu: f64, var: f64) -> f64 {
        x.iter()
            .map(|&v| {
                let z = v as f64 - mu;
                -0.5 * z * z / var - 0.5 * (2.0 * std::f64::consts::PI * var).ln()
            })
            .sum()
    }

    /// The discretized decoder is a probability over the 256 values: it sums to 1 by enumeration.
    #[test]
    fn discretized_decoder_sums_to_one() {
        let dec = Decoder::Discretized {
            half_width: 1.0 / 255.0,
            lo: -1.0,
            hi: 1.0,
        };
        for (mean, scale) in [
            (0.0, 0.01),
            (0.3, 1e-4),
            (-0.99, 0.1),
            (2.5, 0.5),
            (0.0, 3.0),
        ] {
            let total: f64 = (0..256)
                .map(|i| decoder_log_prob(&dec, 2.0 * i as f64 / 255.0 - 1.0, mean, scale).exp())
                .sum();
            assert!(
                (total - 1.0).abs() < 1e-6,
                "mean {mean} scale {scale}: {total}"
            );
        }
        // far in a tail the log stays finite and close to the density times the width
        let lp = log_gaussian_interval(10.0, 10.01, 0.0, 1.0);
        let approx = -50.0 - 0.5 * (2.0 * std::f64::consts::PI).ln() + 0.01f64.ln();
        assert!(
            lp.is_finite() && (lp - approx).abs() < 0.1,
            "{lp} vs {approx}"
        );
    }

    /// With the exact denoiser of Gaussian data the ODE's log-density is the exact log N(x; μ, c² + s₀²),
    /// for a VE (geometric) and a VP (linear DDPM) schedule, with the exact trace and with Hutchinson's
    /// estimator. (μ = 0: the N(0, ·) prior ignores the data mean, which costs ≈ μ·y_L/s_L² per dimension.)
    #[test]
    fn ode_likelihood_of_gaussian_data_is_exact() -> Result<()> {
        let dev = Device::Cpu;
        let (mu, c) = (0.0, 0.7);
        let x = Rng::new(3).randn((5, 4), &dev)?.affine(c, mu)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        // geometric VE levels 0.01 → 80, evenly spaced in ℓ = ln σ
        let ve: Vec<Level> = (0..200)
            .map(|i| {
                let sigma = 0.01 * 8000f64.powf(i as f64 / 199.0);
                Level {
                    alpha: 1.0,
                    sigma,
                    t: sigma,
                }
            })
            .collect();
        let vp = VpSchedule::new("linear", 1000)?;
        let vp_levels: Vec<Level> = (0..1000).step_by(4).map(|k| vp.level(k)).collect();
        for (name, levels) in [("ve", ve), ("vp", vp_levels)] {
            let s0 = levels[0].sigma / levels[0].alpha;
            for div in [Divergence::Exact, Divergence::Hutchinson(1)] {
                let mut rng = Rng::new(9);
                let got = ode_log_likelihood(&x, &levels, div, &mut rng, gaussian_denoiser(mu, c))?;
                for (i, g) in got.iter().enumerate() {
                    let want = log_normal(&xs[i * 4..i * 4 + 4], mu, c * c + s0 * s0);
                    // the Gaussian's denoiser is linear, so Rademacher probes give the exact trace too
                    assert!(
                        (g - want).abs() < 0.01,
                        "{name} {div:?} example {i}: {g} vs {want}"
                    );
                }
            }
        }
        Ok(())
    }

    /// Hutchinson's estimate is unbiased for a nonlinear denoiser: averaged over probes it matches the exact
    /// trace (mixture of two Gaussians, where ∇·D depends on x).
    #[test]
    fn hutchinson_matches_the_exact_trace() -> Result<()> {
        let dev = Device::Cpu;
        // E[x₀|y] for ½N(−m, c²) + ½N(m, c²) per coordinate (VE: α = 1)
        let (m, c) = (1.0f64, 0.3f64);
        let mixture = move |y: &Tensor, l: &Level| -> Result<Tensor> {
            let v = c * c + l.sigma * l.sigma;
            let w = (y * (2.0 * m / v))?.tanh()?; // posterior P(+) − P(−)
            let shrink = c * c / v;
            Ok(((y * shrink)? + (w * (m * (1.0 - shrink)))?)?)
        };
        let x = Rng::new(1).randn((3, 6), &dev)?;
        let karras = KarrasSchedule::new(0.05, 20.0, 7.0)?;
        let mut levels = karras.sampling_levels(30)?;
        levels.pop();
        levels.reverse();
        let exact = ode_log_likelihood(&x, &levels, Divergence::Exact, &mut Rng::new(0), mixture)?;
        let probe = ode_log_likelihood(
            &x,
            &levels,
            Divergence::Hutchinson(64),
            &mut Rng::new(0),
            mixture,
        )?;
        for (e, p) in exact.iter().zip(&probe) {
            assert!((e - p).abs() < 0.15, "exact {e} vs Hutchinson {p}");
        }
        // and both differ from a wrong trace: the mixture is far from a single Gaussian
        let gauss = ode_log_likelihood(
            &x,
            &levels,
            Divergence::Exact,
            &mut Rng::new(0),
            gaussian_denoiser(0.0, 1.0),
        )?;
        assert!(exact.iter().zip(&gauss).any(|(e, g)| (e - g).abs() > 1.0));
        Ok(())
    }

    /// For Gaussian data N(μ, c²) and its exact denoiser every term of the VLB has a closed-form expectation:
    /// E L_k = c_k² d V_k / (2 β̃_k) with V_k = Var(x₀ | x_k) = c² σ_k² / (α_k² c² + σ_k²), E L_T the KL of
    /// the second moments, E L_0 = d (½ ln 2πβ₀ + V₀ / (2β₀)). The Monte-Carlo bound matches that sum within
    /// 4 standard errors, is above the entropy (a bound), and sampling 50 of the 999 KL terms agrees on average.
    #[test]
    fn vlb_matches_its_closed_form_for_gaussian_data() -> Result<()> {
        let dev = Device::Cpu;
        let (mu, c) = (0.2, 0.5);
        let (n, d) = (400, 8);
        let x = Rng::new(5).randn((n, d), &dev)?.affine(c, mu)?;
        let sched = VpSchedule::new("linear", 1000)?;
        let var_post =
            |l: &Level| c * c * l.sigma * l.sigma / (l.alpha * l.alpha * c * c + l.sigma * l.sigma);
        let df = d as f64;
        let mut want = 0.0;
        for k in 1..1000 {
            let (lt, ls) = (sched.level(k), sched.level(k - 1));
            let p = posterior(&lt, &ls);
            want += p.coef_x0 * p.coef_x0 * df * var_post(&lt) / (2.0 * p.variance);
        }
        let top = sched.level(999);
        let (a2, s2) = (top.alpha * top.alpha, top.sigma * top.sigma);
        want += df * 0.5 * (a2 * (mu * mu + c * c) + s2 - 1.0 - s2.ln());
        let b0 = sched.betas()[0];
        want += df
            * (0.5 * (2.0 * std::f64::consts::PI * b0).ln()
                + var_post(&sched.level(0)) / (2.0 * b0));
        let stats = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64;
            (m, (var / v.len() as f64).sqrt())
        };
        let full = vlb_nats(
            &x,
            &sched,
            &Decoder::Gaussian,
            None,
            &mut Rng::new(1),
            gaussian_denoiser(mu, c),
        )?;
        let (m, se) = stats(&full);
        assert!(
            (m - want).abs() < 4.0 * se + 1e-3,
            "mean bound {m} ± {se}, closed form {want}"
        );
        let entropy = df * 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * c * c).ln();
        assert!(
            want > entropy,
            "the closed form {want} must bound the entropy {entropy}"
        );
        // 50 of the 999 KL terms, stratified: unbiased, so the mean over 40 draws of the timesteps is close
        let small = x.narrow(0, 0, 50)?;
        let draws: Vec<f64> = (0..40)
            .map(|r| {
                let v = vlb_nats(
                    &small,
                    &sched,
                    &Decoder::Gaussian,
                    Some(50),
                    &mut Rng::new(100 + r),
                    gaussian_denoiser(mu, c),
                )?;
                Ok(v.iter().sum::<f64>() / v.len() as f64)
            })
            .collect::<Result<_>>()?;
        let (mp, sep) = stats(&draws);
        let reference = stats(&vlb_nats(
            &small,
            &sched,
            &Decoder::Gaussian,
            None,
            &mut Rng::new(3),
            gaussian_denoiser(mu, c),
        )?);
        assert!(
            (mp - reference.0).abs() < 4.0 * (sep * sep + reference.1 * reference.1).sqrt(),
            "sampled terms: {mp} ± {sep} vs all terms {} ± {}",
            reference.0,
            reference.1
        );
        // a wrong denoiser costs nats
        let bad = vlb_nats(
            &x,
            &sched,
            &Decoder::Gaussian,
            None,
            &mut Rng::new(1),
            gaussian_denoiser(mu + 0.5, c),
        )?;
        assert!(stats(&bad).0 > m + 1.0);
        assert!(vlb_nats(
            &x,
            &sched,
            &Decoder::Gaussian,
            Some(0),
            &mut Rng::new(1),
            gaussian_denoiser(mu, c)
        )
        .is_err());
        Ok(())
    }
}
