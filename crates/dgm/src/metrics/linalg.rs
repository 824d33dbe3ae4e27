//! Small dense linear algebra in double precision for the evaluation metrics: feature means and covariances,
//! the eigen-decomposition of a symmetric matrix, the square root of a positive semi-definite matrix, and the
//! Fréchet (2-Wasserstein) distance between two Gaussians.
//!
//! The Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) (Dowson & Landau 1982; used for FID by Heusel et
//! al. 2017, "GANs trained by a two time-scale update rule converge to a local Nash equilibrium", eq. 6) is
//!
//! d² = ‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2 Tr((Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}).
//!
//! The usual implementations take the square root of the non-symmetric product Σ₁Σ₂; here only symmetric
//! matrices are ever decomposed: Σ₁^{1/2} comes from the eigen-decomposition of Σ₁, and the trace of the square
//! root of the symmetric PSD matrix M = Σ₁^{1/2} Σ₂ Σ₁^{1/2} is the sum of the square roots of its eigenvalues
//! (M is similar to Σ₁Σ₂, so the value is the same).
//!
//! Eigen-decompositions use Householder reduction to tridiagonal form followed by the implicit QL algorithm
//! with Wilkinson-type shifts (Golub & Van Loan, "Matrix Computations", §8.3), O(n³): a 256 × 256 matrix takes
//! a few tens of milliseconds.
//!
//! The module also holds the crate-internal helpers that the sample-based metrics share: validation of a set of
//! points given as a row-major `&[f32]` with a dimension, blocked f32 matrix products through the `gemm` crate,
//! and blocked squared Euclidean distances built on them.

use std::ops::Range;

use rayon::prelude::*;

use crate::{Error, Result};

/// `dst (m × n) = a (m × k) · bᵀ` for row-major contiguous `a` (m × k) and `b` (n × k), single-threaded, in f32
/// (through `nn::gemm::sgemm`). Single-threaded so that callers can run independent blocks in parallel with a
/// fixed split; gemm never splits the inner dimension, so every element is computed the same way on every run.
pub(crate) fn gemm_abt(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], dst: &mut [f32]) {
    crate::nn::gemm::sgemm((m, n, k), dst, n, false, a, (k, 1), b, (1, k), false);
}

/// Checks that `x` holds whole rows of `dim` values (at least `min_n` of them, all finite) and returns the
/// number of rows. `what` names the set in error messages (e.g. "real features").
pub(crate) fn check_points(what: &str, x: &[f32], dim: usize, min_n: usize) -> Result<usize> {
    if dim == 0 {
        return Err(Error::invalid(
            what,
            "the dimension must be at least 1, got 0",
        ));
    }
    if !x.len().is_multiple_of(dim) {
        return Err(Error::invalid(
            what,
            format!(
                "{} values is not a whole number of rows of dimension {dim}",
                x.len()
            ),
        ));
    }
    let n = x.len() / dim;
    if n < min_n {
        return Err(Error::invalid(
            what,
            format!("needs at least {min_n} points, got {n}"),
        ));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(
            what,
            format!(
                "value {} (row {}, column {}) is not finite",
                x[i],
                i / dim,
                i % dim
            ),
        ));
    }
    Ok(n)
}

/// Dot product in f64 with four independent accumulators (a fixed summation order, so the same bits on every
/// run, and room for the compiler to vectorise).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Samples per block when accumulating a covariance (a block of 256-dimensional f64 features is 1 MiB).
const COV_BLOCK: usize = 512;

/// Mean and unbiased covariance (denominator n − 1) of the rows of `x` (row-major, `dim` columns, at least two
/// rows). Returns `(mean, cov)` with `cov` row-major `dim × dim`, exactly symmetric. Two passes (mean first,
/// then centred products), all in f64; the result does not depend on the thread count.
pub fn mean_cov(x: &[f32], dim: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = check_points("features", x, dim, 2)?;
    let mut mean = vec![0.0f64; dim];
    for row in x.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    for m in &mut mean {
        *m /= n as f64;
    }
    // Upper triangle of Σ (x − μ)(x − μ)ᵀ, accumulated block of samples by block of samples; within a block
    // each output row is one rayon task and sums its block in a fixed order.
    let mut acc = vec![0.0f64; dim * dim];
    let mut blk = vec![0.0f64; dim * COV_BLOCK];
    for start in (0..n).step_by(COV_BLOCK) {
        let bs = COV_BLOCK.min(n - start);
        // Centred block, transposed: blk[j * bs + t] = x[start + t][j] − μ_j.
        for (t, row) in x[start * dim..(start + bs) * dim]
            .chunks_exact(dim)
            .enumerate()
        {
            for j in 0..dim {
                blk[j * bs + t] = row[j] as f64 - mean[j];
            }
        }
        let blk = &blk[..dim * bs];
        acc.par_chunks_mut(dim).enumerate().for_each(|(i, out)| {
            let bi = &blk[i * bs..(i + 1) * bs];
            for (j, o) in out.iter_mut().enumerate().skip(i) {
                *o += dot(bi, &blk[j * bs..(j + 1) * bs]);
            }
        });
    }
    let denom = (n - 1) as f64;
    let mut cov = vec![0.0f64; dim * dim];
    for i in 0..dim {
        for j in i..dim {
            let v = acc[i * dim + j] / denom;
            cov[i * dim + j] = v;
            cov[j * dim + i] = v;
        }
    }
    Ok((mean, cov))
}

