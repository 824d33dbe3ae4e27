//! A generator trained by a two-sample test: generative moment matching networks (Li, Swersky & Zemel 2015).
//!
//! The generator G (DCGAN's, [`super::nets`]) maps z ~ N(0, I) to an example; training minimises the
//! unbiased squared maximum mean discrepancy between a batch of data x₁..x_m and as many samples G(z₁..z_m),
//!
//!   MMD²_u = Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + Σ_{i≠j} k(y_i, y_j)/(m(m−1)) − 2 Σ_{i,j} k(x_i, y_j)/m²,
//!
//! with a sum of Gaussian kernels k = Σ_σ exp(−‖a − b‖²/(2σ²)) over several bandwidths (the paper's choice, so
//! no single scale has to fit): the statistic of the evaluation suite's kernel two-sample test
//! (`metrics::mmd`), here as a differentiable loss ([`crate::nn::mmd::mmd2_loss`]). With
//! `bandwidths` empty (the default) the scales are the median pairwise distance of the pooled batch (the test's
//! median heuristic, computed without gradient) times 1/4, 1/2, 1, 2 and 4, so the same config fits 2-D points
//! and 784-pixel images. One loss and one optimiser: it trains with the ordinary one-loss step.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::dcgan::GanConfig;
use super::nets::Generator;
use crate::data::Batch;
use crate::model::{DecoderBased, LossOutput, Model, SampleOptions};
use crate::models::DataInfo;
use crate::nn::mmd::{median_distance, mmd2_loss};
use crate::rng::Rng;
use crate::{Error, Result};

/// Multiples of the median heuristic used when `bandwidths` is empty.
pub const MEDIAN_MULTIPLES: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];

/// MMD generator hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MmdGenConfig {
    /// Shape of one example (filled by [`prepare`]).
    pub example_shape: Vec<usize>,
    /// Size of z.
    pub latent_dim: usize,
    /// Width of the generator (as [`GanConfig::channels`]).
    pub channels: usize,
    /// Kernel bandwidths σ (in the preprocessed data's units); empty = the batch's median distance times
    /// [`MEDIAN_MULTIPLES`].
    pub bandwidths: Vec<f64>,
}

impl Default for MmdGenConfig {
    fn default() -> Self {
        Self {
            example_shape: Vec::new(),
            latent_dim: 64,
            channels: 64,
            bandwidths: Vec::new(),
        }
    }
}

impl MmdGenConfig {
    /// A small config for tests.
    pub fn tiny() -> Self {
        Self {
            latent_dim: 8,
            channels: 16,
            ..Self::default()
        }
    }

    /// The generator's part of a GAN config.
    fn generator(&self) -> GanConfig {
        GanConfig {
            example_shape: self.example_shape.clone(),
            latent_dim: self.latent_dim,
            channels: self.channels,
            ..GanConfig::default()
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        if let Some(b) = self
            .bandwidths
            .iter()
            .find(|b| !(b.is_finite() && **b > 0.0))
        {
            return Err(Error::invalid(
                "model.bandwidths",
                format!("{b} is not a positive finite bandwidth"),
            ));
        }
        self.generator().validate()
    }
}

/// Fills the example shape and refuses data a tanh generator cannot produce (as [`super::dcgan::prepare`]).
pub fn prepare(cfg: &mut MmdGenConfig, data: &DataInfo) -> Result<()> {
    let mut g = cfg.generator();
    super::dcgan::prepare(&mut g, data)?;
    cfg.example_shape = g.example_shape;
    cfg.validate()
}

/// The generator's activations (as in [`super::dcgan::footprint`]) plus the kernel matrices of a batch are
/// small; counted per example as the generator's share.
pub fn footprint(cfg: &MmdGenConfig) -> crate::models::Footprint {
    super::dcgan::footprint(&cfg.generator())
}

/// A generator trained by MMD.
pub struct MmdGenerator {
    cfg: MmdGenConfig,
    generator: Generator,
}

impl MmdGenerator {
    /// Builds it from a prepared config (variables `generator.*`).
    pub fn new(cfg: MmdGenConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            generator: Generator::new(&cfg.generator(), vb.pp("generator"))?,
            cfg,
        })
    }

    /// The bandwidths for a batch: the configured ones, or the median heuristic of the pooled (detached) batch.
    fn bandwidths(&self, x: &Tensor, y: &Tensor) -> Result<Vec<f64>> {
        if !self.cfg.bandwidths.is_empty() {
            return Ok(self.cfg.bandwidths.clone());
        }
        let m = median_distance(x, y)?;
        Ok(MEDIAN_MULTIPLES.iter().map(|k| k * m).collect())
    }
}

impl Model for MmdGenerator {
    fn name(&self) -> &str {
        "mmd-gen"
    }

