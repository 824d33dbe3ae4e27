//! The timing harness shared by dgm's step benchmarks (`gpt_step`, `unet_step`, `step_throughput`,
//! `conv_bench`; included by each with `mod common;`): the process setup of the dgm binary, and a step timer
//! with warm-up steps, per-part means and quartiles.

// each example uses a part of the harness
#![allow(dead_code)]

use std::time::Instant;

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Sets the process up as the dgm binary does: mimalloc keeps freed memory committed (option
/// `purge_delay` = −1), and dgm's CPU runtime (thread pool) is initialised.
pub fn init() {
    // SAFETY: sets a plain integer option before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    dgm::runtime::init_cpu_runtime();
}

/// (median, q1, q3) of `times`, each quantile the element at the rounded fractional rank of the sorted
/// times. `times` must not be empty.
pub fn quartiles(mut times: Vec<f64>) -> (f64, f64, f64) {
    times.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.25), q(0.75))
}

/// The times of a benchmark loop's steps after `warmup` untimed ones, each step split into named parts.
pub struct StepTimer {
    warmup: usize,
    names: &'static [&'static str],
    /// Summed milliseconds of each part over the timed steps.
    parts: Vec<f64>,
    /// Milliseconds of each timed step.
    times: Vec<f64>,
}

impl StepTimer {
    /// A timer for `steps` timed steps after `warmup` warm-up steps, with parts called `names`.
    pub fn new(steps: usize, warmup: usize, names: &'static [&'static str]) -> Self {
        Self {
            warmup,
            names,
            parts: vec![0.0; names.len()],
            times: Vec::with_capacity(steps),
        }
    }

    /// Records step `s` (nothing while `s` is a warm-up step): `marks[i]` is the instant part `i` began, the
    /// last part ends now, and the step lasted from `marks[0]` until now.
    pub fn record(&mut self, s: usize, marks: &[Instant]) {
        if s < self.warmup {
            return;
        }
        let now = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        for (i, part) in self.parts.iter_mut().enumerate() {
            let end = marks.get(i + 1).copied().unwrap_or(now);
            *part += ms(marks[i], end);
        }
        self.times.push(ms(marks[0], now));
    }

    /// The mean milliseconds of each part over the timed steps.
    pub fn part_means(&self) -> Vec<f64> {
        let n = self.times.len() as f64;
        self.parts.iter().map(|p| p / n).collect()
    }

    /// Prints the mean of each part to stderr when `DGM_PROFILE` is set (`mean ms: forward 1.23  …`).
    pub fn print_profile(&self) {
        if std::env::var_os("DGM_PROFILE").is_some() {
            let means: Vec<String> = self
                .names
                .iter()
                .zip(self.part_means())
                .map(|(name, m)| format!("{name} {m:.2}"))
                .collect();
            eprintln!("mean ms: {}", means.join("  "));
        }
    }

    /// (median, q1, q3) of the step times in milliseconds; an error when no step was timed.
    pub fn quartiles(&self) -> dgm::Result<(f64, f64, f64)> {
        if self.times.is_empty() {
            return Err(dgm::Error::invalid(
                "STEPS",
                "0: need at least one timed step",
            ));
        }
        Ok(quartiles(self.times.clone()))
    }
}

/// For the control benches: the run at `run_dir` (EMA weights, CPU), which must be a diffusion model, and the
/// first `n` test images of `spec` in [0, 1] and in the model's [−1, 1].
pub fn run_and_test_images(
    run_dir: &str,
    spec: dgm::data::DataSpec,
    n: usize,
) -> dgm::Result<(
    dgm::train::run::LoadedRun,
    candle_core::Tensor,
    candle_core::Tensor,
)> {
    use dgm::data::{self, GeneratedSizes, Split};
    let dev = candle_core::Device::Cpu;
    let loaded = dgm::train::run::load(
        std::path::Path::new(run_dir),
        dgm::train::Weights::Ema,
        &dev,
    )?;
    if loaded.model.as_denoiser().is_none() {
        return Err(dgm::Error::invalid("run", "not a diffusion model"));
    }
    let test = data::load(
        &spec,
        Split::Test,
        &data::data_dir(None),
        &GeneratedSizes::default(),
    )?;
    let x01 = dgm::metrics::features::dataset_images(&test, Some(n), &dev)?;
    let x = x01.affine(2.0, -1.0)?;
    Ok((loaded, x01, x))
}

