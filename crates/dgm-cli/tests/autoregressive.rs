//! The autoregressive family through the real binary: a tiny character language model trained on a small
//! corpus (sampling with a prompt, with and without the KV cache, scoring text, evaluating bits per
//! character), and the bad inputs of `sample`, `score` and `edit complete`.

mod common;

use std::path::Path;

use common::*;

/// A corpus with 12 distinct characters and a lot of structure.
fn corpus() -> String {
    let mut s = String::new();
    for i in 0..300 {
        s.push_str(if i % 3 == 0 {
            "ROMEO: hi\n"
        } else {
            "MEME: ho\n"
        });
    }
    s
}

/// Trains a tiny gpt on `corpus()` into `d/run`.
fn train_tiny_gpt(d: &Path) -> std::path::PathBuf {
    let text = d.join("corpus.txt");
    std::fs::write(&text, corpus()).unwrap();
    let run_dir = d.join("run");
    let o = run(dgm()
        .args(["train", "gpt", "--data"])
        .arg(format!("text:{}", text.display()))
        .args(["--steps", "60", "--quiet", "--out"])
        .arg(&run_dir)
        .args([
            "--set",
            "model.n_layer=1",
            "--set",
            "model.n_head=2",
            "--set",
            "model.n_embd=16",
            "--set",
            "data.text.context=16",
            "--set",
            "train.batch_size=8",
            "--set",
            "train.lr=1e-2",
            "--set",
            "train.eval_every=0",
            "--set",
            "train.eval_batches=2",
        ]));
    assert!(o.status.success(), "train: {}", stderr(&o));
    run_dir
}

#[test]
fn gpt_trains_samples_scores_and_evaluates() {
    let d = tmp("gpt");
    let r = train_tiny_gpt(&d);
    let cfg = std::fs::read_to_string(r.join("config.toml")).unwrap();
    assert!(
        cfg.contains("[model.tokenizer]") && cfg.contains("kind = \"chars\""),
        "{cfg}"
    );
    let samples = std::fs::read_to_string(r.join("samples").join("samples.txt")).unwrap();
    assert_eq!(samples.len(), 500, "{samples}");

    // streamed sample with a prompt: the prompt, then exactly max-tokens characters (all ASCII here)
    let sample = |extra: &[&str]| {
        let o = run(dgm()
            .args(["sample", "--run"])
            .arg(&r)
            .args(["--prompt", "ROMEO:", "--max-tokens", "40", "--seed", "3"])
            .args(extra));
        assert!(o.status.success(), "sample: {}", stderr(&o));
        stdout(&o)
    };
    let with_cache = sample(&["--temperature", "0.8", "--top-k", "5"]);
    assert!(with_cache.starts_with("ROMEO:"), "{with_cache}");
    assert_eq!(
        with_cache.trim_end_matches('\n').len(),
        6 + 40,
        "{with_cache:?}"
    );
    let without = sample(&["--temperature", "0.8", "--top-k", "5", "--no-kv-cache"]);
    assert_eq!(with_cache, without);
    let nucleus = sample(&["--top-p", "0.9", "-n", "2"]);
    assert_eq!(nucleus.matches("--- sample").count(), 2, "{nucleus}");

    // scoring: the training text scores far better than shuffled characters of the same vocabulary;
    // bytes outside the vocabulary are reported, not fatal
    let good = d.join("good.txt");
    std::fs::write(&good, &corpus()[..400]).unwrap();
    let bad = d.join("bad.txt");
    let scrambled: String = corpus()[..400]
        .chars()
        .enumerate()
        .map(|(i, _)| ['R', 'O', 'M', 'E', ':', ' ', 'h', 'i', '\n', 'o'][(i * 7) % 10])
        .collect();
    std::fs::write(&bad, format!("{scrambled}€€")).unwrap();
    let score = |file: &Path| {
        let o = run(dgm()
            .args(["score", "--run"])
            .arg(&r)
            .arg("--text")
            .arg(file));
        assert!(o.status.success(), "score: {}", stderr(&o));
        let out = stdout(&o);
        let summary = out
            .lines()
            .find(|l| l.contains("nats/char"))
            .unwrap()
            .to_string();
        let per: f64 = summary
            .split(" nats/char")
            .next()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        (out, per)
    };
    let (good_out, good_per) = score(&good);
    let (bad_out, bad_per) = score(&bad);
    assert!(
        good_out.starts_with("index\ttoken\tlog_p_nats"),
        "{good_out}"
    );
    assert_eq!(good_out.lines().count(), 1 + 400 + 1, "one line per token");
    assert!(good_per < 0.6 * bad_per, "{good_per} vs {bad_per}");
    assert!(
        bad_out.contains("6 byte(s) outside the vocabulary were skipped"),
        "{bad_out}"
    );

    // eval reports bits per character on the validation windows
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args(["--split", "validation"]));
    assert!(o.status.success(), "eval: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("bits/char") && out.contains("exact"), "{out}");
}