/// Checks that `a` is a finite symmetric `n × n` matrix (|a_ij − a_ji| ≤ 1e-9 · max |a|) and returns its
/// exactly symmetric average (a + aᵀ) / 2.
fn check_symmetric(a: &[f64], n: usize) -> Result<Vec<f64>> {
    if n == 0 {
        return Err(Error::invalid(
            "matrix",
            "the size must be at least 1, got 0",
        ));
    }
    if a.len() != n * n {
        return Err(Error::invalid(
            "matrix",
            format!("a {n} × {n} matrix has {} entries, got {}", n * n, a.len()),
        ));
    }
    if let Some(i) = a.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "matrix",
            format!("entry ({}, {}) = {} is not finite", i / n, i % n, a[i]),
        ));
    }
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let tol = 1e-9 * scale;
    let mut s = a.to_vec();
    for i in 0..n {
        for j in i + 1..n {
            let (u, v) = (a[i * n + j], a[j * n + i]);
            if (u - v).abs() > tol {
                return Err(Error::invalid(
                    "matrix",
                    format!("not symmetric: entry ({i}, {j}) = {u} but ({j}, {i}) = {v}"),
                ));
            }
            let m = 0.5 * (u + v);
            s[i * n + j] = m;
            s[j * n + i] = m;
        }
    }
    Ok(s)
}

/// Euclidean norm without overflow or harmful underflow.
fn norm2(x: &[f64]) -> f64 {
    let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 {
        return 0.0;
    }
    scale
        * x.iter()
            .map(|v| (v / scale) * (v / scale))
            .sum::<f64>()
            .sqrt()
}

/// Householder reduction of the symmetric matrix `a` (overwritten) to tridiagonal T = Qᵀ A Q.
/// Returns the diagonal `d`, the off-diagonal `e` (e[i] = T[i, i+1], e[n−1] = 0) and, when `want_q`,
/// Qᵀ row-major (so that row r of Qᵀ is column r of Q).
fn tridiagonalize(a: &mut [f64], n: usize, want_q: bool) -> (Vec<f64>, Vec<f64>, Option<Vec<f64>>) {
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    // (k, τ, v): the reflection H_k = I − τ v vᵀ acting on indices k+1..n.
    let mut reflections: Vec<(usize, f64, Vec<f64>)> = Vec::new();
    let mut p = vec![0.0; n];
    for k in 0..n {
        d[k] = a[k * n + k];
        if k + 1 >= n {
            break;
        }
        let m = n - k - 1;
        // Row k right of the diagonal equals column k below it (the trailing block is kept symmetric).
        let x: Vec<f64> = a[k * n + k + 1..(k + 1) * n].to_vec();
        let xnorm = norm2(&x);
        if m == 1 || xnorm == 0.0 || norm2(&x[1..]) == 0.0 {
            // Already tridiagonal in this column.
            e[k] = x[0];
            continue;
        }
        // H x = α e₁ with α = −sign(x₀) ‖x‖ (the sign that avoids cancellation in v₀ = x₀ − α).
        let x0 = x[0];
        let alpha = if x0 >= 0.0 { -xnorm } else { xnorm };
        let mut v = x;
        v[0] -= alpha;
        // vᵀv = ‖x‖² − 2αx₀ + α² = 2(‖x‖² + |x₀| ‖x‖).
        let vtv = 2.0 * (xnorm * xnorm + x0.abs() * xnorm);
        let tau = 2.0 / vtv;
        // Trailing block B (rows/cols k+1..n): B ← H B H = B − v wᵀ − w vᵀ, p = τ B v, w = p − (τ vᵀp / 2) v.
        let off = k + 1;
        for i in 0..m {
            let row = &a[(off + i) * n + off..(off + i + 1) * n];
            p[i] = tau * dot(row, &v);
        }
        let kk = 0.5 * tau * dot(&v, &p[..m]);
        for i in 0..m {
            p[i] -= kk * v[i];
        }
        for i in 0..m {
            let (vi, wi) = (v[i], p[i]);
            let row = &mut a[(off + i) * n + off..(off + i + 1) * n];
            for j in 0..m {
                row[j] -= vi * p[j] + wi * v[j];
            }
        }
        e[k] = alpha;
        if want_q {
            reflections.push((k, tau, v));
        }
    }
    let q = if want_q {
        // Q = H_0 H_1 ⋯ : start from I and apply the reflections from the last one back, each from the left
        // (H_k only touches rows and columns k+1..n of the partial product).
        let mut q = vec![0.0; n * n];
        for i in 0..n {
            q[i * n + i] = 1.0;
        }
        let mut u = vec![0.0; n];
        for (k, tau, v) in reflections.iter().rev() {
            let off = k + 1;
            u[off..].fill(0.0);
            for (i, &vi) in v.iter().enumerate() {
                let row = &q[(off + i) * n..(off + i + 1) * n];
                for j in off..n {
                    u[j] += vi * row[j];
                }
            }
            for (i, &vi) in v.iter().enumerate() {
                let row = &mut q[(off + i) * n..(off + i + 1) * n];
                for j in off..n {
                    row[j] -= tau * vi * u[j];
                }
            }
        }
        // Transpose to Qᵀ so that the QL rotations below act on contiguous rows.
        let mut qt = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                qt[j * n + i] = q[i * n + j];
            }
        }
        Some(qt)
    } else {
        None
    };
    (d, e, q)
}

