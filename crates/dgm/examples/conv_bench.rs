//! The benchmark of the CPU conv / group-norm kernels (`bench/conv_kernels`): a small conv denoiser at
//! batch 128 on 1×28×28 inputs, timed as a whole (forward only, training step) and op by op. Prints one
//! JSON line; `bench/torch/conv_denoiser.py` is its PyTorch twin (same model, same modes, same keys).
//!
//! The model: conv_in 1→64 (3×3); 4 residual blocks at 64 channels, 28×28
//! (`h + conv2(silu(gn2(conv1(silu(gn1(h))))))`, GroupNorm with 8 groups, 3×3 pad 1 convs); down 64→128
//! (3×3, stride 2) → 14×14; 2 residual blocks at 128 channels; up = transposed conv 128→64 (k 4, stride 2,
//! pad 1) → 28×28, plus the 28×28 features after the four blocks; out = conv 64→1 (3×3) of
//! silu(gn_out(h)). Loss: MSE(out, clean) for the input clean + 0.5·noise. Training step: forward,
//! backward, Adam (lr 1e-3, no weight decay).
//!
//! ```text
//! cargo run --release -p dgm --example conv_bench -- <step|forward|ops> [--stock] [--steps N] [--batch B] [--warmup W]
//! ```
//!
//! - `step`: median / quartiles (ms) of the training step over N steps after W warm-up steps.
//! - `forward`: the same for the forward pass and loss alone, with detached weights (candle has no no-grad
//!   mode; a model built on plain tensors records no graph, as under PyTorch's `no_grad`).
//! - `ops`: median of N repeats of each large layer at the benchmark's shapes, forward and backward, and a
//!   2048² sgemm through candle's matmul (the `gemm` crate). "Backward" is the time of `.backward()` of
//!   `sum(y ⊙ r)` for a fixed random r, the layer's input a variable: the input, weight (and bias / γ, β)
//!   gradients, plus the element-wise backward of the product and the sum, which is reported on its own
//!   (`bwd of sum(y*r) alone`, for a variable y of the output's shape).
//!
//! `--stock` routes every layer through candle's stock ops (`dgm::nn::set_stock_ops`). Each mode reports the
//! process's peak RSS (`VmHWM`), so run each mode in its own process. Set RAYON_NUM_THREADS for the thread
//! count.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use dgm::data::{DataSpec, Preprocessing, Range, Split};
use dgm::nn::{Conv2d, ConvTranspose2d, GroupNorm, Params};
use dgm::rng::Rng;
use dgm::train::optim::{collect_grads, AdamW, AdamWParams};
use dgm::{Error, Result};
use serde_json::{json, Value};

use common::{quartiles, StepTimer};

const GROUPS: usize = 8;

/// `h + conv2(silu(gn2(conv1(silu(gn1(h))))))`.
struct ResBlock {
    gn1: GroupNorm,
    conv1: Conv2d,
    gn2: GroupNorm,
    conv2: Conv2d,
}

impl ResBlock {
    fn new(ch: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gn1: GroupNorm::new(GROUPS, ch, vb.pp("gn1"))?,
            conv1: Conv2d::new(ch, ch, 3, 1, 1, vb.pp("conv1"))?,
            gn2: GroupNorm::new(GROUPS, ch, vb.pp("gn2"))?,
            conv2: Conv2d::new(ch, ch, 3, 1, 1, vb.pp("conv2"))?,
        })
    }

    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(&self.gn1.forward_silu(h)?)?;
        // h + conv2(…), the residual added by the convolution as it writes its output (as the UNet does)
        self.conv2.forward_residual(&self.gn2.forward_silu(&y)?, h)
    }
}

/// The small conv denoiser (see the module comment).
struct Denoiser {
    conv_in: Conv2d,
    blocks64: Vec<ResBlock>,
    down: Conv2d,
    blocks128: Vec<ResBlock>,
    up: ConvTranspose2d,
    gn_out: GroupNorm,
    conv_out: Conv2d,
}

