//! Building blocks of decoder-only transformers (Vaswani et al. 2017, arXiv:1706.03762; GPT-2: Radford et al.
//! 2019), laid out as in Karpathy's nanoGPT `model.py`: pre-LayerNorm blocks
//!
//! ```text
//! x ← x + Dropout(W_o · CausalAttention(W_qkv · LN₁(x)))       attention sub-block
//! x ← x + Dropout(W₂ · GELU(W₁ · LN₂(x)))                       MLP sub-block, C → 4C → C
//! ```
//!
//! with multi-head causal self-attention o_i = Σ_{j ≤ i} softmax_j(q_i·k_j / √d) v_j per head (Vaswani et al.
//! eq. 1, masked so that position i sees only positions j ≤ i), the exact GELU(x) = x·Φ(x) (Hendrycks & Gimpel
//! 2016) and LayerNorm (Ba et al. 2016, ε = 1e-5). Rows are positions: the blocks take `(b·T, C)` activations,
//! so every projection is one matrix product through dgm's fused linear kernel ([`super::linear`]).
//!
//! On the CPU in f32, the pieces candle would compose from many small ops run as single dgm kernels with their
//! own backward: [`layer_norm`], [`gelu`], [`gelu_linear`] (the MLP's second projection with the GELU folded
//! in, so the activation is never a node of the graph), [`causal_attention`] (per sequence and head, small
//! matrix products S = QKᵀ, causal softmax, PV, read straight from the packed `[q | k | v]` projection and
//! written back into `(b·T, C)` with no transposed copies; the backward recomputes the attention weights)
//! and [`token_nll`] (log-softmax cross-entropy). Elsewhere, and as the reference in the tests, they are
//! composed from candle's ops (`*_stock`). Generation reuses the keys and values of earlier positions through
//! a [`KvCache`].
//!
//! Initialisation follows nanoGPT: N(0, 0.02) for projection weights, N(0, 0.02/√(2·n_layer)) for the two
//! projections that write into the residual stream, zero biases, LayerNorm weight 1 and bias 0.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use candle_nn::init::Init;
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::attention::softmax_last_dim;
use super::gemm::sgemm;
use super::kernels::{cpu_f32, with_cpu_f32};
use super::linear::{linear, Activation};
use crate::rng::Rng;
use crate::{Error, Result};

/// LayerNorm's ε, as in PyTorch and nanoGPT.
pub const LN_EPS: f64 = 1e-5;

/// Lanes of the hand-unrolled loops (a multiple of every x86 vector width in f32).
const LANES: usize = 8;

// ---------------------------------------------------------------------------------------------------------
// Scalar helpers, written so that the loops calling them vectorise.

/// Whether this CPU runs the AVX2 + FMA builds of the loops (dgm is compiled for baseline x86-64, whose
/// vectors are half as wide). The results are the same bits either way: nothing asks for fused multiply-adds.
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `fn $name(args)` that runs `$body(args)` compiled for AVX2 + FMA when the CPU has them.
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) = $body:ident;) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// e^x in f32, branch-free (Cephes' `expf`: range reduction by ln 2, degree-6 polynomial, exponent from bits;
/// about 1 ulp). Inputs are clamped to [−87, 88]; e^−87 ≈ 1.6e−38 stands in for e^−∞.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer kept in the low mantissa bits
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC; // round(x / ln 2)
    let r = x - n * LN2_HI - n * LN2_LO; // |r| ≤ ln 2 / 2
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    let two_n = f32::from_bits(t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23);
    e * two_n
}

/// (Φ(x), φ(x)), the standard normal CDF and density, sharing e^(−x²/2): Φ(x) = (1 + erf(x/√2))/2 with erf by
/// Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e−7; the approximation PyTorch's vectorised CPU `erf` uses
/// too).
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    let e = exp_approx(-a * a); // e^(−x²/2)
    let erf = (1.0 - poly * e).copysign(z);
    (0.5 * (1.0 + erf), INV_SQRT_2PI * e)
}

/// GELU(x) = x·Φ(x).
#[inline(always)]
fn gelu_f32(x: f32) -> f32 {
    x * normal_cdf_pdf(x).0
}

/// (GELU(x), GELU′(x)) with GELU′(x) = Φ(x) + x·φ(x).
#[inline(always)]
fn gelu_and_grad_f32(x: f32) -> (f32, f32) {
    let (cdf, pdf) = normal_cdf_pdf(x);
    (x * cdf, cdf + x * pdf)
}

/// a·b with LANES partial sums (a fixed summation order that the compiler can vectorise).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ac, ar) = a.as_chunks::<LANES>();
    let (bc, br) = b.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for (x, y) in ac.iter().zip(bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// y += a·x.
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor (copying it to a contiguous one first if needed).
fn with_data<R>(op: &str, t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    with_cpu_f32(&t, f)
        .ok_or_else(|| Error::invalid(op, "the CPU kernel needs an f32 CPU tensor".to_string()))
}

/// A candle error from a dgm one (inside `CustomOp::bwd`).
fn to_candle(e: Error) -> candle_core::Error {
    match e {
        Error::Candle(c) => c,
        other => candle_core::Error::Msg(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------------------
// LayerNorm

/// LayerNorm over the last dimension, `weight` initialised to 1 and `bias` (optional, as nanoGPT's
/// `bias = False`) to 0, ε = 1e-5.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    /// The bias variable, or a constant zero vector when the layer has none.
    bias: Tensor,
}

impl LayerNorm {
    /// A LayerNorm over `dim` features; variables `weight` (dim,) and, with `bias`, `bias` (dim,) under `vb`.
    pub fn new(dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let bias = if bias {
            vb.get_with_hints(dim, "bias", Init::Const(0.0))?
        } else {
            Tensor::zeros(dim, vb.dtype(), vb.device())?
        };
        Ok(Self { weight, bias })
    }

    /// `(…, dim)` → same shape: γ ⊙ (x − μ) / √(σ² + ε) + β over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, LN_EPS)
    }
}

/// LayerNorm of `x: (…, c)` over its last dimension with affine `gamma`, `beta`: `(c,)`: dgm's CPU kernel on
/// f32 CPU tensors, candle's ops elsewhere.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if super::use_cpu_kernel(x) {
        Ok(x.contiguous()?.apply_op3(
            &gamma.contiguous()?,
            &beta.contiguous()?,
            LayerNormOp { eps },
        )?)
    } else {
        layer_norm_stock(x, gamma, beta, eps)
    }
}

/// The reference LayerNorm: candle's stock ops.
pub fn layer_norm_stock(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(xn.broadcast_mul(gamma)?.broadcast_add(beta)?)
}

/// Rows of a LayerNorm handled by one parallel task.
const LN_ROWS: usize = 32;

