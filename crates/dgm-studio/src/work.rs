//! What each job does, on the worker thread with the run's model loaded: sample, generate and score text,
//! edit, interpolate, and score an image against reference sets.

use std::path::PathBuf;

use dgm::model::{Condition, SampleOptions};
use dgm::train::run;

use crate::jobs::{Images, Output};
use crate::requests::*;

impl Work {
    /// The job's kind, as `GET /api/jobs/ID` shows it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Work::Sample(..) => "sample",
            Work::Generate(..) => "text",
            Work::Edit(..) => "edit",
            Work::Score(..) => "score",
            Work::Interpolate(..) => "interpolate",
            Work::Likelihood(..) => "likelihood",
        }
    }

    /// The run's folder.
    pub(crate) fn dir(&self) -> &PathBuf {
        match self {
            Work::Sample(_, d)
            | Work::Generate(_, d)
            | Work::Edit(_, d)
            | Work::Score(_, d)
            | Work::Interpolate(_, d)
            | Work::Likelihood(_, d) => d,
        }
    }

    /// Does the work with the run's model, writing what it makes to `out`.
    pub(crate) fn run(
        &self,
        run: &run::LoadedRun,
        ctx: &mut Context,
        out: &Output,
    ) -> dgm::Result<()> {
        match self {
            Work::Sample(r, _) => out.set_images(sample(r, run, out)?),
            Work::Generate(r, _) => generate(r, run, out)?,
            Work::Edit(w, _) => out.set_images(edit(w, run, out)?),
            Work::Score(r, _) => out.set_result(score(r, run)?),
            Work::Interpolate(w, _) => out.set_images(interpolate(&w.0, &w.1, &w.2, run, ctx)?),
            Work::Likelihood(w, d) => out.set_result(likelihood(&w.0, &w.1, run, d, ctx)?),
        }
        Ok(())
    }
}

/// The condition a job asks for: one class or one caption for every sample, or none (not both).
fn condition(class: Option<u32>, caption: &Option<String>) -> dgm::Result<Condition> {
    Ok(match (class, caption) {
        (Some(_), Some(_)) => {
            return Err(dgm::Error::invalid(
                "class",
                "give a class or a caption, not both",
            ))
        }
        (Some(k), None) => Condition::Class(vec![k]),
        (None, Some(c)) => Condition::Caption(vec![c.clone()]),
        (None, None) => Condition::None,
    })
}

/// A token shown on the page: its bytes as characters (printable ASCII, space, newline, tab), others as `\xNN`.
fn token_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'\n' | b'\t' | b' ' => (b as char).to_string(),
            b if b.is_ascii_graphic() => (b as char).to_string(),
            b => format!("\\x{b:02x}"),
        })
        .collect()
}

/// `dgm score` for the page: each token with its log p in nats, and the totals.
fn score(r: &ScoreRequest, run: &run::LoadedRun) -> dgm::Result<serde_json::Value> {
    let Some(lm) = run.model.as_sequence() else {
        return Err(dgm::Error::Unsupported(format!(
            "run '{}' is not a language model ({}): scoring text needs one of {}",
            r.run,
            run.model.name(),
            dgm::models::names_with(|a| a.sequence).join(", ")
        )));
    };
    let tok = lm.tokenizer();
    let (ids, oov) = tok.encode_lossy(r.text.as_bytes());
    if ids.is_empty() {
        return Err(dgm::Error::invalid(
            "text",
            format!(
                "none of its {} bytes is in the model's vocabulary ({})",
                r.text.len(),
                tok.describe_vocab()
            ),
        ));
    }
    let lp = lm.token_log_probs(&ids)?;
    let tokens: Vec<serde_json::Value> = ids
        .iter()
        .zip(&lp)
        .map(|(&id, &l)| {
            serde_json::json!([token_text(&tok.token_bytes(id).unwrap_or_default()), l])
        })
        .collect();
    let nll: f64 = -lp.iter().sum::<f64>();
    let per = nll / ids.len() as f64;
    Ok(serde_json::json!({
        "tokens": tokens,
        "unit": tok.unit(),
        "nll_nats": nll,
        "nats_per_token": per,
        "bits_per_token": per / std::f64::consts::LN_2,
        "kind": "exact",
        "skipped_bytes": oov.len(),
        "context": lm.context_len(),
    }))
}

