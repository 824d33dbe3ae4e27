//! Training a feature network as a classifier on labelled image data (MNIST or generated shapes), with
//! seeded data order and shift augmentation, and measuring its test accuracy. Each step is the trainer's
//! one-loss step ([`LossStep`]) over the trainer's optimiser ([`Optimizers`]: AdamW, warm-up + cosine), with the
//! classifier's cross-entropy as the loss.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::images::image_pixels;
use super::{
    dataset_images, FeatureNet, FeatureNetConfig, FeatureNetInfo, FeatureTrainConfig,
    TrainedFeatureNet,
};
use crate::data::{self, Batch, DataSpec, Dataset, GeneratedSizes, Split};
use crate::model::{LossOutput, Model, SampleOptions};
use crate::nn::Params;
use crate::rng::Rng;
use crate::train::loader::Loader;
use crate::train::optim::AdamWParams;
use crate::train::step::{
    GroupSpec, LossStep, Optimizers, Schedule, StepAt, StepContext, TrainStep,
};
use crate::{Error, Result};

/// Salt of the augmentation streams (step `s` uses `Rng::stream(seed ^ AUGMENT_SALT, s)`).
const AUGMENT_SALT: u64 = 0xF3A7_0000_A06E;

/// Trains a feature network on the train split of the data set `data_name` (`mnist`: the first 50 000
/// training images, read from `data_dir`; `shapes`: `generated_train` generated images) and measures its
/// accuracy on the test split (MNIST t10k; `generated_test` shapes). `progress` gets one line now and then.
pub fn train_feature_net(
    data_name: &str,
    data_dir: &Path,
    net_cfg: &FeatureNetConfig,
    train_cfg: &FeatureTrainConfig,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<TrainedFeatureNet> {
    let spec = DataSpec::parse(data_name)?;
    if !matches!(spec, DataSpec::Mnist | DataSpec::Shapes) {
        return Err(Error::invalid(
            "data",
            format!(
                "feature networks are trained on labelled image data: mnist or shapes, not {}",
                spec.name()
            ),
        ));
    }
    let sizes = GeneratedSizes {
        train: train_cfg.generated_train,
        validation: 0,
        test: train_cfg.generated_test,
    };
    let train = data::load(&spec, Split::Train, data_dir, &sizes)?;
    let test = data::load(&spec, Split::Test, data_dir, &sizes)?;
    train_feature_net_on(&train, &test, net_cfg, train_cfg, device, progress)
}

/// Whether a shift of `shift` pixels would move an image of `[c, h, w]` entirely out of its frame.
fn shift_too_big(shift: usize, [_, h, w]: [usize; 3]) -> bool {
    shift >= h.min(w)
}

/// Labels and class count of a labelled image data set.
fn labels_of(ds: &Dataset) -> Result<(&[u32], usize)> {
    match (&ds.labels, ds.num_classes) {
        (Some(l), Some(k)) => Ok((l.as_slice(), k)),
        _ => Err(Error::invalid(
            "data",
            format!(
                "a feature network is trained as a classifier; {} has no class labels",
                ds.name
            ),
        )),
    }
}

/// Copies examples `idx` of `pixels` (images `[c, h, w]`) into `out` as values in [0, 1], each shifted by a
/// random (dy, dx) ∈ [−shift, shift]² drawn from `rng` (edges replicated) when `shift > 0`.
fn fill_batch(
    pixels: &[u8],
    [c, h, w]: [usize; 3],
    idx: &[usize],
    shift: usize,
    rng: &mut Rng,
    out: &mut Vec<f32>,
) {
    out.clear();
    let d = c * h * w;
    let s = shift as isize;
    for &i in idx {
        let img = &pixels[i * d..(i + 1) * d];
        if shift == 0 {
            out.extend(img.iter().map(|&p| p as f32 / 255.0));
            continue;
        }
        let dy = rng.below(2 * shift + 1) as isize - s;
        let dx = rng.below(2 * shift + 1) as isize - s;
        for ch in 0..c {
            let plane = &img[ch * h * w..(ch + 1) * h * w];
            for y in 0..h as isize {
                let sy = (y - dy).clamp(0, h as isize - 1) as usize;
                for x in 0..w as isize {
                    let sx = (x - dx).clamp(0, w as isize - 1) as usize;
                    out.push(plane[sy * w + sx] as f32 / 255.0);
                }
            }
        }
    }
}

/// The feature network as the trainer sees a model: its loss is the cross-entropy of its logits against the
/// batch's labels. A classifier generates nothing, so it refuses to sample.
struct Classifier(FeatureNet);

impl Model for Classifier {
    fn name(&self) -> &str {
        "feature-net"
    }

    fn loss(&self, batch: &Batch, _rng: &mut Rng) -> Result<LossOutput> {
        let y = batch
            .labels
            .as_ref()
            .ok_or_else(|| Error::invalid("batch.labels", "a classifier trains on labels"))?;
        let (_, logits) = self.0.forward(&batch.x)?;
        Ok(LossOutput {
            loss: candle_nn::loss::cross_entropy(&logits, y)?,
            parts: Vec::new(),
        })
    }

    fn sample(&self, _n: usize, _opts: &SampleOptions) -> Result<Tensor> {
        Err(Error::Unsupported(
            "a feature network classifies images; it does not generate them".into(),
        ))
    }
}

/// [`train_feature_net`] on data sets already loaded: trains on `train`, reports accuracy on `test` (both
/// labelled 8-bit image data of the same shape and classes).
pub fn train_feature_net_on(
    train: &Dataset,
    test: &Dataset,
    net_cfg: &FeatureNetConfig,
    train_cfg: &FeatureTrainConfig,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<TrainedFeatureNet> {
    net_cfg.validate()?;
    train_cfg.validate()?;
    let started = Instant::now();
    let (pixels, shape) = image_pixels(train)?;
    let (test_pixels, test_shape) = image_pixels(test)?;
    let (labels, classes) = labels_of(train)?;
    let (test_labels, test_classes) = labels_of(test)?;
    if test_shape != shape || test_classes != classes {
        return Err(Error::invalid(
            "data",
            format!(
                "the test split ({test_shape:?}, {test_classes} classes) does not match the train split \
                 ({shape:?}, {classes} classes)"
            ),
        ));
    }
    if shift_too_big(train_cfg.max_shift, shape) {
        return Err(Error::invalid(
            "features.max_shift",
            format!(
                "{} pixels: must be smaller than the image side ({shape:?})",
                train_cfg.max_shift
            ),
        ));
    }
    if test_pixels.is_empty() {
        return Err(Error::invalid(
            "features.generated_test",
            "no test examples",
        ));
    }
    let t = train_cfg;
    let mut loader = Loader::new(train.len(), t.batch_size, t.seed).map_err(|_| {
        Error::invalid(
            "features.batch_size",
            format!(
                "{} must be between 1 and the number of training examples ({})",
                t.batch_size,
                train.len()
            ),
        )
    })?;
    let steps = if t.steps > 0 {
        t.steps
    } else {
        t.epochs as u64 * loader.batches_per_epoch()
    };
    let params = Params::new(t.seed, device);
    let classifier = Classifier(FeatureNet::new(
        net_cfg,
        shape,
        classes,
        params.var_builder(),
    )?);
    // the trainer's one-loss step over the trainer's optimiser: one group, AdamW, warm-up + cosine
    let mut opt = Optimizers::new(
        params.vars(),
        vec![GroupSpec {
            name: "all".into(),
            prefixes: Vec::new(),
            adam: AdamWParams {
                weight_decay: t.weight_decay,
                ..Default::default()
            },
            schedule: Schedule {
                lr: t.lr,
                warmup_steps: t.warmup_steps,
                min_lr_ratio: t.min_lr_ratio,
                total_steps: steps,
            },
            grad_clip: 0.0,
        }],
    )?;
    let mut train_step = LossStep { grad_accum: 1 };
    progress(&format!(
        "training a feature network on {} ({} train / {} test images of {:?}, {classes} classes, {} parameters) \
         for {steps} steps of {}",
        train.name,
        train.len(),
        test.len(),
        shape,
        params.num_parameters(),
        t.batch_size
    ));
    let [c, h, w] = shape;
    let mut values = Vec::with_capacity(t.batch_size * c * h * w);
    let (mut window, mut window_n, mut last_loss) = (0.0f64, 0u64, f64::NAN);
    for step in 0..steps {
        // step s: batch s of the seeded data order, shifted by the augmentation stream s
        let mut batch = |_: usize, _: &mut Rng| -> Result<Batch> {
            let idx = loader.indices(step).to_vec();
            let mut rng = Rng::stream(t.seed ^ AUGMENT_SALT, step);
            fill_batch(pixels, shape, &idx, t.max_shift, &mut rng, &mut values);
            let y: Vec<u32> = idx.iter().map(|&i| labels[i]).collect();
            Ok(Batch {
                x: Tensor::from_slice(&values, (idx.len(), c, h, w), device)?,
                labels: Some(Tensor::from_vec(y, idx.len(), device)?),
                captions: None,
            })
        };
        let report = train_step.step(&mut StepContext {
            at: StepAt {
                step,
                saved: None,
                log: false,
            },
            model: &classifier,
            rng: &mut Rng::stream(t.seed, step),
            batch: &mut batch,
            opt: &mut opt,
        })?;
        window += report.parts.first().map_or(f64::NAN, |p| p.1);
        window_n += 1;
        let done = step + 1;
        if (t.log_every > 0 && done.is_multiple_of(t.log_every)) || done == steps {
            last_loss = window / window_n as f64;
            let secs = started.elapsed().as_secs_f64();
            progress(&format!(
                "step {done}/{steps} loss {last_loss:.4} ({:.1} steps/s)",
                done as f64 / secs.max(1e-9)
            ));
            window = 0.0;
            window_n = 0;
        }
    }
    let net = FeatureNet::from_tensors(net_cfg, shape, classes, &params.snapshot()?, device)?
        .with_data_name(&train.name);
    let trained = started.elapsed().as_secs_f64();
    let test_images = dataset_images(test, None, device)?;
    let emb = net.embed(&test_images, 500)?;
    let test_accuracy = emb.accuracy(test_labels)?;
    let train_seconds = started.elapsed().as_secs_f64();
    progress(&format!(
        "test accuracy {:.2} % on {} images; {train_seconds:.1} s ({trained:.1} s training, {:.1} s testing)",
        100.0 * test_accuracy,
        test.len(),
        train_seconds - trained
    ));
    let info = FeatureNetInfo {
        data: train.name.clone(),
        image_shape: shape,
        num_classes: classes,
        class_names: train.class_names.clone(),
        net: net_cfg.clone(),
        train: t.clone(),
        steps,
        seed: t.seed,
        train_examples: train.len(),
        test_examples: test.len(),
        test_accuracy,
        final_train_loss: last_loss,
        train_seconds,
        parameters: params.num_parameters(),
        dgm_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    Ok(TrainedFeatureNet { net, params, info })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::metrics::features::tests::{bits, shapes_data, tiny_train};

    #[test]
    fn tiny_net_learns_shapes() -> Result<()> {
        let (train, test) = shapes_data(2000, 300);
        let mut lines = Vec::new();
        let t = train_feature_net_on(
            &train,
            &test,
            &FeatureNetConfig::tiny(),
            &tiny_train(400, 0),
            &Device::Cpu,
            &mut |s| lines.push(s.to_string()),
        )?;
        // 6 balanced-ish classes: chance is about 17 %, so ≥ 90 % on 300 held-out images is learning
        let acc = t.info.test_accuracy;
        assert!(acc >= 0.9, "test accuracy {acc}: {lines:?}");
        // the reported accuracy is the one of the returned network
        let emb = t
            .net
            .embed(&dataset_images(&test, None, &Device::Cpu)?, 64)?;
        assert_eq!(emb.accuracy(test.labels.as_deref().unwrap_or(&[]))?, acc);
        assert_eq!(t.info.steps, 400);
        assert_eq!(t.info.image_shape, [3, 32, 32]);
        assert_eq!(t.info.num_classes, 6);
        // the last 100 steps' loss is well below chance level, ln 6 = 1.79
        assert!(t.info.final_train_loss < 0.8, "{}", t.info.final_train_loss);
        assert!(lines.last().is_some_and(|l| l.contains("test accuracy")));
        Ok(())
    }

    #[test]
    fn training_is_bit_reproducible_and_seeded() -> Result<()> {
        let (train, test) = shapes_data(200, 20);
        let mut cfg = tiny_train(12, 5);
        cfg.max_shift = 2; // augmentation must be seeded too
        let run = |cfg: &FeatureTrainConfig| -> Result<BTreeMap<String, Vec<u32>>> {
            let t = train_feature_net_on(
                &train,
                &test,
                &FeatureNetConfig::tiny(),
                cfg,
                &Device::Cpu,
                &mut |_| {},
            )?;
            t.params
                .snapshot()?
                .into_iter()
                .map(|(k, v)| Ok((k, bits(&v.flatten_all()?.to_vec1::<f32>()?))))
                .collect()
        };
        let a = run(&cfg)?;
        let b = run(&cfg)?;
        assert_eq!(a, b);
        cfg.seed = 6;
        let c = run(&cfg)?;
        assert_ne!(a["classifier.weight"], c["classifier.weight"]);
        Ok(())
    }

    /// Training through the trainer's step and optimiser gives the weights, bit for bit, of the plain loop this
    /// file ran before (data order, augmentation stream, cross-entropy, AdamW with warm-up + cosine, no
    /// clipping), written out here as the reference.
    #[test]
    fn the_shared_step_trains_bit_for_bit_as_the_plain_loop() -> Result<()> {
        use crate::train::optim::{collect_grads, lr_at, AdamW};
        let (train, test) = shapes_data(96, 10);
        let mut t = tiny_train(7, 3);
        t.max_shift = 2;
        t.weight_decay = 0.01;
        let net_cfg = FeatureNetConfig::tiny();
        let shared = train_feature_net_on(&train, &test, &net_cfg, &t, &Device::Cpu, &mut |_| {})?;
        // the reference loop
        let (pixels, shape) = image_pixels(&train)?;
        let (labels, classes) = labels_of(&train)?;
        let params = Params::new(t.seed, &Device::Cpu);
        let net = FeatureNet::new(&net_cfg, shape, classes, params.var_builder())?;
        let vars = params.vars();
        let mut opt = AdamW::new(
            vars.clone(),
            AdamWParams {
                weight_decay: t.weight_decay,
                ..Default::default()
            },
        )?;
        let mut loader = Loader::new(train.len(), t.batch_size, t.seed)?;
        let [c, h, w] = shape;
        let mut values = Vec::new();
        for step in 0..t.steps {
            let idx = loader.indices(step).to_vec();
            let mut rng = Rng::stream(t.seed ^ AUGMENT_SALT, step);
            fill_batch(pixels, shape, &idx, t.max_shift, &mut rng, &mut values);
            let x = Tensor::from_slice(&values, (idx.len(), c, h, w), &Device::Cpu)?;
            let y = Tensor::from_vec(
                idx.iter().map(|&i| labels[i]).collect::<Vec<u32>>(),
                idx.len(),
                &Device::Cpu,
            )?;
            let loss = candle_nn::loss::cross_entropy(&net.forward(&x)?.1, &y)?;
            let grads = collect_grads(&vars, &loss.backward()?);
            let lr = lr_at(step, t.steps, t.lr, t.warmup_steps, t.min_lr_ratio);
            opt.step(&grads, lr, 1.0)?;
        }
        let flat = |p: &Params| -> Result<BTreeMap<String, Vec<u32>>> {
            p.snapshot()?
                .into_iter()
                .map(|(k, v)| Ok((k, bits(&v.flatten_all()?.to_vec1::<f32>()?))))
                .collect()
        };
        assert_eq!(flat(&shared.params)?, flat(&params)?);
        Ok(())
    }

    #[test]
    fn shift_augmentation_moves_the_image_and_replicates_edges() {
        // one 1×3×3 image; a shift of (dy, dx) = (1, −1) moves content down and left
        let img: Vec<u8> = (1..=9).collect();
        let mut rng = Rng::new(3);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut out = Vec::new();
            fill_batch(&img, [1, 3, 3], &[0], 1, &mut rng, &mut out);
            let px: Vec<u8> = out.iter().map(|v| (v * 255.0).round() as u8).collect();
            seen.insert(px);
        }
        // 9 distinct shifts, including the identity and the edge-replicated (1, −1) one
        assert_eq!(seen.len(), 9);
        assert!(seen.contains(&img));
        assert!(seen.contains(&vec![2, 3, 3, 2, 3, 3, 5, 6, 6]));
        let mut out = Vec::new();
        fill_batch(&img, [1, 3, 3], &[0], 0, &mut rng, &mut out);
        assert_eq!(
            out,
            img.iter().map(|&p| p as f32 / 255.0).collect::<Vec<_>>()
        );
    }

    /// The measurement behind the default config (run by hand; needs MNIST under `$DGM_DATA`):
    /// `DGM_DATA=/work/shared/data cargo test --release -p dgm --lib metrics::features::train::tests::mnist_full --
    /// --ignored --nocapture`. Trains the default config, prints the test accuracy and wall time, and saves
    /// the network to /tmp/features-mnist.
    #[test]
    #[ignore]
    fn mnist_full() -> Result<()> {
        let Some(dir) = crate::data::test_data_dir() else {
            eprintln!("DGM_DATA is not set; skipping");
            return Ok(());
        };
        let start = Instant::now();
        let t = train_feature_net(
            "mnist",
            &dir,
            &FeatureNetConfig::default(),
            &FeatureTrainConfig::default(),
            &Device::Cpu,
            &mut |s| eprintln!("{s}"),
        )?;
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "MNIST feature net: test accuracy {:.2} %, {} steps, {secs:.1} s wall (incl. loading), {} threads",
            100.0 * t.info.test_accuracy,
            t.info.steps,
            rayon::current_num_threads()
        );
        t.save(Path::new("/tmp/features-mnist"))?;
        assert!(t.info.test_accuracy >= 0.99, "{}", t.info.test_accuracy);
        Ok(())
    }
}
