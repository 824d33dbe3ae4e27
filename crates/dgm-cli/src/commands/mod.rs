//! What each subcommand does: argument checks, then calls into the dgm library.
//!
//! One file per command or group of commands; this one dispatches the parsed command and holds the
//! helpers they share (the device, loading a run, refusing flags that do not apply).

use std::process::ExitCode;

use anyhow::{bail, Result};
use candle_core::Device;
use dgm::train::{run, Weights};

use crate::cli::{Cli, Command, DataCommand, EditCommand, MetricsCommand, RunArg};

mod complete;
mod data;
mod eval;
mod latent;
mod metrics;
mod ood;
mod report;
mod restore;
mod sample;
mod score;
mod studio;
mod train;
mod translate;

use self::complete::complete_cmd;
use self::data::data_info;
use self::eval::eval_cmd;
use self::latent::{encode_cmd, interpolate_cmd};
use self::metrics::{compare_cmd, train_features_cmd};
use self::report::report_cmd;
use self::restore::restore_cmd;
use self::sample::sample_cmd;
use self::score::score_cmd;
use self::studio::studio_cmd;
use self::train::train_cmd;
use self::translate::translate_cmd;

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Train(a) => train_cmd(a),
        Command::Sample(a) => sample_cmd(a),
        Command::Score(a) => score_cmd(a),
        Command::Translate(a) => translate_cmd(a),
        Command::Edit(EditCommand::Complete(a)) => complete_cmd(a),
        Command::Edit(other) => restore_cmd(other),
        Command::Eval(a) => eval_cmd(a),
        Command::Encode(a) => encode_cmd(a),
        Command::Interpolate(a) => interpolate_cmd(a),
        Command::Data(DataCommand::Info(d)) => data_info(d.data_dir.as_deref()),
        Command::Metrics(MetricsCommand::TrainFeatures(a)) => train_features_cmd(a),
        Command::Metrics(MetricsCommand::Compare(a)) => compare_cmd(a),
        Command::Report(a) => report_cmd(a),
        Command::Studio(a) => studio_cmd(a),
    }
}

fn device(name: &str) -> Result<Device> {
    Ok(dgm::runtime::device(name)?)
}

fn load(r: &RunArg) -> Result<run::LoadedRun> {
    let weights = Weights::parse(&r.weights)?;
    Ok(run::load(&r.run, weights, &device(&r.device)?)?)
}

/// One model of each family, in registry order (`vae, ddpm, made`), for "e.g." in messages.
fn model_examples() -> String {
    let mut families: Vec<&str> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for e in dgm::models::REGISTRY {
        if !families.contains(&e.family) {
            families.push(e.family);
            names.push(e.name);
        }
    }
    names.join(", ")
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Fails with "FLAG does not apply WHY" for the first flag of `given` that was given (`true`).
fn refuse_given(given: &[(&str, bool)], why: &str) -> Result<()> {
    match given.iter().find(|(_, on)| *on) {
        Some((flag, _)) => bail!(dgm::Error::Unsupported(format!(
            "{flag} does not apply {why}"
        ))),
        None => Ok(()),
    }
}
