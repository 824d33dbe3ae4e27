//! Data sets and the batches drawn from them.
//!
//! Names used everywhere (CLI, configs, docs): `mnist`, `shapes`, `toy2d:<name>`, `text:<name or path>`,
//! `spoken-digits`.
//! Image data sets keep raw 8-bit pixels in memory; the [`Preprocessing`] chosen for a run turns them into
//! model inputs each time a batch is drawn (so dynamic binarisation and dequantisation noise are fresh every
//! time, and drawn from dgm's seeded [`Rng`]).

pub mod audio;
pub mod batch;
pub mod bpe;
pub mod captions;
pub mod mnist;
pub mod numbers;
pub mod ood;
pub mod shapes;
pub mod text;
pub mod tokenizer;
pub mod toy2d;
pub mod transforms;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use batch::Batch;
pub use captions::CaptionVocab;
pub use tokenizer::Tokenizer;
pub use transforms::{Preprocessing, Range};

use crate::rng::Rng;
use crate::{Error, Result};

/// The environment variable that points at the data directory (e.g. `DGM_DATA=../shared/data`).
pub const DATA_ENV: &str = "DGM_DATA";

/// Which part of a data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training examples.
    Train,
    /// Held out from training, for model selection (MNIST: the last 10k of the 60k training images).
    Validation,
    /// The test set (MNIST: t10k).
    Test,
}

impl Split {
    /// Parses `train`, `validation` (or `val`), `test`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "validation" | "val" | "valid" => Ok(Split::Validation),
            "test" => Ok(Split::Test),
            _ => Err(Error::unknown("split", s, &["train", "validation", "test"])),
        }
    }

    /// The lower-case name.
    pub fn name(&self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

/// The values one example is made of.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Raw 8-bit pixels, `n * c * h * w` values in (n, c, h, w) order.
    U8(Vec<u8>),
    /// Real values (e.g. 2-D points), `n * dim` values.
    F32(Vec<f32>),
    /// Windows of `window` consecutive token ids of one long sequence, starting every `stride` tokens
    /// (text: see [`text::TextCorpus::windows`]); batches are `(b, window)` u32 tensors.
    Tokens {
        /// The token ids of the whole split.
        ids: Arc<Vec<u32>>,
        /// Tokens per example.
        window: usize,
        /// Offset between consecutive examples.
        stride: usize,
        /// The tokenizer that made `ids`.
        tokenizer: Arc<Tokenizer>,
    },
}

