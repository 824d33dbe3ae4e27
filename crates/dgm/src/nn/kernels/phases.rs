//! Strided convolutions whose kernel size is a multiple of the stride (k = s·kk: DCGAN's and the EBM's 4×4
//! stride-2 layers, and the transposed convolutions that mirror them) as stride-1 convolutions on the s²
//! phases of the padded input (space-to-depth), so that the stride-1 kernels — the implicit GEMM of
//! [`super::implicit`], or one GEMM when kk = 1 — do the forward, the input gradient (a transposed
//! convolution's forward) and the weight gradient.
//!
//! With `xpad` the input zero-padded by p, output (oy, ox) reads `xpad[c, s·oy + ky, s·ox + kx]`. Writing
//! ky = s·t + ry (t < kk, ry < s) and kx = s·u + rx, that is `P[(ry, rx, c), oy + t, ox + u]` on the phase
//! planes `P[(ry, rx, c), j, i] = xpad[c, s·j + ry, s·i + rx]`, so
//!
//! `y[o, oy, ox] = b[o] + Σ_{(ry,rx,c), t, u} W'[o, (ry,rx,c), t, u] · P[(ry,rx,c), oy + t, ox + u]`,
//! `W'[o, (ry,rx,c), t, u] = W[o, c, s·t + ry, s·u + rx]`:
//!
//! an unpadded stride-1 kk × kk convolution of s²·ci planes of (oh + kk − 1) × (ow + kk − 1) — the same
//! multiply-adds as the strided one. Gathering x into P puts every input pixel in at most one place (the
//! rest of P is padding: zeros), so the input gradient is the phase convolution's input gradient gathered
//! back (the adjoint of the gather), and the weight gradient is the phase convolution's, permuted back.

use super::im2col::{self, plane_bias, Geom};
use super::{implicit, winograd};
use super::{par_chunks_from_planes, par_filled};

/// Whether this module serves the convolution: stride ≥ 2, a kernel size that is a multiple of it, and
/// sizes where it measured faster than im2col + GEMM (all three passes, batch 128, 4×4 stride 2: 64 → 128
/// channels at 14 × 14 outputs 21 / 23 / 23 ms against 25 / 26 / 26; at 7 × 7 outputs, or with 1 or 3 input
/// channels, the weight gradient or the input gradient was slower, so those stay on im2col; see
/// `timing_against_im2col` below).
pub(super) fn applies(g: &Geom) -> bool {
    g.s >= 2 && g.k.is_multiple_of(g.s) && g.ci >= MIN_CHANNELS && g.oh * g.ow >= MIN_POSITIONS
}

/// Input channels below which [`applies`] leaves a convolution to im2col.
const MIN_CHANNELS: usize = 16;
/// Output positions per image below which [`applies`] leaves a convolution to im2col.
const MIN_POSITIONS: usize = 100;

/// The stride-1 convolution on the phase planes: s²·ci channels of (oh + kk − 1) × (ow + kk − 1), a kk × kk
/// kernel, no padding, the same output.
fn phase_geom(g: &Geom) -> Geom {
    let kk = g.k / g.s;
    Geom {
        n: g.n,
        ci: g.s * g.s * g.ci,
        h: g.oh + kk - 1,
        w: g.ow + kk - 1,
        co: g.co,
        k: kk,
        s: 1,
        p: 0,
        oh: g.oh,
        ow: g.ow,
    }
}

/// The input row (or column) behind phase-plane row `j` of phase `r`: `s·j + r − p`, when inside `0..len`.
fn source(g: &Geom, r: usize, j: usize, len: usize) -> Option<usize> {
    (g.s * j + r).checked_sub(g.p).filter(|&v| v < len)
}

/// The phase-plane columns `ii < pw` of phase `r` that have an input column (`s·ii + r − p` in `0..w`), and
/// the first one's input column.
fn columns(g: &Geom, r: usize, pw: usize) -> (std::ops::Range<usize>, usize) {
    let first = g.p.saturating_sub(r).div_ceil(g.s);
    let end = ((g.w + g.p).saturating_sub(r).div_ceil(g.s)).min(pw);
    let start = first.min(end);
    (start..end, (g.s * start + r).saturating_sub(g.p))
}

