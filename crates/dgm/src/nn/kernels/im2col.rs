//! The three GEMM kernels of dgm's convolutions on NCHW data (see [`super::conv`] for how they serve
//! conv2d and its transpose): each a single-threaded [`sgemm`] call per image (and tile of output rows)
//! around an im2col / col2im, with rayon over images.
//!
//! * [`conv_forward`]:      `y_i = W · col(x_i) + b`           (c_out × P) = (c_out × K)(K × P)
//! * [`conv_input_grad`]:   `dx_i = col2im(Wᵀ · dy_i)`         (K × P) = (K × c_out)(c_out × P)
//! * [`conv_weight_grad`]:  `dW = Σ_i dy_i · col(x_i)ᵀ`        (c_out × K) = (c_out × P)(P × K)
//!
//! with K = c_in·k·k and P the output positions. Tiles of output rows keep the im2col buffer in the core's
//! L2 (≈ 512 KB); scratch buffers are reused per thread. Stride-1 convolutions (forward, and so the
//! input gradient too, and the weight gradient) skip all this: `super::implicit` runs them as an implicit
//! GEMM on the zero-padded image (3×3 ones with many channels by Winograd's algorithm, `super::winograd`);
//! strided ones whose kernel size is a multiple of the stride become stride-1 convolutions on the input's
//! phases (`super::phases`). Each output element is computed by one gemm call and the weight gradient
//! sums fixed chunks of the batch in a fixed order, so results do not depend on the thread count.

use std::cell::RefCell;

use rayon::prelude::*;

use super::gemm::sgemm;
use super::par_chunks_from_planes;

/// The geometry of one convolution `x: (n, ci, h, w)` ∗ `W: (co, ci, k, k)` → `y: (n, co, oh, ow)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geom {
    pub(super) n: usize,
    pub(super) ci: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) co: usize,
    pub(super) k: usize,
    pub(super) s: usize,
    pub(super) p: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
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
    /// For a stride-1 convolution with padding < k, the geometry of the forward convolution that computes
    /// its input gradient: `dx = dy ∗ flip(W)ᵀ` with padding k − 1 − p (weights from [`Geom::flip_weights`]).
    pub(super) fn flipped(&self) -> Option<Geom> {
        (self.s == 1 && self.p < self.k).then_some(Geom {
            n: self.n,
            ci: self.co,
            h: self.oh,
            w: self.ow,
            co: self.ci,
            k: self.k,
            s: 1,
            p: self.k - 1 - self.p,
            oh: self.h,
            ow: self.w,
        })
    }
    /// `W'[c, o, ky, kx] = W[o, c, k−1−ky, k−1−kx]`: the weight of [`Geom::flipped`]'s convolution.
    pub(super) fn flip_weights(&self, w: &[f32]) -> Vec<f32> {
        let (kk, ci, co) = (self.k * self.k, self.ci, self.co);
        let mut out = vec![0f32; w.len()];
        for o in 0..co {
            for c in 0..ci {
                for t in 0..kk {
                    out[(c * co + o) * kk + (kk - 1 - t)] = w[(o * ci + c) * kk + t];
                }
            }
        }
        out
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
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
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

/// The bias of output plane (image `i`, channel `c`) of `planes` channels: `b` holds one value per channel
/// or one per image and channel (`n · planes`), or is absent (0).
pub(super) fn plane_bias(
    b: Option<&[f32]>,
    planes: usize,
) -> impl Fn(usize, usize) -> f32 + Sync + '_ {
    move |i, c| match b {
        Some(b) if b.len() == planes => b[c],
        Some(b) => b[i * planes + c],
        None => 0.0,
    }
}

/// Forward: `y (n, co, oh, ow) = W ∗ x + b` (b optional: per channel, or per image and channel).
pub(super) fn conv_forward(g: &Geom, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    if super::implicit::applies(g) {
        return stride1_forward(g, x, w, b, None);
    }
    if super::phases::applies(g) {
        return super::phases::conv_forward(g, x, w, b);
    }
    gemm_forward(g, x, w, b)
}

/// The forward of a convolution [`super::implicit::applies`] to (stride 1), plus `residual` (shaped like
/// y) when given: Winograd's algorithm where it applies (a subset), else the implicit GEMM.
pub(super) fn stride1_forward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    if super::winograd::applies(g) {
        super::winograd::conv_forward(g, x, w, b, residual)
    } else {
        super::implicit::conv_forward(g, x, w, b, residual)
    }
}

/// [`conv_forward`] on im2col + GEMM, whatever the geometry.
pub(super) fn gemm_forward(g: &Geom, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let (kd, pp) = (g.kdim(), g.oh * g.ow);
    let bias = plane_bias(b, g.co);
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
pub(super) fn conv_input_grad(g: &Geom, dy: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    if super::phases::applies(g) {
        return super::phases::conv_input_grad(g, dy, w, b);
    }
    gemm_input_grad(g, dy, w, b)
}

/// [`conv_input_grad`] on GEMM + col2im, whatever the geometry.
pub(super) fn gemm_input_grad(g: &Geom, dy: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let (kd, pp, hw) = (g.kdim(), g.oh * g.ow, g.h * g.w);
    let bias = plane_bias(b, g.ci);
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
pub(super) fn conv_weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if super::phases::applies(g) {
        return super::phases::conv_weight_grad(g, x, dy);
    }
    weight_grad_by_chunks(g, x, dy)
}

/// [`conv_weight_grad`] without the phase decomposition: per chunk of the batch, the implicit GEMM where it
/// applies, else im2col + GEMM.
pub(super) fn weight_grad_by_chunks(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
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
        if super::implicit::applies(g) {
            return super::implicit::weight_grad(g, images);
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

/// `Σ_positions` of one plane: eight f32 lanes (independent sums, so the loop vectorises instead of
/// waiting on one chain of adds), the lanes added in f64.
fn plane_sum(row: &[f32]) -> f64 {
    const LANES: usize = 8;
    let (blocks, rest) = row.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for blk in blocks {
        for (a, v) in acc.iter_mut().zip(blk) {
            *a += v;
        }
    }
    acc.iter().chain(rest).map(|&v| f64::from(v)).sum()
}

/// `Σ_positions t` per image and channel of `t: (n, c, positions)` → (n · c), each plane as in
/// [`plane_sum`].
pub(super) fn plane_sums(t: &[f32], n: usize, c: usize) -> Vec<f32> {
    let plane = t.len() / (n * c).max(1);
    if plane == 0 {
        return vec![0.0; n * c];
    }
    t.par_chunks(plane).map(|p| plane_sum(p) as f32).collect()
}

/// `Σ_{n, positions} t` per channel of `t: (n, c, positions)`, in a fixed order: each plane as in
/// [`plane_sum`], the planes added in f64.
pub(super) fn channel_sums(t: &[f32], n: usize, c: usize) -> Vec<f32> {
    let plane = t.len() / (n * c).max(1);
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
