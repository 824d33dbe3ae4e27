//! 2-D convolution and transposed convolution. On the CPU in f32 they run on dgm's GEMM-based kernels
//! (forward and both gradients); elsewhere, or after [`super::set_stock_ops`], on candle's stock ops.
//!
//! Three kernels on NCHW data do all the work, each a single-threaded [`gemm`] call per image (and tile of
//! output rows) around an im2col / col2im, with rayon over images:
//!
//! * forward:  `y_i = W · col(x_i) + b`                      (c_out × P) = (c_out × K)(K × P)
//! * input grad: `dx_i = col2im(Wᵀ · dy_i)`                  (K × P) = (K × c_out)(c_out × P)
//! * weight grad: `dW = Σ_i dy_i · col(x_i)ᵀ`                (c_out × K) = (c_out × P)(P × K)
//!
//! with K = c_in·k·k and P the output positions. A transposed convolution is the input gradient of a
//! convolution, so the same three kernels give it forward and backward with the roles swapped. Two stride-1
//! shortcuts: the input gradient is a forward convolution of dy with the flipped kernel (an im2col and a
//! GEMM with inner dimension c_out·k·k instead of a col2im), and the weight gradient needs no im2col at
//! all (one GEMM per kernel tap on a zero-padded copy, `weight_grad_shifted`). Tiles of output rows
//! keep the im2col buffer in the core's L2 (≈ 512 KB); scratch buffers are reused per thread. Results do
//! not depend on the thread count: each output element is computed by one gemm call, and the weight
//! gradient sums fixed chunks of the batch in a fixed order.

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::sgemm;
use super::kernels::{cpu_f32, par_chunks_from_planes};
use crate::{Error, Result};

/// The geometry of one convolution `x: (n, ci, h, w)` ∗ `W: (co, ci, k, k)` → `y: (n, co, oh, ow)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geom {
    n: usize,
    ci: usize,
    h: usize,
    w: usize,
    co: usize,
    k: usize,
    s: usize,
    p: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    /// Rows of the im2col matrix, c_in·k·k.
    fn kdim(&self) -> usize {
        self.ci * self.k * self.k
    }
    fn in_len(&self) -> usize {
        self.ci * self.h * self.w
    }
    fn out_len(&self) -> usize {
        self.co * self.oh * self.ow
    }
    /// A 1×1, stride-1, unpadded convolution needs no im2col: col(x) is x itself.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.s == 1 && self.p == 0
    }
    /// Output rows per tile so that the tile's im2col block stays around 512 KB.
    fn tile_rows(&self) -> usize {
        let per_row = self.kdim() * self.ow * 4;
        (512 * 1024 / per_row.max(1)).clamp(1, self.oh.max(1))
    }
}

/// Images per chunk of the weight-gradient sum: at most 16 partial sums, fixed by the batch size alone.
fn wgrad_chunk(n: usize) -> usize {
    n.div_ceil(16).max(1)
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a per-thread scratch buffer of at least `len` floats (contents unspecified). The buffer is
/// taken out of its cell while in use, so a nested call (rayon work stealing) gets a fresh one.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|c| std::mem::take(&mut *c.borrow_mut()));
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    SCRATCH.with(|c| {
        let mut cell = c.borrow_mut();
        if cell.len() < buf.len() {
            *cell = buf;
        }
    });
    r
}

/// Writes the im2col block of output rows `oy0..oy1` of image `x: (ci, h, w)` into `col`
/// ((ci·k·k) × ((oy1 − oy0)·ow), row-major).
fn im2col(g: &Geom, x: &[f32], oy0: usize, oy1: usize, col: &mut [f32]) {
    let (k, s, p, ow) = (g.k, g.s, g.p, g.ow);
    let cols = (oy1 - oy0) * ow;
    for (r, row) in col.chunks_exact_mut(cols).enumerate().take(g.kdim()) {
        let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        if s == 1 && ow == g.w {
            im2col_row_same_width(g, plane, ky, kx, oy0, oy1, row);
            continue;
        }
        // output columns ox whose input column ox·s + kx − p lies inside [0, w)
        let ox_lo = p.saturating_sub(kx).div_ceil(s).min(ow);
        let ox_hi = if g.w + p > kx {
            ((g.w + p - kx - 1) / s + 1).min(ow)
        } else {
            0
        }
        .max(ox_lo);
        for (dst, oy) in row.chunks_exact_mut(ow).zip(oy0..oy1) {
            let iy = (oy * s + ky) as isize - p as isize;
            if iy < 0 || iy as usize >= g.h {
                dst.fill(0.0);
                continue;
            }
            let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
            dst[..ox_lo].fill(0.0);
            dst[ox_hi..].fill(0.0);
            if s == 1 {
                let ix0 = ox_lo + kx - p;
                dst[ox_lo..ox_hi].copy_from_slice(&src[ix0..ix0 + ox_hi - ox_lo]);
            } else {
                // a strided gather written as chunks so that it vectorises (shuffles)
                let ix0 = ox_lo * s + kx - p;
                let n = ox_hi - ox_lo;
                let full = n.saturating_sub(1);
                for (d, c) in dst[ox_lo..ox_lo + full]
                    .iter_mut()
                    .zip(src[ix0..].chunks_exact(s))
                {
                    *d = c[0];
                }
                if n > 0 {
                    dst[ox_hi - 1] = src[(ox_hi - 1) * s + kx - p];
                }
            }
        }
    }
}

