//! `dgm report`: one page comparing every run under a directory — a table of likelihoods, sample-quality and
//! out-of-distribution metrics, then each run's loss curve and latest samples.
//!
//! A run directory is any directory holding `config.toml` and a checkpoint (`checkpoint.json`, or the
//! `state.json` of runs written before it existed; searched to depth
//! [`MAX_DEPTH`]). Its files are read tolerantly: a missing file leaves its columns at "–", a malformed one
//! adds a note to the page, never an error. Files used:
//!
//! - `config.toml`: `model.name`, `data.name`, `data.preprocessing`, `train.steps`;
//! - `checkpoint.json` (else `state.json`): `step`, `finished`;
//! - `metrics.jsonl`: the loss curve (drawn by [`crate::train::plot::loss_curve_svg`]);
//! - `eval-<split>.json`: likelihood reports (`nll_nats`, `bits_per_dim`, `kind`, …);
//! - `eval-quality.json`: FID, KID, precision / recall, MMD, class accuracy, Inception-style score;
//! - `eval-ood.json`: OOD AUROC / AUPR per set;
//! - `samples/samples.png`, else the `samples/step-N.png` with the largest N.
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

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use crate::checkpoint::write_atomic;
use crate::data::Preprocessing;
use crate::train::plot::loss_curve_svg;
use crate::{Error, Result};

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
    /// Not recognised.
    Unknown,
}

impl KindClass {
    /// "exact", "bound", "estimate" or "?".
    pub fn label(&self) -> &'static str {
        match self {
            KindClass::Exact => "exact",
            KindClass::Bound => "bound",
            KindClass::BoundEstimate => "estimate of a bound",
            KindClass::Estimate => "estimate",
            KindClass::Unknown => "?",
        }
    }
}

/// One likelihood result from an `eval-<split>.json` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NllEntry {
    /// The split it was computed on (from the file name).
    pub split: String,
    /// The estimator (`elbo`, `iwae`, `exact`, …), when given.
    pub estimator: Option<String>,
    /// The short name of the kind: `ELBO`, `IWAE-10`, `exact`.
    pub kind: String,
    /// Exact, bound or estimate.
    pub kind_class: KindClass,
    /// `Discrete` or `Continuous`, when given.
    pub space: Option<String>,
    /// Mean negative log-likelihood per example, in nats.
    pub nll_nats: f64,
    /// Standard error of the mean, in nats.
    pub stderr_nats: Option<f64>,
    /// NLL in bits per dimension.
    pub bits_per_dim: Option<f64>,
    /// Number of examples.
    pub n: Option<u64>,
    /// The preprocessing description recorded by the evaluator.
    pub preprocessing: Option<String>,
}

/// The numbers of `eval-quality.json` (every one optional).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QualitySummary {
    /// Training step of the evaluated weights.
    pub step: Option<u64>,
    /// `ema` or `model`.
    pub weights: Option<String>,
    /// Number of generated samples.
    pub num_samples: Option<u64>,
    /// The reference split and size, e.g. "test, 10000".
    pub reference: Option<String>,
    /// The data set of the feature network (`mnist`, `shapes`).
    pub feature_data: Option<String>,
    /// The feature network's path.
    pub feature_path: Option<String>,
    /// The feature network's test accuracy.
    pub feature_accuracy: Option<f64>,
    /// Fréchet distance in feature space.
    pub fid: Option<f64>,
    /// Kernel inception distance: mean over subsets.
    pub kid_mean: Option<f64>,
    /// Kernel inception distance: standard deviation over subsets.
    pub kid_std: Option<f64>,
    /// Precision (fraction of samples inside the data manifold).
    pub precision: Option<f64>,
    /// Recall (fraction of data inside the sample manifold).
    pub recall: Option<f64>,
    /// The k of the k-NN manifolds.
    pub pr_k: Option<u64>,
    /// MMD² between samples and data.
    pub mmd2: Option<f64>,
    /// The permutation-test p-value of the MMD.
    pub mmd_p: Option<f64>,
    /// Overall accuracy of the classifier on conditional samples.
    pub class_accuracy: Option<f64>,
    /// Inception-style score (mean over splits).
    pub is_mean: Option<f64>,
    /// Inception-style score (standard deviation over splits).
    pub is_std: Option<f64>,
}

/// One OOD set of `eval-ood.json`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OodSetSummary {
    /// The set's name (`omniglot`, `noise`, …).
    pub name: String,
    /// Number of examples.
    pub n: Option<u64>,
    /// Mean bits/dim the model gives the set.
    pub mean_bpd: Option<f64>,
    /// AUROC of the likelihood score (in-distribution vs this set).
    pub auroc: Option<f64>,
    /// Area under the precision–recall curve.
    pub aupr: Option<f64>,
    /// AUROC of the batch typicality test.
    pub typicality_auroc: Option<f64>,
    /// Fraction of this set's batches flagged by the typicality test.
    pub typicality_flag_rate: Option<f64>,
}

/// The numbers of `eval-ood.json`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OodSummary {
    /// Training step of the evaluated weights.
    pub step: Option<u64>,
    /// The score, e.g. "elbo: lower bound (ELBO)".
    pub score: Option<String>,
    /// Mean bits/dim of the in-distribution test examples.
    pub in_distribution_bpd: Option<f64>,
    /// One entry per OOD set, in file order.
    pub sets: Vec<OodSetSummary>,
}

impl OodSummary {
    /// The mean AUROC over the sets that have one.
    pub fn mean_auroc(&self) -> Option<f64> {
        let v: Vec<f64> = self.sets.iter().filter_map(|s| s.auroc).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
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
    /// Every likelihood result, in split then file order.
    pub nll: Vec<NllEntry>,
    /// Sample-quality metrics, when evaluated.
    pub quality: Option<QualitySummary>,
    /// OOD detection, when evaluated.
    pub ood: Option<OodSummary>,
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
        let exact = in_split().any(|e| e.kind_class == KindClass::Exact);
        in_split()
            .filter(|e| !exact || e.kind_class == KindClass::Exact)
            .min_by(|a, b| a.nll_nats.total_cmp(&b.nll_nats))
    }
}

/// Finds every run under `root` (the root itself included) and reads its files; sorted by path.
/// Errors when `root` does not exist or holds no run.
pub fn collect_runs(root: &Path) -> Result<Vec<RunSummary>> {
    if !root.is_dir() {
        return Err(Error::invalid(
            "runs directory",
            format!("{} does not exist or is not a directory", root.display()),
        ));
    }
    let mut dirs = Vec::new();
    find_runs(root, 0, &mut dirs);
    if dirs.is_empty() {
        return Err(Error::invalid(
            "runs directory",
            format!(
                "no runs under {} (a run directory has config.toml and checkpoint.json or state.json)",
                root.display()
            ),
        ));
    }
    dirs.sort();
    Ok(dirs.iter().map(|d| read_run(root, d)).collect())
}

