//! `dgm edit complete`: fills in the bottom rows of an image from its top rows.

use std::process::ExitCode;

use anyhow::{bail, Result};
use candle_core::Tensor;
use dgm::data::{self, Dataset, Split};
use dgm::model::{Condition, SampleOptions};
use dgm::train::{run, RunConfig};

use super::{and_list, device, load};
use crate::cli::CompleteArgs;

pub(super) fn complete_cmd(a: CompleteArgs) -> Result<ExitCode> {
    if a.n == 0 {
        bail!(dgm::Error::invalid("-n", "must be at least 1"));
    }
    let run = load(&a.run)?;
    let Some(model) = run.model.as_complete() else {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' cannot complete images; `dgm edit complete` takes {} runs",
            run.config.model.name,
            and_list(&dgm::models::names_with(|a| a.complete))
        )));
    };
    let shape = match image_shape(&run.config) {
        Ok(s) => s,
        Err(_) => run::load_data(&run.config, Split::Test, &data::data_dir(None))?.example_shape,
    };
    let &[c, h, w] = shape.as_slice() else {
        bail!(dgm::Error::Unsupported(format!(
            "run {} does not model images",
            a.run.run.display()
        )));
    };
    if a.rows > h {
        bail!(dgm::Error::invalid(
            "--rows",
            format!("{} is more than the image's {h} rows", a.rows)
        ));
    }
    match (a.class, model.num_classes()) {
        (Some(k), None) => bail!(dgm::Error::invalid(
            "--class",
            format!(
                "{k}: run {} is unconditional; --class applies to class-conditional runs",
                a.run.run.display()
            )
        )),
        (Some(k), Some(n)) if k as usize >= n => bail!(dgm::Error::invalid(
            "--class",
            format!(
                "{k} is not a class of this run (0 to {})",
                n.saturating_sub(1)
            )
        )),
        _ => {}
    }
    // the n copies as bytes, the batch as f32 and the completed images: refuse what cannot fit
    let need = (a.n as u64).saturating_mul((c * h * w) as u64 * 9);
    dgm::memory::check_bytes(
        &format!("{} images to complete", a.n),
        "-n",
        need,
        &dgm::memory::available()?,
    )?;
    let pixels = dgm::image_io::load_image(&a.image, c, h, w)?;
    let ds = Dataset {
        name: a.image.display().to_string(),
        example_shape: vec![c, h, w],
        storage: data::Storage::U8(pixels.repeat(a.n)),
        labels: a.class.map(|k| vec![k; a.n]),
        num_classes: model.num_classes(),
        class_names: None,
        captions: None,
    };
    let prep = run.config.data.preprocessing.for_eval();
    let dev = device(&a.run.device)?;
    let idx: Vec<usize> = (0..a.n).collect();
    let batch = ds.batch(&idx, &prep, &mut dgm::rng::Rng::new(a.seed), &dev)?;
    let mut opts = SampleOptions::seeded(a.seed);
    if let Some(k) = a.class {
        opts.condition = Condition::Class(vec![k; a.n]);
    }
    let done = model.complete(&batch.x, a.rows, &opts)?;
    // the input with the unknown rows greyed out, then the completions
    let kept = batch.x.narrow(0, 0, 1)?;
    let mask: Vec<f32> = (0..c * h * w)
        .map(|i| if (i % (h * w)) / w < a.rows { 1.0 } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, (1, c, h, w), &dev)?;
    let (lo, hi) = prep_range(&run.config.data.preprocessing);
    let grey = ((1.0 - &mask)? * ((lo + hi) / 2.0))?;
    let shown = ((kept * &mask)? + grey)?;
    let grid = Tensor::cat(&[shown, done.to_dtype(candle_core::DType::F32)?], 0)?;
    dgm::image_io::save_grid(&a.out, &grid, &run.config.data.preprocessing, a.n + 1)?;
    println!(
        "kept the top {} of {h} rows of {} and wrote it with {} completions to {}",
        a.rows,
        a.image.display(),
        a.n,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The value range of preprocessed pixels.
fn prep_range(p: &data::Preprocessing) -> (f64, f64) {
    match p {
        data::Preprocessing::Scale { range, .. } => {
            let (lo, hi) = range.bounds();
            (lo as f64, hi as f64)
        }
        _ => (0.0, 1.0),
    }
}

/// The example shape recorded in the run's model config (`example_shape`), when its data are not at hand.
fn image_shape(cfg: &RunConfig) -> Result<Vec<usize>> {
    let shape = cfg
        .model
        .config
        .get("example_shape")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_integer())
                .map(|x| x as usize)
                .collect::<Vec<_>>()
        });
    match shape {
        Some(s) if !s.is_empty() => Ok(s),
        _ => bail!(dgm::Error::invalid(
            "run",
            "cannot tell the image size: the run's data set is not found (set DGM_DATA)"
        )),
    }
}
