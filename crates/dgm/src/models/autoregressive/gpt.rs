//! GPT: a decoder-only transformer language model over characters or bytes (Radford et al. 2019, "Language
//! Models are Unsupervised Multitask Learners"; the transformer of Vaswani et al. 2017, arXiv:1706.03762),
//! laid out as Karpathy's nanoGPT `model.py`.
//!
//! Objective: the exact autoregressive likelihood of a window of T tokens,
//!
//! ```text
//! log p(x_0 … x_{T−1}) = Σ_t log p(x_t | BOS, x_<t),   p(· | …) = softmax(W_teᵀ h_t)
//! ```
//!
//! where BOS is an extra vocabulary id ("start of text", the last one) that is only ever an input: the model
//! reads [BOS, x_0 … x_{T−2}] and predicts x_0 … x_{T−1}, so no token of the window goes unscored. The hidden
//! state h_t = LN_f(Block_L(… Block_1(W_te[in_t] + W_pe[t]))) comes from pre-LayerNorm blocks of causal
//! multi-head self-attention and a GELU MLP ([`crate::nn::transformer`]); the output head is tied to the token
//! embedding (its first V rows, so BOS is never predicted). `loss` is the mean cross-entropy per token (nats
//! per token, nanoGPT's number); [`Density::log_likelihood`] the per-window sum (nats).
//!
//! Generation ([`Sequence::generate`]) feeds [BOS] + the most recent tokens, at most `block_size` positions;
//! when a new token would overflow the window, only the last `block_size / 2` tokens are kept and (with the
//! KV cache) the cache is refilled from them. The same policy with and without the cache gives the same tokens.
//!
//! With `fim` > 0 the model is also trained to fill in the middle ([`super::fim`]): four sentinel ids follow
//! the tokenizer's, some training windows are rearranged to PRE prefix SUF suffix MID middle EOT, and
//! [`Sequence::fill_middle`] writes the text between a prefix and a suffix. Ordinary generation never draws
//! a sentinel.

use candle_core::{DType, Device, Tensor};
use candle_nn::init::Init;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::fim::{self, Sentinels};
use super::sampling::pick_token;
use crate::data::Batch;
use crate::data::Tokenizer;
use crate::model::{
    Condition, Density, GenerateOptions, LikelihoodKind, LikelihoodOptions, LikelihoodSpace,
    LogLikelihood, LossOutput, Model, SampleOptions, Sequence,
};
use crate::models::DataInfo;
use crate::nn::kernels::linear::dense;
use crate::nn::kernels::token_nll::token_nll;
use crate::nn::transformer::{forward_cached, Block, BlockConfig, KvCache};
use crate::nn::{dropout, LayerNorm};
use crate::rng::Rng;
use crate::{Error, Result};

/// Likelihood estimators of [`Gpt`].
pub const ESTIMATORS: &[&str] = &["exact"];

/// Windows scored per forward pass by [`Sequence::token_log_probs`].
const SCORE_CHUNK: usize = 32;

/// GPT hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GptConfig {
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block (divides `n_embd`).
    pub n_head: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Context length T in tokens; 0 = the data's window length (filled by `prepare`).
    pub block_size: usize,
    /// Dropout on embeddings, attention weights and residual branches while training.
    pub dropout: f64,
    /// Biases in the projections and LayerNorms.
    pub bias: bool,
    /// The tokenizer of the training text (filled by `prepare` from the data).
    pub tokenizer: Tokenizer,
    /// Fill-in-the-middle: the share of training windows rearranged to prefix–suffix–middle order (0 = off;
    /// 0.5 as in Bavarian et al. 2022). A model trained with it has 4 sentinel tokens after the tokenizer's.
    pub fim: f64,
}

impl Default for GptConfig {
    /// nanoGPT's small CPU configuration (4 layers, 4 heads, width 128, no dropout).
    fn default() -> Self {
        Self {
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            block_size: 0,
            dropout: 0.0,
            bias: true,
            tokenizer: Tokenizer::Bytes,
            fim: 0.0,
        }
    }
}

