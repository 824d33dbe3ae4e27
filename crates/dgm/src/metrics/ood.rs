//! Out-of-distribution (anomaly) detection from per-example scores where HIGHER means more anomalous
//! (typically the negative log-likelihood −log p(x) of a trained model): threshold-free detection metrics
//! ([`auroc`], [`aupr`]) and the typicality test.
//!
//! **Why likelihood alone fails.** Nalisnick, Matsukawa, Teh, Görür & Lakshminarayanan (2019, "Do deep
//! generative models know what they don't know?", ICLR) showed that flows, VAEs and autoregressive models
//! trained on one image data set often give *higher* likelihood to another one (trained on CIFAR-10, they score
//! SVHN as more likely; trained on FashionMNIST, MNIST). Thresholding −log p(x) then flags the wrong inputs:
//! the AUROC of the NLL can fall well below 0.5. The density is dominated by low-level statistics (smooth,
//! low-variance images are easy to predict pixel by pixel), and, more fundamentally, in high dimension the
//! region of highest density is not where samples lie: for x ~ N(0, I_d), the density peaks at 0 but samples
//! concentrate on the shell ‖x‖ ≈ √d. A point far *more* likely than typical samples is itself atypical.
//!
//! **Why the typicality test helps.** Nalisnick, Matsukawa, Teh & Lakshminarayanan (2019, "Detecting
//! out-of-distribution inputs to deep generative models using typicality", arXiv:1906.02994) test whether a
//! batch of M inputs lies in the model's typical set A_ε = {x₁..x_M : |−(1/M) Σ log p(x_m) − H| ≤ ε}, where the
//! entropy H is estimated by the mean NLL of the training data. The statistic |mean NLL − Ĥ| is two-sided, so a
//! batch whose likelihood is *too high* is flagged as well as one whose likelihood is too low. ε is calibrated
//! by bootstrap: the (1 − α) quantile of the statistic over batches resampled from held-out in-distribution
//! data, so in-distribution batches are rejected at rate ≈ α. (The test works on batches; with M = 1 it is
//! just a two-sided likelihood threshold.)

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::{Error, Result};

/// Checks that a score set is non-empty and free of NaN (±∞ are allowed: a score of +∞ is "impossible under
/// the model").
fn check_scores(what: &str, s: &[f64]) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(what, "no scores"));
    }
    if let Some(i) = s.iter().position(|v| v.is_nan()) {
        return Err(Error::invalid(what, format!("score {i} is NaN")));
    }
    Ok(())
}

