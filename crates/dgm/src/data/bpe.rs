//! Byte-level byte-pair encoding (Sennrich et al. 2016; GPT-2's byte-level form, Radford et al. 2019): the
//! vocabulary starts with the 256 byte values and each learned merge adds the token made of two existing ones,
//! `256 + i = merges[i].0 ++ merges[i].1`. Any byte string encodes (invalid UTF-8 included) and decodes back
//! exactly.
//!
//! **Pre-tokenization.** Merges never cross the boundaries of chunks, as in GPT-2: a chunk is a run of word
//! bytes (letters, digits, `_`, and every byte ≥ 0x80 so UTF-8 characters stay whole) with at most one space in
//! front, a run of other spaces and tabs, a run of newlines (`\r` included), or a run of one repeated
//! punctuation byte (`::` and `//` stay apart from the word after them). So `    let x_1 = foo::bar;` is
//! `"    ", "let", " x_1", " ", "=", " foo", "::", "bar", ";"`.
//!
//! **Training** counts the distinct chunks of the corpus, then repeatedly merges the most frequent adjacent
//! pair of tokens over all chunks weighted by their counts (ties: the smaller pair of ids), keeping the pair
//! counts up to date incrementally through an index of the chunks each pair occurs in.
//!
//! **Encoding** splits the text into chunks and, in each, repeatedly merges the adjacent pair with the
//! earliest merge (lowest rank) — the same tokens training would give that chunk.

use std::collections::{BTreeSet, HashMap};

use crate::{Error, Result};

/// Whether `b` belongs to a word chunk.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// The chunk class of a byte: word, blank (space / tab), newline, or another byte (its own class per value).
fn class(b: u8) -> u16 {
    match b {
        _ if is_word(b) => 256,
        b' ' | b'\t' => 257,
        b'\n' | b'\r' => 258,
        _ => b as u16,
    }
}

/// The pre-tokenization chunks of `text` (see the module docs), as byte ranges covering it in order.
pub fn chunks(text: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let start = i;
        // one space in front of a word belongs to the word
        if text[i] == b' ' && i + 1 < text.len() && is_word(text[i + 1]) {
            i += 1;
        }
        let c = class(text[i]);
        i += 1;
        while i < text.len() && class(text[i]) == c {
            // a blank run leaves its last space to a following word
            if c == 257 && text[i] == b' ' && i + 1 < text.len() && is_word(text[i + 1]) {
                break;
            }
            i += 1;
        }
        out.push((start, i));
    }
    out
}

