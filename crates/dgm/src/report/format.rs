//! What both renderings share: number and text formatting, the legend, and the rows of the per-run tables.

use super::{KindClass, NllEntry, OodSummary, QualitySummary, RunSummary, MISSING};

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

pub(super) fn fixed(v: Option<f64>, decimals: usize) -> String {
    v.map_or(MISSING.into(), |v| format!("{v:.decimals$}"))
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

pub(super) fn kind_text(e: &NllEntry) -> String {
    match e.kind_class {
        KindClass::Exact => "exact".into(),
        KindClass::Unknown => e.kind.clone(),
        c => format!("{} ({})", e.kind, c.label()),
    }
}

pub(super) fn kid_text(q: Option<&QualitySummary>) -> String {
    match q.map(|q| (q.kid_mean, q.kid_std)) {
        Some((Some(m), Some(s))) => format!("{} ± {}", sig(m, 3), sig(s, 2)),
        Some((Some(m), None)) => sig(m, 3),
        _ => MISSING.into(),
    }
}

pub(super) fn feature_tag(q: Option<&QualitySummary>) -> String {
    q.and_then(|q| q.feature_data.clone())
        .map_or(String::new(), |d| format!("-{d}"))
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

pub(super) fn quality_rows(q: &QualitySummary) -> Vec<Vec<String>> {
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

pub(super) const OOD_HEADER: &[&str] = &[
    "OOD set",
    "n",
    "mean bits/dim",
    "AUROC",
    "AUPR",
    "typicality AUROC",
    "typicality flags",
];

pub(super) fn ood_rows(o: &OodSummary) -> Vec<Vec<String>> {
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

pub(super) fn ood_intro(o: &OodSummary) -> String {
    format!(
        "score {} · evaluated at step {} · in-distribution test data {} bits/dim",
        fmt_opt(o.score.as_deref()),
        fmt_opt(o.step),
        fixed(o.in_distribution_bpd, 4)
    )
}
