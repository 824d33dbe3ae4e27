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
//! so `(s, b, D)` outputs for s importance samples are scored against `(b, D)` data.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor, D};
use candle_nn::init::Init;
use candle_nn::VarBuilder;

use crate::data::Range;
use crate::model::LikelihoodSpace;
use crate::rng::Rng;
use crate::{Error, Result};

/// The observation model names accepted in the config (besides `auto`).
pub const DECODERS: &[&str] = &["bernoulli", "gaussian", "logistic"];

/// ½ log 2π.
const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_8;

/// The logistic log-scale is clamped to this interval (s from 9·10⁻⁴ to 1100), as in PixelCNN++ (lower end).
const LOGISTIC_LOG_SCALE: (f64, f64) = (-7.0, 7.0);

/// softplus(t) = log(1 + eᵗ) = max(t, 0) + log(1 + e^−|t|), stable for any t.
pub fn softplus(t: &Tensor) -> Result<Tensor> {
    let tail = (t.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((t.relu()? + tail)?)
}

/// log Bernoulli(x; sigmoid(l)) = x·l − softplus(l), summed over the last dim: `(…, D)` → `(…)`.
/// On the CPU this is one fused pass each way ([`BernoulliTerm`]); elsewhere it is composed of tensor ops.
pub fn bernoulli_log_prob(logits: &Tensor, x: &Tensor) -> Result<Tensor> {
    let fused = logits.device().is_cpu() && matches!(logits.dtype(), DType::F32 | DType::F64);
    let terms = if fused {
        let x = x.broadcast_as(logits.shape())?.contiguous()?;
        logits.contiguous()?.apply_op2(&x, BernoulliTerm)?
    } else {
        (logits.broadcast_mul(x)? - softplus(logits)?)?
    }; // (…, D)
    Ok(terms.sum(D::Minus1)?)
}

/// The elementwise Bernoulli term x·l − softplus(l) of two contiguous CPU tensors of one shape, as one
/// candle op: a dozen fewer passes over the `(b, D)` decoder output per training step, forward and backward.
pub struct BernoulliTerm;

/// Maps `f` over two contiguous CPU buffers of one shape.
fn zip_map<T: Copy>(
    a: (&[T], &Layout),
    b: (&[T], &Layout),
    f: impl Fn(T, T) -> T,
) -> candle_core::Result<Vec<T>> {
    match (a.1.contiguous_offsets(), b.1.contiguous_offsets()) {
        (Some((a0, a1)), Some((b0, b1))) if a.1.shape() == b.1.shape() => Ok(a.0[a0..a1]
            .iter()
            .zip(&b.0[b0..b1])
            .map(|(&u, &v)| f(u, v))
            .collect()),
        _ => candle_core::bail!("fused Bernoulli op: needs two contiguous tensors of one shape"),
    }
}

/// Applies the closure `$f` elementwise to two CPU storages of one float dtype (f32 or f64).
macro_rules! zip_float {
    ($s1:expr, $l1:expr, $s2:expr, $l2:expr, $f:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                CpuStorage::F32(zip_map((a, $l1), (b, $l2), $f)?)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                CpuStorage::F64(zip_map((a, $l1), (b, $l2), $f)?)
            }
            _ => candle_core::bail!("fused Bernoulli op: needs two f32 or two f64 tensors"),
        }
    };
}

impl CustomOp2 for BernoulliTerm {
    fn name(&self) -> &'static str {
        "bernoulli-log-prob"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        // x·l − max(l, 0) − log(1 + e^−|l|); log rather than log1p: faster, and within 1e-7 where e^−|l| ≪ 1
        let out = zip_float!(s1, l1, s2, l2, |l, x| x * l
            - l.max(0.0)
            - (1.0 + (-l.abs()).exp()).ln());
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        l: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let residual = l.apply_op2_no_bwd(x, &BernoulliResidual)?; // x − σ(l) = ∂/∂l
        let dx = if x.track_op() {
            Some(grad.mul(l)?)
        } else {
            None
        };
        Ok((Some(grad.mul(&residual)?), dx))
    }
}

/// x − σ(l), the derivative of [`BernoulliTerm`] in l.
struct BernoulliResidual;

impl CustomOp2 for BernoulliResidual {
    fn name(&self) -> &'static str {
        "bernoulli-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = zip_float!(s1, l1, s2, l2, |l, x| x - 1.0 / (1.0 + (-l).exp()));
        Ok((out, l1.shape().clone()))
    }
}

