//! Scalar and slice helpers of the kernels, written so that the loops calling them vectorise: a branch-free
//! e^x, and sums, maxima and dot products with [`LANES`] partial results (a fixed summation order).

/// Lanes of the hand-unrolled loops (a multiple of every x86 vector width in f32).
pub(crate) const LANES: usize = 8;

/// e^x in f32, branch-free (Cephes' `expf`: range reduction by ln 2, degree-6 polynomial, exponent from bits;
/// about 1 ulp). Inputs are clamped to [−87, 88]; e^−87 ≈ 1.6e−38 stands in for e^−∞.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
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

/// a·b with LANES partial sums (a fixed summation order that the compiler can vectorise).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
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

/// y += x.
#[inline(always)]
pub(crate) fn add(y: &mut [f32], x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += x;
    }
}

/// y ⊙= x.
#[inline(always)]
pub(crate) fn mul(y: &mut [f32], x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y *= x;
    }
}

/// y += a·x.
#[inline(always)]
pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Σ x with LANES partial sums.
#[inline(always)]
pub(crate) fn sum_lanes(x: &[f32]) -> f32 {
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
pub(crate) fn max_lanes(x: &[f32]) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_is_close_to_exp() {
        let mut worst = 0f32;
        for i in -8000..=8000 {
            let x = i as f32 * 0.01;
            let (a, b) = (exp_approx(x), x.exp());
            worst = worst.max((a - b).abs() / b);
        }
        assert!(worst < 1e-6, "relative error {worst}");
        assert!(exp_approx(-200.0) < 1e-37 && exp_approx(200.0).is_finite());
    }
}
