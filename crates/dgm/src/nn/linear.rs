//! The fully connected layer's CPU kernel: `act(x Wᵀ + b)` as one op with its own backward.
//!
//! Compared with candle's `matmul` + `t` + bias add + activation graph, the fused op saves the transposed
//! copies of the weight gradient, the bias-broadcast reduction, one node (and with it one gradient
//! accumulation) per layer, and the input gradient of the data batch, which nothing needs: the backward
//! computes `dx` only when `x` is part of the graph. `W` keeps PyTorch's (out, in) layout.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::gemm::sgemm;
use super::kernels::{cpu_f32, with_cpu_f32};
use crate::{Error, Result};

/// Activation functions dgm's layers can apply (fused into [`super::Linear::forward_act`] where possible).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// No activation.
    Identity,
    /// max(x, 0).
    Relu,
    /// x·sigmoid(x).
    Silu,
    /// tanh(x).
    Tanh,
}

impl Activation {
    /// The names [`Activation::parse`] accepts.
    pub const NAMES: &'static [&'static str] = &["identity", "relu", "silu", "tanh"];

    /// Parses `identity`, `relu`, `silu` or `tanh`; `key` names the setting in the error.
    pub fn parse(key: &str, name: &str) -> Result<Self> {
        Ok(match name {
            "identity" => Activation::Identity,
            "relu" => Activation::Relu,
            "silu" => Activation::Silu,
            "tanh" => Activation::Tanh,
            _ => {
                return Err(Error::invalid(
                    key,
                    format!(
                        "unknown activation '{name}'; valid: {}",
                        Self::NAMES.join(", ")
                    ),
                ))
            }
        })
    }

    /// Applies the activation with candle's ops.
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Identity => x.clone(),
            Activation::Relu => x.relu()?,
            Activation::Silu => x.silu()?,
            Activation::Tanh => x.tanh()?,
        })
    }

    /// Whether the derivative can be computed from the output alone (so the op keeps no pre-activation).
    fn fusable(self) -> bool {
        !matches!(self, Activation::Silu)
    }
}

/// `act(x Wᵀ + b)` for `x: (m, in)`, `W: (out, in)`, `b: (out,)`.
struct LinearOp(Activation);

