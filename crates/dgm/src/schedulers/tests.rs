//! End-to-end tests of every sampler on every schedule family, driven by denoisers known in closed form
//! (no network): the output distribution must be the data distribution.
//!
//! * A Gaussian N(μ, diag(s²)): x = α x₀ + σ ε is Gaussian, and E[x₀ | x] = μ + α s²/(α² s² + σ²)·(x − α μ).
//! * A mixture of isotropic Gaussians N(m_k, s² I) with weights w_k: given x, component k has responsibility
//!   r_k ∝ w_k N(x; α m_k, (α² s² + σ²) I), and E[x₀ | x] = Σ_k r_k (m_k + α s²/(α² s² + σ²)·(x − α m_k)).
//!
//! For the Gaussian, the probability-flow ODE is also solved in closed form: in the scaled variables
//! x̃ = x/α, σ̃ = σ/α, x̃ − D = σ̃²/(s² + σ̃²)·(x̃ − μ), so dx̃/dσ̃ = σ̃/(s² + σ̃²)·(x̃ − μ) and
//! x̃(σ̃) − μ = (x̃(σ̃₀) − μ)·√(s² + σ̃²)/√(s² + σ̃₀²): the deterministic samplers must map x_T to
//! μ + (x_T/α_T − μ)·s/√(s² + σ̃_T²).

use candle_core::{Device, Shape, Tensor};

use crate::metrics::mmd::mmd_test;
use crate::rng::Rng;
use crate::schedulers::*;
use crate::Result;

/// A data distribution whose denoiser is known exactly.
#[derive(Clone, Debug)]
pub(crate) enum Data {
    /// Independent coordinates N(mu_d, s_d²).
    Gauss { mu: Vec<f64>, s: Vec<f64> },
    /// 2-D mixture of N(m_k, s² I) with weights w_k.
    Mixture {
        means: Vec<[f64; 2]>,
        weights: Vec<f64>,
        s: f64,
    },
}

impl Data {
    pub(crate) fn gauss() -> Self {
        // a narrow and a wide coordinate, both off-centre
        Data::Gauss {
            mu: vec![0.5, -0.8],
            s: vec![0.1, 0.6],
        }
    }

    pub(crate) fn mixture() -> Self {
        Data::Mixture {
            means: vec![[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]],
            weights: vec![0.1, 0.2, 0.3, 0.4],
            s: 0.1,
        }
    }

    pub(crate) fn dim(&self) -> usize {
        match self {
            Data::Gauss { mu, .. } => mu.len(),
            Data::Mixture { .. } => 2,
        }
    }

    /// E[x₀ | x] at `level`, computed on the host in f64. `x` is (n, dim).
    pub(crate) fn denoise(&self, x: &Tensor, l: &Level) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let (a, sig2) = (l.alpha, l.sigma * l.sigma);
        let mut out = vec![0f32; n * d];
        match self {
            Data::Gauss { mu, s } => {
                for (i, v) in xs.iter().enumerate() {
                    let j = i % d;
                    let s2 = s[j] * s[j];
                    let g = a * s2 / (a * a * s2 + sig2);
                    out[i] = (mu[j] + g * (*v as f64 - a * mu[j])) as f32;
                }
            }
            Data::Mixture { means, weights, s } => {
                let s2 = s * s;
                let var = a * a * s2 + sig2;
                let g = a * s2 / var;
                let mut logp = vec![0f64; means.len()];
                for i in 0..n {
                    let p = [xs[2 * i] as f64, xs[2 * i + 1] as f64];
                    for (k, m) in means.iter().enumerate() {
                        let d2 = (p[0] - a * m[0]).powi(2) + (p[1] - a * m[1]).powi(2);
                        logp[k] = weights[k].ln() - d2 / (2.0 * var);
                    }
                    let mx = logp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = logp.iter().map(|lp| (lp - mx).exp()).sum();
                    let mut e = [0f64; 2];
                    for (k, m) in means.iter().enumerate() {
                        let r = (logp[k] - mx).exp() / z;
                        for c in 0..2 {
                            e[c] += r * (m[c] + g * (p[c] - a * m[c]));
                        }
                    }
                    out[2 * i] = e[0] as f32;
                    out[2 * i + 1] = e[1] as f32;
                }
            }
        }
        Ok(Tensor::from_vec(out, (n, d), x.device())?)
    }

    /// `n` exact samples, flattened (n·dim).
    pub(crate) fn exact(&self, n: usize, rng: &mut Rng) -> Vec<f32> {
        match self {
            Data::Gauss { mu, s } => (0..n)
                .flat_map(|_| {
                    mu.iter()
                        .zip(s)
                        .map(|(m, s)| (m + s * rng.normal() as f64) as f32)
                        .collect::<Vec<_>>()
                })
                .collect(),
            Data::Mixture { means, weights, s } => (0..n)
                .flat_map(|_| {
                    let u = rng.uniform_f64();
                    let mut acc = 0.0;
                    let k = weights
                        .iter()
                        .position(|w| {
                            acc += w;
                            u < acc
                        })
                        .unwrap_or(weights.len() - 1);
                    let m = means[k];
                    [
                        (m[0] + s * rng.normal() as f64) as f32,
                        (m[1] + s * rng.normal() as f64) as f32,
                    ]
                })
                .collect(),
        }
    }
}

