//! Byte-level text corpora for the language models (nanoGPT style).
//!
//! A corpus is a file of bytes. The first 90 % of the bytes are the training split and the last 10 % the
//! validation split, as in nanoGPT's `shakespeare_char`; a corpus has no third part, so the test split is the
//! validation split (said wherever a report names it). Splits are contiguous, so no window straddles two.
//!
//! A directory whose top-level folders are separate works (e.g. one folder per Rust crate) can instead be split
//! **by folder** (`data.text.split = "folders"`, [`load_split`]): every folder lies wholly in one split, so
//! test text was never seen in training, not even as a neighbouring file. Folders are taken in the order of a
//! hash of their names (fixed, independent of their sizes): the first ones make the test split until it holds
//! ≥ 10 % of the bytes, the next ones the validation split until it does, the rest the training split. The
//! corpus is laid out train | validation | test, so splits stay contiguous.
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
    /// For a corpus split by folder: where the validation and the test splits start (else 90 % / 10 %).
    pub bounds: Option<(usize, usize)>,
    /// For a corpus split by folder: the folders of each split (train, validation, test).
    pub folders: Option<[Vec<String>; 3]>,
}

/// How a corpus is split: `tail` (the last 10 % of the bytes) or `folders` (whole top-level folders).
pub const SPLITS: &[&str] = &["tail", "folders"];

/// The share of the bytes the test and the validation splits each reach at least under the folder split.
pub const FOLDER_SPLIT_PERCENT: usize = 10;

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
/// used first; otherwise the generated parallel corpora of [`super::numbers`] (`numbers-en-de`,
/// `numbers-en-fr`) are made in memory. Missing → [`Error::DataNotFound`] listing where it looked; an empty file
/// is an error.
pub fn load(name_or_path: &str, dir: &Path) -> Result<TextCorpus> {
    let tried = candidates(name_or_path, dir);
    let found = tried.iter().find(|p| p.is_file() || p.is_dir());
    if found.is_none() && super::numbers::CORPORA.contains(&name_or_path) {
        return super::numbers::corpus(name_or_path);
    }
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
    Ok(TextCorpus::from_bytes(name_or_path, bytes))
}

/// [`load`] with the split `split` (one of [`SPLITS`]): `folders` needs a directory with at least 3
/// top-level folders holding text.
pub fn load_split(name_or_path: &str, dir: &Path, split: &str) -> Result<TextCorpus> {
    match split {
        "tail" => load(name_or_path, dir),
        "folders" => {
            let tried = candidates(name_or_path, dir);
            let Some(root) = tried.iter().find(|p| p.is_dir()) else {
                return Err(Error::invalid(
                    "data.text.split",
                    format!(
                        "'folders' splits a directory by its top-level folders, and text:{name_or_path} is not a directory"
                    ),
                ));
            };
            load_by_folders(name_or_path, root)
        }
        other => Err(Error::unknown("data.text.split", other, SPLITS)),
    }
}

