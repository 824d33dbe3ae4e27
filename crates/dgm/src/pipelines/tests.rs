//! The pipeline and the solvers against an exact Gaussian denoiser (no network): with a Gaussian prior
//! x₀ ~ N(μ, Σ) the denoiser is known in closed form, D(x; α, σ) = μ + α·Σ(α²Σ + σ²I)⁻¹(x − α·μ), and a linear
//! measurement y = A x₀ + σ_y·ε has the Gaussian posterior
//! N(μ + ΣAᵀ(AΣAᵀ + σ_y²I)⁻¹(y − Aμ), Σ − ΣAᵀ(AΣAᵀ + σ_y²I)⁻¹AΣ). Solvers' samples are compared with it.

use candle_core::{DType, Device, Tensor};

use super::*;
use crate::metrics::linalg::mean_cov;
use crate::ops::{measure, LinearOperator, Mask};
use crate::schedulers::{KarrasSchedule, VpSchedule};

const D: usize = 4;
const SHAPE: [usize; 3] = [1, 2, 2];

/// A Gaussian prior on 1×2×2 "images" with its exact denoiser.
struct Gauss {
    mu: [f64; D],
    cov: [f64; D * D],
    schedule: Box<dyn NoiseSchedule>,
    sampler: &'static str,
    steps: usize,
    device: Device,
}

fn vp(sampler: &'static str, steps: usize) -> Result<Gauss> {
    Gauss::new(Box::new(VpSchedule::new("cosine", 1000)?), sampler, steps)
}

impl Gauss {
    fn new(schedule: Box<dyn NoiseSchedule>, sampler: &'static str, steps: usize) -> Result<Self> {
        // strongly correlated neighbours: the known pixels say a lot about the missing ones
        let sd = [0.5, 0.4, 0.6, 0.45];
        let corr = [
            [1.0, 0.8, 0.6, 0.4],
            [0.8, 1.0, 0.5, 0.6],
            [0.6, 0.5, 1.0, 0.7],
            [0.4, 0.6, 0.7, 1.0],
        ];
        let mut cov = [0.0; D * D];
        for i in 0..D {
            for j in 0..D {
                cov[i * D + j] = corr[i][j] * sd[i] * sd[j];
            }
        }
        Ok(Self {
            mu: [0.2, -0.1, 0.0, 0.3],
            cov,
            schedule,
            sampler,
            steps,
            device: Device::Cpu,
        })
    }

    /// `n` draws from N(mu, cov) (Cholesky of cov).
    fn draws(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        let l = cholesky(&self.cov, D);
        let z = rng.randn((n, D), &self.device)?.to_vec2::<f32>()?;
        let mut v = Vec::with_capacity(n * D);
        for row in z {
            for i in 0..D {
                let s: f64 = (0..=i).map(|k| l[i * D + k] * row[k] as f64).sum();
                v.push((self.mu[i] + s) as f32);
            }
        }
        Ok(Tensor::from_vec(v, (n, 1, 2, 2), &self.device)?)
    }
}

impl Denoiser for Gauss {
    fn info(&self) -> DenoiserInfo<'_> {
        DenoiserInfo {
            name: "gauss",
            example_shape: &SHAPE,
            device: &self.device,
            cond: crate::conditioning::CondKind::None,
            has_null_class: false,
            clip_denoised: false,
            clamp_samples: false,
        }
    }
    fn schedule(&self) -> &dyn NoiseSchedule {
        self.schedule.as_ref()
    }
    fn sampler_defaults(&self) -> SamplerDefaults {
        SamplerDefaults {
            sampler: self.sampler.into(),
            steps: self.steps,
            options: SamplerOptions::default(),
        }
    }
    /// D = μ + (x − α·μ)·Mᵀ with M = α·Σ(α²Σ + σ²I)⁻¹, as tensor ops (so DPS can differentiate it).
    fn x0(&self, x: &Tensor, level: &Level, _cond: &Cond) -> Result<Tensor> {
        let (a, s) = (level.alpha, level.sigma);
        let mut k = self.cov.map(|c| a * a * c);
        for i in 0..D {
            k[i * D + i] += s * s;
        }
        let kinv = inverse(&k, D);
        let m = matmul(&self.cov, &kinv, D); // Σ(α²Σ + σ²I)⁻¹
        let mt: Vec<f32> = (0..D * D)
            .map(|idx| (a * m[(idx % D) * D + idx / D]) as f32)
            .collect(); // (α·M)ᵀ
        let mt = Tensor::from_vec(mt, (D, D), &self.device)?;
        let mu = Tensor::from_vec(self.mu.map(|v| v as f32).to_vec(), (1, D), &self.device)?;
        let b = x.dim(0)?;
        let xf = x.reshape((b, D))?;
        let d = xf
            .broadcast_sub(&(&mu * a)?)?
            .matmul(&mt)?
            .broadcast_add(&mu)?;
        Ok(d.reshape(x.shape())?)
    }
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            c[i * n + j] = (0..n).map(|k| a[i * n + k] * b[k * n + j]).sum();
        }
    }
    c
}