/// Learns `merges` merges on `corpus` (fewer when no pair occurs twice any more).
pub fn train(corpus: &[u8], merges: usize) -> Vec<(u32, u32)> {
    // distinct chunks with their counts
    let mut counts: HashMap<&[u8], u64> = HashMap::new();
    for (a, b) in chunks(corpus) {
        *counts.entry(&corpus[a..b]).or_insert(0) += 1;
    }
    let mut words: Vec<(Vec<u32>, u64)> = counts
        .into_iter()
        .map(|(w, c)| (w.iter().map(|&b| b as u32).collect(), c))
        .collect();
    words.sort(); // a fixed order, whatever the hash map's
                  // pair → total count, and pair → the words it occurs in
    let mut pair_count: HashMap<(u32, u32), i64> = HashMap::new();
    let mut where_: HashMap<(u32, u32), BTreeSet<usize>> = HashMap::new();
    for (wi, (w, c)) in words.iter().enumerate() {
        for p in w.windows(2) {
            *pair_count.entry((p[0], p[1])).or_insert(0) += *c as i64;
            where_.entry((p[0], p[1])).or_default().insert(wi);
        }
    }
    // candidates ordered by (count, then the smaller pair first)
    let mut heap: BTreeSet<(i64, std::cmp::Reverse<(u32, u32)>)> = pair_count
        .iter()
        .map(|(&p, &c)| (c, std::cmp::Reverse(p)))
        .collect();
    let mut out = Vec::with_capacity(merges);
    while out.len() < merges {
        let Some(&(count, std::cmp::Reverse(pair))) = heap.iter().next_back() else {
            break;
        };
        if count < 2 {
            break;
        }
        let new = 256 + out.len() as u32;
        out.push(pair);
        let affected: Vec<usize> = where_.remove(&pair).into_iter().flatten().collect();
        for wi in affected {
            let (w, c) = &mut words[wi];
            let c = *c as i64;
            // take the word's pairs out, merge, put them back
            let mut delta: HashMap<(u32, u32), i64> = HashMap::new();
            for p in w.windows(2) {
                *delta.entry((p[0], p[1])).or_insert(0) -= c;
            }
            let mut merged = Vec::with_capacity(w.len());
            let mut k = 0;
            while k < w.len() {
                if k + 1 < w.len() && (w[k], w[k + 1]) == pair {
                    merged.push(new);
                    k += 2;
                } else {
                    merged.push(w[k]);
                    k += 1;
                }
            }
            *w = merged;
            for p in w.windows(2) {
                *delta.entry((p[0], p[1])).or_insert(0) += c;
                where_.entry((p[0], p[1])).or_default().insert(wi);
            }
            for (p, d) in delta {
                if d == 0 {
                    continue;
                }
                let old = pair_count.get(&p).copied().unwrap_or(0);
                heap.remove(&(old, std::cmp::Reverse(p)));
                let now = old + d;
                if now > 0 {
                    pair_count.insert(p, now);
                    heap.insert((now, std::cmp::Reverse(p)));
                } else {
                    pair_count.remove(&p);
                }
            }
        }
        heap.remove(&(count, std::cmp::Reverse(pair)));
        pair_count.remove(&pair);
    }
    out
}

/// Encodes and decodes with a list of merges.
#[derive(Clone, Debug)]
pub struct Bpe {
    ranks: HashMap<(u32, u32), u32>,
    tokens: Vec<Vec<u8>>,
}

impl Bpe {
    /// The encoder of `merges` (each pair of ids below its own id 256 + i); an invalid list is refused.
    pub fn new(merges: &[(u32, u32)]) -> Result<Self> {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut ranks = HashMap::with_capacity(merges.len());
        for (i, &(a, b)) in merges.iter().enumerate() {
            let id = 256 + i as u32;
            if a >= id || b >= id {
                return Err(Error::invalid(
                    "tokenizer.merges",
                    format!(
                        "merge {i} ({a}, {b}) uses a token not defined before it (ids below {id})"
                    ),
                ));
            }
            if ranks.insert((a, b), i as u32).is_some() {
                return Err(Error::invalid(
                    "tokenizer.merges",
                    format!("merge {i} ({a}, {b}) is listed twice"),
                ));
            }
            tokens.push([tokens[a as usize].clone(), tokens[b as usize].clone()].concat());
        }
        Ok(Self { ranks, tokens })
    }

