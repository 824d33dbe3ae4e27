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

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
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
/// For f32 tensors on the CPU with a `(D,)` log-scale this is one fused pass each way
/// ([`DiscretizedLogisticTerm`]); otherwise it is composed of tensor ops.
pub fn discretized_logistic_log_prob(
    mean: &Tensor,
    log_scale: &Tensor,
    x: &Tensor,
    lo: f64,
    hi: f64,
) -> Result<Tensor> {
    let d = mean.dim(D::Minus1)?;
    let fused = mean.device().is_cpu()
        && [mean, log_scale, x].iter().all(|t| t.dtype() == DType::F32)
        && log_scale.dims() == [d];
    if !fused {
        return composed_discretized_logistic_log_prob(mean, log_scale, x, lo, hi);
    }
    let shape = mean
        .shape()
        .broadcast_shape_binary_op(x.shape(), "discretized-logistic")?;
    let mean = mean.broadcast_as(&shape)?.contiguous()?;
    // data shaped like the trailing dims (the (b, D) batch against (s, b, D) outputs) is read cyclically
    let x = if shape.dims().ends_with(x.dims()) {
        x.contiguous()?
    } else {
        x.broadcast_as(&shape)?.contiguous()?
    };
    let op = DiscretizedLogisticTerm::new(lo, hi);
    Ok(mean.apply_op3(&log_scale.contiguous()?, &x, op)?)
}

/// [`discretized_logistic_log_prob`] composed of candle tensor ops, for any device and float dtype.
fn composed_discretized_logistic_log_prob(
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

/// The discretized logistic log-probability of f32 CPU tensors as one candle op over
/// (mean `(…, D)`, log-scale `(D,)`, data), summed over D: `(…)`. The mean must be contiguous, the data
/// contiguous with the mean's trailing dims (it repeats over the leading ones). Replaces about 25 passes
/// over the decoder output each way; the backward pass (`DiscretizedLogisticGrad`) gives the mean and the
/// log-scale their gradients (the log-scale's summed over the leading dims, zero where it is clamped, as
/// the composed clamp does), the data none.
pub struct DiscretizedLogisticTerm {
    half: f64,
    /// x ≥ this: level k > 0 (the threshold the composed version compares against, in f32).
    above_lowest: f32,
    /// x ≤ this: level k < 255.
    below_highest: f32,
}

impl DiscretizedLogisticTerm {
    /// The op for 256 levels in [lo, hi].
    pub fn new(lo: f64, hi: f64) -> Self {
        let half = (hi - lo) / 510.0;
        Self {
            half,
            above_lowest: (lo + half) as f32,
            below_highest: (hi - half) as f32,
        }
    }

    /// (a, b) = ((x − μ + δ)/s, (x − μ − δ)/s) and which of the two CDF terms the level keeps.
    #[inline(always)]
    fn parts(&self, mu: f32, x: f32, inv_s: f32) -> (f32, f32, bool, bool) {
        let c = x - mu;
        let half = self.half as f32;
        (
            (c + half) * inv_s,
            (c - half) * inv_s,
            x <= self.below_highest,
            x >= self.above_lowest,
        )
    }
}

/// Per-dimension constants of the discretized logistic, from the (unclamped) log-scales.
struct LogisticDims {
    /// 1/s = e^−clamp(ls).
    inv_s: Vec<f32>,
    /// log(1 − e^−Δ), Δ = 2δ/s: the interior levels' width term.
    log_width: Vec<f32>,
    /// ∂ log(1 − e^−Δ) / ∂ log s = −Δ/(e^Δ − 1).
    dlog_width: Vec<f32>,
    /// The clamp's gradient: 1 inside the interval, ½ on its ends (candle's maximum / minimum split ties),
    /// 0 outside.
    clamp_grad: Vec<f32>,
}

impl LogisticDims {
    fn new(log_scale: &[f32], half: f64) -> Self {
        let (lo, hi) = LOGISTIC_LOG_SCALE;
        let n = log_scale.len();
        let mut dims = Self {
            inv_s: Vec::with_capacity(n),
            log_width: Vec::with_capacity(n),
            dlog_width: Vec::with_capacity(n),
            clamp_grad: Vec::with_capacity(n),
        };
        for &ls in log_scale {
            let ls = f64::from(ls);
            let inv_s = (-ls.clamp(lo, hi)).exp();
            let delta = 2.0 * half * inv_s;
            dims.inv_s.push(inv_s as f32);
            dims.log_width.push((-(-delta).exp_m1()).ln() as f32);
            dims.dlog_width.push((-delta / delta.exp_m1()) as f32);
            dims.clamp_grad.push(if ls > lo && ls < hi {
                1.0
            } else if ls == lo || ls == hi {
                0.5
            } else {
                0.0
            });
        }
        dims
    }
}

/// The contiguous f32 data of a CPU storage.
fn f32_data<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => candle_core::bail!("{op}: needs contiguous f32 tensors"),
    }
}