/// The run's test split.
fn test_split(run: &run::LoadedRun, ctx: &Context) -> dgm::Result<dgm::data::Dataset> {
    run::load_data(&run.config, dgm::data::Split::Test, &ctx.data_dir)
}

/// `idx` of `ds` preprocessed as for evaluation.
fn eval_batch(
    run: &run::LoadedRun,
    ds: &dgm::data::Dataset,
    idx: &[usize],
) -> dgm::Result<dgm::data::Batch> {
    if let Some(&bad) = idx.iter().find(|&&i| i >= ds.len()) {
        return Err(dgm::Error::invalid(
            "example",
            format!(
                "{bad}: the test split of '{}' has {} examples (0 to {})",
                ds.name,
                ds.len(),
                ds.len().saturating_sub(1)
            ),
        ));
    }
    let prep = run.config.data.preprocessing.for_eval();
    ds.batch(
        idx,
        &prep,
        &mut dgm::rng::Rng::new(0),
        &candle_core::Device::Cpu,
    )
}

/// A picked image as a batch of one (with its class when it is a test example of a labelled data set).
fn picked_batch(
    what: &str,
    p: &Picked,
    run: &run::LoadedRun,
    ctx: &Context,
    test: &mut Option<dgm::data::Dataset>,
) -> dgm::Result<dgm::data::Batch> {
    match p {
        Picked::Example(i) => {
            let ds = match test {
                Some(ds) => ds,
                None => test.insert(test_split(run, ctx)?),
            };
            eval_batch(run, ds, &[*i])
        }
        Picked::Png(bytes) => {
            let shape =
                dgm::models::example_shape(&run.config.model.name, &run.config.model.config)?;
            let x = dgm::image_io::image_tensor_from_bytes(
                what,
                bytes,
                &shape,
                &run.config.data.preprocessing,
                &candle_core::Device::Cpu,
            )?;
            Ok(dgm::data::Batch::new(x))
        }
    }
}

/// Runs an edit: the grid shows the input, the measurement as an image (for `sdedit` the guide alone) and the
/// samples; each sample is also kept alone.
fn edit(w: &EditWork, run: &run::LoadedRun, out: &Output) -> dgm::Result<Images> {
    use dgm::pipelines::{edit, EditOptions, Input, Task};
    let r = &w.req;
    let Some(model) = run.model.as_denoiser() else {
        return Err(dgm::Error::Unsupported(format!(
            "run '{}' ({}) cannot edit images; edits take a diffusion run: {}",
            r.run,
            run.model.name(),
            dgm::models::names_with(|a| a.denoiser).join(", ")
        )));
    };
    let shape = model.info().example_shape.to_vec();
    let prep = &run.config.data.preprocessing;
    let dev = candle_core::Device::Cpu;
    let x = dgm::image_io::image_tensor_from_bytes("image", &w.image, &shape, prep, &dev)?;
    let task = match (r.task.as_str(), &w.mask) {
        ("inpaint", Some(m)) => {
            Task::Inpaint(dgm::ops::Mask::from_image_bytes("mask", m, &shape, &dev)?)
        }
        ("super-resolve", _) => Task::SuperResolve {
            factor: r.factor.unwrap_or(2),
        },
        ("colorize", _) => Task::Colorize,
        ("deblur", _) => Task::Deblur {
            sigma: r.blur_sigma.unwrap_or(1.0),
        },
        ("sdedit", _) => Task::Sdedit,
        (t, _) => return Err(dgm::Error::unknown("task", t, EDIT_TASKS)),
    };
    let opts = EditOptions {
        solver: r.solver.clone().filter(|s| !s.is_empty()),
        sampler: r.sampler.clone().filter(|s| !s.is_empty()),
        steps: r.steps,
        n: r.n,
        seed: r.seed,
        strength: r.strength,
        condition: condition(r.class, &r.caption)?,
        guidance: r.guidance,
        progress: out.progress(),
        ..EditOptions::default()
    };
    let out = edit(model, &task, Input::Image(x.clone()), &opts)?;
    let f32 = |t: &candle_core::Tensor| t.to_dtype(candle_core::DType::F32);
    let mut tiles = Vec::new();
    if !matches!(task, Task::Sdedit) {
        tiles.push(x);
    }
    tiles.push(f32(&out.view)?);
    tiles.push(f32(&out.samples)?);
    let grid = candle_core::Tensor::cat(&tiles, 0)?;
    let mut images = Images {
        grid: dgm::image_io::png_bytes(&dgm::image_io::grid(&grid, prep, grid.dim(0)?)?)?,
        each: Vec::new(),
    };
    for i in 0..r.n {
        let one = f32(&out.samples.narrow(0, i, 1)?)?;
        images
            .each
            .push(dgm::image_io::png_bytes(&dgm::image_io::grid(
                &one, prep, 1,
            )?)?);
    }
    Ok(images)
}

