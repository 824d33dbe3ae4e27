//! Bounded memory on bad sizes: sizes that cannot fit are refused in one line (exit 2) before anything big is
//! allocated; `dgm sample -n` is bounded by time, not memory; configs that cannot work are refused up front.
//! None of these tests allocates more than a few megabytes.

mod common;

use common::{assert_bad_input, dgm, run, stderr, tmp};
use std::path::Path;
use std::process::Output;

/// Tiny VAE settings (as in cli.rs), and at most 2 GB of memory as dgm sees it, so that the refusals below do
/// not depend on the machine.
const TINY: &[&str] = &[
    "--set",
    "model.hidden=[32]",
    "--set",
    "model.latent_dim=2",
    "--set",
    "train.batch_size=32",
    "--set",
    "data.sizes.train=256",
    "--set",
    "data.sizes.validation=64",
    "--set",
    "data.sizes.test=64",
    "--set",
    "train.eval_batches=2",
    "--quiet",
];

fn train(out: &Path, data: &str, steps: &str, extra: &[&str]) -> Output {
    run(dgm()
        .env("DGM_MEMORY_LIMIT", "2GB")
        .args(["train", "vae", "--data", data, "--out"])
        .arg(out)
        .args(["--steps", steps, "--seed", "7"])
        .args(TINY)
        .args(extra))
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[1..4], b"PNG");
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

/// `model.latent_dim = 10⁹` (a 4 TB encoder layer) and `model.hidden = [100000, 100000]` (10¹⁰ weights,
/// 40 GB) used to grow until the OOM killer; now one line with the estimate and the memory.
#[test]
fn huge_models_are_refused_with_the_estimate() {
    let d = tmp("mem-models");
    for (set, needles) in [
        (
            "model.latent_dim=1000000000",
            // TINY's hidden = [32]: the encoder's head is (2·10⁹, 32), 256 GB
            &[
                "model 'vae'",
                "256.0 GB",
                "enc.head.weight",
                "2.0 GB allowed by DGM_MEMORY_LIMIT",
            ][..],
        ),
        (
            "model.hidden=[100000,100000]",
            &["model 'vae'", "at least", "GB", "DGM_MEMORY_LIMIT"][..],
        ),
    ] {
        let r = d.join(set.replace(['=', '[', ']', ','], "_"));
        let o = train(&r, "toy2d:moons", "1", &["--set", set]);
        assert_bad_input(&o, needles);
        assert!(!r.join("model.safetensors").exists());
    }
    // without the cap the same 4 TB model is refused against the machine's own memory
    let o = run(dgm()
        .args(["train", "vae", "--data", "toy2d:moons", "--out"])
        .arg(d.join("r2"))
        .args(["--set", "model.latent_dim=1000000000", "--quiet"]));
    assert_bad_input(&o, &["4.1 TB", "available"]);
    // a cap that is not a size
    let o = run(dgm()
        .env("DGM_MEMORY_LIMIT", "lots")
        .args(["train", "vae", "--data", "toy2d:moons", "--out"])
        .arg(d.join("r3")));
    assert_bad_input(&o, &["DGM_MEMORY_LIMIT", "lots"]);
}

/// `data.sizes.train = 10¹¹` shapes (317 TB) is refused before generating.
#[test]
fn huge_generated_data_are_refused_before_generating() {
    let d = tmp("mem-data");
    for (data, size, bytes) in [
        ("shapes", "100000000000", "317.1 TB"),
        ("toy2d:moons", "1000000000000", "8.0 TB"),
    ] {
        let o = train(
            &d.join("r"),
            data,
            "1",
            &["--set", &format!("data.sizes.train={size}")],
        );
        assert_bad_input(&o, &["data.sizes.train", size, bytes, "2.0 GB allowed"]);
    }
}

/// NaN and infinity in `train.grad_clip` / `train.weight_decay` used to pass the config check.
#[test]
fn non_finite_training_numbers_are_refused() {
    let d = tmp("mem-nan");
    for key in ["train.grad_clip", "train.weight_decay"] {
        for v in ["nan", "inf"] {
            let o = train(
                &d.join("r"),
                "toy2d:moons",
                "1",
                &["--set", &format!("{key}={v}")],
            );
            assert_bad_input(&o, &[key, "finite"]);
        }
    }
    let o = train(
        &d.join("r"),
        "toy2d:moons",
        "1",
        &["--set", "model.eta=nan"],
    );
    assert!(!o.status.success()); // vae has no eta: unknown key
    let o = run(dgm()
        .args([
            "train",
            "ddpm",
            "--data",
            "toy2d:moons",
            "--steps",
            "1",
            "--out",
        ])
        .arg(d.join("r4"))
        .args(["--set", "model.eta=nan", "--quiet"]));
    assert_bad_input(&o, &["model.eta", "NaN"]);
}

