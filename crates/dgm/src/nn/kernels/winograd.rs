//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms
//! for Convolutional Neural Networks", 2016): each 2×2 tile of outputs comes from the 4×4 tile of the padded
//! input under it with 16 multiplies per (input, output) channel pair instead of 36,
//!
//! `Y = Aᵀ [ Σ_c U_oc ⊙ V_c ] A`,  `U_oc = G g_oc Gᵀ` (4×4, once per call),  `V_c = Bᵀ d_c B` (4×4 per tile),
//!
//! `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`,
//! `Aᵀ = [1 1 1 0; 0 1 −1 −1]`.
//!
//! For each of the 16 positions ξ of the 4×4 tile the channel sum is a matrix product,
//! `M_ξ (co × tiles) = U_ξ (co × ci) · V_ξ (ci × tiles)`, run on the register tiles of
//! [`super::implicit`] (the rows of V_ξ are its "taps").
//!
//! Layout. A stack of images is one band of tiles: image b's tile (ty, tx) is position
//! `t = b·(th + 1)·L + ty·L + tx`, L = tw + 1 (th × tw tiles per image; the column tx = tw and the row
//! ty = th are computed and dropped). The padded input is split into its four phase planes
//! `P_ab[R·L + J] = xpad[2R + a, 2J + b]`, so the tile element d[i, j] of every tile is one array read at a
//! fixed offset, `P_{i mod 2, j mod 2}[t + ⌊i/2⌋·L + ⌊j/2⌋]`, and each transform is a handful of long,
//! contiguous loops (the compiler's vectors). The transforms only add and subtract, in
//! a fixed order, so every instruction-set build computes them alike; the products agree to rounding as the
//! implicit kernels do. Against the direct sum the result differs by the rounding of the transforms
//! (relative error ~1e-6 in f32, tested against candle's convolution). Results do not depend on the thread
//! count: each output's arithmetic is fixed by its tile.

use super::im2col::{plane_bias, with_scratch, Geom};
use super::implicit::{pack_weights, tile, tile_of};
use super::isa::{isa, simd_dispatch};
use super::math::add;
use super::par_stacks_from_planes;

/// Whether this module serves the convolution: 3×3, stride 1, padding ≤ 2, and sizes where it measured
/// faster than the implicit GEMM (forward, 2 threads, min of 7: 64 → 64 channels at 28×28 14.4 vs 16.6 ms
/// for 128 images, 128 → 128 at 14×14 13.3 vs 17.4; but 0.72–1.02× with 16 or 32 channels on either side
/// or at 7×7, where the transforms and the short products cost about what the multiplies save; see
/// `timing_against_the_implicit_gemm` below).
pub(super) fn applies(g: &Geom) -> bool {
    g.k == 3
        && g.s == 1
        && g.p <= 2
        && g.ci.min(g.co) >= MIN_CHANNELS
        && g.oh * g.ow >= MIN_POSITIONS
}

/// Input and output channels below which [`applies`] leaves a convolution to the implicit GEMM.
const MIN_CHANNELS: usize = 64;
/// Output positions per image below which [`applies`] leaves a convolution to the implicit GEMM.
const MIN_POSITIONS: usize = 100;

/// Tile positions a stack covers at least (as far as the batch allows).
const STACK_TILES: usize = 384;

/// Sizes of one stack's band: tiles per image row `tw`, per image column `th`, the row length `l = tw + 1`,
/// the positions of one image `(th + 1)·l`.
#[derive(Clone, Copy)]
struct Band {
    th: usize,
    tw: usize,
    l: usize,
    per_image: usize,
}

