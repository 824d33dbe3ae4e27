//! Sample-quality metrics computed from features (or class probabilities) of real and generated examples.
//!
//! - **FID** (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a local Nash
//!   equilibrium", eq. 6): the Fréchet distance between Gaussians fitted to the two feature sets,
//!   ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2(Σ_r Σ_g)^{1/2}); see [`crate::metrics::linalg::frechet_distance`].
//! - **KID** (Bińkowski, Sutherland, Arbel & Gretton 2018, "Demystifying MMD GANs", §4): the squared MMD with
//!   the cubic polynomial kernel k(a, b) = (aᵀb / d + 1)³, estimated without bias (the U-statistic of Gretton
//!   et al. 2012, eq. 3) on random subsets, reported as mean and standard deviation over the subsets.
//! - **Precision / recall** (Kynkäänniemi, Karras, Laine, Lehtinen & Aila 2019, "Improved precision and recall
//!   metric for assessing generative models", eqs. 1–3): each point's k-nearest-neighbour ball approximates
//!   the support of its set; precision is the fraction of generated points inside the real support, recall the
//!   fraction of real points inside the generated support.
//! - **Inception Score** (Salimans et al. 2016, "Improved techniques for training GANs", §4):
//!   exp(E_x KL(p(y|x) ‖ p(y))), by split.
//! - **Class accuracy**: how often a classifier agrees with the class a conditional model was asked for.
//!
//! Point sets are row-major `&[f32]` with a dimension; all statistics are accumulated in f64. The pairwise
//! computations run on rayon with a fixed split into blocks and a fixed reduction order, so results are the
//! same bits for any thread count.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::json;

use crate::metrics::linalg::{
    centred_points, check_points, frechet_distance, gemm_abt, mean_cov, Points,
};
use crate::rng::Rng;
use crate::{Error, Result};

/// Mean and covariance of a feature set: everything FID needs, so a reference set is summarised once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FeatureStats {
    /// Feature mean (length `dim`).
    pub mean: Vec<f64>,
    /// Unbiased covariance, row-major `dim × dim`.
    pub cov: Vec<f64>,
    /// Feature dimension.
    pub dim: usize,
    /// Number of feature vectors summarised.
    pub n: usize,
}

impl FeatureStats {
    /// Mean and unbiased covariance of the rows of `x` (row-major, `dim` columns, at least two rows).
    pub fn from_features(x: &[f32], dim: usize) -> Result<Self> {
        let (mean, cov) = mean_cov(x, dim)?;
        Ok(Self {
            mean,
            cov,
            dim,
            n: x.len() / dim,
        })
    }
}

/// Checks that two feature sets have the same dimension.
fn same_dim(a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(Error::invalid(
            "features",
            format!("feature sets have different dimensions: {a} vs {b}"),
        ));
    }
    Ok(())
}

/// FID between two summarised feature sets (Heusel et al. 2017, eq. 6). Lower is better; 0 for identical
/// statistics.
pub fn fid_from_stats(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    same_dim(a.dim, b.dim)?;
    frechet_distance(&a.mean, &a.cov, &b.mean, &b.cov, a.dim)
}

/// FID between the feature sets `x` and `y` (row-major, `dim` columns each, at least two rows each). FID is
/// biased upwards for finite samples (by roughly Tr-terms of order dim / n), so compare values computed with the
/// same sample sizes.
pub fn fid(x: &[f32], y: &[f32], dim: usize) -> Result<f64> {
    fid_from_stats(
        &FeatureStats::from_features(x, dim)?,
        &FeatureStats::from_features(y, dim)?,
    )
}

/// Kernel Inception Distance: the unbiased squared MMD with the cubic polynomial kernel, over random subsets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Kid {
    /// Mean of the per-subset unbiased MMD² estimates (can be slightly negative when the sets match).
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub mean: f64,
    /// Standard deviation of the per-subset estimates (denominator `subsets − 1`; 0 for one subset). This is the
    /// spread of one subset's estimate, not the standard error of `mean`.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub std: f64,
    /// Number of subsets.
    pub subsets: usize,
    /// Points drawn from each set per subset (the requested size capped by both set sizes).
    pub subset_size: usize,
}

/// The cubic polynomial kernel of KID from a dot product: (aᵀb / d + 1)³.
fn poly_kernel(dot: f32, dim: usize) -> f64 {
    let t = dot as f64 / dim as f64 + 1.0;
    t * t * t
}

/// Rows per tile of the within-subset Gram matrices in [`kid`].
const KID_TILE: usize = 256;

