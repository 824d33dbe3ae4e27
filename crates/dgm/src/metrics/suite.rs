//! The evaluation suite of a trained run, as `dgm eval` runs it: sample quality in a learned feature space
//! (FID / KID / precision-recall / classifier scores), an MMD two-sample test of samples against held-out data,
//! and out-of-distribution detection by likelihood and by the typicality test. Each result is a serialisable
//! report that `dgm eval` writes into the run directory (`eval-quality.json`, `eval-ood.json`) and
//! [`crate::report`] reads back.
//!
//! Numbers computed with dgm's own feature network are "FID-MNIST" / "FID-shapes": comparable between dgm runs on
//! the same data and feature network, not to Inception FID.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::{ood, Dataset, Split};
use crate::metrics::features::{
    dataset_images, default_dir, samples_to_images, Embedding, FeatureNet,
};
use crate::metrics::likelihood::{per_example_nll, PerExampleNll};
use crate::metrics::mmd::{mmd_test, MmdTest};
use crate::metrics::ood::{aupr, auroc, batch_statistics, fit_typical_set};
use crate::metrics::quality::{
    class_accuracy, fid, inception_score, kid, precision_recall, ClassAccuracy, InceptionScore,
    Kid, PrecisionRecall,
};
use crate::model::{
    bits_per_dim, bits_per_dim_basis, check_sample_options, Condition, LikelihoodKind, Model,
    SampleOptions,
};
use crate::rng::Rng;
use crate::train::run::{load_data, LoadedRun};
use crate::{Error, Result};

/// Names accepted by `dgm eval --metric` (besides `all`).
pub const METRICS: &[&str] = &["nll", "fid", "kid", "pr", "mmd", "class"];

/// One sample-quality metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QualityMetric {
    /// Fréchet distance between Gaussian fits of sample and data features.
    Fid,
    /// Kernel Inception Distance (unbiased MMD² with the cubic polynomial kernel).
    Kid,
    /// k-NN manifold precision and recall.
    PrecisionRecall,
    /// MMD two-sample test (Gaussian kernel, permutation p-value).
    Mmd,
    /// Classifier accuracy on class-conditional samples and an Inception-Score-style score.
    Class,
}

impl QualityMetric {
    /// The name `--metric` takes.
    pub fn name(&self) -> &'static str {
        match self {
            QualityMetric::Fid => "fid",
            QualityMetric::Kid => "kid",
            QualityMetric::PrecisionRecall => "pr",
            QualityMetric::Mmd => "mmd",
            QualityMetric::Class => "class",
        }
    }

    /// True when the metric needs a feature network (MMD on 2-D points does not).
    pub fn needs_images(&self) -> bool {
        !matches!(self, QualityMetric::Mmd)
    }
}

/// What `--metric a,b,c` asks for: the likelihood and the sample-quality metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricSelection {
    /// Negative log-likelihood on a split.
    pub nll: bool,
    /// Sample-quality metrics, in a fixed order.
    pub quality: Vec<QualityMetric>,
}

impl MetricSelection {
    /// Parses a comma-separated list of [`METRICS`] names, or `all`.
    pub fn parse(list: &str) -> Result<Self> {
        let mut sel = MetricSelection::default();
        let want = |q: QualityMetric, sel: &mut MetricSelection| {
            if !sel.quality.contains(&q) {
                sel.quality.push(q);
            }
        };
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "nll" => sel.nll = true,
                "fid" => want(QualityMetric::Fid, &mut sel),
                "kid" => want(QualityMetric::Kid, &mut sel),
                "pr" | "precision-recall" => want(QualityMetric::PrecisionRecall, &mut sel),
                "mmd" => want(QualityMetric::Mmd, &mut sel),
                "class" | "is" => want(QualityMetric::Class, &mut sel),
                "all" => {
                    sel.nll = true;
                    for q in [
                        QualityMetric::Fid,
                        QualityMetric::Kid,
                        QualityMetric::PrecisionRecall,
                        QualityMetric::Mmd,
                        QualityMetric::Class,
                    ] {
                        want(q, &mut sel);
                    }
                }
                other => {
                    let mut valid = METRICS.to_vec();
                    valid.push("all");
                    return Err(Error::unknown("metric", other, &valid));
                }
            }
        }
        if !sel.nll && sel.quality.is_empty() {
            return Err(Error::invalid(
                "--metric",
                "no metric named; valid: nll, fid, kid, pr, mmd, class, all",
            ));
        }
        Ok(sel)
    }
}