/// `U_ξ[o, c]` for ξ = 4i + j: `[ξ][o][c]`.
fn weight_transform(g: &Geom, w: &[f32]) -> Vec<f32> {
    let (co, ci) = (g.co, g.ci);
    let mut u = vec![0f32; 16 * co * ci];
    for (oc, k) in w.chunks_exact(9).enumerate().take(co * ci) {
        // G k (4 × 3), then (G k) Gᵀ (4 × 4)
        let mut gk = [[0f32; 3]; 4];
        for j in 0..3 {
            let (a, b, c) = (k[j], k[3 + j], k[6 + j]);
            gk[0][j] = a;
            gk[1][j] = 0.5 * (a + b + c);
            gk[2][j] = 0.5 * (a - b + c);
            gk[3][j] = c;
        }
        for (i, row) in gk.iter().enumerate() {
            let (a, b, c) = (row[0], row[1], row[2]);
            for (j, val) in [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c]
                .into_iter()
                .enumerate()
            {
                u[(4 * i + j) * co * ci + oc] = val;
            }
        }
    }
    u
}

/// Channel c of the stack `x` (`m` images) → `V_ξ[c, t]` at `v[(ξ·ci + c)·tpad + t]` for t < m·per_image,
/// zeros after it up to `tq`. `s` is scratch: the four phase planes (`4·plen` floats) and the eight rows of
/// `Bᵀ d` (`8·plen`).
#[inline(always)]
fn input_transform(
    g: &Geom,
    x: &[f32],
    (c, m): (usize, usize),
    bd: Band,
    (s, plen): (&mut [f32], usize),
    (v, tpad, tq): (&mut [f32], usize, usize),
) {
    let (hw, l) = (g.h * g.w, bd.l);
    let n_t = m * bd.per_image;
    let (p, t) = s.split_at_mut(4 * plen);
    // the phase planes P_ab (a: row parity, b: column parity) at p[(2a + b)·plen ..]
    p.fill(0.0);
    let (p_even_rows, p_odd_rows) = p.split_at_mut(2 * plen);
    let odd = g.p % 2; // the first input column whose padded column is even
    for b in 0..m {
        let xc = &x[(b * g.ci + c) * hw..(b * g.ci + c + 1) * hw];
        for r in 0..2 * (bd.th + 1) {
            let Some(iy) = r.checked_sub(g.p).filter(|&y| y < g.h) else {
                continue;
            };
            let row = &xc[iy * g.w..(iy + 1) * g.w];
            let at = b * bd.per_image + (r / 2) * l;
            let (pe, po) = if r % 2 == 0 {
                &mut *p_even_rows
            } else {
                &mut *p_odd_rows
            }
            .split_at_mut(plen);
            // input column ix is padded column ix + p: parity (ix + p) mod 2, index (ix + p) / 2
            if odd == 1 && !row.is_empty() {
                po[at + (g.p - 1) / 2] = row[0];
            }
            let body = &row[odd.min(row.len())..];
            let base = at + (odd + g.p) / 2;
            let pairs = body.chunks_exact(2);
            let last = pairs.remainder().first().copied();
            let k = pairs.len();
            for ((e, o), pr) in pe[base..base + k]
                .iter_mut()
                .zip(&mut po[base..base + k])
                .zip(pairs)
            {
                *e = pr[0];
                *o = pr[1];
            }
            if let Some(v) = last {
                pe[base + k] = v;
            }
        }
    }
    // Bᵀ d down the columns, for each column parity j: t_kj[t] from the rows 2ty .. 2ty + 3 (offsets 0, L)
    let p = &*p;
    let n1 = n_t + 1; // the second stage reads one past
    let ph = |a: usize, b: usize, off: usize| {
        &p[(2 * a + b) * plen + off..(2 * a + b) * plen + off + n1]
    };
    for j in 0..2 {
        let (d0, d1, d2, d3) = (ph(0, j, 0), ph(1, j, 0), ph(0, j, l), ph(1, j, l));
        // rows t_kj at (2k + j)·plen
        let (ta, tb) = t[..8 * plen].split_at_mut(4 * plen);
        let (r0, r1) = ta.split_at_mut(2 * plen);
        let (r2, r3) = tb.split_at_mut(2 * plen);
        let (t0, t1) = (
            &mut r0[j * plen..j * plen + n1],
            &mut r1[j * plen..j * plen + n1],
        );
        let (t2, t3) = (
            &mut r2[j * plen..j * plen + n1],
            &mut r3[j * plen..j * plen + n1],
        );
        for k in 0..n1 {
            t0[k] = d0[k] - d2[k];
            t1[k] = d1[k] + d2[k];
            t2[k] = d2[k] - d1[k];
            t3[k] = d1[k] - d3[k];
        }
    }
    // (Bᵀ d) B along the rows: column 2 of a tile is column 0 of the next (t + 1), column 3 is column 1's
    let t = &*t;
    for k in 0..4 {
        let (c0, c1) = (
            &t[(2 * k) * plen..(2 * k) * plen + n1],
            &t[(2 * k + 1) * plen..(2 * k + 1) * plen + n1],
        );
        let at = |j: usize| ((4 * k + j) * g.ci + c) * tpad;
        for j in 0..4 {
            let row = &mut v[at(j)..at(j) + tq];
            let (dst, rest) = row.split_at_mut(n_t);
            rest.fill(0.0);
            match j {
                0 => dst
                    .iter_mut()
                    .zip(c0.windows(2))
                    .for_each(|(d, w)| *d = w[0] - w[1]),
                1 => dst
                    .iter_mut()
                    .zip(c1)
                    .zip(&c0[1..])
                    .for_each(|((d, &a), &b)| *d = a + b),
                2 => dst
                    .iter_mut()
                    .zip(&c0[1..])
                    .zip(c1)
                    .for_each(|((d, &b), &a)| *d = b - a),
                _ => dst
                    .iter_mut()
                    .zip(c1.windows(2))
                    .for_each(|(d, w)| *d = w[0] - w[1]),
            }
        }
    }
}

