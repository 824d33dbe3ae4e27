//! The stride-1 convolution as an implicit GEMM — its forward (and so, through the flipped kernel, its input
//! gradient) and its weight gradient: no im2col matrix and no packing of the image.
//!
//! On a zero-padded copy of one image (`ci` planes of h + 2p rows of width wp = w + p: a row's right padding
//! is the next row's left padding), output position `q = oy·wp + ox` — the output laid out on the padded
//! width — reads tap `(c, ky, kx)` at `xpad[c·plane + ky·wp + kx + q]`. So for a run of consecutive `q`
//! every tap is one contiguous load, and
//!
//! `y'[o, q] = b[o] + Σ_k W[o, k] · xpad[off_k + q]`,  k = (c, ky, kx), off_k = c·plane + ky·wp + kx,
//!
//! is a matrix product whose right-hand matrix is read straight from the padded image. A register tile of
//! MR output channels × NR positions accumulates over all k (weights broadcast from a copy packed once per
//! call, MR at a time); the columns `ox ≥ ow` of `y'` (about p/w of the work) are computed and dropped.
//! Outputs at valid positions read only their own plane (a tap past the row's end, `ox + kx ≥ wp`, lands
//! in the next row's left padding, zero as it should be).
//!
//! The weight gradient is the same product the other way round, `dW[o, k] = Σ_q dy'[o, q] · xpad[off_k + q]`
//! with dy laid out on the padded image (zeros elsewhere); see [`weight_grad`]. Scratch per thread: the padded
//! image and one image's (or stack's) output, reused from call to call.
//!
//! Builds: AVX-512 (MR 8 × NR 48: 24 accumulators in zmm registers, fused multiply-adds), AVX2 + FMA
//! (MR 6 × NR 16 in ymm registers) and the baseline (plain multiply and add, MR 4 × NR 16). Each output sums
//! its k terms in the same order on every build; the FMA builds round each step once instead of twice, so
//! the builds agree to rounding, not bit for bit. Results do not depend on the thread count (one thread
//! computes each output position, summing in a fixed order).

use super::im2col::{with_scratch, Geom};
use super::isa::{isa, Isa};
use super::math::add;
use super::par_stacks_from_planes;

/// Whether [`conv_forward`] serves this convolution: stride 1 with padding below the kernel size, not 1×1.
pub(super) fn applies(g: &Geom) -> bool {
    g.s == 1 && g.p < g.k && !(g.k == 1 && g.p == 0)
}

/// The register tile of one build: MR output channels × NR positions.
#[derive(Clone, Copy)]
pub(super) struct Tile {
    pub(super) mr: usize,
    pub(super) nr: usize,
}

/// The forward register tile of the build `isa`.
pub(super) fn tile_of(isa: Isa) -> Tile {
    match isa {
        Isa::Avx512 => Tile { mr: 8, nr: 48 },
        Isa::Avx2 => Tile { mr: 6, nr: 16 },
        Isa::Baseline => Tile { mr: 4, nr: 16 },
    }
}

/// `W (co × K)` packed as blocks of `mr` channels, k-major: `[block][k][mr]`, the last block zero-padded.
pub(super) fn pack_weights(w: &[f32], co: usize, kd: usize, mr: usize) -> Vec<f32> {
    let blocks = co.div_ceil(mr);
    let mut out = vec![0f32; blocks * kd * mr];
    for (o, row) in w.chunks_exact(kd).enumerate().take(co) {
        let (blk, m) = (o / mr, o % mr);
        let base = blk * kd * mr;
        for (k, &v) in row.iter().enumerate() {
            out[base + k * mr + m] = v;
        }
    }
    out
}

/// (plane, wp): the length of one zero-padded plane and its row width `wp = w + p`. A row's right padding
/// is the next row's left padding (both zero), so each row carries p zeros, not 2p: `x[r, c]` sits at
/// `(p + r)·wp + p + c`, and the plane is `(h + 2p)·wp + p` long (the last row's right padding included).
fn padded(g: &Geom) -> (usize, usize) {
    let wp = g.w + g.p;
    ((g.h + 2 * g.p) * wp + g.p, wp)
}

