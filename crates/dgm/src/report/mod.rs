//! `dgm report`: one page comparing every run under a directory — a table of likelihoods, sample-quality and
//! out-of-distribution metrics, then each run's loss curve and latest samples.
//!
//! A run directory is any directory holding `config.toml` and a checkpoint (`checkpoint.json`, or the
//! `state.json` of runs written before it existed; searched to depth
//! [`MAX_DEPTH`]). Its files are read tolerantly: a missing file leaves its columns at "–", a malformed one
//! adds a one-line note naming it to the page, never an error. Files used:
//!
//! - `config.toml`: `model.name`, `data.name`, `data.preprocessing`, `train.steps`;
//! - `checkpoint.json` (else `state.json`): `step`, `finished`;
//! - `metrics.jsonl`: the loss curve (drawn by [`crate::train::plot::loss_curve_svg`]);
//! - `eval-<split>.json`: likelihood results, a list of [`NllReport`];
//! - `eval-quality.json`: FID, KID, precision / recall, MMD, class accuracy, Inception-style score, a
//!   [`QualityReport`];
//! - `eval-ood.json`: OOD AUROC / AUPR per set, an [`OodReport`];
//! - `samples/samples.png`, else the `samples/step-N.png` with the largest N.
//!
//! The evaluation results are read into the types `dgm eval` writes them from (one schema): those types read
//! the files of earlier dgm versions (fields added since take their defaults) and a number written as `null`
//! (serde_json's NaN) as NaN. The page shows a non-finite number as "–", like a missing one.
//!
//! **Which likelihood is shown.** A model may report several numbers for the same data: the ELBO (Kingma &
//! Welling, 2014), a lower bound `log p(x) ≥ E_q[log p(x, z) − log q(z|x)]`, and the importance-weighted
//! bound IWAE-k (Burda et al., 2016), `log p(x) ≥ E[log (1/k) Σᵢ p(x, zᵢ)/q(zᵢ|x)]`, which tightens as k
//! grows. Both bound the NLL from above, so the tightest is the lowest; an exact likelihood is preferred
//! whenever one is reported. The test split is preferred, then validation. Bits per dimension are
//! `NLL / (D · ln 2)` as computed by the evaluator on the run's preprocessing.
//!
//! **Feature-space metrics.** FID (Heusel et al., 2017: `‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{1/2})`), KID
//! (Bińkowski et al., 2018) and precision / recall (Kynkäänniemi et al., 2019) are computed by dgm in the
//! feature space of its own classifier for the data set, so "FID-MNIST" is comparable between dgm runs but
//! not with Inception-based FID from papers. The page says so in its legend.
//!
//! The HTML page is one self-contained file: CSS inline, loss curves as inline SVG, sample grids as base64
//! `data:` URIs (RFC 4648 §4, encoded by [`base64`]). Markdown output links the images relative to the
//! `.md` file instead. Everything read from files is HTML-escaped.

mod format;
mod html;
mod load;
mod markdown;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::checkpoint::write_atomic;
use crate::metrics::suite::{OodReport, QualityReport};
use crate::metrics::NllReport;
use crate::model::LikelihoodKind;
use crate::{Error, Result};

pub use format::{base64, html_escape};
pub use html::render_html;
pub use load::{collect_runs, is_run, latest_sample};
pub use markdown::render_markdown;

/// How deep below the root run directories are looked for (the root itself is depth 0).
pub const MAX_DEPTH: usize = 4;

/// Shown where a value is missing.
pub const MISSING: &str = "–";

/// What kind of number a likelihood is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindClass {
    /// The exact log-likelihood.
    Exact,
    /// A lower bound on log p(x) (an upper bound on the NLL), computed exactly.
    Bound,
    /// An unbiased Monte-Carlo estimate of a lower bound, e.g. the ELBO with one z sample per example or the
    /// diffusion VLB with one noise draw per term.
    BoundEstimate,
    /// A stochastic estimate, e.g. IWAE-k.
    Estimate,
}

