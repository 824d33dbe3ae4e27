//! Kernel two-sample test: are two sets of points drawn from the same distribution?
//!
//! Gretton, Borgwardt, Rasch, Schölkopf & Smola 2012, "A kernel two-sample test" (JMLR 13): the squared
//! maximum mean discrepancy between P and Q with a characteristic kernel k is zero iff P = Q. Its unbiased
//! estimate (their eq. 3, the U-statistic) from x₁..x_m ~ P and y₁..y_n ~ Q is
//!
//! MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (n(n−1)) − 2 Σ_{i,j} k(x_i, y_j) / (mn).
//!
//! The kernel here is the Gaussian k(a, b) = exp(−‖a − b‖² / (2σ²)) with σ from the median heuristic (the
//! median pairwise Euclidean distance of the pooled sample; Gretton et al. 2012, §8). The null distribution of
//! the statistic is approximated by permutations (§5 of the paper mentions bootstrap / permutation): the pooled
//! points are relabelled at random, the statistic recomputed, and the p-value is
//! p = (1 + #{permuted statistic ≥ observed}) / (1 + permutations), which is a valid (slightly conservative)
//! p-value for any number of permutations.
//!
//! [`mmd_test`] computes the pooled kernel matrix K once (at most [`MMD_MAX_POOLED`] points; larger inputs
//! are subsampled, seeded). Under a relabelling only the within-group sum Σ_{i,j∈g} K_ij of one group changes
//! non-trivially (the row sums and the total are fixed), and for a batch of relabellings these sums are the
//! diagonal of Mᵀ K M with M the 0/1 membership masks: one matrix product per batch. Each permutation has its
//! own seeded random stream and the products are split over rows in a fixed way, so the result is the same
//! for any thread count.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::json;

use crate::metrics::linalg::{centred_points, check_points, gemm_abt, Points, DIST_BLOCK};
use crate::rng::{fnv1a, Rng};
use crate::{Error, Result};

/// Largest pooled sample [`mmd_test`] works on: above it each set is subsampled (seeded, without replacement).
/// The pooled kernel matrix is stored in f32, 4000² × 4 bytes = 64 MB, and each permutation costs
/// min(n_x, n_y)² lookups.
pub const MMD_MAX_POOLED: usize = 4000;

/// Points used for the median heuristic in [`mmd_test`] (the pooled sample is subsampled to this many).
pub const MEDIAN_MAX_POINTS: usize = 1000;

/// Result of the kernel two-sample test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MmdTest {
    /// Unbiased squared MMD of the (possibly subsampled) sets with the Gaussian kernel of bandwidth
    /// `bandwidth`. Can be slightly negative when the distributions match.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub mmd2: f64,
    /// Permutation p-value (1 + #{permuted ≥ observed}) / (1 + permutations); small means "different".
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub p_value: f64,
    /// Kernel bandwidth σ in k(a, b) = exp(−‖a − b‖² / (2σ²)) (median heuristic).
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub bandwidth: f64,
    /// Number of random permutations.
    pub permutations: usize,
    /// Points of the first set used (after subsampling to at most [`MMD_MAX_POOLED`] pooled).
    pub n_x: usize,
    /// Points of the second set used.
    pub n_y: usize,
}

/// A uniform random subset of `k` of `0..n`, in increasing order (partial Fisher–Yates).
fn random_subset(n: usize, k: usize, rng: &mut Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in 0..k.min(n) {
        let j = i + rng.below(n - i);
        p.swap(i, j);
    }
    p.truncate(k.min(n));
    p.sort_unstable();
    p
}

/// The rows `idx` of the row-major `x`.
fn gather(x: &[f32], dim: usize, idx: &[usize]) -> Vec<f32> {
    idx.iter()
        .flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied())
        .collect()
}

