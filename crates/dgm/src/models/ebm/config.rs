//! The config of the energy-based models of [`super::ebm`] (`[model]` of `ebm` and `jem`): presets, the
//! data-dependent fields [`prepare`] fills, the settings training refuses, and the memory estimate.

use serde::{Deserialize, Serialize};

use super::langevin::LangevinConfig;
use super::noise::{noise_map, NceNoise};
use crate::data::{Preprocessing, Range};
use crate::models::DataInfo;
use crate::{Error, Result};

/// The names `dgm train` takes for the models of [`super::ebm`].
pub const PRESETS: &[&str] = &["ebm", "jem"];
/// The training objectives of `ebm`.
pub const OBJECTIVES: &[&str] = &["cd", "nce"];

/// EBM hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EbmConfig {
    /// Shape of one example (`[c, h, w]` with h, w divisible by 4, or `[d]`; filled by [`prepare`]).
    pub example_shape: Vec<usize>,
    /// The box [lo, hi] the density lives on; empty = the data's range (images) or [−4, 4] (points).
    pub domain: Vec<f64>,
    /// `cd` (contrastive divergence) or `nce` (noise-contrastive estimation).
    pub objective: String,
    /// JEM: the network is a classifier and its logits define the energy (needs labels; objective `cd`).
    pub classifier: bool,
    /// Number of classes (filled by [`prepare`] for a classifier, else 0).
    pub num_classes: usize,
    /// Width C of the network.
    pub channels: usize,
    /// Persistent chains of CD (at least one batch).
    pub buffer_size: usize,
    /// Probability that a chain restarts from uniform noise at a step.
    pub reinit: f64,
    /// Weight α of the energy-magnitude penalty.
    pub alpha: f64,
    /// The Langevin sampler of training and of `dgm sample`.
    pub langevin: LangevinConfig,
    /// NCE's noise: empty = a Gaussian fitted to the data; else the folder of a trained run whose model has an
    /// exact density of the same data (a flow), made absolute by [`prepare`].
    pub noise_run: String,
    /// The affine map [a, b] from this model's data space into the noise run's (filled by [`prepare`]).
    pub noise_map: Vec<f64>,
}

impl Default for EbmConfig {
    fn default() -> Self {
        Self {
            example_shape: Vec::new(),
            domain: Vec::new(),
            objective: "cd".into(),
            classifier: false,
            num_classes: 0,
            channels: 32,
            buffer_size: 10_000,
            reinit: 0.05,
            alpha: 0.1,
            // JEM's settings (Grathwohl et al. 2019, appendix): 20 steps of size 1, noise 0.01
            langevin: LangevinConfig {
                steps: 20,
                step_size: 1.0,
                noise: 0.01,
                grad_clip: 0.0,
            },
            noise_run: String::new(),
            noise_map: Vec::new(),
        }
    }
}

