//! Times one DDPM training step (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", arXiv:2006.11239,
//! Algorithm 1) of dgm's UNet as the trainer runs it — the model of `bench/unet_step`: k ~ U{0, …, 999},
//! ε ~ N(0, I), x_k = √ᾱ_k x₀ + √(1−ᾱ_k) ε on the linear schedule (β 1e-4 → 0.02), the L_simple objective
//! mean ‖ε̂(x_k, k) − ε‖², backward, AdamW update (lr 1e-3, no weight decay, no clipping). The net is the one of
//! `configs/ddpm-mnist.toml` (C = base_channels, ×[1, 2, 2], one ResBlock per level, attention at 7×7,
//! 4 heads, 8 groups) on one fixed batch of random images in [−1, 1], shape (batch, 1, 28, 28); no data loading
//! in the timed loop. Prints one JSON line with the median and quartiles in milliseconds and the parameter
//! count.
//!
//! `cargo run --release --example unet_step -- [STEPS] [BATCH] [BASE]` (set RAYON_NUM_THREADS for the thread
//! count). `-- --dump DIR [BASE]` instead writes the weights (with the GroupNorm affines and all biases
//! perturbed, so that every parameter matters), an input (x, t) and the UNet's output to DIR/tensors.{txt,bin}
//! for `bench/torch/unet_step.py --check DIR`, which loads them into the PyTorch twin and compares outputs.

mod common;

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use dgm::data::Batch;
use dgm::data::{Preprocessing, Range};
use dgm::models::{self, DataInfo};
use dgm::nn::unet::{UNet, UNetConfig};
use dgm::nn::Params;
use dgm::rng::Rng;
use dgm::train::optim::{collect_grads, AdamW, AdamWParams};

use common::StepTimer;

/// The prepared DDPM config (as a TOML table) of `configs/ddpm-mnist.toml`, with base channels `base`.
fn ddpm_config(base: usize) -> dgm::Result<toml::Table> {
    let mut cfg = models::default_config("ddpm")?;
    cfg.insert("schedule".into(), "linear".into());
    cfg.insert("timesteps".into(), toml::Value::Integer(1000));
    cfg.insert("prediction".into(), "eps".into());
    let unet = cfg
        .get_mut("net")
        .and_then(|n| n.get_mut("unet"))
        .and_then(|u| u.as_table_mut())
        .ok_or_else(|| dgm::Error::invalid("ddpm config", "no [net.unet] table in the defaults"))?;
    let int = |v: usize| toml::Value::Integer(v as i64);
    let ints = |v: &[usize]| toml::Value::Array(v.iter().map(|&x| int(x)).collect());
    unet.insert("base_channels".into(), int(base));
    unet.insert("channel_mult".into(), ints(&[1, 2, 2]));
    unet.insert("num_res_blocks".into(), int(1));
    unet.insert("attention_resolutions".into(), ints(&[7]));
    unet.insert("num_heads".into(), int(4));
    unet.insert("groups".into(), int(8));
    let info = DataInfo {
        tokenizer: None,
        caption_words: None,
        example_shape: vec![1, 28, 28],
        num_classes: Some(10),
        preprocessing: Preprocessing::Scale {
            range: Range::MinusOneOne,
            dequantize: false,
        },
    };
    models::prepare("ddpm", &mut cfg, &info)?;
    Ok(cfg)
}

/// The `--dump DIR` mode (see the module docs).
fn dump(dir: &Path, base: usize) -> dgm::Result<()> {
    let dev = Device::Cpu;
    let cfg = ddpm_config(base)?;
    let ucfg: UNetConfig = cfg
        .get("net")
        .and_then(|n| n.get("unet"))
        .cloned()
        .ok_or_else(|| dgm::Error::invalid("ddpm config", "no [net.unet] table"))?
        .try_into()
        .map_err(|e| dgm::Error::invalid("net.unet", format!("{e}")))?;
    // the timed model's variables are exactly the standalone UNet's, under net.unet.
    let ddpm_params = Params::new(0, &dev);
    let _ddpm = models::build("ddpm", &cfg, ddpm_params.var_builder())?;
    let params = Params::new(0, &dev);
    let unet = UNet::new(&ucfg, params.var_builder())?;
    let mut rng = Rng::new(3);
    let mut tensors = Vec::new();
    for (name, var) in params.vars() {
        let t = var.as_tensor();
        if t.rank() == 1 {
            var.set(&(t + (rng.randn(t.shape(), &dev)? * 0.1)?)?)?;
        }
        tensors.push((name, var.as_tensor().copy()?));
    }
    let mut a: Vec<String> = ddpm_params.vars().into_iter().map(|(n, _)| n).collect();
    let mut b: Vec<String> = tensors
        .iter()
        .map(|(n, _)| format!("net.unet.{n}"))
        .collect();
    a.sort();
    b.sort();
    if a != b {
        return Err(dgm::Error::invalid(
            "ddpm variables",
            format!("not the standalone UNet's under net.unet.: {a:?} vs {b:?}"),
        ));
    }
    let x = ((rng.rand((4, 1, 28, 28), &dev)? * 2.0)? - 1.0)?; // (4, 1, 28, 28) in [−1, 1]
    let t = Tensor::new(&[0f32, 999.0, 500.0, 123.0], &dev)?; // (4,)
    let out = unet.forward(&x, &t, None)?; // (4, 1, 28, 28)
    tensors.push(("__x".into(), x));
    tensors.push(("__t".into(), t));
    tensors.push(("__out".into(), out));
    common::write_tensors(dir, &tensors)?;
    println!(
        "{{\"impl\": \"dgm\", \"dump\": \"{}\", \"params\": {}, \"ddpm_params\": {}}}",
        dir.display(),
        params.num_parameters(),
        ddpm_params.num_parameters()
    );
    Ok(())
}

fn main() -> dgm::Result<()> {
    common::init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--dump") {
        let dir = args
            .get(2)
            .ok_or_else(|| dgm::Error::invalid("--dump", "needs a directory: --dump DIR [BASE]"))?;
        let base: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(16);
        return dump(Path::new(dir), base);
    }
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let bs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let base: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(16);
    let dev = Device::Cpu;
    let cfg = ddpm_config(base)?;
    let params = Params::new(0, &dev);
    let model = models::build("ddpm", &cfg, params.var_builder())?;
    let vars = params.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWParams {
            ..Default::default()
        },
    )?;
    let mut rng = Rng::new(1);
    let x0 = ((rng.rand((bs, 1, 28, 28), &dev)? * 2.0)? - 1.0)?; // (b, 1, 28, 28) in [−1, 1]
    let batch = Batch::new(x0);
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
        "{{\"impl\": \"dgm\", \"steps\": {steps}, \"batch\": {bs}, \"base\": {base}, \"median_ms\": {:.3}, \"q1_ms\": {:.3}, \"q3_ms\": {:.3}, \"params\": {}}}",
        median,
        q1,
        q3,
        params.num_parameters()
    );
    Ok(())
}