/// An in-memory data set of fixed-shape examples, with optional class labels and captions.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The name it was loaded by (e.g. `mnist`, `toy2d:moons`).
    pub name: String,
    /// Shape of one example: `[c, h, w]` for images, `[d]` for vectors.
    pub example_shape: Vec<usize>,
    /// The values.
    pub storage: Storage,
    /// One class label per example, when the data set has classes.
    pub labels: Option<Vec<u32>>,
    /// Number of classes (labels are in `0..num_classes`).
    pub num_classes: Option<usize>,
    /// Names of the classes, in label order.
    pub class_names: Option<Vec<String>>,
    /// One English caption per example, when the data set has captions.
    pub captions: Option<Vec<String>>,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        let per = self.example_dim();
        match &self.storage {
            Storage::U8(v) => v.len() / per,
            Storage::F32(v) => v.len() / per,
            Storage::Tokens {
                ids,
                window,
                stride,
                ..
            } => match ids.len().checked_sub(*window) {
                Some(extra) => extra / stride.max(&1) + 1,
                None => 0,
            },
        }
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of values in one example (the data dimension used for bits/dim).
    pub fn example_dim(&self) -> usize {
        self.example_shape.iter().product::<usize>().max(1)
    }

    /// True for 8-bit image data.
    pub fn is_image(&self) -> bool {
        matches!(self.storage, Storage::U8(_))
    }

    /// The tokenizer of a token data set (text), `None` for images and vectors.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        match &self.storage {
            Storage::Tokens { tokenizer, .. } => Some(tokenizer),
            _ => None,
        }
    }

    /// For token windows (text): the bytes the first `n` windows decode to, in total (with a BPE tokenizer a
    /// token is several bytes: bits per byte = total bits / this). `None` for other data.
    pub fn window_bytes(&self, n: usize) -> Option<usize> {
        let Storage::Tokens {
            ids,
            window,
            stride,
            tokenizer,
        } = &self.storage
        else {
            return None;
        };
        let mut len = vec![0usize; tokenizer.vocab_size()];
        for (id, l) in len.iter_mut().enumerate() {
            *l = tokenizer.token_bytes(id as u32).map_or(0, |b| b.len());
        }
        Some(
            (0..n.min(self.len()))
                .flat_map(|i| &ids[i * stride..i * stride + window])
                .map(|&id| len.get(id as usize).copied().unwrap_or(0))
                .sum(),
        )
    }

    /// Builds the batch of examples `indices`, preprocessed by `prep` (randomness from `rng`).
    pub fn batch(
        &self,
        indices: &[usize],
        prep: &Preprocessing,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Batch> {
        let d = self.example_dim();
        let n = self.len();
        if let Some(&i) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::invalid(
                "index",
                format!("{i} out of range for {n} examples"),
            ));
        }
        let mut shape = vec![indices.len()];
        shape.extend_from_slice(&self.example_shape);
        let x = if let Storage::Tokens { ids, stride, .. } = &self.storage {
            let mut tokens = Vec::with_capacity(indices.len() * d);
            for &i in indices {
                tokens.extend_from_slice(&ids[i * stride..i * stride + d]);
            }
            Tensor::from_vec(tokens, shape, device)?
        } else {
            let mut values = Vec::with_capacity(indices.len() * d);
            for &i in indices {
                match &self.storage {
                    Storage::U8(v) => prep.apply_u8(&v[i * d..(i + 1) * d], i, rng, &mut values)?,
                    Storage::F32(v) => prep.apply_f32(&v[i * d..(i + 1) * d], &mut values)?,
                    Storage::Tokens { .. } => {}
                }
            }
            Tensor::from_vec(values, shape, device)?
        };
        let labels = match &self.labels {
            Some(l) => Some(Tensor::from_vec(
                indices.iter().map(|&i| l[i]).collect::<Vec<u32>>(),
                indices.len(),
                device,
            )?),
            None => None,
        };
        let captions = self
            .captions
            .as_ref()
            .map(|c| indices.iter().map(|&i| c[i].clone()).collect());
        Ok(Batch {
            x,
            labels,
            captions,
        })
    }

    /// Keeps only the examples `start..end` (used to split MNIST's 60k into 50k train / 10k validation).
    pub fn slice(&self, start: usize, end: usize) -> Dataset {
        let d = self.example_dim();
        let storage = match &self.storage {
            Storage::U8(v) => Storage::U8(v[start * d..end * d].to_vec()),
            Storage::F32(v) => Storage::F32(v[start * d..end * d].to_vec()),
            Storage::Tokens {
                ids,
                window,
                stride,
                tokenizer,
            } => Storage::Tokens {
                ids: Arc::new(match end.checked_sub(1) {
                    Some(last) if end > start => {
                        ids[start * stride..last * stride + window].to_vec()
                    }
                    _ => Vec::new(),
                }),
                window: *window,
                stride: *stride,
                tokenizer: tokenizer.clone(),
            },
        };
        Dataset {
            name: self.name.clone(),
            example_shape: self.example_shape.clone(),
            storage,
            labels: self.labels.as_ref().map(|l| l[start..end].to_vec()),
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
            captions: self.captions.as_ref().map(|c| c[start..end].to_vec()),
        }
    }
}

/// A parsed data set name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSpec {
    /// MNIST digits, 1×28×28, from IDX files under the data directory.
    Mnist,
    /// Procedurally generated RGB 32×32 coloured shapes with labels and captions.
    Shapes,
    /// A 2-D toy density by name (see [`toy2d::NAMES`]).
    Toy2d(String),
    /// A byte-level text corpus: a name under the data directory (`tinyshakespeare`) or a file path.
    Text(String),
    /// Spoken digits "zero" … "nine" as 8-bit μ-law codes, 8 kHz, padded with silence to 1 s
    /// ([`audio::dataset`]).
    SpokenDigits,
}

