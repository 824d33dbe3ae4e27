//! Denoising diffusion probabilistic models (Ho, Jain & Abbeel 2020, arXiv:2006.11239), with the cosine schedule
//! and v-prediction of later work (Nichol & Dhariwal 2021, arXiv:2102.09672; Salimans & Ho 2022, arXiv:2202.00512).
//!
//! Forward process at discrete step k ∈ {0, …, T−1}: x_k = √ᾱ_k·x₀ + √(1 − ᾱ_k)·ε, ε ~ N(0, I) (Ho et al. eq. 4),
//! with ᾱ from the `linear` or `cosine` schedule of [`crate::schedulers`]. The network f(x_k, k, y) predicts
//!
//! * `eps`: ε (Ho et al. eq. 14, the "simple" loss E‖ε − f‖²), or
//! * `v`: v = α_k·ε − σ_k·x₀ with α_k = √ᾱ_k, σ_k = √(1 − ᾱ_k) (Salimans & Ho 2022, eq. 10 and appendix D),
//!
//! and the loss is the mean squared error over pixels and examples. Either way the model answers the samplers'
//! one question, the clean-data estimate x̂₀ = (x − σ·ε̂)/α (eps) or x̂₀ = α·x − σ·v̂ (v), clipped to the data
//! range for images. Sampling runs any sampler of [`crate::schedulers`] over the schedule's levels, in the loop
//! of [`crate::pipelines`] (which also guides, edits and solves inverse problems with it).
//!
//! Likelihood ([`Density`]): `vlb`, the variational bound of Ho et al. with the discretized decoder (a bound on
//! the probability of the 8-bit data), and `ode`, the probability-flow ODE estimate (Song et al. 2021) of the
//! uniformly dequantized data, turned into a bound on the same discrete probability by the bin volume; see
//! [`super::likelihood`]. Latent codes ([`Latent`]): DDIM (η = 0) inversion to the noisiest level and back
//! (Song, Meng & Ermon 2021, arXiv:2010.02502, section 5.4), interpolated by slerp (their section 5.3).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::likelihood::{ode_data_log_likelihood, vlb_nats, Quantization};
use super::net::{DenoiserNet, NetConfig};
use crate::conditioning::{batch_cond, check_class_dropout, training_cond, Cond};
use crate::data::Batch;
use crate::model::{
    Condition, Density, Latent, LikelihoodKind, LikelihoodOptions, LogLikelihood, LossOutput,
    Model, SampleOptions,
};
use crate::pipelines::{self, Denoiser, DenoiserInfo, Pipeline, Plain, SamplerDefaults};
use crate::rng::Rng;
use crate::schedulers::{self, ddim_invert, Level, NoiseSchedule, SamplerOptions, VpSchedule};
use crate::{Error, Result};

/// Likelihood estimators of [`Ddpm`] (the first is the default).
pub const ESTIMATORS: &[&str] = &["vlb", "ode"];

/// What the network predicts.
pub const PREDICTIONS: &[&str] = &["eps", "v"];

/// DDPM hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdpmConfig {
    /// The denoising network (UNet for images, MLP for vectors); data-dependent fields are filled by `prepare`.
    pub net: NetConfig,
    /// Noise schedule: `linear` or `cosine`.
    pub schedule: String,
    /// Number of diffusion steps T.
    pub timesteps: usize,
    /// What the network predicts: `eps` or `v`.
    pub prediction: String,
    /// Clip x̂₀ to the data range [−1, 1] while sampling (images only).
    pub clip_denoised: bool,
    /// Default sampler of `sample` (one of `schedulers::SAMPLERS`).
    pub sampler: String,
    /// Default number of sampler steps.
    pub sample_steps: usize,
    /// DDIM's η for the `ddim` sampler.
    pub eta: f64,
    /// Class-conditional models: probability of training an example with the null class instead of its
    /// label, which makes classifier-free guidance possible (Ho & Salimans 2022 use 0.1–0.2).
    pub class_dropout: f64,
    /// Heun steps of the probability-flow ODE likelihood (`ode`), unless the caller asks for another number.
    pub ode_steps: usize,
    /// Fixed-point refinements per interval of DDIM inversion (`encode`); 0 = the one-evaluation approximation.
    pub inversion_refinements: usize,
    /// How the data are quantized (filled by `prepare`); the likelihoods' decoder uses it.
    pub quantization: Quantization,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        Self {
            net: NetConfig::default(),
            schedule: "linear".into(),
            timesteps: 1000,
            prediction: "eps".into(),
            clip_denoised: true,
            sampler: "ddim".into(),
            sample_steps: 50,
            eta: 0.0,
            class_dropout: 0.1,
            ode_steps: 100,
            inversion_refinements: 1,
            quantization: Quantization::default(),
        }
    }
}