/// Σ_{i≠j} k(a_i, a_j) over the rows of `a` (m × dim): the Gram matrix is symmetric, so only tiles (I, J ≥ I)
/// are computed and the off-diagonal tiles counted twice, in a fixed order. `g` is scratch space.
fn off_diagonal_kernel_sum(a: &[f32], m: usize, dim: usize, g: &mut Vec<f32>) -> f64 {
    let mut s = 0.0f64;
    for i0 in (0..m).step_by(KID_TILE) {
        let mi = KID_TILE.min(m - i0);
        for j0 in (i0..m).step_by(KID_TILE) {
            let mj = KID_TILE.min(m - j0);
            g.clear();
            g.resize(mi * mj, 0.0);
            gemm_abt(
                mi,
                mj,
                dim,
                &a[i0 * dim..(i0 + mi) * dim],
                &a[j0 * dim..(j0 + mj) * dim],
                g,
            );
            let mut t = 0.0f64;
            for (r, row) in g.chunks_exact(mj).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    if i0 != j0 || r != c {
                        t += poly_kernel(v, dim);
                    }
                }
            }
            s += if i0 == j0 { t } else { 2.0 * t };
        }
    }
    s
}

/// KID between feature sets `x` and `y` (row-major, `dim` columns; Bińkowski et al. 2018): for each of
/// `subsets` subsets, `subset_size` rows are drawn without replacement from each set (capped at the smaller set
/// size) and the unbiased MMD² with k(a, b) = (aᵀb / dim + 1)³ is computed:
///
/// MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (m(m−1)) − 2 Σ_{i,j} k(x_i, y_j) / m².
///
/// The subsets are drawn from `seed` in order, then evaluated in parallel (one subset per task), so the result
/// is deterministic for any thread count. Cost: `subsets` × about 2 m² · dim multiply-adds (the symmetric
/// within-set Gram matrices are computed by upper tiles only); the usual 100 subsets of 1000 in 256
/// dimensions is about 5e10.
pub fn kid(
    x: &[f32],
    y: &[f32],
    dim: usize,
    subsets: usize,
    subset_size: usize,
    seed: u64,
) -> Result<Kid> {
    let nx = check_points("features x", x, dim, 2)?;
    let ny = check_points("features y", y, dim, 2)?;
    if subsets == 0 {
        return Err(Error::invalid("kid subsets", "must be at least 1, got 0"));
    }
    if subset_size < 2 {
        return Err(Error::invalid(
            "kid subset size",
            format!("must be at least 2, got {subset_size}"),
        ));
    }
    let m = subset_size.min(nx).min(ny);
    // Partial Fisher–Yates on persistent index vectors: each subset is a uniform random m-subset whatever the
    // arrangement the vector was left in.
    let mut rng = Rng::named(seed, "metrics/kid");
    let mut px: Vec<usize> = (0..nx).collect();
    let mut py: Vec<usize> = (0..ny).collect();
    let mut draws = Vec::with_capacity(subsets);
    for _ in 0..subsets {
        let mut pick = |p: &mut Vec<usize>| -> Vec<usize> {
            for i in 0..m {
                let j = i + rng.below(p.len() - i);
                p.swap(i, j);
            }
            p[..m].to_vec()
        };
        let ix = pick(&mut px);
        let iy = pick(&mut py);
        draws.push((ix, iy));
    }
    let gather = |src: &[f32], idx: &[usize]| -> Vec<f32> {
        idx.iter()
            .flat_map(|&i| src[i * dim..(i + 1) * dim].iter().copied())
            .collect()
    };
    let estimates: Vec<f64> = draws
        .par_iter()
        .map(|(ix, iy)| {
            let xs = gather(x, ix);
            let ys = gather(y, iy);
            let mut g = Vec::new();
            let sxx = off_diagonal_kernel_sum(&xs, m, dim, &mut g);
            let syy = off_diagonal_kernel_sum(&ys, m, dim, &mut g);
            g.clear();
            g.resize(m * m, 0.0);
            gemm_abt(m, m, dim, &xs, &ys, &mut g);
            let sxy: f64 = g.iter().map(|&v| poly_kernel(v, dim)).sum();
            let mf = m as f64;
            (sxx + syy) / (mf * (mf - 1.0)) - 2.0 * sxy / (mf * mf)
        })
        .collect();
    let (mean, std) = mean_std(&estimates, 1);
    Ok(Kid {
        mean,
        std,
        subsets,
        subset_size: m,
    })
}

/// Mean and standard deviation with denominator `len − ddof` (0 when that is not positive).
fn mean_std(v: &[f64], ddof: usize) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let ss: f64 = v.iter().map(|x| (x - mean) * (x - mean)).sum();
    let std = if v.len() > ddof {
        (ss / (v.len() - ddof) as f64).sqrt()
    } else {
        0.0
    };
    (mean, std)
}

/// Improved precision and recall (Kynkäänniemi et al. 2019).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrecisionRecall {
    /// Fraction of generated points inside at least one real point's k-NN ball (sample fidelity).
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub precision: f64,
    /// Fraction of real points inside at least one generated point's k-NN ball (sample diversity / coverage).
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub recall: f64,
    /// The k of the k-nearest-neighbour radii.
    pub k: usize,
    /// Number of real points.
    #[serde(default)]
    pub n_real: usize,
    /// Number of generated points.
    #[serde(default)]
    pub n_fake: usize,
}

