//! `dgm sample`: a grid of images or points, or streamed text from a language model, and the checks of
//! which sampling flags apply to the run's model.

use std::process::ExitCode;

use anyhow::{bail, Result};
use dgm::model::{Condition, SampleOptions};

use super::{load, refuse_given};
use crate::cli::SampleArgs;

pub(super) fn sample_cmd(a: SampleArgs) -> Result<ExitCode> {
    if a.n == Some(0) {
        bail!(dgm::Error::invalid("-n", "must be at least 1"));
    }
    if !(a.temperature > 0.0 && a.temperature.is_finite()) {
        bail!(dgm::Error::invalid(
            "--temperature",
            format!("{} must be a positive number", a.temperature)
        ));
    }
    let run = load(&a.run)?;
    let audio = is_audio(&run.config.data.name)?;
    refuse_sample_flags(&a, run.model.as_ref(), audio)?;
    if let Some(lm) = run.model.as_sequence() {
        return sample_text(&a, lm);
    }
    if audio {
        return sample_audio(&a, run.model.as_ref());
    }
    let Some(out) = &a.out else {
        bail!(dgm::Error::invalid(
            "--out",
            "give the PNG file to write, e.g. --out samples.png"
        ));
    };
    let n = a.n.unwrap_or(64);
    let mut opts = SampleOptions::seeded(a.seed);
    opts.temperature = a.temperature;
    opts.mean = !a.draw;
    opts.sampler = a.sampler.clone();
    opts.steps = a.steps;
    opts.guidance = a.guidance;
    opts.condition = per_sample(condition(&a), n)?;
    // The picture is sized for n before anything is sampled (a grid too large to write is refused now), and
    // filled batch by batch, so memory holds one batch, not n samples: -n is bounded by time.
    let shape = dgm::models::example_shape(&run.config.model.name, &run.config.model.config)?;
    let mut canvas = dgm::image_io::SampleCanvas::new(n, &shape, &run.config.data.preprocessing)?;
    let batch = if shape.len() == 3 {
        SAMPLE_BATCH_IMAGES
    } else {
        SAMPLE_BATCH_POINTS
    };
    for (i, start) in (0..n).step_by(batch).enumerate() {
        let mut o = opts.clone();
        // batch 0 uses --seed itself, so -n up to one batch gives the samples a single call always gave
        if i > 0 {
            o.seed = dgm::rng::Rng::stream(a.seed, i as u64).next_u64();
        }
        let len = batch.min(n - start);
        if let Condition::Class(ids) = &opts.condition {
            if ids.len() > 1 {
                // one class per sample: this batch's share
                o.condition = Condition::Class(ids[start..start + len].to_vec());
            }
        }
        let x = run.model.sample(len, &o)?;
        canvas.add(&x)?;
    }
    canvas.save(out)?;
    println!("wrote {n} samples to {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// True when the run's data are audio clips (the samples are written as a WAV).
fn is_audio(data: &str) -> Result<bool> {
    Ok(dgm::data::DataSpec::parse(data)?.kind() == dgm::data::DataKind::Audio)
}

/// `dgm sample` for an audio model: `-n` clips (default 1) as one WAV, a short silence between them, and its
/// spectrogram as a PNG of the same name.
fn sample_audio(a: &SampleArgs, model: &dyn dgm::model::Model) -> Result<ExitCode> {
    let out = match &a.out {
        Some(p) if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")) => p,
        Some(p) => bail!(dgm::Error::invalid(
            "--out",
            format!(
                "{} is not a .wav file; audio models write WAV, e.g. --out seven.wav",
                p.display()
            )
        )),
        None => bail!(dgm::Error::invalid(
            "--out",
            "give the WAV file to write, e.g. --out seven.wav"
        )),
    };
    let n = a.n.unwrap_or(1);
    if n > MAX_CLIPS {
        bail!(dgm::Error::invalid(
            "-n",
            format!(
                "{n} clips: at most {MAX_CLIPS} per call (each is generated one sample at a time)"
            )
        ));
    }
    let mut opts = SampleOptions::seeded(a.seed);
    opts.temperature = a.temperature;
    opts.condition = per_sample(condition(a), n)?;
    let started = std::time::Instant::now();
    let x = model.sample(n, &opts)?;
    let secs = started.elapsed().as_secs_f64();
    let png = dgm::data::audio::write_clips(out, &x, dgm::data::audio::DIGITS_RATE)?;
    let len = x.dim(1)?;
    println!(
        "wrote {n} clip(s) of {:.2} s to {} (spectrogram: {})",
        len as f64 / dgm::data::audio::DIGITS_RATE as f64,
        out.display(),
        png.display()
    );
    if a.timing {
        eprintln!(
            "{} samples in {secs:.2} s: {:.0} samples/s (fast generation, {n} clip(s) at once)",
            n * len,
            (n * len) as f64 / secs
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Clips `dgm sample` generates per call for an audio model.
const MAX_CLIPS: usize = 1000;

/// Images `dgm sample` draws per model call (the default -n of 64 is one batch).
const SAMPLE_BATCH_IMAGES: usize = 256;
/// 2-D points `dgm sample` draws per model call.
const SAMPLE_BATCH_POINTS: usize = 4096;

/// `dgm sample` for a language model: streams each sample to stdout as it is generated.
fn sample_text(a: &SampleArgs, lm: &dyn dgm::model::Sequence) -> Result<ExitCode> {
    use std::io::Write;
    let tok = lm.tokenizer();
    let prompt = text_arg(
        a.prompt.as_deref(),
        a.prompt_file.as_deref(),
        "--prompt",
        tok,
    )?;
    if prompt.as_ref().is_some_and(|(p, _)| p.is_empty()) {
        bail!(dgm::Error::invalid(
            "--prompt",
            "the prompt is empty; give some text to continue, or leave --prompt out to start from the beginning of a text"
        ));
    }
    let (prompt, ids) = prompt.unwrap_or_default();
    // fill-in-the-middle: the text after the gap
    let suffix = text_arg(
        a.suffix.as_deref(),
        a.suffix_file.as_deref(),
        "--suffix",
        tok,
    )?;
    let n = a.n.unwrap_or(1);
    let mut all = Vec::new();
    let stdout = std::io::stdout();
    let started = std::time::Instant::now();
    let mut generated = 0usize;
    for i in 0..n {
        let opts = dgm::model::GenerateOptions {
            max_tokens: a.max_tokens.unwrap_or(500),
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed.wrapping_add(i as u64),
            kv_cache: !a.no_kv_cache,
        };
        opts.validate()?;
        if n > 1 {
            println!("--- sample {} (seed {}) ---", i + 1, opts.seed);
        }
        let mut stream = dgm::data::tokenizer::Utf8Stream::default();
        let mut out = stdout.lock();
        write!(out, "{}", stream.push(&prompt))?;
        out.flush()?;
        let mut on_token = |id| {
            if let Some(b) = tok.token_bytes(id) {
                let text = stream.push(&b);
                if !text.is_empty() {
                    let _ = write!(out, "{text}");
                    let _ = out.flush();
                }
            }
            Ok(true)
        };
        let new = match &suffix {
            Some((_, s)) => lm.fill_middle(&ids, s, &opts, &mut on_token)?,
            None => lm.generate(&ids, &opts, &mut on_token)?,
        };
        if let Some((s, _)) = &suffix {
            write!(out, "{}", stream.push(s))?;
        }
        writeln!(out, "{}", stream.finish())?;
        generated += new.len();
        all.extend_from_slice(&prompt);
        all.extend(tok.decode(&new)?);
        if let Some((s, _)) = &suffix {
            all.extend_from_slice(s);
        }
        all.push(b'\n');
    }
    if a.timing {
        let s = started.elapsed().as_secs_f64();
        eprintln!(
            "{generated} tokens in {s:.2} s: {:.1} tokens/s ({})",
            generated as f64 / s,
            if a.no_kv_cache {
                "no KV cache"
            } else {
                "KV cache"
            }
        );
    }
    if let Some(out) = &a.out {
        dgm::checkpoint::write_atomic(out, &all)?;
        eprintln!("wrote {n} sample(s) to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The bytes of a text given inline (`--NAME`) or as a file (`--NAME-file`) and their token ids; a byte the
/// tokenizer cannot encode is an error naming the flag it came from.
fn text_arg(
    inline: Option<&str>,
    file: Option<&std::path::Path>,
    flag: &str,
    tok: &dgm::data::Tokenizer,
) -> Result<Option<(Vec<u8>, Vec<u32>)>> {
    let (bytes, flag) = match (inline, file) {
        (Some(t), _) => (t.as_bytes().to_vec(), flag.to_string()),
        (None, Some(f)) => (
            std::fs::read(f).map_err(|e| dgm::Error::io(f, e))?,
            format!("{flag}-file"),
        ),
        (None, None) => return Ok(None),
    };
    let ids = tok
        .encode(&bytes)
        .map_err(|e| dgm::Error::invalid(flag, e.to_string()))?;
    Ok(Some((bytes, ids)))
}

/// The condition `--class` or `--caption` asks for (the classes as listed).
fn condition(a: &SampleArgs) -> Condition {
    match (&a.caption, a.class.as_slice()) {
        (Some(c), _) => Condition::Caption(vec![c.clone()]),
        (None, []) => Condition::None,
        (None, ks) => Condition::Class(ks.to_vec()),
    }
}

/// `cond` for `n` samples: one class stays one class for all; several classes become one per sample, each
/// class for an equal run of consecutive samples (at least one each).
fn per_sample(cond: Condition, n: usize) -> Result<Condition> {
    Ok(match cond {
        Condition::Class(ks) if ks.len() > n => bail!(dgm::Error::invalid(
            "--class",
            format!(
                "{} classes for {n} samples: give -n of at least one sample per class",
                ks.len()
            )
        )),
        Condition::Class(ks) if ks.len() > 1 => {
            Condition::Class((0..n).map(|i| ks[i * ks.len() / n]).collect())
        }
        other => other,
    })
}

/// Refuses the `dgm sample` flags `model` would ignore, naming the flag and why: what the model's
/// [`dgm::model::SampleAbilities`] do not cover (a draw, a sampler, steps, guidance, a class), and the
/// language-model flags for every other model (`--timing` also applies to audio models, `audio`).
fn refuse_sample_flags(a: &SampleArgs, model: &dyn dgm::model::Model, audio: bool) -> Result<()> {
    let opts = SampleOptions {
        condition: condition(a),
        sampler: a.sampler.clone(),
        steps: a.steps,
        guidance: a.guidance,
        mean: !a.draw,
        ..SampleOptions::seeded(a.seed)
    };
    dgm::model::check_sample_options(model, &opts)?;
    if model.as_sequence().is_none() {
        refuse_given(
            &[
                ("--prompt", a.prompt.is_some()),
                ("--prompt-file", a.prompt_file.is_some()),
                ("--suffix", a.suffix.is_some()),
                ("--suffix-file", a.suffix_file.is_some()),
                ("--max-tokens", a.max_tokens.is_some()),
                ("--top-k", a.top_k.is_some()),
                ("--top-p", a.top_p.is_some()),
                ("--no-kv-cache", a.no_kv_cache),
                ("--timing", a.timing && !audio),
            ],
            &format!(
                "to model '{}': it is not a language model (the flag applies to {} runs)",
                model.name(),
                dgm::models::names_with(|a| a.sequence).join(", ")
            ),
        )?;
    }
    Ok(())
}