    /// Number of tokens (256 + merges).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The bytes of token `id`.
    pub fn token(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize).map(Vec::as_slice)
    }

    /// The tokens of `text`.
    pub fn encode(&self, text: &[u8]) -> Vec<u32> {
        let mut cache: HashMap<&[u8], Vec<u32>> = HashMap::new();
        let mut out = Vec::with_capacity(text.len() / 3);
        for (a, b) in chunks(text) {
            let chunk = &text[a..b];
            let ids = cache
                .entry(chunk)
                .or_insert_with(|| self.encode_chunk(chunk));
            out.extend_from_slice(ids);
        }
        out
    }

    /// One chunk: merge the lowest-rank adjacent pair until none is left.
    fn encode_chunk(&self, chunk: &[u8]) -> Vec<u32> {
        let mut w: Vec<u32> = chunk.iter().map(|&b| b as u32).collect();
        loop {
            let best = w
                .windows(2)
                .enumerate()
                .filter_map(|(k, p)| self.ranks.get(&(p[0], p[1])).map(|&r| (r, k)))
                .min();
            let Some((rank, _)) = best else {
                return w;
            };
            let pair_new = 256 + rank;
            let mut merged = Vec::with_capacity(w.len());
            let mut k = 0;
            while k < w.len() {
                if k + 1 < w.len() && self.ranks.get(&(w[k], w[k + 1])) == Some(&rank) {
                    merged.push(pair_new);
                    k += 2;
                } else {
                    merged.push(w[k]);
                    k += 1;
                }
            }
            w = merged;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Chunks cover the text in order, a space goes with the word after it, punctuation runs stand alone.
    #[test]
    fn chunks_split_like_the_docs_say() {
        let t = b"    let x_1 = foo::bar;\n\n";
        let got: Vec<&str> = chunks(t)
            .iter()
            .map(|&(a, b)| std::str::from_utf8(&t[a..b]).unwrap_or("?"))
            .collect();
        assert_eq!(
            got,
            ["   ", " let", " x_1", " ", "=", " foo", "::", "bar", ";", "\n\n"]
        );
        let r = Rng::new(1).uniform_vec(500);
        let bytes: Vec<u8> = r.iter().map(|&u| (u * 256.0) as u8).collect();
        let c = chunks(&bytes);
        assert_eq!(c.first().map(|x| x.0), Some(0));
        assert_eq!(c.last().map(|x| x.1), Some(bytes.len()));
        assert!(c.windows(2).all(|w| w[0].1 == w[1].0 && w[0].0 < w[0].1));
    }

    /// On a small corpus the first merges are its most frequent pairs; encoding then decoding any bytes
    /// (random ones, invalid UTF-8) gives them back; the corpus needs fewer tokens than bytes; training is
    /// deterministic; a bad merge list is refused.
    #[test]
    fn merges_compress_and_round_trip() -> Result<()> {
        let corpus =
            "fn main() { let total = add(1, 2); }\nfn add(a: u32, b: u32) -> u32 { a + b }\n"
                .repeat(40);
        let merges = train(corpus.as_bytes(), 15);
        assert_eq!(merges.len(), 15);
        assert_eq!(merges, train(corpus.as_bytes(), 15));
        let bpe = Bpe::new(&merges)?;
        assert_eq!(bpe.vocab_size(), 271);
        let ids = bpe.encode(corpus.as_bytes());
        assert!(
            ids.len() * 3 < corpus.len() * 2,
            "{} tokens for {} bytes",
            ids.len(),
            corpus.len()
        );
        // with room for every merge, each chunk becomes one token: training stops when no pair repeats
        let all = train(corpus.as_bytes(), 1000);
        assert!(all.len() < 1000);
        let full = Bpe::new(&all)?;
        assert_eq!(
            full.encode(corpus.as_bytes()).len(),
            chunks(corpus.as_bytes()).len()
        );
        let back: Vec<u8> = ids
            .iter()
            .flat_map(|&i| bpe.token(i).unwrap_or(&[]).to_vec())
            .collect();
        assert_eq!(back, corpus.as_bytes());
        let r = Rng::new(2).uniform_vec(3000);
        let noise: Vec<u8> = r.iter().map(|&u| (u * 256.0) as u8).collect();
        let back: Vec<u8> = bpe
            .encode(&noise)
            .iter()
            .flat_map(|&i| bpe.token(i).unwrap_or(&[]).to_vec())
            .collect();
        assert_eq!(back, noise);
        // the most frequent pair of the corpus is the first merge: count it by brute force
        let mut pairs: HashMap<(u8, u8), usize> = HashMap::new();
        for (a, b) in chunks(corpus.as_bytes()) {
            for p in corpus.as_bytes()[a..b].windows(2) {
                *pairs.entry((p[0], p[1])).or_insert(0) += 1;
            }
        }
        let top = pairs.values().max().copied().unwrap_or(0);
        let first = (merges[0].0 as u8, merges[0].1 as u8);
        assert_eq!(pairs[&first], top);
        assert!(Bpe::new(&[(300, 1)]).is_err());
        assert!(Bpe::new(&[(1, 2), (1, 2)]).is_err());
        Ok(())
    }
}
