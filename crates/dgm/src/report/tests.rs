//! Tests of the report: reading fake runs, choosing the likelihood shown, both renderings, escaping.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::format::{base64, html_escape};
use super::load::parse_kind;
use super::markdown::{md, relative_link};
use super::*;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("dgm-report-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const CONFIG: &str = r#"seed = 0
[model]
name = "vae"
latent_dim = 32
[data]
name = "shapes"
[data.preprocessing]
kind = "scale"
range = "zero_one"
dequantize = false
[train]
steps = 2000
"#;

const EVAL_TEST: &str = r#"[
  {"estimator":"elbo","kind":{"LowerBound":"ELBO"},"space":"Discrete","nll_nats":2515.588,
   "stderr_nats":62.6,"bits_per_dim":1.18139,"n":500,"dims":3072,"preprocessing":"scaled"},
  {"estimator":"iwae","kind":{"Estimate":"IWAE-10"},"space":"Discrete","nll_nats":2509.884,
   "stderr_nats":62.6,"bits_per_dim":1.17871,"n":500,"dims":3072,"preprocessing":"scaled"}
]"#;

const QUALITY: &str = r#"{"step":2000,"weights":"ema","num_samples":10000,
  "reference":{"split":"test","n":10000},
  "feature_net":{"path":"features/shapes","data":"shapes","test_accuracy":0.992},
  "fid":12.3456,"kid":{"mean":0.0123,"std":0.0011,"subsets":100,"subset_size":1000},
  "precision_recall":{"precision":0.7071,"recall":0.6049,"k":3},
  "mmd":null,"class_accuracy":null}"#;

const OOD: &str = r#"{"step":2000,"weights":"ema",
  "in_distribution":{"data":"shapes","split":"test","n":2000,"mean_nll_nats":2500.0,"mean_bpd":1.17},
  "score":{"estimator":"elbo","kind":"lower bound (ELBO)"},
  "sets":[{"name":"omniglot","n":2000,"mean_bpd":2.5,"auroc":0.93,"aupr":0.9},
      {"name":"noise","n":2000,"mean_bpd":8.0,"auroc":0.99,"aupr":0.98}]}"#;

/// A small valid PNG (2×2, written by the image crate).
fn png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(2, 2, image::Rgb([10, 200, 30]));
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

/// root/full: every file; root/group/<b>: only config + state (+ a malformed eval-quality.json).
fn fake_runs(t: &TempDir) -> PathBuf {
    let root = t.0.join("runs");
    let full = root.join("full");
    write(&full.join("config.toml"), CONFIG);
    write(
        &full.join("state.json"),
        r#"{"step": 2000, "finished": true}"#,
    );
    write(&full.join("eval-test.json"), EVAL_TEST);
    write(&full.join("eval-quality.json"), QUALITY);
    write(&full.join("eval-ood.json"), OOD);
    write(
        &full.join("metrics.jsonl"),
        "{\"step\":50,\"loss\":10.0}\n{\"step\":100,\"loss\":8.0,\"val_loss\":9.0}\nnot json\n",
    );
    std::fs::create_dir_all(full.join("samples")).unwrap();
    std::fs::write(full.join("samples/step-0000900.png"), b"old").unwrap();
    std::fs::write(full.join("samples/step-0001000.png"), png()).unwrap();
    let odd = root.join("group").join("<b>");
    write(
        &odd.join("config.toml"),
        "[model]\nname = \"pixelcnn\"\n[data]\nname = \"mnist\"\n",
    );
    // the current layout: the state is in checkpoint.json (`full` has the older state.json)
    write(
        &odd.join("checkpoint.json"),
        r#"{"format": 1, "state": {"step": 500, "finished": false}, "dir": "checkpoints/step-00000500", "files": {}}"#,
    );
    write(&odd.join("eval-quality.json"), "{\"fid\": 3.0,");
    // not a run: a folder without checkpoint.json or state.json
    write(&root.join("empty/config.toml"), CONFIG);
    root
}

#[test]
fn base64_rfc4648_vectors() {
    // RFC 4648 §10
    for (plain, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), enc, "{plain:?}");
    }
    // the last two alphabet characters: 111110 111111 111110 111111 = 62 63 62 63
    assert_eq!(base64(&[0xFB, 0xFF, 0xBF]), "+/+/");
    assert_eq!(base64(&[0, 0, 0]), "AAAA");
}

