//! Energy-based models p(x) = exp(−E(x)) / Z on the box [lo, hi]^D of the data, with a network as the energy:
//!
//! * **ebm**, `objective = "cd"` (Du & Mordatch 2019, "Implicit generation and generalization in energy-based
//!   models"; Nijkamp et al. 2019): contrastive divergence ([`super::cd`]) with negatives from short-run Langevin
//!   chains ([`super::langevin`]) that persist in a replay buffer ([`super::buffer`], 5 % of the chains restarted
//!   from uniform noise each step), per-element gradient clamping and the energy-magnitude penalty α:
//!   L = E_data[E] − E_neg[E] + α (E_data[E²] + E_neg[E²]).
//! * **ebm**, `objective = "nce"` (Gutmann & Hyvärinen 2010, [`super::nce`]): the same energy and a learned
//!   c ≈ log Z, trained to tell data from as many draws of a Gaussian fitted to the data (per value: the training
//!   data's mean and standard deviation, truncated to the box), so −E(x) − c is a normalised log-density.
//! * **jem** (Grathwohl et al. 2019, "Your classifier is secretly an energy based model"): a classifier's logits
//!   f(x) define E(x) = −logsumexp_y f(x)[y]; the loss is the classifier's cross-entropy plus the CD loss of that
//!   energy, so one network classifies and generates — p(x), or p(x | y) through E(x, y) = −f(x)[y].
//!
//! Sampling runs Langevin dynamics from uniform noise on the box (short-run; `steps` chooses the length) and
//! clamps the chains to the box. The Langevin step size λ and noise ε are separate settings, as in the reference
//! code: the chains then sample exp(−E/T) with T = ε²/(2λ), far colder than the model at the defaults (λ = 1,
//! ε = 0.01: T = 5·10⁻⁵), and short runs are far from stationary — the samples are those of the short-run
//! sampler, not of p. Score matching of an energy would need second-order gradients, which candle lacks
//! (candle#2462). The likelihood is −E(x) − log Ẑ with log Ẑ from annealed importance sampling
//! ([`crate::metrics::ais::ais_log_partition`], on the box): an estimate.

use std::cell::RefCell;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::buffer::ReplayBuffer;
use super::cd::cd_loss;
pub use super::config::{
    check_train, footprint, points_preset, prepare, preset, EbmConfig, OBJECTIVES, PRESETS,
};
use super::langevin::{langevin, LangevinConfig};
use super::nce::nce_loss;
use super::net::EnergyNet;
use super::noise::NceNoise;
use crate::conditioning::class_labels;
use crate::data::Batch;
use crate::distributions::categorical::log_softmax;
use crate::metrics::ais::{ais_log_partition, AisConfig, PartitionBase};
use crate::model::{
    Condition, Density, EnergyBased, LikelihoodKind, LikelihoodOptions, LikelihoodSpace,
    LogLikelihood, LossOutput, Model, SampleAbilities, SampleOptions,
};
use crate::rng::Rng;
use crate::{Error, Result};

/// The one sampler.
pub const SAMPLERS: &[&str] = &["langevin"];
/// Chains run at once by [`Model::sample`] (bounds memory; the draws do not depend on it).
const SAMPLE_CHUNK: usize = 250;
/// Leapfrog steps per HMC transition of the log Z estimate behind [`Density`].
const AIS_LEAPFROG: usize = 10;
/// Annealing steps of that estimate when the caller names none.
const AIS_STEPS: usize = 1000;

/// The settings of one AIS estimate of log Z: (chains, steps, seed, class).
type AisKey = (usize, usize, u64, Option<u32>);

/// An energy-based model: the energy network (`net.*`), the CD replay buffer (`state.buffer`) or the NCE noise
/// statistics (`state.noise_mean`, `state.noise_std`) and learned log Z (`log_z`).
pub struct Ebm {
    name: String,
    cfg: EbmConfig,
    net: EnergyNet,
    buffer: Option<ReplayBuffer>,
    /// NCE: c ≈ log Z, and the noise.
    nce: Option<(Tensor, NceNoise)>,
    /// log Ẑ by AIS per (chains, steps, seed), computed once per setting.
    log_z: RefCell<Vec<(AisKey, f64)>>,
}