/// Checks the shapes of (mean `(…, D)`, data repeating over the mean's leading dims, log-scale `(D,)`)
/// and returns D.
fn logistic_dim(
    mean: &Layout,
    x: &Layout,
    log_scale: &[f32],
    op: &str,
) -> candle_core::Result<usize> {
    let dims = mean.dims();
    let d = dims.last().copied().unwrap_or(0);
    if d == 0
        || log_scale.len() != d
        || !dims.ends_with(x.dims())
        || !x.shape().elem_count().is_multiple_of(d)
    {
        candle_core::bail!(
            "{op}: mean {:?}, log-scale ({},), data {:?} do not fit",
            dims,
            log_scale.len(),
            x.dims()
        );
    }
    Ok(d)
}

impl CustomOp3 for DiscretizedLogisticTerm {
    fn name(&self) -> &'static str {
        "discretized-logistic-log-prob"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (mean, ls, x) = (
            f32_data(s1, l1, name)?,
            f32_data(s2, l2, name)?,
            f32_data(s3, l3, name)?,
        );
        let d = logistic_dim(l1, l3, ls, name)?;
        let dims = LogisticDims::new(ls, self.half);
        let out = mean
            .chunks_exact(d)
            .zip(x.chunks_exact(d).cycle())
            .map(|(mu_row, x_row)| {
                let mut acc = 0f64;
                for j in 0..d {
                    let (a, b, keep_a, keep_b) = self.parts(mu_row[j], x_row[j], dims.inv_s[j]);
                    // log σ(a) = min(a, 0) − log(1 + e^−|a|), log(1 − σ(b)) = min(−b, 0) − log(1 + e^−|b|):
                    // the two logs of numbers in [1, 2] taken as one
                    let (mut t, mut tails) = (0f32, 1f32);
                    if keep_a {
                        t += a.min(0.0);
                        tails *= 1.0 + (-a.abs()).exp();
                    }
                    if keep_b {
                        t += (-b).min(0.0);
                        tails *= 1.0 + (-b.abs()).exp();
                    }
                    if keep_a && keep_b {
                        t += dims.log_width[j];
                    }
                    acc += f64::from(t - tails.ln());
                }
                acc as f32
            })
            .collect();
        let lead = &l1.dims()[..l1.dims().len() - 1];
        Ok((CpuStorage::F32(out), Shape::from(lead)))
    }

    fn bwd(
        &self,
        mean: &Tensor,
        log_scale: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = log_scale.elem_count();
        let op = DiscretizedLogisticGrad {
            term: DiscretizedLogisticTerm {
                half: self.half,
                above_lowest: self.above_lowest,
                below_highest: self.below_highest,
            },
            dims: LogisticDims::new(&log_scale.to_vec1::<f32>()?, self.half),
        };
        let packed = mean.apply_op3_no_bwd(x, &grad.contiguous()?, &op)?; // (N + D,)
        let n = mean.elem_count();
        let d_mean = packed.narrow(0, 0, n)?.reshape(mean.shape())?;
        let d_log_scale = packed.narrow(0, n, d)?;
        Ok((Some(d_mean), Some(d_log_scale), None))
    }
}

/// The backward pass of [`DiscretizedLogisticTerm`] over (mean `(…, D)`, data, upstream gradient `(…)`),
/// packed into one flat `(N + D,)` tensor: g·∂/∂μ for the N means, then Σ g·∂/∂ log s for the D log-scales.
///
/// ∂/∂μ = (σ(b)·[k > 0] − σ(−a)·[k < 255]) / s;
/// ∂/∂ log s = (−a·σ(−a)·[k < 255] + b·σ(b)·[k > 0] − [0 < k < 255]·Δ/(e^Δ − 1)) · clamp′.
struct DiscretizedLogisticGrad {
    term: DiscretizedLogisticTerm,
    dims: LogisticDims,
}

