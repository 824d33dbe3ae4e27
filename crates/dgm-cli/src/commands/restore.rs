//! `dgm edit inpaint | super-resolve | colorize | deblur | reconstruct | sdedit`: controlled generation with a
//! diffusion model (the library's `pipelines::edit`); this file parses the task's flags and renders the result.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use dgm::model::Condition;
use dgm::ops::Mask;
use dgm::pipelines::{edit, EditOptions, Input, Task};

use super::{and_list, device, load};
use crate::cli::EditCommand;

/// Runs one of the diffusion edit tasks.
pub(super) fn restore_cmd(cmd: EditCommand) -> Result<ExitCode> {
    let (a, spec, sinogram) = match cmd {
        EditCommand::Inpaint(x) => (x.common, Spec::Inpaint(x.mask), None),
        EditCommand::SuperResolve(x) => (
            x.common,
            Spec::Task(Task::SuperResolve { factor: x.factor }),
            None,
        ),
        EditCommand::Colorize(x) => (x, Spec::Task(Task::Colorize), None),
        EditCommand::Deblur(x) => (
            x.common,
            Spec::Task(Task::Deblur {
                sigma: x.blur_sigma,
            }),
            None,
        ),
        EditCommand::Reconstruct(x) => {
            if x.operator != "ct" {
                bail!(dgm::Error::unknown("operator", &x.operator, &["ct"]));
            }
            (
                x.common,
                Spec::Task(Task::Reconstruct { views: x.views }),
                x.sinogram,
            )
        }
        EditCommand::Sdedit(x) => (x, Spec::Task(Task::Sdedit), None),
        EditCommand::Complete(_) => unreachable!("dispatched to complete_cmd"),
    };
    let dev = device(&a.run.device)?;
    let run = load(&a.run)?;
    let Some(model) = run.model.as_denoiser() else {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' cannot run this edit; it takes {} runs",
            run.config.model.name,
            and_list(&dgm::models::names_with(|a| a.denoiser))
        )));
    };
    let shape = model.info().example_shape.to_vec();
    if shape.len() != 3 {
        bail!(dgm::Error::Unsupported(format!(
            "run {} does not model images (its examples have shape {shape:?})",
            a.run.run.display()
        )));
    }
    let task = match spec {
        Spec::Task(t) => t,
        Spec::Inpaint(m) => Task::Inpaint(mask(&m, &shape, a.seed, &dev)?),
    };
    let prep = &run.config.data.preprocessing;
    let truth = match &a.image {
        Some(p) => Some(dgm::image_io::load_image_tensor(p, &shape, prep, &dev)?),
        None => None,
    };
    let input = match (sinogram, &truth) {
        (Some(path), _) => Input::MeasurementFile(path),
        (None, Some(x)) => Input::Image(x.clone()),
        (None, None) => bail!(dgm::Error::invalid(
            "--image",
            "give the image to edit (reconstruct: or the measured --sinogram)"
        )),
    };
    let opts = EditOptions {
        solver: a.solver.clone(),
        sigma_y: a.sigma_y,
        sampler: a.sampler.clone(),
        steps: a.steps,
        n: a.n,
        seed: a.seed,
        strength: a.strength,
        jump: a.jump,
        resample: a.resample,
        dps_scale: a.dps_scale,
        cg_iters: a.cg_iters,
        condition: a
            .class
            .map_or(Condition::None, |k| Condition::Class(vec![k])),
        guidance: a.guidance,
        progress: Default::default(),
    };
    let out = edit(model, &task, input, &opts)?;
    if let Some(path) = &a.save_measurement {
        save_npy(&out.measurement.squeeze(0)?, path)?;
    }
    // the input image (when there is one and it is not the view), the measurement as an image, the samples
    let mut tiles = Vec::new();
    if let (Some(x), false) = (&truth, matches!(task, Task::Sdedit)) {
        tiles.push(x.clone());
    }
    tiles.push(out.view.to_dtype(DType::F32)?);
    tiles.push(out.samples.to_dtype(DType::F32)?);
    let grid = Tensor::cat(&tiles, 0)?;
    dgm::image_io::save_grid(&a.out, &grid, prep, grid.dim(0)?)?;
    let shown = match (&truth, matches!(task, Task::Sdedit)) {
        (Some(_), false) => "the input, the measurement",
        _ => "the input",
    };
    println!(
        "{} with {} ({}; sampler {}): wrote {shown} and {} samples to {}",
        task.name(),
        out.solver,
        out.operator,
        out.sampler,
        a.n,
        a.out.display()
    );
    if let (Some(x), false) = (&truth, matches!(task, Task::Sdedit)) {
        let (p, s) = scores(&out.samples, x, &shape, prep)?;
        println!(
            "against --image: PSNR {p:.2} dB, SSIM {s:.3} (mean over the {} samples)",
            a.n
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The task as parsed, before its mask is read.
enum Spec {
    Task(Task),
    Inpaint(String),
}

/// `--mask`: a mask image, `centre`, `bottom` or `random:P`.
fn mask(spec: &str, shape: &[usize], seed: u64, dev: &Device) -> Result<Mask> {
    let side = shape[1].min(shape[2]) / 2;
    Ok(match spec {
        "centre" | "center" => Mask::centre_box(shape, side.max(1), dev)?,
        "bottom" => Mask::bottom_half(shape, dev)?,
        s if s.starts_with("random:") => {
            let p: f64 = s["random:".len()..].parse().map_err(|_| {
                dgm::Error::invalid(
                    "mask",
                    format!("'{s}': random:P needs a fraction P in [0, 1], e.g. random:0.7"),
                )
            })?;
            Mask::random_pixels(shape, p, &mut dgm::rng::Rng::new(seed ^ 0x6d61736b), dev)?
        }
        path => {
            let p = Path::new(path);
            if !p.exists() {
                bail!(dgm::Error::invalid(
                    "mask",
                    format!("'{path}' is neither a mask file nor one of centre, bottom, random:P")
                ));
            }
            Mask::from_image(p, shape, dev)?
        }
    })
}

/// Writes `t` as .npy (f32); a failure names the path.
fn save_npy(t: &Tensor, path: &PathBuf) -> Result<()> {
    t.to_dtype(DType::F32)?
        .write_npy(path)
        .map_err(|e| anyhow::Error::new(dgm::Error::io(path, std::io::Error::other(e.to_string()))))
}

/// Mean PSNR and SSIM of the samples against the image, on the [0, 1] scale of 8-bit pixels.
fn scores(
    samples: &Tensor,
    truth: &Tensor,
    shape: &[usize],
    prep: &dgm::data::Preprocessing,
) -> Result<(f64, f64)> {
    let to01 = |t: &Tensor| -> Result<Vec<f32>> {
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(v.iter().map(|&x| prep.to_u8(x) as f32 / 255.0).collect())
    };
    let s = [shape[0], shape[1], shape[2]];
    let t = to01(truth)?;
    let n = samples.dim(0)?;
    let (mut p, mut q) = (0.0, 0.0);
    for i in 0..n {
        let e = to01(&samples.narrow(0, i, 1)?)?;
        p += dgm::metrics::restoration::psnr(&e, &t, s, 1.0)?;
        q += dgm::metrics::restoration::ssim(&e, &t, s, 1.0)?;
    }
    Ok((p / n as f64, q / n as f64))
}