fn is_run(dir: &Path) -> bool {
    dir.join("config.toml").is_file()
        && (dir.join(crate::checkpoint::MANIFEST_FILE).is_file()
            || dir.join("state.json").is_file())
}

fn find_runs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if is_run(dir) {
        out.push(dir.to_path_buf());
        return;
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    subs.sort();
    for s in subs {
        find_runs(&s, depth + 1, out);
    }
}

fn run_name(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
        _ => {
            let abs = absolute(dir);
            abs.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string())
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// reading one run

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    get(v, path)?.as_f64().filter(|x| x.is_finite())
}

fn uint(v: &Value, path: &[&str]) -> Option<u64> {
    let x = get(v, path)?;
    x.as_u64().or_else(|| {
        x.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as u64)
    })
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    match get(v, path)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reads and parses a JSON file; `None` (with a note) when it is malformed, `None` silently when absent.
fn read_json(dir: &Path, file: &str, notes: &mut Vec<String>) -> Option<Value> {
    let path = dir.join(file);
    if !path.is_file() {
        return None;
    }
    let t = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            notes.push(format!("{file}: could not be read: {e}"));
            return None;
        }
    };
    match serde_json::from_str::<Value>(&t) {
        Ok(v) => Some(v),
        Err(e) => {
            notes.push(format!("{file}: not valid JSON ({e}); ignored"));
            None
        }
    }
}

fn read_run(root: &Path, dir: &Path) -> RunSummary {
    let mut r = RunSummary {
        dir: dir.to_path_buf(),
        name: run_name(root, dir),
        ..RunSummary::default()
    };
    read_config(dir, &mut r);
    // checkpoint.json holds the training state under "state"; state.json (older runs) is the state itself
    let (state_file, at): (&str, &[&str]) = if dir.join(crate::checkpoint::MANIFEST_FILE).is_file()
    {
        (crate::checkpoint::MANIFEST_FILE, &["state"])
    } else {
        ("state.json", &[])
    };
    if let Some(state) = read_json(dir, state_file, &mut r.notes) {
        let path = |k: &'static str| [at, &[k]].concat();
        r.step = uint(&state, &path("step"));
        r.finished = get(&state, &path("finished")).and_then(Value::as_bool);
    }
    read_likelihoods(dir, &mut r);
    if let Some(q) = read_json(dir, "eval-quality.json", &mut r.notes) {
        if q.is_object() {
            r.quality = Some(quality_summary(&q));
        } else {
            r.notes
                .push("eval-quality.json: expected a JSON object; ignored".into());
        }
    }
    if let Some(o) = read_json(dir, "eval-ood.json", &mut r.notes) {
        if o.is_object() {
            r.ood = Some(ood_summary(&o, &mut r.notes));
        } else {
            r.notes
                .push("eval-ood.json: expected a JSON object; ignored".into());
        }
    }
    for (what, step) in [
        ("eval-quality.json", r.quality.as_ref().and_then(|q| q.step)),
        ("eval-ood.json", r.ood.as_ref().and_then(|o| o.step)),
    ] {
        if let (Some(s), Some(now)) = (step, r.step) {
            if s != now {
                r.notes.push(format!(
                    "{what} was computed at step {s}; the run is now at step {now}"
                ));
            }
        }
    }
    read_metrics(dir, &mut r);
    r.sample = latest_sample(dir);
    r
}

fn read_config(dir: &Path, r: &mut RunSummary) {
    let t = match std::fs::read_to_string(dir.join("config.toml")) {
        Ok(t) => t,
        Err(e) => {
            r.notes.push(format!("config.toml: could not be read: {e}"));
            return;
        }
    };
    let cfg: toml::Table = match toml::from_str(&t) {
        Ok(c) => c,
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or("").to_string();
            r.notes
                .push(format!("config.toml: not valid TOML ({first}); ignored"));
            return;
        }
    };
    let s = |table: &str, key: &str| -> Option<String> {
        cfg.get(table)?.get(key)?.as_str().map(str::to_string)
    };
    r.model = s("model", "name");
    r.data = s("data", "name");
    r.total_steps = cfg
        .get("train")
        .and_then(|t| t.get("steps"))
        .and_then(|v| v.as_integer())
        .and_then(|v| u64::try_from(v).ok());
    if let Some(p) = cfg.get("data").and_then(|d| d.get("preprocessing")) {
        match p.clone().try_into::<Preprocessing>() {
            Ok(p) => r.preprocessing = Some(p.describe()),
            Err(_) => {
                let kind = p.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
                r.preprocessing = Some(kind.to_string());
                r.notes.push(format!(
                    "config.toml: data.preprocessing (kind '{kind}') is not one this dgm understands"
                ));
            }
        }
    }
}

/// The short name and class of a likelihood kind as serialised by dgm (`"Exact"`, `{"LowerBound":"ELBO"}`,
/// `{"BoundEstimate":{"bound":"ELBO","how":"…"}}`, `{"Estimate":"IWAE-10"}`), or as text
/// (`"lower bound (ELBO)"`, `"estimate of a lower bound (VLB), …"`).
fn parse_kind(v: Option<&Value>) -> (String, KindClass) {
    // the text between the first '(' and the next ')'
    let inner = |s: &str| -> Option<String> {
        let a = s.find('(')?;
        let b = a + s[a..].find(')')?;
        (b > a + 1).then(|| s[a + 1..b].to_string())
    };
    match v {
        Some(Value::String(s)) => {
            let l = s.to_ascii_lowercase();
            if l == "exact" {
                ("exact".into(), KindClass::Exact)
            } else if l.starts_with("estimate of a lower bound") {
                (
                    inner(s).unwrap_or_else(|| s.clone()),
                    KindClass::BoundEstimate,
                )
            } else if l.starts_with("lower bound") {
                (inner(s).unwrap_or_else(|| s.clone()), KindClass::Bound)
            } else if l.starts_with("estimate") {
                (inner(s).unwrap_or_else(|| s.clone()), KindClass::Estimate)
            } else {
                (s.clone(), KindClass::Unknown)
            }
        }
        Some(Value::Object(m)) if m.len() == 1 => {
            let Some((k, v)) = m.iter().next() else {
                return ("?".into(), KindClass::Unknown);
            };
            let name = v.as_str().map(str::to_string);
            match k.as_str() {
                "LowerBound" => (name.unwrap_or_else(|| "bound".into()), KindClass::Bound),
                "BoundEstimate" => (
                    text(v, &["bound"]).unwrap_or_else(|| "bound".into()),
                    KindClass::BoundEstimate,
                ),
                "Estimate" => (
                    name.unwrap_or_else(|| "estimate".into()),
                    KindClass::Estimate,
                ),
                "Exact" => ("exact".into(), KindClass::Exact),
                other => (other.to_string(), KindClass::Unknown),
            }
        }
        _ => ("?".into(), KindClass::Unknown),
    }
}