/// One row (c, ky, kx) of [`im2col`] for a stride-1 convolution whose output is as wide as its input
/// (`ow == w`, e.g. 3×3 with padding 1): the row is then the input plane shifted by a constant offset, so
/// it is one contiguous copy, followed by zeroing the rows above / below the plane and the columns that
/// wrapped around the left / right edge.
fn im2col_row_same_width(
    g: &Geom,
    plane: &[f32],
    ky: usize,
    kx: usize,
    oy0: usize,
    oy1: usize,
    row: &mut [f32],
) {
    let (w, p) = (g.w, g.p);
    // output rows whose input row oy + ky − p lies inside [0, h)
    let a = p.saturating_sub(ky).clamp(oy0, oy1);
    let b = (g.h + p).saturating_sub(ky).clamp(a, oy1);
    row[..(a - oy0) * w].fill(0.0);
    row[(b - oy0) * w..].fill(0.0);
    if a == b {
        return;
    }
    let d = &mut row[(a - oy0) * w..(b - oy0) * w];
    let shift = kx as isize - p as isize;
    let start = ((a + ky - p) * w) as isize + shift;
    let lo = (-start).max(0) as usize;
    let hi = ((plane.len() as isize - start).max(0) as usize).min(d.len());
    d[..lo].fill(0.0);
    d[hi..].fill(0.0);
    if lo < hi {
        let s0 = (start + lo as isize) as usize;
        d[lo..hi].copy_from_slice(&plane[s0..s0 + hi - lo]);
    }
    let edge = shift.unsigned_abs().min(w);
    if edge > 0 {
        for line in d.chunks_exact_mut(w) {
            if shift < 0 {
                line[..edge].fill(0.0);
            } else {
                line[w - edge..].fill(0.0);
            }
        }
    }
}

/// Adds the col2im of `col` (the block of output rows `oy0..oy1`, laid out as in [`im2col`]) into
/// `dx: (ci, h, w)`.
fn col2im_add(g: &Geom, col: &[f32], oy0: usize, oy1: usize, dx: &mut [f32]) {
    let (k, s, p, ow) = (g.k, g.s, g.p, g.ow);
    let cols = (oy1 - oy0) * ow;
    for (r, row) in col.chunks_exact(cols).enumerate().take(g.kdim()) {
        let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        let ox_lo = p.saturating_sub(kx).div_ceil(s).min(ow);
        let ox_hi = if g.w + p > kx {
            ((g.w + p - kx - 1) / s + 1).min(ow)
        } else {
            0
        }
        .max(ox_lo);
        for (src, oy) in row.chunks_exact(ow).zip(oy0..oy1) {
            let iy = (oy * s + ky) as isize - p as isize;
            if iy < 0 || iy as usize >= g.h {
                continue;
            }
            let dst = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
            if s == 1 {
                let ix0 = ox_lo + kx - p;
                for (d, v) in dst[ix0..ix0 + ox_hi - ox_lo]
                    .iter_mut()
                    .zip(&src[ox_lo..ox_hi])
                {
                    *d += v;
                }
            } else {
                for ox in ox_lo..ox_hi {
                    dst[ox * s + kx - p] += src[ox];
                }
            }
        }
    }
}

/// Output-row tiles `(oy0, oy1)` of one image.
fn tiles(g: &Geom) -> impl Iterator<Item = (usize, usize)> {
    let (t, oh) = (g.tile_rows(), g.oh);
    (0..oh.div_ceil(t)).map(move |i| (i * t, ((i + 1) * t).min(oh)))
}

