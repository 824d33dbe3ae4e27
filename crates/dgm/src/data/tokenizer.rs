//! Tokenizers for the language models: text is bytes, a token id indexes a vocabulary of byte strings.
//!
//! * [`Tokenizer::Bytes`]: all 256 byte values, token id = byte value. Any file round-trips, invalid UTF-8
//!   included; the vocabulary never misses a symbol.
//! * [`Tokenizer::Chars`]: the distinct bytes of the training corpus, sorted (nanoGPT's character-level
//!   vocabulary for ASCII text such as tinyshakespeare: 65 symbols). Bytes outside it cannot be encoded:
//!   [`Tokenizer::encode`] names the first one, [`Tokenizer::encode_lossy`] skips and reports them.
//! * [`Tokenizer::Bpe`]: byte-level byte-pair encoding learned on the training split ([`super::bpe`]): the 256
//!   bytes plus the learned merges (`bpe` = 2048 tokens, `bpe:N` = N tokens). Any file round-trips, as with
//!   `bytes`, in fewer tokens.
//!
//! The tokenizer is saved with a run (`[model.tokenizer]` of its `config.toml`), so sampling and scoring
//! encode text exactly as training did.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The tokenizer names `data.text.tokenizer` accepts, besides `bpe:N` (N the vocabulary size; see
/// [`TOKENIZER_OPTIONS`]).
pub const TOKENIZER_NAMES: &[&str] = &["chars", "bytes", "bpe"];

/// The tokenizer settings as messages list them.
pub const TOKENIZER_OPTIONS: &[&str] = &["chars", "bytes", "bpe", "bpe:N (N = vocabulary size)"];

/// The vocabulary size of `bpe` without `:N`.
pub const BPE_DEFAULT_VOCAB: usize = 2048;

/// Checks a tokenizer name (`chars`, `bytes`, `bpe`, `bpe:N` with 257 ≤ N ≤ 65536); for BPE gives its
/// number of merges.
pub fn parse_name(name: &str) -> Result<Option<usize>> {
    let vocab = match name {
        "chars" | "bytes" => return Ok(None),
        "bpe" => BPE_DEFAULT_VOCAB,
        _ => match name.strip_prefix("bpe:").map(str::parse::<usize>) {
            Some(Ok(n)) if (257..=65536).contains(&n) => n,
            Some(_) => {
                return Err(Error::invalid(
                    "data.text.tokenizer",
                    format!("{name}: give bpe:N with a vocabulary size N from 257 to 65536"),
                ))
            }
            None => {
                return Err(Error::unknown(
                    "data.text.tokenizer",
                    name,
                    TOKENIZER_OPTIONS,
                ))
            }
        },
    };
    Ok(Some(vocab - 256))
}

/// A byte-level tokenizer (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Tokenizer {
    /// Token id = byte value, 256 tokens.
    Bytes,
    /// Token id `i` stands for byte `symbols[i]`; `symbols` is sorted and free of duplicates.
    Chars {
        /// The vocabulary's bytes.
        symbols: Vec<u8>,
    },
    /// Byte-level BPE: ids 0 … 255 are the bytes, id 256 + i joins the two tokens of `merges[i]`.
    Bpe {
        /// The learned merges, in order.
        merges: Vec<[u32; 2]>,
        /// The coder built from `merges` on first use (not saved; equal for equal merges).
        #[serde(skip)]
        coder: BpeCoder,
    },
}

/// The [`super::bpe::Bpe`] of a [`Tokenizer::Bpe`], built once on first use: encoding and decoding a token
/// then cost no rebuilding of the vocabulary. Compares equal to any other (the merges decide equality).
#[derive(Clone, Debug, Default)]
pub struct BpeCoder(std::sync::OnceLock<std::sync::Arc<super::bpe::Bpe>>);

impl PartialEq for BpeCoder {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for BpeCoder {}

/// Makes a printable form of one byte for messages.
pub fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        format!("{b:#04x} '{}'", b as char)
    } else {
        format!("{b:#04x}")
    }
}

