//! The two players' networks, shared by the GANs of [`super::dcgan`] and the MMD generator of
//! [`super::gmmn`]: DCGAN's generator (fully connected → two stride-2 transposed 4×4 convolutions, GroupNorm
//! and ReLU between, tanh out) and discriminator (two stride-2 4×4 convolutions with LeakyReLU(0.2) → a
//! linear logit, optionally spectrally normalised, optionally with a class projection); on vectors, MLPs.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::dcgan::GanConfig;
use crate::nn::{Conv2d, ConvTranspose2d, Embedding, GroupNorm, Linear, SnConv2d, SnLinear};
use crate::{Error, Result};

/// The number of GroupNorm groups for `ch` channels: the largest divisor of `ch` that is at most 8.
fn groups_for(ch: usize) -> usize {
    (1..=8.min(ch))
        .rev()
        .find(|g| ch.is_multiple_of(*g))
        .unwrap_or(1)
}

/// LeakyReLU with slope 0.2 (DCGAN's discriminator).
fn lrelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.maximum(&(x * 0.2)?)?)
}

/// The generator network (G): z (and a class) → an example in [−1, 1] (images) or a point.
pub(super) struct Generator {
    shape: Vec<usize>,
    embed: Option<Embedding>,
    fc: Linear,
    net: GenNet,
}

enum GenNet {
    Conv {
        gn0: GroupNorm,
        up1: ConvTranspose2d,
        gn1: GroupNorm,
        up2: ConvTranspose2d,
    },
    Mlp {
        hidden: Linear,
        out: Linear,
    },
}

impl Generator {
    /// Variables under `vb`: `embed.weight` (conditional), `fc.*`, then `gn0.*`, `up1.*`, `gn1.*`, `up2.*`
    /// (images) or `hidden.*`, `out.*` (points).
    pub(super) fn new(cfg: &GanConfig, vb: VarBuilder) -> Result<Self> {
        let (z, c) = (cfg.latent_dim, cfg.channels);
        let embed = (cfg.num_classes > 0)
            .then(|| Embedding::new(cfg.num_classes, z, vb.pp("embed")))
            .transpose()?;
        let input = if embed.is_some() { 2 * z } else { z };
        let (fc, net) = match cfg.example_shape.as_slice() {
            [ch, h, w] => (
                Linear::new(input, 2 * c * (h / 4) * (w / 4), vb.pp("fc"))?,
                GenNet::Conv {
                    gn0: GroupNorm::new(groups_for(2 * c), 2 * c, vb.pp("gn0"))?,
                    up1: ConvTranspose2d::new(2 * c, c, 4, 2, 1, 0, vb.pp("up1"))?,
                    gn1: GroupNorm::new(groups_for(c), c, vb.pp("gn1"))?,
                    up2: ConvTranspose2d::new(c, *ch, 4, 2, 1, 0, vb.pp("up2"))?,
                },
            ),
            [d] => (
                Linear::new(input, c, vb.pp("fc"))?,
                GenNet::Mlp {
                    hidden: Linear::new(c, c, vb.pp("hidden"))?,
                    out: Linear::new(c, *d, vb.pp("out"))?,
                },
            ),
            other => {
                return Err(Error::invalid(
                    "model.example_shape",
                    format!("{other:?} is not prepared"),
                ))
            }
        };
        Ok(Self {
            shape: cfg.example_shape.clone(),
            embed,
            fc,
            net,
        })
    }

    /// The device of the weights.
    pub(super) fn device(&self) -> candle_core::Device {
        self.fc.weight().device().clone()
    }

    /// `z: (b, latent)`, `labels: (b,)` u32 for a conditional generator → `(b, c, h, w)` or `(b, d)`.
    pub(super) fn forward(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let input = match (&self.embed, labels) {
            (Some(e), Some(y)) => Tensor::cat(&[z, &e.forward(y)?], 1)?, // (b, 2·latent)
            (Some(_), None) => {
                return Err(Error::invalid(
                    "labels",
                    "a conditional generator needs class labels",
                ))
            }
            (None, _) => z.clone(),
        };
        let b = z.dim(0)?;
        match &self.net {
            GenNet::Conv { gn0, up1, gn1, up2 } => {
                let (h, w) = (self.shape[1] / 4, self.shape[2] / 4);
                let x = self.fc.forward(&input)?; // (b, 2C·h/4·w/4)
                let x = x.reshape((b, x.dim(1)? / (h * w), h, w))?; // (b, 2C, h/4, w/4)
                let x = up1.forward(&gn0.forward(&x)?.relu()?)?; // (b, C, h/2, w/2)
                let x = up2.forward(&gn1.forward(&x)?.relu()?)?; // (b, c, h, w)
                Ok(x.tanh()?)
            }
            GenNet::Mlp { hidden, out } => {
                let x = self.fc.forward(&input)?.relu()?; // (b, C)
                out.forward(&hidden.forward(&x)?.relu()?) // (b, d)
            }
        }
    }
}

