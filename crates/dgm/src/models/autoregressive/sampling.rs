//! Drawing the next token from a model's logits: temperature, top-k and top-p (nucleus) truncation.
//!
//! With logits ℓ and temperature τ the candidate probabilities are softmax(ℓ / τ). Top-k keeps the k most
//! likely tokens; top-p keeps the smallest prefix of tokens, most likely first, whose probability reaches p
//! (Holtzman et al. 2020, arXiv:1904.09751); the kept probabilities are renormalised and one token is drawn
//! by inverting their cumulative distribution at a uniform u from dgm's RNG. Ties are ordered by token id,
//! so the draw is a pure function of (logits, options, u).

use crate::model::GenerateOptions;

/// The token drawn from `logits` with the truncation of `opts`, by inverse CDF at `u` ∈ [0, 1).
/// `logits` must be non-empty; non-finite logits count as −∞ (never drawn unless all are).
pub fn pick_token(logits: &[f32], opts: &GenerateOptions, u: f64) -> u32 {
    let probs = truncated_probs(logits, opts);
    let mut acc = 0.0;
    let mut last = 0;
    for &(id, p) in &probs {
        acc += p;
        last = id;
        if u < acc {
            return id;
        }
    }
    last
}

/// The kept `(token, probability)` pairs, most likely first, renormalised to sum to 1.
pub fn truncated_probs(logits: &[f32], opts: &GenerateOptions) -> Vec<(u32, f64)> {
    let t = opts.temperature.max(1e-8);
    let mut order: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let v = if l.is_finite() {
                l as f64 / t
            } else {
                f64::NEG_INFINITY
            };
            (i as u32, v)
        })
        .collect();
    // most likely first, ties by token id
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let max = order.first().map(|x| x.1).unwrap_or(0.0);
    if !max.is_finite() {
        // nothing finite: uniform over all tokens
        let n = order.len().max(1) as f64;
        return order.into_iter().map(|(i, _)| (i, 1.0 / n)).collect();
    }
    let mut probs: Vec<(u32, f64)> = order
        .into_iter()
        .map(|(i, v)| (i, (v - max).exp()))
        .collect();
    let z: f64 = probs.iter().map(|x| x.1).sum();
    probs.iter_mut().for_each(|x| x.1 /= z);
    if let Some(k) = opts.top_k {
        probs.truncate(k.max(1));
    }
    if let Some(p) = opts.top_p {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (j, x) in probs.iter().enumerate() {
            acc += x.1;
            if acc >= p {
                keep = j + 1;
                break;
            }
        }
        probs.truncate(keep.max(1));
    }
    let z: f64 = probs.iter().map(|x| x.1).sum();
    probs.iter_mut().for_each(|x| x.1 /= z);
    probs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn opts(temperature: f64, top_k: Option<usize>, top_p: Option<f64>) -> GenerateOptions {
        GenerateOptions {
            temperature,
            top_k,
            top_p,
            ..GenerateOptions::default()
        }
    }

    #[test]
    fn frequencies_match_the_tempered_softmax() {
        let logits = [0.5f32, -1.0, 2.0, 0.0];
        for t in [1.0, 0.5, 2.0] {
            let z: f64 = logits.iter().map(|&l| (l as f64 / t).exp()).sum();
            let want: Vec<f64> = logits.iter().map(|&l| (l as f64 / t).exp() / z).collect();
            let mut counts = [0usize; 4];
            let mut r = Rng::new(1);
            let n = 40_000;
            for _ in 0..n {
                counts[pick_token(&logits, &opts(t, None, None), r.uniform_f64()) as usize] += 1;
            }
            for (c, w) in counts.iter().zip(&want) {
                let f = *c as f64 / n as f64;
                // 5 standard errors
                assert!(
                    (f - w).abs() < 5.0 * (w * (1.0 - w) / n as f64).sqrt() + 1e-9,
                    "{f} vs {w}"
                );
            }
        }
    }

    #[test]
    fn top_k_and_top_p_keep_the_most_likely_tokens() {
        let logits = [1.0f32, 3.0, 2.0, 0.0, 3.0];
        // top-k 1 is argmax (ties to the lower id) for every u
        for u in [0.0, 0.5, 0.999] {
            assert_eq!(pick_token(&logits, &opts(1.0, Some(1), None), u), 1);
        }
        let kept = truncated_probs(&logits, &opts(1.0, Some(3), None));
        assert_eq!(kept.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 4, 2]);
        assert!((kept.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-12);
        // p(1) = p(4) ≈ 0.391 each, p(2) ≈ 0.144: top-p 0.5 keeps two, 0.9 keeps three
        assert_eq!(
            truncated_probs(&logits, &opts(1.0, None, Some(0.5))).len(),
            2
        );
        assert_eq!(
            truncated_probs(&logits, &opts(1.0, None, Some(0.9))).len(),
            3
        );
        assert_eq!(
            truncated_probs(&logits, &opts(1.0, None, Some(1.0))).len(),
            5
        );
        assert_eq!(
            truncated_probs(&logits, &opts(1.0, None, Some(1e-9))).len(),
            1
        );
        // never draws a -inf logit; all -inf → uniform
        let masked = [f32::NEG_INFINITY, 0.0, f32::NAN];
        for u in [0.0, 0.3, 0.99] {
            assert_eq!(pick_token(&masked, &opts(1.0, None, None), u), 1);
        }
        let none = [f32::NEG_INFINITY; 4];
        assert_eq!(truncated_probs(&none, &opts(1.0, None, None)).len(), 4);
    }

    #[test]
    fn options_are_validated() {
        assert!(GenerateOptions::default().validate().is_ok());
        for bad in [
            GenerateOptions {
                max_tokens: 0,
                ..Default::default()
            },
            opts(0.0, None, None),
            opts(-1.0, None, None),
            opts(f64::NAN, None, None),
            opts(1.0, Some(0), None),
            opts(1.0, None, Some(0.0)),
            opts(1.0, None, Some(1.5)),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
