//! Beam search over a language model ([`Sequence`]): the `beam` most probable continuations of a prompt, token
//! by token, scored by their exact log-probability (no length normalisation), until each ends with the stop
//! token or reaches `max_tokens`.
//!
//! Each step expands every active hypothesis by every token and keeps the `beam` best expansions (ties: the
//! earlier hypothesis, then the smaller token id), so beam 1 is greedy decoding (the most likely token each
//! time). A hypothesis that draws the stop token is finished. Since extending a hypothesis never raises its
//! log-probability, the search stops as soon as the best finished hypothesis is at least as probable as every
//! active one: nothing left could beat it.

use crate::model::Sequence;
use crate::{Error, Result};

/// Settings of [`beam_search`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeamOptions {
    /// Hypotheses kept per step (1 = greedy).
    pub beam: usize,
    /// Tokens generated at most per hypothesis.
    pub max_tokens: usize,
    /// The token that ends a hypothesis (e.g. the newline), not included in its tokens.
    pub stop: Option<u32>,
}

/// One continuation found by [`beam_search`].
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// The generated tokens (without the prompt and the stop token).
    pub tokens: Vec<u32>,
    /// log p(tokens, stop | prompt) in nats (without the stop token's term when it did not stop).
    pub log_prob: f64,
    /// True when it ended with the stop token (false: it reached `max_tokens`).
    pub finished: bool,
}

/// The continuations of `prompt` beam search finds, most probable first: the finished ones and those still
/// active when it stopped (at most `beam` of each; the first is finished or `max_tokens` long).
pub fn beam_search(
    lm: &dyn Sequence,
    prompt: &[u32],
    opts: &BeamOptions,
) -> Result<Vec<Hypothesis>> {
    if opts.beam == 0 || opts.max_tokens == 0 {
        return Err(Error::invalid(
            "beam search",
            format!(
                "beam {} and max_tokens {}: both must be at least 1",
                opts.beam, opts.max_tokens
            ),
        ));
    }
    let mut active = vec![Hypothesis {
        tokens: Vec::new(),
        log_prob: 0.0,
        finished: false,
    }];
    let mut finished: Vec<Hypothesis> = Vec::new();
    for _ in 0..opts.max_tokens {
        let prefixes: Vec<Vec<u32>> = active
            .iter()
            .map(|h| [prompt, &h.tokens].concat())
            .collect();
        let rows = lm.next_log_probs(&prefixes)?;
        // (score, hypothesis, token), best first; ties by hypothesis then token
        let mut cand: Vec<(f64, usize, u32)> = rows
            .iter()
            .enumerate()
            .flat_map(|(h, row)| {
                let base = active[h].log_prob;
                row.iter()
                    .enumerate()
                    .map(move |(v, &lp)| (base + lp as f64, h, v as u32))
            })
            .filter(|c| c.0.is_finite())
            .collect();
        cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        cand.truncate(opts.beam);
        let mut next = Vec::with_capacity(opts.beam);
        for (score, h, v) in cand {
            if Some(v) == opts.stop {
                finished.push(Hypothesis {
                    tokens: active[h].tokens.clone(),
                    log_prob: score,
                    finished: true,
                });
            } else {
                let mut tokens = active[h].tokens.clone();
                tokens.push(v);
                next.push(Hypothesis {
                    tokens,
                    log_prob: score,
                    finished: false,
                });
            }
        }
        active = next;
        let best_done = finished
            .iter()
            .map(|h| h.log_prob)
            .fold(f64::NEG_INFINITY, f64::max);
        let best_active = active
            .iter()
            .map(|h| h.log_prob)
            .fold(f64::NEG_INFINITY, f64::max);
        if active.is_empty() || best_done >= best_active {
            break;
        }
    }
    finished.sort_by(|a, b| b.log_prob.total_cmp(&a.log_prob));
    finished.truncate(opts.beam);
    finished.extend(active);
    finished.sort_by(|a, b| b.log_prob.total_cmp(&a.log_prob));
    Ok(finished)
}

