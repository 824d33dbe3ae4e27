//! What each subcommand does: argument checks, then calls into the dgm library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use dgm::data::{self, Dataset, Split};
use dgm::metrics::evaluate_nll;
use dgm::model::{Batch, Condition, SampleOptions};
use dgm::train::{self, run, RunConfig, TrainOptions, TrainOutcome, Weights};

use crate::cli::{
    Cli, Command, DataCommand, EncodeArgs, EvalArgs, InterpolateArgs, RunArg, SampleArgs, TrainArgs,
};

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Train(a) => train_cmd(a),
        Command::Sample(a) => sample_cmd(a),
        Command::Eval(a) => eval_cmd(a),
        Command::Encode(a) => encode_cmd(a),
        Command::Interpolate(a) => interpolate_cmd(a),
        Command::Data(DataCommand::Info(d)) => data_info(d.data_dir.as_deref()),
    }
}

fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|e| {
            anyhow::Error::new(dgm::Error::invalid(
                "--device",
                format!("cuda is not available: {e}"),
            ))
        }),
        other => Err(dgm::Error::unknown("device", other, &["cpu", "cuda"]).into()),
    }
}

fn train_cmd(a: TrainArgs) -> Result<ExitCode> {
    let data_dir = data::data_dir(a.data_dir.data_dir.as_deref());
    let mut opts = TrainOptions::new(&data_dir);
    opts.device = device(&a.device)?;
    opts.stop_after = a.stop_after;
    opts.quiet = a.quiet;
    let stop = opts.stop.clone();
    // First Ctrl-C: finish the current step, write a checkpoint, exit 0. Second: exit at once.
    let _ = ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: writing a checkpoint after this step (Ctrl-C again to quit now)");
    });
    let (dir, cfg, resume) = match &a.resume {
        Some(dir) => {
            let mut cfg = run::RunDir::open(dir)?.load_config()?;
            if let Some(s) = a.steps {
                cfg.train.steps = s;
            }
            (dir.clone(), cfg, true)
        }
        None => {
            let mut cfg = match (&a.config, a.model.as_deref()) {
                (Some(p), model) => {
                    let text = std::fs::read_to_string(p).map_err(|e| dgm::Error::io(p, e))?;
                    let c = RunConfig::from_toml(&text)
                        .map_err(|e| dgm::Error::invalid(p.display().to_string(), e.to_string()))?;
                    if let Some(m) = model.filter(|m| *m != c.model.name) {
                        bail!(dgm::Error::invalid(
                            "--config",
                            format!(
                                "{} is a config for model '{}', not '{m}'",
                                p.display(),
                                c.model.name
                            )
                        ));
                    }
                    c
                }
                (None, Some(model)) => {
                    RunConfig::new(model, a.data.as_deref().unwrap_or("shapes"))?
                }
                (None, None) => {
                    return Err(dgm::Error::invalid(
                        "train",
                        "name a model (vae, iwae, cvae), give --config FILE, or --resume a run",
                    )
                    .into())
                }
            };
            let model = cfg.model.name.clone();
            if let Some(d) = &a.data {
                if d != &cfg.data.name {
                    let fresh = RunConfig::new(&model, d)?;
                    cfg.data = fresh.data;
                }
            }
            if let Some(s) = a.seed {
                cfg.seed = s;
            }
            if let Some(s) = a.steps {
                cfg.train.steps = s;
            }
            for kv in &a.set {
                cfg.set(kv)?;
            }
            let Some(out) = &a.out else {
                return Err(dgm::Error::invalid(
                    "--out",
                    "give the run directory to create, e.g. --out runs/NAME",
                )
                .into());
            };
            (out.clone(), cfg, false)
        }
    };
    match train::train(&dir, &cfg, resume, &opts)? {
        TrainOutcome::Finished { .. } | TrainOutcome::Interrupted { .. } => Ok(ExitCode::SUCCESS),
    }
}

fn load(r: &RunArg) -> Result<run::LoadedRun> {
    let weights = Weights::parse(&r.weights)?;
    Ok(run::load(&r.run, weights, &device(&r.device)?)?)
}

