//! The page in a real browser: Debian's Chromium driven through chromedriver (WebDriver) from Rust. Each page
//! is loaded and used as a person would — a run picked from the table, a sample grid asked for, a prompt
//! continued — and its result checked (an image that is not blank, the text asked for); a screenshot of each
//! page is written to `$DGM_STUDIO_SCREENSHOTS` (else `target/tmp/studio-screenshots/`). With
//! `DGM_STUDIO_DEMO_RUN` naming a caption-conditioned shapes run (the README's `runs/quickstart`), the Runs,
//! Sample and Edit pages are used once more on it: the README's screenshots come from that pass
//! (`DGM_STUDIO_SCREENSHOTS=docs/images/studio DGM_STUDIO_DEMO_RUN=runs/quickstart cargo test --release -p
//! dgm-studio --test browser`).
//!
//! Without chromium and chromedriver the test says so and passes, unless `DGM_REQUIRE_BROWSER` is set (CI
//! sets it, after installing them with apt): then their absence fails it.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// The first of `names` found as a file, or on `PATH`.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for n in names {
        let p = Path::new(n);
        if p.is_absolute() && p.is_file() {
            return Some(p.to_path_buf());
        }
        for dir in std::env::split_paths(&path) {
            let c = dir.join(n);
            if c.is_file() {
                return Some(c);
            }
        }
    }
    None
}

