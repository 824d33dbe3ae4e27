//! Nearest-neighbour 2× upsampling of NCHW tensors (a UNet's decoder), forward and backward as one
//! parallel pass each: the backward sums each 2×2 block of the gradient. candle's stock route — a broadcast
//! and a reshape — copies through a strided view forward and reduces over two strided axes on one thread
//! backward.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_f32;
use crate::Result;

/// `(b, c, h, w)` → `(b, c, 2h, 2w)`, every value repeated in a 2×2 block.
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    if crate::nn::use_cpu_kernel(x) {
        x.dims4()?;
        Ok(x.contiguous()?.apply_op1(Upsample2x)?)
    } else {
        upsample2x_stock(x)
    }
}

/// The reference: a broadcast over 2×2 copies, whose backward is a plain sum over them (candle's
/// `upsample_nearest2d` runs a grouped convolution per channel backward).
pub fn upsample2x_stock(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    Ok(x.reshape((b, c, h, 1, w, 1))? // (b, c, h, 1, w, 1)
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))?) // (b, c, 2h, 2w)
}

/// Planes of `w` columns handed to one rayon task at least (small planes are grouped).
const MIN_TASK: usize = 16 * 1024;

/// The op behind [`upsample2x`]; backward [`Sum2x2`].
struct Upsample2x;
/// Sums of the 2×2 blocks of `(b, c, 2h, 2w)` → `(b, c, h, w)`. No backward.
struct Sum2x2;

/// Rows of `w` input values per rayon task: whole planes, about [`MIN_TASK`] values at least.
fn task_rows(h: usize, w: usize) -> usize {
    let plane = (h * w).max(1);
    h.max(1) * MIN_TASK.div_ceil(plane).max(1)
}

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "dgm-upsample2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(self.name(), s, l)?;
        let (b, c, h, w) = l.shape().dims4()?;
        let rows = task_rows(h, w);
        let mut y = vec![0f32; x.len() * 4];
        if w > 0 {
            y.par_chunks_mut(rows * 4 * w)
                .zip(x.par_chunks(rows * w))
                .for_each(|(yo, xi)| {
                    for (pair, src) in yo.chunks_exact_mut(4 * w).zip(xi.chunks_exact(w)) {
                        let (top, bottom) = pair.split_at_mut(2 * w);
                        for (d, &v) in top.chunks_exact_mut(2).zip(src) {
                            d[0] = v;
                            d[1] = v;
                        }
                        bottom.copy_from_slice(top);
                    }
                });
        }
        Ok((CpuStorage::F32(y), Shape::from((b, c, 2 * h, 2 * w))))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Sum2x2)?))
    }
}

impl CustomOp1 for Sum2x2 {
    fn name(&self) -> &'static str {
        "dgm-sum2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = cpu_f32(self.name(), s, l)?;
        let (b, c, h2, w2) = l.shape().dims4()?;
        if h2 % 2 != 0 || w2 % 2 != 0 {
            candle_core::bail!(
                "{}: needs even height and width, got {h2}×{w2}",
                self.name()
            );
        }
        let (h, w) = (h2 / 2, w2 / 2);
        let rows = task_rows(h, w);
        let mut dx = vec![0f32; g.len() / 4];
        if w > 0 {
            dx.par_chunks_mut(rows * w)
                .zip(g.par_chunks(rows * 4 * w))
                .for_each(|(d, gi)| {
                    for (out, pair) in d.chunks_exact_mut(w).zip(gi.chunks_exact(4 * w)) {
                        let (top, bottom) = pair.split_at(2 * w);
                        for ((o, t), u) in out
                            .iter_mut()
                            .zip(top.chunks_exact(2))
                            .zip(bottom.chunks_exact(2))
                        {
                            // the order of the broadcast's sum: (top-left + top-right) + (bottom-left + bottom-right)
                            *o = (t[0] + t[1]) + (u[0] + u[1]);
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(dx), Shape::from((b, c, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::testing::{assert_close, value_and_grads};
    use crate::rng::Rng;
    use candle_core::Device;

    #[test]
    fn matches_the_broadcast_forward_and_backward() -> Result<()> {
        for (shape, seed) in [([2, 3, 5, 7], 1), ([1, 1, 1, 1], 2), ([3, 2, 64, 3], 3)] {
            let x = Rng::new(seed).randn(shape.to_vec(), &Device::Cpu)?;
            let (b, c, h, w) = x.dims4()?;
            let r = Rng::new(seed + 10).randn((b, c, 2 * h, 2 * w), &Device::Cpu)?;
            let ours = value_and_grads(|t| upsample2x(&t[0]), std::slice::from_ref(&x), &r)?;
            let stock = value_and_grads(|t| upsample2x_stock(&t[0]), &[x], &r)?;
            assert_close(&ours, &stock, &["y", "dx"], 1e-6, "upsample2x")?;
        }
        Ok(())
    }

    #[test]
    fn empty_inputs_and_odd_gradients_do_not_panic() -> Result<()> {
        let x = Tensor::zeros((2, 0, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
        assert_eq!(upsample2x(&x)?.dims(), [2, 0, 6, 6]);
        let odd = Tensor::zeros((1, 1, 3, 4), candle_core::DType::F32, &Device::Cpu)?;
        assert!(odd.apply_op1_no_bwd(&Sum2x2).is_err());
        assert!(upsample2x(&Tensor::zeros(
            (2, 3),
            candle_core::DType::F32,
            &Device::Cpu
        )?)
        .is_err());
        Ok(())
    }
}