simd_dispatch! {
    /// [`input_transform`], on the widest vectors [`super::isa::isa`] allows.
    fn input_transform_fast(
        g: &Geom,
        x: &[f32],
        which: (usize, usize),
        bd: Band,
        phases: (&mut [f32], usize),
        out: (&mut [f32], usize, usize),
    ) = input_transform;
}

/// Output channel o: `M_ξ[o, t]` (at `mm[(ξ·co_pad + o)·tpad + t]`) → `Aᵀ M A`, added into the stack's
/// output `ys` (m images × co planes of oh × ow; outputs past oh or ow dropped). `s` is scratch for
/// 12 rows of the band.
#[inline(always)]
fn output_transform(
    g: &Geom,
    (mm, co_pad, tpad): (&[f32], usize, usize),
    (o, m): (usize, usize),
    bd: Band,
    s: &mut [f32],
    ys: &mut [f32],
) {
    let n_t = m * bd.per_image;
    let mrow = |xi: usize| &mm[(xi * co_pad + o) * tpad..(xi * co_pad + o) * tpad + n_t];
    // (M A)[k, 0] = M[k,0] + M[k,1] + M[k,2], (M A)[k, 1] = M[k,1] − M[k,2] − M[k,3]: rows 2k, 2k + 1 of s
    let (ma, ys_rows) = s.split_at_mut(8 * n_t);
    for k in 0..4 {
        let (m0, m1, m2, m3) = (
            mrow(4 * k),
            mrow(4 * k + 1),
            mrow(4 * k + 2),
            mrow(4 * k + 3),
        );
        let (r0, r1) = ma[2 * k * n_t..(2 * k + 2) * n_t].split_at_mut(n_t);
        for ((((a, b), &e0), &e1), (&e2, &e3)) in r0
            .iter_mut()
            .zip(r1.iter_mut())
            .zip(m0)
            .zip(m1)
            .zip(m2.iter().zip(m3))
        {
            *a = e0 + e1 + e2;
            *b = e1 - e2 - e3;
        }
    }
    // Y[0, j] = MA[0,j] + MA[1,j] + MA[2,j], Y[1, j] = MA[1,j] − MA[2,j] − MA[3,j]: rows 2a + j of ys_rows
    let ma = &*ma;
    for j in 0..2 {
        let r = |k: usize| &ma[(2 * k + j) * n_t..(2 * k + j + 1) * n_t];
        let (q0, q1, q2, q3) = (r(0), r(1), r(2), r(3));
        let (y0, rest) = ys_rows[j * n_t..].split_at_mut(n_t);
        let y1 = &mut rest[n_t..2 * n_t];
        for ((((a, b), &e0), &e1), (&e2, &e3)) in y0
            .iter_mut()
            .zip(y1.iter_mut())
            .zip(q0)
            .zip(q1)
            .zip(q2.iter().zip(q3))
        {
            *a = e0 + e1 + e2;
            *b = e1 - e2 - e3;
        }
    }
    let ys_rows = &*ys_rows;
    let pp = g.oh * g.ow;
    for b in 0..m {
        let yo = &mut ys[(b * g.co + o) * pp..(b * g.co + o + 1) * pp];
        for (oy, dst) in yo.chunks_exact_mut(g.ow.max(1)).enumerate() {
            let (ty, a) = (oy / 2, oy % 2);
            let at = b * bd.per_image + ty * bd.l;
            let y0 = &ys_rows[(2 * a) * n_t + at..(2 * a) * n_t + at + bd.tw];
            let y1 = &ys_rows[(2 * a + 1) * n_t + at..(2 * a + 1) * n_t + at + bd.tw];
            for ((pair, &v0), &v1) in dst.chunks_mut(2).zip(y0).zip(y1) {
                pair[0] += v0;
                if let Some(p1) = pair.get_mut(1) {
                    *p1 += v1;
                }
            }
        }
    }
}

