//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The models (from the registry, [`dgm::models::REGISTRY`]) and data sets, for every subcommand's help.
fn models_and_data() -> String {
    format!(
        "Models: {}\n\
Data sets: mnist, shapes, toy2d:<moons|8gaussians|checkerboard|swissroll|pinwheel|2spirals>, text:<name or path>\n\
Data directory: --data-dir, else $DGM_DATA, else ./data",
        dgm::models::model_names().join(", ")
    )
}

/// The help of `dgm train`'s model argument: the registry's names.
fn model_arg_help() -> String {
    format!("Model name: {}.", dgm::models::model_names().join(", "))
}

/// The help of `dgm edit complete`: the registry's models that can complete images.
fn complete_about() -> String {
    format!(
        "Keep the top rows of an image and sample the rest (autoregressive image models: {}).",
        dgm::models::names_with(|a| a.complete).join(", ")
    )
}

/// dgm: deep generative models — train, sample, score and inspect them.
#[derive(Parser, Debug)]
#[command(name = "dgm", version, about, after_help = models_and_data())]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model (or continue a run with --resume).
    #[command(after_help = models_and_data())]
    Train(TrainArgs),
    /// Draw samples from a trained run: a PNG grid for image models, streamed text for language models
    /// (--prompt, --max-tokens, --temperature, --top-k, --top-p), a WAV and its spectrogram for audio models.
    #[command(after_help = models_and_data())]
    Sample(SampleArgs),
    /// Score a text file under a language model (per-token log-probabilities, total nats, nats and bits per
    /// character) or a WAV file under an audio model (bits per sample, per class).
    #[command(after_help = models_and_data())]
    Score(ScoreArgs),
    /// Translate with a language model trained on lines `source = target` (e.g. --data text:numbers-en-fr):
    /// beam search (--beam 1 = greedy); --eval scores the held-out pairs (exact match, BLEU, chrF).
    #[command(after_help = models_and_data())]
    Translate(TranslateArgs),
    /// Edit data with a trained model.
    #[command(subcommand, after_help = models_and_data())]
    Edit(EditCommand),
    /// Evaluate a trained run: likelihood (nats, bits/dim, and what kind of number it is), sample quality
    /// (FID/KID/precision-recall/MMD/classifier scores) or, with `dgm eval ood`, out-of-distribution detection.
    #[command(after_help = eval_after())]
    Eval(EvalArgs),
    /// Encode examples to latent codes (CSV: index, label, z…).
    #[command(after_help = models_and_data())]
    Encode(EncodeArgs),
    /// Decode a straight line between the latent codes of two examples (PNG strip).
    #[command(after_help = models_and_data())]
    Interpolate(InterpolateArgs),
    /// Data sets: where they are found.
    #[command(subcommand, after_help = models_and_data())]
    Data(DataCommand),
    /// Evaluation tools: the feature network behind FID-MNIST / FID-shapes.
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// One page (HTML or Markdown) comparing every run under a directory: metrics, loss curves, samples.
    Report(ReportArgs),
    /// A local web page over the runs in a folder: watch training, sample, generate text.
    Studio(StudioArgs),
}

/// The help after `dgm eval` and `dgm metrics compare`: models, data sets, metrics and OOD sets.
fn eval_after() -> String {
    models_and_data()
        + "\nMetrics (--metric, comma-separated): nll, ais, accuracy, fid, kid, pr, mmd, class, all (all: every one but the slow ais)\n\
OOD sets (dgm eval ood --ood a,b): omniglot, noise, constant, corrupt-noise, corrupt-blur, corrupt-rotate, invert, mnist\n\
Image metrics use dgm's own feature network (dgm metrics train-features --data mnist): FID-MNIST / FID-shapes are\n\
comparable between dgm runs, not to Inception FID."
}

/// `dgm metrics …`
#[derive(Subcommand, Debug)]
pub enum MetricsCommand {
    /// Train the feature network (a small CNN classifier) of a labelled image data set and save it.
    TrainFeatures(TrainFeaturesArgs),
    /// Compare two data sets (splits or OOD sets) by FID / KID / precision-recall / MMD: the floor and ceiling
    /// that model numbers sit between.
    #[command(after_help = eval_after())]
    Compare(CompareArgs),
}