fn read_likelihoods(dir: &Path, r: &mut RunSummary) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(String, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter_map(|f| {
            let split = f.strip_prefix("eval-")?.strip_suffix(".json")?.to_string();
            // Only the splits `dgm eval` writes; other eval-*.json files (copies, OOD variants) are not NLLs.
            ["train", "validation", "test"]
                .contains(&split.as_str())
                .then_some((split, f))
        })
        .collect();
    let order = |s: &str| match s {
        "test" => 0,
        "validation" => 1,
        "train" => 2,
        _ => 3,
    };
    files.sort_by(|a, b| order(&a.0).cmp(&order(&b.0)).then(a.0.cmp(&b.0)));
    for (split, file) in files {
        let Some(v) = read_json(dir, &file, &mut r.notes) else {
            continue;
        };
        let Some(items) = v.as_array() else {
            r.notes
                .push(format!("{file}: expected a JSON array of results; ignored"));
            continue;
        };
        let mut skipped = 0;
        for item in items {
            let Some(nll) = num(item, &["nll_nats"]) else {
                skipped += 1;
                continue;
            };
            let (kind, kind_class) = parse_kind(item.get("kind"));
            r.nll.push(NllEntry {
                split: split.clone(),
                estimator: text(item, &["estimator"]),
                kind,
                kind_class,
                space: text(item, &["space"]),
                nll_nats: nll,
                stderr_nats: num(item, &["stderr_nats"]),
                bits_per_dim: num(item, &["bits_per_dim"]),
                n: uint(item, &["n"]),
                preprocessing: text(item, &["preprocessing"]),
            });
        }
        if skipped > 0 {
            r.notes.push(format!(
                "{file}: {skipped} result(s) without a numeric nll_nats were skipped"
            ));
        }
    }
}

fn quality_summary(q: &Value) -> QualitySummary {
    let reference = match (
        text(q, &["reference", "split"]),
        uint(q, &["reference", "n"]),
    ) {
        (Some(s), Some(n)) => Some(format!("{s}, {n} examples")),
        (Some(s), None) => Some(s),
        (None, Some(n)) => Some(format!("{n} examples")),
        (None, None) => None,
    };
    QualitySummary {
        step: uint(q, &["step"]),
        weights: text(q, &["weights"]),
        num_samples: uint(q, &["num_samples"]),
        reference,
        feature_data: text(q, &["feature_net", "data"]),
        feature_path: text(q, &["feature_net", "path"]),
        feature_accuracy: num(q, &["feature_net", "test_accuracy"]),
        fid: num(q, &["fid"]),
        kid_mean: num(q, &["kid", "mean"]),
        kid_std: num(q, &["kid", "std"]),
        precision: num(q, &["precision_recall", "precision"]),
        recall: num(q, &["precision_recall", "recall"]),
        pr_k: uint(q, &["precision_recall", "k"]),
        mmd2: num(q, &["mmd", "mmd2"]),
        mmd_p: num(q, &["mmd", "p_value"]),
        class_accuracy: num(q, &["class_accuracy", "overall"]),
        is_mean: num(q, &["inception_score", "mean"]),
        is_std: num(q, &["inception_score", "std"]),
    }
}

fn ood_summary(o: &Value, notes: &mut Vec<String>) -> OodSummary {
    let score = match (
        text(o, &["score", "estimator"]),
        text(o, &["score", "kind"]),
    ) {
        (Some(e), Some(k)) => Some(format!("{e}: {k}")),
        (a, b) => a.or(b),
    };
    let mut sets = Vec::new();
    match o.get("sets") {
        Some(Value::Array(items)) => {
            for (i, s) in items.iter().enumerate() {
                sets.push(OodSetSummary {
                    name: text(s, &["name"]).unwrap_or_else(|| format!("set {}", i + 1)),
                    n: uint(s, &["n"]),
                    mean_bpd: num(s, &["mean_bpd"]),
                    auroc: num(s, &["auroc"]),
                    aupr: num(s, &["aupr"]),
                    typicality_auroc: num(s, &["typicality_auroc"]),
                    typicality_flag_rate: num(s, &["typicality_flag_rate"]),
                });
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => notes.push("eval-ood.json: 'sets' is not an array; ignored".into()),
    }
    OodSummary {
        step: uint(o, &["step"]),
        score,
        in_distribution_bpd: num(o, &["in_distribution", "mean_bpd"]),
        sets,
    }
}

fn read_metrics(dir: &Path, r: &mut RunSummary) {
    let path = dir.join("metrics.jsonl");
    if !path.is_file() {
        return;
    }
    let t = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            r.notes
                .push(format!("metrics.jsonl: could not be read: {e}"));
            return;
        }
    };
    let mut records: Vec<Map<String, Value>> = Vec::new();
    let mut bad = 0usize;
    for line in t.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => records.push(m),
            _ => bad += 1,
        }
    }
    if bad > 0 {
        r.notes
            .push(format!("metrics.jsonl: {bad} malformed line(s) skipped"));
    }
    match loss_curve_svg(&records, &format!("{} — loss", r.name)) {
        Ok(svg) => r.loss_svg = Some(svg),
        Err(_) => r
            .notes
            .push("metrics.jsonl: no loss values to plot".to_string()),
    }
}

/// `samples/samples.png` if present, else the `samples/step-N.png` with the largest N.
fn latest_sample(dir: &Path) -> Option<PathBuf> {
    let samples = dir.join("samples");
    let main = samples.join("samples.png");
    if main.is_file() {
        return Some(main);
    }
    std::fs::read_dir(&samples)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let step: u64 = name
                .strip_prefix("step-")?
                .strip_suffix(".png")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .filter(|(_, p)| p.is_file())
        .max()
        .map(|(_, p)| p)
}

// ---------------------------------------------------------------------------------------------------------
// formatting

/// Standard base64 (RFC 4648 §4: alphabet `A–Z a–z 0–9 + /`, `=` padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Escapes `& < > " '` for HTML text and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn fixed(v: Option<f64>, decimals: usize) -> String {
    v.map_or(MISSING.into(), |v| format!("{v:.decimals$}"))
}

