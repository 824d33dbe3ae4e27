//! Helpers shared by the studio's integration tests: a server in this process, an HTTP client, tiny runs.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A temporary folder, removed when the test passes.
pub struct Tmp(pub PathBuf);

impl Drop for Tmp {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn tmp(name: &str) -> Tmp {
    let d = std::env::temp_dir().join(format!("dgm-studio-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Tmp(d)
}

/// A studio serving `runs` on a free loopback port, in a thread of this process.
pub struct Server {
    pub base: String,
    pub agent: ureq::Agent,
}

pub fn start(runs: &Path, queue: usize, max_body: usize) -> Server {
    let mut opts = dgm_studio::StudioOptions::new(runs);
    opts.queue = queue;
    opts.max_body = max_body;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        dgm_studio::serve_blocking(addr, opts, move |a| tx.send(a).unwrap()).unwrap();
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    Server {
        base: format!("http://{addr}"),
        agent,
    }
}

/// A response: status, content type, headers of interest and body.
pub struct Resp {
    pub status: u16,
    pub ctype: String,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

pub fn read(r: ureq::http::Response<ureq::Body>) -> Resp {
    let h = |k: &str| r.headers().get(k).map(|v| v.to_str().unwrap().to_string());
    let (status, ctype, retry_after) = (
        r.status().as_u16(),
        h("content-type").unwrap_or_default(),
        h("retry-after"),
    );
    let mut r = r;
    let body = r
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    Resp {
        status,
        ctype,
        retry_after,
        body,
    }
}

impl Server {
    pub fn get(&self, path: &str) -> Resp {
        read(
            self.agent
                .get(format!("{}{path}", self.base))
                .call()
                .unwrap(),
        )
    }
    pub fn post(&self, path: &str, body: &str) -> Resp {
        read(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .send(body)
                .unwrap(),
        )
    }
    pub fn post_json(&self, path: &str, v: Value) -> Resp {
        self.post(path, &v.to_string())
    }

    /// Waits for job `id` to end; its final status.
    pub fn wait_job(&self, id: u64) -> Value {
        let t0 = Instant::now();
        loop {
            let j = self.get(&format!("/api/jobs/{id}")).json();
            if j["state"] == "done" || j["state"] == "failed" {
                return j;
            }
            assert!(t0.elapsed() < Duration::from_secs(300), "job {id}: {j}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Queues a sample or text job (202) and waits for it.
    pub fn job(&self, path: &str, v: Value) -> (u64, Value) {
        let r = self.post_json(path, v);
        assert_eq!(r.status, 202, "{}", r.text());
        let id = r.json()["job"].as_u64().unwrap();
        (id, self.wait_job(id))
    }

    /// The progress of run `name` as listed by /api/runs.
    pub fn training(&self, name: &str) -> Value {
        let runs = self.get("/api/runs").json();
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["training"].clone())
            .unwrap_or(Value::Null)
    }

    /// Waits until run `name` (started here) is no longer training; its last state.
    pub fn wait_training(&self, name: &str) -> Value {
        let t0 = Instant::now();
        loop {
            let t = self.training(name);
            if !(t["state"] == "starting" || t["state"] == "training") {
                return t;
            }
            assert!(t0.elapsed() < Duration::from_secs(300), "{name}: {t}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A tiny VAE on shapes (as in the CLI tests), logging, checkpointing and sampling often.
pub fn tiny_vae(name: &str, steps: u64) -> Value {
    json!({
        "name": name, "model": "vae", "data": "shapes", "steps": steps, "seed": 7,
        "set": ["model.hidden=[32]", "model.latent_dim=2", "train.batch_size=32", "data.sizes.train=256",
                "data.sizes.validation=64", "data.sizes.test=64", "train.eval_batches=2",
                "train.log_every=5", "train.checkpoint_every=20", "train.sample_every=20"]
    })
}

pub fn is_png(b: &[u8]) -> bool {
    b.starts_with(b"\x89PNG\r\n\x1a\n")
}

/// Width and height of a PNG, from its IHDR chunk.
pub fn png_size(b: &[u8]) -> (u32, u32) {
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

/// A corpus of two alternating lines (12 distinct characters), written to `dir/corpus.txt`; its path.
pub fn corpus(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..300 {
        text.push_str(if i % 3 == 0 {
            "ROMEO: hi\n"
        } else {
            "MEME: ho\n"
        });
    }
    let p = dir.join("corpus.txt");
    std::fs::write(&p, text).unwrap();
    p
}

/// A tiny GPT on `corpus` (60 steps).
pub fn tiny_gpt(name: &str, corpus: &Path) -> Value {
    json!({
        "name": name, "model": "gpt", "data": format!("text:{}", corpus.display()), "steps": 60,
        "set": ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "data.text.context=16",
                "train.batch_size=8", "train.lr=1e-2", "train.eval_every=0", "train.eval_batches=2"]
    })
}

/// A tiny DDPM on shapes (a 2-level UNet of 8 base channels), `steps` steps.
pub fn tiny_ddpm(name: &str, steps: u64) -> Value {
    json!({
        "name": name, "model": "ddpm", "data": "shapes", "steps": steps, "seed": 3,
        "set": ["model.net.unet.base_channels=8", "model.net.unet.channel_mult=[1,2]",
                "model.net.unet.attention_resolutions=[16]", "model.net.unet.num_heads=2",
                "model.net.unet.groups=4", "train.batch_size=8", "train.eval_batches=1",
                "data.sizes.train=32", "data.sizes.validation=16", "data.sizes.test=16"]
    })
}

/// Base64 (RFC 4648, with padding).
pub fn b64(bytes: &[u8]) -> String {
    dgm::report::base64(bytes)
}

/// A grey PNG of `w × h` pixels whose value at (x, y) is `f(x, y)`.
pub fn grey_png(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// The RGB pixels of a PNG.
pub fn rgb_of(png: &[u8]) -> image::RgbImage {
    image::load_from_memory(png).unwrap().to_rgb8()
}
