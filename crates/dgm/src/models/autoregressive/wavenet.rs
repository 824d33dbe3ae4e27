//! WaveNet (van den Oord et al. 2016, arXiv:1609.03499): an autoregressive model of raw audio,
//!
//!   p(x | y) = Π_t p(x_t | x_<t, y),   x_t ∈ {0, …, 255} the 8-bit μ-law codes (§2.2), y the digit (§2.5),
//!
//! trained by the exact NLL and sampled one code at a time.
//!
//! **Network.** The model reads u_t = x_{t−1} (u_0 = silence, code 128: the state generation starts from),
//! embedded as C channels, mixes u_{t−1} and u_t with a causal convolution of width 2, then runs L residual
//! layers with dilations d_l (§2.1, §2.4). Layer l, on its input r (C channels):
//!
//!   h = W_l [r_{t−d_l}; r_t] + V_l y          dilated causal convolution of width 2 (2C outputs) plus the
//!                                             global conditioning V_l y (eq. 3), one bias per layer and class
//!   z = tanh(h_f) ⊙ σ(h_g)                    the gated activation (eq. 2) over the two halves of h
//!   r ← r + R_l z,   s ← s + S_l z             residual and skip 1×1 convolutions (§2.4, figure 4)
//!
//! and p(x_t | ·) = softmax(W_o relu(W_h relu(s) + b_h) + b_o) over the 256 codes. Before the start the
//! convolutions see zeros (left zero padding at every layer), so output t depends on u_{t−R+1} … u_t with
//! the receptive field R = 2 + Σ_l d_l. The default dilations 1, 2, …, 256 twice give R = 1024 samples
//! (128 ms at 8 kHz).
//!
//! **Training on windows.** A step scores W = `train_window` consecutive codes per clip starting at a random
//! s, running the network on the R − 1 codes before them as well: with that context every scored output is
//! exactly the one of a forward pass over the whole clip. The start is uniform over the word and up to R
//! samples of the silence after it, so the loss estimates the per-sample NLL there (positions near the ends
//! of that range are scored less often than the middle).
//!
//! **Generation** keeps, per layer, the last d_l inputs in a queue (Paine et al. 2016, "Fast WaveNet"): each
//! new code costs one column of every layer instead of a pass over the receptive field.
//! [`WaveNet::generate_slow`] is the naive way, the reference the fast path is tested against: a forward
//! pass over the last R inputs per code.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::conditioning::class_labels;
use crate::data::audio::MU_LAW_SILENCE;
use crate::data::{Batch, Preprocessing};
use crate::model::{Density, LikelihoodOptions, LogLikelihood, LossOutput, Model, SampleOptions};
use crate::models::autoregressive::{exact_log_likelihood, ESTIMATORS};
use crate::nn::kernels::gate::gated_activation;
use crate::nn::kernels::token_nll::token_nll;
use crate::nn::{Activation, Embedding, Linear};
use crate::rng::Rng;
use crate::{Error, Result};

/// The μ-law alphabet: 256 codes.
pub const CODES: usize = 256;

/// WaveNet hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WaveNetConfig {
    /// Samples per example (the clip length); filled by [`prepare`].
    pub length: usize,
    /// Residual channels C (the gated layers' convolutions output 2C).
    pub channels: usize,
    /// Skip channels (the output head's width).
    pub skip_channels: usize,
    /// The dilation of each residual layer, in order.
    pub dilations: Vec<usize>,
    /// Condition on the class label (the digit).
    pub class_conditional: bool,
    /// Number of classes (0 = unconditional); filled by [`prepare`].
    pub num_classes: usize,
    /// Codes scored per clip and training step (0 = the whole clip).
    pub train_window: usize,
}

impl Default for WaveNetConfig {
    fn default() -> Self {
        let stack: Vec<usize> = (0..9).map(|i| 1 << i).collect();
        Self {
            length: 0,
            channels: 32,
            skip_channels: 64,
            dilations: [stack.clone(), stack].concat(),
            class_conditional: true,
            num_classes: 0,
            train_window: 2048,
        }
    }
}