simd_dispatch! {
    /// [`output_transform`], on the widest vectors [`super::isa::isa`] allows.
    fn output_transform_fast(
        g: &Geom,
        prods: (&[f32], usize, usize),
        which: (usize, usize),
        bd: Band,
        s: &mut [f32],
        ys: &mut [f32],
    ) = output_transform;
}

/// Forward of a 3×3 stride-1 convolution ([`applies`]): `y (n, co, oh, ow) = W ∗ x + b` (b per channel, or
/// per image and channel), plus `residual` (shaped like y) when given.
pub(super) fn conv_forward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let isa = isa();
    let t = tile_of(isa);
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    let bd = Band {
        th,
        tw,
        l: tw + 1,
        per_image: (th + 1) * (tw + 1),
    };
    let most = g.n.div_ceil(4 * rayon::current_num_threads()).max(1);
    let stack = STACK_TILES.div_ceil(bd.per_image).clamp(1, most);
    let tpad = (stack * bd.per_image).div_ceil(t.nr) * t.nr;
    // the phase planes: one image's (th + 2) × L block each (a row of slack for the offsets), per image
    let plen = stack * bd.per_image + bd.l + 1;
    let co_pad = g.co.div_ceil(t.mr) * t.mr;
    let u = weight_transform(g, w);
    let packed: Vec<Vec<f32>> = u
        .chunks_exact(g.co * g.ci)
        .map(|ux| pack_weights(ux, g.co, g.ci, t.mr))
        .collect();
    let offs: Vec<usize> = (0..g.ci).map(|c| c * tpad).collect();
    let (in_len, pp) = (g.ci * g.h * g.w, g.oh * g.ow);
    let (vlen, mlen) = (16 * g.ci * tpad, 16 * co_pad * tpad);
    let slen = 12 * plen;
    par_stacks_from_planes(g.n, stack, g.co, pp, plane_bias(b, g.co), |i0, ys| {
        let m = ys.len() / (g.co * pp).max(1); // images in this stack
        let xs = &x[i0 * in_len..(i0 + m) * in_len];
        let tq = (m * bd.per_image).div_ceil(t.nr) * t.nr;
        with_scratch(vlen + mlen + slen, |buf| {
            let (v, rest) = buf.split_at_mut(vlen);
            let (mm, s) = rest.split_at_mut(mlen);
            for c in 0..g.ci {
                input_transform_fast(g, xs, (c, m), bd, (&mut *s, plen), (&mut *v, tpad, tq));
            }
            for ((vx, mx), wx) in v
                .chunks_exact(g.ci * tpad)
                .zip(mm.chunks_exact_mut(co_pad * tpad))
                .zip(&packed)
            {
                for (wblk, mblk) in wx
                    .chunks_exact(g.ci * t.mr)
                    .zip(mx.chunks_exact_mut(t.mr * tpad))
                {
                    for q0 in (0..tq).step_by(t.nr) {
                        tile(isa, wblk, &vx[q0..], &offs, &mut mblk[q0..], tpad);
                    }
                }
            }
            for o in 0..g.co {
                output_transform_fast(g, (&*mm, co_pad, tpad), (o, m), bd, &mut *s, &mut *ys);
            }
        });
        if let Some(r) = residual {
            add(ys, &r[i0 * g.co * pp..(i0 + m) * g.co * pp]);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::implicit::tests::check_forward;
    use crate::nn::kernels::isa::Isa;
    use crate::nn::kernels::testing::min_ms;
    use crate::rng::Rng;
    use crate::Result;

    /// Winograd's forward on every build against candle's stock conv2d (+ bias + residual).
    #[test]
    fn every_build_matches_candle_conv2d() -> Result<()> {
        for isa in Isa::available() {
            // (x shape, co, p): odd sizes (a last tile half outside), padding 0 and 2 (a flipped conv's),
            // stacks of several images (the last one short), channels not a multiple of the register tile
            for (seed, (xs, co, p)) in [
                ([2, 64, 11, 13], 64, 1),
                ([3, 65, 13, 12], 67, 0),
                ([2, 64, 10, 10], 72, 2),
                ([19, 64, 10, 11], 64, 1),
                ([1, 64, 28, 28], 64, 1),
            ]
            .into_iter()
            .enumerate()
            {
                check_forward((conv_forward, applies), isa, xs, co, 3, p, seed as u64)?;
            }
        }
        Ok(())
    }

    /// Not a test: prints the forward against the implicit GEMM on the sizes that chose [`applies`]' limits
    /// (2 threads: `RAYON_NUM_THREADS=2 cargo test --release -p dgm --lib timing_against_the_implicit_gemm --
    /// --ignored --nocapture --test-threads=1`).
    #[test]
    #[ignore]
    fn timing_against_the_implicit_gemm() {
        for (n, ci, co, h) in [
            (128, 64, 64, 28),
            (128, 128, 128, 14),
            (64, 64, 64, 7),
            (64, 16, 16, 28),
            (64, 32, 32, 14),
            (64, 64, 32, 14),
            (64, 32, 64, 14),
        ] {
            let g = Geom {
                n,
                ci,
                h,
                w: h,
                co,
                k: 3,
                s: 1,
                p: 1,
                oh: h,
                ow: h,
            };
            let mut rng = Rng::new(1);
            let x = rng.normal_vec(n * ci * h * h);
            let w = rng.normal_vec(co * ci * 9);
            let direct = min_ms(7, || {
                super::super::implicit::conv_forward(&g, &x, &w, None, None)[0]
            });
            let wino = min_ms(7, || conv_forward(&g, &x, &w, None, None)[0]);
            eprintln!(
                "3×3, {n} images, {ci} → {co} ch, {h}×{h}: implicit {direct:.2} ms, Winograd {wino:.2} ms ({:.2}×)",
                direct / wino
            );
        }
    }
}