/// The sampling loop of the module docs with the analytic denoiser, from `x` (or fresh noise).
pub(crate) fn run_from(
    sampler: &mut dyn Sampler,
    data: &Data,
    x: Tensor,
    rng: &mut Rng,
) -> Result<Tensor> {
    let mut x = x;
    for i in 0..sampler.num_evals() {
        let level = sampler.level(i);
        let x0 = data.denoise(&x, &level)?;
        x = sampler.step(i, &x, &x0, rng)?;
    }
    Ok(x)
}

/// `n` samples from `sampler` with the analytic denoiser of `data`, flattened.
pub(crate) fn run(sampler: &mut dyn Sampler, data: &Data, n: usize, seed: u64) -> Result<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let x = sampler.init_noise(&Shape::from((n, data.dim())), &mut rng, &Device::Cpu)?;
    let out = run_from(sampler, data, x, &mut rng)?;
    Ok(out.flatten_all()?.to_vec1::<f32>()?)
}

/// Per-coordinate mean and (population) variance of flattened `dim`-dimensional points.
pub(crate) fn moments(x: &[f32], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let n = (x.len() / dim) as f64;
    let mut mean = vec![0f64; dim];
    for (i, v) in x.iter().enumerate() {
        mean[i % dim] += *v as f64 / n;
    }
    let mut var = vec![0f64; dim];
    for (i, v) in x.iter().enumerate() {
        var[i % dim] += (*v as f64 - mean[i % dim]).powi(2) / n;
    }
    (mean, var)
}

/// Summary of mixture samples: fraction per mode (nearest mean), pooled within-mode variance / s², and the
/// MMD two-sample p-value against exact samples.
#[derive(Debug)]
pub(crate) struct MixtureStats {
    pub fractions: Vec<f64>,
    pub var_ratio: f64,
    pub p_value: f64,
}

/// Points of each set in the MMD test (the kernel matrix of 2000 points costs ~50 ms per test).
const MMD_POINTS: usize = 1000;

pub(crate) fn mixture_stats(x: &[f32], data: &Data, seed: u64) -> Result<MixtureStats> {
    let Data::Mixture { means, s, .. } = data else {
        return Err(crate::Error::invalid("data", "not a mixture"));
    };
    let n = x.len() / 2;
    let mut counts = vec![0usize; means.len()];
    let mut ss = 0.0;
    for i in 0..n {
        let p = [x[2 * i] as f64, x[2 * i + 1] as f64];
        let d = |m: &[f64; 2]| (p[0] - m[0]).powi(2) + (p[1] - m[1]).powi(2);
        let (k, d2) = means
            .iter()
            .enumerate()
            .map(|(k, m)| (k, d(m)))
            .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
        counts[k] += 1;
        ss += d2;
    }
    let m = n.min(MMD_POINTS);
    let exact = data.exact(m, &mut Rng::named(seed, "exact"));
    let ours = &x[..2 * m];
    let p_value = mmd_test(ours, &exact, 2, 100, seed)?.p_value;
    Ok(MixtureStats {
        fractions: counts.iter().map(|&c| c as f64 / n as f64).collect(),
        var_ratio: ss / (2.0 * n as f64) / (s * s),
        p_value,
    })
}

/// Checks mixture samples: every mode's fraction within `k_se` binomial standard errors of its weight, the
/// within-mode variance within `var_tol` of s², and MMD p-value ≥ 0.01. Returns the failures (empty: pass)
/// and the statistics.
pub(crate) fn check_mixture(
    x: &[f32],
    data: &Data,
    k_se: f64,
    var_tol: f64,
    seed: u64,
) -> Result<(String, MixtureStats)> {
    let Data::Mixture { weights, .. } = data else {
        return Err(crate::Error::invalid("data", "not a mixture"));
    };
    if x.iter().any(|v| !v.is_finite()) {
        return Err(crate::Error::invalid("samples", "non-finite"));
    }
    let n = (x.len() / 2) as f64;
    let st = mixture_stats(x, data, seed)?;
    let mut bad = String::new();
    for (k, (f, w)) in st.fractions.iter().zip(weights).enumerate() {
        let se = (w * (1.0 - w) / n).sqrt();
        if (f - w).abs() > k_se * se {
            bad += &format!(
                "mode {k}: fraction {f:.4} (want {w}, {:.1} SE); ",
                (f - w) / se
            );
        }
    }
    if (st.var_ratio - 1.0).abs() > var_tol {
        bad += &format!("within-mode variance ratio {:.4}; ", st.var_ratio);
    }
    if st.p_value < 0.01 {
        bad += &format!("MMD p-value {:.4}; ", st.p_value);
    }
    Ok((bad, st))
}

