//! The run configuration: everything needed to rebuild a run's model, data and training, saved as
//! `config.toml` in the run directory (beside the weights, never inside them). `--set key=value` overrides
//! any key by its dotted path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::{DataSpec, GeneratedSizes, Preprocessing};
use crate::{models, Error, Result};

/// A whole run: seed, model, data and training settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Seed for everything random in the run (init, data order, noise).
    pub seed: u64,
    /// The model: `name` plus the model's own config keys.
    pub model: ModelSection,
    /// The data set and its preprocessing.
    pub data: DataConfig,
    /// Optimiser and loop settings.
    pub train: TrainConfig,
}

/// The `[model]` table: the registry name and the model's own keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSection {
    /// Registry name (`vae`, `iwae`, `cvae`, ...).
    pub name: String,
    /// The model's config keys (see the model's `Config`).
    #[serde(flatten)]
    pub config: toml::Table,
}

/// The `[data]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Data set name: `mnist`, `shapes`, `toy2d:<name>`.
    pub name: String,
    /// How raw data become model inputs.
    pub preprocessing: Preprocessing,
    /// Sizes of generated data sets (shapes, toy2d); ignored for files.
    #[serde(default)]
    pub sizes: GeneratedSizes,
    /// How text corpora are cut into training examples (`text:<name>` data only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextOptions>,
    /// `shapes` only: (colour, shape) pairs left out of the training split, e.g. `["red circle", "blue
    /// star"]`, to measure how a caption model generalises to combinations it never saw. The validation and
    /// test splits keep every pair.
    #[serde(default)]
    pub holdout: Vec<String>,
}

/// The `[data.text]` table of text data sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextOptions {
    /// Tokens per training example: the language model's context length (nanoGPT's `block_size`).
    pub context: usize,
    /// The tokenizer built from the corpus when training starts (`chars` or `bytes`); afterwards the run
    /// keeps the one it was trained with in `[model.tokenizer]`.
    pub tokenizer: String,
    /// How the corpus is split (see [`crate::data::text`]): `tail` (the last 10 % of the bytes is validation
    /// and test) or `folders` (whole top-level folders, e.g. crates, in each split).
    pub split: String,
}

impl Default for TextOptions {
    fn default() -> Self {
        Self {
            context: 256,
            tokenizer: "chars".into(),
            split: "tail".into(),
        }
    }
}

/// The `[train]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Number of optimiser steps.
    pub steps: u64,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are accumulated per optimiser step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Adam β₁.
    pub beta1: f64,
    /// Adam β₂.
    pub beta2: f64,
    /// Adam ε.
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 = Adam.
    pub weight_decay: f64,
    /// Apply the weight decay only to variables of two or more dimensions (weights, embeddings), not to
    /// biases and normalisation gains (GPT-2 / nanoGPT); `false` decays every variable.
    pub decay_matrices_only: bool,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Cosine decay to `lr * min_lr_ratio` at the last step (1.0 = constant after warm-up).
    pub min_lr_ratio: f64,
    /// Clip gradients to this global L2 norm (0 = no clipping).
    pub grad_clip: f64,
    /// EMA decay of the weights (0 = no EMA; the EMA then equals the weights).
    pub ema_decay: f64,
    /// Log a metrics line every this many steps.
    pub log_every: u64,
    /// Validation loss every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Batches of validation data per validation.
    pub eval_batches: usize,
    /// Sample grid every this many steps (0 = only at the end).
    pub sample_every: u64,
    /// Checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// `[train.groups.<name>]`: a parameter group's own optimiser settings, for models with several groups
    /// (GANs: `generator`, `discriminator`); keys left out take the values above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, GroupConfig>,
}

/// One parameter group's optimiser settings (`[train.groups.<name>]`); unset keys take `[train]`'s value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    /// Peak learning rate.
    pub lr: Option<f64>,
    /// Adam β₁.
    pub beta1: Option<f64>,
    /// Adam β₂.
    pub beta2: Option<f64>,
    /// Adam ε.
    pub eps: Option<f64>,
    /// Decoupled weight decay.
    pub weight_decay: Option<f64>,
    /// Linear warm-up steps.
    pub warmup_steps: Option<u64>,
    /// Cosine decay to `lr * min_lr_ratio`.
    pub min_lr_ratio: Option<f64>,
    /// Clip the group's gradients to this global L2 norm (0 = no clipping).
    pub grad_clip: Option<f64>,
}

