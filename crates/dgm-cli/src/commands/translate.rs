//! `dgm translate`: a sentence translated by a language model trained on `source = target` lines, or the
//! scores of the run's held-out pairs.

use std::process::ExitCode;

use anyhow::{bail, Result};
use dgm::data::{numbers, Split};
use dgm::metrics::translation::score_translations;
use dgm::models::autoregressive::beam::translate;

use super::load;
use crate::cli::TranslateArgs;

pub(super) fn translate_cmd(a: TranslateArgs) -> Result<ExitCode> {
    if a.beam == 0 || a.max_tokens == 0 {
        bail!(dgm::Error::invalid(
            if a.beam == 0 {
                "--beam"
            } else {
                "--max-tokens"
            },
            "must be at least 1"
        ));
    }
    let run = load(&a.run)?;
    let Some(lm) = run.model.as_sequence() else {
        bail!(dgm::Error::Unsupported(format!(
            "model '{}' is not a language model; `dgm translate` takes {} runs trained on lines `source = target`",
            run.config.model.name,
            dgm::models::names_with(|a| a.sequence).join(", ")
        )));
    };
    if !a.eval {
        let text = a.text.as_deref().unwrap_or_default();
        println!("{}", translate(lm, text, a.beam, a.max_tokens)?);
        return Ok(ExitCode::SUCCESS);
    }
    let corpus = match numbers::corpus_of(&run.config.data.name) {
        Some(name) => name,
        None => bail!(dgm::Error::invalid(
            "--eval",
            format!(
                "the run was trained on {}; --eval scores the test pairs of a parallel corpus (text:{})",
                run.config.data.name,
                numbers::CORPORA.join(", text:")
            )
        )),
    };
    let mut pairs = numbers::pairs(corpus, Split::Test)?;
    pairs.truncate(a.limit.unwrap_or(pairs.len()));
    println!(
        "{} held-out pairs of {corpus} (numbers never seen in training), run {}:",
        pairs.len(),
        a.run.run.display()
    );
    println!("decoding\texact\tBLEU\tchrF\tseconds");
    let mut beams = vec![1];
    if a.beam > 1 {
        beams.push(a.beam);
    }
    for beam in beams {
        let started = std::time::Instant::now();
        let s = score_translations(&pairs, |src| translate(lm, src, beam, a.max_tokens))?;
        let what = if beam == 1 {
            "greedy".to_string()
        } else {
            format!("beam {beam}")
        };
        println!(
            "{what}\t{:.4}\t{:.2}\t{:.2}\t{:.1}",
            s.exact,
            s.bleu.score,
            s.chrf,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}