impl DdpmConfig {
    /// A small config for tests.
    pub fn tiny() -> Self {
        Self {
            net: NetConfig::tiny(),
            timesteps: 100,
            sample_steps: 10,
            ..Self::default()
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        if !PREDICTIONS.contains(&self.prediction.as_str()) {
            return Err(Error::unknown(
                "model.prediction",
                &self.prediction,
                PREDICTIONS,
            ));
        }
        if !schedulers::SAMPLERS.contains(&self.sampler.as_str()) {
            return Err(Error::unknown(
                "model.sampler",
                &self.sampler,
                schedulers::SAMPLERS,
            ));
        }
        if self.sample_steps == 0 {
            return Err(Error::invalid("model.sample_steps", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.eta) {
            return Err(Error::invalid(
                "model.eta",
                format!(
                    "{} must be in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like noise)",
                    self.eta
                ),
            ));
        }
        check_class_dropout(self.class_dropout, "model.class_dropout")?;
        if self.ode_steps == 0 {
            return Err(Error::invalid("model.ode_steps", "must be at least 1"));
        }
        self.quantization.validate()?;
        self.schedule()?;
        self.net.validate()
    }

    fn schedule(&self) -> Result<VpSchedule> {
        VpSchedule::new(&self.schedule, self.timesteps)
    }
}

/// The clean-data estimate from the network's output `pred` at `level` for sample `x`:
/// x̂₀ = (x − σ·ε̂)/α for `eps`, x̂₀ = α·x − σ·v̂ for `v` (valid for α² + σ² = 1).
pub fn x0_from_prediction(
    prediction: &str,
    pred: &Tensor,
    x: &Tensor,
    level: &Level,
) -> Result<Tensor> {
    let (a, s) = (level.alpha, level.sigma);
    match prediction {
        "eps" => Ok(((x - (pred * s)?)? * (1.0 / a))?),
        "v" => Ok(((x * a)? - (pred * s)?)?),
        other => Err(Error::unknown("model.prediction", other, PREDICTIONS)),
    }
}

/// A trained or fresh DDPM.
pub struct Ddpm {
    cfg: DdpmConfig,
    net: DenoiserNet,
    schedule: VpSchedule,
    device: Device,
}

impl Ddpm {
    /// Builds the model; variables come from `vb`.
    pub fn new(cfg: DdpmConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let device = vb.device().clone();
        let net = DenoiserNet::new(&cfg.net, vb.pp("net"))?;
        let schedule = cfg.schedule()?;
        Ok(Self {
            cfg,
            net,
            schedule,
            device,
        })
    }

    /// The noise schedule.
    pub fn schedule(&self) -> &VpSchedule {
        &self.schedule
    }

    /// The denoiser D(x; level) = x̂₀ for a batch `x` at one noise level (the samplers' model call).
    pub fn denoise(&self, x: &Tensor, level: &Level, cond: &Cond) -> Result<Tensor> {
        let b = x.dim(0)?;
        let t = Tensor::full(level.t as f32, b, &self.device)?; // (b,)
        let out = self.net.forward(x, &t, cond)?; // like x
        let x0 = x0_from_prediction(&self.cfg.prediction, &out, x, level)?;
        if self.cfg.clip_denoised && self.net.is_image() {
            Ok(x0.clamp(-1f32, 1f32)?)
        } else {
            Ok(x0)
        }
    }

    /// The model's x̂₀ without clipping (a smooth function of x, for the ODE likelihood's divergence).
    fn denoise_unclipped(&self, x: &Tensor, level: &Level, cond: &Cond) -> Result<Tensor> {
        let t = Tensor::full(level.t as f32, x.dim(0)?, &self.device)?; // (b,)
        let out = self.net.forward(x, &t, cond)?;
        x0_from_prediction(&self.cfg.prediction, &out, x, level)
    }

    /// The noise levels of the ODE likelihood: `steps + 1` integer timesteps from 0 to T − 1, evenly spaced in
    /// ln(σ/α) and rounded up (repeats dropped).
    fn ode_levels(&self, steps: usize) -> Vec<Level> {
        let t = self.schedule.num_steps();
        let ell = |k: usize| {
            let l = self.schedule.level(k);
            (l.sigma / l.alpha).ln()
        };
        let (lo, hi) = (ell(0), ell(t - 1));
        let mut ks: Vec<usize> = Vec::with_capacity(steps + 1);
        let mut k = 0;
        for j in 0..=steps {
            let target = lo + (hi - lo) * j as f64 / steps as f64;
            while k + 1 < t && ell(k) < target {
                k += 1;
            }
            if ks.last() != Some(&k) {
                ks.push(k);
            }
        }
        ks.into_iter().map(|k| self.schedule.level(k)).collect()
    }
}

impl Model for Ddpm {
    fn name(&self) -> &str {
        "ddpm"
    }

    /// L_simple: k ~ U{0, …, T−1}, ε ~ N(0, I), ‖target − f(√ᾱ_k x₀ + √(1−ᾱ_k) ε, k)‖² averaged.
    fn loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        let x0 = &batch.x; // (b, c, h, w) or (b, d)
        let b = x0.dim(0)?;
        let steps: Vec<usize> = (0..b).map(|_| rng.below(self.cfg.timesteps)).collect();
        let levels: Vec<Level> = steps.iter().map(|&k| self.schedule.level(k)).collect();
        let mut bshape = vec![b];
        bshape.extend(std::iter::repeat_n(1, x0.rank() - 1));
        let col = |f: &dyn Fn(&Level) -> f64| -> Result<Tensor> {
            let v: Vec<f32> = levels.iter().map(|l| f(l) as f32).collect();
            Ok(Tensor::from_vec(v, bshape.as_slice(), &self.device)?)
        };
        let (alpha, sigma) = (col(&|l| l.alpha)?, col(&|l| l.sigma)?); // (b, 1, 1, 1)
        let eps = rng.randn(x0.shape(), &self.device)?;
        let xt = (x0.broadcast_mul(&alpha)? + eps.broadcast_mul(&sigma)?)?;
        let t = Tensor::from_vec(
            steps.iter().map(|&k| k as f32).collect::<Vec<f32>>(),
            b,
            &self.device,
        )?;
        // classifier-free guidance training: the null condition with probability class_dropout
        let cond = training_cond(
            batch,
            self.cfg.net.cond_kind(),
            self.cfg.class_dropout,
            "ddpm",
            rng,
        )?;
        let out = self.net.forward(&xt, &t, &cond)?;
        let target = match self.cfg.prediction.as_str() {
            "v" => (eps.broadcast_mul(&alpha)? - x0.broadcast_mul(&sigma)?)?, // v = α·ε − σ·x₀
            _ => eps,
        };
        let loss = (out - target)?.sqr()?.mean_all()?;
        LossOutput::single("mse", loss)
    }

    /// Runs the sampler named in `opts.sampler` (default: the config's) for `opts.steps` steps from pure noise,
    /// in the loop of [`crate::pipelines`].
    fn sample(&self, n: usize, opts: &SampleOptions) -> Result<Tensor> {
        pipelines::sample(self, n, opts)
    }

    fn as_denoiser(&self) -> Option<&dyn Denoiser> {
        Some(self)
    }

    fn as_density(&self) -> Option<&dyn Density> {
        Some(self)
    }

    fn as_latent(&self) -> Option<&dyn Latent> {
        Some(self)
    }
}

impl Denoiser for Ddpm {
    fn info(&self) -> DenoiserInfo<'_> {
        let c = &self.cfg;
        c.net
            .denoiser_info("ddpm", &self.device, c.clip_denoised, c.class_dropout)
    }

    fn schedule(&self) -> &dyn NoiseSchedule {
        &self.schedule
    }

    fn sampler_defaults(&self) -> SamplerDefaults {
        SamplerDefaults {
            sampler: self.cfg.sampler.clone(),
            steps: self.cfg.sample_steps,
            options: SamplerOptions {
                eta: self.cfg.eta,
                ..SamplerOptions::default()
            },
        }
    }

    fn x0(&self, x: &Tensor, level: &Level, cond: &Cond) -> Result<Tensor> {
        self.denoise_unclipped(x, level, cond)
    }
}

impl Density for Ddpm {
    fn estimators(&self) -> Vec<String> {
        ESTIMATORS.iter().map(|s| s.to_string()).collect()
    }