/// Per-coordinate (mean, variance) of x₀ predicted by propagating the Gaussian y = x − α μ through a linear
/// update y_s = A·y_t + (noise of variance Q), starting from pure noise x_T = σ_T z (y_T has mean −α_T μ and
/// variance σ_T²). `step(t, s, s_j)` returns (A, Q) for data std `s_j`.
fn propagate(
    levels: &[Level],
    mu: &[f64],
    s: &[f64],
    step: impl Fn(&Level, &Level, f64) -> (f64, f64),
) -> (Vec<f64>, Vec<f64>) {
    let mut mean = Vec::new();
    let mut var = Vec::new();
    for (m0, sj) in mu.iter().zip(s) {
        let (mut m, mut v) = (-levels[0].alpha * m0, levels[0].sigma * levels[0].sigma);
        for w in levels.windows(2) {
            let (a, q) = step(&w[0], &w[1], *sj);
            m *= a;
            v = a * a * v + q;
        }
        mean.push(m0 + m);
        var.push(v);
    }
    (mean, var)
}

/// DDIM's update (Song, Meng & Ermon 2021, eq. 12 with σ_τ(η) of eq. 16) for VP levels, in the paper's
/// notation ᾱ = α²: x_s = √ᾱ_s x̂₀ + √(1 − ᾱ_s − c²) ε̂ + c z, c = η √((1 − ᾱ_s)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_s);
/// η = 1 is DDPM. On Gaussian data x̂₀ − μ = g y and ε̂ = (1 − √ᾱ_t g) y/√(1 − ᾱ_t).
fn ddim_vp_update(eta: f64) -> impl Fn(&Level, &Level, f64) -> (f64, f64) {
    move |t, s, sd| {
        let (abt, abs) = (t.alpha * t.alpha, s.alpha * s.alpha);
        let g = t.alpha * sd * sd / (abt * sd * sd + (1.0 - abt));
        let c = eta * ((1.0 - abs) / (1.0 - abt)).sqrt() * (1.0 - abt / abs).sqrt();
        let k = (1.0 - abs - c * c).max(0.0).sqrt();
        let a = abs.sqrt() * g + k * (1.0 - abt.sqrt() * g) / (1.0 - abt).sqrt();
        (a, c * c)
    }
}

/// Song et al. 2021's ancestral sampler for VE levels (eq. 47) with the exact score of N(μ, s² + σ²):
/// x_s = x_t + (σ_t² − σ_s²)·(−(x_t − μ)/(s² + σ_t²)) + √(σ_s²(σ_t² − σ_s²)/σ_t²)·z.
fn ancestral_ve_update(t: &Level, s: &Level, sd: f64) -> (f64, f64) {
    let (st2, ss2) = (t.sigma * t.sigma, s.sigma * s.sigma);
    (1.0 - (st2 - ss2) / (sd * sd + st2), ss2 * (st2 - ss2) / st2)
}

#[test]
fn stochastic_samplers_match_the_exact_gaussian_propagation() -> Result<()> {
    let data = Data::gauss();
    let Data::Gauss { mu, s } = &data else {
        unreachable!()
    };
    let n = 10_000;
    let lin = VpSchedule::linear(1000)?;
    let cos = VpSchedule::cosine(1000)?;
    let ve = VeSchedule::new(3.0, 0.01, 10)?;
    let cases: Vec<(&str, &dyn NoiseSchedule, usize, f64)> = vec![
        ("ddpm", &lin, 20, 1.0),
        ("ddpm", &cos, 100, 1.0),
        ("ddim", &cos, 30, 0.5),
        ("ddim", &lin, 10, 0.0),
        ("ddpm", &ve, 10, 1.0),
    ];
    for (name, sch, steps, eta) in cases {
        let levels = sch.sampling_levels(steps)?;
        let (pm, pv) = if sch.name() == "geometric" {
            propagate(&levels, mu, s, ancestral_ve_update)
        } else {
            propagate(&levels, mu, s, ddim_vp_update(eta))
        };
        let opts = SamplerOptions {
            eta,
            ..Default::default()
        };
        let x = run(build(name, sch, steps, &opts)?.as_mut(), &data, n, 11)?;
        let (m, v) = moments(&x, 2);
        for j in 0..2 {
            // standard errors: √(v/n) for the mean, √(2/n) relative for the variance
            let z = (m[j] - pm[j]) / (pv[j] / n as f64).sqrt();
            let r = v[j] / pv[j];
            assert!(
                z.abs() < 4.0 && (r - 1.0).abs() < 4.0 * (2.0 / n as f64).sqrt(),
                "{name} {} {steps} steps, coordinate {j}: mean {} (predicted {}, {z:.1} SE), variance {} (predicted {}, ratio {r:.4})",
                sch.name(), m[j], pm[j], v[j], pv[j]
            );
        }
    }
    Ok(())
}

