//! The denoising UNet of diffusion models (Ho et al. 2020, "Denoising Diffusion Probabilistic Models",
//! arXiv:2006.11239, App. B; Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models",
//! arXiv:2102.09672), built on the encoder–decoder with skip connections of Ronneberger et al. 2015
//! (arXiv:1505.04597). `forward(x, t, class)` maps a noisy image `x: (b, c, h, w)`, a real time / noise
//! input `t: (b,)` and optional class labels to an output of the same spatial size (ε, x₀, v or a
//! preconditioned denoiser output: what it means is the caller's choice, see `crate::schedulers`).
//!
//! Architecture, with C = `base_channels`, `channel_mult = [m₀, …, m_{L−1}]`, N = `num_res_blocks`, s the
//! current feature-map size:
//!
//! ```text
//! emb  = Linear(4C→4C)(SiLU(Linear(C→4C)(sinusoid(t))))        [+ Embedding(class)]   (b, 4C)
//! h    = Conv3×3(x)                                              (b, C, s, s)          → skip
//! down, level ℓ = 0 … L−1:   N × [ResBlock(→ m_ℓ·C) (+ attention if s ∈ attention_resolutions)] → skip
//!                            then, except at the last level, Conv3×3 stride 2: s → s/2           → skip
//! middle:                    ResBlock, attention, ResBlock
//! up, level ℓ = L−1 … 0:     (N+1) × [concat(h, skip.pop()) → ResBlock(→ m_ℓ·C) (+ attention)]
//!                            then, except at level 0, nearest ×2 up-sampling + Conv3×3: s → 2s
//! out  = Conv3×3(SiLU(GroupNorm(h)))                              (b, out_channels, s, s)
//! ```
//!
//! ResBlock (Ho et al. 2020 App. B; Nichol & Dhariwal 2021): `h = Conv3×3(SiLU(GN(x)))`,
//! `h += Linear(SiLU(emb))` broadcast over positions, `h = Conv3×3(SiLU(GN(h)))`, output `skip(x) + h` with
//! `skip` a 1×1 convolution when the channel count changes (identity otherwise). Attention is
//! [`SelfAttention2d`] (pre-norm multi-head self-attention over the s² positions, residual).
//!
//! Time embedding: the transformer sinusoid (Vaswani et al. 2017, §3.5) in the form of the DDPM code:
//! with half = C/2, `freq_i = exp(−ln(10000)·i/(half − 1))`, i = 0 … half−1 (so frequencies run from 1 down
//! to exactly 1/10000), and `sinusoid(t) = [sin(t·freq), cos(t·freq)]` ([`timestep_embedding`]). `t` is any
//! real number: DDPM passes the step index 0…999, EDM an affine map of its c_noise = ln(σ)/4 onto that range
//! (see `models::diffusion::edm::time_input`), NCSN its (interpolated) level index.
//!
//! Class conditioning: `num_classes = Some(K)` adds an embedding table with K + 1 rows; row K is the
//! *null* class ([`UNet::null_class`]), which classifier-free guidance (Ho & Salimans 2022,
//! arXiv:2207.12598) trains by dropping labels to K and uses for the unconditional branch.
//! `forward(x, t, None)` on a conditional net means exactly that: every example gets the null class.
//!
//! Choices and omissions: dropout (used by Ho et al. on CIFAR-10) is not implemented, so the config has no
//! such field; the last convolution of each ResBlock and of the output is not zero-initialised (Nichol &
//! Dhariwal do that), since dgm's layer types initialise as PyTorch does; GroupNorm uses
//! `min(groups, base_channels)` groups, which then divides every channel count in the net.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::attention::SelfAttention2d;
use super::layers::{upsample2x, Conv2d, Embedding, GroupNorm, Linear};
use super::Activation;
use crate::{Error, Result};

// ---------------------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------------------

/// UNet hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UNetConfig {
    /// Channels of the input image (1 grey, 3 RGB).
    pub in_channels: usize,
    /// Channels of the output; `None` = `in_channels` (2·in_channels for a learned variance).
    pub out_channels: Option<usize>,
    /// Height = width of the input; must be divisible by 2^(levels − 1).
    pub image_size: usize,
    /// Channels of the first level, C; also the size of the sinusoidal time embedding (even, ≥ 4).
    pub base_channels: usize,
    /// Channel multiplier per level (one level per entry; a 2× down-sampling between levels).
    pub channel_mult: Vec<usize>,
    /// ResBlocks per level on the way down (the way up has one more).
    pub num_res_blocks: usize,
    /// Feature-map sizes (in pixels, e.g. 14 for 28×28 inputs) where self-attention follows each ResBlock.
    pub attention_resolutions: Vec<usize>,
    /// Attention heads; must divide the channel count wherever attention is applied.
    pub num_heads: usize,
    /// Number of classes of a class-conditional net (`None`: unconditional); index `num_classes` is the
    /// reserved null class of classifier-free guidance.
    pub num_classes: Option<usize>,
    /// GroupNorm groups (clamped to `base_channels`; must divide `base_channels`).
    pub groups: usize,
    /// Append two coordinate maps (x and y in [−1, 1]) to the input (CoordConv, Liu et al. 2018): a
    /// condition that names a *place* ("at the top left") reaches the net as an embedding that is the same at
    /// every pixel, and convolutions alone can hardly tell where they are.
    pub coord_channels: bool,
}

