//! Inverse problems on MNIST test digits with a trained diffusion model (issue 15 §7): inpainting (centre box,
//! bottom half, 70 % random pixels), super-resolution ×2 / ×4 and sparse-view CT at 4–32 views, each solver of
//! `dgm::pipelines` against the classical baselines (mean fill; nearest and bicubic up-sampling; FBP and CGLS),
//! scored by PSNR / SSIM against the truth, with the time per edit.
//!
//! The first N test digits, scaled to [−1, 1] as the model was trained (pixel/255 → 2·v − 1), are measured
//! without noise; one sample per digit, all digits in one batch. Scores are on the [0, 1] scale of the pixels
//! (outputs clipped), data range 1. The random-pixel mask is one draw (seed 0) shared by all digits.
//!   usage: control_mnist RUN [N_IMAGES] [STEPS] [TASKS] [SOLVERS] [DPS_SCALE]
//!   (defaults 100, 50, inpaint,sr,ct, repaint,project,dps, 5; the sampler is DDPM's ancestral one)

mod common;

use std::time::Instant;

use candle_core::{Device, Tensor};
use dgm::conditioning::Cond;
use dgm::data::DataSpec;
use dgm::metrics::restoration::{psnr, ssim};
use dgm::ops::{cgls, measure, Downsample, LinearOperator, Mask, Radon};
use dgm::pipelines::{solve, Dps, Guide, Pipeline, Project, RePaint};
use dgm::rng::Rng;

