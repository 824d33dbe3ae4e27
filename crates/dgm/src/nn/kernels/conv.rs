//! 2-D convolution and transposed convolution. On the CPU in f32 they run on dgm's GEMM-based kernels
//! (forward and both gradients); elsewhere, or after [`crate::nn::set_stock_ops`], on candle's stock ops.
//!
//! The three GEMM kernels of `im2col.rs` do all the work: the forward `y = W ∗ x + b`, the input gradient
//! and the weight gradient. A transposed convolution is the input gradient of a convolution, so the same
//! three kernels give it forward and backward with the roles swapped. For stride 1 the input gradient is a
//! forward convolution of dy with the flipped kernel (an im2col and a GEMM with inner dimension c_out·k·k
//! instead of a col2im). This file wraps them as candle ops with their backward, checks shapes, and holds
//! the stock references.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::im2col::{
    channel_sums, conv_forward, conv_input_grad, conv_weight_grad, plane_sums, stride1_forward,
    Geom,
};
use super::{cpu_f32, phases, to_candle, with_data};
use crate::{Error, Result};

/// `W'[c, o, ky, kx] = W[o, c, k−1−ky, k−1−kx]`: the weight of `g.flipped()`'s convolution.
fn flip_transpose(w: &Tensor, g: &Geom) -> candle_core::Result<Tensor> {
    let v = w.flatten_all()?.to_vec1::<f32>()?;
    Tensor::from_vec(g.flip_weights(&v), (g.ci, g.co, g.k, g.k), w.device())
}

/// Conv forward as an op on (x, w, b); its backward runs the two gradient kernels.
struct ConvFwd(Geom);
/// Conv input gradient as an op on (dy, w, b) — a transposed convolution's forward; its backward runs the
/// forward and weight-gradient kernels.
struct ConvDx(Geom);
/// Conv weight gradient as an op on (x, dy) → (co, ci, k, k). No backward.
struct ConvDw(Geom);
/// Per-channel sums of an NCHW tensor → (c,), or per image and channel → (n, c). No backward.
struct ChannelSum {
    per_image: bool,
}

impl CustomOp3 for ConvFwd {
    fn name(&self) -> &'static str {
        "dgm-conv2d"
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
        let g = &self.0;
        let x = cpu_f32(self.name(), s1, l1)?;
        let w = cpu_f32(self.name(), s2, l2)?;
        let b = cpu_f32(self.name(), s3, l3)?;
        let y = conv_forward(g, x, w, Some(b));
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.co, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = conv_grads(self.0, x, w, b.rank() == 2, &grad.contiguous()?)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// The gradients of `y = W ∗ x + b` for the upstream gradient `grad`: dx (when x is tracked), dW, db (per
/// image and channel when `bias_per_image`).
fn conv_grads(
    g: Geom,
    x: &Tensor,
    w: &Tensor,
    bias_per_image: bool,
    grad: &Tensor,
) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
    let zero = Tensor::zeros(g.ci, grad.dtype(), grad.device())?;
    let dx = match (x.track_op(), g.flipped()) {
        (false, _) => None,
        // stride 1: dx = dy ∗ flip(W)ᵀ, a forward convolution with inner dimension c_out·k·k
        (true, Some(gf)) => {
            let wf = flip_transpose(w, &g)?;
            Some(grad.apply_op3_no_bwd(&wf, &zero, &ConvFwd(gf))?)
        }
        (true, _) => Some(grad.apply_op3_no_bwd(w, &zero, &ConvDx(g))?),
    };
    let dw = x.apply_op2_no_bwd(grad, &ConvDw(g))?;
    let db = grad.apply_op1_no_bwd(&ChannelSum {
        per_image: bias_per_image,
    })?;
    Ok((dx, dw, db))
}

/// `W ∗ x + b + r` (stride 1: the implicit GEMM or Winograd's algorithm) as an op on (x, [W; b] flattened, r): the residual
/// `r` is added while the output is written. Its backward passes the upstream gradient to r unchanged.
struct ConvFwdRes(Geom);