impl WaveNetConfig {
    /// A tiny config for tests: 8 channels, dilations 1, 2, 4 (R = 9), clips of `length`.
    pub fn tiny(length: usize) -> Self {
        Self {
            length,
            channels: 8,
            skip_channels: 8,
            dilations: vec![1, 2, 4],
            class_conditional: false,
            num_classes: 0,
            train_window: 0,
        }
    }

    /// The receptive field R = 2 + Σ d_l: output t depends on the inputs u_{t−R+1} … u_t.
    pub fn receptive_field(&self) -> usize {
        2 + self.dilations.iter().sum::<usize>()
    }
}

/// Values one training example keeps alive in a step: per scored window position (with its context) the
/// embedding, the first convolution, and per layer the delayed and joined inputs (4C), the gate's input and
/// output (3C), the residual / skip output (C + S) and the running sums (C + S); then the head (S + S + 256)
/// and the loss terms.
pub fn footprint(cfg: &WaveNetConfig) -> crate::models::Footprint {
    use crate::models::{sat_mul, sat_sum};
    let c = cfg.channels as u64;
    let s = cfg.skip_channels as u64;
    let positions = match cfg.train_window {
        0 => cfg.length,
        w => (cfg.receptive_field() - 1 + w).min(cfg.length.max(1)),
    } as u64;
    let per_layer = sat_sum([sat_mul(9, c), sat_mul(2, s)]);
    let per_position = sat_sum([
        sat_mul(2, c),
        sat_mul(cfg.dilations.len() as u64, per_layer),
        sat_mul(2, s),
        3 * CODES as u64,
    ]);
    crate::models::Footprint {
        buffers: 0,
        activations_per_example: sat_mul(positions, per_position),
    }
}

/// Fills the clip length and the classes from the data and checks the layers: WaveNet models 1-D sequences
/// of μ-law codes (`spoken-digits`, identity preprocessing).
pub fn prepare(cfg: &mut WaveNetConfig, data: &crate::models::DataInfo) -> Result<()> {
    if data.tokenizer.is_some() || data.example_shape.len() != 1 || data.example_shape[0] < 2 {
        return Err(Error::invalid(
            "model",
            format!(
                "wavenet models clips of μ-law codes [length], not data of shape {:?}",
                data.example_shape
            ),
        ));
    }
    if data.preprocessing != Preprocessing::Identity {
        return Err(Error::invalid(
            "data.preprocessing",
            "wavenet reads the μ-law codes as they are: set identity preprocessing",
        ));
    }
    if cfg.channels == 0 || cfg.skip_channels == 0 {
        return Err(Error::invalid(
            "model.channels",
            "channels and skip_channels must be ≥ 1",
        ));
    }
    if cfg.dilations.is_empty() || cfg.dilations.contains(&0) {
        return Err(Error::invalid(
            "model.dilations",
            format!("{:?}: give at least one dilation, each ≥ 1", cfg.dilations),
        ));
    }
    cfg.length = data.example_shape[0];
    cfg.num_classes = super::classes_for(cfg.class_conditional, data.num_classes, "wavenet")?;
    Ok(())
}

/// `(b, T, C)` delayed by `d` steps along T, zeros in front: row t holds row t − d of `x`.
fn delay(x: &Tensor, d: usize) -> Result<Tensor> {
    let t = x.dim(1)?;
    if d >= t {
        return Ok(x.zeros_like()?);
    }
    Ok(x.narrow(1, 0, t - d)?.pad_with_zeros(1, d, 0)?)
}

/// The gated activation over the last dimension's halves: `(…, 2C)` → `(…, C)`.
fn gate(h: &Tensor) -> Result<Tensor> {
    let mut dims = h.dims().to_vec();
    let c2 = dims.pop().unwrap_or(0);
    let rows = dims.iter().product::<usize>();
    let z = gated_activation(&h.reshape((rows, c2, 1, 1))?)?;
    dims.push(c2 / 2);
    Ok(z.reshape(dims)?)
}

