//! Sample quality of a run: its samples against held-out data in a learned feature space (FID / KID /
//! precision-recall / classifier scores) or, for vector data, on the points themselves (MMD).

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Split};
use crate::metrics::features::{
    dataset_images, default_dir, samples_to_images, Embedding, FeatureNet,
};
use crate::metrics::json;
use crate::metrics::mmd::{mmd_test, MmdTest};
use crate::metrics::quality::{
    class_accuracy, class_histogram, fid, inception_score, kid, precision_recall, ClassAccuracy,
    InceptionScore, Kid, PrecisionRecall,
};
use crate::model::{check_sample_options, Condition, Model, SampleOptions};
use crate::rng::Rng;
use crate::train::run::{load_data, LoadedRun};
use crate::{Error, Result};

use super::compare::points;

use super::QualityMetric;

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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceInfo {
    /// Split name.
    pub split: String,
    /// Number of examples used.
    pub n: usize,
}

/// Which feature network the image metrics used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureNetUse {
    /// Its directory.
    pub path: String,
    /// The data set it was trained on.
    pub data: String,
    /// Its test-split accuracy.
    #[serde(default = "json::nan", deserialize_with = "json::number")]
    pub test_accuracy: f64,
}

/// The MMD test as reported: the test and the space it ran in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MmdReport {
    /// The test result.
    #[serde(flatten)]
    pub test: MmdTest,
    /// `features` (images, in the feature network's space) or `points` (vector data as they are).
    pub space: String,
}

/// The metrics that compare two sets: FID / KID / precision-recall in the feature network's space
/// ("FID-MNIST" / "FID-shapes"), and the MMD two-sample test. Absent metrics were not asked for.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
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

/// Sample-quality results of one run (`eval-quality.json`). Absent metrics were not asked for. Reads back the
/// files of earlier dgm versions (fields added since take their defaults) and a number written as `null` (NaN)
/// as NaN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// Training step of the evaluated weights.
    pub step: u64,
    /// Which weights (`ema` or `model`).
    pub weights: String,
    /// Number of model samples.
    pub num_samples: usize,
    /// Whether samples are observation-model means or draws (empty when a file lacks it).
    #[serde(default)]
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
    /// The fraction of samples the feature network's classifier assigns to each class (absent in files written
    /// before it was recorded).
    #[serde(default)]
    pub class_histogram: Option<Vec<f64>>,
}

/// The classes asked of `n` samples from a model with `k` classes: each class equally often (± 1), in an order
/// shuffled by `seed`, so that no structured subset of the samples is biased towards some classes: not the
/// MMD test's evenly spread one ([`spread_rows`]: every 10th of 10 000 cycling labels would all be class 0),
/// nor the Inception Score's contiguous splits (runs of one class would each hold one class).
pub(super) fn sample_classes(n: usize, k: usize, seed: u64) -> Vec<u32> {
    let mut labels: Vec<u32> = (0..n).map(|i| (i * k / n.max(1)) as u32).collect();
    Rng::named(seed, "metrics/sample-classes").shuffle(&mut labels);
    labels
}

/// Draws `n` samples from `model` in batches (the batch starting at sample `i` is seeded from
/// `Rng::stream(seed, i)`: the same seed and batch size give the same samples), with the class labels of
/// [`sample_classes`] for a class-conditional model, and the empty caption (the model's unconditional
/// distribution, which sample-quality metrics compare with the data) for a caption model. Returns the samples
/// and the classes asked for.
pub(super) fn draw_samples(
    model: &dyn Model,
    n: usize,
    opts: &QualityOptions,
) -> Result<(Vec<Tensor>, Option<Vec<u32>>)> {
    let classes = model.num_classes();
    let mut out = Vec::new();
    let all = classes.map(|k| sample_classes(n, k, opts.seed));
    let bs = opts.batch_size.max(1);
    let mut start = 0;
    while start < n {
        let m = bs.min(n - start);
        let mut so = SampleOptions::seeded(Rng::stream(opts.seed, start as u64).next_u64());
        so.mean = opts.mean;
        so.temperature = opts.temperature;
        so.sampler = opts.sampler.clone();
        so.steps = opts.steps;
        if let Some(all) = &all {
            so.condition = Condition::Class(all[start..start + m].to_vec());
        }
        if model.sample_abilities().captions {
            so.condition = Condition::Caption(vec![String::new()]);
        }
        out.push(model.sample(m, &so)?);
        start += m;
    }
    Ok((out, all))
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
pub(super) fn embed_all(
    net: &FeatureNet,
    batches: &[Tensor],
    batch_size: usize,
) -> Result<Embedding> {
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
pub(super) fn spread_rows(x: &[f32], dim: usize, n: usize) -> Vec<f32> {
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
            "num_samples",
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
        class_histogram: None,
    };
    if !reference.is_image() {
        if let Some(bad) = metrics.iter().find(|m| m.needs_images()) {
            return Err(Error::invalid(
                "metric",
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
        report.class_histogram = Some(class_histogram(&fake.predicted, fake.classes)?);
        if let Some(w) = &wanted {
            report.class_accuracy = Some(class_accuracy(&fake.predicted, w, fake.classes)?);
        }
    }
    Ok(report)
}

/// Loads the feature network for image data set `data` from `dir` (default: [`default_dir`]), checking that it
/// was trained on that data set.
pub(super) fn load_features(
    dir: Option<&Path>,
    data: &str,
    device: &Device,
) -> Result<(FeatureNet, FeatureNetUse)> {
    let path = dir.map_or_else(|| default_dir(data), Path::to_path_buf);
    let (net, info) = crate::metrics::features::load(&path, device)?;
    if info.data != data {
        return Err(Error::FeatureNet {
            path,
            msg: format!("trained on {}, but the data are {data}", info.data),
            data: Some(data.to_string()),
        });
    }
    let used = FeatureNetUse {
        path: path.display().to_string(),
        data: info.data.clone(),
        test_accuracy: info.test_accuracy,
    };
    Ok((net, used))
}

/// Embeds the first `n` images of `ds`, `batch_size` at a time.
pub(super) fn embed_dataset(
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