fn sample(r: &SampleRequest, run: &run::LoadedRun, out: &Output) -> dgm::Result<Images> {
    let model = run.model.as_ref();
    if model.as_sequence().is_some() {
        return Err(dgm::Error::Unsupported(format!(
            "run '{}' is a language model ({}): use the Text page",
            r.run,
            model.name()
        )));
    }
    if dgm::data::DataSpec::parse(&run.config.data.name)?.kind() == dgm::data::DataKind::Audio {
        return Err(dgm::Error::Unsupported(format!(
            "run '{}' is an audio model ({}): the studio has no audio page yet; use `dgm sample --run RUN --class K --out clip.wav`",
            r.run,
            model.name()
        )));
    }
    let mut opts = SampleOptions::seeded(r.seed);
    opts.temperature = r.temperature;
    opts.mean = !r.draw;
    opts.sampler = r.sampler.clone().filter(|s| !s.is_empty());
    opts.steps = r.steps;
    opts.guidance = r.guidance;
    opts.progress = out.progress();
    opts.condition = condition(r.class, &r.caption)?;
    dgm::model::check_sample_options(model, &opts)?;
    let prep = &run.config.data.preprocessing;
    let shape = dgm::models::example_shape(&run.config.model.name, &run.config.model.config)?;
    let mut canvas = dgm::image_io::SampleCanvas::new(r.n, &shape, prep)?;
    // the same samples as `dgm sample --run RUN -n N --seed S` with the same options (one batch)
    let x = model.sample(r.n, &opts)?;
    canvas.add(&x)?;
    let mut images = Images {
        grid: canvas.png()?,
        each: Vec::new(),
    };
    if shape.len() == 3 {
        for i in 0..r.n {
            let mut one = dgm::image_io::SampleCanvas::new(1, &shape, prep)?;
            one.add(&x.narrow(0, i, 1)?)?;
            images.each.push(one.png()?);
        }
    }
    Ok(images)
}

fn generate(r: &GenerateRequest, run: &run::LoadedRun, out: &Output) -> dgm::Result<()> {
    let Some(lm) = run.model.as_sequence() else {
        return Err(dgm::Error::Unsupported(format!(
            "run '{}' is not a language model ({}): text needs one of {}",
            r.run,
            run.model.name(),
            dgm::models::names_with(|a| a.sequence).join(", ")
        )));
    };
    let opts = r.options()?;
    let tok = lm.tokenizer();
    let ids = tok
        .encode(r.prompt.as_bytes())
        .map_err(|e| dgm::Error::invalid("prompt", e.to_string()))?;
    let mut stream = dgm::data::tokenizer::Utf8Stream::default();
    let push = |text: &str| out.push_text(text);
    push(&stream.push(r.prompt.as_bytes()));
    lm.generate(&ids, &opts, &mut |t| {
        if let Some(b) = tok.token_bytes(t) {
            push(&stream.push(&b));
        }
        Ok(true)
    })?;
    push(&stream.finish());
    Ok(())
}

