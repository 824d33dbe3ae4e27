//! `dgm score`: the per-token log-likelihood of a text file under a language model, or the log-likelihood of a
//! WAV clip under an audio model.

use std::process::ExitCode;

use anyhow::{bail, Result};

use super::load;
use crate::cli::ScoreArgs;

/// Escapes one byte for a per-token table.
fn show_token(b: u8) -> String {
    match b {
        b'\n' => "\\n".into(),
        b'\t' => "\\t".into(),
        b' ' => "' '".into(),
        b if b.is_ascii_graphic() => (b as char).to_string(),
        b => format!("\\x{b:02x}"),
    }
}

pub(super) fn score_cmd(a: ScoreArgs) -> Result<ExitCode> {
    let run = load(&a.run)?;
    let audio =
        dgm::data::DataSpec::parse(&run.config.data.name)?.kind() == dgm::data::DataKind::Audio;
    if let (true, Some(wav)) = (audio, &a.audio) {
        super::refuse_given(
            &[("--summary", a.summary)],
            "to audio models: their score is one line per class already",
        )?;
        return score_audio(&a, wav, &run);
    }
    if audio {
        bail!(dgm::Error::invalid(
            "--text",
            format!(
                "model '{}' is an audio model: give a WAV file with --audio",
                run.config.model.name
            )
        ));
    }
    super::refuse_given(
        &[
            ("--audio", a.audio.is_some()),
            ("--class", a.class.is_some()),
        ],
        &format!(
            "to model '{}': it is not an audio model (the flag applies to {} runs)",
            run.config.model.name,
            dgm::models::names_with_data(dgm::data::DataKind::Audio).join(", ")
        ),
    )?;
    let Some(text) = &a.text else {
        bail!(dgm::Error::invalid("--text", "give the text file to score"));
    };
    let Some(lm) = run.model.as_sequence() else {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' is not a language model; `dgm score` takes {} runs (for images use `dgm eval`)",
            run.config.model.name,
            dgm::models::names_with(|a| a.sequence).join(", ")
        )));
    };
    let bytes = std::fs::read(text).map_err(|e| dgm::Error::io(text, e))?;
    if bytes.is_empty() {
        bail!(dgm::Error::invalid(
            text.display().to_string(),
            "the file is empty; there is nothing to score"
        ));
    }
    let tok = lm.tokenizer();
    let (ids, oov) = tok.encode_lossy(&bytes);
    if ids.is_empty() {
        bail!(dgm::Error::invalid(
            text.display().to_string(),
            format!(
                "none of its {} bytes is in the model's vocabulary ({})",
                bytes.len(),
                tok.describe_vocab()
            )
        ));
    }
    let lp = lm.token_log_probs(&ids)?;
    if !a.summary {
        println!("index\ttoken\tlog_p_nats");
        for (i, (&id, &l)) in ids.iter().zip(&lp).enumerate() {
            let b = tok.token_bytes(id).unwrap_or_default();
            let shown: String = b.iter().map(|&b| show_token(b)).collect();
            println!("{i}\t{shown}\t{l:.4}");
        }
    }
    let total: f64 = -lp.iter().sum::<f64>();
    let unit = tok.unit();
    let per = total / ids.len() as f64;
    // with bytes skipped, the exact number is the NLL of another text: the file without those bytes
    let what = if oov.is_empty() {
        "exact".to_string()
    } else {
        format!(
            "exact for the text with its {} out-of-vocabulary byte(s) removed, not for the file as given",
            oov.len()
        )
    };
    println!(
        "{}: {} {unit}s scored · NLL {total:.2} nats · {per:.4} nats/{unit} · {:.4} bits/{unit} ({what}, under run {} with a {}-token context)",
        text.display(),
        ids.len(),
        per / std::f64::consts::LN_2,
        a.run.run.display(),
        lm.context_len()
    );
    if !oov.is_empty() {
        let shown: Vec<String> = oov
            .iter()
            .take(10)
            .map(|&(o, b)| format!("{} at {o}", dgm::data::tokenizer::show_byte(b)))
            .collect();
        println!(
            "{} byte(s) outside the vocabulary were skipped, not scored: {}{}",
            oov.len(),
            shown.join(", "),
            if oov.len() > 10 { ", …" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `dgm score --audio`: the exact log-likelihood of a clip (padded with silence to the model's clip length)
/// under the given class, or under each class with the most likely one (a likelihood classifier).
fn score_audio(
    a: &ScoreArgs,
    wav: &std::path::Path,
    run: &dgm::train::run::LoadedRun,
) -> Result<ExitCode> {
    let density = run.model.as_density().ok_or_else(|| {
        dgm::Error::Unsupported(format!(
            "model '{}' has no likelihood",
            run.config.model.name
        ))
    })?;
    let shape = dgm::models::example_shape(&run.config.model.name, &run.config.model.config)?;
    let length = shape.iter().product::<usize>();
    let rate = dgm::data::audio::DIGITS_RATE;
    let (codes, own) = dgm::data::audio::clip_codes(wav, rate, length)?;
    let classes: Vec<u32> = match (run.model.num_classes(), a.class) {
        (Some(k), Some(c)) if (c as usize) < k => vec![c],
        (Some(k), Some(c)) => bail!(dgm::Error::invalid(
            "--class",
            format!("{c} is not a class of this model (0..={})", k - 1)
        )),
        (Some(k), None) => (0..k as u32).collect(),
        (None, Some(_)) => bail!(dgm::Error::NotApplicable {
            option: "class",
            model: run.config.model.name.clone(),
            why: "it is unconditional".into(),
        }),
        (None, None) => vec![],
    };
    // the clip once per class (once for an unconditional model), scored in one call
    let copies = classes.len().max(1);
    let dev = candle_core::Device::Cpu;
    let mut batch = dgm::data::Batch::new(
        candle_core::Tensor::from_vec(codes, (1, length), &dev)?.repeat((copies, 1))?,
    );
    if !classes.is_empty() {
        batch.labels = Some(candle_core::Tensor::new(classes.as_slice(), &dev)?);
    }
    let ll = density.log_likelihood(&batch, &dgm::model::LikelihoodOptions::default())?;
    let labels = classes
        .iter()
        .map(|&c| Some(c))
        .chain(classes.is_empty().then_some(None));
    let rows: Vec<(Option<u32>, f64)> = labels.zip(ll.nats.iter().map(|v| -v)).collect();
    let kind = ll.kind.short_name();
    println!(
        "{}: {own} samples ({:.2} s at {rate} Hz), padded with silence to {length}; scored as 8-bit μ-law codes under run {}",
        wav.display(),
        own as f64 / rate as f64,
        a.run.run.display()
    );
    let names = dgm::data::audio::DIGIT_NAMES;
    for (c, nll) in &rows {
        let label = c.map_or("unconditional".to_string(), |c| {
            format!("class {c} ({})", names.get(c as usize).unwrap_or(&"?"))
        });
        println!(
            "  {label}: NLL {nll:.1} nats · {:.4} bits/sample ({})",
            nll / (length as f64 * std::f64::consts::LN_2),
            kind
        );
    }
    if rows.len() > 1 {
        if let Some((Some(c), _)) = rows.iter().min_by(|x, y| x.1.total_cmp(&y.1)) {
            println!(
                "most likely class: {c} ({}) — the class under which the clip is most probable",
                names.get(*c as usize).unwrap_or(&"?")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
