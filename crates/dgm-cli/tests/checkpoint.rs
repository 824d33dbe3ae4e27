//! Crash consistency of checkpoints through the real binary: a run killed (SIGKILL) at any write point, or
//! failing on a full disk, resumes to the same bits as an uninterrupted run; the run folder is locked; a
//! damaged file is refused; SIGTERM writes a checkpoint; and bit-exact resume holds for an MLP, a conv model, a
//! diffusion model, the GPT and a GAN (two optimisers).
//!
//! The write points are counted by the binary's test hook `DGM_FAULT` (see `dgm::checkpoint`): `kill@K`
//! SIGKILLs the process at the K-th point, `fail@K` injects "no space left on device" there, `pause@MS`
//! slows every point down so that an outside kill lands inside a checkpoint, `trace` names the points.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_bad_input, dgm, run, stderr, tmp};

/// A small IWAE on a 2-D toy: every step is milliseconds, so a run is dominated by its checkpoints.
const TOY: &[&str] = &[
    "--data",
    "toy2d:8gaussians",
    "--seed",
    "7",
    "--quiet",
    "--set",
    "model.hidden=[16]",
    "--set",
    "model.latent_dim=2",
    "--set",
    "train.batch_size=32",
    "--set",
    "data.sizes.train=128",
    "--set",
    "data.sizes.validation=32",
    "--set",
    "data.sizes.test=32",
    "--set",
    "train.log_every=1",
    "--set",
    "train.eval_batches=1",
    "--set",
    "train.eval_every=2",
    "--set",
    "train.grad_clip=1.0",
];

/// `dgm train iwae` on [`TOY`] for `steps` steps into `out`.
fn toy_train(out: &Path, steps: u64, extra: &[&str]) -> Command {
    let mut c = dgm();
    c.args(["train", "iwae", "--out"])
        .arg(out)
        .args(["--steps", &steps.to_string()])
        .args(TOY)
        .args(extra);
    c
}

/// What a committed checkpoint holds: the training state (without the writer's version) and each file.
#[derive(Debug, PartialEq)]
struct Snapshot {
    state: BTreeMap<String, serde_json::Value>,
    files: BTreeMap<String, Vec<u8>>,
}

fn manifest(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("checkpoint.json"))
        .unwrap_or_else(|e| panic!("{}: no checkpoint.json: {e}", run.display()));
    serde_json::from_str(&text).unwrap()
}

fn snapshot(run: &Path) -> Snapshot {
    let m = manifest(run);
    let dir = run.join(m["dir"].as_str().unwrap());
    let mut state = BTreeMap::new();
    for k in [
        "step",
        "adam_t",
        "optimizer_steps",
        "seed",
        "rng",
        "finished",
    ] {
        state.insert(k.to_string(), m["state"][k].clone());
    }
    let files = m["files"]
        .as_object()
        .unwrap()
        .keys()
        .map(|f| (f.clone(), std::fs::read(dir.join(f)).unwrap()))
        .collect();
    Snapshot { state, files }
}

/// The `step` and `loss` of every record of `metrics.jsonl` (the timings differ between runs).
fn metric_steps(run: &Path) -> Vec<(u64, Option<f64>, Option<f64>)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64(),
                v["val_loss"].as_f64(),
            )
        })
        .collect()
}

/// Nothing a crash leaves behind survives a successful run: one step folder, no staging folder, no
/// temporary files.
fn assert_no_debris(run: &Path) {
    let ckpts: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(ckpts.len(), 1, "{}: {ckpts:?}", run.display());
    for dir in [run.to_path_buf(), run.join("samples")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // no samples yet
        };
        for e in entries {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            assert!(
                !name.ends_with(".tmp"),
                "{} left in {}",
                name,
                dir.display()
            );
        }
    }
}

/// Runs `first`; while it dies (by a signal) or fails, continues the run the way a user would — `--resume`
/// when the folder holds a run, else the same command again — with `env` applied to the continuation too.
fn run_to_completion(out: &Path, first: &mut Command, again: &dyn Fn() -> Command) -> usize {
    let mut o = run(first);
    let mut restarts = 0;
    while !o.status.success() {
        assert!(
            o.status.signal() == Some(9)
                || o.status.code() == Some(1)
                || o.status.code() == Some(2),
            "unexpected end {:?}: {}",
            o.status,
            stderr(&o)
        );
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        restarts += 1;
        assert!(restarts < 10, "does not finish: {}", stderr(&o));
        o = if out.join("config.toml").exists() {
            run(dgm().args(["train", "--quiet", "--resume"]).arg(out))
        } else {
            run(&mut again())
        };
    }
    restarts
}