/// Most QL iterations allowed per eigenvalue (convergence is cubic; 2–3 are typical).
const MAX_QL_ITERATIONS: usize = 60;

/// Implicit QL with shifts on the tridiagonal matrix (d, e); eigenvalues end in `d` (unordered). Each plane
/// rotation is also applied to the rows of `zt` (eigenvector rows) when given.
fn tridiagonal_ql(d: &mut [f64], e: &mut [f64], mut zt: Option<&mut [f64]>) -> Result<()> {
    let n = d.len();
    // An off-diagonal element is negligible when it is below ε relative to its two diagonal neighbours, or
    // below ε‖T‖ (a perturbation the size of the round-off already made; without this absolute test a cluster
    // of eigenvalues at ~0, as in a rank-deficient covariance, can stall the relative test forever).
    let tnorm = (0..n).fold(0.0f64, |m, i| {
        m.max(d[i].abs() + e[i].abs() + if i > 0 { e[i - 1].abs() } else { 0.0 })
    });
    let abs_tol = f64::EPSILON * tnorm;
    for l in 0..n {
        let mut iterations = 0;
        loop {
            // The first negligible off-diagonal element at or after l splits off a block l..=m.
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd || e[m].abs() <= abs_tol {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iterations += 1;
            if iterations > MAX_QL_ITERATIONS {
                return Err(Error::Unsupported(format!(
                    "symmetric eigen-decomposition did not converge for eigenvalue {l} after \
                     {MAX_QL_ITERATIONS} QL iterations"
                )));
            }
            // Shift: the eigenvalue of the leading 2 × 2 block nearer to d[l].
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + if g >= 0.0 { r } else { -r });
            let (mut s, mut c, mut p) = (1.0f64, 1.0f64, 0.0f64);
            let mut deflated = false;
            let mut i = m;
            // Chase the bulge from the bottom of the block up to l with plane rotations.
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    // Underflow: the block splits at i + 1; restart on the smaller block.
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    deflated = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                if let Some(z) = zt.as_deref_mut() {
                    let (top, bottom) = z.split_at_mut((i + 1) * n);
                    let zi = &mut top[i * n..];
                    let zi1 = &mut bottom[..n];
                    for (u, w) in zi.iter_mut().zip(zi1.iter_mut()) {
                        let (a0, a1) = (*u, *w);
                        *w = s * a0 + c * a1;
                        *u = c * a0 - s * a1;
                    }
                }
            }
            if deflated {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    Ok(())
}

/// Eigen-decomposition A = V diag(λ) Vᵀ of a symmetric `n × n` matrix (row-major; symmetric to 1e-9 relative,
/// finite). Returns `(λ, V)`: eigenvalues in ascending order and the orthonormal eigenvectors as the
/// columns of the row-major `n × n` matrix V (column j belongs to λ_j).
pub fn sym_eigen(a: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut w = check_symmetric(a, n)?;
    let (mut d, mut e, qt) = tridiagonalize(&mut w, n, true);
    let mut zt = qt.ok_or_else(|| Error::Unsupported("internal: no Householder vectors".into()))?;
    tridiagonal_ql(&mut d, &mut e, Some(&mut zt))?;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[i].total_cmp(&d[j]));
    let values = order.iter().map(|&i| d[i]).collect();
    let mut v = vec![0.0; n * n];
    for (col, &src) in order.iter().enumerate() {
        for r in 0..n {
            v[r * n + col] = zt[src * n + r];
        }
    }
    Ok((values, v))
}

/// Eigenvalues (ascending) of a symmetric `n × n` matrix, without the eigenvectors (about three times faster
/// than [`sym_eigen`]).
pub fn sym_eigenvalues(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let mut w = check_symmetric(a, n)?;
    let (mut d, mut e, _) = tridiagonalize(&mut w, n, false);
    tridiagonal_ql(&mut d, &mut e, None)?;
    d.sort_by(|a, b| a.total_cmp(b));
    Ok(d)
}

/// Relative size (per unit of matrix dimension) of a negative eigenvalue that is still taken for round-off of a
/// PSD matrix and clamped to zero; anything more negative is an error.
const PSD_TOLERANCE: f64 = 1e-10;

/// Clamps eigenvalues that are negative by round-off only (|λ| ≤ 1e-10 · n · `scale`) to zero; a more negative
/// one means the matrix is not PSD.
fn clamp_psd(values: &mut [f64], scale: f64, what: &str) -> Result<()> {
    let tol = PSD_TOLERANCE * values.len() as f64 * scale;
    for v in values.iter_mut() {
        if *v < 0.0 {
            if -*v > tol {
                return Err(Error::invalid(
                    what,
                    format!(
                        "not positive semi-definite: eigenvalue {v:e} (largest magnitude {scale:e})"
                    ),
                ));
            }
            *v = 0.0;
        }
    }
    Ok(())
}

/// The symmetric PSD square root S (S = Sᵀ, S² = A) of a symmetric positive semi-definite `n × n` matrix.
/// Negative eigenvalues that are round-off (|λ| ≤ 1e-10 · n · max|λ|) are clamped to 0; a clearly negative
/// eigenvalue is an error.
pub fn sqrtm_psd(a: &[f64], n: usize) -> Result<Vec<f64>> {
    Ok(sqrtm_with_eigenvalues(a, n, "matrix")?.0)
}

/// [`sqrtm_psd`] that also returns the largest eigenvalue.
fn sqrtm_with_eigenvalues(a: &[f64], n: usize, what: &str) -> Result<(Vec<f64>, f64)> {
    let (mut values, v) = sym_eigen(a, n)?;
    let scale = values.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    clamp_psd(&mut values, scale, what)?;
    let roots: Vec<f64> = values.iter().map(|x| x.sqrt()).collect();
    // S = V diag(√λ) Vᵀ, computed as (V diag(λ^{1/4}))(V diag(λ^{1/4}))ᵀ so that S is exactly symmetric.
    let mut w = v;
    for row in w.chunks_exact_mut(n) {
        for (x, r) in row.iter_mut().zip(&roots) {
            *x *= r.sqrt();
        }
    }
    let mut s = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            let x = dot(&w[i * n..(i + 1) * n], &w[j * n..(j + 1) * n]);
            s[i * n + j] = x;
            s[j * n + i] = x;
        }
    }
    Ok((s, values.last().copied().unwrap_or(0.0)))
}

