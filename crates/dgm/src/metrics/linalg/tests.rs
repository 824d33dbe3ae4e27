//! Fixtures shared by the unit tests of the `linalg` modules: matrices with a known spectrum built
//! independently of the code under test.

use super::matmul;
use crate::rng::Rng;

pub(super) fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

pub(super) fn transpose(a: &[f64], n: usize) -> Vec<f64> {
    let mut t = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            t[j * n + i] = a[i * n + j];
        }
    }
    t
}

/// A random orthogonal matrix as a product of random plane rotations (independent of the code under test).
pub(super) fn random_rotation(n: usize, rng: &mut Rng) -> Vec<f64> {
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
pub(super) fn with_spectrum(r: &[f64], lambda: &[f64]) -> Vec<f64> {
    let n = lambda.len();
    let mut rl = r.to_vec();
    for i in 0..n {
        for j in 0..n {
            rl[i * n + j] *= lambda[j];
        }
    }
    matmul(&rl, &transpose(r, n), n)
}

pub(super) fn random_spd(n: usize, rng: &mut Rng) -> Vec<f64> {
    let b: Vec<f64> = (0..n * n).map(|_| rng.normal() as f64).collect();
    let mut a = matmul(&b, &transpose(&b, n), n);
    for i in 0..n {
        a[i * n + i] += 0.1;
    }
    a
}