/// The number of write points of a run: `DGM_FAULT=trace` names each on stderr.
fn count_points(cmd: &mut Command) -> usize {
    let o = run(cmd.env("DGM_FAULT", "trace"));
    assert!(o.status.success(), "{}", stderr(&o));
    stderr(&o)
        .lines()
        .filter(|l| l.starts_with("dgm-fault-point"))
        .count()
}

#[test]
fn sigkill_at_every_write_point_resumes_bit_identical() {
    let d = tmp("kill-points");
    let steps = 4;
    let extra = ["--set", "train.checkpoint_every=2"];
    let full = d.join("full");
    let o = run(&mut toy_train(&full, steps, &extra));
    assert!(o.status.success(), "{}", stderr(&o));
    let want = snapshot(&full);
    let points = count_points(&mut toy_train(&d.join("traced"), steps, &extra));
    // config.toml, two checkpoints (three files, the folder, the manifest, the clean-up), samples, loss curve
    assert!(points >= 30, "only {points} write points");
    let mut restarted_from_zero = 0;
    for k in 1..=points {
        let r = d.join(format!("k{k}"));
        let mut first = toy_train(&r, steps, &extra);
        first.env("DGM_FAULT", format!("kill@{k}"));
        let o = run(&mut first);
        assert_eq!(o.status.signal(), Some(9), "kill@{k} did not kill");
        if r.join("config.toml").exists() && !r.join("checkpoint.json").exists() {
            restarted_from_zero += 1;
            // a run killed before its first checkpoint: a new `train --out` is refused, `--resume` restarts it
            let o = run(&mut toy_train(&r, steps, &extra));
            assert_bad_input(&o, &["before its first checkpoint", "--resume"]);
        }
        let again = || toy_train(&r, steps, &extra);
        run_to_completion(
            &r,
            dgm().args(["train", "--quiet", "--resume"]).arg(&r),
            &|| again(),
        );
        assert!(
            want == snapshot(&r),
            "killed at write point {k}: the resumed run differs from the uninterrupted one"
        );
        assert_eq!(metric_steps(&full), metric_steps(&r), "kill@{k}: metrics");
        assert_no_debris(&r);
        let _ = std::fs::remove_dir_all(&r);
    }
    assert!(
        restarted_from_zero > 0,
        "no kill landed before the first checkpoint"
    );
}

/// `dgm train sngan` (two players, two optimisers, spectral-norm vectors) on a 2-D toy for `steps` steps.
fn gan_train(out: &Path, steps: u64) -> Command {
    let mut c = dgm();
    c.args(["train", "sngan", "--out"])
        .arg(out)
        .args(["--steps", &steps.to_string()])
        .args(["--data", "toy2d:8gaussians", "--seed", "3", "--quiet"])
        .args(["--set", "model.channels=16", "--set", "model.latent_dim=4"])
        .args(["--set", "model.d_steps=2", "--set", "train.batch_size=32"])
        .args([
            "--set",
            "data.sizes.train=128",
            "--set",
            "data.sizes.validation=32",
        ])
        .args(["--set", "train.log_every=1", "--set", "train.eval_every=2"])
        .args([
            "--set",
            "train.checkpoint_every=2",
            "--set",
            "train.eval_batches=1",
        ])
        .args(["--set", "train.groups.discriminator.lr=4e-4"]);
    c
}

