//! Integration tests: run the real `dgm` binary on tiny configs.

mod common;

use common::{assert_bad_input, dgm, run, shared_data, stderr, stdout, tmp};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TINY: &[&str] = &[
    "--set",
    "model.hidden=[32]",
    "--set",
    "model.latent_dim=2",
    "--set",
    "train.batch_size=32",
    "--set",
    "data.sizes.train=256",
    "--set",
    "data.sizes.validation=64",
    "--set",
    "data.sizes.test=64",
    "--set",
    "train.log_every=5",
    "--set",
    "train.eval_batches=2",
    "--quiet",
];

/// File `name` of the run's committed checkpoint (the folder `checkpoint.json` names).
fn checkpoint_file(run: &Path, name: &str) -> std::path::PathBuf {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint.json")).unwrap())
            .unwrap();
    run.join(m["dir"].as_str().unwrap()).join(name)
}

fn train_tiny(out: &Path, model: &str, data: &str, steps: u64, extra: &[&str]) -> Output {
    run(dgm()
        .args(["train", model, "--data", data, "--out"])
        .arg(out)
        .args(["--steps", &steps.to_string(), "--seed", "7"])
        .args(TINY)
        .args(extra))
}

#[test]
fn help_lists_models_and_data_sets() {
    for sub in [
        vec!["--help"],
        vec!["train", "--help"],
        vec!["sample", "--help"],
        vec!["eval", "--help"],
    ] {
        let o = run(dgm().args(&sub));
        assert!(o.status.success());
        let s = stdout(&o);
        for n in ["vae", "iwae", "cvae", "mnist", "shapes", "toy2d:", "text:"] {
            assert!(s.contains(n), "{sub:?} help lacks {n}");
        }
    }
}