impl Default for UNetConfig {
    /// MNIST-size (1×28×28): C = 64, levels 28/14/7 with 64/128/128 channels, attention at 14 (and in the
    /// middle at 7), 2 ResBlocks per level, 4 heads, 32 groups.
    fn default() -> Self {
        Self {
            in_channels: 1,
            out_channels: None,
            image_size: 28,
            base_channels: 64,
            channel_mult: vec![1, 2, 2],
            num_res_blocks: 2,
            attention_resolutions: vec![14],
            num_heads: 4,
            num_classes: None,
            groups: 32,
            coord_channels: false,
        }
    }
}

impl UNetConfig {
    /// A small net for tests: 1×28×28, C = 16, levels 28/14 with 16/32 channels, one ResBlock per level,
    /// attention at 14, 2 heads, 8 groups.
    pub fn tiny() -> Self {
        Self {
            base_channels: 16,
            channel_mult: vec![1, 2],
            num_res_blocks: 1,
            num_heads: 2,
            groups: 8,
            ..Self::default()
        }
    }

    /// `out_channels`, or `in_channels` when unset.
    pub fn output_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Size of the time (and class) embedding, 4·C.
    pub fn embed_dim(&self) -> usize {
        4 * self.base_channels
    }

    /// GroupNorm groups actually used: `min(groups, base_channels)`.
    pub fn norm_groups(&self) -> usize {
        self.groups.min(self.base_channels)
    }

    /// Feature-map size at each level: image_size, image_size/2, …
    pub fn resolutions(&self) -> Vec<usize> {
        (0..self.channel_mult.len())
            .map(|l| self.image_size >> l)
            .collect()
    }

    /// Checks every field and their consistency; errors name the value and the fix.
    pub fn validate(&self) -> Result<()> {
        let check = |ok: bool, key: &str, msg: String| match ok {
            true => Ok(()),
            false => Err(Error::invalid(format!("unet.{key}"), msg)),
        };
        let (c, mult) = (self.base_channels, &self.channel_mult);
        check(
            self.in_channels > 0,
            "in_channels",
            "0: need at least one channel (1 grey, 3 RGB)".into(),
        )?;
        check(
            self.out_channels != Some(0),
            "out_channels",
            "0: need at least one (leave it unset for out_channels = in_channels)".into(),
        )?;
        check(
            c >= 4 && c.is_multiple_of(2),
            "base_channels",
            format!("{c}: must be even and ≥ 4 (it is also the size of the time embedding)"),
        )?;
        check(
            !mult.is_empty() && !mult.contains(&0),
            "channel_mult",
            format!("{mult:?}: need at least one level and every multiplier ≥ 1, e.g. [1, 2, 2]"),
        )?;
        check(
            self.num_res_blocks > 0,
            "num_res_blocks",
            "0: need at least one ResBlock per level".into(),
        )?;
        let (steps, size) = (mult.len() - 1, self.image_size);
        let factor = 1usize << steps;
        check(
            size > 0 && size.is_multiple_of(factor),
            "image_size",
            format!(
                "image size {size} is not divisible by {factor} ({steps} down-sampling steps of \
                 channel_mult {mult:?}); use a multiple of {factor} or fewer levels in channel_mult"
            ),
        )?;
        let res = self.resolutions();
        for r in &self.attention_resolutions {
            check(
                res.contains(r),
                "attention_resolutions",
                format!("{r} is not a feature-map size of this net; the sizes are {res:?}"),
            )?;
        }
        let g = self.norm_groups();
        check(
            g > 0 && c.is_multiple_of(g),
            "groups",
            format!(
                "{} does not divide base_channels {c}; use a divisor of {c}",
                self.groups
            ),
        )?;
        // attention at the listed sizes, and always in the middle (at the last level's channels)
        let attn = res
            .iter()
            .zip(mult)
            .enumerate()
            .filter(|(l, (r, _))| self.attention_resolutions.contains(r) || *l == steps);
        for (_, (r, m)) in attn {
            let ch = c * m;
            check(
                self.num_heads > 0 && ch.is_multiple_of(self.num_heads),
                "num_heads",
                format!(
                    "{} heads cannot split the {ch} channels of the attention at size {r}; \
                     use a divisor of {ch}",
                    self.num_heads
                ),
            )?;
        }
        check(
            self.num_classes != Some(0),
            "num_classes",
            "Some(0): need at least one class (None for an unconditional net)".into(),
        )
    }
}