/// Gauss–Jordan inverse of a small well-conditioned matrix.
fn inverse(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut inv: Vec<f64> = (0..n * n)
        .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
        .collect();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| m[i * n + c].abs().total_cmp(&m[j * n + c].abs()))
            .unwrap_or(c);
        for k in 0..n {
            m.swap(c * n + k, p * n + k);
            inv.swap(c * n + k, p * n + k);
        }
        let d = m[c * n + c];
        for k in 0..n {
            m[c * n + k] /= d;
            inv[c * n + k] /= d;
        }
        for r in 0..n {
            if r != c {
                let f = m[r * n + c];
                for k in 0..n {
                    m[r * n + k] -= f * m[c * n + k];
                    inv[r * n + k] -= f * inv[c * n + k];
                }
            }
        }
    }
    inv
}

fn cholesky(a: &[f64], n: usize) -> Vec<f64> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            l[i * n + j] = match i == j {
                true => (a[i * n + i] - s).sqrt(),
                false => (a[i * n + j] - s) / l[j * n + j],
            };
        }
    }
    l
}

/// The posterior of x₀ given y = (observed pixels `obs`) + σ_y·ε: (mean, covariance).
fn posterior(g: &Gauss, obs: &[usize], y: &[f64], sigma_y: f64) -> (Vec<f64>, Vec<f64>) {
    let m = obs.len();
    // S = AΣAᵀ + σ_y²I (m×m), ΣAᵀ (D×m)
    let mut s = vec![0.0; m * m];
    for (i, &a) in obs.iter().enumerate() {
        for (j, &b) in obs.iter().enumerate() {
            s[i * m + j] = g.cov[a * D + b] + if i == j { sigma_y * sigma_y } else { 0.0 };
        }
    }
    let sinv = inverse(&s, m);
    let sat: Vec<f64> = (0..D * m)
        .map(|idx| g.cov[(idx / m) * D + obs[idx % m]])
        .collect();
    let gain: Vec<f64> = (0..D * m)
        .map(|idx| {
            let (i, j) = (idx / m, idx % m);
            (0..m).map(|k| sat[i * m + k] * sinv[k * m + j]).sum()
        })
        .collect(); // ΣAᵀS⁻¹
    let resid: Vec<f64> = obs.iter().zip(y).map(|(&a, &v)| v - g.mu[a]).collect();
    let mean = (0..D)
        .map(|i| g.mu[i] + (0..m).map(|k| gain[i * m + k] * resid[k]).sum::<f64>())
        .collect();
    let cov = (0..D * D)
        .map(|idx| {
            let (i, j) = (idx / D, idx % D);
            g.cov[idx]
                - (0..m)
                    .map(|k| gain[i * m + k] * sat[j * m + k])
                    .sum::<f64>()
        })
        .collect();
    (mean, cov)
}

/// Largest |mean error| in posterior standard deviations, and the largest covariance error relative to the
/// largest posterior variance, of `samples` against the posterior (`unknown` coordinates only).
fn moment_errors(
    samples: &Tensor,
    mean: &[f64],
    cov: &[f64],
    unknown: &[usize],
) -> Result<(f64, f64)> {
    let n = samples.dim(0)?;
    let v = samples
        .reshape((n, D))?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let (m, c) = mean_cov(&v, D)?;
    let scale = unknown.iter().map(|&i| cov[i * D + i]).fold(0.0, f64::max);
    let mut dm: f64 = 0.0;
    let mut dc: f64 = 0.0;
    for &i in unknown {
        dm = dm.max((m[i] - mean[i]).abs() / cov[i * D + i].sqrt());
        for &j in unknown {
            dc = dc.max((c[i * D + j] - cov[i * D + j]).abs() / scale);
        }
    }
    Ok((dm, dc))
}

