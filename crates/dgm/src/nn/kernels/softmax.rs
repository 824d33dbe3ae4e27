//! Softmax over the last dimension as a CPU kernel with a backward (candle's fast `softmax_last_dim` has
//! none, so gradients would silently stop there).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use crate::Result;

/// Softmax over the last dimension with a backward: on the CPU in f32 a single-pass custom op
/// (dx = y ⊙ (g − Σ y ⊙ g)), elsewhere candle's composed ops (max-shifted, the max detached: softmax is
/// invariant to the shift, so its gradient is exactly zero).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if crate::nn::use_cpu_kernel(x) {
        return Ok(x.contiguous()?.apply_op1(SoftmaxOp)?);
    }
    softmax_stock(x)
}

/// The reference softmax, composed from candle's ops (any device / dtype).
pub fn softmax_stock(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// The CPU op behind [`softmax_last_dim`].
struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "dgm-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((o1, o2))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("dgm-softmax-last-dim: contiguous f32 CPU tensors only")
        };
        let src = &data[o1..o2];
        let m = l.dims().last().copied().unwrap_or(1).max(1);
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(m)
            .zip(src.par_chunks(m))
            .for_each(|(y, x)| {
                let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for (yi, &xi) in y.iter_mut().zip(x) {
                    *yi = (xi - max).exp();
                    sum += *yi;
                }
                let inv = 1.0 / sum;
                y.iter_mut().for_each(|yi| *yi *= inv);
            });
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let yg_sum = (y * g)?.sum_keepdim(D::Minus1)?; // (…, 1): Σ_j y_j g_j
        Ok(Some((y * g.broadcast_sub(&yg_sum)?)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::rel_err;
    use crate::rng::Rng;
    use crate::Error;
    use candle_core::{Device, Var};

    #[test]
    fn softmax_op_value_and_gradient_match_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Rng::new(6).randn((3, 5, 7), &dev)? * 3.0)?)?;
        let r = Rng::new(7).randn((3, 5, 7), &dev)?;
        // (not via set_stock_ops: it is process-wide and the lib tests run in parallel)
        let run = |stock: bool| -> Result<(Tensor, Tensor)> {
            let y = if stock {
                softmax_stock(x.as_tensor())?
            } else {
                softmax_last_dim(x.as_tensor())?
            };
            let g = (&y * &r)?.sum_all()?.backward()?;
            Ok((
                y,
                g.get(x.as_tensor())
                    .cloned()
                    .ok_or_else(|| Error::Unsupported("no grad".into()))?,
            ))
        };
        let (y, g) = run(false)?;
        let (y2, g2) = run(true)?;
        assert!(rel_err(&y, &y2)? < 1e-6);
        assert!(rel_err(&g, &g2)? < 1e-5);
        // rows sum to one; the gradient of a softmax sums to zero along the row
        let rows = y.sum_keepdim(D::Minus1)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(rows.iter().all(|s| (s - 1.0).abs() < 1e-6));
        let gsum = g
            .sum_keepdim(D::Minus1)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(gsum < 1e-5);
        Ok(())
    }
}
