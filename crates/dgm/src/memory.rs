//! Memory estimates, so that a size that cannot fit is refused with one line before anything is allocated
//! (instead of the process growing until the OOM killer ends it, or aborting on a failed allocation).
//!
//! * **Available memory** ([`available`]): Linux's `MemAvailable` (`/proc/meminfo`), lowered to what a cgroup
//!   v2 memory limit leaves (`memory.max − memory.current`, containers and CI); elsewhere an assumed 16 GB.
//!   `DGM_MEMORY_LIMIT` (e.g. `8GB`, `512MiB`, `2e9`) caps it further, for shared machines and tests.
//! * **Parameters** ([`count_parameters`]): the model is built once on a shape-only store
//!   ([`crate::nn::params::ShapeCounter`]): every variable a model asks for is counted, none is allocated. No
//!   per-model formula, so every model in the registry is covered as it is written.
//! * **Training** ([`check_training`]): the parameters are held five times (weights, gradients, AdamW's two
//!   moments, the EMA copy), plus what the model keeps besides its parameters (MADE's masks) and the
//!   activations of one micro-batch, `batch_size ×` the model's documented per-example estimate
//!   ([`crate::models::footprint`]).
//! * **Generated data** ([`check_bytes`] from [`crate::data::load`]): examples × bytes per example.

use crate::models;
use crate::nn::params::ShapeCounter;
use crate::train::RunConfig;
use crate::{Error, Result};

/// The environment variable that caps the memory dgm plans with (`8GB`, `512MiB`, `2e9` bytes).
pub const LIMIT_ENV: &str = "DGM_MEMORY_LIMIT";

/// What is assumed available where the system cannot tell (not Linux, `/proc` unreadable).
pub const FALLBACK_BYTES: u64 = 16_000_000_000;

/// Copies of the parameters that training holds: weights, gradients, AdamW's first and second moments,
/// and the EMA weights.
pub const TRAINING_COPIES: u64 = 5;

/// Bytes of one value: dgm keeps parameters, activations and samples in f32.
pub const F32_BYTES: u64 = 4;

/// Memory dgm may use, and where the number comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Available {
    /// Bytes.
    pub bytes: u64,
    /// Where the number comes from, for messages (`available`, `cgroup limit`, `DGM_MEMORY_LIMIT`, ...).
    pub source: &'static str,
}

impl std::fmt::Display for Available {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", format_bytes(self.bytes), self.source)
    }
}

/// The memory dgm may use now: the smallest of the system's available memory, what a cgroup limit leaves
/// and `DGM_MEMORY_LIMIT`. An unparsable `DGM_MEMORY_LIMIT` is an error naming it.
pub fn available() -> Result<Available> {
    let mut best = system_available().unwrap_or(Available {
        bytes: FALLBACK_BYTES,
        source: "assumed available (the system does not say; set DGM_MEMORY_LIMIT)",
    });
    if let Some(b) = cgroup_left() {
        if b < best.bytes {
            best = Available {
                bytes: b,
                source: "left under the cgroup memory limit",
            };
        }
    }
    if let Some(v) = std::env::var_os(LIMIT_ENV) {
        let s = v.to_string_lossy();
        let b = parse_bytes(&s).map_err(|m| Error::invalid(LIMIT_ENV, m))?;
        if b < best.bytes {
            best = Available {
                bytes: b,
                source: "allowed by DGM_MEMORY_LIMIT",
            };
        }
    }
    Ok(best)
}

fn system_available() -> Option<Available> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = meminfo_field(&text, "MemAvailable:")?;
    Some(Available {
        bytes: kb.saturating_mul(1024),
        source: "available",
    })
}

/// The value (in kB) of `field` in `/proc/meminfo` text.
fn meminfo_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// What a cgroup v2 memory limit leaves: `memory.max − memory.current` of this process's cgroup.
fn cgroup_left() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // cgroup v2: one line "0::/path"
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
    let max = std::fs::read_to_string(dir.join("memory.max")).ok()?;
    let max: u64 = max.trim().parse().ok()?; // "max" = no limit
    let current: u64 = std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(max.saturating_sub(current))
}