impl CustomOp3 for DiscretizedLogisticGrad {
    fn name(&self) -> &'static str {
        "discretized-logistic-log-prob-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (mean, x, grad) = (
            f32_data(s1, l1, name)?,
            f32_data(s2, l2, name)?,
            f32_data(s3, l3, name)?,
        );
        let d = logistic_dim(l1, l2, &self.dims.inv_s, name)?;
        let n = mean.len();
        if grad.len() * d != n {
            candle_core::bail!("{name}: {} gradients for {n} means", grad.len());
        }
        let dims = &self.dims;
        let mut out = Vec::with_capacity(n + d);
        let mut d_log_scale = vec![0f64; d];
        for ((mu_row, x_row), &g) in mean
            .chunks_exact(d)
            .zip(x.chunks_exact(d).cycle())
            .zip(grad)
        {
            for j in 0..d {
                let inv_s = dims.inv_s[j];
                let (a, b, keep_a, keep_b) = self.term.parts(mu_row[j], x_row[j], inv_s);
                let (mut d_mu, mut d_ls) = (0f32, 0f32);
                if keep_a {
                    let sig_neg_a = 1.0 / (1.0 + a.exp()); // σ(−a)
                    d_mu -= sig_neg_a;
                    d_ls -= a * sig_neg_a;
                }
                if keep_b {
                    let sig_b = 1.0 / (1.0 + (-b).exp()); // σ(b)
                    d_mu += sig_b;
                    d_ls += b * sig_b;
                }
                if keep_a && keep_b {
                    d_ls += dims.dlog_width[j];
                }
                out.push(g * d_mu * inv_s);
                d_log_scale[j] += f64::from(g * d_ls);
            }
        }
        out.extend(
            d_log_scale
                .iter()
                .zip(&dims.clamp_grad)
                .map(|(v, c)| *v as f32 * c),
        );
        Ok((CpuStorage::F32(out), Shape::from(n + d)))
    }
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
                let fused = discretized_logistic_log_prob(&mu, &ls, &x, lo, hi)?; // fused CPU op
                let composed = composed_discretized_logistic_log_prob(&mu, &ls, &x, lo, hi)?;
                assert!(max_rel_err(&fused, &composed, 1.0)? < 1e-5);
                let logp = vec(&fused)?;
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

    /// Largest |got − want| / max(|want|, floor) over two tensors of one shape.
    fn max_rel_err(got: &Tensor, want: &Tensor, floor: f64) -> Result<f64> {
        let (g, w) = (vec(got)?, vec(want)?);
        assert_eq!(g.len(), w.len());
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        Ok(g.iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs() / b.abs().max(floor))
            .fold(0.0, f64::max))
    }

    #[test]
    fn fused_discretized_logistic_matches_the_composed_op_and_its_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(7);
        let (s, b, d) = (3, 4, 64);
        for (lo, hi) in [(0.0, 1.0), (-1.0, 1.0)] {
            // data: random levels, with every 4th value forced to an edge level (k = 0 or 255)
            let x: Vec<f32> = (0..b * d)
                .map(|i| {
                    let k = match i % 8 {
                        0 => 0,
                        4 => 255,
                        _ => rng.below(256),
                    };
                    (lo + (hi - lo) * k as f64 / 255.0) as f32
                })
                .collect();
            let x = Tensor::from_vec(x, (b, d), &dev)?;
            // means around the range, and far outside it (×20 on a quarter of the dims)
            let far = Tensor::from_vec(
                (0..d)
                    .map(|j| if j % 4 == 1 { 20f32 } else { 1.0 })
                    .collect::<Vec<_>>(),
                d,
                &dev,
            )?;
            let mean = (rng.randn((s, b, d), &dev)? * (0.6 * (hi - lo)))?
                .broadcast_mul(&far)?
                .broadcast_add(&Tensor::new(0.5 * (lo + hi) as f32, &dev)?)?;
            // log-scales from sharp to flat, some clamped (beyond and exactly at the ends of [−7, 7])
            let mut ls = ((rng.rand(d, &dev)? * 8.0)? - 6.5)?.to_vec1::<f32>()?;
            ls[..6].copy_from_slice(&[-9.0, 8.5, -7.0, 7.0, -6.9, 6.5]);
            let mean = candle_core::Var::from_tensor(&mean)?;
            let ls = candle_core::Var::from_vec(ls, d, &dev)?;
            let weights = rng.rand((s, b), &dev)?; // a non-uniform upstream gradient

            let fused =
                discretized_logistic_log_prob(mean.as_tensor(), ls.as_tensor(), &x, lo, hi)?;
            let composed = composed_discretized_logistic_log_prob(
                mean.as_tensor(),
                ls.as_tensor(),
                &x,
                lo,
                hi,
            )?;
            assert_eq!(fused.dims(), &[s, b]);
            let err = max_rel_err(&fused, &composed, 1.0)?;
            assert!(err < 1e-5, "[{lo}, {hi}] log p: relative error {err}");

            let grads = |logp: &Tensor| -> Result<(Tensor, Tensor)> {
                let g = (logp * &weights)?.sum_all()?.backward()?;
                let get = |v: &candle_core::Var| {
                    g.get(v.as_tensor())
                        .cloned()
                        .ok_or(Error::Unsupported("no grad".into()))
                };
                Ok((get(&mean)?, get(&ls)?))
            };
            let (fused_mean, fused_ls) = grads(&fused)?;
            let (composed_mean, composed_ls) = grads(&composed)?;
            assert_eq!(fused_ls.dims(), &[d]);
            // the mean's gradient is a difference of two sigmoids over s: compare on the scale of 1/s
            let inv_s = ls.as_tensor().clamp(-7.0, 7.0)?.neg()?.exp()?;
            let scaled = |t: &Tensor| t.broadcast_div(&inv_s);
            let err = max_rel_err(&scaled(&fused_mean)?, &scaled(&composed_mean)?, 1e-2)?;
            assert!(err < 1e-4, "[{lo}, {hi}] ∂/∂μ: relative error {err}");
            let err = max_rel_err(&fused_ls, &composed_ls, 1e-2)?;
            assert!(err < 1e-4, "[{lo}, {hi}] ∂/∂ log s: relative error {err}");
            // clamped log-scales get no gradient, those at the ends of the clamp half of it
            let g = vec(&fused_ls)?;
            assert_eq!((g[0], g[1]), (0.0, 0.0));
            assert!(g[2] != 0.0 && g[3] != 0.0);
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
