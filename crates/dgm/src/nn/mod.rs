//! Shared building blocks: the parameter store ([`params`]), dgm's layer types (see [`layers`] for why every
//! model goes through them), the CPU kernels behind them ([`kernels`]), and the blocks built from them
//! (the UNet, the transformer blocks, masked layers for autoregressive models, spectrally normalised layers
//! for GAN critics, the MMD two-sample statistic as a loss).

pub mod attention;
pub mod kernels;
pub mod layers;
pub mod masked;
pub mod masked_conv;
pub mod mmd;
pub mod params;
pub mod spectral;
pub mod text;
pub mod transformer;
pub mod unet;

use std::sync::atomic::{AtomicBool, Ordering};

pub use attention::SelfAttention2d;
pub(crate) use kernels::gemm;
pub use kernels::linear::Activation;
pub use layers::{
    dropout, upsample2x, Conv2d, ConvTranspose2d, Embedding, GroupNorm, LayerNorm, Linear, LN_EPS,
};
pub use params::Params;
pub use spectral::{SnConv2d, SnLinear, SpectralNorm};
pub use unet::{UNet, UNetConfig};

static STOCK_OPS: AtomicBool = AtomicBool::new(false);

/// Routes dgm's layer types through candle's stock ops (`true`) instead of dgm's own CPU kernels (`false`,
/// the default). Process-wide; meant for benchmarks and for checking a kernel against the reference. Both
/// paths compute the same function, so a model trained with one runs with the other.
pub fn set_stock_ops(stock: bool) {
    STOCK_OPS.store(stock, Ordering::Relaxed);
}

/// Whether [`set_stock_ops`] selected candle's stock ops.
pub fn stock_ops() -> bool {
    STOCK_OPS.load(Ordering::Relaxed)
}

/// Whether dgm's own CPU kernel should run for `t`: on the CPU, f32, and not switched off.
pub(crate) fn use_cpu_kernel(t: &candle_core::Tensor) -> bool {
    !stock_ops()
        && matches!(t.device(), candle_core::Device::Cpu)
        && t.dtype() == candle_core::DType::F32
}

/// max |a − b| / max |b| over all elements (compared flat): the relative error the kernel tests bound.
#[cfg(test)]
pub(crate) fn rel_err(a: &candle_core::Tensor, b: &candle_core::Tensor) -> crate::Result<f32> {
    let (a, b) = (a.flatten_all()?, b.flatten_all()?);
    let diff = (a - &b)?.abs()?.max(0)?.to_scalar::<f32>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f32>()?.max(1e-6);
    Ok(diff / scale)
}

#[cfg(test)]
mod tests {
    use crate::rng::Rng;
    use crate::Result;
    use candle_core::{Device, Var};

    /// candle's backward with dgm's patched gradient store (vendor/README.md: the first gradient reaching a
    /// tensor is stored instead of added to zeros): fan-in through one tensor used twice (`x·x`), sums and
    /// differences, a broadcast gradient (from `sum_all`) reaching a matrix product, all against the
    /// gradient worked out by hand: `L = Σ(x⊙x + x − 2x) + Σ_i (Σ_j x_ij)² + Σ xᵀx` gives
    /// `∂L/∂x_ij = 2x_ij − 1 + 4·Σ_l x_il`.
    #[test]
    fn backward_accumulates_every_path_into_the_hand_gradient() -> Result<()> {
        let (n, m) = (3, 4);
        let mut rng = Rng::new(7);
        let x = Var::from_tensor(&rng.randn((n, m), &Device::Cpu)?)?;
        let c = ((x.mul(&x)? + x.as_tensor())? - (x.as_tensor() * 2.0)?)?;
        let s = x.sum_keepdim(1)?;
        let loss = ((c.sum_all()? + s.sqr()?.sum_all()?)? + x.t()?.matmul(&x)?.sum_all()?)?;
        let grads = loss.backward()?;
        let got = grads.get(&x).map(|g| g.to_vec2::<f32>());
        let xs = x.to_vec2::<f32>()?;
        let Some(got) = got.transpose()? else {
            panic!("no gradient for x");
        };
        for (gi, xi) in got.iter().zip(&xs) {
            let row: f32 = xi.iter().sum();
            for (&g, &v) in gi.iter().zip(xi) {
                let want = 2.0 * v - 1.0 + 4.0 * row;
                assert!(
                    (g - want).abs() < 1e-5 * want.abs().max(1.0),
                    "{g} vs {want}"
                );
            }
        }
        Ok(())
    }

