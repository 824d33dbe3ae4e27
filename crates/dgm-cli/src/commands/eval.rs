//! `dgm eval`: the likelihood (NLL and bits/dim by each estimator) and sample-quality metrics of a run.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use dgm::data::{self, Split};
use dgm::metrics::ais::{ais_preprocessing, evaluate_ais, AisConfig};
use dgm::metrics::energy::{classifier_accuracy, evaluate_energy_ais};
use dgm::metrics::suite::{evaluate_quality, MetricSelection, QualityMetric, QualityOptions};
use dgm::metrics::{evaluate_nll, NllReport};
use dgm::model::SampleOptions;
use dgm::train::run;

use super::metrics::{feature_tag, print_set_metrics};
use super::ood::ood_cmd;
use super::{device, load, refuse_given};
use crate::cli::EvalArgs;
use crate::progress::throttled;

pub(super) fn eval_cmd(a: EvalArgs) -> Result<ExitCode> {
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
        sel.accuracy &= run.model.as_energy_based().is_some_and(|e| e.classifies());
        match data::DataSpec::parse(&run.config.data.name)? {
            data::DataSpec::Toy2d(_) => sel.quality.retain(|m| !m.needs_images()),
            // sample-quality metrics compare images or points; text and audio have their likelihood here
            // (audio's classifier scores: bench/wavenet_digits)
            data::DataSpec::Text(_) | data::DataSpec::SpokenDigits => sel.quality.clear(),
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
    if sel.nll && run.model.as_density().is_none() {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' has no likelihood, so --metric nll does not apply; valid for it: {}fid, kid, pr, mmd, class",
            run.config.model.name,
            if run.model.as_decoder_based().is_some() { "ais (an estimate), " } else { "" }
        )));
    }
    if !sel.nll {
        refuse_given(
            &[
                ("--estimator", a.estimator.is_some()),
                ("--likelihood-steps", a.likelihood_steps.is_some()),
                ("--probes", a.probes.is_some()),
                ("--iwae-k", a.iwae_k.is_some()),
            ],
            "here: it is an option of the likelihood (--metric nll), which is not evaluated",
        )?;
    }
    if sel.ais {
        check_ais(&a, &run)?;
    } else {
        refuse_given(
            &[
                ("--ais-steps", a.ais_steps.is_some()),
                ("--ais-chains", a.ais_chains.is_some()),
                ("--ais-leapfrog", a.ais_leapfrog.is_some()),
                ("--ais-runs", a.ais_runs.is_some()),
                ("--obs-std", a.obs_std.is_some()),
            ],
            "here: it is an option of annealed importance sampling (--metric ais), which is not evaluated",
        )?;
    }
    if sel.accuracy && !run.model.as_energy_based().is_some_and(|e| e.classifies()) {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' is not a classifier, so --metric accuracy does not apply (it applies to jem)",
            run.config.model.name
        )));
    }
    if sel.nll || sel.ais {
        eval_nll(&a, &run, split, &data_dir, sel.nll, sel.ais)?;
    } else if !sel.accuracy {
        refuse_given(
            &[("--limit", a.limit.is_some())],
            "here: it is an option of the likelihood (--metric nll, ais) and of --metric accuracy, which are not evaluated",
        )?;
    }
    if sel.accuracy {
        eval_accuracy(&a, &run, split, &data_dir)?;
    }
    if !sel.quality.is_empty() {
        eval_quality(&a, &run, &sel.quality, split, &data_dir)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses --metric ais for a model that is not decoder-based or data it cannot score, and an --obs-std the
/// model would ignore, before any slow work.
fn check_ais(a: &EvalArgs, run: &run::LoadedRun) -> Result<()> {
    let name = &run.config.model.name;
    if run.model.as_energy_based().is_some() {
        if a.obs_std.is_some() {
            bail!(dgm::Error::Unsupported(format!(
                "--obs-std does not apply to model '{name}': AIS estimates the log Z of its energy, which has no \
                 observation model"
            )));
        }
        ais_config(a).validate()?;
        if a.ais_runs == Some(0) {
            bail!(dgm::Error::invalid(
                "--ais-runs",
                "must be at least 1, got 0"
            ));
        }
        return Ok(());
    }
    if a.ais_runs.is_some() {
        bail!(dgm::Error::Unsupported(format!(
            "--ais-runs does not apply to model '{name}': it repeats the log Z estimate of an energy-based model \
             (ebm, jem)"
        )));
    }
    let Some(dec) = run.model.as_decoder_based() else {
        let valid: Vec<&str> = dgm::models::REGISTRY
            .iter()
            .filter(|e| e.abilities.decoder_based || e.abilities.energy_based)
            .map(|e| e.name)
            .collect();
        bail!(dgm::Error::Unsupported(format!(
            "model '{name}' is neither decoder-based (an example as a function of z ~ N(0, I)) nor \
             energy-based, so --metric ais does not apply; it applies to {} (a VAE with a gaussian decoder)",
            valid.join(", ")
        )));
    };
    ais_preprocessing(&run.config.data.preprocessing)?;
    if dec.observation_std()?.is_some() && a.obs_std.is_some() {
        bail!(dgm::Error::Unsupported(format!(
            "--obs-std does not apply to model '{name}': its Gaussian decoder has its own σ, which AIS uses so \
             that it scores the density the model was trained as"
        )));
    }
    ais_config(a).validate()?;
    Ok(())
}

/// The AIS settings of the command line.
fn ais_config(a: &EvalArgs) -> AisConfig {
    let d = AisConfig::default();
    AisConfig {
        steps: a.ais_steps.unwrap_or(d.steps),
        chains: a.ais_chains.unwrap_or(d.chains),
        leapfrog: a.ais_leapfrog.unwrap_or(d.leapfrog),
        obs_std: a.obs_std.unwrap_or(d.obs_std),
        seed: a.seed,
        ..d
    }
}

/// Examples AIS scores when --limit is not given (each takes T·L decoder passes per chain).
const AIS_DEFAULT_LIMIT: usize = 100;

/// The likelihood reports of the run: each estimator of the model (`nll`) and annealed importance sampling
/// (`ais`); printed and written to `eval-<split>.json`.
fn eval_nll(
    a: &EvalArgs,
    run: &run::LoadedRun,
    split: Split,
    data_dir: &Path,
    nll: bool,
    ais: bool,
) -> Result<()> {
    let ds = run::load_data(&run.config, split, data_dir)?;
    let mut prep = run.config.data.preprocessing.for_eval();
    let dev = device(&a.run.device)?;
    let mut reports = Vec::new();
    if let (true, Some(density)) = (nll, run.model.as_density()) {
        reports = nll_reports(a, density, &ds, &prep, &dev)?;
    }
    if let (true, Some(ebm)) = (ais, run.model.as_energy_based()) {
        let cfg = ais_config(a);
        let runs = a.ais_runs.unwrap_or(3);
        let r = evaluate_energy_ais(
            ebm,
            &ds.slice(0, a.limit.unwrap_or(ds.len()).min(ds.len())),
            &prep,
            &cfg,
            runs,
            &dev,
            &mut throttled(format!(
                "ais of log Z ({runs} runs of T = {}, K = {}, L = {})",
                cfg.steps, cfg.chains, cfg.leapfrog
            )),
        )?;
        reports.push(r.report);
    }
    if let (true, Some(dec)) = (ais, run.model.as_decoder_based()) {
        let ais_prep = ais_preprocessing(&prep)?;
        let cfg = ais_config(a);
        let limit = a.limit.unwrap_or(AIS_DEFAULT_LIMIT);
        let (r, _) = evaluate_ais(
            dec,
            &ds,
            &ais_prep,
            &cfg,
            Some(limit),
            &dev,
            &mut throttled(format!(
                "ais (T = {}, K = {}, L = {})",
                cfg.steps, cfg.chains, cfg.leapfrog
            )),
        )?;
        if !nll {
            prep = ais_prep;
        }
        reports.push(r);
    }
    // bits per byte: for BPE tokens only (a byte or char token is one byte)
    let bpe = ds.tokenizer().is_some_and(|t| t.unit() == "token");
    let bytes = reports
        .first()
        .filter(|_| bpe)
        .and_then(|r| ds.window_bytes(r.n));
    print_nll(a, run, split, &prep, &reports, bytes);
    let path = a.run.run.join(format!("eval-{}.json", split.name()));
    let text = serde_json::to_string_pretty(&reports)?;
    dgm::checkpoint::write_atomic(&path, text.as_bytes())?;
    Ok(())
}

/// The accuracy of an energy-based classifier (JEM) on the split; printed and written to
/// `eval-accuracy-<split>.json`.
fn eval_accuracy(a: &EvalArgs, run: &run::LoadedRun, split: Split, data_dir: &Path) -> Result<()> {
    let Some(ebm) = run.model.as_energy_based() else {
        bail!(dgm::Error::Unsupported("not an energy-based model".into()));
    };
    let ds = run::load_data(&run.config, split, data_dir)?;
    let prep = run.config.data.preprocessing.for_eval();
    let (acc, n) = classifier_accuracy(ebm, &ds, &prep, a.limit, &device(&a.run.device)?)?;
    println!(
        "{} on {} {}: classification accuracy {:.4} ({n} examples)",
        run.config.model.name,
        ds.name,
        split.name(),
        acc
    );
    let path = a
        .run
        .run
        .join(format!("eval-accuracy-{}.json", split.name()));
    let text =
        serde_json::to_string_pretty(&serde_json::json!({ "accuracy": acc, "examples": n }))?;
    dgm::checkpoint::write_atomic(&path, text.as_bytes())?;
    Ok(())
}

/// The reports of the model's likelihood estimators (all, or --estimator).
fn nll_reports(
    a: &EvalArgs,
    density: &dyn dgm::model::Density,
    ds: &dgm::data::Dataset,
    prep: &dgm::data::Preprocessing,
    dev: &candle_core::Device,
) -> Result<Vec<NllReport>> {
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
            ds,
            prep,
            &est,
            k,
            a.likelihood_steps,
            a.batch_size,
            a.limit,
            a.seed,
            dev,
            &mut throttled(format!("{est} (k = {k})")),
        )?;
        reports.push(r);
    }
    Ok(reports)
}