/// Settings of [`evaluate_quality`].
#[derive(Clone, Debug)]
pub struct QualityOptions {
    /// Number of model samples (and of reference examples, at most the split's size).
    pub num_samples: usize,
    /// The held-out split the samples are compared with.
    pub reference_split: Split,
    /// Seed of sampling and of the metrics' randomness.
    pub seed: u64,
    /// Show the observation model's mean (true, what is usually shown for VAEs) or draw from it.
    pub mean: bool,
    /// Prior temperature.
    pub temperature: f64,
    /// KID: number of random subsets and their size.
    pub kid_subsets: usize,
    /// KID subset size (capped at the set sizes).
    pub kid_subset_size: usize,
    /// Precision / recall: the k of the k-NN radii.
    pub pr_k: usize,
    /// MMD test: number of permutations.
    pub mmd_permutations: usize,
    /// MMD test: examples per set (the test's cost grows with the square of this).
    pub mmd_points: usize,
    /// Images per forward pass of the model and the feature network.
    pub batch_size: usize,
    /// Diffusion models: the sampler (`None`: the model's default).
    pub sampler: Option<String>,
    /// Diffusion models: the number of sampler steps (`None`: the model's default).
    pub steps: Option<usize>,
}

impl Default for QualityOptions {
    fn default() -> Self {
        Self {
            num_samples: 10_000,
            reference_split: Split::Test,
            seed: 0,
            mean: true,
            temperature: 1.0,
            kid_subsets: 100,
            kid_subset_size: 1000,
            pr_k: 3,
            mmd_points: 1000,
            mmd_permutations: 500,
            batch_size: 500,
            sampler: None,
            steps: None,
        }
    }
}

/// Where the reference examples came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReferenceInfo {
    /// Split name.
    pub split: String,
    /// Number of examples used.
    pub n: usize,
}

/// Which feature network the image metrics used.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FeatureNetUse {
    /// Its directory.
    pub path: String,
    /// The data set it was trained on.
    pub data: String,
    /// Its test-split accuracy.
    pub test_accuracy: f64,
}

/// The MMD test as reported: the test and the space it ran in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MmdReport {
    /// The test result.
    #[serde(flatten)]
    pub test: MmdTest,
    /// `features` (images, in the feature network's space) or `points` (vector data as they are).
    pub space: String,
}

/// The metrics that compare two sets: FID / KID / precision-recall in the feature network's space
/// ("FID-MNIST" / "FID-shapes"), and the MMD two-sample test. Absent metrics were not asked for.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SetMetrics {
    /// Fréchet distance between Gaussian fits of the two feature sets.
    pub fid: Option<f64>,
    /// KID in the same space.
    pub kid: Option<Kid>,
    /// k-NN precision (of the first set) and recall (of the second) in the same space.
    pub precision_recall: Option<PrecisionRecall>,
    /// MMD two-sample test of the first set against the second.
    pub mmd: Option<MmdReport>,
}

