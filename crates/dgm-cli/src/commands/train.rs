//! `dgm train`: a new run from a model name or a config file, or resuming a run directory.

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{bail, Result};
use dgm::data;
use dgm::train::{self, run, RunConfig, TrainOptions, TrainOutcome};

use super::{device, model_examples};
use crate::cli::TrainArgs;
use crate::progress::TrainProgress;

pub(super) fn train_cmd(a: TrainArgs) -> Result<ExitCode> {
    let data_dir = data::data_dir(a.data_dir.data_dir.as_deref());
    let mut opts = TrainOptions::new(&data_dir);
    opts.device = device(&a.device)?;
    opts.stop_after = a.stop_after;
    if let Some(l) = a.time_limit {
        if !(l > 0.0 && l.is_finite()) {
            bail!(dgm::Error::invalid(
                "--time-limit",
                format!("{l} must be a positive number of seconds")
            ));
        }
    }
    opts.time_limit = a.time_limit;
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
                    // each model's default data set comes from its registry row
                    let data = match a.data.as_deref() {
                        Some(d) => d,
                        None => dgm::models::entry(model)?.default_data,
                    };
                    RunConfig::new(model, data)?
                }
                (None, None) => {
                    return Err(dgm::Error::invalid(
                        "train",
                        format!(
                            "name a model (e.g. {}), give --config FILE, or --resume a run",
                            model_examples()
                        ),
                    )
                    .into())
                }
            };
            let model = cfg.model.name.clone();
            if let Some(d) = &a.data {
                if d != &cfg.data.name {
                    let fresh = RunConfig::new(&model, d)?;
                    // one text corpus for another keeps the config's context and tokenizer
                    let text = cfg.data.text.take();
                    cfg.data = fresh.data;
                    if cfg.data.text.is_some() && text.is_some() {
                        cfg.data.text = text;
                    }
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
    let mut progress = TrainProgress::new(a.quiet);
    let outcome = train::train(&dir, &cfg, resume, &opts, &mut |e| progress.on(e));
    progress.finish();
    match outcome? {
        TrainOutcome::Finished { .. } | TrainOutcome::Interrupted { .. } => Ok(ExitCode::SUCCESS),
    }
}
