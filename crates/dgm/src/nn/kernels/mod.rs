//! dgm's CPU kernels: the candle `CustomOp`s (forward and backward as single passes over f32 data) behind
//! dgm's layer types ([`super::layers`]), and the helpers they share. Each public entry point runs its
//! kernel on f32 CPU tensors and falls back to candle's stock ops elsewhere (other devices, other dtypes, or
//! after [`super::set_stock_ops`]); the `*_stock` functions are those references.
//!
//! * [`linear`]: `act(x Wᵀ + b)` (two kernels, see there) and the [`linear::Activation`]s it can fuse.
//! * [`conv`]: 2-D convolution and transposed convolution: stride 1 on the implicit-GEMM kernels of
//!   [`implicit`] (3×3 with many channels by Winograd's F(2×2, 3×3) on the same register tiles,
//!   `winograd`), strides that divide the kernel size on them too through the input's phases
//!   (`phases`), the rest on the GEMM kernels of [`im2col`].
//! * [`group_norm`], [`layer_norm`]: the normalisations (group norm optionally fused with SiLU).
//! * [`gelu`], [`softmax`], [`attention`], [`token_nll`]: the pieces of a transformer.
//! * [`gate`]: Gated PixelCNN's tanh(a) ⊙ σ(g).
//! * [`resample`]: nearest-neighbour 2× upsampling.
//! * [`optim`]: the fused AdamW and EMA updates, in place.
//!
//! The helpers below are the `CustomOp` boilerplate: reading a storage as f32 ([`cpu_f32`], [`with_data`]),
//! building outputs in parallel ([`par_filled`], [`par_rows`], [`par_chunks_from_planes`]); [`isa`] runs
//! each loop compiled for AVX-512, AVX2 or the baseline (`simd_dispatch!`, forced slower with `DGM_ISA`).
//! Results never depend on the thread count: every kernel fixes its summation order. They do not depend on
//! the instruction set either, except for the convolution micro-kernels of [`implicit`] (fused
//! multiply-adds on AVX2 / AVX-512, so their builds agree to rounding) and the `gemm` crate's own choice.

use candle_core::{CpuStorage, Layout, Storage, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::{Error, Result};

pub mod attention;
pub mod conv;
pub mod gate;
pub mod gelu;
pub(crate) mod gemm;
pub mod group_norm;
mod im2col;
mod implicit;
pub mod isa;
pub mod layer_norm;
pub mod linear;
pub(crate) mod math;
pub mod optim;
mod phases;
pub mod resample;
pub mod softmax;
pub mod token_nll;
mod winograd;

pub use optim::{adamw_update_cpu, ema_update_cpu, AdamWUpdate};

/// The contiguous f32 data of a CPU storage, or an error naming the op (for `CustomOp::cpu_fwd`).
pub(crate) fn cpu_f32<'a>(
    op: &str,
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: needs contiguous f32 tensors"),
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor, or returns `None` for other tensors.
pub fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(data)) => {
            let (a, b) = layout.contiguous_offsets()?;
            Some(f(&data[a..b]))
        }
        _ => None,
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor (copying it to a contiguous one first if needed).
pub(crate) fn with_data<R>(op: &str, t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    with_cpu_f32(&t, f)
        .ok_or_else(|| Error::invalid(op, "the CPU kernel needs an f32 CPU tensor".to_string()))
}

/// A candle error from a dgm one (inside `CustomOp::bwd`).
pub(crate) fn to_candle(e: Error) -> candle_core::Error {
    match e {
        Error::Candle(c) => c,
        other => candle_core::Error::Msg(other.to_string()),
    }
}

/// Output rows one thread computes at least in [`par_rows`].
const GEMM_MIN_ROWS: usize = 32;

/// A vector of `len` floats built in parallel chunks of `chunk` elements (the last may be shorter): each chunk
/// is zeroed by the thread that then hands it to `work(i, chunk)`, so the zeroing happens in parallel and in
/// cache rather than as one serial pass before the work.
pub(crate) fn par_filled(
    len: usize,
    chunk: usize,
    work: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    if len > 0 {
        v.spare_capacity_mut()[..len]
            .par_chunks_mut(chunk.max(1))
            .enumerate()
            .for_each(|(i, c)| work(i, zeroed(c)));
    }
    // SAFETY: the loop above wrote all `len` elements (none when `len` is 0).
    unsafe { v.set_len(len) };
    v
}

/// Two vectors of `len` floats built as [`par_filled`] builds one: `work(i, a, b)` gets the i-th zeroed chunk
/// (`chunk` elements, the last may be shorter) of each.
pub(crate) fn par_filled_pair(
    len: usize,
    chunk: usize,
    work: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let (mut a, mut b): (Vec<f32>, Vec<f32>) = (Vec::with_capacity(len), Vec::with_capacity(len));
    if len > 0 {
        a.spare_capacity_mut()[..len]
            .par_chunks_mut(chunk.max(1))
            .zip(b.spare_capacity_mut()[..len].par_chunks_mut(chunk.max(1)))
            .enumerate()
            .for_each(|(i, (ca, cb))| work(i, zeroed(ca), zeroed(cb)));
    }
    // SAFETY: the loop above wrote all `len` elements of both (none when `len` is 0).
    unsafe {
        a.set_len(len);
        b.set_len(len);
    }
    (a, b)
}

