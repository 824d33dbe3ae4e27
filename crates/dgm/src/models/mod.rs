//! Model families, and the registry that builds a model by name.
//!
//! A model's config is a typed serde struct in its own file; the registry moves it through TOML so that
//! `config.toml`, `--config FILE` and `--set model.key=value` all work the same way for every family.

pub mod autoregressive;
pub mod diffusion;
pub mod vae;

use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::data::Preprocessing;
use crate::model::Model;
use crate::{Error, Result};

/// The model names the registry knows, for `--help` and error messages.
pub const MODEL_NAMES: &[&str] = &[
    "vae", "iwae", "cvae", "ddpm", "edm", "ncsn", "made", "pixelcnn", "gpt",
];

/// What a model needs to know about its data to be built.
#[derive(Clone, Debug, PartialEq)]
pub struct DataInfo {
    /// Shape of one example: `[c, h, w]` or `[d]`.
    pub example_shape: Vec<usize>,
    /// Number of classes, if the data set has labels.
    pub num_classes: Option<usize>,
    /// How the data are preprocessed.
    pub preprocessing: Preprocessing,
    /// The tokenizer of text data (the examples are then token windows), `None` otherwise.
    pub tokenizer: Option<crate::data::Tokenizer>,
}

fn check_name(name: &str) -> Result<()> {
    if MODEL_NAMES.contains(&name) {
        Ok(())
    } else {
        Err(Error::unknown("model", name, MODEL_NAMES))
    }
}

/// Serialises a typed config to a TOML table.
pub fn to_table<T: Serialize>(cfg: &T) -> Result<toml::Table> {
    toml::Table::try_from(cfg)
        .map_err(|e| Error::invalid("model", format!("cannot serialise config: {e}")))
}

/// Deserialises a typed config from a TOML table; unknown keys are rejected with the valid ones listed.
pub fn from_table<T: DeserializeOwned + Serialize + Default>(t: &toml::Table) -> Result<T> {
    let valid = to_table(&T::default())?;
    if let Some(k) = t.keys().find(|k| !valid.contains_key(*k)) {
        let opts: Vec<&str> = valid.keys().map(|s| s.as_str()).collect();
        return Err(Error::unknown("model config key", k.clone(), &opts));
    }
    T::deserialize(toml::Value::Table(t.clone()))
        .map_err(|e| Error::invalid("model", e.to_string()))
}

/// The default config of model `name`, as a TOML table.
pub fn default_config(name: &str) -> Result<toml::Table> {
    check_name(name)?;
    match name {
        "vae" | "iwae" | "cvae" => to_table(&vae::preset(name)?),
        "ddpm" => to_table(&diffusion::DdpmConfig::default()),
        "edm" => to_table(&diffusion::EdmConfig::default()),
        "ncsn" => to_table(&diffusion::NcsnConfig::default()),
        "made" => to_table(&autoregressive::made::MadeConfig::default()),
        "pixelcnn" => to_table(&autoregressive::pixelcnn::PixelCnnConfig::default()),
        "gpt" => to_table(&autoregressive::gpt::GptConfig::default()),
        _ => Err(Error::unknown("model", name, MODEL_NAMES)),
    }
}

/// The preprocessing model `name` trains on by default for data set `spec`: diffusion models (DDPM, EDM, NCSN)
/// see 8-bit images scaled to [−1, 1] (Ho et al. 2020, section 3.3; no dequantization, so the discretized
/// decoder at t = 0 gives a likelihood of the 256 levels; EDM's σ_data = 0.5 and NCSN's σ levels assume this
/// range too); every other model takes the data set's default.
pub fn default_preprocessing(name: &str, spec: &crate::data::DataSpec) -> Preprocessing {
    match (name, spec.default_preprocessing()) {
        ("ddpm" | "edm" | "ncsn", Preprocessing::Binarize { .. } | Preprocessing::Scale { .. }) => {
            Preprocessing::Scale {
                range: crate::data::Range::MinusOneOne,
                dequantize: false,
            }
        }
        (_, p) => p,
    }
}

