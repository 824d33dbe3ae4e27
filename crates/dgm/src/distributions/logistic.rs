//! The discretized logistic distribution over quantized data (Salimans et al. 2017, PixelCNN++): a logistic
//! with mean μ and scale s integrated over each level's bin, the two edge bins open-ended so that the
//! probabilities of all levels sum to one whatever μ and s are. With a = (x + δ − μ)/s and b = (x − δ − μ)/s,
//!
//! log P(x) = log(σ(a) − σ(b)) = log σ(a) + log(1 − σ(b)) + log(1 − e^−(a−b)).
//!
//! [`discretized_logistic_log_prob`] is one logistic per dimension over 256 levels in [lo, hi] (the VAE's
//! decoder, with a fused CPU kernel); [`discretized_logistic_mixture_log_prob`] a mixture of logistics per
//! value over any number of levels in [−1, 1] (PixelCNN++'s output).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, D};

use super::{log_softmax, softplus};
use crate::nn::kernels::cpu_f32;
use crate::rng::Rng;
use crate::Result;

/// The logistic log-scale is clamped to this interval (s from 9·10⁻⁴ to 1100), as in PixelCNN++ (lower end).
pub const LOGISTIC_LOG_SCALE: (f64, f64) = (-7.0, 7.0);

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
            cpu_f32(name, s1, l1)?,
            cpu_f32(name, s2, l2)?,
            cpu_f32(name, s3, l3)?,
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
            cpu_f32(name, s1, l1)?,
            cpu_f32(name, s2, l2)?,
            cpu_f32(name, s3, l3)?,
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

/// One draw per row of `mean` `(n, D)` from the discretized logistic with log-scales `(D,)` over 256 levels
/// in [lo, hi]: the inverse CDF x = μ + s·(log u − log(1 − u)) with u from `rng`, then the level whose bin
/// holds x.
pub fn discretized_logistic_sample(
    mean: &Tensor,
    log_scale: &Tensor,
    lo: f64,
    hi: f64,
    rng: &mut Rng,
) -> Result<Tensor> {
    let s = log_scale
        .clamp(LOGISTIC_LOG_SCALE.0, LOGISTIC_LOG_SCALE.1)?
        .exp()?;
    let u = rng
        .rand(mean.shape(), mean.device())?
        .clamp(1e-6, 1.0 - 1e-6)?;
    let logit = (u.log()? - (u.neg()? + 1.0)?.log()?)?;
    let x = mean.broadcast_add(&logit.broadcast_mul(&s)?)?;
    let level = ((x - lo)? * (255.0 / (hi - lo)))?
        .round()?
        .clamp(0.0, 255.0)?;
    Ok(((level * ((hi - lo) / 255.0))? + lo)?)
}

/// log P(k) per value under a mixture of discretized logistics over `levels` levels in [−1, 1] (level k at
/// t_k = 2k/(levels − 1) − 1, its bin t_k ± δ with δ = 1/(levels − 1), the edge bins open-ended): mixture
/// logits, means and (unclamped) log-scales each hold the m components along `dim`, and the u32 levels `k`
/// have size 1 there. The log-scale is clamped to [`LOGISTIC_LOG_SCALE`]; the mixture is summed with a
/// detached max (log-sum-exp). The result keeps `dim` at size 1. Composed of tensor ops (PixelCNN++'s output;
/// the components of a value are conditioned through the network, not PixelCNN++'s linear colour coupling).
pub fn discretized_logistic_mixture_log_prob(
    logit: &Tensor,
    mu: &Tensor,
    log_scale: &Tensor,
    k: &Tensor,
    levels: usize,
    dim: usize,
) -> Result<Tensor> {
    let kf = k.to_dtype(DType::F32)?;
    let top = (levels - 1) as f64;
    let half = 1.0 / top; // δ: half a bin in [−1, 1]
    let t = ((&kf * (2.0 / top))? - 1.0)?;
    let log_s = log_scale.clamp(LOGISTIC_LOG_SCALE.0, LOGISTIC_LOG_SCALE.1)?;
    let inv_s = log_s.neg()?.exp()?;
    let centred = t.broadcast_sub(mu)?;
    let a = ((&centred + half)? * &inv_s)?;
    let bb = ((&centred - half)? * &inv_s)?;
    let log_cdf_a = softplus(&a.neg()?)?.neg()?; // log σ(a)
    let log_sf_b = softplus(&bb)?.neg()?; // log(1 − σ(b))
    let log_width = log1mexp(&(&inv_s * (2.0 * half))?)?; // log(1 − e^−(a−b))
    let above_lowest = k.gt(0u32)?.to_dtype(DType::F32)?;
    let below_highest = k.lt(levels as u32 - 1)?.to_dtype(DType::F32)?;
    let interior = (&above_lowest * &below_highest)?;
    // log(σ(a) − σ(b)) = log σ(a) + log(1 − σ(b)) + log(1 − e^−(a−b)); edge bins are open-ended
    let comp = ((log_cdf_a.broadcast_mul(&below_highest)?
        + log_sf_b.broadcast_mul(&above_lowest)?)?
        + log_width.broadcast_mul(&interior)?)?;
    let joint = (log_softmax(logit, dim)? + comp)?;
    let max = joint.max_keepdim(dim)?.detach();
    Ok((joint.broadcast_sub(&max)?.exp()?.sum_keepdim(dim)?.log()? + max)?)
}

/// log(1 − e^−Δ) for Δ > 0: the series log Δ − Δ/2 + Δ²/24 below 0.01 (where 1 − e^−Δ loses digits in f32),
/// the direct formula above. Each branch sees its input clamped to its own side, so neither makes NaN
/// gradients for the other.
fn log1mexp(delta: &Tensor) -> Result<Tensor> {
    const CUT: f64 = 0.01;
    let small = delta.clamp(1e-30, CUT)?;
    let series = ((small.log()? - (&small * 0.5)?)? + (small.sqr()? / 24.0)?)?;
    let big = delta.maximum(CUT)?;
    let direct = ((big.neg()?.exp()?.neg()? + 1.0)?).log()?;
    Ok(delta.lt(CUT)?.where_cond(&series, &direct)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use candle_core::Device;

    fn vec(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
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
    fn log1mexp_matches_f64() -> Result<()> {
        let ds: Vec<f32> = (0..60)
            .map(|i| 1e-6f32 * 10f32.powf(i as f32 / 8.0))
            .collect();
        let got = log1mexp(&Tensor::new(ds.as_slice(), &Device::Cpu)?)?.to_vec1::<f32>()?;
        for (d, g) in ds.iter().zip(got) {
            let want = (-(-(*d as f64)).exp_m1()).ln();
            assert!(
                (g as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
                "Δ = {d}: {g} vs {want}"
            );
        }
        Ok(())
    }
}
