//! Byte-level text corpora for the language models (nanoGPT style).
//!
//! A corpus is a file of bytes. The first 90 % of the bytes are the training split and the last 10 % the
//! validation split, as in nanoGPT's `shakespeare_char`; a corpus has no third part, so the test split is the
//! validation split (said wherever a report names it). Splits are contiguous, so no window straddles two.
//!
//! Models see a split as a [`Dataset`] of token windows ([`Storage::Tokens`]): every offset is a training
//! window (stride 1, drawn in a seeded random order by the loader), while evaluation windows tile the
//! split without overlap, so one pass over them scores every token once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::tokenizer::Tokenizer;
use super::{Dataset, Split, Storage};
use crate::{Error, Result};

/// Percentage of a corpus (from its start) used for training; the rest is validation (= test).
pub const TRAIN_PERCENT: usize = 90;

/// A text corpus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextCorpus {
    /// The name or path it was loaded by.
    pub name: String,
    /// The whole corpus.
    pub bytes: Vec<u8>,
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
/// `<dir>/<name>`, `<dir>/<name>.txt`); anything else is a file path, or a directory whose `.rs` and `.txt`
/// files are concatenated (see [`DIR_EXTENSIONS`]). An existing file at `name_or_path` is
/// used first. Missing → [`Error::DataNotFound`] listing where it looked; an empty file is an error.
pub fn load(name_or_path: &str, dir: &Path) -> Result<TextCorpus> {
    let tried = candidates(name_or_path, dir);
    let found = tried.iter().find(|p| p.is_file() || p.is_dir());
    if let Some(dir) = found.filter(|p| p.is_dir()) {
        return load_dir(name_or_path, dir);
    }
    let Some(path) = found else {
        let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::DataNotFound {
            name: format!("text:{name_or_path}"),
            msg: format!(
                "no file at {}; give a text file path, or set DGM_DATA or the data directory to a folder holding \
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
    Ok(TextCorpus {
        name: name_or_path.to_string(),
        bytes,
    })
}

/// The file extensions a directory corpus is made of.
pub const DIR_EXTENSIONS: &[&str] = &["rs", "txt"];

/// A directory as one corpus: its `.rs` and `.txt` files (recursively), in sorted path order, each followed
/// by a newline — e.g. Rust source code for a code model.
fn load_dir(name: &str, dir: &Path) -> Result<TextCorpus> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let p = e.map_err(|e| Error::io(&d, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| DIR_EXTENSIONS.contains(&x))
            {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut bytes = Vec::new();
    for f in &files {
        bytes.extend(std::fs::read(f).map_err(|e| Error::io(f, e))?);
        bytes.push(b'\n');
    }
    if bytes.is_empty() {
        return Err(Error::CorruptData {
            path: dir.to_path_buf(),
            msg: format!(
                "the directory holds no non-empty .{} files to make a corpus of",
                DIR_EXTENSIONS.join(" or .")
            ),
        });
    }
    Ok(TextCorpus {
        name: name.to_string(),
        bytes,
    })
}

impl TextCorpus {
    /// A corpus from bytes in memory.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> TextCorpus {
        TextCorpus {
            name: name.into(),
            bytes,
        }
    }

    /// Byte offsets `(start, end)` of `split`: train is the first 90 %, validation and test the last 10 %.
    pub fn split_range(&self, split: Split) -> (usize, usize) {
        let n = self.bytes.len();
        let a = n * TRAIN_PERCENT / 100;
        match split {
            Split::Train => (0, a),
            Split::Validation | Split::Test => (a, n),
        }
    }

    /// The bytes of `split` (see [`TextCorpus::split_range`]).
    pub fn split(&self, split: Split) -> &[u8] {
        let (a, b) = self.split_range(split);
        &self.bytes[a..b]
    }

    /// The windows of `window` tokens of `split`, encoded by `tokenizer`: every offset for training, the
    /// non-overlapping tiling for validation and test (the last partial window is dropped unless the split
    /// is shorter than one window, which is an error).
    pub fn windows(&self, split: Split, tokenizer: &Tokenizer, window: usize) -> Result<Dataset> {
        if window == 0 {
            return Err(Error::invalid("data.context", "must be positive"));
        }
        let data = self.split(split);
        let ids = tokenizer.encode(data).map_err(|e| {
            Error::invalid(
                format!("text:{}", self.name),
                format!("the {} split cannot be encoded: {e}", split.name()),
            )
        })?;
        if ids.len() < window {
            return Err(Error::invalid(
                "data.context",
                format!(
                    "a window of {window} tokens does not fit the {} split of corpus '{}' ({} tokens)",
                    split.name(),
                    self.name,
                    ids.len()
                ),
            ));
        }
        let stride = if split == Split::Train { 1 } else { window };
        Ok(Dataset {
            name: format!("text:{}", self.name),
            example_shape: vec![window],
            storage: Storage::Tokens {
                ids: Arc::new(ids),
                window,
                stride,
                tokenizer: Arc::new(tokenizer.clone()),
            },
            labels: None,
            num_classes: None,
            class_names: None,
            captions: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Preprocessing;
    use crate::rng::Rng;
    use candle_core::Device;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    const TEXT: &str = "hello world, hello rust! the quick brown fox jumps over the lazy dog. \
                        abcdefghijklmnopqrstuvwxyz 0123456789 ...";

    #[test]
    fn splits_are_contiguous_90_10() {
        let c = TextCorpus::from_bytes("x", (0..1000u32).map(|i| (i % 251) as u8).collect());
        assert_eq!(c.split(Split::Train).len(), 900);
        assert_eq!(c.split(Split::Validation).len(), 100);
        assert_eq!(c.split(Split::Test), c.split(Split::Validation));
        let joined = [c.split(Split::Train), c.split(Split::Validation)].concat();
        assert_eq!(joined, c.bytes);
    }

    #[test]
    fn windows_are_every_offset_for_training_and_a_tiling_for_evaluation() -> Result<()> {
        let c = TextCorpus::from_bytes("small", TEXT.repeat(10).into_bytes());
        let tok = Tokenizer::from_corpus("chars", &c.bytes)?;
        let train = c.windows(Split::Train, &tok, 8)?;
        let n_train = c.split(Split::Train).len();
        assert_eq!(train.len(), n_train - 8 + 1);
        assert_eq!(train.example_shape, vec![8]);
        let mut r = Rng::new(0);
        let b = train.batch(
            &[0, 5, train.len() - 1],
            &Preprocessing::Identity,
            &mut r,
            &Device::Cpu,
        )?;
        let x = b.x.to_vec2::<u32>()?;
        let all = tok.encode(c.split(Split::Train))?;
        assert_eq!(x[0], all[0..8].to_vec());
        assert_eq!(x[1], all[5..13].to_vec());
        assert_eq!(x[2], all[n_train - 8..].to_vec());
        let val = c.windows(Split::Validation, &tok, 8)?;
        let n_val = c.split(Split::Validation).len();
        assert_eq!(val.len(), n_val / 8);
        let idx: Vec<usize> = (0..val.len()).collect();
        let vb = val.batch(&idx, &Preprocessing::Identity, &mut r, &Device::Cpu)?;
        let flat: Vec<u32> = vb.x.flatten_all()?.to_vec1::<u32>()?;
        assert_eq!(
            flat,
            tok.encode(&c.split(Split::Validation)[..val.len() * 8])?
        );
        assert!(val
            .batch(&[val.len()], &Preprocessing::Identity, &mut r, &Device::Cpu)
            .is_err());
        // a window longer than the split, or zero
        let e = c
            .windows(Split::Validation, &tok, 10_000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("10000") && e.contains("validation"), "{e}");
        assert!(c.windows(Split::Train, &tok, 0).is_err());
        // bytes outside a chars vocabulary cannot be encoded
        let other = Tokenizer::from_corpus("chars", b"abc")?;
        assert!(c.windows(Split::Train, &other, 8).is_err());
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

        // a directory: its .rs and .txt files in path order, others ignored
        std::fs::create_dir_all(d.join("code").join("sub"))?;
        std::fs::write(d.join("code").join("b.rs"), "fn b() {}")?;
        std::fs::write(d.join("code").join("sub").join("a.txt"), "A")?;
        std::fs::write(d.join("code").join("c.bin"), "ignored")?;
        let dir_path = d.join("code").display().to_string();
        let c = load(&dir_path, Path::new("/nonexistent"))?;
        assert_eq!(c.bytes, b"fn b() {}\nA\n".to_vec());
        std::fs::create_dir_all(d.join("nofiles"))?;
        let e = load(&d.join("nofiles").display().to_string(), &d)
            .unwrap_err()
            .to_string();
        assert!(e.contains(".rs"), "{e}");

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
        assert!(c.bytes.starts_with(b"First Citizen:"));
        let tok = Tokenizer::from_corpus("chars", &c.bytes)?;
        assert_eq!(tok.vocab_size(), 65);
        // nanoGPT's shakespeare_char split: 1 003 854 training and 111 540 validation characters
        assert_eq!(c.split(Split::Train).len(), 1_003_854);
        assert_eq!(c.split(Split::Validation).len(), 111_540);
        let ids = tok.encode(c.split(Split::Test))?;
        assert_eq!(tok.decode(&ids)?, c.split(Split::Test));
        Ok(())
    }
}
