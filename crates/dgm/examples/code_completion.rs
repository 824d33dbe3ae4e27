//! Code completion by a GPT run trained on `text:rust-code` split by crate (the numbers of `bench/code_lm`):
//! on N places of the held-out test crates, drawn with a fixed seed, greedy decoding (top-k 1, KV cache) from
//! the 1024 bytes before the place:
//!
//! * **next line**: the place is a line start whose line is 2 … 80 bytes after trimming; exact match of the
//!   generated line (up to its newline, trimmed) with the true one;
//! * **identifier**: the place is the start of an identifier of ≥ 4 bytes that is not a Rust keyword; exact
//!   match of the identifier the model writes there (the longest identifier prefix of its output);
//!
//! * for a run trained to fill in the middle (`model.fim` > 0), the same places as gaps with the 1024 bytes
//!   after them as the suffix (the model keeps what fits its context around the gap), judged as the
//!   left-to-right tasks are: **line (FIM)**, the middle's first line (at most 64 tokens) equals the line
//!   (trimmed); **identifier (FIM)**, the middle's leading identifier (at most 24 tokens) is the identifier;
//!   **ended**, the share of those identifier gaps where the middle is exactly the identifier followed by the
//!   model's end of middle; and, exactly, the identifier's **bits per byte given the prefix and the suffix**
//!   (the FIM layout) against **given the same prefix only** (left to right), and the bits of the end of
//!   middle after it;
//!
//! and the speed of generation: time to the first token (the prompt's pass) and tokens/s after it.
//!
//! `cargo run --release --example code_completion -- RUN [N]` with `DGM_DATA` set. Prints JSON lines.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use dgm::data::{text, Split};
use dgm::model::GenerateOptions;
use dgm::models::autoregressive::fim;
use dgm::rng::Rng;
use dgm::train::run::{self, Weights};

/// Errors of this example.
type Res<T> = Result<T, Box<dyn std::error::Error>>;

const KEYWORDS: &[&str] = &[
    "self", "Self", "true", "false", "else", "impl", "trait", "enum", "struct", "where", "const",
    "static", "match", "loop", "while", "break", "return", "continue", "crate", "super", "async",
    "await", "move", "unsafe", "extern", "type", "dyn", "mut", "pub", "use", "mod", "let", "for",
    "ref",
];

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// What a run of generation gave: the bytes, seconds to the first token, seconds for the rest, tokens.
struct Completion {
    bytes: Vec<u8>,
    first_s: f64,
    rest_s: f64,
    tokens: usize,
}

/// Greedy continuation of `prompt` until `stop` says so (or 120 tokens).
fn complete(
    lm: &dyn dgm::model::Sequence,
    prompt: &[u8],
    stop: impl Fn(&[u8]) -> bool,
) -> Res<Completion> {
    let ids = lm.tokenizer().encode(prompt)?;
    let opts = GenerateOptions {
        max_tokens: 120,
        top_k: Some(1),
        ..GenerateOptions::default()
    };
    let tok = lm.tokenizer().clone();
    let started = Instant::now();
    let mut first = None;
    let mut bytes = Vec::new();
    let mut tokens = 0;
    lm.generate(&ids, &opts, &mut |id| {
        first.get_or_insert_with(|| started.elapsed().as_secs_f64());
        tokens += 1;
        bytes.extend(tok.token_bytes(id).unwrap_or_default());
        Ok(!stop(&bytes))
    })?;
    let total = started.elapsed().as_secs_f64();
    let first_s = first.unwrap_or(total);
    Ok(Completion {
        bytes,
        first_s,
        rest_s: total - first_s,
        tokens,
    })
}

/// The greedy middle between `prefix` and `suffix`, at most `max_tokens` tokens, and whether the model
/// ended it (wrote its end of middle) before `max_tokens`.
fn fill(
    lm: &dyn dgm::model::Sequence,
    prefix: &[u8],
    suffix: &[u8],
    max_tokens: usize,
) -> Res<(Vec<u8>, bool)> {
    let opts = GenerateOptions {
        max_tokens,
        top_k: Some(1),
        ..GenerateOptions::default()
    };
    let tok = lm.tokenizer();
    let middle = lm.fill_middle(
        &tok.encode(prefix)?,
        &tok.encode(suffix)?,
        &opts,
        &mut |_| Ok(true),
    )?;
    let ended = middle.len() < max_tokens.min(lm.context_len() / 2);
    Ok((tok.decode(&middle)?, ended))
}