impl TrainConfig {
    /// The `[train]` settings with group `name`'s overrides applied, validated (an error names
    /// `train.groups.<name>.<key>`).
    pub fn for_group(&self, name: &str) -> Result<TrainConfig> {
        let mut t = self.clone();
        t.groups.clear();
        if let Some(g) = self.groups.get(name) {
            t.lr = g.lr.unwrap_or(t.lr);
            t.beta1 = g.beta1.unwrap_or(t.beta1);
            t.beta2 = g.beta2.unwrap_or(t.beta2);
            t.eps = g.eps.unwrap_or(t.eps);
            t.weight_decay = g.weight_decay.unwrap_or(t.weight_decay);
            t.warmup_steps = g.warmup_steps.unwrap_or(t.warmup_steps);
            t.min_lr_ratio = g.min_lr_ratio.unwrap_or(t.min_lr_ratio);
            t.grad_clip = g.grad_clip.unwrap_or(t.grad_clip);
        }
        t.validate().map_err(|e| match e {
            Error::InvalidValue { key, msg } => Error::InvalidValue {
                key: key.replacen("train.", &format!("train.groups.{name}."), 1),
                msg,
            },
            e => e,
        })?;
        Ok(t)
    }

    /// Refuses `[train.groups.*]` tables that name no group of the model (`groups`: the model's groups).
    pub fn check_groups(&self, model: &str, groups: &[&str]) -> Result<()> {
        if let Some(k) = self.groups.keys().find(|k| !groups.contains(&k.as_str())) {
            return Err(Error::invalid(
                format!("train.groups.{k}"),
                if groups.len() < 2 {
                    format!(
                        "model '{model}' trains one group of parameters with the [train] settings; per-group \
                         settings apply to GANs (generator, discriminator)"
                    )
                } else {
                    format!("model '{model}' has the groups {}", groups.join(", "))
                },
            ));
        }
        Ok(())
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 128,
            grad_accum: 1,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decay_matrices_only: false,
            warmup_steps: 100,
            min_lr_ratio: 0.1,
            grad_clip: 0.0,
            ema_decay: 0.999,
            log_every: 50,
            eval_every: 1000,
            eval_batches: 10,
            sample_every: 1000,
            checkpoint_every: 1000,
            groups: BTreeMap::new(),
        }
    }
}

impl TrainConfig {
    /// Rejects settings that cannot work, naming the key.
    pub fn validate(&self) -> Result<()> {
        let pos = |k: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(Error::invalid(
                    format!("train.{k}"),
                    format!("{v} must be positive"),
                ))
            }
        };
        pos("steps", self.steps as f64)?;
        pos("batch_size", self.batch_size as f64)?;
        pos("grad_accum", self.grad_accum as f64)?;
        pos("lr", self.lr)?;
        pos("eps", self.eps)?;
        pos("log_every", self.log_every as f64)?;
        pos("eval_batches", self.eval_batches as f64)?;
        for (k, v) in [
            ("beta1", self.beta1),
            ("beta2", self.beta2),
            ("ema_decay", self.ema_decay),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::invalid(
                    format!("train.{k}"),
                    format!("{v} must be in [0, 1)"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(Error::invalid(
                "train.min_lr_ratio",
                format!("{} must be in [0, 1]", self.min_lr_ratio),
            ));
        }
        for (k, v, what) in [
            ("weight_decay", self.weight_decay, "0 = no decay"),
            ("grad_clip", self.grad_clip, "0 = no clipping"),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid(
                    format!("train.{k}"),
                    format!("{v} must be a finite number ≥ 0 ({what})"),
                ));
            }
        }
        for name in self.groups.keys() {
            self.for_group(name)?;
        }
        Ok(())
    }
}