/// `a · b` for row-major `n × n` matrices.
fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    c.par_chunks_mut(n).enumerate().for_each(|(i, out)| {
        for k in 0..n {
            let aik = a[i * n + k];
            if aik != 0.0 {
                for (o, &bkj) in out.iter_mut().zip(&b[k * n..(k + 1) * n]) {
                    *o += aik * bkj;
                }
            }
        }
    });
    c
}

/// Relative size of a negative Fréchet distance that is taken for round-off and returned as 0.
const FRECHET_ROUNDOFF: f64 = 1e-9;

/// Squared Fréchet distance between N(`mu1`, `cov1`) and N(`mu2`, `cov2`) in `dim` dimensions (covariances
/// row-major, symmetric PSD): ‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr((Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}), via symmetric
/// eigen-decompositions only (see the module docs).
///
/// Eigenvalues of Σ₁^{1/2} Σ₂ Σ₁^{1/2} below the round-off level 64 ε · dim · λ_max(Σ₁) ‖Σ₂‖_F count as 0.
/// The subtraction can leave a tiny negative number when the two Gaussians coincide; a negative result within
/// round-off (1e-9 · (‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂), or what √ of eigenvalues at 4× the round-off level can
/// add) is returned as 0, anything more negative is reported as an error (it would mean the covariances are
/// not PSD).
pub fn frechet_distance(
    mu1: &[f64],
    cov1: &[f64],
    mu2: &[f64],
    cov2: &[f64],
    dim: usize,
) -> Result<f64> {
    if dim == 0 {
        return Err(Error::invalid("dim", "must be at least 1, got 0"));
    }
    for (what, len, want) in [
        ("mean 1", mu1.len(), dim),
        ("mean 2", mu2.len(), dim),
        ("covariance 1", cov1.len(), dim * dim),
        ("covariance 2", cov2.len(), dim * dim),
    ] {
        if len != want {
            return Err(Error::invalid(
                what,
                format!("expected {want} values for dimension {dim}, got {len}"),
            ));
        }
    }
    if let Some(v) = mu1.iter().chain(mu2).find(|v| !v.is_finite()) {
        return Err(Error::invalid("mean", format!("value {v} is not finite")));
    }
    let cov2 = check_symmetric(cov2, dim)?;
    let (s1, lambda_max1) = sqrtm_with_eigenvalues(cov1, dim, "covariance 1")?;
    let mut m = matmul(&matmul(&s1, &cov2, dim), &s1, dim);
    for i in 0..dim {
        for j in i + 1..dim {
            let x = 0.5 * (m[i * dim + j] + m[j * dim + i]);
            m[i * dim + j] = x;
            m[j * dim + i] = x;
        }
    }
    let mut values = sym_eigenvalues(&m, dim)?;
    // Round-off in M is of the order of ε · dim · ‖Σ₁‖ ‖Σ₂‖ (which also bounds its eigenvalues from above).
    // Eigenvalues below `zero_level` are numerically zero and set to 0 before the square root: √ would turn
    // an error of 1e-13 into 3e-7 per eigenvalue, which adds up for rank-deficient covariances.
    let m_scale = lambda_max1 * cov2.iter().map(|x| x * x).sum::<f64>().sqrt();
    clamp_psd(&mut values, m_scale, "covariance 2")?;
    let zero_level = 64.0 * f64::EPSILON * dim as f64 * m_scale;
    let tr_sqrt: f64 = values
        .iter()
        .map(|&x| if x <= zero_level { 0.0 } else { x.sqrt() })
        .sum();
    let tr1: f64 = (0..dim).map(|i| cov1[i * dim + i]).sum();
    let tr2: f64 = (0..dim).map(|i| cov2[i * dim + i]).sum();
    let dmu2: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    let d = dmu2 + tr1 + tr2 - 2.0 * tr_sqrt;
    // What round-off can leave: relative error in the traces, and √ of eigenvalues just above `zero_level`.
    let roundoff =
        (FRECHET_ROUNDOFF * (dmu2 + tr1 + tr2)).max(2.0 * dim as f64 * (4.0 * zero_level).sqrt());
    if d >= 0.0 {
        Ok(d)
    } else if -d <= roundoff {
        Ok(0.0)
    } else {
        Err(Error::invalid(
            "covariance",
            format!("Fréchet distance came out negative ({d:e}); are both covariances PSD?"),
        ))
    }
}

