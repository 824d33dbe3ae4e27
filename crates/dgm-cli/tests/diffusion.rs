//! Integration tests of the score-based diffusion models (EDM, NCSN): run the real `dgm` binary on tiny
//! configs — train on a 2-D toy and on shapes, sample with every sampler, and the bad inputs' exit code 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SAMPLERS: &[&str] = &["ddpm", "ddim", "euler", "heun", "dpm++2m", "langevin", "pc"];

fn dgm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dgm"));
    c.env_remove("DGM_DATA");
    c
}

/// A fresh temporary directory, removed when the test passes (kept for a look when it fails).
struct TmpDir(PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn tmp(name: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("dgm-diffusion-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

fn run(c: &mut Command) -> Output {
    c.stdin(Stdio::null()).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Bad input: exit code 2, one line on stderr that contains each of `needles`, no panic.
fn assert_bad_input(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit 2, got {:?}; stderr: {err}",
        o.status.code()
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "panic: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks '{n}': {err}");
    }
}

/// `dgm train MODEL --data toy2d:8gaussians` for `steps` steps with a small MLP and data set.
fn train_toy(out: &Path, model: &str, steps: &str, extra: &[&str]) -> Output {
    run(dgm()
        .args(["train", model, "--data", "toy2d:8gaussians", "--out"])
        .arg(out)
        .args(["--steps", steps, "--seed", "3", "--quiet"])
        .args(["--set", "model.net.mlp_width=32"])
        .args(["--set", "data.sizes.train=512"])
        .args(["--set", "train.eval_batches=1"])
        .args(["--set", "train.batch_size=64"])
        .args(extra))
}

/// Samples from run `r` with every sampler at 1 and 3 steps, then the sampling bad inputs.
fn samples_with_every_sampler(d: &Path, r: &Path, model: &str) {
    for s in SAMPLERS {
        for steps in ["1", "3"] {
            let o = run(dgm()
                .args(["sample", "--run"])
                .arg(r)
                .args(["-n", "16", "--sampler", s, "--steps", steps, "--out"])
                .arg(d.join(format!("{s}-{steps}.png"))));
            assert!(o.status.success(), "{model} {s} {steps}: {}", stderr(&o));
            assert!(d.join(format!("{s}-{steps}.png")).is_file());
        }
    }
    let png = d.join("x.png");
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(r)
        .args(["--sampler", "eulr", "--out"])
        .arg(&png));
    assert_bad_input(&o, &["eulr", "heun", "langevin", "dpm++2m"]);
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(r)
        .args(["--steps", "0", "--out"])
        .arg(&png));
    assert_bad_input(&o, &["steps"]);
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(r)
        .args(["--class", "1", "--out"])
        .arg(&png));
    assert_bad_input(&o, &[model, "unconditional"]);
}

#[test]
fn edm_trains_on_a_toy_and_samples_with_every_sampler() {
    let d = tmp("edm");
    let r = d.join("run");
    let o = train_toy(&r, "edm", "200", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = std::fs::read_to_string(r.join("config.toml")).unwrap();
    assert!(cfg.contains("sigma_data") && cfg.contains("heun"), "{cfg}");
    samples_with_every_sampler(&d, &r, "edm");
    // config values out of range are one-line errors naming the key or the options
    let o = train_toy(
        &d.join("bad1"),
        "edm",
        "1",
        &["--set", "model.sampler=eulr"],
    );
    assert_bad_input(&o, &["eulr", "heun"]);
    let o = train_toy(
        &d.join("bad2"),
        "edm",
        "1",
        &["--set", "model.sigma_data=0"],
    );
    assert_bad_input(&o, &["sigma_data"]);
    let o = train_toy(&d.join("bad3"), "edm", "1", &["--set", "model.p_sdt=1"]);
    assert_bad_input(&o, &["p_sdt", "p_std"]);
}

#[test]
fn ncsn_trains_on_a_toy_and_samples_with_every_sampler() {
    let d = tmp("ncsn");
    let r = d.join("run");
    let o = train_toy(&r, "ncsn", "200", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = std::fs::read_to_string(r.join("config.toml")).unwrap();
    assert!(
        cfg.contains("num_levels") && cfg.contains("langevin"),
        "{cfg}"
    );
    samples_with_every_sampler(&d, &r, "ncsn");
    // more sampling steps than noise levels
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["--steps", "101", "--out"])
        .arg(d.join("x.png")));
    assert_bad_input(&o, &["101", "100"]);
    let o = train_toy(
        &d.join("bad"),
        "ncsn",
        "1",
        &["--set", "model.sample_steps=500"],
    );
    assert_bad_input(&o, &["sample_steps", "500"]);
}

/// Both models on images: a tiny UNet for 2 steps on shapes (3×32×32, scaled to [−1, 1]), then samples (the
/// default sampler of each, 2 steps).
#[test]
fn edm_and_ncsn_train_a_tiny_unet_on_shapes() {
    let d = tmp("shapes");
    for model in ["edm", "ncsn"] {
        let r = d.join(model);
        let o = run(dgm()
            .args(["train", model, "--data", "shapes", "--out"])
            .arg(&r)
            .args(["--steps", "2", "--seed", "1", "--quiet"])
            .args(["--set", "model.net.unet.base_channels=8"])
            .args(["--set", "model.net.unet.channel_mult=[1,2]"])
            .args(["--set", "model.net.unet.num_res_blocks=1"])
            .args(["--set", "model.net.unet.attention_resolutions=[16]"])
            .args(["--set", "model.net.unet.num_heads=2"])
            .args(["--set", "model.net.unet.groups=4"])
            .args(["--set", "train.batch_size=8"])
            .args(["--set", "train.eval_batches=1"])
            .args(["--set", "data.sizes.train=32"])
            .args(["--set", "data.sizes.validation=8"])
            .args(["--set", "data.sizes.test=8"])
            // the end-of-training grid of 64 samples: 2 levels, not NCSN's 100 × 5 Langevin steps
            .args(["--set", "model.sample_steps=2"]));
        assert!(o.status.success(), "{model}: {}", stderr(&o));
        let cfg = std::fs::read_to_string(r.join("config.toml")).unwrap();
        assert!(cfg.contains("minus_one_one"), "{model}: {cfg}");
        let png = d.join(format!("{model}.png"));
        let o = run(dgm()
            .args(["sample", "--run"])
            .arg(&r)
            .args(["-n", "4", "--steps", "2", "--out"])
            .arg(&png));
        assert!(o.status.success(), "{model}: {}", stderr(&o));
        assert!(png.is_file());
    }
}
