//! DCGAN (Radford, Metz & Chintala 2016, "Unsupervised representation learning with deep convolutional
//! generative adversarial networks") and the two variants built on its networks:
//!
//! * **dcgan**: generator z → fully connected → (2C, h/4, w/4) → two stride-2 transposed convolutions (4×4) →
//!   tanh; discriminator two stride-2 convolutions (4×4) with LeakyReLU(0.2) → linear → a logit. The
//!   non-saturating loss of Goodfellow et al. (2014, §3):
//!   L_D = E[softplus(−D(x))] + E[softplus(D(G(z)))],  L_G = E[softplus(−D(G(z)))].
//! * **sngan** (Miyato, Kataoka, Koyama & Yoshida 2018): every discriminator layer spectrally normalised
//!   ([`crate::nn::spectral`]; one power iteration per discriminator update, its vector saved in the
//!   checkpoint), five critic updates per generator update (the paper's n_dis = 5; with one, a toy run collapsed
//!   onto a few modes) and the hinge loss L_D = E[relu(1 − D(x))] + E[relu(1 + D(G(z)))], L_G = −E[D(G(z))]. This is
//!   the Lipschitz critic of the WGAN family without a gradient penalty: WGAN-GP's penalty needs second-order
//!   gradients, which candle does not have (candle#2462).
//! * **cgan**: class-conditional. The generator takes [z, e(y)] (a learned class embedding, as Mirza &
//!   Osindero 2014 feed the label); the discriminator is the projection discriminator of Miyato & Koyama 2018:
//!   D(x, y) = ψ(φ(x)) + ⟨V_y, φ(x)⟩ with φ the features before the last layer, with spectral normalisation and
//!   the hinge loss as in that paper (its class embedding V is not normalised here).
//!
//! Deviations, stated: the paper's batch normalisation in the generator is GroupNorm here (dgm has no batch
//! statistics, and samples then do not depend on what else is in the batch); the networks are two resolution
//! steps deep (MNIST's 28×28 → 7×7), not four. On 2-D points both players are MLPs (two hidden layers of
//! `channels` units). Images are in [−1, 1] (tanh output).

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::nets::{Discriminator, Generator};
use crate::conditioning::{batch_labels, class_labels};
use crate::data::{Batch, Preprocessing, Range};
use crate::distributions::softplus;
use crate::model::{Adversarial, DecoderBased, LossOutput, Model, SampleOptions};
use crate::models::DataInfo;
use crate::rng::Rng;
use crate::{Error, Result};

/// The names `dgm train` takes for this file's models.
pub const PRESETS: &[&str] = &["dcgan", "cgan", "sngan"];

/// The adversarial losses.
pub const LOSSES: &[&str] = &["non_saturating", "hinge"];

/// Examples generated at once by [`Model::sample`] (bounds memory; the draws do not depend on it).
const SAMPLE_CHUNK: usize = 500;

/// GAN hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GanConfig {
    /// Shape of one example (`[c, h, w]` with h, w divisible by 4, or `[d]`; filled by [`prepare`]).
    pub example_shape: Vec<usize>,
    /// Class-conditional generator and projection discriminator.
    pub conditional: bool,
    /// Number of classes (filled by [`prepare`] for a conditional model, else 0).
    pub num_classes: usize,
    /// Size of z.
    pub latent_dim: usize,
    /// Width C: the generator's last hidden channels and the discriminator's first (images), or the hidden
    /// units of both MLPs (points).
    pub channels: usize,
    /// `non_saturating` or `hinge`.
    pub loss: String,
    /// Spectral normalisation of every discriminator layer.
    pub spectral_norm: bool,
    /// Discriminator updates per generator update.
    pub d_steps: usize,
}

impl Default for GanConfig {
    fn default() -> Self {
        Self {
            example_shape: Vec::new(),
            conditional: false,
            num_classes: 0,
            latent_dim: 64,
            channels: 64,
            loss: "non_saturating".into(),
            spectral_norm: false,
            d_steps: 1,
        }
    }
}