/// `off_k = c·cstride + ky·wp + kx` for k = (c, ky, kx) in weight order (increasing with k), with channel
/// planes `cstride` apart.
fn offsets(g: &Geom, cstride: usize) -> Vec<usize> {
    let (_, wp) = padded(g);
    (0..g.ci * g.k * g.k)
        .map(|r| {
            let (c, ky, kx) = (r / (g.k * g.k), (r / g.k) % g.k, r % g.k);
            c * cstride + ky * wp + kx
        })
        .collect()
}

/// Writes image `x: (ci, h, w)` zero-padded into `xpad` ([`padded`]'s layout), channel c's plane at
/// `c·cstride`: the top rows and the first row's left padding, then each image row followed by p zeros (its
/// right padding, the next row's left), then the bottom rows. Only the planes are written.
fn pad_image(g: &Geom, x: &[f32], xpad: &mut [f32], cstride: usize) {
    let (plane, wp) = padded(g);
    let first = g.p * wp + g.p;
    for (c, src) in x.chunks_exact(g.h * g.w).enumerate() {
        let dst = &mut xpad[c * cstride..c * cstride + plane];
        let (top, rest) = dst.split_at_mut(first);
        top.fill(0.0);
        let (body, bottom) = rest.split_at_mut(g.h * wp);
        bottom.fill(0.0);
        for (row, src) in body.chunks_exact_mut(wp).zip(src.chunks_exact(g.w)) {
            row[..g.w].copy_from_slice(src);
            row[g.w..].fill(0.0);
        }
    }
}

/// Output positions one forward pass covers at least: small images are stacked (as in [`weight_grad`]) so
/// that rounding the positions up to whole register tiles wastes little (a 7 × 7 image alone fills 2 tiles
/// of 48 positions to 58 %).
const FORWARD_POSITIONS: usize = 512;

/// Forward of a stride-1 convolution ([`applies`]): `y (n, co, oh, ow) = W ∗ x + b`, `b` per channel or
/// per image and channel (as in `im2col::conv_forward`); plus `residual` (shaped like y) when given.
/// Images small enough are stacked along the positions, image b of a stack at `b·(h + p)·wp` (sharing
/// padding rows); the stack size changes only which positions a pass holds, never an output's sum, so
/// results do not depend on it (nor on the thread count, which bounds it).
pub(super) fn conv_forward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let (pp, ow) = (g.oh * g.ow, g.ow);
    // the valid positions (ox < ow) of each row, plus the residual's
    let planes = |i: usize, o: usize, src: &[f32], wp: usize, yi: &mut [f32]| {
        let yo = &mut yi[o * pp..(o + 1) * pp];
        for (dst, src) in yo.chunks_exact_mut(ow).zip(src.chunks(wp)) {
            add(dst, &src[..ow]);
        }
        if let Some(r) = residual {
            add(yo, &r[(i * g.co + o) * pp..(i * g.co + o + 1) * pp]);
        }
    };
    let bias = super::im2col::plane_bias(b, g.co);
    forward_placed(g, (x, w), (g.co, pp), bias, planes)
}