/// A BPE tokenizer learned on the corpus: saved with the run, text streams out of merged tokens, `score`
/// scores a file with bytes the corpus never had, and `eval` adds bits per byte; a bad vocabulary size is
/// refused.
#[test]
fn gpt_with_bpe_tokens_samples_scores_and_evaluates() {
    let d = tmp("gpt-bpe");
    let text = d.join("corpus.txt");
    std::fs::write(&text, corpus()).unwrap();
    let r = d.join("run");
    let o = run(&mut train_cmd(
        "gpt",
        &format!("text:{}", text.display()),
        &r,
        30,
        &[
            "data.text.tokenizer=bpe:270",
            "model.n_layer=1",
            "model.n_head=2",
            "model.n_embd=16",
            "data.text.context=8",
            "train.batch_size=8",
            "train.lr=1e-2",
            "train.eval_batches=2",
        ],
    ));
    assert!(o.status.success(), "train: {}", stderr(&o));
    let cfg = std::fs::read_to_string(r.join("config.toml")).unwrap();
    assert!(
        cfg.contains("kind = \"bpe\"") && cfg.contains("merges"),
        "{cfg}"
    );
    let o = run(dgm().args(["sample", "--run"]).arg(&r).args([
        "--prompt",
        "ROMEO:",
        "--max-tokens",
        "20",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("ROMEO:"));
    let other = d.join("other.txt");
    std::fs::write(&other, "ROMEO: hi\nZ€\n").unwrap();
    let o = run(dgm()
        .args(["score", "--run"])
        .arg(&r)
        .args(["--summary", "--text"])
        .arg(&other));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("bits/token (exact,"), "{}", stdout(&o));
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args(["--split", "validation"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("bits/byte"), "{}", stdout(&o));
    let o = run(&mut train_cmd(
        "gpt",
        &format!("text:{}", text.display()),
        &d.join("bad"),
        1,
        &["data.text.tokenizer=bpe:100"],
    ));
    assert_bad_input(&o, &["tokenizer", "bpe"]);
}

/// A tiny GPT trained with fill-in-the-middle writes a middle between a prompt and a suffix: stdout is the
/// prompt, the middle and the suffix, and `--out` holds the same.
#[test]
fn gpt_fills_the_middle() {
    let d = tmp("gpt-fim");
    let text = d.join("corpus.txt");
    std::fs::write(&text, corpus()).unwrap();
    let r = d.join("run");
    let o = run(&mut train_cmd(
        "gpt",
        &format!("text:{}", text.display()),
        &r,
        30,
        &[
            "model.fim=0.5",
            "model.n_layer=1",
            "model.n_head=2",
            "model.n_embd=16",
            "data.text.context=24",
            "train.batch_size=8",
            "train.lr=1e-2",
            "train.eval_batches=2",
        ],
    ));
    assert!(o.status.success(), "train: {}", stderr(&o));
    let out = d.join("filled.txt");
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args([
            "--prompt",
            "ROMEO: hi\nME",
            "--suffix",
            "ho\nROMEO: hi\n",
            "--max-tokens",
            "6",
            "--out",
        ])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let got = stdout(&o);
    assert!(
        got.starts_with("ROMEO: hi\nME") && got.ends_with("ho\nROMEO: hi\n\n"),
        "{got:?}"
    );
    let middle = got.len() - "ROMEO: hi\nME".len() - "ho\nROMEO: hi\n\n".len();
    assert!(middle <= 6, "{got:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), got);
    // the suffix from a file; no prompt: the gap starts the text
    let suffix = d.join("suffix.txt");
    std::fs::write(&suffix, "MEME: ho\n").unwrap();
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["--max-tokens", "4", "--suffix-file"])
        .arg(&suffix));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).ends_with("MEME: ho\n\n"), "{}", stdout(&o));
    let o = run(&mut train_cmd(
        "gpt",
        &format!("text:{}", text.display()),
        &d.join("bad"),
        1,
        &["model.fim=2"],
    ));
    assert_bad_input(&o, &["model.fim", "[0, 1]"]);
}

