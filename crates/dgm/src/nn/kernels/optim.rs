//! The optimiser's CPU kernels, in place on the parameters and moments (no allocation per step):
//!
//! * [`adamw_update_cpu`]: the AdamW update fused into one pass over parameter, gradient and moments,
//!   instead of a dozen whole-tensor ops that each allocate.
//! * [`ema_update_cpu`]: the exponential moving average of the weights.

use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Tensor};
use rayon::prelude::*;

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
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let g = g * s;
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p = *p * decay - step * *m / ((*v * inv_bc2).sqrt() + eps);
                }
            });
        Ok(())
    }
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
        let (d, c) = (self.d, 1.0 - self.d);
        for (e, &w) in e.iter_mut().zip(self.w) {
            *e = d * *e + c * w;
        }
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
