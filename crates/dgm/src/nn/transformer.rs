//! Building blocks of decoder-only transformers (Vaswani et al. 2017, arXiv:1706.03762; GPT-2: Radford et al.
//! 2019), laid out as in Karpathy's nanoGPT `model.py`: pre-LayerNorm blocks
//!
//! ```text
//! x ← x + Dropout(W_o · CausalAttention(W_qkv · LN₁(x)))       attention sub-block
//! x ← x + Dropout(W₂ · GELU(W₁ · LN₂(x)))                       MLP sub-block, C → 4C → C
//! ```
//!
//! with multi-head causal self-attention o_i = Σ_{j ≤ i} softmax_j(q_i·k_j / √d) v_j per head (Vaswani et al.
//! eq. 1, masked so that position i sees only positions j ≤ i), the exact GELU(x) = x·Φ(x) (Hendrycks & Gimpel
//! 2016) and LayerNorm (Ba et al. 2016, ε = 1e-5). Rows are positions: the blocks take `(b·T, C)` activations,
//! so every projection is one matrix product ([`Linear::nanogpt`]).
//!
//! On the CPU in f32 the pieces run as dgm kernels with their own backward ([`super::kernels`]): LayerNorm,
//! [`gelu_linear`] (the MLP's second projection with the GELU folded in, so the activation is never a node of
//! the graph) and [`causal_attention`] (reading straight from the packed `[q | k | v]` projection).
//! Generation reuses the keys and values of earlier positions through a [`KvCache`].
//!
//! Initialisation follows nanoGPT: N(0, 0.02) for projection weights, N(0, 0.02/√(2·n_layer)) for the two
//! projections that write into the residual stream, zero biases, LayerNorm weight 1 and bias 0.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::kernels::attention::{cached_attention, causal_attention, causal_attention_stock};
use super::kernels::gelu::gelu_linear;
use super::layers::{dropout, LayerNorm, Linear};
use crate::rng::Rng;
use crate::{Error, Result};

/// Sizes and options shared by the blocks of one transformer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockConfig {
    /// Width C of the residual stream.
    pub n_embd: usize,
    /// Number of attention heads (divides `n_embd`).
    pub n_head: usize,
    /// Number of blocks (sets the init scale of the residual projections).
    pub n_layer: usize,
    /// Biases in the projections and LayerNorms.
    pub bias: bool,
    /// Dropout probability on attention weights and residual branches while training.
    pub dropout: f64,
}

impl BlockConfig {
    /// The init std of the projections into the residual stream: 0.02/√(2·n_layer) (GPT-2, nanoGPT).
    fn residual_std(&self) -> f64 {
        0.02 / ((2 * self.n_layer.max(1)) as f64).sqrt()
    }
}

/// Keys and values of the positions seen so far, per block (for generation). Inference only: everything in
/// it is detached.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `n_layer` blocks.
    pub fn new(n_layer: usize) -> Self {
        Self {
            layers: vec![None; n_layer],
            len: 0,
        }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
    }
}

/// Multi-head causal self-attention with its input and output projections (`c_attn`: C → 3C, `c_proj`:
/// C → C, nanoGPT's names).
#[derive(Clone, Debug)]
pub struct CausalSelfAttention {
    c_attn: Linear,
    c_proj: Linear,
    cfg: BlockConfig,
}

impl CausalSelfAttention {
    /// Variables `c_attn.{weight,bias}`, `c_proj.{weight,bias}` under `vb`.
    pub fn new(cfg: BlockConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.n_embd;
        if cfg.n_head == 0 || !c.is_multiple_of(cfg.n_head) {
            return Err(Error::invalid(
                "n_head",
                format!(
                    "{} heads cannot split width {c}; use a divisor of {c}",
                    cfg.n_head
                ),
            ));
        }
        Ok(Self {
            c_attn: Linear::nanogpt(c, 3 * c, cfg.bias, 0.02, vb.pp("c_attn"))?,
            c_proj: Linear::nanogpt(c, c, cfg.bias, cfg.residual_std(), vb.pp("c_proj"))?,
            cfg,
        })
    }

    /// `(b·t, C)` → `(b·t, C)` over sequences of `t` positions; dropout (weights and output) when `train`
    /// carries an RNG and the config's dropout is positive.
    pub fn forward(&self, x: &Tensor, t: usize, train: Option<&mut Rng>) -> Result<Tensor> {
        let p = self.cfg.dropout;
        let qkv = self.c_attn.forward(x)?; // (b·t, 3C)
        match train {
            Some(rng) if p > 0.0 => {
                let y = causal_attention_stock(&qkv, t, self.cfg.n_head, Some((p, &mut *rng)))?;
                dropout(&self.c_proj.forward(&y)?, p, rng)
            }
            _ => self
                .c_proj
                .forward(&causal_attention(&qkv, t, self.cfg.n_head)?),
        }
    }

    /// New positions `x: (b·tn, C)` of `b` sequences attending to themselves and to the keys and values in
    /// `kv` (which are extended by the new ones); → `(b·tn, C)`. Inference only.
    fn forward_cached(
        &self,
        x: &Tensor,
        b: usize,
        kv: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let (m, c) = x.dims2()?;
        let tn = m / b.max(1);
        let qkv = self.c_attn.forward(x)?.detach().reshape((b, tn, 3 * c))?; // (b, tn, 3C)
        let q = qkv.narrow(2, 0, c)?.contiguous()?; // (b, tn, C)
        let k_new = qkv.narrow(2, c, c)?.contiguous()?;
        let v_new = qkv.narrow(2, 2 * c, c)?.contiguous()?;
        let (k, v) = match kv.take() {
            Some((k0, v0)) => (
                Tensor::cat(&[&k0, &k_new], 1)?,
                Tensor::cat(&[&v0, &v_new], 1)?,
            ),
            None => (k_new, v_new),
        }; // (b, tk, C)
        let y = cached_attention(&q, &k, &v, self.cfg.n_head)?.reshape((m, c))?; // (b·tn, C)
        *kv = Some((k, v));
        Ok(self.c_proj.forward(&y)?.detach())
    }
}