/// Zeroes `c` and returns it as the initialised floats it now holds.
fn zeroed(c: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    for e in c.iter_mut() {
        e.write(0.0);
    }
    // SAFETY: every element of `c` was written just above, so it is an initialised [f32].
    unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// A new `(m × n)` matrix computed in blocks of rows, one per thread (at least [`GEMM_MIN_ROWS`] rows each):
/// `f(r0, block)` fills the uninitialised `block`, rows `r0 .. r0 + block.len() / n`, and returns it as the
/// initialised floats it now holds (from [`gemm::sgemm_overwrite`] or [`linear::fill_rows`]; no zero pass
/// first). With a single-threaded gemm per block this splits matrix products evenly over the threads —
/// gemm's own threading splits these small shapes poorly (768 × 128 → 512 gets no speed-up at all from a
/// second thread on this project's 2-core machine, where MKL gets 2×) — and every output element is computed
/// the same way whatever the split, so results do not depend on the thread count.
///
/// Panics if `f` returns a slice other than the block it was given (a bug in the caller).
pub(crate) fn par_rows(
    m: usize,
    n: usize,
    f: impl for<'a> Fn(usize, &'a mut [MaybeUninit<f32>]) -> &'a mut [f32] + Sync,
) -> Vec<f32> {
    let parts = rayon::current_num_threads().min(m / GEMM_MIN_ROWS).max(1);
    let rows = m.div_ceil(parts).max(1);
    let len = m * n;
    let mut v: Vec<f32> = Vec::with_capacity(len);
    if len > 0 {
        v.spare_capacity_mut()[..len]
            .par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(i, block)| {
                let (at, size) = (block.as_ptr() as usize, block.len());
                let done = f(i * rows, block);
                // safe code can only turn the block into initialised floats by writing every element
                assert!(
                    done.as_ptr() as usize == at && done.len() == size,
                    "par_rows: the work returned another slice than its block"
                );
            });
    }
    // SAFETY: every block was returned as an initialised `&mut [f32]` of the same place and length (asserted),
    // and the blocks cover all `len` elements (none when `len` is 0).
    unsafe { v.set_len(len) };
    v
}

/// `i` is filled plane by plane with `value(i, p)` (a bias, or 0) while it is hot in cache, then handed to
/// `work(i, chunk)`. Saves the separate memset pass of `vec![0.0; len]` over large outputs.
pub(crate) fn par_chunks_from_planes(
    n: usize,
    planes: usize,
    plane: usize,
    value: impl Fn(usize, usize) -> f32 + Sync,
    work: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    par_stacks_from_planes(n, 1, planes, plane, value, work)
}

/// [`par_chunks_from_planes`] in chunks of `stack` images (the last may hold fewer): each chunk's planes are
/// set to `value(image, p)`, then `work(first image, chunk)` runs.
pub(crate) fn par_stacks_from_planes(
    n: usize,
    stack: usize,
    planes: usize,
    plane: usize,
    value: impl Fn(usize, usize) -> f32 + Sync,
    work: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let image = planes * plane;
    let len = n * image;
    let mut v: Vec<f32> = Vec::with_capacity(len);
    if image > 0 {
        let stack = stack.max(1);
        v.spare_capacity_mut()[..len]
            .par_chunks_mut(stack * image)
            .enumerate()
            .for_each(|(s, c)| {
                for (p, row) in c.chunks_mut(plane.max(1)).enumerate() {
                    let val = value(s * stack + p / planes, p % planes);
                    for e in row.iter_mut() {
                        e.write(val);
                    }
                }
                // SAFETY: every element of `c` was written just above, so it is an initialised [f32].
                let c = unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) };
                work(s * stack, c);
            });
    }
    // SAFETY: the loop above wrote all `len` elements (none when `image` is 0, and then `len` is 0).
    unsafe { v.set_len(len) };
    v
}

/// Helpers of the kernels' tests.
#[cfg(test)]
pub(crate) mod testing {
    use candle_core::{Tensor, Var};

    use crate::nn::rel_err;
    use crate::{Error, Result};

    /// The fastest of `repeats` runs of `f`, in milliseconds (for the print-only timing tests).
    pub(crate) fn min_ms(repeats: usize, mut f: impl FnMut() -> f32) -> f64 {
        (0..repeats)
            .map(|_| {
                let s = std::time::Instant::now();
                std::hint::black_box(f());
                s.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::MAX, f64::min)
    }

    /// The output and the gradients of Σ r ⊙ f(inputs) with respect to every input.
    pub(crate) fn value_and_grads(
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

    /// Asserts that `run` (a kernel loop called on this thread) gives the same bits on every
    /// instruction-set build this CPU runs as on the baseline build.
    pub(crate) fn assert_same_bits_on_every_isa(what: &str, run: impl Fn() -> Vec<f32>) {
        use super::isa::{with_isa, Isa};
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        let base = bits(with_isa(Isa::Baseline, &run));
        for isa in Isa::available() {
            assert!(
                bits(with_isa(isa, &run)) == base,
                "{what}: the {} build differs from the baseline build",
                isa.name()
            );
        }
    }

    /// Asserts that each of `ours` is within relative error `tol` of the matching `stock` tensor.
    pub(crate) fn assert_close(
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
}
