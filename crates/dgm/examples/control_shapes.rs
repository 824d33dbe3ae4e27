//! Colorization on `shapes` test images with a trained diffusion model (issue 15 §7): the grey (BT.601 luma)
//! image is the measurement; each solver's output is scored by the *colour accuracy* of the filled shape — the
//! mean RGB of the shape's pixels (those brighter than the black background in the truth), matched to the
//! nearest of the data set's eight colours, against the truth's colour — and by PSNR against the truth (of
//! the mean squared error over all images).
//! The grey input itself is the baseline (its nearest colour is a grey-level guess).
//!
//! Note the task is ambiguous by construction for some pairs: red (230, 25, 25) and blue (40, 80, 240) have the
//! same luma (86.4), so a perfect model can only guess between them.
//!   usage: control_shapes RUN [N_IMAGES] [STEPS] [SOLVERS] [DPS_SCALE] [RESAMPLE]
//!   (defaults 200, 50, project,dps,sdedit, 1, 1; RESAMPLE > 1 gives the projection DDNM's time travel, jump 10)

mod common;

use std::time::Instant;

use candle_core::{Device, Tensor};
use dgm::conditioning::Cond;
use dgm::data::shapes::COLOURS;
use dgm::data::DataSpec;
use dgm::metrics::restoration::psnr;
use dgm::ops::{measure, Grey, LinearOperator};
use dgm::pipelines::{sdedit, solve, Dps, Pipeline, Project};
use dgm::rng::Rng;

fn main() -> dgm::Result<()> {
    common::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(run_dir) = args.first() else {
        eprintln!("usage: control_shapes RUN [N_IMAGES] [STEPS] [SOLVERS]");
        std::process::exit(2);
    };
    let n: usize = args.get(1).map_or(200, |s| s.parse().expect("N_IMAGES"));
    let steps: usize = args.get(2).map_or(50, |s| s.parse().expect("STEPS"));
    let solvers = args
        .get(3)
        .map_or("project,dps,sdedit".to_string(), |s| s.clone());
    let zeta: f64 = args.get(4).map_or(1.0, |s| s.parse().expect("DPS_SCALE"));
    let resample: usize = args.get(5).map_or(1, |s| s.parse().expect("RESAMPLE"));
    let dev = Device::Cpu;
    let (loaded, x01, x) = common::run_and_test_images(run_dir, DataSpec::Shapes, n)?;
    let model = loaded
        .model
        .as_denoiser()
        .expect("checked by run_and_test_images");
    let n = x01.dim(0)?;
    let shape = [3usize, 32, 32];
    let truth: Vec<f32> = x01.flatten_all()?.to_vec1()?;
    let truth_colours: Vec<usize> = (0..n).map(|i| colour_of(&truth, &truth, i)).collect();
    println!(
        "run {run_dir} ({}), first {n} shapes test images, one sample each, sampler ddpm, {steps} steps, noise-free grey measurement",
        model.info().name
    );
    println!(
        "{:<22} {:>16} {:>10} {:>12}",
        "method", "colour accuracy", "PSNR (dB)", "ms / image"
    );
    let row = |method: &str, out: &Tensor, secs: f64| -> dgm::Result<()> {
        let v: Vec<f32> = out
            .affine(0.5, 0.5)?
            .clamp(0f32, 1f32)?
            .flatten_all()?
            .to_vec1()?;
        let right = (0..n)
            .filter(|&i| colour_of(&v, &truth, i) == truth_colours[i])
            .count();
        // PSNR of the mean squared error over all images (a mean of per-image PSNRs would be dominated by the
        // white shapes, whose grey input is already exact)
        let p = psnr(&v, &truth, [n * shape[0], shape[1], shape[2]], 1.0)?;
        let acc = 100.0 * right as f64 / n as f64;
        let ms = secs * 1e3 / n as f64;
        println!("{method:<22} {acc:>15.1}% {p:>10.2} {ms:>12.1}");
        Ok(())
    };
    let op = Grey::new(&shape, &dev)?;
    let y = measure(&op, &x, 0.0, &mut Rng::new(0))?; // (n, 1, 32, 32)
    let grey = y.repeat((1, 3, 1, 1))?;
    row("grey input", &grey, 0.0)?;
    let pipe = Pipeline::new(model, Cond::None, None)?;
    for solver in solvers.split(',') {
        let t = Instant::now();
        let mut rng = Rng::new(1);
        let (sampler, steps) = (Some("ddpm"), Some(steps));
        let (label, out) = match solver {
            "project" => {
                let mut g = Project::new(&op, &y, 0.0, 10, 10, resample)?;
                let o = solve(&pipe, &mut g, solver, n, sampler, steps, &mut rng)?;
                (format!("project r{resample}"), o)
            }
            "dps" => {
                let mut g = Dps::new(&op, &y, zeta)?;
                let o = solve(&pipe, &mut g, solver, n, sampler, steps, &mut rng)?;
                (format!("dps ζ={zeta}"), o)
            }
            "sdedit" => {
                let o = sdedit(&pipe, &grey, sampler, steps, 0.6, &mut rng)?;
                ("sdedit strength 0.6".to_string(), o)
            }
            other => panic!("unknown solver {other}"),
        };
        row(&label, &out, t.elapsed().as_secs_f64())?;
        // the grey of the output should match the measurement
        let resid = (op.apply(&out)? - &y)?
            .abs()?
            .mean_all()?
            .to_scalar::<f32>()?;
        println!("{:<22} mean |A x − y| = {resid:.4}", "");
    }
    Ok(())
}

/// The nearest of the data set's colours to the mean RGB (in [0, 1]) of image `i` of `img` over the shape's
/// pixels, which are those of the truth brighter than the black background.
fn colour_of(img: &[f32], truth: &[f32], i: usize) -> usize {
    let hw = 32 * 32;
    let base = i * 3 * hw;
    let mut sum = [0f64; 3];
    let mut count = 0usize;
    for p in 0..hw {
        let bright = (0..3)
            .map(|c| truth[base + c * hw + p])
            .fold(0f32, f32::max);
        if bright > 0.25 {
            for (c, s) in sum.iter_mut().enumerate() {
                *s += img[base + c * hw + p] as f64;
            }
            count += 1;
        }
    }
    let mean = sum.map(|s| 255.0 * s / count.max(1) as f64);
    (0..COLOURS.len())
        .min_by(|&a, &b| {
            let d = |k: usize| -> f64 {
                (0..3)
                    .map(|c| (mean[c] - COLOURS[k].1[c] as f64).powi(2))
                    .sum()
            };
            d(a).total_cmp(&d(b))
        })
        .unwrap_or(0)
}