/// Sample-quality results of one run (`eval-quality.json`). Absent metrics were not asked for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QualityReport {
    /// Training step of the evaluated weights.
    pub step: u64,
    /// Which weights (`ema` or `model`).
    pub weights: String,
    /// Number of model samples.
    pub num_samples: usize,
    /// Whether samples are observation-model means or draws.
    pub samples: String,
    /// The sampler asked for (diffusion models; `None`: the model's default).
    #[serde(default)]
    pub sampler: Option<String>,
    /// The number of sampler steps asked for (diffusion models; `None`: the model's default).
    #[serde(default)]
    pub sampler_steps: Option<usize>,
    /// The held-out data compared with.
    pub reference: ReferenceInfo,
    /// The feature network, for image data.
    pub feature_net: Option<FeatureNetUse>,
    /// FID, KID, precision / recall and the MMD test of the samples against the reference.
    #[serde(flatten)]
    pub sets: SetMetrics,
    /// Accuracy of the classifier on class-conditional samples (the class asked for = the label).
    pub class_accuracy: Option<ClassAccuracy>,
    /// Inception-Score-style score with the feature network's classifier.
    pub inception_score: Option<InceptionScore>,
}

/// Draws `n` samples from `model` in batches (the batch starting at sample `i` is seeded from
/// `Rng::stream(seed, i)`: the same seed and batch size give the same samples), with class
/// labels `0, 1, …, k−1, 0, …` for a class-conditional model. Returns the samples and the classes asked for.
fn draw_samples(
    model: &dyn Model,
    n: usize,
    opts: &QualityOptions,
) -> Result<(Vec<Tensor>, Option<Vec<u32>>)> {
    let classes = model.num_classes();
    let mut out = Vec::new();
    let mut wanted = classes.map(|_| Vec::with_capacity(n));
    let bs = opts.batch_size.max(1);
    let mut start = 0;
    while start < n {
        let m = bs.min(n - start);
        let mut so = SampleOptions::seeded(Rng::stream(opts.seed, start as u64).next_u64());
        so.mean = opts.mean;
        so.temperature = opts.temperature;
        so.sampler = opts.sampler.clone();
        so.steps = opts.steps;
        if let (Some(k), Some(w)) = (classes, wanted.as_mut()) {
            let labels: Vec<u32> = (start..start + m).map(|i| (i % k) as u32).collect();
            w.extend_from_slice(&labels);
            so.condition = Condition::Class(labels);
        }
        out.push(model.sample(m, &so)?);
        start += m;
    }
    Ok((out, wanted))
}

/// What the samples of `model` are, for the report: only models with an observation model (the VAE family)
/// show its mean; every other model's samples are draws whatever `mean` says.
pub fn samples_text(model: &dyn Model, mean: bool) -> &'static str {
    match (model.sample_abilities().observation_mean, mean) {
        (true, true) => "observation-model mean",
        (true, false) => "draws from the observation model",
        (false, _) => "draws (the model's samples)",
    }
}

/// Concatenates embeddings of several batches.
fn embed_all(net: &FeatureNet, batches: &[Tensor], batch_size: usize) -> Result<Embedding> {
    let mut all: Option<Embedding> = None;
    for b in batches {
        let e = net.embed(b, batch_size)?;
        match all.as_mut() {
            None => all = Some(e),
            Some(a) => {
                a.features.extend_from_slice(&e.features);
                a.probs.extend_from_slice(&e.probs);
                a.predicted.extend_from_slice(&e.predicted);
            }
        }
    }
    all.ok_or_else(|| Error::invalid("samples", "no samples drawn"))
}

/// Rows `0..n` of a row-major matrix with `dim` columns, evenly spaced over all rows when there are more.
fn spread_rows(x: &[f32], dim: usize, n: usize) -> Vec<f32> {
    let rows = x.len() / dim.max(1);
    if rows <= n {
        return x.to_vec();
    }
    (0..n)
        .flat_map(|i| {
            let r = i * rows / n;
            x[r * dim..(r + 1) * dim].iter().copied()
        })
        .collect()
}