/// The propagation itself converges to the data distribution as the steps grow: DDPM and DDIM are consistent.
#[test]
fn ddpm_and_ddim_converge_to_the_data_variance() -> Result<()> {
    let (mu, s) = ([0.5], [0.6]);
    for sch in [VpSchedule::linear(1000)?, VpSchedule::cosine(1000)?] {
        for eta in [0.0, 1.0] {
            let err = |steps: usize| -> Result<f64> {
                let (_, v) = propagate(&sch.sampling_levels(steps)?, &mu, &s, ddim_vp_update(eta));
                Ok((v[0] / (s[0] * s[0]) - 1.0).abs())
            };
            let (e10, e100, e1000) = (err(10)?, err(100)?, err(1000)?);
            assert!(
                e1000 < e100 && e100 < e10,
                "{} η={eta}: {e10} {e100} {e1000}",
                sch.name()
            );
            assert!(e1000 < 0.03, "{} η={eta}: {e1000}", sch.name());
        }
    }
    let ve = VeSchedule::new(3.0, 0.01, 1000)?;
    let (_, v) = propagate(&ve.sampling_levels(1000)?, &mu, &s, ancestral_ve_update);
    assert!((v[0] / 0.36 - 1.0).abs() < 0.03, "{}", v[0]);
    Ok(())
}

/// Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) on N(μ, s²): with the exact score
/// −(x − μ)/(s² + σ_i²) every step is linear, y ← (1 − α_i/(2(s² + σ_i²)))·y + √α_i·z, and the final
/// denoising is x + σ_L²·score (Tweedie).
#[test]
fn langevin_matches_the_exact_gaussian_propagation() -> Result<()> {
    let data = Data::gauss();
    let Data::Gauss { mu, s } = &data else {
        unreachable!()
    };
    let n = 5_000;
    let ve = VeSchedule::new(3.0, 0.01, 10)?;
    let (m_steps, eps) = (100, 5e-5);
    for final_denoise in [true, false] {
        let levels = ve.sampling_levels(10)?;
        let sig_l = levels[levels.len() - 2].sigma;
        let mut pm = Vec::new();
        let mut pv = Vec::new();
        for (m0, sd) in mu.iter().zip(s) {
            let (mut m, mut v) = (-m0, levels[0].sigma * levels[0].sigma);
            for l in &levels[..levels.len() - 1] {
                let a = eps * l.sigma * l.sigma / (sig_l * sig_l);
                let c = 1.0 - a / (2.0 * (sd * sd + l.sigma * l.sigma));
                for _ in 0..m_steps {
                    m *= c;
                    v = c * c * v + a;
                }
            }
            if final_denoise {
                let c = 1.0 - sig_l * sig_l / (sd * sd + sig_l * sig_l);
                m *= c;
                v *= c * c;
            }
            pm.push(m0 + m);
            pv.push(v);
        }
        let opts = SamplerOptions {
            langevin_steps: m_steps,
            langevin_eps: eps,
            final_denoise,
            ..Default::default()
        };
        let x = run(build("langevin", &ve, 10, &opts)?.as_mut(), &data, n, 12)?;
        let (m, v) = moments(&x, 2);
        for j in 0..2 {
            let z = (m[j] - pm[j]) / (pv[j] / n as f64).sqrt();
            let r = v[j] / pv[j];
            assert!(
                z.abs() < 4.0 && (r - 1.0).abs() < 4.0 * (2.0 / n as f64).sqrt(),
                "final_denoise {final_denoise}, coordinate {j}: mean {} ({} predicted, {z:.1} SE), var ratio {r:.4}",
                m[j], pm[j]
            );
        }
        // and the prediction is close to the data: within 6% in variance (2–4% too wide: the chain lags
        // behind the annealing), 0.05 s in mean
        for j in 0..2 {
            assert!((pv[j] / (s[j] * s[j]) - 1.0).abs() < 0.06, "{}", pv[j]);
            assert!((pm[j] - mu[j]).abs() < 0.05 * s[j]);
        }
    }
    Ok(())
}