impl CustomOp3 for ConvFwdRes {
    fn name(&self) -> &'static str {
        "dgm-conv2d-residual"
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
        let g = &self.0;
        let x = cpu_f32(self.name(), s1, l1)?;
        let wb = cpu_f32(self.name(), s2, l2)?;
        let r = cpu_f32(self.name(), s3, l3)?;
        let kd = g.ci * g.k * g.k;
        if wb.len() != g.co * (kd + 1) || r.len() != g.n * g.co * g.oh * g.ow {
            candle_core::bail!(
                "{}: weights, bias or residual do not fit {g:?}",
                self.name()
            );
        }
        let (w, b) = wb.split_at(g.co * kd);
        let y = stride1_forward(g, x, w, Some(b), Some(r));
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.co, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        wb: &Tensor,
        _r: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.0;
        let grad = grad.contiguous()?;
        let w = wb
            .narrow(0, 0, g.co * g.ci * g.k * g.k)?
            .reshape((g.co, g.ci, g.k, g.k))?;
        let (dx, dw, db) = conv_grads(g, x, &w, false, &grad)?;
        let dwb = Tensor::cat(&[&dw.flatten_all()?, &db], 0)?;
        Ok((dx, Some(dwb), Some(grad)))
    }
}

impl CustomOp3 for ConvDx {
    fn name(&self) -> &'static str {
        "dgm-conv2d-input-grad"
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
        let g = &self.0;
        let dy = cpu_f32(self.name(), s1, l1)?;
        let w = cpu_f32(self.name(), s2, l2)?;
        let b = cpu_f32(self.name(), s3, l3)?;
        let dx = conv_input_grad(g, dy, w, Some(b));
        Ok((CpuStorage::F32(dx), Shape::from((g.n, g.ci, g.h, g.w))))
    }

    fn bwd(
        &self,
        dy: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // As a transposed convolution: input dy, output grad (n, ci, h, w).
        let g = self.0;
        let grad = grad.contiguous()?;
        let db = grad.apply_op1_no_bwd(&ChannelSum { per_image: false })?;
        if dy.track_op() && phases::applies(&g) {
            // both passes read grad's phases: gather them once
            let name = self.name();
            let (d_in, dw) = with_data(name, &grad, |gr| {
                with_data(name, w, |wv| {
                    with_data(name, dy, |dv| {
                        phases::forward_and_weight_grad(&g, gr, wv, dv)
                    })
                })
            })
            .and_then(|r| r)
            .and_then(|r| r)
            .map_err(to_candle)?;
            let d_in = Tensor::from_vec(d_in, (g.n, g.co, g.oh, g.ow), grad.device())?;
            let dw = Tensor::from_vec(dw, (g.co, g.ci, g.k, g.k), grad.device())?;
            return Ok((Some(d_in), Some(dw), Some(db)));
        }
        let d_in = if dy.track_op() {
            let zero = Tensor::zeros(g.co, grad.dtype(), grad.device())?;
            Some(grad.apply_op3_no_bwd(w, &zero, &ConvFwd(g))?)
        } else {
            None
        };
        let dw = grad.apply_op2_no_bwd(dy, &ConvDw(g))?;
        Ok((d_in, Some(dw), Some(db)))
    }
}

impl CustomOp2 for ConvDw {
    fn name(&self) -> &'static str {
        "dgm-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = cpu_f32(self.name(), s1, l1)?;
        let dy = cpu_f32(self.name(), s2, l2)?;
        let dw = conv_weight_grad(g, x, dy);
        Ok((CpuStorage::F32(dw), Shape::from((g.co, g.ci, g.k, g.k))))
    }
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "dgm-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let t = cpu_f32(self.name(), s, l)?;
        let dims = l.shape().dims();
        let (n, c) = (dims[0], dims.get(1).copied().unwrap_or(1));
        Ok(match self.per_image {
            true => (CpuStorage::F32(plane_sums(t, n, c)), Shape::from((n, c))),
            false => (CpuStorage::F32(channel_sums(t, n, c)), Shape::from(c)),
        })
    }
}