/// Computes the asked sample-quality `metrics` of a loaded run against split `opts.reference_split` of its data.
/// Image data need a feature network (see [`crate::metrics::features`]), loaded from `features_dir` or else from
/// [`default_dir`] of the data set; vector data (2-D points) support only `mmd`, computed on the points
/// themselves. `progress` receives one line per stage.
pub fn evaluate_quality(
    run: &LoadedRun,
    metrics: &[QualityMetric],
    features_dir: Option<&Path>,
    data_dir: &Path,
    opts: &QualityOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<QualityReport> {
    if opts.num_samples < 2 {
        return Err(Error::invalid(
            "--num-samples",
            format!("{} is too few: use at least 2", opts.num_samples),
        ));
    }
    // refuse what the model would ignore (a draw from a model that always draws, a sampler it has not)
    check_sample_options(
        run.model.as_ref(),
        &SampleOptions {
            mean: opts.mean,
            sampler: opts.sampler.clone(),
            steps: opts.steps,
            ..SampleOptions::default()
        },
    )?;
    let reference = load_data(&run.config, opts.reference_split, data_dir)?;
    let n_ref = opts.num_samples.min(reference.len());
    let device = run.params.device().clone();
    let mut report = QualityReport {
        step: run.state.step,
        weights: run.weights.name().to_string(),
        num_samples: opts.num_samples,
        samples: samples_text(run.model.as_ref(), opts.mean).to_string(),
        sampler: opts.sampler.clone(),
        sampler_steps: opts.steps,
        reference: ReferenceInfo {
            split: opts.reference_split.name().to_string(),
            n: n_ref,
        },
        feature_net: None,
        sets: SetMetrics::default(),
        class_accuracy: None,
        inception_score: None,
    };
    if !reference.is_image() {
        if let Some(bad) = metrics.iter().find(|m| m.needs_images()) {
            return Err(Error::invalid(
                "--metric",
                format!(
                    "{} needs image data, but {} holds vectors; valid for this run: mmd",
                    bad.name(),
                    reference.name
                ),
            ));
        }
        let dim = reference.example_dim();
        let real = points(&reference, n_ref)?;
        progress(&format!("drawing {} samples", opts.num_samples));
        let (samples, _) = draw_samples(run.model.as_ref(), opts.num_samples, opts)?;
        let mut fake = Vec::with_capacity(opts.num_samples * dim);
        for s in &samples {
            fake.extend(s.flatten_all()?.to_vec1::<f32>()?);
        }
        report.sets = compare_features(&fake, &real, dim, metrics, "points", opts, progress)?;
        return Ok(report);
    }

    let (net, used) = load_features(features_dir, &reference.name, &device)?;
    report.feature_net = Some(used);
    progress(&format!("drawing {} samples", opts.num_samples));
    let (samples, wanted) = draw_samples(run.model.as_ref(), opts.num_samples, opts)?;
    let prep = &run.config.data.preprocessing;
    progress("embedding samples");
    let images: Vec<Tensor> = samples
        .iter()
        .map(|s| samples_to_images(s, prep))
        .collect::<Result<_>>()?;
    let fake = embed_all(&net, &images, opts.batch_size)?;
    progress(&format!(
        "embedding {n_ref} {} examples",
        opts.reference_split.name()
    ));
    let real = embed_dataset(&net, &reference, n_ref, opts.batch_size, &device)?;
    let dim = fake.dim;
    report.sets = compare_features(
        &fake.features,
        &real.features,
        dim,
        metrics,
        "features",
        opts,
        progress,
    )?;
    if metrics.contains(&QualityMetric::Class) {
        progress("classifier scores");
        let splits = 10.min(fake.len());
        report.inception_score = Some(inception_score(&fake.probs, fake.classes, splits)?);
        if let Some(w) = &wanted {
            report.class_accuracy = Some(class_accuracy(&fake.predicted, w, fake.classes)?);
        }
    }
    Ok(report)
}

/// Loads the feature network for image data set `data` from `dir` (default: [`default_dir`]), checking that it
/// was trained on that data set.
fn load_features(
    dir: Option<&Path>,
    data: &str,
    device: &Device,
) -> Result<(FeatureNet, FeatureNetUse)> {
    let path = dir.map_or_else(|| default_dir(data), Path::to_path_buf);
    let (net, info) = crate::metrics::features::load(&path, device)?;
    if info.data != data {
        return Err(Error::invalid(
            "--features",
            format!(
                "the feature network at {} was trained on {}, but the data are {data}; train one with `dgm metrics train-features --data {data}`",
                path.display(),
                info.data
            ),
        ));
    }
    let used = FeatureNetUse {
        path: path.display().to_string(),
        data: info.data.clone(),
        test_accuracy: info.test_accuracy,
    };
    Ok((net, used))
}

/// Embeds the first `n` images of `ds`, `batch_size` at a time.
fn embed_dataset(
    net: &FeatureNet,
    ds: &Dataset,
    n: usize,
    batch_size: usize,
    device: &Device,
) -> Result<Embedding> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + batch_size.max(1)).min(n);
        batches.push(dataset_images(&ds.slice(start, end), None, device)?);
        start = end;
    }
    embed_all(net, &batches, batch_size)
}