/// The truth, its mask measurement (pixels 0 and 3 observed) and the posterior.
struct Problem {
    mask: Mask,
    y: Tensor,
    mean: Vec<f64>,
    cov: Vec<f64>,
}

const OBS: [usize; 2] = [0, 3];
const MISSING: [usize; 2] = [1, 2];

fn problem(g: &Gauss, n: usize, sigma_y: f64) -> Result<Problem> {
    let mask = Mask::new(&SHAPE, vec![1.0, 0.0, 0.0, 1.0], &g.device)?;
    let mut rng = Rng::new(11);
    let truth = g.draws(1, &mut rng)?;
    let y1 = measure(&mask, &truth, sigma_y, &mut rng)?; // (1, 1, 2, 2), zeros where missing
    let yv = y1.flatten_all()?.to_vec1::<f32>()?;
    let yobs: Vec<f64> = OBS.iter().map(|&i| yv[i] as f64).collect();
    let (mean, cov) = posterior(g, &OBS, &yobs, sigma_y);
    Ok(Problem {
        mask,
        y: y1.repeat((n, 1, 1, 1))?,
        mean,
        cov,
    })
}

/// The exact denoiser makes the plain loop sample the prior: moments of 4000 draws with each sampler.
#[test]
fn the_loop_samples_the_prior_of_an_exact_denoiser() -> Result<()> {
    let n = 4000;
    for (sampler, steps) in [("ddpm", 200), ("ddim", 50), ("euler", 100), ("dpm++2m", 25)] {
        let g = vp(sampler, steps)?;
        let pipe = Pipeline::new(&g, Cond::None, None)?;
        let x = sample(&g, n, &crate::model::SampleOptions::seeded(3))?;
        let all: Vec<usize> = (0..D).collect();
        let (dm, dc) = moment_errors(&x, &g.mu, &g.cov, &all)?;
        assert!(
            dm < 0.08 && dc < 0.08,
            "{sampler}: mean {dm:.3} sd, cov {dc:.3}"
        );
        assert!(pipe.x0(&x, &Level::CLEAN)?.dims() == x.dims());
    }
    Ok(())
}

/// The loop reports its progress: 0, 1, …, steps of `steps`, in order, for plain sampling.
#[test]
fn the_loop_reports_each_step() -> Result<()> {
    let g = vp("ddim", 7)?;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let opts = crate::model::SampleOptions {
        progress: crate::model::Progress::new(move |d, t| s2.lock().unwrap().push((d, t))),
        ..crate::model::SampleOptions::seeded(1)
    };
    let x = sample(&g, 3, &opts)?;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, (0..=7).map(|d| (d, 7)).collect::<Vec<_>>());
    // reporting changes nothing
    let y = sample(&g, 3, &crate::model::SampleOptions::seeded(1))?;
    assert_eq!(
        x.flatten_all()?.to_vec1::<f32>()?,
        y.flatten_all()?.to_vec1::<f32>()?
    );
    Ok(())
}

/// RePaint and projection with resampling (10 levels back, 10 passes: RePaint's setting) sample the exact
/// posterior of a noise-free mask; without resampling both are biased towards the prior, and plain sampling
/// (the check's failure case) is far off. Measured (4000 samples, DDPM sampler, 100 steps, cosine schedule), in
/// posterior standard deviations for the mean and relative to the largest posterior variance for the
/// covariance: repaint 0.09 / 0.07, project 0.09 / 0.07; without resampling 0.57 / 0.30 and 0.60 / 0.39;
/// plain sampling 1.64 / 1.48.
#[test]
fn resampling_solvers_match_the_exact_gaussian_posterior() -> Result<()> {
    let n = 4000;
    let g = vp("ddpm", 100)?;
    let pipe = Pipeline::new(&g, Cond::None, None)?;
    let p = problem(&g, n, 0.0)?;
    let errors = |x: &Tensor| -> Result<(f64, f64)> {
        // measurement consistency: the observed pixels are the measurement
        let r = (p.mask.apply(x)? - &p.y)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(r < 1e-5, "|A x − y| = {r}");
        moment_errors(x, &p.mean, &p.cov, &MISSING)
    };
    for (j, r) in [(10, 10), (1, 1)] {
        let mut rp = RePaint::new(&p.mask, &p.y, 0.0, j, r)?;
        let a = errors(&solve(
            &pipe,
            &mut rp,
            "repaint",
            n,
            None,
            None,
            &mut Rng::new(5),
        )?)?;
        let mut pr = Project::new(&p.mask, &p.y, 0.0, 10, j, r)?;
        let b = errors(&solve(
            &pipe,
            &mut pr,
            "project",
            n,
            None,
            None,
            &mut Rng::new(5),
        )?)?;
        for (name, (dm, dc)) in [("repaint", a), ("project", b)] {
            match r {
                1 => assert!(dm > 0.3, "{name} without resampling: mean {dm:.3} sd"),
                _ => assert!(
                    dm < 0.15 && dc < 0.12,
                    "{name} j{j} r{r}: mean {dm:.3} sd, cov {dc:.3}"
                ),
            }
        }
    }
    let x = solve(&pipe, &mut Plain, "plain", n, None, None, &mut Rng::new(5))?;
    let (dm, dc) = moment_errors(&x, &p.mean, &p.cov, &MISSING)?;
    assert!(
        dm > 1.0 && dc > 1.0,
        "plain sampling: mean {dm:.3}, cov {dc:.3}"
    );
    Ok(())
}

