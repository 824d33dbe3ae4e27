//! The evaluation suite of a trained run, as `dgm eval` runs it: sample quality in a learned feature space
//! (FID / KID / precision-recall / classifier scores), an MMD two-sample test of samples against held-out data,
//! and out-of-distribution detection by likelihood and by the typicality test. Each result is a serialisable
//! report that `dgm eval` writes into the run directory (`eval-quality.json`, `eval-ood.json`) and
//! [`crate::report`] reads back.
//!
//! Numbers computed with dgm's own feature network are "FID-MNIST" / "FID-shapes": comparable between dgm runs on
//! the same data and feature network, not to Inception FID.

mod compare;
mod ood;
mod quality;
#[cfg(test)]
mod tests;

use crate::{Error, Result};

pub use compare::{compare_sets, SetComparison};
pub use ood::{
    evaluate_ood, InDistribution, OodOptions, OodReport, OodSetReport, ScoreInfo, SetScores,
    TypicalityInfo,
};
pub use quality::{
    compare_features, evaluate_quality, samples_text, FeatureNetUse, MmdReport, QualityOptions,
    QualityReport, ReferenceInfo, SetMetrics,
};

/// Names accepted by `dgm eval --metric` (besides `all`).
pub const METRICS: &[&str] = &["nll", "ais", "accuracy", "fid", "kid", "pr", "mmd", "class"];

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
    /// The annealed-importance-sampling estimate of a decoder-based model's likelihood on a split (slow: never
    /// part of `all`).
    pub ais: bool,
    /// The test accuracy of a model that is also a classifier (JEM).
    pub accuracy: bool,
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
                "ais" => sel.ais = true,
                "accuracy" => sel.accuracy = true,
                "fid" => want(QualityMetric::Fid, &mut sel),
                "kid" => want(QualityMetric::Kid, &mut sel),
                "pr" | "precision-recall" => want(QualityMetric::PrecisionRecall, &mut sel),
                "mmd" => want(QualityMetric::Mmd, &mut sel),
                "class" | "is" => want(QualityMetric::Class, &mut sel),
                "all" => {
                    sel.nll = true;
                    sel.accuracy = true;
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
        if !sel.nll && !sel.ais && !sel.accuracy && sel.quality.is_empty() {
            return Err(Error::invalid(
                "metric",
                "no metric named; valid: nll, ais, accuracy, fid, kid, pr, mmd, class, all",
            ));
        }
        Ok(sel)
    }
}