impl Denoiser {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv_in: Conv2d::new(1, 64, 3, 1, 1, vb.pp("conv_in"))?,
            blocks64: (0..4)
                .map(|i| ResBlock::new(64, vb.pp(format!("blocks64.{i}"))))
                .collect::<Result<_>>()?,
            down: Conv2d::new(64, 128, 3, 2, 1, vb.pp("down"))?,
            blocks128: (0..2)
                .map(|i| ResBlock::new(128, vb.pp(format!("blocks128.{i}"))))
                .collect::<Result<_>>()?,
            up: ConvTranspose2d::new(128, 64, 4, 2, 1, 0, vb.pp("up"))?,
            gn_out: GroupNorm::new(GROUPS, 64, vb.pp("gn_out"))?,
            conv_out: Conv2d::new(64, 1, 3, 1, 1, vb.pp("conv_out"))?,
        })
    }

    /// `(b, 1, 28, 28)` → `(b, 1, 28, 28)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for b in &self.blocks64 {
            h = b.forward(&h)?;
        }
        let skip = h.clone();
        h = self.down.forward(&h)?;
        for b in &self.blocks128 {
            h = b.forward(&h)?;
        }
        h = (self.up.forward(&h)? + skip)?;
        self.conv_out.forward(&self.gn_out.forward_silu(&h)?)
    }

    fn loss(&self, x: &Tensor, clean: &Tensor) -> Result<Tensor> {
        Ok((self.forward(x)? - clean)?.sqr()?.mean_all()?)
    }
}

/// Multiply-accumulates of a k×k convolution producing `(b, c_out, h_out, w_out)` from `c_in` channels
/// (for a transposed convolution pass the input's spatial size: each input position meets k² weights).
fn conv_macs(b: usize, c_in: usize, c_out: usize, k: usize, h: usize, w: usize) -> f64 {
    (b * c_in * c_out * k * k * h * w) as f64
}

/// The forward pass's FLOP (2 per MAC of the convolutions and the transposed convolution; norms and
/// element-wise ops not counted).
fn forward_flop(b: usize) -> f64 {
    let macs = conv_macs(b, 1, 64, 3, 28, 28)
        + 8.0 * conv_macs(b, 64, 64, 3, 28, 28)
        + conv_macs(b, 64, 128, 3, 14, 14)
        + 4.0 * conv_macs(b, 128, 128, 3, 14, 14)
        + conv_macs(b, 128, 64, 4, 14, 14)
        + conv_macs(b, 64, 1, 3, 28, 28);
    2.0 * macs
}

/// Peak resident set size of this process in MiB (`VmHWM`), or None off Linux.
fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

struct Opts {
    mode: String,
    stock: bool,
    steps: usize,
    batch: usize,
    warmup: usize,
}

fn parse_args() -> Result<Opts> {
    let usage =
        "usage: conv_bench <step|forward|ops> [--stock] [--steps N] [--batch B] [--warmup W]";
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or_else(|| Error::invalid("mode", usage))?;
    if !matches!(mode.as_str(), "step" | "forward" | "ops") {
        return Err(Error::invalid(
            "mode",
            format!("unknown mode '{mode}'; {usage}"),
        ));
    }
    let mut o = Opts {
        mode,
        stock: false,
        steps: 10,
        batch: 128,
        warmup: 2,
    };
    while let Some(a) = args.next() {
        let mut num = |key: &str| -> Result<usize> {
            let v = args
                .next()
                .ok_or_else(|| Error::invalid(key, format!("{key} needs a value; {usage}")))?;
            match v.parse::<usize>() {
                Ok(n) if n > 0 || key == "--warmup" => Ok(n),
                _ => Err(Error::invalid(
                    key,
                    format!("'{v}' is not a positive integer"),
                )),
            }
        };
        match a.as_str() {
            "--stock" => o.stock = true,
            "--steps" => o.steps = num("--steps")?,
            "--batch" => o.batch = num("--batch")?,
            "--warmup" => o.warmup = num("--warmup")?,
            _ => {
                return Err(Error::invalid(
                    "argument",
                    format!("unknown '{a}'; {usage}"),
                ))
            }
        }
    }
    Ok(o)
}

/// Clean images in [0, 1]: MNIST's training images when the data directory has them, else uniform noise.
fn clean_images() -> Result<(String, Vec<f32>)> {
    let dir = dgm::data::data_dir(None);
    let prep = Preprocessing::Scale {
        range: Range::ZeroOne,
        dequantize: false,
    };
    match dgm::data::load(&DataSpec::Mnist, Split::Train, &dir, &Default::default()) {
        Ok(d) => {
            let idx: Vec<usize> = (0..d.len().min(10_000)).collect();
            let x = d.batch(&idx, &prep, &mut Rng::new(0), &Device::Cpu)?.x;
            Ok(("mnist".into(), x.flatten_all()?.to_vec1::<f32>()?))
        }
        Err(_) => Ok(("random".into(), Rng::new(0).uniform_vec(10_000 * 784))),
    }
}

