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

mod covariance;
mod eigen;
mod frechet;
mod points;
#[cfg(test)]
mod tests;

use rayon::prelude::*;

pub use covariance::mean_cov;
pub use eigen::{sym_eigen, sym_eigenvalues};
pub use frechet::{frechet_distance, sqrtm_psd};
pub(crate) use points::{centred_points, check_points, gemm_abt, Points, DIST_BLOCK};

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