/// Fills the data-dependent fields of a model config (input shape, number of classes) and resolves automatic
/// choices (e.g. the VAE decoder from the preprocessing); rejects combinations that cannot work.
pub fn prepare(name: &str, cfg: &mut toml::Table, data: &DataInfo) -> Result<()> {
    check_name(name)?;
    match name {
        "vae" | "iwae" | "cvae" => {
            let mut c: vae::VaeConfig = from_table(cfg)?;
            vae::prepare(&mut c, data)?;
            *cfg = to_table(&c)?;
            Ok(())
        }
        "ddpm" => {
            let mut c: diffusion::DdpmConfig = from_table(cfg)?;
            diffusion::ddpm::prepare(&mut c, data)?;
            *cfg = to_table(&c)?;
            Ok(())
        }
        "edm" => {
            let mut c: diffusion::EdmConfig = from_table(cfg)?;
            diffusion::edm::prepare(&mut c, data)?;
            *cfg = to_table(&c)?;
            Ok(())
        }
        "ncsn" => {
            let mut c: diffusion::NcsnConfig = from_table(cfg)?;
            diffusion::ncsn::prepare(&mut c, data)?;
            *cfg = to_table(&c)?;
            Ok(())
        }
        "made" => {
            let mut c: autoregressive::made::MadeConfig = from_table(cfg)?;
            autoregressive::made::prepare(&mut c, data)?;
            *cfg = to_table(&c)?;
            Ok(())
        }
        "pixelcnn" => {
            let mut c: autoregressive::pixelcnn::PixelCnnConfig = from_table(cfg)?;
            autoregressive::pixelcnn::prepare(&mut c, data)?;
            *cfg = to_table(&c)?;
            Ok(())
        }
        "gpt" => {
            let mut c: autoregressive::gpt::GptConfig = from_table(cfg)?;
            autoregressive::gpt::prepare(&mut c, data)?;
            *cfg = to_table(&c)?;
            Ok(())
        }
        _ => Err(Error::unknown("model", name, MODEL_NAMES)),
    }
}

/// Builds model `name` from its (prepared) config, creating or loading variables through `vb`.
pub fn build(name: &str, cfg: &toml::Table, vb: VarBuilder) -> Result<Box<dyn Model>> {
    check_name(name)?;
    match name {
        "vae" | "iwae" | "cvae" => {
            let c: vae::VaeConfig = from_table(cfg)?;
            Ok(Box::new(vae::Vae::new(name, c, vb)?))
        }
        "ddpm" => {
            let c: diffusion::DdpmConfig = from_table(cfg)?;
            Ok(Box::new(diffusion::Ddpm::new(c, vb)?))
        }
        "edm" => {
            let c: diffusion::EdmConfig = from_table(cfg)?;
            Ok(Box::new(diffusion::Edm::new(c, vb)?))
        }
        "ncsn" => {
            let c: diffusion::NcsnConfig = from_table(cfg)?;
            Ok(Box::new(diffusion::Ncsn::new(c, vb)?))
        }
        "made" => {
            let c: autoregressive::made::MadeConfig = from_table(cfg)?;
            Ok(Box::new(autoregressive::made::Made::new(c, vb)?))
        }
        "pixelcnn" => {
            let c: autoregressive::pixelcnn::PixelCnnConfig = from_table(cfg)?;
            Ok(Box::new(autoregressive::pixelcnn::PixelCnn::new(c, vb)?))
        }
        "gpt" => {
            let c: autoregressive::gpt::GptConfig = from_table(cfg)?;
            Ok(Box::new(autoregressive::gpt::Gpt::new(c, vb)?))
        }
        _ => Err(Error::unknown("model", name, MODEL_NAMES)),
    }
}