/// Rows (and columns) per tile of the within-set distance matrix in [`knn_sq_radii`].
const KNN_TILE: usize = 256;

/// Distances scanned per chunk before looking at any of them individually.
const SCAN_CHUNK: usize = 16;

/// The k smallest values seen so far, ascending (`best` has length k and starts at +∞).
#[inline]
fn insert_smallest(best: &mut [f64], d: f64) {
    let k = best.len();
    if d < best[k - 1] {
        let mut t = k - 1;
        while t > 0 && best[t - 1] > d {
            best[t] = best[t - 1];
            t -= 1;
        }
        best[t] = d;
    }
}

/// Feeds the unclamped squared distances na + nb_j − 2 dot_j for every j of the slice into `best`, skipping
/// position `skip` (the point itself). Chunks whose minimum cannot enter `best` are dismissed after a
/// vectorisable pass.
fn scan_row(best: &mut [f64], na: f64, nbs: &[f64], dots: &[f32], skip: Option<usize>) {
    let k = best.len();
    let mut d = [0.0f64; SCAN_CHUNK];
    for (c, (nb, dt)) in nbs
        .chunks(SCAN_CHUNK)
        .zip(dots.chunks(SCAN_CHUNK))
        .enumerate()
    {
        let len = nb.len();
        for ((o, &b), &t) in d.iter_mut().zip(nb).zip(dt) {
            *o = na + b - 2.0 * t as f64;
        }
        let min = d[..len].iter().fold(f64::INFINITY, |m, &v| m.min(v));
        if min < best[k - 1] {
            for (j, &v) in d[..len].iter().enumerate() {
                if skip != Some(c * SCAN_CHUNK + j) {
                    insert_smallest(best, v);
                }
            }
        }
    }
}

/// Squared distance from every point of `p` to its k-th nearest neighbour in `p` (excluding itself).
///
/// The distance matrix is symmetric, so only tiles (I, J ≥ I) of [`KNN_TILE`] rows are computed; each tile
/// feeds its rows' and (off the diagonal) its columns' running k smallest values, which are merged per point
/// at the end. The k-th smallest of a fixed set of numbers does not depend on the order they are merged in,
/// and every distance is computed once by a fixed tile, so the result is the same for any thread count.
/// Comparisons use ‖a‖² + ‖b‖² − 2aᵀb unclamped; the radius is clamped at 0 at the end (clamping commutes with
/// taking order statistics). Memory: one tile of dots per task plus k values per row per tile (about 10 MB
/// for 10 000 points and k = 3).
fn knn_sq_radii(p: &Points, k: usize) -> Vec<f64> {
    let n = p.n;
    let starts: Vec<usize> = (0..n).step_by(KNN_TILE).collect();
    let tiles: Vec<(usize, usize)> = (0..starts.len())
        .flat_map(|a| (a..starts.len()).map(move |b| (a, b)))
        .collect();
    let range = |t: usize| starts[t]..(starts[t] + KNN_TILE).min(n);
    // Per tile: the k smallest for each row of I, then (off the diagonal) for each row of J.
    let per_tile: Vec<Vec<f64>> = tiles
        .par_iter()
        .map(|&(a, b)| {
            let (ri, rj) = (range(a), range(b));
            let (mi, mj) = (ri.len(), rj.len());
            let mut dots = vec![0.0f32; mi * mj];
            gemm_abt(
                mi,
                mj,
                p.dim,
                &p.data[ri.start * p.dim..ri.end * p.dim],
                &p.data[rj.start * p.dim..rj.end * p.dim],
                &mut dots,
            );
            let nbs = &p.sq_norms[rj.clone()];
            let mut best = vec![f64::INFINITY; if a == b { mi * k } else { (mi + mj) * k }];
            let (row_best, col_best) = best.split_at_mut(mi * k);
            for (r, rb) in row_best.chunks_exact_mut(k).enumerate() {
                let skip = (a == b).then_some(r);
                scan_row(
                    rb,
                    p.sq_norms[ri.start + r],
                    nbs,
                    &dots[r * mj..(r + 1) * mj],
                    skip,
                );
            }
            if a != b {
                // Columns: transpose the tile so that they are scanned like rows.
                let mut t = vec![0.0f32; mj * mi];
                for r in 0..mi {
                    for c in 0..mj {
                        t[c * mi + r] = dots[r * mj + c];
                    }
                }
                let nas = &p.sq_norms[ri.clone()];
                for (c, cb) in col_best.chunks_exact_mut(k).enumerate() {
                    scan_row(
                        cb,
                        p.sq_norms[rj.start + c],
                        nas,
                        &t[c * mi..(c + 1) * mi],
                        None,
                    );
                }
            }
            best
        })
        .collect();
    let mut best = vec![f64::INFINITY; n * k];
    for (&(a, b), tb) in tiles.iter().zip(&per_tile) {
        let (ri, rj) = (range(a), range(b));
        for (r, src) in ri.clone().zip(tb.chunks_exact(k)) {
            for &v in src {
                insert_smallest(&mut best[r * k..(r + 1) * k], v);
            }
        }
        if a != b {
            for (r, src) in rj.zip(tb[ri.len() * k..].chunks_exact(k)) {
                for &v in src {
                    insert_smallest(&mut best[r * k..(r + 1) * k], v);
                }
            }
        }
    }
    best.chunks_exact(k).map(|b| b[k - 1].max(0.0)).collect()
}