/// `v` with about `sig` significant digits (at most 6 decimals), for numbers of unknown scale (KID, MMD²).
fn sig(v: f64, sig: i32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor() as i32;
    let d = (sig - 1 - mag).clamp(0, 6) as usize;
    format!("{v:.d$}")
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or(MISSING.into(), |v| v.to_string())
}

fn steps_text(r: &RunSummary) -> String {
    match (r.step, r.total_steps, r.finished) {
        (None, _, _) => MISSING.into(),
        (Some(s), _, Some(true)) => s.to_string(),
        (Some(s), Some(t), _) if t != s => format!("{s} / {t}"),
        (Some(s), _, _) => s.to_string(),
    }
}

fn kind_text(e: &NllEntry) -> String {
    match e.kind_class {
        KindClass::Exact => "exact".into(),
        KindClass::Unknown => e.kind.clone(),
        c => format!("{} ({})", e.kind, c.label()),
    }
}

fn kid_text(q: Option<&QualitySummary>) -> String {
    match q.map(|q| (q.kid_mean, q.kid_std)) {
        Some((Some(m), Some(s))) => format!("{} ± {}", sig(m, 3), sig(s, 2)),
        Some((Some(m), None)) => sig(m, 3),
        _ => MISSING.into(),
    }
}

fn feature_tag(q: Option<&QualitySummary>) -> String {
    q.and_then(|q| q.feature_data.clone())
        .map_or(String::new(), |d| format!("-{d}"))
}

const LEGEND: &[&str] = &[
    "NLL: mean negative log-likelihood per example in nats on the split shown (test preferred), and the same in \
     bits per dimension. Each run shows its tightest number: an exact likelihood if the model has one, \
     otherwise the lowest of its bounds and estimates. ELBO is a bound (the true NLL is lower); IWAE-k is an \
     importance-weighted estimate that is a bound in expectation and tightens as k grows. Compare only runs \
     with the same data, preprocessing and space (discrete vs continuous).",
    "FID, KID, precision and recall are computed in the feature space of dgm's own feature network trained on \
     the data set (FID-mnist, FID-shapes): they are comparable between dgm runs that use the same feature \
     network, NOT with Inception-based FID / KID from papers. KID is the mean ± standard deviation over subsets.",
    "OOD AUROC: how well the model's likelihood score separates its own test data from each out-of-distribution \
     set (1 = perfect, 0.5 = chance, below 0.5 = the model finds the OOD set more likely): the mean over sets, \
     then each set.",
    "– : not measured (the file or the value is missing).",
];