/// FID, KID, precision / recall and the MMD test (those of `metrics` that compare two sets) of `fake` against
/// `real`, both row-major with `dim` columns; `space` names what the rows are (`features` or `points`).
pub fn compare_features(
    fake: &[f32],
    real: &[f32],
    dim: usize,
    metrics: &[QualityMetric],
    space: &str,
    opts: &QualityOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<SetMetrics> {
    let mut out = SetMetrics::default();
    for m in metrics {
        match m {
            QualityMetric::Fid => {
                progress("FID");
                out.fid = Some(fid(fake, real, dim)?);
            }
            QualityMetric::Kid => {
                progress("KID");
                out.kid = Some(kid(
                    fake,
                    real,
                    dim,
                    opts.kid_subsets,
                    opts.kid_subset_size,
                    opts.seed,
                )?);
            }
            QualityMetric::PrecisionRecall => {
                progress("precision / recall");
                out.precision_recall = Some(precision_recall(real, fake, dim, opts.pr_k)?);
            }
            QualityMetric::Mmd => {
                progress(&format!("MMD two-sample test on {space}"));
                let n = opts.mmd_points;
                let test = mmd_test(
                    &spread_rows(fake, dim, n),
                    &spread_rows(real, dim, n),
                    dim,
                    opts.mmd_permutations,
                    opts.seed,
                )?;
                out.mmd = Some(MmdReport {
                    test,
                    space: space.to_string(),
                });
            }
            QualityMetric::Class => {}
        }
    }
    Ok(out)
}

/// Two data sets compared by [`compare_sets`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetComparison {
    /// Name of the first set.
    pub a: String,
    /// Name of the second set.
    pub b: String,
    /// Examples used from the first set.
    pub n_a: usize,
    /// Examples used from the second set.
    pub n_b: usize,
    /// The feature network, for image data.
    pub feature_net: Option<FeatureNetUse>,
    /// The metrics.
    #[serde(flatten)]
    pub sets: SetMetrics,
}

