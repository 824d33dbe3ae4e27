//! Times one training step of dgm's image flows as the trainer runs it — the models of `bench/flow_step`:
//! RealNVP (Dinh et al. 2017, arXiv:1605.08803) or Glow (Kingma & Dhariwal 2018, arXiv:1807.03039) with the
//! `[model]` section of `configs/realnvp-mnist.toml` / `configs/glow-mnist.toml`, built through the model
//! registry on 1×28×28 images with `data.preprocessing = { kind = "scale", range = "zero_one", dequantize =
//! true }`. ActNorm's data-dependent initialisation runs once on the batch (as the trainer does before a new
//! run's first step); then each timed step is the training loss — the exact NLL −log p(x) in nats, summed
//! over the 784 dimensions and averaged over the batch (logit preprocessing, flow, standard normal prior) —,
//! backward, and an AdamW update (lr 1e-3, no weight decay, no clipping), on one fixed batch of random
//! continuous images in [0, 1), shape (batch, 1, 28, 28) (dequantized-like values; no data loading in the
//! timed loop). Prints one JSON line with the median and quartiles in milliseconds and the parameter count.
//!
//! `cargo run --release --example flow_step -- MODEL [STEPS] [BATCH]` (MODEL `realnvp` or `glow`; set
//! RAYON_NUM_THREADS for the thread count). `-- --dump DIR MODEL` instead initialises ActNorm on one batch,
//! perturbs the variables that start at zero (each coupling's last conditioner conv and the 1×1
//! convolutions' LU offsets, so that every parameter matters), and writes the weights, the 1×1 convolutions'
//! fixed starting rotations, the batches, and the model's per-example log-likelihood, code z and loss to
//! DIR/tensors.{txt,bin} for `bench/torch/flow_step.py --check DIR`, which loads them into the PyTorch twin
//! and compares.

mod common;

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use dgm::data::{Batch, Preprocessing, Range};
use dgm::model::LikelihoodOptions;
use dgm::models;
use dgm::nn::Params;
use dgm::rng::Rng;
use dgm::train::optim::{collect_grads, AdamW, AdamWParams};

use common::StepTimer;

/// The flows this benchmark runs (each with its config `configs/<name>-mnist.toml`).
const MODELS: &[&str] = &["realnvp", "glow"];

/// The prepared `[model]` table of `configs/<model>-mnist.toml` for 1×28×28 images in [0, 1], uniformly
/// dequantized (the preprocessing the config itself must name).
fn flow_config(model: &str) -> dgm::Result<toml::Table> {
    let preprocessing = Preprocessing::Scale {
        range: Range::ZeroOne,
        dequantize: true,
    };
    Ok(common::mnist_config(model, MODELS, preprocessing)?
        .model
        .config)
}

/// The random rotation a Glow 1×1 convolution with variables under `prefix` starts from, `(c, c)`: the
/// Gram–Schmidt draw of `layers::InvConv1x1::new` (stream `<prefix>.w0` of the model's `conv_seed`), which
/// dgm does not expose. The twin derives P, L, U, the signs and log|s| from it with dgm's LU; a mismatch
/// here shows up in the check.
fn start_rotation(c: usize, seed: u64, prefix: &str) -> dgm::Result<Tensor> {
    let mut rng = Rng::named(seed, &format!("{prefix}.w0"));
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(c);
    while q.len() < c {
        let mut v: Vec<f64> = (0..c).map(|_| rng.normal() as f64).collect();
        for u in &q {
            let d: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
        }
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if n > 1e-6 {
            q.push(v.into_iter().map(|a| a / n).collect());
        }
    }
    Ok(Tensor::from_vec(q.concat(), (c, c), &Device::Cpu)?.to_dtype(candle_core::DType::F32)?)
}

