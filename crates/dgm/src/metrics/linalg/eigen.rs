//! Eigen-decomposition of a symmetric matrix: Householder reduction to tridiagonal form, then implicit QL
//! with shifts (see the module docs of `linalg`).

use super::dot;
use crate::{Error, Result};

/// Checks that `a` is a finite symmetric `n × n` matrix (|a_ij − a_ji| ≤ 1e-9 · max |a|) and returns its
/// exactly symmetric average (a + aᵀ) / 2.
pub(super) fn check_symmetric(a: &[f64], n: usize) -> Result<Vec<f64>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::linalg::tests::{
        max_abs_diff, random_rotation, random_spd, transpose, with_spectrum,
    };
    use crate::metrics::linalg::{matmul, mean_cov};
    use crate::rng::Rng;

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
}
