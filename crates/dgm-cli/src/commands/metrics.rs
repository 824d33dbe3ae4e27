//! `dgm metrics`: training the feature network behind FID/KID, comparing two data sets, and printing
//! the set metrics that `dgm eval` shares.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use candle_core::Device;
use dgm::data::{self, Dataset, Split};
use dgm::metrics::features::{self, FeatureNetConfig, FeatureTrainConfig};
use dgm::metrics::suite::{compare_sets, MetricSelection, QualityOptions, SetMetrics};

use crate::cli::{CompareArgs, TrainFeaturesArgs};

pub(super) fn train_features_cmd(a: TrainFeaturesArgs) -> Result<ExitCode> {
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

pub(super) fn compare_cmd(a: CompareArgs) -> Result<ExitCode> {
    let sel = MetricSelection::parse(&a.metric)?;
    if sel.nll || sel.ais || sel.accuracy {
        let which = match (sel.nll, sel.ais) {
            (true, _) => "nll",
            (_, true) => "ais",
            _ => "accuracy",
        };
        bail!(dgm::Error::invalid(
            "--metric",
            format!("{which} scores a model, not a data set; valid here: fid, kid, pr, mmd")
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
pub(super) fn feature_tag(f: Option<&dgm::metrics::suite::FeatureNetUse>) -> String {
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

pub(super) fn print_set_metrics(r: &SetMetrics, tag: &str) {
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
