//! Caption → image on `shapes` (issue 15 §4, §7): a caption-conditioned diffusion model (configs/ddpm-captions.toml)
//! draws one image per caption; an attribute classifier ([`dgm::metrics::attributes`], four small CNNs trained on
//! real shapes) reads back each image's shape, colour, size and position, and the table gives the share that
//! match the caption — for captions whose (colour, shape) pair the model saw in training and for the held-out
//! pairs it never saw, without guidance (scale 1) and with classifier-free guidance. The empty caption (the
//! model's unconditional distribution) scored against the seen captions is the chance-level reference.
//!   usage: caption_shapes RUN [N_PER_ROW] [STEPS] [GUIDANCE] [CLASSIFIER_DIR] [GRID_PNG]
//!   (defaults 192, 50, 3, bench/out/attributes, no grid). The classifier is trained (2 epochs on 10 000 images)
//!   and saved to CLASSIFIER_DIR unless it is there.

mod common;

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use dgm::data::shapes::{
    parse_caption, parse_holdout, CaptionParts, ShapeSpec, CLASS_NAMES, COLOURS,
};
use dgm::data::{self, DataSpec, GeneratedSizes, Split};
use dgm::metrics::attributes::{Attribute, AttributeClassifier};
use dgm::metrics::features::{FeatureNetConfig, FeatureTrainConfig};
use dgm::model::{Condition, SampleOptions};
use dgm::rng::Rng;

/// Images per sampling call.
const BATCH: usize = 64;

fn main() -> dgm::Result<()> {
    common::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(run_dir) = args.first() else {
        eprintln!(
            "usage: caption_shapes RUN [N_PER_ROW] [STEPS] [GUIDANCE] [CLASSIFIER_DIR] [GRID_PNG]"
        );
        std::process::exit(2);
    };
    let n: usize = args.get(1).map_or(192, |s| s.parse().expect("N_PER_ROW"));
    let steps: usize = args.get(2).map_or(50, |s| s.parse().expect("STEPS"));
    let scale: f64 = args.get(3).map_or(3.0, |s| s.parse().expect("GUIDANCE"));
    let cls_dir = args.get(4).map_or("bench/out/attributes", |s| s.as_str());
    let dev = Device::Cpu;

    let classifier = classifier(Path::new(cls_dir), &dev)?;
    let real: Vec<String> = Attribute::ALL
        .iter()
        .map(|&a| {
            let i = classifier.info(a);
            format!("{} {:.2}%", a.name(), 100.0 * i.test_accuracy)
        })
        .collect();
    println!(
        "attribute classifier {cls_dir}: accuracy on {} real shapes test images: {}",
        classifier.info(Attribute::Shape).test_examples,
        real.join(", ")
    );
    let run = dgm::train::run::load(Path::new(run_dir), dgm::train::Weights::Ema, &dev)?;
    let holdout = parse_holdout(&run.config.data.holdout, "data.holdout")?;
    if holdout.is_empty() {
        return Err(dgm::Error::invalid(
            "run",
            "the run holds out no (colour, shape) pairs",
        ));
    }
    let names: Vec<String> = holdout
        .iter()
        .map(|&(c, s)| format!("{} {}", COLOURS[c].0, CLASS_NAMES[s]))
        .collect();
    println!(
        "run {run_dir} ({}), {n} captions per row (random size and position; held-out rows cycle through the {} held-out pairs: {}), one image each, sampler {} with {steps} steps, attribute accuracy by the classifier",
        run.model.name(),
        holdout.len(),
        names.join(", "),
        run.config.model.config.get("sampler").and_then(|v| v.as_str()).unwrap_or("default"),
    );
    let mut rng = Rng::new(2024);
    let seen = captions(n, &mut rng, false, &holdout);
    let held = captions(n, &mut rng, true, &holdout);
    println!(
        "{:<34} {:>7} {:>7} {:>7} {:>9} {:>7} {:>11}",
        "captions, guidance", "shape", "colour", "size", "position", "all 4", "ms / image"
    );
    let rows: [(&str, &Vec<String>, Option<f64>, bool); 5] = [
        ("seen pairs, none (scale 1)", &seen, None, false),
        ("seen pairs, CFG", &seen, Some(scale), false),
        ("held-out pairs, none (scale 1)", &held, None, false),
        ("held-out pairs, CFG", &held, Some(scale), false),
        ("empty caption vs seen (chance)", &seen, None, true),
    ];
    for (label, caps, guidance, empty) in rows {
        let wanted: Vec<CaptionParts> = caps.iter().filter_map(|c| parse_caption(c)).collect();
        let asked: Vec<String> = match empty {
            true => vec![String::new(); caps.len()],
            false => caps.clone(),
        };
        let t = Instant::now();
        let images = sample(&run, &asked, guidance, steps)?;
        let ms = t.elapsed().as_secs_f64() * 1e3 / caps.len() as f64;
        let acc = classifier.score(&images, &wanted)?;
        let label = match guidance {
            Some(g) => format!("{label} {g}"),
            None => label.to_string(),
        };
        println!(
            "{label:<34} {:>6.1}% {:>6.1}% {:>6.1}% {:>8.1}% {:>6.1}% {ms:>11.0}",
            100.0 * acc.shape,
            100.0 * acc.colour,
            100.0 * acc.size,
            100.0 * acc.position,
            100.0 * acc.all
        );
    }
    if let Some(png) = args.get(5) {
        // 4 seen and 4 held-out captions, 8 samples each, with guidance
        let picked: Vec<String> = seen
            .iter()
            .take(4)
            .chain(held.iter().take(4))
            .cloned()
            .collect();
        let caps: Vec<String> = picked
            .iter()
            .flat_map(|c| std::iter::repeat_n(c.clone(), 8))
            .collect();
        let images = sample(&run, &caps, Some(scale), steps)?;
        dgm::image_io::save_grid(
            Path::new(png),
            &images.affine(2.0, -1.0)?,
            &run.config.data.preprocessing,
            8,
        )?;
        println!("grid {png} (guidance {scale}), one row per caption:");
        for c in &picked {
            println!("  {c}");
        }
    }
    Ok(())
}