/// Groups of tied scores in the pooled sample, ascending by score: `(number of in-distribution scores,
/// number of OOD scores)` per distinct value.
fn tie_groups(in_scores: &[f64], out_scores: &[f64]) -> Vec<(usize, usize)> {
    let mut pooled: Vec<(f64, bool)> = in_scores
        .iter()
        .map(|&s| (s, false))
        .chain(out_scores.iter().map(|&s| (s, true)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut groups = Vec::new();
    let mut i = 0;
    while i < pooled.len() {
        let v = pooled[i].0;
        let (mut a_in, mut a_out) = (0, 0);
        // `==` also merges −0.0 and +0.0, which `total_cmp` keeps adjacent.
        while i < pooled.len() && pooled[i].0 == v {
            if pooled[i].1 {
                a_out += 1;
            } else {
                a_in += 1;
            }
            i += 1;
        }
        groups.push((a_in, a_out));
    }
    groups
}

/// Area under the ROC curve for separating OOD (`out_scores`) from in-distribution (`in_scores`) examples by
/// their score (higher = more anomalous): P(s_out > s_in) + ½ P(s_out = s_in) for a random pair, i.e. the
/// Mann–Whitney U statistic / (n_in · n_out), computed from the sorted pooled scores in O(n log n) with exact
/// integer counts. 1 = perfect, 0.5 = chance, 0 = perfectly reversed. Errors on an empty set or a NaN score.
pub fn auroc(in_scores: &[f64], out_scores: &[f64]) -> Result<f64> {
    check_scores("in-distribution scores", in_scores)?;
    check_scores("out-of-distribution scores", out_scores)?;
    // Twice U: each OOD score counts 2 per in-distribution score below it and 1 per tie.
    let mut twice_u: u128 = 0;
    let mut in_below: u128 = 0;
    for (a_in, a_out) in tie_groups(in_scores, out_scores) {
        twice_u += a_out as u128 * (2 * in_below + a_in as u128);
        in_below += a_in as u128;
    }
    Ok(twice_u as f64 / (2.0 * in_scores.len() as f64 * out_scores.len() as f64))
}

/// Area under the precision–recall curve with OOD as the positive class (average precision): scores are
/// thresholded from the highest down, and AP = Σ_t (R_t − R_{t−1}) · P_t over the distinct score values t, where
/// P_t and R_t are the precision and recall when every example scoring ≥ t is flagged. Tied scores enter
/// together at one threshold (no interpolation; the convention of scikit-learn's `average_precision_score`), so
/// a tie between positives and negatives is charged the precision of the whole tied group. Perfect separation
/// gives 1; uninformative scores give about n_out / (n_in + n_out).
pub fn aupr(in_scores: &[f64], out_scores: &[f64]) -> Result<f64> {
    check_scores("in-distribution scores", in_scores)?;
    check_scores("out-of-distribution scores", out_scores)?;
    let n_out = out_scores.len() as f64;
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut ap = 0.0f64;
    for (a_in, a_out) in tie_groups(in_scores, out_scores).into_iter().rev() {
        tp += a_out;
        fp += a_in;
        if a_out > 0 {
            ap += (a_out as f64 / n_out) * (tp as f64 / (tp + fp) as f64);
        }
    }
    Ok(ap)
}

/// A fitted typicality test (Nalisnick, Matsukawa, Teh & Lakshminarayanan 2019).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TypicalSet {
    /// Entropy estimate Ĥ: the mean NLL of the training data.
    pub entropy: f64,
    /// Rejection threshold ε on |mean batch NLL − Ĥ|.
    pub epsilon: f64,
    /// The batch size ε was calibrated for.
    pub batch_size: usize,
    /// Target false-positive rate for in-distribution batches.
    pub alpha: f64,
    /// Number of bootstrap batches used to calibrate ε.
    pub bootstrap: usize,
}

/// Fits the typicality test: Ĥ = mean of `train_nll`; ε = the (1 − `alpha`) quantile of |mean NLL − Ĥ| over
/// `bootstrap` batches of `batch_size` NLLs drawn with replacement from `heldout_nll` (held-out
/// in-distribution data, so that ε reflects the spread of unseen in-distribution batches, not of the data the
/// model was fitted to). The quantile is the ⌈(1 − α) · B⌉-th smallest of the B bootstrap statistics, so at
/// most a fraction α of them exceed ε. Seeded; NLLs must be finite.
pub fn fit_typical_set(
    train_nll: &[f64],
    heldout_nll: &[f64],
    batch_size: usize,
    alpha: f64,
    bootstrap: usize,
    seed: u64,
) -> Result<TypicalSet> {
    for (what, v) in [("training NLL", train_nll), ("held-out NLL", heldout_nll)] {
        if v.is_empty() {
            return Err(Error::invalid(what, "no values"));
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(
                what,
                format!("value {i} ({}) is not finite", v[i]),
            ));
        }
    }
    if batch_size == 0 {
        return Err(Error::invalid(
            "typicality batch size",
            "must be at least 1, got 0",
        ));
    }
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(Error::invalid(
            "typicality alpha",
            format!("must be strictly between 0 and 1, got {alpha}"),
        ));
    }
    let min_bootstrap = (1.0 / alpha).ceil() as usize;
    if bootstrap < min_bootstrap {
        return Err(Error::invalid(
            "typicality bootstrap",
            format!("needs at least 1/alpha = {min_bootstrap} resamples for alpha {alpha}, got {bootstrap}"),
        ));
    }
    let entropy = train_nll.iter().sum::<f64>() / train_nll.len() as f64;
    let mut rng = Rng::named(seed, "metrics/ood/typicality");
    let mut stats: Vec<f64> = (0..bootstrap)
        .map(|_| {
            let s: f64 = (0..batch_size)
                .map(|_| heldout_nll[rng.below(heldout_nll.len())])
                .sum();
            (s / batch_size as f64 - entropy).abs()
        })
        .collect();
    let rank = (((1.0 - alpha) * bootstrap as f64).ceil() as usize).clamp(1, bootstrap);
    let epsilon = *stats
        .select_nth_unstable_by(rank - 1, |a, b| a.total_cmp(b))
        .1;
    Ok(TypicalSet {
        entropy,
        epsilon,
        batch_size,
        alpha,
        bootstrap,
    })
}