impl GanConfig {
    /// A small config for tests (data fields still to be filled by [`prepare`]).
    pub fn tiny() -> Self {
        Self {
            latent_dim: 8,
            channels: 8,
            ..Self::default()
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        if !LOSSES.contains(&self.loss.as_str()) {
            return Err(Error::unknown("model.loss", self.loss.clone(), LOSSES));
        }
        for (k, v) in [
            ("model.latent_dim", self.latent_dim),
            ("model.channels", self.channels),
            ("model.d_steps", self.d_steps),
        ] {
            if v == 0 {
                return Err(Error::invalid(k, "must be at least 1, got 0"));
            }
        }
        check_shape(&self.example_shape)
    }
}

/// The config of preset `name` (`dcgan`, `cgan`, `sngan`).
pub fn preset(name: &str) -> Result<GanConfig> {
    let base = GanConfig::default();
    match name {
        "dcgan" => Ok(base),
        // the SN-GAN paper's five critic updates per generator update (its settings A–C)
        "sngan" => Ok(GanConfig {
            loss: "hinge".into(),
            spectral_norm: true,
            d_steps: 5,
            ..base
        }),
        "cgan" => Ok(GanConfig {
            conditional: true,
            loss: "hinge".into(),
            spectral_norm: true,
            d_steps: 5,
            ..base
        }),
        other => Err(Error::unknown("model", other, PRESETS)),
    }
}

/// Images need sides divisible by 4 (two stride-2 layers); vectors any length ≥ 1; empty = not prepared yet.
pub(crate) fn check_shape(shape: &[usize]) -> Result<()> {
    match shape {
        [] => Ok(()),
        [d] if *d > 0 => Ok(()),
        [c, h, w] if *c > 0 && *h > 0 && *w > 0 && h % 4 == 0 && w % 4 == 0 => Ok(()),
        [_, _, _] => Err(Error::invalid(
            "data",
            format!(
                "a GAN's networks halve the image twice, so its sides must be divisible by 4; got {shape:?} \
                 (pad or crop the images)"
            ),
        )),
        _ => Err(Error::invalid(
            "data",
            format!("a GAN models images [c, h, w] or vectors [d], not {shape:?}"),
        )),
    }
}

/// Fills the data fields: example shape, classes (a conditional model needs labels), and refuses data that
/// are not continuous values (images must be scaled to [−1, 1], the tanh's range).
pub fn prepare(cfg: &mut GanConfig, data: &DataInfo) -> Result<()> {
    check_shape(&data.example_shape)?;
    let image = data.example_shape.len() == 3;
    let fits = match &data.preprocessing {
        Preprocessing::Scale { range, .. } => !image || *range == Range::MinusOneOne,
        Preprocessing::Identity => !image,
        _ => false,
    };
    if !fits {
        return Err(Error::invalid(
            "data.preprocessing",
            format!(
                "a GAN generates continuous values through tanh: images need {{ kind = \"scale\", range = \
                 \"minus_one_one\" }}, got {}",
                data.preprocessing.describe()
            ),
        ));
    }
    cfg.example_shape = data.example_shape.clone();
    cfg.num_classes = match (cfg.conditional, data.num_classes) {
        (false, _) => 0,
        (true, Some(k)) if k > 0 => k,
        (true, _) => {
            return Err(Error::invalid(
                "model.conditional",
                "a conditional GAN needs class labels, and this data set has none",
            ))
        }
    };
    cfg.validate()
}

/// What one training example keeps alive: the generator's activations (about three copies of each layer's
/// output) and the discriminator's (two copies) for the real example and two generated ones (the
/// discriminator's and the generator's updates).
pub fn footprint(cfg: &GanConfig) -> crate::models::Footprint {
    use crate::models::{sat_mul, sat_sum};
    let c = cfg.channels as u64;
    let (g, d) = match cfg.example_shape.as_slice() {
        [ch, h, w] => {
            let (h, w, ch) = (*h as u64, *w as u64, *ch as u64);
            let q = (h / 4) * (w / 4);
            let g = sat_sum([
                sat_mul(6 * c, q),
                sat_mul(3 * c, h * w / 4),
                sat_mul(2 * ch, h * w),
            ]);
            let d = sat_sum([sat_mul(2 * c, h * w / 4), sat_mul(4 * c, q)]);
            (g, d)
        }
        shape => {
            let dim = shape.first().copied().unwrap_or(0) as u64;
            (sat_sum([sat_mul(6, c), dim]), sat_sum([sat_mul(4, c), dim]))
        }
    };
    crate::models::Footprint {
        buffers: 0,
        activations_per_example: sat_sum([sat_mul(2, g), sat_mul(3, d)]),
    }
}

/// A GAN: generator (variables `generator.*`) and discriminator (`discriminator.*`).
pub struct Gan {
    name: String,
    cfg: GanConfig,
    generator: Generator,
    discriminator: Discriminator,
}

/// The discriminator's loss from its outputs on real (`r`) and generated (`f`) examples: hinge
/// E[relu(1 − r)] + E[relu(1 + f)], or non-saturating E[softplus(−r)] + E[softplus(f)] (−log σ(r) − log(1 − σ(f))).
pub fn discriminator_objective(hinge: bool, r: &Tensor, f: &Tensor) -> Result<Tensor> {
    Ok(if hinge {
        (r.affine(-1.0, 1.0)?.relu()?.mean_all()? + f.affine(1.0, 1.0)?.relu()?.mean_all()?)?
    } else {
        (softplus(&r.neg()?)?.mean_all()? + softplus(f)?.mean_all()?)?
    })
}

/// The generator's loss from the discriminator's outputs on generated examples: hinge −E[f], or
/// non-saturating E[softplus(−f)] = −E[log σ(f)].
pub fn generator_objective(hinge: bool, f: &Tensor) -> Result<Tensor> {
    Ok(if hinge {
        f.mean_all()?.neg()?
    } else {
        softplus(&f.neg()?)?.mean_all()?
    })
}

/// Mean of a tensor as f64 (for logging).
fn mean_f64(t: &Tensor) -> Result<f64> {
    Ok(t.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl Gan {
    /// Builds the GAN of a prepared `cfg` (registry name `name`).
    pub fn new(name: &str, cfg: GanConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            name: name.to_string(),
            generator: Generator::new(&cfg, vb.pp("generator"))?,
            discriminator: Discriminator::new(&cfg, vb.pp("discriminator"))?,
            cfg,
        })
    }

    /// The config.
    pub fn config(&self) -> &GanConfig {
        &self.cfg
    }

    /// `n` generated examples for `labels`, z ~ N(0, I) from `rng`.
    fn fake(
        &self,
        n: usize,
        labels: Option<&Tensor>,
        rng: &mut Rng,
        dev: &candle_core::Device,
    ) -> Result<Tensor> {
        let z = rng.randn((n, self.cfg.latent_dim), dev)?;
        self.generator.forward(&z, labels)
    }

    fn hinge(&self) -> bool {
        self.cfg.loss == "hinge"
    }
}

impl Model for Gan {
    fn name(&self) -> &str {
        &self.name
    }