/// Runs `train` uninterrupted, then killed (SIGKILL) at every fifth write point from the second on and resumed
/// to completion each time: every resumed run ends with the same checkpoint (weights, EMA, optimiser state,
/// counters, RNG) and the same metrics as the uninterrupted one. Returns the uninterrupted run's snapshot.
fn assert_kills_resume_bit_identical(name: &str, train: &dyn Fn(&Path) -> Command) -> Snapshot {
    let d = tmp(&format!("kill-{name}"));
    let full = d.join("full");
    let o = run(&mut train(&full));
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    let want = snapshot(&full);
    let points = count_points(&mut train(&d.join("traced")));
    assert!(points >= 30, "{name}: only {points} write points");
    let mut killed = 0;
    for k in (2..=points).step_by(5) {
        killed += 1;
        let r = d.join(format!("k{k}"));
        let o = run(train(&r).env("DGM_FAULT", format!("kill@{k}")));
        assert_eq!(o.status.signal(), Some(9), "{name}: kill@{k} did not kill");
        run_to_completion(
            &r,
            dgm().args(["train", "--quiet", "--resume"]).arg(&r),
            &|| train(&r),
        );
        assert!(
            want == snapshot(&r),
            "{name} killed at write point {k}: the resumed run differs"
        );
        assert_eq!(
            metric_steps(&full),
            metric_steps(&r),
            "{name} kill@{k}: metrics"
        );
        let _ = std::fs::remove_dir_all(&r);
    }
    assert!(killed >= 6, "{name}: only {killed} kills");
    want
}

/// A GAN run killed at write points and resumed ends with the same weights, both optimisers' moments and
/// update counts, the spectral-norm vectors and the same metrics as an uninterrupted run.
#[test]
fn a_killed_gan_run_resumes_bit_identical() {
    let steps = 6;
    let want = assert_kills_resume_bit_identical("gan", &|out| gan_train(out, steps));
    assert_eq!(
        want.state["optimizer_steps"],
        serde_json::json!({"discriminator": 12, "generator": 6}),
        "{:?}",
        want.state
    );
}

/// A contrastive-divergence run killed at write points (also mid-checkpoint) and resumed continues the same
/// persistent chains: weights, replay buffer (model state, copied into the EMA) and optimiser end bit-identical.
#[test]
fn a_killed_ebm_run_resumes_bit_identical() {
    assert_kills_resume_bit_identical("ebm", &|out| {
        let mut c = dgm();
        c.args(["train", "ebm", "--data", "toy2d:moons", "--out"])
            .arg(out)
            .args(["--steps", "6", "--seed", "3", "--quiet"])
            .args(["--set", "model.channels=8", "--set", "model.buffer_size=48"])
            .args([
                "--set",
                "model.langevin.steps=3",
                "--set",
                "train.batch_size=16",
            ])
            .args([
                "--set",
                "data.sizes.train=64",
                "--set",
                "data.sizes.validation=16",
            ])
            .args(["--set", "train.log_every=1", "--set", "train.eval_every=2"])
            .args([
                "--set",
                "train.checkpoint_every=2",
                "--set",
                "train.eval_batches=1",
            ]);
        c
    });
}

#[test]
fn sigkill_during_a_resume_and_from_outside_resumes_bit_identical() {
    let d = tmp("kill-outside");
    let steps = 6;
    let extra = ["--set", "train.checkpoint_every=1"];
    let full = d.join("full");
    let o = run(&mut toy_train(&full, steps, &extra));
    assert!(o.status.success(), "{}", stderr(&o));
    let want = snapshot(&full);
    // killed again and again: every continuation dies at its k-th write point until the run is done (a
    // continuation has 24 points up to its first committed checkpoint: k above that makes progress)
    for k in [26, 31, 38] {
        let r = d.join(format!("chain{k}"));
        let mut first = toy_train(&r, steps, &extra);
        first.env("DGM_FAULT", format!("kill@{k}"));
        let mut o = run(&mut first);
        let mut n = 0;
        while !o.status.success() {
            n += 1;
            assert!(n < 40, "kill@{k} chain does not finish: {}", stderr(&o));
            o = if r.join("config.toml").exists() {
                run(dgm()
                    .env("DGM_FAULT", format!("kill@{k}"))
                    .args(["train", "--quiet", "--resume"])
                    .arg(&r))
            } else {
                run(toy_train(&r, steps, &extra).env("DGM_FAULT", format!("kill@{k}")))
            };
        }
        assert!(n >= 2, "kill@{k} killed only {n} times");
        assert!(want == snapshot(&r), "kill@{k} chain differs");
        assert_no_debris(&r);
    }
    // SIGKILL from outside at arbitrary moments, with every write point slowed down to land inside them
    for (i, ms) in [150u64, 450, 900].into_iter().enumerate() {
        let r = d.join(format!("outside{i}"));
        let mut child = toy_train(&r, steps, &extra)
            .env("DGM_FAULT", "pause@15")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
        let again = || toy_train(&r, steps, &extra);
        run_to_completion(
            &r,
            dgm().args(["train", "--quiet", "--resume"]).arg(&r),
            &|| again(),
        );
        assert!(want == snapshot(&r), "killed after {ms} ms: differs");
        assert_no_debris(&r);
    }
}

