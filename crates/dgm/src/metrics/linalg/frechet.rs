//! The square root of a positive semi-definite matrix and the Fréchet distance between two Gaussians, from
//! symmetric eigen-decompositions only (the formula is in the module docs of `linalg`).

use super::eigen::{check_symmetric, sym_eigen, sym_eigenvalues};
use super::{dot, matmul};
use crate::{Error, Result};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::linalg::tests::{max_abs_diff, random_rotation, random_spd, with_spectrum};
    use crate::rng::Rng;

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
}