/// Bandwidth for the Gaussian kernel by the median heuristic: the median Euclidean distance between distinct
/// points of the pooled sample x ∪ y (row-major, `dim` columns; for an even number of pairs, the mean of the
/// two middle distances). When the pooled sample has more than `max_points` points, a seeded random subset of
/// `max_points` of them is used. If more than half of the pairs coincide (median 0), the median of the
/// non-zero distances is used instead; all points equal is an error. Distances are computed exactly in f64.
pub fn median_bandwidth(
    x: &[f32],
    y: &[f32],
    dim: usize,
    max_points: usize,
    seed: u64,
) -> Result<f64> {
    let nx = check_points("features x", x, dim, 1)?;
    let ny = check_points("features y", y, dim, 1)?;
    if max_points < 2 {
        return Err(Error::invalid(
            "median bandwidth max points",
            format!("must be at least 2, got {max_points}"),
        ));
    }
    let total = nx + ny;
    if total < 2 {
        return Err(Error::invalid(
            "features",
            "the median heuristic needs at least 2 points",
        ));
    }
    let pooled: Vec<f64> = if total > max_points {
        let idx = random_subset(
            total,
            max_points,
            &mut Rng::named(seed, "metrics/mmd/median"),
        );
        idx.iter()
            .flat_map(|&i| {
                let row = if i < nx {
                    &x[i * dim..(i + 1) * dim]
                } else {
                    &y[(i - nx) * dim..(i - nx + 1) * dim]
                };
                row.iter().map(|&v| v as f64)
            })
            .collect()
    } else {
        x.iter().chain(y).map(|&v| v as f64).collect()
    };
    let n = pooled.len() / dim;
    // Squared distances of all pairs i < j, row by row (rows in parallel, concatenated in order).
    let mut d2: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            let a = &pooled[i * dim..(i + 1) * dim];
            (i + 1..n)
                .map(|j| {
                    let b = &pooled[j * dim..(j + 1) * dim];
                    a.iter().zip(b).map(|(u, v)| (u - v) * (u - v)).sum::<f64>()
                })
                .collect::<Vec<f64>>()
        })
        .flatten()
        .collect();
    let mut med = median(&mut d2);
    if med == 0.0 {
        d2.retain(|&v| v > 0.0);
        if d2.is_empty() {
            return Err(Error::invalid(
                "features",
                "all points are identical, so no kernel bandwidth can be chosen",
            ));
        }
        med = median(&mut d2);
    }
    Ok(med)
}

/// Median of the square roots of the (non-empty) values; reorders `v`.
fn median(v: &mut [f64]) -> f64 {
    let n = v.len();
    let upper = *v.select_nth_unstable_by(n / 2, |a, b| a.total_cmp(b)).1;
    if n % 2 == 1 {
        upper.sqrt()
    } else {
        let lower = v[..n / 2].iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
        0.5 * (lower.sqrt() + upper.sqrt())
    }
}

fn check_bandwidth(bandwidth: f64) -> Result<()> {
    if !(bandwidth.is_finite() && bandwidth > 0.0) {
        return Err(Error::invalid(
            "kernel bandwidth",
            format!("must be a positive finite number, got {bandwidth}"),
        ));
    }
    Ok(())
}

/// Σ_{i ∈ a, j ∈ b} exp(−‖a_i − b_j‖² · gamma), leaving out i = j when `same` (a and b are the same set);
/// blocks of rows in parallel, partial sums added in block order.
fn gaussian_kernel_sum(a: &Points, b: &Points, gamma: f64, same: bool) -> f64 {
    let partial: Vec<f64> = a
        .blocks()
        .into_par_iter()
        .map(|rows| {
            let (mut dots, mut d2) = (Vec::new(), Vec::new());
            a.sq_dists(rows.clone(), b, &mut dots, &mut d2);
            let mut s = 0.0f64;
            for (r, i) in rows.enumerate() {
                for (j, &d) in d2[r * b.n..(r + 1) * b.n].iter().enumerate() {
                    if !(same && i == j) {
                        s += (-d * gamma).exp();
                    }
                }
            }
            s
        })
        .collect();
    partial.iter().sum()
}

