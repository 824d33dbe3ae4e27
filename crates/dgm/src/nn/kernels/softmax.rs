//! Softmax over the last dimension as a CPU kernel with a backward (candle's fast `softmax_last_dim` has
//! none, so gradients would silently stop there).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, D};

use super::isa::simd_dispatch;
use super::math::{dot, exp_approx, max_lanes, sum_lanes};
use super::{cpu_f32, par_filled};
use crate::Result;

/// Softmax over the last dimension with a backward: on the CPU in f32 one parallel pass each way
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

/// Rows per parallel task: about this many elements.
const TASK_ELEMS: usize = 1 << 14;

/// Softmax of each row (of `m`) of `x` into `y`.
#[inline(always)]
fn softmax_rows(x: &[f32], y: &mut [f32], m: usize) {
    for (yr, xr) in y.chunks_exact_mut(m).zip(x.chunks_exact(m)) {
        let max = max_lanes(xr);
        for (yi, &xi) in yr.iter_mut().zip(xr) {
            *yi = exp_approx(xi - max);
        }
        let inv = 1.0 / sum_lanes(yr);
        yr.iter_mut().for_each(|yi| *yi *= inv);
    }
}

simd_dispatch! {
    /// [`softmax_rows`], on the widest vectors [`super::isa::isa`] allows.
    fn softmax_rows_fast(x: &[f32], y: &mut [f32], m: usize) = softmax_rows;
}

/// dS = P ⊙ (dP − rowsum(P ⊙ dP)) · scale, in place in `dp` (rows of `n`): the softmax backward (scaled, for
/// attention's 1/√d).
#[inline(always)]
pub(super) fn softmax_grad_rows(p: &[f32], dp: &mut [f32], n: usize, scale: f32) {
    for (pr, dr) in p.chunks_exact(n).zip(dp.chunks_exact_mut(n)) {
        let s = dot(pr, dr);
        for (d, &p) in dr.iter_mut().zip(pr) {
            *d = p * (*d - s) * scale;
        }
    }
}

simd_dispatch! {
    /// [`softmax_grad_rows`], on the widest vectors [`super::isa::isa`] allows.
    pub(super) fn softmax_grad_rows_fast(p: &[f32], dp: &mut [f32], n: usize, scale: f32) = softmax_grad_rows;
}

/// Elements per parallel task: whole rows of `m`, about [`TASK_ELEMS`].
fn row_block(m: usize) -> usize {
    m * TASK_ELEMS.div_ceil(m).max(1)
}

/// The CPU op behind [`softmax_last_dim`]; backward [`SoftmaxGrad`].
struct SoftmaxOp;

/// The softmax backward as an op on (y, g) → dx. No backward.
struct SoftmaxGrad;

/// The length of the last dimension of a layout (at least 1).
fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1).max(1)
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "dgm-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = cpu_f32(self.name(), s, l)?;
        let m = last_dim(l);
        let block = row_block(m);
        let dst = par_filled(src.len(), block, |i, y| {
            softmax_rows_fast(&src[i * block..i * block + y.len()], y, m)
        });
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxGrad)?))
    }
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "dgm-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, g) = (cpu_f32(self.name(), s1, l1)?, cpu_f32(self.name(), s2, l2)?);
        if y.len() != g.len() {
            candle_core::bail!(
                "{}: {} gradients for {} outputs",
                self.name(),
                g.len(),
                y.len()
            );
        }
        let m = last_dim(l1);
        let block = row_block(m);
        let dx = par_filled(g.len(), block, |i, d| {
            let rows = i * block..i * block + d.len();
            d.copy_from_slice(&g[rows.clone()]);
            softmax_grad_rows_fast(&y[rows], d, m, 1.0);
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
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

    #[test]
    fn every_instruction_set_build_gives_the_same_bits() {
        let (rows, m) = (3, 53); // odd width: vector bodies and scalar tails
        let mut rng = Rng::new(8);
        let x: Vec<f32> = rng.normal_vec(rows * m).iter().map(|v| v * 4.0).collect();
        let g = rng.normal_vec(rows * m);
        crate::nn::kernels::testing::assert_same_bits_on_every_isa("softmax", || {
            let mut y = vec![0f32; rows * m];
            softmax_rows_fast(&x, &mut y, m);
            let mut dx = g.clone();
            softmax_grad_rows_fast(&y, &mut dx, m, 0.5);
            [y, dx].concat()
        });
    }
}
