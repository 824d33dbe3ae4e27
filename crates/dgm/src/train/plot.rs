//! The loss curve of a run, drawn from `metrics.jsonl` as an SVG (no fonts needed; opens in any browser).

use std::path::Path;

use plotters::prelude::*;

use crate::checkpoint::write_atomic;
use crate::train::log::MetricsLog;
use crate::{Error, Result};

/// Draws `loss` (and `val_loss` where logged) against `step` into `out` (SVG).
pub fn loss_curve(metrics: &Path, out: &Path, title: &str) -> Result<()> {
    let records = MetricsLog::read(metrics)?;
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
            format!("{} has no loss values to plot", metrics.display()),
        ));
    }
    let all: Vec<&(f64, f64)> = train.iter().chain(val.iter()).collect();
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max);
    // robust y-range: ignore the first 5 % of training (the initial transient) when it dominates
    let tail: Vec<f64> = all
        .iter()
        .filter(|p| p.0 >= 0.05 * x_max)
        .map(|p| p.1)
        .collect();
    let ys = if tail.is_empty() {
        all.iter().map(|p| p.1).collect()
    } else {
        tail
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
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
        let draw = |e: &dyn std::fmt::Display| Error::invalid("plot", e.to_string());
        root.fill(&WHITE).map_err(|e| draw(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, lo..hi)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .draw()
            .map_err(|e| draw(&e))?;
        chart
            .draw_series(LineSeries::new(
                train.iter().map(|&(x, y)| (x, y.clamp(lo, hi))),
                &BLUE,
            ))
            .map_err(|e| draw(&e))?
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        if !val.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    val.iter().map(|&(x, y)| (x, y.clamp(lo, hi))),
                    &RED,
                ))
                .map_err(|e| draw(&e))?
                .label("validation")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw(&e))?;
        root.present().map_err(|e| draw(&e))?;
    }
    write_atomic(out, svg.as_bytes())
}
