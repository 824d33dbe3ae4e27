//! dgm's error type. Every message names the bad value and, where there is a fixed set, the valid options.
//! Options are named as the library names them (the field of an options struct, a config key, a function's
//! argument: `steps`, `data_dir`, `model.net.conditional`), never as a front end's flags or commands;
//! errors whose fix is a step a front end words its own way (resume a run, train a feature network) have
//! their own variants, so that the front end can recognise them and add its hints (the CLI's `hints.rs`).
//!
//! Each message already includes the reason of the error it wraps (the OS error of a file, candle's message),
//! so no variant also reports that error as its `source()`: printers that walk the chain (anyhow's `{:#}`)
//! would print the reason twice.

use std::path::PathBuf;

/// Errors returned by the dgm library.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// An error from candle (tensor shape mismatch, device error, ...). Usually a bug, not user input.
    #[error("tensor error: {}", esc(.0))]
    Candle(candle_core::Error),

    /// A file could not be read or written.
    #[error("{}: {}", esc(path.display()), esc(error))]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error (in the message; not repeated as the error's source).
        error: std::io::Error,
    },

    /// A data file exists but its content is wrong (bad magic number, truncated, inconsistent counts).
    #[error("{}: {}", esc(path.display()), esc(msg))]
    CorruptData {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },

    /// A data set was asked for but its files are not where we looked.
    #[error("data set '{}' not found: {}", esc(name), esc(msg))]
    DataNotFound {
        /// The data set name (e.g. `mnist`).
        name: String,
        /// Where we looked and how to get it.
        msg: String,
    },

    /// A name (model, data set, sampler, metric, key ...) is not one we know.
    #[error("unknown {what} '{}'; valid options: {}", esc(value), esc(options))]
    Unknown {
        /// What kind of name this is ("model", "data set", ...).
        what: &'static str,
        /// The name that was given.
        value: String,
        /// The names that would have been accepted, comma separated.
        options: String,
    },

    /// A value was given for a known key but it is not acceptable.
    #[error("invalid value for {}: {}", esc(key), esc(msg))]
    InvalidValue {
        /// The key or argument (e.g. `model.latent_dim`).
        key: String,
        /// Why the value is rejected.
        msg: String,
    },

    /// A checkpoint or run directory is missing, incomplete or does not match its config.
    #[error("checkpoint {}: {}", esc(path.display()), esc(msg))]
    Checkpoint {
        /// The run directory or file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },

    /// Training produced a NaN or infinite loss.
    #[error("loss became {loss} at step {step}; stopped ({})", kept(*checkpoint))]
    NonFinite {
        /// The step at which the loss stopped being finite.
        step: u64,
        /// The loss value (NaN or ±inf).
        loss: f64,
        /// The step of the run's committed checkpoint, if it has one.
        checkpoint: Option<u64>,
    },

    /// An option was given that the model does not take and would ignore (a sampler for a VAE, a class for
    /// an unconditional model).
    #[error("{option} does not apply to model '{}': {}", esc(model), esc(why))]
    NotApplicable {
        /// The option, by its library name (e.g. `steps`, the field of [`crate::model::SampleOptions`]).
        option: &'static str,
        /// The model's name.
        model: String,
        /// Why it does not apply.
        why: String,
    },

    /// A new run was to be written into a directory that already holds one.
    #[error("{}: already holds a run{}", esc(path.display()), if *checkpointed {
        "; resume it to continue it, or write the new run elsewhere"
    } else {
        " that stopped before its first checkpoint; resuming restarts it from step 0, or write the new run elsewhere"
    })]
    RunExists {
        /// The run directory.
        path: PathBuf,
        /// Whether the run has a checkpoint to continue from.
        checkpointed: bool,
    },

    /// A run directory was asked for but `path` is not one: it does not exist, or holds no `config.toml`
    /// (training writes one).
    #[error("checkpoint {}: {}", esc(path.display()), if *exists {
        "not a run directory (no config.toml)"
    } else {
        "no such run directory"
    })]
    NotARun {
        /// The path given as a run directory.
        path: PathBuf,
        /// Whether `path` is a directory at all.
        exists: bool,
    },

    /// The image metrics need a feature network that `dir` does not hold (or holds for other data); the fix
    /// is to train one on `data` ([`crate::metrics::features::train_feature_net`]).
    #[error("feature network {}: {}; train one on {}", esc(path.display()), esc(msg), esc(data.as_deref().unwrap_or("mnist or shapes")))]
    FeatureNet {
        /// The feature network's directory.
        path: PathBuf,
        /// What is wrong with it (missing files, other data).
        msg: String,
        /// The data set to train one on, when known.
        data: Option<String>,
    },

    /// An operation a model does not support (e.g. likelihood of a GAN).
    #[error("{}", esc(.0))]
    Unsupported(String),
}

