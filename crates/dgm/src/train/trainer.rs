//! The training loop of every family: data order, logging, validation, samples, EMA, checkpoints and resume
//! around a [`TrainStep`] (one loss, or a GAN's two players).
//!
//! Reproducibility: step s draws its noise from `Rng::stream(seed ^ STEP_SALT, s)` and its examples from
//! [`Loader`] (a function of seed and batch number), so a run interrupted at any checkpoint and resumed ends
//! with weights bit-identical to an uninterrupted run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::Device;
use serde_json::{json, Map, Value};

use crate::checkpoint::{self, tensor_bytes, write_atomic};
use crate::data::Batch;
use crate::data::{Dataset, Split};
use crate::error::kept;
use crate::events::{Event, StepLog};
use crate::image_io::save_samples;
use crate::model::{GenerateOptions, Model, SampleOptions};
use crate::models;
use crate::nn::Params;
use crate::rng::Rng;
use crate::train::ema::Ema;
use crate::train::loader::Loader;
use crate::train::log::{Clock, MetricsLog};
use crate::train::optim::AdamWParams;
use crate::train::run::{
    data_info, load_data, RunDir, TrainState, EMA_FILE, MODEL_FILE, OPTIMIZER_FILE,
};
use crate::train::step::{
    add_parts, GanStep, GroupSpec, LossStep, Optimizers, Schedule, StepAt, StepContext, TrainStep,
    DISCRIMINATOR, GENERATOR,
};
use crate::train::{plot, RunConfig};
use crate::{Error, Result};

const STEP_SALT: u64 = 0x57E9_0000_5A17;
const EVAL_SALT: u64 = 0xE7A1_0000_5A17;
const SAMPLE_SEED: u64 = 1234;

/// How to run training (things that are not part of the run's config).
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Where data sets are found.
    pub data_dir: PathBuf,
    /// The device to train on.
    pub device: Device,
    /// Set (e.g. by a Ctrl-C handler) to stop after the current step with a checkpoint.
    pub stop: Arc<AtomicBool>,
    /// Stop (with a checkpoint) after this many steps in this session, to train in chunks.
    pub stop_after: Option<u64>,
    /// Stop (with a checkpoint) once this session has trained for this many seconds (validation and sample
    /// writing not counted): training for a fixed time budget.
    pub time_limit: Option<f64>,
}

impl TrainOptions {
    /// Options for the CPU with data under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            device: Device::Cpu,
            stop: Arc::new(AtomicBool::new(false)),
            stop_after: None,
            time_limit: None,
        }
    }
}

/// How training ended.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainOutcome {
    /// Reached `train.steps`.
    Finished {
        /// Steps done.
        step: u64,
        /// Mean training loss of the last logged window.
        last_loss: f64,
    },
    /// Stopped early (Ctrl-C or `stop_after`) with a checkpoint; `dgm train --resume` continues.
    Interrupted {
        /// Steps done.
        step: u64,
    },
}

struct Session {
    dir: RunDir,
    cfg: RunConfig,
    params: Params,
    model: Box<dyn Model>,
    ema: Ema,
    ema_model: Box<dyn Model>,
    opt: Optimizers,
    train: Dataset,
    val: Dataset,
    step: u64,
    /// The step of the committed checkpoint, if there is one.
    saved: Option<u64>,
}

