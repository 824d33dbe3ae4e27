//! The gated activation of Gated PixelCNN (van den Oord et al. 2016, arXiv:1606.05328, eq. 2),
//! tanh(a) ⊙ σ(g) over the two halves of a layer's 2p channels, fused into one pass each way on the CPU
//! (composed of tensor ops it costs about a dozen passes over the model's largest tensors, and libm's tanh).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_f32;
use super::math::exp_approx;
use crate::{Error, Result};

/// The gated activation of Gated PixelCNN (eq. 2 of the paper): `(b, 2p, h, w)` → `(b, p, h, w)`,
/// y = tanh(a) ⊙ σ(g) with a the first p channels and g the last p. On the CPU in f32 it is one fused pass
/// each way ([`GateOp`]); elsewhere it is composed of tensor ops.
pub fn gated_activation(x: &Tensor) -> Result<Tensor> {
    let (n, c2, h, w) = x.dims4()?;
    if !c2.is_multiple_of(2) {
        return Err(Error::invalid(
            "gated activation",
            format!("{c2} channels cannot be split into two halves"),
        ));
    }
    if crate::nn::use_cpu_kernel(x) {
        let op = GateOp { n, p: c2 / 2, h, w };
        return Ok(x.contiguous()?.apply_op1(op)?);
    }
    gated_activation_composed(x)
}

/// [`gated_activation`] composed of candle tensor ops, for any device and float dtype.
fn gated_activation_composed(x: &Tensor) -> Result<Tensor> {
    let p = x.dim(1)? / 2;
    let a = x.narrow(1, 0, p)?.tanh()?;
    let s = (((x.narrow(1, p, p)? * 0.5)?.tanh()? + 1.0)? * 0.5)?; // σ(g) = (1 + tanh(g/2))/2
    Ok((a * s)?)
}

/// (tanh a, σ g) with tanh a = 2σ(2a) − 1.
#[inline(always)]
fn tanh_sigmoid(a: f32, g: f32) -> (f32, f32) {
    let t = 2.0 / (1.0 + exp_approx(-2.0 * a)) - 1.0;
    let s = 1.0 / (1.0 + exp_approx(-g));
    (t, s)
}

/// The fused gated activation on a contiguous f32 `(n, 2p, h, w)` tensor; its backward is [`GateGrad`].
#[derive(Clone, Copy, Debug)]
pub struct GateOp {
    n: usize,
    p: usize,
    h: usize,
    w: usize,
}

/// The gradient of [`GateOp`]: (x, dy) → dx with da = dy·(1 − tanh² a)·σ(g), dg = dy·tanh a·σ(g)(1 − σ(g)).
struct GateGrad(GateOp);

/// Elements per rayon task of the gate kernels.
const GATE_TASK: usize = 1 << 14;

impl CustomOp1 for GateOp {
    fn name(&self) -> &'static str {
        "dgm-gate"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(self.name(), s, l)?;
        let half = self.p * self.h * self.w;
        let mut y = vec![0f32; self.n * half];
        y.par_chunks_mut(half)
            .zip(x.par_chunks(2 * half))
            .with_min_len(GATE_TASK.div_ceil(half))
            .for_each(|(y, x)| {
                let (a, g) = x.split_at(half);
                y.par_chunks_mut(GATE_TASK)
                    .zip(a.par_chunks(GATE_TASK).zip(g.par_chunks(GATE_TASK)))
                    .for_each(|(y, (a, g))| {
                        for ((y, &a), &g) in y.iter_mut().zip(a).zip(g) {
                            let (t, s) = tanh_sigmoid(a, g);
                            *y = t * s;
                        }
                    });
            });
        Ok((
            CpuStorage::F32(y),
            Shape::from((self.n, self.p, self.h, self.w)),
        ))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dx = x.apply_op2_no_bwd(&grad.contiguous()?, &GateGrad(*self))?;
        Ok(Some(dx))
    }
}

impl CustomOp2 for GateGrad {
    fn name(&self) -> &'static str {
        "dgm-gate-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(self.name(), s1, l1)?;
        let dy = cpu_f32(self.name(), s2, l2)?;
        let op = self.0;
        let half = op.p * op.h * op.w;
        let mut dx = vec![0f32; op.n * 2 * half];
        dx.par_chunks_mut(2 * half)
            .zip(x.par_chunks(2 * half).zip(dy.par_chunks(half)))
            .with_min_len(GATE_TASK.div_ceil(half))
            .for_each(|(dx, (x, dy))| {
                let (a, g) = x.split_at(half);
                let (da, dg) = dx.split_at_mut(half);
                da.par_chunks_mut(GATE_TASK)
                    .zip(dg.par_chunks_mut(GATE_TASK))
                    .zip(a.par_chunks(GATE_TASK).zip(g.par_chunks(GATE_TASK)))
                    .zip(dy.par_chunks(GATE_TASK))
                    .for_each(|(((da, dg), (a, g)), dy)| {
                        for ((((da, dg), &a), &g), &dy) in
                            da.iter_mut().zip(dg.iter_mut()).zip(a).zip(g).zip(dy)
                        {
                            let (t, s) = tanh_sigmoid(a, g);
                            *da = dy * (1.0 - t * t) * s;
                            *dg = dy * t * s * (1.0 - s);
                        }
                    });
            });
        Ok((
            CpuStorage::F32(dx),
            Shape::from((op.n, 2 * op.p, op.h, op.w)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::{Device, Var};

    /// The fused gate equals tanh(a)·σ(g) composed of stock ops, forward and backward.
    #[test]
    fn fused_gate_matches_the_composed_one() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Rng::new(5).randn((3, 8, 5, 7), &dev)? * 3.0)?)?;
        let r = Rng::new(6).randn((3, 4, 5, 7), &dev)?;
        let mut out = Vec::new();
        // (not via set_stock_ops: it is process-wide and the lib tests run in parallel)
        for f in [gated_activation, gated_activation_composed] {
            let y = f(&x)?;
            let gx = (&y * &r)?.sum_all()?.backward()?;
            let gx = gx
                .get(&x)
                .cloned()
                .ok_or(Error::invalid("test", "no gradient"))?;
            out.push((y, gx));
        }
        assert!(crate::nn::rel_err(&out[0].0, &out[1].0)? < 1e-5);
        assert!(crate::nn::rel_err(&out[0].1, &out[1].1)? < 1e-5);
        assert!(
            gated_activation(&Tensor::zeros((1, 3, 2, 2), candle_core::DType::F32, &dev)?).is_err()
        );
        Ok(())
    }
}
