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

use crate::data::{DataKind, DataSpec, Preprocessing};
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

/// The kinds of data each model trains on (see [`check_data`]).
const DATA_KINDS: &[(&str, &[DataKind])] = &[
    ("vae", &[DataKind::Images, DataKind::Points]),
    ("iwae", &[DataKind::Images, DataKind::Points]),
    ("cvae", &[DataKind::Images, DataKind::Points]),
    ("ddpm", &[DataKind::Images, DataKind::Points]),
    ("edm", &[DataKind::Images, DataKind::Points]),
    ("ncsn", &[DataKind::Images, DataKind::Points]),
    ("made", &[DataKind::Images]),
    ("pixelcnn", &[DataKind::Images]),
    ("gpt", &[DataKind::Text]),
];

/// The kinds of data model `name` trains on: images (mnist, shapes), 2-D points (toy2d) or text.
pub fn data_kinds(name: &str) -> Result<&'static [DataKind]> {
    DATA_KINDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
        .ok_or_else(|| Error::unknown("model", name, MODEL_NAMES))
}

/// Refuses a model / data pair that cannot train (e.g. `vae` on text, `gpt` on images), in one line naming
/// the kinds of data the model takes and the models that take this data.
pub fn check_data(name: &str, spec: &DataSpec) -> Result<()> {
    let kinds = data_kinds(name)?;
    let kind = spec.kind();
    if kinds.contains(&kind) {
        return Ok(());
    }
    let takes: Vec<String> = kinds.iter().map(|k| k.describe()).collect();
    let others: Vec<&str> = DATA_KINDS
        .iter()
        .filter(|(_, k)| k.contains(&kind))
        .map(|(n, _)| *n)
        .collect();
    Err(Error::invalid(
        "data",
        format!(
            "model '{name}' trains on {}, not {} like '{}'; {} data go with: {}",
            takes.join(" or "),
            kind.name(),
            spec.name(),
            kind.name(),
            others.join(", ")
        ),
    ))
}

/// What a model needs in memory besides one copy of its parameters, in f32 values: the estimate behind
/// [`crate::memory`]'s refusals. Each family documents its count at its `footprint` function; it is an
/// estimate of the values a training step keeps alive (forward values saved for the backward pass, and their
/// gradients), within a small factor, not an exact account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Values the model keeps besides its parameters (MADE's masks); 0 for most models.
    pub buffers: u64,
    /// Values one training example keeps alive during a step (a batch of b keeps b times as many).
    pub activations_per_example: u64,
}

/// The [`Footprint`] of model `name` with its (prepared) config `cfg`.
pub fn footprint(name: &str, cfg: &toml::Table) -> Result<Footprint> {
    check_name(name)?;
    match name {
        "vae" | "iwae" | "cvae" => Ok(vae::config::footprint(&from_table(cfg)?)),
        "ddpm" => {
            let c: diffusion::DdpmConfig = from_table(cfg)?;
            Ok(Footprint {
                buffers: 0,
                activations_per_example: c.net.activations_per_example(),
            })
        }
        "edm" => {
            let c: diffusion::EdmConfig = from_table(cfg)?;
            Ok(Footprint {
                buffers: 0,
                activations_per_example: c.net.activations_per_example(),
            })
        }
        "ncsn" => {
            let c: diffusion::NcsnConfig = from_table(cfg)?;
            Ok(Footprint {
                buffers: 0,
                activations_per_example: c.net.activations_per_example(),
            })
        }
        "made" => Ok(autoregressive::made::footprint(&from_table(cfg)?)),
        "pixelcnn" => Ok(autoregressive::pixelcnn::footprint(&from_table(cfg)?)),
        "gpt" => Ok(autoregressive::gpt::footprint(&from_table(cfg)?)),
        _ => Err(Error::unknown("model", name, MODEL_NAMES)),
    }
}

/// The shape of one example of model `name` with its prepared config (`[c, h, w]` images, `[d]` vectors,
/// `[T]` token windows): the shape its samples have.
pub fn example_shape(name: &str, cfg: &toml::Table) -> Result<Vec<usize>> {
    check_name(name)?;
    let shape = match name {
        "vae" | "iwae" | "cvae" => from_table::<vae::VaeConfig>(cfg)?.input_shape,
        "ddpm" => from_table::<diffusion::DdpmConfig>(cfg)?.net.input_shape,
        "edm" => from_table::<diffusion::EdmConfig>(cfg)?.net.input_shape,
        "ncsn" => from_table::<diffusion::NcsnConfig>(cfg)?.net.input_shape,
        "made" => from_table::<autoregressive::made::MadeConfig>(cfg)?.example_shape,
        "pixelcnn" => from_table::<autoregressive::pixelcnn::PixelCnnConfig>(cfg)?.example_shape,
        "gpt" => vec![from_table::<autoregressive::gpt::GptConfig>(cfg)?.block_size],
        _ => return Err(Error::unknown("model", name, MODEL_NAMES)),
    };
    if shape.is_empty() {
        return Err(Error::invalid(
            "model",
            format!(
                "the config of model '{name}' has no example shape (it was not prepared with data)"
            ),
        ));
    }
    Ok(shape)
}

/// `a · b`, saturating (sizes come from user configs and may be absurd).
pub(crate) fn sat_mul(a: u64, b: u64) -> u64 {
    a.saturating_mul(b)
}

/// The saturating sum of `v`.
pub(crate) fn sat_sum(v: impl IntoIterator<Item = u64>) -> u64 {
    v.into_iter().fold(0u64, |a, b| a.saturating_add(b))
}

/// The saturating product of a shape's sizes.
pub(crate) fn sat_prod(shape: &[usize]) -> u64 {
    shape.iter().fold(1u64, |a, &b| a.saturating_mul(b as u64))
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

/// Builds model `name` from its (prepared) config, creating or loading variables through `vb`. A model whose
/// parameters (or buffers) alone do not fit in the available memory is refused first, in one line, before
/// anything is allocated ([`crate::memory::check_model`]).
pub fn build(name: &str, cfg: &toml::Table, vb: VarBuilder) -> Result<Box<dyn Model>> {
    check_name(name)?;
    crate::memory::check_model(name, cfg, &crate::memory::available()?)?;
    build_unchecked(name, cfg, vb)
}

/// [`build`] without the memory check (the shape-only count of [`crate::memory`] builds through this).
pub(crate) fn build_unchecked(
    name: &str,
    cfg: &toml::Table,
    vb: VarBuilder,
) -> Result<Box<dyn Model>> {
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