fn sample_cmd(a: SampleArgs) -> Result<ExitCode> {
    if a.n == 0 {
        bail!(dgm::Error::invalid("-n", "must be at least 1"));
    }
    let run = load(&a.run)?;
    let mut opts = SampleOptions::seeded(a.seed);
    opts.temperature = a.temperature;
    opts.mean = !a.draw;
    if let Some(k) = a.class {
        opts.condition = Condition::Class(vec![k]);
    }
    let x = run.model.sample(a.n, &opts)?;
    dgm::image_io::save_samples(&a.out, &x, &run.config.data.preprocessing)?;
    println!("wrote {} samples to {}", a.n, a.out.display());
    Ok(ExitCode::SUCCESS)
}

fn eval_cmd(a: EvalArgs) -> Result<ExitCode> {
    let split = Split::parse(&a.split)?;
    let run = load(&a.run)?;
    let Some(density) = run.model.as_density() else {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' has no likelihood to evaluate",
            run.config.model.name
        )));
    };
    let data_dir = data::data_dir(a.data_dir.data_dir.as_deref());
    let ds = run::load_data(&run.config, split, &data_dir)?;
    let prep = run.config.data.preprocessing.for_eval();
    let dev = device(&a.run.device)?;
    let mut reports = Vec::new();
    for est in density.estimators() {
        let k = if est == "iwae" { a.iwae_k } else { 1 };
        if k == 0 {
            continue;
        }
        let started = std::time::Instant::now();
        let mut last = started;
        let mut report = |done: usize, total: usize| {
            if last.elapsed().as_secs() >= 10 {
                eprintln!(
                    "{est} (k = {k}): {done}/{total} examples, {:.0} s",
                    started.elapsed().as_secs_f64()
                );
                last = std::time::Instant::now();
            }
        };
        let r = evaluate_nll(
            density,
            &ds,
            &prep,
            &est,
            k,
            a.batch_size,
            a.limit,
            a.seed,
            &dev,
            &mut report,
        )?;
        reports.push(r);
    }
    println!(
        "run {} · model {} · {} weights · step {} · {} split, {} examples",
        a.run.run.display(),
        run.config.model.name,
        a.run.weights,
        run.state.step,
        split.name(),
        reports.first().map(|r| r.n).unwrap_or(0)
    );
    println!("data: {} · {}", run.config.data.name, prep.describe());
    println!(
        "{:<22} {:>14} {:>10} {:>10}",
        "kind", "NLL (nats)", "± s.e.", "bits/dim"
    );
    for r in &reports {
        println!(
            "{:<22} {:>14.3} {:>10.3} {:>10.4}",
            r.kind.to_string(),
            r.nll_nats,
            r.stderr_nats,
            r.bits_per_dim
        );
    }
    println!("(a lower bound on log p gives an upper bound on NLL; IWAE-k tightens towards the true NLL as k grows)");
    let path = a.run.run.join(format!("eval-{}.json", split.name()));
    let text = serde_json::to_string_pretty(&reports)?;
    dgm::checkpoint::write_atomic(&path, text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The split named `split` of the run's data set.
fn split_data(
    run: &run::LoadedRun,
    split: &str,
    data_dir: Option<&Path>,
) -> Result<(Split, Dataset)> {
    let split = Split::parse(split)?;
    Ok((
        split,
        run::load_data(&run.config, split, &data::data_dir(data_dir))?,
    ))
}

/// Examples `idx` of split `split` of the run's data set, preprocessed as for evaluation.
fn examples(
    run: &run::LoadedRun,
    split: Split,
    ds: &Dataset,
    idx: &[usize],
    dev: &Device,
) -> Result<Batch> {
    if let Some(&bad) = idx.iter().find(|&&i| i >= ds.len()) {
        bail!(dgm::Error::invalid(
            "index",
            format!(
                "{bad} is out of range: the {} split has {} examples",
                split.name(),
                ds.len()
            )
        ));
    }
    let prep = run.config.data.preprocessing.for_eval();
    Ok(ds.batch(idx, &prep, &mut dgm::rng::Rng::new(0), dev)?)
}

fn encode_cmd(a: EncodeArgs) -> Result<ExitCode> {
    let run = load(&a.run)?;
    let Some(latent) = run.model.as_latent() else {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' has no encoder",
            run.config.model.name
        )));
    };
    let dev = device(&a.run.device)?;
    let (split, ds) = split_data(&run, &a.split, a.data_dir.data_dir.as_deref())?;
    let n = a.limit.unwrap_or(ds.len()).min(ds.len());
    let mut out = String::new();
    let dim: usize = latent.latent_shape().iter().product();
    out.push_str("index,label");
    for j in 0..dim {
        out.push_str(&format!(",z{j}"));
    }
    out.push('\n');
    for start in (0..n).step_by(500) {
        let idx: Vec<usize> = (start..(start + 500).min(n)).collect();
        let batch = examples(&run, split, &ds, &idx, &dev)?;
        let z = latent.encode(&batch)?.flatten_from(1)?.to_vec2::<f32>()?;
        for (row, &i) in z.iter().zip(&idx) {
            let label = ds
                .labels
                .as_ref()
                .map(|l| l[i].to_string())
                .unwrap_or_default();
            out.push_str(&format!("{i},{label}"));
            for v in row {
                out.push_str(&format!(",{v}"));
            }
            out.push('\n');
        }
    }
    dgm::checkpoint::write_atomic(&a.out, out.as_bytes())?;
    println!("wrote {n} codes of dimension {dim} to {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

fn interpolate_cmd(a: InterpolateArgs) -> Result<ExitCode> {
    if a.steps < 2 {
        bail!(dgm::Error::invalid(
            "--steps",
            format!("{} must be at least 2", a.steps)
        ));
    }
    let run = load(&a.run)?;
    let Some(latent) = run.model.as_latent() else {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' has no latent space",
            run.config.model.name
        )));
    };
    let dev = device(&a.run.device)?;
    let (split, ds) = split_data(&run, &a.split, a.data_dir.data_dir.as_deref())?;
    let batch = examples(&run, split, &ds, &[a.from, a.to], &dev)?;
    let z = latent.encode(&batch)?; // (2, latent…)
    let (z0, z1) = (z.get(0)?, z.get(1)?);
    let mut zs = Vec::with_capacity(a.steps);
    for i in 0..a.steps {
        let t = i as f64 / (a.steps - 1) as f64;
        zs.push(((&z0 * (1.0 - t))? + (&z1 * t)?)?);
    }
    let zs = Tensor::stack(&zs, 0)?;
    let cond = match (&batch.labels, run.model.num_classes()) {
        (Some(l), Some(_)) => {
            // a conditional model keeps the first example's class along the path
            let c = l.to_vec1::<u32>()?[0];
            Condition::Class(vec![c])
        }
        _ => Condition::None,
    };
    let x = latent.decode(&zs, &cond)?;
    let prep = &run.config.data.preprocessing;
    if x.rank() != 4 {
        bail!(dgm::Error::Unsupported(
            "interpolation strips are for image data".into()
        ));
    }
    let ends = batch.x.clone();
    let strip = Tensor::cat(
        &[ends.get(0)?.unsqueeze(0)?, x, ends.get(1)?.unsqueeze(0)?],
        0,
    )?;
    dgm::image_io::save_grid(&a.out, &strip, prep, a.steps + 2)?;
    println!(
        "wrote {} (example {} → {}: data, {} decoded points on the line between their codes, data)",
        a.out.display(),
        a.from,
        a.to,
        a.steps
    );
    Ok(ExitCode::SUCCESS)
}