#[test]
fn a_failed_write_keeps_the_previous_checkpoint_and_resumes_bit_identical() {
    let d = tmp("enospc");
    let steps = 4;
    let extra = ["--set", "train.checkpoint_every=1"];
    let full = d.join("full");
    let o = run(&mut toy_train(&full, steps, &extra));
    assert!(o.status.success(), "{}", stderr(&o));
    let want = snapshot(&full);
    let points = count_points(&mut toy_train(&d.join("traced"), steps, &extra));
    let mut kept_seen = 0;
    for k in 1..=points {
        let r = d.join(format!("f{k}"));
        let o = run(toy_train(&r, steps, &extra).env("DGM_FAULT", format!("fail@{k}")));
        if o.status.success() {
            continue; // a failure in the best-effort clean-up is not an error
        }
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "fail@{k}: {err}");
        assert!(
            err.contains("no space left on device") && !err.contains("panicked"),
            "fail@{k}: {err}"
        );
        if let Some(before) = err
            .split(" is kept")
            .next()
            .filter(|_| err.contains(" is kept"))
        {
            kept_seen += 1;
            let step: u64 = before.rsplit(' ').next().unwrap().parse().unwrap();
            assert_eq!(
                manifest(&r)["state"]["step"].as_u64(),
                Some(step),
                "fail@{k}: the kept checkpoint is not the committed one: {err}"
            );
        }
        let again = || toy_train(&r, steps, &extra);
        run_to_completion(
            &r,
            dgm().args(["train", "--quiet", "--resume"]).arg(&r),
            &|| again(),
        );
        assert!(want == snapshot(&r), "failed write at point {k}: differs");
        assert_no_debris(&r);
        let _ = std::fs::remove_dir_all(&r);
    }
    assert!(kept_seen > 0, "no failure named the kept checkpoint");
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_keeps_the_previous_checkpoint_and_resumes_bit_identical() {
    let d = tmp("full-disk");
    // ≈ 510 k parameters: a checkpoint (weights, EMA, two Adam moments) is ≈ 8 MB, so on a 12 MB disk the first
    // fits and the second, written beside it, does not
    let args = |out: &Path| {
        let mut c = dgm();
        c.args(["train", "vae", "--out"])
            .arg(out)
            .args(["--steps", "3"])
            .args(TOY)
            .args(["--set", "model.hidden=[500,500]"])
            .args(["--set", "train.checkpoint_every=1"]);
        c
    };
    let full = d.join("full");
    let o = run(&mut args(&full));
    assert!(o.status.success(), "{}", stderr(&o));
    let want = snapshot(&full);
    let Some(disk) = Tmpfs::mount(&d.join("disk"), "12m") else {
        eprintln!(
            "skipped the tmpfs part: cannot mount a tmpfs here (the injected-error test covers it)"
        );
        return;
    };
    let r = disk.0.join("run");
    let o = run(&mut args(&r));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("No space left on device")
            && err.contains("could not write the checkpoint of step 2")
            && err.contains("the checkpoint of step 1 is kept"),
        "{err}"
    );
    assert_eq!(manifest(&r)["state"]["step"].as_u64(), Some(1));
    // the kept checkpoint is whole (hashes checked) and the failed attempt left nothing behind
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "8", "--out"])
        .arg(d.join("s.png")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_no_debris(&r);
    // moved to a disk with room, it resumes to the uninterrupted run's bits
    let moved = d.join("moved");
    let ok = Command::new("cp")
        .args(["-a"])
        .arg(&r)
        .arg(&moved)
        .status()
        .unwrap();
    assert!(ok.success());
    drop(disk);
    let o = run(dgm().args(["train", "--quiet", "--resume"]).arg(&moved));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        want == snapshot(&moved),
        "resumed after a full disk: differs"
    );
}