/// Forward: `y (n, co, oh, ow) = W ∗ x + b` (b optional).
fn conv_forward(g: &Geom, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let (kd, pp) = (g.kdim(), g.oh * g.ow);
    let bias = |c: usize| b.map_or(0.0, |b| b[c]);
    let one_image = |i: usize, yi: &mut [f32]| {
        let xi = &x[i * g.in_len()..(i + 1) * g.in_len()];
        if g.pointwise() {
            sgemm(
                (g.co, pp, kd),
                yi,
                pp,
                b.is_some(),
                w,
                (kd, 1),
                xi,
                (pp, 1),
                false,
            );
            return;
        }
        with_scratch(kd * g.tile_rows() * g.ow, |col| {
            for (oy0, oy1) in tiles(g) {
                let cols = (oy1 - oy0) * g.ow;
                let col = &mut col[..kd * cols];
                im2col(g, xi, oy0, oy1, col);
                let dst = &mut yi[oy0 * g.ow..];
                sgemm(
                    (g.co, cols, kd),
                    dst,
                    pp,
                    b.is_some(),
                    w,
                    (kd, 1),
                    col,
                    (cols, 1),
                    false,
                );
            }
        });
    };
    par_chunks_from_planes(g.n, g.co, pp, bias, one_image)
}

/// Input gradient: `dx (n, ci, h, w) = col2im(Wᵀ · dy) [+ b]`; with `b` this is a transposed convolution's
/// forward pass (b indexed by the `ci` channels).
fn conv_input_grad(g: &Geom, dy: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let (kd, pp, hw) = (g.kdim(), g.oh * g.ow, g.h * g.w);
    let bias = |c: usize| b.map_or(0.0, |b| b[c]);
    let one_image = |i: usize, dxi: &mut [f32]| {
        let dyi = &dy[i * g.out_len()..(i + 1) * g.out_len()];
        if g.pointwise() {
            sgemm(
                (kd, pp, g.co),
                dxi,
                pp,
                b.is_some(),
                w,
                (1, kd),
                dyi,
                (pp, 1),
                false,
            );
            return;
        }
        with_scratch(kd * g.tile_rows() * g.ow, |col| {
            for (oy0, oy1) in tiles(g) {
                let cols = (oy1 - oy0) * g.ow;
                let col = &mut col[..kd * cols];
                let src = &dyi[oy0 * g.ow..];
                sgemm(
                    (kd, cols, g.co),
                    col,
                    cols,
                    false,
                    w,
                    (1, kd),
                    src,
                    (pp, 1),
                    false,
                );
                col2im_add(g, col, oy0, oy1, dxi);
            }
        });
    };
    par_chunks_from_planes(g.n, g.ci, hw, bias, one_image)
}

/// Weight gradient: `dW (co, ci·k·k) = Σ_i dy_i · col(x_i)ᵀ`, summed over fixed chunks of the batch in a
/// fixed order (the same bits for any thread count).
fn conv_weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (kd, pp) = (g.kdim(), g.oh * g.ow);
    let chunk = wgrad_chunk(g.n);
    let partial = |(xs, dys): (&[f32], &[f32])| -> Vec<f32> {
        let mut dw = vec![0f32; g.co * kd];
        let images = xs
            .chunks_exact(g.in_len().max(1))
            .zip(dys.chunks_exact(g.out_len().max(1)));
        if g.pointwise() {
            for (xi, dyi) in images {
                sgemm(
                    (g.co, kd, pp),
                    &mut dw,
                    kd,
                    true,
                    dyi,
                    (pp, 1),
                    xi,
                    (1, pp),
                    false,
                );
            }
            return dw;
        }
        if g.s == 1 {
            return weight_grad_shifted(g, images);
        }
        with_scratch(kd * g.tile_rows() * g.ow, |col| {
            for (xi, dyi) in images {
                for (oy0, oy1) in tiles(g) {
                    let cols = (oy1 - oy0) * g.ow;
                    let col = &mut col[..kd * cols];
                    im2col(g, xi, oy0, oy1, col);
                    let src = &dyi[oy0 * g.ow..];
                    sgemm(
                        (g.co, kd, cols),
                        &mut dw,
                        kd,
                        true,
                        src,
                        (pp, 1),
                        col,
                        (1, cols),
                        false,
                    );
                }
            }
        });
        dw
    };
    let partials: Vec<Vec<f32>> = x
        .par_chunks(chunk * g.in_len().max(1))
        .zip(dy.par_chunks(chunk * g.out_len().max(1)))
        .map(partial)
        .collect();
    let mut parts = partials.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![0f32; g.co * kd]);
    for part in parts {
        for (a, b) in dw.iter_mut().zip(&part) {
            *a += b;
        }
    }
    dw
}