/// What a data set's examples are, for matching models to data ([`crate::models::check_data`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    /// 8-bit images (`mnist`, `shapes`).
    Images,
    /// Real-valued 2-D points (`toy2d:<name>`).
    Points,
    /// Token windows of a text corpus (`text:<name or path>`).
    Text,
    /// Audio clips as μ-law codes (`spoken-digits`).
    Audio,
}

impl DataKind {
    /// `images`, `points` or `text`.
    pub fn name(&self) -> &'static str {
        match self {
            DataKind::Images => "images",
            DataKind::Points => "points",
            DataKind::Text => "text",
            DataKind::Audio => "audio",
        }
    }

    /// The kind with the data set names that have it, e.g. `images (mnist, shapes)`.
    pub fn describe(&self) -> String {
        match self {
            DataKind::Images => "images (mnist, shapes)".into(),
            DataKind::Points => "2-D points (toy2d:<name>)".into(),
            DataKind::Text => "text (text:<name or path>)".into(),
            DataKind::Audio => "audio (spoken-digits)".into(),
        }
    }
}

/// The data set names `--help` lists.
pub const DATASET_NAMES: &[&str] = &[
    "mnist",
    "shapes",
    "toy2d:<name>",
    "text:<name or path>",
    "spoken-digits",
];

impl DataSpec {
    /// Parses a data set name such as `mnist`, `shapes`, `toy2d:moons`, `text:tinyshakespeare`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "mnist" => return Ok(DataSpec::Mnist),
            "shapes" => return Ok(DataSpec::Shapes),
            "spoken-digits" => return Ok(DataSpec::SpokenDigits),
            _ => {}
        }
        if let Some(name) = s.strip_prefix("toy2d:") {
            if !toy2d::NAMES.contains(&name) {
                return Err(Error::unknown("toy2d data set", name, toy2d::NAMES));
            }
            return Ok(DataSpec::Toy2d(name.to_string()));
        }
        if let Some(name) = s.strip_prefix("text:") {
            if name.is_empty() {
                return Err(Error::invalid(
                    "data",
                    "text: needs a corpus name or a file path, e.g. text:tinyshakespeare",
                ));
            }
            return Ok(DataSpec::Text(name.to_string()));
        }
        let toys: Vec<String> = toy2d::NAMES.iter().map(|n| format!("toy2d:{n}")).collect();
        let mut opts: Vec<&str> = vec!["mnist", "shapes"];
        opts.extend(toys.iter().map(|s| s.as_str()));
        opts.push("text:<name or path>");
        opts.push("spoken-digits");
        Err(Error::unknown("data set", s, &opts))
    }

    /// What the examples are: images, points or text.
    pub fn kind(&self) -> DataKind {
        match self {
            DataSpec::Mnist | DataSpec::Shapes => DataKind::Images,
            DataSpec::Toy2d(_) => DataKind::Points,
            DataSpec::Text(_) => DataKind::Text,
            DataSpec::SpokenDigits => DataKind::Audio,
        }
    }

    /// Bytes one generated example takes in memory (pixels or values, label and caption), for the sizes of
    /// generated data sets (`shapes`, `toy2d`); `None` for data read from files (bounded by the files).
    pub fn generated_example_bytes(&self) -> Option<u64> {
        match self {
            DataSpec::Shapes => Some(shapes::example_bytes(&shapes::ShapesConfig::default())),
            DataSpec::Toy2d(_) => Some(toy2d::EXAMPLE_BYTES),
            DataSpec::Mnist | DataSpec::Text(_) | DataSpec::SpokenDigits => None,
        }
    }

    /// The canonical name (inverse of [`DataSpec::parse`]).
    pub fn name(&self) -> String {
        match self {
            DataSpec::Mnist => "mnist".into(),
            DataSpec::Shapes => "shapes".into(),
            DataSpec::Toy2d(n) => format!("toy2d:{n}"),
            DataSpec::Text(n) => format!("text:{n}"),
            DataSpec::SpokenDigits => "spoken-digits".into(),
        }
    }

    /// The preprocessing a run uses by default for this data set: dynamically binarized MNIST (the usual
    /// likelihood benchmark), and shapes as its 256 pixel levels scaled to [0, 1] (so models with a
    /// discrete decoder score the 8-bit data exactly; continuous-density models set `dequantize = true`).
    pub fn default_preprocessing(&self) -> Preprocessing {
        match self {
            DataSpec::Mnist => Preprocessing::Binarize { dynamic: true },
            DataSpec::Shapes => Preprocessing::Scale {
                range: Range::ZeroOne,
                dequantize: false,
            },
            DataSpec::Toy2d(_) | DataSpec::Text(_) | DataSpec::SpokenDigits => {
                Preprocessing::Identity
            }
        }
    }
}

