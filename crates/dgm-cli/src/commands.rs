//! What each subcommand does: argument checks, then calls into the dgm library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use dgm::data::Batch;
use dgm::data::{self, Dataset, Split};
use dgm::metrics::evaluate_nll;
use dgm::metrics::features::{self, FeatureNetConfig, FeatureTrainConfig};
use dgm::metrics::suite::{
    compare_sets, evaluate_ood, evaluate_quality, MetricSelection, OodOptions, QualityMetric,
    QualityOptions, SetMetrics,
};
use dgm::model::{Condition, SampleOptions};
use dgm::train::{self, run, RunConfig, TrainOptions, TrainOutcome, Weights};

use crate::cli::{
    Cli, Command, CompareArgs, CompleteArgs, DataCommand, EditCommand, EncodeArgs, EvalArgs,
    InterpolateArgs, MetricsCommand, ReportArgs, RunArg, SampleArgs, ScoreArgs, TrainArgs,
    TrainFeaturesArgs,
};
use crate::progress::{throttled, TrainProgress};

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Train(a) => train_cmd(a),
        Command::Sample(a) => sample_cmd(a),
        Command::Score(a) => score_cmd(a),
        Command::Edit(EditCommand::Complete(a)) => complete_cmd(a),
        Command::Eval(a) => eval_cmd(a),
        Command::Encode(a) => encode_cmd(a),
        Command::Interpolate(a) => interpolate_cmd(a),
        Command::Data(DataCommand::Info(d)) => data_info(d.data_dir.as_deref()),
        Command::Metrics(MetricsCommand::TrainFeatures(a)) => train_features_cmd(a),
        Command::Metrics(MetricsCommand::Compare(a)) => compare_cmd(a),
        Command::Report(a) => report_cmd(a),
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

fn load(r: &RunArg) -> Result<run::LoadedRun> {
    let weights = Weights::parse(&r.weights)?;
    Ok(run::load(&r.run, weights, &device(&r.device)?)?)
}

