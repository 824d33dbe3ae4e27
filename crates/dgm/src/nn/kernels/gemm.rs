//! dgm's CPU kernels multiply matrices only through here: checked wrappers around one call of the `gemm`
//! crate (the same crate candle's CPU matmul uses).

use std::mem::MaybeUninit;

/// `dst (m × n) = [dst +] a (m × k) · b (k × n)`, strides in elements (row, column);
/// `parallel` splits the work over rayon's threads (gemm splits rows / columns of `dst`, never the inner
/// dimension, so each element is computed the same way whatever the thread count).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    parallel: bool,
) {
    let place = (dst.as_mut_ptr(), dst.len(), dst_rs);
    // SAFETY: `dst` is borrowed mutably for the call, so it is valid for writes (and reads) of its length and
    // does not alias `a` or `b`.
    unsafe {
        gemm_into(
            dims, place, accumulate, a, a_strides, b, b_strides, parallel,
        )
    }
}

/// `dst (m × n) = a (m × k) · b (k × n)` into the uninitialised, contiguous `dst` (`m · n` elements, rows `n`
/// apart), returned as the initialised floats it then holds. The `gemm` crate with `read_dst = false` stores
/// every element of `dst` without loading any: its micro-kernels, its small-matrix (horizontal) kernels and
/// its matrix-vector paths all branch on `alpha = 0` to plain stores (gemm-common 0.19, `microkernel.rs`,
/// `horizontal_microkernel.rs`, `gemv.rs`, `gevv.rs`), which the test
/// `overwriting_products_never_read_the_destination` checks on memory filled with NaN.
pub(crate) fn sgemm_overwrite<'a>(
    (m, n, k): (usize, usize, usize),
    dst: &'a mut [MaybeUninit<f32>],
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    parallel: bool,
) -> &'a mut [f32] {
    assert_eq!(dst.len(), m * n, "sgemm_overwrite: dst is not m × n");
    let place = (dst.as_mut_ptr().cast::<f32>(), dst.len(), n);
    // SAFETY: `dst` is borrowed mutably, so valid for writes of its length and not aliasing `a` or `b`; with
    // `accumulate = false` every one of its m · n elements is stored and none is read (see above).
    unsafe {
        gemm_into(
            (m, n, k),
            place,
            false,
            a,
            a_strides,
            b,
            b_strides,
            parallel,
        )
    };
    // SAFETY: all m · n elements were written by the call above.
    unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// The one call of the `gemm` crate: `dst (m × n) = [dst +] a (m × k) · b (k × n)` with `dst` given as
/// (pointer, length, row stride). With `accumulate = false` the destination is only stored to (also when k
/// is 0), so it may be uninitialised.
///
/// # Safety
/// The pointer must be valid for writes of `len` floats (and for reads when `accumulate`), and the memory
/// must not overlap `a` or `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    (m, n, k): (usize, usize, usize),
    (dst, len, dst_rs): (*mut f32, usize, usize),
    accumulate: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    // Bounds the pointer arithmetic below: the last element each matrix touches lies inside its slice.
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, n, dst_rs, 1) < len, "sgemm: dst too short");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    // SAFETY: r · dst_rs + c ≤ the last element, inside `len` (asserted above).
                    unsafe { dst.add(r * dst_rs + c).write(0.0) };
                }
            }
        }
        return;
    }
    assert!(last(m, k, a_rs, a_cs) < a.len(), "sgemm: lhs too short");
    assert!(last(k, n, b_rs, b_cs) < b.len(), "sgemm: rhs too short");
    // SAFETY: the asserts above keep every element gemm reads or writes inside the three buffers, which do
    // not overlap (the caller's contract).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            if parallel {
                gemm::Parallelism::Rayon(rayon::current_num_threads())
            } else {
                gemm::Parallelism::None
            },
        );
    }
}

/// A new `(m × n)` matrix `a (m × k) · b (k × n)`, written by [`sgemm_overwrite`] (no zero pass first).
pub(crate) fn sgemm_new(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    parallel: bool,
) -> Vec<f32> {
    let mut v = Vec::with_capacity(m * n);
    let dst = &mut v.spare_capacity_mut()[..m * n];
    sgemm_overwrite((m, n, k), dst, a, a_strides, b, b_strides, parallel);
    // SAFETY: sgemm_overwrite initialised all m · n elements.
    unsafe { v.set_len(m * n) };
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwriting_products_never_read_the_destination() {
        // shapes through each of gemm's paths: matrix-vector (m, n or k = 1), the small-matrix kernels
        // (m · n ≤ 256), full and ragged register tiles, several blocks of the inner dimension (k > 1024)
        let shapes = [
            (1, 1, 1),
            (1, 37, 5),
            (37, 1, 5),
            (9, 7, 1),
            (12, 16, 33),
            (16, 6, 64),
            (70, 33, 129),
            (128, 512, 64),
            (33, 65, 2100),
        ];
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool");
            pool.install(|| {
                for &(m, n, k) in &shapes {
                    let a: Vec<f32> = (0..m * k)
                        .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.25)
                        .collect();
                    let b: Vec<f32> = (0..k * n)
                        .map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.5)
                        .collect();
                    for transposed_b in [false, true] {
                        let bs = if transposed_b { (1, k) } else { (n, 1) };
                        let mut want = vec![0f32; m * n];
                        sgemm(
                            (m, n, k),
                            &mut want,
                            n,
                            false,
                            &a,
                            (k, 1),
                            &b,
                            bs,
                            threads > 1,
                        );
                        let mut dst = vec![MaybeUninit::new(f32::NAN); m * n];
                        let got =
                            sgemm_overwrite((m, n, k), &mut dst, &a, (k, 1), &b, bs, threads > 1);
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(g, w)| g.to_bits() == w.to_bits());
                        assert!(
                            same,
                            "({m}, {n}, {k}), transposed b {transposed_b}, {threads} threads"
                        );
                    }
                }
            });
        }
    }
}