fn wait_for(path: &Path, what: &str) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "no {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_quiet(c: &mut Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_run_folder_is_locked_while_it_trains() {
    let d = tmp("lock");
    let r = d.join("run");
    let mut child = spawn_quiet(
        toy_train(&r, 1_000_000, &["--set", "train.checkpoint_every=1"])
            .env("DGM_FAULT", "pause@20"),
    );
    wait_for(&r.join("checkpoint.json"), "first checkpoint");
    let pid = child.id().to_string();
    let o = run(dgm().args(["train", "--quiet", "--resume"]).arg(&r));
    assert_bad_input(&o, &["in use", &pid]);
    let o = run(&mut toy_train(&r, 10, &[]));
    assert_bad_input(&o, &["in use", &pid]);
    // another new run in the same folder at the same time: refused, and the running one's config is untouched
    let cfg = std::fs::read_to_string(r.join("config.toml")).unwrap();
    let o = run(&mut toy_train(&r, 10, &["--set", "train.lr=0.01"]));
    assert_bad_input(&o, &["in use"]);
    assert_eq!(cfg, std::fs::read_to_string(r.join("config.toml")).unwrap());
    // reading while it trains is fine
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "8", "--out"])
        .arg(d.join("s.png")));
    assert!(o.status.success(), "{}", stderr(&o));
    // a killed holder releases the lock
    child.kill().unwrap();
    let _ = child.wait();
    let o = run(dgm()
        .args(["train", "--quiet", "--steps", "3", "--resume"])
        .arg(&r));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_damaged_checkpoint_file_is_refused() {
    let d = tmp("bitflip");
    let r = d.join("run");
    let o = run(&mut toy_train(&r, 2, &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&r);
    let file = r.join(m["dir"].as_str().unwrap()).join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let i = bytes.len() - 5;
    bytes[i] ^= 0x10; // one bit of one weight
    std::fs::write(&file, &bytes).unwrap();
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["--weights", "model", "-n", "4", "--out"])
        .arg(d.join("s.png")));
    assert_bad_input(&o, &["model.safetensors", "SHA-256", "damaged"]);
    let o = run(dgm()
        .args(["train", "--quiet", "--steps", "4", "--resume"])
        .arg(&r));
    assert_bad_input(&o, &["model.safetensors", "damaged"]);
    // the EMA weights are intact and still load
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["--weights", "ema", "-n", "4", "--out"])
        .arg(d.join("s.png")));
    assert!(o.status.success(), "{}", stderr(&o));
    // a truncated file too
    std::fs::write(&file, &bytes[..100]).unwrap();
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["--weights", "model", "-n", "4", "--out"])
        .arg(d.join("s.png")));
    assert_bad_input(&o, &["model.safetensors", "bytes", "damaged"]);
}

#[test]
fn sigterm_writes_a_checkpoint_and_resumes_bit_identical() {
    let d = tmp("sigterm");
    let steps = 12;
    let extra = ["--set", "train.checkpoint_every=1"];
    let full = d.join("full");
    let o = run(&mut toy_train(&full, steps, &extra));
    assert!(o.status.success(), "{}", stderr(&o));
    let want = snapshot(&full);
    let r = d.join("run");
    let child = spawn_quiet(toy_train(&r, steps, &extra).env("DGM_FAULT", "pause@30"));
    wait_for(&r.join("checkpoint.json"), "first checkpoint");
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = manifest(&r);
    assert_eq!(m["state"]["finished"], false, "{m}");
    let o = run(dgm().args(["train", "--quiet", "--resume"]).arg(&r));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(want == snapshot(&r), "resumed after SIGTERM: differs");
}

#[test]
fn a_run_written_before_manifests_loads_resumes_and_moves_to_the_new_layout() {
    let d = tmp("legacy");
    let full = d.join("full");
    let o = run(&mut toy_train(&full, 6, &[]));
    assert!(o.status.success(), "{}", stderr(&o));
    let want = snapshot(&full);
    // the old layout: the files at the top and state.json, as dgm wrote them before checkpoint.json
    let r = d.join("old");
    let o = run(&mut toy_train(&r, 6, &["--stop-after", "3"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&r);
    let dir = r.join(m["dir"].as_str().unwrap());
    for f in [
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
    ] {
        std::fs::rename(dir.join(f), r.join(f)).unwrap();
    }
    let mut state = serde_json::Map::new();
    for k in ["step", "adam_t", "seed", "rng", "finished", "dgm_version"] {
        state.insert(k.to_string(), m["state"][k].clone());
    }
    std::fs::write(
        r.join("state.json"),
        serde_json::to_string_pretty(&state).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(r.join("checkpoint.json")).unwrap();
    std::fs::remove_dir_all(r.join("checkpoints")).unwrap();
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "4", "--out"])
        .arg(d.join("s.png")));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(dgm().args(["train", "--quiet", "--resume"]).arg(&r));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(want == snapshot(&r), "resumed from the old layout: differs");
    for f in [
        "state.json",
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
    ] {
        assert!(!r.join(f).exists(), "{f} of the old layout is still there");
    }
}

