//! The Markdown rendering, with images linked relative to the `.md` file.

use std::fmt::Write as _;
use std::path::{Component, Path};

use super::format::{
    feature_tag, fid, fixed, fmt_opt, kid_text, kind_text, mean_auroc, nll_rows, ood_intro,
    ood_rows, precision_recall, quality_rows, steps_text, LEGEND, NLL_HEADER, OOD_HEADER,
};
use super::load::absolute;
use super::{RunSummary, MISSING};

/// Escapes text for a Markdown table cell, heading or paragraph, so that what a user controls (run names,
/// paths, notes) shows as the text it is: `& < >` as HTML entities (Markdown passes raw HTML through), the
/// characters of links, images, emphasis and code (`\ [ ] ( ) ! * _ ` ~ #`) and the table separator `|`
/// backslash-escaped, newlines flattened.
pub(super) fn md(s: &str) -> String {
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

/// `target` relative to the folder `base`, `/`-separated and percent-encoded for a Markdown link.
pub(super) fn relative_link(target: &Path, base: &Path) -> String {
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
                fixed(best.map(|b| b.result.nll_nats), 2),
                fixed(best.map(|b| b.result.bits_per_dim), 4),
                best.map_or(MISSING.into(), |b| format!("{}, {}", kind_text(b), b.split)),
                tagged(fixed(fid(q), 2)),
                tagged(kid_text(q)),
                fixed(precision_recall(q).0, 3),
                fixed(precision_recall(q).1, 3),
                match r.ood.as_ref().filter(|o| !o.sets.is_empty()) {
                    Some(o) => {
                        let per: Vec<String> = o
                            .sets
                            .iter()
                            .map(|s| format!("{} {}", s.name, fixed(s.auroc, 3)))
                            .collect();
                        format!("{} mean ({})", fixed(mean_auroc(o), 3), per.join(", "))
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
