//! Integration tests of the score-based diffusion models (EDM, NCSN): run the real `dgm` binary on tiny
//! configs — train on a 2-D toy and on shapes, sample with every sampler, and the bad inputs' exit code 2.

mod common;

use common::{assert_bad_input, dgm, run, stderr, tmp};
use std::path::Path;
use std::process::Output;

const SAMPLERS: &[&str] = &["ddpm", "ddim", "euler", "heun", "dpm++2m", "langevin", "pc"];

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
        // the probability-flow ODE likelihood of 8-bit images: a probability of the discrete values
        let o = run(dgm().args(["eval", "--run"]).arg(&r).args([
            "--split",
            "validation",
            "--limit",
            "4",
            "--likelihood-steps",
            "3",
        ]));
        assert!(o.status.success(), "{model}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("estimate (ODE)"), "{model}: {out}");
        let o = run(dgm()
            .args(["eval", "--run"])
            .arg(&r)
            .args(["--estimator", "vlb"]));
        assert_bad_input(&o, &["vlb", "ode"]);
        let o = run(dgm()
            .args(["sample", "--run"])
            .arg(&r)
            .args(["--guidance", "2", "--out"])
            .arg(&png));
        assert_bad_input(&o, &["guidance"]);
        let o = run(dgm()
            .args(["sample", "--run"])
            .arg(&r)
            .args(["--caption", "a red circle", "--out"])
            .arg(&png));
        assert_bad_input(&o, &["--caption", "takes no captions"]);
    }
}

/// Caption → image: a tiny caption-conditioned DDPM on shapes with a held-out pair keeps its vocabulary and
/// held-out pairs in its config, samples from a caption with and without guidance, scores a likelihood with
/// the data's captions, and refuses an unknown word, a class and a missing caption with one line each,
/// writing nothing.
#[test]
fn caption_ddpm_trains_samples_and_refuses() {
    let d = tmp("captions");
    let r = d.join("run");
    let o = run(dgm()
        .args(["train", "ddpm", "--data", "shapes", "--out"])
        .arg(&r)
        .args(["--steps", "2", "--seed", "1", "--quiet"])
        .args(["--set", "model.net.captions=true"])
        .args(["--set", "data.holdout=[\"red circle\"]"])
        .args(["--set", "model.net.unet.base_channels=8"])
        .args(["--set", "model.net.unet.channel_mult=[1,2]"])
        .args(["--set", "model.net.unet.attention_resolutions=[16]"])
        .args(["--set", "model.net.unet.num_heads=2"])
        .args(["--set", "model.net.unet.groups=4"])
        .args(["--set", "model.net.text.width=16"])
        .args(["--set", "model.net.text.layers=1"])
        .args(["--set", "train.batch_size=8"])
        .args(["--set", "train.eval_batches=1"])
        .args(["--set", "data.sizes.train=32"])
        .args(["--set", "data.sizes.validation=8"])
        .args(["--set", "data.sizes.test=8"])
        .args(["--set", "model.sample_steps=2"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = std::fs::read_to_string(r.join("config.toml")).unwrap();
    assert!(
        cfg.contains("caption_vocab") && cfg.contains("triangle") && cfg.contains("red circle"),
        "{cfg}"
    );
    for guidance in [None, Some("3")] {
        let png = d.join("ok.png");
        let mut c = dgm();
        c.args(["sample", "--run"]).arg(&r).args([
            "--caption",
            "a small red circle at the top left",
            "-n",
            "4",
            "--steps",
            "2",
            "--out",
        ]);
        c.arg(&png);
        if let Some(g) = guidance {
            c.args(["--guidance", g]);
        }
        let o = run(&mut c);
        assert!(o.status.success(), "{guidance:?}: {}", stderr(&o));
        assert!(png.is_file());
        std::fs::remove_file(&png).unwrap();
    }
    let o = run(dgm().args(["eval", "--run"]).arg(&r).args([
        "--split",
        "validation",
        "--limit",
        "4",
        "--likelihood-steps",
        "3",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let png = d.join("bad.png");
    let bad: [(&[&str], &[&str]); 3] = [
        (
            &["--caption", "a purple circle"],
            &["--caption", "'purple'", "circle"],
        ),
        (&["--class", "1"], &["--class", "captions, not classes"]),
        (&[], &["give a caption"]),
    ];
    for (args, needles) in bad {
        let o = run(dgm()
            .args(["sample", "--run"])
            .arg(&r)
            .args(args)
            .args(["--steps", "2", "--out"])
            .arg(&png));
        assert_bad_input(&o, needles);
        assert!(!png.exists(), "{args:?}");
    }
}