impl Ebm {
    /// Builds the model of a prepared `cfg` (registry name `name`).
    pub fn new(name: &str, cfg: EbmConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (lo, hi) = cfg.bounds()?;
        let out = if cfg.classifier { cfg.num_classes } else { 1 };
        let state = vb.pp(crate::nn::params::STATE);
        let d: usize = cfg.example_shape.iter().product();
        let (buffer, nce) = match cfg.objective.as_str() {
            "nce" => {
                let noise = match cfg.noise_run.as_str() {
                    "" => NceNoise::gaussian(d, lo, hi, state)?,
                    path => NceNoise::run(path, &cfg.noise_map, vb.device())?,
                };
                let c = vb.get_with_hints((), "log_z", candle_nn::init::Init::Const(0.0))?;
                (None, Some((c, noise)))
            }
            _ => (
                Some(ReplayBuffer::new(
                    cfg.buffer_size,
                    &cfg.example_shape,
                    lo,
                    hi,
                    state,
                )?),
                None,
            ),
        };
        Ok(Self {
            name: name.to_string(),
            net: EnergyNet::new(&cfg.example_shape, cfg.channels, out, vb.pp("net"))?,
            buffer,
            nce,
            log_z: RefCell::new(Vec::new()),
            cfg,
        })
    }

    /// The config.
    pub fn config(&self) -> &EbmConfig {
        &self.cfg
    }

    fn buffer(&self) -> Result<&ReplayBuffer> {
        self.buffer
            .as_ref()
            .ok_or_else(|| Error::invalid("model.objective", "only CD keeps a replay buffer"))
    }

    /// E(x) `(b,)` and, for a classifier, its logits `(b, K)`.
    fn energy_and_logits(&self, x: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let f = self.net.forward(x)?; // (b, out)
        if self.cfg.classifier {
            let m = f.max_keepdim(1)?.detach();
            let lse = (f.broadcast_sub(&m)?.exp()?.sum(1)?.log()? + m.squeeze(1)?)?; // (b,)
            Ok((lse.neg()?, Some(f)))
        } else {
            Ok((f.squeeze(1)?, None))
        }
    }

    /// The NCE objective on `batch` and as many noise draws from `rng`.
    fn nce_objective(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        let (c, noise) = self
            .nce
            .as_ref()
            .ok_or_else(|| Error::invalid("model.objective", "not nce"))?;
        let y = noise.draw(
            batch.len(),
            &self.cfg.example_shape,
            rng,
            &self.net.device(),
        )?;
        let log_model =
            |x: &Tensor| -> Result<Tensor> { Ok(self.energy(x, None)?.broadcast_add(c)?.neg()?) };
        let loss = nce_loss(
            &log_model(&batch.x)?,
            &noise.log_density(&batch.x)?,
            &log_model(&y)?,
            &noise.log_density(&y)?,
        )?;
        let log_z = c.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok(LossOutput {
            loss,
            parts: vec![("nce".into(), l), ("log_z".into(), log_z)],
        })
    }

    /// log Ẑ by AIS on the box with `chains` chains and `steps` steps, seed `seed` (cached per setting): of the
    /// marginal energy, or with `class` y of a classifier of E(x, y) (log Z_y, the normaliser of p(x | y)).
    pub fn log_partition(
        &self,
        chains: usize,
        steps: usize,
        seed: u64,
        class: Option<u32>,
    ) -> Result<f64> {
        let key = (chains, steps, seed, class);
        if let Some((_, v)) = self.log_z.borrow().iter().find(|(k, _)| *k == key) {
            return Ok(*v);
        }
        let (lo, hi) = self.cfg.bounds()?;
        let cfg = AisConfig {
            steps,
            chains,
            leapfrog: AIS_LEAPFROG,
            seed,
            ..AisConfig::default()
        };
        let dev = self.net.device();
        let labels = class.map(|y| Tensor::full(y, chains, &dev)).transpose()?;
        let energy = |x: &Tensor| self.energy(x, labels.as_ref());
        let r = ais_log_partition(
            &energy,
            &self.cfg.example_shape,
            PartitionBase::Box { lo, hi },
            &cfg,
            &dev,
        )?;
        self.log_z.borrow_mut().push((key, r.log_z));
        Ok(r.log_z)
    }
}