/// Improved precision and recall of the generated set `fake` against the real set `real` (row-major, `dim`
/// columns; Kynkäänniemi et al. 2019, eqs. 1–3 with the paper's k = 3 as the usual choice). The radius of
/// every point is the Euclidean distance to its k-th nearest neighbour in its own set, excluding itself;
/// precision = fraction of fake points within the radius of at least one real point, recall = fraction of real
/// points within the radius of at least one fake point (boundaries count as inside). Both sets need more than
/// k points.
///
/// Distances are ‖a‖² + ‖b‖² − 2aᵀb with aᵀb from an f32 gemm on the data centred by the pooled mean, in
/// blocks of 128 rows × all columns (memory O(128 n), not O(n²)); three n × n passes, about 3 · n² · dim
/// multiply-adds.
pub fn precision_recall(
    real: &[f32],
    fake: &[f32],
    dim: usize,
    k: usize,
) -> Result<PrecisionRecall> {
    if k == 0 {
        return Err(Error::invalid(
            "precision/recall k",
            "must be at least 1, got 0",
        ));
    }
    let n_real = check_points("real features", real, dim, k + 1)?;
    let n_fake = check_points("generated features", fake, dim, k + 1)?;
    let pts = centred_points(&[real, fake], dim);
    let (pr, pf) = (&pts[0], &pts[1]);
    let real_r2 = knn_sq_radii(pr, k);
    let fake_r2 = knn_sq_radii(pf, k);
    // One pass over fake rows × real columns answers both questions.
    let per_block: Vec<(usize, Vec<u8>)> = pf
        .blocks()
        .into_par_iter()
        .map(|rows| {
            let mut dots = Vec::new();
            pf.dots(rows.clone(), pr, &mut dots);
            let mut real_covered = vec![0u8; n_real];
            let mut fake_inside = 0usize;
            let (nbs, rr2) = (&pr.sq_norms[..], &real_r2[..]);
            for (r, i) in rows.enumerate() {
                let row = &dots[r * n_real..(r + 1) * n_real];
                let (na, fr2) = (pf.sq_norms[i], fake_r2[i]);
                // Unclamped ‖a − b‖² compares with the radii (≥ 0) exactly as the clamped value would.
                let mut inside = 0u8;
                for j in 0..n_real {
                    let d = na + nbs[j] - 2.0 * row[j] as f64;
                    inside |= u8::from(d <= rr2[j]);
                    real_covered[j] |= u8::from(d <= fr2);
                }
                fake_inside += usize::from(inside);
            }
            (fake_inside, real_covered)
        })
        .collect();
    let mut fake_inside = 0usize;
    let mut real_covered = vec![0u8; n_real];
    for (f, rc) in per_block {
        fake_inside += f;
        for (a, b) in real_covered.iter_mut().zip(rc) {
            *a |= b;
        }
    }
    let recall = real_covered.iter().filter(|&&c| c != 0).count() as f64 / n_real as f64;
    Ok(PrecisionRecall {
        precision: fake_inside as f64 / n_fake as f64,
        recall,
        k,
        n_real,
        n_fake,
    })
}

/// Inception Score (Salimans et al. 2016).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InceptionScore {
    /// Mean over splits of exp(E_x KL(p(y|x) ‖ p(y))).
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub mean: f64,
    /// Standard deviation over splits (denominator `splits`, as in the reference implementation).
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub std: f64,
    /// Number of splits.
    pub splits: usize,
}

/// Largest |Σ_y p(y|x) − 1| accepted for a row of class probabilities.
const PROB_SUM_TOLERANCE: f64 = 1e-3;