/// Unbiased MMD² (Gretton et al. 2012, eq. 3) between `x` and `y` (row-major, `dim` columns, at least two
/// points each) with the Gaussian kernel k(a, b) = exp(−‖a − b‖² / (2 `bandwidth`²)). Exact over all pairs:
/// O((n_x + n_y)² · dim) time, O(128 · n) memory; deterministic for any thread count.
pub fn mmd2_unbiased_gaussian(x: &[f32], y: &[f32], dim: usize, bandwidth: f64) -> Result<f64> {
    let nx = check_points("features x", x, dim, 2)?;
    let ny = check_points("features y", y, dim, 2)?;
    check_bandwidth(bandwidth)?;
    let pts = centred_points(&[x, y], dim);
    let gamma = 1.0 / (2.0 * bandwidth * bandwidth);
    let sxx = gaussian_kernel_sum(&pts[0], &pts[0], gamma, true);
    let syy = gaussian_kernel_sum(&pts[1], &pts[1], gamma, true);
    let sxy = gaussian_kernel_sum(&pts[0], &pts[1], gamma, false);
    let (m, n) = (nx as f64, ny as f64);
    Ok(sxx / (m * (m - 1.0)) + syy / (n * (n - 1.0)) - 2.0 * sxy / (m * n))
}

/// The pooled Gaussian kernel matrix with its constant sums, for evaluating MMD² under relabellings.
/// Entries are stored in f32 (the kernel values lie in [0, 1]); all sums are formed in f64 except the inner
/// products of the batched relabelling sums (f32 gemm, relative error ~1e-7, far below the permutation spread).
struct PooledKernel {
    /// N × N, row-major, exactly symmetric, zero diagonal.
    k: Vec<f32>,
    /// Off-diagonal row sums.
    row_sums: Vec<f64>,
    /// Sum of all off-diagonal entries.
    total: f64,
    /// Pooled size.
    n: usize,
}

impl PooledKernel {
    fn new(p: &Points, gamma: f64) -> Self {
        let n = p.n;
        let mut k = vec![0.0f32; n * n];
        let blocks = p.blocks();
        k.par_chunks_mut(DIST_BLOCK * n)
            .zip(blocks.into_par_iter())
            .for_each(|(out, rows)| {
                let (mut dots, mut d2) = (Vec::new(), Vec::new());
                p.sq_dists(rows, p, &mut dots, &mut d2);
                for (o, &d) in out.iter_mut().zip(&d2) {
                    *o = (-d * gamma).exp() as f32;
                }
            });
        // Exact symmetry (the two triangles come from different gemm blocks) and a zero diagonal.
        for i in 0..n {
            k[i * n + i] = 0.0;
            for j in i + 1..n {
                k[j * n + i] = k[i * n + j];
            }
        }
        let row_sums: Vec<f64> = k
            .par_chunks(n)
            .map(|row| row.iter().map(|&v| v as f64).sum())
            .collect();
        let total = row_sums.iter().sum();
        Self {
            k,
            row_sums,
            total,
            n,
        }
    }

    /// S_g = Σ_{i,j ∈ g} K_ij for each labelling `g` in `groups`, for many labellings in one pass over K:
    /// with the 0/1 masks m_g as the rows of a matrix Mᵀ, S_g = Σ_{i∈g} (K M)_{i,g}; K M comes from an f32 gemm
    /// by blocks of rows of K (in parallel), and the partial sums are added in block order.
    fn group_sums(&self, groups: &[Vec<usize>]) -> Vec<f64> {
        let (n, c) = (self.n, groups.len());
        let mut masks = vec![0.0f32; c * n];
        for (g, mask) in groups.iter().zip(masks.chunks_exact_mut(n)) {
            for &i in g {
                mask[i] = 1.0;
            }
        }
        let blocks: Vec<std::ops::Range<usize>> = (0..n)
            .step_by(DIST_BLOCK)
            .map(|s| s..(s + DIST_BLOCK).min(n))
            .collect();
        let partial: Vec<Vec<f64>> = blocks
            .into_par_iter()
            .map(|rows| {
                let m = rows.len();
                let mut km = vec![0.0f32; m * c];
                gemm_abt(
                    m,
                    c,
                    n,
                    &self.k[rows.start * n..rows.end * n],
                    &masks,
                    &mut km,
                );
                let mut s = vec![0.0f64; c];
                for (r, i) in rows.enumerate() {
                    for (g, (sg, &v)) in s.iter_mut().zip(&km[r * c..(r + 1) * c]).enumerate() {
                        if masks[g * n + i] != 0.0 {
                            *sg += v as f64;
                        }
                    }
                }
                s
            })
            .collect();
        let mut total = vec![0.0f64; c];
        for p in partial {
            for (t, v) in total.iter_mut().zip(p) {
                *t += v;
            }
        }
        total
    }