    /// `vlb`: −L of Ho et al. (a lower bound; `opts.steps` KL terms, default all T − 1). `ode`: the
    /// probability-flow ODE over `opts.steps` Heun steps (default `ode_steps`) with `opts.samples`
    /// Hutchinson probes (the exact trace for ≤ 8 dimensions); for discrete data, of the data dequantized
    /// uniformly within each value's bin, plus D·ln(bin width) — a stochastic estimate of a lower bound on
    /// the probability of the discrete values (Theis et al. 2016).
    fn log_likelihood(&self, batch: &Batch, opts: &LikelihoodOptions) -> Result<LogLikelihood> {
        let cond = batch_cond(batch, self.cfg.net.cond_kind(), "ddpm")?;
        let cond = &cond;
        let mut rng = Rng::new(opts.seed);
        let space = self.cfg.quantization.space();
        let x = batch.x.to_dtype(DType::F32)?;
        match opts.estimator.as_deref().unwrap_or(ESTIMATORS[0]) {
            "vlb" => {
                let n_kl = self.schedule.num_steps().saturating_sub(1);
                let how = match opts.steps.map(|k| k.min(n_kl)) {
                    Some(k) if k < n_kl => format!(
                        "{k} of its {n_kl} KL terms (stratified, unbiased), one noise draw each"
                    ),
                    _ => format!("all {n_kl} KL terms, one noise draw each"),
                };
                let nll = vlb_nats(
                    &x,
                    &self.schedule,
                    &self.cfg.quantization.decoder(),
                    opts.steps,
                    &mut rng,
                    |x, l| self.denoise(x, l, cond),
                )?;
                Ok(LogLikelihood {
                    nats: nll.iter().map(|v| -v).collect(),
                    kind: LikelihoodKind::bound_estimate("VLB", how),
                    space,
                })
            }
            "ode" => {
                let steps = opts.steps.unwrap_or(self.cfg.ode_steps);
                if steps == 0 {
                    return Err(Error::invalid("ode likelihood steps", "must be at least 1"));
                }
                let levels = self.ode_levels(steps);
                let ll = ode_data_log_likelihood(
                    &x,
                    &levels,
                    &self.cfg.quantization,
                    opts.samples,
                    &mut rng,
                    |x, l| self.denoise_unclipped(x, l, cond),
                )?;
                Ok(LogLikelihood {
                    nats: ll,
                    kind: LikelihoodKind::Estimate("ODE".into()),
                    space,
                })
            }
            other => Err(Error::unknown("estimator", other, ESTIMATORS)),
        }
    }
}

impl Latent for Ddpm {
    fn latent_shape(&self) -> Vec<usize> {
        self.cfg.net.input_shape.clone()
    }

