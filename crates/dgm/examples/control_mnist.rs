//! Inverse problems on MNIST test digits with a trained diffusion model (issue 15 §7): inpainting (centre box,
//! bottom half, 70 % random pixels), super-resolution ×2 / ×4 and sparse-view CT at 4–32 views, each solver of
//! `dgm::pipelines` against the classical baselines (mean fill; nearest and bicubic up-sampling; FBP and CGLS),
//! scored by PSNR / SSIM against the truth, with the time per edit.
//!
//! The first N test digits, scaled to [−1, 1] as the model was trained (pixel/255 → 2·v − 1), are measured
//! without noise; one sample per digit, all digits in one batch. Scores are on the [0, 1] scale of the pixels
//! (outputs clipped), data range 1. The random-pixel mask is one draw (seed 0) shared by all digits.
//!
//! With `FEATURES=DIR` (a feature network of `dgm metrics train-features --data mnist`) every row also gets
//! FID-MNIST and KID of its N outputs against the features of MNIST test digits N–4999 (disjoint from the N
//! digits edited, and from the same writers: the test set's second half comes from other ones), and a `truth`
//! row gives the floor: the N true digits against the same reference (FID is biased upwards at small N; KID
//! is not). With
//! `PIXELCNN=RUN` the bottom-half row gets PixelCNN's `edit complete` as a baseline: the PixelCNN models
//! binarized MNIST, so it sees the top half binarized (threshold 0.5) and its bottom half is binary; the row
//! scores the true grey top half joined to that bottom half.
//!   usage: [SAMPLER=ddpm] [FEATURES=DIR] [PIXELCNN=RUN] control_mnist RUN [N_IMAGES] [STEPS] [TASKS] [SOLVERS]
//!   [DPS_SCALE]   (defaults 100, 50, inpaint,sr,ct, repaint,project,dps, 5; the sampler is the ancestral one;
//!   SOLVERS = none runs the baselines only)

mod common;

use std::time::Instant;