impl RunConfig {
    /// The default config for model `model` on data set `data`.
    pub fn new(model: &str, data: &str) -> Result<Self> {
        let spec = DataSpec::parse(data)?;
        let config = models::default_config(model)?;
        let mut train = TrainConfig::default();
        if let DataSpec::Toy2d(_) = spec {
            train.batch_size = 256;
        }
        if models::entry(model)?.abilities.adversarial {
            // constant lr 2·10⁻⁴ for both players; Adam's β as DCGAN (0.5, 0.999) or, with a spectrally
            // normalised critic, as SN-GAN (0, 0.9)
            train.lr = 2e-4;
            (train.beta1, train.beta2) = if model == "dcgan" {
                (0.5, 0.999)
            } else {
                (0.0, 0.9)
            };
            train.warmup_steps = 0;
            train.min_lr_ratio = 1.0;
        }
        let mut config = config;
        if models::entry(model)?.family == "ebm" {
            // Adam with β₁ = 0 and lr 10⁻⁴ (Du & Mordatch 2019; Grathwohl et al. 2019)
            (train.lr, train.beta1) = (1e-4, 0.0);
            if let DataSpec::Toy2d(_) = spec {
                // points: a wider MLP, plain Langevin at temperature 1, lr 10⁻³
                config = models::to_table(&crate::models::ebm::ebm::points_preset(model)?)?;
                train.lr = 1e-3;
            }
        }
        let text = matches!(spec, DataSpec::Text(_)).then(TextOptions::default);
        Ok(Self {
            seed: 0,
            model: ModelSection {
                name: model.to_string(),
                config,
            },
            data: DataConfig {
                name: spec.name(),
                preprocessing: models::default_preprocessing(model, &spec),
                sizes: Default::default(),
                text,
                holdout: Vec::new(),
            },
            train,
        })
    }

    /// Parses a `config.toml`.
    /// Model keys the file leaves out take the model's defaults (so every key can be `--set`).
    pub fn from_toml(text: &str) -> Result<Self> {
        let mut c: RunConfig =
            toml::from_str(text).map_err(|e| Error::invalid("config", one_line(&e.to_string())))?;
        c.validate()?;
        for (k, v) in models::default_config(&c.model.name)? {
            c.model.config.entry(k).or_insert(v);
        }
        Ok(c)
    }

    /// The TOML text of this config.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::invalid("config", e.to_string()))
    }

    /// Checks names and values (model keys against the model's config, data name, training values).
    pub fn validate(&self) -> Result<()> {
        let spec = DataSpec::parse(&self.data.name)?;
        self.train.validate()?;
        models::check_data(&self.model.name, &spec)?;
        if !self.data.holdout.is_empty() {
            if spec != DataSpec::Shapes {
                return Err(Error::invalid(
                    "data.holdout",
                    format!(
                        "held-out (colour, shape) pairs apply to shapes only, not {}",
                        spec.name()
                    ),
                ));
            }
            crate::data::shapes::parse_holdout(&self.data.holdout, "data.holdout")?;
        }
        match (&spec, &self.data.text) {
            (DataSpec::Text(_), Some(t)) => {
                if t.context == 0 {
                    return Err(Error::invalid("data.text.context", "0 must be positive"));
                }
                crate::data::tokenizer::parse_name(&t.tokenizer)?;
            }
            (DataSpec::Text(_), None) => {
                return Err(Error::invalid(
                    "data.text",
                    "text data need a [data.text] table (context, tokenizer)",
                ))
            }
            (_, Some(_)) => {
                return Err(Error::invalid(
                    "data.text",
                    format!(
                        "only text data take [data.text]; '{}' is not text",
                        self.data.name
                    ),
                ))
            }
            (_, None) => {}
        }
        let defaults = models::default_config(&self.model.name)?;
        if let Some(k) = self
            .model
            .config
            .keys()
            .find(|k| !defaults.contains_key(*k))
        {
            let mut opts: Vec<&str> = vec!["name"];
            opts.extend(defaults.keys().map(|s| s.as_str()));
            return Err(Error::unknown("key in [model]", k.clone(), &opts));
        }
        Ok(())
    }

    /// Applies one `key=value` override, e.g. `train.lr=3e-4`, `model.latent_dim=16`, `seed=3`.
    /// The key must exist; the value is parsed as TOML (a bare word is taken as a string) and must have the
    /// type of the current value.
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let (key, raw) = assignment.split_once('=').ok_or_else(|| {
            Error::invalid("override", format!("'{assignment}' is not key=value"))
        })?;
        let (key, raw) = (key.trim(), raw.trim());
        let mut root =
            toml::Table::try_from(&*self).map_err(|e| Error::invalid("config", e.to_string()))?;
        let path: Vec<&str> = key.split('.').collect();
        if let ["train", "groups", group, field] = path.as_slice() {
            open_group_key(&mut root, group, field)?;
        }
        set_path(&mut root, &path, 0, raw)?;
        let new: RunConfig = RunConfig::deserialize(toml::Value::Table(root))
            .map_err(|e| Error::invalid(key, one_line(&e.to_string())))?;
        new.validate()?;
        *self = new;
        Ok(())
    }
}