    /// The discriminator's loss on `batch` and as many generated examples (validation; changes nothing).
    fn loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        self.discriminator_loss(batch, rng, false)
    }

    fn sample(&self, n: usize, opts: &SampleOptions) -> Result<Tensor> {
        let dev = self.generator.device();
        // (n,) u32 labels for a conditional model: one class for all, or one per sample
        let labels = class_labels(&opts.condition, self.cfg.num_classes, n, &self.name, &dev)?;
        let mut rng = Rng::new(opts.seed);
        let z = (rng.randn((n, self.cfg.latent_dim), &dev)? * opts.temperature)?;
        let mut out = Vec::new();
        for start in (0..n).step_by(SAMPLE_CHUNK) {
            let len = SAMPLE_CHUNK.min(n - start);
            let y = labels
                .as_ref()
                .map(|l| l.narrow(0, start, len))
                .transpose()?;
            out.push(
                self.generator
                    .forward(&z.narrow(0, start, len)?, y.as_ref())?,
            );
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    fn num_classes(&self) -> Option<usize> {
        (self.cfg.num_classes > 0).then_some(self.cfg.num_classes)
    }

    fn as_adversarial(&self) -> Option<&dyn Adversarial> {
        Some(self)
    }

    fn as_decoder_based(&self) -> Option<&dyn DecoderBased> {
        Some(self)
    }
}

impl DecoderBased for Gan {
    fn latent_dim(&self) -> usize {
        self.cfg.latent_dim
    }

    /// The generator G(z) (its tanh output: images in [−1, 1]); a conditional generator needs `labels`.
    fn decode_mean(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        if labels.is_some() && self.cfg.num_classes == 0 {
            return Err(Error::invalid(
                "labels",
                format!("model '{}' is not class-conditional", self.name),
            ));
        }
        self.generator.forward(z, labels)
    }
}

impl Adversarial for Gan {
    fn player_prefixes(&self) -> (String, String) {
        ("generator.".into(), "discriminator.".into())
    }

    fn discriminator_steps(&self) -> usize {
        self.cfg.d_steps
    }

    fn discriminator_loss(
        &self,
        real: &Batch,
        rng: &mut Rng,
        training: bool,
    ) -> Result<LossOutput> {
        if training && self.cfg.spectral_norm {
            self.discriminator.power_iteration()?;
        }
        let y = batch_labels(real, self.cfg.num_classes, &self.name)?;
        let fake = self
            .fake(real.len(), y.as_ref(), rng, real.x.device())?
            .detach();
        let r = self.discriminator.forward(&real.x, y.as_ref())?; // (b,)
        let f = self.discriminator.forward(&fake, y.as_ref())?; // (b,)
        Ok(LossOutput {
            parts: vec![
                ("d_real".into(), mean_f64(&r)?),
                ("d_fake".into(), mean_f64(&f)?),
            ],
            loss: discriminator_objective(self.hinge(), &r, &f)?,
        })
    }

    fn generator_loss(&self, real: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        let y = batch_labels(real, self.cfg.num_classes, &self.name)?;
        let fake = self.fake(real.len(), y.as_ref(), rng, real.x.device())?;
        let f = self.discriminator.forward(&fake, y.as_ref())?;
        Ok(LossOutput {
            parts: Vec::new(),
            loss: generator_objective(self.hinge(), &f)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Params;
    use candle_core::Device;

    fn images() -> Preprocessing {
        Preprocessing::Scale {
            range: Range::MinusOneOne,
            dequantize: false,
        }
    }

    fn scalar(t: &Tensor) -> Result<f64> {
        Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    }

    /// Known values: at D ≡ 0 the non-saturating losses are 2 ln 2 and ln 2, the hinge ones 2 and 0; a
    /// confident, correct discriminator (r = 3, f = −3) has hinge loss 0 and non-saturating 2 softplus(−3).
    #[test]
    fn objectives_have_their_textbook_values() -> Result<()> {
        let dev = Device::Cpu;
        let zero = Tensor::zeros(4, DType::F32, &dev)?;
        let ln2 = std::f64::consts::LN_2;
        assert!((scalar(&discriminator_objective(false, &zero, &zero)?)? - 2.0 * ln2).abs() < 1e-6);
        assert!((scalar(&generator_objective(false, &zero)?)? - ln2).abs() < 1e-6);
        assert!((scalar(&discriminator_objective(true, &zero, &zero)?)? - 2.0).abs() < 1e-6);
        assert!(scalar(&generator_objective(true, &zero)?)?.abs() < 1e-6);
        let (r, f) = ((&zero + 3.0)?, (&zero - 3.0)?);
        assert!(scalar(&discriminator_objective(true, &r, &f)?)?.abs() < 1e-6);
        let sp = (1.0 + (-3.0f64).exp()).ln();
        assert!((scalar(&discriminator_objective(false, &r, &f)?)? - 2.0 * sp).abs() < 1e-6);
        Ok(())
    }

    /// Every preset builds on images and points; samples have the data's shape, images lie in [−1, 1], the
    /// discriminator gives one value per example, and the players' variables carry their prefixes.
    #[test]
    fn presets_build_and_have_the_right_shapes() -> Result<()> {
        for name in PRESETS {
            for (shape, classes) in [(vec![1usize, 8, 12], Some(3)), (vec![2usize], Some(3))] {
                let mut cfg = GanConfig {
                    latent_dim: 4,
                    channels: 4,
                    ..preset(name)?
                };
                let pre = if shape.len() == 3 {
                    images()
                } else {
                    Preprocessing::Identity
                };
                prepare(&mut cfg, &DataInfo::of(&shape, classes, pre))?;
                let params = Params::new(0, &Device::Cpu);
                let gan = Gan::new(name, cfg.clone(), params.var_builder())?;
                let mut opts = SampleOptions::seeded(1);
                if cfg.conditional {
                    opts.condition = crate::model::Condition::Class(vec![1]);
                }
                let x = gan.sample(5, &opts)?;
                let mut want = vec![5];
                want.extend(&shape);
                assert_eq!(x.dims(), want.as_slice(), "{name}");
                if shape.len() == 3 {
                    let v = x.flatten_all()?.to_vec1::<f32>()?;
                    assert!(v.iter().all(|p| (-1.0..=1.0).contains(p)));
                }
                let labels = Tensor::new(&[0u32, 1, 2, 0, 1], &Device::Cpu)?;
                let y = cfg.conditional.then_some(&labels);
                assert_eq!(gan.discriminator.forward(&x, y)?.dims(), &[5]);
                assert_eq!(gan.num_classes(), cfg.conditional.then_some(3));
                let vars = params.vars();
                assert!(vars
                    .iter()
                    .all(|(k, _)| k.starts_with("generator.") || k.starts_with("discriminator.")));
                let has_u = vars.iter().any(|(k, _)| k.ends_with(".u"));
                assert_eq!(has_u, cfg.spectral_norm, "{name}");
            }
        }
        Ok(())
    }

    /// The power iteration moves only in a training step: validation's loss leaves the critic unchanged.
    #[test]
    fn validation_leaves_spectral_state_alone() -> Result<()> {
        let mut cfg = GanConfig::tiny();
        cfg.spectral_norm = true;
        prepare(&mut cfg, &DataInfo::of(&[2], None, Preprocessing::Identity))?;
        let params = Params::new(0, &Device::Cpu);
        let gan = Gan::new("sngan", cfg, params.var_builder())?;
        let batch = Batch::new(Tensor::new(&[[0.5f32, -1.0], [2.0, 0.0]], &Device::Cpu)?);
        let us = || -> Result<Vec<Vec<f32>>> {
            params
                .vars()
                .iter()
                .filter(|(k, _)| k.ends_with(".u"))
                .map(|(_, v)| Ok(v.as_tensor().to_vec1::<f32>()?))
                .collect()
        };
        let before = us()?;
        gan.loss(&batch, &mut Rng::new(0))?;
        assert_eq!(us()?, before);
        gan.discriminator_loss(&batch, &mut Rng::new(0), true)?;
        assert_ne!(us()?, before);
        Ok(())
    }

    #[test]
    fn bad_data_and_settings_are_refused() -> Result<()> {
        let mut cfg = GanConfig::tiny();
        let e = prepare(&mut cfg, &DataInfo::of(&[1, 30, 30], None, images())).err();
        assert!(e.is_some_and(|e| e.to_string().contains("divisible by 4")));
        let bin = Preprocessing::Binarize { dynamic: true };
        let e = prepare(&mut cfg, &DataInfo::of(&[1, 28, 28], None, bin)).err();
        assert!(e.is_some_and(|e| e.to_string().contains("minus_one_one")));
        let mut c = preset("cgan")?;
        let e = prepare(&mut c, &DataInfo::of(&[2], None, Preprocessing::Identity)).err();
        assert!(e.is_some_and(|e| e.to_string().contains("class labels")));
        let bad = GanConfig {
            loss: "wasserstein".into(),
            ..GanConfig::tiny()
        };
        assert!(bad
            .validate()
            .is_err_and(|e| e.to_string().contains("hinge")));
        assert!(preset("wgan").is_err());
        Ok(())
    }
    /// A small GAN (the dcgan preset on points: MLPs of 128 units, z of 2 dimensions) trained by the trainer's
    /// GAN step on `8gaussians` covers every mode: each of the 8 centres gets at least 4 % of 2000 samples
    /// within 3σ, most samples are that close to some centre, and the kernel two-sample test does not tell
    /// samples from data at the 1 % level.
    #[test]
    fn a_small_gan_covers_all_eight_modes() -> Result<()> {
        // DCGAN's Adam settings (lr 2·10⁻⁴, β = (0.5, 0.999)); 2000 steps of batch 128
        let per_mode = train_on_eight_gaussians("dcgan", 128, 2, 2e-4, (0.5, 0.999), 1, 2000, 1)?;
        let n: usize = 2000;
        let close: usize = per_mode.0.iter().sum();
        assert!(
            per_mode.0.iter().all(|&m| m * 25 >= n),
            "modes {:?}",
            per_mode.0
        );
        assert!(
            close * 10 >= n * 7,
            "only {close} of {n} samples near a mode: {:?}",
            per_mode.0
        );
        assert!(per_mode.1 > 0.01, "MMD test rejects: p = {}", per_mode.1);
        Ok(())
    }

    /// Trains preset `preset_name` on `8gaussians` (batch 128, constant lr) and returns the samples per mode
    /// (within 3σ of a centre, of 2000) and the MMD test's p-value against fresh data.
    #[allow(clippy::too_many_arguments)]
    fn train_on_eight_gaussians(
        preset_name: &str,
        channels: usize,
        latent_dim: usize,
        lr: f64,
        betas: (f64, f64),
        d_steps: usize,
        steps: u64,
        seed: u64,
    ) -> Result<([usize; 8], f64)> {
        use crate::data::toy2d::{eight_gaussians_centres, eight_gaussians_std};
        use crate::train::optim::AdamWParams;
        use crate::train::step::{
            GanStep, GroupSpec, Optimizers, Schedule, StepAt, StepContext, TrainStep,
            DISCRIMINATOR, GENERATOR,
        };
        let dev = Device::Cpu;
        let mut cfg = GanConfig {
            latent_dim,
            channels,
            d_steps,
            ..preset(preset_name)?
        };
        prepare(&mut cfg, &DataInfo::of(&[2], None, Preprocessing::Identity))?;
        let params = Params::new(seed, &dev);
        let gan = Gan::new(preset_name, cfg, params.var_builder())?;
        let group = |name: &str, prefix: &str| GroupSpec {
            name: name.into(),
            prefixes: vec![prefix.into()],
            adam: AdamWParams {
                beta1: betas.0,
                beta2: betas.1,
                ..AdamWParams::default()
            },
            schedule: Schedule {
                lr,
                warmup_steps: 0,
                min_lr_ratio: 1.0,
                total_steps: steps,
            },
            grad_clip: 0.0,
        };
        let mut opt = Optimizers::new(
            params.vars(),
            vec![
                group(GENERATOR, "generator."),
                group(DISCRIMINATOR, "discriminator."),
            ],
        )?;
        let (centres, sd) = (eight_gaussians_centres(), eight_gaussians_std());
        let draw = |n: usize, rng: &mut Rng| -> Vec<f32> {
            (0..n)
                .flat_map(|_| {
                    let c = centres[rng.below(8)];
                    [
                        (c.0 + sd * rng.normal() as f64) as f32,
                        (c.1 + sd * rng.normal() as f64) as f32,
                    ]
                })
                .collect()
        };
        let mut data = Rng::new(5);
        let mut step = GanStep { d_steps };
        for s in 0..steps {
            let mut rng = Rng::stream(2, s);
            let mut batch = |_: usize, _: &mut Rng| -> Result<Batch> {
                Ok(Batch::new(Tensor::from_vec(
                    draw(128, &mut data),
                    (128, 2),
                    &dev,
                )?))
            };
            step.step(&mut StepContext {
                at: StepAt {
                    step: s,
                    saved: None,
                    log: false,
                },
                model: &gan,
                rng: &mut rng,
                batch: &mut batch,
                opt: &mut opt,
            })?;
        }
        let n = 2000;
        let x = gan
            .sample(n, &SampleOptions::seeded(4))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut per_mode = [0usize; 8];
        for p in x.chunks(2) {
            let (k, d2) = centres
                .iter()
                .map(|c| (p[0] as f64 - c.0).powi(2) + (p[1] as f64 - c.1).powi(2))
                .enumerate()
                .fold(
                    (0, f64::INFINITY),
                    |a, (k, d)| if d < a.1 { (k, d) } else { a },
                );
            if d2.sqrt() < 3.0 * sd {
                per_mode[k] += 1;
            }
        }
        let test = crate::metrics::mmd::mmd_test(&x, &draw(n, &mut Rng::new(77)), 2, 200, 0)?;
        Ok((per_mode, test.p_value))
    }
}