impl Model for Ebm {
    fn name(&self) -> &str {
        &self.name
    }

    /// Validation: NCE's objective, or the CD loss (JEM: plus the cross-entropy) against the first batch-many
    /// chains of the replay buffer as they are — no Langevin step, nothing written.
    fn loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        if self.nce.is_some() {
            return self.nce_objective(batch, rng);
        }
        let b = batch.len().min(self.buffer()?.len());
        let neg = self.buffer()?.states().narrow(0, 0, b)?;
        self.cd_objective(batch, &neg)
    }

    /// A training step's loss: CD draws its negatives by Langevin from the replay buffer and writes them back.
    fn train_loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        if self.nce.is_some() {
            return self.nce_objective(batch, rng);
        }
        let buffer = self.buffer()?;
        let (start, idx) = buffer.draw(batch.len(), self.cfg.reinit, rng)?;
        let energy = |x: &Tensor| self.energy(x, None);
        let neg = langevin(
            &energy,
            &start,
            &self.cfg.langevin,
            Some(self.cfg.bounds()?),
            rng,
        )?;
        buffer.write(&idx, &neg)?;
        self.cd_objective(batch, &neg)
    }

    fn sample(&self, n: usize, opts: &SampleOptions) -> Result<Tensor> {
        if let Some(s) = opts.sampler.as_deref().filter(|s| !SAMPLERS.contains(s)) {
            return Err(Error::unknown("sampler", s, SAMPLERS));
        }
        if opts.steps == Some(0) {
            return Err(Error::invalid(
                "steps",
                "must be at least 1 Langevin step, got 0",
            ));
        }
        if !(opts.temperature.is_finite() && opts.temperature > 0.0) {
            return Err(Error::invalid(
                "temperature",
                format!("{} must be positive", opts.temperature),
            ));
        }
        let (lo, hi) = self.cfg.bounds()?;
        // temperature T scales the chains' target exp(−E/T'): the noise by √T
        let cfg = LangevinConfig {
            steps: opts.steps.unwrap_or(self.cfg.langevin.steps),
            noise: self.cfg.langevin.noise * opts.temperature.sqrt(),
            ..self.cfg.langevin.clone()
        };
        let mut rng = Rng::new(opts.seed);
        let mut shape = vec![n];
        shape.extend_from_slice(&self.cfg.example_shape);
        let dev = self.net.device();
        // a classifier samples p(x | y) through E(x, y) = −f(x)[y] when given classes, else p(x)
        let labels = match &opts.condition {
            Condition::None => None,
            c => class_labels(c, self.cfg.num_classes, n, &self.name, &dev)?,
        };
        let x0 = rng.rand(shape, &dev)?.affine(hi - lo, lo)?;
        let mut out = Vec::new();
        for start in (0..n).step_by(SAMPLE_CHUNK) {
            let len = SAMPLE_CHUNK.min(n - start);
            let y = labels
                .as_ref()
                .map(|l| l.narrow(0, start, len))
                .transpose()?;
            let energy = |x: &Tensor| self.energy(x, y.as_ref());
            out.push(langevin(
                &energy,
                &x0.narrow(0, start, len)?,
                &cfg,
                Some((lo, hi)),
                &mut rng,
            )?);
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    /// A classifier's classes (JEM samples and scores x given y).
    fn num_classes(&self) -> Option<usize> {
        self.cfg.classifier.then_some(self.cfg.num_classes)
    }

    fn sample_abilities(&self) -> SampleAbilities {
        SampleAbilities {
            sampler: true,
            ..SampleAbilities::default()
        }
    }

    fn as_density(&self) -> Option<&dyn Density> {
        Some(self)
    }

    fn as_energy_based(&self) -> Option<&dyn EnergyBased> {
        Some(self)
    }

    /// NCE's Gaussian noise: each value's mean and standard deviation over the batch.
    fn data_init(&self, batch: &Batch) -> Result<Vec<(String, Tensor)>> {
        match &self.nce {
            Some((_, noise)) => noise.data_init(batch, crate::nn::params::STATE),
            None => Ok(Vec::new()),
        }
    }
}

impl Ebm {
    /// The CD loss of `batch` against negatives `neg` (JEM: plus the cross-entropy of its labels).
    fn cd_objective(&self, batch: &Batch, neg: &Tensor) -> Result<LossOutput> {
        let (e_pos, logits) = self.energy_and_logits(&batch.x)?;
        let (e_neg, _) = self.energy_and_logits(&neg.detach())?;
        let (mut loss, pos, negm) = cd_loss(&e_pos, &e_neg, self.cfg.alpha)?;
        let mut parts = vec![("e_data".to_string(), pos), ("e_neg".to_string(), negm)];
        if let Some(f) = logits {
            let y = batch.labels.as_ref().ok_or_else(|| {
                Error::invalid(
                    "batch.labels",
                    format!("model '{}' is a classifier and needs labels", self.name),
                )
            })?;
            let y = y.to_dtype(DType::U32)?;
            let logp = log_softmax(&f, 1)?; // (b, K)
            let ce = logp
                .gather(&y.unsqueeze(1)?, 1)?
                .squeeze(1)?
                .mean_all()?
                .neg()?;
            let acc = f
                .argmax(1)?
                .eq(&y)?
                .to_dtype(DType::F64)?
                .mean_all()?
                .to_scalar::<f64>()?;
            parts.push(("ce".into(), ce.to_dtype(DType::F64)?.to_scalar::<f64>()?));
            parts.push(("acc".into(), acc));
            loss = (loss + ce)?;
        }
        Ok(LossOutput { loss, parts })
    }
}

impl EnergyBased for Ebm {
    /// E(x), or for a classifier with `labels` E(x, y) = −f(x)[y].
    fn energy(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let (e, logits) = self.energy_and_logits(x)?;
        match (labels, logits) {
            (None, _) => Ok(e),
            (Some(y), Some(f)) => Ok(f
                .gather(&y.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
                .squeeze(1)?
                .neg()?),
            (Some(_), None) => Err(Error::invalid(
                "labels",
                format!("model '{}' is not a classifier", self.name),
            )),
        }
    }

    fn domain(&self) -> (f64, f64) {
        self.cfg.bounds().unwrap_or((f64::NAN, f64::NAN))
    }

    fn example_shape(&self) -> &[usize] {
        &self.cfg.example_shape
    }

    fn classifies(&self) -> bool {
        self.cfg.classifier
    }

    fn class_logits(&self, x: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.energy_and_logits(x)?.1)
    }
}

impl Density for Ebm {
    fn estimators(&self) -> Vec<String> {
        vec!["ais".into()]
    }

    /// A classifier's marginal p(x) = Σ_y exp(f(x)[y]) / Z needs no labels.
    fn scores_unlabelled(&self) -> bool {
        self.cfg.classifier
    }

    /// −E(x) − log Ẑ, log Ẑ by AIS on the box with `opts.samples` chains and `opts.steps` (default 1000) steps,
    /// estimated once per setting; for a classifier with the batch's labels, log p(x | y) = f(x)[y] − log Z_y with
    /// one estimate per class (without labels its marginal). Values outside the box have log p = −∞.
    fn log_likelihood(&self, batch: &Batch, opts: &LikelihoodOptions) -> Result<LogLikelihood> {
        if let Some(e) = opts.estimator.as_deref().filter(|e| *e != "ais") {
            return Err(Error::unknown("estimator", e, &["ais"]));
        }
        let (steps, chains) = (opts.steps.unwrap_or(AIS_STEPS), opts.samples.max(1));
        // a classifier's batch with labels: p(x | y); without: its marginal p(x)
        let labels = match self.cfg.classifier {
            true => batch.labels.clone(),
            false => None,
        };
        let e = self
            .energy(&batch.x, labels.as_ref())?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        let log_z: Vec<f64> = match &labels {
            None => vec![self.log_partition(chains, steps, opts.seed, None)?; batch.len()],
            Some(y) => y
                .to_dtype(DType::U32)?
                .to_vec1::<u32>()?
                .into_iter()
                .map(|y| self.log_partition(chains, steps, opts.seed, Some(y)))
                .collect::<Result<_>>()?,
        };
        let (lo, hi) = self.cfg.bounds()?;
        let nats = (self.outside_domain(&batch.x)?.iter().enumerate())
            .map(|(i, out)| match out {
                Some(_) => f64::NEG_INFINITY,
                None => -e[i] - log_z[i],
            })
            .collect();
        Ok(LogLikelihood {
            nats,
            kind: LikelihoodKind::Estimate(format!(
                "AIS log Z on the box [{lo}, {hi}], T = {steps}, K = {chains} chains, L = {AIS_LEAPFROG}"
            )),
            space: LikelihoodSpace::Continuous,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Preprocessing, Range};
    use crate::models::DataInfo;
    use crate::nn::Params;
    use candle_core::Device;

    fn points(mut cfg: EbmConfig) -> Result<(Params, Ebm)> {
        prepare(&mut cfg, &DataInfo::of(&[2], None, Preprocessing::Identity))?;
        let p = Params::new(1, &Device::Cpu);
        let m = Ebm::new("ebm", cfg, p.var_builder())?;
        Ok((p, m))
    }

    fn values(t: &Tensor) -> Result<Vec<f32>> {
        Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }

    /// A network energy on the 2-D box [−4, 4]² (the untrained net's, sharpened eightfold): log Ẑ by AIS agrees
    /// with log ∫ exp(−E) by a grid sum over the box within three standard errors; `log_likelihood` is
    /// −E − log Ẑ (−∞ outside the box).
    #[test]
    fn the_likelihood_normalises_by_ais_and_matches_a_grid_integral() -> Result<()> {
        let (_p, m) = points(EbmConfig {
            channels: 16,
            ..EbmConfig::tiny()
        })?;
        // the random energy sharpened eightfold, so that the density is far from uniform
        let h = 0.02f64;
        let side = 400;
        let grid: Vec<f32> = (0..side * side)
            .flat_map(|k| {
                let (i, j) = (k / side, k % side);
                [
                    (-4.0 + h * (i as f64 + 0.5)) as f32,
                    (-4.0 + h * (j as f64 + 0.5)) as f32,
                ]
            })
            .collect();
        let x = Tensor::from_vec(grid, (side * side, 2), &Device::Cpu)?;
        let energy = |x: &Tensor| -> Result<Tensor> { Ok((m.energy(x, None)? * 8.0)?) };
        let e = values(&energy(&x)?)?;
        let (min_e, max_e) = e
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(
            max_e - min_e > 2.0,
            "a flat energy tests little: {min_e}..{max_e}"
        );
        let grid_z: f64 = e.iter().map(|&v| (-(v as f64)).exp() * h * h).sum();
        let cfg = AisConfig {
            steps: 200,
            chains: 128,
            leapfrog: 5,
            seed: 2,
            ..AisConfig::default()
        };
        let r = ais_log_partition(
            &energy,
            &[2],
            PartitionBase::Box { lo: -4.0, hi: 4.0 },
            &cfg,
            &Device::Cpu,
        )?;
        assert!(
            (r.log_z - grid_z.ln()).abs() < 3.0 * r.stderr + 0.01,
            "AIS {} ± {} vs grid {}",
            r.log_z,
            r.stderr,
            grid_z.ln()
        );
        let batch = Batch::new(Tensor::new(&[[0.5f32, -1.0], [5.0, 0.0]], &Device::Cpu)?);
        let opts = LikelihoodOptions {
            samples: 8,
            steps: Some(50),
            ..LikelihoodOptions::default()
        };
        let ll = m.log_likelihood(&batch, &opts)?;
        let log_z = m.log_partition(8, 50, 0, None)?;
        let e0 = values(&m.energy(&batch.x, None)?)?[0] as f64;
        assert!((ll.nats[0] - (-e0 - log_z)).abs() < 1e-9, "{:?}", ll.nats);
        assert_eq!(ll.nats[1], f64::NEG_INFINITY);
        assert!(matches!(ll.kind, LikelihoodKind::Estimate(_)));
        Ok(())
    }

    /// Validation reads the replay buffer and writes nothing; a training step rewrites exactly the drawn
    /// chains (clamped to the box) and is reproducible from its seed.
    #[test]
    fn only_a_training_step_moves_the_replay_buffer() -> Result<()> {
        let (_p, m) = points(EbmConfig::tiny())?;
        let buffer = m.buffer()?;
        let before = values(buffer.states())?;
        let batch = Batch::new((Rng::new(3).randn((16, 2), &Device::Cpu)? * 0.5)?);
        let v = m.loss(&batch, &mut Rng::new(4))?;
        assert!(v.parts.iter().any(|(k, _)| k == "e_neg"));
        assert_eq!(
            values(buffer.states())?,
            before,
            "validation wrote to the buffer"
        );
        let out = m.train_loss(&batch, &mut Rng::new(5))?;
        let after = values(buffer.states())?;
        let changed: Vec<usize> = (0..before.len() / 2)
            .filter(|&i| before[2 * i..2 * i + 2] != after[2 * i..2 * i + 2])
            .collect();
        assert_eq!(changed.len(), 16, "one chain per example moves");
        assert!(after.iter().all(|v| (-4.0..=4.0).contains(v)));
        // the same step from the same buffer and seed gives the same loss and chains
        let (_q, m2) = points(EbmConfig::tiny())?;
        let out2 = m2.train_loss(&batch, &mut Rng::new(5))?;
        assert_eq!(values(&out.loss)?, values(&out2.loss)?);
        assert_eq!(values(m2.buffer()?.states())?, after);
        Ok(())
    }

    /// NCE's noise: draws lie in the box, its log-density integrates to 1 over the box (grid sum), and `data_init`
    /// fits it to the data.
    #[test]
    fn the_nce_noise_is_a_normalised_truncated_gaussian() -> Result<()> {
        let (p, m) = points(EbmConfig {
            objective: "nce".into(),
            ..EbmConfig::tiny()
        })?;
        let data = (Rng::new(1).randn((512, 2), &Device::Cpu)? * 1.5)?
            .broadcast_add(&Tensor::new(&[3.0f32, 0.0], &Device::Cpu)?)?;
        p.set_values(&m.data_init(&Batch::new(data))?)?;
        let Some((_, noise)) = m.nce.as_ref() else {
            return Err(Error::invalid("test", "no nce"));
        };
        let NceNoise::Gaussian { mean, std, .. } = noise else {
            return Err(Error::invalid("test", "not the Gaussian noise"));
        };
        let (mu, sd) = (values(mean)?, values(std)?);
        assert!(
            (mu[0] - 3.0).abs() < 0.2 && (sd[1] - 1.5).abs() < 0.15,
            "{mu:?} {sd:?}"
        );
        let draws = values(&noise.draw(2000, &[2], &mut Rng::new(2), &Device::Cpu)?)?;
        assert!(draws.iter().all(|v| (-4.0..=4.0).contains(v)));
        let h = 0.02f64;
        let side = 400;
        let grid: Vec<f32> = (0..side * side)
            .flat_map(|k| {
                [
                    (-4.0 + h * ((k / side) as f64 + 0.5)) as f32,
                    (-4.0 + h * ((k % side) as f64 + 0.5)) as f32,
                ]
            })
            .collect();
        let x = Tensor::from_vec(grid, (side * side, 2), &Device::Cpu)?;
        let total: f64 = values(&noise.log_density(&x)?)?
            .iter()
            .map(|&l| (l as f64).exp() * h * h)
            .sum();
        assert!((total - 1.0).abs() < 2e-3, "∫ q = {total}");
        let out = m.train_loss(
            &Batch::new(Tensor::zeros((8, 2), DType::F32, &Device::Cpu)?),
            &mut Rng::new(0),
        )?;
        assert!(out.parts.iter().any(|(k, _)| k == "log_z"));
        Ok(())
    }

    /// JEM: E(x) = −logsumexp f(x), E(x, y) = −f(x)[y]; the loss adds the labels' cross-entropy; the class
    /// normalisers Z_y add up to Z; the likelihood given labels is p(x | y); samples follow a class.
    #[test]
    fn jem_energies_are_the_classifiers_logits() -> Result<()> {
        let mut cfg = preset("jem")?;
        cfg.channels = 4;
        cfg.buffer_size = 8;
        let pre = Preprocessing::Scale {
            range: Range::MinusOneOne,
            dequantize: true,
        };
        prepare(&mut cfg, &DataInfo::of(&[1, 8, 8], Some(3), pre.clone()))?;
        assert_eq!((cfg.num_classes, cfg.domain.clone()), (3, vec![-1.0, 1.0]));
        let p = Params::new(0, &Device::Cpu);
        let m = Ebm::new("jem", cfg, p.var_builder())?;
        let x = Rng::new(1).rand((4, 1, 8, 8), &Device::Cpu)?;
        let f = m
            .class_logits(&x)?
            .ok_or_else(|| Error::invalid("test", "no logits"))?;
        let f = f.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let e = values(&m.energy(&x, None)?)?;
        let y = Tensor::new(&[0u32, 1, 2, 1], &Device::Cpu)?;
        let ey = values(&m.energy(&x, Some(&y))?)?;
        for i in 0..4 {
            let lse = f[i].iter().map(|v| v.exp()).sum::<f64>().ln();
            assert!((e[i] as f64 + lse).abs() < 1e-5);
            assert!((ey[i] as f64 + f[i][[0, 1, 2, 1][i]]).abs() < 1e-5);
        }
        let mut batch = Batch::new(x);
        batch.labels = Some(y);
        let out = m.loss(&batch, &mut Rng::new(0))?;
        assert!(
            out.parts.iter().any(|(k, _)| k == "ce") && out.parts.iter().any(|(k, _)| k == "acc")
        );
        // the class normalisers add up to the joint one: Σ_y Z_y = Z (each by AIS on the 64-D box)
        let cfg = AisConfig {
            steps: 200,
            chains: 128,
            leapfrog: 5,
            seed: 1,
            ..AisConfig::default()
        };
        let box_ = PartitionBase::Box { lo: -1.0, hi: 1.0 };
        let dev = Device::Cpu;
        let marginal = |x: &Tensor| m.energy(x, None);
        let z = ais_log_partition(&marginal, &[1, 8, 8], box_, &cfg, &dev)?;
        let (mut zs, mut var) = (Vec::new(), z.stderr.powi(2));
        for c in 0..3u32 {
            let y = Tensor::full(c, cfg.chains, &dev)?;
            let conditional = |x: &Tensor| m.energy(x, Some(&y));
            let r = ais_log_partition(&conditional, &[1, 8, 8], box_, &cfg, &dev)?;
            var += r.stderr.powi(2);
            zs.push(r.log_z);
        }
        let max = zs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + zs.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        assert!(
            (lse - z.log_z).abs() < 3.0 * var.sqrt() + 0.02,
            "log Σ Z_y = {lse} vs log Z = {} (± {})",
            z.log_z,
            var.sqrt()
        );
        // p(x | y) through the batch's labels: f(x)[y] − log Z_y
        let opts = LikelihoodOptions {
            samples: 4,
            steps: Some(20),
            ..LikelihoodOptions::default()
        };
        let ll = m.log_likelihood(&batch, &opts)?;
        for (i, c) in [0u32, 1, 2, 1].into_iter().enumerate() {
            let want = f[i][c as usize] - m.log_partition(4, 20, 0, Some(c))?;
            assert!((ll.nats[i] - want).abs() < 1e-4, "{} vs {want}", ll.nats[i]);
        }
        assert_eq!(m.num_classes(), Some(3));
        // samples given classes (x | y) and without (x): in the box, and the class changes them
        let given = |classes: Vec<u32>| -> Result<Vec<f32>> {
            let opts = SampleOptions {
                steps: Some(5),
                condition: Condition::Class(classes),
                ..SampleOptions::seeded(3)
            };
            values(&m.sample(3, &opts)?)
        };
        let (a, b) = (given(vec![0, 1, 2])?, given(vec![2, 2, 2])?);
        assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert_ne!(a, b);
        assert_eq!(m.sample(3, &SampleOptions::seeded(3))?.dims(), [3, 1, 8, 8]);
        // no classes, no JEM
        let mut cfg = preset("jem")?;
        assert!(prepare(&mut cfg, &DataInfo::of(&[1, 8, 8], None, pre)).is_err());
        Ok(())
    }

    /// Bad settings are refused by name; a buffer smaller than a batch before training; samples stay in the box
    /// and repeat with their seed; an unknown sampler is refused.
    #[test]
    fn bad_settings_are_refused_and_samples_stay_in_the_box() -> Result<()> {
        let base = EbmConfig::tiny();
        for (bad, key) in [
            (
                EbmConfig {
                    objective: "sm".into(),
                    ..base.clone()
                },
                "model.objective",
            ),
            (
                EbmConfig {
                    buffer_size: 0,
                    ..base.clone()
                },
                "model.buffer_size",
            ),
            (
                EbmConfig {
                    reinit: 1.5,
                    ..base.clone()
                },
                "model.reinit",
            ),
            (
                EbmConfig {
                    alpha: -1.0,
                    ..base.clone()
                },
                "model.alpha",
            ),
            (
                EbmConfig {
                    domain: vec![1.0, -1.0],
                    ..base.clone()
                },
                "model.domain",
            ),
            (
                EbmConfig {
                    langevin: LangevinConfig {
                        step_size: 0.0,
                        ..base.langevin.clone()
                    },
                    ..base.clone()
                },
                "model.langevin.step_size",
            ),
            (
                EbmConfig {
                    langevin: LangevinConfig {
                        noise: -0.1,
                        ..base.langevin.clone()
                    },
                    ..base.clone()
                },
                "model.langevin.noise",
            ),
            (
                EbmConfig {
                    classifier: true,
                    objective: "nce".into(),
                    ..base.clone()
                },
                "model.objective",
            ),
        ] {
            assert!(
                bad.validate().is_err_and(|e| e.to_string().contains(key)),
                "{key}"
            );
        }
        let e = check_train(
            &EbmConfig {
                buffer_size: 10,
                ..base.clone()
            },
            32,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("model.buffer_size") && e.contains("32"), "{e}");
        let (_p, m) = points(base)?;
        let opts = SampleOptions {
            steps: Some(3),
            ..SampleOptions::seeded(4)
        };
        let s = m.sample(300, &opts)?;
        assert_eq!(s.dims(), [300, 2]);
        assert!(values(&s)?.iter().all(|v| (-4.0..=4.0).contains(v)));
        assert_eq!(values(&s)?, values(&m.sample(300, &opts)?)?);
        let bad = SampleOptions {
            sampler: Some("ddim".into()),
            ..opts
        };
        assert!(m
            .sample(2, &bad)
            .is_err_and(|e| e.to_string().contains("langevin")));
        Ok(())
    }
}