/// A set of points shifted by a common offset (the mean of all sets it was built with), stored in f32 for the
/// gemm, with the squared norms of the shifted f32 rows in f64. Centring keeps ‖a‖² + ‖b‖² − 2aᵀb from
/// cancelling catastrophically when the data sit far from the origin.
pub(crate) struct Points {
    /// Row-major shifted points.
    pub data: Vec<f32>,
    /// ‖row‖² in f64.
    pub sq_norms: Vec<f64>,
    /// Number of points.
    pub n: usize,
    /// Dimension.
    pub dim: usize,
}

/// Rows per block in blocked distance computations (a block of 128 rows × 10 000 columns is 5 MB of f32).
pub(crate) const DIST_BLOCK: usize = 128;

/// Centres every set by the mean of all of them pooled (rows already validated, same `dim`).
pub(crate) fn centred_points(sets: &[&[f32]], dim: usize) -> Vec<Points> {
    let mut mean = vec![0.0f64; dim];
    let mut total = 0usize;
    for s in sets {
        for row in s.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
            total += 1;
        }
    }
    for m in &mut mean {
        *m /= total.max(1) as f64;
    }
    sets.iter()
        .map(|s| {
            let data: Vec<f32> = s
                .chunks_exact(dim)
                .flat_map(|row| row.iter().zip(&mean).map(|(&v, &m)| (v as f64 - m) as f32))
                .collect();
            let sq_norms = data
                .chunks_exact(dim)
                .map(|r| r.iter().map(|&v| (v as f64) * (v as f64)).sum())
                .collect();
            Points {
                n: s.len() / dim,
                data,
                sq_norms,
                dim,
            }
        })
        .collect()
}

/// ‖a − b‖² from ‖a‖², ‖b‖² and aᵀb, with negative round-off clamped to 0.
#[inline]
pub(crate) fn sq_dist(na: f64, nb: f64, dot: f32) -> f64 {
    (na + nb - 2.0 * dot as f64).max(0.0)
}

impl Points {
    /// Dot products of rows `rows` of `self` with every row of `other`, into `dots` (`rows.len() × other.n`,
    /// row-major) from a single-threaded f32 gemm (so the caller may run blocks in parallel).
    pub(crate) fn dots(&self, rows: Range<usize>, other: &Points, dots: &mut Vec<f32>) {
        let (m, n, k) = (rows.len(), other.n, self.dim);
        dots.clear();
        dots.resize(m * n, 0.0);
        gemm_abt(
            m,
            n,
            k,
            &self.data[rows.start * k..rows.end * k],
            &other.data,
            dots,
        );
    }

    /// Squared Euclidean distances from rows `rows` of `self` to every row of `other`, into `out`
    /// (`rows.len() × other.n`, row-major), as ‖a‖² + ‖b‖² − 2aᵀb with aᵀb from a single-threaded f32 gemm
    /// (so the caller may run blocks in parallel) and negative round-off clamped to 0. `dots` is scratch space.
    pub(crate) fn sq_dists(
        &self,
        rows: Range<usize>,
        other: &Points,
        dots: &mut Vec<f32>,
        out: &mut Vec<f64>,
    ) {
        let n = other.n;
        self.dots(rows.clone(), other, dots);
        out.clear();
        out.resize(rows.len() * n, 0.0);
        for (r, (orow, drow)) in out
            .chunks_exact_mut(n)
            .zip(dots.chunks_exact(n))
            .enumerate()
        {
            let na = self.sq_norms[rows.start + r];
            for ((o, &dt), &nb) in orow.iter_mut().zip(drow).zip(&other.sq_norms) {
                *o = sq_dist(na, nb, dt);
            }
        }
    }

    /// Row blocks of [`DIST_BLOCK`] rows covering all points (a fixed split, whatever the thread count).
    pub(crate) fn blocks(&self) -> Vec<Range<usize>> {
        (0..self.n)
            .step_by(DIST_BLOCK)
            .map(|s| s..(s + DIST_BLOCK).min(self.n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
    }

    fn transpose(a: &[f64], n: usize) -> Vec<f64> {
        let mut t = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                t[j * n + i] = a[i * n + j];
            }
        }
        t
    }