/// DPS on a noisy measurement (σ_y = 0.1): an approximation (its p(y | x_t) ignores Cov[x₀ | x_t]), so its
/// samples are near the posterior but not on it. Measured (4000 samples, DDPM sampler, 100 steps): ζ = 0.3 gives
/// mean 0.30 sd, covariance 0.21 (ζ = 0.1: 0.19 / 0.07; ζ = 1: 0.36 / 0.59; 1000 steps are no closer); plain
/// sampling is 5.3 sd off. The residual of the observed pixels is of the order of σ_y.
#[test]
fn dps_is_near_the_exact_gaussian_posterior_of_a_noisy_measurement() -> Result<()> {
    let (n, sigma_y) = (4000, 0.1);
    let g = vp("ddpm", 100)?;
    let pipe = Pipeline::new(&g, Cond::None, None)?;
    let p = problem(&g, n, sigma_y)?;
    let all: Vec<usize> = (0..D).collect();
    let mut dps = Dps::new(&p.mask, &p.y, 0.3)?;
    let x = solve(&pipe, &mut dps, "dps", n, None, None, &mut Rng::new(5))?;
    let (dm, dc) = moment_errors(&x, &p.mean, &p.cov, &all)?;
    assert!(dm < 0.4 && dc < 0.3, "dps: mean {dm:.3} sd, cov {dc:.3}");
    let sq = (p.mask.apply(&x)? - &p.y)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f32>()? as f64;
    let rms = (sq / (n * OBS.len()) as f64).sqrt();
    assert!(
        rms < 3.0 * sigma_y,
        "rms residual {rms} for sigma_y {sigma_y}"
    );
    let x = solve(&pipe, &mut Plain, "plain", n, None, None, &mut Rng::new(5))?;
    let (dm, _) = moment_errors(&x, &p.mean, &p.cov, &all)?;
    assert!(dm > 2.0, "plain sampling: mean {dm:.3}");
    Ok(())
}

#[test]
fn sdedit_strength_near_zero_returns_the_input() -> Result<()> {
    let g = vp("ddim", 50)?;
    let pipe = Pipeline::new(&g, Cond::None, None)?;
    let x = g.draws(64, &mut Rng::new(1))?;
    let same = sdedit(&pipe, &x, None, None, 0.005, &mut Rng::new(2))?;
    assert_eq!(
        same.flatten_all()?.to_vec1::<f32>()?,
        x.flatten_all()?.to_vec1::<f32>()?
    );
    let mut last = f64::INFINITY;
    for strength in [0.6, 0.2, 0.06, 0.02] {
        let out = sdedit(&pipe, &x, None, None, strength, &mut Rng::new(2))?;
        let d = (out - &x)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
        assert!(
            d < last,
            "strength {strength}: mean squared change {d} ≥ {last}"
        );
        last = d;
    }
    assert!(last < 5e-3, "{last}");
    Ok(())
}