// ---------------------------------------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------------------------------------

/// The sinusoidal embedding of a real time input (see the module docs): `t: (b,)` → `(b, dim)`,
/// `[sin(t·freq_0), …, sin(t·freq_{half−1}), cos(t·freq_0), …]` with `freq_i = 10000^(−i/(half−1))`.
/// `dim` must be even and ≥ 4.
pub fn timestep_embedding(t: &Tensor, dim: usize) -> Result<Tensor> {
    if dim < 4 || !dim.is_multiple_of(2) {
        return Err(Error::invalid(
            "timestep embedding dim",
            format!("{dim}: must be even and ≥ 4"),
        ));
    }
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / (half - 1) as f64).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?; // (1, half)
    let args = t
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?; // (b, half)
    Ok(Tensor::cat(&[args.sin()?, args.cos()?], 1)?) // (b, dim)
}

/// GN+SiLU → conv3×3 → + Linear(SiLU(emb)) → GN+SiLU → conv3×3, plus a (1×1 conv) skip.
#[derive(Clone, Debug)]
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    emb: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
}

impl ResBlock {
    fn new(c_in: usize, c_out: usize, cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        let g = cfg.norm_groups();
        Ok(Self {
            norm1: GroupNorm::new(g, c_in, vb.pp("norm1"))?,
            conv1: Conv2d::new(c_in, c_out, 3, 1, 1, vb.pp("conv1"))?,
            emb: Linear::new(cfg.embed_dim(), c_out, vb.pp("emb"))?,
            norm2: GroupNorm::new(g, c_out, vb.pp("norm2"))?,
            conv2: Conv2d::new(c_out, c_out, 3, 1, 1, vb.pp("conv2"))?,
            skip: if c_in == c_out {
                None
            } else {
                Some(Conv2d::new(c_in, c_out, 1, 1, 0, vb.pp("skip"))?)
            },
        })
    }

    /// `x: (b, c_in, s, s)`, `emb: (b, 4C)` already through SiLU → `(b, c_out, s, s)`.
    fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let e = self.emb.forward(emb)?; // (b, c_out)
        let h = self
            .conv1
            .forward_shifted(&self.norm1.forward_silu(x)?, &e)?; // (b, c_out, s, s)
        let skip = match &self.skip {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        // skip + conv2(SiLU(GN(h))), the sum written by the convolution
        self.conv2
            .forward_residual(&self.norm2.forward_silu(&h)?, &skip) // (b, c_out, s, s)
    }
}

/// One resolution level: ResBlocks, each optionally followed by attention, then an optional resampling conv.
#[derive(Clone, Debug)]
struct Level {
    blocks: Vec<(ResBlock, Option<SelfAttention2d>)>,
    resample: Option<Conv2d>,
}

// ---------------------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------------------

