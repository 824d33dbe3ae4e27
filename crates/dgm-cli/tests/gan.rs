//! The implicit family through the real binary: DCGAN / SN-GAN / conditional GAN and the MMD generator train,
//! sample (by class for the conditional one), log both players' losses, and refuse what does not apply: a
//! likelihood, a class for an unconditional model, gradient accumulation, settings of a group that is not
//! there.

mod common;

use common::*;

/// `dgm train NAME --data DATA` with a small config and `extra` settings.
fn train(
    name: &str,
    data: &str,
    out: &std::path::Path,
    steps: u32,
    extra: &[&str],
) -> std::process::Output {
    let small = [
        "model.channels=8",
        "model.latent_dim=8",
        "train.batch_size=16",
        "train.eval_batches=1",
        "data.sizes.train=64",
        "data.sizes.validation=16",
    ];
    run(&mut train_cmd(
        name,
        data,
        out,
        steps,
        &[&small[..], extra].concat(),
    ))
}

fn sample(
    run_dir: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    run(dgm()
        .args(["sample", "--run"])
        .arg(run_dir)
        .args(["-n", "12", "--seed", "1"])
        .args(extra)
        .arg("--out")
        .arg(out))
}

#[test]
fn gans_train_log_both_players_and_sample() {
    let d = tmp("gan-train");
    for name in ["dcgan", "sngan", "cgan"] {
        let r = d.join(name);
        let o = train(name, "shapes", &r, 4, &[]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let metrics = std::fs::read_to_string(r.join("metrics.jsonl")).unwrap();
        let last: serde_json::Value = serde_json::from_str(
            metrics
                .lines()
                .rfind(|l| l.contains("g_loss"))
                .unwrap_or_else(|| panic!("{name}: no g_loss in {metrics}")),
        )
        .unwrap();
        for k in ["loss", "g_loss", "d_real", "d_fake"] {
            assert!(
                last[k].as_f64().is_some_and(f64::is_finite),
                "{name}: {k} in {last}"
            );
        }
        assert!(metrics.contains("val_loss"), "{name}: {metrics}");
        // a conditional model needs a class (one for all, or one per sample)
        let class: &[&str] = if name == "cgan" {
            &["--class", "0"]
        } else {
            &[]
        };
        let o = sample(&r, &d.join(format!("{name}.png")), class);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        // no likelihood: one line, exit 2
        let o = run(dgm()
            .args(["eval", "--run"])
            .arg(&r)
            .args(["--metric", "nll"]));
        assert_bad_input(&o, &["no likelihood", "nll"]);
    }
    // a class for the conditional one (required), refused for the unconditional ones
    let o = sample(&d.join("cgan"), &d.join("c.png"), &["--class", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sample(&d.join("cgan"), &d.join("c.png"), &[]);
    assert_bad_input(&o, &["class-conditional", "class"]);
    // a list: a run of samples per class; more classes than samples is refused
    let o = sample(&d.join("cgan"), &d.join("c3.png"), &["--class", "0,1,2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sample(
        &d.join("cgan"),
        &d.join("c13.png"),
        &["--class", "0,1,2,3,4,5,0,1,2,3,4,5,0"],
    );
    assert_bad_input(&o, &["--class", "13 classes for 12 samples"]);
    let o = sample(&d.join("dcgan"), &d.join("x.png"), &["--class", "2"]);
    assert_bad_input(&o, &["class", "unconditional"]);
}

#[test]
fn mmd_generator_trains_on_points_with_one_optimiser() {
    let d = tmp("gan-mmd");
    let r = d.join("mmd");
    let o = train("mmd-gen", "toy2d:8gaussians", &r, 5, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(r.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("bandwidth"), "{metrics}");
    let o = sample(&r, &d.join("mmd.png"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // a one-loss model has one parameter group
    let o = train(
        "mmd-gen",
        "toy2d:8gaussians",
        &d.join("b"),
        1,
        &["train.groups.generator.lr=1e-3"],
    );
    assert_bad_input(&o, &["train.groups.generator", "one group"]);
}

/// `dgm eval --metric ais`: a log-likelihood estimate of a GAN generator (also a conditional one, log p(x | y))
/// and of a Gaussian-decoder VAE, written beside the other likelihoods; its flags are refused where they do not
/// apply, and so are models and data it cannot score.
#[test]
fn ais_estimates_the_likelihood_of_decoder_based_models() {
    let d = tmp("gan-ais");
    let ais = |r: &std::path::Path, extra: &[&str]| {
        run(dgm()
            .args(["eval", "--run"])
            .arg(r)
            .args(["--metric", "ais", "--ais-steps", "20", "--ais-chains", "3"])
            .args(["--ais-leapfrog", "2", "--limit", "4"])
            .args(extra))
    };
    for name in ["dcgan", "cgan"] {
        let r = d.join(name);
        let o = train(name, "shapes", &r, 2, &[]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let o = ais(&r, &["--obs-std", "0.2"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(
            out.contains("AIS, T = 20, K = 3 chains, L = 2 leapfrog steps, σ = 0.2"),
            "{out}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(r.join("eval-test.json")).unwrap())
                .unwrap();
        let rep = &json[0];
        assert_eq!(rep["estimator"], "ais");
        assert_eq!(rep["n"], 4);
        assert!(
            rep["bits_per_dim"].as_f64().is_some_and(f64::is_finite),
            "{rep}"
        );
        assert!(
            rep["preprocessing"]
                .as_str()
                .unwrap()
                .contains("dequantized"),
            "{rep}"
        );
        assert_eq!(rep["conditioning"].is_null(), name == "dcgan", "{rep}");
    }
    // a VAE with a Gaussian decoder uses its own σ; --obs-std would be ignored, so it is refused
    let v = d.join("vae");
    let o = run(dgm()
        .args(["train", "vae", "--data", "toy2d:moons", "--out"])
        .arg(&v)
        .args(["--steps", "3", "--quiet", "--set", "train.batch_size=16"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ais(&v, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("the model's own σ"), "{}", stdout(&o));
    assert_bad_input(&ais(&v, &["--obs-std", "0.1"]), &["--obs-std", "own σ"]);
    // AIS flags without --metric ais; a model that is not decoder-based; --metric nll on a GAN names ais
    let o = run(dgm().args(["eval", "--run"]).arg(d.join("dcgan")).args([
        "--metric",
        "fid",
        "--obs-std",
        "0.1",
    ]));
    assert_bad_input(&o, &["--obs-std", "--metric ais"]);
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(d.join("dcgan"))
        .args(["--metric", "nll"]));
    assert_bad_input(&o, &["no likelihood", "ais"]);
    let m = d.join("realnvp");
    let o = run(dgm()
        .args(["train", "realnvp", "--data", "toy2d:moons", "--out"])
        .arg(&m)
        .args(["--steps", "1", "--quiet"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_bad_input(
        &ais(&m, &[]),
        &["neither decoder-based", "energy-based", "ais"],
    );
    let o = run(dgm().args(["eval", "--run"]).arg(d.join("dcgan")).args([
        "--metric",
        "ais",
        "--ais-chains",
        "0",
    ]));
    assert_bad_input(&o, &["ais.chains"]);
}

#[test]
fn gans_refuse_bad_settings_in_one_line() {
    let d = tmp("gan-bad");
    let o = train("dcgan", "shapes", &d.join("a"), 1, &["train.grad_accum=2"]);
    assert_bad_input(&o, &["train.grad_accum", "d_steps"]);
    let o = train(
        "sngan",
        "shapes",
        &d.join("b"),
        1,
        &["train.groups.critic.lr=1e-3"],
    );
    assert_bad_input(&o, &["train.groups.critic", "generator, discriminator"]);
    let o = train(
        "dcgan",
        "shapes",
        &d.join("c"),
        1,
        &["model.loss=wasserstein"],
    );
    assert_bad_input(&o, &["model.loss", "non_saturating", "hinge"]);
    let o = train("cgan", "toy2d:moons", &d.join("e"), 1, &[]);
    assert_bad_input(&o, &["conditional", "class labels"]);
    let o = train(
        "dcgan",
        "shapes",
        &d.join("f"),
        1,
        &["train.groups.discriminator.beta1=2"],
    );
    assert_bad_input(&o, &["train.groups.discriminator.beta1"]);
    for dir in ["a", "b", "c", "e", "f"] {
        assert!(
            !d.join(dir).exists(),
            "{dir}: a refused run leaves nothing behind"
        );
    }
}