/// A discriminator layer: linear, or a 4×4 stride-2 convolution (padding 1); spectrally normalised or not.
enum DLayer {
    Linear(Linear),
    Conv(Conv2d),
    SnLinear(SnLinear),
    SnConv(SnConv2d),
}

impl DLayer {
    fn linear(i: usize, o: usize, sn: bool, vb: VarBuilder) -> Result<Self> {
        Ok(if sn {
            DLayer::SnLinear(SnLinear::new(i, o, vb)?)
        } else {
            DLayer::Linear(Linear::new(i, o, vb)?)
        })
    }

    fn down(i: usize, o: usize, sn: bool, vb: VarBuilder) -> Result<Self> {
        Ok(if sn {
            DLayer::SnConv(SnConv2d::new(i, o, 4, 2, 1, vb)?)
        } else {
            DLayer::Conv(Conv2d::new(i, o, 4, 2, 1, vb)?)
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            DLayer::Linear(l) => l.forward(x),
            DLayer::Conv(c) => c.forward(x),
            DLayer::SnLinear(l) => l.forward(x),
            DLayer::SnConv(c) => c.forward(x),
        }
    }

    /// One step of power iteration when spectrally normalised.
    fn power_iteration(&self) -> Result<()> {
        match self {
            DLayer::SnLinear(l) => l.spectral().power_iteration(1),
            DLayer::SnConv(c) => c.spectral().power_iteration(1),
            DLayer::Linear(_) | DLayer::Conv(_) => Ok(()),
        }
    }
}

/// The discriminator (D): an example (and a class) → one logit / critic value.
pub(super) struct Discriminator {
    /// Two stride-2 convolutions (images) or two hidden linear layers (points), each followed by LeakyReLU.
    hidden: [DLayer; 2],
    out: DLayer,
    /// The projection's class embedding V (conditional).
    embed: Option<Embedding>,
}

impl Discriminator {
    /// Variables under `vb`: `c1.*`, `c2.*` (images) or `l1.*`, `l2.*` (points), `out.*`, `embed.weight`
    /// (conditional); spectrally normalised layers add `u`.
    pub(super) fn new(cfg: &GanConfig, vb: VarBuilder) -> Result<Self> {
        let (c, sn) = (cfg.channels, cfg.spectral_norm);
        let (hidden, features) = match cfg.example_shape.as_slice() {
            [ch, h, w] => (
                [
                    DLayer::down(*ch, c, sn, vb.pp("c1"))?,
                    DLayer::down(c, 2 * c, sn, vb.pp("c2"))?,
                ],
                2 * c * (h / 4) * (w / 4),
            ),
            [d] => (
                [
                    DLayer::linear(*d, c, sn, vb.pp("l1"))?,
                    DLayer::linear(c, c, sn, vb.pp("l2"))?,
                ],
                c,
            ),
            other => {
                return Err(Error::invalid(
                    "model.example_shape",
                    format!("{other:?} is not prepared"),
                ))
            }
        };
        let embed = (cfg.num_classes > 0)
            .then(|| Embedding::new(cfg.num_classes, features, vb.pp("embed")))
            .transpose()?;
        Ok(Self {
            hidden,
            out: DLayer::linear(features, 1, sn, vb.pp("out"))?,
            embed,
        })
    }

    /// One step of power iteration in every spectrally normalised layer.
    pub(super) fn power_iteration(&self) -> Result<()> {
        for l in self.hidden.iter().chain([&self.out]) {
            l.power_iteration()?;
        }
        Ok(())
    }

    /// `x: (b, …)`, labels `(b,)` for the projection → logits `(b,)`.
    pub(super) fn forward(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let b = x.dim(0)?;
        let [l1, l2] = &self.hidden;
        let phi = lrelu(&l2.forward(&lrelu(&l1.forward(x)?)?)?)?.reshape((b, ()))?; // (b, F)
        let out = self.out.forward(&phi)?.squeeze(1)?; // (b,)
        match (&self.embed, labels) {
            (Some(e), Some(y)) => Ok((out + (e.forward(y)? * &phi)?.sum(1)?)?),
            (Some(_), None) => Err(Error::invalid(
                "labels",
                "a projection discriminator needs class labels",
            )),
            (None, _) => Ok(out),
        }
    }
}