impl KindClass {
    /// The class of a likelihood kind.
    pub fn of(kind: &LikelihoodKind) -> Self {
        match kind {
            LikelihoodKind::Exact => KindClass::Exact,
            LikelihoodKind::LowerBound(_) => KindClass::Bound,
            LikelihoodKind::BoundEstimate { .. } => KindClass::BoundEstimate,
            LikelihoodKind::Estimate(_) => KindClass::Estimate,
        }
    }

    /// "exact", "bound", "estimate of a bound" or "estimate".
    pub fn label(&self) -> &'static str {
        match self {
            KindClass::Exact => "exact",
            KindClass::Bound => "bound",
            KindClass::BoundEstimate => "estimate of a bound",
            KindClass::Estimate => "estimate",
        }
    }
}

/// One likelihood result: an entry of an `eval-<split>.json` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NllEntry {
    /// The split it was computed on (from the file name).
    pub split: String,
    /// The result, as `dgm eval` wrote it.
    pub result: NllReport,
}

impl NllEntry {
    /// Exact, bound or estimate.
    pub fn kind_class(&self) -> KindClass {
        KindClass::of(&self.result.kind)
    }
}

/// Everything the report shows about one run.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// The run directory.
    pub dir: PathBuf,
    /// Its path relative to the report root (`/`-separated), or its folder name when it is the root.
    pub name: String,
    /// `model.name`.
    pub model: Option<String>,
    /// `data.name`.
    pub data: Option<String>,
    /// The preprocessing, described in words.
    pub preprocessing: Option<String>,
    /// The step reached (`checkpoint.json` or `state.json`).
    pub step: Option<u64>,
    /// The planned number of steps (`train.steps`).
    pub total_steps: Option<u64>,
    /// Whether training finished.
    pub finished: Option<bool>,
    /// Every likelihood result with a number (`eval-<split>.json`), in split then file order.
    pub nll: Vec<NllEntry>,
    /// Sample-quality metrics (`eval-quality.json`), when evaluated.
    pub quality: Option<QualityReport>,
    /// OOD detection (`eval-ood.json`), when evaluated.
    pub ood: Option<OodReport>,
    /// The loss curve as SVG text, when `metrics.jsonl` has losses.
    pub loss_svg: Option<String>,
    /// The latest sample grid.
    pub sample: Option<PathBuf>,
    /// Problems met reading the run's files.
    pub notes: Vec<String>,
}

impl RunSummary {
    /// The tightest likelihood available: on the test split if there is one (else validation, else any),
    /// an exact value if reported, otherwise the lowest NLL among bounds and estimates.
    pub fn best_nll(&self) -> Option<&NllEntry> {
        let rank = |s: &str| match s {
            "test" => 0,
            "validation" | "val" => 1,
            _ => 2,
        };
        let split = self.nll.iter().map(|e| rank(&e.split)).min()?;
        let in_split = || self.nll.iter().filter(move |e| rank(&e.split) == split);
        let exact = in_split().any(|e| e.kind_class() == KindClass::Exact);
        in_split()
            .filter(|e| !exact || e.kind_class() == KindClass::Exact)
            .min_by(|a, b| a.result.nll_nats.total_cmp(&b.result.nll_nats))
    }
}

/// Collects the runs under `root` and writes the report to `out` — HTML for `.html` / `.htm`, Markdown for
/// `.md` — atomically, creating `out`'s folder if needed. Returns the number of runs.
pub fn write_report(root: &Path, out: &Path) -> Result<usize> {
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let html = match ext.as_str() {
        "html" | "htm" => true,
        "md" => false,
        _ => {
            return Err(Error::invalid(
                "out",
                format!(
                    "{}: unknown report format '{}'; use .html or .md",
                    out.display(),
                    ext
                ),
            ))
        }
    };
    let runs = collect_runs(root)?;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let text = if html {
        render_html(&runs, &format!("dgm report: {}", root.display()))
    } else {
        render_markdown(&runs, &dir)
    };
    write_atomic(out, text.as_bytes())?;
    Ok(runs.len())
}