/// The forward's products, each output channel placed by `place(image, o, rows, wp, image's output)` (`rows`:
/// its `oh` rows of `wp` positions, the first `ow` of each valid) into an output of `planes` planes of `plane`
/// floats per image, plane p starting as `bias(image, p)`: [`conv_forward`] places them as `y`'s planes, a
/// phase decomposition ([`super::phases`]) straight where its scatter would.
pub(super) fn forward_placed(
    g: &Geom,
    (x, w): (&[f32], &[f32]),
    (planes, plane): (usize, usize),
    bias: impl Fn(usize, usize) -> f32 + Sync,
    place: impl Fn(usize, usize, &[f32], usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let isa = isa();
    let t = tile_of(isa);
    let kd = g.ci * g.k * g.k;
    let (xplane, wp) = padded(g);
    let pstride = (g.h + g.p) * wp; // from one image of a stack to the next
    let most = g.n.div_ceil(4 * rayon::current_num_threads()).max(1);
    let stack = FORWARD_POSITIONS.div_ceil(pstride.max(1)).clamp(1, most);
    let span = (stack - 1) * pstride + xplane; // one channel of a stack
    let offs = offsets(g, span);
    // output positions on the padded width: image b's row oy at b·pstride + oy·wp
    let q_len = (stack - 1) * pstride + g.oh * wp;
    let q_blocks = q_len.div_ceil(t.nr);
    // every tile reads xpad[off + q0 .. off + q0 + nr]: the last one ends here
    let xlen = offs.last().map_or(0, |&o| o) + q_blocks * t.nr;
    let xlen = xlen.max(g.ci * span);
    let packed = pack_weights(w, g.co, kd, t.mr);
    let in_len = g.ci * g.h * g.w;
    // y' of one stack: (co rounded up to mr) × (q_len rounded up to nr), written tile by tile
    let (co_pad, q_pad) = (g.co.div_ceil(t.mr) * t.mr, q_blocks * t.nr);
    let image = planes * plane;
    par_stacks_from_planes(g.n, stack, planes, plane, bias, |i0, ys| {
        let m = ys.len() / image.max(1); // images in this stack
        with_scratch(xlen + co_pad * q_pad, |buf| {
            let (xpad, yp) = buf.split_at_mut(xlen);
            // a short stack leaves slots unwritten: zero them (stale scratch could be non-finite)
            if m < stack {
                xpad[..g.ci * span].fill(0.0);
            }
            for bi in 0..m {
                let xi = &x[(i0 + bi) * in_len..(i0 + bi + 1) * in_len];
                pad_image(g, xi, &mut xpad[bi * pstride..], span);
            }
            xpad[g.ci * span..].fill(0.0);
            let q_used = ((m - 1) * pstride + g.oh * wp).div_ceil(t.nr) * t.nr;
            for (wblk, yblk) in packed
                .chunks_exact(kd * t.mr)
                .zip(yp.chunks_exact_mut(t.mr * q_pad))
            {
                for q0 in (0..q_used).step_by(t.nr) {
                    tile(isa, wblk, &xpad[q0..], &offs, &mut yblk[q0..], q_pad);
                }
            }
            // add the valid positions (ox < ow) into the output, which holds the bias
            for (bi, yi) in ys.chunks_exact_mut(image.max(1)).enumerate() {
                for (o, yrow) in yp.chunks_exact(q_pad).take(g.co).enumerate() {
                    place(
                        i0 + bi,
                        o,
                        &yrow[bi * pstride..bi * pstride + g.oh * wp],
                        wp,
                        yi,
                    );
                }
            }
        });
    })
}

/// One register tile: `out[m·ld + j] = Σ_k wblk[k·mr + m] · x[offs[k] + j]` (j < nr, m < mr) for the build
/// `isa`.
pub(super) fn tile(isa: Isa, wblk: &[f32], x: &[f32], offs: &[usize], out: &mut [f32], ld: usize) {
    let t = tile_of(isa);
    let kd = offs.len();
    assert!(wblk.len() >= kd * t.mr && ld >= t.nr && out.len() >= (t.mr - 1) * ld + t.nr);
    // the offsets increase with k, so the last one reaches furthest
    assert!(
        offs.last().is_none_or(|&o| o + t.nr <= x.len()),
        "implicit conv: a tile would read past the padded image"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` selects AVX-512 only when the CPU runs it; the asserts above keep every load and
        // store inside the slices.
        Isa::Avx512 => unsafe {
            x86::tile_avx512(wblk.as_ptr(), x.as_ptr(), offs, out.as_mut_ptr(), ld)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 + FMA.
        Isa::Avx2 => unsafe {
            x86::tile_avx2(wblk.as_ptr(), x.as_ptr(), offs, out.as_mut_ptr(), ld)
        },
        _ => tile_baseline::<4, 16>(wblk, x, offs, out, ld),
    }
}

/// The baseline build of [`tile`]: multiply, then add.
fn tile_baseline<const MR: usize, const NR: usize>(
    wblk: &[f32],
    x: &[f32],
    offs: &[usize],
    out: &mut [f32],
    ld: usize,
) {
    let mut a = [[0f32; NR]; MR];
    for (k, &off) in offs.iter().enumerate() {
        let xv = &x[off..off + NR];
        let wk = &wblk[k * MR..(k + 1) * MR];
        for (am, &wv) in a.iter_mut().zip(wk) {
            for (s, &v) in am.iter_mut().zip(xv) {
                *s += wv * v;
            }
        }
    }
    for (m, src) in a.iter().enumerate() {
        out[m * ld..m * ld + NR].copy_from_slice(src);
    }
}

/// The weight-gradient tile of one build: MR output channels × NK taps, each a sum over positions kept in
/// vector lanes until the end of the image.
fn wgrad_tile_of(isa: Isa) -> Tile {
    match isa {
        Isa::Avx512 => Tile { mr: 4, nr: 6 },
        Isa::Avx2 => Tile { mr: 3, nr: 3 },
        Isa::Baseline => Tile { mr: 2, nr: 2 },
    }
}

/// Positions are processed in vectors of this many (a multiple of every build's lane count).
const QV: usize = 16;

/// Positions a weight-gradient pass covers at least: small images are stacked until they fill it, so that
/// each tile's lanes are added up once per stack rather than once per image.
const WGRAD_POSITIONS: usize = 2048;

/// The weight gradient of a stride-1 convolution ([`applies`]) over some images, `(co, ci·k·k)`:
///
/// `dW[o, k] = Σ_i Σ_q dy'_i[o, q] · xpad_i[off_k + q]`,
///
/// with `dy'` the output gradient laid out on the padded image (zero in the columns `ox ≥ ow` and the rows
/// `oy ≥ oh`, so they add nothing). Images are stacked along q (image b of a stack at `b·(h + p)·wp`: an
/// image's bottom padding is the next one's top padding; a fixed number per stack given by the geometry)
/// so that one pass covers about [`WGRAD_POSITIONS`] positions. A
/// tile of MR channels × NK taps keeps one vector of partial sums per pair over the stack's positions, then
/// adds the lanes (in a fixed order) into `dW`; the stacks are added in the given order.
pub(super) fn weight_grad<'a>(
    g: &Geom,
    images: impl Iterator<Item = (&'a [f32], &'a [f32])>,
) -> Vec<f32> {
    let isa = isa();
    let t = wgrad_tile_of(isa);
    let (kd, pp) = (g.ci * g.k * g.k, g.oh * g.ow);
    let (plane, wp) = padded(g);
    let images: Vec<(&[f32], &[f32])> = images.collect();
    let pstride = (g.h + g.p) * wp; // from one image of a stack to the next
    let stack = (WGRAD_POSITIONS / pstride.max(1)).clamp(1, images.len().max(1));
    let span = (stack - 1) * pstride + plane; // one channel of a stack
    let q_len = (stack * pstride).div_ceil(QV) * QV;
    let (co_pad, kd_pad) = (g.co.div_ceil(t.mr) * t.mr, kd.div_ceil(t.nr) * t.nr);
    // taps past K read tap 0 (valid memory); their sums are dropped
    let mut offs = offsets(g, span);
    offs.resize(kd_pad, 0);
    let xlen = (offs.iter().max().copied().unwrap_or(0) + q_len).max(g.ci * span);
    let mut dw = vec![0f32; g.co * kd];
    let mut sums = vec![0f32; t.mr * t.nr];
    with_scratch(xlen + co_pad * q_len, |buf| {
        let (xpad, dypad) = buf.split_at_mut(xlen);
        for group in images.chunks(stack) {
            // every position a tile reads is written: the images, zeros in a short stack's empty slots
            // and past the last channel (stale scratch could hold non-finite values, and 0 · ∞ is NaN)
            let written = if group.len() == stack { g.ci * span } else { 0 };
            xpad[written..].fill(0.0);
            dypad.fill(0.0);
            for (b, (xi, dyi)) in group.iter().enumerate() {
                pad_image(g, xi, &mut xpad[b * pstride..], span);
                for (o, src) in dyi.chunks_exact(pp.max(1)).enumerate() {
                    for (oy, row) in src.chunks_exact(g.ow).enumerate() {
                        let at = o * q_len + b * pstride + oy * wp;
                        dypad[at..at + g.ow].copy_from_slice(row);
                    }
                }
            }
            for o0 in (0..co_pad).step_by(t.mr) {
                for k0 in (0..kd_pad).step_by(t.nr) {
                    wgrad_tile(
                        isa,
                        &dypad[o0 * q_len..(o0 + t.mr) * q_len],
                        q_len,
                        xpad,
                        &offs[k0..k0 + t.nr],
                        &mut sums,
                    );
                    for (m, row) in sums.chunks_exact(t.nr).enumerate() {
                        let o = o0 + m;
                        if o >= g.co {
                            break;
                        }
                        for (j, &v) in row.iter().enumerate().take(kd.saturating_sub(k0)) {
                            dw[o * kd + k0 + j] += v;
                        }
                    }
                }
            }
        }
    });
    dw
}

/// One weight-gradient tile: `sums[m·nk + j] = Σ_{q < q_len} dy[m·q_len + q] · x[offs[j] + q]` for the build
/// `isa` (`q_len` a multiple of [`QV`]).
fn wgrad_tile(isa: Isa, dy: &[f32], q_len: usize, x: &[f32], offs: &[usize], sums: &mut [f32]) {
    let t = wgrad_tile_of(isa);
    assert!(q_len.is_multiple_of(QV) && dy.len() >= t.mr * q_len && offs.len() == t.nr);
    assert!(sums.len() >= t.mr * t.nr);
    assert!(
        offs.iter().all(|&o| o + q_len <= x.len()),
        "implicit conv: a weight-gradient tile would read past the padded image"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` selects AVX-512 only when the CPU runs it; the asserts above keep every load and
        // store inside the slices.
        Isa::Avx512 => unsafe {
            x86::wgrad_avx512(dy.as_ptr(), q_len, x.as_ptr(), offs, sums.as_mut_ptr())
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 + FMA.
        Isa::Avx2 => unsafe {
            x86::wgrad_avx2(dy.as_ptr(), q_len, x.as_ptr(), offs, sums.as_mut_ptr())
        },
        _ => wgrad_baseline::<2, 2>(dy, q_len, x, offs, sums),
    }
}

/// The baseline build of [`wgrad_tile`]: eight lanes of partial sums per pair, multiply then add.
fn wgrad_baseline<const MR: usize, const NK: usize>(
    dy: &[f32],
    q_len: usize,
    x: &[f32],
    offs: &[usize],
    sums: &mut [f32],
) {
    const L: usize = 8;
    let mut a = [[[0f32; L]; NK]; MR];
    for q in (0..q_len).step_by(L) {
        for (m, am) in a.iter_mut().enumerate() {
            let d = &dy[m * q_len + q..m * q_len + q + L];
            for (aj, &off) in am.iter_mut().zip(offs) {
                let xv = &x[off + q..off + q + L];
                for ((s, &u), &v) in aj.iter_mut().zip(d).zip(xv) {
                    *s += u * v;
                }
            }
        }
    }
    for (row, am) in sums.chunks_exact_mut(NK).zip(&a) {
        for (s, lanes) in row.iter_mut().zip(am) {
            *s = lanes.iter().sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 8 channels × 48 positions (3 zmm per channel).
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub(super) unsafe fn tile_avx512(
        w: *const f32,
        x: *const f32,
        offs: &[usize],
        out: *mut f32,
        ld: usize,
    ) {
        const MR: usize = 8;
        let mut a = [[_mm512_setzero_ps(); 3]; MR];
        for (k, &off) in offs.iter().enumerate() {
            // SAFETY (whole block): the caller keeps x[off .. off + 48] and w[k·8 .. k·8 + 8] in bounds.
            unsafe {
                let p = x.add(off);
                let (x0, x1, x2) = (
                    _mm512_loadu_ps(p),
                    _mm512_loadu_ps(p.add(16)),
                    _mm512_loadu_ps(p.add(32)),
                );
                let wk = w.add(k * MR);
                for (m, am) in a.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(*wk.add(m));
                    am[0] = _mm512_fmadd_ps(wv, x0, am[0]);
                    am[1] = _mm512_fmadd_ps(wv, x1, am[1]);
                    am[2] = _mm512_fmadd_ps(wv, x2, am[2]);
                }
            }
        }
        for (m, am) in a.iter().enumerate() {
            for (j, v) in am.iter().enumerate() {
                // SAFETY: the caller's out holds rows m·ld .. m·ld + 48 for m < 8.
                unsafe { _mm512_storeu_ps(out.add(m * ld + j * 16), *v) };
            }
        }
    }

    /// 6 channels × 16 positions (2 ymm per channel): 12 accumulators, 2 inputs and a broadcast weight in
    /// 15 of the 16 ymm registers (4 × 24 needs all 16, and LLVM then shuffles and spills every iteration).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2(
        w: *const f32,
        x: *const f32,
        offs: &[usize],
        out: *mut f32,
        ld: usize,
    ) {
        const MR: usize = 6;
        let mut a = [[_mm256_setzero_ps(); 2]; MR];
        for (k, &off) in offs.iter().enumerate() {
            // SAFETY (whole block): the caller keeps x[off .. off + 16] and w[k·6 .. k·6 + 6] in bounds.
            unsafe {
                let p = x.add(off);
                let (x0, x1) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
                let wk = w.add(k * MR);
                for (m, am) in a.iter_mut().enumerate() {
                    let wv = _mm256_broadcast_ss(&*wk.add(m));
                    am[0] = _mm256_fmadd_ps(wv, x0, am[0]);
                    am[1] = _mm256_fmadd_ps(wv, x1, am[1]);
                }
            }
        }
        for (m, am) in a.iter().enumerate() {
            for (j, v) in am.iter().enumerate() {
                // SAFETY: the caller's out holds rows m·ld .. m·ld + 16 for m < 6.
                unsafe { _mm256_storeu_ps(out.add(m * ld + j * 8), *v) };
            }
        }
    }
    /// 4 channels × 6 taps, 16 positions at a time.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub(super) unsafe fn wgrad_avx512(
        dy: *const f32,
        q_len: usize,
        x: *const f32,
        offs: &[usize],
        sums: *mut f32,
    ) {
        const MR: usize = 4;
        const NK: usize = 6;
        let mut a = [[_mm512_setzero_ps(); NK]; MR];
        let mut o = [0usize; NK];
        o.copy_from_slice(&offs[..NK]);
        for q in (0..q_len).step_by(16) {
            // SAFETY (whole block): the caller keeps dy[m·q_len + q ..][..16] and x[o_j + q ..][..16] in
            // bounds.
            unsafe {
                let xv: [__m512; NK] = std::array::from_fn(|j| _mm512_loadu_ps(x.add(o[j] + q)));
                for (m, am) in a.iter_mut().enumerate() {
                    let d = _mm512_loadu_ps(dy.add(m * q_len + q));
                    for (aj, &v) in am.iter_mut().zip(&xv) {
                        *aj = _mm512_fmadd_ps(d, v, *aj);
                    }
                }
            }
        }
        for (m, am) in a.iter().enumerate() {
            for (j, v) in am.iter().enumerate() {
                // SAFETY: the caller's sums hold 4 × 6 floats.
                unsafe { *sums.add(m * NK + j) = _mm512_reduce_add_ps(*v) };
            }
        }
    }

    /// 3 channels × 3 taps, 8 positions at a time.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn wgrad_avx2(
        dy: *const f32,
        q_len: usize,
        x: *const f32,
        offs: &[usize],
        sums: *mut f32,
    ) {
        const MR: usize = 3;
        const NK: usize = 3;
        let mut a = [[_mm256_setzero_ps(); NK]; MR];
        let mut o = [0usize; NK];
        o.copy_from_slice(&offs[..NK]);
        for q in (0..q_len).step_by(8) {
            // SAFETY (whole block): as in `wgrad_avx512`, for 8 floats.
            unsafe {
                let xv: [__m256; NK] = std::array::from_fn(|j| _mm256_loadu_ps(x.add(o[j] + q)));
                for (m, am) in a.iter_mut().enumerate() {
                    let d = _mm256_loadu_ps(dy.add(m * q_len + q));
                    for (aj, &v) in am.iter_mut().zip(&xv) {
                        *aj = _mm256_fmadd_ps(d, v, *aj);
                    }
                }
            }
        }
        for (m, am) in a.iter().enumerate() {
            for (j, v) in am.iter().enumerate() {
                let mut lanes = [0f32; 8];
                // SAFETY: `lanes` holds 8 floats; the caller's sums hold 3 × 3.
                unsafe {
                    _mm256_storeu_ps(lanes.as_mut_ptr(), *v);
                    *sums.add(m * NK + j) = lanes.iter().sum();
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::nn::kernels::isa::with_isa;
    use crate::nn::rel_err;
    use crate::rng::Rng;
    use crate::Result;
    use candle_core::{Device, Tensor};

    /// A stride-1 forward with its bias and residual: `(g, x, w, b, residual) → y`.
    pub(in crate::nn::kernels) type Forward =
        fn(&Geom, &[f32], &[f32], Option<&[f32]>, Option<&[f32]>) -> Vec<f32>;

    /// `forward` (which must serve the geometry, by `applies`) on the build `isa` against candle's stock
    /// conv2d + bias + a residual, for x of shape `xs`, `co` output channels, a k×k kernel and padding p.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::nn::kernels) fn check_forward(
        (forward, applies): (Forward, fn(&Geom) -> bool),
        isa: Isa,
        xs: [usize; 4],
        co: usize,
        k: usize,
        p: usize,
        seed: u64,
    ) -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(seed);
        let x = rng.randn(xs.to_vec(), &dev)?;
        let w = rng.randn((co, xs[1], k, k), &dev)?;
        let b = rng.randn(co, &dev)?;
        let stock = x
            .conv2d(&w, p, 1, 1, 1)?
            .broadcast_add(&b.reshape((1, co, 1, 1))?)?;
        let (_, _, oh, ow) = stock.dims4()?;
        let g = Geom {
            n: xs[0],
            ci: xs[1],
            h: xs[2],
            w: xs[3],
            co,
            k,
            s: 1,
            p,
            oh,
            ow,
        };
        assert!(applies(&g), "{g:?}");
        // with a residual added as the output is written
        let r = rng.randn(stock.shape(), &dev)?;
        let stock = (stock + &r)?;
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let y = with_isa(isa, || -> Result<Vec<f32>> {
            Ok(forward(
                &g,
                &flat(&x)?,
                &flat(&w)?,
                Some(&flat(&b)?),
                Some(&flat(&r)?),
            ))
        })?;
        let ours = Tensor::from_vec(y, stock.shape(), &dev)?;
        let e = rel_err(&ours, &stock)?;
        assert!(e < 1e-5, "{isa:?} {xs:?} co {co} k {k} p {p}: rel err {e}");
        Ok(())
    }

    #[test]
    fn every_build_matches_candle_conv2d() -> Result<()> {
        for isa in Isa::available() {
            for (xs, co, k, p, seed) in [
                ([2, 3, 7, 5], 4, 3, 1, 1),     // co below one tile
                ([1, 16, 28, 28], 16, 3, 1, 2), // the UNet's first level
                ([3, 5, 9, 11], 13, 3, 0, 3),   // no padding, co not a multiple of the tile
                ([2, 2, 6, 6], 9, 5, 2, 4),     // 5×5
                ([1, 4, 4, 4], 3, 3, 2, 5),     // padding k − 1 (a flipped conv's)
                ([17, 6, 7, 7], 5, 3, 1, 6),    // small images stacked, the last stack short
                ([9, 4, 5, 6], 3, 2, 0, 7),     // stacked without padding (a phase convolution's)
            ] {
                check_forward((conv_forward, applies), isa, xs, co, k, p, seed)?;
            }
        }
        Ok(())
    }

    /// `implicit::weight_grad` on the build `isa` against a direct f64 sum over images and positions.
    fn check_wgrad(
        isa: Isa,
        xs: [usize; 4],
        co: usize,
        k: usize,
        p: usize,
        seed: u64,
    ) -> Result<()> {
        let [n, ci, h, w] = xs;
        let (oh, ow) = (h + 2 * p - k + 1, w + 2 * p - k + 1);
        let g = Geom {
            n,
            ci,
            h,
            w,
            co,
            k,
            s: 1,
            p,
            oh,
            ow,
        };
        let mut rng = Rng::new(seed);
        let x = rng.normal_vec(n * ci * h * w);
        let dy = rng.normal_vec(n * co * oh * ow);
        let images = x
            .chunks_exact(ci * h * w)
            .zip(dy.chunks_exact(co * oh * ow));
        let dw = with_isa(isa, || weight_grad(&g, images));
        let mut max_err = 0f64;
        let mut max_ref = 0f64;
        for o in 0..co {
            for c in 0..ci {
                for ky in 0..k {
                    for kx in 0..k {
                        let mut acc = 0f64;
                        for i in 0..n {
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let (iy, ix) = (
                                        (oy + ky) as isize - p as isize,
                                        (ox + kx) as isize - p as isize,
                                    );
                                    if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                        continue;
                                    }
                                    let xv = x[((i * ci + c) * h + iy as usize) * w + ix as usize];
                                    let d = dy[((i * co + o) * oh + oy) * ow + ox];
                                    acc += f64::from(xv) * f64::from(d);
                                }
                            }
                        }
                        let got = f64::from(dw[((o * ci + c) * k + ky) * k + kx]);
                        max_err = max_err.max((got - acc).abs());
                        max_ref = max_ref.max(acc.abs());
                    }
                }
            }
        }
        assert!(
            max_err < 1e-5 * max_ref.max(1.0),
            "{isa:?} {xs:?} co {co} k {k} p {p}: max err {max_err}"
        );
        Ok(())
    }

    #[test]
    fn every_build_computes_the_weight_gradient() -> Result<()> {
        for isa in Isa::available() {
            for (xs, co, k, p, seed) in [
                ([2, 3, 7, 5], 4, 3, 1, 11), // K = 27: not a multiple of any tile
                ([1, 16, 12, 12], 16, 3, 1, 12),
                ([3, 5, 9, 11], 7, 3, 0, 13), // co not a multiple of any tile
                ([2, 2, 6, 6], 3, 5, 2, 14),  // 5×5
                ([1, 4, 4, 4], 3, 3, 2, 15),  // padding k − 1
            ] {
                check_wgrad(isa, xs, co, k, p, seed)?;
            }
        }
        Ok(())
    }

    #[test]
    fn packed_weights_put_each_block_k_major() {
        // W (3 × 2) packed in blocks of 2 channels: [[w00 w10] [w01 w11]] [[w20 0] [w21 0]]
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(
            pack_weights(&w, 3, 2, 2),
            [1.0, 3.0, 2.0, 4.0, 5.0, 0.0, 6.0, 0.0]
        );
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::nn::kernels::testing::min_ms;
    use crate::rng::Rng;

    /// Not a test: prints the forward's rate on the UNet's and the conv denoiser's stride-1 layers (and the
    /// transposed convolution's phase layer, 128 → 256 channels 2 × 2), with Winograd's time where it
    /// applies (`RAYON_NUM_THREADS=2 cargo test --release -p dgm --lib forward_rates -- --ignored
    /// --nocapture`; `DGM_ISA=avx2|baseline` for the slower builds).
    #[test]
    #[ignore]
    fn forward_rates() {
        for (ci, h, co, k, p) in [
            (128, 14, 256, 2, 1),
            (64, 28, 64, 3, 1),
            (128, 14, 128, 3, 1),
            (32, 28, 32, 3, 1),
        ] {
            let n = 128;
            let oh = h + 2 * p - k + 1;
            let g = Geom {
                n,
                ci,
                h,
                w: h,
                co,
                k,
                s: 1,
                p,
                oh,
                ow: oh,
            };
            let mut rng = Rng::new(1);
            let x = rng.normal_vec(n * ci * h * h);
            let w = rng.normal_vec(co * ci * k * k);
            let ms = min_ms(5, || conv_forward(&g, &x, &w, None, None)[0]);
            let gflops = 2.0 * (n * co * oh * oh * ci * k * k) as f64 / ms / 1e6;
            let wino = super::super::winograd::applies(&g).then(|| {
                min_ms(5, || {
                    super::super::winograd::conv_forward(&g, &x, &w, None, None)[0]
                })
            });
            eprintln!(
                "{:?}: {ci} → {co} ch, {h}², {k}×{k}: implicit {ms:.1} ms ({gflops:.1} GFLOP/s), Winograd {wino:?} ms",
                isa()
            );
        }
    }
}
