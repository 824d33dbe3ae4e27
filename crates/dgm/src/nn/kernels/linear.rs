//! The fully connected layer's CPU kernels, `act(x Wᵀ + b)` as one op with its own backward, `W` in
//! PyTorch's (out, in) layout. Compared with candle's `matmul` + `t` + bias add + activation graph, a fused
//! op saves the transposed copies of the weight gradient, the bias-broadcast reduction, one node (and with it
//! one gradient accumulation) per layer, and the input gradient of the data batch, which nothing needs: the
//! backward computes `dx` only when `x` is part of the graph.
//!
//! Two kernels compute this function, summing in different orders (so their results differ in the last
//! bits, and each model keeps the one its numbers were made with):
//!
//! * [`linear`]: one multi-threaded gemm per product, with the activation ([`Activation`]) fused in; the
//!   bias gradient summed row after row. Behind [`crate::nn::Linear::new`] (MLPs, VAEs, MADE, UNets).
//! * [`dense`]: no activation; every product split into blocks of rows, one single-threaded gemm per thread
//!   ([`super::par_rows`]), which parallelises the small products of a transformer far better than gemm's
//!   own threading; the bias gradient summed over fixed blocks of rows. Behind
//!   [`crate::nn::Linear::nanogpt`] (the GPT).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::gemm::{sgemm, sgemm_new, sgemm_overwrite};
use super::math::axpy;
use super::{cpu_f32, par_rows, to_candle, with_data};
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
        let name = "dgm-linear backward";
        let dz: Vec<f32> = with_data(name, &grad, |g| {
            with_data(name, y, |y| match self.0 {
                Activation::Relu => g
                    .iter()
                    .zip(y)
                    .map(|(g, y)| if *y > 0.0 { *g } else { 0.0 })
                    .collect(),
                Activation::Tanh => g.iter().zip(y).map(|(g, y)| g * (1.0 - y * y)).collect(),
                Activation::Identity | Activation::Silu => g.to_vec(),
            })
        })
        .and_then(|r| r)
        .map_err(to_candle)?;
        let mut db = vec![0f32; d_out];
        for row in dz.chunks_exact(d_out) {
            for (a, v) in db.iter_mut().zip(row) {
                *a += v;
            }
        }
        // dW (out × in) = dzᵀ (out × m) · x (m × in)
        let dw = with_data(name, x, |x| {
            sgemm_new((d_out, d_in, m), &dz, (1, d_out), x, (d_in, 1), true)
        })
        .map_err(to_candle)?;
        let dx = if x.track_op() {
            // dx (m × in) = dz (m × out) · W (out × in)
            let dx = with_data(name, w, |w| {
                sgemm_new((m, d_in, d_out), &dz, (d_out, 1), w, (d_in, 1), true)
            })
            .map_err(to_candle)?;
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
    if crate::nn::use_cpu_kernel(x) && act.fusable() && x.rank() == 2 {
        return Ok(x
            .contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, LinearOp(act))?);
    }
    if crate::nn::use_cpu_kernel(x) && x.rank() == 2 {
        return act.forward(&linear(x, w, b, Activation::Identity)?);
    }
    act.forward(&x.matmul(&w.t()?)?.broadcast_add(b)?)
}

