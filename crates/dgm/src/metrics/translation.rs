//! Scores of generated text against references (translation): corpus BLEU and chrF, on a 0–100 scale.
//!
//! **BLEU** (Papineni et al. 2002), corpus-level, one reference per sentence, tokens split on whitespace:
//! p_n = Σ_sentences Σ_g min(count_hyp(g), count_ref(g)) / Σ_sentences (n-grams of the hypothesis) for
//! n = 1 … 4, brevity penalty BP = 1 if c > r else exp(1 − r/c) (c, r: total hypothesis and reference tokens),
//! BLEU = 100 · BP · exp(¼ Σ_n ln p_n). No smoothing: a corpus with no matching n-gram of some order (or no
//! hypothesis n-gram of that order) scores 0, as unsmoothed corpus BLEU does.
//!
//! **chrF** (Popović 2015): character n-grams, n = 1 … 6, of the sentences with whitespace removed; matches
//! (clipped counts), hypothesis and reference n-gram totals summed over the corpus per order; the precision and
//! recall averaged over the orders both sides have n-grams of; chrF = 100 · (1 + β²)·P·R / (β²·P + R), β = 2
//! (recall weighs twice as much as precision).

use std::collections::HashMap;
use std::hash::Hash;

use crate::{Error, Result};

/// The largest n-gram order of BLEU.
pub const BLEU_ORDER: usize = 4;
/// The largest character n-gram order of chrF.
pub const CHRF_ORDER: usize = 6;
/// chrF's β.
pub const CHRF_BETA: f64 = 2.0;

/// Corpus BLEU with its parts.
#[derive(Clone, Debug, PartialEq)]
pub struct Bleu {
    /// BLEU, 0–100.
    pub score: f64,
    /// The modified n-gram precisions p_1 … p_4.
    pub precisions: [f64; BLEU_ORDER],
    /// The brevity penalty.
    pub brevity_penalty: f64,
    /// Hypothesis and reference lengths in tokens.
    pub lengths: (usize, usize),
}

/// The n-grams of `items` with their counts.
fn ngrams<T: Hash + Eq + Clone>(items: &[T], n: usize) -> HashMap<&[T], usize> {
    let mut m = HashMap::new();
    if n > 0 && items.len() >= n {
        for g in items.windows(n) {
            *m.entry(g).or_insert(0) += 1;
        }
    }
    m
}

/// Clipped matches and the hypothesis and reference n-gram totals of one pair at order `n`.
fn counts<T: Hash + Eq + Clone>(hyp: &[T], reference: &[T], n: usize) -> (usize, usize, usize) {
    let (h, r) = (ngrams(hyp, n), ngrams(reference, n));
    let matches = h
        .iter()
        .map(|(g, &c)| c.min(r.get(g).copied().unwrap_or(0)))
        .sum();
    (
        matches,
        hyp.len().saturating_sub(n - 1),
        reference.len().saturating_sub(n - 1),
    )
}

fn check_pairs(hyps: &[&str], refs: &[&str]) -> Result<()> {
    if hyps.len() != refs.len() {
        return Err(Error::invalid(
            "references",
            format!(
                "{} hypotheses for {} references; give one reference per hypothesis",
                hyps.len(),
                refs.len()
            ),
        ));
    }
    if hyps.is_empty() {
        return Err(Error::invalid("hypotheses", "nothing to score"));
    }
    Ok(())
}