/// (mean, 1/√(σ² + ε)) of one row, two passes in f32 with LANES partial sums.
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len().max(1) as f32;
    let (xc, xr) = x.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for c in xc {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    let mean = (acc.iter().sum::<f32>() + xr.iter().sum::<f32>()) / n;
    let mut acc = [0f32; LANES];
    for c in xc {
        for l in 0..LANES {
            let d = c[l] - mean;
            acc[l] += d * d;
        }
    }
    let var =
        (acc.iter().sum::<f32>() + xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// LayerNorm of the rows of `x` (each `γ.len()` long) into `y`.
#[inline(always)]
fn ln_rows(x: &[f32], g: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
    let c = g.len();
    for (y, x) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        let (mean, rstd) = row_stats(x, eps);
        for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(g).zip(b) {
            *y = (x - mean) * rstd * g + b;
        }
    }
}

avx2_dispatch! {
    /// [`ln_rows`], on AVX2 when the CPU has it.
    fn ln_rows_fast(x: &[f32], g: &[f32], b: &[f32], eps: f32, y: &mut [f32]) = ln_rows;
}

/// The LayerNorm backward over the rows of one block: dx into `dx`, and this block's dγ, dβ into `dg`, `db`
/// (zeroed first); `xh`, `gw` are scratch rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn ln_grad_rows(
    x: &[f32],
    g: &[f32],
    gm: &[f32],
    eps: f32,
    dx: &mut [f32],
    dg: &mut [f32],
    db: &mut [f32],
    scratch: &mut [f32],
) {
    let c = gm.len();
    dg.fill(0.0);
    db.fill(0.0);
    let (xh, gw) = scratch.split_at_mut(c);
    for ((dx, x), g) in dx
        .chunks_exact_mut(c)
        .zip(x.chunks_exact(c))
        .zip(g.chunks_exact(c))
    {
        let (mean, rstd) = row_stats(x, eps);
        for j in 0..c {
            xh[j] = (x[j] - mean) * rstd;
            gw[j] = g[j] * gm[j];
            dg[j] += g[j] * xh[j];
            db[j] += g[j];
        }
        let a = sum_lanes(gw) / c as f32;
        let bsum = dot(gw, xh) / c as f32;
        for j in 0..c {
            dx[j] = rstd * (gw[j] - a - xh[j] * bsum);
        }
    }
}

avx2_dispatch! {
    /// [`ln_grad_rows`], on AVX2 when the CPU has it.
    #[allow(clippy::too_many_arguments)]
    fn ln_grad_rows_fast(
        x: &[f32],
        g: &[f32],
        gm: &[f32],
        eps: f32,
        dx: &mut [f32],
        dg: &mut [f32],
        db: &mut [f32],
        scratch: &mut [f32]
    ) = ln_grad_rows;
}

/// The CPU op behind [`layer_norm`]: `(x, γ, β)`.
struct LayerNormOp {
    eps: f64,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "dgm-layer-norm"
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
        let (x, g, b) = (
            cpu_f32(name, s1, l1)?,
            cpu_f32(name, s2, l2)?,
            cpu_f32(name, s3, l3)?,
        );
        let c = l1.dims().last().copied().unwrap_or(1);
        if c == 0 || g.len() != c || b.len() != c {
            candle_core::bail!(
                "{name}: affine of {} / {} for {c} features",
                g.len(),
                b.len()
            );
        }
        let eps = self.eps as f32;
        let y = par_filled(x.len(), c * LN_ROWS, |i, y| {
            let x0 = i * c * LN_ROWS;
            ln_rows_fast(&x[x0..x0 + y.len()], g, b, eps, y)
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = gamma.elem_count();
        let (dx, dg, db) = layer_norm_backward(x, gamma, grad, c, self.eps).map_err(to_candle)?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dg, c, dev)?),
            Some(Tensor::from_vec(db, c, dev)?),
        ))
    }
}

/// dx, dγ, dβ of LayerNorm: with x̂ = (x − μ)·r and g′ = g ⊙ γ, dx = r·(g′ − mean(g′) − x̂·mean(g′ ⊙ x̂)),
/// dγ = Σ_rows g ⊙ x̂, dβ = Σ_rows g. The per-parameter sums are reduced block by block in a fixed order.
fn layer_norm_backward(
    x: &Tensor,
    gamma: &Tensor,
    grad: &Tensor,
    c: usize,
    eps: f64,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let eps = eps as f32;
    let name = "dgm-layer-norm backward";
    let out = with_data(name, x, |x| {
        with_data(name, gamma, |gm| {
            with_data(name, grad, |g| {
                let mut dx = vec![0f32; x.len()];
                let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
                    .par_chunks_mut(c * LN_ROWS)
                    .zip(x.par_chunks(c * LN_ROWS))
                    .zip(g.par_chunks(c * LN_ROWS))
                    .map(|((dx, x), g)| {
                        let (mut dg, mut db) = (vec![0f32; c], vec![0f32; c]);
                        let mut scratch = vec![0f32; 2 * c];
                        ln_grad_rows_fast(x, g, gm, eps, dx, &mut dg, &mut db, &mut scratch);
                        (dg, db)
                    })
                    .collect();
                let (mut dg, mut db) = (vec![0f32; c], vec![0f32; c]);
                for (pg, pb) in partial {
                    axpy(&mut dg, 1.0, &pg);
                    axpy(&mut db, 1.0, &pb);
                }
                (dx, dg, db)
            })
        })
    })???;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------
// Linear layer with nanoGPT's initialisation

/// A fully connected layer `y = x Wᵀ (+ b)`, W (out, in) as in PyTorch, initialised N(0, std²) with a zero
/// bias (nanoGPT); without a bias when `bias` is false. Runs on [`dense`].
#[derive(Clone, Debug)]
pub struct Dense {
    weight: Tensor,
    /// The bias variable, or a constant zero vector when the layer has none.
    bias: Tensor,
}

impl Dense {
    /// Variables `weight` (out, in) and, with `bias`, `bias` (out,) under `vb`.
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        std: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get_with_hints(
            (out_dim, in_dim),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        )?;
        let bias = if bias {
            vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?
        } else {
            Tensor::zeros(out_dim, vb.dtype(), vb.device())?
        };
        Ok(Self { weight, bias })
    }

    /// `(m, in)` → `(m, out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        dense(x, &self.weight, &self.bias)
    }
}

/// Output rows one thread computes at least in [`par_rows`].
const GEMM_MIN_ROWS: usize = 32;

/// A vector of `len` floats built in parallel chunks of `chunk` elements (the last may be shorter): each chunk
/// is zeroed by the thread that then hands it to `work(i, chunk)`, so the zeroing happens in parallel and in
/// cache rather than as one serial pass before the work.
fn par_filled(len: usize, chunk: usize, work: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    if len > 0 {
        v.spare_capacity_mut()[..len]
            .par_chunks_mut(chunk.max(1))
            .enumerate()
            .for_each(|(i, c)| {
                for e in c.iter_mut() {
                    e.write(0.0);
                }
                // SAFETY: every element of `c` was written just above, so it is an initialised [f32].
                let c = unsafe { &mut *(c as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
                work(i, c);
            });
    }
    // SAFETY: the loop above wrote all `len` elements (none when `len` is 0).
    unsafe { v.set_len(len) };
    v
}

/// A new `(m × n)` matrix computed in blocks of rows, one per thread (at least [`GEMM_MIN_ROWS`] rows each):
/// `f(r0, block)` fills the zeroed `block`, rows `r0 .. r0 + block.len() / n`. With a single-threaded gemm per
/// block this splits matrix products evenly over the threads — gemm's own threading splits these small shapes
/// poorly (768 × 128 → 512 gets no speed-up at all from a second thread on this project's 2-core machine,
/// where MKL gets 2×) — and every output element is computed the same way whatever the split, so results do
/// not depend on the thread count.
fn par_rows(m: usize, n: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let parts = rayon::current_num_threads().min(m / GEMM_MIN_ROWS).max(1);
    let rows = m.div_ceil(parts).max(1);
    par_filled(m * n, rows * n, |i, block| f(i * rows, block))
}

/// Sets every row (`b.len()` long) of `y` to `b`.
fn fill_rows(y: &mut [f32], b: &[f32]) {
    for row in y.chunks_exact_mut(b.len().max(1)) {
        row.copy_from_slice(b);
    }
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
    if super::use_cpu_kernel(x) && x.rank() == 2 {
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
            fill_rows(y, b);
            let a = &x[r0 * k..];
            sgemm((y.len() / n, n, k), y, n, true, a, (k, 1), w, (1, k), false);
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
                    let db = column_sums(g, n);
                    // dW (n × k) = gᵀ (n × m) · x (m × k)
                    let dw = par_rows(n, k, |r0, d| {
                        sgemm(
                            (d.len() / k, k, m),
                            d,
                            k,
                            false,
                            &g[r0..],
                            (1, n),
                            x,
                            (k, 1),
                            false,
                        )
                    });
                    // dx (m × k) = g (m × n) · W (n × k)
                    let dx = want_dx.then(|| {
                        par_rows(m, k, |r0, d| {
                            let a = &g[r0 * n..];
                            sgemm(
                                (d.len() / k, k, n),
                                d,
                                k,
                                false,
                                a,
                                (n, 1),
                                w,
                                (k, 1),
                                false,
                            )
                        })
                    });
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

// ---------------------------------------------------------------------------------------------------------
// GELU

/// The exact GELU x·Φ(x) (PyTorch's `nn.GELU()` default): dgm's CPU kernel (erf to ≤ 1.5e−7) on f32 CPU
/// tensors, candle's `gelu_erf` elsewhere.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if super::use_cpu_kernel(x) {
        Ok(x.contiguous()?.apply_op1(GeluOp)?)
    } else {
        Ok(x.gelu_erf()?)
    }
}

/// Elements per parallel task of the elementwise kernels.
const ELEM_TASK: usize = 1 << 14;

/// y = GELU(x) elementwise.
#[inline(always)]
fn gelu_chunk(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = gelu_f32(x);
    }
}

/// dx = g · GELU′(x) elementwise.
#[inline(always)]
fn gelu_grad_chunk(x: &[f32], g: &[f32], dx: &mut [f32]) {
    for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
        *d = g * gelu_and_grad_f32(x).1;
    }
}