/// One residual layer: the dilated convolution of width 2 (as one matrix on the joined delayed and current
/// inputs) and the residual / skip outputs (one matrix, C + S columns).
struct Layer {
    dilation: usize,
    conv: Linear,
    out: Linear,
}

/// A WaveNet over μ-law codes (see the module docs).
pub struct WaveNet {
    cfg: WaveNetConfig,
    embed: Embedding,
    first: Linear,
    layers: Vec<Layer>,
    cond: Option<Embedding>,
    head: Linear,
    logits_out: Linear,
    device: Device,
}

/// Examples per chunk of the exact likelihood (a whole clip's activations per example).
const EVAL_CHUNK: usize = 2;

impl WaveNet {
    /// Builds the network of a prepared config.
    pub fn new(cfg: WaveNetConfig, vb: VarBuilder) -> Result<Self> {
        let (c, s) = (cfg.channels, cfg.skip_channels);
        let layers = cfg
            .dilations
            .iter()
            .enumerate()
            .map(|(l, &dilation)| {
                let vb = vb.pp(format!("layers.{l}"));
                Ok(Layer {
                    dilation,
                    conv: Linear::new(2 * c, 2 * c, vb.pp("conv"))?,
                    out: Linear::new(c, c + s, vb.pp("out"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let cond = match cfg.num_classes {
            0 => None,
            k => Some(Embedding::new(
                k,
                cfg.dilations.len() * 2 * c,
                vb.pp("cond"),
            )?),
        };
        Ok(Self {
            embed: Embedding::new(CODES, c, vb.pp("embed"))?,
            first: Linear::new(2 * c, c, vb.pp("first"))?,
            layers,
            cond,
            head: Linear::new(s, s, vb.pp("head"))?,
            logits_out: Linear::new(s, CODES, vb.pp("logits"))?,
            device: vb.device().clone(),
            cfg,
        })
    }

    /// The config.
    pub fn config(&self) -> &WaveNetConfig {
        &self.cfg
    }

    /// The per-layer conditioning biases of labels `y`: `(b, L·2C)`.
    fn condition(&self, y: Option<&Tensor>) -> Result<Option<Tensor>> {
        match (&self.cond, y) {
            (Some(e), Some(y)) => Ok(Some(e.forward(y)?)),
            (Some(_), None) => Err(Error::invalid(
                "wavenet",
                "the model is class-conditional: give the labels",
            )),
            (None, _) => Ok(None),
        }
    }

    /// The logits of p(x_t | u_≤t, y) for inputs `u: (b, T)` u32 (u_t = x_{t−1}): `(b, T, 256)`.
    pub fn logits(&self, u: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        let (b, t) = u.dims2()?;
        let e = self
            .embed
            .forward(&u.flatten_all()?)?
            .reshape((b, t, self.cfg.channels))?;
        self.logits_from_embedding(&e, y)
    }

    /// [`WaveNet::logits`] from the embedded inputs `e: (b, T, C)`.
    fn logits_from_embedding(&self, e: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        let c = self.cfg.channels;
        let cond = self.condition(y)?;
        let mut r = self.first.forward(&Tensor::cat(&[&delay(e, 1)?, e], 2)?)?; // (b, T, C)
        let mut skip: Option<Tensor> = None;
        for (l, layer) in self.layers.iter().enumerate() {
            let mut h = layer
                .conv
                .forward(&Tensor::cat(&[&delay(&r, layer.dilation)?, &r], 2)?)?; // (b, T, 2C)
            if let Some(v) = &cond {
                h = h.broadcast_add(&v.narrow(1, l * 2 * c, 2 * c)?.unsqueeze(1)?)?;
            }
            let rs = layer.out.forward(&gate(&h)?)?; // (b, T, C + S)
            let s = rs.narrow(2, c, self.cfg.skip_channels)?;
            skip = Some(match skip {
                Some(acc) => (acc + s)?,
                None => s,
            });
            if l + 1 < self.layers.len() {
                r = (r + rs.narrow(2, 0, c)?)?;
            }
        }
        let s = skip.ok_or_else(|| Error::invalid("wavenet", "no layers"))?;
        self.head_logits(&s)
    }

    /// The output head on the skip sum: `(…, S)` → `(…, 256)`.
    fn head_logits(&self, skip: &Tensor) -> Result<Tensor> {
        let h = self.head.forward_act(&skip.relu()?, Activation::Relu)?;
        self.logits_out.forward(&h)
    }

    /// The codes of a batch `(b, T)` f32 values 0 … 255 as u32, refusing anything else.
    fn codes(&self, x: &Tensor) -> Result<Vec<u32>> {
        let (_, t) = x.dims2()?;
        if t != self.cfg.length {
            return Err(Error::invalid(
                "wavenet",
                format!("clips of {t} samples; this model takes {}", self.cfg.length),
            ));
        }
        x.to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| {
                if (0.0..=255.0).contains(&v) && v.fract() == 0.0 {
                    Ok(v as u32)
                } else {
                    Err(Error::invalid(
                        "wavenet",
                        format!("{v} is not a μ-law code (0 … 255)"),
                    ))
                }
            })
            .collect()
    }

    /// log p(x_t | x_<t, y) of every code of the clips `codes` (`b` rows of `len`): `(b, len)` nats.
    fn code_log_probs(&self, codes: &[u32], b: usize, y: Option<&Tensor>) -> Result<Tensor> {
        let len = codes.len() / b.max(1);
        let u = shifted(codes, len);
        let u = Tensor::from_vec(u, (b, len), &self.device)?;
        let targets = Tensor::from_vec(codes.to_vec(), b * len, &self.device)?;
        let logits = self.logits(&u, y)?.reshape((b * len, CODES))?;
        Ok(token_nll(&logits, &targets)?.neg()?.reshape((b, len))?)
    }

    /// Per example the log-probabilities of its codes, `(b, length)` nats: what the exact likelihood sums.
    /// Use it to score part of a clip (e.g. the word without the silence after it).
    pub fn log_probs_per_sample(&self, batch: &Batch) -> Result<Tensor> {
        let codes = self.codes(&batch.x)?;
        let y = self.labels(batch)?;
        self.code_log_probs(&codes, batch.len(), y.as_ref())
    }

    /// The batch's labels when the model is class-conditional (refusing a batch without them).
    fn labels(&self, batch: &Batch) -> Result<Option<Tensor>> {
        match (self.cfg.num_classes, &batch.labels) {
            (0, _) => Ok(None),
            (_, Some(y)) => Ok(Some(y.clone())),
            (_, None) => Err(Error::invalid(
                "wavenet",
                "the model is class-conditional and the batch has no labels",
            )),
        }
    }

    /// Draws `n` clips one code at a time with the per-layer queues: `(n, length)` codes as f32.
    pub fn generate(&self, n: usize, opts: &SampleOptions) -> Result<Tensor> {
        self.check_draw(n, opts)?;
        let (c, s) = (self.cfg.channels, self.cfg.skip_channels);
        let y = class_labels(
            &opts.condition,
            self.cfg.num_classes,
            n,
            "wavenet",
            &self.device,
        )?;
        let cond = self.condition(y.as_ref())?;
        let zeros = Tensor::zeros((n, c), DType::F32, &self.device)?;
        // queue l holds the last d_l inputs of layer l; slot t mod d_l is r_l[t − d_l] until replaced
        let mut queues: Vec<Vec<Tensor>> = self
            .layers
            .iter()
            .map(|l| vec![zeros.clone(); l.dilation])
            .collect();
        let mut prev = zeros.clone(); // the embedding of u_{t−1}
        let mut rng = Rng::new(opts.seed);
        let len = self.cfg.length;
        let mut codes = vec![0u32; n * len];
        let mut u = vec![MU_LAW_SILENCE as u32; n];
        for t in 0..len {
            // (detached: the queues must not keep every earlier step's graph alive)
            let e = self
                .embed
                .forward(&Tensor::from_vec(u.clone(), n, &self.device)?)?
                .detach();
            let mut r = self.first.forward(&Tensor::cat(&[&prev, &e], 1)?)?.detach(); // (n, C)
            prev = e;
            let mut skip = Tensor::zeros((n, s), DType::F32, &self.device)?;
            for (l, layer) in self.layers.iter().enumerate() {
                let slot = t % layer.dilation;
                let mut h = layer
                    .conv
                    .forward(&Tensor::cat(&[&queues[l][slot], &r], 1)?)?;
                if let Some(v) = &cond {
                    h = (h + v.narrow(1, l * 2 * c, 2 * c)?)?;
                }
                let rs = layer.out.forward(&gate(&h)?)?; // (n, C + S)
                skip = (skip + rs.narrow(1, c, s)?)?.detach();
                let next = (&r + rs.narrow(1, 0, c)?)?.detach();
                queues[l][slot] = r;
                r = next;
            }
            let logits = self.head_logits(&skip)?.to_vec2::<f32>()?;
            for (i, row) in logits.iter().enumerate() {
                let q = draw(row, opts.temperature, rng.uniform_f64());
                codes[i * len + t] = q;
                u[i] = q;
            }
            opts.progress.report(t + 1, len);
        }
        let values = codes.into_iter().map(|q| q as f32).collect();
        Ok(Tensor::from_vec(values, (n, len), &self.device)?)
    }

    /// [`WaveNet::generate`] the slow way, the reference for its queues: each code from a forward pass over
    /// the last R inputs (the receptive field; all of them while fewer), for `steps` codes (at most the clip
    /// length). The same seed gives the same codes as the fast path.
    pub fn generate_slow(&self, n: usize, steps: usize, opts: &SampleOptions) -> Result<Tensor> {
        self.check_draw(n, opts)?;
        let steps = steps.min(self.cfg.length);
        let y = class_labels(
            &opts.condition,
            self.cfg.num_classes,
            n,
            "wavenet",
            &self.device,
        )?;
        let mut rng = Rng::new(opts.seed);
        let mut codes = vec![vec![0u32; 0]; n];
        for t in 0..steps {
            // the inputs u_{t−R+1} … u_t (u_0 = silence): exact for the last output, see the module docs
            let span = (t + 1).min(self.cfg.receptive_field());
            let mut u = Vec::with_capacity(n * span);
            for row in codes.iter() {
                if span == t + 1 {
                    u.push(MU_LAW_SILENCE as u32);
                    u.extend_from_slice(row);
                } else {
                    u.extend_from_slice(&row[t - span..t]);
                }
            }
            let u = Tensor::from_vec(u, (n, span), &self.device)?;
            let last = self
                .logits(&u, y.as_ref())?
                .narrow(1, span - 1, 1)?
                .squeeze(1)?;
            for (i, row) in last.to_vec2::<f32>()?.iter().enumerate() {
                codes[i].push(draw(row, opts.temperature, rng.uniform_f64()));
            }
        }
        let values: Vec<f32> = codes.into_iter().flatten().map(|q| q as f32).collect();
        Ok(Tensor::from_vec(values, (n, steps), &self.device)?)
    }

    fn check_draw(&self, n: usize, opts: &SampleOptions) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid("n", "the number of samples must be ≥ 1"));
        }
        let tau = opts.temperature;
        if !(tau > 0.0 && tau.is_finite()) {
            return Err(Error::invalid(
                "temperature",
                format!("{tau} must be a positive number"),
            ));
        }
        Ok(())
    }
}

/// The inputs u of clips of `len` codes: each row shifted right by one, silence in front.
fn shifted(codes: &[u32], len: usize) -> Vec<u32> {
    let mut u = Vec::with_capacity(codes.len());
    for row in codes.chunks(len) {
        u.push(MU_LAW_SILENCE as u32);
        u.extend_from_slice(&row[..len - 1]);
    }
    u
}

/// The code drawn from softmax(logits / τ) by inverting its cumulative distribution at `u` ∈ [0, 1).
fn draw(logits: &[f32], tau: f64, u: f64) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let w: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / tau).exp())
        .collect();
    let target = u * w.iter().sum::<f64>();
    let mut acc = 0.0;
    for (q, p) in w.iter().enumerate() {
        acc += p;
        if target < acc {
            return q as u32;
        }
    }
    (logits.len() - 1) as u32
}

