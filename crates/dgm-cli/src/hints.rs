//! The CLI's words for the library's errors, in one place. The library names options as it names them
//! (`steps`, `top_k`, `override` for a `key=value` assignment) and words its fixes in its own terms
//! ("resume it", "train one on mnist"); when an error is printed, this module puts in the flag that sets the
//! option and the `dgm` command that makes the fix.

use dgm::error::esc;
use dgm::Error;

/// Library option names (the key of [`Error::InvalidValue`], the option of [`Error::NotApplicable`]) and the
/// flag that sets each. Names not listed are printed as they are: config keys (`model.latent_dim`, which the
/// config file and `--set` share), and names such as `data` or `features` that the library also uses for
/// what the data or feature sets hold, where naming a flag would mislead.
pub const FLAGS: &[(&str, &str)] = &[
    ("n", "-n"),
    ("temperature", "--temperature"),
    ("draw", "--draw"),
    ("sampler", "--sampler"),
    ("steps", "--steps"),
    ("guidance", "--guidance"),
    ("class", "--class"),
    ("caption", "--caption"),
    ("max_tokens", "--max-tokens"),
    ("top_k", "--top-k"),
    ("top_p", "--top-p"),
    ("override", "--set"),
    ("out", "--out"),
    ("data_dir", "--data-dir"),
    ("run", "--run"),
    ("metric", "--metric"),
    ("num_samples", "--num-samples"),
    ("limit", "--limit"),
    ("examples_per_set", "--limit"),
    ("typicality_batch", "--typicality-batch"),
    ("solver", "--solver"),
    ("strength", "--strength"),
    ("sigma_y", "--sigma-y"),
    ("resample", "--resample"),
    ("jump", "--jump"),
    ("dps_scale", "--dps-scale"),
    ("cg_iters", "--cg-iters"),
    ("views", "--views"),
    ("mask", "--mask"),
    ("operator", "--operator"),
    ("factor", "--factor"),
    ("blur_sigma", "--blur-sigma"),
    ("device", "--device"),
];

/// The flag that sets library option `option`, if the CLI has one.
pub fn flag(option: &str) -> Option<&'static str> {
    FLAGS.iter().find(|(o, _)| *o == option).map(|(_, f)| *f)
}

/// `e` as the CLI prints it after `error: `: in the CLI's terms, on one line.
pub fn message(e: &anyhow::Error) -> String {
    let text = e
        .downcast_ref::<Error>()
        .and_then(in_cli_terms)
        .unwrap_or_else(|| format!("{e:#}"));
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `e` with its option named by its flag and its fix by a `dgm` command, when it has either.
fn in_cli_terms(e: &Error) -> Option<String> {
    Some(match e {
        Error::InvalidValue { key, msg } => Error::invalid(flag(key)?, msg.clone()).to_string(),
        Error::NotApplicable { option, model, why } => Error::NotApplicable {
            option: flag(option)?,
            model: model.clone(),
            why: why.clone(),
        }
        .to_string(),
        Error::RunExists { path, checkpointed } => {
            let what = if *checkpointed {
                "already holds a run; use `dgm train --resume DIR` to continue it"
            } else {
                "already holds a run that stopped before its first checkpoint; `dgm train --resume DIR` \
                 restarts it from step 0"
            };
            format!("{}: {what}, or choose another --out", esc(path.display()))
        }
        Error::NotARun { exists: true, .. } => {
            format!("{e}; runs are made by `dgm train --out DIR`")
        }
        Error::FeatureNet { path, msg, data } => format!(
            "feature network {}: {}; train one with `dgm metrics train-features --data {}`",
            esc(path.display()),
            esc(msg),
            esc(data.as_deref().unwrap_or("<mnist|shapes>"))
        ),
        Error::DataNotFound { .. } => format!("{e}; --data-dir DIR chooses the data directory"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(e: Error) -> String {
        message(&anyhow::Error::new(e))
    }

    /// An error naming a library option is printed with the option's flag; one naming a config key, a flag
    /// already, or nothing the CLI knows is printed as the library wrote it.
    #[test]
    fn library_options_are_printed_as_flags() {
        let e = Error::invalid(
            "steps",
            "the number of sampling steps must be at least 1, got 0",
        );
        assert_eq!(
            shown(e),
            "invalid value for --steps: the number of sampling steps must be at least 1, got 0"
        );
        let e = Error::NotApplicable {
            option: "draw",
            model: "ddpm".into(),
            why: "its samples are always draws".into(),
        };
        assert_eq!(
            shown(e),
            "--draw does not apply to model 'ddpm': its samples are always draws"
        );
        let e = Error::invalid("override", "'x' is not key=value");
        assert_eq!(shown(e), "invalid value for --set: 'x' is not key=value");
        for (key, text) in [
            ("model.latent_dim", "invalid value for model.latent_dim: -1"),
            ("-n", "invalid value for -n: -1"),
            ("data", "invalid value for data: -1"),
        ] {
            assert_eq!(shown(Error::invalid(key, "-1")), text);
        }
        let e = Error::unknown("sampler", "eulr", &["euler", "heun"]);
        assert_eq!(
            shown(e),
            "unknown sampler 'eulr'; valid options: euler, heun"
        );
        assert_eq!(shown(Error::Unsupported("a\nb".into())), "a\\nb");
        let e = anyhow::anyhow!("a CLI error\nover two lines");
        assert_eq!(message(&e), "a CLI error over two lines");
    }

    /// The fixes the library words in its own terms get the `dgm` command or flag that makes them.
    #[test]
    fn fixes_name_the_command() {
        let e = Error::RunExists {
            path: "runs/a".into(),
            checkpointed: true,
        };
        assert_eq!(
            shown(e),
            "runs/a: already holds a run; use `dgm train --resume DIR` to continue it, or choose another --out"
        );
        let e = Error::RunExists {
            path: "runs/a".into(),
            checkpointed: false,
        };
        let m = shown(e);
        assert!(
            m.contains("before its first checkpoint") && m.contains("--resume"),
            "{m}"
        );
        let e = Error::NotARun {
            path: "runs/b".into(),
            exists: true,
        };
        assert!(shown(e).ends_with("runs are made by `dgm train --out DIR`"));
        let e = Error::FeatureNet {
            path: "features/x".into(),
            msg: "not found".into(),
            data: Some("shapes".into()),
        };
        assert_eq!(
            shown(e),
            "feature network features/x: not found; train one with `dgm metrics train-features --data shapes`"
        );
        let e = Error::DataNotFound {
            name: "mnist".into(),
            msg: "missing files; set DGM_DATA or the data directory to a folder holding them"
                .into(),
        };
        assert!(shown(e).ends_with("; --data-dir DIR chooses the data directory"));
    }

    /// Every flag of the table is one the CLI has.
    #[test]
    fn every_flag_exists() {
        fn flags(cmd: &clap::Command, out: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                out.extend(a.get_long().map(|l| format!("--{l}")));
                out.extend(a.get_short().map(|s| format!("-{s}")));
            }
            for s in cmd.get_subcommands() {
                flags(s, out);
            }
        }
        let mut all = Vec::new();
        flags(
            &<crate::cli::Cli as clap::CommandFactory>::command(),
            &mut all,
        );
        for (option, flag) in FLAGS {
            assert!(all.iter().any(|f| f == flag), "{option}: no flag {flag}");
        }
    }
}