/// Runs `f` on the contiguous f32 data of a CPU tensor ([`super::kernels::with_cpu_f32`]), else an error.
fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    match with_cpu_f32(t, f) {
        Some(r) => Ok(r),
        None => candle_core::bail!("dgm-linear: contiguous f32 CPU tensors only"),
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "dgm-linear"
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
        let (x, w, b) = (
            cpu_f32(name, s1, l1)?,
            cpu_f32(name, s2, l2)?,
            cpu_f32(name, s3, l3)?,
        );
        let (m, d_in) = l1.shape().dims2()?;
        let d_out = b.len();
        let mut y = Vec::with_capacity(m * d_out);
        for _ in 0..m {
            y.extend_from_slice(b);
        }
        // y (m × out) += x (m × in) · Wᵀ (in × out)
        sgemm(
            (m, d_out, d_in),
            &mut y,
            d_out,
            true,
            x,
            (d_in, 1),
            w,
            (1, d_in),
            true,
        );
        match self.0 {
            Activation::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Tanh => y.iter_mut().for_each(|v| *v = v.tanh()),
            Activation::Identity | Activation::Silu => {}
        }
        Ok((CpuStorage::F32(y), Shape::from((m, d_out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (m, d_in) = x.dims2()?;
        let d_out = w.dim(0)?;
        let grad = grad.contiguous()?;
        // dz = dy ⊙ act'(z), from the output y
        let dz: Vec<f32> = with_data(&grad, |g| {
            with_data(y, |y| match self.0 {
                Activation::Relu => g
                    .iter()
                    .zip(y)
                    .map(|(g, y)| if *y > 0.0 { *g } else { 0.0 })
                    .collect(),
                Activation::Tanh => g.iter().zip(y).map(|(g, y)| g * (1.0 - y * y)).collect(),
                Activation::Identity | Activation::Silu => g.to_vec(),
            })
        })??;
        let mut db = vec![0f32; d_out];
        for row in dz.chunks_exact(d_out) {
            for (a, v) in db.iter_mut().zip(row) {
                *a += v;
            }
        }
        // dW (out × in) = dzᵀ (out × m) · x (m × in)
        let mut dw = vec![0f32; d_out * d_in];
        with_data(x, |x| {
            sgemm(
                (d_out, d_in, m),
                &mut dw,
                d_in,
                false,
                &dz,
                (1, d_out),
                x,
                (d_in, 1),
                true,
            )
        })?;
        let dx = if x.track_op() {
            // dx (m × in) = dz (m × out) · W (out × in)
            let mut dx = vec![0f32; m * d_in];
            with_data(w, |w| {
                sgemm(
                    (m, d_in, d_out),
                    &mut dx,
                    d_in,
                    false,
                    &dz,
                    (d_out, 1),
                    w,
                    (d_in, 1),
                    true,
                )
            })?;
            Some(Tensor::from_vec(dx, (m, d_in), x.device())?)
        } else {
            None
        };
        let dw = Tensor::from_vec(dw, (d_out, d_in), w.device())?;
        let db = Tensor::from_vec(db, d_out, w.device())?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `act(x Wᵀ + b)` for `x: (m, in)`: dgm's fused CPU op where it applies (CPU, f32, an activation whose
/// derivative follows from its output), else candle's stock ops.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, act: Activation) -> Result<Tensor> {
    if super::use_cpu_kernel(x) && act.fusable() && x.rank() == 2 {
        return Ok(x
            .contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, LinearOp(act))?);
    }
    if super::use_cpu_kernel(x) && x.rank() == 2 {
        return act.forward(&linear(x, w, b, Activation::Identity)?);
    }
    act.forward(&x.matmul(&w.t()?)?.broadcast_add(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::rel_err;
    use crate::rng::Rng;
    use candle_core::{Device, Var};

    /// y, dx, dW, db of Σ r ⊙ f(x, W, b).
    fn grads(
        f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        r: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let (xv, wv, bv) = (
            Var::from_tensor(x)?,
            Var::from_tensor(w)?,
            Var::from_tensor(b)?,
        );
        let y = f(xv.as_tensor(), wv.as_tensor(), bv.as_tensor())?;
        let g = (&y * r)?.sum_all()?.backward()?;
        let mut out = vec![y];
        for v in [&xv, &wv, &bv] {
            out.push(
                g.get(v.as_tensor())
                    .ok_or_else(|| Error::invalid("test", "no grad"))?
                    .clone(),
            );
        }
        Ok(out)
    }

    #[test]
    fn fused_linear_matches_candle_ops_forward_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for (m, d_in, d_out, seed) in [
            (1, 3, 2, 1),
            (7, 13, 5, 2),
            (128, 96, 64, 3),
            (33, 1, 17, 4),
        ] {
            let mut rng = Rng::new(seed);
            let x = rng.randn((m, d_in), &dev)?;
            let w = rng.randn((d_out, d_in), &dev)?;
            let b = rng.randn(d_out, &dev)?;
            let r = rng.randn((m, d_out), &dev)?;
            for act in [
                Activation::Identity,
                Activation::Relu,
                Activation::Tanh,
                Activation::Silu,
            ] {
                let ours = grads(|x, w, b| linear(x, w, b, act), &x, &w, &b, &r)?;
                let stock = grads(
                    |x, w, b| act.forward(&x.matmul(&w.t()?)?.broadcast_add(b)?),
                    &x,
                    &w,
                    &b,
                    &r,
                )?;
                for (name, (u, v)) in ["y", "dx", "dw", "db"].iter().zip(ours.iter().zip(&stock)) {
                    let e = rel_err(u, v)?;
                    assert!(
                        e < 1e-4,
                        "{name} {act:?} ({m}, {d_in}) → {d_out}: rel err {e}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn no_input_gradient_for_data_and_same_bits_for_any_thread_count() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(9);
        let (x, w, b) = (
            rng.randn((128, 300), &dev)?,
            rng.randn((200, 300), &dev)?,
            rng.randn(200, &dev)?,
        );
        let (wv, bv) = (Var::from_tensor(&w)?, Var::from_tensor(&b)?);
        let run = |threads: usize| -> Result<Vec<u32>> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| Error::invalid("threads", e.to_string()))?;
            pool.install(|| {
                let y = linear(&x, wv.as_tensor(), bv.as_tensor(), Activation::Relu)?;
                let g = y.sqr()?.sum_all()?.backward()?;
                assert!(g.get(&x).is_none(), "the data batch got a gradient");
                let mut bits = vec![];
                for t in [
                    &y,
                    g.get(wv.as_tensor())
                        .ok_or_else(|| Error::invalid("test", "no dW"))?,
                ] {
                    bits.extend(
                        t.flatten_all()?
                            .to_vec1::<f32>()?
                            .iter()
                            .map(|v| v.to_bits()),
                    );
                }
                Ok(bits)
            })
        };
        assert_eq!(run(1)?, run(2)?);
        assert_eq!(run(2)?, run(3)?);
        Ok(())
    }
}