/// Corpus BLEU of `hyps` against `refs` (one reference each; see the module docs).
pub fn bleu(hyps: &[&str], refs: &[&str]) -> Result<Bleu> {
    check_pairs(hyps, refs)?;
    let mut matches = [0usize; BLEU_ORDER];
    let mut totals = [0usize; BLEU_ORDER];
    let (mut c, mut r) = (0, 0);
    for (h, rf) in hyps.iter().zip(refs) {
        let h: Vec<&str> = h.split_whitespace().collect();
        let rf: Vec<&str> = rf.split_whitespace().collect();
        c += h.len();
        r += rf.len();
        for n in 1..=BLEU_ORDER {
            let (m, th, _) = counts(&h, &rf, n);
            matches[n - 1] += m;
            totals[n - 1] += th;
        }
    }
    let mut precisions = [0.0; BLEU_ORDER];
    for n in 0..BLEU_ORDER {
        precisions[n] = if totals[n] == 0 {
            0.0
        } else {
            matches[n] as f64 / totals[n] as f64
        };
    }
    let brevity_penalty = if c == 0 {
        0.0
    } else if c > r {
        1.0
    } else {
        (1.0 - r as f64 / c as f64).exp()
    };
    let score = if precisions.contains(&0.0) {
        0.0
    } else {
        let mean_log = precisions.iter().map(|p| p.ln()).sum::<f64>() / BLEU_ORDER as f64;
        100.0 * brevity_penalty * mean_log.exp()
    };
    Ok(Bleu {
        score,
        precisions,
        brevity_penalty,
        lengths: (c, r),
    })
}

/// Corpus chrF (β = 2) of `hyps` against `refs` (one reference each; see the module docs), 0–100.
pub fn chrf(hyps: &[&str], refs: &[&str]) -> Result<f64> {
    check_pairs(hyps, refs)?;
    let mut sums = [(0usize, 0usize, 0usize); CHRF_ORDER];
    for (h, rf) in hyps.iter().zip(refs) {
        let h: Vec<char> = h.chars().filter(|c| !c.is_whitespace()).collect();
        let rf: Vec<char> = rf.chars().filter(|c| !c.is_whitespace()).collect();
        for n in 1..=CHRF_ORDER {
            let (m, th, tr) = counts(&h, &rf, n);
            let s = &mut sums[n - 1];
            *s = (s.0 + m, s.1 + th, s.2 + tr);
        }
    }
    let (mut p, mut r, mut orders) = (0.0, 0.0, 0);
    for &(m, th, tr) in &sums {
        if th > 0 && tr > 0 {
            p += m as f64 / th as f64;
            r += m as f64 / tr as f64;
            orders += 1;
        }
    }
    if orders == 0 {
        return Ok(0.0);
    }
    let (p, r) = (p / orders as f64, r / orders as f64);
    let b2 = CHRF_BETA * CHRF_BETA;
    Ok(if p + r == 0.0 {
        0.0
    } else {
        100.0 * (1.0 + b2) * p * r / (b2 * p + r)
    })
}

/// Translation scores of a system on held-out pairs.
#[derive(Clone, Debug, PartialEq)]
pub struct TranslationScores {
    /// Pairs scored.
    pub pairs: usize,
    /// Fraction of translations equal to their reference (after trimming whitespace).
    pub exact: f64,
    /// Corpus BLEU, 0–100.
    pub bleu: Bleu,
    /// Corpus chrF (β = 2), 0–100.
    pub chrf: f64,
}

