//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER: &str = "Models: vae, iwae, cvae\n\
Data sets: mnist, shapes, toy2d:<moons|8gaussians|checkerboard|swissroll|pinwheel|2spirals>, text:<name or path>\n\
Data directory: --data-dir, else $DGM_DATA, else ./data";

/// dgm: deep generative models — train, sample, score and inspect them.
#[derive(Parser, Debug)]
#[command(name = "dgm", version, about, after_help = AFTER)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model (or continue a run with --resume).
    #[command(after_help = AFTER)]
    Train(TrainArgs),
    /// Draw samples from a trained run and save them as a PNG grid.
    #[command(after_help = AFTER)]
    Sample(SampleArgs),
    /// Score a trained run: negative log-likelihood (nats and bits/dim) and what kind of number it is.
    #[command(after_help = AFTER)]
    Eval(EvalArgs),
    /// Encode examples to latent codes (CSV: index, label, z…).
    #[command(after_help = AFTER)]
    Encode(EncodeArgs),
    /// Decode a straight line between the latent codes of two examples (PNG strip).
    #[command(after_help = AFTER)]
    Interpolate(InterpolateArgs),
    /// Data sets: where they are found.
    #[command(subcommand, after_help = AFTER)]
    Data(DataCommand),
}

/// `dgm data …`
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Which data sets are found, and where.
    #[command(after_help = AFTER)]
    Info(DataDirArg),
}

/// The data directory option.
#[derive(Args, Debug, Clone)]
pub struct DataDirArg {
    /// Folder holding the data sets (default: $DGM_DATA, else ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `dgm train`
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Model name: vae, iwae, cvae.
    pub model: Option<String>,
    /// Data set: mnist, shapes, toy2d:<name>.
    #[arg(long)]
    pub data: Option<String>,
    /// Config file (TOML, same layout as a run's config.toml); --set and flags apply on top.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set train.lr=3e-4 --set model.latent_dim=16 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run directory to create (e.g. runs/NAME).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with_all = ["model", "data", "config", "set", "out", "seed"])]
    pub resume: Option<PathBuf>,
    /// Number of optimiser steps (train.steps); with --resume, a new total.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Seed for everything random in the run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop with a checkpoint after this many steps of this session (continue later with --resume).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Device: cpu or cuda (cuda needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

/// Options shared by commands that load a run.
#[derive(Args, Debug)]
pub struct RunArg {
    /// The run directory (made by `dgm train --out`).
    #[arg(long)]
    pub run: PathBuf,
    /// Which weights: ema (default) or model.
    #[arg(long, default_value = "ema")]
    pub weights: String,
    /// Device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `dgm sample`
#[derive(Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    pub run: RunArg,
    /// Number of samples.
    #[arg(short = 'n', long = "num", default_value_t = 64)]
    pub n: usize,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Class to generate, for class-conditional models.
    #[arg(long)]
    pub class: Option<u32>,
    /// Prior temperature (1 = the model's distribution).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Draw from the observation model instead of showing its mean.
    #[arg(long)]
    pub draw: bool,
}

/// `dgm eval`
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub run: RunArg,
    /// Split: train, validation, test.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Importance samples for the IWAE estimate (0 = skip it).
    #[arg(long, default_value_t = 100)]
    pub iwae_k: usize,
    /// Only the first N examples of the split.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Examples per batch.
    #[arg(long, default_value_t = 250)]
    pub batch_size: usize,
    /// Seed of the estimators' randomness.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

/// `dgm encode`
#[derive(Args, Debug)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub run: RunArg,
    /// Split: train, validation, test.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Only the first N examples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output CSV.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

/// `dgm interpolate`
#[derive(Args, Debug)]
pub struct InterpolateArgs {
    #[command(flatten)]
    pub run: RunArg,
    /// Split the two examples come from.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Index of the first example.
    #[arg(long, default_value_t = 0)]
    pub from: usize,
    /// Index of the second example.
    #[arg(long, default_value_t = 1)]
    pub to: usize,
    /// Number of images in the strip (including both ends).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}