/// Parses a byte count: a number (decimals and exponents allowed) with an optional unit: `B`, `KB`/`K`,
/// `MB`/`M`, `GB`/`G`, `TB`/`T` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024),
/// case-insensitive.
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        other => {
            return Err(format!(
                "'{s}': unknown unit '{other}'; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ))
        }
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size such as 8GB, 512MiB or 2e9"))?;
    let bytes = v * unit_mult;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(format!("'{s}' must be a positive size such as 8GB"));
    }
    Ok(bytes.min(u64::MAX as f64) as u64)
}

/// A byte count for people: `512 B`, `3.1 MB`, `40.0 GB`, `4.0 TB` (powers of 1000).
pub fn format_bytes(b: u64) -> String {
    const UNITS: &[&str] = &["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 999.95 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Refuses `need` bytes of `what` when they are more than `avail`: one line naming both.
pub fn check_bytes(what: &str, key: &str, need: u64, avail: &Available) -> Result<()> {
    if need <= avail.bytes {
        return Ok(());
    }
    Err(Error::invalid(
        key,
        format!(
            "{what} need about {}, more than the {avail}",
            format_bytes(need)
        ),
    ))
}

/// The parameters of a model, as [`count_parameters`] finds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamCount {
    /// All of them: this many values.
    Exact(u64),
    /// More than the cap: at least this many values, the last request being variable `name` of `shape`.
    AtLeast {
        /// Values counted up to and including the variable that passed the cap (saturating).
        values: u64,
        /// That variable.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
}

impl ParamCount {
    /// The refusal of a model whose parameters passed the cap, naming the culprit; `need` describes
    /// what the count is for.
    fn refusal(&self, model: &str, copies: u64, avail: &Available) -> Error {
        let (values, culprit) = match self {
            ParamCount::Exact(v) => (*v, String::new()),
            ParamCount::AtLeast {
                values,
                name,
                shape,
            } => {
                let n = shape.iter().fold(1u64, |a, &d| a.saturating_mul(d as u64));
                (
                    *values,
                    format!(
                        " ({name} of shape {shape:?} alone is {})",
                        format_bytes(n.saturating_mul(F32_BYTES))
                    ),
                )
            }
        };
        let bytes = values.saturating_mul(F32_BYTES);
        let what = if copies == 1 {
            format!(
                "the parameters of model '{model}' need at least {}",
                format_bytes(bytes)
            )
        } else {
            format!(
                "training model '{model}' needs at least {} ({copies} × {} of parameters for weights, gradients, AdamW moments and EMA)",
                format_bytes(bytes.saturating_mul(copies)),
                format_bytes(bytes)
            )
        };
        Error::invalid(
            "model",
            format!("{what}{culprit}, more than the {avail}; use a smaller model"),
        )
    }
}

/// The parameters of model `name` built from its (prepared) `cfg`, counted without allocating them. The count
/// stops at the first variable that takes it past `cap` values (so a model of 10¹² parameters costs nothing
/// to count).
pub fn count_parameters(name: &str, cfg: &toml::Table, cap: u64) -> Result<ParamCount> {
    let counter = ShapeCounter::new(cap);
    match models::build_unchecked(name, cfg, counter.var_builder()) {
        Ok(_) => Ok(ParamCount::Exact(counter.count())),
        Err(e) => match counter.culprit() {
            Some((name, shape)) => Ok(ParamCount::AtLeast {
                values: counter.count(),
                name,
                shape,
            }),
            None => Err(e),
        },
    }
}

/// The memory of a model: its parameters and the buffers it keeps besides them, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelBytes {
    /// Parameters (one copy).
    pub params: u64,
    /// Non-parameter state (MADE's masks).
    pub buffers: u64,
}

/// Refuses model `name` with config `cfg` when one copy of it (parameters and buffers) does not fit in
/// `avail`; otherwise returns its size. Every [`models::build`] calls this before allocating anything.
pub fn check_model(name: &str, cfg: &toml::Table, avail: &Available) -> Result<ModelBytes> {
    let fp = models::footprint(name, cfg)?;
    let buffers = fp.buffers.saturating_mul(F32_BYTES);
    check_bytes(
        &format!("the buffers of model '{name}'"),
        "model",
        buffers,
        avail,
    )?;
    let cap = (avail.bytes - buffers) / F32_BYTES;
    match count_parameters(name, cfg, cap)? {
        ParamCount::Exact(n) => Ok(ModelBytes {
            params: n.saturating_mul(F32_BYTES),
            buffers,
        }),
        over => Err(over.refusal(name, 1, avail)),
    }
}

/// The memory a training run needs, in bytes, as [`check_training`] counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainingBytes {
    /// One copy of the parameters.
    pub params: u64,
    /// The model's non-parameter buffers (held by the model and by its EMA copy).
    pub buffers: u64,
    /// Activations of one micro-batch (forward values kept for the backward pass).
    pub activations: u64,
}

