//! The one matrix-multiply entry point of dgm's CPU kernels: a checked wrapper around the `gemm` crate
//! (the same crate candle's CPU matmul uses).

/// `dst (m × n) = [dst +] a (m × k) · b (k × n)`, strides in elements (row, column);
/// `parallel` splits the work over rayon's threads (gemm splits rows / columns of `dst`, never the inner
/// dimension, so each element is computed the same way whatever the thread count).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
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
    assert!(last(m, n, dst_rs, 1) < dst.len(), "sgemm: dst too short");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    assert!(last(m, k, a_rs, a_cs) < a.len(), "sgemm: lhs too short");
    assert!(last(k, n, b_rs, b_cs) < b.len(), "sgemm: rhs too short");
    // SAFETY: the asserts above keep every element gemm reads or writes inside the three slices, and `dst`
    // is borrowed mutably, so it does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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