/// Inception Score of class probabilities `probs` (row-major, one row of `classes` probabilities per generated
/// example, from a classifier): the rows are cut into `splits` contiguous, nearly equal parts (split s holds
/// rows ⌊s·n/splits⌋ .. ⌊(s+1)·n/splits⌋), and each part scores exp(mean_x Σ_y p(y|x) log(p(y|x) / p(y)))
/// with p(y) the part's mean row (0 log 0 = 0). Between 1 (every prediction the same) and `classes`
/// (confident predictions spread evenly over all classes). Each row must be finite, ≥ 0 and sum to 1 within
/// 1e-3.
pub fn inception_score(probs: &[f32], classes: usize, splits: usize) -> Result<InceptionScore> {
    let n = check_points("class probabilities", probs, classes, 1)?;
    if splits == 0 || splits > n {
        return Err(Error::invalid(
            "inception score splits",
            format!("must be between 1 and the number of examples ({n}), got {splits}"),
        ));
    }
    for (i, row) in probs.chunks_exact(classes).enumerate() {
        if let Some(v) = row.iter().find(|&&v| v < 0.0) {
            return Err(Error::invalid(
                "class probabilities",
                format!("row {i} has a negative probability {v}"),
            ));
        }
        let s: f64 = row.iter().map(|&v| v as f64).sum();
        if (s - 1.0).abs() > PROB_SUM_TOLERANCE {
            return Err(Error::invalid(
                "class probabilities",
                format!("row {i} sums to {s}, not 1 (are these logits rather than probabilities?)"),
            ));
        }
    }
    let scores: Vec<f64> = (0..splits)
        .map(|s| {
            let (a, b) = (s * n / splits, (s + 1) * n / splits);
            let part = &probs[a * classes..b * classes];
            let rows = (b - a) as f64;
            let mut py = vec![0.0f64; classes];
            for row in part.chunks_exact(classes) {
                for (m, &v) in py.iter_mut().zip(row) {
                    *m += v as f64;
                }
            }
            for m in &mut py {
                *m /= rows;
            }
            let mut kl = 0.0f64;
            for row in part.chunks_exact(classes) {
                for (&p, &q) in row.iter().zip(&py) {
                    let p = p as f64;
                    if p > 0.0 {
                        kl += p * (p / q).ln();
                    }
                }
            }
            (kl / rows).exp()
        })
        .collect();
    let (mean, std) = mean_std(&scores, 0);
    Ok(InceptionScore { mean, std, splits })
}

/// Agreement between the class a conditional model was asked for and the class a classifier sees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassAccuracy {
    /// Fraction of all examples whose predicted class is the wanted one.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub overall: f64,
    /// Per wanted class: the fraction predicted correctly; NaN for a class with no examples (written as
    /// `null` in JSON, read back as NaN).
    #[serde(deserialize_with = "json::numbers")]
    pub per_class: Vec<f64>,
    /// Per wanted class: the number of examples.
    pub counts: Vec<usize>,
}

/// Accuracy of `predicted` against `wanted` (same length, at least one, labels below `num_classes`), overall
/// and per wanted class.
pub fn class_accuracy(
    predicted: &[u32],
    wanted: &[u32],
    num_classes: usize,
) -> Result<ClassAccuracy> {
    if predicted.len() != wanted.len() {
        return Err(Error::invalid(
            "class labels",
            format!(
                "{} predicted labels but {} wanted labels",
                predicted.len(),
                wanted.len()
            ),
        ));
    }
    if predicted.is_empty() {
        return Err(Error::invalid("class labels", "no examples"));
    }
    if num_classes == 0 {
        return Err(Error::invalid(
            "number of classes",
            "must be at least 1, got 0",
        ));
    }
    for (what, labels) in [("predicted", predicted), ("wanted", wanted)] {
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= num_classes) {
            return Err(Error::invalid(
                "class labels",
                format!("{what} label {l} is not below the number of classes {num_classes}"),
            ));
        }
    }
    let mut counts = vec![0usize; num_classes];
    let mut correct = vec![0usize; num_classes];
    for (&p, &w) in predicted.iter().zip(wanted) {
        counts[w as usize] += 1;
        if p == w {
            correct[w as usize] += 1;
        }
    }
    let total_correct: usize = correct.iter().sum();
    Ok(ClassAccuracy {
        overall: total_correct as f64 / predicted.len() as f64,
        per_class: correct
            .iter()
            .zip(&counts)
            .map(|(&c, &n)| if n > 0 { c as f64 / n as f64 } else { f64::NAN })
            .collect(),
        counts,
    })
}

