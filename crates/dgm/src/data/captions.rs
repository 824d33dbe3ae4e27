//! Word-level tokens for captions: the vocabulary of a caption-conditioned model.
//!
//! A caption is lower-cased and split on whitespace (commas and full stops dropped); each word becomes its
//! index in the vocabulary plus 2, and the sequence ends with the end-of-text token [`EOT`]. Batches are
//! padded with [`PAD`] after the EOT. The empty caption is the single token `[EOT]`: the "no caption" that
//! classifier-free guidance trains and guides with (as CLIP-guided models use the empty prompt). The
//! vocabulary is built from a training set's captions and saved with the model, so a caption at sample time
//! is read exactly as in training; a word the model never saw is refused, not guessed.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Padding after the end of a caption.
pub const PAD: u32 = 0;
/// End of text: closes every caption (the text encoder reads its summary there).
pub const EOT: u32 = 1;

/// The words a caption model knows and how long a caption may be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionVocab {
    /// The words, sorted; word `i` has token id `i + 2`.
    pub words: Vec<String>,
    /// The most tokens a caption may take, its [`EOT`] included.
    pub max_tokens: usize,
}

/// The words of a caption: lower-case, split on whitespace, commas and full stops dropped.
fn words_of(caption: &str) -> impl Iterator<Item = String> + '_ {
    caption
        .split_whitespace()
        .map(|w| w.trim_matches(|c| c == ',' || c == '.').to_lowercase())
        .filter(|w| !w.is_empty())
}

impl CaptionVocab {
    /// The sorted distinct words of `captions`, for captions of up to `max_tokens` tokens.
    pub fn from_captions<'a>(
        captions: impl IntoIterator<Item = &'a str>,
        max_tokens: usize,
    ) -> Self {
        let mut words: Vec<String> = captions.into_iter().flat_map(words_of).collect();
        words.sort();
        words.dedup();
        Self { words, max_tokens }
    }

    /// Checks the vocabulary: at least one word, sorted and distinct, and room for one word and the EOT.
    pub fn validate(&self) -> Result<()> {
        if self.words.is_empty() {
            return Err(Error::invalid(
                "model.net.caption_vocab",
                "is empty: a caption model needs the words of its training captions",
            ));
        }
        if let Some(w) = self.words.windows(2).find(|w| w[0] >= w[1]) {
            return Err(Error::invalid(
                "model.net.caption_vocab",
                format!("must be sorted and distinct: '{}' before '{}'", w[0], w[1]),
            ));
        }
        if self.max_tokens < 2 {
            return Err(Error::invalid(
                "model.net.text.max_tokens",
                format!(
                    "{}: must be ≥ 2 (a word and the end of text)",
                    self.max_tokens
                ),
            ));
        }
        Ok(())
    }

    /// Token ids including [`PAD`] and [`EOT`].
    pub fn vocab_size(&self) -> usize {
        self.words.len() + 2
    }

    /// The tokens of one caption: its words, then [`EOT`]. The empty caption is `[EOT]`.
    ///
    /// Errors: a word not in the vocabulary (named, with the words the model knows), or a caption longer
    /// than `max_tokens` tokens.
    pub fn encode(&self, caption: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for w in words_of(caption) {
            match self.words.binary_search(&w) {
                Ok(i) => ids.push(i as u32 + 2),
                Err(_) => {
                    return Err(Error::invalid(
                        "caption",
                        format!(
                            "the model does not know the word '{w}' in \"{caption}\"; it knows: {}",
                            self.words.join(", ")
                        ),
                    ))
                }
            }
        }
        ids.push(EOT);
        if ids.len() > self.max_tokens {
            return Err(Error::invalid(
                "caption",
                format!(
                    "\"{caption}\" has {} words; the model reads at most {}",
                    ids.len() - 1,
                    self.max_tokens - 1
                ),
            ));
        }
        Ok(ids)
    }

    /// `(b, L)` u32 tokens of `captions`, each padded with [`PAD`] to the longest (L ≥ 1).
    pub fn encode_batch<S: AsRef<str>>(&self, captions: &[S], device: &Device) -> Result<Tensor> {
        let seqs = captions
            .iter()
            .map(|c| self.encode(c.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        pad(&seqs, device)
    }
}

/// `(b, L)` u32 tokens of the empty caption (`[EOT, PAD, …]`) for `b` examples, L ≥ 1.
pub fn empty_captions(b: usize, len: usize, device: &Device) -> Result<Tensor> {
    let len = len.max(1);
    let mut v = vec![PAD; b * len];
    v.iter_mut().step_by(len).for_each(|t| *t = EOT);
    Ok(Tensor::from_vec(v, (b, len), device)?)
}

/// Token sequences padded with [`PAD`] to the longest: `(b, L)` u32.
fn pad(seqs: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let len = seqs.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut v = vec![PAD; seqs.len() * len];
    for (row, s) in v.chunks_exact_mut(len).zip(seqs) {
        row[..s.len()].copy_from_slice(s);
    }
    Ok(Tensor::from_vec(v, (seqs.len(), len), device)?)
}

/// For each row of `(b, L)` u32 tokens, the position of its first [`EOT`].
///
/// Errors: a row without one.
pub fn eot_positions(tokens: &Tensor) -> Result<Vec<usize>> {
    tokens
        .to_vec2::<u32>()?
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row.iter().position(|&t| t == EOT).ok_or_else(|| {
                Error::invalid(
                    "caption tokens",
                    format!("row {i} has no end-of-text token ({EOT})"),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_round_trip_to_padded_tokens_and_unknown_words_are_named() -> Result<()> {
        let v = CaptionVocab::from_captions(
            ["a small red circle", "a Large blue star, at the top."],
            8,
        );
        v.validate()?;
        assert_eq!(
            v.words,
            ["a", "at", "blue", "circle", "large", "red", "small", "star", "the", "top"]
        );
        assert_eq!(v.vocab_size(), 12);
        assert_eq!(v.encode("a red star")?, vec![2, 7, 9, EOT]);
        assert_eq!(v.encode("")?, vec![EOT]);
        let t = v.encode_batch(&["a red star", ""], &Device::Cpu)?;
        assert_eq!(
            t.to_vec2::<u32>()?,
            vec![vec![2, 7, 9, EOT], vec![EOT, 0, 0, 0]]
        );
        assert_eq!(eot_positions(&t)?, vec![3, 0]);
        assert_eq!(
            empty_captions(2, 3, &Device::Cpu)?.to_vec2::<u32>()?,
            vec![vec![EOT, 0, 0], vec![EOT, 0, 0]]
        );
        let e = v.encode("a purple star").unwrap_err().to_string();
        assert!(e.contains("'purple'") && e.contains("blue, circle"), "{e}");
        let e = v.encode("a a a a a a a a").unwrap_err().to_string();
        assert!(e.contains("8 words") && e.contains("at most 7"), "{e}");
        let bad = CaptionVocab {
            words: vec!["b".into(), "a".into()],
            max_tokens: 4,
        };
        assert!(bad.validate().is_err());
        let t = Tensor::from_vec(vec![2u32, 0], (1, 2), &Device::Cpu)?;
        assert!(eot_positions(&t).is_err());
        Ok(())
    }
}