impl Tokenizer {
    /// Builds tokenizer `name` (one of [`TOKENIZER_NAMES`]) for `corpus`: `chars` takes the corpus's
    /// distinct bytes, `bytes` ignores it.
    pub fn from_corpus(name: &str, corpus: &[u8]) -> Result<Tokenizer> {
        if let Some(merges) = parse_name(name)? {
            let merges = super::bpe::train(corpus, merges);
            return Ok(Tokenizer::Bpe {
                merges: merges.into_iter().map(|(a, b)| [a, b]).collect(),
                coder: BpeCoder::default(),
            });
        }
        match name {
            "bytes" => Ok(Tokenizer::Bytes),
            "chars" => {
                let mut seen = [false; 256];
                for &b in corpus {
                    seen[b as usize] = true;
                }
                let symbols: Vec<u8> = (0..=255u8).filter(|&b| seen[b as usize]).collect();
                if symbols.is_empty() {
                    return Err(Error::invalid(
                        "data.tokenizer",
                        "a 'chars' vocabulary needs a non-empty corpus",
                    ));
                }
                Ok(Tokenizer::Chars { symbols })
            }
            _ => Err(Error::unknown(
                "data.text.tokenizer",
                name,
                TOKENIZER_OPTIONS,
            )),
        }
    }