/// `dgm metrics compare`
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Data set: mnist, shapes, toy2d:<name>.
    #[arg(long)]
    pub data: String,
    /// First set: a split (train, validation, test) or an OOD set built from the test split.
    #[arg(long, default_value = "test")]
    pub a: String,
    /// Second set: a split or an OOD set.
    #[arg(long, default_value = "train")]
    pub b: String,
    /// Metrics, comma-separated: fid, kid, pr, mmd.
    #[arg(long, default_value = "fid,kid,pr,mmd")]
    pub metric: String,
    /// Feature network directory (default: features/<data>).
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// Examples per set.
    #[arg(long, default_value_t = 10_000)]
    pub num_samples: usize,
    /// Permutations of the MMD test.
    #[arg(long, default_value_t = 500)]
    pub permutations: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

/// `dgm metrics train-features`
#[derive(Args, Debug)]
pub struct TrainFeaturesArgs {
    /// Labelled image data set: mnist or shapes.
    #[arg(long)]
    pub data: String,
    /// Output directory (default: features/<data>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Training epochs (default: the feature network's default).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Optimiser steps instead of whole epochs.
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<u64>,
    /// Replace an existing feature network at --out (metrics computed with the old one stop being comparable).
    #[arg(long)]
    pub force: bool,
    /// Generated data sets (shapes): training / test examples to generate.
    #[arg(long, value_names = ["TRAIN", "TEST"], num_args = 2)]
    pub generated: Option<Vec<usize>>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

/// `dgm report`
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Directory holding run directories (searched recursively).
    pub runs: PathBuf,
    /// Output file: .html (one self-contained page) or .md.
    #[arg(long)]
    pub out: PathBuf,
}

/// `dgm studio`
#[derive(Args, Debug)]
pub struct StudioArgs {
    /// The runs folder: its runs are listed and new runs are written into it (created when missing).
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
    /// The port to listen on (0 picks a free one and prints it).
    #[arg(long, default_value_t = 7860)]
    pub port: u16,
    /// The address to listen on. Anything but a loopback address lets other machines use the studio,
    /// which has no login: prefer SSH port forwarding (ssh -L 7860:127.0.0.1:7860 HOST).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Generation jobs that may wait behind the running one; more requests get 503.
    #[arg(long, default_value_t = 4)]
    pub queue: usize,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

/// `dgm data …`
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Which data sets are found, and where.
    #[command(after_help = models_and_data())]
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
    /// Model name (the help lists the registry's names).
    #[arg(help = model_arg_help())]
    pub model: Option<String>,
    /// Data set: mnist, shapes, toy2d:<name>, text:<name or path>.
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
    /// Stop with a checkpoint after this many seconds of training in this session (validation not counted):
    /// a fixed time budget. The learning-rate schedule still follows train.steps.
    #[arg(long)]
    pub time_limit: Option<f64>,
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
    /// Number of samples (default: 64 images, 1 text, 1 audio clip).
    #[arg(short = 'n', long = "num")]
    pub n: Option<usize>,
    /// Output file: a PNG for image models, a WAV for audio models (with its spectrogram as a PNG of the same
    /// name; several clips are joined with 0.25 s of silence); for language models the text is also written here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Class to generate, for class-conditional models; a comma-separated list (e.g. 0,1,2) gives each class
    /// an equal run of consecutive samples (-n 100 with ten classes: one row of ten per class).
    #[arg(long, conflicts_with = "caption", value_delimiter = ',')]
    pub class: Vec<u32>,
    /// Caption to generate from, for caption-conditional diffusion models, e.g. "a small red circle at the
    /// top left" ("" = the empty caption, the model's unconditional distribution).
    #[arg(long)]
    pub caption: Option<String>,
    /// Image models: prior temperature (1 = the model's distribution). Language models: divides the logits
    /// (< 1 sharper, > 1 more random).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// VAE family: draw from the observation model instead of showing its mean (other models' samples are
    /// always draws).
    #[arg(long)]
    pub draw: bool,
    /// Diffusion models: the sampler (ddpm, ddim, euler, heun, dpm++2m, langevin, pc).
    #[arg(long)]
    pub sampler: Option<String>,
    /// Diffusion models: number of sampler steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Conditional diffusion models (a class or a caption): classifier-free guidance scale (1 = none; e.g. 3).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Language models: text to continue (default: start from the beginning of a text).
    #[arg(long, conflicts_with = "prompt_file")]
    pub prompt: Option<String>,
    /// Language models: read the prompt from this file (e.g. a function signature for a code model).
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// Language models trained to fill in the middle (model.fim > 0): the text after the gap. The model writes
    /// what goes between the prompt (or the start of the text) and this, until it ends the middle.
    #[arg(long, conflicts_with = "suffix_file")]
    pub suffix: Option<String>,
    /// Like --suffix, read from this file (e.g. the rest of a source file below the gap).
    #[arg(long)]
    pub suffix_file: Option<PathBuf>,
    /// Language models: tokens to generate [default: 500; a middle: at most half the context].
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Language models: sample only from the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Language models: sample only from the most likely tokens whose probability adds up to P (nucleus).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Language models: recompute the whole context for every token instead of using the KV cache.
    #[arg(long)]
    pub no_kv_cache: bool,
    /// Language models: print tokens/s to stderr when done; audio models: samples/s.
    #[arg(long)]
    pub timing: bool,
}

