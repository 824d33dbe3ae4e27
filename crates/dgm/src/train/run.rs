//! A run directory `runs/NAME/` and loading a trained model back from it.
//!
//! ```text
//! config.toml            everything needed to rebuild model, data and training
//! checkpoint.json        the committed checkpoint: step, optimiser update count, seed, RNG state, and the
//!                        size and SHA-256 of each file below (see crate::checkpoint)
//! checkpoints/step-N/    model.safetensors (the weights), ema.safetensors (their EMA),
//!                        optimizer.safetensors (AdamW moments)
//! metrics.jsonl          one JSON object per logged step
//! samples/               sample grids written during training
//! loss.svg               the loss curve, written when training ends
//! .lock                  held (with the holder's PID inside) while a process trains the run
//! ```
//!
//! Runs written before checkpoint.json existed keep `model.safetensors`, `ema.safetensors`,
//! `optimizer.safetensors` and `state.json` at the top; they load as before (without hashes to check) and
//! move to the layout above at their next checkpoint.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{read_manifest, tensors_from_bytes, write_atomic, Manifest};
use crate::data::{self, DataSpec, Dataset, Split, Tokenizer};
use crate::model::Model;
use crate::models::{self, DataInfo};
use crate::nn::Params;
use crate::rng::RngState;
use crate::train::RunConfig;
use crate::{Error, Result};

/// The paths of a run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    /// The directory.
    pub path: PathBuf,
}

/// Training progress saved with every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps done.
    pub step: u64,
    /// AdamW update count (of the only parameter group; of the first when there are several).
    pub adam_t: u64,
    /// Update count per parameter group, written when a run has more than one group (runs with one group,
    /// and runs written before groups existed, have only `adam_t`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub optimizer_steps: BTreeMap<String, u64>,
    /// The run's seed.
    pub seed: u64,
    /// State of the generator that the next step will use (every step's generator is
    /// `Rng::stream(seed ^ STEP_SALT, step)`, so this is also derivable from `step`).
    pub rng: RngState,
    /// True when training reached `train.steps`.
    pub finished: bool,
    /// The dgm version that wrote the checkpoint.
    pub dgm_version: String,
}

/// Which weights to use from a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// The trained weights.
    Model,
    /// The exponential moving average of the weights.
    Ema,
}

impl Weights {
    /// Parses `model` or `ema`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "model" => Ok(Weights::Model),
            "ema" => Ok(Weights::Ema),
            _ => Err(Error::unknown("weights", s, &["ema", "model"])),
        }
    }

    /// The name `parse` accepts.
    pub fn name(&self) -> &'static str {
        match self {
            Weights::Model => "model",
            Weights::Ema => "ema",
        }
    }

    /// The checkpoint file that holds these weights.
    pub fn file(&self) -> &'static str {
        match self {
            Weights::Model => MODEL_FILE,
            Weights::Ema => EMA_FILE,
        }
    }
}

/// The checkpoint file of the trained weights.
pub const MODEL_FILE: &str = "model.safetensors";
/// The checkpoint file of the EMA weights.
pub const EMA_FILE: &str = "ema.safetensors";
/// The checkpoint file of the optimizer's moments.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The training state of a run written before `checkpoint.json` existed.
const LEGACY_STATE_FILE: &str = "state.json";
/// The lock file of a run directory.
pub const LOCK_FILE: &str = ".lock";

/// A run's committed checkpoint: its training state and where its files are.
#[derive(Clone, Debug)]
pub struct RunCheckpoint {
    /// The training state it was written with.
    pub state: TrainState,
    /// The manifest (`None` for a run written before manifests existed: files at the top, no hashes).
    pub manifest: Option<Manifest<TrainState>>,
}

impl RunCheckpoint {
    /// Reads checkpoint file `name` (e.g. [`MODEL_FILE`]), checked against the manifest's size and hash.
    pub fn read_file(&self, run: &RunDir, name: &str) -> Result<Vec<u8>> {
        match &self.manifest {
            Some(m) => m.read_file(&run.path, name),
            None => {
                let p = run.path.join(name);
                std::fs::read(&p).map_err(|e| Error::Checkpoint {
                    path: p,
                    msg: format!("cannot read: {e}"),
                })
            }
        }
    }