/// Compares two data sets of the same kind (e.g. MNIST test vs MNIST train, or vs an OOD set) with the two-set
/// `metrics`: in the feature space of `feature_data`'s network for images, on the values themselves for vectors.
/// Uses the first `opts.num_samples` examples of each. This gives the floor (data vs data) and ceiling (data vs
/// noise) that model numbers sit between.
#[allow(clippy::too_many_arguments)]
pub fn compare_sets(
    a: &Dataset,
    b: &Dataset,
    feature_data: &str,
    features_dir: Option<&Path>,
    metrics: &[QualityMetric],
    opts: &QualityOptions,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<SetComparison> {
    if a.example_shape != b.example_shape {
        return Err(Error::invalid(
            "data",
            format!(
                "mismatched example sizes: {} has {:?}, {} has {:?}",
                a.name, a.example_shape, b.name, b.example_shape
            ),
        ));
    }
    if let Some(bad) = metrics.iter().find(|m| **m == QualityMetric::Class) {
        return Err(Error::invalid(
            "--metric",
            format!(
                "{} scores model samples, not a data set; valid here: fid, kid, pr, mmd",
                bad.name()
            ),
        ));
    }
    let (n_a, n_b) = (opts.num_samples.min(a.len()), opts.num_samples.min(b.len()));
    if n_a < 2 || n_b < 2 {
        return Err(Error::invalid("data", "each set needs at least 2 examples"));
    }
    if !a.is_image() || !b.is_image() {
        if let Some(bad) = metrics.iter().find(|m| m.needs_images()) {
            return Err(Error::invalid(
                "--metric",
                format!(
                    "{} needs image data, but the sets hold vectors; valid for vectors: mmd",
                    bad.name()
                ),
            ));
        }
        let dim = a.example_dim();
        let sets = compare_features(
            &points(a, n_a)?,
            &points(b, n_b)?,
            dim,
            metrics,
            "points",
            opts,
            progress,
        )?;
        return Ok(SetComparison {
            a: a.name.clone(),
            b: b.name.clone(),
            n_a,
            n_b,
            feature_net: None,
            sets,
        });
    }
    let (net, used) = load_features(features_dir, feature_data, device)?;
    progress(&format!("embedding {n_a} + {n_b} images"));
    let ea = embed_dataset(&net, a, n_a, opts.batch_size, device)?;
    let eb = embed_dataset(&net, b, n_b, opts.batch_size, device)?;
    let sets = compare_features(
        &ea.features,
        &eb.features,
        ea.dim,
        metrics,
        "features",
        opts,
        progress,
    )?;
    Ok(SetComparison {
        a: a.name.clone(),
        b: b.name.clone(),
        n_a,
        n_b,
        feature_net: Some(used),
        sets,
    })
}

/// The first `n` examples of a vector data set as a row-major matrix.
fn points(ds: &Dataset, n: usize) -> Result<Vec<f32>> {
    match &ds.storage {
        crate::data::Storage::F32(v) => Ok(v[..n * ds.example_dim()].to_vec()),
        _ => Err(Error::invalid(
            "data",
            format!("{} holds images or tokens, not points", ds.name),
        )),
    }
}

/// −log p(x) of a class-conditional model with the class marginalised out under a uniform prior:
/// −log (1/k) Σ_y p(x | y), from `nll` evaluated with every example labelled y, for y = 0..k. OOD inputs have no
/// label, so every set (the in-distribution test data too) is scored this way. A lower bound on each log p(x | y)
/// (an ELBO) gives a lower bound on log p(x), so the kind of number is unchanged.
fn marginal_nll(
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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InDistribution {
    /// Data set name.
    pub data: String,
    /// Split scored.
    pub split: String,
    /// Examples scored.
    pub n: usize,
    /// Mean negative log-likelihood, nats.
    pub mean_nll_nats: f64,
    /// The same in bits/dim.
    pub mean_bpd: f64,
    /// Fraction of in-distribution test batches the typicality test flags (its false-alarm rate; ≈ α).
    pub typicality_flag_rate: f64,
}

/// The score used: which likelihood and what kind of number it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
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

/// The fitted typicality test.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TypicalityInfo {
    /// Examples per tested batch.
    pub batch_size: usize,
    /// Significance level.
    pub alpha: f64,
    /// Half-width of the typical set, nats.
    pub epsilon: f64,
    /// Entropy estimate Ĥ (mean training NLL), nats.
    pub entropy: f64,
}

/// Results for one OOD set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OodSetReport {
    /// Set name.
    pub name: String,
    /// Examples scored.
    pub n: usize,
    /// Mean negative log-likelihood, nats.
    pub mean_nll_nats: f64,
    /// The same in bits/dim.
    pub mean_bpd: f64,
    /// AUROC of the per-example score −log p(x) (OOD = positive; 0.5 = chance, < 0.5 = OOD looks *more* likely).
    pub auroc: f64,
    /// Area under precision-recall of the same score.
    pub aupr: f64,
    /// AUROC of the typicality statistic |mean NLL − Ĥ| over batches.
    pub typicality_auroc: f64,
    /// Fraction of this set's batches the typicality test flags.
    pub typicality_flag_rate: f64,
}