/// The `--dump DIR MODEL` mode (see the module docs).
fn dump(dir: &Path, name: &str) -> dgm::Result<()> {
    let dev = Device::Cpu;
    let cfg = flow_config(name)?;
    let params = Params::new(0, &dev);
    let model = models::build(name, &cfg, params.var_builder())?;
    let mut rng = Rng::new(3);
    let x_init = rng.rand((32, 1, 28, 28), &dev)?; // ActNorm's initialisation batch, in [0, 1)
    let x = rng.rand((8, 1, 28, 28), &dev)?; // the compared batch
    params.set_values(&model.data_init(&Batch::new(x_init.clone()))?)?;
    let conv_seed = cfg
        .get("conv_seed")
        .and_then(toml::Value::as_integer)
        .unwrap_or(0) as u64;
    let mut tensors = Vec::new();
    let mut rotations = Vec::new();
    for (var_name, var) in params.vars() {
        let t = var.as_tensor();
        let zero_start = var_name.contains(".net.2.") || var_name.contains(".invconv.");
        if zero_start {
            var.set(&(t + (rng.randn(t.shape(), &dev)? * 0.05)?)?)?;
        }
        if let Some(prefix) = var_name.strip_suffix(".invconv.log_s") {
            let prefix = format!("{prefix}.invconv");
            rotations.push((
                format!("__w0.{prefix}"),
                start_rotation(t.dim(0)?, conv_seed, &prefix)?,
            ));
        }
        tensors.push((var_name, var.as_tensor().copy()?));
    }
    let batch = Batch::new(x.clone());
    let density = model
        .as_density()
        .ok_or_else(|| dgm::Error::invalid(name, "not a density"))?;
    let ll = density.log_likelihood(&batch, &LikelihoodOptions::default())?;
    let ll: Vec<f32> = ll.nats.iter().map(|&v| v as f32).collect();
    let z = model
        .as_latent()
        .ok_or_else(|| dgm::Error::invalid(name, "not a latent-variable model"))?
        .encode(&batch)?;
    let loss = model.loss(&batch, &mut rng)?.loss.reshape(1)?;
    tensors.extend(rotations);
    tensors.push(("__x_init".into(), x_init));
    tensors.push(("__x".into(), x));
    tensors.push(("__ll".into(), Tensor::new(ll, &dev)?));
    tensors.push(("__z".into(), z));
    tensors.push(("__loss".into(), loss));
    common::write_tensors(dir, &tensors)?;
    println!(
        "{{\"impl\": \"dgm\", \"dump\": \"{}\", \"model\": \"{name}\", \"params\": {}}}",
        dir.display(),
        params.num_parameters()
    );
    Ok(())
}

fn main() -> dgm::Result<()> {
    common::init();
    let (name, steps, bs) = match common::step_args("flow_step", 64)? {
        common::StepArgs::Dump { dir, model } => return dump(&dir, &model),
        common::StepArgs::Time {
            model,
            steps,
            batch,
        } => (model, steps, batch),
    };
    let name = name.as_str();
    let dev = Device::Cpu;
    let cfg = flow_config(name)?;
    let params = Params::new(0, &dev);
    let model = models::build(name, &cfg, params.var_builder())?;
    let mut rng = Rng::new(1);
    let x = rng.rand((bs, 1, 28, 28), &dev)?; // (b, 1, 28, 28) in [0, 1)
    let batch = Batch::new(x);
    params.set_values(&model.data_init(&batch)?)?;
    let vars = params.vars();
    let mut opt = AdamW::new(vars.clone(), AdamWParams::default())?;
    let warmup = 10;
    let mut timer = StepTimer::new(steps, warmup, &["forward", "backward", "optimizer"]);
    for s in 0..steps + warmup {
        let t0 = Instant::now();
        let out = model.loss(&batch, &mut rng)?;
        let t1 = Instant::now();
        let grads = collect_grads(&vars, &out.loss.backward()?);
        let t2 = Instant::now();
        opt.step(&grads, 1e-3, 1.0)?;
        timer.record(s, &[t0, t1, t2]);
    }
    timer.print_profile();
    let (median, q1, q3) = timer.quartiles()?;
    println!(
        "{{\"impl\": \"dgm\", \"model\": \"{name}\", \"steps\": {steps}, \"batch\": {bs}, \"median_ms\": {:.3}, \"q1_ms\": {:.3}, \"q3_ms\": {:.3}, \"params\": {}}}",
        median,
        q1,
        q3,
        params.num_parameters()
    );
    Ok(())
}