    /// Loads the tensors of checkpoint file `name` onto `device`.
    pub fn tensors(
        &self,
        run: &RunDir,
        name: &str,
        device: &Device,
    ) -> Result<BTreeMap<String, Tensor>> {
        let bytes = self.read_file(run, name)?;
        tensors_from_bytes(&bytes, &self.file_path(run, name), device)
    }

    /// Where checkpoint file `name` is.
    pub fn file_path(&self, run: &RunDir, name: &str) -> PathBuf {
        match &self.manifest {
            Some(m) => m.dir_path(&run.path).join(name),
            None => run.path.join(name),
        }
    }
}

/// The exclusive lock on a run directory, held while training it; released when dropped or when the process
/// ends (however it ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunDir {
    /// The run at `path` (need not exist yet).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// An existing run: `path` must hold a `config.toml`.
    pub fn open(path: &Path) -> Result<Self> {
        let r = Self::new(path);
        if !path.is_dir() || !r.config_path().is_file() {
            return Err(Error::NotARun {
                path: path.to_path_buf(),
                exists: path.is_dir(),
            });
        }
        Ok(r)
    }

    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.toml")
    }
    /// `metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }
    /// `samples/`.
    pub fn samples_dir(&self) -> PathBuf {
        self.path.join("samples")
    }

    /// Reads `config.toml`.
    pub fn load_config(&self) -> Result<RunConfig> {
        let p = self.config_path();
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        RunConfig::from_toml(&text).map_err(|e| Error::Checkpoint {
            path: p,
            msg: e.to_string(),
        })
    }

    /// Writes `config.toml` atomically.
    pub fn save_config(&self, cfg: &RunConfig) -> Result<()> {
        write_atomic(&self.config_path(), cfg.to_toml()?.as_bytes())
    }

    /// The committed checkpoint, `None` when the run has none yet (it stopped before its first one).
    pub fn checkpoint(&self) -> Result<Option<RunCheckpoint>> {
        if let Some(m) = read_manifest::<TrainState>(&self.path)? {
            return Ok(Some(RunCheckpoint {
                state: m.state.clone(),
                manifest: Some(m),
            }));
        }
        let p = self.path.join(LEGACY_STATE_FILE);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&p, e)),
        };
        let state = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path: p,
            msg: format!("corrupt: {e}"),
        })?;
        Ok(Some(RunCheckpoint {
            state,
            manifest: None,
        }))
    }

    /// The committed checkpoint, or an error saying that the run has none yet.
    pub fn require_checkpoint(&self) -> Result<RunCheckpoint> {
        self.checkpoint()?.ok_or_else(|| Error::Checkpoint {
            path: self.path.clone(),
            msg: "the run has no checkpoint yet (it stopped before writing its first one)".into(),
        })
    }

    /// The training state of the committed checkpoint.
    pub fn load_state(&self) -> Result<TrainState> {
        Ok(self.require_checkpoint()?.state)
    }

    /// Takes the exclusive lock on the run directory (creating the directory), or refuses with the PID of the
    /// process that holds it.
    pub fn lock(&self) -> Result<RunLock> {
        std::fs::create_dir_all(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let p = self.path.join(LOCK_FILE);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        match f.try_lock() {
            Ok(()) => {
                let pid = format!("{}\n", std::process::id());
                f.set_len(0)
                    .and_then(|()| f.write_all(pid.as_bytes()))
                    .map_err(|e| Error::io(&p, e))?;
                Ok(RunLock { _file: f })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = f.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("process {pid}"),
                    Err(_) => "another process".to_string(),
                };
                Err(Error::Checkpoint {
                    path: self.path.clone(),
                    msg: format!(
                        "is in use: {holder} is training it; wait for it to finish or stop it first"
                    ),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&p, e)),
        }
    }

    /// Removes the checkpoint files of the layout before `checkpoint.json` (once a manifest supersedes them).
    pub fn remove_legacy_files(&self) {
        for f in [LEGACY_STATE_FILE, MODEL_FILE, EMA_FILE, OPTIMIZER_FILE] {
            let _ = std::fs::remove_file(self.path.join(f));
        }
    }
}