/// The gain K̂ of a deterministic sampler on Gaussian data, out − μ = K̂·(x_T/α_T − μ), per coordinate,
/// against the exact probability-flow gain K = s/√(s² + σ̃_T²): the largest relative error |K̂/K − 1|.
fn gain_error(name: &str, sch: &dyn NoiseSchedule, steps: usize) -> Result<f64> {
    let (mu, s) = (vec![0.5, -0.8], vec![0.3, 1.0]);
    let data = Data::Gauss {
        mu: mu.clone(),
        s: s.clone(),
    };
    let mut sampler = build(name, sch, steps, &SamplerOptions::default())?;
    let l0 = sampler.level(0);
    let x_t: Vec<f32> = vec![l0.sigma as f32, -l0.sigma as f32];
    let x = Tensor::from_vec(x_t.clone(), (1, 2), &Device::Cpu)?;
    let out = run_from(sampler.as_mut(), &data, x, &mut Rng::new(0))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut worst: f64 = 0.0;
    for j in 0..2 {
        let st = l0.sigma / l0.alpha;
        let k = s[j] / (s[j] * s[j] + st * st).sqrt();
        let k_hat = (out[j] as f64 - mu[j]) / (x_t[j] as f64 / l0.alpha - mu[j]);
        worst = worst.max((k_hat / k - 1.0).abs());
    }
    Ok(worst)
}

#[test]
fn ode_samplers_follow_the_exact_gaussian_flow() -> Result<()> {
    let ka = KarrasSchedule::default();
    let vp = VpSchedule::linear(1000)?;
    // (sampler, schedule, N, the error at N must be below, e(N)/e(2N) must exceed)
    let cases: Vec<(&str, &dyn NoiseSchedule, usize, f64, f64)> = vec![
        // measured: 6.0e-2 (ratio 1.99), 6.0e-2 (1.99), 1.5e-2 (4.3), 5.7e-2 (4.7)
        ("euler", &ka, 50, 0.08, 1.8),
        ("ddim", &ka, 50, 0.08, 1.8),
        ("heun", &ka, 35, 0.02, 3.5),
        ("dpm++2m", &ka, 20, 0.075, 3.5),
        // measured: 8.9e-2 (1.94), 8.9e-2 (1.94), 2.5e-2 (2.8: the last Euler step from the trailing
        // spacing's least noisy level dominates), 1.6e-2 (15.6)
        ("euler", &vp, 50, 0.12, 1.8),
        ("ddim", &vp, 50, 0.12, 1.8),
        ("heun", &vp, 50, 0.035, 2.5),
        ("dpm++2m", &vp, 50, 0.025, 3.5),
    ];
    for (name, sch, n, tol, order) in cases {
        let (e1, e2) = (gain_error(name, sch, n)?, gain_error(name, sch, 2 * n)?);
        assert!(
            e1 < tol && e1 / e2 > order,
            "{name} {} {n}: {e1} {e2}",
            sch.name()
        );
    }
    Ok(())
}

/// Encodes exact Gaussian samples with DDIM inversion and decodes them again: the code must be close to the
/// exact probability-flow latent μ + (x₀ − μ)·√(s² + σ̃_T²)/s (scaled by α_T), and the reconstruction must
/// converge at first order without refinements and be exact up to f32 rounding with them.
#[test]
fn ddim_inversion_reconstructs_gaussian_data() -> Result<()> {
    let data = Data::gauss();
    let Data::Gauss { mu, s } = &data else {
        unreachable!()
    };
    let x0v = data.exact(500, &mut Rng::new(3));
    let x0 = Tensor::from_vec(x0v.clone(), (500, 2), &Device::Cpu)?;
    // (largest latent error, largest reconstruction error in units of the data std)
    let errors = |sch: &VpSchedule, steps: usize, refinements: usize| -> Result<(f64, f64)> {
        let latent = ddim_invert(sch, steps, refinements, &x0, |x, l| data.denoise(x, l))?;
        let lt = sch.sampling_levels(steps)?[0];
        let st = lt.sigma / lt.alpha;
        let lat = latent.flatten_all()?.to_vec1::<f32>()?;
        let mut dec = Ddim::new(sch.sampling_levels(steps)?, 0.0)?;
        let back = run_from(&mut dec, &data, latent, &mut Rng::new(0))?;
        let rec = back.flatten_all()?.to_vec1::<f32>()?;
        let (mut lat_err, mut rec_err): (f64, f64) = (0.0, 0.0);
        for (i, &x) in x0v.iter().enumerate() {
            let j = i % 2;
            let want =
                lt.alpha * (mu[j] + (x as f64 - mu[j]) * (s[j] * s[j] + st * st).sqrt() / s[j]);
            lat_err = lat_err.max((lat[i] as f64 - want).abs());
            rec_err = rec_err.max((x as f64 - rec[i] as f64).abs() / s[j]);
        }
        Ok((lat_err, rec_err))
    };
    for sch in [VpSchedule::linear(1000)?, VpSchedule::cosine(1000)?] {
        let (l50, r50) = errors(&sch, 50, 0)?;
        let (l100, r100) = errors(&sch, 100, 0)?;
        let (l1000, r1000) = errors(&sch, 1000, 0)?;
        // refined: the exact inverse of the discrete decoder (not the continuous flow's latent)
        let (_, rr) = errors(&sch, 100, 5)?;
        // measured (linear, cosine): latent 0.62/0.29/0.022, 0.37/0.19/0.018 at 50/100/1000 steps;
        // reconstruction 1.19/0.65/0.070, 0.71/0.38/0.041; refined 3e-5, 6e-6
        let msg = format!(
            "{}: latent {l50:.2e} {l100:.2e} {l1000:.2e}; reconstruction {r50:.2e} {r100:.2e} {r1000:.2e}; \
             refined {rr:.2e}",
            sch.name()
        );
        assert!(
            r50 / r100 > 1.6 && l50 / l100 > 1.6,
            "not first order: {msg}"
        );
        assert!(r1000 < 0.1 && l1000 < 0.03, "{msg}");
        assert!(rr < 1e-3, "{msg}");
    }
    Ok(())
}