/// x `(n, ci, h, w)` → P `(n, s²·ci, ph, pw)` (see the module comment), zero where P reads padding.
fn gather(g: &Geom, pg: &Geom, x: &[f32]) -> Vec<f32> {
    let (hw, plane) = (g.h * g.w, pg.h * pg.w);
    par_filled(g.n * pg.ci * plane, pg.ci * plane, |i, pi| {
        let xi = &x[i * g.ci * hw..(i + 1) * g.ci * hw];
        for (pc, pplane) in pi.chunks_exact_mut(plane.max(1)).enumerate() {
            let (ry, rx, c) = (pc / g.ci / g.s, pc / g.ci % g.s, pc % g.ci);
            let (cols, ix0) = columns(g, rx, pg.w);
            let xc = &xi[c * hw..(c + 1) * hw];
            for (j, row) in pplane.chunks_exact_mut(pg.w.max(1)).enumerate() {
                let Some(iy) = source(g, ry, j, g.h) else {
                    continue;
                };
                let xrow = xc[iy * g.w + ix0..].iter().step_by(g.s);
                for (v, &src) in row[cols.clone()].iter_mut().zip(xrow) {
                    *v = src;
                }
            }
        }
    })
}

/// The adjoint of [`gather`] plus a bias: `dx (n, ci, h, w) = b + dP` read back at each input pixel's place
/// (zero for pixels no output reads). `b` per channel or per image and channel, as in
/// [`im2col::conv_input_grad`].
fn scatter(g: &Geom, pg: &Geom, dp: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let (hw, plane) = (g.h * g.w, pg.h * pg.w);
    par_chunks_from_planes(g.n, g.ci, hw, plane_bias(b, g.ci), |i, dxi| {
        let dpi = &dp[i * pg.ci * plane..(i + 1) * pg.ci * plane];
        for (pc, rows) in dpi.chunks_exact(plane.max(1)).enumerate() {
            scatter_plane(g, pg, pc, rows, pg.w, dxi);
        }
    })
}

/// Adds phase plane `pc` = (ry, rx, c) of one image — its rows `row_len` apart in `rows`, the first `pg.w`
/// of each used — into that image's `dx (ci, h, w)`: row j, column i to `dx[c, s·j + ry − p, s·i + rx − p]`
/// where that is inside the image. Each input pixel has exactly one place, so the additions commute.
fn scatter_plane(g: &Geom, pg: &Geom, pc: usize, rows: &[f32], row_len: usize, dxi: &mut [f32]) {
    let (ry, rx, c) = (pc / g.ci / g.s, pc / g.ci % g.s, pc % g.ci);
    let (cols, ix0) = columns(g, rx, pg.w);
    let dxc = &mut dxi[c * g.h * g.w..(c + 1) * g.h * g.w];
    for (j, src) in rows.chunks(row_len.max(1)).take(pg.h).enumerate() {
        let Some(iy) = source(g, ry, j, g.h) else {
            continue;
        };
        let row = &mut dxc[iy * g.w..(iy + 1) * g.w];
        for (v, &d) in row[ix0..].iter_mut().step_by(g.s).zip(&src[cols.clone()]) {
            *v += d;
        }
    }
}

/// `(index in W (co, ci, k, k), index in W' (co, s²·ci, kk, kk))` for every weight.
fn weight_places(g: &Geom) -> impl Iterator<Item = (usize, usize)> + '_ {
    let (s, k, kk) = (g.s, g.k, g.k / g.s);
    (0..g.co * g.ci * k * k).map(move |at| {
        let (o, c, ky, kx) = (at / (g.ci * k * k), at / (k * k) % g.ci, at / k % k, at % k);
        let pc = ((ky % s) * s + kx % s) * g.ci + c;
        (at, ((o * s * s * g.ci + pc) * kk + ky / s) * kk + kx / s)
    })
}

/// W → W' (see the module comment).
fn phase_weights(g: &Geom, w: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for (a, b) in weight_places(g) {
        out[b] = w[a];
    }
    out
}

/// Forward: `y = W ∗ x + b` (b per channel, or per image and channel).
pub(super) fn conv_forward(g: &Geom, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let pg = phase_geom(g);
    im2col::conv_forward(&pg, &gather(g, &pg, x), &phase_weights(g, w), b)
}

