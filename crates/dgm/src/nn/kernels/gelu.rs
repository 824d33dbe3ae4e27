//! The exact GELU x·Φ(x) (Hendrycks & Gimpel 2016; PyTorch's `nn.GELU()` default) as CPU kernels: [`gelu`]
//! elementwise, and [`gelu_linear`], a linear layer whose input goes through the GELU inside the kernel (the
//! transformer MLP's second projection, so the activation is never a node of the graph).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::sgemm;
use super::isa::simd_dispatch;
use super::linear::{fill_rows, linear, row_split_input_grad, row_split_param_grads, Activation};
use super::math::{exp_approx, mul};
use super::{cpu_f32, par_filled_pair, par_rows, to_candle, with_data};
use crate::Result;

/// (Φ(x), φ(x)), the standard normal CDF and density, sharing e^(−x²/2): Φ(x) = (1 + erf(x/√2))/2 with erf by
/// Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e−7; the approximation PyTorch's vectorised CPU `erf` uses
/// too).
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    let e = exp_approx(-a * a); // e^(−x²/2)
    let erf = (1.0 - poly * e).copysign(z);
    (0.5 * (1.0 + erf), INV_SQRT_2PI * e)
}

/// GELU(x) = x·Φ(x).
#[inline(always)]
fn gelu_f32(x: f32) -> f32 {
    x * normal_cdf_pdf(x).0
}

/// (GELU(x), GELU′(x)) with GELU′(x) = Φ(x) + x·φ(x).
#[inline(always)]
fn gelu_and_grad_f32(x: f32) -> (f32, f32) {
    let (cdf, pdf) = normal_cdf_pdf(x);
    (x * cdf, cdf + x * pdf)
}

/// The exact GELU x·Φ(x) (PyTorch's `nn.GELU()` default): dgm's CPU kernel (erf to ≤ 1.5e−7) on f32 CPU
/// tensors, candle's `gelu_erf` elsewhere.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if crate::nn::use_cpu_kernel(x) {
        Ok(x.contiguous()?.apply_op1(GeluOp)?)
    } else {
        Ok(x.gelu_erf()?)
    }
}

/// Elements per parallel task of the elementwise kernels.
const ELEM_TASK: usize = 1 << 14;

/// y = GELU(x) elementwise.
#[inline(always)]
fn gelu_chunk(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = gelu_f32(x);
    }
}

/// dx = g · GELU′(x) elementwise.
#[inline(always)]
fn gelu_grad_chunk(x: &[f32], g: &[f32], dx: &mut [f32]) {
    for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
        *d = g * gelu_and_grad_f32(x).1;
    }
}

/// a = GELU(z) and d = GELU′(z) elementwise, from one evaluation of Φ and φ (the same bits as
/// [`gelu_chunk`] and the factor in [`gelu_grad_chunk`]).
#[inline(always)]
fn gelu_and_grad_chunk(z: &[f32], a: &mut [f32], d: &mut [f32]) {
    for ((a, d), &z) in a.iter_mut().zip(d.iter_mut()).zip(z) {
        (*a, *d) = gelu_and_grad_f32(z);
    }
}

simd_dispatch! {
    /// [`gelu_and_grad_chunk`], on the widest vectors [`super::isa::isa`] allows.
    fn gelu_and_grad_chunk_fast(z: &[f32], a: &mut [f32], d: &mut [f32]) = gelu_and_grad_chunk;
}

simd_dispatch! {
    /// [`gelu_chunk`], on the widest vectors [`super::isa::isa`] allows.
    fn gelu_chunk_fast(x: &[f32], y: &mut [f32]) = gelu_chunk;
}

simd_dispatch! {
    /// [`gelu_grad_chunk`], on the widest vectors [`super::isa::isa`] allows.
    fn gelu_grad_chunk_fast(x: &[f32], g: &[f32], dx: &mut [f32]) = gelu_grad_chunk;
}

/// The CPU op behind [`gelu`].
struct GeluOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "dgm-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(self.name(), s, l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ELEM_TASK)
            .zip(x.par_chunks(ELEM_TASK))
            .for_each(|(y, x)| gelu_chunk_fast(x, y));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let name = "dgm-gelu backward";
        let dx = with_data(name, x, |x| {
            with_data(name, grad, |g| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(ELEM_TASK)
                    .zip(x.par_chunks(ELEM_TASK))
                    .zip(g.par_chunks(ELEM_TASK))
                    .for_each(|((d, x), g)| gelu_grad_chunk_fast(x, g, d));
                dx
            })
        })
        .and_then(|r| r)
        .map_err(to_candle)?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// `GELU(z) Wᵀ + b` for `z: (m, in)`, `W: (out, in)`, `b: (out,)` — the MLP's second projection with the
/// activation folded in: one dgm kernel on f32 CPU tensors (GELU(z) is not kept: the backward recomputes it
/// together with GELU′(z), which scales dz, in one pass), [`gelu`] then [`linear`] elsewhere.
pub fn gelu_linear(z: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if crate::nn::use_cpu_kernel(z) && z.rank() == 2 {
        return Ok(z
            .contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, GeluLinearOp)?);
    }
    linear(&gelu(z)?, w, b, Activation::Identity)
}

/// The CPU op behind [`gelu_linear`]: `(z, W, b)`.
struct GeluLinearOp;