    /// DDIM inversion (η = 0) over `sample_steps` steps to the noise at the noisiest sampling level.
    fn encode(&self, batch: &Batch) -> Result<Tensor> {
        let cond = batch_cond(batch, self.cfg.net.cond_kind(), "ddpm")?;
        ddim_invert(
            &self.schedule,
            self.cfg.sample_steps,
            self.cfg.inversion_refinements,
            &batch.x,
            |x, l| Ok(self.denoise(x, l, &cond)?.detach()),
        )
    }

    /// The DDIM (η = 0) sampler over `sample_steps` steps, from the codes instead of fresh noise.
    fn decode(&self, z: &Tensor, condition: &Condition) -> Result<Tensor> {
        let cond = Cond::from_condition(
            condition,
            self.cfg.net.cond_kind(),
            z.dim(0)?,
            "ddpm",
            &self.device,
        )?;
        let mut sampler = schedulers::build(
            "ddim",
            &self.schedule,
            self.cfg.sample_steps,
            &SamplerOptions::default(),
        )?;
        let pipe = Pipeline::new(self, cond, None)?;
        pipe.run(sampler.as_mut(), z.clone(), &mut Plain, &mut Rng::new(0))
    }

    /// Spherical interpolation (slerp), which keeps a Gaussian code's norm (Song et al. 2021, section 5.3);
    /// the straight line when the codes are (nearly) parallel.
    fn interpolate(&self, z0: &Tensor, z1: &Tensor, t: f64) -> Result<Tensor> {
        let dot = |a: &Tensor, b: &Tensor| -> Result<f64> {
            Ok((a * b)?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?)
        };
        let cos = dot(z0, z1)? / (dot(z0, z0)? * dot(z1, z1)?).sqrt().max(1e-30);
        let theta = cos.clamp(-1.0, 1.0).acos();
        if theta.sin() < 1e-6 {
            return Ok(((z0 * (1.0 - t))? + (z1 * t)?)?);
        }
        let (a, b) = (
            ((1.0 - t) * theta).sin() / theta.sin(),
            (t * theta).sin() / theta.sin(),
        );
        Ok(((z0 * a)? + (z1 * b)?)?)
    }
}

/// Fills the data-dependent fields and checks the data fit the model.
pub fn prepare(cfg: &mut DdpmConfig, data: &crate::models::DataInfo) -> Result<()> {
    cfg.net.prepare(data)?;
    cfg.quantization = Quantization::from_preprocessing(&data.preprocessing);
    cfg.validate()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Preprocessing;
    use crate::model::LikelihoodSpace;
    use crate::models::DataInfo;
    use crate::nn::Params;

    fn tiny(shape: &[usize], prediction: &str) -> Result<(Ddpm, Params)> {
        let mut cfg = DdpmConfig::tiny();
        cfg.prediction = prediction.into();
        prepare(
            &mut cfg,
            &DataInfo {
                tokenizer: None,
                caption_words: None,
                example_shape: shape.to_vec(),
                num_classes: None,
                preprocessing: Preprocessing::Identity,
            },
        )?;
        let params = Params::new(3, &Device::Cpu);
        let m = Ddpm::new(cfg, params.var_builder())?;
        Ok((m, params))
    }

    /// With the true ε (or v) as the prediction, x̂₀ is exactly x₀: the eps and v algebra are right.
    #[test]
    fn the_true_prediction_recovers_x0() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(1);
        let x0 = rng.randn((4, 3), &dev)?;
        let eps = rng.randn((4, 3), &dev)?;
        let sched = VpSchedule::new("cosine", 1000)?;
        for k in [0, 10, 500, 999] {
            let l = sched.level(k);
            assert!((l.alpha * l.alpha + l.sigma * l.sigma - 1.0).abs() < 1e-12);
            let xt = ((&x0 * l.alpha)? + (&eps * l.sigma)?)?;
            let v = ((&eps * l.alpha)? - (&x0 * l.sigma)?)?;
            for (kind, pred) in [("eps", &eps), ("v", &v)] {
                let got = x0_from_prediction(kind, pred, &xt, &l)?;
                let err = (got - &x0)?.abs()?.max_all()?.to_scalar::<f32>()?;
                // eps divides by α, which is ≈ 5e-5 at k = 999 of the cosine schedule (its clipped last β)
                let tol = if kind == "eps" {
                    1e-5 / l.alpha as f32
                } else {
                    1e-5
                };
                assert!(err < tol, "{kind} at k = {k}: error {err}");
            }
        }
        assert!(x0_from_prediction("x0", &eps, &x0, &Level::CLEAN).is_err());
        Ok(())
    }

