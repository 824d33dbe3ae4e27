//! The optimiser's CPU kernels, in place on the parameters and moments (no allocation per step):
//!
//! * [`adamw_update_cpu`]: the AdamW update fused into one pass over parameter, gradient and moments,
//!   instead of a dozen whole-tensor ops that each allocate.
//! * [`ema_update_cpu`]: the exponential moving average of the weights.

use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Tensor};
use rayon::prelude::*;

use super::isa::simd_dispatch;
use super::with_cpu_f32;
use crate::Result;

/// One fused AdamW step, in place, for parameters on the CPU:
/// p ← p·(1 − lr·λ) − lr·(m/bc1) / (√(v/bc2) + ε) after m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², g = scale·grad.
pub struct AdamWUpdate<'a> {
    /// The gradient, f32 and contiguous, same length as the parameter.
    pub grad: &'a [f32],
    /// First moment (updated in place).
    pub m: std::sync::Mutex<&'a mut [f32]>,
    /// Second moment (updated in place).
    pub v: std::sync::Mutex<&'a mut [f32]>,
    /// Gradient scale (clipping / accumulation).
    pub scale: f32,
    /// Learning rate.
    pub lr: f32,
    /// β₁, β₂, ε, weight decay λ.
    pub betas_eps_wd: (f32, f32, f32, f32),
    /// Bias corrections 1 − β₁ᵗ, 1 − β₂ᵗ.
    pub bc: (f32, f32),
}

impl InplaceOp1 for AdamWUpdate<'_> {
    fn name(&self) -> &'static str {
        "dgm-adamw"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(p) = storage else {
            candle_core::bail!("dgm-adamw: f32 only")
        };
        let Some((o0, o1)) = layout.contiguous_offsets() else {
            candle_core::bail!("dgm-adamw: contiguous only")
        };
        let p = &mut p[o0..o1];
        let mut m = self
            .m
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
        let mut v = self
            .v
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
        if p.len() != self.grad.len() || m.len() != p.len() || v.len() != p.len() {
            candle_core::bail!("dgm-adamw: length mismatch");
        }
        let (b1, b2, eps, wd) = self.betas_eps_wd;
        let (bc1, bc2) = self.bc;
        let (lr, s) = (self.lr, self.scale);
        let decay = 1.0 - lr * wd;
        let (step, inv_bc2) = (lr / bc1, 1.0 / bc2);
        // elementwise, so splitting into chunks over threads gives the same bits for any thread count
        const CHUNK: usize = 1 << 14;
        p.par_chunks_mut(CHUNK)
            .zip(self.grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                adamw_chunk_fast(p, g, m, v, [s, b1, b2, eps, decay, step, inv_bc2]);
            });
        Ok(())
    }
}

/// The AdamW update of one chunk; `c` = [gradient scale, β₁, β₂, ε, 1 − lr·λ, lr/bc1, 1/bc2]. Multiplies,
/// adds, a square root and a division, each rounded once in every build (no fused multiply-add), so the
/// vector builds give the baseline's bits.
#[inline(always)]
fn adamw_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: [f32; 7]) {
    let [s, b1, b2, eps, decay, step, inv_bc2] = c;
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g * s;
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        *p = *p * decay - step * *m / ((*v * inv_bc2).sqrt() + eps);
    }
}

simd_dispatch! {
    /// [`adamw_chunk`], on the widest vectors [`super::isa::isa`] allows.
    fn adamw_chunk_fast(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: [f32; 7]) = adamw_chunk;
}

/// `e ← d·e + c·w` elementwise (c = 1 − d).
#[inline(always)]
fn ema_chunk(e: &mut [f32], w: &[f32], d: f32, c: f32) {
    for (e, &w) in e.iter_mut().zip(w) {
        *e = d * *e + c * w;
    }
}

simd_dispatch! {
    /// [`ema_chunk`], on the widest vectors [`super::isa::isa`] allows.
    fn ema_chunk_fast(e: &mut [f32], w: &[f32], d: f32, c: f32) = ema_chunk;
}

/// `ema ← d·ema + (1 − d)·w`, in place, for CPU f32 tensors (the EMA of weights).
struct EmaUpdate<'a> {
    w: &'a [f32],
    d: f32,
}