fn data_info(explicit: Option<&Path>) -> Result<ExitCode> {
    let dir = data::data_dir(explicit);
    let how = match (explicit, std::env::var_os(data::DATA_ENV)) {
        (Some(_), _) => "from --data-dir".to_string(),
        (None, Some(_)) => format!("from ${}", data::DATA_ENV),
        (None, None) => format!("default; set ${} or --data-dir to change", data::DATA_ENV),
    };
    println!("data directory: {} ({how})", dir.display());
    let mnist = match data::mnist::find(&dir) {
        Some(p) => format!("found in {}", p.display()),
        None => "not found (needs mnist/train-images-idx3-ubyte.gz and the other three IDX files)"
            .into(),
    };
    println!("{:<22} {mnist}", "mnist");
    let shake: PathBuf = dir.join("tinyshakespeare").join("input.txt");
    let text = if shake.is_file() {
        format!("found: {}", shake.display())
    } else {
        "not found".into()
    };
    println!("{:<22} {text}", "text:tinyshakespeare");
    println!(
        "{:<22} generated in code (RGB 32×32, labels and captions)",
        "shapes"
    );
    for n in data::toy2d::NAMES {
        println!("{:<22} generated in code", format!("toy2d:{n}"));
    }
    Ok(ExitCode::SUCCESS)
}
