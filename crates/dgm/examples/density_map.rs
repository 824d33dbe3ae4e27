//! Density heat-map of a trained model of a 2-D toy beside its data (issue 16 §3): the left panel is the
//! histogram of the run's test points, the right panel the model's density p(x) (from `Density`, exact for
//! flows) on the same grid over [−HALF, HALF]², both on one colour scale relative to their own maximum.
//! Prints the midpoint-rule integral of p over the grid (≈ 1 when the grid holds the mass) and the test NLL.
//! SAMPLES and STEPS go to the likelihood's options: an energy-based model's AIS chains and annealing steps for
//! log Ẑ, whose error the integral then shows (it is Z_grid / Ẑ).
//!   usage: density_map RUN OUT.png [HALF] [CELLS] [SAMPLES] [STEPS]   (defaults 4, 200 cells per side, 1, the
//!   model's)

mod common;

use candle_core::{Device, Tensor};
use dgm::data::{self, GeneratedSizes, Split};
use dgm::model::LikelihoodOptions;

fn main() -> dgm::Result<()> {
    common::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(run_dir), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("usage: density_map RUN OUT.png [HALF] [CELLS] [SAMPLES] [STEPS]");
        std::process::exit(2);
    };
    let half: f64 = args.get(2).map_or(4.0, |s| s.parse().expect("HALF"));
    let cells: usize = args.get(3).map_or(200, |s| s.parse().expect("CELLS"));
    let samples: usize = args.get(4).map_or(1, |s| s.parse().expect("SAMPLES"));
    let steps: Option<usize> = args.get(5).map(|s| s.parse().expect("STEPS"));
    let dev = Device::Cpu;
    let run = dgm::train::run::load(
        std::path::Path::new(run_dir),
        dgm::train::Weights::Ema,
        &dev,
    )?;
    let Some(density) = run.model.as_density() else {
        return Err(dgm::Error::invalid("run", "the model has no density"));
    };
    let spec = data::DataSpec::parse(&run.config.data.name)?;
    let test = data::load(
        &spec,
        Split::Test,
        &data::data_dir(None),
        &GeneratedSizes::default(),
    )?;
    if test.example_shape != [2] {
        return Err(dgm::Error::invalid("run", "not a model of 2-D points"));
    }
    let h = 2.0 * half / cells as f64;
    // the model's density at the cell centres, row 0 at the top (largest y)
    let mut pts = Vec::with_capacity(2 * cells * cells);
    for r in 0..cells {
        for c in 0..cells {
            pts.push((-half + (c as f64 + 0.5) * h) as f32);
            pts.push((half - (r as f64 + 0.5) * h) as f32);
        }
    }
    let grid = dgm::data::Batch::new(Tensor::from_vec(pts, (cells * cells, 2), &dev)?);
    let opts = LikelihoodOptions {
        chunk: 4096,
        samples,
        steps,
        ..LikelihoodOptions::default()
    };
    let ll = density.log_likelihood(&grid, &opts)?;
    let p: Vec<f64> = ll.nats.iter().map(|l| l.exp()).collect();
    let mass: f64 = p.iter().sum::<f64>() * h * h;
    // the data's histogram on the same cells
    let all = test.batch(
        &(0..test.len()).collect::<Vec<_>>(),
        &run.config.data.preprocessing,
        &mut dgm::rng::Rng::new(0),
        &dev,
    )?;
    let v: Vec<f32> = all.x.flatten_all()?.to_vec1()?;
    let mut hist = vec![0f64; cells * cells];
    for xy in v.chunks_exact(2) {
        let c = ((xy[0] as f64 + half) / h).floor();
        let r = ((half - xy[1] as f64) / h).floor();
        if (0.0..cells as f64).contains(&c) && (0.0..cells as f64).contains(&r) {
            hist[r as usize * cells + c as usize] += 1.0;
        }
    }
    let nll = -density
        .log_likelihood(&all, &opts)?
        .nats
        .iter()
        .sum::<f64>()
        / test.len() as f64;
    // two panels with a 4-pixel gap, each scaled to its own maximum (an inferno-like ramp)
    let (w, gap) = (2 * cells + 4, 4);
    let mut img = image::RgbImage::from_pixel(w as u32, cells as u32, image::Rgb([255, 255, 255]));
    for (panel, vals) in [&hist, &p].into_iter().enumerate() {
        let max = vals.iter().cloned().fold(0.0, f64::max).max(1e-300);
        for r in 0..cells {
            for c in 0..cells {
                let t = (vals[r * cells + c] / max).clamp(0.0, 1.0).sqrt();
                let x = panel * (cells + gap) + c;
                img.put_pixel(x as u32, r as u32, ramp(t));
            }
        }
    }
    img.save(out)
        .map_err(|e| dgm::Error::invalid("OUT", format!("{out}: {e}")))?;
    println!(
        "run {run_dir} ({}), data {}: test NLL {nll:.4} nats ({} points, {}); ∫p over [−{half}, {half}]² = {mass:.4} ({cells}² cells); wrote {out}",
        run.config.model.name,
        run.config.data.name,
        test.len(),
        ll.kind,
    );
    Ok(())
}

/// Black → purple → orange → pale yellow for t ∈ [0, 1].
fn ramp(t: f64) -> image::Rgb<u8> {
    let stops = [
        (0.0, [0.0, 0.0, 4.0]),
        (0.35, [120.0, 28.0, 109.0]),
        (0.7, [237.0, 105.0, 37.0]),
        (1.0, [252.0, 255.0, 164.0]),
    ];
    let i = stops.iter().rposition(|s| s.0 <= t).unwrap_or(0).min(2);
    let (a, b) = (stops[i], stops[i + 1]);
    let f = (t - a.0) / (b.0 - a.0);
    let c = |k: usize| (a.1[k] + f * (b.1[k] - a.1[k])).round() as u8;
    image::Rgb([c(0), c(1), c(2)])
}
