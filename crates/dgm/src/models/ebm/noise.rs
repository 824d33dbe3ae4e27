//! The noise densities q of noise-contrastive estimation ([`super::nce`]), which must be sampled and evaluated
//! exactly:
//!
//! * **a Gaussian** fitted to the data: each value's mean and standard deviation over the first training examples
//!   (at least 5 % of the box's width), truncated to the model's box [lo, hi]; its statistics are model state
//!   (`state.noise_mean`, `state.noise_std`), saved with the weights;
//! * **a trained run** of dgm whose model has an exact density (a normalizing flow or an autoregressive model of
//!   the same data): its samples and log-density, mapped into the EBM's space by the affine map between the two runs'
//!   preprocessings (x_noise = a·x + b, so log q(x) = log q_noise(a·x + b) + D log a). A VAE's density is only a
//!   bound or an estimate, and NCE with an inexact log q is biased, so it is refused.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::data::{Batch, Preprocessing, Range};
use crate::distributions::gaussian::erfc;
use crate::model::{LikelihoodKind, LikelihoodOptions, Model, SampleOptions};
use crate::rng::Rng;
use crate::{Error, Result};

/// Smallest standard deviation of the Gaussian noise, as a fraction of the box's width (constant pixels would
/// otherwise give a noise density of zero width).
const MIN_NOISE_STD: f64 = 0.05;

/// The noise of an NCE model.
pub(super) enum NceNoise {
    /// Per value N(mean, std²) truncated to [lo, hi].
    Gaussian {
        mean: Tensor,
        std: Tensor,
        lo: f64,
        hi: f64,
    },
    /// A trained model with an exact density, and the map x_noise = scale·x + shift into its space.
    Run {
        model: Box<dyn Model>,
        scale: f64,
        shift: f64,
    },
}

/// The range of a preprocessing's values: `Some((lo, hi))` for scaled images, `None` for raw values.
fn value_range(p: &Preprocessing) -> Result<Option<(f64, f64)>> {
    match p {
        Preprocessing::Scale {
            range: Range::ZeroOne,
            ..
        } => Ok(Some((0.0, 1.0))),
        Preprocessing::Scale {
            range: Range::MinusOneOne,
            ..
        } => Ok(Some((-1.0, 1.0))),
        Preprocessing::Identity => Ok(None),
        other => Err(Error::invalid(
            "model.noise_run",
            format!(
                "the noise must be a density of continuous values; its run's data are {}",
                other.describe()
            ),
        )),
    }
}

/// The affine map [scale, shift] from the EBM's data space (preprocessed by `data`) into that of a noise run
/// (preprocessed by `noise`): both scaled images (any ranges) or both raw values (the identity).
pub(super) fn noise_map(data: &Preprocessing, noise: &Preprocessing) -> Result<[f64; 2]> {
    match (value_range(data)?, value_range(noise)?) {
        (Some((lo, hi)), Some((nlo, nhi))) => {
            let scale = (nhi - nlo) / (hi - lo);
            Ok([scale, nlo - scale * lo])
        }
        (None, None) => Ok([1.0, 0.0]),
        _ => Err(Error::invalid(
            "model.noise_run",
            format!(
                "the noise run's data are {}, the model's {}: both must be scaled images or both raw values",
                noise.describe(),
                data.describe()
            ),
        )),
    }
}

impl NceNoise {
    /// The Gaussian noise on the box [lo, hi], its statistics the state variables `noise_mean`, `noise_std`
    /// under `state` (D values each; until [`NceNoise::data_init`] the box's centre and width).
    pub(super) fn gaussian(d: usize, lo: f64, hi: f64, state: VarBuilder) -> Result<Self> {
        use candle_nn::init::Init;
        Ok(NceNoise::Gaussian {
            mean: state.get_with_hints(d, "noise_mean", Init::Const((lo + hi) / 2.0))?,
            std: state.get_with_hints(d, "noise_std", Init::Const(hi - lo))?,
            lo,
            hi,
        })
    }

    /// The model of the run at `path` (its EMA weights) with the map `[scale, shift]` into its space.
    pub(super) fn run(path: &str, map: &[f64], device: &Device) -> Result<Self> {
        let [scale, shift] = map else {
            return Err(Error::invalid(
                "model.noise_map",
                format!("{map:?} is not prepared (two numbers)"),
            ));
        };
        let run = crate::train::run::load(
            std::path::Path::new(path),
            crate::train::Weights::Ema,
            device,
        )?;
        if run.model.as_density().is_none() {
            return Err(Error::invalid(
                "model.noise_run",
                format!(
                    "{path}: model '{}' has no density to serve as NCE's noise",
                    run.config.model.name
                ),
            ));
        }
        Ok(NceNoise::Run {
            model: run.model,
            scale: *scale,
            shift: *shift,
        })
    }