/// Where data sets are looked for: `explicit` (from `--data-dir`) if given, else `$DGM_DATA`, else `./data`.
pub fn data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os(DATA_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from("data"),
    }
}

/// Options for generated data sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratedSizes {
    /// Number of generated training examples (shapes, toy2d).
    pub train: usize,
    /// Number of generated validation examples.
    pub validation: usize,
    /// Number of generated test examples.
    pub test: usize,
}

impl Default for GeneratedSizes {
    fn default() -> Self {
        Self {
            train: 20_000,
            validation: 2_000,
            test: 2_000,
        }
    }
}

/// Loads the image / vector data set `spec`, split `split`. Text corpora are loaded with [`text::load`].
/// Generated data sets (`shapes`, `toy2d`) use `sizes` and a fixed seed per split, so every run sees the same data;
/// a size whose examples would not fit in the available memory ([`crate::memory`]) is refused before generating.
pub fn load(spec: &DataSpec, split: Split, dir: &Path, sizes: &GeneratedSizes) -> Result<Dataset> {
    load_holding_out(spec, split, dir, sizes, &[])
}

/// [`load`] without the (colour, shape) pairs in `holdout` ([`shapes::generate_holding_out`]; indices into
/// [`shapes::COLOURS`] and [`shapes::CLASS_NAMES`], e.g. from [`shapes::parse_holdout`]). Errors: pairs to hold
/// out from a data set other than `shapes`.
pub fn load_holding_out(
    spec: &DataSpec,
    split: Split,
    dir: &Path,
    sizes: &GeneratedSizes,
    holdout: &[(usize, usize)],
) -> Result<Dataset> {
    if !holdout.is_empty() && *spec != DataSpec::Shapes {
        return Err(Error::invalid(
            "data.holdout",
            format!(
                "held-out (colour, shape) pairs apply to shapes only, not {}",
                spec.name()
            ),
        ));
    }
    let split_seed = match split {
        Split::Train => 0,
        Split::Validation => 1,
        Split::Test => 2,
    };
    let n = match split {
        Split::Train => sizes.train,
        Split::Validation => sizes.validation,
        Split::Test => sizes.test,
    };
    if let Some(per) = spec.generated_example_bytes() {
        crate::memory::check_bytes(
            &format!("{n} generated {} examples", spec.name()),
            &format!("data.sizes.{}", split.name()),
            (n as u64).saturating_mul(per),
            &crate::memory::available()?,
        )?;
    }
    match spec {
        DataSpec::Mnist => mnist::load_split(dir, split),
        DataSpec::Shapes => Ok(shapes::generate_holding_out(
            n,
            0x05_A9E5_u64.wrapping_add(split_seed),
            &shapes::ShapesConfig::default(),
            holdout,
        )),
        DataSpec::Toy2d(name) => toy2d::generate(name, n, 0x70E2D_u64.wrapping_add(split_seed)),
        DataSpec::SpokenDigits => audio::dataset(dir, split),
        DataSpec::Text(_) => Err(Error::Unsupported(format!(
            "data set '{}' is a text corpus; image and 2-D models need mnist, shapes or toy2d:<name>",
            spec.name()
        ))),
    }
}

