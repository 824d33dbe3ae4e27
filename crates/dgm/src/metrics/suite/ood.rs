//! Out-of-distribution detection by likelihood and by the typicality test.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::{ood, Dataset, Split};
use crate::metrics::json;
use crate::metrics::likelihood::{per_example_nll, PerExampleNll};
use crate::metrics::ood::{aupr, auroc, batch_statistics, fit_typical_set};
use crate::model::{bits_per_dim, bits_per_dim_basis, LikelihoodKind};
use crate::train::run::{load_data, LoadedRun};
use crate::{Error, Result};

/// −log p(x) of a class-conditional model with the class marginalised out under a uniform prior:
/// −log (1/k) Σ_y p(x | y), from `nll` evaluated with every example labelled y, for y = 0..k. OOD inputs have no
/// label, so every set (the in-distribution test data too) is scored this way. A lower bound on each log p(x | y)
/// (an ELBO) gives a lower bound on log p(x), so the kind of number is unchanged.
pub(super) fn marginal_nll(
    ds: &Dataset,
    k: usize,
    n: usize,
    nll: &dyn Fn(&Dataset) -> Result<PerExampleNll>,
) -> Result<PerExampleNll> {
    let n = n.min(ds.len());
    let mut first = ds.slice(0, n);
    first.num_classes = Some(k);
    let mut per_class = Vec::with_capacity(k);
    let mut last = None;
    for y in 0..k {
        first.labels = Some(vec![y as u32; n]);
        let r = nll(&first)?;
        per_class.push(r.nats.clone());
        last = Some(r);
    }
    let mut out = last.ok_or_else(|| Error::invalid("classes", "the model has 0 classes"))?;
    out.nats = (0..n)
        .map(|i| {
            // −log p(x) = −logsumexp_y(−nll_y) + log k
            let m = per_class
                .iter()
                .map(|v| -v[i])
                .fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = per_class.iter().map(|v| (-v[i] - m).exp()).sum();
            -(m + s.ln()) + (k as f64).ln()
        })
        .collect();
    Ok(out)
}

/// Settings of [`evaluate_ood`].
#[derive(Clone, Debug)]
pub struct OodOptions {
    /// OOD set names (see [`ood::OOD_SETS`]); empty = the data set's defaults.
    pub sets: Vec<String>,
    /// Examples per set (in-distribution test examples and each OOD set; OOD sets may have fewer).
    pub n: usize,
    /// Likelihood estimator (`None` = the model's default).
    pub estimator: Option<String>,
    /// Importance samples for estimators that use them.
    pub samples: usize,
    /// Time steps for estimators that integrate over time (`None`: the model's default).
    pub steps: Option<usize>,
    /// Examples per forward pass.
    pub batch_size: usize,
    /// Batch size of the typicality test.
    pub typicality_batch: usize,
    /// Significance level of the typicality test.
    pub alpha: f64,
    /// Bootstrap resamples to fit the typical set.
    pub bootstrap: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for OodOptions {
    fn default() -> Self {
        Self {
            sets: Vec::new(),
            n: 2000,
            estimator: None,
            samples: 1,
            steps: None,
            batch_size: 250,
            typicality_batch: 16,
            alpha: 0.01,
            bootstrap: 2000,
            seed: 0,
        }
    }
}

/// The in-distribution side of an OOD evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InDistribution {
    /// Data set name.
    pub data: String,
    /// Split scored.
    pub split: String,
    /// Examples scored.
    pub n: usize,
    /// Mean negative log-likelihood, nats.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub mean_nll_nats: f64,
    /// The same in bits/dim.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub mean_bpd: f64,
    /// Fraction of in-distribution test batches the typicality test flags (its false-alarm rate; ≈ α).
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub typicality_flag_rate: f64,
}

/// The score used: which likelihood and what kind of number it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreInfo {
    /// Estimator name.
    pub estimator: String,
    /// Its kind, in words.
    pub kind: String,
    /// For a class-conditional model: the score is the class marginal −log (1/k) Σ_y p(x | y) (OOD inputs
    /// have no labels), not the −log p(x | y) with true labels that `dgm eval` reports. `None` otherwise.
    #[serde(default)]
    pub conditioning: Option<String>,
    /// What the bits-per-dimension numbers are.
    #[serde(default)]
    pub bits_per_dim_means: Option<String>,
}

