//! Byte-level text corpora for autoregressive models (nanoGPT style).
//!
//! A corpus is a file of bytes; its vocabulary is the set of distinct bytes, sorted, and a token id is an
//! index into that vocabulary. The first 90 % of the bytes are the training split, the next 5 % validation
//! and the last 5 % test (contiguous, so no window straddles two splits).

use std::path::{Path, PathBuf};

use super::Split;
use crate::rng::Rng;
use crate::{Error, Result};

/// Percentage of a corpus (from its start) used for training.
pub const TRAIN_PERCENT: usize = 90;
/// Percentage of a corpus (after the training part) used for validation; the rest is the test split.
pub const VALIDATION_PERCENT: usize = 5;

/// A byte-level text corpus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextCorpus {
    /// The name or path it was loaded by.
    pub name: String,
    /// The whole corpus.
    pub bytes: Vec<u8>,
    /// The distinct bytes of the corpus, sorted; token id `i` stands for `vocab[i]`.
    pub vocab: Vec<u8>,
}

/// The files a corpus name or path is looked for at, in order.
fn candidates(name_or_path: &str, dir: &Path) -> Vec<PathBuf> {
    let mut c = vec![PathBuf::from(name_or_path)];
    let is_bare_name = !name_or_path.contains(['/', '\\']) && !name_or_path.is_empty();
    if is_bare_name {
        c.push(dir.join(name_or_path).join("input.txt"));
        c.push(dir.join(name_or_path));
        c.push(dir.join(format!("{name_or_path}.txt")));
    }
    c
}

/// Loads a corpus: a name such as `tinyshakespeare` is read from `<dir>/tinyshakespeare/input.txt` (or
/// `<dir>/<name>`, `<dir>/<name>.txt`); anything else is a file path. An existing file at `name_or_path` is
/// used first. Missing → [`Error::DataNotFound`] listing where it looked; an empty file is an error.
pub fn load(name_or_path: &str, dir: &Path) -> Result<TextCorpus> {
    let tried = candidates(name_or_path, dir);
    let Some(path) = tried.iter().find(|p| p.is_file()) else {
        let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::DataNotFound {
            name: format!("text:{name_or_path}"),
            msg: format!(
                "no file at {}; give a text file path, or set DGM_DATA or --data-dir to a folder holding \
                 <name>/input.txt (e.g. ../shared/data with tinyshakespeare/input.txt)",
                list.join(", ")
            ),
        });
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() {
        return Err(Error::CorruptData {
            path: path.clone(),
            msg: "the text file is empty; a corpus needs at least one byte".into(),
        });
    }
    Ok(TextCorpus::from_bytes(name_or_path, bytes))
}

/// Makes a printable form of one byte for error messages.
fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        format!("{b:#04x} '{}'", b as char)
    } else {
        format!("{b:#04x}")
    }
}