/// OOD detection results of one run (`eval-ood.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    pub typicality: TypicalityInfo,
    /// One entry per OOD set.
    pub sets: Vec<OodSetReport>,
    /// The per-example scores behind the numbers: the in-distribution test set first, then each OOD set
    /// (not written to `eval-ood.json`; `dgm eval ood --scores FILE` writes them as CSV).
    #[serde(skip)]
    pub scores: Vec<SetScores>,
}

/// Per-example anomaly scores of one set.
#[derive(Clone, Debug, Default)]
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
            "--limit",
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
            "--run",
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
                "--typicality-batch",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Storage;
    use crate::model::{LikelihoodKind, LikelihoodSpace};

    #[test]
    fn metric_lists_parse_with_clear_errors() -> Result<()> {
        let s = MetricSelection::parse("fid, kid,fid,mmd")?;
        assert!(!s.nll);
        assert_eq!(
            s.quality,
            vec![QualityMetric::Fid, QualityMetric::Kid, QualityMetric::Mmd]
        );
        let all = MetricSelection::parse("all")?;
        assert!(all.nll);
        assert_eq!(all.quality.len(), 5);
        let e = MetricSelection::parse("nll,fdi").unwrap_err().to_string();
        assert!(
            e.contains("fdi") && e.contains("kid") && e.contains("all"),
            "{e}"
        );
        assert!(MetricSelection::parse(" , ").is_err());
        Ok(())
    }

    #[test]
    fn spread_rows_keeps_whole_rows_evenly() {
        let x: Vec<f32> = (0..20).map(|v| v as f32).collect(); // 10 rows of 2
        assert_eq!(
            spread_rows(&x, 2, 5),
            vec![0., 1., 4., 5., 8., 9., 12., 13., 16., 17.]
        );
        assert_eq!(spread_rows(&x, 2, 50), x);
    }

    /// −log p(x) = −log ½ (p(x|0) + p(x|1)): with NLLs 1 and 3 nats, −log ½ (e⁻¹ + e⁻³) = 1.566 … by hand.
    #[test]
    fn marginal_nll_averages_the_class_likelihoods() -> Result<()> {
        let ds = Dataset {
            name: "t".into(),
            example_shape: vec![1],
            storage: Storage::F32(vec![0.0, 0.0, 0.0]),
            labels: None,
            num_classes: None,
            class_names: None,
            captions: None,
        };
        let nll = |d: &Dataset| -> Result<PerExampleNll> {
            let y = d.labels.as_ref().map_or(9, |l| l[0]);
            assert_eq!(d.len(), 2, "only the first n examples are scored");
            Ok(PerExampleNll {
                nats: vec![if y == 0 { 1.0 } else { 3.0 }, 5.0],
                kind: LikelihoodKind::LowerBound("ELBO".into()),
                space: LikelihoodSpace::Discrete,
            })
        };
        let r = marginal_nll(&ds, 2, 2, &nll)?;
        let want0 = -(0.5 * ((-1.0f64).exp() + (-3.0f64).exp())).ln();
        assert!(
            (r.nats[0] - want0).abs() < 1e-12,
            "{} vs {want0}",
            r.nats[0]
        );
        assert!((want0 - 1.566).abs() < 1e-3);
        assert!((r.nats[1] - 5.0).abs() < 1e-12); // equal per-class NLLs: the marginal is the same
        assert_eq!(r.kind, LikelihoodKind::LowerBound("ELBO".into()));
        Ok(())
    }
}
