//! The energy-based family through the real binary: `ebm` (contrastive divergence, NCE) and `jem` train, sample by
//! Langevin with `--steps`, report log Z by repeated AIS with its spread and JEM's test accuracy, and refuse bad
//! settings in one line (resuming with the replay buffer: `checkpoint.rs`).

mod common;

use common::*;

/// `dgm train NAME --data DATA` with a small config and `extra` settings.
fn train(
    name: &str,
    data: &str,
    out: &std::path::Path,
    steps: u32,
    extra: &[&str],
) -> std::process::Command {
    let small = [
        "model.channels=8",
        "model.buffer_size=64",
        "model.langevin.steps=4",
        "train.batch_size=16",
        "train.eval_batches=1",
        "data.sizes.train=64",
        "data.sizes.validation=16",
    ];
    train_cmd(name, data, out, steps, &[&small[..], extra].concat())
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn ebms_train_sample_by_langevin_and_estimate_log_z() {
    let d = tmp("ebm-train");
    let r = d.join("cd");
    let o = run(&mut train("ebm", "toy2d:moons", &r, 3, &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    let log = std::fs::read_to_string(r.join("metrics.jsonl")).unwrap();
    assert!(log.contains("e_data") && log.contains("e_neg"), "{log}");
    // short-run and longer-run samples differ; the same seed repeats
    let sample = |steps: &str, out: &str| {
        run(dgm()
            .args(["sample", "--run"])
            .arg(&r)
            .args(["-n", "20", "--seed", "1", "--steps", steps, "--out"])
            .arg(d.join(out)))
    };
    for (steps, out) in [("2", "a.png"), ("2", "b.png"), ("30", "c.png")] {
        let o = sample(steps, out);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(read("a.png"), read("b.png"));
    assert_ne!(read("a.png"), read("c.png"));
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "2", "--sampler", "ddim", "--out"])
        .arg(d.join("x.png")));
    assert_bad_input(&o, &["sampler", "langevin"]);
    assert_bad_input(&sample("0", "z.png"), &["steps", "at least 1"]);
    // log Z by three AIS runs: the report names them, their spread, and bits/dim are finite
    let ais_k = |chains: &str, extra: &[&str]| {
        run(dgm()
            .args(["eval", "--run"])
            .arg(&r)
            .args([
                "--metric",
                "ais",
                "--ais-steps",
                "30",
                "--ais-chains",
                chains,
            ])
            .args(["--ais-leapfrog", "2", "--limit", "10"])
            .args(extra))
    };
    let ais = |extra: &[&str]| ais_k("8", extra);
    let o = ais(&["--ais-runs", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rep = &json(&r.join("eval-test.json"))[0];
    assert_eq!(rep["estimator"], "ais");
    assert_eq!(rep["n"], 10);
    assert!(
        rep["kind_text"].as_str().unwrap().contains("3 runs"),
        "{rep}"
    );
    assert!(rep["note"].as_str().unwrap().contains("spread"), "{rep}");
    assert!(
        rep["nll_nats"].as_f64().is_some_and(f64::is_finite),
        "{rep}"
    );
    assert_bad_input(&ais(&["--ais-runs", "0"]), &["--ais-runs"]);
    assert_bad_input(&ais_k("0", &[]), &["ais.chains"]);
    assert_bad_input(&ais(&["--obs-std", "0.1"]), &["--obs-std", "log Z"]);
    // the likelihood (one AIS chain unless asked) through --metric nll
    let o = run(dgm().args(["eval", "--run"]).arg(&r).args([
        "--metric",
        "nll",
        "--likelihood-steps",
        "20",
        "--limit",
        "8",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    // accuracy applies to JEM only
    let o = run(dgm()
        .args(["eval", "--run"])
        .arg(&r)
        .args(["--metric", "accuracy"]));
    assert_bad_input(&o, &["not a classifier", "jem"]);
    // NCE learns log Z alongside the energy
    let n = d.join("nce");
    let o = run(&mut train(
        "ebm",
        "toy2d:moons",
        &n,
        3,
        &["model.objective=nce"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let log = std::fs::read_to_string(n.join("metrics.jsonl")).unwrap();
    assert!(log.contains("log_z") && log.contains("nce"), "{log}");
}

/// NCE with a trained flow as the noise: the flow's run is named by its folder (stored absolute), its exact
/// density is the noise; a VAE (a bound, not a density) and a noise for CD are refused in one line.
#[test]
fn nce_takes_a_trained_flow_as_its_noise() {
    let d = tmp("ebm-nce-flow");
    let flow = d.join("flow");
    let o = run(&mut train_cmd(
        "realnvp",
        "toy2d:moons",
        &flow,
        20,
        &["train.batch_size=64"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let r = d.join("nce");
    let noise = format!("model.noise_run={}", flow.display());
    let o = run(&mut train(
        "ebm",
        "toy2d:moons",
        &r,
        3,
        &["model.objective=nce", &noise],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = std::fs::read_to_string(r.join("config.toml")).unwrap();
    let flat: String = cfg.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(flat.contains("noise_map=[1.0,0.0"), "{cfg}");
    let log = std::fs::read_to_string(r.join("metrics.jsonl")).unwrap();
    assert!(log.contains("log_z"), "{log}");
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "8", "--steps", "3", "--out"])
        .arg(d.join("s.png")));
    assert!(o.status.success(), "{}", stderr(&o));
    // a VAE's likelihood is a bound: refused before the run is created
    let vae = d.join("vae");
    let o = run(&mut train_cmd(
        "vae",
        "toy2d:moons",
        &vae,
        2,
        &["train.batch_size=16"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let noise = format!("model.noise_run={}", vae.display());
    let o = run(&mut train(
        "ebm",
        "toy2d:moons",
        &d.join("v"),
        2,
        &["model.objective=nce", &noise],
    ));
    assert_bad_input(&o, &["model.noise_run", "exact"]);
    assert!(!d.join("v").exists(), "a refused run leaves nothing behind");
    let noise = format!("model.noise_run={}", flow.display());
    let o = run(&mut train("ebm", "toy2d:moons", &d.join("c"), 2, &[&noise]));
    assert_bad_input(&o, &["model.noise_run", "nce"]);
    assert!(!d.join("c").exists());
    let o = run(&mut train(
        "ebm",
        "toy2d:moons",
        &d.join("m"),
        2,
        &["model.objective=nce", "model.noise_run=/no/such/run"],
    ));
    assert_bad_input(&o, &["model.noise_run", "/no/such/run"]);
}

#[test]
fn jem_classifies_and_generates() {
    let d = tmp("ebm-jem");
    let r = d.join("jem");
    let o = run(&mut train("jem", "shapes", &r, 3, &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    let log = std::fs::read_to_string(r.join("metrics.jsonl")).unwrap();
    assert!(log.contains("\"ce\"") && log.contains("\"acc\""), "{log}");
    let o = run(dgm().args(["eval", "--run"]).arg(&r).args([
        "--metric",
        "accuracy",
        "--split",
        "validation",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("classification accuracy"),
        "{}",
        stdout(&o)
    );
    let acc = json(&r.join("eval-accuracy-validation.json"));
    assert!(acc["accuracy"]
        .as_f64()
        .is_some_and(|a| (0.0..=1.0).contains(&a)));
    assert_eq!(acc["examples"], 16);
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "4", "--steps", "3", "--out"])
        .arg(d.join("s.png")));
    assert!(o.status.success(), "{}", stderr(&o));
    // x given y: one row per class
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "4", "--steps", "3", "--class", "0,1", "--out"])
        .arg(d.join("c.png")));
    assert!(o.status.success(), "{}", stderr(&o));
    // log p(x | y) by one AIS estimate of log Z_y per class
    let o = run(dgm().args(["eval", "--run"]).arg(&r).args([
        "--metric",
        "nll",
        "--likelihood-steps",
        "10",
        "--limit",
        "6",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let rep = &json(&r.join("eval-test.json"))[0];
    assert!(
        rep["conditioning"]
            .as_str()
            .is_some_and(|c| c.contains("log p(x | y)")),
        "{rep}"
    );
    // OOD scores by its own marginal p(x), no labels needed
    let o = run(dgm().args(["eval", "ood", "--run"]).arg(&r).args([
        "--ood",
        "noise,constant",
        "--limit",
        "32",
        "--likelihood-steps",
        "10",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let ood = json(&r.join("eval-ood.json"));
    assert!(
        ood["score"]["conditioning"]
            .as_str()
            .is_some_and(|c| c.contains("own marginal")),
        "{ood}"
    );
}

#[test]
fn ebms_refuse_bad_settings_in_one_line() {
    let d = tmp("ebm-bad");
    for (i, (set, needles)) in [
        (
            "model.langevin.step_size=0",
            vec!["model.langevin.step_size", "positive"],
        ),
        (
            "model.langevin.noise=-1",
            vec!["model.langevin.noise", "positive"],
        ),
        ("model.buffer_size=8", vec!["model.buffer_size", "batch"]),
        (
            "model.objective=score",
            vec!["model.objective", "cd", "nce"],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = d.join(format!("r{i}"));
        let o = run(&mut train("ebm", "toy2d:moons", &dir, 1, &[set]));
        assert_bad_input(&o, &needles);
        assert!(!dir.exists(), "{set}: a refused run leaves nothing behind");
    }
    let o = run(&mut train("jem", "toy2d:moons", &d.join("j"), 1, &[]));
    assert!(!o.status.success());
}