impl Error {
    /// Builds an [`Error::Unknown`] from a list of valid options.
    pub fn unknown(what: &'static str, value: impl Into<String>, options: &[&str]) -> Self {
        Error::Unknown {
            what,
            value: value.into(),
            options: options.join(", "),
        }
    }

    /// Builds an [`Error::InvalidValue`].
    pub fn invalid(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::InvalidValue {
            key: key.into(),
            msg: msg.into(),
        }
    }

    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }

    /// The option the error is about, by its library name: the key of an [`Error::InvalidValue`], the option
    /// of an [`Error::NotApplicable`]. Front ends map it to their own spelling (the CLI to its flag).
    pub fn option(&self) -> Option<&str> {
        match self {
            Error::InvalidValue { key, .. } => Some(key),
            Error::NotApplicable { option, .. } => Some(option),
            _ => None,
        }
    }

    /// True when the error comes from what the user asked for (bad name, value, file, checkpoint)
    /// rather than from a failure inside dgm. The CLI exits with code 2 for these.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, Error::Candle(_) | Error::NonFinite { .. })
    }
}

/// What a failed training run leaves behind: "the checkpoint of step N is kept" or that there is none.
pub fn kept(checkpoint: Option<u64>) -> String {
    match checkpoint {
        Some(s) => format!("the checkpoint of step {s} is kept"),
        None => "no checkpoint had been written yet, so nothing was saved".to_string(),
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(e)
    }
}