/// The help texts are generated from the model registry: every registry name is listed, and the refusals
/// name the models that have the ability asked for.
#[test]
fn help_lists_every_registry_model() {
    let names = dgm::models::model_names();
    let line = format!("Models: {}", names.join(", "));
    for sub in [
        vec!["--help"],
        vec!["train", "--help"],
        vec!["sample", "--help"],
        vec!["eval", "--help"],
        vec!["score", "--help"],
    ] {
        let o = run(dgm().args(&sub));
        assert!(o.status.success());
        let s = stdout(&o);
        assert!(s.contains(&line), "{sub:?} help lacks {line:?}:\n{s}");
    }
    let o = run(dgm().args(["train", "--help"]));
    assert!(stdout(&o).contains(&format!("Model name: {}.", names.join(", "))));
    let o = run(dgm().args(["edit", "--help"]));
    let complete = dgm::models::names_with(|a| a.complete);
    assert!(!complete.is_empty());
    assert!(stdout(&o).contains(&complete.join(", ")), "{}", stdout(&o));
    // no model and no config: the hint names one model of each family
    let o = run(dgm().args(["train"]));
    assert_bad_input(
        &o,
        &[
            "name a model (e.g. vae, ddpm, made, realnvp, dcgan, ebm)",
            "--config",
        ],
    );
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let d = tmp("bad");
    let out = d.join("r");
    // an instruction set the kernels cannot be forced to is refused, naming the valid ones
    let o = run(dgm().args(["data", "info"]).env("DGM_ISA", "avx9"));
    assert_bad_input(&o, &["DGM_ISA", "avx9", "baseline"]);
    let o = run(dgm()
        .args(["train", "vea", "--data", "shapes", "--out"])
        .arg(&out));
    assert_bad_input(&o, &["vea", "vae, iwae, cvae"]);
    let o = run(dgm()
        .args(["train", "vae", "--data", "mnst", "--out"])
        .arg(&out));
    assert_bad_input(&o, &["mnst", "mnist", "shapes", "toy2d:moons"]);
    let o = run(dgm()
        .args(["train", "vae", "--data", "toy2d:blobs", "--out"])
        .arg(&out));
    assert_bad_input(&o, &["blobs", "checkerboard"]);
    // a device this build cannot use: one line naming it, and no run folder left behind
    if !cfg!(feature = "cuda") {
        let o = run(dgm()
            .args([
                "train", "vae", "--data", "shapes", "--device", "cuda", "--out",
            ])
            .arg(&out));
        assert_bad_input(&o, &["--device", "cuda is not available"]);
        assert!(!out.exists(), "a refused device left {}", out.display());
    }
    let o = run(dgm()
        .args([
            "train", "vae", "--data", "shapes", "--device", "tpu", "--out",
        ])
        .arg(&out));
    assert_bad_input(&o, &["tpu", "cpu", "cuda"]);
    let o = run(dgm()
        .args([
            "train",
            "vae",
            "--data",
            "shapes",
            "--set",
            "train.lrr=1",
            "--out",
        ])
        .arg(&out));
    assert_bad_input(&o, &["train.lrr", "lr"]);
    let o = run(dgm()
        .args([
            "train",
            "vae",
            "--data",
            "shapes",
            "--set",
            "model.latent_dim=many",
            "--out",
        ])
        .arg(&out));
    assert_bad_input(&o, &["model.latent_dim", "many"]);
    let o = run(dgm()
        .args([
            "train",
            "vae",
            "--data",
            "shapes",
            "--set",
            "model.arch=rnn",
            "--out",
        ])
        .arg(&out));
    assert_bad_input(&o, &["rnn", "mlp", "conv"]);
    let o = run(dgm()
        .args([
            "train", "vae", "--data", "shapes", "--set", "nonsense", "--out",
        ])
        .arg(&out));
    assert_bad_input(&o, &["nonsense"]);
    // MNIST missing: says where it looked
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = run(dgm()
        .args(["train", "vae", "--data", "mnist", "--data-dir"])
        .arg(&empty)
        .arg("--out")
        .arg(&out));
    assert_bad_input(&o, &["mnist", "empty"]);
    // corrupt MNIST: a file with the wrong magic number
    let bad = d.join("corrupt");
    std::fs::create_dir_all(bad.join("mnist")).unwrap();
    for f in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::write(
            bad.join("mnist").join(f),
            [0u8, 0, 8, 4, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28],
        )
        .unwrap();
    }
    let o = run(dgm()
        .args(["train", "vae", "--data", "mnist", "--data-dir"])
        .arg(&bad)
        .arg("--out")
        .arg(&out));
    assert_bad_input(&o, &["train-images-idx3-ubyte", "magic"]);
    // missing run directory
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(d.join("nope"))
        .args(["--out", "x.png"]));
    assert_bad_input(&o, &["nope", "no such run"]);
    let o = run(dgm().args(["eval", "--run"]).arg(d.join("nope")));
    assert_bad_input(&o, &["nope"]);
    let o = run(dgm().args(["train", "--resume"]).arg(d.join("nope")));
    assert_bad_input(&o, &["nope"]);
    let o = run(dgm().args(["eval", "--run", "x", "--weights", "best"]));
    assert_bad_input(&o, &["best", "ema, model"]);
    // a checkpoint that does not match its config
    let r = d.join("run");
    let o = train_tiny(&r, "vae", "toy2d:moons", 3, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = std::fs::read_to_string(r.join("config.toml")).unwrap();
    std::fs::write(
        r.join("config.toml"),
        cfg.replace("latent_dim = 2", "latent_dim = 3"),
    )
    .unwrap();
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "4", "--out"])
        .arg(d.join("s.png")));
    assert_bad_input(&o, &["shape", "config"]);
    std::fs::write(
        r.join("config.toml"),
        cfg.replace("latent_dim = 2", "latent_dim = 2\nbogus = 1"),
    )
    .unwrap();
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "4", "--out"])
        .arg(d.join("s.png")));
    assert_bad_input(&o, &["bogus"]);
    // training into an existing run
    std::fs::write(r.join("config.toml"), &cfg).unwrap();
    let o = train_tiny(&r, "vae", "toy2d:moons", 3, &[]);
    assert_bad_input(&o, &["already holds a run", "--resume"]);
    // class for an unconditional model
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "4", "--class", "1", "--out"])
        .arg(d.join("s.png")));
    assert_bad_input(&o, &["class"]);
}