/// Sets every row (`b.len()` long) of the uninitialised `y` to `b` (`y.len()` a multiple of it) and returns
/// `y` as the initialised floats it then holds.
pub(crate) fn fill_rows<'a>(y: &'a mut [MaybeUninit<f32>], b: &[f32]) -> &'a mut [f32] {
    assert!(
        y.len().is_multiple_of(b.len().max(1)),
        "fill_rows: ragged rows"
    );
    if !b.is_empty() {
        for row in y.chunks_exact_mut(b.len()) {
            for (e, v) in row.iter_mut().zip(b) {
                e.write(*v);
            }
        }
    }
    assert!(
        !b.is_empty() || y.is_empty(),
        "fill_rows: no row for the elements"
    );
    // SAFETY: every element of `y` was written above (the asserts rule out a remainder).
    unsafe { &mut *(y as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Rows per block of [`column_sums`].
const SUM_ROWS: usize = 64;

/// Σ over the rows of `g` (rows of `n`), in parallel over fixed blocks of rows reduced in order (the same bits
/// for any thread count).
fn column_sums(g: &[f32], n: usize) -> Vec<f32> {
    let partial: Vec<Vec<f32>> = g
        .par_chunks(n.max(1) * SUM_ROWS)
        .map(|blk| {
            let mut s = vec![0f32; n];
            for row in blk.chunks_exact(n.max(1)) {
                axpy(&mut s, 1.0, row);
            }
            s
        })
        .collect();
    let mut s = vec![0f32; n];
    for p in &partial {
        axpy(&mut s, 1.0, p);
    }
    s
}

/// `x Wᵀ + b` for `x: (m, in)`, `W: (out, in)`, `b: (out,)`: on f32 CPU tensors one dgm op whose matrix
/// products split their rows over the threads ([`par_rows`]) and whose backward computes dx only when `x`
/// needs it; elsewhere [`linear`] (dgm's fused linear kernel, or candle's ops).
pub fn dense(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if crate::nn::use_cpu_kernel(x) && x.rank() == 2 {
        return Ok(x
            .contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, DenseOp)?);
    }
    linear(x, w, b, Activation::Identity)
}

/// The CPU op behind [`dense`]: `(x, W, b)`.
struct DenseOp;

impl CustomOp3 for DenseOp {
    fn name(&self) -> &'static str {
        "dgm-dense"
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
        let (m, k) = l1.shape().dims2()?;
        let (n, kw) = l2.shape().dims2()?;
        if kw != k || b.len() != n {
            candle_core::bail!(
                "{name}: x {:?}, W {:?}, b {}",
                l1.dims(),
                l2.dims(),
                b.len()
            );
        }
        // y (m × n) = b + x (m × k) · Wᵀ (k × n)
        let y = par_rows(m, n, |r0, y| {
            let y = fill_rows(y, b);
            let a = &x[r0 * k..];
            sgemm((y.len() / n, n, k), y, n, true, a, (k, 1), w, (1, k), false);
            y
        });
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (m, k) = x.dims2()?;
        let n = w.dim(0)?;
        let name = "dgm-dense backward";
        let want_dx = x.track_op();
        let (dx, dw, db) = with_data(name, x, |x| {
            with_data(name, w, |w| {
                with_data(name, grad, |g| {
                    let (dw, db) = row_split_param_grads(x, g, (m, n, k));
                    let dx = want_dx.then(|| row_split_input_grad(g, w, (m, n, k), |_, _| {}));
                    (dx, dw, db)
                })
            })
        })
        .and_then(|r| r)
        .and_then(|r| r)
        .map_err(to_candle)?;
        let dev = x.device();
        Ok((
            dx.map(|dx| Tensor::from_vec(dx, (m, k), dev)).transpose()?,
            Some(Tensor::from_vec(dw, (n, k), dev)?),
            Some(Tensor::from_vec(db, n, dev)?),
        ))
    }
}

/// The parameter gradients of `y = x Wᵀ + b` (`x: (m, k)`, `W: (n, k)`) from `g = dy: (m, n)` with the products
/// split over blocks of rows ([`par_rows`]): dW (n × k) = gᵀ (n × m) · x (m × k), and db = [`column_sums`] of g.
pub(crate) fn row_split_param_grads(
    x: &[f32],
    g: &[f32],
    (m, n, k): (usize, usize, usize),
) -> (Vec<f32>, Vec<f32>) {
    let db = column_sums(g, n);
    let dw = par_rows(n, k, |r0, d| {
        sgemm_overwrite((d.len() / k, k, m), d, &g[r0..], (1, n), x, (k, 1), false)
    });
    (dw, db)
}