/// FNV-1a of a folder name: the fixed order in which folders are drawn for the test and validation splits.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A directory split by its top-level folders (see the module docs).
fn load_by_folders(name: &str, root: &Path) -> Result<TextCorpus> {
    let mut parts: Vec<(String, Vec<u8>)> = Vec::new();
    for e in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let p = e.map_err(|e| Error::io(root, e))?.path();
        if p.is_dir() {
            let folder = p
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default();
            match load_dir(&folder, &p) {
                Ok(c) => parts.push((folder, c.bytes)),
                // a folder without text (docs, assets) is not a part; a folder that cannot be read is an error
                Err(Error::CorruptData { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if parts.len() < 3 {
        return Err(Error::invalid(
            "data.text.split",
            format!(
                "'folders' needs at least 3 top-level folders with .{} files in {}; it has {}",
                DIR_EXTENSIONS.join(" or ."),
                root.display(),
                parts.len()
            ),
        ));
    }
    parts.sort_by_key(|(f, _)| (name_hash(f), f.clone()));
    let total: usize = parts.iter().map(|(_, b)| b.len()).sum();
    let want = total * FOLDER_SPLIT_PERCENT / 100;
    // test first, then validation, each until it reaches its share; a split always gets one folder and
    // training keeps at least one
    let mut which = vec![0usize; parts.len()];
    let (mut test, mut val) = (0, 0);
    for (i, (_, b)) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            break;
        }
        if test < want || i == 0 {
            which[i] = 2;
            test += b.len();
        } else if val < want || i == 1 {
            which[i] = 1;
            val += b.len();
        } else {
            break;
        }
    }
    let mut bytes = Vec::with_capacity(total);
    let mut folders: [Vec<String>; 3] = Default::default();
    let mut starts = [0usize; 3];
    for s in 0..3 {
        starts[s] = bytes.len();
        let mut here: Vec<&(String, Vec<u8>)> = parts
            .iter()
            .zip(&which)
            .filter(|(_, &w)| w == s)
            .map(|(p, _)| p)
            .collect();
        here.sort_by(|a, b| a.0.cmp(&b.0));
        for (f, b) in here {
            folders[s].push(f.clone());
            bytes.extend_from_slice(b);
        }
    }
    Ok(TextCorpus {
        name: name.to_string(),
        bytes,
        bounds: Some((starts[1], starts[2])),
        folders: Some(folders),
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
    Ok(TextCorpus::from_bytes(name, bytes))
}

impl TextCorpus {
    /// A corpus from bytes in memory (split 90 % / 10 %).
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> TextCorpus {
        TextCorpus {
            name: name.into(),
            bytes,
            bounds: None,
            folders: None,
        }
    }

    /// Byte offsets `(start, end)` of `split`: train is the first 90 %, validation and test the last 10 %;
    /// for a corpus split by folder, its three parts.
    pub fn split_range(&self, split: Split) -> (usize, usize) {
        let n = self.bytes.len();
        if let Some((v, t)) = self.bounds {
            return match split {
                Split::Train => (0, v),
                Split::Validation => (v, t),
                Split::Test => (t, n),
            };
        }
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

    /// The folder split: each folder's text lies wholly in one split (no file in two), test and validation
    /// each hold at least 10 % of the bytes and neither is empty, the same folders every time, and fewer than
    /// 3 folders or a plain file are refused.
    #[test]
    fn folder_split_keeps_each_folder_in_one_split() -> TestResult {
        let d = std::env::temp_dir().join(format!("dgm-text-folders-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let mut files = Vec::new();
        for k in 0..12 {
            let f = d.join(format!("crate{k}")).join("src");
            std::fs::create_dir_all(&f)?;
            for j in 0..3 {
                let text = format!("// crate {k} file {j}\n{}\n", "x".repeat(50 * (k + 1) + j));
                std::fs::write(f.join(format!("m{j}.rs")), &text)?;
                files.push((format!("crate{k}"), text));
            }
        }
        let c = load_split(&d.display().to_string(), &d, "folders")?;
        let split_of = |s: Split| c.split(s).to_vec();
        let parts = [
            split_of(Split::Train),
            split_of(Split::Validation),
            split_of(Split::Test),
        ];
        let n = c.bytes.len();
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), n);
        for p in &parts[1..] {
            assert!(p.len() * 10 >= n, "{} of {n} bytes", p.len());
        }
        let folders = c.folders.clone().ok_or("no folders")?;
        for (folder, text) in &files {
            let inside: Vec<usize> = (0..3)
                .filter(|&s| String::from_utf8_lossy(&parts[s]).contains(text.as_str()))
                .collect();
            assert_eq!(inside.len(), 1, "{folder}: {text:?} in splits {inside:?}");
            assert!(
                folders[inside[0]].contains(folder),
                "{folder} listed elsewhere"
            );
        }
        assert_eq!(load_split(&d.display().to_string(), &d, "folders")?, c);
        // the tail split of the same folder is the old 90/10 one
        let tail = load_split(&d.display().to_string(), &d, "tail")?;
        assert!(tail.bounds.is_none() && tail.split(Split::Test) == tail.split(Split::Validation));
        let two = d.join("two");
        for k in 0..2 {
            std::fs::create_dir_all(two.join(format!("c{k}")))?;
            std::fs::write(two.join(format!("c{k}/a.rs")), "fn a() {}")?;
        }
        let e = load_split(&two.display().to_string(), &d, "folders").unwrap_err();
        assert!(e.to_string().contains("at least 3"), "{e}");
        let file = d.join("crate0/src/m0.rs");
        assert!(load_split(&file.display().to_string(), &d, "folders").is_err());
        assert!(load_split("x", &d, "random")
            .unwrap_err()
            .to_string()
            .contains("folders"));
        std::fs::remove_dir_all(&d)?;
        Ok(())
    }

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
