//! Times one training step of the MLP VAE 784-512-512-32 (Bernoulli decoder, batch 128) — the model of
//! `bench/step_throughput` — as dgm's trainer runs it: draw a dynamically binarized batch, loss, backward,
//! AdamW update. Prints one JSON line with the median and quartiles in milliseconds.
//!
//! `cargo run --release --example step_throughput -- [STEPS] [BATCH]` (set RAYON_NUM_THREADS for the thread count).

mod common;

use std::time::Instant;

use candle_core::Device;
use dgm::data::Batch;
use dgm::data::{DataSpec, Preprocessing, Split};
use dgm::models::{self, DataInfo};
use dgm::nn::Params;
use dgm::rng::Rng;
use dgm::train::optim::{collect_grads, AdamW, AdamWParams};

use common::StepTimer;

fn main() -> dgm::Result<()> {
    common::init();
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let bs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(128);
    let dev = Device::Cpu;
    let prep = Preprocessing::Binarize { dynamic: true };
    // MNIST when available, else random pixels (the timing does not depend on the values)
    let dir = dgm::data::data_dir(None);
    let data = match dgm::data::load(&DataSpec::Mnist, Split::Train, &dir, &Default::default()) {
        Ok(d) => d,
        Err(_) => {
            let mut r = Rng::new(0);
            let px: Vec<u8> = (0..10_000 * 784).map(|_| r.below(256) as u8).collect();
            dgm::data::Dataset {
                name: "random".into(),
                example_shape: vec![1, 28, 28],
                storage: dgm::data::Storage::U8(px),
                labels: None,
                num_classes: None,
                class_names: None,
                captions: None,
            }
        }
    };
    let mut cfg = models::default_config("vae")?;
    let info = DataInfo {
        tokenizer: None,
        caption_words: None,
        example_shape: vec![1, 28, 28],
        num_classes: Some(10),
        preprocessing: prep.clone(),
    };
    models::prepare("vae", &mut cfg, &info)?;
    let params = Params::new(0, &dev);
    let model = models::build("vae", &cfg, params.var_builder())?;
    let vars = params.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWParams {
            ..Default::default()
        },
    )?;
    let mut rng = Rng::new(1);
    let warmup = 10;
    let mut timer = StepTimer::new(
        steps,
        warmup,
        &["batch", "forward", "backward", "optimizer"],
    );
    for s in 0..steps + warmup {
        let t0 = Instant::now();
        let idx: Vec<usize> = (0..bs).map(|i| (s * bs + i) % data.len()).collect();
        let batch: Batch = data.batch(&idx, &prep, &mut rng, &dev)?;
        let t1 = Instant::now();
        let out = model.loss(&batch, &mut rng)?;
        let t2 = Instant::now();
        let grads = collect_grads(&vars, &out.loss.backward()?);
        let t3 = Instant::now();
        opt.step(&grads, 1e-3, 1.0)?;
        timer.record(s, &[t0, t1, t2, t3]);
    }
    timer.print_profile();
    let (median, q1, q3) = timer.quartiles()?;
    println!(
        "{{\"impl\": \"dgm\", \"data\": \"{}\", \"steps\": {steps}, \"batch\": {bs}, \"median_ms\": {:.3}, \"q1_ms\": {:.3}, \"q3_ms\": {:.3}, \"params\": {}}}",
        data.name,
        median,
        q1,
        q3,
        params.num_parameters()
    );
    Ok(())
}