/// `dgm train vae --data text:…` used to fail with a tensor dtype error (exit 1); now exit 2 naming what vae
/// takes and which model takes text. The other way round too.
#[test]
fn incompatible_model_and_data_are_refused_up_front() {
    let d = tmp("mem-compat");
    let corpus = d.join("corpus.txt");
    std::fs::write(
        &corpus,
        "to be or not to be, that is the question. ".repeat(200),
    )
    .unwrap();
    let text = format!("text:{}", corpus.display());
    for model in ["vae", "ddpm", "pixelcnn"] {
        let o = run(dgm()
            .args(["train", model, "--data", &text, "--out"])
            .arg(d.join(model)));
        assert_bad_input(&o, &[model, "images", "not text", "gpt"]);
    }
    let o = run(dgm()
        .args(["train", "gpt", "--data", "toy2d:moons", "--out"])
        .arg(d.join("gpt")));
    assert_bad_input(&o, &["gpt", "text", "not points"]);
    let o = run(dgm()
        .args(["train", "pixelcnn", "--data", "toy2d:moons", "--out"])
        .arg(d.join("px")));
    assert_bad_input(&o, &["pixelcnn", "images", "not points"]);
}

/// `dgm sample -n 1000000000` used to abort on a failed allocation (exit 134): a grid that large cannot be
/// written, and is refused in one line before sampling. Large n within the limit are sampled in batches
/// (here 300 images: two batches) into one grid; points go into one scatter plot, in batches.
#[test]
fn sample_n_is_bounded() {
    let d = tmp("mem-sample");
    let r = d.join("img");
    let o = train(&r, "shapes", "2", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "1000000000", "--out"])
        .arg(d.join("huge.png")));
    assert_bad_input(&o, &["-n", "1000000000", "megapixels"]);
    assert!(!d.join("huge.png").exists());
    let png = d.join("300.png");
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&r)
        .args(["-n", "300", "--out"])
        .arg(&png));
    assert!(o.status.success(), "{}", stderr(&o));
    // ⌈√300⌉ = 18 columns and 17 rows of 32 + 2 pixels, plus the 2-pixel border
    assert_eq!(png_size(&png), (18 * 34 + 2, 17 * 34 + 2));
    // the default n is one batch: the same seed gives the same file twice
    let (a, b) = (d.join("a.png"), d.join("b.png"));
    for p in [&a, &b] {
        let o = run(dgm()
            .args(["sample", "--run"])
            .arg(&r)
            .args(["--seed", "3", "--out"])
            .arg(p));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let pts = d.join("pts");
    let o = train(&pts, "toy2d:moons", "2", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let png = d.join("pts.png");
    let o = run(dgm()
        .args(["sample", "--run"])
        .arg(&pts)
        .args(["-n", "10000", "--out"])
        .arg(&png));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(png_size(&png), (512, 512));
}

/// A batch whose activations cannot fit is refused by the training estimate before the parameters are created,
/// naming `train.batch_size`, and leaves no folder behind; the same run with a small batch trains under the same
/// limit (so the refusal is the batch's, not the model's or the data's).
#[test]
fn huge_batches_are_refused_before_training() {
    let d = tmp("mem-batch");
    let go = |out: &Path, batch: &str| {
        run(dgm()
            .env("DGM_MEMORY_LIMIT", "50MB")
            .args(["train", "vae", "--data", "shapes", "--out"])
            .arg(out)
            .args(["--steps", "1", "--seed", "7"])
            .args(TINY)
            .args(["--set", "data.sizes.train=2048"])
            .args(["--set", &format!("train.batch_size={batch}")]))
    };
    let r = d.join("big");
    let o = go(&r, "2048");
    assert_bad_input(
        &o,
        &[
            "train.batch_size",
            "2048",
            "50.0 MB allowed by DGM_MEMORY_LIMIT",
        ],
    );
    assert!(!r.exists(), "a refused run leaves no folder");
    let o = go(&d.join("small"), "32");
    assert!(o.status.success(), "{}", stderr(&o));
}
