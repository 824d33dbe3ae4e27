//! Negative log-likelihood of a data split, in nats and bits/dim, with what kind of number it is.

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Preprocessing};
use crate::model::{
    bits_per_dim, bits_per_dim_basis, BitsPerDim, Density, LikelihoodKind, LikelihoodOptions,
    LikelihoodSpace,
};
use crate::rng::Rng;

use super::json;
use crate::{Error, Result};

/// The result of [`evaluate_nll`]; `dgm eval` writes a list of them to `eval-<split>.json`. Reads back the files
/// of earlier dgm versions: fields they lack take their defaults (0, empty, `None`, NaN for a number).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NllReport {
    /// Estimator name as asked (`elbo`, `iwae`, ...).
    pub estimator: String,
    /// Samples / probes the estimator used (0 in files written before it was recorded).
    #[serde(default)]
    pub samples: usize,
    /// Time steps the estimator used (`None`: the model's default).
    pub steps: Option<usize>,
    /// What kind of number it is.
    pub kind: LikelihoodKind,
    /// The kind in words, as `dgm eval` prints it (e.g. "estimate of a lower bound (ELBO), 1 z sample per
    /// example"; empty in files written before it was recorded).
    #[serde(default)]
    pub kind_text: String,
    /// What the per-example numbers and their mean are, when that needs saying (Monte-Carlo kinds).
    pub note: Option<String>,
    /// What the likelihood is conditioned on: `None` for an unconditional model; for a class-conditional
    /// one, log p(x | y) with each example's true class y (not the class marginal log p(x)).
    pub conditioning: Option<String>,
    /// Mass over discrete values or density over continuous ones.
    pub space: LikelihoodSpace,
    /// Mean negative log-likelihood per example, nats.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub nll_nats: f64,
    /// Standard error of that mean.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub stderr_nats: f64,
    /// The mean in bits per dimension (see [`bits_per_dim`]).
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub bits_per_dim: f64,
    /// What that bits-per-dimension number is (see [`bits_per_dim_basis`]); `None` in files written before it
    /// was recorded.
    #[serde(default)]
    pub bits_per_dim_basis: Option<BitsPerDim>,
    /// The same in words (empty in files written before it was recorded).
    #[serde(default)]
    pub bits_per_dim_means: String,
    /// Number of examples.
    pub n: usize,
    /// Data dimension.
    pub dims: usize,
    /// The preprocessing the numbers refer to.
    pub preprocessing: String,
}

/// The stream (of the evaluation seed) that draws the data's preprocessing noise (dequantization) when a split is
/// scored: shared by every likelihood estimate, so that estimates with the same seed see the same data.
pub(crate) const DATA_STREAM: u64 = 0xDA7A;

/// Per-example negative log-likelihoods (nats) of the first `limit` examples of a data set, with their kind.
#[derive(Clone, Debug)]
pub struct PerExampleNll {
    /// −log p(x) (or its bound / estimate) per example, nats.
    pub nats: Vec<f64>,
    /// What kind of number it is.
    pub kind: LikelihoodKind,
    /// Mass over discrete values or density over continuous ones.
    pub space: LikelihoodSpace,
}

