//! What both renderings share: number and text formatting, the legend, and the rows of the per-run tables.

use super::{KindClass, NllEntry, RunSummary, MISSING};
use crate::metrics::suite::{OodReport, QualityReport};
use crate::model::LikelihoodSpace;

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

/// `v` when it is a number: results hold NaN (written as `null`) where a value is unknown.
pub(super) fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// `v` with `decimals` decimals, or [`MISSING`] when it is absent or not finite.
pub(super) fn fixed(v: impl Into<Option<f64>>, decimals: usize) -> String {
    v.into()
        .and_then(finite)
        .map_or(MISSING.into(), |v| format!("{v:.decimals$}"))
}

/// `v` with about `sig` significant digits (at most 6 decimals), for numbers of unknown scale (KID, MMD²).
pub(super) fn sig(v: f64, sig: i32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor() as i32;
    let d = (sig - 1 - mag).clamp(0, 6) as usize;
    format!("{v:.d$}")
}

pub(super) fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or(MISSING.into(), |v| v.to_string())
}

pub(super) fn steps_text(r: &RunSummary) -> String {
    match (r.step, r.total_steps, r.finished) {
        (None, _, _) => MISSING.into(),
        (Some(s), _, Some(true)) => s.to_string(),
        (Some(s), Some(t), _) if t != s => format!("{s} / {t}"),
        (Some(s), _, _) => s.to_string(),
    }
}

/// The kind of a likelihood: `exact`, or its short name and class, e.g. `IWAE-10 (estimate)`.
pub(super) fn kind_text(e: &NllEntry) -> String {
    match e.kind_class() {
        KindClass::Exact => "exact".into(),
        c => format!("{} ({})", e.result.kind.short_name(), c.label()),
    }
}

/// The likelihood's space as written: `Discrete` or `Continuous`.
pub(super) fn space_text(s: LikelihoodSpace) -> &'static str {
    match s {
        LikelihoodSpace::Discrete => "Discrete",
        LikelihoodSpace::Continuous => "Continuous",
    }
}

pub(super) fn kid_text(q: Option<&QualityReport>) -> String {
    match q.and_then(|q| q.sets.kid.as_ref()) {
        Some(k) => match (finite(k.mean), finite(k.std)) {
            (Some(m), Some(s)) => format!("{} ± {}", sig(m, 3), sig(s, 2)),
            (Some(m), None) => sig(m, 3),
            _ => MISSING.into(),
        },
        None => MISSING.into(),
    }
}

pub(super) fn feature_tag(q: Option<&QualityReport>) -> String {
    q.and_then(|q| q.feature_net.as_ref())
        .map_or(String::new(), |f| format!("-{}", f.data))
}

/// FID, when evaluated.
pub(super) fn fid(q: Option<&QualityReport>) -> Option<f64> {
    q.and_then(|q| q.sets.fid)
}

/// Precision and recall, when evaluated.
pub(super) fn precision_recall(q: Option<&QualityReport>) -> (Option<f64>, Option<f64>) {
    match q.and_then(|q| q.sets.precision_recall.as_ref()) {
        Some(pr) => (Some(pr.precision), Some(pr.recall)),
        None => (None, None),
    }
}

/// The mean AUROC over the OOD sets that have one.
pub(super) fn mean_auroc(o: &OodReport) -> Option<f64> {
    let v: Vec<f64> = o.sets.iter().filter_map(|s| finite(s.auroc)).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

pub(super) const LEGEND: &[&str] = &[
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

pub(super) const NLL_HEADER: &[&str] = &[
    "split",
    "estimator",
    "kind",
    "space",
    "NLL (nats)",
    "± s.e.",
    "bits/dim",
    "n",
];

pub(super) fn nll_rows(r: &RunSummary) -> Vec<Vec<String>> {
    r.nll
        .iter()
        .map(|n| {
            vec![
                n.split.clone(),
                n.result.estimator.clone(),
                kind_text(n),
                space_text(n.result.space).into(),
                format!("{:.2}", n.result.nll_nats),
                fixed(n.result.stderr_nats, 2),
                fixed(n.result.bits_per_dim, 4),
                n.result.n.to_string(),
            ]
        })
        .collect()
}

pub(super) fn quality_rows(q: &QualityReport) -> Vec<Vec<String>> {
    let tag = feature_tag(Some(q));
    let mut rows = vec![
        vec!["evaluated at step".into(), q.step.to_string()],
        vec!["weights".into(), q.weights.clone()],
        vec!["generated samples".into(), q.num_samples.to_string()],
        vec![
            "reference data".into(),
            format!("{}, {} examples", q.reference.split, q.reference.n),
        ],
    ];
    let net = match &q.feature_net {
        None => MISSING.to_string(),
        Some(f) => {
            let mut s = format!("dgm's {} classifier at {}", f.data, f.path);
            if let Some(a) = finite(f.test_accuracy) {
                s += &format!(" (test accuracy {:.2} %)", 100.0 * a);
            }
            s
        }
    };
    rows.push(vec!["feature network".into(), net]);
    rows.push(vec![format!("FID{tag}"), fixed(q.sets.fid, 3)]);
    rows.push(vec![format!("KID{tag}"), kid_text(Some(q))]);
    let pr = q.sets.precision_recall.as_ref();
    let k = pr.map_or(String::new(), |pr| format!(" (k = {})", pr.k));
    rows.push(vec![
        format!("precision{k}"),
        fixed(pr.map(|pr| pr.precision), 4),
    ]);
    rows.push(vec![format!("recall{k}"), fixed(pr.map(|pr| pr.recall), 4)]);
    let mmd = q.sets.mmd.as_ref();
    rows.push(vec![
        "MMD² (p-value)".into(),
        match (
            mmd.and_then(|m| finite(m.test.mmd2)),
            mmd.and_then(|m| finite(m.test.p_value)),
        ) {
            (Some(m), Some(p)) => format!("{} (p = {p:.4})", sig(m, 3)),
            (Some(m), None) => sig(m, 3),
            _ => MISSING.into(),
        },
    ]);
    rows.push(vec![
        "class accuracy of samples".into(),
        fixed(q.class_accuracy.as_ref().map(|c| c.overall), 4),
    ]);
    let is = q.inception_score.as_ref();
    rows.push(vec![
        format!("IS{tag}"),
        match (
            is.and_then(|i| finite(i.mean)),
            is.and_then(|i| finite(i.std)),
        ) {
            (Some(m), Some(s)) => format!("{m:.3} ± {s:.3}"),
            (m, _) => fixed(m, 3),
        },
    ]);
    rows
}

pub(super) const OOD_HEADER: &[&str] = &[
    "OOD set",
    "n",
    "mean bits/dim",
    "AUROC",
    "AUPR",
    "typicality AUROC",
    "typicality flags",
];

pub(super) fn ood_rows(o: &OodReport) -> Vec<Vec<String>> {
    o.sets
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.n.to_string(),
                fixed(s.mean_bpd, 4),
                fixed(s.auroc, 4),
                fixed(s.aupr, 4),
                fixed(s.typicality_auroc, 4),
                finite(s.typicality_flag_rate)
                    .map_or(MISSING.into(), |f| format!("{:.1} %", 100.0 * f)),
            ]
        })
        .collect()
}

pub(super) fn ood_intro(o: &OodReport) -> String {
    format!(
        "score {}: {} · evaluated at step {} · in-distribution test data {} bits/dim",
        o.score.estimator,
        o.score.kind,
        o.step,
        fixed(o.in_distribution.mean_bpd, 4)
    )
}