#[test]
fn train_sample_eval_encode_interpolate_on_shapes() {
    let d = tmp("shapes");
    let r = d.join("run");
    let o = train_tiny(
        &r,
        "vae",
        "shapes",
        10,
        &[
            "--set",
            "train.sample_every=5",
            "--set",
            "train.eval_every=5",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "config.toml",
        "checkpoint.json",
        "checkpoints/step-00000010/model.safetensors",
        "checkpoints/step-00000010/ema.safetensors",
        "checkpoints/step-00000010/optimizer.safetensors",
        "metrics.jsonl",
        "loss.svg",
        "samples/samples.png",
        "samples/step-0000005.png",
    ] {
        assert!(r.join(f).is_file(), "missing {f}");
    }
    let metrics = std::fs::read_to_string(r.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() >= 4, "{metrics}");
    assert!(metrics.contains("\"kl\"") && metrics.contains("\"val_loss\""));
    let png = d.join("grid.png");
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "9", "--seed", "3", "--out"])
        .arg(&png));
    assert!(o.status.success(), "{}", stderr(&o));
    let img = std::fs::read(&png).unwrap();
    assert_eq!(&img[1..4], b"PNG");
    // same seed, same picture
    let png2 = d.join("grid2.png");
    assert!(run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "9", "--seed", "3", "--out"])
        .arg(&png2))
    .status
    .success());
    assert_eq!(img, std::fs::read(&png2).unwrap());
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args(["--iwae-k", "8", "--limit", "20"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(
        s.contains("lower bound (ELBO)")
            && s.contains("estimate (IWAE-8)")
            && s.contains("bits/dim"),
        "{s}"
    );
    assert!(r.join("eval-test.json").is_file());
    let csv = d.join("codes.csv");
    let o = run(dgm()
        .args(["encode", "--run"])
        .arg(&r)
        .args(["--limit", "5", "--out"])
        .arg(&csv));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(text.starts_with("index,label,z0,z1\n"));
    let strip = d.join("strip.png");
    let o = run(dgm()
        .args(["interpolate", "--run"])
        .arg(&r)
        .args(["--from", "0", "--to", "3", "--steps", "5", "--out"])
        .arg(&strip));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(dgm()
        .args(["interpolate", "--run"])
        .arg(&r)
        .args(["--from", "0", "--to", "99999", "--out"])
        .arg(&strip));
    assert_bad_input(&o, &["99999", "64 examples"]);
}

#[test]
fn conditional_vae_samples_a_class() {
    let d = tmp("cvae");
    let r = d.join("run");
    // the shipped config (conv CVAE), shrunk by --set
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/cvae-shapes.toml");
    let o = run(dgm()
        .arg("train")
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&r)
        .args(["--steps", "4", "--set", "model.channels=[4,8]"])
        .args(TINY));
    assert!(o.status.success(), "{}", stderr(&o));
    let written = std::fs::read_to_string(r.join("config.toml")).unwrap();
    assert!(
        written.contains("arch = \"conv\"") && written.contains("conditional = true"),
        "{written}"
    );
    let png = d.join("c.png");
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "4", "--class", "2", "--out"])
        .arg(&png));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "4", "--class", "99", "--out"])
        .arg(&png));
    assert_bad_input(&o, &["99"]);
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "4", "--class", "1", "--sampler", "ddim", "--out"])
        .arg(&png));
    assert_bad_input(&o, &["cvae", "diffusion"]);
}