#[test]
fn every_sampler_lists_its_evaluations_and_runs_at_1_2_and_n_steps() -> Result<()> {
    let vp = VpSchedule::linear(100)?;
    let ve = VeSchedule::new(3.0, 0.01, 10)?;
    let ka = KarrasSchedule::default();
    let opts = SamplerOptions {
        langevin_steps: 3,
        ..Default::default()
    };
    let m = opts.langevin_steps;
    let data = Data::gauss();
    let schedules: [(&dyn NoiseSchedule, usize); 3] = [(&vp, 100), (&ve, 10), (&ka, 30)];
    for (sch, n_max) in schedules {
        for steps in [1, 2, n_max] {
            let lv = sch.sampling_levels(steps)?;
            for &name in SAMPLERS {
                let mut s = build(name, sch, steps, &opts)?;
                assert_eq!(s.name(), name);
                let expected: Vec<Level> = match name {
                    "heun" => (0..steps - 1)
                        .flat_map(|k| [lv[k], lv[k + 1]])
                        .chain([lv[steps - 1]])
                        .collect(),
                    "langevin" => (0..steps)
                        .flat_map(|k| vec![lv[k]; m])
                        .chain([lv[steps - 1]])
                        .collect(),
                    "pc" => (0..steps).flat_map(|k| vec![lv[k]; m + 1]).collect(),
                    _ => lv[..steps].to_vec(),
                };
                assert_eq!(
                    s.num_evals(),
                    expected.len(),
                    "{name} {} {steps}",
                    sch.name()
                );
                let got: Vec<Level> = (0..s.num_evals()).map(|i| s.level(i)).collect();
                assert_eq!(got, expected, "{name} {} {steps}", sch.name());
                assert_eq!(s.level(s.num_evals()), Level::CLEAN);
                let x = run(s.as_mut(), &data, 64, 5)?;
                assert!(
                    x.iter().all(|v| v.is_finite()),
                    "{name} {} {steps}",
                    sch.name()
                );
                let t = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu)?;
                assert!(s.step(s.num_evals(), &t, &t, &mut Rng::new(0)).is_err());
            }
        }
    }
    // the noise starts at the first level: σ_T·z
    let s = build("ddpm", &ka, 5, &opts)?;
    let x = s.init_noise(&Shape::from((20_000,)), &mut Rng::new(1), &Device::Cpu)?;
    let v = x.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
    assert!((v / 6400.0 - 1.0).abs() < 0.03, "{v}");
    Ok(())
}

