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
    let mut c = dgm();
    c.args(["train", name, "--data", data, "--out"])
        .arg(out)
        .args(["--steps", &steps.to_string(), "--quiet", "--seed", "3"])
        .args(["--set", "model.channels=8", "--set", "model.latent_dim=8"])
        .args([
            "--set",
            "train.batch_size=16",
            "--set",
            "train.eval_batches=1",
        ])
        .args([
            "--set",
            "data.sizes.train=64",
            "--set",
            "data.sizes.validation=16",
        ]);
    for s in extra {
        c.args(["--set", s]);
    }
    run(&mut c)
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