/// Input gradient `dx = Wᵀ ⋆ dy [+ b]` (with `b`, a transposed convolution's forward): the phase
/// convolution's input gradient — a stride-1 convolution of dy with its flipped kernel — scattered back
/// (on the implicit GEMM, each row is written straight to its place: 11–23 % faster than a scatter pass
/// over the phase planes for the conv denoiser's 128 → 64 4×4 layer, 14 → 28, batch 128).
pub(super) fn conv_input_grad(g: &Geom, dy: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let pg = phase_geom(g);
    let wp = phase_weights(g, w);
    let Some(fg) = pg.flipped() else {
        // not reached: pg has p = 0 < kk
        return scatter(g, &pg, &im2col::conv_input_grad(&pg, dy, &wp, None), b);
    };
    let wf = pg.flip_weights(&wp);
    if implicit::applies(&fg) && !winograd::applies(&fg) {
        // the implicit GEMM puts each phase-plane row straight where `scatter` would
        let place = |_: usize, pc: usize, rows: &[f32], wpad: usize, dxi: &mut [f32]| {
            scatter_plane(g, &pg, pc, rows, wpad, dxi)
        };
        let planes = (g.ci, g.h * g.w);
        return implicit::forward_placed(&fg, (dy, &wf), planes, plane_bias(b, g.ci), place);
    }
    scatter(g, &pg, &im2col::conv_forward(&fg, dy, &wf, None), b)
}

/// Weight gradient `(co, ci·k·k)`: the phase convolution's, permuted back to W's layout.
pub(super) fn conv_weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let pg = phase_geom(g);
    weights_back(g, &im2col::conv_weight_grad(&pg, &gather(g, &pg, x), dy))
}

/// [`conv_forward`] (no bias) and [`conv_weight_grad`] of the same input, its phases gathered once (a
/// transposed convolution's backward needs both).
pub(super) fn forward_and_weight_grad(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let pg = phase_geom(g);
    let xp = gather(g, &pg, x);
    let y = im2col::conv_forward(&pg, &xp, &phase_weights(g, w), None);
    (y, weights_back(g, &im2col::conv_weight_grad(&pg, &xp, dy)))
}