#[test]
fn empty_validation_is_refused_before_training_and_divergence_says_what_is_kept() {
    let d = tmp("val0");
    let r = d.join("run");
    let o = run(&mut toy_train(&r, 4, &["--set", "data.sizes.validation=0"]));
    assert_bad_input(&o, &["validation", "data.sizes.validation"]);
    assert!(!r.exists(), "a refused run left its folder");
    // diverging at the first step: there is no checkpoint to keep, and the message says so
    let o = run(&mut toy_train(
        &r,
        50,
        &["--set", "train.lr=1e30", "--set", "train.grad_clip=0"],
    ));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("at step") && err.contains("no checkpoint had been written yet"),
        "{err}"
    );
}

/// Trains `steps` steps at once and as `stop_after` + the rest, and compares the checkpoints bit for bit.
fn assert_resume_is_exact(name: &str, train: &dyn Fn(&Path) -> Command, stop_after: u64) {
    let d = tmp(&format!("exact-{name}"));
    let full = d.join("full");
    let o = run(&mut train(&full));
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    let part = d.join("part");
    let o = run(train(&part).args(["--stop-after", &stop_after.to_string()]));
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    assert_eq!(manifest(&part)["state"]["step"].as_u64(), Some(stop_after));
    let o = run(dgm().args(["train", "--quiet", "--resume"]).arg(&part));
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    assert!(
        snapshot(&full) == snapshot(&part),
        "{name}: resumed run differs"
    );
}