impl InplaceOp1 for EmaUpdate<'_> {
    fn name(&self) -> &'static str {
        "dgm-ema"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(e) = storage else {
            candle_core::bail!("dgm-ema: f32 only")
        };
        let Some((o0, o1)) = layout.contiguous_offsets() else {
            candle_core::bail!("dgm-ema: contiguous only")
        };
        let e = &mut e[o0..o1];
        if e.len() != self.w.len() {
            candle_core::bail!("dgm-ema: length mismatch");
        }
        ema_chunk_fast(e, self.w, self.d, 1.0 - self.d);
        Ok(())
    }
}

/// `ema ← d·ema + (1 − d)·w` in place when both are contiguous f32 CPU tensors; `false` otherwise.
pub fn ema_update_cpu(ema: &Tensor, w: &Tensor, d: f64) -> Result<bool> {
    if !matches!(ema.device(), Device::Cpu) || ema.dtype() != DType::F32 || !ema.is_contiguous() {
        return Ok(false);
    }
    match with_cpu_f32(w, |w| ema.inplace_op1(&EmaUpdate { w, d: d as f32 })) {
        Some(r) => r.map(|_| true).map_err(Into::into),
        None => Ok(false),
    }
}

/// The fused AdamW update of `param` (a CPU f32 tensor) in place; `false` when the fast path does not apply.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update_cpu(
    param: &Tensor,
    grad: &Tensor,
    m: &mut [f32],
    v: &mut [f32],
    scale: f64,
    lr: f64,
    betas_eps_wd: (f64, f64, f64, f64),
    bc: (f64, f64),
) -> Result<bool> {
    if !matches!(param.device(), Device::Cpu)
        || param.dtype() != DType::F32
        || !param.is_contiguous()
    {
        return Ok(false);
    }
    let grad = grad.contiguous()?;
    let (b1, b2, eps, wd) = betas_eps_wd;
    let done = with_cpu_f32(&grad, |g| -> Result<()> {
        let op = AdamWUpdate {
            grad: g,
            m: std::sync::Mutex::new(m),
            v: std::sync::Mutex::new(v),
            scale: scale as f32,
            lr: lr as f32,
            betas_eps_wd: (b1 as f32, b2 as f32, eps as f32, wd as f32),
            bc: (bc.0 as f32, bc.1 as f32),
        };
        Ok(param.inplace_op1(&op)?)
    });
    match done {
        Some(r) => r.map(|_| true),
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::isa::{with_isa, Isa};
    use crate::rng::Rng;

    /// One AdamW chunk and one EMA chunk on every build this CPU runs: the same bits as the baseline's,
    /// and the baseline equal to the update written out in f64 to f32 rounding.
    #[test]
    fn every_build_gives_the_baselines_bits() {
        let n = 1000 + 7; // a tail shorter than any vector
        let mut rng = Rng::new(3);
        let (p0, g) = (rng.normal_vec(n), rng.normal_vec(n));
        let m0 = rng.normal_vec(n);
        let v0: Vec<f32> = rng.normal_vec(n).iter().map(|x| x * x).collect();
        let c = [
            0.5,
            0.9,
            0.999,
            1e-8,
            1.0 - 1e-3 * 0.1,
            1e-3 / 0.19,
            1.0 / 0.002,
        ];
        let run = |isa: Isa| {
            with_isa(isa, || {
                let (mut p, mut m, mut v, mut e) = (p0.clone(), m0.clone(), v0.clone(), m0.clone());
                adamw_chunk_fast(&mut p, &g, &mut m, &mut v, c);
                ema_chunk_fast(&mut e, &p0, 0.99, 1.0 - 0.99);
                [p, m, v, e].map(|x| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
            })
        };
        let base = run(Isa::Baseline);
        for isa in Isa::available() {
            assert_eq!(run(isa), base, "{isa:?}");
        }
        let [s, b1, b2, eps, decay, step, inv_bc2] = c.map(f64::from);
        for i in 0..n {
            let gi = f64::from(g[i]) * s;
            let m = b1 * f64::from(m0[i]) + (1.0 - b1) * gi;
            let v = b2 * f64::from(v0[i]) + (1.0 - b2) * gi * gi;
            let p = f64::from(p0[i]) * decay - step * m / ((v * inv_bc2).sqrt() + eps);
            let got = f64::from(f32::from_bits(base[0][i]));
            assert!(
                (got - p).abs() <= 1e-5 * p.abs().max(1.0),
                "{i}: {got} vs {p}"
            );
        }
    }
}