/// chromedriver, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the script expression `cond` is truthy in the page; its value.
async fn wait_js(c: &Client, cond: &str, what: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let v = c
            .execute(&format!("return ({cond});"), vec![])
            .await
            .unwrap();
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return v;
        }
        if t0.elapsed() > Duration::from_secs(180) {
            let status = c
                .execute(
                    "return [...document.querySelectorAll('[id$=status], .error')].map(e => e.id + ': ' + e.textContent).join(' | ');",
                    vec![],
                )
                .await
                .unwrap_or_default();
            panic!("waited 180 s for {what} ({cond}); page says: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The standard deviation of the grey values of the image `sel` (0 for a blank image), drawn on a canvas, as
/// text (so that a blank image's 0 is not mistaken for "not loaded yet", which is null).
const IMAGE_SPREAD: &str = "(() => { const i = document.querySelector(SEL);
  if (!i || !i.complete || !i.naturalWidth) return null;
  const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(i, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data; let s = 0, s2 = 0, n = 0;
  for (let k = 0; k < d.length; k += 4) { const v = (d[k] + d[k + 1] + d[k + 2]) / 3; s += v; s2 += v * v; n++; }
  const m = s / n; return String(Math.sqrt(Math.max(0, s2 / n - m * m))); })()";

/// Waits until the image `sel` has loaded; the spread of its grey values.
async fn wait_spread(c: &Client, sel: &str, what: &str) -> f64 {
    let v = wait_js(c, &IMAGE_SPREAD.replace("SEL", &format!("'{sel}'")), what).await;
    v.as_str().and_then(|t| t.parse().ok()).unwrap_or(f64::NAN)
}

fn screenshot_dir() -> PathBuf {
    match std::env::var_os("DGM_STUDIO_SCREENSHOTS") {
        // a relative path is taken from the workspace root
        Some(d) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(d),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("studio-screenshots"),
    }
}

async fn shot(c: &Client, name: &str) {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    let p = dir.join(format!("{name}.png"));
    std::fs::write(&p, png).unwrap();
    eprintln!("screenshot: {}", p.display());
}

/// Copies the folder `from` to `to` (files and sub-folders).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Clicks the element `sel`.
async fn click(c: &Client, sel: &str) {
    c.find(Locator::Css(sel))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Picks the option `value` of the select `sel`.
async fn select(c: &Client, sel: &str, value: &str) {
    c.find(Locator::Css(sel))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

/// Replaces the value of the input `sel` with `text`.
async fn type_into(c: &Client, sel: &str, text: &str) {
    let e = c.find(Locator::Css(sel)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

/// The Runs, Sample and Edit pages on the demo run `quickstart`, each checked and photographed.
async fn demo_pass(c: &Client, base: &str) {
    c.goto(base).await.unwrap();
    c.wait()
        .for_element(Locator::Css("tr[data-run='quickstart']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let spread = wait_spread(c, "#detail-samples", "the demo grid").await;
    assert!(spread > 2.0);
    shot(c, "demo-runs").await;

    click(c, "button[data-page='sample']").await;
    select(c, "#sample-form select[name=run]", "quickstart").await;
    type_into(
        c,
        "#sample-form input[name=caption]",
        "a large yellow star in the centre",
    )
    .await;
    type_into(c, "#sample-form input[name=guidance]", "3").await;
    click(c, "#sample-form button[type=submit]").await;
    wait_js(
        c,
        "document.querySelector('#sample-status').textContent.startsWith('done') && document.querySelectorAll('#sample-each a img').length === 16",
        "the demo samples",
    )
    .await;
    let spread = wait_spread(c, "#sample-grid", "the demo sample grid").await;
    assert!(spread > 2.0);
    shot(c, "demo-sample").await;

    click(c, "button[data-page='edit']").await;
    select(c, "#edit-form select[name=run]", "quickstart").await;
    select(c, "#edit-form select[name=task]", "sdedit").await;
    click(c, "#edit-clear").await;
    type_into(c, "#brush-size", "6").await;
    stroke(c, "#edit-image").await;
    type_into(
        c,
        "#edit-form input[name=caption]",
        "a large red square in the centre",
    )
    .await;
    type_into(c, "#edit-form input[name=guidance]", "3").await;
    type_into(c, "#edit-form input[name=steps]", "18").await;
    run_edit(c).await;
    shot(c, "demo-edit-draw").await;

    select(c, "#edit-form select[name=task]", "inpaint").await;
    type_into(c, "#edit-form input[name=caption]", "").await;
    click(c, "#example-load").await;
    // the example's caption fills the caption field
    wait_js(
        c,
        "document.querySelector('#edit-form input[name=caption]').value.startsWith('a ')",
        "the example's caption",
    )
    .await;
    stroke(c, "#edit-mask").await;
    run_edit(c).await;
    shot(c, "demo-edit-mask").await;
}

/// A stroke across the middle of the canvas `sel`, with the mouse.
async fn stroke(c: &Client, sel: &str) {
    let canvas = c.find(Locator::Css(sel)).await.unwrap();
    let mut m = MouseActions::new("mouse".into()).then(PointerAction::MoveToElement {
        element: canvas,
        duration: None,
        x: -80.0,
        y: -40.0,
    });
    m = m.then(PointerAction::Down {
        button: MOUSE_BUTTON_LEFT,
    });
    for _ in 0..8 {
        m = m.then(PointerAction::MoveBy {
            duration: Some(Duration::from_millis(10)),
            x: 20.0,
            y: 10.0,
        });
    }
    m = m.then(PointerAction::Up {
        button: MOUSE_BUTTON_LEFT,
    });
    c.perform_actions(m).await.unwrap();
}

/// Submits the edit form and waits for its result grid and samples; the grid must not be blank.
async fn run_edit(c: &Client) {
    click(c, "#edit-form button[type=submit]").await;
    wait_js(
        c,
        "document.querySelector('#edit-status').textContent.startsWith('done') && document.querySelectorAll('#edit-each a img').length === 4 && [...document.querySelectorAll('#edit-each a img')].every(i => i.complete && i.naturalWidth > 0)",
        "the edit's samples",
    )
    .await;
    let spread = wait_spread(c, "#edit-grid", "the edit's grid").await;
    assert!(spread > 2.0, "blank edit result: {spread}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_page_works_in_chromium() {
    let (Some(chrome), Some(driver)) = (
        find_program(&[
            "/usr/bin/chromium",
            "chromium",
            "chromium-browser",
            "google-chrome",
        ]),
        find_program(&["/usr/bin/chromedriver", "chromedriver"]),
    ) else {
        assert!(
            std::env::var_os("DGM_REQUIRE_BROWSER").is_none(),
            "DGM_REQUIRE_BROWSER is set but chromium or chromedriver is missing (apt install chromium chromium-driver)"
        );
        eprintln!(
            "skipped: chromium and chromedriver not found (apt install chromium chromium-driver)"
        );
        return;
    };

    // the runs: a tiny VAE and a tiny GPT, trained through the API
    let d = tmp("browser");
    let corpus = corpus(&d.0);
    let runs = d.0.join("runs");
    let s = tokio::task::spawn_blocking(move || {
        let s = start(&runs, 4, 1 << 20);
        let mut vae = tiny_vae("vae", 40);
        vae["set"]
            .as_array_mut()
            .unwrap()
            .push(json!("model.latent_dim=8"));
        for req in [vae, tiny_gpt("gpt", &corpus), tiny_ddpm("ddpm", 20)] {
            let name = req["name"].as_str().unwrap().to_string();
            let r = s.post_json("/api/train", req);
            assert_eq!(r.status, 202, "{}", r.text());
            assert_eq!(s.wait_training(&name)["state"], "finished");
        }
        s
    })
    .await
    .unwrap();

    let port = free_port();
    let _driver = Driver(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let profile = d.0.join("chrome-profile");
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chrome,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1400,1000",
                     format!("--user-data-dir={}", profile.display())]
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let t0 = Instant::now();
    let c = loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) if t0.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver on port {port}: {e}"),
        }
    };

    // Runs: the table lists both runs; picking one shows its samples and loss curve
    c.goto(&s.base).await.unwrap();
    c.wait()
        .for_element(Locator::Css("tr[data-run='vae']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(c.find(Locator::Css("tr[data-run='gpt']")).await.is_ok());
    let spread = wait_spread(&c, "#detail-samples", "the run's sample grid").await;
    assert!(spread > 2.0, "blank sample grid: {spread}");
    wait_js(
        &c,
        "document.querySelector('#detail-loss').naturalWidth > 0",
        "the loss curve",
    )
    .await;
    let meta = wait_js(
        &c,
        "document.querySelector('#detail-meta').textContent",
        "the run's line",
    )
    .await;
    assert!(meta.as_str().unwrap().contains("vae on shapes"), "{meta}");
    shot(&c, "runs").await;

    // Sample: the language model is greyed out with its reason; 16 samples from the VAE
    click(&c, "button[data-page='sample']").await;
    let gpt = c
        .find(Locator::Css(
            "#sample-form select[name=run] option[value='gpt']",
        ))
        .await
        .unwrap();
    assert_eq!(gpt.attr("disabled").await.unwrap().as_deref(), Some("true"));
    assert!(gpt.text().await.unwrap().contains("use Text"));
    select(&c, "#sample-form select[name=run]", "vae").await;
    let sampler_off = c
        .execute(
            "return document.querySelector('#sample-form select[name=sampler]').disabled;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(sampler_off, json!(true), "a VAE takes no sampler");
    type_into(&c, "#sample-form input[name=n]", "16").await;
    click(&c, "#sample-form button[type=submit]").await;
    wait_js(
        &c,
        "document.querySelectorAll('#sample-each a img').length === 16 && [...document.querySelectorAll('#sample-each a img')].every(i => i.complete && i.naturalWidth > 0)",
        "16 single samples",
    )
    .await;
    let spread = wait_spread(&c, "#sample-grid", "the sample grid").await;
    assert!(spread > 2.0, "blank sample grid: {spread}");
    let status = wait_js(
        &c,
        "document.querySelector('#sample-status').textContent",
        "status",
    )
    .await;
    assert!(status.as_str().unwrap().starts_with("done"), "{status}");
    shot(&c, "sample").await;

    // Edit, draw → image: a stroke on the canvas, SDEdit, a result that is not blank
    click(&c, "button[data-page='edit']").await;
    let run = c
        .execute(
            "return document.querySelector('#edit-form select[name=run]').value;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(run, json!("ddpm"), "the only diffusion run is picked");
    type_into(&c, "#edit-form input[name=steps]", "10").await;
    stroke(&c, "#edit-image").await;
    let drawn = c
        .execute(
            "const g = document.querySelector('#edit-image').getContext('2d').getImageData(0, 0, 32, 32).data; \
             let k = 0; for (let i = 0; i < g.length; i += 4) k += g[i] > 0 ? 1 : 0; return k;",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        drawn.as_u64().unwrap() > 10,
        "the stroke left {drawn} pixels"
    );
    run_edit(&c).await;
    shot(&c, "edit-draw").await;

    // Edit, mask → fill: a test example loaded, a mask painted over it, inpainted
    select(&c, "#edit-form select[name=task]", "inpaint").await;
    click(&c, "#example-load").await;
    wait_js(
        &c,
        "(() => { const g = document.querySelector('#edit-image').getContext('2d').getImageData(0, 0, 32, 32).data; \
          let k = 0; for (let i = 0; i < g.length; i += 4) k += g[i] + g[i + 1] + g[i + 2] > 0 ? 1 : 0; return k > 20; })()",
        "the test example on the canvas",
    )
    .await;
    let solver = c
        .execute(
            "return document.querySelector('#edit-form select[name=solver]').value;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        solver,
        json!("repaint"),
        "a new task starts from its default solver"
    );
    stroke(&c, "#edit-mask").await;
    run_edit(&c).await;
    let legend = wait_js(
        &c,
        "document.querySelector('#edit-legend').textContent",
        "legend",
    )
    .await;
    assert!(
        legend.as_str().unwrap().contains("the measurement"),
        "{legend}"
    );
    shot(&c, "edit-mask").await;

    // Text: a continuation of the prompt, 200 characters long
    click(&c, "button[data-page='text']").await;
    type_into(&c, "#text-form input[name=max_tokens]", "200").await;
    click(&c, "#text-form button[type=submit]").await;
    wait_js(
        &c,
        "document.querySelector('#text-status').textContent.startsWith('done')",
        "the text job",
    )
    .await;
    let out = c
        .find(Locator::Css("#text-out"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(out.starts_with("ROMEO:"), "{out:?}");
    let raw = c
        .execute(
            "return document.querySelector('#text-out').textContent.length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(raw, json!("ROMEO:".len() + 200));
    // Text, scoring: every character of the pasted text coloured by its log-probability
    click(&c, "#score-form button[type=submit]").await;
    wait_js(
        &c,
        "document.querySelectorAll('#score-out span').length === document.querySelector('#score-form textarea').value.length",
        "one coloured span per character",
    )
    .await;
    let summary = wait_js(
        &c,
        "document.querySelector('#score-summary').textContent",
        "summary",
    )
    .await;
    assert!(
        summary.as_str().unwrap().contains("bits/char (exact"),
        "{summary}"
    );
    shot(&c, "text").await;

    // Likelihood: a test example against the test split and the OOD sets
    click(&c, "button[data-page='likelihood']").await;
    select(&c, "#likelihood-form select[name=run]", "vae").await;
    type_into(&c, "#likelihood-form input[name=reference]", "16").await;
    click(&c, "#likelihood-picker button").await;
    wait_js(&c, "document.querySelector('#likelihood-picker .muted').textContent.startsWith('test example')", "the example").await;
    click(&c, "#likelihood-form button[type=submit]").await;
    wait_js(
        &c,
        "document.querySelector('#likelihood-value').textContent.includes('bits/dim') && document.querySelectorAll('#likelihood-hist svg path').length >= 3",
        "the likelihood and the histograms",
    )
    .await;
    shot(&c, "likelihood").await;

    // Latent: the path between two test examples, and a point on it
    click(&c, "button[data-page='latent']").await;
    select(&c, "#latent-form select[name=run]", "vae").await;
    for sel in ["#latent-from button", "#latent-to button"] {
        c.find(Locator::Css(sel))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    wait_js(
        &c,
        "[...document.querySelectorAll('#page-latent .picker .muted')].every(e => e.textContent.startsWith('test example'))",
        "both examples",
    )
    .await;
    click(&c, "#latent-form button[type=submit]").await;
    wait_js(
        &c,
        "!document.querySelector('#latent-slider-label').hidden && document.querySelector('#latent-strip').naturalWidth > 0",
        "the interpolation strip",
    )
    .await;
    let spread = wait_spread(&c, "#latent-frame", "a point on the path").await;
    assert!(spread > 0.5, "blank frame: {spread}");
    shot(&c, "latent").await;

    // With DGM_STUDIO_DEMO_RUN (a caption-conditioned shapes run, e.g. the README's runs/quickstart), the same
    // pages once more on it, for the README's screenshots
    if let Some(demo) = std::env::var_os("DGM_STUDIO_DEMO_RUN") {
        // a relative path is taken from the workspace root
        let demo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(demo);
        copy_dir(&demo, &d.0.join("runs/quickstart"));
        demo_pass(&c, &s.base).await;
    }
    c.close().await.unwrap();
}