impl Session {
    /// Commits a checkpoint of the current step (weights, EMA, optimizer and state as one unit); returns its
    /// folder.
    fn checkpoint(&mut self) -> Result<PathBuf> {
        let counts = self.opt.counts();
        let state = TrainState {
            step: self.step,
            adam_t: self.opt.first_count(),
            optimizer_steps: if counts.len() > 1 {
                counts
            } else {
                Default::default()
            },
            seed: self.cfg.seed,
            rng: Rng::stream(self.cfg.seed ^ STEP_SALT, self.step).state(self.cfg.seed ^ STEP_SALT),
            finished: self.step >= self.cfg.train.steps,
            dgm_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let files = [
            (MODEL_FILE, tensor_bytes(&self.params.snapshot()?)?),
            (EMA_FILE, tensor_bytes(&self.ema.params.snapshot()?)?),
            (OPTIMIZER_FILE, tensor_bytes(&self.opt.state()?)?),
        ];
        let manifest =
            checkpoint::commit(&self.dir.path, self.step, state, &files).map_err(|e| {
                Error::Checkpoint {
                    path: self.dir.path.clone(),
                    msg: format!(
                        "could not write the checkpoint of step {} ({e}); {}",
                        self.step,
                        kept(self.saved)
                    ),
                }
            })?;
        self.dir.remove_legacy_files();
        self.saved = Some(self.step);
        Ok(self.dir.path.join(&manifest.dir))
    }

    fn validation_loss(&self, model: &dyn Model) -> Result<f64> {
        let t = &self.cfg.train;
        let prep = self.cfg.data.preprocessing.for_eval();
        let mut rng = Rng::stream(self.cfg.seed ^ EVAL_SALT, 0);
        let n = self.val.len();
        let bs = t.batch_size.min(n);
        let mut total = 0.0;
        let mut count = 0;
        for b in 0..t.eval_batches {
            let start = b * bs;
            if start + bs > n {
                break;
            }
            let idx: Vec<usize> = (start..start + bs).collect();
            let batch = self
                .val
                .batch(&idx, &prep, &mut rng, self.params.device())?;
            let out = model.loss(&batch, &mut rng)?;
            total += out
                .loss
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            count += 1;
        }
        Ok(if count == 0 {
            f64::NAN
        } else {
            total / count as f64
        })
    }

    /// The captions of the sample grid's 8 rows (the first training captions), for a caption model.
    fn grid_captions(&self) -> Option<Vec<String>> {
        match (
            self.ema_model.sample_abilities().captions,
            &self.train.captions,
        ) {
            (true, Some(c)) if !c.is_empty() => Some(c.iter().take(8).cloned().collect()),
            _ => None,
        }
    }

    /// Writes samples as `samples/<stem>.png` (images, points), `samples/<stem>.txt` (language models) or
    /// `samples/<stem>.wav` with its spectrogram `samples/<stem>.png` (audio: a clip per class).
    fn write_samples(&self, stem: &str) -> Result<PathBuf> {
        let dir = self.dir.samples_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        if let Some(lm) = self.ema_model.as_sequence() {
            let opts = GenerateOptions {
                max_tokens: 500,
                seed: SAMPLE_SEED,
                ..GenerateOptions::default()
            };
            let ids = lm.generate(&[], &opts, &mut |_| Ok(true))?;
            let path = dir.join(format!("{stem}.txt"));
            write_atomic(&path, &lm.tokenizer().decode(&ids)?)?;
            return Ok(path);
        }
        if crate::data::DataSpec::parse(&self.cfg.data.name)?.kind() == crate::data::DataKind::Audio
        {
            // one clip per class (10 when unconditional), as a WAV and its spectrogram
            let k = self.ema_model.num_classes().unwrap_or(10);
            let mut opts = SampleOptions::seeded(SAMPLE_SEED);
            if self.ema_model.num_classes().is_some() {
                opts.condition = crate::model::Condition::Class((0..k as u32).collect());
            }
            let x = self.ema_model.sample(k, &opts)?;
            let path = dir.join(format!("{stem}.wav"));
            crate::data::audio::write_clips(&path, &x, crate::data::audio::DIGITS_RATE)?;
            return Ok(path);
        }
        let name = format!("{stem}.png");
        let n = if self.train.is_image() { 64 } else { 2000 };
        let mut opts = SampleOptions::seeded(SAMPLE_SEED);
        if let Some(k) = self.ema_model.num_classes() {
            // 8 rows of one class each where possible
            opts.condition =
                crate::model::Condition::Class((0..n).map(|i| ((i / 8) % k) as u32).collect());
        }
        if let Some(rows) = self.grid_captions() {
            // 8 rows, each of one training caption
            let c: Vec<String> = (0..n).map(|i| rows[(i / 8) % rows.len()].clone()).collect();
            opts.condition = crate::model::Condition::Caption(c);
        }
        let x = self.ema_model.sample(n, &opts)?;
        let path = dir.join(name);
        save_samples(&path, &x, &self.cfg.data.preprocessing)?;
        Ok(path)
    }
}

/// The parameter groups and the step of a model: one group `all` with the `[train]` settings and
/// [`LossStep`] for a one-loss model; the generator's and the discriminator's groups (each with its
/// `[train.groups.<name>]` overrides) and [`GanStep`] for an [`crate::model::Adversarial`] one. The trainer
/// builds its optimisers from these; so do the step benchmarks, which time the same step.
pub fn optimizers_for(
    model: &dyn Model,
    t: &crate::train::TrainConfig,
) -> Result<(Vec<GroupSpec>, Box<dyn TrainStep>)> {
    let spec = |name: &str, prefixes: Vec<String>| -> Result<GroupSpec> {
        let g = t.for_group(name)?;
        Ok(GroupSpec {
            name: name.to_string(),
            prefixes,
            adam: AdamWParams {
                beta1: g.beta1,
                beta2: g.beta2,
                eps: g.eps,
                weight_decay: g.weight_decay,
                decay_matrices_only: g.decay_matrices_only,
            },
            schedule: Schedule {
                lr: g.lr,
                warmup_steps: g.warmup_steps,
                min_lr_ratio: g.min_lr_ratio,
                total_steps: g.steps,
            },
            grad_clip: g.grad_clip,
        })
    };
    match model.as_adversarial() {
        Some(adv) => {
            let (g, d) = adv.player_prefixes();
            Ok((
                vec![spec(GENERATOR, vec![g])?, spec(DISCRIMINATOR, vec![d])?],
                Box::new(GanStep {
                    d_steps: adv.discriminator_steps(),
                }),
            ))
        }
        None => Ok((
            vec![spec("all", Vec::new())?],
            Box::new(LossStep {
                grad_accum: t.grad_accum,
            }),
        )),
    }
}

/// How many training examples a model's data-dependent initialisation ([`crate::model::Model::data_init`])
/// sees (Glow initialises ActNorm from one batch; a larger one gives steadier statistics).
pub const DATA_INIT_EXAMPLES: usize = 512;

/// Trains the run in `run_dir`: a new run from `cfg` when `resume` is false (the directory must not hold a
/// run already), or continues the checkpoint there (then `cfg` must be the run's own config, possibly with
/// more steps). Progress goes to `on_event` (the library prints nothing).
pub fn train(
    run_dir: &Path,
    cfg: &RunConfig,
    resume: bool,
    opts: &TrainOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<TrainOutcome> {
    let dir = RunDir::new(run_dir);
    let mut cfg = cfg.clone();
    cfg.validate()?;
    let dev = &opts.device;
    let created = !run_dir.exists();
    // held until training ends: a second process training (or resuming) this run is refused
    let _lock = dir.lock()?;
    let setup = (|| -> Result<Option<TrainState>> {
        let resume_from = if resume {
            let ckpt = dir.checkpoint()?;
            if ckpt.is_none() {
                on_event(&Event::RestartWithoutCheckpoint {
                    run: run_dir.to_path_buf(),
                });
            }
            ckpt.map(|c| c.state)
        } else {
            if dir.config_path().exists() {
                return Err(Error::RunExists {
                    path: run_dir.to_path_buf(),
                    checkpointed: dir.checkpoint()?.is_some(),
                });
            }
            None
        };
        Ok(resume_from)
    })();
    let resume_from = match setup {
        Ok(r) => r,
        Err(e) => {
            drop(_lock);
            if created {
                let _ = std::fs::remove_dir_all(run_dir);
            }
            return Err(e);
        }
    };
    // a new run builds its tokenizer from the corpus (data.text.tokenizer); a resumed run keeps its own
    let mut data_cfg = cfg.clone();
    if !resume {
        data_cfg.model.config.remove("tokenizer");
    }
    let loaded = (|| -> Result<(Dataset, Dataset)> {
        let train = load_data(&data_cfg, Split::Train, &opts.data_dir)?;
        let val = load_data(&data_cfg, Split::Validation, &opts.data_dir)?;
        if val.is_empty() {
            return Err(Error::invalid(
                "validation split",
                format!(
                    "'{}' has no validation examples; training validates at its end (for generated data set data.sizes.validation ≥ 1)",
                    cfg.data.name
                ),
            ));
        }
        if !resume {
            let info = data_info(&train, &cfg);
            models::prepare(&cfg.model.name, &mut cfg.model.config, &info)?;
        }
        // settings the model cannot train with (an EBM's replay buffer smaller than a batch)
        models::check_train(&cfg.model.name, &cfg.model.config, cfg.train.batch_size)?;
        // per-group optimiser settings must name groups the model has, and a GAN accumulates nothing
        let groups = models::parameter_groups(&cfg.model.name)?;
        cfg.train.check_groups(&cfg.model.name, groups)?;
        if groups.len() > 1 && cfg.train.grad_accum != 1 {
            return Err(Error::invalid(
                "train.grad_accum",
                format!(
                    "{}: a GAN step draws one batch per discriminator update and accumulates nothing; set model.d_steps instead",
                    cfg.train.grad_accum
                ),
            ));
        }
        // parameters, optimizer, EMA and one batch's activations must fit before anything is allocated
        crate::memory::check_training(&cfg)?;
        if !resume {
            dir.save_config(&cfg)?;
        }
        Ok((train, val))
    })();
    let (train, val) = match loaded {
        Ok(d) => d,
        Err(e) => {
            drop(_lock);
            if created {
                let _ = std::fs::remove_dir_all(run_dir);
            }
            return Err(e);
        }
    };
    let t = cfg.train.clone();
    let params = Params::new(cfg.seed, dev);
    let model = models::build(&cfg.model.name, &cfg.model.config, params.var_builder())?;
    if resume_from.is_none() && !train.is_empty() {
        // data-dependent initialisation (Glow's ActNorm), once, on the first examples of the training set;
        // its own RNG stream, so the training batches are the same with or without it
        let idx: Vec<usize> = (0..train.len().min(DATA_INIT_EXAMPLES)).collect();
        let mut rng = Rng::named(cfg.seed, "data-init");
        let batch = train.batch(&idx, &cfg.data.preprocessing, &mut rng, dev)?;
        params.set_values(&model.data_init(&batch)?)?;
    }
    let ema_params = Params::new(cfg.seed, dev);
    let ema_model = models::build(&cfg.model.name, &cfg.model.config, ema_params.var_builder())?;
    let ema = Ema::new(&params, ema_params, t.ema_decay)?;
    let (specs, mut train_step) = optimizers_for(model.as_ref(), &t)?;
    let mut opt = Optimizers::new(params.trainable_vars(), specs)?;
    let mut step = 0;
    if let Some(state) = &resume_from {
        let ckpt = dir.require_checkpoint()?;
        params.assign(
            &ckpt.tensors(&dir, MODEL_FILE, dev)?,
            &ckpt.file_path(&dir, MODEL_FILE),
        )?;
        ema.params.assign(
            &ckpt.tensors(&dir, EMA_FILE, dev)?,
            &ckpt.file_path(&dir, EMA_FILE),
        )?;
        let counts = if state.optimizer_steps.is_empty() {
            [(opt.only_group()?, state.adam_t)].into()
        } else {
            state.optimizer_steps.clone()
        };
        opt.load_state(&ckpt.tensors(&dir, OPTIMIZER_FILE, dev)?, &counts)
            .map_err(|e| Error::Checkpoint {
                path: ckpt.file_path(&dir, OPTIMIZER_FILE),
                msg: e.to_string(),
            })?;
        step = state.step;
        checkpoint::remove_debris(&dir.path, ckpt.manifest.as_ref().map(|m| m.dir.as_str()));
    } else if resume {
        checkpoint::remove_debris(&dir.path, None);
    }
    if resume {
        dir.save_config(&cfg)?; // may carry a new step count
    }
    let metrics = MetricsLog::open(&dir.metrics_path(), resume.then_some(step))?;
    let saved = resume_from.as_ref().map(|s| s.step);
    let mut s = Session {
        dir,
        cfg,
        params,
        model,
        ema,
        ema_model,
        opt,
        train,
        val,
        step,
        saved,
    };
    let mut loader = Loader::new(s.train.len(), t.batch_size, s.cfg.seed)?;
    let vars = s.params.vars();
    let clock = Clock::new(step);
    on_event(&Event::TrainStart {
        model: s.cfg.model.name.clone(),
        data: s.cfg.data.name.clone(),
        examples: s.train.len(),
        preprocessing: s.cfg.data.preprocessing.describe(),
        parameters: s.params.num_trainable(),
        run: run_dir.to_path_buf(),
        start_step: step,
        total_steps: t.steps,
    });
    let session_start = step;
    let mut window: Vec<(String, f64)> = Vec::new();
    let mut window_n = 0usize;
    let mut last_loss = f64::NAN;
    // seconds this session spent on validation and samples, left out of the `train_s` it logs
    let mut side_secs = 0.0;
    let per_step = train_step.batches_per_step() as u64;
    while s.step < t.steps {
        let mut rng = Rng::stream(s.cfg.seed ^ STEP_SALT, s.step);
        let last = s.step + 1 == t.steps;
        let log_now = (s.step + 1).is_multiple_of(t.log_every) || last;
        let (train, prep, step) = (&s.train, &s.cfg.data.preprocessing, s.step);
        let mut batch = |micro: usize, rng: &mut Rng| -> Result<Batch> {
            let idx = loader.indices(step * per_step + micro as u64).to_vec();
            train.batch(&idx, prep, rng, dev)
        };
        let report = train_step.step(&mut StepContext {
            at: StepAt {
                step,
                saved: s.saved,
                log: log_now,
            },
            model: s.model.as_ref(),
            rng: &mut rng,
            batch: &mut batch,
            opt: &mut s.opt,
        })?;
        let (parts, lr, norm) = (report.parts, report.lr, report.grad_norm);
        s.ema.update(&vars, s.step)?;
        s.step += 1;
        add_parts(&mut window, &parts, 1);
        window_n += 1;

        if log_now {
            let losses: Vec<(String, f64)> = window
                .iter()
                .map(|(k, v)| (k.clone(), v / window_n as f64))
                .collect();
            let mut rec = Map::new();
            rec.insert("step".into(), json!(s.step));
            for (k, v) in &losses {
                rec.insert(k.clone(), json!(v));
            }
            rec.insert("lr".into(), json!(lr));
            rec.insert("grad_norm".into(), json!(norm));
            rec.insert("it_s".into(), json!(clock.rate(s.step)));
            rec.insert("train_s".into(), json!(clock.elapsed() - side_secs));
            last_loss = rec.get("loss").and_then(Value::as_f64).unwrap_or(f64::NAN);
            metrics.write(&rec)?;
            on_event(&Event::Step {
                step: s.step,
                total_steps: t.steps,
                it_s: clock.rate(s.step),
                logged: Some(StepLog {
                    losses,
                    lr,
                    grad_norm: norm,
                }),
            });
            window.clear();
            window_n = 0;
        } else {
            on_event(&Event::Step {
                step: s.step,
                total_steps: t.steps,
                it_s: clock.rate(s.step),
                logged: None,
            });
        }
        // validation and samples never cost the checkpoint of this step: it is written even when they fail
        let side = (|| -> Result<()> {
            if (t.eval_every > 0 && s.step.is_multiple_of(t.eval_every)) || last {
                let side_start = std::time::Instant::now();
                let train_s = clock.elapsed() - side_secs;
                let v = s.validation_loss(s.model.as_ref())?;
                let ve = s.validation_loss(s.ema_model.as_ref())?;
                let mut rec = Map::new();
                rec.insert("step".into(), json!(s.step));
                rec.insert("val_loss".into(), json!(v));
                rec.insert("val_loss_ema".into(), json!(ve));
                rec.insert("train_s".into(), json!(train_s));
                metrics.write(&rec)?;
                on_event(&Event::Validation {
                    step: s.step,
                    loss: v,
                    loss_ema: ve,
                });
                side_secs += side_start.elapsed().as_secs_f64();
            }
            if t.sample_every > 0 && s.step.is_multiple_of(t.sample_every) && !last {
                let side_start = std::time::Instant::now();
                let path = s.write_samples(&format!("step-{:07}", s.step))?;
                on_event(&Event::SamplesWritten { step: s.step, path });
                side_secs += side_start.elapsed().as_secs_f64();
            }
            Ok(())
        })();
        let interrupted = opts.stop.load(Ordering::SeqCst)
            || opts.stop_after.is_some_and(|n| s.step - session_start >= n)
            || opts
                .time_limit
                .is_some_and(|l| clock.elapsed() - side_secs >= l);
        if (t.checkpoint_every > 0 && s.step.is_multiple_of(t.checkpoint_every))
            || last
            || interrupted
            || side.is_err()
        {
            let path = s.checkpoint()?;
            on_event(&Event::CheckpointWritten { step: s.step, path });
        }
        side?;
        if interrupted && !last {
            on_event(&Event::StepsEnded { step: s.step });
            on_event(&Event::Interrupted {
                step: s.step,
                run: run_dir.to_path_buf(),
            });
            return Ok(TrainOutcome::Interrupted { step: s.step });
        }
    }
    on_event(&Event::StepsEnded { step: s.step });
    let grid = s.write_samples("samples")?;
    if s.dir.metrics_path().exists() {
        let title = format!("{} on {}", s.cfg.model.name, s.cfg.data.name);
        plot::loss_curve(&s.dir.metrics_path(), &s.dir.path.join("loss.svg"), &title)?;
    }
    on_event(&Event::Done {
        step: s.step,
        samples: grid,
        loss_curve: s.dir.path.join("loss.svg"),
        row_captions: s.grid_captions(),
    });
    Ok(TrainOutcome::Finished {
        step: s.step,
        last_loss,
    })
}