/// d ⊙= GELU′(z) elementwise.
#[inline(always)]
fn scale_by_gelu_grad(z: &[f32], d: &mut [f32]) {
    for (d, &z) in d.iter_mut().zip(z) {
        *d *= gelu_and_grad_f32(z).1;
    }
}

avx2_dispatch! {
    /// [`scale_by_gelu_grad`], on AVX2 when the CPU has it.
    fn scale_by_gelu_grad_fast(z: &[f32], d: &mut [f32]) = scale_by_gelu_grad;
}

avx2_dispatch! {
    /// [`gelu_chunk`], on AVX2 when the CPU has it.
    fn gelu_chunk_fast(x: &[f32], y: &mut [f32]) = gelu_chunk;
}

avx2_dispatch! {
    /// [`gelu_grad_chunk`], on AVX2 when the CPU has it.
    fn gelu_grad_chunk_fast(x: &[f32], g: &[f32], dx: &mut [f32]) = gelu_grad_chunk;
}

/// The CPU op behind [`gelu`].
struct GeluOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "dgm-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = cpu_f32(self.name(), s, l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ELEM_TASK)
            .zip(x.par_chunks(ELEM_TASK))
            .for_each(|(y, x)| gelu_chunk_fast(x, y));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let name = "dgm-gelu backward";
        let dx = with_data(name, x, |x| {
            with_data(name, grad, |g| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(ELEM_TASK)
                    .zip(x.par_chunks(ELEM_TASK))
                    .zip(g.par_chunks(ELEM_TASK))
                    .for_each(|((d, x), g)| gelu_grad_chunk_fast(x, g, d));
                dx
            })
        })
        .and_then(|r| r)
        .map_err(to_candle)?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// `GELU(z) Wᵀ + b` for `z: (m, in)`, `W: (out, in)`, `b: (out,)` — the MLP's second projection with the
/// activation folded in: one dgm kernel on f32 CPU tensors (GELU(z) is not kept: the backward recomputes it,
/// and GELU′(z) where it scales dz), [`gelu`] then [`linear`] elsewhere.
pub fn gelu_linear(z: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if super::use_cpu_kernel(z) && z.rank() == 2 {
        return Ok(z
            .contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, GeluLinearOp)?);
    }
    linear(&gelu(z)?, w, b, Activation::Identity)
}

/// The CPU op behind [`gelu_linear`]: `(z, W, b)`.
struct GeluLinearOp;