impl GptConfig {
    /// A small config for tests (2 layers, 2 heads, width 16; `block_size` left to `prepare`).
    pub fn tiny() -> Self {
        Self {
            n_layer: 2,
            n_head: 2,
            n_embd: 16,
            ..Self::default()
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        if self.n_layer == 0 {
            return Err(Error::invalid("model.n_layer", "0 must be at least 1"));
        }
        if self.n_head == 0 || self.n_embd == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::invalid(
                "model.n_head",
                format!(
                    "{} heads cannot split n_embd = {}; use a divisor of n_embd",
                    self.n_head, self.n_embd
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid(
                "model.dropout",
                format!("{} must be in [0, 1)", self.dropout),
            ));
        }
        fim::validate_rate(self.fim)?;
        self.tokenizer.validate()
    }

    /// The ids the model predicts: the tokenizer's, plus the FIM sentinels when `fim` > 0.
    pub fn n_vocab(&self) -> usize {
        self.tokenizer.vocab_size() + if self.fim > 0.0 { fim::SENTINELS } else { 0 }
    }

    fn block(&self) -> BlockConfig {
        BlockConfig {
            n_embd: self.n_embd,
            n_head: self.n_head,
            n_layer: self.n_layer,
            bias: self.bias,
            dropout: self.dropout,
        }
    }
}

/// The memory estimate of a prepared config (see [`crate::models::Footprint`]): per token, each block keeps
/// about 17·C values (two LayerNorms, q/k/v, the attention output and projection, the 4·C MLP before and after
/// GELU, the residual sums) and 2·n_head·T attention weights (scores and softmax, dropout aside); then the
/// embeddings and the final LayerNorm (3·C) and the logits with their softmax (2·V); × T tokens, × 2 for the
/// gradients.
pub fn footprint(cfg: &GptConfig) -> crate::models::Footprint {
    use crate::models::{sat_mul, sat_sum};
    let (c, t) = (cfg.n_embd as u64, cfg.block_size as u64);
    let block = sat_sum([sat_mul(17, c), sat_mul(2, sat_mul(cfg.n_head as u64, t))]);
    let per_token = sat_sum([
        sat_mul(cfg.n_layer as u64, block),
        sat_mul(3, c),
        sat_mul(2, cfg.n_vocab() as u64),
    ]);
    crate::models::Footprint {
        buffers: 0,
        activations_per_example: sat_mul(2, sat_mul(t, per_token)),
    }
}

/// Fills `block_size` and `tokenizer` from the data, and rejects data that are not token windows.
pub fn prepare(cfg: &mut GptConfig, data: &DataInfo) -> Result<()> {
    let Some(tok) = &data.tokenizer else {
        return Err(Error::invalid(
            "model",
            "gpt models token sequences; train it on text data, e.g. the data set text:tinyshakespeare",
        ));
    };
    let &[window] = data.example_shape.as_slice() else {
        return Err(Error::invalid(
            "model",
            format!(
                "gpt needs windows of tokens, shape [T]; the data have examples of shape {:?}",
                data.example_shape
            ),
        ));
    };
    if cfg.block_size == 0 {
        cfg.block_size = window;
    } else if cfg.block_size != window {
        return Err(Error::invalid(
            "model.block_size",
            format!(
                "{} differs from the data's window of {window} tokens; set it to {window} or to 0 (automatic)",
                cfg.block_size
            ),
        ));
    }
    cfg.tokenizer = tok.clone();
    cfg.validate()
}

/// A GPT language model (see the module docs).
pub struct Gpt {
    cfg: GptConfig,
    /// Token embedding (V + 1, C), the last row BOS; its first V rows are the output head (V counts the FIM
    /// sentinels of a model trained with them).
    wte: Tensor,
    /// Position embedding (T, C).
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// A zero bias (V,) for the head (the dense kernel takes one).
    head_bias: Tensor,
    vocab: usize,
    device: Device,
}

impl Gpt {
    /// Builds the model; variables (nanoGPT's names) come from `vb`: `transformer.wte.weight` (V+1, C),
    /// `transformer.wpe.weight` (T, C), `transformer.h.{i}.…`, `transformer.ln_f.{weight,bias}`.
    pub fn new(cfg: GptConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        if cfg.block_size == 0 {
            return Err(Error::invalid(
                "model.block_size",
                "0 (automatic) was not filled in; prepare the config with the data first or set it",
            ));
        }
        let vocab = cfg.n_vocab();
        let (c, t) = (cfg.n_embd, cfg.block_size);
        let vt = vb.pp("transformer");
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let wte = vt
            .pp("wte")
            .get_with_hints((vocab + 1, c), "weight", init)?;
        let wpe = vt.pp("wpe").get_with_hints((t, c), "weight", init)?;
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::new(cfg.block(), vt.pp("h").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = LayerNorm::new(c, cfg.bias, vt.pp("ln_f"))?;
        let device = vb.device().clone();
        let head_bias = Tensor::zeros(vocab, DType::F32, &device)?;
        Ok(Self {
            cfg,
            wte,
            wpe,
            blocks,
            ln_f,
            head_bias,
            vocab,
            device,
        })
    }

    /// The config.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// Number of predicted ids V (the logits' width: the tokenizer's ids and any FIM sentinels); the BOS id
    /// is V.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// The start-of-text id (V), an input only.
    pub fn bos(&self) -> u32 {
        self.vocab as u32
    }

    /// Logits `(b, t, V)` for input ids `(b, t)` u32 (BOS included where wanted), t ≤ block_size.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let h = self.hidden(&self.embed_tokens(ids)?, 0, None)?; // (b·t, C)
        Ok(self.head(&h)?.reshape((b, t, self.vocab))?)
    }

    /// Logits `(b, t, V)` from token embeddings `tok: (b, t, C)` (rows of `wte` or anything else: the
    /// position embeddings are added here). For gradient checks on the inputs.
    pub fn forward_embeddings(&self, tok: &Tensor) -> Result<Tensor> {
        let (b, t, _) = tok.dims3()?;
        let h = self.hidden(tok, 0, None)?;
        Ok(self.head(&h)?.reshape((b, t, self.vocab))?)
    }

    /// Checks ids against the vocabulary (BOS allowed only with `allow_bos`).
    fn check_ids(&self, ids: &[u32], allow_bos: bool) -> Result<()> {
        let limit = self.vocab + usize::from(allow_bos);
        match ids.iter().enumerate().find(|(_, &id)| id as usize >= limit) {
            None => Ok(()),
            Some((i, &id)) => Err(Error::invalid(
                "token id",
                format!(
                    "{id} at position {i} is out of range; the vocabulary has ids 0..{}",
                    self.vocab
                ),
            )),
        }
    }

    /// Token embeddings `(b, t, C)` of ids `(b, t)`.
    fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let flat = ids.to_dtype(DType::U32)?.flatten_all()?; // (b·t,)
        Ok(self
            .wte
            .index_select(&flat, 0)?
            .reshape((b, t, self.cfg.n_embd))?)
    }

    /// Position embeddings added to token embeddings `tok: (b, t, C)` at positions `start..start+t`,
    /// dropout while training → `(b·t, C)`.
    fn embed(&self, tok: &Tensor, start: usize, train: Option<&mut Rng>) -> Result<Tensor> {
        let (b, t, c) = tok.dims3()?;
        if start + t > self.cfg.block_size {
            return Err(Error::invalid(
                "sequence length",
                format!(
                    "positions {start}..{} exceed the context of {} tokens",
                    start + t,
                    self.cfg.block_size
                ),
            ));
        }
        let pos = self.wpe.narrow(0, start, t)?; // (t, C)
        let x = tok.broadcast_add(&pos)?.reshape((b * t, c))?; // (b·t, C)
        match train {
            Some(rng) if self.cfg.dropout > 0.0 => dropout(&x, self.cfg.dropout, rng),
            _ => Ok(x),
        }
    }

    /// The final hidden states `(b·t, C)` (after ln_f) of token embeddings `tok: (b, t, C)` from position 0.
    fn hidden(&self, tok: &Tensor, start: usize, mut train: Option<&mut Rng>) -> Result<Tensor> {
        let t = tok.dim(1)?;
        let mut x = self.embed(tok, start, train.as_deref_mut())?;
        for block in &self.blocks {
            x = block.forward(&x, t, train.as_deref_mut())?;
        }
        self.ln_f.forward(&x)
    }