/// Resuming an interrupted run gives the same bits as an uninterrupted one, and so does another thread count.
#[test]
fn interrupted_and_resumed_equals_uninterrupted() {
    let d = tmp("resume");
    let full = d.join("full");
    let o = train_tiny(
        &full,
        "iwae",
        "toy2d:8gaussians",
        12,
        &[
            "--set",
            "train.grad_clip=1.0",
            "--set",
            "train.warmup_steps=3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let part = d.join("part");
    let o = train_tiny(
        &part,
        "iwae",
        "toy2d:8gaussians",
        12,
        &[
            "--set",
            "train.grad_clip=1.0",
            "--set",
            "train.warmup_steps=3",
            "--stop-after",
            "5",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let state = std::fs::read_to_string(part.join("checkpoint.json")).unwrap();
    assert!(state.contains("\"step\": 5,"), "{state}");
    let o = run(dgm()
        .args(["train", "--quiet", "--stop-after", "4", "--resume"])
        .arg(&part));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(dgm().args(["train", "--quiet", "--resume"]).arg(&part));
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
    ] {
        let a = std::fs::read(checkpoint_file(&full, f)).unwrap();
        let b = std::fs::read(checkpoint_file(&part, f)).unwrap();
        assert!(
            a == b,
            "{f} differs between the resumed and the uninterrupted run"
        );
    }
    // the metrics log reads like one run
    let steps = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| l.split(',').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(steps(&full), steps(&part));
    // one thread instead of the default: same bits
    let o = run(dgm()
        .env("RAYON_NUM_THREADS", "1")
        .args(["train", "iwae", "--data", "toy2d:8gaussians", "--out"])
        .arg(d.join("one-thread"))
        .args(["--steps", "12", "--seed", "7"])
        .args(TINY)
        .args([
            "--set",
            "train.grad_clip=1.0",
            "--set",
            "train.warmup_steps=3",
        ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read(checkpoint_file(&full, "model.safetensors")).unwrap()
            == std::fs::read(checkpoint_file(&d.join("one-thread"), "model.safetensors")).unwrap()
    );
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let d = tmp("nan");
    let r = d.join("run");
    let o = train_tiny(
        &r,
        "vae",
        "toy2d:moons",
        50,
        &[
            "--set",
            "train.lr=1e30",
            "--set",
            "train.warmup_steps=0",
            "--set",
            "train.checkpoint_every=1",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("at step") && err.contains("the checkpoint of step"),
        "{err}"
    );
    let state = std::fs::read_to_string(r.join("checkpoint.json")).unwrap();
    assert!(!state.contains("\"step\": 0,"), "{state}");
    let kept: String = err
        .split("the checkpoint of step ")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    assert!(
        state.contains(&format!("\"step\": {kept},")),
        "{err} {state}"
    );
    // the kept checkpoint loads
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["--weights", "model", "-n", "4", "--out"])
        .arg(d.join("s.png")));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn ctrl_c_writes_a_checkpoint_and_exits_0() {
    let d = tmp("sigint");
    let r = d.join("run");
    let child = dgm()
        .args(["train", "vae", "--data", "toy2d:moons", "--out"])
        .arg(&r)
        .args(["--steps", "1000000"])
        .args(TINY)
        .args([
            "--set",
            "train.checkpoint_every=0",
            "--set",
            "train.eval_every=0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !r.join("metrics.jsonl").exists() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let state = std::fs::read_to_string(r.join("checkpoint.json")).unwrap();
    assert!(state.contains("\"finished\": false"), "{state}");
    let o = run(dgm()
        .args(["train", "--quiet", "--stop-after", "3", "--resume"])
        .arg(&r));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn data_info_reports_what_is_found() {
    let o = run(dgm().args(["data", "info", "--data-dir", "/nonexistent-dgm"]));
    assert!(o.status.success());
    let s = stdout(&o);
    assert!(
        s.contains("/nonexistent-dgm")
            && s.contains("mnist")
            && s.contains("not found")
            && s.contains("toy2d:moons"),
        "{s}"
    );
    if let Some(p) = shared_data() {
        let o = run(dgm().args(["data", "info", "--data-dir"]).arg(&p));
        let s = stdout(&o);
        assert!(
            s.lines()
                .any(|l| l.starts_with("mnist") && l.contains("found in")),
            "{s}"
        );
    }
}

/// MNIST end to end on the real files (skipped without DGM_DATA).
#[test]
fn mnist_tiny_run() {
    let Some(data) = shared_data() else {
        eprintln!("DGM_DATA not set: skipping the MNIST run");
        return;
    };
    let d = tmp("mnist");
    let r = d.join("run");
    let o = run(dgm()
        .args(["train", "vae", "--data", "mnist", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&r)
        .args([
            "--steps",
            "30",
            "--quiet",
            "--set",
            "train.eval_batches=1",
            "--set",
            "model.hidden=[64]",
        ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .arg("--data-dir")
        .arg(&data)
        .args(["--limit", "50", "--iwae-k", "10"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(
        s.contains("statically binarized") && s.contains("50 examples"),
        "{s}"
    );
}

/// The evaluation suite end to end on shapes: a feature network, sample metrics (with class accuracy for a
/// class-conditional model), OOD detection, and a report of the runs; plus its bad inputs.
#[test]
fn evaluation_suite_on_shapes() {
    let d = tmp("evalsuite");
    let feats = d.join("features");
    let o = run(dgm()
        .args([
            "metrics",
            "train-features",
            "--data",
            "shapes",
            "--steps",
            "150",
        ])
        .args(["--generated", "3000", "600", "--quiet", "--out"])
        .arg(&feats));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("test accuracy"), "{}", stdout(&o));
    assert!(feats.join("features.json").is_file());
    let o = run(dgm()
        .args([
            "metrics",
            "train-features",
            "--data",
            "shapes",
            "--steps",
            "1",
            "--out",
        ])
        .arg(&feats));
    assert_bad_input(&o, &["already holds", "--force"]);

    let runs = d.join("runs");
    let r = runs.join("cvae");
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/cvae-shapes.toml");
    let o = run(dgm()
        .arg("train")
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&r)
        .args(["--steps", "4", "--set", "model.channels=[4,8]"])
        .args(TINY));
    assert!(o.status.success(), "{}", stderr(&o));

    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args([
            "--metric",
            "all",
            "--num-samples",
            "120",
            "--permutations",
            "50",
        ])
        .args(["--iwae-k", "2", "--limit", "16", "--features"])
        .arg(&feats));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    for needle in [
        "FID-shapes",
        "KID-shapes",
        "precision",
        "recall",
        "MMD²",
        "IS-shapes",
        "class accuracy",
        "lower bound (ELBO)",
        "not to Inception FID",
    ] {
        assert!(s.contains(needle), "no '{needle}' in {s}");
    }
    let q: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("eval-quality.json")).unwrap())
            .unwrap();
    assert!(q["fid"].as_f64().unwrap() > 0.0, "{q}");
    let p = q["mmd"]["p_value"].as_f64().unwrap();
    assert!(p > 0.0 && p <= 1.0, "{q}");
    assert_eq!(
        q["class_accuracy"]["per_class"].as_array().unwrap().len(),
        6
    );

    let o = run(dgm()
        .args(["eval", "ood", "--run"])
        .arg(&r)
        .args(["--ood", "noise,constant,invert", "--limit", "64"])
        .args(["--typicality-batch", "8", "--scores"])
        .arg(d.join("scores.csv")));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(
        s.contains("AUROC") && s.contains("noise") && s.contains("invert"),
        "{s}"
    );
    let ood: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("eval-ood.json")).unwrap()).unwrap();
    let sets = ood["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 3);
    for set in sets {
        let a = set["auroc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{set}");
    }
    // per-example scores: the 64 test examples, then 64 of each OOD set
    let csv = std::fs::read_to_string(d.join("scores.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4 * 64);
    assert!(
        csv.starts_with("set,index,nll_nats,bits_per_dim\ntest,0,"),
        "{csv}"
    );
    assert!(csv.contains("\ninvert,63,"));

    let html = d.join("report.html");
    let o = run(dgm().arg("report").arg(&runs).arg("--out").arg(&html));
    assert!(o.status.success(), "{}", stderr(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("cvae") && page.contains("data:image/png;base64,"));
    let md = d.join("report.md");
    let o = run(dgm().arg("report").arg(&runs).arg("--out").arg(&md));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&md).unwrap().contains("| "));

    // bad input: one line, exit 2, naming the valid options or the fix
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args(["--metric", "fdi"]));
    assert_bad_input(&o, &["fdi", "fid", "kid", "mmd"]);
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args(["--metric", "fid", "--features"])
        .arg(d.join("nowhere")));
    assert_bad_input(&o, &["nowhere", "train-features"]);
    let o = run(dgm()
        .args(["eval", "ood", "--run"])
        .arg(&r)
        .args(["--ood", "noise,ghosts"]));
    assert_bad_input(&o, &["ghosts", "omniglot"]);
    let o = run(dgm()
        .arg("report")
        .arg(&runs)
        .arg("--out")
        .arg(d.join("r.pdf")));
    assert_bad_input(&o, &["r.pdf", ".html"]);
    let o = run(dgm()
        .arg("report")
        .arg(d.join("empty-nowhere"))
        .arg("--out")
        .arg(&html));
    assert_bad_input(&o, &["empty-nowhere"]);
}

/// 2-D data support the MMD test on the points (and only it).
#[test]
fn mmd_on_points_and_data_comparisons() {
    let d = tmp("mmdpoints");
    let r = d.join("run");
    let o = train_tiny(&r, "vae", "toy2d:moons", 6, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(dgm().args(["eval", "--run"]).arg(&r).args([
        "--metric",
        "mmd",
        "--num-samples",
        "64",
        "--permutations",
        "100",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("points"), "{}", stdout(&o));
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args(["--metric", "fid"]));
    assert_bad_input(&o, &["fid", "mmd"]);
    // `all` is every metric that applies: NLL and the MMD test for points
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args([
            "--metric",
            "all",
            "--num-samples",
            "64",
            "--permutations",
            "50",
        ])
        .args(["--iwae-k", "2", "--limit", "16"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(
        s.contains("ELBO") && s.contains("MMD²") && !s.contains("FID"),
        "{s}"
    );
    // two splits of the same toy distribution are not told apart; the split vs itself is the floor
    let o = run(dgm().args([
        "metrics",
        "compare",
        "--data",
        "toy2d:moons",
        "--a",
        "test",
        "--b",
        "validation",
        "--metric",
        "mmd",
        "--num-samples",
        "300",
        "--permutations",
        "200",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    let p: f64 = s
        .split("p = ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no p-value in {s}"));
    assert!(p > 0.001, "{s}");
}

/// FID-MNIST: MNIST test vs train is far below MNIST test vs noise (needs DGM_DATA).
#[test]
fn fid_mnist_orders_real_and_noise() {
    let Some(data) = shared_data() else {
        eprintln!("DGM_DATA not set: skipping FID-MNIST");
        return;
    };
    let d = tmp("fidmnist");
    let feats = d.join("features");
    let o = run(dgm()
        .args([
            "metrics",
            "train-features",
            "--data",
            "mnist",
            "--steps",
            "150",
            "--quiet",
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--out")
        .arg(&feats));
    assert!(o.status.success(), "{}", stderr(&o));
    let fid = |b: &str| -> f64 {
        let o = run(dgm()
            .args([
                "metrics", "compare", "--data", "mnist", "--a", "test", "--b", b,
            ])
            .args(["--metric", "fid", "--num-samples", "1000", "--data-dir"])
            .arg(&data)
            .arg("--features")
            .arg(&feats));
        assert!(o.status.success(), "{}", stderr(&o));
        let s = stdout(&o);
        s.lines()
            .find(|l| l.starts_with("FID-mnist"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no FID in {s}"))
    };
    let (real, noise, omniglot) = (fid("train"), fid("noise"), fid("omniglot"));
    assert!(
        real >= 0.0 && real * 20.0 < noise,
        "train {real}, noise {noise}"
    );
    assert!(real * 5.0 < omniglot, "train {real}, omniglot {omniglot}");
    // a feature network of another data set (different image size) is refused with the fix
    let o = run(dgm()
        .args([
            "metrics",
            "compare",
            "--data",
            "shapes",
            "--num-samples",
            "50",
            "--features",
        ])
        .arg(&feats));
    assert_bad_input(&o, &["mnist", "shapes", "train-features"]);
}

/// DDPM end to end on a 2-D toy: train, sample with every sampler, and its bad inputs.
#[test]
fn ddpm_trains_and_samples_with_every_sampler() {
    let d = tmp("ddpm");
    let r = d.join("run");
    let o = run(dgm()
        .args(["train", "ddpm", "--data", "toy2d:8gaussians", "--out"])
        .arg(&r)
        .args(["--steps", "20", "--seed", "3", "--quiet"])
        .args([
            "--set",
            "model.net.mlp_width=32",
            "--set",
            "data.sizes.train=512",
        ])
        .args([
            "--set",
            "train.eval_batches=1",
            "--set",
            "train.batch_size=64",
        ]));
    assert!(o.status.success(), "{}", stderr(&o));
    for s in ["ddpm", "ddim", "euler", "heun", "dpm++2m", "langevin", "pc"] {
        for steps in ["1", "3"] {
            let o = run(dgm()
                .args(["sample", "--run"])
                .arg(&r)
                .args(["-n", "16", "--sampler", s, "--steps", steps, "--out"])
                .arg(d.join(format!("{s}.png"))));
            assert!(o.status.success(), "{s} {steps}: {}", stderr(&o));
        }
    }
    let png = d.join("x.png");
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["--sampler", "eulr", "--out"])
        .arg(&png));
    assert_bad_input(&o, &["eulr", "heun", "dpm++2m"]);
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["--steps", "0", "--out"])
        .arg(&png));
    assert_bad_input(&o, &["steps"]);
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["--class", "1", "--out"])
        .arg(&png));
    assert_bad_input(&o, &["unconditional"]);
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["--guidance", "3", "--out"])
        .arg(&png));
    assert_bad_input(&o, &["guidance", "unconditional"]);
    // likelihoods: the bound and the ODE estimate, one at a time with --estimator
    for (est, kind) in [("vlb", "lower bound (VLB)"), ("ode", "estimate (ODE)")] {
        let o = run(dgm()
            .args(["eval", "--run"])
            .arg(&r)
            .args(["--split", "validation", "--limit", "32", "--estimator", est])
            .args(["--likelihood-steps", "8"]));
        assert!(o.status.success(), "{est}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(kind) && !out.contains("elbo"), "{est}: {out}");
    }
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args(["--estimator", "elbo"]));
    assert_bad_input(&o, &["elbo", "vlb", "ode"]);
    // sample metrics with a chosen sampler: recorded in the report
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args([
            "--metric",
            "mmd",
            "--num-samples",
            "100",
            "--permutations",
            "20",
        ])
        .args(["--sampler", "euler", "--steps", "4"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let q = std::fs::read_to_string(r.join("eval-quality.json")).unwrap();
    assert!(
        q.contains("\"sampler\": \"euler\"") && q.contains("\"sampler_steps\": 4"),
        "{q}"
    );
    // DDIM inversion as the latent space: an interpolation strip on images (tiny UNet, 5 steps)
    let img = d.join("img-run");
    let o = run(dgm()
        .args(["train", "ddpm", "--data", "shapes", "--out"])
        .arg(&img)
        .args(["--steps", "2", "--quiet"])
        .args([
            "--set",
            "model.net.unet.base_channels=8",
            "--set",
            "model.net.unet.groups=4",
        ])
        .args([
            "--set",
            "model.net.unet.channel_mult=[1,2]",
            "--set",
            "model.net.unet.num_res_blocks=1",
        ])
        .args([
            "--set",
            "model.net.unet.attention_resolutions=[]",
            "--set",
            "model.sample_steps=5",
        ])
        .args([
            "--set",
            "train.eval_batches=1",
            "--set",
            "train.batch_size=8",
        ])
        .args([
            "--set",
            "data.sizes.train=64",
            "--set",
            "data.sizes.validation=16",
        ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let strip = d.join("strip.png");
    let o = run(dgm()
        .args(["interpolate", "--run"])
        .arg(&img)
        .args([
            "--split",
            "validation",
            "--from",
            "0",
            "--to",
            "1",
            "--steps",
            "4",
            "--out",
        ])
        .arg(&strip));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(strip.exists());
    // image size not divisible by the UNet's down-sampling
    let o = run(dgm()
        .args(["train", "ddpm", "--data", "shapes", "--out"])
        .arg(d.join("img"))
        .args([
            "--steps",
            "1",
            "--set",
            "model.net.unet.channel_mult=[1,1,1,1,1,1,1]",
        ]));
    assert_bad_input(&o, &["32", "divisible"]);
}
