//! A small text encoder for caption conditioning, trained from scratch with the model it conditions.
//!
//! CLIP's text tower in miniature (Radford et al. 2021, section 2.4): token and learned position embeddings,
//! a stack of pre-LayerNorm causal transformer blocks ([`super::transformer::Block`], nanoGPT's), a final
//! LayerNorm, and the activation at the end-of-text token as the caption's summary, projected to the width
//! of the conditioned network's embedding:
//!
//! ```text
//! h₀ = E_tok[w] + E_pos[0..L]                      (b·L, W)
//! h  = Blocks(h₀)  (causal: position i reads 0..=i) (b·L, W)
//! e  = Linear(W → out)(LN(h[EOT]))                  (b, out)
//! ```
//!
//! Causal attention makes padding after the EOT invisible to it, so captions of any length share a batch.
//! The caption-conditioned UNet adds `e` to its time embedding, exactly where a class embedding goes
//! (Nichol et al. 2022's GLIDE adds its pooled text embedding the same way, next to cross-attention).

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{Embedding, LayerNorm, Linear};
use super::transformer::{Block, BlockConfig};
use crate::data::captions::eot_positions;
use crate::{Error, Result};

/// The text encoder's sizes (`[model.net.text]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextEncoderConfig {
    /// Width W of the token embeddings and the residual stream.
    pub width: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads (divide `width`).
    pub heads: usize,
    /// The most tokens a caption may take, its end-of-text token included (the position table's size).
    pub max_tokens: usize,
}

impl Default for TextEncoderConfig {
    /// 64 wide, 2 blocks of 4 heads, captions of up to 24 tokens.
    fn default() -> Self {
        Self {
            width: 64,
            layers: 2,
            heads: 4,
            max_tokens: 24,
        }
    }
}

impl TextEncoderConfig {
    /// A small encoder for tests: 16 wide, one block of 2 heads.
    pub fn tiny() -> Self {
        Self {
            width: 16,
            layers: 1,
            heads: 2,
            max_tokens: 24,
        }
    }

    /// Checks the sizes; the error names the bad key.
    pub fn validate(&self) -> Result<()> {
        if self.width == 0 || self.layers == 0 || self.heads == 0 {
            return Err(Error::invalid(
                "model.net.text",
                format!(
                    "width {}, layers {}, heads {}: each must be ≥ 1",
                    self.width, self.layers, self.heads
                ),
            ));
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(Error::invalid(
                "model.net.text.heads",
                format!("{} heads cannot split width {}", self.heads, self.width),
            ));
        }
        if self.max_tokens < 2 {
            return Err(Error::invalid(
                "model.net.text.max_tokens",
                format!(
                    "{}: must be ≥ 2 (a word and the end of text)",
                    self.max_tokens
                ),
            ));
        }
        Ok(())
    }
}

/// The text encoder (see the module docs).
#[derive(Clone, Debug)]
pub struct TextEncoder {
    tok: Embedding,
    pos: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    proj: Linear,
    cfg: TextEncoderConfig,
}

impl TextEncoder {
    /// An encoder of `vocab_size` token ids with output width `out`; variables `tok`, `pos`, `blocks.{i}`,
    /// `ln_f`, `proj` under `vb`.
    pub fn new(
        cfg: &TextEncoderConfig,
        vocab_size: usize,
        out: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        cfg.validate()?;
        let block = BlockConfig {
            n_embd: cfg.width,
            n_head: cfg.heads,
            n_layer: cfg.layers,
            bias: true,
            dropout: 0.0,
        };
        let blocks = (0..cfg.layers)
            .map(|i| Block::new(block, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            tok: Embedding::new(vocab_size, cfg.width, vb.pp("tok"))?,
            pos: Embedding::new(cfg.max_tokens, cfg.width, vb.pp("pos"))?,
            blocks,
            ln_f: LayerNorm::new(cfg.width, true, vb.pp("ln_f"))?,
            proj: Linear::new(cfg.width, out, vb.pp("proj"))?,
            cfg: cfg.clone(),
        })
    }

    /// `(b, L)` u32 tokens, each row ending in an end-of-text token then padding → `(b, out)`.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, len) = tokens.dims2()?;
        if len == 0 || len > self.cfg.max_tokens {
            return Err(Error::invalid(
                "caption tokens",
                format!(
                    "{len} tokens per caption; this encoder reads 1 to {}",
                    self.cfg.max_tokens
                ),
            ));
        }
        let eot = eot_positions(tokens)?;
        let dev = tokens.device();
        let positions = Tensor::arange(0u32, len as u32, dev)?.repeat(b)?; // (b·L,)
        let mut h = (self.tok.forward(&tokens.flatten_all()?)? + self.pos.forward(&positions)?)?; // (b·L, W)
        for block in &self.blocks {
            h = block.forward(&h, len, None)?; // (b·L, W)
        }
        let rows: Vec<u32> = eot
            .iter()
            .enumerate()
            .map(|(i, &p)| (i * len + p) as u32)
            .collect();
        let h = h.index_select(&Tensor::from_vec(rows, b, dev)?, 0)?; // (b, W)
        self.proj.forward(&self.ln_f.forward(&h)?) // (b, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::captions::{CaptionVocab, PAD};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn padding_after_the_end_changes_nothing_and_words_do() -> Result<()> {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let enc = TextEncoder::new(&TextEncoderConfig::tiny(), 12, 8, vb)?;
        let vocab = CaptionVocab::from_captions(["a red circle", "a blue square at the top"], 8);
        let short = vocab.encode_batch(&["a red circle"], &dev)?;
        let both = vocab.encode_batch(&["a red circle", "a blue square at the top"], &dev)?;
        assert!(both.dim(1)? > short.dim(1)?);
        let alone = enc.forward(&short)?.to_vec2::<f32>()?;
        let padded = enc.forward(&both)?.to_vec2::<f32>()?;
        assert_eq!(padded.len(), 2);
        for (a, p) in alone[0].iter().zip(&padded[0]) {
            assert!((a - p).abs() < 1e-5, "{a} vs {p}");
        }
        let diff: f32 = padded[0]
            .iter()
            .zip(&padded[1])
            .map(|(a, b)| (a - b).abs())
            .sum();
        assert!(diff > 1e-3, "{diff}");
        let no_eot = Tensor::from_vec(vec![2u32, PAD], (1, 2), &dev)?;
        assert!(enc.forward(&no_eot).is_err());
        let long = Tensor::zeros((1, 25), DType::U32, &dev)?;
        assert!(enc
            .forward(&long)
            .unwrap_err()
            .to_string()
            .contains("1 to 24"));
        Ok(())
    }
}
