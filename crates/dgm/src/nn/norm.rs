//! Group normalisation, optionally fused with SiLU. On the CPU in f32 it runs as one dgm kernel (forward
//! and backward); elsewhere it is composed from candle's stock ops.

use candle_core::Tensor;

use crate::Result;

/// `y = γ ⊙ (x − μ_g) / √(σ²_g + ε) + β` over groups of channels of `x: (b, c, …)`, then `silu(y)` when
/// `silu` is set. `gamma`, `beta`: `(c,)`.
pub fn group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    group_norm_stock(x, gamma, beta, groups, eps, silu)
}

/// The reference: candle's stock ops.
pub fn group_norm_stock(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (b, c) = (dims[0], dims[1]);
    let xg = x.reshape((b, groups, ()))?; // (b, g, c/g · spatial)
    let mean = xg.mean_keepdim(2)?;
    let xc = xg.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(2)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?.reshape(dims.as_slice())?;
    let mut shape = vec![1, c];
    shape.resize(dims.len(), 1);
    let y = xn
        .broadcast_mul(&gamma.reshape(shape.as_slice())?)?
        .broadcast_add(&beta.reshape(shape.as_slice())?)?;
    Ok(if silu { y.silu()? } else { y })
}