use candle_core::{Device, Tensor};
use dgm::conditioning::Cond;
use dgm::data::DataSpec;
use dgm::metrics::features::{self, FeatureNet};
use dgm::metrics::quality::{fid, kid};
use dgm::metrics::restoration::{psnr, ssim};
use dgm::model::SampleOptions;
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
    let sampler = std::env::var("SAMPLER").unwrap_or_else(|_| "ddpm".to_string());
    println!(
        "run {run_dir} ({}), first {n} MNIST test digits, one sample each, sampler {sampler}, {steps} steps, noise-free measurements",
        model.info().name
    );
    // FID / KID against test digits N–4999, when a feature network is given
    let quality = match std::env::var("FEATURES") {
        Ok(dir) => {
            let (net, _) = features::load(std::path::Path::new(&dir), &dev)?;
            let test = dgm::data::load(
                &DataSpec::Mnist,
                dgm::data::Split::Test,
                &dgm::data::data_dir(None),
                &dgm::data::GeneratedSizes::default(),
            )?;
            let all01 = features::dataset_images(&test, None, &dev)?;
            // the first 5000 test digits come from other writers (NIST SD-3) than the last 5000 (SD-1):
            // the reference is the rest of the first half, the edited digits' own population
            if n >= 4000 {
                return Err(dgm::Error::invalid(
                    "N_IMAGES",
                    format!(
                        "{n}: with FEATURES at most 3999 (the reference is test digits N–4999)"
                    ),
                ));
            }
            let reference = net.embed(&all01.narrow(0, n, 5000 - n)?, 500)?.features;
            println!("FID-MNIST / KID: feature network {dir}, reference = MNIST test digits {n}–4999 (the edited digits' writers)");
            Some((net, reference))
        }
        Err(_) => None,
    };
    let fid_kid = |images01: &Tensor| -> dgm::Result<Option<(f64, f64)>> {
        let Some((net, reference)): &Option<(FeatureNet, Vec<f32>)> = &quality else {
            return Ok(None);
        };
        let f = net.embed(images01, 500)?;
        let d = fid(&f.features, reference, f.dim)?;
        let k = kid(&f.features, reference, f.dim, 100, 1000, 0)?;
        Ok(Some((d, k.mean)))
    };
    println!(
        "{:<28} {:<18} {:>10} {:>8} {:>9} {:>10} {:>12}",
        "task", "method", "PSNR (dB)", "SSIM", "FID", "KID×1000", "ms / image"
    );
    let truth: Vec<f32> = x01.flatten_all()?.to_vec1()?;
    let row = |task: &str, method: &str, rec: &Tensor, secs: f64| -> dgm::Result<()> {
        // from [−1, 1] to [0, 1], clipped
        let rec01 = rec.affine(0.5, 0.5)?.clamp(0f32, 1f32)?;
        let r: Vec<f32> = rec01.flatten_all()?.to_vec1()?;
        let (mut p, mut s) = (0.0, 0.0);
        for i in 0..n {
            let (a, b) = (&r[i * 784..(i + 1) * 784], &truth[i * 784..(i + 1) * 784]);
            p += psnr(a, b, shape, 1.0)?;
            s += ssim(a, b, shape, 1.0)?;
        }
        let (p, s) = (p / n as f64, s / n as f64);
        let (p, s) = if method == "truth" {
            ("–".to_string(), "–".to_string())
        } else {
            (format!("{p:.2}"), format!("{s:.3}"))
        };
        let ms = secs * 1e3 / n as f64;
        let (d, k) = match fid_kid(&rec01)? {
            Some((d, k)) => (format!("{d:.2}"), format!("{:.2}", k * 1e3)),
            None => ("–".to_string(), "–".to_string()),
        };
        println!("{task:<28} {method:<18} {p:>10} {s:>8} {d:>9} {k:>10} {ms:>12.1}");
        Ok(())
    };
    if quality.is_some() {
        row("(all tasks)", "truth", &x, 0.0)?;
    }
    let pipe = Pipeline::new(model, Cond::None, None)?;
    // every solver that applies, on measurement y of operator op
    let solve_all = |task: &str, op: &dyn LinearOperator, y: &Tensor| -> dgm::Result<()> {
        for solver in solvers.split(',') {
            let mut guide: Box<dyn Guide> = match solver {
                "repaint" if op.as_mask().is_some() => Box::new(RePaint::new(op, y, 0.0, 10, 5)?),
                "repaint" => continue,
                "project" => Box::new(Project::new(op, y, 0.0, 10, 10, 1)?),
                "dps" => Box::new(Dps::new(op, y, zeta)?),
                "none" => continue, // baselines only
                other => panic!("unknown solver {other}"),
            };
            let t = Instant::now();
            let out = solve(
                &pipe,
                guide.as_mut(),
                solver,
                n,
                Some(&sampler),
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
            if *name == "bottom half" {
                if let Ok(dir) = std::env::var("PIXELCNN") {
                    pixelcnn_bottom_half(&dir, &x01, &row)?;
                }
            }
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

/// PixelCNN's completion of the bottom 14 rows of the digits `x01` `(n, 1, 28, 28)` in [0, 1] from their
/// top 14 rows binarized at 0.5 (the run's evaluation preprocessing), one sample each (seed 1); scored as the
/// true grey top half above the sampled binary bottom half; first the control row: the true bottom half
/// binarized.
fn pixelcnn_bottom_half(
    dir: &str,
    x01: &Tensor,
    row: &dyn Fn(&str, &str, &Tensor, f64) -> dgm::Result<()>,
) -> dgm::Result<()> {
    let loaded = dgm::train::run::load(
        std::path::Path::new(dir),
        dgm::train::Weights::Ema,
        x01.device(),
    )?;
    let Some(model) = loaded.model.as_complete() else {
        return Err(dgm::Error::invalid(
            "PIXELCNN",
            format!("run {dir} cannot complete images"),
        ));
    };
    let binary = x01.ge(0.5)?.to_dtype(candle_core::DType::F32)?;
    let t = Instant::now();
    let done = model.complete(&binary, 14, &SampleOptions::seeded(1))?;
    let secs = t.elapsed().as_secs_f64();
    // the control: the true bottom half binarized, so that what binary pixels alone cost is visible
    let control = Tensor::cat(&[x01.narrow(2, 0, 14)?, binary.narrow(2, 14, 14)?], 2)?;
    row(
        "inpaint bottom half",
        "binarized truth",
        &control.affine(2.0, -1.0)?,
        0.0,
    )?;
    let joined = Tensor::cat(&[x01.narrow(2, 0, 14)?, done.narrow(2, 14, 14)?], 2)?;
    row(
        "inpaint bottom half",
        &format!("{} (complete)", loaded.config.model.name),
        &joined.affine(2.0, -1.0)?,
        secs,
    )
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