/// Runs `step` or `forward`.
fn run_model(o: &Opts) -> Result<Value> {
    let dev = Device::Cpu;
    let bs = o.batch;
    let (data_name, pixels) = clean_images()?;
    let n_images = pixels.len() / 784;
    let params = Params::new(0, &dev);
    let model = Denoiser::new(params.var_builder())?;
    let vars = params.vars();
    // forward only: the same weights as plain tensors, so that no graph is recorded
    let frozen = if o.mode == "forward" {
        let ts: HashMap<String, Tensor> = params.snapshot()?.into_iter().collect();
        Some(Denoiser::new(VarBuilder::from_tensors(
            ts,
            DType::F32,
            &dev,
        ))?)
    } else {
        None
    };
    let adam = AdamWParams {
        ..Default::default()
    };
    let mut opt = match frozen {
        Some(_) => None,
        None => Some(AdamW::new(vars.clone(), adam)?),
    };
    let mut rng = Rng::new(1);
    let mut timer = StepTimer::new(o.steps, o.warmup, &["forward", "backward", "optimizer"]);
    for s in 0..o.steps + o.warmup {
        // the batch is drawn outside the timed region (on both sides)
        let mut clean = Vec::with_capacity(bs * 784);
        for i in 0..bs {
            let k = (s * bs + i) % n_images;
            clean.extend_from_slice(&pixels[k * 784..(k + 1) * 784]);
        }
        let clean = Tensor::from_vec(clean, (bs, 1, 28, 28), &dev)?;
        let x = (&clean + (rng.randn((bs, 1, 28, 28), &dev)? * 0.5)?)?.detach();
        let t0 = Instant::now();
        let (t1, t2) = match (&frozen, &mut opt) {
            (Some(m), _) => {
                m.loss(&x, &clean)?.to_scalar::<f32>()?;
                (Instant::now(), Instant::now())
            }
            (None, Some(opt)) => {
                let loss = model.loss(&x, &clean)?;
                let t1 = Instant::now();
                let grads = collect_grads(&vars, &loss.backward()?);
                let t2 = Instant::now();
                opt.step(&grads, 1e-3, 1.0)?;
                (t1, t2)
            }
            (None, None) => unreachable!("the optimiser exists whenever the model is trained"),
        };
        timer.record(s, &[t0, t1, t2]);
    }
    let parts = timer.part_means();
    let (med, q1, q3) = timer.quartiles()?;
    let gflop = forward_flop(bs) * if o.mode == "step" { 3.0 } else { 1.0 } / 1e9;
    Ok(json!({
        "impl": if o.stock { "candle stock" } else { "dgm" },
        "mode": o.mode,
        "data": data_name,
        "steps": o.steps,
        "batch": bs,
        "median_ms": round3(med),
        "q1_ms": round3(q1),
        "q3_ms": round3(q3),
        "gflop": round3(gflop),
        "parts_ms": {
            "forward": round3(parts[0]),
            "backward": round3(parts[1]),
            "optimizer": round3(parts[2]),
        },
        "peak_rss_mb": peak_rss_mb().map(|m| (m * 10.0).round() / 10.0),
        "params": params.num_parameters(),
    }))
}

/// Times `f` (one warm-up call, then `n` calls; `f` returns the ms of its timed part) and returns the median.
fn time_ms(n: usize, mut f: impl FnMut() -> Result<f64>) -> Result<f64> {
    f()?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(f()?);
    }
    Ok(quartiles(v).0)
}

/// Forward and backward medians (ms) of `layer` on a variable input of shape `x_shape`; the backward is
/// that of `sum(y ⊙ r)`.
fn fwd_bwd(
    n: usize,
    x_shape: (usize, usize, usize, usize),
    rng: &mut Rng,
    layer: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&rng.randn(x_shape, &dev)?)?;
    let r = rng.randn(layer(x.as_tensor())?.shape(), &dev)?;
    let mut fwd = Vec::with_capacity(n);
    let mut bwd = Vec::with_capacity(n);
    for i in 0..n + 1 {
        let t0 = Instant::now();
        let y = layer(x.as_tensor())?;
        let t1 = Instant::now();
        let loss = (y * &r)?.sum_all()?;
        let t2 = Instant::now();
        let grads = loss.backward()?;
        let t3 = Instant::now();
        drop(grads);
        if i > 0 {
            fwd.push((t1 - t0).as_secs_f64() * 1e3);
            bwd.push((t3 - t2).as_secs_f64() * 1e3);
        }
    }
    Ok((quartiles(fwd).0, quartiles(bwd).0))
}

