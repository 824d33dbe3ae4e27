//! dgm's error type. Every message names the bad value and, where there is a fixed set, the valid options.
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
}
