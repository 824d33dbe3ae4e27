//! The categorical distribution over a value's levels, parameterised by logits: a softmax over the levels
//! (PixelCNN's `softmax` output: 256 levels for 8-bit data, 2 for binarized data).

use candle_core::Tensor;

use crate::Result;

/// log softmax over `dim`, with the max detached (a constant shift: no gradient needed through it).
pub fn log_softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    let max = x.max_keepdim(dim)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(dim)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// log P(level k) under a softmax over the logits' dimension `dim` (one logit per level), gathered at the
/// u32 levels `k` (the logits' shape with size 1 at `dim`); the result keeps `dim` at size 1.
pub fn softmax_levels_log_prob(logits: &Tensor, k: &Tensor, dim: usize) -> Result<Tensor> {
    Ok(log_softmax(logits, dim)?.gather(k, dim)?)
}