/// Checks `x: (n, ci, h, w)` against `w: (co, ci, k, k)` and returns the geometry of the convolution.
fn conv_geom(what: &str, x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Geom> {
    let (n, ci, h, wd) = x.dims4()?;
    let (co, wci, k, k2) = w.dims4()?;
    if wci != ci || k != k2 || k == 0 || stride == 0 {
        return Err(Error::invalid(
            what,
            format!(
                "input {:?} and weight {:?} (stride {stride}) do not fit: need weight (out, {ci}, k, k) \
                 with k ≥ 1 and stride ≥ 1",
                x.dims(),
                w.dims()
            ),
        ));
    }
    if h + 2 * padding < k || wd + 2 * padding < k {
        return Err(Error::invalid(
            what,
            format!("input {h}×{wd} with padding {padding} is smaller than the {k}×{k} kernel"),
        ));
    }
    let (oh, ow) = (
        (h + 2 * padding - k) / stride + 1,
        (wd + 2 * padding - k) / stride + 1,
    );
    Ok(Geom {
        n,
        ci,
        h,
        w: wd,
        co,
        k,
        s: stride,
        p: padding,
        oh,
        ow,
    })
}

/// The bias to pass to a kernel op: `b` (checked to be `(c,)`, or `(n, c)` where `per_image` allows it),
/// or zeros of length `c`.
fn bias_or_zero(
    what: &str,
    b: Option<&Tensor>,
    (n, c): (usize, usize),
    per_image: bool,
    like: &Tensor,
) -> Result<Tensor> {
    let Some(b) = b else {
        return Ok(Tensor::zeros(c, like.dtype(), like.device())?);
    };
    if b.dims() != [c] && !(per_image && b.dims() == [n, c]) {
        let valid = if per_image {
            format!("({c},) or ({n}, {c})")
        } else {
            format!("({c},)")
        };
        return Err(Error::invalid(
            what,
            format!("bias of shape {:?}: expected {valid}", b.dims()),
        ));
    }
    Ok(b.contiguous()?)
}

/// `conv2d(x, w) + b` for `x: (n, c_in, h, w)`, `w: (c_out, c_in, k, k)`, and `b: (c_out,)` or a bias per
/// image and channel, `(n, c_out)` (e.g. a ResBlock's time embedding added to the conv's own bias, which
/// saves a separate broadcast add over the output and its backward).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if crate::nn::use_cpu_kernel(x) {
        conv2d_cpu(x, w, b, stride, padding)
    } else {
        conv2d_stock(x, w, b, stride, padding)
    }
}

/// `conv2d(x, w, b) + r` with `r` shaped like the output (a residual connection): on the CPU, for the
/// convolutions of the implicit-GEMM kernel (stride 1), `r` is added while the output is written — one op
/// instead of a convolution and an add over its output, and one gradient node less in the backward.
pub fn conv2d_residual(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    r: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if crate::nn::use_cpu_kernel(x) {
        let g = conv_geom("conv2d", x, w, stride, padding)?;
        if super::implicit::applies(&g) && b.dims() == [g.co] && r.dims() == [g.n, g.co, g.oh, g.ow]
        {
            let wb = Tensor::cat(&[&w.flatten_all()?, &b.contiguous()?], 0)?;
            return Ok(x
                .contiguous()?
                .apply_op3(&wb, &r.contiguous()?, ConvFwdRes(g))?);
        }
    }
    Ok((conv2d(x, w, Some(b), stride, padding)? + r)?)
}