impl TypicalSet {
    /// The typicality statistic |mean(`batch_nll`) − Ĥ| (NaN for an empty batch). ε is calibrated for batches
    /// of `batch_size`; other sizes are accepted but then the false-positive rate is not α.
    pub fn statistic(&self, batch_nll: &[f64]) -> f64 {
        if batch_nll.is_empty() {
            return f64::NAN;
        }
        (batch_nll.iter().sum::<f64>() / batch_nll.len() as f64 - self.entropy).abs()
    }

    /// True when the batch lies outside the typical set: statistic > ε (in either direction: mean NLL too
    /// high *or too low*). An empty batch or one containing NaN is not flagged (its statistic is NaN).
    pub fn is_atypical(&self, batch_nll: &[f64]) -> bool {
        self.statistic(batch_nll) > self.epsilon
    }
}

/// The typicality statistic of consecutive non-overlapping batches of `set.batch_size` NLLs (the incomplete
/// last batch is dropped), e.g. to compute the [`auroc`] of in-distribution batches against OOD batches.
pub fn batch_statistics(set: &TypicalSet, nll: &[f64]) -> Vec<f64> {
    if set.batch_size == 0 {
        return Vec::new();
    }
    nll.chunks_exact(set.batch_size)
        .map(|b| set.statistic(b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(n: usize, mu: f64, sigma: f64, rng: &mut Rng) -> Vec<f64> {
        (0..n).map(|_| mu + sigma * rng.normal() as f64).collect()
    }

    #[test]
    fn auroc_hand_example_with_ties() -> Result<()> {
        // in = {0.1, 0.4, 0.35, 0.8}, out = {0.4, 0.9, 0.35, 0.2}. For each OOD score, count in-scores below
        // it plus ½ per tie: 0.4 → 2 (0.1, 0.35) + ½ (0.4) = 2.5; 0.9 → 4; 0.35 → 1 + ½ = 1.5; 0.2 → 1.
        // U = 9, AUROC = 9 / 16 = 0.5625.
        let a = auroc(&[0.1, 0.4, 0.35, 0.8], &[0.4, 0.9, 0.35, 0.2])?;
        assert_eq!(a, 0.5625);
        Ok(())
    }

    #[test]
    fn auroc_extremes_and_errors() -> Result<()> {
        assert_eq!(auroc(&[1.0, 2.0, 3.0], &[4.0, 5.0])?, 1.0);
        assert_eq!(auroc(&[4.0, 5.0], &[1.0, 2.0, 3.0])?, 0.0);
        assert_eq!(auroc(&[2.0, 2.0, 2.0], &[2.0, 2.0])?, 0.5);
        // the same sample on both sides: every pair is equally likely either way
        let s = [0.3, -1.0, 7.0, 0.3, 2.0];
        assert_eq!(auroc(&s, &s)?, 0.5);
        // −0 and +0 tie; +∞ is allowed
        assert_eq!(auroc(&[-0.0], &[0.0])?, 0.5);
        assert_eq!(auroc(&[1.0], &[f64::INFINITY])?, 1.0);
        assert!(auroc(&[], &[1.0]).is_err());
        assert!(auroc(&[1.0], &[f64::NAN]).is_err());
        Ok(())
    }

    #[test]
    fn aupr_hand_example_and_extremes() -> Result<()> {
        // Same scores as the AUROC example. Thresholds from the top (in = negative, out = positive, 4 each):
        // 0.9 {out}: TP 1 FP 0, ΔR ¼, P 1 → ¼; 0.8 {in}: ΔR 0; 0.4 {in, out}: TP 2 FP 2, ΔR ¼, P ½ → ⅛;
        // 0.35 {in, out}: TP 3 FP 3, ΔR ¼, P ½ → ⅛; 0.2 {out}: TP 4 FP 3, ΔR ¼, P 4/7 → 1/7; 0.1 {in}: ΔR 0.
        // AP = ½ + 1/7.
        let ap = aupr(&[0.1, 0.4, 0.35, 0.8], &[0.4, 0.9, 0.35, 0.2])?;
        assert!((ap - (0.5 + 1.0 / 7.0)).abs() < 1e-15, "{ap}");
        assert_eq!(aupr(&[1.0, 2.0, 3.0], &[4.0, 5.0])?, 1.0);
        // all tied: one threshold, precision = base rate 2/5
        assert!((aupr(&[2.0; 3], &[2.0; 2])? - 0.4).abs() < 1e-15);
        // reversed: out ranks 4th and 5th of 5 → P = 1/4 then 2/5, each ΔR ½
        assert!((aupr(&[4.0, 5.0, 6.0], &[1.0, 2.0])? - (0.5 * 0.25 + 0.5 * 0.4)).abs() < 1e-15);
        assert!(aupr(&[1.0], &[]).is_err());
        Ok(())
    }

    #[test]
    fn typicality_flags_shifted_and_too_likely_batches() -> Result<()> {
        // NLL ~ N(100, 5²) in distribution; batches of 16: the statistic is |N(0, (5/4)²)| (plus the small
        // error of Ĥ), whose 0.95 quantile is 1.96 · 5/4 = 2.45.
        let mut rng = Rng::new(1);
        let (mu, sigma, m, alpha) = (100.0, 5.0, 16, 0.05);
        let train = normal(20_000, mu, sigma, &mut rng);
        let heldout = normal(5_000, mu, sigma, &mut rng);
        let ts = fit_typical_set(&train, &heldout, m, alpha, 2000, 7)?;
        assert!((ts.entropy - mu).abs() < 0.2, "{ts:?}");
        let want_eps = 1.959964 * sigma / (m as f64).sqrt();
        assert!(
            (ts.epsilon - want_eps).abs() < 0.1 * want_eps,
            "{ts:?} vs {want_eps}"
        );
        // 200 fresh in-distribution batches: rejection rate near α (expected 10; allow up to 2α = 20).
        let test = normal(200 * m, mu, sigma, &mut rng);
        let stats = batch_statistics(&ts, &test);
        assert_eq!(stats.len(), 200);
        let rejected = test.chunks_exact(m).filter(|b| ts.is_atypical(b)).count();
        assert!(
            rejected <= 20,
            "{rejected} of 200 in-distribution batches rejected"
        );
        assert!(rejected >= 1, "{rejected}: the threshold is far too loose");
        // a shifted batch (less likely) and a too-likely batch (mean NLL 2σ below Ĥ, low variance: the
        // "SVHN under a CIFAR model" case) are both atypical
        assert!(ts.is_atypical(&normal(m, mu + 2.0 * sigma, sigma, &mut rng)));
        assert!(ts.is_atypical(&normal(m, mu - 2.0 * sigma, 0.2 * sigma, &mut rng)));
        // A plain likelihood threshold at the in-distribution 95th NLL percentile misses the too-likely batch.
        let too_likely = normal(m, mu - 2.0 * sigma, 0.2 * sigma, &mut rng);
        assert!(too_likely.iter().all(|&x| x < mu + 1.645 * sigma));
        assert!(ts.is_atypical(&too_likely));
        // batch statistics separate OOD batches from in-distribution ones
        let ood = normal(200 * m, mu - 2.0 * sigma, sigma, &mut rng);
        let a = auroc(&stats, &batch_statistics(&ts, &ood))?;
        assert!(a > 0.99, "{a}");
        Ok(())
    }

    #[test]
    fn typicality_bad_input_and_edge_cases() -> Result<()> {
        let v = [1.0, 2.0, 3.0];
        assert!(fit_typical_set(&v, &v, 0, 0.05, 100, 0).is_err());
        assert!(fit_typical_set(&v, &v, 2, 1.0, 100, 0).is_err());
        assert!(fit_typical_set(&v, &v, 2, 0.05, 10, 0).is_err()); // fewer than 1/α resamples
        assert!(fit_typical_set(&[], &v, 2, 0.05, 100, 0).is_err());
        assert!(fit_typical_set(&v, &[f64::NAN], 2, 0.05, 100, 0).is_err());
        let ts = fit_typical_set(&v, &v, 2, 0.05, 100, 0)?;
        assert_eq!(ts.entropy, 2.0);
        assert!(ts.statistic(&[]).is_nan());
        assert!(!ts.is_atypical(&[]));
        // 5 values in batches of 2: two full batches, the last value dropped
        assert_eq!(
            batch_statistics(&ts, &[2.0, 4.0, 1.0, 1.0, 9.0]),
            vec![1.0, 1.0]
        );
        // same seed, same threshold
        assert_eq!(
            fit_typical_set(&v, &v, 2, 0.05, 100, 0)?.epsilon,
            ts.epsilon
        );
        Ok(())
    }
}