/// The keys of a `[train.groups.<name>]` table.
pub const GROUP_KEYS: &[&str] = &[
    "lr",
    "beta1",
    "beta2",
    "eps",
    "weight_decay",
    "warmup_steps",
    "min_lr_ratio",
    "grad_clip",
];

/// Makes `train.groups.<group>.<field>` settable in the serialised config `root`: creates the group's table
/// and, when the field is not set yet, puts `[train]`'s value there (so the new value must have its type).
fn open_group_key(root: &mut toml::Table, group: &str, field: &str) -> Result<()> {
    if !GROUP_KEYS.contains(&field) {
        return Err(Error::unknown(
            "config key",
            format!("train.groups.{group}.{field}"),
            GROUP_KEYS,
        ));
    }
    let Some(toml::Value::Table(train)) = root.get_mut("train") else {
        return Err(Error::invalid("config", "no [train] table"));
    };
    let current = train
        .get(field)
        .cloned()
        .ok_or_else(|| Error::invalid("config", format!("no train.{field}")))?;
    let groups = train
        .entry("groups")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(groups) = groups else {
        return Err(Error::invalid("train.groups", "is a value, not a table"));
    };
    let g = groups
        .entry(group)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(g) = g else {
        return Err(Error::invalid(
            format!("train.groups.{group}"),
            "is a value, not a table",
        ));
    };
    g.entry(field).or_insert(current);
    Ok(())
}