/// The denoising UNet (see the module docs for the architecture).
#[derive(Clone, Debug)]
pub struct UNet {
    cfg: UNetConfig,
    time1: Linear,
    time2: Linear,
    class_emb: Option<Embedding>,
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: (ResBlock, SelfAttention2d, ResBlock),
    /// Deepest level first (the order they run in).
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    /// Validates `cfg` and creates the variables under `vb`: `time.{lin1,lin2}`, `class_emb`, `conv_in`,
    /// `down.{ℓ}.{res,attn}.{j}`, `down.{ℓ}.downsample`, `mid.{res1,attn,res2}`, `up.{ℓ}.{res,attn}.{j}`,
    /// `up.{ℓ}.upsample`, `norm_out`, `conv_out`.
    pub fn new(cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (base, e, heads, g) = (
            cfg.base_channels,
            cfg.embed_dim(),
            cfg.num_heads,
            cfg.norm_groups(),
        );
        let last = cfg.channel_mult.len() - 1;
        let attn = |s: usize, c: usize, vb: VarBuilder| -> Result<Option<SelfAttention2d>> {
            if cfg.attention_resolutions.contains(&s) {
                Ok(Some(SelfAttention2d::new(c, heads, g, vb)?))
            } else {
                Ok(None)
            }
        };
        let (mut ch, mut s) = (base, cfg.image_size);
        let mut skips = vec![ch]; // channel counts of the skip connections, in push order
        let mut down = Vec::new();
        for (l, &m) in cfg.channel_mult.iter().enumerate() {
            let vbl = vb.pp(format!("down.{l}"));
            let mut blocks = Vec::new();
            for j in 0..cfg.num_res_blocks {
                let res = ResBlock::new(ch, m * base, cfg, vbl.pp(format!("res.{j}")))?;
                ch = m * base;
                blocks.push((res, attn(s, ch, vbl.pp(format!("attn.{j}")))?));
                skips.push(ch);
            }
            let resample = if l < last {
                skips.push(ch);
                s /= 2;
                Some(Conv2d::new(ch, ch, 3, 2, 1, vbl.pp("downsample"))?)
            } else {
                None
            };
            down.push(Level { blocks, resample });
        }
        let mid = (
            ResBlock::new(ch, ch, cfg, vb.pp("mid.res1"))?,
            SelfAttention2d::new(ch, heads, g, vb.pp("mid.attn"))?,
            ResBlock::new(ch, ch, cfg, vb.pp("mid.res2"))?,
        );
        let mut up = Vec::new();
        for (l, &m) in cfg.channel_mult.iter().enumerate().rev() {
            let vbl = vb.pp(format!("up.{l}"));
            let mut blocks = Vec::new();
            for j in 0..=cfg.num_res_blocks {
                let skip = skips.pop().ok_or_else(|| {
                    Error::Unsupported("unet: skip bookkeeping out of step (a bug)".into())
                })?;
                let res = ResBlock::new(ch + skip, m * base, cfg, vbl.pp(format!("res.{j}")))?;
                ch = m * base;
                blocks.push((res, attn(s, ch, vbl.pp(format!("attn.{j}")))?));
            }
            let resample = if l > 0 {
                s *= 2;
                Some(Conv2d::new(ch, ch, 3, 1, 1, vbl.pp("upsample"))?)
            } else {
                None
            };
            up.push(Level { blocks, resample });
        }
        Ok(Self {
            time1: Linear::new(base, e, vb.pp("time.lin1"))?,
            time2: Linear::new(e, e, vb.pp("time.lin2"))?,
            class_emb: match cfg.num_classes {
                Some(k) => Some(Embedding::new(k + 1, e, vb.pp("class_emb"))?),
                None => None,
            },
            conv_in: Conv2d::new(
                cfg.in_channels + 2 * usize::from(cfg.coord_channels),
                base,
                3,
                1,
                1,
                vb.pp("conv_in"),
            )?,
            down,
            mid,
            up,
            norm_out: GroupNorm::new(g, ch, vb.pp("norm_out"))?,
            conv_out: Conv2d::new(ch, cfg.output_channels(), 3, 1, 1, vb.pp("conv_out"))?,
            cfg: cfg.clone(),
        })
    }

    /// The config the net was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// The reserved null-class index (= `num_classes`) of a conditional net, for classifier-free guidance.
    pub fn null_class(&self) -> Option<u32> {
        self.cfg.num_classes.map(|k| k as u32)
    }

    /// `x: (b, in_channels, s, s)` with s = image_size, `t: (b,)` real (f32), `class: (b,)` u32 in
    /// `0..=num_classes` (conditional nets only; `None` = the null class) → `(b, out_channels, s, s)`.
    pub fn forward(&self, x: &Tensor, t: &Tensor, class: Option<&Tensor>) -> Result<Tensor> {
        self.forward_with(x, t, class, None)
    }

