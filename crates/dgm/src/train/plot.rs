//! The loss curve of a run, drawn from `metrics.jsonl` as a self-contained SVG that opens in any browser.
//!
//! Written by hand rather than with plotters: plotters needs a font file to lay out text, and dgm must not
//! depend on system fonts; SVG text is laid out by the viewer.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Map, Value};

use crate::checkpoint::write_atomic;
use crate::train::log::MetricsLog;
use crate::{Error, Result};

const W: f64 = 800.0;
const H: f64 = 480.0;
const L: f64 = 80.0;
const R: f64 = 20.0;
const T: f64 = 40.0;
const B: f64 = 50.0;

/// "Nice" tick values covering [lo, hi] (about 5 of them, steps of 1, 2 or 5 × 10ⁿ).
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).abs().max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e5 || v.abs() < 1e-3 {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Draws `loss` (blue) and `val_loss` (red, where logged) against `step` into `out` (SVG).
pub fn loss_curve(metrics: &Path, out: &Path, title: &str) -> Result<()> {
    let records = MetricsLog::read(metrics)?;
    let svg = loss_curve_svg(&records, title).map_err(|_| {
        Error::invalid(
            "metrics",
            format!("{} has no loss values to plot", metrics.display()),
        )
    })?;
    write_atomic(out, svg.as_bytes())
}

/// The SVG text of the loss curve of `records` (the lines of `metrics.jsonl`, see [`MetricsLog::read`]):
/// `loss` (blue) and `val_loss` (red, where logged) against `step`. The title is XML-escaped, so the
/// result can be written to a file or embedded inline in an HTML page. Errors when no record has a finite
/// `loss`.
pub fn loss_curve_svg(records: &[Map<String, Value>], title: &str) -> Result<String> {
    let series = |key: &str| -> Vec<(f64, f64)> {
        records
            .iter()
            .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    let train = series("loss");
    let val = series("val_loss");
    if train.is_empty() {
        return Err(Error::invalid(
            "metrics",
            "no record has a finite loss value to plot",
        ));
    }
    let x_max = train.iter().chain(&val).map(|p| p.0).fold(1.0, f64::max);
    // y-range from everything after the first 5 % of steps, so the initial transient does not flatten the curve
    let ys: Vec<f64> = train
        .iter()
        .chain(&val)
        .filter(|p| p.0 >= 0.05 * x_max)
        .map(|p| p.1)
        .collect();
    let ys = if ys.is_empty() {
        train.iter().map(|p| p.1).collect()
    } else {
        ys
    };
    let (mut lo, mut hi) = ys
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
    if hi <= lo {
        hi = lo + 1.0;
    }
    let pad = 0.05 * (hi - lo);
    lo -= pad;
    hi += pad;
    let px = |x: f64| L + x / x_max * (W - L - R);
    let py = |y: f64| T + (hi - y.clamp(lo, hi)) / (hi - lo) * (H - T - B);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="16">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    for t in ticks(lo, hi) {
        let y = py(t);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e4e4e4"/>"##,
            W - R
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            L - 6.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    for t in ticks(0.0, x_max) {
        let x = px(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{T}" y2="{}" stroke="#e4e4e4"/>"##,
            H - B
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            H - B + 16.0,
            fmt_tick(t)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        W - L - R,
        H - T - B
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
        (L + W - R) / 2.0,
        H - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">loss</text>"#,
        H / 2.0,
        H / 2.0
    );
    for (pts, colour, name, row) in [
        (&train, "#1f4fd1", "train", 0.0),
        (&val, "#d12f1f", "validation", 1.0),
    ] {
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        let (lx, ly) = (W - R - 110.0, T + 16.0 + 16.0 * row);
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/>"#,
            lx + 20.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{name}</text>"#,
            lx + 26.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    Ok(s)
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(83.2, 97.9);
        assert!(
            t.len() >= 3 && t.iter().all(|v| (83.2..=97.9).contains(v)),
            "{t:?}"
        );
        assert_eq!(fmt_tick(0.5), "0.5");
    }

    #[test]
    fn svg_string_has_both_curves_and_an_escaped_title() {
        let rec = |step: f64, loss: f64, val: Option<f64>| {
            let mut m = Map::new();
            m.insert("step".into(), step.into());
            m.insert("loss".into(), loss.into());
            if let Some(v) = val {
                m.insert("val_loss".into(), v.into());
            }
            m
        };
        let records = vec![
            rec(50.0, 10.0, None),
            rec(100.0, 8.0, Some(9.0)),
            rec(150.0, 7.0, None),
        ];
        let svg = loss_curve_svg(&records, "a <b> & c").unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt;b&gt; &amp; c") && !svg.contains("<b>"));
        // the train polyline has one point per record with a loss
        let train = svg
            .lines()
            .find(|l| l.contains("#1f4fd1") && l.contains("polyline"))
            .unwrap();
        assert_eq!(
            train.split_whitespace().filter(|t| t.contains(',')).count(),
            3
        );
        assert!(loss_curve_svg(&[Map::new()], "t").is_err());
    }
}