impl TextCorpus {
    /// A corpus from bytes in memory; the vocabulary is computed from them.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> TextCorpus {
        let mut seen = [false; 256];
        for &b in &bytes {
            seen[b as usize] = true;
        }
        let vocab = (0..=255u8).filter(|&b| seen[b as usize]).collect();
        TextCorpus {
            name: name.into(),
            bytes,
            vocab,
        }
    }

    /// Number of distinct tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Byte → token id table (`u32::MAX` for bytes outside the vocabulary).
    fn table(&self) -> [u32; 256] {
        let mut t = [u32::MAX; 256];
        for (i, &b) in self.vocab.iter().enumerate() {
            t[b as usize] = i as u32;
        }
        t
    }

    /// Token ids of `bytes`. A byte outside the vocabulary is an error naming it and its offset.
    pub fn encode(&self, bytes: &[u8]) -> Result<Vec<u32>> {
        let t = self.table();
        bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| match t[b as usize] {
                u32::MAX => Err(Error::invalid(
                    "text",
                    format!(
                        "byte {} at offset {i} is not in the vocabulary of corpus '{}' ({} symbols: {})",
                        show_byte(b),
                        self.name,
                        self.vocab.len(),
                        String::from_utf8_lossy(&self.vocab).escape_debug()
                    ),
                )),
                id => Ok(id),
            })
            .collect()
    }

    /// The bytes of token ids `ids`. An id outside `0..vocab_size()` is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>> {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| {
                self.vocab.get(id as usize).copied().ok_or_else(|| {
                    Error::invalid(
                        "token id",
                        format!(
                            "{id} at position {i} is out of range; corpus '{}' has ids 0..{}",
                            self.name,
                            self.vocab.len()
                        ),
                    )
                })
            })
            .collect()
    }

    /// [`TextCorpus::decode`] as text (invalid UTF-8 sequences become U+FFFD).
    pub fn decode_string(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode(ids)?).into_owned())
    }

    /// Byte offsets `(start, end)` of `split` in the corpus: train is the first 90 %, validation the next 5 %,
    /// test the rest.
    pub fn split_range(&self, split: Split) -> (usize, usize) {
        let n = self.bytes.len();
        let a = n * TRAIN_PERCENT / 100;
        let b = n * (TRAIN_PERCENT + VALIDATION_PERCENT) / 100;
        match split {
            Split::Train => (0, a),
            Split::Validation => (a, b),
            Split::Test => (b, n),
        }
    }

    /// The bytes of `split` (see [`TextCorpus::split_range`]).
    pub fn split(&self, split: Split) -> &[u8] {
        let (a, b) = self.split_range(split);
        &self.bytes[a..b]
    }

    /// `batch` random windows of `block` tokens from `split`: returns `(inputs, targets)`, each
    /// `batch * block` token ids in row-major (batch, block) order, where the targets are the inputs shifted
    /// by one position (next-token prediction). Window starts are uniform over all valid offsets.
    pub fn random_windows(
        &self,
        split: Split,
        block: usize,
        batch: usize,
        rng: &mut Rng,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        if block == 0 || batch == 0 {
            return Err(Error::invalid(
                "block/batch size",
                format!("block size {block} and batch size {batch} must both be positive"),
            ));
        }
        let data = self.split(split);
        if data.len() <= block {
            return Err(Error::invalid(
                "block size",
                format!(
                    "the {} split of corpus '{}' has {} bytes; a block of {block} tokens needs at least {}",
                    split.name(),
                    self.name,
                    data.len(),
                    block + 1
                ),
            ));
        }
        let t = self.table();
        let mut x = Vec::with_capacity(batch * block);
        let mut y = Vec::with_capacity(batch * block);
        for _ in 0..batch {
            let s = rng.below(data.len() - block);
            // every byte of the corpus is in the vocabulary, so the table has no gaps here
            x.extend(data[s..s + block].iter().map(|&b| t[b as usize]));
            y.extend(data[s + 1..s + block + 1].iter().map(|&b| t[b as usize]));
        }
        Ok((x, y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    const TEXT: &str = "hello world, hello rust! the quick brown fox jumps over the lazy dog. \
                        abcdefghijklmnopqrstuvwxyz 0123456789 ...";

    fn corpus() -> TextCorpus {
        TextCorpus::from_bytes("small", TEXT.as_bytes().to_vec())
    }

    #[test]
    fn vocab_encode_decode() -> Result<()> {
        let c = TextCorpus::from_bytes("t", b"banana".to_vec());
        assert_eq!(c.vocab, b"abn".to_vec());
        assert_eq!(c.encode(b"banana")?, vec![1, 0, 2, 0, 2, 0]);
        assert_eq!(c.decode(&[2, 0, 1])?, b"nab".to_vec());
        let e = c.encode(b"bandana").unwrap_err().to_string();
        assert!(
            e.contains("'d'") && e.contains("offset 3") && e.contains("3 symbols"),
            "{e}"
        );
        let e = c.decode(&[0, 3]).unwrap_err().to_string();
        assert!(e.contains("3 at position 1") && e.contains("0..3"), "{e}");

        let c = corpus();
        let ids = c.encode(TEXT.as_bytes())?;
        assert_eq!(c.decode_string(&ids)?, TEXT);
        let mut v = c.vocab.clone();
        v.dedup();
        assert!(v.windows(2).all(|w| w[0] < w[1]) && v.len() == c.vocab.len());
        Ok(())
    }

    #[test]
    fn splits_are_contiguous_90_5_5() {
        let c = TextCorpus::from_bytes("x", (0..1000u32).map(|i| (i % 251) as u8).collect());
        assert_eq!(c.split(Split::Train).len(), 900);
        assert_eq!(c.split(Split::Validation).len(), 50);
        assert_eq!(c.split(Split::Test).len(), 50);
        let joined = [
            c.split(Split::Train),
            c.split(Split::Validation),
            c.split(Split::Test),
        ]
        .concat();
        assert_eq!(joined, c.bytes);
    }

    #[test]
    fn random_windows_are_shifted_slices_of_the_split() -> Result<()> {
        let c = TextCorpus::from_bytes("x", (0..2000u32).map(|i| (i % 200) as u8).collect());
        let mut r = Rng::new(3);
        let (x, y) = c.random_windows(Split::Validation, 8, 16, &mut r)?;
        assert_eq!((x.len(), y.len()), (128, 128));
        let val = c.split(Split::Validation);
        let vals = c.encode(val)?;
        for (xs, ys) in x.chunks(8).zip(y.chunks(8)) {
            assert_eq!(&xs[1..], &ys[..7]);
            // the window occurs in the validation split
            let found = vals.windows(9).any(|w| w[..8] == *xs && w[1..] == *ys);
            assert!(found, "{xs:?}");
        }
        // deterministic from the rng, different for another seed
        let again = c.random_windows(Split::Validation, 8, 16, &mut Rng::new(3))?;
        assert_eq!(again.0, x);
        let other = c.random_windows(Split::Validation, 8, 16, &mut Rng::new(4))?;
        assert_ne!(other.0, x);
        // block too large for the split
        let e = c
            .random_windows(Split::Test, 100, 1, &mut r)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test split") && e.contains("100 bytes") && e.contains("101"),
            "{e}"
        );
        assert!(c.random_windows(Split::Train, 0, 1, &mut r).is_err());
        // every start offset is reachable: with block = len - 2 there are exactly 2
        let small = TextCorpus::from_bytes("s", (0..100u8).collect());
        let mut starts = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let (x, _) = small.random_windows(Split::Train, 88, 1, &mut r)?;
            starts.insert(x[0]);
        }
        assert_eq!(starts.into_iter().collect::<Vec<_>>(), vec![0, 1]);
        Ok(())
    }

    #[test]
    fn load_by_name_or_path_and_missing() -> TestResult {
        let d = std::env::temp_dir().join(format!("dgm-text-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("mini"))?;
        std::fs::write(d.join("mini").join("input.txt"), TEXT)?;
        let c = load("mini", &d)?;
        assert_eq!(c.bytes, TEXT.as_bytes());
        assert_eq!(c.name, "mini");
        let p = d.join("mini").join("input.txt");
        let c2 = load(&p.display().to_string(), Path::new("/nonexistent"))?;
        assert_eq!(c2.bytes, c.bytes);

        let e = load("nothere", &d).unwrap_err();
        assert!(matches!(&e, Error::DataNotFound { .. }));
        let m = e.to_string();
        assert!(
            m.contains(&d.join("nothere").join("input.txt").display().to_string()),
            "{m}"
        );
        assert!(m.contains("DGM_DATA"), "{m}");

        std::fs::write(d.join("empty.txt"), "")?;
        let e = load(&d.join("empty.txt").display().to_string(), &d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
        Ok(())
    }

    #[test]
    fn tinyshakespeare() -> Result<()> {
        let Some(dir) = crate::data::test_data_dir() else {
            println!("skipped: DGM_DATA is not set");
            return Ok(());
        };
        let c = load("tinyshakespeare", &dir)?;
        assert_eq!(c.bytes.len(), 1_115_394);
        assert_eq!(c.vocab_size(), 65);
        assert!(c.bytes.starts_with(b"First Citizen:"));
        let ids = c.encode(c.split(Split::Test))?;
        assert_eq!(c.decode(&ids)?, c.split(Split::Test));
        let (x, y) = c.random_windows(Split::Train, 64, 4, &mut Rng::new(0))?;
        assert!(x.iter().chain(&y).all(|&t| (t as usize) < 65));
        Ok(())
    }
}