/// Decoded points on the path between two images' codes: the strip shows the first image, the points and the
/// second image; each point is also kept alone.
fn interpolate(
    r: &InterpolateRequest,
    a: &Picked,
    b: &Picked,
    run: &run::LoadedRun,
    ctx: &Context,
) -> dgm::Result<Images> {
    use candle_core::Tensor;
    let Some(latent) = run.model.as_latent() else {
        return Err(dgm::Error::Unsupported(format!(
            "run '{}' ({}) has no latent space; interpolation takes {}",
            r.run,
            run.model.name(),
            dgm::models::names_with(|a| a.latent).join(", ")
        )));
    };
    let mut test = None;
    let ba = picked_batch("from", a, run, ctx, &mut test)?;
    let bb = picked_batch("to", b, run, ctx, &mut test)?;
    if ba.x.rank() != 4 {
        return Err(dgm::Error::Unsupported(
            "interpolation strips are for image data".into(),
        ));
    }
    let labels = match (&ba.labels, &bb.labels) {
        (Some(x), Some(y)) => Some(Tensor::cat(&[x, y], 0)?),
        _ => None,
    };
    let cond = match (&labels, run.model.num_classes()) {
        // a conditional model keeps the first image's class along the path
        (Some(l), Some(_)) => Condition::Class(vec![l.to_vec1::<u32>()?[0]]),
        (None, Some(k)) => {
            return Err(dgm::Error::Unsupported(format!(
                "run '{}' is conditioned on {k} classes: pick two test examples (their classes are known), not uploads",
                r.run
            )))
        }
        _ => Condition::None,
    };
    let batch = dgm::data::Batch {
        x: Tensor::cat(&[&ba.x, &bb.x], 0)?,
        labels,
        captions: None,
    };
    let z = latent.encode(&batch)?;
    let (z0, z1) = (z.get(0)?, z.get(1)?);
    let mut zs = Vec::with_capacity(r.steps);
    for i in 0..r.steps {
        let t = i as f64 / (r.steps - 1) as f64;
        // the model's path: a line, or slerp for Gaussian codes
        zs.push(latent.interpolate(&z0, &z1, t)?);
    }
    let x = latent
        .decode(&Tensor::stack(&zs, 0)?, &cond)?
        .to_dtype(candle_core::DType::F32)?;
    let prep = &run.config.data.preprocessing;
    let strip = Tensor::cat(&[&ba.x, &x, &bb.x], 0)?;
    let mut images = Images {
        grid: dgm::image_io::png_bytes(&dgm::image_io::grid(&strip, prep, r.steps + 2)?)?,
        each: Vec::new(),
    };
    for i in 0..r.steps {
        images
            .each
            .push(dgm::image_io::png_bytes(&dgm::image_io::grid(
                &x.narrow(0, i, 1)?,
                prep,
                1,
            )?)?);
    }
    Ok(images)
}

/// Bits per dimension of each example of `batch` (the model's default estimator), with the result's kind.
fn bits(
    density: &dyn dgm::model::Density,
    batch: &dgm::data::Batch,
    prep: &dgm::data::Preprocessing,
    steps: Option<usize>,
) -> dgm::Result<(Vec<f64>, dgm::model::LikelihoodKind)> {
    let opts = dgm::model::LikelihoodOptions {
        steps,
        ..Default::default()
    };
    let ll = density.log_likelihood(batch, &opts)?;
    let dims = batch.x.elem_count() / batch.x.dim(0)?.max(1);
    let b = ll
        .nats
        .iter()
        .map(|&lp| dgm::model::bits_per_dim(-lp, dims, ll.space, prep))
        .collect();
    Ok((b, ll.kind))
}

/// Examples scored per call of the estimator while the reference sets are scored.
const REFERENCE_CHUNK: usize = 64;