/// Runs `ops`.
fn run_ops(o: &Opts) -> Result<Value> {
    let dev = Device::Cpu;
    let (b, n) = (o.batch, o.steps);
    let params = Params::new(0, &dev);
    let vb = params.var_builder();
    let mut rng = Rng::new(2);
    let mut ops = Vec::new();
    let mut push = |op: &str, ms: f64, flop: Option<f64>| {
        ops.push(json!({
            "op": op,
            "ms": round3(ms),
            "gflop": flop.map(|f| round3(f / 1e9)),
        }));
    };
    let convs: [(&str, usize, usize, usize, usize, usize); 3] = [
        ("conv3x3 64->64 28x28", 64, 64, 1, 28, 28),
        ("conv3x3 128->128 14x14", 128, 128, 1, 14, 14),
        ("conv3x3 s2 64->128 28->14", 64, 128, 2, 28, 14),
    ];
    for (i, &(name, c_in, c_out, stride, h_in, h_out)) in convs.iter().enumerate() {
        let conv = Conv2d::new(c_in, c_out, 3, stride, 1, vb.pp(format!("conv{i}")))?;
        let (f, bw) = fwd_bwd(n, (b, c_in, h_in, h_in), &mut rng, |x| conv.forward(x))?;
        let flop = 2.0 * conv_macs(b, c_in, c_out, 3, h_out, h_out);
        push(&format!("{name} fwd"), f, Some(flop));
        push(&format!("{name} bwd"), bw, Some(2.0 * flop));
    }
    let up = ConvTranspose2d::new(128, 64, 4, 2, 1, 0, vb.pp("up"))?;
    let (f, bw) = fwd_bwd(n, (b, 128, 14, 14), &mut rng, |x| up.forward(x))?;
    let flop = 2.0 * conv_macs(b, 128, 64, 4, 14, 14);
    push("convT4x4 s2 128->64 14->28 fwd", f, Some(flop));
    push("convT4x4 s2 128->64 14->28 bwd", bw, Some(2.0 * flop));
    // what the "bwd" rows include besides the layer: the backward of sum(v ⊙ r) for a variable v
    for (name, shape) in [
        ("64x28x28", (b, 64, 28, 28)),
        ("128x14x14", (b, 128, 14, 14)),
    ] {
        let (_, bw) = fwd_bwd(n, shape, &mut rng, |x| Ok(x.clone()))?;
        push(&format!("bwd of sum(y*r) alone, {name}"), bw, None);
    }
    let gn = GroupNorm::new(GROUPS, 64, vb.pp("gn"))?;
    let (f, bw) = fwd_bwd(n, (b, 64, 28, 28), &mut rng, |x| gn.forward_silu(x))?;
    push("groupnorm+silu 64x28x28 fwd", f, None);
    push("groupnorm+silu 64x28x28 bwd", bw, None);
    // sgemm: candle's matmul (the gemm crate) on 2048² f32
    let m = 2048;
    let a = rng.randn((m, m), &dev)?;
    let bm = rng.randn((m, m), &dev)?;
    let sgemm_ms = time_ms(n, || {
        let t0 = Instant::now();
        let c = a.matmul(&bm)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        drop(c);
        Ok(ms)
    })?;
    let sgemm_flop = 2.0 * (m * m * m) as f64;
    push("sgemm 2048^3", sgemm_ms, Some(sgemm_flop));
    Ok(json!({
        "impl": if o.stock { "candle stock" } else { "dgm" },
        "mode": "ops",
        "batch": b,
        "repeats": n,
        "ops": ops,
        "sgemm_gflops": round3(sgemm_flop / 1e9 / (sgemm_ms / 1e3)),
        "peak_rss_mb": peak_rss_mb().map(|m| (m * 10.0).round() / 10.0),
    }))
}

fn main() -> Result<()> {
    common::init();
    let o = parse_args()?;
    dgm::nn::set_stock_ops(o.stock);
    let out = match o.mode.as_str() {
        "ops" => run_ops(&o)?,
        _ => run_model(&o)?,
    };
    println!("{out}");
    Ok(())
}