/// Loads split `split` of the run's data set, with the run's generated-data sizes. Text is cut into windows
/// of `data.text.context` tokens, encoded with the tokenizer the run was trained with (`[model.tokenizer]`)
/// or, for a new run, the one `data.text.tokenizer` builds from the corpus.
pub fn load_data(cfg: &RunConfig, split: Split, data_dir: &Path) -> Result<Dataset> {
    let spec = DataSpec::parse(&cfg.data.name)?;
    let DataSpec::Text(name) = &spec else {
        // held-out pairs leave the training split only
        let holdout = match split {
            Split::Train => data::shapes::parse_holdout(&cfg.data.holdout, "data.holdout")?,
            _ => Vec::new(),
        };
        return data::load_holding_out(&spec, split, data_dir, &cfg.data.sizes, &holdout);
    };
    let opts = cfg.data.text.clone().unwrap_or_default();
    let corpus = data::text::load_split(name, data_dir, &opts.split)?;
    let tokenizer = match run_tokenizer(cfg)? {
        Some(t) => t,
        None => Tokenizer::from_corpus(&opts.tokenizer, &corpus.bytes)?,
    };
    corpus.windows(split, &tokenizer, opts.context)
}

/// The tokenizer saved in the run's model config (`[model.tokenizer]`), if it has one.
pub fn run_tokenizer(cfg: &RunConfig) -> Result<Option<Tokenizer>> {
    let Some(v) = cfg.model.config.get("tokenizer") else {
        return Ok(None);
    };
    if v.as_table().is_some_and(|t| t.is_empty()) {
        return Ok(None);
    }
    Tokenizer::from_toml_value(v).map(Some)
}

/// What a model needs to know about a data set.
pub fn data_info(ds: &Dataset, cfg: &RunConfig) -> DataInfo {
    DataInfo {
        example_shape: ds.example_shape.clone(),
        num_classes: ds.num_classes,
        preprocessing: cfg.data.preprocessing.clone(),
        tokenizer: ds.tokenizer().cloned(),
        caption_words: ds.captions.as_ref().map(|c| {
            crate::data::CaptionVocab::from_captions(c.iter().map(String::as_str), 0).words
        }),
    }
}

/// A trained model loaded from a run directory.
pub struct LoadedRun {
    /// The run's config.
    pub config: RunConfig,
    /// The training state of its last checkpoint.
    pub state: TrainState,
    /// The model, with the chosen weights.
    pub model: Box<dyn Model>,
    /// The variables behind `model`.
    pub params: Params,
    /// Which weights were loaded.
    pub weights: Weights,
}

/// Loads the model of the run at `path` with the chosen weights. The files are checked against the
/// checkpoint's manifest; if a training process commits a newer checkpoint (and removes the old one) while
/// they are read, they are read again from the new one.
pub fn load(path: &Path, weights: Weights, device: &Device) -> Result<LoadedRun> {
    let dir = RunDir::open(path)?;
    let config = dir.load_config()?;
    let mut attempt = 0;
    let (ckpt, tensors) = loop {
        let ckpt = dir.require_checkpoint()?;
        match ckpt.tensors(&dir, weights.file(), device) {
            Ok(t) => break (ckpt, t),
            Err(e) => {
                let moved_on = dir
                    .checkpoint()
                    .ok()
                    .flatten()
                    .and_then(|c| c.manifest)
                    .map(|m| m.dir)
                    != ckpt.manifest.map(|m| m.dir);
                attempt += 1;
                if !moved_on || attempt >= 5 {
                    return Err(e);
                }
            }
        }
    };
    let params = Params::new(config.seed, device);
    let model = models::build(
        &config.model.name,
        &config.model.config,
        params.var_builder(),
    )
    .map_err(|e| Error::Checkpoint {
        path: dir.config_path(),
        msg: e.to_string(),
    })?;
    params.assign(&tensors, &ckpt.file_path(&dir, weights.file()))?;
    Ok(LoadedRun {
        config,
        state: ckpt.state,
        model,
        params,
        weights,
    })
}