    /// A random orthogonal matrix as a product of random plane rotations (independent of the code under test).
    fn random_rotation(n: usize, rng: &mut Rng) -> Vec<f64> {
        let mut r = vec![0.0; n * n];
        for i in 0..n {
            r[i * n + i] = 1.0;
        }
        for _ in 0..4 * n * n {
            let i = rng.below(n);
            let j = rng.below(n);
            if i == j {
                continue;
            }
            let th = rng.uniform_f64() * std::f64::consts::TAU;
            let (s, c) = th.sin_cos();
            for k in 0..n {
                let (a, b) = (r[i * n + k], r[j * n + k]);
                r[i * n + k] = c * a - s * b;
                r[j * n + k] = s * a + c * b;
            }
        }
        r
    }

    /// R diag(λ) Rᵀ.
    fn with_spectrum(r: &[f64], lambda: &[f64]) -> Vec<f64> {
        let n = lambda.len();
        let mut rl = r.to_vec();
        for i in 0..n {
            for j in 0..n {
                rl[i * n + j] *= lambda[j];
            }
        }
        matmul(&rl, &transpose(r, n), n)
    }

    fn random_spd(n: usize, rng: &mut Rng) -> Vec<f64> {
        let b: Vec<f64> = (0..n * n).map(|_| rng.normal() as f64).collect();
        let mut a = matmul(&b, &transpose(&b, n), n);
        for i in 0..n {
            a[i * n + i] += 0.1;
        }
        a
    }

    #[test]
    fn mean_cov_hand_example() -> Result<()> {
        // Points (1,2), (3,4), (5,0): mean (3,2); deviations x: −2,0,2; y: 0,2,−2.
        // var x = 8/2 = 4, var y = 8/2 = 4, cov = (0 + 0 − 4)/2 = −2.
        let (m, c) = mean_cov(&[1.0, 2.0, 3.0, 4.0, 5.0, 0.0], 2)?;
        assert_eq!(m, vec![3.0, 2.0]);
        assert_eq!(c, vec![4.0, -2.0, -2.0, 4.0]);
        assert!(mean_cov(&[1.0, 2.0], 2).is_err()); // one point
        assert!(mean_cov(&[1.0, 2.0, 3.0], 2).is_err()); // not whole rows
        assert!(mean_cov(&[1.0, f32::NAN, 3.0, 4.0], 2).is_err());
        Ok(())
    }

    #[test]
    fn mean_cov_large_block_boundaries_match_direct_sum() -> Result<()> {
        // More samples than one block, odd count; compare with a direct two-pass sum.
        let (n, dim) = (1301, 5);
        let mut rng = Rng::new(3);
        let x: Vec<f32> = (0..n * dim)
            .map(|i| rng.normal() + (i % dim) as f32 * 10.0)
            .collect();
        let (m, c) = mean_cov(&x, dim)?;
        for j in 0..dim {
            let mj = (0..n).map(|i| x[i * dim + j] as f64).sum::<f64>() / n as f64;
            assert!((mj - m[j]).abs() < 1e-12 * (1.0 + mj.abs()));
            for k in 0..dim {
                let mk = (0..n).map(|i| x[i * dim + k] as f64).sum::<f64>() / n as f64;
                let ckj = (0..n)
                    .map(|i| (x[i * dim + j] as f64 - mj) * (x[i * dim + k] as f64 - mk))
                    .sum::<f64>()
                    / (n - 1) as f64;
                assert!(
                    (ckj - c[j * dim + k]).abs() < 1e-10,
                    "{ckj} vs {}",
                    c[j * dim + k]
                );
            }
        }
        Ok(())
    }

    #[test]
    fn eigen_of_diagonal_and_2x2_closed_form() -> Result<()> {
        let (l, v) = sym_eigen(&[3.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 2.0], 3)?;
        assert_eq!(l, vec![-1.0, 2.0, 3.0]);
        // eigenvectors are ± unit vectors e1, e2, e0
        assert_eq!(v[3].abs(), 1.0);
        assert_eq!(v[2 * 3 + 1].abs(), 1.0);
        assert_eq!(v[2].abs(), 1.0);
        // [[a, b], [b, c]]: λ = (a + c)/2 ± sqrt(((a − c)/2)² + b²)
        let (a, b, c) = (2.5, -1.25, 0.75);
        let l = sym_eigenvalues(&[a, b, b, c], 2)?;
        let h = (((a - c) / 2.0f64).powi(2) + b * b).sqrt();
        assert!((l[0] - ((a + c) / 2.0 - h)).abs() < 1e-14);
        assert!((l[1] - ((a + c) / 2.0 + h)).abs() < 1e-14);
        assert_eq!(sym_eigen(&[7.0], 1)?, (vec![7.0], vec![1.0]));
        Ok(())
    }