fn main() -> dgm::Result<()> {
    common::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(run_dir) = args.first() else {
        eprintln!("usage: control_mnist RUN [N_IMAGES] [STEPS] [TASKS] [SOLVERS]");
        std::process::exit(2);
    };
    let n: usize = args.get(1).map_or(100, |s| s.parse().expect("N_IMAGES"));
    let steps: usize = args.get(2).map_or(50, |s| s.parse().expect("STEPS"));
    let tasks = args
        .get(3)
        .map_or("inpaint,sr,ct".to_string(), |s| s.clone());
    let solvers = args
        .get(4)
        .map_or("repaint,project,dps".to_string(), |s| s.clone());
    let zeta: f64 = args.get(5).map_or(5.0, |s| s.parse().expect("DPS_SCALE"));
    let dev = Device::Cpu;
    let (loaded, x01, x) = common::run_and_test_images(run_dir, DataSpec::Mnist, n)?;
    let model = loaded
        .model
        .as_denoiser()
        .expect("checked by run_and_test_images");
    let n = x01.dim(0)?;
    let shape = [1usize, 28, 28];
    println!(
        "run {run_dir} ({}), first {n} MNIST test digits, one sample each, sampler ddpm, {steps} steps, noise-free measurements",
        model.info().name
    );
    println!(
        "{:<22} {:<16} {:>10} {:>8} {:>12}",
        "task", "method", "PSNR (dB)", "SSIM", "ms / image"
    );
    let truth: Vec<f32> = x01.flatten_all()?.to_vec1()?;
    let score = |rec: &Tensor| -> dgm::Result<(f64, f64)> {
        // from [−1, 1] to [0, 1], clipped
        let r: Vec<f32> = rec
            .affine(0.5, 0.5)?
            .clamp(0f32, 1f32)?
            .flatten_all()?
            .to_vec1()?;
        let (mut p, mut s) = (0.0, 0.0);
        for i in 0..n {
            let (a, b) = (&r[i * 784..(i + 1) * 784], &truth[i * 784..(i + 1) * 784]);
            p += psnr(a, b, shape, 1.0)?;
            s += ssim(a, b, shape, 1.0)?;
        }
        Ok((p / n as f64, s / n as f64))
    };
    let row = |task: &str, method: &str, rec: &Tensor, secs: f64| -> dgm::Result<()> {
        let (p, s) = score(rec)?;
        let ms = secs * 1e3 / n as f64;
        println!("{task:<22} {method:<16} {p:>10.2} {s:>8.3} {ms:>12.1}");
        Ok(())
    };
    let pipe = Pipeline::new(model, Cond::None, None)?;
    // every solver that applies, on measurement y of operator op
    let solve_all = |task: &str, op: &dyn LinearOperator, y: &Tensor| -> dgm::Result<()> {
        for solver in solvers.split(',') {
            let mut guide: Box<dyn Guide> = match solver {
                "repaint" if op.as_mask().is_some() => Box::new(RePaint::new(op, y, 0.0, 10, 5)?),
                "repaint" => continue,
                "project" => Box::new(Project::new(op, y, 0.0, 10, 10, 1)?),
                "dps" => Box::new(Dps::new(op, y, zeta)?),
                other => panic!("unknown solver {other}"),
            };
            let t = Instant::now();
            let out = solve(
                &pipe,
                guide.as_mut(),
                solver,
                n,
                Some("ddpm"),
                Some(steps),
                &mut Rng::new(1),
            )?;
            let label = match solver {
                "repaint" => "repaint j10 r5".to_string(),
                "project" => "project".to_string(),
                _ => format!("dps ζ={zeta}"),
            };
            row(task, &label, &out, t.elapsed().as_secs_f64())?;
        }
        Ok(())
    };
    if tasks.contains("inpaint") {
        let masks = [
            ("centre box 14×14", Mask::centre_box(&shape, 14, &dev)?),
            ("bottom half", Mask::bottom_half(&shape, &dev)?),
            (
                "70 % random pixels",
                Mask::random_pixels(&shape, 0.7, &mut Rng::new(0), &dev)?,
            ),
        ];
        for (name, mask) in &masks {
            let y = measure(mask, &x, 0.0, &mut Rng::new(0))?;
            // mean fill: each digit's missing pixels get the mean of its observed ones
            let t = Instant::now();
            let keep = mask.keep().broadcast_as(y.shape())?;
            let mean = (y.sum((1, 2, 3))? / mask.observed() as f64)?; // (n,)
            let fill = mean.reshape((n, 1, 1, 1))?.broadcast_as(y.shape())?;
            let filled = (&y + ((1.0 - &keep)? * fill)?)?;
            row(
                &format!("inpaint {name}"),
                "mean fill",
                &filled,
                t.elapsed().as_secs_f64(),
            )?;
            solve_all(&format!("inpaint {name}"), mask, &y)?;
        }
    }
    if tasks.contains("sr") {
        for f in [2usize, 4] {
            let op = Downsample::new(&shape, f)?;
            let y = op.apply(&x)?;
            let task = format!("super-resolution ×{f}");
            let t = Instant::now();
            let near = op.pseudo_inverse(&y)?.expect("nearest up-sampling");
            row(&task, "nearest (A⁺)", &near, t.elapsed().as_secs_f64())?;
            let t = Instant::now();
            let bic = bicubic(&y, 28)?;
            row(&task, "bicubic", &bic, t.elapsed().as_secs_f64())?;
            solve_all(&task, &op, &y)?;
        }
    }
    if tasks.contains("ct") {
        for v in [4usize, 8, 16, 32] {
            let op = Radon::new(&shape, v, &dev)?;
            let y = measure(&op, &x, 0.0, &mut Rng::new(0))?;
            let task = format!("CT {v} views");
            let t = Instant::now();
            let fbp = op.fbp(&y)?;
            row(&task, "FBP", &fbp, t.elapsed().as_secs_f64())?;
            let t = Instant::now();
            let ls = cgls(&op, &y, 30)?;
            row(&task, "CGLS 30", &ls, t.elapsed().as_secs_f64())?;
            solve_all(&task, &op, &y)?;
        }
    }
    Ok(())
}

/// Bicubic up-sampling (Catmull–Rom, the `image` crate's) of `(n, 1, s, s)` images in [−1, 1] to
/// `side × side`, in f32 (through [0, 1]: the crate clamps f32 pixels to that range).
fn bicubic(y: &Tensor, side: u32) -> dgm::Result<Tensor> {
    let (n, _, s, _) = y.dims4()?;
    let v: Vec<f32> = y.affine(0.5, 0.5)?.flatten_all()?.to_vec1()?;
    let mut out = Vec::with_capacity(n * (side * side) as usize);
    for i in 0..n {
        let img: image::ImageBuffer<image::Luma<f32>, Vec<f32>> = image::ImageBuffer::from_raw(
            s as u32,
            s as u32,
            v[i * s * s..(i + 1) * s * s].to_vec(),
        )
        .expect("buffer of the right size");
        let up = image::imageops::resize(&img, side, side, image::imageops::FilterType::CatmullRom);
        out.extend(up.into_raw());
    }
    let up = Tensor::from_vec(out, (n, 1, side as usize, side as usize), y.device())?;
    Ok(up.affine(2.0, -1.0)?)
}