    /// Logits `(m, V)` of hidden states `(m, C)`: the tied head W_te[..V] hᵀ.
    fn head(&self, h: &Tensor) -> Result<Tensor> {
        let w = self.wte.narrow(0, 0, self.vocab)?; // (V, C)
        dense(h, &w, &self.head_bias)
    }

    /// The model's input [BOS, x_0 … x_{T−2}] for a batch of windows `x: (b, T)` u32.
    fn shift_right(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t) = x.dims2()?;
        let bos = Tensor::full(self.bos(), (b, 1), &self.device)?;
        Ok(Tensor::cat(&[&bos, &x.narrow(1, 0, t - 1)?], 1)?) // (b, T)
    }

    /// The batch's windows as `(b, T)` u32 after checking shape and ids.
    fn windows(&self, batch: &Batch) -> Result<Tensor> {
        let x = batch.x.to_dtype(DType::U32)?;
        let (_, t) = x.dims2().map_err(|_| {
            Error::invalid(
                "batch",
                format!("gpt needs (b, T) token ids, got shape {:?}", batch.x.dims()),
            )
        })?;
        if t == 0 || t > self.cfg.block_size {
            return Err(Error::invalid(
                "batch",
                format!(
                    "windows of {t} tokens; this model takes 1..={} tokens",
                    self.cfg.block_size
                ),
            ));
        }
        self.check_ids(&x.flatten_all()?.to_vec1::<u32>()?, false)?;
        Ok(x)
    }

    /// Per-token negative log-likelihoods `(b·T,)` of windows `x: (b, T)`.
    fn token_nlls(&self, x: &Tensor, train: Option<&mut Rng>) -> Result<Tensor> {
        let input = self.shift_right(x)?;
        let h = self.hidden(&self.embed_tokens(&input)?, 0, train)?; // (b·T, C)
        token_nll(&self.head(&h)?, &x.flatten_all()?)
    }

    /// Logits `(b, V)` of the last position of `ids: (b, t)`, either through `cache` (which then holds the
    /// positions before `ids`; they are appended) or recomputing the whole input. Detached.
    fn last_logits(&self, ids: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let tok = self.embed_tokens(ids)?.detach();
        let h = match cache {
            Some(cache) => {
                let x = self.embed(&tok, cache.len(), None)?;
                self.ln_f
                    .forward(&forward_cached(&self.blocks, &x, b, cache)?)?
            }
            None => self.hidden(&tok, 0, None)?,
        }; // (b·t, C)
        let last = h
            .reshape((b, t, self.cfg.n_embd))?
            .narrow(1, t - 1, 1)?
            .squeeze(1)?; // (b, C)
        Ok(self.head(&last.contiguous()?)?.detach())
    }

    /// One row of logits as a vector.
    fn row(logits: &Tensor, i: usize) -> Result<Vec<f32>> {
        Ok(logits.get(i)?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }

    /// The FIM sentinels, when the model was trained with them.
    fn sentinels(&self) -> Option<Sentinels> {
        (self.cfg.fim > 0.0).then(|| Sentinels::after(self.cfg.tokenizer.vocab_size()))
    }

    /// Draws the next token from one row of logits among the tokenizer's ids and `end` (a FIM model's
    /// other sentinels are never drawn).
    fn pick(&self, mut row: Vec<f32>, opts: &GenerateOptions, u: f64, end: Option<u32>) -> u32 {
        let v = self.cfg.tokenizer.vocab_size();
        for (i, l) in row.iter_mut().enumerate().skip(v) {
            if end != Some(i as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
        pick_token(&row, opts, u)
    }

    /// Continues `ctx` (the tokens after BOS) by at most `opts.max_tokens` tokens, stopping early at `end`
    /// (not returned or passed on) or when `on_token` says so; see the module docs for the window policy.
    fn continue_tokens(
        &self,
        mut ctx: Vec<u32>,
        opts: &GenerateOptions,
        end: Option<u32>,
        on_token: &mut dyn FnMut(u32) -> Result<bool>,
    ) -> Result<Vec<u32>> {
        let t = self.cfg.block_size;
        let keep = t / 2;
        let mut rng = Rng::new(opts.seed);
        let mut cache = opts.kv_cache.then(|| KvCache::new(self.cfg.n_layer));
        let mut refill = true;
        let mut out = Vec::with_capacity(opts.max_tokens);
        for _ in 0..opts.max_tokens {
            let logits = match cache.as_mut() {
                Some(cache) if !refill => {
                    let last = ctx[ctx.len() - 1];
                    self.last_logits(&Tensor::full(last, (1, 1), &self.device)?, Some(cache))?
                }
                cache => {
                    let mut input = vec![self.bos()];
                    input.extend_from_slice(&ctx);
                    let input = Tensor::from_vec(input, (1, ctx.len() + 1), &self.device)?;
                    match cache {
                        Some(cache) => {
                            cache.clear();
                            self.last_logits(&input, Some(cache))?
                        }
                        None => self.last_logits(&input, None)?,
                    }
                }
            }; // (1, V)
            let tok = self.pick(Self::row(&logits, 0)?, opts, rng.uniform_f64(), end);
            if Some(tok) == end {
                break;
            }
            out.push(tok);
            if !on_token(tok)? {
                break;
            }
            ctx.push(tok);
            refill = ctx.len() > t - 1;
            if refill {
                ctx.drain(..ctx.len() - keep);
            }
        }
        Ok(out)
    }
}

impl Model for Gpt {
    fn name(&self) -> &str {
        "gpt"
    }

    /// Mean cross-entropy per token, −(1/(bT)) Σ log p(x_t | BOS, x_<t), with part `nll_per_token`; with
    /// `fim` > 0 a share of the windows is first rearranged for fill-in-the-middle ([`fim::augment`]).
    fn loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        let mut x = self.windows(batch)?;
        if let Some(s) = self.sentinels() {
            let (b, t) = x.dims2()?;
            let mut ids = x.flatten_all()?.to_vec1::<u32>()?;
            fim::augment(&mut ids, t, self.cfg.fim, s, rng);
            x = Tensor::from_vec(ids, (b, t), &self.device)?;
        }
        let loss = self.token_nlls(&x, Some(rng))?.mean_all()?;
        let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok(LossOutput {
            loss,
            parts: vec![("nll_per_token".into(), v)],
        })
    }

    /// `n` windows of `block_size` tokens drawn from BOS (with the KV cache) at `opts.temperature`;
    /// `(n, T)` u32.
    fn sample(&self, n: usize, opts: &SampleOptions) -> Result<Tensor> {
        if n == 0 {
            return Err(Error::invalid("n", "the number of samples must be ≥ 1"));
        }
        if opts.condition != Condition::None {
            return Err(Error::invalid(
                "condition",
                "gpt is unconditional; sample it without a class or caption",
            ));
        }
        let gopts = GenerateOptions {
            max_tokens: self.cfg.block_size,
            temperature: opts.temperature,
            seed: opts.seed,
            ..GenerateOptions::default()
        };
        gopts.validate()?;
        let mut rng = Rng::new(opts.seed);
        let t = self.cfg.block_size;
        let mut cache = KvCache::new(self.cfg.n_layer);
        let mut out: Vec<Vec<u32>> = vec![Vec::with_capacity(t); n];
        let mut ids = Tensor::full(self.bos(), (n, 1), &self.device)?; // (n, 1)
        for step in 0..t {
            let logits = self.last_logits(&ids, Some(&mut cache))?; // (n, V)
            let mut next = Vec::with_capacity(n);
            for (i, row) in out.iter_mut().enumerate() {
                let tok = self.pick(Self::row(&logits, i)?, &gopts, rng.uniform_f64(), None);
                row.push(tok);
                next.push(tok);
            }
            if step + 1 < t {
                ids = Tensor::from_vec(next, (n, 1), &self.device)?;
            }
        }
        let flat: Vec<u32> = out.into_iter().flatten().collect();
        Ok(Tensor::from_vec(flat, (n, t), &self.device)?)
    }

    fn as_density(&self) -> Option<&dyn Density> {
        Some(self)
    }

    fn as_sequence(&self) -> Option<&dyn Sequence> {
        Some(self)
    }
}

impl Density for Gpt {
    fn estimators(&self) -> Vec<String> {
        ESTIMATORS.iter().map(|s| s.to_string()).collect()
    }

    /// log p(window) = Σ_t log p(x_t | BOS, x_<t), exact, in nats per window.
    fn log_likelihood(&self, batch: &Batch, opts: &LikelihoodOptions) -> Result<LogLikelihood> {
        if let Some(e) = opts.estimator.as_deref() {
            if !ESTIMATORS.contains(&e) {
                return Err(Error::unknown("estimator", e, ESTIMATORS));
            }
        }
        let x = self.windows(batch)?;
        let (b, t) = x.dims2()?;
        let chunk = opts.chunk.max(1);
        let mut nats = Vec::with_capacity(b);
        let mut start = 0;
        while start < b {
            let len = chunk.min(b - start);
            let nll = self.token_nlls(&x.narrow(0, start, len)?, None)?.detach();
            let nll = nll.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            nats.extend(nll.chunks(t).map(|r| -r.iter().sum::<f64>()));
            start += len;
        }
        Ok(LogLikelihood {
            nats,
            kind: LikelihoodKind::Exact,
            space: LikelihoodSpace::Discrete,
        })
    }
}

impl Sequence for Gpt {
    fn tokenizer(&self) -> &Tokenizer {
        &self.cfg.tokenizer
    }

    fn context_len(&self) -> usize {
        self.cfg.block_size
    }

    /// The first `block_size` tokens in one pass over [BOS, ids…]; every later token i with its own window
    /// [BOS, ids[i − T + 1 .. i]], the windows stacked into batches of [`SCORE_CHUNK`].
    fn token_log_probs(&self, ids: &[u32]) -> Result<Vec<f64>> {
        self.check_ids(ids, false)?;
        let (n, t) = (ids.len(), self.cfg.block_size);
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return Ok(out);
        }
        let head = n.min(t);
        let x = Tensor::from_slice(&ids[..head], (1, head), &self.device)?;
        let nll = self.token_nlls(&x, None)?.detach().to_dtype(DType::F64)?;
        out.extend(nll.to_vec1::<f64>()?.into_iter().map(|v| -v));
        let mut i = t;
        while i < n {
            let rows = SCORE_CHUNK.min(n - i);
            let mut input = Vec::with_capacity(rows * t);
            for r in i..i + rows {
                input.push(self.bos());
                input.extend_from_slice(&ids[r + 1 - t..r]);
            }
            let input = Tensor::from_vec(input, (rows, t), &self.device)?; // (rows, T)
            let logits = self.last_logits(&input, None)?; // (rows, V)
            let targets = Tensor::from_slice(&ids[i..i + rows], rows, &self.device)?;
            let nll = token_nll(&logits, &targets)?.to_dtype(DType::F64)?;
            out.extend(nll.to_vec1::<f64>()?.into_iter().map(|v| -v));
            i += rows;
        }
        Ok(out)
    }

    /// Prefixes of one length in one pass: [BOS, the last T − 1 tokens] each. The rows hold the tokenizer's
    /// ids only (a FIM model's sentinels are left out).
    fn next_log_probs(&self, prefixes: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); prefixes.len()];
        let mut lengths: Vec<usize> = prefixes.iter().map(Vec::len).collect();
        lengths.sort_unstable();
        lengths.dedup();
        for len in lengths {
            let rows: Vec<usize> = (0..prefixes.len())
                .filter(|&i| prefixes[i].len() == len)
                .collect();
            let keep = len.min(self.cfg.block_size - 1);
            let mut input = Vec::with_capacity(rows.len() * (keep + 1));
            for &i in &rows {
                self.check_ids(&prefixes[i], false)?;
                input.push(self.bos());
                input.extend_from_slice(&prefixes[i][len - keep..]);
            }
            let input = Tensor::from_vec(input, (rows.len(), keep + 1), &self.device)?;
            let logits = self.last_logits(&input, None)?.to_dtype(DType::F64)?; // (rows, V)
            let lp = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?
                .narrow(1, 0, self.cfg.tokenizer.vocab_size())?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            for (&i, row) in rows.iter().zip(lp) {
                out[i] = row;
            }
        }
        Ok(out)
    }

    fn generate(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> Result<bool>,
    ) -> Result<Vec<u32>> {
        opts.validate()?;
        self.check_ids(prompt, false)?;
        // the tokens after BOS in the window: at most T − 1
        let t = self.cfg.block_size;
        let ctx = prompt[prompt.len().saturating_sub(t - 1)..].to_vec();
        self.continue_tokens(ctx, opts, None, on_token)
    }

    /// Continues [PRE prefix SUF suffix MID] until EOT: at most `opts.max_tokens` tokens and at most half the
    /// context (the prefix keeps its end and the suffix its start, [`fim::prompt`]).
    fn fill_middle(
        &self,
        prefix: &[u32],
        suffix: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> Result<bool>,
    ) -> Result<Vec<u32>> {
        let Some(s) = self.sentinels() else {
            return Err(fim::not_trained("gpt"));
        };
        opts.validate()?;
        let v = self.cfg.tokenizer.vocab_size();
        for (ids, what) in [(prefix, "prefix"), (suffix, "suffix")] {
            if let Some(&id) = ids.iter().find(|&&id| id as usize >= v) {
                return Err(Error::invalid(
                    what,
                    format!("token id {id} is not a text token (the tokenizer has ids 0..{v})"),
                ));
            }
        }
        let t = self.cfg.block_size;
        let middle = opts.max_tokens.min(t / 2);
        let ctx = fim::prompt(prefix, suffix, middle, t, s)?;
        let opts = GenerateOptions {
            max_tokens: middle,
            ..opts.clone()
        };
        self.continue_tokens(ctx, &opts, Some(s.eot), on_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Preprocessing;
    use crate::nn::Params;
    use crate::train::optim::{collect_grads, AdamW, AdamWParams};
    use candle_core::{Var, D};
    use std::collections::BTreeMap;
    use std::path::Path;

    fn chars(n: usize) -> Tokenizer {
        Tokenizer::Chars {
            symbols: (b'a'..b'a' + n as u8).collect(),
        }
    }

    fn config(vocab: usize, block_size: usize) -> GptConfig {
        GptConfig {
            block_size,
            tokenizer: chars(vocab),
            ..GptConfig::tiny()
        }
    }

    /// A model whose every parameter is redrawn N(0, 0.5²) (LayerNorm affines included), so that its
    /// predictions are far from uniform and every path through it matters.
    fn random_model(cfg: GptConfig, seed: u64) -> Result<(Gpt, Params)> {
        let p = Params::new(seed, &Device::Cpu);
        let m = Gpt::new(cfg, p.var_builder())?;
        let mut rng = Rng::new(seed + 1000);
        let vals: BTreeMap<String, Tensor> = p
            .snapshot()?
            .into_iter()
            .map(|(k, t)| Ok((k, (rng.randn(t.shape(), &Device::Cpu)? * 0.5)?)))
            .collect::<Result<_>>()?;
        p.assign(&vals, Path::new("test"))?;
        Ok((m, p))
    }

    fn batch(rows: &[Vec<u32>]) -> Result<Batch> {
        let (b, t) = (rows.len(), rows[0].len());
        let flat: Vec<u32> = rows.iter().flatten().copied().collect();
        Ok(Batch::new(Tensor::from_vec(flat, (b, t), &Device::Cpu)?))
    }

    /// log softmax of the logits of `input` (BOS included) at its last position, for token `target`.
    fn brute_log_prob(m: &Gpt, input: &[u32], target: u32) -> Result<f64> {
        let x = Tensor::from_slice(input, (1, input.len()), &Device::Cpu)?;
        let lp = candle_nn::ops::log_softmax(&m.forward(&x)?.squeeze(0)?, D::Minus1)?; // (t, V)
        Ok(lp
            .get(input.len() - 1)?
            .get(target as usize)?
            .to_scalar::<f32>()? as f64)
    }

    #[test]
    fn probabilities_of_all_sequences_sum_to_one() -> Result<()> {
        // V = 3, T = 3: all 27 windows
        let (m, _) = random_model(config(3, 3), 1)?;
        let rows: Vec<Vec<u32>> = (0..27u32)
            .map(|i| vec![i / 9, (i / 3) % 3, i % 3])
            .collect();
        let ll = m.log_likelihood(&batch(&rows)?, &LikelihoodOptions::default())?;
        assert_eq!(ll.kind, LikelihoodKind::Exact);
        assert_eq!(ll.space, LikelihoodSpace::Discrete);
        let total: f64 = ll.nats.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "Σ p = {total}");
        // not trivially uniform
        let spread = ll.nats.iter().cloned().fold(f64::MIN, f64::max)
            - ll.nats.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 0.5, "{spread}");
        // chunked evaluation gives the same numbers
        let small = LikelihoodOptions {
            chunk: 4,
            ..LikelihoodOptions::default()
        };
        let ll2 = m.log_likelihood(&batch(&rows)?, &small)?;
        for (a, b) in ll.nats.iter().zip(&ll2.nats) {
            assert!((a - b).abs() < 1e-5);
        }
        Ok(())
    }

    #[test]
    fn logits_depend_only_on_earlier_positions() -> Result<()> {
        let (m, _) = random_model(config(5, 6), 2)?;
        let (b, t, c) = (2, 6, m.cfg.n_embd);
        let emb = Var::from_tensor(&Rng::new(3).randn((b, t, c), &Device::Cpu)?)?;
        let logits = m.forward_embeddings(emb.as_tensor())?; // (b, t, V)
        let r = Rng::new(4).randn((b, 1, m.vocab_size()), &Device::Cpu)?;
        for pos in 0..t {
            let obj = logits.narrow(1, pos, 1)?.broadcast_mul(&r)?.sum_all()?;
            let g = obj.backward()?;
            let ge = g
                .get(emb.as_tensor())
                .ok_or_else(|| Error::invalid("test", "no grad"))?;
            // ‖∂ logits[pos] / ∂ emb[s]‖ per input position s
            let norms = ge.sqr()?.sum(2)?.sum(0)?.to_vec1::<f32>()?;
            for (s, &n) in norms.iter().enumerate() {
                if s > pos {
                    assert_eq!(n, 0.0, "logits at {pos} depend on position {s}");
                } else {
                    assert!(n > 1e-8, "logits at {pos} ignore position {s} ({n})");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn kv_cache_gives_the_same_logits_and_tokens() -> Result<()> {
        let t = 8;
        let (m, _) = random_model(config(6, t), 5)?;
        // cached step-by-step logits = the full forward's logits at each position
        let ids: Vec<u32> = vec![m.bos(), 3, 1, 4, 1, 5, 2, 0];
        let full = m
            .forward(&Tensor::from_slice(&ids, (1, t), &Device::Cpu)?)?
            .squeeze(0)?; // (t, V)
        let mut cache = KvCache::new(m.cfg.n_layer);
        let prefill = m.last_logits(
            &Tensor::from_slice(&ids[..3], (1, 3), &Device::Cpu)?,
            Some(&mut cache),
        )?;
        assert!(crate::nn::rel_err(&prefill.squeeze(0)?, &full.get(2)?)? < 1e-5);
        for (p, &id) in ids.iter().enumerate().skip(3) {
            let step = m.last_logits(&Tensor::full(id, (1, 1), &Device::Cpu)?, Some(&mut cache))?;
            let e = crate::nn::rel_err(&step.squeeze(0)?, &full.get(p)?)?;
            assert!(e < 1e-5, "position {p}: rel err {e}");
        }
        // generation: 30 tokens overflow the 8-token window several times (it keeps 4 and refills)
        for seed in [0, 1, 2] {
            for prompt in [vec![], vec![2u32], vec![1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]] {
                let run = |kv_cache: bool| -> Result<Vec<u32>> {
                    let opts = GenerateOptions {
                        max_tokens: 30,
                        seed,
                        kv_cache,
                        ..GenerateOptions::default()
                    };
                    let mut streamed = vec![];
                    let out = m.generate(&prompt, &opts, &mut |tok| {
                        streamed.push(tok);
                        Ok(true)
                    })?;
                    assert_eq!(out, streamed);
                    Ok(out)
                };
                let (a, b) = (run(true)?, run(false)?);
                assert_eq!(a.len(), 30);
                assert_eq!(a, b, "seed {seed} prompt {prompt:?}");
                assert!(a.iter().all(|&x| (x as usize) < m.vocab_size()));
            }
        }
        // stopping early through the callback
        let mut n = 0;
        let out = m.generate(&[], &GenerateOptions::default(), &mut |_| {
            n += 1;
            Ok(n < 3)
        })?;
        assert_eq!(out.len(), 3);
        Ok(())
    }

    #[test]
    fn generation_follows_the_window_policy() -> Result<()> {
        // the uncached path recomputes [BOS] + window each step; check the window sizes it would see by
        // comparing with a brute-force reimplementation of the policy on the same draws
        let t = 6;
        let (m, _) = random_model(config(4, t), 6)?;
        let opts = GenerateOptions {
            max_tokens: 20,
            seed: 9,
            kv_cache: false,
            ..GenerateOptions::default()
        };
        let prompt = vec![1u32, 2, 3, 0, 1, 2, 3, 0];
        let got = m.generate(&prompt, &opts, &mut |_| Ok(true))?;
        let mut rng = Rng::new(9);
        let mut ctx: Vec<u32> = prompt[prompt.len() - (t - 1)..].to_vec();
        for &tok in &got {
            let mut input = vec![m.bos()];
            input.extend_from_slice(&ctx);
            let x = Tensor::from_slice(&input, (1, input.len()), &Device::Cpu)?;
            let logits = m
                .forward(&x)?
                .get(0)?
                .get(input.len() - 1)?
                .to_vec1::<f32>()?;
            assert_eq!(pick_token(&logits, &opts, rng.uniform_f64()), tok);
            ctx.push(tok);
            if ctx.len() > t - 1 {
                ctx.drain(..ctx.len() - t / 2);
            }
        }
        Ok(())
    }

    #[test]
    fn token_log_probs_match_the_likelihood_and_brute_force_windows() -> Result<()> {
        let t = 5;
        let (m, _) = random_model(config(4, t), 7)?;
        // within one window: the per-token terms sum to the window's log-likelihood
        let ids = vec![3u32, 0, 2, 2, 1];
        let lp = m.token_log_probs(&ids)?;
        let ll = m.log_likelihood(
            &batch(std::slice::from_ref(&ids))?,
            &LikelihoodOptions::default(),
        )?;
        assert!((lp.iter().sum::<f64>() - ll.nats[0]).abs() < 1e-5);
        for (i, &v) in lp.iter().enumerate() {
            let mut input = vec![m.bos()];
            input.extend_from_slice(&ids[..i]);
            assert!((v - brute_log_prob(&m, &input, ids[i])?).abs() < 1e-5);
        }
        // a long text (more than one chunk of windows): every token scored with its own window
        let long: Vec<u32> = (0..(t + SCORE_CHUNK + 7) as u32)
            .map(|i| (i * 7 + i / 3) % 4)
            .collect();
        let lp = m.token_log_probs(&long)?;
        assert_eq!(lp.len(), long.len());
        for (i, &v) in lp.iter().enumerate() {
            let mut input = vec![m.bos()];
            input.extend_from_slice(&long[i.saturating_sub(t - 1)..i]);
            let want = brute_log_prob(&m, &input, long[i])?;
            assert!((v - want).abs() < 1e-4, "token {i}: {v} vs {want}");
        }
        assert!(m.token_log_probs(&[])?.is_empty());
        Ok(())
    }

    /// The window of `t` symbols of the text 0 1 … period−1 repeated, starting at offset `o`.
    fn cycle(period: usize, t: usize, o: usize) -> Vec<u32> {
        (0..t).map(|i| ((o + i) % period) as u32).collect()
    }

    /// A model of `cfg` (vocabulary `period`) trained with AdamW for `steps` steps of `rows` windows of
    /// [`cycle`] at random offsets, learning rate `lr(step)`; the draws come from `rng`.
    fn train_on_cycle(
        cfg: GptConfig,
        steps: usize,
        rows: usize,
        lr: impl Fn(usize) -> f64,
        rng: &mut Rng,
    ) -> Result<(Gpt, Params)> {
        let (period, t) = (cfg.tokenizer.vocab_size(), cfg.block_size);
        let p = Params::new(0, &Device::Cpu);
        let m = Gpt::new(cfg, p.var_builder())?;
        let vars = p.vars();
        let mut opt = AdamW::new(
            vars.clone(),
            AdamWParams {
                beta2: 0.99,
                ..Default::default()
            },
        )?;
        for step in 0..steps {
            let b: Vec<Vec<u32>> = (0..rows)
                .map(|_| cycle(period, t, rng.below(period)))
                .collect();
            let out = m.loss(&batch(&b)?, rng)?;
            let grads = collect_grads(&vars, &out.loss.backward()?);
            opt.step(&grads, lr(step), 1.0)?;
        }
        Ok((m, p))
    }

    #[test]
    fn learns_a_repeating_text_and_samples_it_back() -> Result<()> {
        // the text "abcde" repeated; windows start at every offset, so x_0 is uniform over 5 symbols and the
        // rest is determined: the best per-token loss is ln 5 / T
        let (period, t) = (5usize, 16usize);
        let cfg = GptConfig {
            n_embd: 32,
            ..config(period, t)
        };
        let mut rng = Rng::new(1);
        let (m, _p) = train_on_cycle(cfg, 300, 16, |_| 1e-2, &mut rng)?;
        let all: Vec<Vec<u32>> = (0..period).map(|o| cycle(period, t, o)).collect();
        let out = m.loss(&batch(&all)?, &mut rng)?;
        let best = (period as f64).ln() / t as f64;
        let per_token = out.parts[0].1;
        assert!(
            per_token >= best - 1e-4 && per_token < best + 0.01,
            "loss {per_token}, optimum {best}"
        );
        let s = m.sample(8, &SampleOptions::seeded(3))?;
        assert_eq!(s.dims(), &[8, t]);
        for row in s.to_vec2::<u32>()? {
            for w in row.windows(2) {
                assert_eq!(w[1] as usize, (w[0] as usize + 1) % period, "{row:?}");
            }
        }
        // and generation continues a prompt in the pattern past the window
        let opts = GenerateOptions {
            max_tokens: 40,
            seed: 4,
            ..GenerateOptions::default()
        };
        let got = m.generate(&[2, 3], &opts, &mut |_| Ok(true))?;
        let want: Vec<u32> = (0..40).map(|i| ((4 + i) % period) as u32).collect();
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn fim_generation_draws_no_sentinel_and_follows_the_logits() -> Result<()> {
        let (v, t) = (5usize, 24usize);
        let (m, _p) = random_model(
            GptConfig {
                fim: 0.5,
                ..config(v, t)
            },
            6,
        )?;
        assert_eq!((m.vocab_size(), m.bos()), (v + 4, (v + 4) as u32));
        let s = Sentinels::after(v);
        // plain generation at a high temperature never draws a sentinel
        let hot = GenerateOptions {
            max_tokens: 300,
            temperature: 3.0,
            seed: 1,
            ..GenerateOptions::default()
        };
        let got = m.generate(&[1, 2], &hot, &mut |_| Ok(true))?;
        assert_eq!(got.len(), 300);
        assert!(got.iter().all(|&x| (x as usize) < v), "{got:?}");
        // a middle holds text tokens only, the same with and without the KV cache
        let mut lengths = Vec::new();
        for seed in 0..20 {
            let opts = GenerateOptions {
                max_tokens: 8,
                temperature: 2.0,
                seed,
                ..GenerateOptions::default()
            };
            let a = m.fill_middle(&[0, 1, 2], &[3, 4], &opts, &mut |_| Ok(true))?;
            let no_cache = GenerateOptions {
                kv_cache: false,
                ..opts.clone()
            };
            let b = m.fill_middle(&[0, 1, 2], &[3, 4], &no_cache, &mut |_| Ok(true))?;
            assert_eq!(a, b);
            assert!(a.iter().all(|&x| (x as usize) < v) && a.len() <= 8, "{a:?}");
            lengths.push(a.len());
        }
        // EOT ends some middles early; others run to max_tokens
        assert!(lengths.iter().any(|&l| l < 8), "{lengths:?}");
        // greedy: the first token is the argmax of the prompt's last logits over the text ids and EOT
        let greedy = GenerateOptions {
            max_tokens: 1,
            top_k: Some(1),
            ..GenerateOptions::default()
        };
        let first = m.fill_middle(&[0, 1, 2], &[3, 4], &greedy, &mut |_| Ok(true))?;
        let input = [m.bos(), s.pre, 0, 1, 2, s.suf, 3, 4, s.mid];
        let x = Tensor::from_slice(&input, (1, input.len()), &Device::Cpu)?;
        let last = m
            .forward(&x)?
            .squeeze(0)?
            .get(input.len() - 1)?
            .to_vec1::<f32>()?;
        let allowed = (0..v as u32).chain([s.eot]);
        let best = allowed
            .max_by(|&a, &b| last[a as usize].total_cmp(&last[b as usize]))
            .unwrap();
        assert_eq!(first, if best == s.eot { vec![] } else { vec![best] });
        // a model trained without FIM refuses, as does a sentinel in the prefix
        let (plain, _q) = random_model(config(v, t), 6)?;
        let e = plain
            .fill_middle(&[0], &[1], &greedy, &mut |_| Ok(true))
            .unwrap_err();
        assert!(e.to_string().contains("model.fim"), "{e}");
        assert!(m
            .fill_middle(&[s.pre], &[1], &greedy, &mut |_| Ok(true))
            .is_err());
        Ok(())
    }

    #[test]
    fn learns_to_fill_the_middle_of_a_repeating_text() -> Result<()> {
        // the text 0 1 … 12 repeated; windows of 16 tokens (D = 12 < 13, so a gap's length is determined by
        // the symbols around it); half the windows rearranged
        let (period, t) = (13usize, 16usize);
        let cfg = GptConfig {
            n_embd: 48,
            fim: 0.5,
            ..config(period, t)
        };
        // (800 steps are not enough for the empty middle below; 2000 take about 10 s)
        let lr = |step| if step < 1500 { 1e-2 } else { 2e-3 };
        let (m, _p) = train_on_cycle(cfg, 2000, 32, lr, &mut Rng::new(1))?;
        let greedy = GenerateOptions {
            max_tokens: 12,
            top_k: Some(1),
            ..GenerateOptions::default()
        };
        let fill = |pre: &[u32], suf: &[u32]| m.fill_middle(pre, suf, &greedy, &mut |_| Ok(true));
        assert_eq!(fill(&[0, 1, 2], &[5, 6, 7])?, vec![3, 4]);
        assert_eq!(fill(&[10, 11], &[3, 4])?, vec![12, 0, 1, 2]);
        assert_eq!(fill(&[6], &[7, 8])?, Vec::<u32>::new());
        // with no prefix, any run of symbols that leads up to the suffix
        let m0 = fill(&[], &[4, 5])?;
        assert_eq!(m0.last(), Some(&3), "{m0:?}");
        assert!(m0
            .windows(2)
            .all(|w| w[1] as usize == (w[0] as usize + 1) % period));
        // and it still continues text left to right
        let got = m.generate(&[7, 8], &greedy, &mut |_| Ok(true))?;
        let want: Vec<u32> = (0..12).map(|i| ((9 + i) % period) as u32).collect();
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn dropout_is_random_in_training_and_off_for_evaluation() -> Result<()> {
        let cfg = GptConfig {
            dropout: 0.3,
            ..config(4, 6)
        };
        let (m, p) = random_model(cfg.clone(), 11)?;
        // the same weights without dropout
        let plain = Gpt::new(
            GptConfig {
                dropout: 0.0,
                ..cfg
            },
            p.var_builder(),
        )?;
        let b = batch(&[vec![0, 1, 2, 3, 0, 1], vec![3, 3, 2, 1, 0, 0]])?;
        let eval = m.log_likelihood(&b, &LikelihoodOptions::default())?.nats;
        assert_eq!(
            eval,
            plain
                .log_likelihood(&b, &LikelihoodOptions::default())?
                .nats
        );
        let l1 = m.loss(&b, &mut Rng::new(1))?;
        let l2 = m.loss(&b, &mut Rng::new(2))?;
        let l0 = plain.loss(&b, &mut Rng::new(1))?.parts[0].1;
        assert_ne!(l1.parts[0].1, l2.parts[0].1);
        assert_ne!(l1.parts[0].1, l0);
        // every variable gets a finite, non-zero gradient through the dropout path
        let g = l1.loss.backward()?;
        for (name, var) in p.vars() {
            let gv = g
                .get(var.as_tensor())
                .ok_or_else(|| Error::invalid("test", format!("no grad for {name}")))?;
            let n = gv.sqr()?.sum_all()?.to_scalar::<f32>()?;
            assert!(n.is_finite() && n > 0.0, "{name}: {n}");
        }
        Ok(())
    }

    #[test]
    fn prepare_fills_the_data_fields_and_rejects_bad_input() -> Result<()> {
        let text = DataInfo {
            example_shape: vec![64],
            num_classes: None,
            preprocessing: Preprocessing::Identity,
            tokenizer: Some(chars(65)),
            caption_words: None,
        };
        let mut cfg = GptConfig::default();
        prepare(&mut cfg, &text)?;
        assert_eq!((cfg.block_size, cfg.tokenizer.vocab_size()), (64, 65));
        // default table round-trips through TOML with every key present
        let table = crate::models::to_table(&GptConfig::default())?;
        for k in [
            "n_layer",
            "n_head",
            "n_embd",
            "block_size",
            "dropout",
            "bias",
            "tokenizer",
        ] {
            assert!(table.contains_key(k), "{k} missing from {table}");
        }
        let back: GptConfig = crate::models::from_table(&crate::models::to_table(&cfg)?)?;
        assert_eq!(back, cfg);
        // images: one-line message naming the remedy
        let images = DataInfo {
            example_shape: vec![1, 28, 28],
            tokenizer: None,
            caption_words: None,
            ..text.clone()
        };
        let e = prepare(&mut GptConfig::default(), &images)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("text:tinyshakespeare") && !e.contains("--") && !e.contains('\n'),
            "{e}"
        );
        let mut wrong = GptConfig {
            block_size: 32,
            ..GptConfig::default()
        };
        assert!(prepare(&mut wrong, &text)
            .unwrap_err()
            .to_string()
            .contains("32"));
        let mut heads = GptConfig {
            n_head: 3,
            ..GptConfig::default()
        };
        assert!(prepare(&mut heads, &text).is_err());
        assert!(Gpt::new(
            GptConfig::tiny(),
            Params::new(0, &Device::Cpu).var_builder()
        )
        .is_err());

        let (m, _) = random_model(config(4, 6), 8)?;
        let nop = &mut |_: u32| Ok(true);
        let e = m
            .generate(&[1, 4], &GenerateOptions::default(), nop)
            .unwrap_err()
            .to_string();
        assert!(e.contains("4 at position 1"), "{e}");
        for bad in [
            GenerateOptions {
                max_tokens: 0,
                ..Default::default()
            },
            GenerateOptions {
                temperature: 0.0,
                ..Default::default()
            },
            GenerateOptions {
                top_p: Some(2.0),
                ..Default::default()
            },
        ] {
            assert!(m.generate(&[1], &bad, nop).is_err(), "{bad:?}");
        }
        assert!(m.token_log_probs(&[0, 9]).is_err());
        assert!(m
            .log_likelihood(
                &batch(&[vec![0, 1, 2, 3, 0, 1, 2]])?,
                &LikelihoodOptions::default()
            )
            .is_err());
        assert!(m
            .log_likelihood(&batch(&[vec![0, 5]])?, &LikelihoodOptions::default())
            .is_err());
        let est = LikelihoodOptions {
            estimator: Some("elbo".into()),
            ..LikelihoodOptions::default()
        };
        assert!(m.log_likelihood(&batch(&[vec![0, 1]])?, &est).is_err());
        assert!(m.sample(0, &SampleOptions::default()).is_err());
        Ok(())
    }
}