/// Exact nats of `middle` between `prefix` and `suffix` in the FIM layout (the prompt as `fill_middle`
/// builds it for a 24-token middle), of the end of middle after it, and of `middle` after the same kept
/// prefix left to right.
fn middle_nats(
    lm: &dyn dgm::model::Sequence,
    prefix: &[u8],
    middle: &[u8],
    suffix: &[u8],
) -> Res<(f64, f64, f64)> {
    let tok = lm.tokenizer();
    let s = fim::Sentinels::after(tok.vocab_size());
    let mid = tok.encode(middle)?;
    let t = lm.context_len();
    let prompt = fim::prompt(
        &tok.encode(prefix)?,
        &tok.encode(suffix)?,
        24.min(t / 2).max(mid.len() + 1),
        t,
        s,
    )?;
    let mut seq = prompt.clone();
    seq.extend_from_slice(&mid);
    seq.push(s.eot);
    let lp = lm.token_log_probs(&seq)?;
    let n = prompt.len();
    let fim_nats = -lp[n..n + mid.len()].iter().sum::<f64>();
    let eot_nats = -lp[n + mid.len()];
    let suf = prompt.iter().position(|&x| x == s.suf).unwrap_or(1);
    let mut plain = prompt[1..suf].to_vec();
    let k = plain.len();
    plain.extend_from_slice(&mid);
    let lp = lm.token_log_probs(&plain)?;
    Ok((fim_nats, eot_nats, -lp[k..].iter().sum::<f64>()))
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run_dir = PathBuf::from(args.first().ok_or("usage: code_completion RUN [N]")?);
    let n: usize = args.get(1).map_or(Ok(200), |s| s.parse())?;
    let loaded = run::load(&run_dir, Weights::Ema, &Device::Cpu)?;
    let lm = loaded
        .model
        .as_sequence()
        .ok_or("the run is not a language model")?;
    let data = loaded
        .config
        .data
        .name
        .strip_prefix("text:")
        .ok_or("not a text run")?;
    let split = loaded
        .config
        .data
        .text
        .as_ref()
        .map_or("tail".to_string(), |t| t.split.clone());
    let corpus = text::load_split(data, &dgm::data::data_dir(None), &split)?;
    let test = corpus.split(Split::Test);
    let ctx = 1024;

    // places, as (start, end): lines (end at their newline) and identifiers past the first `ctx` bytes
    let mut lines = Vec::new();
    let mut idents = Vec::new();
    for i in ctx..test.len() {
        if test[i - 1] == b'\n' {
            let end = test[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(test.len(), |p| i + p);
            let line = String::from_utf8_lossy(&test[i..end]);
            let t = line.trim();
            if (2..=80).contains(&t.len()) {
                lines.push((i, end));
            }
        }
        if !is_ident(test[i - 1]) && (test[i].is_ascii_alphabetic() || test[i] == b'_') {
            let end = test[i..]
                .iter()
                .position(|&b| !is_ident(b))
                .map_or(test.len(), |p| i + p);
            let word = std::str::from_utf8(&test[i..end]).unwrap_or("");
            if word.len() >= 4 && !KEYWORDS.contains(&word) {
                idents.push((i, end));
            }
        }
    }
    let mut rng = Rng::new(7);
    rng.shuffle(&mut lines);
    rng.shuffle(&mut idents);
    lines.truncate(n);
    idents.truncate(n);

    let (mut first, mut rest, mut toks) = (Vec::new(), 0.0, 0usize);
    let mut line_hits = 0;
    for &(i, end) in &lines {
        let c = complete(lm, &test[i - ctx..i], |b| b.contains(&b'\n'))?;
        let got = c.bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let want = &test[i..end];
        if String::from_utf8_lossy(got).trim() == String::from_utf8_lossy(want).trim() {
            line_hits += 1;
        }
        first.push(c.first_s);
        rest += c.rest_s;
        toks += c.tokens.saturating_sub(1);
    }
    // fill-in-the-middle, for a run trained for it
    let fim = loaded
        .config
        .model
        .config
        .get("fim")
        .and_then(|v| v.as_float())
        .is_some_and(|r| r > 0.0);
    let (mut fim_lines, mut fim_idents, mut fim_ended) = (0, 0, 0);
    let (mut nats_fim, mut nats_eot, mut nats_plain, mut ident_bytes) = (0.0, 0.0, 0.0, 0usize);
    if fim {
        for &(i, end) in &lines {
            let suffix = &test[end..(end + ctx).min(test.len())];
            let (got, _) = fill(lm, &test[i - ctx..i], suffix, 64)?;
            let got = got.split(|&b| b == b'\n').next().unwrap_or(&[]);
            if String::from_utf8_lossy(got).trim() == String::from_utf8_lossy(&test[i..end]).trim()
            {
                fim_lines += 1;
            }
        }
        for &(i, end) in &idents {
            let suffix = &test[end..(end + ctx).min(test.len())];
            let (got, ended) = fill(lm, &test[i - ctx..i], suffix, 24)?;
            let word: Vec<u8> = got.iter().copied().take_while(|&b| is_ident(b)).collect();
            if word == test[i..end] {
                fim_idents += 1;
                if ended && got.len() == word.len() {
                    fim_ended += 1;
                }
            }
            let (f, e, p) = middle_nats(lm, &test[i - ctx..i], &test[i..end], suffix)?;
            nats_fim += f;
            nats_eot += e;
            nats_plain += p;
            ident_bytes += end - i;
        }
    }
    let share = |x: f64| {
        if fim {
            format!("{x:.4}")
        } else {
            "null".to_string()
        }
    };
    let bits = |nats: f64| nats / std::f64::consts::LN_2 / ident_bytes.max(1) as f64;

    let mut ident_hits = 0;
    for &(i, end) in &idents {
        let c = complete(lm, &test[i - ctx..i], |b| b.iter().any(|&x| !is_ident(x)))?;
        let got: Vec<u8> = c
            .bytes
            .iter()
            .copied()
            .take_while(|&b| is_ident(b))
            .collect();
        if got == test[i..end] {
            ident_hits += 1;
        }
    }
    first.sort_by(f64::total_cmp);
    let median_first = first.get(first.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "{{\"run\":\"{}\",\"tokenizer\":\"{}\",\"vocab\":{},\"test_bytes\":{},\"next_line_exact\":{:.4},\"lines\":{},\"identifier_exact\":{:.4},\"identifiers\":{},\"fim_line_exact\":{},\"fim_identifier_exact\":{},\"fim_identifier_ended\":{},\"identifier_bits_per_byte_fim\":{},\"identifier_bits_per_byte_prefix_only\":{},\"end_of_middle_bits\":{},\"first_token_ms_median\":{:.1},\"tokens_per_s\":{},\"threads\":{}}}",
        run_dir.display(),
        lm.tokenizer().name(),
        lm.tokenizer().vocab_size(),
        test.len(),
        line_hits as f64 / lines.len().max(1) as f64,
        lines.len(),
        ident_hits as f64 / idents.len().max(1) as f64,
        idents.len(),
        share(fim_lines as f64 / lines.len().max(1) as f64),
        share(fim_idents as f64 / idents.len().max(1) as f64),
        share(fim_ended as f64 / idents.len().max(1) as f64),
        share(bits(nats_fim)),
        share(bits(nats_plain)),
        share(nats_eot / std::f64::consts::LN_2 / idents.len().max(1) as f64),
        median_first * 1000.0,
        if toks > 0 {
            format!("{:.1}", toks as f64 / rest.max(1e-9))
        } else {
            "null".to_string()
        },
        rayon::current_num_threads()
    );
    Ok(())
}