fn print_nll(
    a: &EvalArgs,
    run: &run::LoadedRun,
    split: Split,
    prep: &dgm::data::Preprocessing,
    reports: &[NllReport],
    window_bytes: Option<usize>,
) {
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
            match (
                split,
                run.config.data.text.as_ref().map(|t| t.split.as_str())
            ) {
                (Split::Train, _) => "",
                (_, Some("folders")) => " · whole top-level folders held out from training",
                _ if dgm::data::numbers::corpus_of(&run.config.data.name).is_some() => {
                    " · numbers held out from training"
                }
                _ => " · the last 10 % of the corpus (text has no separate test split)",
            }
        );
        println!(
            "{:>14} {:>10} {:>10}  kind",
            format!("nats/{unit}"),
            "± s.e.",
            format!("bits/{unit}")
        );
        for r in reports {
            let d = r.dims.max(1) as f64;
            println!(
                "{:>14.4} {:>10.4} {:>10.4}  {}",
                r.nll_nats / d,
                r.stderr_nats / d,
                r.bits_per_dim,
                r.kind_text
            );
        }
        if let (Some(bytes), "token") = (window_bytes, unit) {
            // BPE: the same total in bits per byte of the text, comparable with byte-level models
            for r in reports {
                let tokens = (r.n * r.dims) as f64;
                println!(
                    "{:.4} bits/byte: {} tokens of the evaluated windows decode to {bytes} bytes ({:.2} bytes/token)",
                    r.bits_per_dim * tokens / bytes.max(1) as f64,
                    r.n * r.dims,
                    bytes as f64 / tokens.max(1.0)
                );
            }
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
        for r in reports {
            println!(
                "{:>14.3} {:>10.3} {:>10.4}  {} ({} examples)",
                r.nll_nats, r.stderr_nats, r.bits_per_dim, r.kind_text, r.n
            );
        }
        for r in reports {
            if let Some(n) = &r.note {
                println!("{}: {n}", r.kind.short_name());
            }
        }
        if let Some(r) = reports
            .iter()
            .find(|r| r.bits_per_dim_basis != Some(dgm::model::BitsPerDim::Discrete))
        {
            println!("bits/dim: {}", r.bits_per_dim_means);
        }
        println!("(a lower bound on log p gives an upper bound on NLL; IWAE-k and AIS tighten towards the true NLL as k and T grow)");
    }
}

/// Refuses the likelihood flags that the `estimators` to evaluate would not use, and values that would
/// leave nothing to evaluate.
pub(super) fn refuse_estimator_flags(a: &EvalArgs, estimators: &[String]) -> Result<()> {
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
                a.likelihood_steps.is_some() && !uses("vlb") && !uses("ode") && !uses("ais"),
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
    if let Some(h) = &r.class_histogram {
        let per: Vec<String> = h.iter().map(|v| format!("{v:.3}")).collect();
        println!(
            "{:<18} {} (fraction of samples per class, by the classifier)",
            "class histogram",
            per.join(" ")
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
