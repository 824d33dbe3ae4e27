//! `dgm eval ood`: out-of-distribution detection by likelihood and the typicality test.

use std::process::ExitCode;

use anyhow::Result;
use dgm::data;
use dgm::metrics::suite::{evaluate_ood, OodOptions};

use super::eval::refuse_estimator_flags;
use super::{load, refuse_given};
use crate::cli::EvalArgs;

pub(super) fn ood_cmd(a: EvalArgs) -> Result<ExitCode> {
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
            ("--ais-steps", a.ais_steps.is_some()),
            ("--ais-chains", a.ais_chains.is_some()),
            ("--ais-leapfrog", a.ais_leapfrog.is_some()),
            ("--ais-runs", a.ais_runs.is_some()),
            ("--obs-std", a.obs_std.is_some()),
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
