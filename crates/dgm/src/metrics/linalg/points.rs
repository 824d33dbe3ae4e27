//! Crate-internal helpers shared by the sample-based metrics: validation of a set of points given as a
//! row-major `&[f32]` with a dimension, f32 matrix products through the `gemm` crate, and blocked squared
//! Euclidean distances built on them.

use std::ops::Range;

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