/// `dgm score`
#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub run: RunArg,
    /// The text file to score, for a language model (any bytes; those outside the model's vocabulary are
    /// reported and skipped).
    #[arg(long, conflicts_with = "audio", required_unless_present = "audio")]
    pub text: Option<PathBuf>,
    /// The WAV file to score, for an audio model (mono 16-bit at the model's rate, at most its clip length;
    /// padded with silence to that length).
    #[arg(long)]
    pub audio: Option<PathBuf>,
    /// Audio models conditioned on a class: score under this class (default: under every class, with the
    /// most likely one).
    #[arg(long)]
    pub class: Option<u32>,
    /// Print only the summary, not one line per token.
    #[arg(long)]
    pub summary: bool,
}

/// `dgm translate`
#[derive(Args, Debug)]
pub struct TranslateArgs {
    #[command(flatten)]
    pub run: RunArg,
    /// The sentence to translate (e.g. "twenty-three").
    #[arg(required_unless_present = "eval")]
    pub text: Option<String>,
    /// Hypotheses kept by beam search (1 = greedy decoding).
    #[arg(long, default_value_t = 4)]
    pub beam: usize,
    /// Tokens generated at most.
    #[arg(long, default_value_t = 200)]
    pub max_tokens: usize,
    /// Score the test pairs of the run's parallel corpus (text:numbers-en-de or text:numbers-en-fr) instead:
    /// exact match, BLEU and chrF, greedy and with the beam.
    #[arg(long, conflicts_with = "text")]
    pub eval: bool,
    /// With --eval: only the first N test pairs.
    #[arg(long, requires = "eval")]
    pub limit: Option<usize>,
}

/// `dgm edit …`
#[derive(Subcommand, Debug)]
pub enum EditCommand {
    /// Keep the top rows of an image and sample the rest (autoregressive image models; the help lists them).
    #[command(about = complete_about())]
    Complete(CompleteArgs),
    /// Fill the pixels a mask marks missing (diffusion models; solvers repaint [default], project, dps, sdedit).
    Inpaint(InpaintArgs),
    /// Undo a box down-sampling ×2 or ×4 (diffusion models; solvers project [default], dps, sdedit).
    SuperResolve(SuperResolveArgs),
    /// Colour a grey image (diffusion models on RGB data; solvers project [default], dps, sdedit).
    Colorize(RestoreArgs),
    /// Undo a Gaussian blur (diffusion models; solvers dps [default], project, sdedit).
    Deblur(DeblurArgs),
    /// Sparse-view CT: reconstruct an image from few projections (diffusion models on grey images; solvers
    /// project [default], dps, sdedit).
    Reconstruct(ReconstructArgs),
    /// Turn a rough guide (a stroke painting, a sketch) into a realistic image (SDEdit; diffusion models).
    Sdedit(RestoreArgs),
}