/// `n` captions with a random size and position and, when `held_out`, the held-out (colour, shape) pairs in
/// turn, else a random pair seen in training.
fn captions(n: usize, rng: &mut Rng, held_out: bool, holdout: &[(usize, usize)]) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (colour, class) = if held_out {
            holdout[i % holdout.len()]
        } else {
            loop {
                let p = (rng.below(COLOURS.len()), rng.below(CLASS_NAMES.len()));
                if !holdout.contains(&p) {
                    break p;
                }
            }
        };
        let spec = ShapeSpec {
            class,
            colour,
            size: rng.below(3),
            position: rng.below(9),
            background: None,
            centre: (0.0, 0.0),
            radius: 0.0,
        };
        out.push(spec.caption());
    }
    out
}

/// One sample per caption, in [0, 1].
fn sample(
    run: &dgm::train::run::LoadedRun,
    caps: &[String],
    guidance: Option<f64>,
    steps: usize,
) -> dgm::Result<Tensor> {
    let mut parts = Vec::new();
    for (i, chunk) in caps.chunks(BATCH).enumerate() {
        let opts = SampleOptions {
            condition: Condition::Caption(chunk.to_vec()),
            guidance,
            steps: Some(steps),
            ..SampleOptions::seeded(100 + i as u64)
        };
        parts.push(run.model.sample(chunk.len(), &opts)?);
    }
    Ok(Tensor::cat(&parts, 0)?
        .affine(0.5, 0.5)?
        .clamp(0f32, 1f32)?)
}

/// The attribute classifier in `dir`, trained and saved there first if it is not.
fn classifier(dir: &Path, dev: &Device) -> dgm::Result<AttributeClassifier> {
    if dir.join("shape").exists() {
        return AttributeClassifier::load(dir, dev);
    }
    let sizes = GeneratedSizes {
        train: 10_000,
        validation: 0,
        test: 2_000,
    };
    let dd = data::data_dir(None);
    let train = data::load(&DataSpec::Shapes, Split::Train, &dd, &sizes)?;
    let test = data::load(&DataSpec::Shapes, Split::Test, &dd, &sizes)?;
    let cfg = FeatureTrainConfig {
        epochs: 2,
        ..FeatureTrainConfig::default()
    };
    let (c, report) = AttributeClassifier::train(
        &train,
        &test,
        &FeatureNetConfig::default(),
        &cfg,
        dev,
        &mut |_| {},
    )?;
    c.save(dir)?;
    println!(
        "attribute classifier trained on 10 000 shapes images in {:.0} s, saved to {}",
        report.seconds,
        dir.display()
    );
    Ok(c)
}