    #[test]
    fn eigen_reconstructs_and_recovers_known_spectrum() -> Result<()> {
        let mut rng = Rng::new(11);
        for n in [5, 40, 130] {
            // Known spectrum with a repeated eigenvalue, a zero and a wide range.
            let mut lambda: Vec<f64> = (0..n).map(|i| ((i as f64) - 3.0) * 1.7).collect();
            lambda[1] = lambda[2];
            lambda[n - 1] = 1e4;
            let r = random_rotation(n, &mut rng);
            let a = with_spectrum(&r, &lambda);
            let (l, v) = sym_eigen(&a, n)?;
            let mut want = lambda.clone();
            want.sort_by(|a, b| a.total_cmp(b));
            assert!(max_abs_diff(&l, &want) < 1e-9 * 1e4, "n {n}");
            assert!(max_abs_diff(&sym_eigenvalues(&a, n)?, &want) < 1e-9 * 1e4);
            // VᵀV = I and V diag(λ) Vᵀ = A
            let mut eye = vec![0.0; n * n];
            for i in 0..n {
                eye[i * n + i] = 1.0;
            }
            assert!(max_abs_diff(&matmul(&transpose(&v, n), &v, n), &eye) < 1e-12);
            assert!(max_abs_diff(&with_spectrum(&v, &l), &a) < 1e-10 * 1e4);
        }
        Ok(())
    }

    #[test]
    fn eigen_256_is_fast_and_accurate() -> Result<()> {
        let n = 256;
        let a = random_spd(n, &mut Rng::new(5));
        let t = std::time::Instant::now();
        let (l, v) = sym_eigen(&a, n)?;
        let dt = t.elapsed().as_secs_f64();
        let scale = l[n - 1];
        assert!(max_abs_diff(&with_spectrum(&v, &l), &a) < 1e-11 * scale);
        assert!(dt < 1.0, "256 × 256 eigen-decomposition took {dt} s");
        Ok(())
    }

    #[test]
    fn eigen_of_rank_deficient_covariance() -> Result<()> {
        // 40 points in 256 dimensions: the covariance has rank 39, so 217 eigenvalues are (numerically) 0.
        let (n, dim) = (40, 256);
        let mut rng = Rng::new(99);
        let x: Vec<f32> = (0..n * dim)
            .map(|i| rng.normal() + (i % 7) as f32)
            .collect();
        let (_, c) = mean_cov(&x, dim)?;
        for vectors in [true, false] {
            let l = if vectors {
                let (l, v) = sym_eigen(&c, dim)?;
                assert!(max_abs_diff(&with_spectrum(&v, &l), &c) < 1e-12 * l[dim - 1]);
                l
            } else {
                sym_eigenvalues(&c, dim)?
            };
            let zero = l.iter().filter(|v| v.abs() < 1e-12 * l[dim - 1]).count();
            assert_eq!(zero, dim - (n - 1));
            assert!(l[dim - n + 1] > 1e-3 * l[dim - 1]);
        }
        Ok(())
    }

    #[test]
    fn eigen_rejects_bad_input() {
        assert!(sym_eigen(&[1.0, 2.0, 2.5, 1.0], 2).is_err()); // not symmetric
        assert!(sym_eigen(&[1.0, 2.0, 2.0], 2).is_err()); // wrong size
        assert!(sym_eigen(&[1.0, f64::NAN, f64::NAN, 1.0], 2).is_err());
        assert!(sym_eigen(&[], 0).is_err());
    }

    #[test]
    fn sqrtm_known_and_random() -> Result<()> {
        // [[2,1],[1,2]]² = [[5,4],[4,5]]
        let s = sqrtm_psd(&[5.0, 4.0, 4.0, 5.0], 2)?;
        assert!(max_abs_diff(&s, &[2.0, 1.0, 1.0, 2.0]) < 1e-14);
        let n = 60;
        let a = random_spd(n, &mut Rng::new(2));
        let s = sqrtm_psd(&a, n)?;
        let a_norm = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let err = max_abs_diff(&matmul(&s, &s, n), &a);
        assert!(err < 1e-9 * a_norm, "{err} vs ‖A‖ {a_norm}");
        // singular PSD: [[1,1],[1,1]] = 2 · uuᵀ, sqrt = √2 · uuᵀ = [[1,1],[1,1]]/√2. The zero eigenvalue comes
        // out as ±1e-16 or so and √ turns that into ~1e-8: the square root is not Lipschitz at 0.
        let s = sqrtm_psd(&[1.0, 1.0, 1.0, 1.0], 2)?;
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert!(max_abs_diff(&s, &[h, h, h, h]) < 1e-7);
        // clearly indefinite
        assert!(sqrtm_psd(&[1.0, 2.0, 2.0, 1.0], 2).is_err());
        Ok(())
    }

