//! `dgm score`: the per-token log-likelihood of a text file under a language model.

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
    let Some(lm) = run.model.as_sequence() else {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' is not a language model; `dgm score` takes {} runs (for images use `dgm eval`)",
            run.config.model.name,
            dgm::models::names_with(|a| a.sequence).join(", ")
        )));
    };
    let bytes = std::fs::read(&a.text).map_err(|e| dgm::Error::io(&a.text, e))?;
    if bytes.is_empty() {
        bail!(dgm::Error::invalid(
            a.text.display().to_string(),
            "the file is empty; there is nothing to score"
        ));
    }
    let tok = lm.tokenizer();
    let (ids, oov) = tok.encode_lossy(&bytes);
    if ids.is_empty() {
        bail!(dgm::Error::invalid(
            a.text.display().to_string(),
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
            let b = tok.token_byte(id).unwrap_or(b'?');
            println!("{i}\t{}\t{l:.4}", show_token(b));
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
        a.text.display(),
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
