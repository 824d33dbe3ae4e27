//! The energy network of [`super::ebm`]: a small convolutional net with SiLU activations on images (smooth, so
//! Langevin dynamics sees a smooth gradient field, as in Du & Mordatch 2019 and Nijkamp et al. 2019), an MLP on
//! vectors. Its `out` outputs are one energy (`ebm`) or a classifier's logits (`jem`).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::nn::{Conv2d, Linear};
use crate::{Error, Result};

/// Images: conv 3×3 (C) → conv 4×4 stride 2 (2C) → conv 4×4 stride 2 (4C) → linear; vectors: two hidden layers
/// of C units → linear. SiLU between the layers.
pub(super) struct EnergyNet {
    convs: Vec<Conv2d>,
    hidden: Vec<Linear>,
    out: Linear,
}

impl EnergyNet {
    /// Variables under `vb`: `c1.*`, `c2.*`, `c3.*` (images) or `l1.*`, `l2.*` (vectors), then `out.*`.
    pub(super) fn new(
        shape: &[usize],
        channels: usize,
        out: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let c = channels;
        match shape {
            [ch, h, w] => Ok(Self {
                convs: vec![
                    Conv2d::new(*ch, c, 3, 1, 1, vb.pp("c1"))?,
                    Conv2d::new(c, 2 * c, 4, 2, 1, vb.pp("c2"))?,
                    Conv2d::new(2 * c, 4 * c, 4, 2, 1, vb.pp("c3"))?,
                ],
                hidden: Vec::new(),
                out: Linear::new(4 * c * (h / 4) * (w / 4), out, vb.pp("out"))?,
            }),
            [d] => Ok(Self {
                convs: Vec::new(),
                hidden: vec![
                    Linear::new(*d, c, vb.pp("l1"))?,
                    Linear::new(c, c, vb.pp("l2"))?,
                ],
                out: Linear::new(c, out, vb.pp("out"))?,
            }),
            other => Err(Error::invalid(
                "model.example_shape",
                format!("{other:?} is not prepared"),
            )),
        }
    }

    /// `x: (b, c, h, w)` or `(b, d)` → `(b, out)`.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let mut h = x.clone();
        for conv in &self.convs {
            h = conv.forward(&h)?.silu()?; // (b, C, h, w) → (b, 2C, h/2, w/2) → (b, 4C, h/4, w/4)
        }
        let mut h = h.reshape((b, ()))?;
        for l in &self.hidden {
            h = l.forward(&h)?.silu()?; // (b, C)
        }
        self.out.forward(&h) // (b, out)
    }

    /// The device of the weights.
    pub(super) fn device(&self) -> candle_core::Device {
        self.out.weight().device().clone()
    }
}
