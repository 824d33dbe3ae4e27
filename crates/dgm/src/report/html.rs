//! The HTML rendering: one self-contained page (inline CSS, SVG loss curves, sample grids as data URIs).

use std::fmt::Write as _;

use super::format::{
    base64, feature_tag, fid, fixed, fmt_opt, html_escape, kid_text, kind_text, mean_auroc,
    nll_rows, ood_intro, ood_rows, precision_recall, quality_rows, space_text, steps_text, LEGEND,
    NLL_HEADER, OOD_HEADER,
};
use super::{RunSummary, MISSING};

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
        h.push_str(&num(fixed(best.map(|b| b.result.nll_nats), 2)));
        h.push_str(&num(fixed(best.map(|b| b.result.bits_per_dim), 4)));
        match best {
            Some(b) => {
                let mut sub = vec![b.split.clone()];
                sub.push(space_text(b.result.space).to_ascii_lowercase());
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
        h.push_str(&with_tag(fixed(fid(q), 2)));
        h.push_str(&with_tag(kid_text(q)));
        h.push_str(&num(fixed(precision_recall(q).0, 3)));
        h.push_str(&num(fixed(precision_recall(q).1, 3)));
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
                    e(&fixed(mean_auroc(o), 3)),
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