#[test]
fn bad_names_steps_and_options_are_clear_errors() -> Result<()> {
    let vp = VpSchedule::linear(100)?;
    let o = SamplerOptions::default();
    let e = build("euler-maruyama", &vp, 10, &o)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("euler-maruyama")
            && e.contains("ddpm, ddim, euler, heun, dpm++2m, langevin, pc"),
        "{e}"
    );
    let e = build("ddim", &vp, 0, &o)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("invalid value for steps:") && e.contains('0'),
        "{e}"
    );
    let e = build("ddim", &vp, 101, &o)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("101") && e.contains("100"), "{e}");
    let bad = |o: SamplerOptions, name: &str| build(name, &vp, 10, &o).is_err();
    assert!(bad(
        SamplerOptions {
            eta: 1.5,
            ..o.clone()
        },
        "ddim"
    ));
    assert!(bad(
        SamplerOptions {
            eta: -0.1,
            ..o.clone()
        },
        "ddim"
    ));
    assert!(bad(
        SamplerOptions {
            langevin_steps: 0,
            ..o.clone()
        },
        "langevin"
    ));
    assert!(bad(
        SamplerOptions {
            langevin_eps: 0.0,
            ..o.clone()
        },
        "langevin"
    ));
    assert!(bad(
        SamplerOptions {
            snr: 0.0,
            ..o.clone()
        },
        "pc"
    ));
    assert!(bad(
        SamplerOptions {
            snr: f64::NAN,
            ..o.clone()
        },
        "pc"
    ));
    // options a sampler does not use are not checked by it
    assert!(!bad(
        SamplerOptions {
            langevin_steps: 0,
            ..o.clone()
        },
        "pc"
    ));
    assert!(!bad(
        SamplerOptions {
            eta: 7.0,
            ..o.clone()
        },
        "heun"
    ));
    // level sequences the samplers cannot use
    let l = |a: f64, s: f64| Level {
        alpha: a,
        sigma: s,
        t: 0.0,
    };
    assert!(check_levels(&[Level::CLEAN]).is_err());
    assert!(check_levels(&[l(1.0, 2.0), l(1.0, 1.0)]).is_err()); // does not end clean
    assert!(check_levels(&[l(1.0, 1.0), l(1.0, 2.0), Level::CLEAN]).is_err()); // noise increases
    assert!(check_levels(&[l(0.0, 1.0), Level::CLEAN]).is_err());
    assert!(check_levels(&[l(1.0, f64::NAN), Level::CLEAN]).is_err());
    assert!(check_levels(&[l(1.0, 1.0), l(0.5, 0.8), Level::CLEAN]).is_err()); // σ falls, σ/α rises 1 → 1.6
    assert!(check_levels(&[l(1.0, 2.0), l(1.0, 1.0), Level::CLEAN]).is_ok());
    Ok(())
}

/// DDIM with η = 1 is DDPM's ancestral step (same mean, same variance, same noise draws), DDIM with η = 0 is
/// Euler's method in σ/α and uses no randomness, and PC without corrector steps is DDPM.
#[test]
fn ddim_is_ddpm_at_eta_1_and_euler_at_eta_0() -> Result<()> {
    let data = Data::mixture();
    let cos = VpSchedule::cosine(1000)?;
    let ka = KarrasSchedule::default();
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let o = |eta: f64, m: usize| SamplerOptions {
        eta,
        langevin_steps: m,
        ..Default::default()
    };
    for (sch, steps) in [(&cos as &dyn NoiseSchedule, 20), (&ka, 20)] {
        let ddpm = run(
            build("ddpm", sch, steps, &o(0.0, 0))?.as_mut(),
            &data,
            200,
            7,
        )?;
        let ddim1 = run(
            build("ddim", sch, steps, &o(1.0, 0))?.as_mut(),
            &data,
            200,
            7,
        )?;
        let pc0 = run(build("pc", sch, steps, &o(0.0, 0))?.as_mut(), &data, 200, 7)?;
        assert!(
            max_diff(&ddpm, &ddim1) < 1e-4,
            "{}",
            max_diff(&ddpm, &ddim1)
        );
        assert_eq!(ddpm, pc0);
        // η = 0: the same start and a different random stream give the same output, equal to Euler's
        let mut rng = Rng::new(8);
        let x = build("ddim", sch, steps, &o(0.0, 0))?.init_noise(
            &Shape::from((200, 2)),
            &mut rng,
            &Device::Cpu,
        )?;
        let a = run_from(
            build("ddim", sch, steps, &o(0.0, 0))?.as_mut(),
            &data,
            x.clone(),
            &mut Rng::new(1),
        )?;
        let b = run_from(
            build("ddim", sch, steps, &o(0.0, 0))?.as_mut(),
            &data,
            x.clone(),
            &mut Rng::new(2),
        )?;
        let c = run_from(
            build("euler", sch, steps, &o(0.0, 0))?.as_mut(),
            &data,
            x,
            &mut Rng::new(3),
        )?;
        let (a, b, c) = (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
            c.flatten_all()?.to_vec1::<f32>()?,
        );
        assert_eq!(a, b);
        assert!(max_diff(&a, &c) < 1e-4, "{}", max_diff(&a, &c));
        // and η = 1 is not deterministic
        assert!(
            max_diff(
                &ddim1,
                &run(
                    build("ddim", sch, steps, &o(1.0, 0))?.as_mut(),
                    &data,
                    200,
                    9
                )?
            ) > 0.1
        );
    }
    // the same seed gives the same samples
    let s1 = run(build("pc", &cos, 10, &o(0.0, 2))?.as_mut(), &data, 50, 4)?;
    let s2 = run(build("pc", &cos, 10, &o(0.0, 2))?.as_mut(), &data, 50, 4)?;
    assert_eq!(s1, s2);
    Ok(())
}