/// W' → W: the inverse of [`phase_weights`].
fn weights_back(g: &Geom, wp: &[f32]) -> Vec<f32> {
    let mut w = vec![0f32; wp.len()];
    for (a, b) in weight_places(g) {
        w[a] = wp[b];
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::testing::min_ms;
    use crate::rng::Rng;

    /// Direct loops in f64 for one geometry: y = W ∗ x, dx = Wᵀ ⋆ dy, dW = dy ⋆ x.
    fn direct(g: &Geom, x: &[f32], w: &[f32], dy: &[f32]) -> [Vec<f64>; 3] {
        let mut y = vec![0f64; g.n * g.co * g.oh * g.ow];
        let mut dx = vec![0f64; x.len()];
        let mut dw = vec![0f64; w.len()];
        for i in 0..g.n {
            for o in 0..g.co {
                for (oy, ox) in (0..g.oh).flat_map(|a| (0..g.ow).map(move |b| (a, b))) {
                    let yi = ((i * g.co + o) * g.oh + oy) * g.ow + ox;
                    for c in 0..g.ci {
                        for (ky, kx) in (0..g.k).flat_map(|a| (0..g.k).map(move |b| (a, b))) {
                            let (Some(iy), Some(ix)) = (
                                (g.s * oy + ky).checked_sub(g.p).filter(|&v| v < g.h),
                                (g.s * ox + kx).checked_sub(g.p).filter(|&v| v < g.w),
                            ) else {
                                continue;
                            };
                            let xi = ((i * g.ci + c) * g.h + iy) * g.w + ix;
                            let wi = ((o * g.ci + c) * g.k + ky) * g.k + kx;
                            y[yi] += f64::from(w[wi]) * f64::from(x[xi]);
                            dx[xi] += f64::from(w[wi]) * f64::from(dy[yi]);
                            dw[wi] += f64::from(x[xi]) * f64::from(dy[yi]);
                        }
                    }
                }
            }
        }
        [y, dx, dw]
    }

    fn assert_close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
        for (k, (&a, &b)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(a) - b).abs() < 1e-5 * scale,
                "{what}[{k}]: {a} vs {b}"
            );
        }
    }

    #[test]
    fn the_three_passes_match_direct_loops() {
        // (n, ci, h, w, co, k, s, p): DCGAN's layer on odd sizes, pixels that no output reads (h 11, p 0),
        // stride 3, and k = s (phases of 1×1: one GEMM)
        for (seed, (n, ci, h, w, co, k, s, p)) in [
            (2, 3, 9, 7, 5, 4, 2, 1),
            (3, 2, 11, 10, 4, 4, 2, 0),
            (1, 2, 10, 8, 3, 6, 3, 2),
            (2, 3, 8, 6, 4, 2, 2, 0),
            (1, 9, 14, 14, 10, 4, 2, 1),
        ]
        .into_iter()
        .enumerate()
        {
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            let g = Geom {
                n,
                ci,
                h,
                w,
                co,
                k,
                s,
                p,
                oh,
                ow,
            };
            let mut rng = Rng::new(seed as u64);
            let x = rng.normal_vec(n * ci * h * w);
            let wt = rng.normal_vec(co * ci * k * k);
            let dy = rng.normal_vec(n * co * oh * ow);
            let [y, dx, dw] = direct(&g, &x, &wt, &dy);
            assert_close("y", &conv_forward(&g, &x, &wt, None), &y);
            assert_close("dx", &conv_input_grad(&g, &dy, &wt, None), &dx);
            assert_close("dw", &conv_weight_grad(&g, &x, &dy), &dw);
            // the two passes of a transposed convolution's backward, sharing one gather: the same bits
            let (y2, dw2) = forward_and_weight_grad(&g, &x, &wt, &dy);
            assert_eq!(y2, conv_forward(&g, &x, &wt, None));
            assert_eq!(dw2, conv_weight_grad(&g, &x, &dy));
            // a bias per channel lands on every output (forward) or input (transposed) pixel
            let b: Vec<f32> = (0..co.max(ci)).map(|v| v as f32 * 0.5).collect();
            let yb = conv_forward(&g, &x, &wt, Some(&b[..co]));
            let shifted: Vec<f64> = y
                .iter()
                .enumerate()
                .map(|(at, v)| v + f64::from(b[at / (oh * ow) % co]))
                .collect();
            assert_close("y + b", &yb, &shifted);
            let dxb = conv_input_grad(&g, &dy, &wt, Some(&b[..ci]));
            let shifted: Vec<f64> = dx
                .iter()
                .enumerate()
                .map(|(at, v)| v + f64::from(b[at / (h * w) % ci]))
                .collect();
            assert_close("dx + b", &dxb, &shifted);
        }
    }

    /// Not a test: prints the three passes of the phase path against im2col + GEMM on the sizes that chose
    /// [`applies`]' limits (2 threads: `RAYON_NUM_THREADS=2 cargo test --release -p dgm --lib
    /// timing_against_im2col -- --ignored --nocapture --test-threads=1`).
    #[test]
    #[ignore]
    fn timing_against_im2col() {
        for (ci, h, co, oh) in [
            (64, 28, 128, 14),
            (64, 14, 128, 7),
            (128, 14, 256, 7),
            (1, 28, 64, 14),
            (3, 32, 64, 16),
        ] {
            let n = 128;
            let g = Geom {
                n,
                ci,
                h,
                w: h,
                co,
                k: 4,
                s: 2,
                p: 1,
                oh,
                ow: oh,
            };
            let mut rng = Rng::new(1);
            let x = rng.normal_vec(n * ci * h * h);
            let dy = rng.normal_vec(n * co * oh * oh);
            let w = rng.normal_vec(co * ci * 16);
            let old = [
                min_ms(5, || im2col::gemm_forward(&g, &x, &w, None)[0]),
                min_ms(5, || im2col::gemm_input_grad(&g, &dy, &w, None)[0]),
                min_ms(5, || im2col::weight_grad_by_chunks(&g, &x, &dy)[0]),
            ];
            let new = [
                min_ms(5, || conv_forward(&g, &x, &w, None)[0]),
                min_ms(5, || conv_input_grad(&g, &dy, &w, None)[0]),
                min_ms(5, || conv_weight_grad(&g, &x, &dy)[0]),
            ];
            eprintln!(
                "4×4 s2, {ci} → {co} ch, {h} → {oh}: forward / input grad / weight grad ms: phases {:.1} / {:.1} / {:.1}, im2col {:.1} / {:.1} / {:.1}",
                new[0], new[1], new[2], old[0], old[1], old[2]
            );
        }
    }
}