impl TrainingBytes {
    /// Everything: [`TRAINING_COPIES`] × parameters + 2 × buffers + activations.
    pub fn total(&self) -> u64 {
        self.params
            .saturating_mul(TRAINING_COPIES)
            .saturating_add(self.buffers.saturating_mul(2))
            .saturating_add(self.activations)
    }
}

/// Estimates the memory of training `cfg` and refuses it, in one line with the estimate and the available
/// memory, when it does not fit. `cfg`'s model config must be prepared (`models::prepare`, or a run's saved
/// config): the trainer calls this after preparing, before it creates the parameters.
pub fn check_training(cfg: &RunConfig) -> Result<TrainingBytes> {
    check_training_within(cfg, &available()?)
}

/// [`check_training`] against a given amount of memory.
pub fn check_training_within(cfg: &RunConfig, avail: &Available) -> Result<TrainingBytes> {
    let name = &cfg.model.name;
    let fp = models::footprint(name, &cfg.model.config)?;
    let buffers = fp.buffers.saturating_mul(F32_BYTES);
    let per_copy = avail.bytes.saturating_sub(buffers.saturating_mul(2)) / TRAINING_COPIES;
    let params = match count_parameters(name, &cfg.model.config, per_copy / F32_BYTES)? {
        ParamCount::Exact(n) => n.saturating_mul(F32_BYTES),
        over => return Err(over.refusal(name, TRAINING_COPIES, avail)),
    };
    let b = cfg.train.batch_size as u64;
    let est = TrainingBytes {
        params,
        buffers,
        activations: fp
            .activations_per_example
            .saturating_mul(b)
            .saturating_mul(F32_BYTES),
    };
    if est.total() > avail.bytes {
        let key = if est.activations > est.params.saturating_mul(TRAINING_COPIES) {
            "train.batch_size"
        } else {
            "model"
        };
        return Err(Error::invalid(
            key,
            format!(
                "training model '{name}' with batch_size {b} needs about {} ({TRAINING_COPIES} × {} of parameters for weights, gradients, AdamW moments and EMA, {} of buffers, {} of activations), more than the {avail}",
                format_bytes(est.total()),
                format_bytes(est.params),
                format_bytes(est.buffers.saturating_mul(2)),
                format_bytes(est.activations)
            ),
        ));
    }
    Ok(est)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avail(bytes: u64) -> Available {
        Available {
            bytes,
            source: "available",
        }
    }

    #[test]
    fn parses_and_formats_sizes() {
        assert_eq!(parse_bytes("8GB"), Ok(8_000_000_000));
        assert_eq!(parse_bytes("8 gb"), Ok(8_000_000_000));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2e9"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("1.5K"), Ok(1500));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        for bad in ["", "abc", "8XB", "-1GB", "0", "nan", "inf"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3_100_000), "3.1 MB");
        assert_eq!(format_bytes(40_000_000_000), "40.0 GB");
        assert_eq!(format_bytes(999_999), "1.0 MB");
    }

    #[test]
    fn meminfo_is_read_in_kb() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_field(text, "MemAvailable:"), Some(20_000_000));
        assert_eq!(meminfo_field(text, "Nope:"), None);
        // on this machine the number is real and positive
        let a = available().map(|a| a.bytes).unwrap_or(0);
        assert!(a > 0);
    }

    use crate::data::{DataKind, DataSpec, Preprocessing, Tokenizer};
    use crate::nn::Params;
    use candle_core::Device;

    /// Model `name`'s default config prepared for data of `shape` (images binarized, vectors as they are,
    /// token windows with the bytes tokenizer), after the `key = value` TOML overrides in `set`.
    fn prepared(name: &str, shape: &[usize], set: &str) -> Result<toml::Table> {
        let mut cfg = models::default_config(name)?;
        let over: toml::Table = set
            .parse()
            .map_err(|e| Error::invalid("set", format!("{e}")))?;
        cfg.extend(over);
        let text = models::data_kinds(name)? == [DataKind::Text];
        let preprocessing = match shape.len() {
            1 => Preprocessing::Identity,
            _ => models::default_preprocessing(name, &DataSpec::Mnist),
        };
        let info = DataInfo {
            example_shape: shape.to_vec(),
            num_classes: Some(10),
            preprocessing,
            tokenizer: text.then_some(Tokenizer::Bytes),
            caption_words: None,
        };
        models::prepare(name, &mut cfg, &info)?;
        Ok(cfg)
    }

    use crate::models::DataInfo;

    fn run_config(name: &str, cfg: toml::Table, batch_size: usize) -> Result<RunConfig> {
        let text = models::data_kinds(name)? == [DataKind::Text];
        let data = if text { "text:x" } else { "mnist" };
        let mut c = RunConfig::new(name, data)?;
        c.model.config = cfg;
        c.train.batch_size = batch_size;
        Ok(c)
    }

    /// The shape-only build counts exactly the parameters a real build creates, for every model.
    #[test]
    fn counted_parameters_match_a_real_build() -> Result<()> {
        for (name, shape, set) in [
            ("vae", &[1, 28, 28][..], ""),
            ("vae", &[1, 28, 28][..], "arch = \"conv\""),
            ("cvae", &[2][..], ""),
            ("iwae", &[1, 28, 28][..], ""),
            ("ddpm", &[2][..], ""),
            (
                "ddpm",
                &[1, 28, 28][..],
                "net = { unet = { base_channels = 16, groups = 8 } }",
            ),
            ("edm", &[2][..], ""),
            ("ncsn", &[2][..], ""),
            ("made", &[1, 28, 28][..], ""),
            ("pixelcnn", &[1, 28, 28][..], ""),
            ("gpt", &[64][..], ""),
        ] {
            let cfg = prepared(name, shape, set)?;
            let p = Params::new(0, &Device::Cpu);
            models::build_unchecked(name, &cfg, p.var_builder())?;
            let real = p.num_parameters() as u64;
            assert!(real > 0);
            assert_eq!(
                count_parameters(name, &cfg, u64::MAX)?,
                ParamCount::Exact(real),
                "{name} {set}"
            );
        }
        Ok(())
    }

    /// The sizes are refused from the count alone (nothing near their size is allocated), naming the
    /// model, the culprit and the memory.
    #[test]
    fn huge_models_are_refused_before_allocating() -> Result<()> {
        let gb24 = avail(24_000_000_000);
        let cfg = prepared("vae", &[2], "latent_dim = 1000000000")?;
        let e = check_model("vae", &cfg, &gb24).unwrap_err().to_string();
        assert!(
            e.contains("model 'vae'") && e.contains("at least") && e.contains("24.0 GB available"),
            "{e}"
        );
        assert!(
            e.contains("shape [2000000000, 512]") && e.contains("4.1 TB"),
            "{e}"
        );
        // [100000, 100000]: 10¹⁰ weights, 40 GB, more than 24 GB
        let cfg = prepared("vae", &[1, 28, 28], "hidden = [100000, 100000]")?;
        let e = check_model("vae", &cfg, &gb24).unwrap_err().to_string();
        assert!(e.contains("40.") && e.contains("GB"), "{e}");
        // MADE's masks are counted before they are built: K mask sets of the weights' size
        let cfg = prepared("made", &[1, 28, 28], "hidden = [100000, 100000]")?;
        let e = check_model("made", &cfg, &gb24).unwrap_err().to_string();
        assert!(e.contains("buffers of model 'made'"), "{e}");
        // the default models fit easily
        for (name, shape) in [("vae", &[1, 28, 28][..]), ("gpt", &[64][..])] {
            let m = check_model(name, &prepared(name, shape, "")?, &gb24)?;
            assert!(m.params > 0 && m.params < 100_000_000, "{name}: {m:?}");
        }
        Ok(())
    }

    /// Training counts five copies of the parameters and the activations of a batch: a model whose one copy
    /// fits can still be refused for training, and so can a batch too large for its activations.
    #[test]
    fn training_counts_copies_and_activations() -> Result<()> {
        let gb4 = avail(4_000_000_000);
        let cfg = prepared("vae", &[1, 28, 28], "")?;
        let est = check_training_within(&run_config("vae", cfg.clone(), 128)?, &gb4)?;
        let n = match count_parameters("vae", &cfg, u64::MAX)? {
            ParamCount::Exact(n) => n,
            other => panic!("{other:?}"),
        };
        assert_eq!(est.params, 4 * n);
        let per_example = models::footprint("vae", &cfg)?.activations_per_example;
        assert_eq!(est.activations, 4 * 128 * per_example);
        assert_eq!(est.total(), 5 * 4 * n + 4 * 128 * per_example);
        // ~430M parameters: 1.7 GB, one copy fits in 4 GB, five do not
        let big = prepared("vae", &[1, 28, 28], "hidden = [20000, 20000]")?;
        check_model("vae", &big, &gb4)?;
        let e = check_training_within(&run_config("vae", big, 16)?, &gb4)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("training model 'vae'")
                && e.contains("5 ×")
                && e.contains("4.0 GB available"),
            "{e}"
        );
        // a batch of 10 million MNIST images: activations, named by train.batch_size
        let e = check_training_within(&run_config("vae", cfg, 10_000_000)?, &gb4)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train.batch_size")
                && e.contains("batch_size 10000000")
                && e.contains("activations"),
            "{e}"
        );
        Ok(())
    }

    /// The per-example activation estimate of the MLP VAE, from the formula documented at
    /// `vae::config::footprint`: 2 × (784 + 1024 + 2·32 + k·(32 + 1024 + 2·784)).
    #[test]
    fn vae_activation_estimate_follows_its_formula() -> Result<()> {
        let one = models::footprint("vae", &prepared("vae", &[1, 28, 28], "")?)?;
        assert_eq!(
            one.activations_per_example,
            2 * (784 + 1024 + 64 + (32 + 1024 + 1568))
        );
        let k5 = models::footprint("iwae", &prepared("iwae", &[1, 28, 28], "")?)?;
        assert_eq!(
            k5.activations_per_example,
            2 * (784 + 1024 + 64 + 5 * (32 + 1024 + 1568))
        );
        assert_eq!(one.buffers, 0);
        Ok(())
    }

    #[test]
    fn check_bytes_names_the_estimate_and_the_memory() {
        assert!(check_bytes("x", "k", 10, &avail(10)).is_ok());
        let e = check_bytes(
            "3 examples",
            "data.sizes.train",
            40_000_000_000,
            &avail(8_000_000_000),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("data.sizes.train")
                && e.contains("40.0 GB")
                && e.contains("8.0 GB available"),
            "{e}"
        );
    }
}