    /// MMD²_u between the batch and as many samples (parts: the median-heuristic bandwidth when used).
    fn loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        let b = batch.len();
        let z = rng.randn((b, self.cfg.latent_dim), batch.x.device())?;
        let y = self.generator.forward(&z, None)?.reshape((b, ()))?; // (b, D)
        let x = batch.x.reshape((b, ()))?; // (b, D)
        let bw = self.bandwidths(&x, &y)?;
        let loss = mmd2_loss(&x, &y, &bw)?;
        Ok(LossOutput {
            parts: vec![("bandwidth".into(), bw[bw.len() / 2])],
            loss,
        })
    }

    fn sample(&self, n: usize, opts: &SampleOptions) -> Result<Tensor> {
        let dev = self.generator.device();
        let mut rng = Rng::new(opts.seed);
        let z = (rng.randn((n, self.cfg.latent_dim), &dev)? * opts.temperature)?;
        self.generator.forward(&z, None)
    }

    fn as_decoder_based(&self) -> Option<&dyn DecoderBased> {
        Some(self)
    }
}

impl DecoderBased for MmdGenerator {
    fn latent_dim(&self) -> usize {
        self.cfg.latent_dim
    }

    fn decode_mean(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        if labels.is_some() {
            return Err(Error::invalid(
                "labels",
                "model 'mmd-gen' is not class-conditional",
            ));
        }
        self.generator.forward(z, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Preprocessing;
    use crate::nn::Params;
    use crate::train::optim::AdamWParams;
    use crate::train::step::{
        GroupSpec, LossStep, Optimizers, Schedule, StepAt, StepContext, TrainStep,
    };
    use candle_core::{DType, Device};

    /// Trained by MMD alone (through the trainer's one-loss step and optimiser), the generator's samples
    /// recover the mean and covariance of a correlated 2-D Gaussian.
    #[test]
    fn mmd_generator_recovers_a_gaussian() -> Result<()> {
        let dev = Device::Cpu;
        let (mean, chol) = ([1.0f32, -0.5], [[0.8f32, 0.0], [0.6, 0.4]]); // Σ = L Lᵀ
        let cov = [[0.64f64, 0.48], [0.48, 0.36 + 0.16]];
        let mut cfg = MmdGenConfig::tiny();
        prepare(
            &mut cfg,
            &DataInfo {
                example_shape: vec![2],
                num_classes: None,
                preprocessing: Preprocessing::Identity,
                tokenizer: None,
                caption_words: None,
            },
        )?;
        let params = Params::new(0, &dev);
        let model = MmdGenerator::new(cfg, params.var_builder())?;
        let steps = 600;
        let mut opt = Optimizers::new(
            params.vars(),
            vec![GroupSpec {
                name: "all".into(),
                prefixes: Vec::new(),
                adam: AdamWParams::default(),
                schedule: Schedule {
                    lr: 5e-3,
                    warmup_steps: 0,
                    min_lr_ratio: 0.1,
                    total_steps: steps,
                },
                grad_clip: 0.0,
            }],
        )?;
        let mut data = Rng::new(9);
        let draw = |n: usize, rng: &mut Rng| -> Result<Tensor> {
            let v: Vec<f32> = (0..n)
                .flat_map(|_| {
                    let (a, b) = (rng.normal(), rng.normal());
                    [
                        mean[0] + chol[0][0] * a,
                        mean[1] + chol[1][0] * a + chol[1][1] * b,
                    ]
                })
                .collect();
            Ok(Tensor::from_vec(v, (n, 2), &dev)?)
        };
        let mut step = LossStep { grad_accum: 1 };
        for s in 0..steps {
            let mut rng = Rng::stream(1, s);
            let mut batch =
                |_: usize, _: &mut Rng| -> Result<Batch> { Ok(Batch::new(draw(128, &mut data)?)) };
            step.step(&mut StepContext {
                at: StepAt {
                    step: s,
                    saved: None,
                    log: false,
                },
                model: &model,
                rng: &mut rng,
                batch: &mut batch,
                opt: &mut opt,
            })?;
        }
        let x = model
            .sample(4000, &SampleOptions::seeded(3))?
            .to_dtype(DType::F64)?;
        let m = x.mean(0)?.to_vec1::<f64>()?;
        let c = x.broadcast_sub(&x.mean_keepdim(0)?)?;
        let c = (c.t()?.matmul(&c)? / 3999.0)?.to_vec2::<f64>()?;
        for i in 0..2 {
            assert!((m[i] - mean[i] as f64).abs() < 0.1, "mean {m:?}");
            for j in 0..2 {
                assert!((c[i][j] - cov[i][j]).abs() < 0.12, "cov {c:?} vs {cov:?}");
            }
        }
        Ok(())
    }
}
