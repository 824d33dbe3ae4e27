//! The studio's HTTP API, end to end: a server on an ephemeral loopback port, real requests, real (tiny) runs
//! trained through the API itself.

mod common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The page and its assets; a run trained, watched (server-sent events) and stopped through the API; its
/// summary, samples and loss curve; a sample job whose grid and single images are PNGs, the same for the same
/// seed, and the same as the library's own samples for that seed.
#[test]
fn trains_watches_stops_and_samples_through_the_api() {
    let d = tmp("train");
    let s = start(&d.0.join("runs"), 4, 1 << 20);

    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert!(page.ctype.starts_with("text/html"));
    assert!(page.text().contains("dgm studio") && page.text().contains("/app.js"));
    for (p, t) in [("/app.js", "javascript"), ("/style.css", "text/css")] {
        let r = s.get(p);
        assert_eq!(r.status, 200, "{p}");
        assert!(r.ctype.contains(t), "{p}: {}", r.ctype);
        assert!(r.body.len() > 500, "{p}");
    }
    let runs = s.get("/api/runs").json();
    assert_eq!(runs["runs"], json!([]));
    assert!(runs["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "ddpm"));

    // a run that would take long: watched while it trains, then stopped
    let r = s.post_json("/api/train", tiny_vae("vae", 1_000_000));
    assert_eq!(r.status, 202, "{}", r.text());
    let busy = s.post_json("/api/train", tiny_vae("other", 10));
    assert_eq!(busy.status, 409, "{}", busy.text());
    assert!(busy.json()["error"]
        .as_str()
        .unwrap()
        .contains("'vae' is training"));

    let (tx, rx) = mpsc::channel();
    let url = format!("{}/api/run/events?run=vae", s.base);
    let agent = s.agent.clone();
    std::thread::spawn(move || {
        let resp = agent.get(&url).call().unwrap();
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        for line in BufReader::new(resp.into_body().into_reader()).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let (mut saw_metrics, mut saw_checkpoint, mut saw_progress) = (false, false, false);
    let t0 = Instant::now();
    while !(saw_metrics && saw_checkpoint && saw_progress) {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("an event within two minutes");
        saw_metrics |= line == "event: metrics";
        saw_checkpoint |= line == "event: checkpoint";
        saw_progress |= line == "event: progress";
        if let Some(data) = line.strip_prefix("data: ") {
            // every event carries one JSON object
            let v: Value = serde_json::from_str(data).unwrap();
            assert!(v.is_object(), "{data}");
        }
        assert!(t0.elapsed() < Duration::from_secs(300));
    }

    let stop = s.post("/api/run/stop?run=vae", "{}");
    assert_eq!(stop.status, 202, "{}", stop.text());
    let t = s.wait_training("vae");
    assert_eq!(t["state"], "stopped", "{t}");
    let again = s.post("/api/run/stop?run=vae", "{}");
    assert_eq!(again.status, 409, "{}", again.text());

    let detail = s.get("/api/run?run=vae").json();
    assert_eq!(detail["model"], "vae");
    assert_eq!(detail["data"], "shapes");
    assert_eq!(detail["finished"], false);
    assert_eq!(
        detail["step"], t["step"],
        "the checkpoint is of the step training stopped at"
    );
    assert!(detail["config"]
        .as_str()
        .unwrap()
        .contains("latent_dim = 2"));
    // a sample-quality result written by `dgm eval` shows as the run's FID
    std::fs::write(
        d.0.join("runs/vae/eval-quality.json"),
        r#"{"step": 1, "weights": "ema", "num_samples": 10, "reference": {"split": "test", "n": 10}, "fid": 12.5}"#,
    )
    .unwrap();
    assert_eq!(s.get("/api/run?run=vae").json()["fid"], json!(12.5));
    let grid = s.get("/api/run/samples.png?run=vae");
    assert_eq!(grid.status, 200);
    assert!(is_png(&grid.body));
    let loss = s.get("/api/run/loss.svg?run=vae");
    assert_eq!(loss.status, 200);
    assert!(loss.text().starts_with("<svg"));

    // sampling: a grid of 6 and each image alone
    let req = json!({ "run": "vae", "n": 6, "seed": 5 });
    let (id, j) = s.job("/api/sample", req.clone());
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["images"], 6);
    let grid = s.get(&format!("/api/jobs/{id}/image.png"));
    assert_eq!(grid.status, 200);
    assert!(is_png(&grid.body));
    for i in 0..6 {
        let one = s.get(&format!("/api/jobs/{id}/image.png?index={i}"));
        assert_eq!(one.status, 200);
        // one 32×32 shapes image with the grid's 2-pixel border
        assert_eq!(png_size(&one.body), (36, 36));
    }
    let past = s.get(&format!("/api/jobs/{id}/image.png?index=6"));
    assert_eq!(past.status, 400);
    assert!(past.json()["error"].as_str().unwrap().contains("0 to 5"));
    // the same seed gives the same bits, and the library's own samples for that seed
    let (id2, _) = s.job("/api/sample", req);
    assert_eq!(s.get(&format!("/api/jobs/{id2}/image.png")).body, grid.body);

    // latent space: 6 decoded points between the codes of test examples 0 and 5, in a strip with both ends
    let (id, j) = s.job(
        "/api/interpolate",
        json!({ "run": "vae", "from": { "example": 0 }, "to": { "example": 5 }, "steps": 6 }),
    );
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["images"], 6);
    assert_eq!(
        png_size(&s.get(&format!("/api/jobs/{id}/image.png")).body),
        (8 * 34 + 2, 36)
    );
    let ends = [0, 5].map(|i| s.get(&format!("/api/jobs/{id}/image.png?index={i}")).body);
    assert_ne!(ends[0], ends[1], "the path does not move");

    // likelihood: an example scored by index and the same example uploaded as a PNG give the same bits
    let ex = s.get("/api/run/example.png?run=vae&index=2").body;
    let mut scored = Vec::new();
    for image in [json!({ "example": 2 }), json!({ "image": b64(&ex) })] {
        let (_, j) = s.job(
            "/api/likelihood",
            json!({ "run": "vae", "image": image, "reference": 16, "ood": ["noise", "constant"] }),
        );
        assert_eq!(j["state"], "done", "{j}");
        let r = j["result"].clone();
        assert_eq!(r["kind"], "estimate of a bound");
        let names: Vec<&str> = r["sets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["test", "noise", "constant"]);
        for set in r["sets"].as_array().unwrap() {
            let b = set["bits_per_dim"].as_array().unwrap();
            assert_eq!(b.len(), 16, "{set}");
            assert!(b.iter().all(|v| v.as_f64().unwrap().is_finite()));
        }
        let share = r["test_share_worse"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&share));
        scored.push(r["bits_per_dim"].as_f64().unwrap());
    }
    assert!(scored[0].is_finite());
    assert_eq!(
        scored[0], scored[1],
        "index and upload score the same pixels"
    );
    for (path, req, needle) in [
        (
            "/api/likelihood",
            json!({ "run": "vae", "image": { "example": 1, "image": "x" } }),
            "either",
        ),
        (
            "/api/likelihood",
            json!({ "run": "vae", "image": {} }),
            "either",
        ),
        (
            "/api/likelihood",
            json!({ "run": "vae", "image": { "example": 1 }, "ood": ["moon"] }),
            "OOD set 'moon'",
        ),
        (
            "/api/likelihood",
            json!({ "run": "vae", "image": { "example": 1 }, "reference": 1001 }),
            "0 to 1000",
        ),
        (
            "/api/likelihood",
            json!({ "run": "vae", "image": { "example": 1 }, "steps": 0 }),
            "steps = 0",
        ),
        (
            "/api/interpolate",
            json!({ "run": "vae", "from": { "example": 1 }, "to": { "example": 2 }, "steps": 1 }),
            "2 to 32",
        ),
    ] {
        let r = s.post_json(path, req.clone());
        assert_eq!(r.status, 400, "{req}: {}", r.text());
        assert!(
            r.json()["error"].as_str().unwrap().contains(needle),
            "{req}: {}",
            r.text()
        );
    }
    let (_, j) = s.job(
        "/api/interpolate",
        json!({ "run": "vae", "from": { "example": 64 }, "to": { "example": 2 } }),
    );
    assert!(j["error"].as_str().unwrap().contains("0 to 63"), "{j}");
    let run = dgm::train::run::load(
        &d.0.join("runs/vae"),
        dgm::train::Weights::Ema,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let x = run
        .model
        .sample(6, &dgm::model::SampleOptions::seeded(5))
        .unwrap();
    let shape =
        dgm::models::example_shape(&run.config.model.name, &run.config.model.config).unwrap();
    let mut canvas =
        dgm::image_io::SampleCanvas::new(6, &shape, &run.config.data.preprocessing).unwrap();
    canvas.add(&x).unwrap();
    assert_eq!(canvas.png().unwrap(), grid.body);
}

/// A tiny GPT trained through the API: a prompt's continuation (the prompt, then exactly the tokens asked
/// for, the same for the same seed); then a queue of one fills, the requests beyond it get 503 with
/// Retry-After at once, and every accepted job finishes.
#[test]
fn text_continues_a_prompt_and_a_full_queue_answers_503() {
    let d = tmp("text");
    let corpus = corpus(&d.0);
    let s = start(&d.0.join("runs"), 1, 1 << 20);
    let r = s.post_json("/api/train", tiny_gpt("gpt", &corpus));
    assert_eq!(r.status, 202, "{}", r.text());
    let t = s.wait_training("gpt");
    assert_eq!(t["state"], "finished", "{t}");

    let req = json!({ "run": "gpt", "prompt": "ROMEO:", "max_tokens": 40, "seed": 2, "temperature": 0.8 });
    let (_, j) = s.job("/api/generate", req.clone());
    assert_eq!(j["state"], "done", "{j}");
    let out = j["text"].as_str().unwrap().to_string();
    assert!(out.starts_with("ROMEO:"), "{out}");
    // one character a token (an ASCII corpus)
    assert_eq!(out.len(), "ROMEO:".len() + 40, "{out:?}");
    let (_, j2) = s.job("/api/generate", req);
    assert_eq!(j2["text"], json!(out));

    // scoring a text: one log-probability per character, the same as the library's, summing to the NLL
    let text = "ROMEO: hi\nMEME: ho\n";
    let (_, j) = s.job("/api/score", json!({ "run": "gpt", "text": text }));
    assert_eq!(j["state"], "done", "{j}");
    let r = &j["result"];
    let tokens = r["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), text.len());
    let shown: String = tokens.iter().map(|t| t[0].as_str().unwrap()).collect();
    assert_eq!(shown, text);
    let lp: Vec<f64> = tokens.iter().map(|t| t[1].as_f64().unwrap()).collect();
    assert!(lp.iter().all(|&l| l <= 0.0));
    let nll = r["nll_nats"].as_f64().unwrap();
    assert!((nll + lp.iter().sum::<f64>()).abs() < 1e-9);
    assert!(
        (r["bits_per_token"].as_f64().unwrap() - nll / text.len() as f64 / std::f64::consts::LN_2)
            .abs()
            < 1e-12
    );
    assert_eq!(r["kind"], "exact");
    let run = dgm::train::run::load(
        &d.0.join("runs/gpt"),
        dgm::train::Weights::Ema,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let lm = run.model.as_sequence().unwrap();
    let ids = lm.tokenizer().encode(text.as_bytes()).unwrap();
    // the same numbers (to the last digits JSON keeps)
    for (a, b) in lm.token_log_probs(&ids).unwrap().iter().zip(&lp) {
        assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{a} vs {b}");
    }
    for (req, needle) in [
        (json!({ "run": "gpt", "text": "" }), "empty"),
        (
            json!({ "run": "gpt", "text": "a".repeat(100_001) }),
            "at most 100000",
        ),
    ] {
        let r = s.post_json("/api/score", req);
        assert_eq!(r.status, 400);
        assert!(
            r.json()["error"].as_str().unwrap().contains(needle),
            "{}",
            r.text()
        );
    }

    // a language model has no image samples: the job fails with a one-line reason
    let (_, j) = s.job("/api/sample", json!({ "run": "gpt" }));
    assert_eq!(j["state"], "failed");
    assert!(j["error"].as_str().unwrap().contains("Text page"), "{j}");
    let bad = s.post_json("/api/generate", json!({ "run": "gpt", "top_p": 1.5 }));
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("top"));

    // a queue of one: long jobs sent back to back
    let mut accepted = Vec::new();
    let mut refused = 0;
    for seed in 0..12 {
        let r = s.post_json(
            "/api/generate",
            json!({ "run": "gpt", "max_tokens": 4000, "seed": seed }),
        );
        match r.status {
            202 => accepted.push(r.json()["job"].as_u64().unwrap()),
            503 => {
                refused += 1;
                assert_eq!(r.retry_after.as_deref(), Some("5"));
                assert!(r.json()["error"]
                    .as_str()
                    .unwrap()
                    .contains("queue is full"));
            }
            other => panic!("status {other}: {}", r.text()),
        }
    }
    assert!(
        refused > 0,
        "12 long jobs were all queued behind a queue of one"
    );
    assert!(
        accepted.len() >= 2,
        "the running job and one waiting: {accepted:?}"
    );
    for id in accepted {
        let j = s.wait_job(id);
        assert_eq!(j["state"], "done", "{j}");
        assert_eq!(j["text"].as_str().unwrap().len(), 4000);
    }
}

/// Every bad request gets a 4xx and a JSON message naming what was wrong, names that would leave the runs
/// folder are refused, failing jobs say why, and the server keeps serving — also under a burst of
/// concurrent requests (no 5xx but the full queue's 503).
#[test]
fn bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving() {
    let d = tmp("bad");
    let runs = d.0.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    // a run outside the runs folder, reachable by a link and by `..`
    let outside = d.0.join("secret");
    {
        let s = start(&d.0, 4, 64 << 10);
        assert_eq!(
            s.post_json("/api/train", tiny_vae("secret", 20)).status,
            202
        );
        assert_eq!(s.wait_training("secret")["state"], "finished");
    }
    std::os::unix::fs::symlink(&outside, runs.join("link")).unwrap();
    let s = start(&runs, 4, 64 << 10);
    assert_eq!(s.post_json("/api/train", tiny_vae("vae", 20)).status, 202);
    assert_eq!(s.wait_training("vae")["state"], "finished");
    let listed = s.get("/api/runs").json();
    let names: Vec<&str> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vae"], "the linked run outside is not listed");

    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("GET", "/api/run?run=nope", None, 404, "no run 'nope'"),
        ("GET", "/api/run?run=link", None, 404, "no run 'link'"),
        ("GET", "/api/run?run=../secret", None, 400, "'..'"),
        ("GET", "/api/run?run=..%2Fsecret", None, 400, "'..'"),
        (
            "GET",
            "/api/run?run=%2Fetc%2Fpasswd",
            None,
            400,
            "part is empty",
        ),
        (
            "GET",
            "/api/run/samples.png?run=vae%2F..%2F..%2Fsecret",
            None,
            400,
            "'..'",
        ),
        (
            "GET",
            "/api/run/loss.svg?run=a%5Cb",
            None,
            400,
            "letters, digits",
        ),
        ("GET", "/api/run/events?run=..", None, 400, "'..'"),
        ("GET", "/api/jobs/abc", None, 400, "not a number"),
        ("GET", "/api/jobs/999", None, 404, "no job 999"),
        ("GET", "/api/jobs/999/image.png", None, 404, "no job 999"),
        ("GET", "/nope", None, 404, "no such page"),
        ("POST", "/api/sample", Some("not json"), 400, "request body"),
        (
            "POST",
            "/api/sample",
            Some(r#"{"run":"vae","n":65}"#),
            400,
            "1 to 64",
        ),
        (
            "POST",
            "/api/sample",
            Some(r#"{"run":"vae","steps":0}"#),
            400,
            "steps = 0",
        ),
        (
            "POST",
            "/api/sample",
            Some(r#"{"run":"vae","temperature":-1}"#),
            400,
            "temperature",
        ),
        (
            "POST",
            "/api/sample",
            Some(r#"{"run":"vae","colour":1}"#),
            400,
            "unknown field `colour`",
        ),
        (
            "POST",
            "/api/sample",
            Some(r#"{"run":"../secret"}"#),
            400,
            "'..'",
        ),
        (
            "POST",
            "/api/sample",
            Some(r#"{"n":4}"#),
            400,
            "missing field `run`",
        ),
        (
            "POST",
            "/api/generate",
            Some(r#"{"run":"vae","max_tokens":0}"#),
            400,
            "max_tokens = 0",
        ),
        (
            "POST",
            "/api/train",
            Some(r#"{"name":"../evil","model":"vae"}"#),
            400,
            "at most 1",
        ),
        (
            "POST",
            "/api/train",
            Some(r#"{"name":"a/b","model":"vae"}"#),
            400,
            "at most 1",
        ),
        (
            "POST",
            "/api/train",
            Some(r#"{"name":"x","model":"nosuch"}"#),
            400,
            "vae",
        ),
        (
            "POST",
            "/api/train",
            Some(r#"{"name":"vae","model":"vae"}"#),
            409,
            "already exists",
        ),
        (
            "POST",
            "/api/train",
            Some(r#"{"name":"y","model":"vae","set":["nokey=1"]}"#),
            400,
            "nokey",
        ),
        (
            "POST",
            "/api/train",
            Some(r#"{"name":"z","model":"vae","steps":0}"#),
            400,
            "steps = 0",
        ),
        (
            "POST",
            "/api/run/stop?run=vae",
            Some("{}"),
            409,
            "not training",
        ),
        (
            "POST",
            "/api/run/stop?run=elsewhere",
            Some("{}"),
            404,
            "Ctrl-C",
        ),
    ];
    for (method, path, body, status, needle) in cases {
        let r = match body {
            None => s.get(path),
            Some(b) => s.post(path, b),
        };
        let what = format!("{method} {path} {body:?}: {} {}", r.status, r.text());
        assert_eq!(r.status, *status, "{what}");
        let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(needle), "{what}: no {needle:?}");
        assert!(!msg.contains('\n'), "{what}: one line");
    }
    assert!(!runs.join("evil").exists() && !d.0.join("evil").exists());
    // what a page elsewhere could make a browser send: a form post, a rebound DNS name
    let form = read(
        s.agent
            .post(format!("{}/api/train", s.base))
            .header("content-type", "text/plain")
            .send(r#"{"name":"csrf","model":"vae"}"#)
            .unwrap(),
    );
    assert_eq!(form.status, 415, "{}", form.text());
    assert!(!runs.join("csrf").exists());
    let rebound = read(
        s.agent
            .get(format!("{}/api/runs", s.base))
            .header("host", "attacker.example:7860")
            .call()
            .unwrap(),
    );
    assert_eq!(rebound.status, 403, "{}", rebound.text());
    assert!(rebound.json()["error"]
        .as_str()
        .unwrap()
        .contains("attacker.example"));
    for ok in ["localhost:7860", "127.0.0.1:1", "[::1]:7860", "LOCALHOST"] {
        let r = read(
            s.agent
                .get(format!("{}/api/runs", s.base))
                .header("host", ok)
                .call()
                .unwrap(),
        );
        assert_eq!(r.status, 200, "{ok}: {}", r.text());
    }
    // a missing query parameter and an oversized body are refused by the framework, with a 4xx
    assert_eq!(s.get("/api/run").status, 400);
    let big = format!(r#"{{"run":"vae","caption":"{}"}}"#, "a".repeat(100 << 10));
    assert_eq!(s.post("/api/sample", &big).status, 413);

    // a job that cannot run fails with a one-line reason; the server goes on
    let (_, j) = s.job("/api/sample", json!({ "run": "vae", "sampler": "ddim" }));
    assert_eq!(j["state"], "failed");
    assert!(j["error"].as_str().unwrap().contains("sampler"), "{j}");
    let (_, j) = s.job("/api/generate", json!({ "run": "vae" }));
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("not a language model"),
        "{j}"
    );
    let (_, j) = s.job("/api/sample", json!({ "run": "vae", "n": 2 }));
    assert_eq!(j["state"], "done");

    // a burst: 16 threads × 12 requests of pages, listings and sample jobs
    let statuses: Vec<u16> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..16)
            .map(|t| {
                let s = &s;
                sc.spawn(move || {
                    (0..12)
                        .map(|i| match (t + i) % 3 {
                            0 => s.get("/").status,
                            1 => s.get("/api/runs").status,
                            _ => {
                                s.post_json(
                                    "/api/sample",
                                    json!({ "run": "vae", "n": 4, "seed": i }),
                                )
                                .status
                            }
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses.len(), 192);
    for st in &statuses {
        assert!(matches!(st, 200 | 202 | 503), "status {st} in the burst");
    }
    assert_eq!(s.get("/api/runs").status, 200);
}

/// Edits with a tiny DDPM trained through the API: a test example as a PNG of the model's size; inpainting a
/// painted centre box keeps every pixel outside it and gives the same bits for the same seed; SDEdit of a
/// drawing and super-resolution run; settings that do not apply, a missing mask and bad files are refused
/// before queueing (400) or fail the job with their reason.
#[test]
fn edits_an_image_with_a_diffusion_run() {
    let d = tmp("edit");
    let s = start(&d.0.join("runs"), 4, 1 << 20);
    for req in [tiny_ddpm("ddpm", 20), tiny_vae("vae", 10)] {
        let name = req["name"].as_str().unwrap().to_string();
        assert_eq!(s.post_json("/api/train", req).status, 202);
        assert_eq!(s.wait_training(&name)["state"], "finished");
    }
    let listed = s.get("/api/runs").json();
    let ddpm = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "ddpm")
        .unwrap()
        .clone();
    assert_eq!(ddpm["shape"], json!([3, 32, 32]));
    assert_eq!(ddpm["abilities"]["denoiser"], true);

    let ex = s.get("/api/run/example.png?run=ddpm&index=3");
    assert_eq!(ex.status, 200);
    assert_eq!(png_size(&ex.body), (32, 32));
    let past = s.get("/api/run/example.png?run=ddpm&index=16");
    assert_eq!(past.status, 400);
    assert!(past.json()["error"].as_str().unwrap().contains("0 to 15"));

    // a diffusion sample job reports its sampler's steps
    let (_, j) = s.job(
        "/api/sample",
        json!({ "run": "ddpm", "n": 2, "steps": 10, "sampler": "ddim" }),
    );
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["progress"], json!([10, 10]));

    // inpainting a centre box: the pixels outside it are the input's
    let image = format!("data:image/png;base64,{}", b64(&ex.body));
    let inside = |x: u32, y: u32| (8..24).contains(&x) && (8..24).contains(&y);
    let mask = b64(&grey_png(32, 32, |x, y| if inside(x, y) { 255 } else { 0 }));
    let req = json!({ "run": "ddpm", "task": "inpaint", "image": image, "mask": mask, "n": 2, "steps": 10, "seed": 4 });
    let (id, j) = s.job("/api/edit", req.clone());
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["images"], 2);
    // the input, the masked image and two samples, each 32×32 with a 2-pixel border
    assert_eq!(
        png_size(&s.get(&format!("/api/jobs/{id}/image.png")).body),
        (4 * 34 + 2, 36)
    );
    let truth = rgb_of(&ex.body);
    let mut changed = 0;
    for i in 0..2 {
        let one = rgb_of(&s.get(&format!("/api/jobs/{id}/image.png?index={i}")).body);
        for y in 0..32 {
            for x in 0..32 {
                let (a, b) = (one.get_pixel(x + 2, y + 2), truth.get_pixel(x, y));
                if inside(x, y) {
                    changed += usize::from(a != b);
                } else {
                    assert_eq!(a, b, "sample {i}: observed pixel ({x}, {y}) changed");
                }
            }
        }
    }
    assert!(changed > 0, "nothing was filled in");
    let p = j["progress"].as_array().unwrap();
    assert!(p[1].as_u64().unwrap() >= 10 && p[0] == p[1], "{j}");
    let (id2, _) = s.job("/api/edit", req);
    assert_eq!(
        s.get(&format!("/api/jobs/{id2}/image.png")).body,
        s.get(&format!("/api/jobs/{id}/image.png")).body
    );

    // SDEdit of a drawing (the guide and the samples) and super-resolution (input, measurement, samples)
    let drawing = b64(&grey_png(32, 32, |x, y| if x + y == 32 { 255 } else { 0 }));
    let (id, j) = s.job(
        "/api/edit",
        json!({ "run": "ddpm", "task": "sdedit", "image": drawing, "strength": 0.5, "n": 3, "steps": 10 }),
    );
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(
        png_size(&s.get(&format!("/api/jobs/{id}/image.png")).body),
        (4 * 34 + 2, 36)
    );
    let (_, j) = s.job(
        "/api/edit",
        json!({ "run": "ddpm", "task": "super-resolve", "factor": 4, "image": image, "n": 1, "steps": 10 }),
    );
    assert_eq!(j["state"], "done", "{j}");

    // refused before queueing
    let grey_mask = b64(&grey_png(32, 32, |_, _| 128));
    for (req, needle) in [
        (
            json!({ "run": "ddpm", "task": "paint", "image": image }),
            "choose one of inpaint",
        ),
        (
            json!({ "run": "ddpm", "task": "inpaint", "image": image }),
            "needs a mask",
        ),
        (
            json!({ "run": "ddpm", "task": "colorize", "image": image, "mask": mask }),
            "mask does not apply to colorize",
        ),
        (
            json!({ "run": "ddpm", "task": "deblur", "image": image, "factor": 2 }),
            "factor does not apply",
        ),
        (
            json!({ "run": "ddpm", "task": "sdedit", "image": image, "n": 17 }),
            "1 to 16",
        ),
        (
            json!({ "run": "ddpm", "task": "sdedit", "image": "***" }),
            "not base64",
        ),
        (
            json!({ "run": "nope", "task": "sdedit", "image": image }),
            "no run 'nope'",
        ),
    ] {
        let r = s.post_json("/api/edit", req.clone());
        assert!(r.status == 400 || r.status == 404, "{req}: {}", r.text());
        assert!(
            r.json()["error"].as_str().unwrap().contains(needle),
            "{req}: {}",
            r.text()
        );
    }
    // failing in the job, with the reason
    let small = b64(&grey_png(16, 16, |_, _| 0));
    for (req, needle) in [
        (
            json!({ "run": "ddpm", "task": "sdedit", "image": small }),
            "takes 32×32",
        ),
        (
            json!({ "run": "ddpm", "task": "inpaint", "image": image, "mask": grey_mask }),
            "grey",
        ),
        (
            json!({ "run": "ddpm", "task": "sdedit", "image": image, "strength": 1.5 }),
            "strength",
        ),
        (
            json!({ "run": "ddpm", "task": "colorize", "image": image, "solver": "repaint" }),
            "does not apply",
        ),
        (
            json!({ "run": "vae", "task": "sdedit", "image": image }),
            "diffusion run",
        ),
    ] {
        let (_, j) = s.job("/api/edit", req.clone());
        assert_eq!(j["state"], "failed", "{req}");
        assert!(j["error"].as_str().unwrap().contains(needle), "{req}: {j}");
    }
}
