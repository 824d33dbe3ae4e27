//! The classical baselines of sparse-view CT on MNIST test images (issue 15 §7): filtered back-projection and
//! least squares by CGLS, at several numbers of views, scored by PSNR and SSIM against the truth.
//!
//! Images are MNIST test digits as pixel / 255 in [0, 1]; the measurement is the noise-free (or, with
//! `--sigma`, noisy) sinogram of dgm's `Radon` operator; reconstructions are clipped to [0, 1] before scoring
//! (data range 1). Prints one row per (method, views).
//!   usage: ct_baselines [N_IMAGES] [VIEWS,…] [CGLS_ITERS] [SIGMA_Y]   (defaults 200 4,8,16,32 30 0)

mod common;

use std::time::Instant;

use candle_core::{Device, Tensor};
use dgm::data::{self, DataSpec, GeneratedSizes, Split};
use dgm::metrics::features::dataset_images;
use dgm::metrics::restoration::{psnr, ssim};
use dgm::ops::{cgls, measure, Radon};
use dgm::rng::Rng;

fn main() -> dgm::Result<()> {
    common::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().map_or(200, |s| s.parse().expect("N_IMAGES"));
    let views: Vec<usize> = args.get(1).map_or(vec![4, 8, 16, 32], |s| {
        s.split(',').map(|v| v.parse().expect("VIEWS")).collect()
    });
    let iters: usize = args.get(2).map_or(30, |s| s.parse().expect("CGLS_ITERS"));
    let sigma: f64 = args.get(3).map_or(0.0, |s| s.parse().expect("SIGMA_Y"));
    let dev = Device::Cpu;
    let dir = data::data_dir(None);
    let test = data::load(
        &DataSpec::Mnist,
        Split::Test,
        &dir,
        &GeneratedSizes::default(),
    )?;
    let x = dataset_images(&test, Some(n), &dev)?; // (n, 1, 28, 28) in [0, 1]
    let n = x.dim(0)?;
    println!("MNIST test images: first {n}; noise sigma_y = {sigma} (in [0, 1] units); CGLS: {iters} iterations from 0");
    println!(
        "{:<10} {:>5} {:>10} {:>8} {:>12}",
        "method", "views", "PSNR (dB)", "SSIM", "ms / image"
    );
    let truth: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let score = |rec: &Tensor| -> dgm::Result<(f64, f64)> {
        let r: Vec<f32> = rec.clamp(0f32, 1f32)?.flatten_all()?.to_vec1()?;
        let (mut p, mut s) = (0.0, 0.0);
        for i in 0..n {
            let (a, b) = (&r[i * 784..(i + 1) * 784], &truth[i * 784..(i + 1) * 784]);
            p += psnr(a, b, [1, 28, 28], 1.0)?;
            s += ssim(a, b, [1, 28, 28], 1.0)?;
        }
        Ok((p / n as f64, s / n as f64))
    };
    for &v in &views {
        let op = Radon::new(&[1, 28, 28], v, &dev)?;
        let y = measure(&op, &x, sigma, &mut Rng::new(0))?;
        let t = Instant::now();
        let fbp = op.fbp(&y)?;
        let ms_fbp = t.elapsed().as_secs_f64() * 1e3 / n as f64;
        let t = Instant::now();
        let ls = cgls(&op, &y, iters)?;
        let ms_ls = t.elapsed().as_secs_f64() * 1e3 / n as f64;
        for (name, rec, ms) in [("FBP", &fbp, ms_fbp), ("CGLS", &ls, ms_ls)] {
            let (p, s) = score(rec)?;
            println!("{name:<10} {v:>5} {p:>10.2} {s:>8.3} {ms:>12.2}");
        }
    }
    Ok(())
}