    #[test]
    fn frechet_equal_covariances_is_mean_distance() -> Result<()> {
        let n = 30;
        let c = random_spd(n, &mut Rng::new(8));
        let mu1: Vec<f64> = (0..n).map(|i| i as f64 * 0.1).collect();
        let mu2: Vec<f64> = (0..n)
            .map(|i| (i as f64 * 0.1) + if i % 3 == 0 { 1.0 } else { -0.5 })
            .collect();
        let want: f64 = mu1.iter().zip(&mu2).map(|(a, b)| (a - b) * (a - b)).sum();
        let tr: f64 = (0..n).map(|i| c[i * n + i]).sum();
        let d = frechet_distance(&mu1, &c, &mu2, &c, n)?;
        assert!((d - want).abs() < 1e-9 * tr, "{d} vs {want}");
        assert_eq!(
            frechet_distance(&mu1, &c, &mu1, &c, n)?.max(0.0),
            frechet_distance(&mu1, &c, &mu1, &c, n)?
        );
        assert!(frechet_distance(&mu1, &c, &mu1, &c, n)? < 1e-9 * tr);
        Ok(())
    }

    #[test]
    fn frechet_diagonal_and_commuting_covariances() -> Result<()> {
        // Σ₁ = R diag(a) Rᵀ, Σ₂ = R diag(b) Rᵀ commute: d² = ‖Δμ‖² + Σ (√a_i − √b_i)². R = I is the diagonal case.
        let n = 20;
        let mut rng = Rng::new(21);
        let a: Vec<f64> = (0..n).map(|i| 0.5 + i as f64).collect();
        let b: Vec<f64> = (0..n).map(|i| 4.0 / (1.0 + i as f64)).collect();
        let mu1 = vec![0.0; n];
        let mut mu2 = vec![0.0; n];
        mu2[3] = 2.0; // ‖Δμ‖² = 4
        let want = 4.0
            + a.iter()
                .zip(&b)
                .map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2))
                .sum::<f64>();
        let mut eye = vec![0.0; n * n];
        for i in 0..n {
            eye[i * n + i] = 1.0;
        }
        for r in [eye, random_rotation(n, &mut rng)] {
            let d = frechet_distance(
                &mu1,
                &with_spectrum(&r, &a),
                &mu2,
                &with_spectrum(&r, &b),
                n,
            )?;
            assert!((d - want).abs() < 1e-9 * want, "{d} vs {want}");
        }
        Ok(())
    }

    #[test]
    fn frechet_2x2_closed_form_and_1d() -> Result<()> {
        // 1-D: (μ₁ − μ₂)² + (σ₁ − σ₂)².
        let d = frechet_distance(&[1.0], &[4.0], &[-2.0], &[9.0], 1)?;
        assert!((d - (9.0 + 1.0)).abs() < 1e-12);
        // 2-D: Tr((Σ₁^{1/2}Σ₂Σ₁^{1/2})^{1/2}) = √(Tr(Σ₁Σ₂) + 2√(det Σ₁ det Σ₂)), since for a 2 × 2 PSD M
        // with eigenvalues λ₁, λ₂: (√λ₁ + √λ₂)² = Tr M + 2√det M, and M is similar to Σ₁Σ₂.
        let s1 = [2.0, 0.7, 0.7, 1.0];
        let s2 = [0.5, -0.3, -0.3, 3.0];
        let tr12 = s1[0] * s2[0] + s1[1] * s2[2] + s1[2] * s2[1] + s1[3] * s2[3];
        let det1: f64 = s1[0] * s1[3] - s1[1] * s1[2];
        let det2: f64 = s2[0] * s2[3] - s2[1] * s2[2];
        let cross = (tr12 + 2.0 * (det1 * det2).sqrt()).sqrt();
        let (mu1, mu2) = ([0.5, -1.0], [1.5, 1.0]);
        let want = 1.0 + 4.0 + (s1[0] + s1[3]) + (s2[0] + s2[3]) - 2.0 * cross;
        let d = frechet_distance(&mu1, &s1, &mu2, &s2, 2)?;
        assert!((d - want).abs() < 1e-12, "{d} vs {want}");
        // bad input
        assert!(frechet_distance(&mu1, &s1, &mu2, &s2[..3], 2).is_err());
        assert!(frechet_distance(&mu1, &s1, &[0.0], &s2, 2).is_err());
        assert!(frechet_distance(&mu1, &[1.0, 2.0, 2.0, 1.0], &mu2, &s2, 2).is_err());
        Ok(())
    }

    #[test]
    fn blocked_distances_match_direct() -> Result<()> {
        let mut rng = Rng::new(4);
        let dim = 7;
        let x: Vec<f32> = (0..300 * dim).map(|_| rng.normal() + 50.0).collect();
        let y: Vec<f32> = (0..20 * dim).map(|_| rng.normal() + 50.0).collect();
        let p = centred_points(&[&x, &y], dim);
        let (mut dots, mut out) = (vec![], vec![]);
        for rows in p[0].blocks() {
            p[0].sq_dists(rows.clone(), &p[1], &mut dots, &mut out);
            for (r, i) in rows.enumerate() {
                for j in 0..20 {
                    let exact: f64 = (0..dim)
                        .map(|k| (x[i * dim + k] as f64 - y[j * dim + k] as f64).powi(2))
                        .sum();
                    assert!((out[r * 20 + j] - exact).abs() < 1e-4 * (1.0 + exact));
                }
            }
        }
        Ok(())
    }
}