/// The bits per dimension of the first `n` examples of `ds`, chunk by chunk.
fn set_bits(
    density: &dyn dgm::model::Density,
    run: &run::LoadedRun,
    ds: &dgm::data::Dataset,
    n: usize,
    steps: Option<usize>,
) -> dgm::Result<Vec<f64>> {
    let n = n.min(ds.len());
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(REFERENCE_CHUNK) {
        let idx: Vec<usize> = (start..(start + REFERENCE_CHUNK).min(n)).collect();
        let batch = eval_batch(run, ds, &idx)?;
        out.extend(bits(density, &batch, &run.config.data.preprocessing, steps)?.0);
    }
    Ok(out)
}

/// An image's bits per dimension and the same number for the first `reference` examples of the test split
/// and of each OOD set (computed once per run checkpoint and kept), with the share of test examples that
/// score worse (more bits) than the image.
fn likelihood(
    r: &LikelihoodRequest,
    p: &Picked,
    run: &run::LoadedRun,
    dir: &std::path::Path,
    ctx: &mut Context,
) -> dgm::Result<serde_json::Value> {
    use serde_json::json;
    let model = run.model.as_ref();
    let Some(density) = model.as_density() else {
        return Err(dgm::Error::Unsupported(format!(
            "run '{}' ({}) has no likelihood; the page takes {}",
            r.run,
            model.name(),
            dgm::models::names_with(|a| a.density).join(", ")
        )));
    };
    if model.sample_abilities().captions {
        return Err(dgm::Error::Unsupported(format!(
            "run '{}' is caption-conditional: its likelihood is log p(x | caption), and the OOD sets and uploads have no captions (`dgm eval` scores the test split with its captions)",
            r.run
        )));
    }
    if model.num_classes().is_some() && !density.scores_unlabelled() {
        return Err(dgm::Error::Unsupported(format!(
            "run '{}' is class-conditional: its likelihood needs the class (`dgm eval` scores log p(x | y) with the true classes)",
            r.run
        )));
    }
    let prep = &run.config.data.preprocessing;
    let mut test = None;
    let batch = picked_batch("image", p, run, ctx, &mut test)?;
    let (b, kind) = bits(density, &batch, prep, r.steps)?;
    let value = b[0];
    let sets: Vec<String> = match &r.ood {
        Some(v) => v.clone(),
        None => dgm::data::ood::default_ood_sets(&run.config.data.name)
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let key = format!(
        "{}|{}|{}|{}|{:?}",
        dir.display(),
        run.state.step,
        r.reference,
        sets.join(","),
        r.steps
    );
    let reference = match ctx.references.get(&key) {
        Some(v) => v.clone(),
        None => {
            let mut out = Vec::new();
            let mut notes = Vec::new();
            if r.reference > 0 {
                let ds = match test.take() {
                    Some(ds) => ds,
                    None => test_split(run, ctx)?,
                };
                out.push(json!({ "name": "test", "bits_per_dim": set_bits(density, run, &ds, r.reference, r.steps)? }));
                for name in &sets {
                    match dgm::data::ood::load_ood(name, &ds, &ctx.data_dir, r.reference, 0) {
                        Ok(o) => out.push(json!({ "name": name, "bits_per_dim": set_bits(density, run, &o, r.reference, r.steps)? })),
                        // a set whose files are missing is left out, and the page says why
                        Err(e) => notes.push(format!("{name} left out: {e}")),
                    }
                }
            }
            let v = json!({ "sets": out, "notes": notes });
            if ctx.references.len() >= 8 {
                ctx.references.clear();
            }
            ctx.references.insert(key, v.clone());
            v
        }
    };
    let test_bits: Vec<f64> = reference["sets"]
        .as_array()
        .and_then(|s| s.first())
        .and_then(|t| t["bits_per_dim"].as_array())
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    let worse = test_bits.iter().filter(|&&t| t >= value).count();
    Ok(json!({
        "bits_per_dim": value,
        "kind": dgm::report::KindClass::of(&kind).label(),
        "preprocessing": prep.describe(),
        "reference": r.reference,
        "sets": reference["sets"],
        "notes": reference["notes"],
        "test_share_worse": if test_bits.is_empty() { None } else { Some(worse as f64 / test_bits.len() as f64) },
    }))
}
