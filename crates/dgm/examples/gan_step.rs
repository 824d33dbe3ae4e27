//! Times one training step of dgm's GANs as the trainer runs it — the models of `bench/gan_step`: DCGAN
//! (Radford et al. 2016) and SN-GAN (Miyato et al. 2018) with the `[model]` and `[train]` sections of
//! `configs/dcgan-mnist.toml` / `configs/sngan-mnist.toml`, built through the model registry on 1×28×28 images
//! with `data.preprocessing = { kind = "scale", range = "minus_one_one", dequantize = false }`. One step is the
//! trainer's [`GanStep`] over the trainer's two optimisers ([`optimizers_for`]): `d_steps` discriminator
//! updates (SN-GAN: a power iteration in every spectrally normalised layer first), each on the real batch and
//! as many generated images, then one generator update; each update is its loss, backward and an AdamW update
//! of its own player. The real batch is one fixed batch of random images in [−1, 1] (no data loading in the
//! timed loop). Prints one JSON line with the median and quartiles in milliseconds and the parameter count.
//!
//! `cargo run --release --example gan_step -- MODEL [STEPS] [BATCH]` (MODEL `dcgan` or `sngan`; set
//! RAYON_NUM_THREADS for the thread count). `-- --dump DIR MODEL` instead writes the weights (with the
//! power-iteration vectors `u`), a real batch `__x`, the latent codes `__z` the discriminator's loss draws,
//! G(z) `__g`, and the loss with its parts (mean D(x), mean D(G(z))) to DIR/tensors.{txt,bin} for
//! `bench/torch/gan_step.py --check DIR MODEL`, which loads them into the PyTorch twin and compares.

mod common;

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use dgm::data::{Batch, Preprocessing, Range};
use dgm::models;
use dgm::nn::Params;
use dgm::rng::Rng;
use dgm::train::step::StepAt;
use dgm::train::{optimizers_for, Optimizers, RunConfig, StepContext};

use common::StepTimer;

/// The GANs this benchmark runs (each with its config `configs/<name>-mnist.toml`).
const MODELS: &[&str] = &["dcgan", "sngan"];

/// `configs/<model>-mnist.toml` with its `[model]` table prepared for 1×28×28 images in [−1, 1] (the
/// preprocessing the config itself must name).
fn gan_config(model: &str) -> dgm::Result<RunConfig> {
    let preprocessing = Preprocessing::Scale {
        range: Range::MinusOneOne,
        dequantize: false,
    };
    common::mnist_config(model, MODELS, preprocessing)
}

/// Random images in [−1, 1]: (n, 1, 28, 28).
fn images(rng: &mut Rng, n: usize, dev: &Device) -> dgm::Result<Tensor> {
    Ok(rng.rand((n, 1, 28, 28), dev)?.affine(2.0, -1.0)?)
}

/// The `--dump DIR MODEL` mode (see the module docs).
fn dump(dir: &Path, name: &str) -> dgm::Result<()> {
    let dev = Device::Cpu;
    let cfg = gan_config(name)?;
    let params = Params::new(0, &dev);
    let model = models::build(name, &cfg.model.config, params.var_builder())?;
    let adv = model
        .as_adversarial()
        .ok_or_else(|| dgm::Error::invalid(name, "not a GAN"))?;
    let dec = model
        .as_decoder_based()
        .ok_or_else(|| dgm::Error::invalid(name, "not decoder-based"))?;
    let x = images(&mut Rng::new(3), 8, &dev)?;
    // the discriminator's loss draws its z first from its generator: the same draw, seen from outside
    let z = Rng::new(5).randn((8, dec.latent_dim()), &dev)?;
    let g = dec.decode_mean(&z, None)?;
    let out = adv.discriminator_loss(&Batch::new(x.clone()), &mut Rng::new(5), false)?;
    let part = |k: &str| out.parts.iter().find(|(n, _)| n == k).map(|p| p.1 as f32);
    let (Some(d_real), Some(d_fake)) = (part("d_real"), part("d_fake")) else {
        return Err(dgm::Error::invalid(
            name,
            "the loss has no d_real / d_fake parts",
        ));
    };
    let mut tensors: Vec<(String, Tensor)> = params
        .vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    tensors.push(("__x".into(), x));
    tensors.push(("__z".into(), z));
    tensors.push(("__g".into(), g));
    tensors.push(("__loss".into(), out.loss.reshape(1)?));
    tensors.push(("__d_real".into(), Tensor::new(&[d_real], &dev)?));
    tensors.push(("__d_fake".into(), Tensor::new(&[d_fake], &dev)?));
    common::write_tensors(dir, &tensors)?;
    println!(
        "{{\"impl\": \"dgm\", \"dump\": \"{}\", \"model\": \"{name}\", \"params\": {}}}",
        dir.display(),
        trainable(&params)
    );
    Ok(())
}

/// Trainable parameters: the power-iteration vectors `u` are state, not parameters (PyTorch keeps them as
/// buffers).
fn trainable(params: &Params) -> usize {
    params
        .vars()
        .iter()
        .filter(|(n, _)| !n.ends_with(".u"))
        .map(|(_, v)| v.as_tensor().elem_count())
        .sum()
}

fn main() -> dgm::Result<()> {
    common::init();
    let (name, steps, bs) = match common::step_args("gan_step", 128)? {
        common::StepArgs::Dump { dir, model } => return dump(&dir, &model),
        common::StepArgs::Time {
            model,
            steps,
            batch,
        } => (model, steps, batch),
    };
    let name = name.as_str();
    let dev = Device::Cpu;
    let cfg = gan_config(name)?;
    let params = Params::new(0, &dev);
    let model = models::build(name, &cfg.model.config, params.var_builder())?;
    let (specs, mut step) = optimizers_for(model.as_ref(), &cfg.train)?;
    let mut opt = Optimizers::new(params.vars(), specs)?;
    let real = Batch::new(images(&mut Rng::new(1), bs, &dev)?);
    let warmup = 5;
    let mut timer = StepTimer::new(steps, warmup, &["step"]);
    for s in 0..steps + warmup {
        let mut rng = Rng::stream(1, s as u64);
        let mut batch = |_: usize, _: &mut Rng| Ok(real.clone());
        let t0 = Instant::now();
        step.step(&mut StepContext {
            at: StepAt {
                step: s as u64,
                saved: None,
                log: false,
            },
            model: model.as_ref(),
            rng: &mut rng,
            batch: &mut batch,
            opt: &mut opt,
        })?;
        timer.record(s, &[t0]);
    }
    let (median, q1, q3) = timer.quartiles()?;
    println!(
        "{{\"impl\": \"dgm\", \"model\": \"{name}\", \"steps\": {steps}, \"batch\": {bs}, \"d_steps\": {}, \"median_ms\": {:.3}, \"q1_ms\": {:.3}, \"q3_ms\": {:.3}, \"params\": {}}}",
        step.batches_per_step(),
        median,
        q1,
        q3,
        trainable(&params)
    );
    Ok(())
}