impl CustomOp3 for GeluLinearOp {
    fn name(&self) -> &'static str {
        "dgm-gelu-linear"
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
        let (z, w, b) = (
            cpu_f32(name, s1, l1)?,
            cpu_f32(name, s2, l2)?,
            cpu_f32(name, s3, l3)?,
        );
        let (m, k) = l1.shape().dims2()?;
        let (n, kw) = l2.shape().dims2()?;
        if kw != k || b.len() != n {
            candle_core::bail!(
                "{name}: z {:?}, W {:?}, b {}",
                l1.dims(),
                l2.dims(),
                b.len()
            );
        }
        // y (m × n) = b + GELU(z) (m × k) · Wᵀ (k × n), GELU of each block of rows computed by its thread
        let y = par_rows(m, n, |r0, y| {
            let r = y.len() / n;
            let mut a = vec![0f32; r * k];
            gelu_chunk_fast(&z[r0 * k..(r0 + r) * k], &mut a);
            fill_rows(y, b);
            sgemm((r, n, k), y, n, true, &a, (k, 1), w, (1, k), false);
        });
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        z: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (m, k) = z.dims2()?;
        let n = w.dim(0)?;
        let name = "dgm-gelu-linear backward";
        let (dz, dw, db) = with_data(name, z, |z| {
            with_data(name, w, |w| {
                with_data(name, grad, |g| {
                    // a = GELU(z)
                    let a = par_rows(m, k, |r0, blk| {
                        gelu_chunk_fast(&z[r0 * k..r0 * k + blk.len()], blk)
                    });
                    let db = column_sums(g, n);
                    // dW (n × k) = gᵀ (n × m) · a (m × k)
                    let dw = par_rows(n, k, |r0, d| {
                        sgemm(
                            (d.len() / k, k, m),
                            d,
                            k,
                            false,
                            &g[r0..],
                            (1, n),
                            &a,
                            (k, 1),
                            false,
                        )
                    });
                    // dz (m × k) = (g (m × n) · W (n × k)) ⊙ GELU′(z)
                    let dz = par_rows(m, k, |r0, d| {
                        let a = &g[r0 * n..];
                        sgemm(
                            (d.len() / k, k, n),
                            d,
                            k,
                            false,
                            a,
                            (n, 1),
                            w,
                            (k, 1),
                            false,
                        );
                        scale_by_gelu_grad_fast(&z[r0 * k..r0 * k + d.len()], d);
                    });
                    (dz, dw, db)
                })
            })
        })
        .and_then(|r| r)
        .and_then(|r| r)
        .map_err(to_candle)?;
        let dev = z.device();
        let dz = z
            .track_op()
            .then(|| Tensor::from_vec(dz, (m, k), dev))
            .transpose()?;
        Ok((
            dz,
            Some(Tensor::from_vec(dw, (n, k), dev)?),
            Some(Tensor::from_vec(db, n, dev)?),
        ))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Causal self-attention

/// Dropout: each element zeroed with probability `p`, the rest scaled by 1/(1 − p), the mask drawn from `rng`.
pub fn dropout(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let scale = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.uniform_f64() < p { 0.0 } else { scale })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

/// Multi-head causal self-attention over `t` positions from the packed projection `qkv: (b·t, 3C)` (channels
/// `[q | k | v]`, each `[head 0 | head 1 | …]`, rows `(sequence, position)`), → `(b·t, C)` with the heads
/// side by side: o_i = Σ_{j ≤ i} softmax_j(q_i·k_j/√d) v_j. One dgm kernel with its own backward on f32 CPU
/// tensors, [`causal_attention_stock`] elsewhere.
pub fn causal_attention(qkv: &Tensor, t: usize, n_head: usize) -> Result<Tensor> {
    let (m, c3) = qkv.dims2()?;
    check_heads(c3, n_head)?;
    if t == 0 || !m.is_multiple_of(t) {
        return Err(Error::invalid(
            "attention",
            format!("{m} rows are not whole sequences of {t} positions"),
        ));
    }
    if super::use_cpu_kernel(qkv) {
        return Ok(qkv
            .contiguous()?
            .apply_op1(CausalAttentionOp { t, n_head })?);
    }
    causal_attention_stock(qkv, t, n_head, None)
}

fn check_heads(c3: usize, n_head: usize) -> Result<()> {
    if n_head == 0 || !c3.is_multiple_of(3 * n_head) {
        return Err(Error::invalid(
            "attention",
            format!(
                "a packed projection of {c3} channels cannot hold q, k, v for {n_head} heads; need a \
                 multiple of 3·n_head"
            ),
        ));
    }
    Ok(())
}

/// [`causal_attention`] composed from candle's ops (batched matmuls, a −∞ mask, [`softmax_last_dim`]), with
/// dropout on the attention weights when `dropout` is given (training).
pub fn causal_attention_stock(
    qkv: &Tensor,
    t: usize,
    n_head: usize,
    dropout: Option<(f64, &mut Rng)>,
) -> Result<Tensor> {
    let (m, c3) = qkv.dims2()?;
    check_heads(c3, n_head)?;
    let (b, c) = (m / t.max(1), c3 / 3);
    let qkv = qkv.reshape((b, t, c3))?; // (b, t, 3C)
    let part = |i: usize| -> Result<Tensor> { Ok(qkv.narrow(2, i * c, c)?) }; // (b, t, C)
    let y = attention_composed(&part(0)?, &part(1)?, &part(2)?, n_head, dropout)?; // (b, t, C)
    Ok(y.reshape((m, c))?)
}

/// Attention of `q: (b, tq, C)` over `k`, `v`: `(b, tk, C)` (tk ≥ tq), query i sitting at absolute position
/// tk − tq + i and seeing keys 0 ..= tk − tq + i, composed from candle's ops; → `(b, tq, C)`.
fn attention_composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    n_head: usize,
    dropout: Option<(f64, &mut Rng)>,
) -> Result<Tensor> {
    let (b, tq, c) = q.dims3()?;
    let tk = k.dim(1)?;
    let d = c / n_head;
    let offset = tk.saturating_sub(tq);
    let heads = |x: &Tensor, n: usize| -> Result<Tensor> {
        Ok(x.reshape((b, n, n_head, d))?
            .transpose(1, 2)?
            .contiguous()?) // (b, H, n, d)
    };
    let (qh, kh, vh) = (heads(q, tq)?, heads(k, tk)?, heads(v, tk)?);
    let scores = (qh.matmul(&kh.t()?.contiguous()?)? * (1.0 / (d as f64).sqrt()))?; // (b, H, tq, tk)
    let mask: Vec<f32> = (0..tq)
        .flat_map(|i| {
            (0..tk).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    let mask = Tensor::from_vec(mask, (tq, tk), q.device())?.to_dtype(q.dtype())?;
    let mut att = softmax_last_dim(&scores.broadcast_add(&mask)?)?; // (b, H, tq, tk), rows sum to 1
    if let Some((p, rng)) = dropout {
        att = self::dropout(&att, p, rng)?;
    }
    let y = att.matmul(&vh)?; // (b, H, tq, d)
    Ok(y.transpose(1, 2)?.contiguous()?.reshape((b, tq, c))?) // (b, tq, C)
}

/// Where the rows of one attention call live: sequences of `nq` queries (row stride `q_stride`) and `nk`
/// keys / values (row stride `kv_stride`), `heads` heads of `d` channels; query i sits at position nk − nq + i.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    nq: usize,
    nk: usize,
    heads: usize,
    d: usize,
    q_stride: usize,
    kv_stride: usize,
}

/// Scales row `s` by `scale` and turns its first `lim` entries into softmax weights, zeroing the rest (the
/// causal mask).
#[inline(always)]
fn softmax_prefix(s: &mut [f32], lim: usize, scale: f32) {
    let (head, tail) = s.split_at_mut(lim);
    head.iter_mut().for_each(|v| *v *= scale);
    let max = max_lanes(head);
    head.iter_mut().for_each(|v| *v = exp_approx(*v - max));
    let inv = 1.0 / sum_lanes(head);
    head.iter_mut().for_each(|v| *v *= inv);
    tail.fill(0.0);
}

/// Σ x with LANES partial sums.
#[inline(always)]
fn sum_lanes(x: &[f32]) -> f32 {
    let (xc, xr) = x.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for c in xc {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + xr.iter().sum::<f32>()
}

/// max x with LANES partial maxima (−∞ for an empty slice).
#[inline(always)]
fn max_lanes(x: &[f32]) -> f32 {
    let (xc, xr) = x.as_chunks::<LANES>();
    let mut acc = [f32::NEG_INFINITY; LANES];
    for c in xc {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    xr.iter()
        .chain(&acc)
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

/// Causal softmax of every row of the scores `s` (`nq` rows of `nk`), row i keeping keys 0 ..= offset + i.
#[inline(always)]
fn causal_softmax_rows(s: &mut [f32], nk: usize, offset: usize, scale: f32) {
    for (i, row) in s.chunks_exact_mut(nk).enumerate() {
        softmax_prefix(row, offset + i + 1, scale);
    }
}

/// dS = P ⊙ (dP − rowsum(P ⊙ dP)) · scale, in place in `dp` (rows of `n`).
#[inline(always)]
fn softmax_grad_rows(p: &[f32], dp: &mut [f32], n: usize, scale: f32) {
    for (pr, dr) in p.chunks_exact(n).zip(dp.chunks_exact_mut(n)) {
        let s = dot(pr, dr);
        for (d, &p) in dr.iter_mut().zip(pr) {
            *d = p * (*d - s) * scale;
        }
    }
}

avx2_dispatch! {
    /// [`causal_softmax_rows`], on AVX2 when the CPU has it.
    fn causal_softmax_rows_fast(s: &mut [f32], nk: usize, offset: usize, scale: f32) = causal_softmax_rows;
}

avx2_dispatch! {
    /// [`softmax_grad_rows`], on AVX2 when the CPU has it.
    fn softmax_grad_rows_fast(p: &[f32], dp: &mut [f32], n: usize, scale: f32) = softmax_grad_rows;
}

/// The attention forward on the CPU, per sequence and head with small matrix products: S = Q Kᵀ, P = causal
/// softmax(S/√d), Y = P V, for `b` sequences. `q`, `k`, `v` start at the first element of head 0 of row 0;
/// returns the output `(b·nq, heads·d)`.
fn attention_forward_cpu(q: &[f32], k: &[f32], v: &[f32], g: Geometry, b: usize) -> Vec<f32> {
    let c = g.heads * g.d;
    let scale = 1.0 / (g.d as f32).sqrt();
    let offset = g.nk - g.nq;
    par_filled(b * g.nq * c, g.nq * c, |bi, out| {
        let mut s = vec![0f32; g.nq * g.nk];
        for h in 0..g.heads {
            let qb = &q[bi * g.nq * g.q_stride + h * g.d..];
            let kb = &k[bi * g.nk * g.kv_stride + h * g.d..];
            let vb = &v[bi * g.nk * g.kv_stride + h * g.d..];
            // S (nq × nk) = Q (nq × d) · Kᵀ (d × nk)
            let (qs, ks) = ((g.q_stride, 1), (1, g.kv_stride));
            sgemm(
                (g.nq, g.nk, g.d),
                &mut s,
                g.nk,
                false,
                qb,
                qs,
                kb,
                ks,
                false,
            );
            causal_softmax_rows_fast(&mut s, g.nk, offset, scale);
            // Y (nq × d) = P (nq × nk) · V (nk × d), into the head's columns
            let (ps, vs) = ((g.nk, 1), (g.kv_stride, 1));
            sgemm(
                (g.nq, g.d, g.nk),
                &mut out[h * g.d..],
                c,
                false,
                &s,
                ps,
                vb,
                vs,
                false,
            );
        }
    })
}

/// The backward of the packed causal attention on the CPU: `qkv: (b·t, 3C)`, `dy: (b·t, C)` → d qkv. Per
/// sequence and head, with P recomputed: dV = Pᵀ dY, dP = dY Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)) / √d,
/// dQ = dS K, dK = dSᵀ Q. Masked entries have P = 0, hence dS = 0: no gradient flows to later positions.
fn attention_backward_cpu(
    qkv: &[f32],
    dy: &[f32],
    b: usize,
    t: usize,
    heads: usize,
    d: usize,
) -> Vec<f32> {
    let c = heads * d;
    let c3 = 3 * c;
    let scale = 1.0 / (d as f32).sqrt();
    par_filled(b * t * c3, t * c3, |bi, dst| {
        let src = &qkv[bi * t * c3..(bi + 1) * t * c3];
        let dyb = &dy[bi * t * c..(bi + 1) * t * c];
        let (mut p, mut dp) = (vec![0f32; t * t], vec![0f32; t * t]);
        let (rows, cols) = ((c3, 1), (1, c3)); // a head's block of qkv, and its transpose
        let (sq, st) = ((t, 1), (1, t)); // a t × t matrix, and its transpose
        for h in 0..heads {
            let (qo, ko, vo) = (h * d, c + h * d, 2 * c + h * d);
            let dyh = &dyb[h * d..];
            sgemm(
                (t, t, d),
                &mut p,
                t,
                false,
                &src[qo..],
                rows,
                &src[ko..],
                cols,
                false,
            );
            causal_softmax_rows_fast(&mut p, t, 0, scale);
            sgemm(
                (t, d, t),
                &mut dst[vo..],
                c3,
                false,
                &p,
                st,
                dyh,
                (c, 1),
                false,
            ); // dV
            sgemm(
                (t, t, d),
                &mut dp,
                t,
                false,
                dyh,
                (c, 1),
                &src[vo..],
                cols,
                false,
            ); // dP
            softmax_grad_rows_fast(&p, &mut dp, t, scale); // dS (scaled)
            sgemm(
                (t, d, t),
                &mut dst[qo..],
                c3,
                false,
                &dp,
                sq,
                &src[ko..],
                rows,
                false,
            ); // dQ
            sgemm(
                (t, d, t),
                &mut dst[ko..],
                c3,
                false,
                &dp,
                st,
                &src[qo..],
                rows,
                false,
            ); // dK
        }
    })
}

/// The CPU op behind [`causal_attention`].
struct CausalAttentionOp {
    t: usize,
    n_head: usize,
}

impl CustomOp1 for CausalAttentionOp {
    fn name(&self) -> &'static str {
        "dgm-causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = cpu_f32(self.name(), s, l)?;
        let (m, c3) = l.shape().dims2()?;
        let c = c3 / 3;
        let g = Geometry {
            nq: self.t,
            nk: self.t,
            heads: self.n_head,
            d: c / self.n_head,
            q_stride: c3,
            kv_stride: c3,
        };
        let y = attention_forward_cpu(qkv, &qkv[c..], &qkv[2 * c..], g, m / self.t);
        Ok((CpuStorage::F32(y), Shape::from((m, c))))
    }

    fn bwd(&self, qkv: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (m, c3) = qkv.dims2()?;
        let (b, heads) = (m / self.t, self.n_head);
        let d = c3 / 3 / heads;
        let name = "dgm-causal-attention backward";
        let dqkv = with_data(name, qkv, |q| {
            with_data(name, grad, |g| {
                attention_backward_cpu(q, g, b, self.t, heads, d)
            })
        })
        .and_then(|r| r)
        .map_err(to_candle)?;
        Ok(Some(Tensor::from_vec(dqkv, (m, c3), qkv.device())?))
    }
}

/// The forward-only CPU op of [`cached_attention`]: `(q, k, v)`.
struct CachedAttentionOp {
    n_head: usize,
}

impl CustomOp3 for CachedAttentionOp {
    fn name(&self) -> &'static str {
        "dgm-cached-attention"
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
        let (q, k, v) = (
            cpu_f32(name, s1, l1)?,
            cpu_f32(name, s2, l2)?,
            cpu_f32(name, s3, l3)?,
        );
        let (b, nq, c) = l1.shape().dims3()?;
        let nk = l2.shape().dims3()?.1;
        let g = Geometry {
            nq,
            nk,
            heads: self.n_head,
            d: c / self.n_head,
            q_stride: c,
            kv_stride: c,
        };
        let y = attention_forward_cpu(q, k, v, g, b);
        Ok((CpuStorage::F32(y), Shape::from((b, nq, c))))
    }
}

/// Attention of new queries `q: (b, tq, C)` over all keys and values so far, `k`, `v`: `(b, tk, C)` (the
/// cached positions followed by the new ones, tk ≥ tq): query i sits at position tk − tq + i and sees keys
/// 0 ..= tk − tq + i; → `(b, tq, C)`. Inference only (no gradient on the CPU path).
pub fn cached_attention(q: &Tensor, k: &Tensor, v: &Tensor, n_head: usize) -> Result<Tensor> {
    let (b, tq, c) = q.dims3()?;
    let (bk, tk, ck) = k.dims3()?;
    if n_head == 0
        || !c.is_multiple_of(n_head)
        || bk != b
        || ck != c
        || k.dims() != v.dims()
        || tk < tq
    {
        return Err(Error::invalid(
            "cached attention",
            format!(
                "q {:?}, k {:?}, v {:?} with {n_head} heads do not fit together",
                q.dims(),
                k.dims(),
                v.dims()
            ),
        ));
    }
    if super::use_cpu_kernel(q) {
        return Ok(q.contiguous()?.apply_op3_no_bwd(
            &k.contiguous()?,
            &v.contiguous()?,
            &CachedAttentionOp { n_head },
        )?);
    }
    attention_composed(q, k, v, n_head, None)
}

// ---------------------------------------------------------------------------------------------------------
// Cross-entropy

/// −log softmax(logits)[target] per row: `logits: (m, V)` f32, `targets: (m,)` u32 → `(m,)` nats. dgm's CPU
/// kernel (one pass, backward softmax − one-hot) on f32 CPU tensors, candle's ops elsewhere.
pub fn token_nll(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (m, _) = logits.dims2()?;
    if targets.dims() != [m] {
        return Err(Error::invalid(
            "token_nll",
            format!("{:?} targets for {m} rows of logits", targets.dims()),
        ));
    }
    if super::use_cpu_kernel(logits) {
        let targets = targets.to_dtype(DType::U32)?.contiguous()?;
        return Ok(logits.contiguous()?.apply_op2(&targets, TokenNllOp)?);
    }
    token_nll_stock(logits, targets)
}

/// [`token_nll`] composed from candle's ops (max-shifted log-sum-exp, the max detached, and a gather).
pub fn token_nll_stock(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach(); // (m, 1)
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?; // (m, 1)
    let picked = shifted.gather(&targets.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?; // (m, 1)
    Ok((lse - picked)?.squeeze(1)?)
}

/// The CPU op behind [`token_nll`]: `(logits, targets)`.
struct TokenNllOp;

/// Softmax of one row of logits into `p`; returns log Σ exp(ℓ − max) and the max.
#[inline(always)]
fn row_softmax(l: &[f32], p: &mut [f32]) -> (f32, f32) {
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for (p, &l) in p.iter_mut().zip(l) {
        *p = (l - max).exp();
        sum += f64::from(*p);
    }
    let inv = (1.0 / sum) as f32;
    p.iter_mut().for_each(|v| *v *= inv);
    (sum.ln() as f32, max)
}

impl CustomOp2 for TokenNllOp {
    fn name(&self) -> &'static str {
        "dgm-token-nll"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let logits = cpu_f32(self.name(), s1, l1)?;
        let (CpuStorage::U32(t), Some((a, b))) = (s2, l2.contiguous_offsets()) else {
            candle_core::bail!("dgm-token-nll: targets must be contiguous u32")
        };
        let targets = &t[a..b];
        let (m, v) = l1.shape().dims2()?;
        if let Some((i, &bad)) = targets.iter().enumerate().find(|(_, &y)| y as usize >= v) {
            candle_core::bail!("dgm-token-nll: target {bad} in row {i} is outside the {v} logits");
        }
        let mut nll = vec![0f32; m];
        nll.par_iter_mut()
            .zip(logits.par_chunks(v.max(1)))
            .zip(targets.par_iter())
            .for_each(|((o, l), &y)| {
                let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = l.iter().map(|&x| f64::from((x - max).exp())).sum();
                *o = (sum.ln() as f32) + max - l[y as usize];
            });
        Ok((CpuStorage::F32(nll), Shape::from(m)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _nll: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (m, v) = logits.dims2()?;
        let targets = targets.to_vec1::<u32>()?;
        let g = grad.to_vec1::<f32>()?;
        let dl = with_data("dgm-token-nll backward", logits, |l| {
            let mut dl = vec![0f32; m * v];
            dl.par_chunks_mut(v.max(1))
                .zip(l.par_chunks(v.max(1)))
                .enumerate()
                .for_each(|(i, (d, l))| {
                    row_softmax(l, d);
                    d[targets[i] as usize] -= 1.0;
                    d.iter_mut().for_each(|x| *x *= g[i]);
                });
            dl
        })
        .map_err(to_candle)?;
        Ok((Some(Tensor::from_vec(dl, (m, v), logits.device())?), None))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Blocks

/// Sizes and options shared by the blocks of one transformer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockConfig {
    /// Width C of the residual stream.
    pub n_embd: usize,
    /// Number of attention heads (divides `n_embd`).
    pub n_head: usize,
    /// Number of blocks (sets the init scale of the residual projections).
    pub n_layer: usize,
    /// Biases in the projections and LayerNorms.
    pub bias: bool,
    /// Dropout probability on attention weights and residual branches while training.
    pub dropout: f64,
}

impl BlockConfig {
    /// The init std of the projections into the residual stream: 0.02/√(2·n_layer) (GPT-2, nanoGPT).
    fn residual_std(&self) -> f64 {
        0.02 / ((2 * self.n_layer.max(1)) as f64).sqrt()
    }
}

/// Keys and values of the positions seen so far, per block (for generation). Inference only: everything in
/// it is detached.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `n_layer` blocks.
    pub fn new(n_layer: usize) -> Self {
        Self {
            layers: vec![None; n_layer],
            len: 0,
        }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
    }
}

/// Multi-head causal self-attention with its input and output projections (`c_attn`: C → 3C, `c_proj`:
/// C → C, nanoGPT's names).
#[derive(Clone, Debug)]
pub struct CausalSelfAttention {
    c_attn: Dense,
    c_proj: Dense,
    cfg: BlockConfig,
}

impl CausalSelfAttention {
    /// Variables `c_attn.{weight,bias}`, `c_proj.{weight,bias}` under `vb`.
    pub fn new(cfg: BlockConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.n_embd;
        if cfg.n_head == 0 || !c.is_multiple_of(cfg.n_head) {
            return Err(Error::invalid(
                "n_head",
                format!(
                    "{} heads cannot split width {c}; use a divisor of {c}",
                    cfg.n_head
                ),
            ));
        }
        Ok(Self {
            c_attn: Dense::new(c, 3 * c, cfg.bias, 0.02, vb.pp("c_attn"))?,
            c_proj: Dense::new(c, c, cfg.bias, cfg.residual_std(), vb.pp("c_proj"))?,
            cfg,
        })
    }

    /// `(b·t, C)` → `(b·t, C)` over sequences of `t` positions; dropout (weights and output) when `train`
    /// carries an RNG and the config's dropout is positive.
    pub fn forward(&self, x: &Tensor, t: usize, train: Option<&mut Rng>) -> Result<Tensor> {
        let p = self.cfg.dropout;
        let qkv = self.c_attn.forward(x)?; // (b·t, 3C)
        match train {
            Some(rng) if p > 0.0 => {
                let y = causal_attention_stock(&qkv, t, self.cfg.n_head, Some((p, &mut *rng)))?;
                dropout(&self.c_proj.forward(&y)?, p, rng)
            }
            _ => self
                .c_proj
                .forward(&causal_attention(&qkv, t, self.cfg.n_head)?),
        }
    }

    /// New positions `x: (b·tn, C)` of `b` sequences attending to themselves and to the keys and values in
    /// `kv` (which are extended by the new ones); → `(b·tn, C)`. Inference only.
    fn forward_cached(
        &self,
        x: &Tensor,
        b: usize,
        kv: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let (m, c) = x.dims2()?;
        let tn = m / b.max(1);
        let qkv = self.c_attn.forward(x)?.detach().reshape((b, tn, 3 * c))?; // (b, tn, 3C)
        let q = qkv.narrow(2, 0, c)?.contiguous()?; // (b, tn, C)
        let k_new = qkv.narrow(2, c, c)?.contiguous()?;
        let v_new = qkv.narrow(2, 2 * c, c)?.contiguous()?;
        let (k, v) = match kv.take() {
            Some((k0, v0)) => (
                Tensor::cat(&[&k0, &k_new], 1)?,
                Tensor::cat(&[&v0, &v_new], 1)?,
            ),
            None => (k_new, v_new),
        }; // (b, tk, C)
        let y = cached_attention(&q, &k, &v, self.cfg.n_head)?.reshape((m, c))?; // (b·tn, C)
        *kv = Some((k, v));
        Ok(self.c_proj.forward(&y)?.detach())
    }
}

/// The MLP C → 4C → C with the exact GELU (`c_fc`, `c_proj`, nanoGPT's names).
#[derive(Clone, Debug)]
pub struct Mlp {
    c_fc: Dense,
    c_proj: Dense,
    dropout: f64,
}

impl Mlp {
    /// Variables `c_fc.{weight,bias}` (4C, C), `c_proj.{weight,bias}` (C, 4C) under `vb`.
    pub fn new(cfg: BlockConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.n_embd;
        Ok(Self {
            c_fc: Dense::new(c, 4 * c, cfg.bias, 0.02, vb.pp("c_fc"))?,
            c_proj: Dense::new(4 * c, c, cfg.bias, cfg.residual_std(), vb.pp("c_proj"))?,
            dropout: cfg.dropout,
        })
    }

    /// `(m, C)` → `(m, C)`: W₂·GELU(W₁x + b₁) + b₂, dropout on the output while training.
    pub fn forward(&self, x: &Tensor, train: Option<&mut Rng>) -> Result<Tensor> {
        let z = self.c_fc.forward(x)?; // (m, 4C), pre-activation
        let y = gelu_linear(&z, &self.c_proj.weight, &self.c_proj.bias)?; // (m, C)
        match train {
            Some(rng) if self.dropout > 0.0 => dropout(&y, self.dropout, rng),
            _ => Ok(y),
        }
    }
}

/// One pre-LayerNorm transformer block (`ln_1`, `attn`, `ln_2`, `mlp`, nanoGPT's names).
#[derive(Clone, Debug)]
pub struct Block {
    ln_1: LayerNorm,
    attn: CausalSelfAttention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    /// The block's variables under `vb`.
    pub fn new(cfg: BlockConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            ln_1: LayerNorm::new(cfg.n_embd, cfg.bias, vb.pp("ln_1"))?,
            attn: CausalSelfAttention::new(cfg, vb.pp("attn"))?,
            ln_2: LayerNorm::new(cfg.n_embd, cfg.bias, vb.pp("ln_2"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    /// `(b·t, C)` → `(b·t, C)`: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
    pub fn forward(&self, x: &Tensor, t: usize, mut train: Option<&mut Rng>) -> Result<Tensor> {
        let x = (x + self
            .attn
            .forward(&self.ln_1.forward(x)?, t, train.as_deref_mut())?)?;
        Ok((&x + self.mlp.forward(&self.ln_2.forward(&x)?, train)?)?)
    }
}

/// Runs new positions `x: (b·tn, C)` of `b` sequences through `blocks`, attending to the positions in `cache`
/// too, and adds them to the cache; → `(b·tn, C)`, detached. The caller supplies the new positions' position
/// embeddings (they start at `cache.len()`).
pub fn forward_cached(
    blocks: &[Block],
    x: &Tensor,
    b: usize,
    cache: &mut KvCache,
) -> Result<Tensor> {
    if cache.layers.len() != blocks.len() {
        return Err(Error::invalid(
            "kv cache",
            format!(
                "made for {} blocks, used with {}",
                cache.layers.len(),
                blocks.len()
            ),
        ));
    }
    let tn = x.dim(0)? / b.max(1);
    let mut x = x.detach();
    for (block, kv) in blocks.iter().zip(cache.layers.iter_mut()) {
        let a = block
            .attn
            .forward_cached(&block.ln_1.forward(&x)?.detach(), b, kv)?;
        x = (&x + a)?;
        let m = block.mlp.forward(&block.ln_2.forward(&x)?, None)?.detach();
        x = (&x + m)?;
    }
    cache.len += tn;
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{rel_err, Params};
    use candle_core::{Device, Var};

    /// The output and the gradients of Σ r ⊙ f(inputs) with respect to every input.
    fn value_and_grads(
        f: impl Fn(&[Tensor]) -> Result<Tensor>,
        inputs: &[Tensor],
        r: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let vars = inputs
            .iter()
            .map(Var::from_tensor)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts)?;
        let g = (&y * r)?.sum_all()?.backward()?;
        let mut out = vec![y];
        for v in &vars {
            out.push(
                g.get(v.as_tensor())
                    .cloned()
                    .ok_or_else(|| Error::invalid("test", "no gradient"))?,
            );
        }
        Ok(out)
    }

    fn assert_close(
        ours: &[Tensor],
        stock: &[Tensor],
        names: &[&str],
        tol: f32,
        what: &str,
    ) -> Result<()> {
        for ((u, v), name) in ours.iter().zip(stock).zip(names) {
            let e = rel_err(u, v)?;
            assert!(e < tol, "{what}: {name} rel err {e}");
        }
        Ok(())
    }

    #[test]
    fn layer_norm_kernel_matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        for (m, c, seed) in [(1, 5, 1), (70, 128, 2), (33, 37, 3), (4, 1, 4)] {
            let mut rng = Rng::new(seed);
            // a large common offset checks the variance's numerics
            let x = ((rng.randn((m, c), &dev)? * 2.0)? + 3.0)?;
            let (g, b) = (rng.randn(c, &dev)?, rng.randn(c, &dev)?);
            let r = rng.randn((m, c), &dev)?;
            let run = |stock: bool| {
                value_and_grads(
                    |t| {
                        if stock {
                            layer_norm_stock(&t[0], &t[1], &t[2], LN_EPS)
                        } else {
                            layer_norm(&t[0], &t[1], &t[2], LN_EPS)
                        }
                    },
                    &[x.clone(), g.clone(), b.clone()],
                    &r,
                )
            };
            let tol = if c == 1 { 1e-3 } else { 1e-4 };
            assert_close(
                &run(false)?,
                &run(true)?,
                &["y", "dx", "dγ", "dβ"],
                tol,
                &format!("({m}, {c})"),
            )?;
        }
        // rank 3 input, normalised rows have mean β and (with γ = 1, β = 0) unit variance
        let x = Rng::new(5).randn((2, 3, 64), &dev)?;
        let y = layer_norm(
            &x,
            &Tensor::ones(64, DType::F32, &dev)?,
            &Tensor::zeros(64, DType::F32, &dev)?,
            LN_EPS,
        )?;
        for row in y.flatten_to(1)?.to_vec2::<f32>()? {
            let mean = row.iter().sum::<f32>() / 64.0;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 64.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                "mean {mean} var {var}"
            );
        }
        Ok(())
    }

    #[test]
    fn gelu_kernel_matches_candle_gelu_erf() -> Result<()> {
        let dev = Device::Cpu;
        let x = (Rng::new(7).randn((50, 401), &dev)? * 3.0)?;
        let r = Rng::new(8).randn((50, 401), &dev)?;
        let ours = value_and_grads(|t| gelu(&t[0]), std::slice::from_ref(&x), &r)?;
        let stock = value_and_grads(|t| Ok(t[0].gelu_erf()?), std::slice::from_ref(&x), &r)?;
        // candle's backward rounds 1/√(2π) to 0.398942 (relative 7e-7)
        assert_close(&ours, &stock, &["y", "dx"], 2e-6, "gelu")?;
        // known values: GELU(0) = 0, GELU(x) → x for large x, → 0 for very negative x; Φ(1) = 0.841344746
        let v = Tensor::new(&[0f32, 1.0, 8.0, -8.0, -1.0], &dev)?;
        let y = gelu(&v)?.to_vec1::<f32>()?;
        let want = [0.0, 0.841_344_7, 8.0, 0.0, -0.158_655_3];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
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

    #[test]
    fn gelu_linear_kernel_matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        for (m, k, n, seed) in [(1, 3, 2, 1), (70, 64, 16, 2), (768, 512, 128, 3)] {
            let mut rng = Rng::new(seed);
            let z = (rng.randn((m, k), &dev)? * 2.0)?;
            let (w, b) = (rng.randn((n, k), &dev)?, rng.randn(n, &dev)?);
            let r = rng.randn((m, n), &dev)?;
            let inputs = [z, w, b];
            let ours = value_and_grads(|t| gelu_linear(&t[0], &t[1], &t[2]), &inputs, &r)?;
            let stock = value_and_grads(
                |t| Ok(t[0].gelu_erf()?.matmul(&t[1].t()?)?.broadcast_add(&t[2])?),
                &inputs,
                &r,
            )?;
            assert_close(
                &ours,
                &stock,
                &["y", "dz", "dW", "db"],
                1e-5,
                &format!("({m}, {k}) → {n}"),
            )?;
        }
        Ok(())
    }

    /// A random packed projection for `b` sequences of `t` positions, C = heads · d.
    fn random_qkv(b: usize, t: usize, c: usize, seed: u64) -> Result<Tensor> {
        Ok((Rng::new(seed).randn((b * t, 3 * c), &Device::Cpu)? * 1.5)?)
    }

    #[test]
    fn causal_attention_kernel_matches_composed_ops() -> Result<()> {
        for (b, t, heads, d, seed) in [
            (2, 7, 2, 4, 1),
            (3, 64, 4, 32, 2),
            (1, 1, 1, 3, 3),
            (2, 9, 3, 5, 4),
        ] {
            let c = heads * d;
            let qkv = random_qkv(b, t, c, seed)?;
            let r = Rng::new(seed + 10).randn((b * t, c), &Device::Cpu)?;
            let ours = value_and_grads(
                |x| causal_attention(&x[0], t, heads),
                std::slice::from_ref(&qkv),
                &r,
            )?;
            let stock = value_and_grads(
                |x| causal_attention_stock(&x[0], t, heads, None),
                std::slice::from_ref(&qkv),
                &r,
            )?;
            assert_close(
                &ours,
                &stock,
                &["y", "dqkv"],
                1e-5,
                &format!("b {b} t {t} heads {heads} d {d}"),
            )?;
        }
        Ok(())
    }

    #[test]
    fn attention_is_causal_and_the_first_position_copies_its_value() -> Result<()> {
        let (b, t, heads, d) = (2, 6, 2, 4);
        let c = heads * d;
        let qkv = random_qkv(b, t, c, 5)?;
        let y = causal_attention(&qkv, t, heads)?;
        // position 0 sees only itself: its output is its own value vector
        let y0 = y.narrow(0, 0, 1)?;
        let v0 = qkv.narrow(0, 0, 1)?.narrow(1, 2 * c, c)?;
        assert!(rel_err(&y0, &v0)? < 1e-6);
        // changing the last position leaves every earlier output unchanged (bit for bit)
        let mut vals = qkv.to_vec2::<f32>()?;
        vals[t - 1].iter_mut().for_each(|v| *v += 1.0);
        let y2 = causal_attention(&Tensor::new(vals, &Device::Cpu)?, t, heads)?;
        let before = |y: &Tensor| -> Result<Vec<f32>> {
            Ok(y.narrow(0, 0, t - 1)?.flatten_all()?.to_vec1::<f32>()?)
        };
        assert_eq!(before(&y)?, before(&y2)?);
        assert_ne!(
            y.narrow(0, t - 1, 1)?.flatten_all()?.to_vec1::<f32>()?,
            y2.narrow(0, t - 1, 1)?.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn cached_attention_over_a_prefix_equals_the_full_causal_attention() -> Result<()> {
        let (b, t, heads, d) = (2, 10, 2, 4);
        let c = heads * d;
        let qkv = random_qkv(b, t, c, 6)?;
        let full = causal_attention(&qkv, t, heads)?.reshape((b, t, c))?;
        let q3 = qkv.reshape((b, t, 3 * c))?;
        let part = |i: usize, from: usize, len: usize| -> Result<Tensor> {
            Ok(q3.narrow(2, i * c, c)?.narrow(1, from, len)?.contiguous()?)
        };
        // new positions s..e attend to keys 0..e, for both the CPU kernel and the composed ops
        for (s, e) in [(0, 10), (3, 4), (4, 9), (9, 10)] {
            let (q, k, v) = (part(0, s, e - s)?, part(1, 0, e)?, part(2, 0, e)?);
            let want = full.narrow(1, s, e - s)?;
            assert!(rel_err(&cached_attention(&q, &k, &v, heads)?, &want)? < 1e-6);
            assert!(rel_err(&attention_composed(&q, &k, &v, heads, None)?, &want)? < 1e-5);
        }
        assert!(
            cached_attention(&part(0, 0, 5)?, &part(1, 0, 4)?, &part(2, 0, 4)?, heads).is_err()
        );
        Ok(())
    }

    #[test]
    fn token_nll_kernel_matches_composed_ops_and_known_values() -> Result<()> {
        let dev = Device::Cpu;
        let (m, v) = (37, 65);
        let mut rng = Rng::new(9);
        let logits = (rng.randn((m, v), &dev)? * 4.0)?;
        let targets: Vec<u32> = (0..m).map(|_| rng.below(v) as u32).collect();
        let targets = Tensor::new(targets.as_slice(), &dev)?;
        let r = rng.randn(m, &dev)?;
        let ours = value_and_grads(
            |t| token_nll(&t[0], &targets),
            std::slice::from_ref(&logits),
            &r,
        )?;
        let stock = value_and_grads(
            |t| token_nll_stock(&t[0], &targets),
            std::slice::from_ref(&logits),
            &r,
        )?;
        assert_close(&ours, &stock, &["nll", "dlogits"], 1e-5, "token_nll")?;
        // uniform logits: ln V whatever the target; the gradient of each row sums to zero
        let flat = Tensor::zeros((3, v), DType::F32, &dev)?;
        let nll = token_nll(&flat, &Tensor::new(&[0u32, 5, 64], &dev)?)?.to_vec1::<f32>()?;
        assert!(
            nll.iter().all(|x| (x - (v as f32).ln()).abs() < 1e-5),
            "{nll:?}"
        );
        let rows = ours[1].sum(1)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(rows < 1e-5);
        // a target outside the logits is an error
        assert!(token_nll(&flat, &Tensor::new(&[0u32, 5, 65], &dev)?).is_err());
        Ok(())
    }

    #[test]
    fn dropout_zeroes_a_fraction_p_and_rescales_the_rest() -> Result<()> {
        let dev = Device::Cpu;
        let n = 40_000;
        let x = Tensor::ones(n, DType::F32, &dev)?;
        let y = dropout(&x, 0.25, &mut Rng::new(1))?.to_vec1::<f32>()?;
        let zeros = y.iter().filter(|v| **v == 0.0).count() as f64 / n as f64;
        // 5 standard errors of a Bernoulli(0.25) frequency
        assert!(
            (zeros - 0.25).abs() < 5.0 * (0.25f64 * 0.75 / n as f64).sqrt(),
            "{zeros}"
        );
        assert!(y.iter().all(|v| *v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        assert_eq!(
            dropout(&x, 0.0, &mut Rng::new(1))?.to_vec1::<f32>()?,
            vec![1.0; n]
        );
        Ok(())
    }

    #[test]
    fn block_variables_and_init_follow_nanogpt() -> Result<()> {
        let p = Params::new(0, &Device::Cpu);
        let cfg = BlockConfig {
            n_embd: 64,
            n_head: 4,
            n_layer: 8,
            bias: true,
            dropout: 0.0,
        };
        let _ = Block::new(cfg, p.var_builder())?;
        let snap = p.snapshot()?;
        let names: Vec<&str> = snap.keys().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "attn.c_attn.bias",
                "attn.c_attn.weight",
                "attn.c_proj.bias",
                "attn.c_proj.weight",
                "ln_1.bias",
                "ln_1.weight",
                "ln_2.bias",
                "ln_2.weight",
                "mlp.c_fc.bias",
                "mlp.c_fc.weight",
                "mlp.c_proj.bias",
                "mlp.c_proj.weight"
            ]
        );
        let std = |k: &str| -> Result<f64> {
            let v = snap[k].flatten_all()?.to_vec1::<f32>()?;
            Ok((v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
        };
        // 12 288 and 16 384 draws: the sample std is within 3 % of the target
        assert!((std("attn.c_attn.weight")? / 0.02 - 1.0).abs() < 0.03);
        assert!((std("mlp.c_proj.weight")? / (0.02 / 4.0) - 1.0).abs() < 0.03);
        assert_eq!(std("mlp.c_fc.bias")?, 0.0);
        let no_bias = Params::new(0, &Device::Cpu);
        let _ = Block::new(BlockConfig { bias: false, ..cfg }, no_bias.var_builder())?;
        assert!(no_bias.snapshot()?.keys().all(|k| k.ends_with("weight")));
        Ok(())
    }
}