impl Model for WaveNet {
    fn name(&self) -> &str {
        "wavenet"
    }

    /// The NLL of W = `train_window` codes per clip at a random start, with R − 1 codes of context before
    /// them (see the module docs), in nats per code.
    fn loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        let codes = self.codes(&batch.x)?;
        let b = batch.len();
        let len = self.cfg.length;
        let y = self.labels(batch)?;
        let ctx = self.cfg.receptive_field() - 1;
        let w = self.cfg.train_window;
        let nll = if w == 0 || ctx + w >= len {
            self.code_log_probs(&codes, b, y.as_ref())?
                .neg()?
                .mean_all()?
        } else {
            // per clip a window [a, a + ctx + w) of inputs; scored: [s − a, s − a + w)
            let span = ctx + w;
            let (mut inputs, mut targets, mut mask) = (
                Vec::with_capacity(b * span),
                Vec::with_capacity(b * span),
                vec![0f32; b * span],
            );
            let full = shifted(&codes, len);
            for i in 0..b {
                let row = &codes[i * len..(i + 1) * len];
                // the word and up to R samples of the silence after it
                let end = row
                    .iter()
                    .rposition(|&q| q != MU_LAW_SILENCE as u32)
                    .map_or(0, |p| p + 1);
                let end = (end + ctx + 1).clamp(w, len);
                let s = rng.below(end - w + 1);
                let a = s.saturating_sub(ctx);
                inputs.extend_from_slice(&full[i * len + a..i * len + a + span]);
                targets.extend_from_slice(&row[a..a + span]);
                mask[i * span + s - a..i * span + s - a + w].fill(1.0);
            }
            let u = Tensor::from_vec(inputs, (b, span), &self.device)?;
            let t = Tensor::from_vec(targets, b * span, &self.device)?;
            let m = Tensor::from_vec(mask, b * span, &self.device)?;
            let logits = self.logits(&u, y.as_ref())?.reshape((b * span, CODES))?;
            ((token_nll(&logits, &t)? * m)?.sum_all()? / (b * w) as f64)?
        };
        let v = nll.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok(LossOutput {
            loss: nll,
            parts: vec![
                ("nll_per_sample".into(), v),
                ("bits_per_sample".into(), v / std::f64::consts::LN_2),
            ],
        })
    }

    /// Draws `n` clips with the queues ([`WaveNet::generate`]): μ-law codes as f32 values, `(n, length)`.
    fn sample(&self, n: usize, opts: &SampleOptions) -> Result<Tensor> {
        self.generate(n, opts)
    }

    fn num_classes(&self) -> Option<usize> {
        (self.cfg.num_classes > 0).then_some(self.cfg.num_classes)
    }

    fn as_density(&self) -> Option<&dyn Density> {
        Some(self)
    }
}

