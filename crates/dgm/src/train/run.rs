//! A run directory `runs/NAME/` and loading a trained model back from it.
//!
//! ```text
//! config.toml            everything needed to rebuild model, data and training
//! model.safetensors      the weights
//! ema.safetensors        the EMA of the weights
//! optimizer.safetensors  AdamW moments
//! state.json             step, optimiser update count, seed and RNG state
//! metrics.jsonl          one JSON object per logged step
//! samples/               sample grids written during training
//! loss.svg               the loss curve, written when training ends
//! ```

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{load_tensors, write_atomic};
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
    /// AdamW update count.
    pub adam_t: u64,
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
        if !path.is_dir() {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                msg: "no such run directory".into(),
            });
        }
        if !r.config_path().is_file() {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                msg: "not a run directory (no config.toml); runs are made by `dgm train --out DIR`"
                    .into(),
            });
        }
        Ok(r)
    }

    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.toml")
    }
    /// `model.safetensors`.
    pub fn model_path(&self) -> PathBuf {
        self.path.join("model.safetensors")
    }
    /// `ema.safetensors`.
    pub fn ema_path(&self) -> PathBuf {
        self.path.join("ema.safetensors")
    }
    /// `optimizer.safetensors`.
    pub fn optimizer_path(&self) -> PathBuf {
        self.path.join("optimizer.safetensors")
    }
    /// `state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.path.join("state.json")
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

    /// Reads `state.json`.
    pub fn load_state(&self) -> Result<TrainState> {
        let p = self.state_path();
        let text = std::fs::read_to_string(&p).map_err(|e| Error::Checkpoint {
            path: p.clone(),
            msg: format!("cannot read training state ({e}); the run has no checkpoint yet"),
        })?;
        serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path: p,
            msg: format!("corrupt: {e}"),
        })
    }

    /// Writes `state.json` atomically.
    pub fn save_state(&self, s: &TrainState) -> Result<()> {
        let text =
            serde_json::to_string_pretty(s).map_err(|e| Error::invalid("state", e.to_string()))?;
        write_atomic(&self.state_path(), text.as_bytes())
    }
}

/// Loads split `split` of the run's data set, with the run's generated-data sizes. Text is cut into windows
/// of `data.text.context` tokens, encoded with the tokenizer the run was trained with (`[model.tokenizer]`)
/// or, for a new run, the one `data.text.tokenizer` builds from the corpus.
pub fn load_data(cfg: &RunConfig, split: Split, data_dir: &Path) -> Result<Dataset> {
    let spec = DataSpec::parse(&cfg.data.name)?;
    let DataSpec::Text(name) = &spec else {
        return data::load(&spec, split, data_dir, &cfg.data.sizes);
    };
    let opts = cfg.data.text.clone().unwrap_or_default();
    let corpus = data::text::load(name, data_dir)?;
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
    let t = Tokenizer::deserialize(v.clone())
        .map_err(|e| Error::invalid("model.tokenizer", e.to_string()))?;
    t.validate()?;
    Ok(Some(t))
}

/// What a model needs to know about a data set.
pub fn data_info(ds: &Dataset, cfg: &RunConfig) -> DataInfo {
    DataInfo {
        example_shape: ds.example_shape.clone(),
        num_classes: ds.num_classes,
        preprocessing: cfg.data.preprocessing.clone(),
        tokenizer: ds.tokenizer().cloned(),
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

/// Loads the model of the run at `path` with the chosen weights.
pub fn load(path: &Path, weights: Weights, device: &Device) -> Result<LoadedRun> {
    let dir = RunDir::open(path)?;
    let config = dir.load_config()?;
    let state = dir.load_state()?;
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
    let file = match weights {
        Weights::Model => dir.model_path(),
        Weights::Ema => dir.ema_path(),
    };
    params.assign(&load_tensors(&file, device)?, &file)?;
    Ok(LoadedRun {
        config,
        state,
        model,
        params,
        weights,
    })
}