/// The data directory for tests that need real data: `$DGM_DATA`, a relative value resolved against the
/// workspace root (tests run with the crate directory as their working directory). `None` when unset (the
/// test then skips, saying so) — except in CI (`CI=true`), where it panics: a missing data set must fail the
/// test there, not let it pass silently. (With `DGM_DATA` set, a data set missing under it fails the test
/// too; see [`require_test_data`].)
#[cfg(test)]
pub(crate) fn test_data_dir() -> Option<PathBuf> {
    test_data_dir_from(std::env::var_os("CI"), std::env::var_os(DATA_ENV))
}

/// [`test_data_dir`] from the values of `CI` and `DGM_DATA`.
#[cfg(test)]
fn test_data_dir_from(
    ci: Option<std::ffi::OsString>,
    dgm_data: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let Some(v) = dgm_data.filter(|v| !v.is_empty()) else {
        if ci.is_some_and(|v| v == "true" || v == "1") {
            panic!("CI is set but DGM_DATA is not: the tests that need real data sets cannot run (set DGM_DATA to the data folder)");
        }
        return None;
    };
    let p = PathBuf::from(v);
    if p.is_absolute() {
        Some(p)
    } else {
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p))
    }
}

/// `found` (a data set located under [`test_data_dir`]), or `None` to skip the test when no data folder is
/// configured; panics when one is (`DGM_DATA` set, or CI) but `what` is not in it.
#[cfg(test)]
pub(crate) fn require_test_data(found: Option<PathBuf>, what: &str) -> Option<PathBuf> {
    match (found, test_data_dir()) {
        (Some(p), _) => Some(p),
        (None, Some(dir)) => panic!(
            "{what} not found under DGM_DATA ({}): with DGM_DATA set a missing data set fails the test",
            dir.display()
        ),
        (None, None) => {
            println!("skipped: DGM_DATA is not set, so the test needing {what} does not run");
            None
        }
    }
}

#[cfg(test)]
mod test_data_tests {
    use super::*;

    #[test]
    fn missing_data_fails_in_ci_and_skips_elsewhere() {
        // no DGM_DATA, not CI: skip
        assert_eq!(test_data_dir_from(None, None), None);
        assert_eq!(test_data_dir_from(Some("false".into()), None), None);
        // CI without DGM_DATA: fail
        for ci in ["true", "1"] {
            let r = std::panic::catch_unwind(|| test_data_dir_from(Some(ci.into()), None));
            assert!(r.is_err(), "CI={ci} without DGM_DATA must fail");
        }
        // DGM_DATA set: that folder, relative values from the workspace root
        assert_eq!(
            test_data_dir_from(Some("true".into()), Some("/data".into())),
            Some(PathBuf::from("/data"))
        );
        assert!(test_data_dir_from(None, Some("shared/data".into()))
            .is_some_and(|p| p.ends_with("../../shared/data")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated sets are checked against the memory before a single example is generated: 10¹¹ shapes
    /// (317 TB) or 10¹⁵ points are refused at once, naming the key.
    #[test]
    fn oversized_generated_sets_are_refused_before_generating() {
        let dir = Path::new("unused");
        for (spec, n) in [
            (DataSpec::Shapes, 100_000_000_000usize),
            (DataSpec::Toy2d("moons".into()), 1_000_000_000_000_000),
        ] {
            let sizes = GeneratedSizes {
                train: 10,
                validation: n,
                test: 10,
            };
            let e = load(&spec, Split::Validation, dir, &sizes)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("data.sizes.validation")
                    && e.contains(&n.to_string())
                    && e.contains("available"),
                "{e}"
            );
            assert_eq!(
                load(&spec, Split::Train, dir, &sizes).map(|d| d.len()).ok(),
                Some(10)
            );
        }
        // the per-example size the check uses covers a real example (pixels, label, caption)
        let ds = shapes::generate(50, 1, &shapes::ShapesConfig::default());
        let caption = ds
            .captions
            .iter()
            .flatten()
            .map(|c| c.len())
            .max()
            .unwrap_or(0) as u64;
        let per = DataSpec::Shapes.generated_example_bytes().unwrap_or(0);
        assert!(per >= 3 * 32 * 32 + 4 + 24 + caption, "{per}");
        assert_eq!(DataSpec::Mnist.generated_example_bytes(), None);
    }
}