/// Sets `path[i..]` inside `table` to `raw`, naming the full dotted key in errors.
fn set_path(table: &mut toml::Table, path: &[&str], i: usize, raw: &str) -> Result<()> {
    let shown = path[..=i].join(".");
    if !table.contains_key(path[i]) {
        let opts: Vec<&str> = table.keys().map(|s| s.as_str()).collect();
        return Err(Error::unknown("config key", shown, &opts));
    }
    let entry = match table.get_mut(path[i]) {
        Some(e) => e,
        None => return Err(Error::unknown("config key", shown, &[])),
    };
    if i + 1 == path.len() {
        *entry = parse_value(raw, entry, &shown)?;
        return Ok(());
    }
    match entry {
        toml::Value::Table(t) => set_path(t, path, i + 1, raw),
        _ => Err(Error::invalid(shown, "is a value, not a table")),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses `raw` as a TOML value of the same type as `current`.
fn parse_value(raw: &str, current: &toml::Value, key: &str) -> Result<toml::Value> {
    let parsed: toml::Value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or(toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    use toml::Value as V;
    let expected = current.type_str();
    match (current, parsed) {
        (V::Float(_), V::Integer(i)) => Ok(V::Float(i as f64)),
        (V::Integer(_), V::Integer(i)) if i < 0 => {
            Err(Error::invalid(key, format!("{i} must not be negative")))
        }
        (V::Table(_), V::String(_)) => Err(Error::invalid(
            key,
            format!("'{raw}' is not a table; set its keys instead"),
        )),
        (cur, p) if std::mem::discriminant(cur) == std::mem::discriminant(&p) => Ok(p),
        (_, p) => Err(Error::invalid(
            key,
            format!("'{raw}' is a {}, expected a {expected}", p.type_str()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_overrides_known_keys_and_rejects_unknown() -> Result<()> {
        let mut c = RunConfig::new("vae", "mnist")?;
        c.set("train.lr=3e-4")?;
        assert_eq!(c.train.lr, 3e-4);
        c.set("train.lr=1")?; // integer accepted for a float
        assert_eq!(c.train.lr, 1.0);
        c.set("seed=42")?;
        assert_eq!(c.seed, 42);
        c.set("data.preprocessing.dynamic=false")?;
        assert_eq!(
            c.data.preprocessing,
            Preprocessing::Binarize { dynamic: false }
        );
        let e = c.set("train.lrr=1").unwrap_err().to_string();
        assert!(e.contains("train.lrr") && e.contains("batch_size"), "{e}");
        let e = c.set("train.steps=abc").unwrap_err().to_string();
        assert!(e.contains("train.steps") && e.contains("integer"), "{e}");
        assert!(c.set("train.steps=-5").is_err());
        assert!(c.set("train.beta1=1.5").is_err());
        assert!(c.set("nokey").is_err());
        Ok(())
    }

    /// `train.groups.<name>.<key>` creates the group's table; its values are checked by their full name.
    #[test]
    fn group_settings_are_set_and_checked_by_name() -> Result<()> {
        let mut c = RunConfig::new("sngan", "toy2d:8gaussians")?;
        assert_eq!((c.train.lr, c.train.beta1, c.train.beta2), (2e-4, 0.0, 0.9));
        c.set("train.groups.discriminator.lr=4e-4")?;
        c.set("train.groups.discriminator.beta2=0.9")?;
        let g = c.train.for_group("discriminator")?;
        assert_eq!((g.lr, g.beta1, g.beta2), (4e-4, 0.0, 0.9));
        assert_eq!(c.train.for_group("generator")?.lr, 2e-4);
        let e = c
            .set("train.groups.discriminator.beta1=1.5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("train.groups.discriminator.beta1"), "{e}");
        let e = c
            .set("train.groups.discriminator.momentum=0.9")
            .unwrap_err()
            .to_string();
        assert!(e.contains("momentum") && e.contains("beta2"), "{e}");
        // the config round-trips through TOML with its groups
        assert_eq!(RunConfig::from_toml(&c.to_toml()?)?, c);
        // a one-loss model refuses per-group settings when it trains (see trainer::optimizers_for)
        assert!(c.train.check_groups("vae", &["all"]).is_err());
        assert!(c
            .train
            .check_groups("sngan", &["generator", "discriminator"])
            .is_ok());
        Ok(())
    }

    #[test]
    fn non_finite_numbers_are_refused_by_name() -> Result<()> {
        let mut c = RunConfig::new("vae", "shapes")?;
        for key in [
            "train.grad_clip",
            "train.weight_decay",
            "train.lr",
            "train.eps",
            "train.beta1",
            "train.beta2",
            "train.ema_decay",
            "train.min_lr_ratio",
        ] {
            for v in ["nan", "inf", "-inf"] {
                let e = c.set(&format!("{key}={v}")).unwrap_err().to_string();
                assert!(e.contains(key), "{key}={v}: {e}");
            }
        }
        c.set("train.grad_clip=1.5")?;
        c.set("train.weight_decay=0.1")?;
        assert_eq!((c.train.grad_clip, c.train.weight_decay), (1.5, 0.1));
        Ok(())
    }

    #[test]
    fn incompatible_model_and_data_are_refused() -> Result<()> {
        for (model, data) in [
            ("vae", "text:tinyshakespeare"),
            ("ddpm", "text:x.txt"),
            ("pixelcnn", "toy2d:moons"),
            ("made", "toy2d:moons"),
            ("gpt", "mnist"),
            ("gpt", "toy2d:moons"),
        ] {
            let e = RunConfig::new(model, data)?
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains(model) && e.contains("trains on"), "{e}");
        }
        for (model, data) in [
            ("vae", "toy2d:moons"),
            ("cvae", "shapes"),
            ("ddpm", "mnist"),
            ("ncsn", "toy2d:moons"),
            ("made", "mnist"),
            ("pixelcnn", "shapes"),
            ("gpt", "text:tinyshakespeare"),
        ] {
            RunConfig::new(model, data)?.validate()?;
        }
        Ok(())
    }

    #[test]
    fn shipped_configs_are_valid() -> Result<()> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let p = e.map_err(|e| Error::io(&dir, e))?.path();
            if p.extension().is_some_and(|x| x == "toml") {
                let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
                RunConfig::from_toml(&text)
                    .map_err(|e| Error::invalid(p.display().to_string(), e.to_string()))?;
                n += 1;
            }
        }
        assert!(n >= 3);
        Ok(())
    }

    #[test]
    fn toml_round_trip() -> Result<()> {
        let c = RunConfig::new("vae", "shapes")?;
        let text = c.to_toml()?;
        assert_eq!(RunConfig::from_toml(&text)?, c);
        assert!(RunConfig::from_toml(&text.replace("[train]", "[train]\nbogus = 1")).is_err());
        Ok(())
    }

    #[test]
    fn held_out_pairs_apply_to_shapes_only_and_are_checked() -> Result<()> {
        let mut c = RunConfig::new("ddpm", "mnist")?;
        c.data.holdout = vec!["red circle".into()];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("shapes only"), "{e}");
        let mut c = RunConfig::new("ddpm", "shapes")?;
        c.data.holdout = vec!["red blob".into()];
        assert!(c.validate().unwrap_err().to_string().contains("blob"));
        c.data.holdout = vec!["red circle".into()];
        c.validate()?;
        let back = RunConfig::from_toml(&c.to_toml()?)?;
        assert_eq!(back.data.holdout, c.data.holdout);
        Ok(())
    }
}