    /// [`UNet::forward`] with a condition given as an embedding `extra: (b, 4C)` (e.g. a caption's, from
    /// [`super::text::TextEncoder`]) added to the time (and class) embedding.
    pub fn forward_with(
        &self,
        x: &Tensor,
        t: &Tensor,
        class: Option<&Tensor>,
        extra: Option<&Tensor>,
    ) -> Result<Tensor> {
        let b = self.check_inputs(x, t)?;
        if self.class_emb.is_none() && class.is_some() {
            return Err(Error::invalid(
                "unet.class",
                "class labels were given to an unconditional net (num_classes is None)",
            ));
        }
        let mut emb = self.time2.forward(&self.time1.forward_act(
            &timestep_embedding(t, self.cfg.base_channels)?,
            Activation::Silu,
        )?)?; // (b, 4C)
        if let Some(table) = &self.class_emb {
            emb = (emb + table.forward(&self.class_ids(class, b, x)?)?)?; // (b, 4C)
        }
        if let Some(e) = extra {
            if e.dims() != [b, self.cfg.embed_dim()] {
                return Err(Error::invalid(
                    "unet.condition",
                    format!(
                        "the condition embedding has shape {:?}; expected ({b}, {})",
                        e.dims(),
                        self.cfg.embed_dim()
                    ),
                ));
            }
            emb = (emb + e)?; // (b, 4C)
        }
        let emb = emb.silu()?; // (b, 4C): every ResBlock projects SiLU(emb)

        let mut h = match self.cfg.coord_channels {
            true => self
                .conv_in
                .forward(&Tensor::cat(&[x, &coordinates(x)?], 1)?)?,
            false => self.conv_in.forward(x)?,
        }; // (b, C, s, s)
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for (res, attn) in &level.blocks {
                h = res.forward(&h, &emb)?; // (b, m·C, s, s)
                if let Some(a) = attn {
                    h = a.forward(&h)?;
                }
                skips.push(h.clone());
            }
            if let Some(conv) = &level.resample {
                h = conv.forward(&h)?; // (b, m·C, s/2, s/2)
                skips.push(h.clone());
            }
        }
        h = self.mid.0.forward(&h, &emb)?;
        h = self.mid.1.forward(&h)?;
        h = self.mid.2.forward(&h, &emb)?; // (b, m_last·C, s_min, s_min)
        for level in &self.up {
            for (res, attn) in &level.blocks {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::Unsupported("unet: skip stack empty (a bug)".into()))?;
                h = res.forward(&Tensor::cat(&[&h, &skip], 1)?, &emb)?; // (b, m·C, s, s)
                if let Some(a) = attn {
                    h = a.forward(&h)?;
                }
            }
            if let Some(conv) = &level.resample {
                h = conv.forward(&upsample2x(&h)?)?; // (b, m·C, 2s, 2s)
            }
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&h)?) // (b, out_channels, s, s)
    }

    /// Checks the shapes of `x` and `t`; returns the batch size.
    fn check_inputs(&self, x: &Tensor, t: &Tensor) -> Result<usize> {
        let (c, s) = (self.cfg.in_channels, self.cfg.image_size);
        let ok = matches!(x.dims(), &[b, xc, xh, xw] if b > 0 && xc == c && xh == s && xw == s);
        if !ok {
            return Err(Error::invalid(
                "unet.x",
                format!(
                    "x has shape {:?}; this net expects (b, {c}, {s}, {s}) with b ≥ 1",
                    x.dims()
                ),
            ));
        }
        let b = x.dim(0)?;
        if t.dims() != [b] {
            return Err(Error::invalid(
                "unet.t",
                format!(
                    "t has shape {:?}; expected ({b},): one time value per example of x",
                    t.dims()
                ),
            ));
        }
        if !t.dtype().is_float() {
            return Err(Error::invalid(
                "unet.t",
                format!("t has dtype {:?}; expected a float tensor (f32)", t.dtype()),
            ));
        }
        Ok(b)
    }

    /// The class indices for a conditional net: `class` checked, or the null class for every example.
    fn class_ids(&self, class: Option<&Tensor>, b: usize, x: &Tensor) -> Result<Tensor> {
        let k = self.cfg.num_classes.unwrap_or(0) as u32;
        let Some(class) = class else {
            return Ok(Tensor::full(k, b, x.device())?);
        };
        if class.dims() != [b] || class.dtype() != DType::U32 {
            return Err(Error::invalid(
                "unet.class",
                format!(
                    "class has shape {:?} and dtype {:?}; expected ({b},) u32",
                    class.dims(),
                    class.dtype()
                ),
            ));
        }
        if let Some(bad) = class.to_vec1::<u32>()?.into_iter().find(|&c| c > k) {
            let msg = format!(
                "class index {bad} is out of range: valid are 0..={} for the {k} classes and {k} for \
                 the null class",
                k.saturating_sub(1)
            );
            return Err(Error::invalid("unet.class", msg));
        }
        Ok(class.clone())
    }
}

/// The CoordConv maps of `x: (b, c, h, w)`: `(b, 2, h, w)` with x then y, each from −1 to 1 across the image.
fn coordinates(x: &Tensor) -> Result<Tensor> {
    let (b, _, h, w) = x.dims4()?;
    let ramp = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| {
                if n > 1 {
                    2.0 * i as f32 / (n - 1) as f32 - 1.0
                } else {
                    0.0
                }
            })
            .collect()
    };
    let (rx, ry) = (ramp(w), ramp(h));
    let mut v = Vec::with_capacity(2 * h * w);
    v.extend((0..h).flat_map(|_| rx.iter().copied()));
    v.extend(ry.iter().flat_map(|&y| std::iter::repeat_n(y, w)));
    let maps = Tensor::from_vec(v, (1, 2, h, w), x.device())?.to_dtype(x.dtype())?;
    Ok(maps.broadcast_as((b, 2, h, w))?.contiguous()?)
}