/// Writes `tensors` as DIR/tensors.txt (one `name d0 d1 …` line each) and DIR/tensors.bin (their f32 values,
/// little-endian, concatenated in the same order).
pub fn write_tensors(
    dir: &std::path::Path,
    tensors: &[(String, candle_core::Tensor)],
) -> dgm::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| dgm::Error::io(dir, e))?;
    let mut txt = String::new();
    let mut bin = Vec::new();
    for (name, t) in tensors {
        let dims: Vec<String> = t.dims().iter().map(|d| d.to_string()).collect();
        txt.push_str(&format!("{name} {}\n", dims.join(" ")));
        for v in t.flatten_all()?.to_vec1::<f32>()? {
            bin.extend_from_slice(&v.to_le_bytes());
        }
    }
    for (file, bytes) in [("tensors.txt", txt.as_bytes()), ("tensors.bin", &bin[..])] {
        let path = dir.join(file);
        std::fs::write(&path, bytes).map_err(|e| dgm::Error::io(path, e))?;
    }
    Ok(())
}

/// `configs/<model>-mnist.toml` (for one of `models`) with its `[model]` table prepared for 1×28×28 images
/// under `preprocessing`, which the config itself must name (the step benchmarks time the shipped configs).
pub fn mnist_config(
    model: &str,
    models: &[&str],
    preprocessing: dgm::data::Preprocessing,
) -> dgm::Result<dgm::train::RunConfig> {
    if !models.contains(&model) {
        return Err(dgm::Error::unknown("MODEL", model, models));
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(format!("{model}-mnist.toml"));
    let text = std::fs::read_to_string(&path).map_err(|e| dgm::Error::io(&path, e))?;
    let mut cfg = dgm::train::RunConfig::from_toml(&text)?;
    if cfg.model.name != model || cfg.data.preprocessing != preprocessing {
        return Err(dgm::Error::invalid(
            path.display().to_string(),
            format!(
                "expected model '{model}' on {}, found '{}' on {}",
                preprocessing.describe(),
                cfg.model.name,
                cfg.data.preprocessing.describe()
            ),
        ));
    }
    let info = dgm::models::DataInfo {
        tokenizer: None,
        caption_words: None,
        example_shape: vec![1, 28, 28],
        num_classes: Some(10),
        preprocessing,
    };
    dgm::models::prepare(model, &mut cfg.model.config, &info)?;
    Ok(cfg)
}

/// What a step benchmark's command line asks for: `--dump DIR MODEL` (weights and outputs for the PyTorch twin's
/// check) or `MODEL [STEPS] [BATCH]` (a timing run).
pub enum StepArgs {
    /// `--dump DIR MODEL`.
    Dump {
        /// Where to write.
        dir: std::path::PathBuf,
        /// Which model.
        model: String,
    },
    /// `MODEL [STEPS] [BATCH]`.
    Time {
        /// Which model.
        model: String,
        /// Timed steps (default 30).
        steps: usize,
        /// Batch size (default `default_batch`).
        batch: usize,
    },
}

/// Parses the command line of the step benchmark `example` (see [`StepArgs`]).
pub fn step_args(example: &str, default_batch: usize) -> dgm::Result<StepArgs> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--dump") {
        let (Some(dir), Some(model)) = (args.get(2), args.get(3)) else {
            return Err(dgm::Error::invalid(
                "--dump",
                "needs a directory and a model: --dump DIR MODEL",
            ));
        };
        return Ok(StepArgs::Dump {
            dir: dir.into(),
            model: model.clone(),
        });
    }
    let model = args.get(1).ok_or_else(|| {
        dgm::Error::invalid("MODEL", format!("usage: {example} MODEL [STEPS] [BATCH]"))
    })?;
    Ok(StepArgs::Time {
        model: model.clone(),
        steps: args.get(2).and_then(|s| s.parse().ok()).unwrap_or(30),
        batch: args
            .get(3)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default_batch),
    })
}