    /// Vendored candle-core computes no gradient for a constant operand of a product or quotient (one that
    /// tracks no gradient), and the variables' gradients are the hand ones: L = Σ(v⊙c) + Σ(v/c) + Σ(c/w)
    /// + Σ(v⊙w) gives ∂L/∂v = c + 1/c + w and ∂L/∂w = −c/w² + v, and c gets no gradient at all.
    #[test]
    fn constant_operands_get_no_gradient_and_variables_the_hand_one() -> Result<()> {
        let mut rng = Rng::new(3);
        let dev = Device::Cpu;
        let v = Var::from_tensor(&rng.randn((5, 7), &dev)?)?;
        let w = Var::from_tensor(&(rng.randn((5, 7), &dev)?.abs()? + 0.5)?)?;
        let c = (rng.randn((5, 7), &dev)?.abs()? + 0.5)?;
        let (vt, wt) = (v.as_tensor(), w.as_tensor());
        let loss = (((vt * &c)?.sum_all()? + (vt / &c)?.sum_all()?)?
            + ((&c / wt)?.sum_all()? + (vt * wt)?.sum_all()?)?)?;
        let grads = loss.backward()?;
        assert!(grads.get(&c).is_none(), "the constant got a gradient");
        let flat = |t: &candle_core::Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (vs, ws, cs) = (flat(vt)?, flat(wt)?, flat(&c)?);
        let (Some(gv), Some(gw)) = (grads.get(vt), grads.get(wt)) else {
            panic!("a variable got no gradient");
        };
        for (i, (gv, gw)) in flat(gv)?.iter().zip(flat(gw)?).enumerate() {
            let want_v = cs[i] + 1.0 / cs[i] + ws[i];
            let want_w = -cs[i] / (ws[i] * ws[i]) + vs[i];
            assert!(
                (gv - want_v).abs() < 1e-5 * want_v.abs().max(1.0),
                "{gv} vs {want_v}"
            );
            assert!(
                (gw - want_w).abs() < 1e-5 * want_w.abs().max(1.0),
                "{gw} vs {want_w}"
            );
        }
        Ok(())
    }

    /// A constant subtrahend (a loss's target) gets no gradient either — candle filled zeros and subtracted
    /// for it — and the variable's is the hand one: L = Σ(v − c)² gives ∂L/∂v = 2(v − c).
    #[test]
    fn a_constant_subtrahend_gets_no_gradient() -> Result<()> {
        let mut rng = Rng::new(4);
        let v = Var::from_tensor(&rng.randn((6, 5), &Device::Cpu)?)?;
        let c = rng.randn((6, 5), &Device::Cpu)?;
        let grads = (v.as_tensor() - &c)?.sqr()?.sum_all()?.backward()?;
        assert!(grads.get(&c).is_none(), "the constant got a gradient");
        let Some(g) = grads.get(v.as_tensor()) else {
            panic!("no gradient for v");
        };
        let want = ((v.as_tensor() - &c)? * 2.0)?;
        let err = (g - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-6, "max error {err}");
        Ok(())
    }

    /// The gradient store's in-place sums (vendored candle-core: a stored gradient no other tensor holds gets
    /// the next one added in place; this graph takes that path twice per order, seen by hand with a print)
    /// give the hand gradient. The graph also hands one gradient tensor to two entries (`a = p + q` gives
    /// the same one to p and q), which the in-place path must never change; with p = 2x, q = 3x, a = 5x and
    /// L = Σa² + Σp (both orders of the sum), dL/dx = 2(2a + 1) + 3·2a = 50x + 2 (50x + 5 had q's been
    /// changed). Candle's order here happens not to bring the shared one to the in-place path (the test also
    /// passed with the `Tensor_` count guard removed), so that guard rests on its `Arc` counts.
    #[test]
    fn in_place_accumulation_never_changes_a_shared_gradient() -> Result<()> {
        let x = Var::from_tensor(&Rng::new(5).randn((64, 300), &Device::Cpu)?)?;
        for p_first in [false, true] {
            let p = (x.as_tensor() * 2.0)?;
            let q = (x.as_tensor() * 3.0)?;
            let a = (&p + &q)?;
            let (sq, sp) = (a.sqr()?.sum_all()?, p.sum_all()?);
            let loss = if p_first { (sp + sq)? } else { (sq + sp)? };
            let grads = loss.backward()?;
            let Some(g) = grads.get(&x) else {
                panic!("no gradient for x");
            };
            for (g, x) in g
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .zip(x.flatten_all()?.to_vec1::<f32>()?)
            {
                let want = 50.0 * x + 2.0;
                assert!(
                    (g - want).abs() < 1e-4 * want.abs().max(1.0),
                    "{g} vs {want}"
                );
            }
        }
        Ok(())
    }
}