/// The weight gradient of a stride-1 convolution over some images without im2col: one GEMM per kernel tap,
/// `dW[:, :, ky, kx] += dy_i · shift_{ky,kx}(x_i)ᵀ` with inner dimension = output positions. On a zero-padded
/// copy of x (h + 2p rows of w + 2p) every shifted view is a plain strided matrix if the output is laid out
/// on the padded width too (dy copied in with zeros in the w + 2p − ow extra columns, so those columns add
/// nothing). Two copies of about the image's size replace an im2col k² times its size.
fn weight_grad_shifted<'a>(
    g: &Geom,
    images: impl Iterator<Item = (&'a [f32], &'a [f32])>,
) -> Vec<f32> {
    let (k, ci, co) = (g.k, g.ci, g.co);
    let (hp, wp) = (g.h + 2 * g.p, g.w + 2 * g.p);
    let plane = hp * wp;
    let pw = g.oh * wp; // output positions on the padded width
    let xlen = ci * plane + k; // + slack: the last tap's view reaches k − 1 past the last plane
    let mut taps = vec![0f32; k * k * co * ci]; // (k·k, co, ci)
    with_scratch(xlen + co * pw, |buf| {
        let (xpad, dypad) = buf.split_at_mut(xlen);
        for (xi, dyi) in images {
            xpad.fill(0.0);
            for (c, src) in xi.chunks_exact(g.h * g.w).enumerate() {
                for (y, row) in src.chunks_exact(g.w).enumerate() {
                    let at = c * plane + (y + g.p) * wp + g.p;
                    xpad[at..at + g.w].copy_from_slice(row);
                }
            }
            for (dst, src) in dypad.chunks_exact_mut(wp).zip(dyi.chunks_exact(g.ow)) {
                dst[..g.ow].copy_from_slice(src);
                dst[g.ow..].fill(0.0);
            }
            for (t, acc) in taps.chunks_exact_mut(co * ci).enumerate() {
                let off = (t / k) * wp + t % k;
                // (co × ci) += dy_pad (co × pw) · view (pw × ci), view[q][c] = xpad[off + c·plane + q]
                sgemm(
                    (co, ci, pw),
                    acc,
                    ci,
                    true,
                    dypad,
                    (pw, 1),
                    &xpad[off..],
                    (1, plane),
                    false,
                );
            }
        }
    });
    // (k·k, co, ci) → (co, ci, k·k)
    let mut dw = vec![0f32; co * ci * k * k];
    for (t, tap) in taps.chunks_exact(co * ci).enumerate() {
        for (oc, &v) in tap.iter().enumerate() {
            dw[oc * k * k + t] = v;
        }
    }
    dw
}

/// `Σ_{n, positions} t` per channel of `t: (n, c, positions)`, in a fixed order: per plane eight f32
/// lanes (independent sums, so the loop vectorises instead of waiting on one chain of adds), the lanes and
/// planes added in f64.
fn channel_sums(t: &[f32], n: usize, c: usize) -> Vec<f32> {
    const LANES: usize = 8;
    let plane = t.len() / (n * c).max(1);
    let plane_sum = |row: &[f32]| -> f64 {
        let (blocks, rest) = row.as_chunks::<LANES>();
        let mut acc = [0f32; LANES];
        for blk in blocks {
            for (a, v) in acc.iter_mut().zip(blk) {
                *a += v;
            }
        }
        acc.iter().chain(rest).map(|&v| f64::from(v)).sum()
    };
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let acc: f64 = (0..n)
                .map(|i| plane_sum(&t[(i * c + ch) * plane..(i * c + ch + 1) * plane]))
                .sum();
            acc as f32
        })
        .collect()
}

/// For a stride-1 convolution with padding < k, the geometry of the forward convolution that computes its
/// input gradient: `dx = dy ∗ flip(W)ᵀ` with padding k − 1 − p.
fn flipped(g: &Geom) -> Option<Geom> {
    (g.s == 1 && g.p < g.k).then_some(Geom {
        n: g.n,
        ci: g.co,
        h: g.oh,
        w: g.ow,
        co: g.ci,
        k: g.k,
        s: 1,
        p: g.k - 1 - g.p,
        oh: g.h,
        ow: g.w,
    })
}