#[test]
fn collects_runs_and_picks_the_tightest_likelihood() {
    let t = TempDir::new("collect");
    let root = fake_runs(&t);
    let runs = collect_runs(&root).unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["full", "group/<b>"]);
    let full = &runs[0];
    assert_eq!(full.model.as_deref(), Some("vae"));
    assert_eq!(full.data.as_deref(), Some("shapes"));
    assert_eq!(
        full.preprocessing.as_deref(),
        Some("scaled to [0, 1] (no dequantization)")
    );
    assert_eq!((full.step, full.finished), (Some(2000), Some(true)));
    assert_eq!(full.nll.len(), 2);
    let best = full.best_nll().unwrap();
    // IWAE-10 (2509.884) is below the ELBO (2515.588): the tighter bound is shown
    assert_eq!(best.kind, "IWAE-10");
    assert_eq!(best.kind_class, KindClass::Estimate);
    assert_eq!(full.nll[0].kind_class, KindClass::Bound);
    assert_eq!(
        full.ood.as_ref().unwrap().mean_auroc(),
        Some((0.93 + 0.99) / 2.0)
    );
    assert!(full.sample.as_ref().unwrap().ends_with("step-0001000.png"));
    assert!(full.loss_svg.is_some());
    assert!(full.notes.iter().any(|n| n.contains("1 malformed line")));
    let odd = &runs[1];
    assert!(odd.quality.is_none() && odd.nll.is_empty() && odd.loss_svg.is_none());
    assert!(
        odd.notes.iter().any(|n| n.contains("eval-quality.json")),
        "{:?}",
        odd.notes
    );
}

#[test]
fn exact_likelihoods_win_and_test_split_is_preferred() {
    let e = |split: &str, kind: KindClass, nll: f64| NllEntry {
        split: split.into(),
        estimator: None,
        kind: kind.label().into(),
        kind_class: kind,
        space: None,
        nll_nats: nll,
        stderr_nats: None,
        bits_per_dim: None,
        n: None,
        preprocessing: None,
    };
    let r = RunSummary {
        nll: vec![
            e("validation", KindClass::Exact, 10.0),
            e("test", KindClass::Bound, 90.0),
            e("test", KindClass::Exact, 100.0),
            e("test", KindClass::Estimate, 95.0),
        ],
        ..RunSummary::default()
    };
    let b = r.best_nll().unwrap();
    assert_eq!((b.split.as_str(), b.nll_nats), ("test", 100.0));
    assert!(RunSummary::default().best_nll().is_none());
    assert_eq!(
        parse_kind(Some(&Value::String("lower bound (ELBO)".into()))),
        ("ELBO".to_string(), KindClass::Bound)
    );
    assert_eq!(
        parse_kind(Some(&Value::String("Exact".into()))).1,
        KindClass::Exact
    );
}

#[test]
fn html_has_the_numbers_escapes_and_embeds() {
    let t = TempDir::new("html");
    let root = fake_runs(&t);
    let out = t.0.join("out/report.html");
    assert_eq!(write_report(&root, &out).unwrap(), 2);
    let h = std::fs::read_to_string(&out).unwrap();
    assert!(h.starts_with("<!DOCTYPE html>") && h.trim_end().ends_with("</html>"));
    for want in [
        "2509.88", // best NLL (IWAE-10), 2 decimals
        "1.1787",  // its bits/dim
        "IWAE-10 (estimate)",
        "12.35",           // FID
        "0.0123 ± 0.0011", // KID
        "0.707",           // precision
        "0.605",           // recall
        "0.960 mean",      // OOD AUROC mean of 0.93 and 0.99
        "omniglot 0.930",
        "features-shapes",
        "NOT with Inception",
        "position:sticky",
    ] {
        assert!(h.contains(want), "missing {want}");
    }
    // the run named <b> is escaped everywhere; the raw tag never appears
    assert!(h.contains("group/&lt;b&gt;"));
    assert!(!h.contains("<b>group") && !h.contains("/<b>"));
    // the second run has no metrics: its row shows dashes
    let row = h
        .lines()
        .find(|l| l.contains("group/&lt;b&gt;</a>"))
        .unwrap();
    assert!(row.matches(MISSING).count() >= 8, "{row}");
    assert!(row.contains("500"), "{row}");
    // the sample grid is embedded, byte for byte, and the loss curve inline
    let data = format!("data:image/png;base64,{}", base64(&png()));
    assert!(h.contains(&data));
    assert_eq!(h.matches("<svg").count(), 1);
    // the malformed file is a note, not a crash
    assert!(h.contains("eval-quality.json: not valid JSON"));
    // no external resources
    assert!(!h.contains("src=\"http") && !h.contains("href=\"http"));
}