/// Options of every `dgm edit` task that runs a diffusion model (inpaint, super-resolve, colorize, deblur,
/// reconstruct, sdedit).
#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub run: RunArg,
    /// The image (PNG etc., of the model's size): measured by the task's operator (or, for sdedit, the guide).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Output PNG: the input, the measurement as an image, then the samples.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of samples.
    #[arg(short = 'n', long = "num", default_value_t = 4)]
    pub n: usize,
    /// Seed (measurement noise and sampling).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Solver: repaint, project, dps or sdedit (default: the task's).
    #[arg(long)]
    pub solver: Option<String>,
    /// Measurement noise σ_y in the model's value space ([−1, 1] for images), added when measuring --image.
    #[arg(long, default_value_t = 0.0)]
    pub sigma_y: f64,
    /// Sampler (default: the model's; the solvers need one evaluation per step: ddpm, ddim, euler, dpm++2m).
    #[arg(long)]
    pub sampler: Option<String>,
    /// Number of sampler steps (default: the model's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// SDEdit strength in (0, 1]: the fraction of the steps run from the noised guide [default: 0.6].
    #[arg(long)]
    pub strength: Option<f64>,
    /// repaint / project: levels to jump back when resampling [default: 10].
    #[arg(long)]
    pub jump: Option<usize>,
    /// repaint / project: passes per block (1 = no resampling) [default: 5 for repaint, 1 for project].
    #[arg(long)]
    pub resample: Option<usize>,
    /// dps: step size ζ [default: 5, tuned for 50 steps; Chung et al. use 1 with 1000].
    #[arg(long)]
    pub dps_scale: Option<f64>,
    /// project: CGLS iterations standing in for the pseudo-inverse of blur and CT [default: 10].
    #[arg(long)]
    pub cg_iters: Option<usize>,
    /// Class to condition on, for class-conditional models.
    #[arg(long)]
    pub class: Option<u32>,
    /// Classifier-free guidance scale (class-conditional models trained with class dropout).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Also write the measurement as .npy (e.g. the sinogram, to reconstruct from with --sinogram).
    #[arg(long)]
    pub save_measurement: Option<PathBuf>,
}

/// `dgm edit inpaint`
#[derive(Args, Debug)]
pub struct InpaintArgs {
    #[command(flatten)]
    pub common: RestoreArgs,
    /// The missing pixels: a mask image (white = missing, black = kept), `centre` (the centre box, half the
    /// side), `bottom` (the bottom half) or `random:P` (each pixel missing with probability P).
    #[arg(long)]
    pub mask: String,
}

/// `dgm edit super-resolve`
#[derive(Args, Debug)]
pub struct SuperResolveArgs {
    #[command(flatten)]
    pub common: RestoreArgs,
    /// Down-sampling factor (the image size must be divisible by it).
    #[arg(long, default_value_t = 2)]
    pub factor: usize,
}

/// `dgm edit deblur`
#[derive(Args, Debug)]
pub struct DeblurArgs {
    #[command(flatten)]
    pub common: RestoreArgs,
    /// Standard deviation of the Gaussian blur, in pixels.
    #[arg(long, default_value_t = 1.0)]
    pub blur_sigma: f64,
}

/// `dgm edit reconstruct`
#[derive(Args, Debug)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub common: RestoreArgs,
    /// Measurement operator: ct (parallel-beam projections, angles evenly over [0, π)).
    #[arg(long, default_value = "ct")]
    pub operator: String,
    /// Number of projection angles.
    #[arg(long, default_value_t = 16)]
    pub views: usize,
    /// The measured sinogram (.npy or .csv, views × detectors) instead of projecting --image.
    #[arg(long)]
    pub sinogram: Option<PathBuf>,
}