impl EbmConfig {
    /// A small config for tests (data fields still to be filled by [`prepare`]).
    pub fn tiny() -> Self {
        Self {
            channels: 8,
            buffer_size: 64,
            langevin: LangevinConfig {
                steps: 5,
                ..Self::default().langevin
            },
            ..Self::default()
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        if !OBJECTIVES.contains(&self.objective.as_str()) {
            return Err(Error::unknown(
                "model.objective",
                self.objective.clone(),
                OBJECTIVES,
            ));
        }
        if self.classifier && self.objective != "cd" {
            return Err(Error::invalid(
                "model.objective",
                format!("'{}': a classifier (JEM) trains its energy by contrastive divergence, objective = \"cd\"", self.objective),
            ));
        }
        for (k, v) in [
            ("model.channels", self.channels),
            ("model.buffer_size", self.buffer_size),
        ] {
            if v == 0 {
                return Err(Error::invalid(k, "must be at least 1, got 0"));
            }
        }
        if !(0.0..=1.0).contains(&self.reinit) {
            return Err(Error::invalid(
                "model.reinit",
                format!("{} must be a probability in [0, 1]", self.reinit),
            ));
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(Error::invalid(
                "model.alpha",
                format!("{} must be a finite number ≥ 0", self.alpha),
            ));
        }
        self.langevin.validate().map_err(|e| match e {
            Error::InvalidValue { key, msg } => Error::InvalidValue {
                key: format!("model.{key}"),
                msg,
            },
            e => e,
        })?;
        if !self.noise_run.is_empty() && self.objective != "nce" {
            return Err(Error::invalid(
                "model.noise_run",
                format!(
                    "'{}' is the noise of NCE; objective '{}' has none (set model.objective = \"nce\")",
                    self.noise_run, self.objective
                ),
            ));
        }
        match self.domain.as_slice() {
            [] => {}
            [lo, hi] if lo.is_finite() && hi.is_finite() && lo < hi => {}
            d => {
                return Err(Error::invalid(
                    "model.domain",
                    format!(
                        "{d:?}: give [lo, hi] with finite lo < hi, or nothing for the data's range"
                    ),
                ))
            }
        }
        super::super::gan::dcgan::check_shape(&self.example_shape)
    }

    /// The box, once prepared.
    pub(super) fn bounds(&self) -> Result<(f64, f64)> {
        match self.domain.as_slice() {
            [lo, hi] => Ok((*lo, *hi)),
            _ => Err(Error::invalid("model.domain", "not prepared")),
        }
    }
}

/// The config of preset `name` (`ebm`, `jem`).
pub fn preset(name: &str) -> Result<EbmConfig> {
    match name {
        "ebm" => Ok(EbmConfig::default()),
        // JEM trains without the magnitude penalty
        "jem" => Ok(EbmConfig {
            classifier: true,
            alpha: 0.0,
            ..EbmConfig::default()
        }),
        other => Err(Error::unknown("model", other, PRESETS)),
    }
}

/// The config of preset `name` for 2-D points (what `dgm train ebm --data toy2d:…` starts from): an MLP of 128
/// units, α = 0.01 and Langevin dynamics at temperature 1, 100 steps of λ = 0.01 with ε = √(2λ).
pub fn points_preset(name: &str) -> Result<EbmConfig> {
    Ok(EbmConfig {
        channels: 128,
        alpha: 0.01,
        langevin: LangevinConfig::exact(100, 0.01),
        ..preset(name)?
    })
}

/// Fills the data fields: example shape, box, classes (a classifier needs labels); refuses data that are not
/// continuous values.
pub fn prepare(cfg: &mut EbmConfig, data: &DataInfo) -> Result<()> {
    super::super::gan::dcgan::check_shape(&data.example_shape)?;
    let image = data.example_shape.len() == 3;
    let range = match (&data.preprocessing, image) {
        (Preprocessing::Scale { range: Range::MinusOneOne, .. }, true) => Some((-1.0, 1.0)),
        (Preprocessing::Scale { range: Range::ZeroOne, .. }, true) => Some((0.0, 1.0)),
        (Preprocessing::Identity, false) => None,
        (p, _) => {
            return Err(Error::invalid(
                "data.preprocessing",
                format!("an energy-based model is a density over continuous values: images need {{ kind = \"scale\" }}, points none; got {}", p.describe()),
            ))
        }
    };
    if cfg.domain.is_empty() {
        let (lo, hi) = range.unwrap_or((-4.0, 4.0));
        cfg.domain = vec![lo, hi];
    }
    cfg.example_shape = data.example_shape.clone();
    if !cfg.noise_run.is_empty() && cfg.objective == "nce" {
        // the noise run: the same examples, continuous values; its path absolute so the run loads from anywhere
        let path = std::fs::canonicalize(&cfg.noise_run)
            .map_err(|e| Error::invalid("model.noise_run", format!("{}: {e}", cfg.noise_run)))?;
        let run = crate::train::RunDir::open(&path)?.load_config()?;
        let shape = crate::models::example_shape(&run.model.name, &run.model.config)?;
        if shape != data.example_shape {
            return Err(Error::invalid(
                "model.noise_run",
                format!(
                    "{}: its model '{}' has examples of shape {shape:?}, these data {:?}",
                    path.display(),
                    run.model.name,
                    data.example_shape
                ),
            ));
        }
        cfg.noise_map = noise_map(&data.preprocessing, &run.data.preprocessing)?.to_vec();
        cfg.noise_run = path.display().to_string();
        NceNoise::run(&cfg.noise_run, &cfg.noise_map, &candle_core::Device::Cpu)?.check_exact()?;
    }
    cfg.num_classes = match (cfg.classifier, data.num_classes) {
        (false, _) => 0,
        (true, Some(k)) if k > 1 => k,
        (true, _) => {
            return Err(Error::invalid(
                "model.classifier",
                "JEM is a classifier and this data set has no classes",
            ))
        }
    };
    cfg.validate()
}

/// Refuses training settings the model cannot run with: CD needs a buffer of at least one batch.
pub fn check_train(cfg: &EbmConfig, batch_size: usize) -> Result<()> {
    if cfg.objective == "cd" && cfg.buffer_size < batch_size {
        return Err(Error::invalid(
            "model.buffer_size",
            format!("{} chains cannot start a batch of {batch_size}: the buffer must hold at least one batch (train.batch_size)", cfg.buffer_size),
        ));
    }
    Ok(())
}

/// Memory: the buffer (and the NCE noise's statistics) besides the weights; per example about three copies of
/// each layer's output for the data and for a negative sample (the Langevin steps run one at a time).
pub fn footprint(cfg: &EbmConfig) -> crate::models::Footprint {
    use crate::models::{sat_mul, sat_prod, sat_sum};
    let d = sat_prod(&cfg.example_shape);
    let c = cfg.channels as u64;
    let layers = match cfg.example_shape.as_slice() {
        [_, h, w] => sat_mul(c, (*h as u64) * (*w as u64) * 2),
        _ => sat_mul(2, c),
    };
    let buffer = if cfg.objective == "cd" {
        sat_mul(cfg.buffer_size as u64, d)
    } else {
        sat_mul(2, d)
    };
    crate::models::Footprint {
        buffers: buffer,
        activations_per_example: sat_mul(6, sat_sum([layers, d])),
    }
}