/// The input gradient dx (m × k) = g (m × n) · W (n × k) of `y = x Wᵀ + b`, computed in blocks of rows
/// ([`par_rows`]); `then(r0, block)` finishes each block (rows `r0 ..`) right after its product, while it is
/// in cache.
pub(crate) fn row_split_input_grad(
    g: &[f32],
    w: &[f32],
    (m, n, k): (usize, usize, usize),
    then: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    par_rows(m, k, |r0, d| {
        let a = &g[r0 * n..];
        let d = sgemm_overwrite((d.len() / k, k, n), d, a, (n, 1), w, (k, 1), false);
        then(r0, d);
        d
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::gelu::gelu_linear;
    use crate::nn::kernels::testing::{assert_close, value_and_grads};
    use crate::nn::rel_err;
    use crate::rng::Rng;
    use candle_core::{DType, Device, Var};

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
                let inputs = [x.clone(), w.clone(), b.clone()];
                let ours = value_and_grads(|t| linear(&t[0], &t[1], &t[2], act), &inputs, &r)?;
                let stock = value_and_grads(
                    |t| act.forward(&t[0].matmul(&t[1].t()?)?.broadcast_add(&t[2])?),
                    &inputs,
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

    #[test]
    fn dense_kernel_matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        for (m, k, n, seed) in [
            (1, 3, 2, 1),
            (70, 64, 16, 2),
            (768, 128, 512, 3),
            (33, 1, 17, 4),
        ] {
            let mut rng = Rng::new(seed);
            let inputs = [
                rng.randn((m, k), &dev)?,
                rng.randn((n, k), &dev)?,
                rng.randn(n, &dev)?,
            ];
            let r = rng.randn((m, n), &dev)?;
            let ours = value_and_grads(|t| dense(&t[0], &t[1], &t[2]), &inputs, &r)?;
            let stock = value_and_grads(
                |t| Ok(t[0].matmul(&t[1].t()?)?.broadcast_add(&t[2])?),
                &inputs,
                &r,
            )?;
            assert_close(
                &ours,
                &stock,
                &["y", "dx", "dW", "db"],
                1e-5,
                &format!("({m}, {k}) → {n}"),
            )?;
        }
        // the data batch (not a variable) gets no gradient
        let mut rng = Rng::new(5);
        let x = rng.randn((40, 8), &dev)?;
        let w = Var::from_tensor(&rng.randn((4, 8), &dev)?)?;
        let g = dense(&x, w.as_tensor(), &Tensor::zeros(4, DType::F32, &dev)?)?
            .sum_all()?
            .backward()?;
        assert!(g.get(&x).is_none() && g.get(w.as_tensor()).is_some());
        Ok(())
    }

    /// The bits of y and of every gradient of Σ r ⊙ f(x, W, b), run on a pool of `threads` threads.
    fn bits_with_threads(
        threads: usize,
        f: fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Vec<u32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::invalid("threads", e.to_string()))?;
        pool.install(|| {
            let dev = Device::Cpu;
            let mut rng = Rng::new(11);
            let inputs = [
                rng.randn((200, 96), &dev)?,
                rng.randn((72, 96), &dev)?,
                rng.randn(72, &dev)?,
            ];
            let r = rng.randn((200, 72), &dev)?;
            let out = value_and_grads(|t| f(&t[0], &t[1], &t[2]), &inputs, &r)?;
            let mut bits = vec![];
            for t in out {
                bits.extend(
                    t.flatten_all()?
                        .to_vec1::<f32>()?
                        .iter()
                        .map(|v| v.to_bits()),
                );
            }
            Ok(bits)
        })
    }

    #[test]
    fn dense_and_gelu_linear_give_the_same_bits_for_any_thread_count() -> Result<()> {
        for f in [
            dense as fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
            gelu_linear,
        ] {
            let one = bits_with_threads(1, f)?;
            assert_eq!(one, bits_with_threads(2, f)?);
            assert_eq!(one, bits_with_threads(3, f)?);
        }
        Ok(())
    }
}
