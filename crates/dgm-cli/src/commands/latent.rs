//! `dgm encode` and `dgm interpolate`: latent codes of data examples, and decoded paths between them.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use dgm::data::{self, Batch, Dataset, Split};
use dgm::model::Condition;
use dgm::train::run;

use super::{device, load};
use crate::cli::{EncodeArgs, InterpolateArgs};

/// The split named `split` of the run's data set.
fn split_data(
    run: &run::LoadedRun,
    split: &str,
    data_dir: Option<&Path>,
) -> Result<(Split, Dataset)> {
    let split = Split::parse(split)?;
    Ok((
        split,
        run::load_data(&run.config, split, &data::data_dir(data_dir))?,
    ))
}

/// Examples `idx` of split `split` of the run's data set, preprocessed as for evaluation.
fn examples(
    run: &run::LoadedRun,
    split: Split,
    ds: &Dataset,
    idx: &[usize],
    dev: &Device,
) -> Result<Batch> {
    if let Some(&bad) = idx.iter().find(|&&i| i >= ds.len()) {
        bail!(dgm::Error::invalid(
            "index",
            format!(
                "{bad} is out of range: the {} split has {} examples",
                split.name(),
                ds.len()
            )
        ));
    }
    let prep = run.config.data.preprocessing.for_eval();
    Ok(ds.batch(idx, &prep, &mut dgm::rng::Rng::new(0), dev)?)
}

pub(super) fn encode_cmd(a: EncodeArgs) -> Result<ExitCode> {
    let run = load(&a.run)?;
    let Some(latent) = run.model.as_latent() else {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' has no encoder",
            run.config.model.name
        )));
    };
    let dev = device(&a.run.device)?;
    let (split, ds) = split_data(&run, &a.split, a.data_dir.data_dir.as_deref())?;
    let n = a.limit.unwrap_or(ds.len()).min(ds.len());
    let mut out = String::new();
    let dim: usize = latent.latent_shape().iter().product();
    out.push_str("index,label");
    for j in 0..dim {
        out.push_str(&format!(",z{j}"));
    }
    out.push('\n');
    for start in (0..n).step_by(500) {
        let idx: Vec<usize> = (start..(start + 500).min(n)).collect();
        let batch = examples(&run, split, &ds, &idx, &dev)?;
        let z = latent.encode(&batch)?.flatten_from(1)?.to_vec2::<f32>()?;
        for (row, &i) in z.iter().zip(&idx) {
            let label = ds
                .labels
                .as_ref()
                .map(|l| l[i].to_string())
                .unwrap_or_default();
            out.push_str(&format!("{i},{label}"));
            for v in row {
                out.push_str(&format!(",{v}"));
            }
            out.push('\n');
        }
    }
    dgm::checkpoint::write_atomic(&a.out, out.as_bytes())?;
    println!("wrote {n} codes of dimension {dim} to {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn interpolate_cmd(a: InterpolateArgs) -> Result<ExitCode> {
    if a.steps < 2 {
        bail!(dgm::Error::invalid(
            "--steps",
            format!("{} must be at least 2", a.steps)
        ));
    }
    let run = load(&a.run)?;
    let Some(latent) = run.model.as_latent() else {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' has no latent space",
            run.config.model.name
        )));
    };
    let dev = device(&a.run.device)?;
    let (split, ds) = split_data(&run, &a.split, a.data_dir.data_dir.as_deref())?;
    let batch = examples(&run, split, &ds, &[a.from, a.to], &dev)?;
    let z = latent.encode(&batch)?; // (2, latent…)
    let (z0, z1) = (z.get(0)?, z.get(1)?);
    let mut zs = Vec::with_capacity(a.steps);
    for i in 0..a.steps {
        let t = i as f64 / (a.steps - 1) as f64;
        zs.push(latent.interpolate(&z0, &z1, t)?); // the model's path: a line, or slerp for Gaussian codes
    }
    let zs = Tensor::stack(&zs, 0)?;
    let cond = match (&batch.labels, run.model.num_classes()) {
        (Some(l), Some(_)) => {
            // a conditional model keeps the first example's class along the path
            let c = l.to_vec1::<u32>()?[0];
            Condition::Class(vec![c])
        }
        _ => Condition::None,
    };
    let x = latent.decode(&zs, &cond)?;
    let prep = &run.config.data.preprocessing;
    if x.rank() != 4 {
        bail!(dgm::Error::Unsupported(
            "interpolation strips are for image data".into()
        ));
    }
    let ends = batch.x.clone();
    let strip = Tensor::cat(
        &[ends.get(0)?.unsqueeze(0)?, x, ends.get(1)?.unsqueeze(0)?],
        0,
    )?;
    dgm::image_io::save_grid(&a.out, &strip, prep, a.steps + 2)?;
    println!(
        "wrote {} (example {} → {}: data, {} decoded points on the path between their codes, data)",
        a.out.display(),
        a.from,
        a.to,
        a.steps
    );
    Ok(ExitCode::SUCCESS)
}