/// `W'[c, o, ky, kx] = W[o, c, k−1−ky, k−1−kx]`: the weight of [`flipped`]'s convolution.
fn flip_transpose(w: &Tensor, g: &Geom) -> candle_core::Result<Tensor> {
    let v = w.flatten_all()?.to_vec1::<f32>()?;
    let (k, ci, co) = (g.k, g.ci, g.co);
    let mut out = vec![0f32; v.len()];
    for o in 0..co {
        for c in 0..ci {
            for t in 0..k * k {
                out[(c * co + o) * k * k + (k * k - 1 - t)] = v[(o * ci + c) * k * k + t];
            }
        }
    }
    Tensor::from_vec(out, (ci, co, k, k), w.device())
}

/// Conv forward as an op on (x, w, b); its backward runs the two gradient kernels.
struct ConvFwd(Geom);
/// Conv input gradient as an op on (dy, w, b) — a transposed convolution's forward; its backward runs the
/// forward and weight-gradient kernels.
struct ConvDx(Geom);
/// Conv weight gradient as an op on (x, dy) → (co, ci, k, k). No backward.
struct ConvDw(Geom);
/// Per-channel sums of an NCHW tensor → (c,). No backward.
struct ChannelSum;

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
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.0;
        let grad = grad.contiguous()?;
        let zero = Tensor::zeros(g.ci, grad.dtype(), grad.device())?;
        let dx = match (x.track_op(), flipped(&g)) {
            (false, _) => None,
            // stride 1: dx = dy ∗ flip(W)ᵀ, a forward convolution with inner dimension c_out·k·k
            (true, Some(gf)) => {
                let wf = flip_transpose(w, &g)?;
                Some(grad.apply_op3_no_bwd(&wf, &zero, &ConvFwd(gf))?)
            }
            (true, _) => Some(grad.apply_op3_no_bwd(w, &zero, &ConvDx(g))?),
        };
        let dw = x.apply_op2_no_bwd(&grad, &ConvDw(g))?;
        let db = grad.apply_op1_no_bwd(&ChannelSum)?;
        Ok((dx, Some(dw), Some(db)))
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
        let d_in = if dy.track_op() {
            let zero = Tensor::zeros(g.co, grad.dtype(), grad.device())?;
            Some(grad.apply_op3_no_bwd(w, &zero, &ConvFwd(g))?)
        } else {
            None
        };
        let dw = grad.apply_op2_no_bwd(dy, &ConvDw(g))?;
        let db = grad.apply_op1_no_bwd(&ChannelSum)?;
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
        Ok((CpuStorage::F32(channel_sums(t, n, c)), Shape::from(c)))
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

/// The bias to pass to a kernel op: `b`, or zeros of length `c`.
fn bias_or_zero(b: Option<&Tensor>, c: usize, like: &Tensor) -> Result<Tensor> {
    Ok(match b {
        Some(b) => b.contiguous()?,
        None => Tensor::zeros(c, like.dtype(), like.device())?,
    })
}

/// `conv2d(x, w) + b` for `x: (n, c_in, h, w)`, `w: (c_out, c_in, k, k)`, `b: (c_out,)`.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if super::use_cpu_kernel(x) {
        conv2d_cpu(x, w, b, stride, padding)
    } else {
        conv2d_stock(x, w, b, stride, padding)
    }
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
    let bias = bias_or_zero(b, g.co, x)?;
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
    if super::use_cpu_kernel(x) {
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
    let bias = bias_or_zero(b, co_t, x)?;
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
    fn bad_shapes_are_errors_not_panics() -> Result<()> {
        let x = input(&[1, 3, 4, 4], 50)?;
        assert!(conv2d_cpu(&x, &input(&[2, 4, 3, 3], 51)?, None, 1, 1).is_err()); // channels
        assert!(conv2d_cpu(&x, &input(&[2, 3, 7, 7], 52)?, None, 1, 1).is_err()); // kernel > input
        assert!(conv2d_cpu(&x, &input(&[2, 3, 3, 3], 53)?, None, 0, 1).is_err()); // stride 0
        assert!(conv_transpose2d_cpu(&x, &input(&[3, 2, 3, 3], 54)?, None, 2, 1, 2).is_err());
        Ok(())
    }
}