/// Translates `source` with a language model trained on lines `source = target` (the prefix-LM form of
/// translation, e.g. on [`crate::data::numbers`]): the prompt `\nsource = ` (the newline marks the start of a
/// line), beam search until the next newline, the best continuation decoded (invalid UTF-8 replaced). Refused: an empty source, one with a newline or the
/// separator, or with characters outside the model's vocabulary.
pub fn translate(
    lm: &dyn Sequence,
    source: &str,
    beam: usize,
    max_tokens: usize,
) -> Result<String> {
    use crate::data::numbers::SEPARATOR;
    let src = source.trim();
    if src.is_empty() {
        return Err(Error::invalid(
            "source",
            "the sentence to translate is empty",
        ));
    }
    if src.contains('\n') || src.contains(SEPARATOR.trim()) {
        return Err(Error::invalid(
            "source",
            format!(
                "'{src}' holds a newline or '{}', which end or split a pair",
                SEPARATOR.trim()
            ),
        ));
    }
    let tok = lm.tokenizer();
    // the newline first: training windows start anywhere, so a line start must be marked as one
    let prompt = tok.encode(format!("\n{src}{SEPARATOR}").as_bytes())?;
    let stop = tok.encode(b"\n").ok().and_then(|v| v.first().copied());
    let opts = BeamOptions {
        beam,
        max_tokens,
        stop,
    };
    let best = beam_search(lm, &prompt, &opts)?;
    let tokens = best.first().map(|h| h.tokens.as_slice()).unwrap_or(&[]);
    Ok(String::from_utf8_lossy(&tok.decode(tokens)?).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Tokenizer;
    use crate::model::GenerateOptions;
    use crate::models::autoregressive::gpt::{Gpt, GptConfig};
    use crate::nn::Params;
    use candle_core::Device;

    fn gpt(seed: u64) -> Result<(Gpt, Params)> {
        let cfg = GptConfig {
            block_size: 32,
            tokenizer: Tokenizer::Chars {
                symbols: (b'a'..b'a' + 6).collect(),
            },
            ..GptConfig::tiny()
        };
        let p = Params::new(seed, &Device::Cpu);
        Ok((Gpt::new(cfg, p.var_builder())?, p))
    }

    /// Beam 1 is greedy decoding: the tokens `generate` picks with top-k 1, and their summed log-probability
    /// as `token_log_probs` scores them.
    #[test]
    fn beam_one_is_greedy() -> Result<()> {
        for seed in 0..3 {
            let (m, _p) = gpt(seed)?;
            let prompt = [1u32, 4, 2];
            let greedy = m.generate(
                &prompt,
                &GenerateOptions {
                    max_tokens: 12,
                    top_k: Some(1),
                    ..GenerateOptions::default()
                },
                &mut |_| Ok(true),
            )?;
            let opts = BeamOptions {
                beam: 1,
                max_tokens: 12,
                stop: None,
            };
            let best = &beam_search(&m, &prompt, &opts)?[0];
            assert_eq!(best.tokens, greedy, "seed {seed}");
            let lp = m.token_log_probs(&[&prompt[..], &greedy].concat())?;
            let want: f64 = lp[prompt.len()..].iter().sum();
            assert!(
                (best.log_prob - want).abs() < 1e-3,
                "{} vs {want}",
                best.log_prob
            );
        }
        Ok(())
    }

    /// A wider beam finds a continuation at least as probable as greedy; a beam wide enough to keep every
    /// hypothesis finds the most probable continuation of all (stop after ≤ 2 tokens, or any 3), found by
    /// enumeration; no hypothesis holds the stop token.
    #[test]
    fn wider_beams_find_more_probable_continuations() -> Result<()> {
        let (m, _p) = gpt(4)?;
        let prompt = [0u32, 3];
        let opts = |beam| BeamOptions {
            beam,
            max_tokens: 3,
            stop: Some(5),
        };
        let greedy = beam_search(&m, &prompt, &opts(1))?[0].log_prob;
        let wide = beam_search(&m, &prompt, &opts(6 * 6 * 6))?;
        assert!(wide[0].log_prob >= greedy - 1e-9);
        // enumerate every continuation: stop after 0, 1 or 2 tokens, or any 3 tokens without stop
        let score = |toks: &[u32], stops: bool| -> Result<f64> {
            let mut ids = prompt.to_vec();
            ids.extend_from_slice(toks);
            if stops {
                ids.push(5);
            }
            Ok(m.token_log_probs(&ids)?[prompt.len()..].iter().sum())
        };
        let mut best = f64::NEG_INFINITY;
        for len in 0..=3usize {
            for code in 0..5usize.pow(len as u32) {
                let toks: Vec<u32> = (0..len)
                    .map(|i| (code / 5usize.pow(i as u32) % 5) as u32)
                    .collect();
                best = best.max(score(&toks, len < 3)?);
            }
        }
        assert!(
            (wide[0].log_prob - best).abs() < 1e-3,
            "{} vs {best}",
            wide[0].log_prob
        );
        assert!(wide[0].finished || wide[0].tokens.len() == 3);
        assert!(wide.iter().all(|h| !h.tokens.contains(&5)));
        assert!(beam_search(&m, &prompt, &opts(0)).is_err());
        Ok(())
    }
}