impl CustomOp3 for GeluLinearOp {
    fn name(&self) -> &'static str {
        "dgm-gelu-linear"
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
        let (z, w, b) = (
            cpu_f32(name, s1, l1)?,
            cpu_f32(name, s2, l2)?,
            cpu_f32(name, s3, l3)?,
        );
        let (m, k) = l1.shape().dims2()?;
        let (n, kw) = l2.shape().dims2()?;
        if kw != k || b.len() != n {
            candle_core::bail!(
                "{name}: z {:?}, W {:?}, b {}",
                l1.dims(),
                l2.dims(),
                b.len()
            );
        }
        // y (m × n) = b + GELU(z) (m × k) · Wᵀ (k × n), GELU of each block of rows computed by its thread
        let y = par_rows(m, n, |r0, y| {
            let r = y.len() / n;
            let mut a = vec![0f32; r * k];
            gelu_chunk_fast(&z[r0 * k..(r0 + r) * k], &mut a);
            let y = fill_rows(y, b);
            sgemm((r, n, k), y, n, true, &a, (k, 1), w, (1, k), false);
            y
        });
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        z: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (m, k) = z.dims2()?;
        let n = w.dim(0)?;
        let name = "dgm-gelu-linear backward";
        let (dz, dw, db) = with_data(name, z, |z| {
            with_data(name, w, |w| {
                with_data(name, grad, |g| {
                    // a = GELU(z) and GELU′(z) in one pass (the forward kept neither: only z is saved)
                    // (each chunk zeroed by the thread that fills it, not by one serial memset)
                    let (a, slope) = par_filled_pair(m * k, ELEM_TASK, |i, a, d| {
                        gelu_and_grad_chunk_fast(&z[i * ELEM_TASK..i * ELEM_TASK + a.len()], a, d)
                    });
                    let (dw, db) = row_split_param_grads(&a, g, (m, n, k));
                    drop(a);
                    // dz (m × k) = (g (m × n) · W (n × k)) ⊙ GELU′(z)
                    let dz = row_split_input_grad(g, w, (m, n, k), |r0, d| {
                        mul(d, &slope[r0 * k..r0 * k + d.len()])
                    });
                    (dz, dw, db)
                })
            })
        })
        .and_then(|r| r)
        .and_then(|r| r)
        .map_err(to_candle)?;
        let dev = z.device();
        let dz = z
            .track_op()
            .then(|| Tensor::from_vec(dz, (m, k), dev))
            .transpose()?;
        Ok((
            dz,
            Some(Tensor::from_vec(dw, (n, k), dev)?),
            Some(Tensor::from_vec(db, n, dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::testing::{assert_close, value_and_grads};
    use crate::rng::Rng;
    use candle_core::Device;

    #[test]
    fn every_instruction_set_build_gives_the_same_bits() {
        let mut rng = Rng::new(9);
        let x: Vec<f32> = rng.normal_vec(101).iter().map(|v| v * 4.0).collect();
        let g = rng.normal_vec(101);
        crate::nn::kernels::testing::assert_same_bits_on_every_isa("gelu", || {
            let (mut y, mut dx) = (vec![0f32; 101], vec![0f32; 101]);
            gelu_chunk_fast(&x, &mut y);
            gelu_grad_chunk_fast(&x, &g, &mut dx);
            let (mut a, mut slope) = (vec![0f32; 101], vec![0f32; 101]);
            gelu_and_grad_chunk_fast(&x, &mut a, &mut slope);
            // the fused pass gives the separate passes' bits
            assert_eq!(a, y);
            let scaled: Vec<f32> = g.iter().zip(&slope).map(|(g, s)| g * s).collect();
            assert_eq!(scaled, dx);
            [y, dx, slope].concat()
        });
    }

    #[test]
    fn gelu_kernel_matches_candle_gelu_erf() -> Result<()> {
        let dev = Device::Cpu;
        let x = (Rng::new(7).randn((50, 401), &dev)? * 3.0)?;
        let r = Rng::new(8).randn((50, 401), &dev)?;
        let ours = value_and_grads(|t| gelu(&t[0]), std::slice::from_ref(&x), &r)?;
        let stock = value_and_grads(|t| Ok(t[0].gelu_erf()?), std::slice::from_ref(&x), &r)?;
        // candle's backward rounds 1/√(2π) to 0.398942 (relative 7e-7)
        assert_close(&ours, &stock, &["y", "dx"], 2e-6, "gelu")?;
        // known values: GELU(0) = 0, GELU(x) → x for large x, → 0 for very negative x; Φ(1) = 0.841344746
        let v = Tensor::new(&[0f32, 1.0, 8.0, -8.0, -1.0], &dev)?;
        let y = gelu(&v)?.to_vec1::<f32>()?;
        let want = [0.0, 0.841_344_7, 8.0, 0.0, -0.158_655_3];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
        Ok(())
    }

    #[test]
    fn gelu_linear_kernel_matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        // (300, 100): 30 000 elements, a full element task and a shorter last one
        for (m, k, n, seed) in [
            (1, 3, 2, 1),
            (70, 64, 16, 2),
            (300, 100, 24, 4),
            (768, 512, 128, 3),
        ] {
            let mut rng = Rng::new(seed);
            let z = (rng.randn((m, k), &dev)? * 2.0)?;
            let (w, b) = (rng.randn((n, k), &dev)?, rng.randn(n, &dev)?);
            let r = rng.randn((m, n), &dev)?;
            let inputs = [z, w, b];
            let ours = value_and_grads(|t| gelu_linear(&t[0], &t[1], &t[2]), &inputs, &r)?;
            let stock = value_and_grads(
                |t| Ok(t[0].gelu_erf()?.matmul(&t[1].t()?)?.broadcast_add(&t[2])?),
                &inputs,
                &r,
            )?;
            assert_close(
                &ours,
                &stock,
                &["y", "dz", "dW", "db"],
                1e-5,
                &format!("({m}, {k}) → {n}"),
            )?;
        }
        Ok(())
    }
}