    /// Refuses a noise that would bias NCE: log q must be exact. Checked on one sample of the noise, before a run
    /// is created.
    pub(super) fn check_exact(&self) -> Result<()> {
        if let NceNoise::Gaussian { .. } = self {
            return Ok(()); // exact by construction
        }
        let x = self.draw(1, &[], &mut Rng::new(0), &Device::Cpu)?; // a run's sample has its own shape
        self.log_density(&x).map(|_| ())
    }

    /// Values for the Gaussian's state variables (named under `state`) from a batch of training data; nothing for
    /// a trained run.
    pub(super) fn data_init(&self, batch: &Batch, state: &str) -> Result<Vec<(String, Tensor)>> {
        let NceNoise::Gaussian { lo, hi, .. } = self else {
            return Ok(Vec::new());
        };
        let x = batch.x.reshape((batch.len(), ()))?.to_dtype(DType::F32)?;
        let mean = x.mean(0)?;
        let std = x
            .broadcast_sub(&mean)?
            .sqr()?
            .mean(0)?
            .sqrt()?
            .maximum(MIN_NOISE_STD * (hi - lo))?;
        Ok(vec![
            (format!("{state}.noise_mean"), mean),
            (format!("{state}.noise_std"), std),
        ])
    }

    /// `n` draws `(n, …shape)`: the Gaussian by rejection per value (values whose window holds almost no mass are
    /// clamped after 1000 tries); a run's samples, mapped into the model's space.
    pub(super) fn draw(
        &self,
        n: usize,
        shape: &[usize],
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Tensor> {
        match self {
            NceNoise::Gaussian { mean, std, lo, hi } => {
                let (m, s) = (mean.to_vec1::<f32>()?, std.to_vec1::<f32>()?);
                let (lo, hi) = (*lo as f32, *hi as f32);
                let mut v = Vec::with_capacity(n * m.len());
                for _ in 0..n {
                    for (mu, sd) in m.iter().zip(&s) {
                        let mut x = f32::NAN;
                        for _ in 0..1000 {
                            x = mu + sd * rng.normal();
                            if (lo..=hi).contains(&x) {
                                break;
                            }
                        }
                        v.push(x.clamp(lo, hi));
                    }
                }
                let mut dims = vec![n];
                dims.extend_from_slice(shape);
                Ok(Tensor::from_vec(v, dims, device)?)
            }
            NceNoise::Run {
                model,
                scale,
                shift,
            } => {
                let opts = SampleOptions {
                    mean: false,
                    ..SampleOptions::seeded(rng.next_u64())
                };
                let x = model.sample(n, &opts)?.to_dtype(DType::F32)?;
                Ok(x.affine(1.0 / scale, -shift / scale)?.detach())
            }
        }
    }

    /// log q(x) `(b,)`, no gradient.
    pub(super) fn log_density(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        match self {
            NceNoise::Gaussian { mean, std, lo, hi } => {
                let (m, s) = (mean.to_vec1::<f32>()?, std.to_vec1::<f32>()?);
                // each value's truncation mass Φ((hi − μ)/s) − Φ((lo − μ)/s) and the Gaussian's normaliser
                let phi = |z: f64| 0.5 * erfc(-z / std::f64::consts::SQRT_2);
                let log_const: f64 = m
                    .iter()
                    .zip(&s)
                    .map(|(&mu, &sd)| {
                        let (mu, sd) = (mu as f64, sd as f64);
                        let mass = phi((hi - mu) / sd) - phi((lo - mu) / sd);
                        -(mass.max(1e-300)).ln() - sd.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
                    })
                    .sum();
                let z = x
                    .detach()
                    .reshape((b, ()))?
                    .broadcast_sub(&mean.unsqueeze(0)?)?
                    .broadcast_div(&std.unsqueeze(0)?)?;
                Ok(((z.sqr()?.sum(1)? * -0.5)? + log_const)?)
            }
            NceNoise::Run {
                model,
                scale,
                shift,
            } => {
                let density = model.as_density().ok_or_else(|| {
                    Error::invalid("model.noise_run", "the noise model has no density")
                })?;
                let batch = Batch::new(x.detach().affine(*scale, *shift)?);
                let ll = density.log_likelihood(&batch, &LikelihoodOptions::default())?;
                if ll.kind != LikelihoodKind::Exact {
                    return Err(Error::invalid(
                        "model.noise_run",
                        format!(
                            "NCE needs the noise's exact log-density; model '{}' gives {} (a VAE's is a bound: use a \
                             flow)",
                            model.name(),
                            ll.kind
                        ),
                    ));
                }
                let d = (x.elem_count() / b.max(1)) as f64;
                let v: Vec<f32> = ll
                    .nats
                    .iter()
                    .map(|l| (l + d * scale.ln()) as f32)
                    .collect();
                Ok(Tensor::from_vec(v, b, x.device())?)
            }
        }
    }
}
