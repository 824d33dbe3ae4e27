//! The normalizing flows through the real binary: train on a 2-D toy and on images, sample with a
//! temperature, the exact likelihood in `eval`, encode / interpolate, resume, and the bad inputs.

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
    let sets = [&["model.hidden=8", "train.eval_batches=1"], extra].concat();
    run(&mut train_cmd(name, data, out, steps, &sets))
}

#[test]
fn flows_train_on_a_toy_sample_evaluate_exactly_and_encode() {
    let d = tmp("flows-toy");
    for name in ["realnvp", "glow"] {
        let r = d.join(name);
        let o = train(name, "toy2d:moons", &r, 150, &["train.batch_size=64"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        // the exact likelihood, a density of the raw values
        let o = run(dgm()
            .args(["eval", "--run"])
            .arg(&r)
            .args(["--split", "test"]));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("exact"), "{name}: {out}");
        // samples at two temperatures, the same seed: the colder ones are closer to the mode
        for t in ["1.0", "0.5"] {
            let o = run(dgm()
                .args(["sample", "--run"])
                .arg(&r)
                .args(["-n", "64", "--temperature", t, "--out"])
                .arg(d.join(format!("{name}-{t}.png"))));
            assert!(o.status.success(), "{name} T={t}: {}", stderr(&o));
        }
        // flags that do not apply are refused
        let o = run(dgm()
            .args(["sample", "--run"])
            .arg(&r)
            .args(["-n", "4", "--sampler", "ddim", "--out"])
            .arg(d.join("x.png")));
        assert_bad_input(&o, &["sampler"]);
        let o = run(dgm()
            .args(["sample", "--run"])
            .arg(&r)
            .args(["-n", "4", "--class", "1", "--out"])
            .arg(d.join("x.png")));
        assert_bad_input(&o, &["class"]);
    }
}

#[test]
fn glow_on_images_logs_bits_per_dim_and_encodes_exactly() {
    let d = tmp("flows-images");
    let r = d.join("glow");
    let o = train(
        "glow",
        "shapes",
        &r,
        3,
        &[
            "model.steps=1",
            "train.batch_size=8",
            "data.sizes.train=64",
            "data.sizes.validation=16",
            "data.sizes.test=16",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(r.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"bpd\""), "{metrics}");
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args(["--split", "test"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("exact") && out.contains("bits/dim"), "{out}");
    let o = run(dgm()
        .args(["interpolate", "--run"])
        .arg(&r)
        .args(["--split", "test", "--out"])
        .arg(d.join("strip.png")));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn flows_refuse_bad_settings_in_one_line() {
    let d = tmp("flows-bad");
    // 32×32 cannot be squeezed 6 times
    let o = train("glow", "shapes", &d.join("a"), 1, &["model.levels=6"]);
    assert_bad_input(&o, &["model.levels", "32×32", "fewer levels"]);
    // an unknown coupling scale names the valid ones
    let o = train(
        "realnvp",
        "toy2d:moons",
        &d.join("b"),
        1,
        &["model.coupling_scale=affine"],
    );
    assert_bad_input(&o, &["model.coupling_scale", "exp_tanh", "sigmoid"]);
    // a continuous density needs dequantized data
    let o = train(
        "realnvp",
        "shapes",
        &d.join("c"),
        1,
        &["data.preprocessing.dequantize=false"],
    );
    assert_bad_input(&o, &["dequantize = true"]);
    let o = train(
        "glow",
        "shapes",
        &d.join("e"),
        1,
        &["model.preprocess=tanh"],
    );
    assert_bad_input(&o, &["model.preprocess", "shift", "logit"]);
    for dir in ["a", "b", "c", "e"] {
        assert!(!d.join(dir).exists(), "a refused run leaves nothing behind");
    }
}

#[test]
fn variational_dequantization_trains_on_8_bit_values_and_reports_bounds_on_them() {
    let d = tmp("flows-vardeq");
    let small = [
        "model.steps=1",
        "model.dequantization.kind=variational",
        "model.dequantization.hidden=4",
        "model.dequantization.couplings=2",
        "train.batch_size=8",
        "data.sizes.train=64",
        "data.sizes.validation=16",
        "data.sizes.test=16",
    ];
    // the learned noise needs the 8-bit values, not data the loader already dequantized
    let o = train("glow", "shapes", &d.join("a"), 1, &small);
    assert_bad_input(&o, &["variational", "dequantize = false"]);
    assert!(!d.join("a").exists());
    let r = d.join("glow");
    let mut extra = small.to_vec();
    extra.push("data.preprocessing.dequantize=false");
    let o = train("glow", "shapes", &r, 3, &extra);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args(["--split", "test", "--iwae-k", "4"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("variational dequantization bound") && out.contains("IW-dequantization-4"),
        "{out}"
    );
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "4", "--temperature", "0.7", "--out"])
        .arg(d.join("s.png")));
    assert!(o.status.success(), "{}", stderr(&o));
}