/// log N(x; μ, σ²) with σ = exp(log_std) of shape `(D,)`, summed over the last dim: `(…, D)` → `(…)`.
pub fn gaussian_log_prob(mean: &Tensor, log_std: &Tensor, x: &Tensor) -> Result<Tensor> {
    let d = mean.dim(D::Minus1)? as f64;
    let u = x
        .broadcast_sub(mean)?
        .broadcast_mul(&log_std.neg()?.exp()?)?; // (x − μ)/σ, (…, D)
    let norm = (log_std.sum_all()? + d * HALF_LOG_2PI)?; // Σ log σ + D/2 log 2π
    Ok((u.sqr()?.sum(D::Minus1)? * -0.5)?.broadcast_sub(&norm)?)
}

/// log P(x) under the discretized logistic with means `(…, D)` and log-scales `(D,)` over 256 levels in
/// [lo, hi], summed over the last dim. With a = (x + δ − μ)/s and b = (x − δ − μ)/s (so a − b = 2δ/s):
///
/// log(σ(a) − σ(b)) = log σ(a) + log(1 − σ(b)) + log(1 − e^−(a−b)),
///
/// exact and stable for any a, b; the lowest level keeps only log σ(a), the highest only log(1 − σ(b)).
pub fn discretized_logistic_log_prob(
    mean: &Tensor,
    log_scale: &Tensor,
    x: &Tensor,
    lo: f64,
    hi: f64,
) -> Result<Tensor> {
    let half = (hi - lo) / 510.0; // δ: half a bin
    let log_s = log_scale.clamp(LOGISTIC_LOG_SCALE.0, LOGISTIC_LOG_SCALE.1)?; // (D,)
    let inv_s = log_s.neg()?.exp()?;
    let centered = x.broadcast_sub(mean)?; // (…, D)
    let a = (&centered + half)?.broadcast_mul(&inv_s)?;
    let b = (&centered - half)?.broadcast_mul(&inv_s)?;
    let log_cdf_a = softplus(&a.neg()?)?.neg()?; // log σ(a)
    let log_sf_b = softplus(&b)?.neg()?; // log(1 − σ(b))
                                         // log(1 − e^−Δ), Δ = 2δ/s: in f64, where 1 − e^−Δ keeps its digits for the smallest Δ the clamp allows.
    let delta = (inv_s * (2.0 * half))?.to_dtype(DType::F64)?;
    let log_width = ((delta.neg()?.exp()?.neg()? + 1.0)?.log()?).to_dtype(mean.dtype())?; // (D,)
    let above_lowest = x.ge(lo + half)?.to_dtype(mean.dtype())?; // level k > 0
    let below_highest = x.le(hi - half)?.to_dtype(mean.dtype())?; // level k < 255
    let interior = (&above_lowest * &below_highest)?.broadcast_mul(&log_width)?;
    let logp = (log_cdf_a.broadcast_mul(&below_highest)?
        + log_sf_b.broadcast_mul(&above_lowest)?)?
    .broadcast_add(&interior)?;
    Ok(logp.sum(D::Minus1)?)
}

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

    /// One draw from p(x | z) per row of `out` `(n, D)`, noise from `rng`.
    pub fn sample(&self, out: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let (n, d) = out.dims2()?;
        let dev = out.device();
        Ok(match self.kind {
            ObservationKind::Bernoulli => {
                let u = rng.rand((n, d), dev)?;
                u.lt(&candle_nn::ops::sigmoid(out)?)?
                    .to_dtype(out.dtype())?
            }
            ObservationKind::Gaussian => {
                let eps = rng.randn((n, d), dev)?;
                out.broadcast_add(&eps.broadcast_mul(&self.scale()?.exp()?)?)?
            }
            ObservationKind::Logistic { lo, hi } => {
                // inverse CDF: x = μ + s·(log u − log(1 − u)), then the level whose bin holds x
                let s = self
                    .scale()?
                    .clamp(LOGISTIC_LOG_SCALE.0, LOGISTIC_LOG_SCALE.1)?
                    .exp()?;
                let u = rng.rand((n, d), dev)?.clamp(1e-6, 1.0 - 1e-6)?;
                let logit = (u.log()? - (u.neg()? + 1.0)?.log()?)?;
                let x = out.broadcast_add(&logit.broadcast_mul(&s)?)?;
                let level = ((x - lo)? * (255.0 / (hi - lo)))?
                    .round()?
                    .clamp(0.0, 255.0)?;
                ((level * ((hi - lo) / 255.0))? + lo)?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn vec(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
    }

    #[test]
    fn discretized_logistic_sums_to_one_over_256_levels() -> Result<()> {
        let dev = Device::Cpu;
        for (lo, hi) in [(0.0, 1.0), (-1.0, 1.0)] {
            // every level of [lo, hi], as the preprocessing writes it (f32)
            let levels: Vec<f32> = (0..256)
                .map(|k| (lo + (hi - lo) * k as f64 / 255.0) as f32)
                .collect();
            let x = Tensor::from_vec(levels, (256, 1), &dev)?;
            // means at both edges, inside, and outside the range; scales from sharp to flat
            for (mean, log_s) in [
                (lo, -3.0),
                (hi, -3.0),
                (0.3, -5.0),
                (0.5 * (lo + hi), 0.0),
                (hi + 0.7, -2.0),
                (lo - 3.0, 2.0),
                (0.1, -6.5),
            ] {
                let mu = Tensor::full(mean as f32, (256, 1), &dev)?;
                let ls = Tensor::new(&[log_s as f32], &dev)?;
                let logp = vec(&discretized_logistic_log_prob(&mu, &ls, &x, lo, hi)?)?;
                assert!(logp.iter().all(|v| v.is_finite() && *v <= 1e-6));
                let total: f64 = logp.iter().map(|v| v.exp()).sum();
                assert!(
                    (total - 1.0).abs() < 1e-4,
                    "range [{lo}, {hi}], mean {mean}, log s {log_s}: Σ P = {total}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn discretized_logistic_matches_cdf_difference() -> Result<()> {
        // interior level: P = σ((x + δ − μ)/s) − σ((x − δ − μ)/s), computed here in f64
        let dev = Device::Cpu;
        let (mu, s, k) = (0.4f64, 0.05f64, 100.0f64);
        let x = k / 255.0;
        let sig = |t: f64| 1.0 / (1.0 + (-t).exp());
        let want = (sig((x + 1.0 / 510.0 - mu) / s) - sig((x - 1.0 / 510.0 - mu) / s)).ln();
        let got = discretized_logistic_log_prob(
            &Tensor::new(&[[mu as f32]], &dev)?,
            &Tensor::new(&[s.ln() as f32], &dev)?,
            &Tensor::new(&[[x as f32]], &dev)?,
            0.0,
            1.0,
        )?;
        assert!(
            (vec(&got)?[0] - want).abs() < 1e-4,
            "{:?} vs {want}",
            vec(&got)
        );
        Ok(())
    }

    #[test]
    fn bernoulli_log_prob_by_hand() -> Result<()> {
        let dev = Device::Cpu;
        let l = Tensor::new(&[[0f32, 2.0, -3.0, 40.0]], &dev)?;
        let x = Tensor::new(&[[1f32, 0.0, 1.0, 1.0]], &dev)?;
        // log σ(0) + log(1 − σ(2)) + log σ(−3) + log σ(40)
        let want =
            -(2f64.ln()) - (1.0 + 2f64.exp()).ln() - (1.0 + 3f64.exp()).ln() - (-40f64).exp();
        let got = vec(&bernoulli_log_prob(&l, &x)?)?[0];
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        Ok(())
    }

    #[test]
    fn fused_bernoulli_matches_the_composed_formula_and_its_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(4);
        let l = candle_core::Var::from_tensor(&(rng.randn((3, 4, 50), &dev)? * 8.0)?)?;
        let x = rng.rand((4, 50), &dev)?; // broadcast over the 3 samples, values in [0, 1)
        let fused = bernoulli_log_prob(l.as_tensor(), &x)?; // (3, 4)
        let composed = (l.broadcast_mul(&x)? - softplus(l.as_tensor())?)?.sum(D::Minus1)?;
        let (f, c) = (vec(&fused)?, vec(&composed)?);
        assert!(
            f.iter().zip(&c).all(|(a, b)| (a - b).abs() < 1e-3),
            "{f:?} vs {c:?}"
        );
        // ∂/∂l of Σ (x·l − softplus(l)) = x − σ(l)
        let g = fused.sum_all()?.backward()?;
        let got = vec(g
            .get(l.as_tensor())
            .ok_or(Error::Unsupported("no grad".into()))?)?;
        let want = vec(&x.broadcast_sub(&candle_nn::ops::sigmoid(l.as_tensor())?)?)?;
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6));
        Ok(())
    }

    #[test]
    fn gaussian_log_prob_by_hand() -> Result<()> {
        let dev = Device::Cpu;
        let mu = Tensor::new(&[[0f32, 1.0]], &dev)?;
        let log_std = Tensor::new(&[0f32, 2f32.ln()], &dev)?;
        let x = Tensor::new(&[[1f32, 0.0]], &dev)?;
        // N(1; 0, 1)·N(0; 1, 4): −½ − ½·¼ − log 2 − log 2π
        let want = -0.5 - 0.125 - 2f64.ln() - (2.0 * std::f64::consts::PI).ln();
        let got = vec(&gaussian_log_prob(&mu, &log_std, &x)?)?[0];
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        Ok(())
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
