//! Tests of the report: reading fake runs, choosing the likelihood shown, both renderings, escaping.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::format::{base64, html_escape, mean_auroc};
use super::markdown::{md, relative_link};
use super::*;
use crate::metrics::mmd::MmdTest;
use crate::metrics::quality::{ClassAccuracy, InceptionScore, Kid, PrecisionRecall};
use crate::metrics::suite::{
    FeatureNetUse, InDistribution, MmdReport, OodSetReport, ReferenceInfo, ScoreInfo, SetMetrics,
    TypicalityInfo,
};
use crate::model::{BitsPerDim, LikelihoodSpace};

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
    assert_eq!(best.result.kind.short_name(), "IWAE-10");
    assert_eq!(best.kind_class(), KindClass::Estimate);
    assert_eq!(full.nll[0].kind_class(), KindClass::Bound);
    assert_eq!(
        mean_auroc(full.ood.as_ref().unwrap()),
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
    let e = |split: &str, kind: LikelihoodKind, nll: f64| NllEntry {
        split: split.into(),
        result: nll_result("x", kind, nll),
    };
    let r = RunSummary {
        nll: vec![
            e("validation", LikelihoodKind::Exact, 10.0),
            e("test", LikelihoodKind::LowerBound("ELBO".into()), 90.0),
            e("test", LikelihoodKind::Exact, 100.0),
            e("test", LikelihoodKind::Estimate("IWAE-10".into()), 95.0),
        ],
        ..RunSummary::default()
    };
    let b = r.best_nll().unwrap();
    assert_eq!((b.split.as_str(), b.result.nll_nats), ("test", 100.0));
    assert!(RunSummary::default().best_nll().is_none());
    // the kinds as dgm writes them
    let kind = |json: &str| -> LikelihoodKind { serde_json::from_str(json).unwrap() };
    let k = kind(r#"{"LowerBound":"ELBO"}"#);
    assert_eq!(
        (k.short_name(), KindClass::of(&k)),
        ("ELBO", KindClass::Bound)
    );
    assert_eq!(KindClass::of(&kind(r#""Exact""#)), KindClass::Exact);
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
    let k: LikelihoodKind = serde_json::from_str(
        r#"{"BoundEstimate":{"bound":"VLB","how":"8 of its 999 KL terms (stratified, unbiased)"}}"#,
    )
    .unwrap();
    assert_eq!(
        (k.short_name(), KindClass::of(&k)),
        ("VLB", KindClass::BoundEstimate)
    );
    let kind = LikelihoodKind::bound_estimate("ELBO", "1 z sample per example");
    let back: LikelihoodKind =
        serde_json::from_str(&serde_json::to_string(&kind).unwrap()).unwrap();
    assert_eq!(
        (back.short_name(), KindClass::of(&back)),
        ("ELBO", KindClass::BoundEstimate)
    );
    // in the table: the short name and the class, not the detail with its parentheses
    let e = NllEntry {
        split: "test".into(),
        result: nll_result(
            "vlb",
            LikelihoodKind::bound_estimate("VLB", "8 of its 999 KL terms (stratified, unbiased)"),
            1.0,
        ),
    };
    assert_eq!(super::format::kind_text(&e), "VLB (estimate of a bound)");
    assert_eq!(KindClass::BoundEstimate.label(), "estimate of a bound");
}

#[test]
fn html_escape_covers_attributes() {
    assert_eq!(
        html_escape(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
}

fn pretty<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

/// A run folder with a config and a state, for the result files the tests write.
fn bare_run(t: &TempDir) -> PathBuf {
    let root = t.0.join("runs");
    let run = root.join("r");
    write(&run.join("config.toml"), CONFIG);
    write(
        &run.join("state.json"),
        r#"{"step": 2000, "finished": true}"#,
    );
    root
}

fn quality_result() -> QualityReport {
    QualityReport {
        step: 2000,
        weights: "ema".into(),
        num_samples: 500,
        samples: "draws (the model's samples)".into(),
        sampler: Some("ddim".into()),
        sampler_steps: Some(50),
        reference: ReferenceInfo {
            split: "test".into(),
            n: 400,
        },
        feature_net: Some(FeatureNetUse {
            path: "features/mnist".into(),
            data: "mnist".into(),
            test_accuracy: 0.991,
        }),
        sets: SetMetrics {
            fid: Some(12.5),
            kid: Some(Kid {
                mean: 0.0123,
                std: 0.0011,
                subsets: 100,
                subset_size: 400,
            }),
            precision_recall: Some(PrecisionRecall {
                precision: 0.7,
                recall: 0.6,
                k: 3,
                n_real: 400,
                n_fake: 500,
            }),
            mmd: Some(MmdReport {
                test: MmdTest {
                    mmd2: 0.004,
                    p_value: 0.02,
                    bandwidth: 3.5,
                    permutations: 500,
                    n_x: 400,
                    n_y: 400,
                },
                space: "features".into(),
            }),
        },
        class_accuracy: Some(ClassAccuracy {
            overall: 0.9,
            per_class: vec![0.8, 1.0],
            counts: vec![250, 250],
        }),
        inception_score: Some(InceptionScore {
            mean: 8.5,
            std: 0.25,
            splits: 10,
        }),
        class_histogram: Some(vec![0.5, 0.5]),
    }
}

fn ood_result() -> OodReport {
    let set = |name: &str, auroc: f64| OodSetReport {
        name: name.into(),
        n: 300,
        mean_nll_nats: 900.0,
        mean_bpd: 1.66,
        auroc,
        aupr: 0.8,
        typicality_auroc: 0.75,
        typicality_flag_rate: 0.5,
    };
    OodReport {
        step: 2000,
        weights: "ema".into(),
        in_distribution: InDistribution {
            data: "mnist".into(),
            split: "test".into(),
            n: 300,
            mean_nll_nats: 80.0,
            mean_bpd: 0.147,
            typicality_flag_rate: 0.01,
        },
        score: ScoreInfo {
            estimator: "elbo".into(),
            kind: "estimate of a lower bound (ELBO), 1 z sample per example".into(),
            conditioning: None,
            bits_per_dim_means: Some("bits of the discrete data values".into()),
        },
        typicality: TypicalityInfo {
            batch_size: 16,
            alpha: 0.01,
            epsilon: 3.5,
            entropy: 80.5,
        },
        sets: vec![set("omniglot", 0.9), set("noise", 1.0)],
        scores: Vec::new(),
    }
}

fn nll_result(estimator: &str, kind: LikelihoodKind, nll_nats: f64) -> NllReport {
    NllReport {
        estimator: estimator.into(),
        samples: 1,
        steps: None,
        kind_text: kind.to_string(),
        kind,
        note: None,
        conditioning: None,
        space: LikelihoodSpace::Discrete,
        nll_nats,
        stderr_nats: 0.5,
        bits_per_dim: nll_nats / (784.0 * std::f64::consts::LN_2),
        bits_per_dim_basis: Some(BitsPerDim::Discrete),
        bits_per_dim_means: BitsPerDim::Discrete.describe().into(),
        n: 400,
        dims: 784,
        preprocessing: "binarized".into(),
    }
}

/// (a) What `dgm eval` writes reads back through the report's loader as the same typed value; NaN (written
/// as `null`) reads back as NaN, so the value writes the same JSON again.
#[test]
fn results_read_back_as_written() {
    let t = TempDir::new("roundtrip");
    let root = bare_run(&t);
    let run = root.join("r");
    let nll = vec![
        nll_result(
            "elbo",
            LikelihoodKind::bound_estimate("ELBO", "1 z sample per example"),
            85.0,
        ),
        nll_result("iwae", LikelihoodKind::Estimate("IWAE-10".into()), 83.0),
    ];
    write(&run.join("eval-test.json"), &pretty(&nll));
    write(&run.join("eval-quality.json"), &pretty(&quality_result()));
    write(&run.join("eval-ood.json"), &pretty(&ood_result()));
    let runs = collect_runs(&root).unwrap();
    let r = &runs[0];
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    assert_eq!(r.quality.as_ref(), Some(&quality_result()));
    assert_eq!(r.ood.as_ref(), Some(&ood_result()));
    let read: Vec<NllReport> = r.nll.iter().map(|e| e.result.clone()).collect();
    assert_eq!(read, nll);
    assert!(r.nll.iter().all(|e| e.split == "test"));

    // NaN everywhere a metric can be NaN: written as null, read back as NaN (or None for an optional FID)
    let mut q = quality_result();
    q.sets.fid = Some(f64::NAN);
    q.class_accuracy = Some(ClassAccuracy {
        overall: f64::NAN,
        per_class: vec![f64::NAN, 1.0],
        counts: vec![0, 4],
    });
    if let Some(k) = q.sets.kid.as_mut() {
        k.std = f64::NAN;
    }
    let mut o = ood_result();
    o.sets[0].auroc = f64::NAN;
    o.in_distribution.mean_bpd = f64::NAN;
    let mut n = nll.clone();
    n[1].stderr_nats = f64::NAN;
    write(&run.join("eval-test.json"), &pretty(&n));
    write(&run.join("eval-quality.json"), &pretty(&q));
    write(&run.join("eval-ood.json"), &pretty(&o));
    let runs = collect_runs(&root).unwrap();
    let r = &runs[0];
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let rq = r.quality.as_ref().unwrap();
    assert_eq!(rq.sets.fid, None);
    assert!(rq.sets.kid.as_ref().unwrap().std.is_nan());
    assert!(rq.class_accuracy.as_ref().unwrap().per_class[0].is_nan());
    assert_eq!(pretty(rq), pretty(&q));
    assert_eq!(pretty(r.ood.as_ref().unwrap()), pretty(&o));
    let read: Vec<NllReport> = r.nll.iter().map(|e| e.result.clone()).collect();
    assert_eq!(pretty(&read), pretty(&n));
    // and the page shows the unknown numbers as missing
    let m = render_markdown(&runs, &t.0);
    assert!(m.contains("| FID-mnist | – |"), "{m}");
    assert!(m.contains("| KID-mnist | 0.0123 |"), "{m}");
    assert!(m.contains("| class accuracy of samples | – |"), "{m}");
    assert!(m.contains("| omniglot | 300 | 1.6600 | – |"), "{m}");
    assert!(m.contains("test data – bits/dim"), "{m}");
}

/// `eval-test.json` as dgm wrote it before it recorded samples, kind text and the bits/dim basis; one
/// result's standard error and another's NLL were NaN (written as `null`).
const OLD_EVAL_TEST: &str = r#"[
  {
    "estimator": "elbo",
    "kind": {
      "LowerBound": "ELBO"
    },
    "space": "Discrete",
    "nll_nats": 95.5,
    "stderr_nats": null,
    "bits_per_dim": 0.1757,
    "n": 100,
    "dims": 784,
    "preprocessing": "binarized"
  },
  {
    "estimator": "iwae",
    "kind": {
      "Estimate": "IWAE-10"
    },
    "space": "Discrete",
    "nll_nats": null,
    "stderr_nats": null,
    "bits_per_dim": null,
    "n": 100,
    "dims": 784,
    "preprocessing": "binarized"
  }
]"#;

/// `eval-quality.json` as dgm wrote it before it recorded the sampler; a NaN KID spread and the accuracy of a
/// class with no samples are `null`.
const OLD_QUALITY: &str = r#"{
  "step": 1000,
  "weights": "ema",
  "num_samples": 200,
  "samples": "observation-model mean",
  "reference": {
    "split": "test",
    "n": 200
  },
  "feature_net": {
    "path": "features/mnist",
    "data": "mnist",
    "test_accuracy": 0.99
  },
  "fid": 30.25,
  "kid": {
    "mean": 0.02,
    "std": null,
    "subsets": 100,
    "subset_size": 200
  },
  "precision_recall": null,
  "mmd": null,
  "class_accuracy": {
    "overall": 0.5,
    "per_class": [
      1.0,
      null
    ],
    "counts": [
      2,
      0
    ]
  },
  "inception_score": null
}"#;

/// `eval-ood.json` as dgm wrote it before it recorded the conditioning and the bits/dim basis; one set's
/// numbers are `null`.
const OLD_OOD: &str = r#"{
  "step": 1000,
  "weights": "ema",
  "in_distribution": {
    "data": "mnist",
    "split": "test",
    "n": 64,
    "mean_nll_nats": 90.0,
    "mean_bpd": 0.1656,
    "typicality_flag_rate": 0.0
  },
  "score": {
    "estimator": "elbo",
    "kind": "lower bound (ELBO)"
  },
  "typicality": {
    "batch_size": 16,
    "alpha": 0.01,
    "epsilon": 5.0,
    "entropy": 91.0
  },
  "sets": [
    {
      "name": "noise",
      "n": 64,
      "mean_nll_nats": 2000.0,
      "mean_bpd": 3.68,
      "auroc": 1.0,
      "aupr": 1.0,
      "typicality_auroc": 1.0,
      "typicality_flag_rate": 1.0
    },
    {
      "name": "constant",
      "n": 64,
      "mean_nll_nats": null,
      "mean_bpd": null,
      "auroc": null,
      "aupr": null,
      "typicality_auroc": 0.5,
      "typicality_flag_rate": 0.25
    }
  ]
}"#;

/// (b) Files in the formats of earlier dgm versions (without the fields added since, NaN as `null`) load into
/// the current types and render, unknown numbers as "–".
#[test]
fn old_result_files_load_and_render() {
    let t = TempDir::new("old");
    let root = bare_run(&t);
    let run = root.join("r");
    write(&run.join("eval-test.json"), OLD_EVAL_TEST);
    write(&run.join("eval-quality.json"), OLD_QUALITY);
    write(&run.join("eval-ood.json"), OLD_OOD);
    let runs = collect_runs(&root).unwrap();
    let r = &runs[0];
    // the NaN NLL is skipped, the rest is read; the step note is about the run, not the files
    assert_eq!(r.nll.len(), 1);
    let e = &r.nll[0].result;
    assert_eq!((e.samples, e.kind_text.as_str()), (0, ""));
    assert_eq!(e.bits_per_dim_basis, None);
    assert!(e.stderr_nats.is_nan());
    assert_eq!(r.nll[0].kind_class(), KindClass::Bound);
    let q = r.quality.as_ref().unwrap();
    assert_eq!((q.sampler.as_deref(), q.sampler_steps), (None, None));
    assert!(q.sets.kid.as_ref().unwrap().std.is_nan());
    let o = r.ood.as_ref().unwrap();
    assert_eq!(o.score.conditioning, None);
    assert!(o.sets[1].auroc.is_nan());
    assert_eq!(
        r.notes.iter().filter(|n| n.contains("eval-")).count(),
        3,
        "{:?}",
        r.notes
    );
    assert!(r
        .notes
        .iter()
        .any(|n| n == "eval-test.json: 1 result(s) without a numeric nll_nats were skipped"));

    let m = render_markdown(&runs, &t.0);
    for want in [
        r"| test | elbo | ELBO \(bound\) | Discrete | 95.50 | – | 0.1757 | 100 |",
        "| FID-mnist | 30.250 |",
        "| KID-mnist | 0.0200 |",
        "| precision | – |",
        "| class accuracy of samples | 0.5000 |",
        "| constant | 64 | – | – | – | 0.5000 | 25.0 % |",
        r"1.000 mean \(noise 1.000, constant –\)",
        r"score elbo: lower bound \(ELBO\) · evaluated at step 1000",
    ] {
        assert!(m.contains(want), "missing {want} in {m}");
    }
    let h = render_html(&runs, "old");
    assert!(h.contains("ELBO (bound)") && h.contains("30.25") && h.contains("constant –"));
}

/// (c) A result file that is not valid JSON, or valid JSON that is not the result dgm writes there, is
/// ignored with a one-line note naming the file; the rest of the run is still shown.
#[test]
fn garbled_result_files_are_one_line_notes() {
    let t = TempDir::new("garbled");
    let root = bare_run(&t);
    let run = root.join("r");
    write(&run.join("eval-test.json"), EVAL_TEST);
    write(&run.join("eval-validation.json"), r#"{"nll_nats": 3.0}"#);
    write(
        &run.join("eval-train.json"),
        "[{\"estimator\": \"elbo\",\n  \"kind\": {\"Guess\": 1}}]",
    );
    write(
        &run.join("eval-quality.json"),
        r#"{"step": "ten", "weights": "ema"}"#,
    );
    write(&run.join("eval-ood.json"), "{\"step\": 3,\n\"sets\": [");
    let runs = collect_runs(&root).unwrap();
    let r = &runs[0];
    assert_eq!(r.nll.len(), 2, "eval-test.json is still read");
    assert!(r.quality.is_none() && r.ood.is_none());
    for file in [
        "eval-validation.json",
        "eval-train.json",
        "eval-quality.json",
        "eval-ood.json",
    ] {
        let notes: Vec<&String> = r
            .notes
            .iter()
            .filter(|n| n.starts_with(&format!("{file}: ")))
            .collect();
        assert_eq!(notes.len(), 1, "{file}: {:?}", r.notes);
        assert!(
            !notes[0].contains('\n') && notes[0].ends_with("; ignored"),
            "{}",
            notes[0]
        );
    }
    let note = |file: &str| {
        r.notes
            .iter()
            .find(|n| n.starts_with(file))
            .cloned()
            .unwrap_or_default()
    };
    assert!(note("eval-ood.json").contains("not valid JSON"));
    assert!(note("eval-quality.json").contains("not a sample-quality result as dgm writes it"));
    assert!(note("eval-validation.json").contains("not a list of likelihood results"));
    let h = render_html(&runs, "garbled");
    assert!(h.contains("eval-quality.json: not a sample-quality result"));
    assert!(h.contains("2509.88"));
}