/// `s` as it goes into an error message: control characters (newlines, tabs, terminal escapes) are written
/// as Rust escapes (`\n`, `\u{1b}`), so that a message built from a user's string (a file or data set name,
/// a `--set` value) stays on one line and cannot drive the terminal. Everything else is unchanged.
pub fn esc(s: impl std::fmt::Display) -> String {
    let s = s.to_string();
    if !s.chars().any(char::is_control) {
        return s;
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// dgm's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The message and every error in its source chain, joined the way anyhow's `{:#}` joins them.
    fn chain(e: &(dyn std::error::Error + 'static)) -> String {
        let mut out = e.to_string();
        let mut cur = e.source();
        while let Some(s) = cur {
            out.push_str(": ");
            out.push_str(&s.to_string());
            cur = s.source();
        }
        out
    }

    #[test]
    fn the_os_reason_is_printed_once() {
        let e = Error::io(
            "/no/such/file",
            std::io::Error::from_raw_os_error(2), // ENOENT
        );
        let text = chain(&e);
        assert!(text.starts_with("/no/such/file: "), "{text}");
        assert_eq!(text.matches("os error 2").count(), 1, "{text}");
        let e = Error::from(candle_core::Error::Msg("shape mismatch".into()));
        let text = chain(&e);
        assert_eq!(text.matches("shape mismatch").count(), 1, "{text}");
        assert!(!e.is_user_error());
    }

    /// User strings with control characters (a data set named "x\n", a `--set` value with an escape sequence)
    /// give one-line messages; ordinary text, Unicode included, is unchanged.
    #[test]
    fn messages_built_from_user_strings_stay_on_one_line() {
        let e = Error::unknown("data set", "x\ny\u{1b}[2J", &["mnist", "shapes"]);
        assert_eq!(
            e.to_string(),
            "unknown data set 'x\\ny\\u{1b}[2J'; valid options: mnist, shapes"
        );
        let e = Error::invalid("train.lr", "'1\t2' is not a number ≥ 0");
        assert_eq!(
            e.to_string(),
            "invalid value for train.lr: '1\\t2' is not a number ≥ 0"
        );
        let e = Error::io("a\nb.png", std::io::Error::from_raw_os_error(2));
        assert!(e.to_string().starts_with("a\\nb.png: "), "{e}");
        assert_eq!(esc("données ✓"), "données ✓");
    }

    /// The rule of this module on real refusals: messages name options by their library names (`steps`,
    /// `draw`, `model.net.conditional`) and give values and valid options, never a front end's flags
    /// (`--steps`) or command lines (`dgm train …`).
    #[test]
    fn messages_name_options_not_flags() -> Result<()> {
        use crate::model::{check_sample_options, Condition, SampleOptions};
        use crate::models::{self, DataInfo};
        use crate::schedulers::{self, SamplerOptions, VpSchedule};
        use candle_core::{Device, Tensor};

        let dev = Device::Cpu;
        let build = |name: &str, shape: &[usize]| -> Result<Box<dyn crate::model::Model>> {
            let mut cfg = models::default_config(name)?;
            let info = DataInfo {
                example_shape: shape.to_vec(),
                num_classes: None,
                preprocessing: crate::data::Preprocessing::Identity,
                tokenizer: None,
                caption_words: None,
            };
            models::prepare(name, &mut cfg, &info)?;
            models::build(name, &cfg, crate::nn::Params::new(0, &dev).var_builder())
        };
        let (vae, ddpm) = (build("vae", &[2])?, build("ddpm", &[2])?);
        let mut errors: Vec<Error> = Vec::new();
        let mut refused = |model: &dyn crate::model::Model, opts: SampleOptions| {
            let e = check_sample_options(model, &opts).expect_err("refused");
            assert!(matches!(e, Error::NotApplicable { .. }), "{e}");
            errors.push(e);
        };
        let o = SampleOptions::default;
        refused(ddpm.as_ref(), SampleOptions { mean: false, ..o() });
        let sampler = Some("ddim".to_string());
        refused(vae.as_ref(), SampleOptions { sampler, ..o() });
        refused(
            vae.as_ref(),
            SampleOptions {
                steps: Some(3),
                ..o()
            },
        );
        refused(
            ddpm.as_ref(),
            SampleOptions {
                guidance: Some(2.0),
                ..o()
            },
        );
        let condition = Condition::Class(vec![1]);
        refused(vae.as_ref(), SampleOptions { condition, ..o() });
        // the model's own refusal, without check_sample_options
        errors.push(
            vae.sample(
                1,
                &SampleOptions {
                    steps: Some(3),
                    ..o()
                },
            )
            .unwrap_err(),
        );
        errors.push(
            crate::conditioning::check_guidance(
                Some(2.0),
                crate::conditioning::CondKind::None,
                "ddpm",
            )
            .unwrap_err(),
        );
        errors.push(
            crate::conditioning::check_guidance(
                Some(-1.0),
                crate::conditioning::CondKind::Class(10),
                "ddpm",
            )
            .unwrap_err(),
        );
        let vp = VpSchedule::linear(100)?;
        let opts = SamplerOptions::default();
        errors.push(schedulers::build("ddim", &vp, 0, &opts).err().unwrap());
        errors.push(schedulers::build("ddim", &vp, 101, &opts).err().unwrap());
        let x0 = Tensor::zeros((1, 2), candle_core::DType::F32, &dev)?;
        errors.push(schedulers::ddim_invert(&vp, 0, 0, &x0, |x, _| Ok(x.clone())).unwrap_err());
        let generate = crate::model::GenerateOptions {
            top_k: Some(0),
            ..Default::default()
        };
        errors.push(generate.validate().unwrap_err());
        let mut cfg = crate::train::RunConfig::new("vae", "toy2d:moons")?;
        errors.push(cfg.set("train.lr").unwrap_err());
        errors.push(cfg.set("train.lr=fast").unwrap_err());
        // missing files and directories
        let empty = std::env::temp_dir().join(format!("dgm-error-rule-{}", std::process::id()));
        std::fs::create_dir_all(&empty).map_err(|e| Error::io(&empty, e))?;
        let sizes = crate::data::GeneratedSizes::default();
        let mnist = crate::data::DataSpec::Mnist;
        let split = crate::data::Split::Train;
        errors.push(crate::data::load(&mnist, split, &empty, &sizes).unwrap_err());
        errors.push(crate::data::text::load("no-such-corpus", &empty).unwrap_err());
        errors.push(crate::train::run::RunDir::open(&empty).err().unwrap());
        errors.push(
            crate::train::run::RunDir::open(&empty.join("nope"))
                .err()
                .unwrap(),
        );
        errors.push(crate::metrics::features::load(&empty, &dev).err().unwrap());
        errors.push(crate::report::write_report(&empty, &empty.join("r.pdf")).unwrap_err());
        let _ = std::fs::remove_dir_all(&empty);
        for checkpointed in [true, false] {
            errors.push(Error::RunExists {
                path: "runs/a".into(),
                checkpointed,
            });
        }
        for e in &errors {
            let m = e.to_string();
            assert!(
                !m.contains("--") && !m.contains("dgm "),
                "names a flag or command: {m}"
            );
        }
        let named: Vec<&str> = errors.iter().filter_map(Error::option).collect();
        for option in [
            "draw", "sampler", "steps", "guidance", "class", "top_k", "override", "out",
        ] {
            assert!(
                named.contains(&option),
                "no error names '{option}': {named:?}"
            );
        }
        Ok(())
    }
}