/// The fitted typicality test. Files that lack it read back as [`TypicalityInfo::unknown`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypicalityInfo {
    /// Examples per tested batch.
    pub batch_size: usize,
    /// Significance level.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub alpha: f64,
    /// Half-width of the typical set, nats.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub epsilon: f64,
    /// Entropy estimate Ĥ (mean training NLL), nats.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub entropy: f64,
}

impl TypicalityInfo {
    /// A test nothing is known of: batch size 0, NaN numbers.
    pub fn unknown() -> Self {
        Self {
            batch_size: 0,
            alpha: f64::NAN,
            epsilon: f64::NAN,
            entropy: f64::NAN,
        }
    }
}

/// Results for one OOD set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OodSetReport {
    /// Set name.
    pub name: String,
    /// Examples scored.
    pub n: usize,
    /// Mean negative log-likelihood, nats.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub mean_nll_nats: f64,
    /// The same in bits/dim.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub mean_bpd: f64,
    /// AUROC of the per-example score −log p(x) (OOD = positive; 0.5 = chance, < 0.5 = OOD looks *more* likely).
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub auroc: f64,
    /// Area under precision-recall of the same score.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub aupr: f64,
    /// AUROC of the typicality statistic |mean NLL − Ĥ| over batches.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub typicality_auroc: f64,
    /// Fraction of this set's batches the typicality test flags.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub typicality_flag_rate: f64,
}

/// OOD detection results of one run (`eval-ood.json`). Reads back the files of earlier dgm versions (fields
/// added since take their defaults) and a number written as `null` (NaN) or absent as NaN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OodReport {
    /// Training step of the evaluated weights.
    pub step: u64,
    /// Which weights.
    pub weights: String,
    /// The in-distribution test data.
    pub in_distribution: InDistribution,
    /// The score.
    pub score: ScoreInfo,
    /// The fitted typicality test.
    #[serde(default = "TypicalityInfo::unknown")]
    pub typicality: TypicalityInfo,
    /// One entry per OOD set.
    pub sets: Vec<OodSetReport>,
    /// The per-example scores behind the numbers: the in-distribution test set first, then each OOD set
    /// (not written to `eval-ood.json`; `dgm eval ood --scores FILE` writes them as CSV).
    #[serde(skip)]
    pub scores: Vec<SetScores>,
}

/// Per-example anomaly scores of one set.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SetScores {
    /// Set name (`test` for the in-distribution test split).
    pub name: String,
    /// −log p(x) (or the bound / estimate) per example, nats.
    pub nll_nats: Vec<f64>,
    /// The same per example in bits/dim.
    pub bits_per_dim: Vec<f64>,
}