    /// The name [`Tokenizer::from_corpus`] takes.
    pub fn name(&self) -> &'static str {
        match self {
            Tokenizer::Bytes => "bytes",
            Tokenizer::Chars { .. } => "chars",
            Tokenizer::Bpe { .. } => "bpe",
        }
    }

    /// Number of token ids.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Bytes => 256,
            Tokenizer::Chars { symbols } => symbols.len(),
            Tokenizer::Bpe { merges, .. } => 256 + merges.len(),
        }
    }

    /// What one token is, for reports: `byte`, `char` or `token`.
    pub fn unit(&self) -> &'static str {
        match self {
            Tokenizer::Bytes => "byte",
            Tokenizer::Chars { .. } => "char",
            Tokenizer::Bpe { .. } => "token",
        }
    }

    /// Checks that a deserialised tokenizer is usable (a sorted, duplicate-free, non-empty vocabulary).
    pub fn validate(&self) -> Result<()> {
        if let Tokenizer::Bpe { .. } = self {
            self.bpe()?;
        }
        if let Tokenizer::Chars { symbols } = self {
            if symbols.is_empty() || !symbols.windows(2).all(|w| w[0] < w[1]) {
                return Err(Error::invalid(
                    "tokenizer.symbols",
                    format!(
                        "must be a non-empty, strictly increasing list of bytes; got {} entries",
                        symbols.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A tokenizer from its saved form (the `[model.tokenizer]` table of a run's `config.toml`), validated.
    /// The error is one line (`toml`'s own deserialisation messages end in a newline and may continue on a
    /// second line).
    pub fn from_toml_value(value: &toml::Value) -> Result<Tokenizer> {
        let t = Tokenizer::deserialize(value.clone()).map_err(|e| {
            Error::invalid(
                "model.tokenizer",
                e.to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })?;
        t.validate()?;
        Ok(t)
    }

    /// The BPE coder of a [`Tokenizer::Bpe`], built on first use (`None` for the others).
    fn bpe(&self) -> Result<Option<std::sync::Arc<super::bpe::Bpe>>> {
        match self {
            Tokenizer::Bpe { merges, coder } => {
                if let Some(c) = coder.0.get() {
                    return Ok(Some(c.clone()));
                }
                let m: Vec<(u32, u32)> = merges.iter().map(|&[a, b]| (a, b)).collect();
                let built = std::sync::Arc::new(super::bpe::Bpe::new(&m)?);
                Ok(Some(coder.0.get_or_init(|| built).clone()))
            }
            _ => Ok(None),
        }
    }

    /// Byte → token id table (`u32::MAX` for bytes outside the vocabulary).
    fn table(&self) -> [u32; 256] {
        let mut t = [u32::MAX; 256];
        match self {
            Tokenizer::Bytes | Tokenizer::Bpe { .. } => {
                t.iter_mut().enumerate().for_each(|(i, v)| *v = i as u32)
            }
            Tokenizer::Chars { symbols } => {
                for (i, &b) in symbols.iter().enumerate() {
                    t[b as usize] = i as u32;
                }
            }
        }
        t
    }

    /// Token ids of `bytes`; a byte outside the vocabulary is an error naming it and its offset.
    pub fn encode(&self, bytes: &[u8]) -> Result<Vec<u32>> {
        let (ids, oov) = self.encode_lossy(bytes);
        match oov.first() {
            None => Ok(ids),
            Some(&(offset, b)) => Err(Error::invalid(
                "text",
                format!(
                    "byte {} at offset {offset} is not in the model's vocabulary ({} of {} bytes are \
                     outside it; the {} symbols are: {})",
                    show_byte(b),
                    oov.len(),
                    bytes.len(),
                    self.vocab_size(),
                    self.describe_vocab()
                ),
            )),
        }
    }

    /// Token ids of the bytes that are in the vocabulary, and `(offset, byte)` of those that are not
    /// (skipped).
    pub fn encode_lossy(&self, bytes: &[u8]) -> (Vec<u32>, Vec<(usize, u8)>) {
        if let Ok(Some(bpe)) = self.bpe() {
            return (bpe.encode(bytes), Vec::new());
        }
        let t = self.table();
        let mut ids = Vec::with_capacity(bytes.len());
        let mut oov = Vec::new();
        for (i, &b) in bytes.iter().enumerate() {
            match t[b as usize] {
                u32::MAX => oov.push((i, b)),
                id => ids.push(id),
            }
        }
        (ids, oov)
    }

    /// The bytes of token ids `ids`; an id outside `0..vocab_size()` is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let bpe = self.bpe()?;
        let mut out = Vec::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            let bytes = match &bpe {
                Some(b) => b.token(id).map(<[u8]>::to_vec),
                None => self.token_byte(id).map(|b| vec![b]),
            };
            out.extend(bytes.ok_or_else(|| {
                Error::invalid(
                    "token id",
                    format!(
                        "{id} at position {i} is out of range; the vocabulary has ids 0..{}",
                        self.vocab_size()
                    ),
                )
            })?);
        }
        Ok(out)
    }

    /// The byte of one token id, `None` when out of range.
    fn token_byte(&self, id: u32) -> Option<u8> {
        match self {
            Tokenizer::Bytes => u8::try_from(id).ok(),
            Tokenizer::Chars { symbols } => symbols.get(id as usize).copied(),
            Tokenizer::Bpe { .. } => None,
        }
    }

    /// The bytes of one token id (one byte except for BPE merges), `None` when out of range.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        match self {
            Tokenizer::Bpe { .. } => match self.bpe() {
                Ok(Some(b)) => b.token(id).map(<[u8]>::to_vec),
                _ => None,
            },
            _ => self.token_byte(id).map(|b| vec![b]),
        }
    }

    /// The vocabulary as escaped text, for messages.
    pub fn describe_vocab(&self) -> String {
        match self {
            Tokenizer::Bytes => "all 256 byte values".into(),
            Tokenizer::Chars { symbols } => {
                format!("\"{}\"", String::from_utf8_lossy(symbols).escape_debug())
            }
            Tokenizer::Bpe { merges, .. } => {
                format!("all 256 byte values and {} learned merges", merges.len())
            }
        }
    }
}

/// Turns a stream of bytes into text as it arrives, holding back an incomplete UTF-8 sequence until its
/// last byte comes (so streamed output never splits a character); invalid bytes become U+FFFD.
#[derive(Clone, Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes; returns the text that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..good]));
                    match e.error_len() {
                        // an incomplete sequence at the end: wait for more bytes
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }

    /// The rest, at the end of the stream (an unfinished sequence becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn bytes_round_trip_arbitrary_data_including_invalid_utf8() -> Result<()> {
        let t = Tokenizer::Bytes;
        let mut r = Rng::new(7);
        let mut data: Vec<u8> = (0..5000).map(|_| r.below(256) as u8).collect();
        data.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28, 0xe2, 0x82]); // invalid / truncated UTF-8
        assert!(std::str::from_utf8(&data).is_err());
        let ids = t.encode(&data)?;
        assert_eq!(ids.len(), data.len());
        assert!(ids.iter().all(|&i| i < 256));
        assert_eq!(t.decode(&ids)?, data);
        assert!(t.decode(&[256]).is_err());
        Ok(())
    }

    #[test]
    fn chars_round_trip_its_corpus_and_report_unknown_bytes() -> Result<()> {
        let corpus = b"to be or not \xff\xfe to be\n".to_vec();
        let t = Tokenizer::from_corpus("chars", &corpus)?;
        t.validate()?;
        assert_eq!(t.vocab_size(), 10); // \n space b e n o r t \xfe \xff
        let ids = t.encode(&corpus)?;
        assert_eq!(t.decode(&ids)?, corpus);
        let e = t.encode(b"to bez").unwrap_err().to_string();
        assert!(e.contains("'z'") && e.contains("offset 5"), "{e}");
        let (ids, oov) = t.encode_lossy(b"xbe!");
        assert_eq!(t.decode(&ids)?, b"be".to_vec());
        assert_eq!(oov, vec![(0, b'x'), (3, b'!')]);
        let e = t.decode(&[0, 10]).unwrap_err().to_string();
        assert!(e.contains("10 at position 1") && e.contains("0..10"), "{e}");
        // serde round trip through TOML
        let s = toml::to_string(&t).map_err(|e| Error::invalid("toml", e.to_string()))?;
        let back: Tokenizer =
            toml::from_str(&s).map_err(|e| Error::invalid("toml", e.to_string()))?;
        assert_eq!(back, t);
        assert!(Tokenizer::Chars {
            symbols: vec![3, 2]
        }
        .validate()
        .is_err());
        assert!(Tokenizer::from_corpus("wordpiece", b"x").is_err());
        assert!(Tokenizer::from_corpus("bpe:100", b"x").is_err());
        Ok(())
    }

    /// A BPE tokenizer learned on a corpus: at most the vocabulary asked for, fewer tokens than bytes on the
    /// corpus, any bytes (invalid UTF-8 included) round-trip, a token can be several bytes, and it survives
    /// TOML (a run's config) unchanged; merges that use undefined tokens are refused.
    #[test]
    fn bpe_learns_merges_and_round_trips() -> Result<()> {
        let corpus = "impl Iterator for Counter { fn next(&mut self) -> Option<u32> { self.count += 1; None } }\n".repeat(30);
        let t = Tokenizer::from_corpus("bpe:300", corpus.as_bytes())?;
        assert_eq!((t.name(), t.unit()), ("bpe", "token"));
        assert!(t.vocab_size() > 256 && t.vocab_size() <= 300);
        let ids = t.encode(corpus.as_bytes())?;
        assert!(ids.len() * 2 < corpus.len());
        assert_eq!(t.decode(&ids)?, corpus.as_bytes());
        assert!(ids
            .iter()
            .any(|&i| t.token_bytes(i).is_some_and(|b| b.len() > 2)));
        let odd = [0xffu8, 0xfe, b'f', b'n', 0xc3];
        assert_eq!(t.decode(&t.encode(&odd)?)?, odd);
        let s = toml::to_string(&t).map_err(|e| Error::invalid("toml", e.to_string()))?;
        let back = Tokenizer::from_toml_value(&toml::Value::Table(
            toml::from_str(&s).map_err(|e| Error::invalid("toml", e.to_string()))?,
        ))?;
        assert_eq!(back, t);
        assert!(Tokenizer::Bpe {
            merges: vec![[1, 300]],
            coder: BpeCoder::default(),
        }
        .validate()
        .is_err());
        assert!(t.decode(&[t.vocab_size() as u32]).is_err());
        Ok(())
    }

    #[test]
    fn utf8_stream_never_splits_a_character() {
        let text = "héllo → wörld ✓";
        let bytes = text.as_bytes();
        let mut s = Utf8Stream::default();
        let mut out = String::new();
        for b in bytes {
            let piece = s.push(&[*b]);
            assert!(!piece.contains('\u{FFFD}'));
            out.push_str(&piece);
        }
        out.push_str(&s.finish());
        assert_eq!(out, text);
        let mut s = Utf8Stream::default();
        let got = s.push(&[b'a', 0xff, b'b', 0xe2, 0x82]);
        assert_eq!(got, "a\u{FFFD}b");
        assert_eq!(s.finish(), "\u{FFFD}");
    }
}