/// The MLP C → 4C → C with the exact GELU (`c_fc`, `c_proj`, nanoGPT's names).
#[derive(Clone, Debug)]
pub struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
    dropout: f64,
}

impl Mlp {
    /// Variables `c_fc.{weight,bias}` (4C, C), `c_proj.{weight,bias}` (C, 4C) under `vb`.
    pub fn new(cfg: BlockConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.n_embd;
        Ok(Self {
            c_fc: Linear::nanogpt(c, 4 * c, cfg.bias, 0.02, vb.pp("c_fc"))?,
            c_proj: Linear::nanogpt(4 * c, c, cfg.bias, cfg.residual_std(), vb.pp("c_proj"))?,
            dropout: cfg.dropout,
        })
    }

    /// `(m, C)` → `(m, C)`: W₂·GELU(W₁x + b₁) + b₂, dropout on the output while training.
    pub fn forward(&self, x: &Tensor, train: Option<&mut Rng>) -> Result<Tensor> {
        let z = self.c_fc.forward(x)?; // (m, 4C), pre-activation
        let y = gelu_linear(&z, self.c_proj.weight(), self.c_proj.bias())?; // (m, C)
        match train {
            Some(rng) if self.dropout > 0.0 => dropout(&y, self.dropout, rng),
            _ => Ok(y),
        }
    }
}

/// One pre-LayerNorm transformer block (`ln_1`, `attn`, `ln_2`, `mlp`, nanoGPT's names).
#[derive(Clone, Debug)]
pub struct Block {
    ln_1: LayerNorm,
    attn: CausalSelfAttention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    /// The block's variables under `vb`.
    pub fn new(cfg: BlockConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            ln_1: LayerNorm::new(cfg.n_embd, cfg.bias, vb.pp("ln_1"))?,
            attn: CausalSelfAttention::new(cfg, vb.pp("attn"))?,
            ln_2: LayerNorm::new(cfg.n_embd, cfg.bias, vb.pp("ln_2"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    /// `(b·t, C)` → `(b·t, C)`: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
    pub fn forward(&self, x: &Tensor, t: usize, mut train: Option<&mut Rng>) -> Result<Tensor> {
        let x = (x + self
            .attn
            .forward(&self.ln_1.forward(x)?, t, train.as_deref_mut())?)?;
        Ok((&x + self.mlp.forward(&self.ln_2.forward(&x)?, train)?)?)
    }
}

/// Runs new positions `x: (b·tn, C)` of `b` sequences through `blocks`, attending to the positions in `cache`
/// too, and adds them to the cache; → `(b·tn, C)`, detached. The caller supplies the new positions' position
/// embeddings (they start at `cache.len()`).
pub fn forward_cached(
    blocks: &[Block],
    x: &Tensor,
    b: usize,
    cache: &mut KvCache,
) -> Result<Tensor> {
    if cache.layers.len() != blocks.len() {
        return Err(Error::invalid(
            "kv cache",
            format!(
                "made for {} blocks, used with {}",
                cache.layers.len(),
                blocks.len()
            ),
        ));
    }
    let tn = x.dim(0)? / b.max(1);
    let mut x = x.detach();
    for (block, kv) in blocks.iter().zip(cache.layers.iter_mut()) {
        let a = block
            .attn
            .forward_cached(&block.ln_1.forward(&x)?.detach(), b, kv)?;
        x = (&x + a)?;
        let m = block.mlp.forward(&block.ln_2.forward(&x)?, None)?.detach();
        x = (&x + m)?;
    }
    cache.len += tn;
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Params;
    use candle_core::Device;

    #[test]
    fn block_variables_and_init_follow_nanogpt() -> Result<()> {
        let p = Params::new(0, &Device::Cpu);
        let cfg = BlockConfig {
            n_embd: 64,
            n_head: 4,
            n_layer: 8,
            bias: true,
            dropout: 0.0,
        };
        let _ = Block::new(cfg, p.var_builder())?;
        let snap = p.snapshot()?;
        let names: Vec<&str> = snap.keys().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "attn.c_attn.bias",
                "attn.c_attn.weight",
                "attn.c_proj.bias",
                "attn.c_proj.weight",
                "ln_1.bias",
                "ln_1.weight",
                "ln_2.bias",
                "ln_2.weight",
                "mlp.c_fc.bias",
                "mlp.c_fc.weight",
                "mlp.c_proj.bias",
                "mlp.c_proj.weight"
            ]
        );
        let std = |k: &str| -> Result<f64> {
            let v = snap[k].flatten_all()?.to_vec1::<f32>()?;
            Ok((v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
        };
        // 12 288 and 16 384 draws: the sample std is within 3 % of the target
        assert!((std("attn.c_attn.weight")? / 0.02 - 1.0).abs() < 0.03);
        assert!((std("mlp.c_proj.weight")? / (0.02 / 4.0) - 1.0).abs() < 0.03);
        assert_eq!(std("mlp.c_fc.bias")?, 0.0);
        let no_bias = Params::new(0, &Device::Cpu);
        let _ = Block::new(BlockConfig { bias: false, ..cfg }, no_bias.var_builder())?;
        assert!(no_bias.snapshot()?.keys().all(|k| k.ends_with("weight")));
        Ok(())
    }
}