/// Runs `name` on the 4-mode mixture and checks mode weights (4 binomial SE), the within-mode variance
/// (between `lo` and `hi` times s²) and an MMD two-sample test against exact samples (p ≥ 0.01).
fn mixture_case(
    name: &str,
    sch: &dyn NoiseSchedule,
    steps: usize,
    opts: SamplerOptions,
    n: usize,
    (lo, hi): (f64, f64),
) -> Result<()> {
    let data = Data::mixture();
    let x = run(build(name, sch, steps, &opts)?.as_mut(), &data, n, 21)?;
    let (bad, st) = check_mixture(&x, &data, 4.0, 1.0, 5)?;
    assert!(bad.is_empty(), "{name} {} {steps}: {bad}", sch.name());
    assert!(
        st.var_ratio > lo && st.var_ratio < hi,
        "{name} {} {steps}: within-mode variance ratio {:.3} outside ({lo}, {hi})",
        sch.name(),
        st.var_ratio
    );
    Ok(())
}

// Within-mode variance ranges: the discretisation bias measured for each setting (VP samplers lose variance
// in the coarse last intervals of the trailing spacing, the ODE solvers overshoot slightly) ± ~5 SE.
#[test]
fn vp_samplers_reproduce_the_mixture() -> Result<()> {
    let (lin, cos) = (VpSchedule::linear(1000)?, VpSchedule::cosine(1000)?);
    let o = SamplerOptions::default();
    // measured ratios: 0.81, 0.89, 0.89, 0.87
    mixture_case("ddpm", &lin, 250, o.clone(), 4000, (0.7, 0.95))?;
    mixture_case("ddpm", &cos, 250, o.clone(), 4000, (0.78, 1.0))?;
    mixture_case("ddim", &cos, 100, o.clone(), 4000, (0.78, 1.0))?;
    mixture_case("dpm++2m", &cos, 50, o, 4000, (0.76, 0.98))
}

#[test]
fn karras_samplers_reproduce_the_mixture() -> Result<()> {
    let ka = KarrasSchedule::default();
    let o = SamplerOptions::default();
    // measured ratios: 1.03, 1.04, 1.07
    mixture_case("euler", &ka, 100, o.clone(), 4000, (0.92, 1.14))?;
    mixture_case("heun", &ka, 35, o.clone(), 4000, (0.92, 1.15))?;
    mixture_case("dpm++2m", &ka, 20, o, 4000, (0.95, 1.18))
}

#[test]
fn pc_reproduces_the_mixture() -> Result<()> {
    let ve = VeSchedule::new(10.0, 0.01, 100)?;
    let o = SamplerOptions {
        langevin_steps: 1,
        ..Default::default()
    };
    // measured ratios: 1.00, 0.94
    mixture_case("pc", &ve, 100, o.clone(), 4000, (0.9, 1.12))?;
    mixture_case("pc", &VpSchedule::cosine(1000)?, 250, o, 4000, (0.84, 1.04))
}

#[test]
fn langevin_reproduces_the_mixture() -> Result<()> {
    // Song & Ermon 2019's setting (T = 100 steps per level, ε = 2e-5) on 10 levels from σ = 3 (about the
    // largest distance between modes) to 0.01
    let o = SamplerOptions {
        langevin_steps: 100,
        langevin_eps: 2e-5,
        ..Default::default()
    };
    mixture_case(
        "langevin",
        &VeSchedule::new(3.0, 0.01, 10)?,
        10,
        o,
        2000,
        (0.95, 1.2),
    )
}

/// The checks above can fail: they reject samples with the wrong weights, a wrong scale, and a sampler with
/// far too few steps.
#[test]
fn the_mixture_checks_reject_wrong_samples() -> Result<()> {
    let data = Data::mixture();
    let equal = Data::Mixture {
        means: vec![[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]],
        weights: vec![0.25; 4],
        s: 0.1,
    };
    let x = equal.exact(4000, &mut Rng::new(1));
    assert!(!check_mixture(&x, &data, 4.0, 0.2, 5)?.0.is_empty());
    let x: Vec<f32> = data
        .exact(4000, &mut Rng::new(1))
        .iter()
        .map(|v| v * 1.15)
        .collect();
    assert!(!check_mixture(&x, &data, 4.0, 0.2, 5)?.0.is_empty());
    let x = data.exact(4000, &mut Rng::new(1));
    assert!(check_mixture(&x, &data, 4.0, 0.2, 5)?.0.is_empty());
    let x = run(
        build(
            "euler",
            &KarrasSchedule::default(),
            3,
            &SamplerOptions::default(),
        )?
        .as_mut(),
        &data,
        4000,
        1,
    )?;
    assert!(!check_mixture(&x, &data, 4.0, 0.2, 5)?.0.is_empty());
    Ok(())
}