/// EDM's levels (α = 1, σ up to 80) through the same loop: Heun with enough steps samples the prior.
#[test]
fn variance_exploding_levels_sample_the_prior() -> Result<()> {
    let g = Gauss::new(Box::new(KarrasSchedule::new(0.002, 80.0, 7.0)?), "heun", 60)?;
    let x = sample(&g, 4000, &crate::model::SampleOptions::seeded(4))?;
    let all: Vec<usize> = (0..D).collect();
    let (dm, dc) = moment_errors(&x, &g.mu, &g.cov, &all)?;
    assert!(dm < 0.08 && dc < 0.08, "mean {dm:.3}, cov {dc:.3}");
    Ok(())
}

fn message<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => "no error".to_string(),
        Err(e) => e.to_string(),
    }
}

/// The solvers refuse what they cannot do, with one line naming the option.
#[test]
fn solvers_refuse_what_they_cannot_do() -> Result<()> {
    let g = vp("heun", 10)?;
    let pipe = Pipeline::new(&g, Cond::None, None)?;
    let p = problem(&g, 2, 0.0)?;
    let zeros = Tensor::zeros((2, 1, 2, 2), DType::F32, &Device::Cpu)?;
    let blur = crate::ops::Blur::new(&SHAPE, 1.0, &Device::Cpu)?;
    let e = message(RePaint::new(&blur, &zeros, 0.0, 1, 1));
    assert!(e.contains("masks only"), "{e}");
    let e = message(RePaint::new(&p.mask, &p.y, 0.1, 1, 1));
    assert!(e.contains("sigma_y"), "{e}");
    let e = message(Project::new(&p.mask, &p.y, 0.1, 10, 1, 1));
    assert!(e.contains("sigma_y"), "{e}");
    let e = message(Project::new(&p.mask, &p.y, 0.0, 10, 0, 1));
    assert!(e.contains("jump"), "{e}");
    let e = message(Dps::new(&p.mask, &p.y, -1.0));
    assert!(e.contains("dps_scale"), "{e}");
    let e = message(Dps::new(&p.mask, &zeros.reshape((2, 4))?, 1.0));
    assert!(e.contains("measurement"), "{e}");
    // heun makes two evaluations per step: refused when named, replaced by ddpm when it is only the default
    let mut rp = RePaint::new(&p.mask, &p.y, 0.0, 1, 1)?;
    let heun = Some("heun");
    let e = message(solve(
        &pipe,
        &mut rp,
        "repaint",
        2,
        heun,
        None,
        &mut Rng::new(0),
    ));
    assert!(
        e.contains("one model evaluation per step") && e.contains("heun"),
        "{e}"
    );
    let x = solve(&pipe, &mut rp, "repaint", 2, None, None, &mut Rng::new(0))?;
    assert_eq!(x.dims(), &[2, 1, 2, 2]);
    // dpm++2m carries state: no resampling with it
    let mut rp = RePaint::new(&p.mask, &p.y, 0.0, 2, 3)?;
    let e = message(solve(
        &pipe,
        &mut rp,
        "repaint",
        2,
        Some("dpm++2m"),
        None,
        &mut Rng::new(0),
    ));
    assert!(e.contains("without state"), "{e}");
    let e = message(sdedit(&pipe, &p.y, None, None, 1.5, &mut Rng::new(0)));
    assert!(e.contains("strength") && e.contains("(0, 1]"), "{e}");
    let e = message(sdedit(
        &pipe,
        &zeros.reshape((2, 4))?,
        None,
        None,
        0.5,
        &mut Rng::new(0),
    ));
    assert!(e.contains("shape"), "{e}");
    // guidance needs a conditional model
    let e = message(Pipeline::new(&g, Cond::None, Some(2.0)));
    assert!(e.contains("guidance"), "{e}");
    Ok(())
}

/// RePaint's schedule: blocks of `jump` steps, each `resample` times, jumping back in between.
#[test]
fn the_resampling_plan_visits_every_step_resample_times() {
    use Action::{Renoise, Step};
    assert_eq!(resampling_plan(3, 5, 1), vec![Step(0), Step(1), Step(2)]);
    assert_eq!(
        resampling_plan(3, 2, 2),
        vec![
            Step(0),
            Step(1),
            Renoise { from: 2, to: 0 },
            Step(0),
            Step(1),
            Step(2),
            Renoise { from: 3, to: 2 },
            Step(2)
        ]
    );
    let plan = resampling_plan(50, 10, 10);
    for i in 0..50 {
        assert_eq!(plan.iter().filter(|a| **a == Step(i)).count(), 10);
    }
}