/// WaveNet draws a random window per clip each step from the run's RNG: a resumed run draws the same windows
/// and ends bit for bit where the uninterrupted one does (needs spoken-digits; required in CI).
#[test]
fn resume_is_bit_exact_for_wavenet() {
    let Some(data) = common::find_data(
        std::env::var_os("CI"),
        std::env::var_os("DGM_DATA"),
        "spoken-digits",
    ) else {
        return;
    };
    let d = tmp("exact-wavenet");
    let train = |out: &Path| {
        let mut c = dgm();
        c.args(["train", "wavenet", "--out"])
            .arg(out)
            .args(["--steps", "6", "--seed", "5", "--quiet"])
            .args([
                "--set",
                "model.channels=4",
                "--set",
                "model.skip_channels=4",
            ])
            .args([
                "--set",
                "model.dilations=[1, 2]",
                "--set",
                "model.train_window=32",
            ])
            .args([
                "--set",
                "train.batch_size=4",
                "--set",
                "train.eval_batches=1",
            ])
            .arg("--data-dir")
            .arg(&data);
        c
    };
    let (full, part) = (d.join("full"), d.join("part"));
    let o = run(&mut train(&full));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(train(&part).args(["--stop-after", "3"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(manifest(&part)["state"]["step"].as_u64(), Some(3));
    let o = run(dgm()
        .args(["train", "--quiet", "--resume"])
        .arg(&part)
        .arg("--data-dir")
        .arg(&data));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(snapshot(&full) == snapshot(&part), "resumed run differs");
}

/// Glow's ActNorm is initialised from data once, at the start of a new run: a resumed run restores it from
/// the checkpoint and continues bit for bit.
#[test]
fn resume_is_bit_exact_for_glow() {
    assert_resume_is_exact(
        "glow",
        &|out| {
            let mut c = dgm();
            c.args(["train", "glow", "--data", "shapes", "--out"])
                .arg(out)
                .args(["--steps", "4", "--seed", "5", "--quiet"])
                .args(["--set", "model.steps=1", "--set", "model.hidden=8"])
                .args([
                    "--set",
                    "train.batch_size=8",
                    "--set",
                    "train.eval_batches=1",
                ])
                .args([
                    "--set",
                    "data.sizes.train=64",
                    "--set",
                    "data.sizes.validation=16",
                ]);
            c
        },
        2,
    );
}

/// A resumed contrastive-divergence run continues the very same persistent chains: the replay buffer is in the
/// checkpoint (and copied, not averaged, into the EMA), so weights, buffer and optimiser state match bit for bit.
#[test]
fn resume_is_bit_exact_for_an_ebm_and_its_replay_buffer() {
    assert_resume_is_exact(
        "ebm",
        &|out| {
            let mut c = dgm();
            c.args(["train", "ebm", "--data", "toy2d:moons", "--out"])
                .arg(out)
                .args(["--steps", "5", "--seed", "5", "--quiet"])
                .args(["--set", "model.channels=8", "--set", "model.buffer_size=48"])
                .args([
                    "--set",
                    "model.langevin.steps=3",
                    "--set",
                    "train.batch_size=16",
                ])
                .args([
                    "--set",
                    "train.eval_batches=1",
                    "--set",
                    "train.checkpoint_every=2",
                ])
                .args([
                    "--set",
                    "data.sizes.train=64",
                    "--set",
                    "data.sizes.validation=16",
                ]);
            c
        },
        3,
    );
}

#[test]
fn resume_is_bit_exact_for_a_conv_vae_a_ddpm_and_the_gpt() {
    assert_resume_is_exact(
        "conv-vae",
        &|out| {
            let mut c = dgm();
            c.args(["train", "vae", "--data", "shapes", "--out"])
                .arg(out)
                .args(["--steps", "4", "--seed", "5", "--quiet"])
                .args(["--set", "model.arch=conv", "--set", "model.channels=[4,8]"])
                .args(["--set", "model.latent_dim=4", "--set", "train.batch_size=8"])
                .args([
                    "--set",
                    "data.sizes.train=64",
                    "--set",
                    "data.sizes.validation=16",
                ])
                .args(["--set", "train.eval_batches=1"]);
            c
        },
        2,
    );
    assert_resume_is_exact(
        "ddpm",
        &|out| {
            let mut c = dgm();
            c.args(["train", "ddpm", "--data", "shapes", "--out"])
                .arg(out)
                .args(["--steps", "4", "--seed", "5", "--quiet"])
                .args(["--set", "model.net.unet.base_channels=8"])
                .args(["--set", "model.net.unet.groups=4"])
                .args(["--set", "model.net.unet.channel_mult=[1,2]"])
                .args(["--set", "model.net.unet.num_res_blocks=1"])
                .args(["--set", "model.net.unet.attention_resolutions=[16]"])
                .args(["--set", "model.net.unet.num_heads=2"])
                .args(["--set", "model.sample_steps=3"])
                .args([
                    "--set",
                    "train.batch_size=4",
                    "--set",
                    "train.eval_batches=1",
                ])
                .args([
                    "--set",
                    "data.sizes.train=32",
                    "--set",
                    "data.sizes.validation=8",
                ]);
            c
        },
        3,
    );
    let d = tmp("exact-corpus");
    let text = d.join("corpus.txt");
    let corpus: String = (0..200)
        .map(|i| {
            if i % 3 == 0 {
                "ROMEO: hi\n"
            } else {
                "MEME: ho\n"
            }
        })
        .collect();
    std::fs::write(&text, corpus).unwrap();
    // a tiny GPT with dropout, and one trained to fill in the middle (its cuts come from the run's RNG too)
    let gpt = |out: &Path, extra: &str| {
        let mut c = dgm();
        c.args(["train", "gpt", "--data"])
            .arg(format!("text:{}", text.display()))
            .arg("--out")
            .arg(out)
            .args(["--steps", "6", "--seed", "5", "--quiet"])
            .args(["--set", "model.n_layer=1", "--set", "model.n_head=2"])
            .args(["--set", "model.n_embd=16", "--set", extra])
            .args([
                "--set",
                "data.text.context=16",
                "--set",
                "train.batch_size=4",
            ])
            .args(["--set", "train.eval_batches=1"]);
        c
    };
    assert_resume_is_exact("gpt", &|out| gpt(out, "model.dropout=0.1"), 4);
    assert_resume_is_exact("gpt-fim", &|out| gpt(out, "model.fim=0.5"), 3);
}