    #[test]
    fn loss_and_samples_on_vectors() -> Result<()> {
        for prediction in PREDICTIONS {
            let (m, _p) = tiny(&[2], prediction)?;
            let batch = Batch::new(Rng::new(4).randn((16, 2), &Device::Cpu)?);
            let out = m.loss(&batch, &mut Rng::new(5))?;
            let l = out.loss.to_scalar::<f32>()?;
            assert!(l.is_finite() && l > 0.0, "{prediction}: {l}");
            for sampler in schedulers::SAMPLERS {
                for steps in [1, 2, 5] {
                    let mut o = SampleOptions::seeded(7);
                    o.sampler = Some(sampler.to_string());
                    o.steps = Some(steps);
                    let x = m.sample(6, &o)?;
                    assert_eq!(x.dims(), &[6, 2]);
                    let v = x.flatten_all()?.to_vec1::<f32>()?;
                    assert!(v.iter().all(|v| v.is_finite()), "{sampler} {steps}: {v:?}");
                    assert_eq!(v, m.sample(6, &o)?.flatten_all()?.to_vec1::<f32>()?);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn bad_sampler_steps_and_conditions_are_errors() -> Result<()> {
        let (m, _p) = tiny(&[2], "eps")?;
        let mut o = SampleOptions::seeded(0);
        o.sampler = Some("euler-maruyama-9000".into());
        let e = m.sample(2, &o).unwrap_err().to_string();
        assert!(
            e.contains("euler-maruyama-9000") && e.contains("ddim"),
            "{e}"
        );
        o.sampler = None;
        o.steps = Some(0);
        assert!(m.sample(2, &o).is_err());
        o.steps = Some(100_000);
        assert!(m.sample(2, &o).is_err());
        let mut o = SampleOptions::seeded(0);
        o.condition = Condition::Class(vec![1]);
        let e = m.sample(2, &o).unwrap_err().to_string();
        assert!(e.contains("unconditional"), "{e}");
        Ok(())
    }

    /// The VLB of 8-bit data is a probability of discrete values (≤ 1, so log ≤ 0 for every example) and both
    /// estimators are finite, reproducible for a seed, and refuse bad options.
    #[test]
    fn likelihoods_of_discrete_data() -> Result<()> {
        let mut cfg = DdpmConfig::tiny();
        cfg.timesteps = 20;
        cfg.ode_steps = 6;
        prepare(
            &mut cfg,
            &DataInfo {
                tokenizer: None,
                caption_words: None,
                example_shape: vec![3],
                num_classes: None,
                preprocessing: Preprocessing::Scale {
                    range: crate::data::Range::MinusOneOne,
                    dequantize: false,
                },
            },
        )?;
        assert_eq!(
            (cfg.quantization.levels, cfg.quantization.range),
            (256, [-1.0, 1.0])
        );
        let params = Params::new(3, &Device::Cpu);
        let m = Ddpm::new(cfg, params.var_builder())?;
        let pixels: Vec<f32> = (0..24)
            .map(|i| ((i * 37) % 256) as f32 * 2.0 / 255.0 - 1.0)
            .collect();
        let batch = Batch::new(Tensor::from_vec(pixels, (8, 3), &Device::Cpu)?);
        for est in ESTIMATORS {
            let opts = LikelihoodOptions {
                estimator: Some(est.to_string()),
                seed: 4,
                ..LikelihoodOptions::default()
            };
            let ll = m.log_likelihood(&batch, &opts)?;
            assert_eq!(ll.space, LikelihoodSpace::Discrete);
            assert!(
                ll.nats.iter().all(|v| v.is_finite()),
                "{est}: {:?}",
                ll.nats
            );
            assert_eq!(ll.nats, m.log_likelihood(&batch, &opts)?.nats, "{est}");
            if *est == "vlb" {
                assert!(ll.nats.iter().all(|&v| v <= 0.0), "{:?}", ll.nats);
                // every KL term, but one noise draw each: an estimate of the bound
                assert_eq!(
                    ll.kind,
                    LikelihoodKind::bound_estimate(
                        "VLB",
                        format!(
                            "all {} KL terms, one noise draw each",
                            m.schedule.num_steps() - 1
                        )
                    )
                );
                // K of the terms: an unbiased estimate of the bound, labelled with K
                let few = LikelihoodOptions {
                    steps: Some(2),
                    ..opts.clone()
                };
                let kind = m.log_likelihood(&batch, &few)?.kind.to_string();
                assert!(
                    kind.starts_with("estimate of a lower bound (VLB), 2 of its")
                        && kind.contains("stratified"),
                    "{kind}"
                );
            } else {
                assert_eq!(ll.kind, LikelihoodKind::Estimate("ODE".into()));
            }
        }
        let bad = LikelihoodOptions {
            estimator: Some("elbo".into()),
            ..LikelihoodOptions::default()
        };
        let e = m.log_likelihood(&batch, &bad).unwrap_err().to_string();
        assert!(
            e.contains("elbo") && e.contains("vlb") && e.contains("ode"),
            "{e}"
        );
        Ok(())
    }

    /// DDIM inversion then decoding gives the data back (η = 0 is deterministic and invertible up to the
    /// fixed-point residual), and slerp keeps the ends and the norm of equal-norm codes. The network is
    /// zeroed (v̂ = 0, so x̂₀ = α·x): an untrained network's x̂₀ is too far from a denoiser for the fixed
    /// point to converge, and a trained one takes too long for a test; the schedulers' tests cover inversion
    /// with exact denoisers of non-Gaussian data.
    #[test]
    fn encode_decode_round_trip_and_slerp() -> Result<()> {
        let (mut m, p) = tiny(&[2], "v")?;
        for (_, v) in p.vars() {
            v.set(&v.as_tensor().zeros_like()?)?;
        }
        m.cfg.inversion_refinements = 4;
        let x = Rng::new(8).randn((16, 2), &Device::Cpu)?;
        let z = m.encode(&Batch::new(x.clone()))?;
        assert_eq!(z.dims(), &[16, 2]);
        let back = m.decode(&z, &Condition::None)?;
        let err = (back - &x)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-3, "round-trip error {err}");
        // without refinements the round trip is only approximate
        m.cfg.inversion_refinements = 0;
        let rough = m.decode(&m.encode(&Batch::new(x.clone()))?, &Condition::None)?;
        let rough = (rough - &x)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(rough > err, "refinements should help: {rough} vs {err}");
        let z0 = Tensor::new(&[3f32, 0.0], &Device::Cpu)?;
        let z1 = Tensor::new(&[0f32, 3.0], &Device::Cpu)?;
        for t in [0.0, 0.3, 0.5, 1.0] {
            let z = m.interpolate(&z0, &z1, t)?.to_vec1::<f32>()?;
            let norm = (z[0] * z[0] + z[1] * z[1]).sqrt();
            assert!((norm - 3.0).abs() < 1e-5, "t = {t}: {z:?}");
            let angle = z[1].atan2(z[0]) as f64;
            assert!(
                (angle - t * std::f64::consts::FRAC_PI_2).abs() < 1e-5,
                "t = {t}: {z:?}"
            );
        }
        Ok(())
    }

    /// Classifier-free guidance: scale 1 is plain conditional sampling, another scale changes the samples,
    /// and guidance on an unconditional model (or a negative scale) is refused.
    #[test]
    fn classifier_free_guidance() -> Result<()> {
        let mut cfg = DdpmConfig::tiny();
        cfg.net.conditional = true;
        prepare(
            &mut cfg,
            &DataInfo {
                tokenizer: None,
                caption_words: None,
                example_shape: vec![2],
                num_classes: Some(3),
                preprocessing: Preprocessing::Identity,
            },
        )?;
        let params = Params::new(5, &Device::Cpu);
        let m = Ddpm::new(cfg, params.var_builder())?;
        let draw = |g: Option<f64>| -> Result<Vec<f32>> {
            let mut o = SampleOptions::seeded(2);
            o.condition = Condition::Class(vec![1]);
            o.guidance = g;
            Ok(m.sample(5, &o)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let plain = draw(None)?;
        let one = draw(Some(1.0))?;
        let strong = draw(Some(4.0))?;
        let diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        assert!(diff(&plain, &one) < 1e-4, "{plain:?} vs {one:?}");
        assert!(diff(&plain, &strong) > 1e-3, "{plain:?} vs {strong:?}");
        let mut o = SampleOptions::seeded(2);
        o.condition = Condition::Class(vec![1]);
        o.guidance = Some(-1.0);
        assert!(m.sample(2, &o).is_err());
        let (u, _p) = tiny(&[2], "eps")?;
        let mut o = SampleOptions::seeded(0);
        o.guidance = Some(3.0);
        let e = u.sample(2, &o).unwrap_err().to_string();
        assert!(e.contains("guidance") && e.contains("unconditional"), "{e}");
        Ok(())
    }
}
