//! Times one training step of dgm's GPT (Radford et al. 2019; nanoGPT's `model.py`) as the trainer runs it —
//! the model of `bench/gpt_step`: nanoGPT's small CPU config (4 layers, 4 heads, width 128, context 64,
//! dropout 0, the 65-symbol vocabulary of tinyshakespeare + BOS), a forward pass to the mean cross-entropy
//! per token, backward, gradient clipping at global norm 1, and AdamW (lr 1e-3, betas (0.9, 0.99), weight
//! decay 0.1 on matrices only, as nanoGPT), on one fixed batch of random tokens; no data loading in the timed
//! loop. Prints one JSON line with the median and quartiles in milliseconds and the parameter count.
//!
//! `cargo run --release --example gpt_step -- [STEPS] [BATCH]` (set RAYON_NUM_THREADS for the thread count).
//! `-- --dump DIR` instead writes the weights (initial ones plus N(0, 0.1²) noise on every variable, so that
//! every parameter matters), a batch `__x` (u32), its loss `__loss` and its logits `__logits` to
//! DIR/gpt.safetensors for `bench/torch/gpt_char.py --check DIR`, which loads them into the PyTorch twin and
//! compares.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use dgm::data::Batch;
use dgm::data::Tokenizer;
use dgm::model::Model;
use dgm::models::autoregressive::gpt::{Gpt, GptConfig};
use dgm::nn::Params;
use dgm::rng::Rng;
use dgm::train::optim::{collect_grads, global_grad_norm, AdamW, AdamWParams};

use common::StepTimer;

/// Context length of the benchmark.
const BLOCK: usize = 64;
/// Vocabulary size (tinyshakespeare's characters).
const VOCAB: usize = 65;

/// nanoGPT's small CPU config with a 65-symbol character vocabulary.
fn config() -> GptConfig {
    GptConfig {
        block_size: BLOCK,
        tokenizer: Tokenizer::Chars {
            symbols: (32u8..32 + VOCAB as u8).collect(),
        },
        ..GptConfig::default()
    }
}

/// `b` windows of random token ids, `(b, BLOCK)` u32.
fn random_batch(b: usize, rng: &mut Rng) -> dgm::Result<Tensor> {
    let ids: Vec<u32> = (0..b * BLOCK).map(|_| rng.below(VOCAB) as u32).collect();
    Ok(Tensor::from_vec(ids, (b, BLOCK), &Device::Cpu)?)
}

/// The `--dump DIR` mode (see the module docs).
fn dump(dir: &Path) -> dgm::Result<()> {
    let dev = Device::Cpu;
    let params = Params::new(0, &dev);
    let model = Gpt::new(config(), params.var_builder())?;
    // perturb every variable (LayerNorm affines and biases included) so that every parameter matters and the
    // predictions are far from uniform
    let mut rng = Rng::new(3);
    for (_, var) in params.vars() {
        let t = var.as_tensor();
        var.set(&(t + (rng.randn(t.shape(), &dev)? * 0.1)?)?)?;
    }
    let x = random_batch(4, &mut Rng::new(2))?; // (4, T)
    let loss = model.loss(&Batch::new(x.clone()), &mut Rng::new(0))?.loss;
    let bos = Tensor::full(model.bos(), (4, 1), &dev)?;
    let input = Tensor::cat(&[&bos, &x.narrow(1, 0, BLOCK - 1)?], 1)?; // [BOS, x_0 … x_{T−2}]
    let logits = model.forward(&input)?; // (4, T, V)
    let mut tensors: HashMap<String, Tensor> = params.snapshot()?.into_iter().collect();
    tensors.insert("__x".into(), x);
    tensors.insert("__loss".into(), loss.reshape(1)?);
    tensors.insert("__logits".into(), logits);
    std::fs::create_dir_all(dir).map_err(|e| dgm::Error::io(dir, e))?;
    candle_core::safetensors::save(&tensors, dir.join("gpt.safetensors"))?;
    println!(
        "{{\"impl\": \"dgm\", \"dump\": \"{}\", \"params\": {}}}",
        dir.display(),
        params.num_parameters()
    );
    Ok(())
}

fn main() -> dgm::Result<()> {
    common::init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--dump") {
        let dir = args
            .get(2)
            .ok_or_else(|| dgm::Error::invalid("--dump", "needs a directory: --dump DIR"))?;
        return dump(Path::new(dir));
    }
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50);
    let bs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(12);
    let params = Params::new(0, &Device::Cpu);
    let model = Gpt::new(config(), params.var_builder())?;
    let vars = params.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWParams {
            beta2: 0.99,
            weight_decay: 0.1,
            decay_matrices_only: true,
            ..Default::default()
        },
    )?;
    let mut rng = Rng::new(1);
    let batch = Batch::new(random_batch(bs, &mut rng)?);
    let warmup = 10;
    let mut timer = StepTimer::new(steps, warmup, &["forward", "backward", "clip + optimizer"]);
    let mut last_loss = f64::NAN;
    for s in 0..steps + warmup {
        let t0 = Instant::now();
        let out = model.loss(&batch, &mut rng)?;
        let t1 = Instant::now();
        let grads = collect_grads(&vars, &out.loss.backward()?);
        let t2 = Instant::now();
        let norm = global_grad_norm(&grads)?;
        let scale = if norm > 1.0 { 1.0 / norm } else { 1.0 };
        opt.step(&grads, 1e-3, scale)?;
        timer.record(s, &[t0, t1, t2]);
        last_loss = out.parts[0].1;
    }
    timer.print_profile();
    let (median, q1, q3) = timer.quartiles()?;
    println!(
        "{{\"impl\": \"dgm\", \"steps\": {steps}, \"batch\": {bs}, \"block\": {BLOCK}, \"median_ms\": {:.3}, \"q1_ms\": {:.3}, \"q3_ms\": {:.3}, \"params\": {}, \"loss\": {:.4}}}",
        median,
        q1,
        q3,
        params.num_parameters(),
        last_loss
    );
    Ok(())
}