#[test]
fn gpt_bad_inputs_exit_2_with_one_line() {
    let d = tmp("gpt-bad");
    let r = train_tiny_gpt(&d);
    let bad = |args: &[&str], needles: &[&str]| {
        let o = run(dgm().args(["sample", "--run"]).arg(&r).args(args));
        assert_bad_input(&o, needles);
    };
    bad(&["--prompt", ""], &["prompt", "empty"]);
    bad(&["--prompt", "ROMEO: xyz"], &["'x'", "offset 7"]);
    // a prompt file that is not UTF-8 text for a character model: named by its flag
    let binary = d.join("binary.rs");
    std::fs::write(&binary, b"\xff\xfe\x00ROMEO").unwrap();
    bad(
        &["--prompt-file", binary.to_str().unwrap()],
        &["--prompt-file", "0xff", "offset 0"],
    );
    bad(&["--max-tokens", "0"], &["max-tokens"]);
    // fill-in-the-middle needs a model trained for it; a suffix outside the vocabulary is named by its flag
    bad(&["--suffix", "hi\n"], &["fill in the middle", "model.fim"]);
    let suffix = d.join("suffix.rs");
    std::fs::write(&suffix, b"MEME\xff").unwrap();
    bad(
        &["--suffix-file", suffix.to_str().unwrap()],
        &["--suffix-file", "0xff", "offset 4"],
    );
    bad(&["--temperature", "0"], &["temperature"]);
    bad(&["--temperature=-1"], &["temperature"]);
    bad(&["--top-k", "0"], &["top-k"]);
    bad(&["--top-p", "1.5"], &["top-p"]);
    let o = run(dgm()
        .args(["score", "--run"])
        .arg(&r)
        .arg("--text")
        .arg(d.join("nothere.txt")));
    assert_bad_input(&o, &["nothere.txt"]);
    let empty = d.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let o = run(dgm()
        .args(["score", "--run"])
        .arg(&r)
        .arg("--text")
        .arg(&empty));
    assert_bad_input(&o, &["empty"]);
    let png = d.join("x.png");
    let o = run(dgm()
        .args(["edit", "complete", "--run"])
        .arg(&r)
        .arg("--image")
        .arg(&png)
        .args(["--rows", "3", "--out"])
        .arg(d.join("o.png")));
    assert_bad_input(&o, &["gpt", "cannot complete"]);
    // a language model needs text data
    let o = run(dgm()
        .args([
            "train",
            "gpt",
            "--data",
            "toy2d:moons",
            "--steps",
            "2",
            "--out",
        ])
        .arg(d.join("r2")));
    assert_bad_input(&o, &["text"]);
}

/// Trains a tiny `model` on binarized MNIST for a few steps into `d/run` (`None` without DGM_DATA).
fn train_mnist(d: &Path, model: &str, extra: &[&str]) -> Option<std::path::PathBuf> {
    let data = shared_data()?;
    let r = d.join("run");
    let o = run(dgm()
        .args([
            "train", model, "--data", "mnist", "--steps", "3", "--quiet", "--out",
        ])
        .arg(&r)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--set",
            "train.batch_size=16",
            "--set",
            "train.eval_batches=1",
        ])
        .args(extra));
    assert!(o.status.success(), "train {model}: {}", stderr(&o));
    Some(r)
}