/// Scores each of the first `limit` examples of `data` (all if `None`) by `estimator` of `model`, preprocessed by
/// `prep` (use the run's preprocessing `.for_eval()`). Deterministic for a given seed: the estimator's randomness
/// for the batch starting at example `i` is seeded by `seed + i`. `progress(done, total)` is called after each
/// batch.
#[allow(clippy::too_many_arguments)]
pub fn per_example_nll(
    model: &dyn Density,
    data: &Dataset,
    prep: &Preprocessing,
    estimator: &str,
    samples: usize,
    steps: Option<usize>,
    batch_size: usize,
    limit: Option<usize>,
    seed: u64,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PerExampleNll> {
    let valid = model.estimators();
    if !valid.iter().any(|e| e == estimator) {
        let opts: Vec<&str> = valid.iter().map(|s| s.as_str()).collect();
        return Err(Error::unknown("estimator", estimator, &opts));
    }
    if batch_size == 0 {
        return Err(Error::invalid("batch size", "must be at least 1"));
    }
    let n = limit.unwrap_or(data.len()).min(data.len());
    if n == 0 {
        return Err(Error::invalid("limit", "no examples to evaluate"));
    }
    let mut data_rng = Rng::stream(seed, DATA_STREAM);
    let mut all = Vec::with_capacity(n);
    let mut kind = None;
    let mut space = LikelihoodSpace::Discrete;
    let mut start = 0;
    while start < n {
        let end = (start + batch_size).min(n);
        let idx: Vec<usize> = (start..end).collect();
        let batch = data.batch(&idx, prep, &mut data_rng, device)?;
        let opts = LikelihoodOptions {
            estimator: Some(estimator.to_string()),
            samples,
            steps,
            chunk: 8192,
            seed: seed.wrapping_add(start as u64),
        };
        let ll = model.log_likelihood(&batch, &opts)?;
        all.extend(ll.nats.iter().map(|v| -v));
        kind = Some(ll.kind);
        space = ll.space;
        start = end;
        progress(end, n);
    }
    Ok(PerExampleNll {
        nats: all,
        kind: kind.unwrap_or(LikelihoodKind::Exact),
        space,
    })
}

/// Evaluates `estimator` of `model` on the first `limit` examples of `data` (all if `None`), preprocessed by
/// `prep` (use the run's preprocessing `.for_eval()`: a fixed binarisation). Deterministic for a given seed.
/// `progress(done, total)` is called after each batch.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_nll(
    model: &dyn Density,
    data: &Dataset,
    prep: &Preprocessing,
    estimator: &str,
    samples: usize,
    steps: Option<usize>,
    batch_size: usize,
    limit: Option<usize>,
    seed: u64,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<NllReport> {
    let per = per_example_nll(
        model, data, prep, estimator, samples, steps, batch_size, limit, seed, device, progress,
    )?;
    Ok(nll_report(
        estimator,
        samples,
        steps,
        &per,
        model.num_classes(),
        data.example_dim(),
        prep,
    ))
}

/// The summary of per-example results `per` of `estimator` (with `samples`, `steps`): mean, standard error,
/// bits/dim of data with `dims` values preprocessed by `prep`; `num_classes` of a class-conditional model.
pub fn nll_report(
    estimator: &str,
    samples: usize,
    steps: Option<usize>,
    per: &PerExampleNll,
    num_classes: Option<usize>,
    dims: usize,
    prep: &Preprocessing,
) -> NllReport {
    let all = &per.nats;
    let n = all.len();
    let mean = all.iter().sum::<f64>() / n.max(1) as f64;
    let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
    let basis = bits_per_dim_basis(per.space, prep);
    NllReport {
        estimator: estimator.to_string(),
        samples,
        steps,
        kind_text: per.kind.to_string(),
        note: kind_note(&per.kind),
        conditioning: num_classes.map(|k| {
            format!("conditional: log p(x | y) with each example's true class y (of {k}), not the class marginal log p(x)")
        }),
        kind: per.kind.clone(),
        space: per.space,
        nll_nats: mean,
        stderr_nats: (var / n.max(1) as f64).sqrt(),
        bits_per_dim: bits_per_dim(mean, dims, per.space, prep),
        bits_per_dim_basis: Some(basis),
        bits_per_dim_means: basis.describe().to_string(),
        n,
        dims,
        preprocessing: prep.describe(),
    }
}

/// What the per-example numbers of `kind` and their mean over a data set are, for the Monte-Carlo kinds.
pub fn kind_note(kind: &LikelihoodKind) -> Option<String> {
    match kind {
        LikelihoodKind::Exact | LikelihoodKind::LowerBound(_) => None,
        LikelihoodKind::BoundEstimate { bound, .. } => Some(format!(
            "each example's value is a Monte-Carlo estimate of its {bound}; the mean over the examples is an \
             unbiased estimate of the mean {bound} (a lower bound on the mean log p(x)), and its standard error \
             includes the Monte-Carlo noise"
        )),
        LikelihoodKind::Estimate(name) => Some(format!(
            "each example's value is a stochastic estimate ({name}); the standard error includes its noise"
        )),
    }
}
