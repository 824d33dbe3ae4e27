//! Two data sets compared with the two-set metrics: the floor and ceiling that model numbers sit between.

use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::{Error, Result};

use super::quality::*;
use super::QualityMetric;

/// Two data sets compared by [`compare_sets`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
            "metric",
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
                "metric",
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
pub(super) fn points(ds: &Dataset, n: usize) -> Result<Vec<f32>> {
    match &ds.storage {
        crate::data::Storage::F32(v) => Ok(v[..n * ds.example_dim()].to_vec()),
        _ => Err(Error::invalid(
            "data",
            format!("{} holds images or tokens, not points", ds.name),
        )),
    }
}