/// MADE and PixelCNN: train, exact NLL in bits/dim, image completion, and its bad inputs.
#[test]
fn made_and_pixelcnn_train_score_and_complete_mnist() {
    for (model, extra) in [
        ("made", &["--set", "model.hidden=[64]"][..]),
        (
            "pixelcnn",
            &["--set", "model.channels=8", "--set", "model.layers=2"][..],
        ),
    ] {
        let d = tmp(&format!("{model}-mnist"));
        let Some(r) = train_mnist(&d, model, extra) else {
            eprintln!("DGM_DATA not set: skipping {model} on MNIST");
            return;
        };
        let data = shared_data().unwrap();
        let o = run(dgm()
            .args(["eval", "--run"])
            .arg(&r)
            .args(["--limit", "20", "--data-dir"])
            .arg(&data));
        assert!(o.status.success(), "eval {model}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("exact") && out.contains("bits/dim"), "{out}");

        // completion: a 28×28 grey PNG, top 14 rows kept
        let img = d.join("digit.png");
        let o = run(dgm()
            .args(["sample", "--run"])
            .arg(&r)
            .args(["-n", "1", "--out"])
            .arg(&img));
        assert!(o.status.success(), "sample {model}: {}", stderr(&o));
        // the sample grid has a 2-pixel border: cut the 28×28 image out of it
        let grid = image::open(&img).unwrap().to_luma8();
        let digit = image::imageops::crop_imm(&grid, 2, 2, 28, 28).to_image();
        digit.save(&img).unwrap();
        let out_png = d.join("completed.png");
        let o = run(dgm()
            .args(["edit", "complete", "--run"])
            .arg(&r)
            .arg("--image")
            .arg(&img)
            .args(["--rows", "14", "-n", "3", "--out"])
            .arg(&out_png));
        assert!(o.status.success(), "complete {model}: {}", stderr(&o));
        let done = image::open(&out_png).unwrap().to_luma8();
        // 4 panels (kept part + 3 completions) of 28 + 2 px border, + 2 px at the end
        assert_eq!((done.width(), done.height()), (4 * 30 + 2, 32));
        // every completion keeps the known rows of the input exactly
        for k in 1..4u32 {
            for y in 0..14u32 {
                for x in 0..28u32 {
                    let want = digit.get_pixel(x, y).0[0];
                    let got = done.get_pixel(2 + k * 30 + x, 2 + y).0[0];
                    assert_eq!(got, want, "{model} completion {k} pixel ({x}, {y})");
                }
            }
        }
        // bad inputs: wrong image size, too many rows
        let small = d.join("small.png");
        image::GrayImage::new(10, 10).save(&small).unwrap();
        let o = run(dgm()
            .args(["edit", "complete", "--run"])
            .arg(&r)
            .arg("--image")
            .arg(&small)
            .args(["--rows", "3", "--out"])
            .arg(d.join("x.png")));
        assert_bad_input(&o, &["10×10", "28×28"]);
        let o = run(dgm()
            .args(["edit", "complete", "--run"])
            .arg(&r)
            .arg("--image")
            .arg(&img)
            .args(["--rows", "29", "--out"])
            .arg(d.join("x.png")));
        assert_bad_input(&o, &["--rows", "29"]);
        // --class on an unconditional run is refused, not ignored; -n that cannot fit is refused up front
        let o = run(dgm()
            .args(["edit", "complete", "--run"])
            .arg(&r)
            .arg("--image")
            .arg(&img)
            .args(["--rows", "14", "--class", "3", "--out"])
            .arg(d.join("x.png")));
        assert_bad_input(&o, &["--class", "unconditional"]);
        let o = run(dgm()
            .env("DGM_MEMORY_LIMIT", "1GB")
            .args(["edit", "complete", "--run"])
            .arg(&r)
            .arg("--image")
            .arg(&img)
            .args(["--rows", "14", "-n", "1000000000", "--out"])
            .arg(d.join("x.png")));
        assert_bad_input(&o, &["-n", "1000000000 images", "DGM_MEMORY_LIMIT"]);
    }
}
