//! Observation models p(x | z) of the VAE: how the decoder's output `(…, D)` becomes a distribution over x.
//!
//! * **Bernoulli** (binarized pixels): the decoder outputs logits l; log p = Σ x·l − softplus(l).
//! * **Gaussian** (dequantized pixels, 2-D points): the decoder outputs the mean μ; a learned per-dimension
//!   log σ (a parameter, not a decoder output) gives log p = Σ −½((x − μ)/σ)² − log σ − ½ log 2π.
//! * **Discretized logistic** (8-bit pixels scaled into [lo, hi], not dequantized; Salimans et al. 2017,
//!   PixelCNN++): the decoder outputs the mean μ, a learned per-dimension log-scale gives s. Pixel level
//!   k ∈ 0..=255 sits at c_k = lo + (hi − lo)·k/255 and owns the bin c_k ± δ, δ = (hi − lo)/510; the two edge
//!   bins are open-ended, so the 256 probabilities sum to one whatever μ and s are.
//!
//! Every log-probability is summed over the last dimension; the data x broadcast against the decoder output,
//! so `(s, b, D)` outputs for s importance samples are scored against `(b, D)` data. The log-probabilities
//! and samplers themselves live in [`crate::distributions`]; this file picks one and holds its learned scale.

use candle_core::Tensor;
use candle_nn::init::Init;
use candle_nn::VarBuilder;

use crate::data::Range;
use crate::distributions::bernoulli::{bernoulli_log_prob, bernoulli_sample};
use crate::distributions::gaussian::{gaussian_log_prob, gaussian_sample};
use crate::distributions::logistic::{discretized_logistic_log_prob, discretized_logistic_sample};
use crate::model::LikelihoodSpace;
use crate::rng::Rng;
use crate::{Error, Result};

/// The observation model names accepted in the config (besides `auto`).
pub const DECODERS: &[&str] = &["bernoulli", "gaussian", "logistic"];

/// Which observation model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ObservationKind {
    /// Bernoulli over binary pixels.
    Bernoulli,
    /// Gaussian with a learned per-dimension standard deviation.
    Gaussian,
    /// Discretized logistic over 256 levels in [lo, hi], with a learned per-dimension scale.
    Logistic {
        /// Value of the lowest level.
        lo: f64,
        /// Value of the highest level.
        hi: f64,
    },
}

/// An observation model with its learned scale parameter (`dec.log_scale`, `(D,)`, for gaussian / logistic).
#[derive(Clone, Debug)]
pub struct Observation {
    kind: ObservationKind,
    log_scale: Option<Tensor>,
}

impl Observation {
    /// The observation model `name` (one of [`DECODERS`]) over `dim` values; `range` places the logistic's
    /// levels. The log-scale starts at 0 (σ = 1, s = 1).
    pub fn new(name: &str, dim: usize, range: Range, vb: VarBuilder) -> Result<Self> {
        let kind = match name {
            "bernoulli" => ObservationKind::Bernoulli,
            "gaussian" => ObservationKind::Gaussian,
            "logistic" => {
                let (lo, hi) = range.bounds();
                ObservationKind::Logistic {
                    lo: lo as f64,
                    hi: hi as f64,
                }
            }
            other => return Err(Error::unknown("model.decoder", other, DECODERS)),
        };
        let log_scale = match kind {
            ObservationKind::Bernoulli => None,
            _ => Some(vb.get_with_hints(dim, "log_scale", Init::Const(0.0))?),
        };
        Ok(Self { kind, log_scale })
    }

    /// Which observation model this is.
    pub fn kind(&self) -> ObservationKind {
        self.kind
    }

    /// Discrete mass (bernoulli, logistic) or continuous density (gaussian).
    pub fn space(&self) -> LikelihoodSpace {
        match self.kind {
            ObservationKind::Gaussian => LikelihoodSpace::Continuous,
            _ => LikelihoodSpace::Discrete,
        }
    }

    fn scale(&self) -> Result<&Tensor> {
        self.log_scale.as_ref().ok_or_else(|| {
            Error::Unsupported("the bernoulli observation model has no scale".into())
        })
    }

    /// log p(x | z) from decoder outputs `(…, D)` and data broadcastable to them, summed over D: `(…)`.
    pub fn log_prob(&self, out: &Tensor, x: &Tensor) -> Result<Tensor> {
        match self.kind {
            ObservationKind::Bernoulli => bernoulli_log_prob(out, x),
            ObservationKind::Gaussian => gaussian_log_prob(out, self.scale()?, x),
            ObservationKind::Logistic { lo, hi } => {
                discretized_logistic_log_prob(out, self.scale()?, x, lo, hi)
            }
        }
    }

    /// The mean of p(x | z): Bernoulli probabilities, the Gaussian mean, the logistic mean clamped to [lo, hi].
    pub fn mean(&self, out: &Tensor) -> Result<Tensor> {
        Ok(match self.kind {
            ObservationKind::Bernoulli => candle_nn::ops::sigmoid(out)?,
            ObservationKind::Gaussian => out.clone(),
            ObservationKind::Logistic { lo, hi } => out.clamp(lo, hi)?,
        })
    }

    /// The standard deviation σ `(D,)` of the Gaussian observation model (no gradient); an error naming the
    /// model for the others, which are not Gaussian.
    pub fn gaussian_std(&self) -> Result<Tensor> {
        match self.kind {
            ObservationKind::Gaussian => Ok(self.scale()?.exp()?.detach()),
            ObservationKind::Bernoulli => Err(Error::Unsupported(
                "the observation model is bernoulli, not gaussian".into(),
            )),
            ObservationKind::Logistic { .. } => Err(Error::Unsupported(
                "the observation model is the discretized logistic, not gaussian".into(),
            )),
        }
    }

    /// One draw from p(x | z) per row of `out` `(n, D)`, noise from `rng`.
    pub fn sample(&self, out: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        out.dims2()?;
        match self.kind {
            ObservationKind::Bernoulli => bernoulli_sample(out, rng),
            ObservationKind::Gaussian => gaussian_sample(out, self.scale()?, rng),
            ObservationKind::Logistic { lo, hi } => {
                discretized_logistic_sample(out, self.scale()?, lo, hi, rng)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn vec(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
    }

    #[test]
    fn logistic_samples_are_levels_and_follow_the_mass() -> Result<()> {
        let dev = Device::Cpu;
        let params = crate::nn::Params::new(0, &dev);
        let obs = Observation::new("logistic", 1, Range::MinusOneOne, params.var_builder())?;
        let mean = Tensor::full(0.2f32, (4000, 1), &dev)?;
        let xs = vec(&obs.sample(&mean, &mut Rng::new(3))?)?;
        // every draw is one of the 256 levels of [−1, 1]
        assert!(xs
            .iter()
            .all(|x| { ((x + 1.0) * 127.5 - ((x + 1.0) * 127.5).round()).abs() < 1e-3 }));
        // s = 1: the logistic median is μ, so about half the draws lie at or below the level nearest 0.2
        let below = xs.iter().filter(|&&x| x <= 0.2).count() as f64 / 4000.0;
        assert!(
            (below - 0.5).abs() < 0.04,
            "fraction below the mean {below}"
        );
        Ok(())
    }
}