fn sample_cmd(a: SampleArgs) -> Result<ExitCode> {
    if a.n == Some(0) {
        bail!(dgm::Error::invalid("-n", "must be at least 1"));
    }
    if !(a.temperature > 0.0 && a.temperature.is_finite()) {
        bail!(dgm::Error::invalid(
            "--temperature",
            format!("{} must be a positive number", a.temperature)
        ));
    }
    let run = load(&a.run)?;
    refuse_sample_flags(&a, run.model.as_ref())?;
    if let Some(lm) = run.model.as_sequence() {
        return sample_text(&a, lm);
    }
    let Some(out) = &a.out else {
        bail!(dgm::Error::invalid(
            "--out",
            "give the PNG file to write, e.g. --out samples.png"
        ));
    };
    let n = a.n.unwrap_or(64);
    let mut opts = SampleOptions::seeded(a.seed);
    opts.temperature = a.temperature;
    opts.mean = !a.draw;
    opts.sampler = a.sampler.clone();
    opts.steps = a.steps;
    opts.guidance = a.guidance;
    if let Some(k) = a.class {
        opts.condition = Condition::Class(vec![k]);
    }
    // The picture is sized for n before anything is sampled (a grid too large to write is refused now), and
    // filled batch by batch, so memory holds one batch, not n samples: -n is bounded by time.
    let shape = dgm::models::example_shape(&run.config.model.name, &run.config.model.config)?;
    let mut canvas = dgm::image_io::SampleCanvas::new(n, &shape, &run.config.data.preprocessing)?;
    let batch = if shape.len() == 3 {
        SAMPLE_BATCH_IMAGES
    } else {
        SAMPLE_BATCH_POINTS
    };
    for (i, start) in (0..n).step_by(batch).enumerate() {
        let mut o = opts.clone();
        // batch 0 uses --seed itself, so -n up to one batch gives the samples a single call always gave
        if i > 0 {
            o.seed = dgm::rng::Rng::stream(a.seed, i as u64).next_u64();
        }
        let x = run.model.sample(batch.min(n - start), &o)?;
        canvas.add(&x)?;
    }
    canvas.save(out)?;
    println!("wrote {n} samples to {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Images `dgm sample` draws per model call (the default -n of 64 is one batch).
const SAMPLE_BATCH_IMAGES: usize = 256;
/// 2-D points `dgm sample` draws per model call.
const SAMPLE_BATCH_POINTS: usize = 4096;

/// `dgm sample` for a language model: streams each sample to stdout as it is generated.
fn sample_text(a: &SampleArgs, lm: &dyn dgm::model::Sequence) -> Result<ExitCode> {
    use std::io::Write;
    let prompt: Option<Vec<u8>> = match (&a.prompt, &a.prompt_file) {
        (Some(p), _) => Some(p.as_bytes().to_vec()),
        (None, Some(f)) => Some(std::fs::read(f).map_err(|e| dgm::Error::io(f, e))?),
        (None, None) => None,
    };
    if prompt.as_ref().is_some_and(|p| p.is_empty()) {
        bail!(dgm::Error::invalid(
            "--prompt",
            "the prompt is empty; give some text to continue, or leave --prompt out to start from the beginning of a text"
        ));
    }
    let prompt = prompt.unwrap_or_default();
    let ids = lm
        .tokenizer()
        .encode(&prompt)
        .map_err(|e| dgm::Error::invalid("--prompt", e.to_string()))?;
    let n = a.n.unwrap_or(1);
    let mut all = Vec::new();
    let stdout = std::io::stdout();
    let started = std::time::Instant::now();
    let mut generated = 0usize;
    for i in 0..n {
        let opts = dgm::model::GenerateOptions {
            max_tokens: a.max_tokens.unwrap_or(500),
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed.wrapping_add(i as u64),
            kv_cache: !a.no_kv_cache,
        };
        opts.validate()?;
        if n > 1 {
            println!("--- sample {} (seed {}) ---", i + 1, opts.seed);
        }
        let mut stream = dgm::data::tokenizer::Utf8Stream::default();
        let mut out = stdout.lock();
        write!(out, "{}", stream.push(&prompt))?;
        out.flush()?;
        let tok = lm.tokenizer();
        let new = lm.generate(&ids, &opts, &mut |id| {
            if let Some(b) = tok.token_byte(id) {
                let text = stream.push(&[b]);
                if !text.is_empty() {
                    let _ = write!(out, "{text}");
                    let _ = out.flush();
                }
            }
            Ok(true)
        })?;
        writeln!(out, "{}", stream.finish())?;
        generated += new.len();
        all.extend_from_slice(&prompt);
        all.extend(tok.decode(&new)?);
        all.push(b'\n');
    }
    if a.timing {
        let s = started.elapsed().as_secs_f64();
        eprintln!(
            "{generated} tokens in {s:.2} s: {:.1} tokens/s ({})",
            generated as f64 / s,
            if a.no_kv_cache {
                "no KV cache"
            } else {
                "KV cache"
            }
        );
    }
    if let Some(out) = &a.out {
        dgm::checkpoint::write_atomic(out, &all)?;
        eprintln!("wrote {n} sample(s) to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses the `dgm sample` flags `model` would ignore, naming the flag and why: what the model's
/// [`dgm::model::SampleAbilities`] do not cover (a draw, a sampler, steps, guidance, a class), and the
/// language-model flags for every other model.
fn refuse_sample_flags(a: &SampleArgs, model: &dyn dgm::model::Model) -> Result<()> {
    let opts = SampleOptions {
        condition: a
            .class
            .map_or(Condition::None, |k| Condition::Class(vec![k])),
        sampler: a.sampler.clone(),
        steps: a.steps,
        guidance: a.guidance,
        mean: !a.draw,
        ..SampleOptions::seeded(a.seed)
    };
    dgm::model::check_sample_options(model, &opts)?;
    if model.as_sequence().is_none() {
        refuse_given(
            &[
                ("--prompt", a.prompt.is_some()),
                ("--prompt-file", a.prompt_file.is_some()),
                ("--max-tokens", a.max_tokens.is_some()),
                ("--top-k", a.top_k.is_some()),
                ("--top-p", a.top_p.is_some()),
                ("--no-kv-cache", a.no_kv_cache),
                ("--timing", a.timing),
            ],
            &format!(
                "to model '{}': it is not a language model (the flag applies to {} runs)",
                model.name(),
                dgm::models::names_with(|a| a.sequence).join(", ")
            ),
        )?;
    }
    Ok(())
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

/// Escapes one byte for a per-token table.
fn show_token(b: u8) -> String {
    match b {
        b'\n' => "\\n".into(),
        b'\t' => "\\t".into(),
        b' ' => "' '".into(),
        b if b.is_ascii_graphic() => (b as char).to_string(),
        b => format!("\\x{b:02x}"),
    }
}

fn score_cmd(a: ScoreArgs) -> Result<ExitCode> {
    let run = load(&a.run)?;
    let Some(lm) = run.model.as_sequence() else {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' is not a language model; `dgm score` takes {} runs (for images use `dgm eval`)",
            run.config.model.name,
            dgm::models::names_with(|a| a.sequence).join(", ")
        )));
    };
    let bytes = std::fs::read(&a.text).map_err(|e| dgm::Error::io(&a.text, e))?;
    if bytes.is_empty() {
        bail!(dgm::Error::invalid(
            a.text.display().to_string(),
            "the file is empty; there is nothing to score"
        ));
    }
    let tok = lm.tokenizer();
    let (ids, oov) = tok.encode_lossy(&bytes);
    if ids.is_empty() {
        bail!(dgm::Error::invalid(
            a.text.display().to_string(),
            format!(
                "none of its {} bytes is in the model's vocabulary ({})",
                bytes.len(),
                tok.describe_vocab()
            )
        ));
    }
    let lp = lm.token_log_probs(&ids)?;
    if !a.summary {
        println!("index\ttoken\tlog_p_nats");
        for (i, (&id, &l)) in ids.iter().zip(&lp).enumerate() {
            let b = tok.token_byte(id).unwrap_or(b'?');
            println!("{i}\t{}\t{l:.4}", show_token(b));
        }
    }
    let total: f64 = -lp.iter().sum::<f64>();
    let unit = tok.unit();
    let per = total / ids.len() as f64;
    // with bytes skipped, the exact number is the NLL of another text: the file without those bytes
    let what = if oov.is_empty() {
        "exact".to_string()
    } else {
        format!(
            "exact for the text with its {} out-of-vocabulary byte(s) removed, not for the file as given",
            oov.len()
        )
    };
    println!(
        "{}: {} {unit}s scored · NLL {total:.2} nats · {per:.4} nats/{unit} · {:.4} bits/{unit} ({what}, under run {} with a {}-token context)",
        a.text.display(),
        ids.len(),
        per / std::f64::consts::LN_2,
        a.run.run.display(),
        lm.context_len()
    );
    if !oov.is_empty() {
        let shown: Vec<String> = oov
            .iter()
            .take(10)
            .map(|&(o, b)| format!("{} at {o}", dgm::data::tokenizer::show_byte(b)))
            .collect();
        println!(
            "{} byte(s) outside the vocabulary were skipped, not scored: {}{}",
            oov.len(),
            shown.join(", "),
            if oov.len() > 10 { ", …" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn complete_cmd(a: CompleteArgs) -> Result<ExitCode> {
    if a.n == 0 {
        bail!(dgm::Error::invalid("-n", "must be at least 1"));
    }
    let run = load(&a.run)?;
    let Some(model) = run.model.as_complete() else {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' cannot complete images; `dgm edit complete` takes {} runs",
            run.config.model.name,
            and_list(&dgm::models::names_with(|a| a.complete))
        )));
    };
    let shape = match image_shape(&run.config) {
        Ok(s) => s,
        Err(_) => run::load_data(&run.config, Split::Test, &data::data_dir(None))?.example_shape,
    };
    let &[c, h, w] = shape.as_slice() else {
        bail!(dgm::Error::Unsupported(format!(
            "run {} does not model images",
            a.run.run.display()
        )));
    };
    if a.rows > h {
        bail!(dgm::Error::invalid(
            "--rows",
            format!("{} is more than the image's {h} rows", a.rows)
        ));
    }
    match (a.class, model.num_classes()) {
        (Some(k), None) => bail!(dgm::Error::invalid(
            "--class",
            format!(
                "{k}: run {} is unconditional; --class applies to class-conditional runs",
                a.run.run.display()
            )
        )),
        (Some(k), Some(n)) if k as usize >= n => bail!(dgm::Error::invalid(
            "--class",
            format!(
                "{k} is not a class of this run (0 to {})",
                n.saturating_sub(1)
            )
        )),
        _ => {}
    }
    // the n copies as bytes, the batch as f32 and the completed images: refuse what cannot fit
    let need = (a.n as u64).saturating_mul((c * h * w) as u64 * 9);
    dgm::memory::check_bytes(
        &format!("{} images to complete", a.n),
        "-n",
        need,
        &dgm::memory::available()?,
    )?;
    let pixels = dgm::image_io::load_image(&a.image, c, h, w)?;
    let ds = Dataset {
        name: a.image.display().to_string(),
        example_shape: vec![c, h, w],
        storage: data::Storage::U8(pixels.repeat(a.n)),
        labels: a.class.map(|k| vec![k; a.n]),
        num_classes: model.num_classes(),
        class_names: None,
        captions: None,
    };
    let prep = run.config.data.preprocessing.for_eval();
    let dev = device(&a.run.device)?;
    let idx: Vec<usize> = (0..a.n).collect();
    let batch = ds.batch(&idx, &prep, &mut dgm::rng::Rng::new(a.seed), &dev)?;
    let mut opts = SampleOptions::seeded(a.seed);
    if let Some(k) = a.class {
        opts.condition = Condition::Class(vec![k; a.n]);
    }
    let done = model.complete(&batch.x, a.rows, &opts)?;
    // the input with the unknown rows greyed out, then the completions
    let kept = batch.x.narrow(0, 0, 1)?;
    let mask: Vec<f32> = (0..c * h * w)
        .map(|i| if (i % (h * w)) / w < a.rows { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, (1, c, h, w), &dev)?;
    let (lo, hi) = prep_range(&run.config.data.preprocessing);
    let grey = ((1.0 - &mask)? * ((lo + hi) / 2.0))?;
    let shown = ((kept * &mask)? + grey)?;
    let grid = Tensor::cat(&[shown, done.to_dtype(candle_core::DType::F32)?], 0)?;
    dgm::image_io::save_grid(&a.out, &grid, &run.config.data.preprocessing, a.n + 1)?;
    println!(
        "kept the top {} of {h} rows of {} and wrote it with {} completions to {}",
        a.rows,
        a.image.display(),
        a.n,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The value range of preprocessed pixels.
fn prep_range(p: &data::Preprocessing) -> (f64, f64) {
    match p {
        data::Preprocessing::Scale { range, .. } => {
            let (lo, hi) = range.bounds();
            (lo as f64, hi as f64)
        }
        _ => (0.0, 1.0),
    }
}

/// The example shape recorded in the run's model config (`example_shape`), when its data are not at hand.
fn image_shape(cfg: &RunConfig) -> Result<Vec<usize>> {
    let shape = cfg
        .model
        .config
        .get("example_shape")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_integer())
                .map(|x| x as usize)
                .collect::<Vec<_>>()
        });
    match shape {
        Some(s) if !s.is_empty() => Ok(s),
        _ => bail!(dgm::Error::invalid(
            "run",
            "cannot tell the image size: the run's data set is not found (set DGM_DATA)"
        )),
    }
}

fn eval_cmd(a: EvalArgs) -> Result<ExitCode> {
    match a.mode.as_deref() {
        None => {}
        Some("ood") => return ood_cmd(a),
        Some(other) => bail!(dgm::Error::unknown("eval mode", other, &["ood"])),
    }
    refuse_given(
        &[
            ("--ood", a.ood.is_some()),
            ("--typicality-batch", a.typicality_batch.is_some()),
            ("--alpha", a.alpha.is_some()),
            ("--scores", a.scores.is_some()),
        ],
        "here: it is an option of `dgm eval ood`",
    )?;
    let metric = a.metric.as_deref().unwrap_or("nll");
    let mut sel = MetricSelection::parse(metric)?;
    let split = Split::parse(a.split.as_deref().unwrap_or("test"))?;
    let run = load(&a.run)?;
    let data_dir = data::data_dir(a.data_dir.data_dir.as_deref());
    // `all` means every metric that applies to this run.
    if metric.split(',').any(|m| m.trim() == "all") {
        sel.nll &= run.model.as_density().is_some();
        match data::DataSpec::parse(&run.config.data.name)? {
            data::DataSpec::Toy2d(_) => sel.quality.retain(|m| !m.needs_images()),
            // sample-quality metrics compare images or points; text has only its likelihood
            data::DataSpec::Text(_) => sel.quality.clear(),
            _ => {}
        }
    }
    if sel.quality.is_empty() {
        refuse_given(
            &[
                ("--features", a.features.is_some()),
                ("--num-samples", a.num_samples.is_some()),
                ("--draw", a.draw),
                ("--permutations", a.permutations.is_some()),
                ("--sampler", a.sampler.is_some()),
                ("--steps", a.steps.is_some()),
            ],
            "here: it is an option of the sample-quality metrics (fid, kid, pr, mmd, class), and none is evaluated",
        )?;
    } else {
        // refuse a draw, a sampler or steps the model would ignore before any slow work
        dgm::model::check_sample_options(
            run.model.as_ref(),
            &SampleOptions {
                mean: !a.draw,
                sampler: a.sampler.clone(),
                steps: a.steps,
                ..SampleOptions::default()
            },
        )?;
        if a.permutations.is_some() && !sel.quality.contains(&QualityMetric::Mmd) {
            bail!(dgm::Error::Unsupported(
                "--permutations does not apply here: it is an option of the MMD test (--metric mmd), which is not evaluated".into()
            ));
        }
    }
    if sel.nll {
        if run.model.as_density().is_none() {
            bail!(dgm::Error::Unsupported(format!(
                "model '{}' has no likelihood, so --metric nll does not apply; valid for it: fid, kid, pr, mmd, class",
                run.config.model.name
            )));
        }
        eval_nll(&a, &run, split, &data_dir)?;
    } else {
        refuse_given(
            &[
                ("--estimator", a.estimator.is_some()),
                ("--likelihood-steps", a.likelihood_steps.is_some()),
                ("--probes", a.probes.is_some()),
                ("--iwae-k", a.iwae_k.is_some()),
                ("--limit", a.limit.is_some()),
            ],
            "here: it is an option of the likelihood (--metric nll), which is not evaluated",
        )?;
    }
    if !sel.quality.is_empty() {
        eval_quality(&a, &run, &sel.quality, split, &data_dir)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn eval_nll(a: &EvalArgs, run: &run::LoadedRun, split: Split, data_dir: &Path) -> Result<()> {
    let Some(density) = run.model.as_density() else {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' has no likelihood to evaluate",
            run.config.model.name
        )));
    };
    let ds = run::load_data(&run.config, split, data_dir)?;
    let prep = run.config.data.preprocessing.for_eval();
    let dev = device(&a.run.device)?;
    let mut reports = Vec::new();
    let estimators = match &a.estimator {
        Some(e) if density.estimators().contains(e) => vec![e.clone()],
        Some(e) => {
            let valid = density.estimators();
            let valid: Vec<&str> = valid.iter().map(String::as_str).collect();
            bail!(dgm::Error::unknown("--estimator", e, &valid))
        }
        None => density.estimators(),
    };
    refuse_estimator_flags(a, &estimators)?;
    let iwae_k = a.iwae_k.unwrap_or(100);
    for est in estimators {
        let k = match est.as_str() {
            "iwae" => iwae_k,
            "ode" => a.probes.unwrap_or(1),
            _ => 1,
        };
        if k == 0 {
            continue; // --iwae-k 0: skip the IWAE estimate (refused above when it is the only one)
        }
        let r = evaluate_nll(
            density,
            &ds,
            &prep,
            &est,
            k,
            a.likelihood_steps,
            a.batch_size,
            a.limit,
            a.seed,
            &dev,
            &mut throttled(format!("{est} (k = {k})")),
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
    if let Some(lm) = run.model.as_sequence() {
        // text: an example is a window of tokens; report per token (character / byte)
        let unit = lm.tokenizer().unit();
        println!(
            "data: {} · {} tokenizer ({} symbols) · non-overlapping windows of {} {unit}s{}",
            run.config.data.name,
            lm.tokenizer().name(),
            lm.tokenizer().vocab_size(),
            lm.context_len(),
            if split == Split::Train {
                ""
            } else {
                " · the last 10 % of the corpus (text has no separate test split)"
            }
        );
        println!(
            "{:>14} {:>10} {:>10}  kind",
            format!("nats/{unit}"),
            "± s.e.",
            format!("bits/{unit}")
        );
        for r in &reports {
            let d = r.dims.max(1) as f64;
            println!(
                "{:>14.4} {:>10.4} {:>10.4}  {}",
                r.nll_nats / d,
                r.stderr_nats / d,
                r.bits_per_dim,
                r.kind_text
            );
        }
    } else {
        println!("data: {} · {}", run.config.data.name, prep.describe());
        if let Some(c) = reports.iter().find_map(|r| r.conditioning.as_ref()) {
            println!("{c}");
        }
        println!(
            "{:>14} {:>10} {:>10}  kind",
            "NLL (nats)", "± s.e.", "bits/dim"
        );
        for r in &reports {
            println!(
                "{:>14.3} {:>10.3} {:>10.4}  {}",
                r.nll_nats, r.stderr_nats, r.bits_per_dim, r.kind_text
            );
        }
        for r in &reports {
            if let Some(n) = &r.note {
                println!("{}: {n}", r.kind.short_name());
            }
        }
        if let Some(r) = reports
            .iter()
            .find(|r| r.bits_per_dim_basis != dgm::model::BitsPerDim::Discrete)
        {
            println!("bits/dim: {}", r.bits_per_dim_means);
        }
        println!("(a lower bound on log p gives an upper bound on NLL; IWAE-k tightens towards the true NLL as k grows)");
    }
    let path = a.run.run.join(format!("eval-{}.json", split.name()));
    let text = serde_json::to_string_pretty(&reports)?;
    dgm::checkpoint::write_atomic(&path, text.as_bytes())?;
    Ok(())
}

/// Refuses the likelihood flags that the `estimators` to evaluate would not use, and values that would
/// leave nothing to evaluate.
fn refuse_estimator_flags(a: &EvalArgs, estimators: &[String]) -> Result<()> {
    let uses = |e: &str| estimators.iter().any(|x| x == e);
    let why = format!(
        "here: the estimators evaluated ({}) do not use it",
        estimators.join(", ")
    );
    refuse_given(
        &[
            ("--iwae-k", a.iwae_k.is_some() && !uses("iwae")),
            ("--probes", a.probes.is_some() && !uses("ode")),
            (
                "--likelihood-steps",
                a.likelihood_steps.is_some() && !uses("vlb") && !uses("ode"),
            ),
        ],
        &why,
    )?;
    if a.probes == Some(0) {
        bail!(dgm::Error::invalid(
            "--probes",
            "0 must be at least 1: the ODE estimate needs a Hutchinson probe"
        ));
    }
    if a.iwae_k == Some(0) && estimators.iter().all(|e| e == "iwae") {
        bail!(dgm::Error::invalid(
            "--iwae-k",
            "0 skips the IWAE estimate, the only one asked for: nothing would be evaluated"
        ));
    }
    Ok(())
}

fn eval_quality(
    a: &EvalArgs,
    run: &run::LoadedRun,
    metrics: &[QualityMetric],
    split: Split,
    data_dir: &Path,
) -> Result<()> {
    let opts = QualityOptions {
        num_samples: a.num_samples.unwrap_or(10_000),
        reference_split: split,
        seed: a.seed,
        mean: !a.draw,
        mmd_permutations: a.permutations.unwrap_or(500),
        batch_size: a.batch_size,
        sampler: a.sampler.clone(),
        steps: a.steps,
        ..QualityOptions::default()
    };
    let started = std::time::Instant::now();
    let r = evaluate_quality(
        run,
        metrics,
        a.features.as_deref(),
        data_dir,
        &opts,
        &mut |m| eprintln!("[{:>5.1} s] {m}", started.elapsed().as_secs_f64()),
    )?;
    println!(
        "run {} · model {} · {} weights · step {} · {} samples ({}) vs {} {} examples",
        a.run.run.display(),
        run.config.model.name,
        r.weights,
        r.step,
        r.num_samples,
        match (&r.sampler, r.sampler_steps) {
            (None, None) => r.samples.clone(),
            (s, k) => format!(
                "{}, sampler {}, {} steps",
                r.samples,
                s.as_deref().unwrap_or("default"),
                k.map_or("default".to_string(), |k| k.to_string())
            ),
        },
        r.reference.n,
        r.reference.split
    );
    let tag = feature_tag(r.feature_net.as_ref());
    print_set_metrics(&r.sets, &tag);
    if let Some(is) = &r.inception_score {
        println!(
            "{:<18} {:>12.4} ± {:.4} ({} splits)",
            format!("IS{tag}"),
            is.mean,
            is.std,
            is.splits
        );
    }
    if let Some(c) = &r.class_accuracy {
        let per: Vec<String> = c.per_class.iter().map(|v| format!("{v:.3}")).collect();
        println!(
            "{:<18} {:>12.4} (per class: {})",
            "class accuracy",
            c.overall,
            per.join(" ")
        );
    }
    let path = a.run.run.join("eval-quality.json");
    dgm::checkpoint::write_atomic(&path, serde_json::to_string_pretty(&r)?.as_bytes())?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn ood_cmd(a: EvalArgs) -> Result<ExitCode> {
    refuse_given(
        &[
            ("--split", a.split.is_some()),
            ("--metric", a.metric.is_some()),
            ("--features", a.features.is_some()),
            ("--num-samples", a.num_samples.is_some()),
            ("--permutations", a.permutations.is_some()),
            ("--draw", a.draw),
            ("--sampler", a.sampler.is_some()),
            ("--steps", a.steps.is_some()),
        ],
        "to `dgm eval ood`: it scores the test split and the OOD sets by likelihood, and draws no samples",
    )?;
    let run = load(&a.run)?;
    // the estimator that scores (the model's first by default)
    let est = run.model.as_density().and_then(|d| {
        a.estimator
            .clone()
            .or_else(|| d.estimators().first().cloned())
    });
    if let Some(e) = &est {
        refuse_estimator_flags(&a, std::slice::from_ref(e))?;
    }
    let data_dir = data::data_dir(a.data_dir.data_dir.as_deref());
    let sets = a
        .ood
        .as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let opts = OodOptions {
        sets,
        n: a.limit.unwrap_or(2000),
        samples: match est.as_deref() {
            Some("iwae") => a.iwae_k.unwrap_or(100),
            Some("ode") => a.probes.unwrap_or(1),
            _ => 1,
        },
        estimator: a.estimator.clone(),
        steps: a.likelihood_steps,
        batch_size: a.batch_size,
        typicality_batch: a.typicality_batch.unwrap_or(16),
        alpha: a.alpha.unwrap_or(0.01),
        seed: a.seed,
        ..OodOptions::default()
    };
    let started = std::time::Instant::now();
    let r = evaluate_ood(&run, &data_dir, &opts, &mut |m| {
        eprintln!("[{:>5.1} s] {m}", started.elapsed().as_secs_f64())
    })?;
    let i = &r.in_distribution;
    println!(
        "run {} · model {} · {} weights · step {} · score −log p(x) by {} ({})",
        a.run.run.display(),
        run.config.model.name,
        r.weights,
        r.step,
        r.score.estimator,
        r.score.kind
    );
    if let Some(c) = &r.score.conditioning {
        println!("{c}");
    }
    if let Some(b) = &r.score.bits_per_dim_means {
        println!("bits/dim: {b}");
    }
    println!(
        "in-distribution: {} {}, {} examples, mean NLL {:.2} nats = {:.4} bits/dim",
        i.data, i.split, i.n, i.mean_nll_nats, i.mean_bpd
    );
    println!(
        "typicality test: batches of {}, α = {}, Ĥ = {:.2} nats, ε = {:.2} nats; flags {:.1} % of in-distribution test batches",
        r.typicality.batch_size,
        r.typicality.alpha,
        r.typicality.entropy,
        r.typicality.epsilon,
        100.0 * i.typicality_flag_rate
    );
    println!(
        "{:<16} {:>6} {:>12} {:>9} {:>8} {:>8} {:>12} {:>10}",
        "OOD set", "n", "NLL (nats)", "bits/dim", "AUROC", "AUPR", "typ. AUROC", "typ. flag"
    );
    for s in &r.sets {
        println!(
            "{:<16} {:>6} {:>12.2} {:>9.4} {:>8.4} {:>8.4} {:>12.4} {:>9.1}%",
            s.name,
            s.n,
            s.mean_nll_nats,
            s.mean_bpd,
            s.auroc,
            s.aupr,
            s.typicality_auroc,
            100.0 * s.typicality_flag_rate
        );
    }
    println!("(AUROC < 0.5: the model finds that set MORE likely than its own test data)");
    let path = a.run.run.join("eval-ood.json");
    dgm::checkpoint::write_atomic(&path, serde_json::to_string_pretty(&r)?.as_bytes())?;
    eprintln!("wrote {}", path.display());
    if let Some(csv) = &a.scores {
        let mut text = String::from("set,index,nll_nats,bits_per_dim\n");
        for s in &r.scores {
            for (i, (n, b)) in s.nll_nats.iter().zip(&s.bits_per_dim).enumerate() {
                text.push_str(&format!("{},{i},{n},{b}\n", s.name));
            }
        }
        dgm::checkpoint::write_atomic(csv, text.as_bytes())?;
        eprintln!("wrote {}", csv.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn train_features_cmd(a: TrainFeaturesArgs) -> Result<ExitCode> {
    let data_dir = data::data_dir(a.data_dir.data_dir.as_deref());
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| features::default_dir(&a.data));
    if out.join(features::INFO_FILE).exists() && !a.force {
        bail!(dgm::Error::invalid(
            "--out",
            format!(
                "{} already holds a feature network; FID/KID computed with it would stop being comparable (pass --force to replace it)",
                out.display()
            )
        ));
    }
    let net_cfg = FeatureNetConfig::default();
    let mut train_cfg = FeatureTrainConfig {
        seed: a.seed,
        ..FeatureTrainConfig::default()
    };
    if let Some(e) = a.epochs {
        train_cfg.epochs = e;
    }
    if let Some(s) = a.steps {
        train_cfg.steps = s;
    }
    if let Some(g) = &a.generated {
        train_cfg.generated_train = g[0];
        train_cfg.generated_test = g[1];
    }
    let quiet = a.quiet;
    let trained = features::train_feature_net(
        &a.data,
        &data_dir,
        &net_cfg,
        &train_cfg,
        &Device::Cpu,
        &mut |m: &str| {
            if !quiet {
                eprintln!("{m}");
            }
        },
    )?;
    trained.save(&out)?;
    println!(
        "feature network for {}: test accuracy {:.2} %, saved to {}",
        a.data,
        100.0 * trained.info.test_accuracy,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A data set for `dgm metrics compare`: a split, or an OOD set built from the test split.
fn named_set(
    spec: &data::DataSpec,
    name: &str,
    data_dir: &Path,
    sizes: &data::GeneratedSizes,
    n: usize,
    seed: u64,
) -> Result<Dataset> {
    if let Ok(split) = Split::parse(name) {
        return Ok(data::load(spec, split, data_dir, sizes)?);
    }
    if !data::ood::OOD_SETS.contains(&name) {
        let mut valid = vec!["train", "validation", "test"];
        valid.extend_from_slice(data::ood::OOD_SETS);
        bail!(dgm::Error::unknown("set", name, &valid));
    }
    let test = data::load(spec, Split::Test, data_dir, sizes)?;
    Ok(data::ood::load_ood(name, &test, data_dir, n, seed)?)
}

fn compare_cmd(a: CompareArgs) -> Result<ExitCode> {
    let sel = MetricSelection::parse(&a.metric)?;
    if sel.nll {
        bail!(dgm::Error::invalid(
            "--metric",
            "nll scores a model, not a data set; valid here: fid, kid, pr, mmd"
        ));
    }
    let spec = data::DataSpec::parse(&a.data)?;
    let data_dir = data::data_dir(a.data_dir.data_dir.as_deref());
    let sizes = data::GeneratedSizes::default();
    let set_a = named_set(&spec, &a.a, &data_dir, &sizes, a.num_samples, a.seed)?;
    let set_b = named_set(
        &spec,
        &a.b,
        &data_dir,
        &sizes,
        a.num_samples,
        a.seed.wrapping_add(1),
    )?;
    let opts = QualityOptions {
        num_samples: a.num_samples,
        seed: a.seed,
        mmd_permutations: a.permutations,
        ..QualityOptions::default()
    };
    let started = std::time::Instant::now();
    let r = compare_sets(
        &set_a,
        &set_b,
        &spec.name(),
        a.features.as_deref(),
        &sel.quality,
        &opts,
        &Device::Cpu,
        &mut |m| eprintln!("[{:>5.1} s] {m}", started.elapsed().as_secs_f64()),
    )?;
    println!(
        "{} {} ({} examples) vs {} ({} examples)",
        a.data, a.a, r.n_a, a.b, r.n_b
    );
    let tag = feature_tag(r.feature_net.as_ref());
    print_set_metrics(&r.sets, &tag);
    Ok(ExitCode::SUCCESS)
}

/// Prints the feature network line and returns the metric suffix, e.g. `-mnist`.
fn feature_tag(f: Option<&dgm::metrics::suite::FeatureNetUse>) -> String {
    match f {
        Some(f) => {
            println!(
                "features: dgm's {} classifier at {} (test accuracy {:.2} %) — FID-{} is comparable between dgm runs, not to Inception FID",
                f.data,
                f.path,
                100.0 * f.test_accuracy,
                f.data
            );
            format!("-{}", f.data)
        }
        None => String::new(),
    }
}

fn print_set_metrics(r: &SetMetrics, tag: &str) {
    if let Some(v) = r.fid {
        println!("{:<18} {v:>12.4}", format!("FID{tag}"));
    }
    if let Some(k) = &r.kid {
        println!(
            "{:<18} {:>12.5} ± {:.5} ({} subsets of {})",
            format!("KID{tag}"),
            k.mean,
            k.std,
            k.subsets,
            k.subset_size
        );
    }
    if let Some(p) = &r.precision_recall {
        println!("{:<18} {:>12.4} (k = {})", "precision", p.precision, p.k);
        println!("{:<18} {:>12.4}", "recall", p.recall);
    }
    if let Some(m) = &r.mmd {
        println!(
            "{:<18} {:>12.6} p = {:.4} ({} vs {} {}, {} permutations, bandwidth {:.4})",
            "MMD²",
            m.test.mmd2,
            m.test.p_value,
            m.test.n_x,
            m.test.n_y,
            m.space,
            m.test.permutations,
            m.test.bandwidth
        );
    }
}

fn report_cmd(a: ReportArgs) -> Result<ExitCode> {
    let n = dgm::report::write_report(&a.runs, &a.out)?;
    println!("report of {n} runs written to {}", a.out.display());
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
        zs.push(latent.interpolate(&z0, &z1, t)?); // the model's path: a line, or slerp for Gaussian codes
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
        "wrote {} (example {} → {}: data, {} decoded points on the path between their codes, data)",
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