// ---------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{rel_err, Params};
    use crate::rng::Rng;
    use crate::train::optim::{collect_grads, AdamW, AdamWParams};
    use candle_core::Device;

    /// tiny() at 8×8 (levels 8/4, attention at 4 and in the middle).
    fn tiny8() -> UNetConfig {
        UNetConfig {
            image_size: 8,
            attention_resolutions: vec![4],
            ..UNetConfig::tiny()
        }
    }

    fn build(cfg: &UNetConfig, seed: u64) -> Result<(UNet, Params)> {
        let p = Params::new(seed, &Device::Cpu);
        let net = UNet::new(cfg, p.var_builder())?;
        Ok((net, p))
    }

    fn times(v: &[f32]) -> Result<Tensor> {
        Ok(Tensor::new(v, &Device::Cpu)?)
    }

    #[test]
    fn output_shapes_for_mnist_and_cifar_sizes() -> Result<()> {
        let dev = Device::Cpu;
        let (net, _) = build(&UNetConfig::tiny(), 0)?;
        let x = Rng::new(1).randn((2, 1, 28, 28), &dev)?;
        assert_eq!(
            net.forward(&x, &times(&[3.0, 700.0])?, None)?.dims(),
            &[2, 1, 28, 28]
        );
        let cfg = UNetConfig {
            in_channels: 3,
            image_size: 32,
            attention_resolutions: vec![16],
            ..UNetConfig::tiny()
        };
        let (net, _) = build(&cfg, 0)?;
        let x = Rng::new(1).randn((2, 3, 32, 32), &dev)?;
        assert_eq!(
            net.forward(&x, &times(&[-0.5, 0.25])?, None)?.dims(),
            &[2, 3, 32, 32]
        );
        // learned-variance output: 2·in channels
        let (net, _) = build(
            &UNetConfig {
                out_channels: Some(6),
                ..cfg
            },
            0,
        )?;
        assert_eq!(
            net.forward(&x, &times(&[1.0, 2.0])?, None)?.dims(),
            &[2, 6, 32, 32]
        );
        Ok(())
    }

    #[test]
    fn validate_errors_name_the_value_and_the_fix() {
        let err = |cfg: UNetConfig| cfg.validate().unwrap_err().to_string();
        let e = err(UNetConfig {
            image_size: 30,
            channel_mult: vec![1, 2, 2, 2],
            ..UNetConfig::default()
        });
        let want = "image size 30 is not divisible by 8 (3 down-sampling steps of channel_mult [1, 2, 2, 2])";
        assert!(e.contains(want), "{e}");
        // 28 = 4·7: fine with 2 down-sampling steps, not with 3
        let e = err(UNetConfig {
            channel_mult: vec![1, 2, 2, 2],
            ..UNetConfig::default()
        });
        assert!(e.contains("image size 28 is not divisible by 8"), "{e}");
        assert!(UNetConfig::default().validate().is_ok());
        assert!(UNetConfig::tiny().validate().is_ok());
        let e = err(UNetConfig {
            attention_resolutions: vec![16],
            ..UNetConfig::default()
        });
        assert!(
            e.contains("16 is not a feature-map size") && e.contains("[28, 14, 7]"),
            "{e}"
        );
        let e = err(UNetConfig {
            groups: 24,
            ..UNetConfig::default()
        });
        assert!(e.contains("24 does not divide base_channels 64"), "{e}");
        // groups larger than base_channels are clamped
        assert_eq!(
            UNetConfig {
                groups: 32,
                ..UNetConfig::tiny()
            }
            .norm_groups(),
            16
        );
        let e = err(UNetConfig {
            num_heads: 3,
            ..UNetConfig::default()
        });
        assert!(e.contains("3 heads cannot split the 128 channels"), "{e}");
        assert!(err(UNetConfig {
            base_channels: 7,
            ..UNetConfig::default()
        })
        .contains("even"));
        assert!(err(UNetConfig {
            num_classes: Some(0),
            ..UNetConfig::default()
        })
        .contains("num_classes"));
        assert!(err(UNetConfig {
            channel_mult: vec![],
            ..UNetConfig::default()
        })
        .contains("channel_mult"));
    }

    #[test]
    fn timestep_embedding_matches_hand_computed_values() -> Result<()> {
        // dim 8: half = 4, freq_i = 10000^(−i/3) = 1, 0.046415888, 0.0021544347, 0.0001
        let t = times(&[0.0, 1.0, 999.0, -0.7])?;
        let e = timestep_embedding(&t, 8)?.to_vec2::<f32>()?;
        let freqs = [
            1.0f64,
            0.046_415_888_336_127_79,
            0.002_154_434_690_031_884,
            1e-4,
        ];
        for (row, tv) in e.iter().zip([0.0f64, 1.0, 999.0, -0.7]) {
            for i in 0..4 {
                assert!(
                    (row[i] as f64 - (tv * freqs[i]).sin()).abs() < 2e-4,
                    "{row:?}"
                );
                assert!(
                    (row[4 + i] as f64 - (tv * freqs[i]).cos()).abs() < 2e-4,
                    "{row:?}"
                );
            }
        }
        // literal values: t = 1 → sin 1 = 0.841471, cos 1 = 0.540302; t = 0 → [0, 0, 0, 0, 1, 1, 1, 1]
        assert!((e[1][0] - 0.841_471).abs() < 1e-6 && (e[1][4] - 0.540_302).abs() < 1e-6);
        assert_eq!(e[0], vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        assert!(timestep_embedding(&t, 6).is_ok() && timestep_embedding(&t, 5).is_err());
        Ok(())
    }

    #[test]
    fn time_and_class_conditioning_change_the_output() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = UNetConfig {
            num_classes: Some(3),
            ..tiny8()
        };
        let (net, _) = build(&cfg, 2)?;
        let x = Rng::new(3).randn((2, 1, 8, 8), &dev)?;
        let c = |v: &[u32]| Tensor::new(v, &dev);
        let y = |t: &[f32], cl: Option<&Tensor>| net.forward(&x, &times(t).unwrap(), cl);
        let base = y(&[10.0, 10.0], Some(&c(&[0, 0])?))?;
        assert_eq!(rel_err(&y(&[10.0, 10.0], Some(&c(&[0, 0])?))?, &base)?, 0.0);
        assert!(rel_err(&y(&[500.0, 500.0], Some(&c(&[0, 0])?))?, &base)? > 1e-3);
        assert!(rel_err(&y(&[10.3, 10.3], Some(&c(&[0, 0])?))?, &base)? > 1e-4); // non-integer t
        assert!(rel_err(&y(&[10.0, 10.0], Some(&c(&[1, 1])?))?, &base)? > 1e-3);
        // no labels on a conditional net = the null class
        assert_eq!(net.null_class(), Some(3));
        let null = y(&[10.0, 10.0], Some(&c(&[3, 3])?))?;
        assert_eq!(rel_err(&y(&[10.0, 10.0], None)?, &null)?, 0.0);
        // examples do not interact: example 0 alone gives the same output as in the batch
        let one = net.forward(&x.narrow(0, 0, 1)?, &times(&[10.0])?, Some(&c(&[0])?))?;
        assert!(rel_err(&one, &base.narrow(0, 0, 1)?)? < 1e-5);
        Ok(())
    }

    /// CoordConv maps run from −1 to 1 along x then y; a net with them runs, and so does a condition embedding
    /// of the right shape (a wrong one is refused).
    #[test]
    fn coordinate_channels_and_condition_embeddings() -> Result<()> {
        let dev = Device::Cpu;
        let x = Rng::new(3).randn((2, 1, 3, 3), &dev)?;
        let m = coordinates(&x)?;
        assert_eq!(m.dims(), [2, 2, 3, 3]);
        let v = m.narrow(0, 1, 1)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(&v[..9], &[-1.0, 0.0, 1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 1.0]);
        assert_eq!(&v[9..], &[-1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let cfg = UNetConfig {
            coord_channels: true,
            ..tiny8()
        };
        let (net, _) = build(&cfg, 2)?;
        let x = Rng::new(3).randn((2, 1, 8, 8), &dev)?;
        let t = times(&[10.0, 10.0])?;
        let plain = net.forward(&x, &t, None)?;
        assert_eq!(plain.dims(), [2, 1, 8, 8]);
        let e = Rng::new(4).randn((2, cfg.embed_dim()), &dev)?;
        assert!(rel_err(&net.forward_with(&x, &t, None, Some(&e))?, &plain)? > 1e-4);
        let bad = Rng::new(4).randn((2, 3), &dev)?;
        let msg = net
            .forward_with(&x, &t, None, Some(&bad))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("condition embedding"), "{msg}");
        Ok(())
    }

    #[test]
    fn forward_rejects_bad_inputs() -> Result<()> {
        let dev = Device::Cpu;
        let (uncond, _) = build(&tiny8(), 0)?;
        let (cond, _) = build(
            &UNetConfig {
                num_classes: Some(3),
                ..tiny8()
            },
            0,
        )?;
        let x = Rng::new(0).randn((2, 1, 8, 8), &dev)?;
        let t = times(&[1.0, 2.0])?;
        let msg = |r: Result<Tensor>| r.unwrap_err().to_string();
        let cl = Tensor::new(&[0u32, 1], &dev)?;
        assert!(msg(uncond.forward(&x, &t, Some(&cl))).contains("unconditional"));
        let e = msg(cond.forward(&x, &t, Some(&Tensor::new(&[0u32, 4], &dev)?)));
        assert!(e.contains("class index 4 is out of range"), "{e}");
        let e = msg(uncond.forward(&Rng::new(0).randn((2, 1, 8, 6), &dev)?, &t, None));
        assert!(
            e.contains("[2, 1, 8, 6]") && e.contains("(b, 1, 8, 8)"),
            "{e}"
        );
        assert!(
            msg(uncond.forward(&Rng::new(0).randn((2, 3, 8, 8), &dev)?, &t, None))
                .contains("unet.x")
        );
        assert!(
            msg(uncond.forward(&x, &times(&[1.0])?, None)).contains("one time value per example")
        );
        assert!(msg(cond.forward(&x, &t, Some(&Tensor::new(&[0i64, 1], &dev)?))).contains("u32"));
        Ok(())
    }

    #[test]
    fn same_seed_same_weights() -> Result<()> {
        let (_, a) = build(&tiny8(), 7)?;
        let (_, b) = build(&tiny8(), 7)?;
        let (_, c) = build(&tiny8(), 8)?;
        let (sa, sb, sc) = (a.snapshot()?, b.snapshot()?, c.snapshot()?);
        assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
        for (k, v) in &sa {
            assert_eq!(rel_err(v, &sb[k])?, 0.0, "{k}");
        }
        assert!(rel_err(&sa["conv_in.weight"], &sc["conv_in.weight"])? > 0.1);
        Ok(())
    }

    #[test]
    fn every_parameter_gets_a_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = UNetConfig {
            num_classes: Some(3),
            ..tiny8()
        };
        let (net, p) = build(&cfg, 4)?;
        let x = Rng::new(5).randn((2, 1, 8, 8), &dev)?;
        let r = Rng::new(6).randn((2, 1, 8, 8), &dev)?;
        let y = net.forward(
            &x,
            &times(&[5.0, 300.0])?,
            Some(&Tensor::new(&[0u32, 2], &dev)?),
        )?;
        let grads = (y * r)?.sum_all()?.backward()?;
        let vars = p.vars();
        // attention at 4 (down and up) and in the middle, 1×1 skips where channels change
        assert!(vars.iter().any(|(k, _)| k.starts_with("down.1.attn.0.qkv")));
        assert!(vars.iter().any(|(k, _)| k.starts_with("up.0.res.0.skip")));
        for (name, v) in &vars {
            let g = grads
                .get(v.as_tensor())
                .ok_or_else(|| Error::Unsupported(format!("no gradient for {name}")))?;
            let m = g.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(m > 0.0, "zero gradient for {name}");
        }
        Ok(())
    }

    #[test]
    fn tiny_unet_overfits_four_images() -> Result<()> {
        let dev = Device::Cpu;
        let (net, p) = build(&tiny8(), 9)?;
        let mut rng = Rng::new(10);
        // 4 clean images, each noised at its own σ with fresh noise every step; the net learns to denoise
        let x0 = rng.randn((4, 1, 8, 8), &dev)?;
        let sigma = Tensor::new(&[0.1f32, 0.3, 0.6, 1.0], &dev)?;
        let t = (sigma.log()? / 4.0)?; // EDM's c_noise = ln σ / 4
        let sigma = sigma.reshape((4, 1, 1, 1))?;
        let vars = p.vars();
        let adam = AdamWParams {
            ..Default::default()
        };
        let mut opt = AdamW::new(vars.clone(), adam)?;
        let mut losses = Vec::new();
        const STEPS: usize = 60;
        const LR: f64 = 2e-3;
        for _ in 0..STEPS {
            let xn = (&x0 + rng.randn((4, 1, 8, 8), &dev)?.broadcast_mul(&sigma)?)?;
            let loss = (net.forward(&xn, &t, None)? - &x0)?.sqr()?.mean_all()?;
            losses.push(loss.to_scalar::<f32>()?);
            opt.step(&collect_grads(&vars, &loss.backward()?), LR, 1.0)?;
        }
        let first = losses[0];
        let last = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
        assert!(last < first / 10.0, "loss {first} → {last}");
        Ok(())
    }

    /// Speed of one training step (forward + backward) of the default config on 64 MNIST-size images.
    /// `cargo test --release -p dgm --lib nn::unet::tests::default_step_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn default_step_speed() -> Result<()> {
        let dev = Device::Cpu;
        let (net, p) = build(&UNetConfig::default(), 0)?;
        let mut rng = Rng::new(1);
        let x = rng.randn((64, 1, 28, 28), &dev)?;
        let target = rng.randn((64, 1, 28, 28), &dev)?;
        let t = Tensor::from_vec(
            (0..64).map(|i| (i * 15) as f32).collect::<Vec<_>>(),
            64,
            &dev,
        )?;
        let (mut fwd, mut step) = (Vec::new(), Vec::new());
        for i in 0..4 {
            let start = std::time::Instant::now();
            let loss = (net.forward(&x, &t, None)? - &target)?.sqr()?.mean_all()?;
            let mid = start.elapsed();
            std::hint::black_box(loss.backward()?);
            if i > 0 {
                fwd.push(mid.as_secs_f64() * 1e3);
                step.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "UNet default: {} parameters; 64×1×28×28: forward+backward median {:.0} ms/step (runs \
             {step:.0?}), of which forward {:.0} ms; {} threads",
            p.num_parameters(),
            median(&mut step),
            median(&mut fwd),
            rayon::current_num_threads()
        );
        Ok(())
    }
}