    /// Unbiased MMD² when the points `g` form one set (the first set of size `nx` if `g_is_x`, else the
    /// second) and the rest the other, from S_gg = Σ_{i,j∈g} K_ij: with R_g = Σ_{i∈g} row sum, the cross sum
    /// is R_g − S_gg and the other set's sum is T − S_gg − 2 (R_g − S_gg).
    fn mmd2(&self, g: &[usize], s_gg: f64, nx: usize, g_is_x: bool) -> f64 {
        let r_g: f64 = g.iter().map(|&i| self.row_sums[i]).sum();
        let s_cross = r_g - s_gg;
        let s_other = self.total - s_gg - 2.0 * s_cross;
        let (sxx, syy) = if g_is_x {
            (s_gg, s_other)
        } else {
            (s_other, s_gg)
        };
        let (m, n) = (nx as f64, (self.n - nx) as f64);
        sxx / (m * (m - 1.0)) + syy / (n * (n - 1.0)) - 2.0 * s_cross / (m * n)
    }
}

/// Labellings evaluated per pass over the pooled kernel matrix in [`mmd_test`].
const PERMUTATION_CHUNK: usize = 64;

/// Kernel two-sample test of `x` against `y` (row-major, `dim` columns, at least two points each; Gretton et
/// al. 2012): Gaussian kernel with median-heuristic bandwidth ([`median_bandwidth`] on the pooled sample,
/// at most [`MEDIAN_MAX_POINTS`] points), unbiased MMD², and a p-value from `permutations` random
/// relabellings of the pooled points. When n_x + n_y > [`MMD_MAX_POOLED`], each set is subsampled (seeded,
/// without replacement): the smaller keeps min(its size, half the cap) points and the larger fills the rest.
/// Deterministic for a given seed, whatever the thread count.
pub fn mmd_test(
    x: &[f32],
    y: &[f32],
    dim: usize,
    permutations: usize,
    seed: u64,
) -> Result<MmdTest> {
    let nx0 = check_points("features x", x, dim, 2)?;
    let ny0 = check_points("features y", y, dim, 2)?;
    if permutations == 0 {
        return Err(Error::invalid(
            "mmd permutations",
            "must be at least 1, got 0",
        ));
    }
    let (xs, ys);
    let (x, y) = if nx0 + ny0 > MMD_MAX_POOLED {
        let half = MMD_MAX_POOLED / 2;
        let (kx, ky) = if nx0 <= ny0 {
            let kx = nx0.min(half);
            (kx, MMD_MAX_POOLED - kx)
        } else {
            let ky = ny0.min(half);
            (MMD_MAX_POOLED - ky, ky)
        };
        let mut rng = Rng::named(seed, "metrics/mmd/subsample");
        xs = gather(x, dim, &random_subset(nx0, kx, &mut rng));
        ys = gather(y, dim, &random_subset(ny0, ky, &mut rng));
        (&xs[..], &ys[..])
    } else {
        (x, y)
    };
    let (nx, ny) = (x.len() / dim, y.len() / dim);
    let bandwidth = median_bandwidth(x, y, dim, MEDIAN_MAX_POINTS, seed)?;
    let gamma = 1.0 / (2.0 * bandwidth * bandwidth);
    let pooled: Vec<f32> = x.iter().chain(y).copied().collect();
    let pts = centred_points(&[&pooled], dim);
    let kernel = PooledKernel::new(&pts[0], gamma);
    let n = nx + ny;
    // Sum over the smaller set's block only.
    let g_is_x = nx <= ny;
    let g_size = nx.min(ny);
    let observed: Vec<usize> = if g_is_x {
        (0..nx).collect()
    } else {
        (nx..n).collect()
    };
    // Labelling 0 is the observed one, then the permutations (each from its own seeded stream), evaluated
    // PERMUTATION_CHUNK at a time by the same code, so the observed value is computed exactly like the others.
    let base = fnv1a(b"metrics/mmd/permutation");
    let mut stats = Vec::with_capacity(permutations + 1);
    for start in (0..=permutations).step_by(PERMUTATION_CHUNK) {
        let end = (start + PERMUTATION_CHUNK).min(permutations + 1);
        let groups: Vec<Vec<usize>> = (start..end)
            .map(|l| {
                if l == 0 {
                    observed.clone()
                } else {
                    let mut rng = Rng::stream(seed, base.wrapping_add(l as u64));
                    random_subset(n, g_size, &mut rng)
                }
            })
            .collect();
        let sums = kernel.group_sums(&groups);
        stats.extend(
            groups
                .iter()
                .zip(sums)
                .map(|(g, s)| kernel.mmd2(g, s, nx, g_is_x)),
        );
    }
    let mmd2 = stats[0];
    let exceed = stats[1..].iter().filter(|&&s| s >= mmd2).count();
    Ok(MmdTest {
        mmd2,
        p_value: (1 + exceed) as f64 / (1 + permutations) as f64,
        bandwidth,
        permutations,
        n_x: nx,
        n_y: ny,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal_2d(n: usize, mean: [f32; 2], scale: [f32; 2], rng: &mut Rng) -> Vec<f32> {
        (0..n)
            .flat_map(|_| {
                [
                    mean[0] + scale[0] * rng.normal(),
                    mean[1] + scale[1] * rng.normal(),
                ]
            })
            .collect::<Vec<f32>>()
    }

    #[test]
    fn median_bandwidth_hand_examples() -> Result<()> {
        // 1-D pooled {0, 1, 3, 7}: distances 1, 3, 7, 2, 6, 4 → sorted 1 2 3 4 6 7 → median (3 + 4)/2 = 3.5
        assert_eq!(median_bandwidth(&[0.0, 1.0], &[3.0, 7.0], 1, 100, 0)?, 3.5);
        // 2-D {(0,0), (3,4)} ∪ {(0,4)}: distances 5, 4, 3 → median 4
        assert_eq!(
            median_bandwidth(&[0.0, 0.0, 3.0, 4.0], &[0.0, 4.0], 2, 100, 0)?,
            4.0
        );
        // {0, 0, 0, 2}: distances 0, 0, 2, 0, 2, 2 → median 1 ((0 + 2)/2) — not zero, kept as is
        assert_eq!(median_bandwidth(&[0.0, 0.0], &[0.0, 2.0], 1, 100, 0)?, 1.0);
        // {0, 0, 0, 0, 2}: 6 zero pairs of 10 → median 0 → median of the non-zero distances (all 2) = 2
        assert_eq!(
            median_bandwidth(&[0.0, 0.0, 0.0], &[0.0, 2.0], 1, 100, 0)?,
            2.0
        );
        assert!(median_bandwidth(&[1.0, 1.0], &[1.0], 1, 100, 0).is_err());
        // subsampled: 3000 points of N(0, 1) in 1-D; the median |a − b| of N(0, 2) is √2 · 0.6745 = 0.9539
        let mut rng = Rng::new(1);
        let x = rng.normal_vec(1500);
        let y = rng.normal_vec(1500);
        let b = median_bandwidth(&x, &y, 1, 600, 3)?;
        assert!((b - 0.9539).abs() < 0.05, "{b}");
        Ok(())
    }

    #[test]
    fn unbiased_mmd2_hand_example_and_mean_zero() -> Result<()> {
        // x = {0, 1}, y = {0, 3}, σ = 1, k = exp(−d²/2). Off-diagonal x pairs: 2·e^{−1/2} / (2·1);
        // y pairs: 2·e^{−9/2} / (2·1); cross pairs (d = 0, 3, 1, 2): (1 + e^{−9/2} + e^{−1/2} + e^{−2}) / 4, twice.
        let (a, b, c) = ((-0.5f64).exp(), (-4.5f64).exp(), (-2.0f64).exp());
        let want = a + b - 2.0 * (1.0 + b + a + c) / 4.0;
        let got = mmd2_unbiased_gaussian(&[0.0, 1.0], &[0.0, 3.0], 1, 1.0)?;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // Over many independent pairs from the same distribution the unbiased estimate averages 0.
        let mut rng = Rng::new(2);
        let trials = 300;
        let est: Vec<f64> = (0..trials)
            .map(|_| {
                let x = normal_2d(30, [0.0, 0.0], [1.0, 1.0], &mut rng);
                let y = normal_2d(30, [0.0, 0.0], [1.0, 1.0], &mut rng);
                mmd2_unbiased_gaussian(&x, &y, 2, 1.0)
            })
            .collect::<Result<_>>()?;
        let mean = est.iter().sum::<f64>() / trials as f64;
        let sd = (est.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (trials - 1) as f64).sqrt();
        let se = sd / (trials as f64).sqrt();
        assert!(mean.abs() < 3.0 * se, "mean {mean}, standard error {se}");
        assert!(mmd2_unbiased_gaussian(&[0.0, 1.0], &[0.0, 3.0], 1, 0.0).is_err());
        Ok(())
    }

    #[test]
    fn pooled_kernel_matches_direct_estimate() -> Result<()> {
        let mut rng = Rng::new(3);
        let x = normal_2d(150, [0.0, 0.0], [1.0, 1.0], &mut rng);
        let y = normal_2d(90, [0.5, 0.0], [1.0, 2.0], &mut rng);
        let t = mmd_test(&x, &y, 2, 10, 1)?;
        let direct = mmd2_unbiased_gaussian(&x, &y, 2, t.bandwidth)?;
        assert!((t.mmd2 - direct).abs() < 1e-6, "{} vs {direct}", t.mmd2);
        // and when the larger set is listed first (the permutation sums then run over y)
        let t2 = mmd_test(&y, &x, 2, 10, 1)?;
        assert!((t2.mmd2 - direct).abs() < 1e-6, "{} vs {direct}", t2.mmd2);
        Ok(())
    }

    #[test]
    fn same_distribution_rejected_at_nominal_rate() -> Result<()> {
        // 40 trials at α = 0.05: expect 2 rejections; 4 or fewer has probability 0.95 under a valid test.
        let mut rng = Rng::new(4);
        let mut rejections = 0;
        for t in 0..40 {
            let x = normal_2d(100, [0.0, 0.0], [1.0, 1.0], &mut rng);
            let y = normal_2d(100, [0.0, 0.0], [1.0, 1.0], &mut rng);
            let r = mmd_test(&x, &y, 2, 200, t)?;
            assert!(r.p_value > 0.0 && r.p_value <= 1.0);
            if r.p_value < 0.05 {
                rejections += 1;
            }
        }
        assert!(rejections <= 4, "{rejections} of 40 rejected");
        Ok(())
    }

    #[test]
    fn shifted_or_wider_distribution_rejected() -> Result<()> {
        let mut rng = Rng::new(5);
        let (mut shift, mut wide) = (0, 0);
        for t in 0..10 {
            let x = normal_2d(150, [0.0, 0.0], [1.0, 1.0], &mut rng);
            let y = normal_2d(150, [0.5, 0.5], [1.0, 1.0], &mut rng);
            let z = normal_2d(150, [0.0, 0.0], [2.0, 2.0], &mut rng);
            shift += usize::from(mmd_test(&x, &y, 2, 200, t)?.p_value < 0.05);
            wide += usize::from(mmd_test(&x, &z, 2, 200, t)?.p_value < 0.05);
        }
        assert!(shift >= 9, "mean shift rejected {shift} of 10");
        assert!(wide >= 9, "scale change rejected {wide} of 10");
        Ok(())
    }

    #[test]
    fn subsamples_large_inputs_and_is_deterministic() -> Result<()> {
        let mut rng = Rng::new(6);
        let x = normal_2d(3000, [0.0, 0.0], [1.0, 1.0], &mut rng);
        let y = normal_2d(1500, [0.0, 0.0], [1.0, 1.0], &mut rng);
        let pool = |t: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        };
        let a = pool(1).install(|| mmd_test(&x, &y, 2, 20, 9))?;
        let b = pool(3).install(|| mmd_test(&x, &y, 2, 20, 9))?;
        // y (1500) is smaller and below half the cap, so it is kept whole and x fills the rest.
        assert_eq!((a.n_x, a.n_y), (MMD_MAX_POOLED - 1500, 1500));
        assert_eq!(a.mmd2.to_bits(), b.mmd2.to_bits());
        assert_eq!(a.p_value, b.p_value);
        assert_eq!(a.bandwidth, b.bandwidth);
        let c = mmd_test(&x[..2 * 200], &y[..2 * 100], 2, 20, 9)?;
        assert_eq!((c.n_x, c.n_y), (200, 100));
        assert!(mmd_test(&x, &y, 2, 0, 9).is_err());
        Ok(())
    }
}