/// Scores in-distribution test data and OOD sets by the run's negative log-likelihood and reports AUROC / AUPR
/// of that score and of the typicality test (fitted on the training split, ε from the validation split).
pub fn evaluate_ood(
    run: &LoadedRun,
    data_dir: &Path,
    opts: &OodOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<OodReport> {
    let Some(density) = run.model.as_density() else {
        return Err(Error::Unsupported(format!(
            "model '{}' has no likelihood to score inputs with",
            run.config.model.name
        )));
    };
    let estimator =
        match &opts.estimator {
            Some(e) => e.clone(),
            None => density.estimators().first().cloned().ok_or_else(|| {
                Error::Unsupported("the model offers no likelihood estimator".into())
            })?,
        };
    if opts.n < opts.typicality_batch.max(2) {
        return Err(Error::invalid(
            "examples_per_set",
            format!(
                "{} examples are fewer than one typicality batch of {}",
                opts.n, opts.typicality_batch
            ),
        ));
    }
    let device = run.params.device().clone();
    let prep = run.config.data.preprocessing.for_eval();
    let test = load_data(&run.config, Split::Test, data_dir)?;
    if !test.is_image() {
        return Err(Error::invalid(
            "run",
            format!("OOD sets are images; {} holds vectors", test.name),
        ));
    }
    let names: Vec<String> = if opts.sets.is_empty() {
        ood::default_ood_sets(&test.name)
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        opts.sets.clone()
    };
    // Check every name before the slow part.
    for n in &names {
        if !ood::OOD_SETS.contains(&n.as_str()) {
            return Err(Error::unknown("OOD set", n, ood::OOD_SETS));
        }
    }
    let dims = test.example_dim();
    let classes = run.model.num_classes();
    let score =
        |ds: &Dataset, what: &str, progress: &mut dyn FnMut(&str)| -> Result<PerExampleNll> {
            progress(&format!(
                "scoring {} {what} examples by {estimator}",
                opts.n.min(ds.len())
            ));
            let nll = |ds: &Dataset| {
                per_example_nll(
                    density,
                    ds,
                    &prep,
                    &estimator,
                    opts.samples,
                    opts.steps,
                    opts.batch_size,
                    Some(opts.n),
                    opts.seed,
                    &device,
                    &mut |_, _| {},
                )
            };
            match classes {
                None => nll(ds),
                // a model with its own marginal p(x) (JEM) is scored without labels
                Some(_) if density.scores_unlabelled() => {
                    let mut unlabelled = ds.slice(0, opts.n.min(ds.len()));
                    unlabelled.labels = None;
                    nll(&unlabelled)
                }
                Some(k) => marginal_nll(ds, k, opts.n, &nll),
            }
        };
    let train = load_data(&run.config, Split::Train, data_dir)?;
    let train_nll = score(&train, "training", progress)?;
    let valid = load_data(&run.config, Split::Validation, data_dir)?;
    let valid_nll = score(&valid, "validation", progress)?;
    let test_nll = score(&test, "test", progress)?;
    let space = test_nll.space;
    let typical = fit_typical_set(
        &train_nll.nats,
        &valid_nll.nats,
        opts.typicality_batch,
        opts.alpha,
        opts.bootstrap,
        opts.seed,
    )?;
    let test_stats = batch_statistics(&typical, &test_nll.nats);
    let flagged = |stats: &[f64]| {
        stats.iter().filter(|&&s| s > typical.epsilon).count() as f64 / stats.len().max(1) as f64
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let in_mean = mean(&test_nll.nats);
    let per_example = |name: &str, nats: &[f64]| SetScores {
        name: name.to_string(),
        nll_nats: nats.to_vec(),
        bits_per_dim: nats
            .iter()
            .map(|&v| bits_per_dim(v, dims, space, &prep))
            .collect(),
    };
    let mut scores = vec![per_example("test", &test_nll.nats)];
    let mut sets = Vec::new();
    for name in &names {
        let ds = ood::load_ood(name, &test, data_dir, opts.n, opts.seed)?;
        let nll = score(&ds, name, progress)?;
        let stats = batch_statistics(&typical, &nll.nats);
        if stats.is_empty() {
            return Err(Error::invalid(
                "typicality_batch",
                format!(
                    "OOD set {name} has {} examples, fewer than one batch of {}",
                    nll.nats.len(),
                    typical.batch_size
                ),
            ));
        }
        scores.push(per_example(name, &nll.nats));
        let m = mean(&nll.nats);
        sets.push(OodSetReport {
            name: name.clone(),
            n: nll.nats.len(),
            mean_nll_nats: m,
            mean_bpd: bits_per_dim(m, dims, space, &prep),
            auroc: auroc(&test_nll.nats, &nll.nats)?,
            aupr: aupr(&test_nll.nats, &nll.nats)?,
            typicality_auroc: auroc(&test_stats, &stats)?,
            typicality_flag_rate: flagged(&stats),
        });
    }
    Ok(OodReport {
        step: run.state.step,
        weights: run.weights.name().to_string(),
        in_distribution: InDistribution {
            data: test.name.clone(),
            split: Split::Test.name().to_string(),
            n: test_nll.nats.len(),
            mean_nll_nats: in_mean,
            mean_bpd: bits_per_dim(in_mean, dims, space, &prep),
            typicality_flag_rate: flagged(&test_stats),
        },
        score: ScoreInfo {
            estimator,
            conditioning: classes.map(|k| {
                if density.scores_unlabelled() {
                    return format!(
                        "the model's own marginal p(x) over its {k} classes (scored without labels)"
                    );
                }
                let exact = matches!(test_nll.kind, LikelihoodKind::Exact);
                format!(
                    "class marginal: −log (1/{k}) Σ_y p(x | y) over the {k} classes, uniform prior (OOD inputs have no labels){}",
                    if exact {
                        ""
                    } else {
                        "; the per-class numbers are of the kind above, and their log-mean-exp is not an unbiased estimate"
                    }
                )
            }),
            kind: test_nll.kind.to_string(),
            bits_per_dim_means: Some(bits_per_dim_basis(space, &prep).describe().to_string()),
        },
        typicality: TypicalityInfo {
            batch_size: typical.batch_size,
            alpha: typical.alpha,
            epsilon: typical.epsilon,
            entropy: typical.entropy,
        },
        sets,
        scores,
    })
}