/// `dgm edit complete`
#[derive(Args, Debug)]
pub struct CompleteArgs {
    #[command(flatten)]
    pub run: RunArg,
    /// The image to complete (PNG etc.), of the model's size.
    #[arg(long)]
    pub image: PathBuf,
    /// Rows of the image kept (from the top); the rest is sampled.
    #[arg(long)]
    pub rows: usize,
    /// Number of completions.
    #[arg(short = 'n', long = "num", default_value_t = 8)]
    pub n: usize,
    /// Output PNG: the kept part, then the completions.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Class to condition on, for class-conditional models.
    #[arg(long)]
    pub class: Option<u32>,
}

/// `dgm eval`
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// `ood`: out-of-distribution detection instead of the metrics of --metric.
    pub mode: Option<String>,
    #[command(flatten)]
    pub run: RunArg,
    /// Metrics, comma-separated: nll, ais (annealed importance sampling of a GAN generator or VAE decoder, or
    /// of an energy-based model's log Z), accuracy (of a classifier: jem), fid, kid, pr, mmd, class, all (every
    /// one but ais) [default: nll].
    #[arg(long)]
    pub metric: Option<String>,
    /// Split: train, validation, test (NLL: the split scored; sample metrics: the split compared with)
    /// [default: test].
    #[arg(long)]
    pub split: Option<String>,
    /// Feature network directory for image metrics (default: features/<data>).
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// Number of model samples for sample metrics [default: 10000].
    #[arg(long)]
    pub num_samples: Option<usize>,
    /// Sample metrics of the VAE family: draw from the observation model instead of using its mean.
    #[arg(long)]
    pub draw: bool,
    /// Sample metrics: permutations of the MMD test [default: 500].
    #[arg(long)]
    pub permutations: Option<usize>,
    /// OOD: sets to score, comma-separated (default: the data set's own list).
    #[arg(long)]
    pub ood: Option<String>,
    /// Likelihood estimator: NLL evaluates only this one (default: every estimator of the model); OOD scores
    /// by it (default: the model's first, e.g. elbo).
    #[arg(long)]
    pub estimator: Option<String>,
    /// Likelihood steps: diffusion (vlb: KL terms evaluated, default all; ode: Heun steps); an energy-based
    /// model's AIS of log Z (annealing steps, default 1000).
    #[arg(long)]
    pub likelihood_steps: Option<usize>,
    /// Diffusion ODE likelihood: Hutchinson probes per evaluation (at least 1) [default: 1].
    #[arg(long)]
    pub probes: Option<usize>,
    /// Sample metrics of diffusion models: the sampler (default: the model's).
    #[arg(long)]
    pub sampler: Option<String>,
    /// Sample metrics of diffusion models: sampler steps (default: the model's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// OOD: examples per batch of the typicality test [default: 16].
    #[arg(long)]
    pub typicality_batch: Option<usize>,
    /// OOD: significance level of the typicality test [default: 0.01].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// OOD: also write every example's score to this CSV (set, index, nll_nats, bits_per_dim).
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Importance samples for the IWAE estimate (0 = skip it) [default: 100].
    #[arg(long)]
    pub iwae_k: Option<usize>,
    /// AIS: annealing steps T (intermediate distributions) [default: 1000].
    #[arg(long)]
    pub ais_steps: Option<usize>,
    /// AIS: chains K per example (an energy-based model: per estimate of log Z) [default: 16].
    #[arg(long)]
    pub ais_chains: Option<usize>,
    /// AIS of an energy-based model: independent estimates of log Z, whose spread is reported [default: 3].
    #[arg(long)]
    pub ais_runs: Option<usize>,
    /// AIS: leapfrog steps L per HMC transition [default: 10].
    #[arg(long)]
    pub ais_leapfrog: Option<usize>,
    /// AIS: standard deviation σ of the Gaussian observation model N(x; g(z), σ²I), in the model's data range
    /// (GANs, the MMD generator; a VAE's Gaussian decoder has its own) [default: 0.1].
    #[arg(long)]
    pub obs_std: Option<f64>,
    /// Only the first N examples of the split (NLL: default all; AIS: default 100; OOD: examples per set,
    /// default 2000).
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
