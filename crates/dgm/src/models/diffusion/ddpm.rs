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
//! range for images. Sampling runs any sampler of [`crate::schedulers`] over the schedule's levels; the loop is
//! in [`Ddpm::sample`].

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::net::{DenoiserNet, NetConfig};
use crate::model::{Batch, Condition, LossOutput, Model, SampleOptions};
use crate::rng::Rng;
use crate::schedulers::{self, Level, SamplerOptions, VpSchedule};
use crate::{Error, Result};

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
    pub fn denoise(&self, x: &Tensor, level: &Level, class: Option<&Tensor>) -> Result<Tensor> {
        let b = x.dim(0)?;
        let t = Tensor::full(level.t as f32, b, &self.device)?; // (b,)
        let out = self.net.forward(x, &t, class)?; // like x
        let x0 = x0_from_prediction(&self.cfg.prediction, &out, x, level)?;
        if self.cfg.clip_denoised && self.net.is_image() {
            Ok(x0.clamp(-1f32, 1f32)?)
        } else {
            Ok(x0)
        }
    }

    fn class_tensor(&self, cond: &Condition, n: usize) -> Result<Option<Tensor>> {
        let k = self.cfg.net.num_classes;
        match (cond, k) {
            (Condition::None, 0) => Ok(None),
            (Condition::Class(ids), k) if k > 0 && (ids.len() == 1 || ids.len() == n) => {
                if let Some(&bad) = ids.iter().find(|&&c| c as usize >= k) {
                    return Err(Error::invalid(
                        "class",
                        format!("{bad} is out of range: the model has classes 0..={}", k - 1),
                    ));
                }
                let ids = if ids.len() == 1 {
                    vec![ids[0]; n]
                } else {
                    ids.clone()
                };
                Ok(Some(Tensor::from_vec(ids, n, &self.device)?))
            }
            (Condition::Class(ids), k) if k > 0 => Err(Error::invalid(
                "condition",
                format!(
                    "{} classes for {n} samples: give one class for all or one per sample",
                    ids.len()
                ),
            )),
            (Condition::None, k) => Err(Error::invalid(
                "condition",
                format!(
                    "model 'ddpm' is class-conditional: give a class (0..={})",
                    k - 1
                ),
            )),
            (Condition::Class(_), _) => Err(Error::invalid(
                "condition",
                "model 'ddpm' is unconditional: it takes no class",
            )),
            (Condition::Caption(_), _) => Err(Error::invalid(
                "condition",
                "model 'ddpm' takes class labels, not captions",
            )),
        }
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
        let class = match (&batch.labels, self.cfg.net.num_classes) {
            (Some(l), k) if k > 0 => Some(l.clone()),
            (None, k) if k > 0 => {
                return Err(Error::invalid(
                    "batch.labels",
                    "a class-conditional DDPM needs labels",
                ))
            }
            _ => None,
        };
        let out = self.net.forward(&xt, &t, class.as_ref())?;
        let target = match self.cfg.prediction.as_str() {
            "v" => (eps.broadcast_mul(&alpha)? - x0.broadcast_mul(&sigma)?)?, // v = α·ε − σ·x₀
            _ => eps,
        };
        let loss = (out - target)?.sqr()?.mean_all()?;
        let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok(LossOutput {
            loss,
            parts: vec![("mse".into(), l)],
        })
    }

    /// Runs the sampler named in `opts.sampler` (default: the config's) for `opts.steps` steps from pure noise.
    fn sample(&self, n: usize, opts: &SampleOptions) -> Result<Tensor> {
        if n == 0 {
            return Err(Error::invalid("n", "the number of samples must be ≥ 1"));
        }
        let class = self.class_tensor(&opts.condition, n)?;
        let name = opts.sampler.as_deref().unwrap_or(&self.cfg.sampler);
        let steps = opts.steps.unwrap_or(self.cfg.sample_steps);
        let sopts = SamplerOptions {
            eta: self.cfg.eta,
            ..SamplerOptions::default()
        };
        let mut sampler = schedulers::build(name, &self.schedule, steps, &sopts)?;
        let mut rng = Rng::new(opts.seed);
        let mut shape = vec![n];
        shape.extend_from_slice(&self.cfg.net.input_shape);
        let mut x = sampler.init_noise(&shape.into(), &mut rng, &self.device)?;
        if opts.temperature != 1.0 {
            x = (x * opts.temperature)?;
        }
        for i in 0..sampler.num_evals() {
            let level = sampler.level(i); // where the model is evaluated
            let x0 = self.denoise(&x, &level, class.as_ref())?; // model output → x̂₀
            x = sampler.step(i, &x, &x0, &mut rng)?; // scheduler step
        }
        if self.net.is_image() {
            x = x.clamp(-1f32, 1f32)?;
        }
        Ok(x)
    }

    fn num_classes(&self) -> Option<usize> {
        (self.cfg.net.num_classes > 0).then_some(self.cfg.net.num_classes)
    }
}

/// Fills the data-dependent fields and checks the data fit the model.
pub fn prepare(cfg: &mut DdpmConfig, data: &crate::models::DataInfo) -> Result<()> {
    cfg.net.prepare(data)?;
    cfg.validate()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Preprocessing;
    use crate::models::DataInfo;
    use crate::nn::Params;

    fn tiny(shape: &[usize], prediction: &str) -> Result<(Ddpm, Params)> {
        let mut cfg = DdpmConfig::tiny();
        cfg.prediction = prediction.into();
        prepare(
            &mut cfg,
            &DataInfo {
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
}