/// dgm's CPU kernel path of [`conv2d`] (f32).
fn conv2d_cpu(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let g = conv_geom("conv2d", x, w, stride, padding)?;
    let bias = bias_or_zero("conv2d", b, (g.n, g.co), true, x)?;
    Ok(x.contiguous()?
        .apply_op3(&w.contiguous()?, &bias, ConvFwd(g))?)
}

/// The reference: candle's stock `conv2d` and a broadcast bias add.
pub fn conv2d_stock(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let y = x.conv2d(w, padding, stride, 1, 1)?;
    Ok(match b {
        Some(b) if b.rank() == 2 => y.broadcast_add(&b.reshape((b.dim(0)?, (), 1, 1))?)?,
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?)?,
        None => y,
    })
}

/// Transposed convolution for `x: (n, c_in, h, w)`, `w: (c_in, c_out, k, k)` (PyTorch's layout), output
/// `(n, c_out, (h − 1)·stride − 2·padding + k + output_padding, …)`.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    if crate::nn::use_cpu_kernel(x) {
        conv_transpose2d_cpu(x, w, b, stride, padding, output_padding)
    } else {
        conv_transpose2d_stock(x, w, b, stride, padding, output_padding)
    }
}

/// dgm's CPU kernel path of [`conv_transpose2d`] (f32).
fn conv_transpose2d_cpu(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    let (n, ci_t, h, wd) = x.dims4()?;
    let (wci, co_t, k, k2) = w.dims4()?;
    let size = |d: usize| ((d.max(1) - 1) * stride + k + output_padding).checked_sub(2 * padding);
    let (Some(oh), Some(ow)) = (size(h), size(wd)) else {
        return Err(Error::invalid(
            "conv_transpose2d",
            format!("padding {padding} leaves no output for a {h}×{wd} input and {k}×{k} kernel"),
        ));
    };
    if wci != ci_t || k != k2 || k == 0 || stride == 0 || output_padding >= stride.max(1) || h == 0
    {
        return Err(Error::invalid(
            "conv_transpose2d",
            format!(
                "input {:?} and weight {:?} (stride {stride}, output_padding {output_padding}) do not \
                 fit: need weight ({ci_t}, out, k, k), stride ≥ 1 and output_padding < stride",
                x.dims(),
                w.dims()
            ),
        ));
    }
    // The convolution whose input gradient this is: (n, co_t, oh, ow) → (n, ci_t, h, wd).
    let g = Geom {
        n,
        ci: co_t,
        h: oh,
        w: ow,
        co: ci_t,
        k,
        s: stride,
        p: padding,
        oh: h,
        ow: wd,
    };
    let bias = bias_or_zero("conv_transpose2d", b, (n, co_t), false, x)?;
    Ok(x.contiguous()?
        .apply_op3(&w.contiguous()?, &bias, ConvDx(g))?)
}