#[test]
fn markdown_links_are_relative_to_the_report() {
    let t = TempDir::new("md");
    let root = fake_runs(&t);
    std::fs::write(root.join("full/loss.svg"), "<svg/>").unwrap();
    let out = t.0.join("reports/week 1/report.md");
    assert_eq!(write_report(&root, &out).unwrap(), 2);
    let m = std::fs::read_to_string(&out).unwrap();
    assert!(
        m.contains("![samples](../../runs/full/samples/step-0001000.png)"),
        "{m}"
    );
    assert!(m.contains("![loss curve](../../runs/full/loss.svg)"));
    assert!(m.contains("| 2509.88 |") && m.contains("group/&lt;b&gt;"));
    assert!(m.contains("| – |"));
    // a link from the runs folder itself, and one with a space in the path
    assert_eq!(relative_link(&root.join("full/x.png"), &root), "full/x.png");
    assert_eq!(
        relative_link(&t.0.join("a b/x.png"), &t.0.join("c")),
        "../a%20b/x.png"
    );
}

#[test]
fn errors_for_bad_extension_missing_root_and_no_runs() {
    let t = TempDir::new("err");
    let root = fake_runs(&t);
    let e = write_report(&root, &t.0.join("report.pdf"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("invalid value for out:") && e.contains(".html") && e.contains(".md"),
        "{e}"
    );
    let e = collect_runs(&t.0.join("nope")).unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
    let empty = t.0.join("runs/empty");
    let e = collect_runs(&empty).unwrap_err().to_string();
    assert!(
        e.contains("no runs under") && e.contains("config.toml and checkpoint.json"),
        "{e}"
    );
    // a run directory given directly is its own single run, named by its folder
    let one = collect_runs(&root.join("full")).unwrap();
    assert_eq!((one.len(), one[0].name.as_str()), (1, "full"));
}

#[test]
fn user_controlled_names_stay_text_in_markdown_and_html() {
    let t = TempDir::new("inject");
    let root = t.0.join("runs");
    let evil = root.join("[x](javascript:alert(1))");
    write(&evil.join("config.toml"), CONFIG);
    write(&evil.join("state.json"), r#"{"step": 1, "finished": true}"#);
    write(&evil.join("eval-test.json"), EVAL_TEST);
    let md_out = t.0.join("r.md");
    assert_eq!(write_report(&root, &md_out).unwrap(), 1);
    let m = std::fs::read_to_string(&md_out).unwrap();
    // the name is shown as its text, with every link character escaped: no live link
    assert!(m.contains(r"\[x\]\(javascript:alert\(1\)\)"), "{m}");
    assert!(!m.contains("[x](") && !m.contains("](javascript"), "{m}");
    let html_out = t.0.join("r.html");
    write_report(&root, &html_out).unwrap();
    let h = std::fs::read_to_string(&html_out).unwrap();
    assert!(h.contains("[x](javascript:alert(1))"));
    assert!(!h.contains("href=\"javascript") && !h.contains("src=\"javascript"));
    // every character that starts Markdown markup is escaped
    assert_eq!(
        md("*a* _b_ `c` ![i](u) <s> a|b #h ~x~ \\ &"),
        r"\*a\* \_b\_ \`c\` \!\[i\]\(u\) &lt;s&gt; a\|b \#h \~x\~ \\ &amp;"
    );
}

#[test]
fn estimates_of_bounds_are_read_as_such() {
    let v: Value = serde_json::from_str(
        r#"{"BoundEstimate":{"bound":"VLB","how":"8 of its 999 KL terms (stratified, unbiased)"}}"#,
    )
    .unwrap();
    assert_eq!(
        parse_kind(Some(&v)),
        ("VLB".to_string(), KindClass::BoundEstimate)
    );
    let kind = crate::model::LikelihoodKind::bound_estimate("ELBO", "1 z sample per example");
    assert_eq!(
        parse_kind(Some(&serde_json::to_value(&kind).unwrap())),
        ("ELBO".to_string(), KindClass::BoundEstimate)
    );
    // as text (eval-ood.json's score kind), parentheses in the detail do not confuse the name
    assert_eq!(
        parse_kind(Some(&Value::String(
            "estimate of a lower bound (VLB), 8 of its 999 KL terms (stratified, unbiased)".into()
        ))),
        ("VLB".to_string(), KindClass::BoundEstimate)
    );
    assert_eq!(KindClass::BoundEstimate.label(), "estimate of a bound");
}

#[test]
fn html_escape_covers_attributes() {
    assert_eq!(
        html_escape(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
}