/// Translates each source of `pairs` (source, reference) with `translate` and scores the translations:
/// exact match, corpus BLEU and chrF.
pub fn score_translations(
    pairs: &[(String, String)],
    mut translate: impl FnMut(&str) -> Result<String>,
) -> Result<TranslationScores> {
    let hyps = pairs
        .iter()
        .map(|(s, _)| translate(s).map(|h| h.trim().to_string()))
        .collect::<Result<Vec<String>>>()?;
    let h: Vec<&str> = hyps.iter().map(String::as_str).collect();
    let r: Vec<&str> = pairs.iter().map(|(_, t)| t.trim()).collect();
    let exact = h.iter().zip(&r).filter(|(a, b)| a == b).count();
    Ok(TranslationScores {
        pairs: pairs.len(),
        exact: exact as f64 / pairs.len().max(1) as f64,
        bleu: bleu(&h, &r)?,
        chrf: chrf(&h, &r)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact match counts whole translations; a perfect system scores 100 on both corpus scores.
    #[test]
    fn translations_are_scored_against_their_references() -> Result<()> {
        let pairs: Vec<(String, String)> = [("a", "x y z w"), ("b", "u v w x y"), ("c", "p q r s")]
            .iter()
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .collect();
        let perfect = score_translations(&pairs, |s| {
            Ok(pairs
                .iter()
                .find(|p| p.0 == s)
                .map(|p| p.1.clone())
                .unwrap_or_default())
        })?;
        assert_eq!((perfect.pairs, perfect.exact), (3, 1.0));
        assert!((perfect.bleu.score - 100.0).abs() < 1e-9 && (perfect.chrf - 100.0).abs() < 1e-9);
        let one_wrong = score_translations(&pairs, |s| {
            Ok(match s {
                "a" => " x y z w ".to_string(),
                "b" => "u v w x q".to_string(),
                _ => "p q r s".to_string(),
            })
        })?;
        assert!((one_wrong.exact - 2.0 / 3.0).abs() < 1e-12);
        assert!(one_wrong.bleu.score < 100.0 && one_wrong.chrf < 100.0);
        assert!(score_translations(&pairs, |_| Err(Error::invalid("x", "y"))).is_err());
        Ok(())
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Papineni et al.'s example of the modified precision: "the the the the the the the" against "the cat is
    /// on the mat" has unigram precision 2/7 (the clipped count of "the" is 2).
    #[test]
    fn modified_precision_clips_repeated_words() {
        let b = bleu(&["the the the the the the the"], &["the cat is on the mat"]).unwrap();
        assert!(close(b.precisions[0], 2.0 / 7.0), "{b:?}");
        assert_eq!(b.score, 0.0, "no bigram matches");
    }

    /// Computed by hand: "the cat is on a mat" against "the cat is on the mat": p = 5/6, 3/5, 2/4, 1/3, equal
    /// lengths (BP 1), BLEU = 100·(5/6 · 3/5 · 1/2 · 1/3)^¼ = 53.728…; a hypothesis of the reference's first 4
    /// words has every p = 1 and BP = exp(1 − 6/4); identical sentences score 100.
    #[test]
    fn bleu_against_hand_computed_values() {
        let b = bleu(&["the cat is on a mat"], &["the cat is on the mat"]).unwrap();
        assert_eq!(b.lengths, (6, 6));
        for (p, want) in b.precisions.iter().zip([5.0 / 6.0, 0.6, 0.5, 1.0 / 3.0]) {
            assert!(close(*p, want), "{b:?}");
        }
        assert!(close(b.brevity_penalty, 1.0));
        assert!(close(b.score, 100.0 * (1.0f64 / 12.0).powf(0.25)), "{b:?}");
        assert!((b.score - 53.728).abs() < 1e-3);
        let short = bleu(&["the cat is on"], &["the cat is on the mat"]).unwrap();
        assert!(close(short.brevity_penalty, (-0.5f64).exp()));
        assert!(close(short.score, 100.0 * (-0.5f64).exp()));
        let same = bleu(&["a b c d e", "x y z w"], &["a b c d e", "x y z w"]).unwrap();
        assert!(close(same.score, 100.0));
        // corpus level: counts are pooled before the precisions are taken
        let two = bleu(
            &["the cat is on a mat", "the cat is on"],
            &["the cat is on the mat", "the cat is on the mat"],
        )
        .unwrap();
        assert_eq!(two.lengths, (10, 12));
        assert!(close(two.precisions[0], 9.0 / 10.0), "{two:?}");
        assert!(bleu(&["a"], &[]).is_err());
    }

    /// Computed by hand: "ab" against "abc": order 1 P = 2/2, R = 2/3; order 2 P = 1/1, R = 1/2; higher orders
    /// have no hypothesis n-grams. P = 1, R = 7/12, chrF = 100·5·P·R/(4P + R) = 63.636…; identical strings
    /// (whitespace aside) score 100, disjoint ones 0.
    #[test]
    fn chrf_against_hand_computed_values() {
        let r = 7.0 / 12.0;
        assert!(close(
            chrf(&["ab"], &["abc"]).unwrap(),
            100.0 * 5.0 * r / (4.0 + r)
        ));
        assert!((chrf(&["ab"], &["abc"]).unwrap() - 63.636).abs() < 1e-3);
        assert!(close(chrf(&["a b c"], &["abc"]).unwrap(), 100.0));
        assert_eq!(chrf(&["xyz"], &["abc"]).unwrap(), 0.0);
        assert!(chrf(&["a", "b"], &["a"]).is_err());
    }
}