/// The reference: candle's stock `conv_transpose2d` and a broadcast bias add.
pub fn conv_transpose2d_stock(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    let y = x.conv_transpose2d(w, padding, output_padding, stride, 1)?;
    Ok(match b {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?)?,
        None => y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::testing::{assert_close, value_and_grads};
    use crate::nn::rel_err;
    use crate::rng::Rng;
    use candle_core::{Device, Var};

    type Op = fn(&Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor>;

    /// Output, dx, dw, db of `op` with loss Σ r ⊙ op(x, w, b).
    fn run(op: Op, x: &Tensor, w: &Tensor, b: &Tensor, seed: u64) -> Result<Vec<Tensor>> {
        let (xv, wv, bv) = (
            Var::from_tensor(x)?,
            Var::from_tensor(w)?,
            Var::from_tensor(b)?,
        );
        let y = op(xv.as_tensor(), wv.as_tensor(), Some(bv.as_tensor()))?;
        let r = Rng::new(seed).randn(y.shape(), y.device())?;
        let grads = (&y * &r)?.sum_all()?.backward()?;
        let mut out = vec![y];
        for v in [&xv, &wv, &bv] {
            let g = grads
                .get(v.as_tensor())
                .ok_or_else(|| Error::invalid("test", "no grad"))?;
            out.push(g.clone());
        }
        Ok(out)
    }

    fn check(ours: Op, stock: Op, x: Tensor, wshape: [usize; 4], seed: u64) -> Result<()> {
        let transposed = T_CHECK.with(|c| c.get());
        let dev = Device::Cpu;
        let mut rng = Rng::new(seed);
        let w = (rng.randn(wshape.to_vec(), &dev)? * 0.3)?;
        let co = if transposed { wshape[1] } else { wshape[0] };
        let b = rng.randn(co, &dev)?;
        let a = run(ours, &x, &w, &b, seed + 1)?;
        let r = run(stock, &x, &w, &b, seed + 1)?;
        for (name, (u, v)) in ["y", "dx", "dw", "db"].iter().zip(a.iter().zip(&r)) {
            assert_eq!(
                u.dims(),
                v.dims(),
                "{name} shape for x {:?} w {wshape:?}",
                x.dims()
            );
            let e = rel_err(u, v)?;
            assert!(
                e < 1e-4,
                "{name}: rel err {e} for x {:?} w {wshape:?}",
                x.dims()
            );
        }
        Ok(())
    }

    macro_rules! conv_op {
        ($name:ident, $f:path, $s:expr, $p:expr) => {
            fn $name(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
                $f(x, w, b, $s, $p)
            }
        };
    }

    fn conv_t_ours(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let (s, p, op) = T_ARGS.with(|c| c.get());
        conv_transpose2d_cpu(x, w, b, s, p, op)
    }
    fn conv_t_stock(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        let (s, p, op) = T_ARGS.with(|c| c.get());
        conv_transpose2d_stock(x, w, b, s, p, op)
    }
    thread_local! {
        /// Whether `check` is testing a transposed convolution (bias over weight dim 1).
        static T_CHECK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        static T_ARGS: std::cell::Cell<(usize, usize, usize)> = const { std::cell::Cell::new((1, 0, 0)) };
    }
    fn conv_ours_cpu(
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        s: usize,
        p: usize,
    ) -> Result<Tensor> {
        conv2d_cpu(x, w, b, s, p)
    }
    conv_op!(c_s1p1, conv_ours_cpu, 1, 1);
    conv_op!(c_s1p1_ref, conv2d_stock, 1, 1);
    conv_op!(c_s2p1, conv_ours_cpu, 2, 1);
    conv_op!(c_s2p1_ref, conv2d_stock, 2, 1);
    conv_op!(c_s2p0, conv_ours_cpu, 2, 0);
    conv_op!(c_s2p0_ref, conv2d_stock, 2, 0);
    conv_op!(c_s1p0, conv_ours_cpu, 1, 0);
    conv_op!(c_s1p0_ref, conv2d_stock, 1, 0);

    fn input(shape: &[usize], seed: u64) -> Result<Tensor> {
        Rng::new(seed).randn(shape.to_vec(), &Device::Cpu)
    }

    #[test]
    fn conv2d_matches_candle_forward_and_gradients() -> Result<()> {
        check(
            c_s1p1,
            c_s1p1_ref,
            input(&[2, 3, 7, 5], 1)?,
            [4, 3, 3, 3],
            10,
        )?;
        check(
            c_s1p1,
            c_s1p1_ref,
            input(&[1, 1, 6, 6], 2)?,
            [2, 1, 3, 3],
            11,
        )?; // batch 1
        check(
            c_s2p1,
            c_s2p1_ref,
            input(&[1, 2, 8, 8], 3)?,
            [5, 2, 3, 3],
            12,
        )?;
        check(
            c_s2p1,
            c_s2p1_ref,
            input(&[3, 2, 9, 7], 4)?,
            [3, 2, 3, 3],
            13,
        )?; // odd sizes, stride 2
        check(
            c_s2p0,
            c_s2p0_ref,
            input(&[3, 4, 9, 7], 5)?,
            [2, 4, 3, 3],
            14,
        )?;
        check(
            c_s1p0,
            c_s1p0_ref,
            input(&[2, 3, 5, 5], 6)?,
            [4, 3, 1, 1],
            15,
        )?; // 1×1
        check(
            c_s1p0,
            c_s1p0_ref,
            input(&[2, 3, 6, 5], 7)?,
            [4, 3, 2, 2],
            16,
        )?; // even kernel
        check(
            c_s2p1,
            c_s2p1_ref,
            input(&[2, 2, 10, 10], 8)?,
            [3, 2, 4, 4],
            17,
        )?;
        // 64 → 64 channels at 12×12: the Winograd forward, and its flipped twin for the input gradient
        check(
            c_s1p1,
            c_s1p1_ref,
            input(&[3, 64, 12, 12], 19)?,
            [64, 64, 3, 3],
            20,
        )?;
        // several output-row tiles (c_in·k·k = 576, 28 wide → 8 rows a tile) and 17 images (two per
        // weight-gradient chunk)
        check(
            c_s1p1,
            c_s1p1_ref,
            input(&[17, 64, 28, 28], 9)?,
            [4, 64, 3, 3],
            18,
        )?;
        Ok(())
    }

    /// Direct loops: y, dx, dw, db of loss Σ r ⊙ conv(x, w, b).
    fn naive(
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        r: &Tensor,
        s: usize,
        p: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let (n, ci, h, wd) = x.dims4()?;
        let (co, _, k, _) = w.dims4()?;
        let (_, _, oh, ow) = r.dims4()?;
        let (xv, wv) = (
            x.flatten_all()?.to_vec1::<f32>()?,
            w.flatten_all()?.to_vec1::<f32>()?,
        );
        let (bv, rv) = (b.to_vec1::<f32>()?, r.flatten_all()?.to_vec1::<f32>()?);
        let (mut y, mut dx, mut dw) = (
            vec![0f32; n * co * oh * ow],
            vec![0f32; xv.len()],
            vec![0f32; wv.len()],
        );
        let mut db = vec![0f32; co];
        for (i, o, oy, ox) in itertools(n, co, oh, ow) {
            let yi = ((i * co + o) * oh + oy) * ow + ox;
            let mut acc = bv[o];
            db[o] += rv[yi];
            for (c, ky, kx) in
                (0..ci).flat_map(|c| (0..k).flat_map(move |ky| (0..k).map(move |kx| (c, ky, kx))))
            {
                let (iy, ix) = (
                    (oy * s + ky) as isize - p as isize,
                    (ox * s + kx) as isize - p as isize,
                );
                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
                    continue;
                }
                let xi = ((i * ci + c) * h + iy as usize) * wd + ix as usize;
                let wi = ((o * ci + c) * k + ky) * k + kx;
                acc += xv[xi] * wv[wi];
                dx[xi] += wv[wi] * rv[yi];
                dw[wi] += xv[xi] * rv[yi];
            }
            y[yi] = acc;
        }
        Ok(vec![y, dx, dw, db])
    }

    fn itertools(
        a: usize,
        b: usize,
        c: usize,
        d: usize,
    ) -> impl Iterator<Item = (usize, usize, usize, usize)> {
        (0..a).flat_map(move |i| {
            (0..b).flat_map(move |j| (0..c).flat_map(move |k| (0..d).map(move |l| (i, j, k, l))))
        })
    }

    /// Shapes where candle's stock conv backward returns a wrongly sized input gradient (stride 2 with
    /// (h + 2p − k) not divisible by the stride): checked against direct loops instead.
    #[test]
    fn conv2d_matches_direct_loops_where_candle_cannot_be_the_reference() -> Result<()> {
        for (xs, ws, s, p, seed) in [
            ([3, 4, 9, 6], [2, 4, 3, 3], 2, 0, 60),
            ([2, 3, 8, 8], [4, 3, 3, 3], 2, 1, 61),
            ([1, 2, 7, 10], [3, 2, 2, 2], 3, 1, 62),
        ] {
            let dev = Device::Cpu;
            let mut rng = Rng::new(seed);
            let (x, w, b) = (
                input(&xs, seed)?,
                rng.randn(ws.to_vec(), &dev)?,
                rng.randn(ws[0], &dev)?,
            );
            let (xv, wv, bv) = (
                Var::from_tensor(&x)?,
                Var::from_tensor(&w)?,
                Var::from_tensor(&b)?,
            );
            let y = conv2d_cpu(xv.as_tensor(), wv.as_tensor(), Some(bv.as_tensor()), s, p)?;
            let r = rng.randn(y.shape(), &dev)?;
            let grads = (&y * &r)?.sum_all()?.backward()?;
            let want = naive(&x, &w, &b, &r, s, p)?;
            let got = [
                y.clone(),
                grads
                    .get(xv.as_tensor())
                    .ok_or_else(|| Error::invalid("test", "no dx"))?
                    .clone(),
                grads
                    .get(wv.as_tensor())
                    .ok_or_else(|| Error::invalid("test", "no dw"))?
                    .clone(),
                grads
                    .get(bv.as_tensor())
                    .ok_or_else(|| Error::invalid("test", "no db"))?
                    .clone(),
            ];
            for (name, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
                let e = rel_err(g, &Tensor::new(w.as_slice(), &dev)?)?;
                assert!(
                    e < 1e-4,
                    "{name}: rel err {e} for x {xs:?} w {ws:?} stride {s} pad {p}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn conv2d_takes_non_contiguous_input() -> Result<()> {
        let x = input(&[2, 3, 6, 9], 20)?.transpose(2, 3)?; // (2, 3, 9, 6), strided
        assert!(!x.is_contiguous());
        check(c_s1p1, c_s1p1_ref, x, [4, 3, 3, 3], 21)?;
        let x = input(&[4, 3, 6, 6], 22)?.narrow(0, 1, 2)?.narrow(3, 1, 4)?;
        check(c_s2p1, c_s2p1_ref, x, [2, 3, 3, 3], 23)
    }

    #[test]
    fn conv_transpose2d_matches_candle_forward_and_gradients() -> Result<()> {
        for (x, w, args, seed) in [
            (vec![2, 4, 5, 5], [4, 3, 4, 4], (2, 1, 0), 30),
            (vec![1, 3, 4, 6], [3, 2, 3, 3], (2, 1, 1), 31),
            (vec![2, 2, 3, 3], [2, 5, 3, 3], (1, 0, 0), 32),
            (vec![3, 5, 7, 4], [5, 2, 3, 3], (1, 1, 0), 33),
            (vec![2, 3, 4, 4], [3, 4, 1, 1], (1, 0, 0), 34),
            // on the phases of the output gradient (16 channels, 10×10 inputs)
            (vec![2, 8, 10, 10], [8, 16, 4, 4], (2, 1, 0), 35),
        ] {
            T_ARGS.with(|c| c.set(args));
            T_CHECK.with(|c| c.set(true));
            check(conv_t_ours, conv_t_stock, input(&x, seed)?, w, seed + 100)?;
        }
        Ok(())
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() -> Result<()> {
        let x = input(&[5, 8, 11, 9], 40)?;
        let w = input(&[6, 8, 3, 3], 41)?;
        let b = input(&[6], 42)?;
        let bits = |threads: usize| -> Result<Vec<Vec<u32>>> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| Error::invalid("threads", e.to_string()))?;
            pool.install(|| {
                let mut out = run(c_s2p1, &x, &w, &b, 43)?;
                T_ARGS.with(|c| c.set((2, 1, 1)));
                out.extend(run(
                    conv_t_ours,
                    &x,
                    &w.transpose(0, 1)?.contiguous()?,
                    &input(&[6], 44)?,
                    45,
                )?);
                out.iter()
                    .map(|t| {
                        Ok(t.flatten_all()?
                            .to_vec1::<f32>()?
                            .iter()
                            .map(|v| v.to_bits())
                            .collect())
                    })
                    .collect()
            })
        };
        assert_eq!(bits(1)?, bits(2)?);
        assert_eq!(bits(2)?, bits(3)?);
        Ok(())
    }

    #[test]
    fn a_bias_per_image_and_channel_matches_a_broadcast_add() -> Result<()> {
        for (s, p) in [(1, 1), (2, 1)] {
            let (x, w, b) = (
                input(&[3, 2, 9, 7], 60)?, // (candle's stride-2 backward fails on even widths)
                input(&[4, 2, 3, 3], 61)?,
                input(&[3, 4], 62)?,
            );
            let r = input(conv2d_stock(&x, &w, Some(&b), s, p)?.dims(), 63)?;
            let ours = value_and_grads(
                |t| conv2d_cpu(&t[0], &t[1], Some(&t[2]), s, p),
                &[x.clone(), w.clone(), b.clone()],
                &r,
            )?;
            let stock = value_and_grads(
                |t| conv2d_stock(&t[0], &t[1], Some(&t[2]), s, p),
                &[x, w, b],
                &r,
            )?;
            assert_close(
                &ours,
                &stock,
                &["y", "dx", "dw", "db"],
                1e-5,
                "per-image bias",
            )?;
        }
        Ok(())
    }

    #[test]
    fn a_fused_residual_matches_a_convolution_then_an_add() -> Result<()> {
        let (x, w, b) = (
            input(&[3, 4, 7, 6], 70)?,
            input(&[5, 4, 3, 3], 71)?,
            input(&[5], 72)?,
        );
        let r = input(&[3, 5, 7, 6], 73)?;
        let up = input(&[3, 5, 7, 6], 74)?;
        let ours = value_and_grads(
            |t| conv2d_residual(&t[0], &t[1], &t[2], &t[3], 1, 1),
            &[x.clone(), w.clone(), b.clone(), r.clone()],
            &up,
        )?;
        let stock = value_and_grads(
            |t| Ok((conv2d_stock(&t[0], &t[1], Some(&t[2]), 1, 1)? + &t[3])?),
            &[x, w, b, r],
            &up,
        )?;
        assert_close(
            &ours,
            &stock,
            &["y", "dx", "dw", "db", "dr"],
            1e-5,
            "residual",
        )?;
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() -> Result<()> {
        let x = input(&[1, 3, 4, 4], 50)?;
        let w = input(&[2, 3, 3, 3], 55)?;
        for bad in [&[3][..], &[2, 2], &[1, 2, 1]] {
            let e = conv2d_cpu(&x, &w, Some(&input(bad, 56)?), 1, 1).unwrap_err();
            assert!(e.to_string().contains("expected (2,) or (1, 2)"), "{e}");
        }
        let xt = input(&[2, 3, 4, 4], 57)?;
        let e = conv_transpose2d_cpu(
            &xt,
            &input(&[3, 2, 3, 3], 58)?,
            Some(&input(&[2, 2], 59)?),
            1,
            0,
            0,
        );
        assert!(e.unwrap_err().to_string().contains("expected (2,)"));
        assert!(conv2d_cpu(&x, &input(&[2, 4, 3, 3], 51)?, None, 1, 1).is_err()); // channels
        assert!(conv2d_cpu(&x, &input(&[2, 3, 7, 7], 52)?, None, 1, 1).is_err()); // kernel > input
        assert!(conv2d_cpu(&x, &input(&[2, 3, 3, 3], 53)?, None, 0, 1).is_err()); // stride 0
        assert!(conv_transpose2d_cpu(&x, &input(&[3, 2, 3, 3], 54)?, None, 2, 1, 2).is_err());
        Ok(())
    }
}