/// The fraction of `predicted` labels in each of `num_classes` classes: the class histogram of samples under a
/// classifier (a collapsed generator shows as classes near 0). Sums to 1; a label not below `num_classes` or no
/// labels is an error.
pub fn class_histogram(predicted: &[u32], num_classes: usize) -> Result<Vec<f64>> {
    if predicted.is_empty() || num_classes == 0 {
        return Err(Error::invalid(
            "class labels",
            format!(
                "{} labels of {num_classes} classes: need at least one of each",
                predicted.len()
            ),
        ));
    }
    let mut counts = vec![0usize; num_classes];
    for &p in predicted {
        match counts.get_mut(p as usize) {
            Some(c) => *c += 1,
            None => {
                return Err(Error::invalid(
                    "class labels",
                    format!("label {p} is not below the number of classes {num_classes}"),
                ))
            }
        }
    }
    Ok(counts
        .iter()
        .map(|&c| c as f64 / predicted.len() as f64)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_histogram_counts_fractions() -> Result<()> {
        let h = class_histogram(&[0, 2, 2, 2, 1, 2, 0, 2], 4)?;
        assert_eq!(h, [0.25, 0.125, 0.625, 0.0]);
        assert!((h.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(class_histogram(&[0, 4], 4).is_err());
        assert!(class_histogram(&[], 4).is_err());
        Ok(())
    }

    /// n points of N(mean, diag(var)) in `mean.len()` dimensions.
    fn gaussian(n: usize, mean: &[f64], var: &[f64], rng: &mut Rng) -> Vec<f32> {
        let mut v = Vec::with_capacity(n * mean.len());
        for _ in 0..n {
            for (m, s2) in mean.iter().zip(var) {
                v.push((m + s2.sqrt() * rng.normal() as f64) as f32);
            }
        }
        v
    }

    fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    }

    #[test]
    fn fid_of_a_set_with_itself_is_zero() -> Result<()> {
        let mut rng = Rng::new(1);
        let dim = 64;
        let mean: Vec<f64> = (0..dim).map(|i| i as f64 * 0.3).collect();
        let var: Vec<f64> = (0..dim).map(|i| 0.1 + i as f64 / 16.0).collect();
        let x = gaussian(1000, &mean, &var, &mut rng);
        let s = FeatureStats::from_features(&x, dim)?;
        let tr: f64 = (0..dim).map(|i| s.cov[i * dim + i]).sum();
        let f = fid(&x, &x, dim)?;
        assert!((0.0..1e-6 * tr).contains(&f), "FID(x, x) = {f}, trace {tr}");
        // A rank-deficient covariance (fewer points than dimensions): √ of the tiny eigenvalues costs accuracy.
        let few = &x[..40 * dim];
        let s = FeatureStats::from_features(few, dim)?;
        let tr: f64 = (0..dim).map(|i| s.cov[i * dim + i]).sum();
        let f = fid(few, few, dim)?;
        assert!(
            (0.0..1e-4 * tr).contains(&f),
            "singular FID(x, x) = {f}, trace {tr}"
        );
        Ok(())
    }

    #[test]
    fn fid_matches_closed_form_of_the_true_gaussians() -> Result<()> {
        // N(0, I) vs N((1, 0.5, 0, 0), diag(4, 1, 0.25, 2)):
        // d² = 1 + 0.25 + (1 − 2)² + 0 + (1 − 0.5)² + (1 − √2)² = 2.5 + (1 − √2)² ≈ 2.6716.
        let mut rng = Rng::new(2);
        let n = 40_000;
        let x = gaussian(n, &[0.0; 4], &[1.0; 4], &mut rng);
        let y = gaussian(n, &[1.0, 0.5, 0.0, 0.0], &[4.0, 1.0, 0.25, 2.0], &mut rng);
        let want = 2.5 + (1.0 - 2f64.sqrt()).powi(2);
        let f = fid(&x, &y, 4)?;
        // Sampling error: ‖Δμ̂‖² alone has sd ≈ 2 √(Δμᵀ(Σ₁+Σ₂)Δμ / n) ≈ 0.023; bias ≈ Tr(Σ₁+Σ₂)/n ≈ 2e-4.
        assert!((f - want).abs() < 0.1, "FID {f} vs closed form {want}");
        Ok(())
    }

    #[test]
    fn fid_grows_with_mean_shift_and_rejects_mismatched_stats() -> Result<()> {
        let mut rng = Rng::new(3);
        let dim = 8;
        let x = gaussian(2000, &[0.0; 8], &[1.0; 8], &mut rng);
        let base =
            FeatureStats::from_features(&gaussian(2000, &[0.0; 8], &[1.0; 8], &mut rng), dim)?;
        let mut last = -1.0;
        for shift in [0.0, 0.5, 1.0, 2.0] {
            let y: Vec<f32> = x.iter().map(|v| v + shift).collect();
            let f = fid_from_stats(&base, &FeatureStats::from_features(&y, dim)?)?;
            assert!(f > last, "shift {shift}: {f} after {last}");
            last = f;
        }
        // shift 2 in all 8 dims: ‖Δμ‖² = 32
        assert!((last - 32.0).abs() < 1.5, "{last}");
        let other = FeatureStats::from_features(&x[..2000 * 4], 4)?;
        let e = fid_from_stats(&base, &other).unwrap_err().to_string();
        assert!(
            e.contains("feature sets have different dimensions: 8 vs 4"),
            "{e}"
        );
        assert!(fid(&x, &x[..7], dim).is_err());
        Ok(())
    }

    #[test]
    fn kid_same_distribution_small_and_shifted_large() -> Result<()> {
        let mut rng = Rng::new(4);
        let dim = 16;
        let x = gaussian(1000, &[0.0; 16], &[1.0; 16], &mut rng);
        let y = gaussian(1000, &[0.0; 16], &[1.0; 16], &mut rng);
        let z: Vec<f32> = gaussian(1000, &[0.0; 16], &[1.0; 16], &mut rng)
            .iter()
            .map(|v| v + 0.5)
            .collect();
        let same = kid(&x, &y, dim, 50, 200, 7)?;
        let shifted = kid(&x, &z, dim, 50, 200, 7)?;
        assert_eq!(same.subset_size, 200);
        assert!(same.mean.abs() < 3.0 * same.std, "{same:?}");
        // standard error of the mean over 50 subsets is std / √50; a real difference stands far above it
        assert!(
            shifted.mean > 10.0 * shifted.std / 50f64.sqrt(),
            "{shifted:?}"
        );
        assert!(
            shifted.mean > 20.0 * same.mean.abs(),
            "{shifted:?} vs {same:?}"
        );
        // subset size is capped by the smaller set
        assert_eq!(kid(&x, &y[..50 * dim], dim, 2, 1000, 1)?.subset_size, 50);
        assert!(kid(&x, &y, dim, 0, 100, 1).is_err());
        assert!(kid(&x, &y[..dim * 3 + 1], dim, 1, 100, 1).is_err());
        Ok(())
    }

    #[test]
    fn kid_is_unbiased() -> Result<()> {
        // 300 independent pairs of small samples from the same distribution; one subset each uses all points,
        // so each estimate is the U-statistic, whose expectation is exactly 0. (The biased V-statistic would
        // average about (2/m)(E k(x,x) − E k(x,x')) ≈ 0.3 here, many standard errors away.)
        let (dim, m, trials) = (4, 40, 300);
        let mut rng = Rng::new(5);
        let est: Vec<f64> = (0..trials)
            .map(|t| {
                let x = gaussian(m, &[0.0; 4], &[1.0; 4], &mut rng);
                let y = gaussian(m, &[0.0; 4], &[1.0; 4], &mut rng);
                kid(&x, &y, dim, 1, m, t).map(|k| k.mean)
            })
            .collect::<Result<_>>()?;
        let (mean, sd) = mean_std(&est, 1);
        let se = sd / (trials as f64).sqrt();
        assert!(mean.abs() < 3.0 * se, "mean {mean}, standard error {se}");
        Ok(())
    }

    #[test]
    fn kid_is_deterministic_across_thread_counts() -> Result<()> {
        let mut rng = Rng::new(6);
        let x = gaussian(300, &[0.0; 24], &[1.0; 24], &mut rng);
        let y = gaussian(250, &[0.1; 24], &[1.0; 24], &mut rng);
        let a = in_pool(1, || kid(&x, &y, 24, 7, 100, 3))?;
        let b = in_pool(3, || kid(&x, &y, 24, 7, 100, 3))?;
        assert_eq!(a.mean.to_bits(), b.mean.to_bits());
        assert_eq!(a.std.to_bits(), b.std.to_bits());
        let c = kid(&x, &y, 24, 7, 100, 4)?;
        assert_ne!(a.mean, c.mean);
        Ok(())
    }

    #[test]
    fn precision_recall_identical_disjoint_and_half_covered() -> Result<()> {
        let mut rng = Rng::new(7);
        let dim = 8;
        let real = gaussian(500, &[0.0; 8], &[1.0; 8], &mut rng);
        let pr = precision_recall(&real, &real, dim, 3)?;
        assert_eq!((pr.precision, pr.recall), (1.0, 1.0));
        let far: Vec<f32> = real.iter().map(|v| v + 100.0).collect();
        let pr = precision_recall(&real, &far, dim, 3)?;
        assert_eq!((pr.precision, pr.recall), (0.0, 0.0));
        // Real: two well-separated, equally large clusters; fake: fresh samples of only the first one. The far
        // cluster changes no radius inside the first, so precision is what it is against the first cluster
        // alone (p₀, near 1) and recall is half of that case's (r₀ / 2): the second cluster is never covered.
        let (dim, k) = (4, 5);
        let c1 = gaussian(400, &[0.0; 4], &[1.0; 4], &mut rng);
        let mut two = c1.clone();
        two.extend(gaussian(400, &[50.0; 4], &[1.0; 4], &mut rng));
        let half = gaussian(400, &[0.0; 4], &[1.0; 4], &mut rng);
        let one = precision_recall(&c1, &half, dim, k)?;
        assert!(one.precision > 0.9 && one.recall > 0.9, "{one:?}");
        let pr = precision_recall(&two, &half, dim, k)?;
        assert!(
            (pr.precision - one.precision).abs() < 0.01,
            "{pr:?} vs {one:?}"
        );
        assert!(
            (pr.recall - one.recall / 2.0).abs() < 0.01,
            "{pr:?} vs {one:?}"
        );
        assert_eq!((pr.n_real, pr.n_fake, pr.k), (800, 400, 5));
        Ok(())
    }

    #[test]
    fn precision_recall_hand_example_and_errors() -> Result<()> {
        // 1-D, k = 1. Real {0, 1, 10}: radii 1, 1, 9. Fake {0.5, 20, 21}: radii 19.5, 1, 1.
        // Fake 0.5 is within 1 of real 0 → inside; 20 is 10 from real 10 (> 9) → outside; 21 → outside.
        // precision = 1/3. Real 0 and 1 are within 19.5 of fake 0.5; real 10 is 9.5 from 0.5 → covered too.
        // recall = 3/3.
        let pr = precision_recall(&[0.0, 1.0, 10.0], &[0.5, 20.0, 21.0], 1, 1)?;
        assert_eq!(pr.precision, 1.0 / 3.0);
        assert_eq!(pr.recall, 1.0);
        assert!(precision_recall(&[0.0, 1.0], &[0.0, 1.0], 1, 2).is_err()); // k ≥ n
        assert!(precision_recall(&[0.0, 1.0, 2.0], &[0.0, 1.0, 2.0], 1, 0).is_err());
        Ok(())
    }

    #[test]
    fn knn_radii_match_brute_force_across_tiles() -> Result<()> {
        // 600 points (three tiles of 256 rows, the last partial), some duplicated; k = 4.
        let mut rng = Rng::new(9);
        let dim = 6;
        let mut x = gaussian(590, &[3.0; 6], &[2.0; 6], &mut rng);
        let dup: Vec<f32> = x[..10 * dim].to_vec();
        x.extend(dup);
        let n = x.len() / dim;
        let pts = centred_points(&[&x], dim);
        let k = 4;
        let radii = knn_sq_radii(&pts[0], k);
        for i in 0..n {
            let mut d: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    (0..dim)
                        .map(|c| (x[i * dim + c] as f64 - x[j * dim + c] as f64).powi(2))
                        .sum()
                })
                .collect();
            d.sort_by(|a, b| a.total_cmp(b));
            assert!(
                (radii[i] - d[k - 1]).abs() < 1e-4 * (1.0 + d[k - 1]),
                "{i}: {} vs {}",
                radii[i],
                d[k - 1]
            );
        }
        Ok(())
    }

    #[test]
    fn precision_recall_is_deterministic_across_thread_counts() -> Result<()> {
        let mut rng = Rng::new(8);
        let real = gaussian(700, &[0.0; 10], &[1.0; 10], &mut rng);
        let fake = gaussian(650, &[0.3; 10], &[1.5; 10], &mut rng);
        let a = in_pool(1, || precision_recall(&real, &fake, 10, 3))?;
        let b = in_pool(3, || precision_recall(&real, &fake, 10, 3))?;
        assert_eq!((a.precision, a.recall), (b.precision, b.recall));
        assert!(
            a.precision < 1.0 && a.recall < 1.0 && a.precision > 0.3 && a.recall > 0.3,
            "{a:?}"
        );
        Ok(())
    }

    #[test]
    fn inception_score_extremes_and_hand_example() -> Result<()> {
        // 100 confident one-hot predictions cycling through 10 classes: every split of 20 holds two of each
        // class, p(y) is uniform and KL = log 10 for every row → IS = 10.
        let (c, n) = (10, 100);
        let mut probs = vec![0.0f32; n * c];
        for i in 0..n {
            probs[i * c + i % c] = 1.0;
        }
        let is = inception_score(&probs, c, 5)?;
        assert!((is.mean - 10.0).abs() < 1e-9 && is.std < 1e-9, "{is:?}");
        // identical predictions: p(y|x) = p(y) → KL = 0 → IS = 1
        let same: Vec<f32> = (0..n).flat_map(|_| [0.2f32, 0.5, 0.3]).collect();
        let is = inception_score(&same, 3, 4)?;
        assert!((is.mean - 1.0).abs() < 1e-6, "{is:?}");
        // rows (0.9, 0.1), (0.1, 0.9): p(y) = (0.5, 0.5); KL per row = 0.9 ln 1.8 + 0.1 ln 0.2
        let is = inception_score(&[0.9, 0.1, 0.1, 0.9], 2, 1)?;
        let want = (0.9f64 * 1.8f64.ln() + 0.1 * 0.2f64.ln()).exp();
        assert!((is.mean - want).abs() < 1e-6, "{} vs {want}", is.mean);
        assert!(inception_score(&[0.5, 0.6], 2, 1).is_err()); // does not sum to 1
        assert!(inception_score(&[1.5, -0.5], 2, 1).is_err()); // negative
        assert!(inception_score(&[0.5, 0.5], 2, 2).is_err()); // more splits than rows
        Ok(())
    }

    #[test]
    fn class_accuracy_hand_example() -> Result<()> {
        // wanted:    0 0 1 1 1 2
        // predicted: 0 1 1 1 0 2  → class 0: 1/2, class 1: 2/3, class 2: 1/1, class 3: none (NaN); overall 4/6
        let a = class_accuracy(&[0, 1, 1, 1, 0, 2], &[0, 0, 1, 1, 1, 2], 4)?;
        assert_eq!(a.overall, 4.0 / 6.0);
        assert_eq!(a.per_class[..3], [0.5, 2.0 / 3.0, 1.0]);
        assert!(a.per_class[3].is_nan());
        assert_eq!(a.counts, vec![2, 3, 1, 0]);
        assert!(class_accuracy(&[0, 1], &[0], 2).is_err());
        assert!(class_accuracy(&[0, 5], &[0, 1], 2).is_err());
        assert!(class_accuracy(&[], &[], 2).is_err());
        Ok(())
    }
}