// ---------------------------------------------------------------------------------------------------------
// HTML

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em;color:#222;line-height:1.4}\
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}\
h3{font-size:1em;margin-bottom:.3em}\
table{border-collapse:collapse;font-size:.9em}\
th,td{border-bottom:1px solid #e2e2e2;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f3f4f6}\
table.runs thead th{position:sticky;top:0;z-index:1;box-shadow:0 1px 0 #bbb}\
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
.sub{color:#666;font-size:.85em}\
.legend{color:#444;font-size:.88em;max-width:70em}.legend li{margin:.2em 0}\
.notes{color:#8a4b00;font-size:.9em}\
.figs{margin-top:1em;display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}\
.figs svg{max-width:100%;height:auto;border:1px solid #ddd}\
.figs img{max-width:100%;min-width:256px;image-rendering:pixelated;border:1px solid #ddd}\
code{font-size:.9em}";

/// Renders the report as one self-contained HTML page (inline CSS, SVG loss curves, images as data URIs).
/// Sample images are read from disk here; an unreadable one gives a note instead of a picture.
pub fn render_html(runs: &[RunSummary], title: &str) -> String {
    let e = html_escape;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        e(title),
        e(title)
    );
    let _ = writeln!(
        h,
        "<p class=\"sub\">{} run{} · dgm {}</p>",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        env!("CARGO_PKG_VERSION")
    );
    h.push_str("<ul class=\"legend\">\n");
    for l in LEGEND {
        let _ = writeln!(h, "<li>{}</li>", e(l));
    }
    h.push_str("</ul>\n");

    // the table
    h.push_str("<table class=\"runs\">\n<thead><tr>");
    for (name, numeric) in [
        ("run", false),
        ("model", false),
        ("data", false),
        ("preprocessing", false),
        ("steps", true),
        ("NLL (nats)", true),
        ("bits/dim", true),
        ("likelihood", false),
        ("FID", true),
        ("KID", true),
        ("precision", true),
        ("recall", true),
        ("OOD AUROC", true),
    ] {
        let class = if numeric { " class=\"num\"" } else { "" };
        let _ = write!(h, "<th{class}>{name}</th>");
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for (i, r) in runs.iter().enumerate() {
        let best = r.best_nll();
        let q = r.quality.as_ref();
        let tag = feature_tag(q);
        let td = |s: String| format!("<td>{}</td>", e(&s));
        let num = |s: String| format!("<td class=\"num\">{}</td>", e(&s));
        let _ = write!(h, "<tr><td><a href=\"#run-{i}\">{}</a></td>", e(&r.name));
        h.push_str(&td(fmt_opt(r.model.as_deref())));
        h.push_str(&td(fmt_opt(r.data.as_deref())));
        h.push_str(&td(fmt_opt(r.preprocessing.as_deref())));
        h.push_str(&num(steps_text(r)));
        h.push_str(&num(fixed(best.map(|b| b.nll_nats), 2)));
        h.push_str(&num(fixed(best.and_then(|b| b.bits_per_dim), 4)));
        match best {
            Some(b) => {
                let mut sub = vec![b.split.clone()];
                sub.extend(b.space.as_ref().map(|s| s.to_ascii_lowercase()));
                let _ = write!(
                    h,
                    "<td>{}<div class=\"sub\">{}</div></td>",
                    e(&kind_text(b)),
                    e(&sub.join(" · "))
                );
            }
            None => h.push_str(&td(MISSING.into())),
        }
        let with_tag = |v: String| {
            if v == MISSING || tag.is_empty() {
                format!("<td class=\"num\">{}</td>", e(&v))
            } else {
                format!(
                    "<td class=\"num\">{}<div class=\"sub\">{}</div></td>",
                    e(&v),
                    e(&format!("features{tag}"))
                )
            }
        };
        h.push_str(&with_tag(fixed(q.and_then(|q| q.fid), 2)));
        h.push_str(&with_tag(kid_text(q)));
        h.push_str(&num(fixed(q.and_then(|q| q.precision), 3)));
        h.push_str(&num(fixed(q.and_then(|q| q.recall), 3)));
        match r.ood.as_ref().filter(|o| !o.sets.is_empty()) {
            Some(o) => {
                let per: Vec<String> = o
                    .sets
                    .iter()
                    .map(|s| format!("{} {}", s.name, fixed(s.auroc, 3)))
                    .collect();
                let _ = write!(
                    h,
                    "<td class=\"num\">{} mean<div class=\"sub\">{}</div></td>",
                    e(&fixed(o.mean_auroc(), 3)),
                    per.iter().map(|p| e(p)).collect::<Vec<_>>().join("<br>")
                );
            }
            None => h.push_str(&num(MISSING.into())),
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");

    // one section per run
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            h,
            "<section id=\"run-{i}\">\n<h2>{}</h2>\n<p class=\"sub\"><code>{}</code></p>",
            e(&r.name),
            e(&r.dir.display().to_string())
        );
        let _ = writeln!(
            h,
            "<p>model <b>{}</b> · data <b>{}</b> · {} · step {}</p>",
            e(&fmt_opt(r.model.as_deref())),
            e(&fmt_opt(r.data.as_deref())),
            e(&fmt_opt(r.preprocessing.as_deref())),
            e(&steps_text(r))
                + if r.finished == Some(true) {
                    " (finished)"
                } else {
                    ""
                }
        );
        let mut notes = r.notes.clone();
        let image = r.sample.as_ref().and_then(|p| match std::fs::read(p) {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                notes.push(format!("{}: could not be read: {err}", p.display()));
                None
            }
        });
        if !notes.is_empty() {
            h.push_str("<ul class=\"notes\">\n");
            for n in &notes {
                let _ = writeln!(h, "<li>{}</li>", e(n));
            }
            h.push_str("</ul>\n");
        }
        html_details(&mut h, r);
        h.push_str("<div class=\"figs\">\n");
        if let Some(svg) = &r.loss_svg {
            h.push_str(svg);
        }
        if let (Some(bytes), Some(p)) = (&image, &r.sample) {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = writeln!(
                h,
                "<figure style=\"margin:0\"><img alt=\"samples of {}\" src=\"data:image/png;base64,{}\">\
                 <figcaption class=\"sub\">{}</figcaption></figure>",
                e(&r.name),
                base64(bytes),
                e(&format!("samples/{name}"))
            );
        }
        h.push_str("</div>\n</section>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn html_table(h: &mut String, header: &[&str], rows: &[Vec<String>], numeric: &[usize]) {
    h.push_str("<table>\n<thead><tr>");
    for (j, c) in header.iter().enumerate() {
        let class = if numeric.contains(&j) {
            " class=\"num\""
        } else {
            ""
        };
        let _ = write!(h, "<th{class}>{}</th>", html_escape(c));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        h.push_str("<tr>");
        for (j, c) in row.iter().enumerate() {
            let class = if numeric.contains(&j) {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(h, "<td{class}>{}</td>", html_escape(c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
}

const NLL_HEADER: &[&str] = &[
    "split",
    "estimator",
    "kind",
    "space",
    "NLL (nats)",
    "± s.e.",
    "bits/dim",
    "n",
];

fn nll_rows(r: &RunSummary) -> Vec<Vec<String>> {
    r.nll
        .iter()
        .map(|n| {
            vec![
                n.split.clone(),
                fmt_opt(n.estimator.as_deref()),
                kind_text(n),
                fmt_opt(n.space.as_deref()),
                format!("{:.2}", n.nll_nats),
                fixed(n.stderr_nats, 2),
                fixed(n.bits_per_dim, 4),
                fmt_opt(n.n),
            ]
        })
        .collect()
}

fn quality_rows(q: &QualitySummary) -> Vec<Vec<String>> {
    let tag = feature_tag(Some(q));
    let mut rows = vec![
        vec!["evaluated at step".into(), fmt_opt(q.step)],
        vec!["weights".into(), fmt_opt(q.weights.as_deref())],
        vec!["generated samples".into(), fmt_opt(q.num_samples)],
        vec!["reference data".into(), fmt_opt(q.reference.as_deref())],
    ];
    let net = match (&q.feature_data, &q.feature_path, q.feature_accuracy) {
        (None, None, None) => MISSING.to_string(),
        (d, p, a) => {
            let mut s = format!("dgm's {} classifier", d.as_deref().unwrap_or("?"));
            if let Some(p) = p {
                s += &format!(" at {p}");
            }
            if let Some(a) = a {
                s += &format!(" (test accuracy {:.2} %)", 100.0 * a);
            }
            s
        }
    };
    rows.push(vec!["feature network".into(), net]);
    rows.push(vec![format!("FID{tag}"), fixed(q.fid, 3)]);
    rows.push(vec![format!("KID{tag}"), kid_text(Some(q))]);
    let k = q.pr_k.map_or(String::new(), |k| format!(" (k = {k})"));
    rows.push(vec![format!("precision{k}"), fixed(q.precision, 4)]);
    rows.push(vec![format!("recall{k}"), fixed(q.recall, 4)]);
    rows.push(vec![
        "MMD² (p-value)".into(),
        match (q.mmd2, q.mmd_p) {
            (Some(m), Some(p)) => format!("{} (p = {p:.4})", sig(m, 3)),
            (Some(m), None) => sig(m, 3),
            _ => MISSING.into(),
        },
    ]);
    rows.push(vec![
        "class accuracy of samples".into(),
        fixed(q.class_accuracy, 4),
    ]);
    rows.push(vec![
        format!("IS{tag}"),
        match (q.is_mean, q.is_std) {
            (Some(m), Some(s)) => format!("{m:.3} ± {s:.3}"),
            (m, _) => fixed(m, 3),
        },
    ]);
    rows
}

const OOD_HEADER: &[&str] = &[
    "OOD set",
    "n",
    "mean bits/dim",
    "AUROC",
    "AUPR",
    "typicality AUROC",
    "typicality flags",
];

fn ood_rows(o: &OodSummary) -> Vec<Vec<String>> {
    o.sets
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                fmt_opt(s.n),
                fixed(s.mean_bpd, 4),
                fixed(s.auroc, 4),
                fixed(s.aupr, 4),
                fixed(s.typicality_auroc, 4),
                s.typicality_flag_rate
                    .map_or(MISSING.into(), |f| format!("{:.1} %", 100.0 * f)),
            ]
        })
        .collect()
}

fn ood_intro(o: &OodSummary) -> String {
    format!(
        "score {} · evaluated at step {} · in-distribution test data {} bits/dim",
        fmt_opt(o.score.as_deref()),
        fmt_opt(o.step),
        fixed(o.in_distribution_bpd, 4)
    )
}

fn html_details(h: &mut String, r: &RunSummary) {
    if !r.nll.is_empty() {
        h.push_str("<h3>Likelihood</h3>\n");
        html_table(h, NLL_HEADER, &nll_rows(r), &[4, 5, 6, 7]);
    }
    if let Some(q) = &r.quality {
        h.push_str("<h3>Sample quality</h3>\n");
        html_table(h, &["metric", "value"], &quality_rows(q), &[]);
    }
    if let Some(o) = &r.ood {
        h.push_str("<h3>Out-of-distribution detection</h3>\n");
        let _ = writeln!(h, "<p class=\"sub\">{}</p>", html_escape(&ood_intro(o)));
        if !o.sets.is_empty() {
            html_table(h, OOD_HEADER, &ood_rows(o), &[1, 2, 3, 4, 5, 6]);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Markdown

/// Escapes text for a Markdown table cell, heading or paragraph, so that what a user controls (run names,
/// paths, notes) shows as the text it is: `& < >` as HTML entities (Markdown passes raw HTML through), the
/// characters of links, images, emphasis and code (`\ [ ] ( ) ! * _ ` ~ #`) and the table separator `|`
/// backslash-escaped, newlines flattened.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '[' | ']' | '(' | ')' | '!' | '*' | '_' | '`' | '~' | '#' | '|' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn md_table(m: &mut String, header: &[&str], rows: &[Vec<String>], numeric: &[usize]) {
    let _ = writeln!(
        m,
        "| {} |",
        header.iter().map(|c| md(c)).collect::<Vec<_>>().join(" | ")
    );
    let align: Vec<&str> = (0..header.len())
        .map(|j| if numeric.contains(&j) { "---:" } else { "---" })
        .collect();
    let _ = writeln!(m, "|{}|", align.join("|"));
    for row in rows {
        let _ = writeln!(
            m,
            "| {} |",
            row.iter().map(|c| md(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    m.push('\n');
}

/// A path made absolute (against the current directory) with `.` and `..` resolved lexically.
fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `target` relative to the folder `base`, `/`-separated and percent-encoded for a Markdown link.
fn relative_link(target: &Path, base: &Path) -> String {
    let (t, b) = (absolute(target), absolute(base));
    let tc: Vec<Component> = t.components().collect();
    let bc: Vec<Component> = b.components().collect();
    let common = tc.iter().zip(&bc).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_string(); bc.len() - common];
    parts.extend(
        tc[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    let mut out = String::new();
    for byte in parts.join("/").bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Renders the report as Markdown, with images linked relative to `out_dir` (the folder of the `.md` file):
/// each run's `loss.svg` (written by training) and latest sample grid.
pub fn render_markdown(runs: &[RunSummary], out_dir: &Path) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "# dgm report\n\n{} run{} · dgm {}\n",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        env!("CARGO_PKG_VERSION")
    );
    for l in LEGEND {
        let _ = writeln!(m, "- {}", md(l));
    }
    m.push('\n');
    let header = [
        "run",
        "model",
        "data",
        "preprocessing",
        "steps",
        "NLL (nats)",
        "bits/dim",
        "likelihood",
        "FID",
        "KID",
        "precision",
        "recall",
        "OOD AUROC",
    ];
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let best = r.best_nll();
            let q = r.quality.as_ref();
            let tag = feature_tag(q);
            let tagged = |v: String| {
                if v == MISSING || tag.is_empty() {
                    v
                } else {
                    format!("{v} (features{tag})")
                }
            };
            vec![
                r.name.clone(),
                fmt_opt(r.model.as_deref()),
                fmt_opt(r.data.as_deref()),
                fmt_opt(r.preprocessing.as_deref()),
                steps_text(r),
                fixed(best.map(|b| b.nll_nats), 2),
                fixed(best.and_then(|b| b.bits_per_dim), 4),
                best.map_or(MISSING.into(), |b| format!("{}, {}", kind_text(b), b.split)),
                tagged(fixed(q.and_then(|q| q.fid), 2)),
                tagged(kid_text(q)),
                fixed(q.and_then(|q| q.precision), 3),
                fixed(q.and_then(|q| q.recall), 3),
                match r.ood.as_ref().filter(|o| !o.sets.is_empty()) {
                    Some(o) => {
                        let per: Vec<String> = o
                            .sets
                            .iter()
                            .map(|s| format!("{} {}", s.name, fixed(s.auroc, 3)))
                            .collect();
                        format!("{} mean ({})", fixed(o.mean_auroc(), 3), per.join(", "))
                    }
                    None => MISSING.into(),
                },
            ]
        })
        .collect();
    md_table(&mut m, &header, &rows, &[4, 5, 6, 8, 9, 10, 11, 12]);
    for r in runs {
        let _ = writeln!(m, "## {}\n", md(&r.name));
        let _ = writeln!(
            m,
            "model **{}** · data **{}** · {} · step {}{}\n",
            md(&fmt_opt(r.model.as_deref())),
            md(&fmt_opt(r.data.as_deref())),
            md(&fmt_opt(r.preprocessing.as_deref())),
            md(&steps_text(r)),
            if r.finished == Some(true) {
                " (finished)"
            } else {
                ""
            }
        );
        for n in &r.notes {
            let _ = writeln!(m, "- note: {}", md(n));
        }
        if !r.notes.is_empty() {
            m.push('\n');
        }
        if !r.nll.is_empty() {
            m.push_str("### Likelihood\n\n");
            md_table(&mut m, NLL_HEADER, &nll_rows(r), &[4, 5, 6, 7]);
        }
        if let Some(q) = &r.quality {
            m.push_str("### Sample quality\n\n");
            md_table(&mut m, &["metric", "value"], &quality_rows(q), &[]);
        }
        if let Some(o) = &r.ood {
            m.push_str("### Out-of-distribution detection\n\n");
            let _ = writeln!(m, "{}\n", md(&ood_intro(o)));
            if !o.sets.is_empty() {
                md_table(&mut m, OOD_HEADER, &ood_rows(o), &[1, 2, 3, 4, 5, 6]);
            }
        }
        let loss = r.dir.join("loss.svg");
        if loss.is_file() {
            let _ = writeln!(m, "![loss curve]({})\n", relative_link(&loss, out_dir));
        }
        if let Some(s) = &r.sample {
            let _ = writeln!(m, "![samples]({})\n", relative_link(s, out_dir));
        }
    }
    m
}

// ---------------------------------------------------------------------------------------------------------

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
                "--out",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let p = std::env::temp_dir()
                .join(format!("dgm-report-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const CONFIG: &str = r#"seed = 0
[model]
name = "vae"
latent_dim = 32
[data]
name = "shapes"
[data.preprocessing]
kind = "scale"
range = "zero_one"
dequantize = false
[train]
steps = 2000
"#;

    const EVAL_TEST: &str = r#"[
  {"estimator":"elbo","kind":{"LowerBound":"ELBO"},"space":"Discrete","nll_nats":2515.588,
   "stderr_nats":62.6,"bits_per_dim":1.18139,"n":500,"dims":3072,"preprocessing":"scaled"},
  {"estimator":"iwae","kind":{"Estimate":"IWAE-10"},"space":"Discrete","nll_nats":2509.884,
   "stderr_nats":62.6,"bits_per_dim":1.17871,"n":500,"dims":3072,"preprocessing":"scaled"}
]"#;

    const QUALITY: &str = r#"{"step":2000,"weights":"ema","num_samples":10000,
  "reference":{"split":"test","n":10000},
  "feature_net":{"path":"features/shapes","data":"shapes","test_accuracy":0.992},
  "fid":12.3456,"kid":{"mean":0.0123,"std":0.0011,"subsets":100,"subset_size":1000},
  "precision_recall":{"precision":0.7071,"recall":0.6049,"k":3},
  "mmd":null,"class_accuracy":null}"#;

    const OOD: &str = r#"{"step":2000,"weights":"ema",
  "in_distribution":{"data":"shapes","split":"test","n":2000,"mean_nll_nats":2500.0,"mean_bpd":1.17},
  "score":{"estimator":"elbo","kind":"lower bound (ELBO)"},
  "sets":[{"name":"omniglot","n":2000,"mean_bpd":2.5,"auroc":0.93,"aupr":0.9},
          {"name":"noise","n":2000,"mean_bpd":8.0,"auroc":0.99,"aupr":0.98}]}"#;

    /// A small valid PNG (2×2, written by the image crate).
    fn png() -> Vec<u8> {
        let img = image::RgbImage::from_pixel(2, 2, image::Rgb([10, 200, 30]));
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
        buf.into_inner()
    }

    /// root/full: every file; root/group/<b>: only config + state (+ a malformed eval-quality.json).
    fn fake_runs(t: &TempDir) -> PathBuf {
        let root = t.0.join("runs");
        let full = root.join("full");
        write(&full.join("config.toml"), CONFIG);
        write(
            &full.join("state.json"),
            r#"{"step": 2000, "finished": true}"#,
        );
        write(&full.join("eval-test.json"), EVAL_TEST);
        write(&full.join("eval-quality.json"), QUALITY);
        write(&full.join("eval-ood.json"), OOD);
        write(
            &full.join("metrics.jsonl"),
            "{\"step\":50,\"loss\":10.0}\n{\"step\":100,\"loss\":8.0,\"val_loss\":9.0}\nnot json\n",
        );
        std::fs::create_dir_all(full.join("samples")).unwrap();
        std::fs::write(full.join("samples/step-0000900.png"), b"old").unwrap();
        std::fs::write(full.join("samples/step-0001000.png"), png()).unwrap();
        let odd = root.join("group").join("<b>");
        write(
            &odd.join("config.toml"),
            "[model]\nname = \"pixelcnn\"\n[data]\nname = \"mnist\"\n",
        );
        // the current layout: the state is in checkpoint.json (`full` has the older state.json)
        write(
            &odd.join("checkpoint.json"),
            r#"{"format": 1, "state": {"step": 500, "finished": false}, "dir": "checkpoints/step-00000500", "files": {}}"#,
        );
        write(&odd.join("eval-quality.json"), "{\"fid\": 3.0,");
        // not a run: a folder without checkpoint.json or state.json
        write(&root.join("empty/config.toml"), CONFIG);
        root
    }

    #[test]
    fn base64_rfc4648_vectors() {
        // RFC 4648 §10
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc, "{plain:?}");
        }
        // the last two alphabet characters: 111110 111111 111110 111111 = 62 63 62 63
        assert_eq!(base64(&[0xFB, 0xFF, 0xBF]), "+/+/");
        assert_eq!(base64(&[0, 0, 0]), "AAAA");
    }

    #[test]
    fn collects_runs_and_picks_the_tightest_likelihood() {
        let t = TempDir::new("collect");
        let root = fake_runs(&t);
        let runs = collect_runs(&root).unwrap();
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["full", "group/<b>"]);
        let full = &runs[0];
        assert_eq!(full.model.as_deref(), Some("vae"));
        assert_eq!(full.data.as_deref(), Some("shapes"));
        assert_eq!(
            full.preprocessing.as_deref(),
            Some("scaled to [0, 1] (no dequantization)")
        );
        assert_eq!((full.step, full.finished), (Some(2000), Some(true)));
        assert_eq!(full.nll.len(), 2);
        let best = full.best_nll().unwrap();
        // IWAE-10 (2509.884) is below the ELBO (2515.588): the tighter bound is shown
        assert_eq!(best.kind, "IWAE-10");
        assert_eq!(best.kind_class, KindClass::Estimate);
        assert_eq!(full.nll[0].kind_class, KindClass::Bound);
        assert_eq!(
            full.ood.as_ref().unwrap().mean_auroc(),
            Some((0.93 + 0.99) / 2.0)
        );
        assert!(full.sample.as_ref().unwrap().ends_with("step-0001000.png"));
        assert!(full.loss_svg.is_some());
        assert!(full.notes.iter().any(|n| n.contains("1 malformed line")));
        let odd = &runs[1];
        assert!(odd.quality.is_none() && odd.nll.is_empty() && odd.loss_svg.is_none());
        assert!(
            odd.notes.iter().any(|n| n.contains("eval-quality.json")),
            "{:?}",
            odd.notes
        );
    }

    #[test]
    fn exact_likelihoods_win_and_test_split_is_preferred() {
        let e = |split: &str, kind: KindClass, nll: f64| NllEntry {
            split: split.into(),
            estimator: None,
            kind: kind.label().into(),
            kind_class: kind,
            space: None,
            nll_nats: nll,
            stderr_nats: None,
            bits_per_dim: None,
            n: None,
            preprocessing: None,
        };
        let r = RunSummary {
            nll: vec![
                e("validation", KindClass::Exact, 10.0),
                e("test", KindClass::Bound, 90.0),
                e("test", KindClass::Exact, 100.0),
                e("test", KindClass::Estimate, 95.0),
            ],
            ..RunSummary::default()
        };
        let b = r.best_nll().unwrap();
        assert_eq!((b.split.as_str(), b.nll_nats), ("test", 100.0));
        assert!(RunSummary::default().best_nll().is_none());
        assert_eq!(
            parse_kind(Some(&Value::String("lower bound (ELBO)".into()))),
            ("ELBO".to_string(), KindClass::Bound)
        );
        assert_eq!(
            parse_kind(Some(&Value::String("Exact".into()))).1,
            KindClass::Exact
        );
    }

    #[test]
    fn html_has_the_numbers_escapes_and_embeds() {
        let t = TempDir::new("html");
        let root = fake_runs(&t);
        let out = t.0.join("out/report.html");
        assert_eq!(write_report(&root, &out).unwrap(), 2);
        let h = std::fs::read_to_string(&out).unwrap();
        assert!(h.starts_with("<!DOCTYPE html>") && h.trim_end().ends_with("</html>"));
        for want in [
            "2509.88", // best NLL (IWAE-10), 2 decimals
            "1.1787",  // its bits/dim
            "IWAE-10 (estimate)",
            "12.35",           // FID
            "0.0123 ± 0.0011", // KID
            "0.707",           // precision
            "0.605",           // recall
            "0.960 mean",      // OOD AUROC mean of 0.93 and 0.99
            "omniglot 0.930",
            "features-shapes",
            "NOT with Inception",
            "position:sticky",
        ] {
            assert!(h.contains(want), "missing {want}");
        }
        // the run named <b> is escaped everywhere; the raw tag never appears
        assert!(h.contains("group/&lt;b&gt;"));
        assert!(!h.contains("<b>group") && !h.contains("/<b>"));
        // the second run has no metrics: its row shows dashes
        let row = h
            .lines()
            .find(|l| l.contains("group/&lt;b&gt;</a>"))
            .unwrap();
        assert!(row.matches(MISSING).count() >= 8, "{row}");
        assert!(row.contains("500"), "{row}");
        // the sample grid is embedded, byte for byte, and the loss curve inline
        let data = format!("data:image/png;base64,{}", base64(&png()));
        assert!(h.contains(&data));
        assert_eq!(h.matches("<svg").count(), 1);
        // the malformed file is a note, not a crash
        assert!(h.contains("eval-quality.json: not valid JSON"));
        // no external resources
        assert!(!h.contains("src=\"http") && !h.contains("href=\"http"));
    }

    #[test]
    fn markdown_links_are_relative_to_the_report() {
        let t = TempDir::new("md");
        let root = fake_runs(&t);
        std::fs::write(root.join("full/loss.svg"), "<svg/>").unwrap();
        let out = t.0.join("reports/week 1/report.md");
        assert_eq!(write_report(&root, &out).unwrap(), 2);
        let m = std::fs::read_to_string(&out).unwrap();
        assert!(
            m.contains("![samples](../../runs/full/samples/step-0001000.png)"),
            "{m}"
        );
        assert!(m.contains("![loss curve](../../runs/full/loss.svg)"));
        assert!(m.contains("| 2509.88 |") && m.contains("group/&lt;b&gt;"));
        assert!(m.contains("| – |"));
        // a link from the runs folder itself, and one with a space in the path
        assert_eq!(relative_link(&root.join("full/x.png"), &root), "full/x.png");
        assert_eq!(
            relative_link(&t.0.join("a b/x.png"), &t.0.join("c")),
            "../a%20b/x.png"
        );
    }

    #[test]
    fn errors_for_bad_extension_missing_root_and_no_runs() {
        let t = TempDir::new("err");
        let root = fake_runs(&t);
        let e = write_report(&root, &t.0.join("report.pdf"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--out") && e.contains(".html") && e.contains(".md"),
            "{e}"
        );
        let e = collect_runs(&t.0.join("nope")).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
        let empty = t.0.join("runs/empty");
        let e = collect_runs(&empty).unwrap_err().to_string();
        assert!(
            e.contains("no runs under") && e.contains("config.toml and checkpoint.json"),
            "{e}"
        );
        // a run directory given directly is its own single run, named by its folder
        let one = collect_runs(&root.join("full")).unwrap();
        assert_eq!((one.len(), one[0].name.as_str()), (1, "full"));
    }

    #[test]
    fn user_controlled_names_stay_text_in_markdown_and_html() {
        let t = TempDir::new("inject");
        let root = t.0.join("runs");
        let evil = root.join("[x](javascript:alert(1))");
        write(&evil.join("config.toml"), CONFIG);
        write(&evil.join("state.json"), r#"{"step": 1, "finished": true}"#);
        write(&evil.join("eval-test.json"), EVAL_TEST);
        let md_out = t.0.join("r.md");
        assert_eq!(write_report(&root, &md_out).unwrap(), 1);
        let m = std::fs::read_to_string(&md_out).unwrap();
        // the name is shown as its text, with every link character escaped: no live link
        assert!(m.contains(r"\[x\]\(javascript:alert\(1\)\)"), "{m}");
        assert!(!m.contains("[x](") && !m.contains("](javascript"), "{m}");
        let html_out = t.0.join("r.html");
        write_report(&root, &html_out).unwrap();
        let h = std::fs::read_to_string(&html_out).unwrap();
        assert!(h.contains("[x](javascript:alert(1))"));
        assert!(!h.contains("href=\"javascript") && !h.contains("src=\"javascript"));
        // every character that starts Markdown markup is escaped
        assert_eq!(
            md("*a* _b_ `c` ![i](u) <s> a|b #h ~x~ \\ &"),
            r"\*a\* \_b\_ \`c\` \!\[i\]\(u\) &lt;s&gt; a\|b \#h \~x\~ \\ &amp;"
        );
    }

    #[test]
    fn estimates_of_bounds_are_read_as_such() {
        let v: Value = serde_json::from_str(
            r#"{"BoundEstimate":{"bound":"VLB","how":"8 of its 999 KL terms (stratified, unbiased)"}}"#,
        )
        .unwrap();
        assert_eq!(
            parse_kind(Some(&v)),
            ("VLB".to_string(), KindClass::BoundEstimate)
        );
        let kind = crate::model::LikelihoodKind::bound_estimate("ELBO", "1 z sample per example");
        assert_eq!(
            parse_kind(Some(&serde_json::to_value(&kind).unwrap())),
            ("ELBO".to_string(), KindClass::BoundEstimate)
        );
        // as text (eval-ood.json's score kind), parentheses in the detail do not confuse the name
        assert_eq!(
            parse_kind(Some(&Value::String(
                "estimate of a lower bound (VLB), 8 of its 999 KL terms (stratified, unbiased)"
                    .into()
            ))),
            ("VLB".to_string(), KindClass::BoundEstimate)
        );
        assert_eq!(KindClass::BoundEstimate.label(), "estimate of a bound");
    }

    #[test]
    fn html_escape_covers_attributes() {
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