impl Density for WaveNet {
    fn estimators(&self) -> Vec<String> {
        ESTIMATORS.iter().map(|s| s.to_string()).collect()
    }

    /// The exact log p(x | y) of each whole clip (the word and the silence after it), a probability of its
    /// 256-level codes: bits per sample = −log p / (length · ln 2).
    fn log_likelihood(&self, batch: &Batch, opts: &LikelihoodOptions) -> Result<LogLikelihood> {
        let prepare = || Ok((batch, batch.len()));
        exact_log_likelihood(opts, Some(EVAL_CHUNK), prepare, |batch, s, len| {
            let lp = self
                .log_probs_per_sample(&batch.narrow(s, len)?)?
                .detach()
                .to_dtype(DType::F64)?
                .sum(1)?;
            Ok(lp.to_vec1::<f64>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Condition, LikelihoodKind};
    use crate::models::DataInfo;
    use crate::nn::Params;
    use candle_core::Var;

    fn build(cfg: WaveNetConfig, classes: Option<usize>, seed: u64) -> Result<(WaveNet, Params)> {
        let mut cfg = cfg;
        let info = DataInfo::of(&[cfg.length], classes, Preprocessing::Identity);
        prepare(&mut cfg, &info)?;
        let p = Params::new(seed, &Device::Cpu);
        let m = WaveNet::new(cfg, p.var_builder())?;
        Ok((m, p))
    }

    /// The receptive field by gradients: output t depends on input u_j exactly for t − R < j ≤ t (never a
    /// later input, and every input of the field), for the tiny config (R = 9) and a two-layer one.
    #[test]
    fn outputs_see_exactly_their_receptive_field() -> Result<()> {
        for dilations in [vec![1, 2, 4], vec![3, 1]] {
            let cfg = WaveNetConfig {
                dilations,
                ..WaveNetConfig::tiny(24)
            };
            let r = cfg.receptive_field();
            let (m, _p) = build(cfg, None, 3)?;
            let t_len = 24;
            let u: Vec<u32> = (0..t_len as u32).map(|i| (i * 37 + 11) % 256).collect();
            let u = Tensor::from_vec(u, (1, t_len), &Device::Cpu)?;
            // gradients with respect to the embedded inputs: run the network from the embedding on
            let e = m
                .embed
                .forward(&u.flatten_all()?)?
                .reshape((1, t_len, m.cfg.channels))?;
            let ev = Var::from_tensor(&e)?;
            for t in [0, 5, 13, 23] {
                let out = m.logits_from_embedding(ev.as_tensor(), None)?;
                let g = out.narrow(1, t, 1)?.sum_all()?.backward()?;
                let ge = g
                    .get(ev.as_tensor())
                    .ok_or(Error::invalid("test", "no gradient"))?
                    .abs()?
                    .sum(2)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                for (j, v) in ge.iter().enumerate() {
                    let inside = j <= t && j + r > t;
                    assert_eq!(*v > 0.0, inside, "t {t}, input {j}, R {r}: gradient {v}");
                }
            }
        }
        Ok(())
    }

    /// The probabilities of all 256² clips of two codes sum to 1, for a class-conditional model per class.
    #[test]
    fn probabilities_sum_to_one_by_enumeration() -> Result<()> {
        let cfg = WaveNetConfig {
            class_conditional: true,
            ..WaveNetConfig::tiny(2)
        };
        let (m, _p) = build(cfg, Some(3), 7)?;
        let all: Vec<f32> = (0..CODES * CODES)
            .flat_map(|i| [(i / CODES) as f32, (i % CODES) as f32])
            .collect();
        let x = Tensor::from_vec(all, (CODES * CODES, 2), &Device::Cpu)?;
        for class in 0..3u32 {
            let mut batch = Batch::new(x.clone());
            batch.labels = Some(Tensor::from_vec(
                vec![class; CODES * CODES],
                CODES * CODES,
                &Device::Cpu,
            )?);
            let lp = m.log_probs_per_sample(&batch)?.sum(1)?.to_vec1::<f32>()?;
            let total: f64 = lp.iter().map(|&v| (v as f64).exp()).sum();
            assert!((total - 1.0).abs() < 1e-4, "class {class}: Σ p = {total}");
        }
        let ll = m.log_likelihood(
            &Batch {
                x: x.narrow(0, 0, 3)?,
                labels: Some(Tensor::new(&[0u32, 1, 2], &Device::Cpu)?),
                captions: None,
            },
            &LikelihoodOptions::default(),
        )?;
        assert_eq!(ll.kind, LikelihoodKind::Exact);
        assert_eq!(ll.nats.len(), 3);
        Ok(())
    }

    /// The queues give the same codes as a pass over the receptive field per code (the tiny config's R = 9 is
    /// passed after 9 codes), and the same clips for the same seed; another seed gives others.
    #[test]
    fn fast_generation_equals_the_slow_path() -> Result<()> {
        let cfg = WaveNetConfig {
            class_conditional: true,
            ..WaveNetConfig::tiny(40)
        };
        let (m, _p) = build(cfg, Some(4), 11)?;
        let mut opts = SampleOptions::seeded(5);
        opts.condition = Condition::Class(vec![0, 1, 2, 3]);
        opts.temperature = 1.5;
        let fast = m.generate(4, &opts)?.to_vec2::<f32>()?;
        let slow = m.generate_slow(4, 40, &opts)?.to_vec2::<f32>()?;
        assert_eq!(fast, slow);
        assert_eq!(m.sample(4, &opts)?.to_vec2::<f32>()?, fast);
        let distinct: std::collections::BTreeSet<u32> =
            fast.iter().flatten().map(|&v| v as u32).collect();
        assert!(distinct.len() > 10, "{distinct:?}");
        opts.seed = 6;
        assert_ne!(m.generate(4, &opts)?.to_vec2::<f32>()?, fast);
        Ok(())
    }

    /// A training window with its context scores exactly what the whole clip's forward pass scores there.
    #[test]
    fn window_loss_equals_the_whole_clip_loss_where_it_scores() -> Result<()> {
        let len = 64;
        let cfg = WaveNetConfig {
            train_window: 8,
            ..WaveNetConfig::tiny(len)
        };
        let (m, _p) = build(cfg, None, 2)?;
        // one clip, loud everywhere (every start is possible)
        let codes: Vec<f32> = (0..len).map(|i| ((i * 53 + 7) % 250) as f32).collect();
        let batch = Batch::new(Tensor::from_vec(codes, (1, len), &Device::Cpu)?);
        let per = m
            .log_probs_per_sample(&batch)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let windows: Vec<f64> = (0..=len - 8)
            .map(|s| -per[s..s + 8].iter().map(|&v| v as f64).sum::<f64>() / 8.0)
            .collect();
        for seed in 0..20 {
            let got = m.loss(&batch, &mut Rng::new(seed))?.parts[0].1;
            assert!(
                windows.iter().any(|w| (w - got).abs() < 1e-5),
                "seed {seed}: {got} is no window's NLL"
            );
        }
        Ok(())
    }

    /// Refusals: data that are not clips of codes, values that are not codes, a missing label.
    #[test]
    fn bad_input_is_refused() -> Result<()> {
        let mut cfg = WaveNetConfig::default();
        let img = DataInfo::of(&[1, 28, 28], None, Preprocessing::Identity);
        assert!(prepare(&mut cfg, &img).is_err());
        let scaled = DataInfo::of(
            &[100],
            None,
            Preprocessing::Scale {
                range: crate::data::Range::ZeroOne,
                dequantize: false,
            },
        );
        assert!(prepare(&mut cfg, &scaled).is_err());
        let (m, _p) = build(
            WaveNetConfig {
                class_conditional: true,
                ..WaveNetConfig::tiny(4)
            },
            Some(2),
            1,
        )?;
        let x = Tensor::new(&[[1f32, 2.5, 3.0, 4.0]], &Device::Cpu)?;
        let e = m
            .loss(&Batch::new(x), &mut Rng::new(0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("2.5") || e.contains("labels"), "{e}");
        let x = Tensor::new(&[[1f32, 2.0, 3.0, 4.0]], &Device::Cpu)?;
        let e = m
            .loss(&Batch::new(x), &mut Rng::new(0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels"), "{e}");
        Ok(())
    }
}
