//! The denoising network shared by the diffusion family: dgm's UNet ([`crate::nn::unet`]) for images, and a
//! small time-conditioned MLP for vector data (the 2-D toy distributions). Both take the data, a real-valued time
//! input per example (the schedule's `t`: a step index, a level index or c_noise(σ)) and a condition (class
//! labels; for the UNet also captions, read by a [`TextEncoder`] trained with it), and return a tensor shaped
//! like the data.

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::conditioning::{Cond, CondKind};
use crate::data::captions::{empty_captions, CaptionVocab};
use crate::models::DataInfo;
use crate::nn::text::{TextEncoder, TextEncoderConfig};
use crate::nn::unet::{timestep_embedding, UNet, UNetConfig};
use crate::nn::{Activation, Embedding, Linear};
use crate::pipelines::DenoiserInfo;
use crate::{Error, Result};

/// Network architectures.
pub const ARCHS: &[&str] = &["auto", "unet", "mlp"];

/// The network's config (`[model.net]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// `auto` (UNet for images, MLP for vectors), `unet` or `mlp`; `prepare` resolves `auto`.
    pub arch: String,
    /// Shape of one example; filled by `prepare` from the data.
    pub input_shape: Vec<usize>,
    /// Condition on class labels.
    pub conditional: bool,
    /// Number of classes of a conditional model (0 when unconditional); filled by `prepare`.
    pub num_classes: usize,
    /// Condition on captions (the UNet, data with captions), read by a text encoder trained with the model.
    pub captions: bool,
    /// The text encoder of a caption model.
    pub text: TextEncoderConfig,
    /// The words of the training captions; filled by `prepare` for a caption model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption_vocab: Option<CaptionVocab>,
    /// The UNet (images); `in_channels`, `image_size` and `num_classes` are filled by `prepare`.
    pub unet: UNetConfig,
    /// MLP (vectors): hidden width.
    pub mlp_width: usize,
    /// MLP: number of hidden layers.
    pub mlp_depth: usize,
    /// MLP: size of the sinusoidal time embedding.
    pub mlp_time_dim: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            arch: "auto".into(),
            input_shape: vec![],
            conditional: false,
            num_classes: 0,
            captions: false,
            text: TextEncoderConfig::default(),
            caption_vocab: None,
            unet: UNetConfig::default(),
            mlp_width: 256,
            mlp_depth: 3,
            mlp_time_dim: 64,
        }
    }
}

impl NetConfig {
    /// A small config for tests.
    pub fn tiny() -> Self {
        Self {
            unet: UNetConfig::tiny(),
            text: TextEncoderConfig::tiny(),
            mlp_width: 64,
            mlp_depth: 2,
            mlp_time_dim: 16,
            ..Self::default()
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        if !ARCHS.contains(&self.arch.as_str()) {
            return Err(Error::unknown("model.net.arch", &self.arch, ARCHS));
        }
        if self.arch == "unet" {
            self.unet.validate()?;
        }
        if self.captions {
            if self.conditional {
                return Err(Error::invalid(
                    "model.net",
                    "conditional (classes) and captions cannot both be on: a network takes one kind of condition",
                ));
            }
            self.text.validate()?;
            if let Some(v) = &self.caption_vocab {
                v.validate()?;
            }
        }
        if self.arch == "mlp"
            && (self.mlp_width == 0 || self.mlp_depth == 0 || self.mlp_time_dim < 2)
        {
            return Err(Error::invalid(
                "model.net",
                "mlp_width and mlp_depth must be ≥ 1 and mlp_time_dim ≥ 2",
            ));
        }
        Ok(())
    }

    /// Values a training step keeps per example (see [`crate::models::Footprint`]) for a prepared config.
    /// MLP: input, time embedding, each hidden layer before and after its activation, output. UNet: per level ℓ
    /// (side s/2^ℓ, C·mult[ℓ] channels) six maps per ResBlock on the way down and eight (concatenated skips) on
    /// the way up, and where attention applies the q, k, v, output and normalised maps plus two heads·(side²)²
    /// score matrices; the middle block at the lowest level; the input and output convolutions. The loss adds
    /// the noise, the noisy input and the target (3 × the data). Everything × 2 for the gradients.
    pub fn activations_per_example(&self) -> u64 {
        use crate::models::{sat_mul, sat_prod, sat_sum};
        let d = sat_prod(&self.input_shape);
        let net = match (self.arch.as_str(), &self.input_shape[..]) {
            ("unet", [c, h, w]) => {
                let u = &self.unet;
                let (nrb, heads) = (u.num_res_blocks as u64, u.num_heads as u64);
                let mut total = sat_mul(
                    sat_mul(*h as u64, *w as u64),
                    sat_sum([*c as u64, u.base_channels as u64]),
                );
                let mut side = *h as u64;
                let mut last = (0u64, side);
                for &m in &u.channel_mult {
                    let ch = sat_mul(u.base_channels as u64, m as u64);
                    let map = sat_mul(ch, sat_mul(side, side));
                    let res_blocks = sat_mul(map, sat_sum([sat_mul(6, nrb), sat_mul(8, nrb + 1)]));
                    let attn = if u.attention_resolutions.contains(&(side as usize)) {
                        let one = sat_sum([
                            sat_mul(5, map),
                            sat_mul(2, sat_mul(heads, sat_mul(side, side).saturating_pow(2))),
                        ]);
                        sat_mul(one, sat_sum([nrb, nrb + 1]))
                    } else {
                        0
                    };
                    total = sat_sum([total, res_blocks, attn]);
                    last = (ch, side);
                    side = (side / 2).max(1);
                }
                let (ch, side) = last;
                let map = sat_mul(ch, sat_mul(side, side));
                let middle = sat_sum([
                    sat_mul(12, map),
                    sat_mul(5, map),
                    sat_mul(2, sat_mul(heads, sat_mul(side, side).saturating_pow(2))),
                ]);
                sat_sum([total, middle])
            }
            _ => sat_sum([
                d,
                self.mlp_time_dim as u64,
                sat_mul(2, sat_mul(self.mlp_depth as u64, self.mlp_width as u64)),
                d,
            ]),
        };
        sat_mul(2, sat_sum([net, sat_mul(3, d)]))
    }

    /// What the pipeline needs to know about model `name` on `device` built from this prepared config, whose
    /// model config says `clip_denoised` and `class_dropout`: images (the UNet) are clipped when asked and
    /// clamped, vectors neither.
    pub fn denoiser_info<'a>(
        &'a self,
        name: &'a str,
        device: &'a Device,
        clip_denoised: bool,
        class_dropout: f64,
    ) -> DenoiserInfo<'a> {
        let image = self.arch == "unet";
        DenoiserInfo {
            name,
            example_shape: &self.input_shape,
            device,
            cond: self.cond_kind(),
            has_null_class: class_dropout > 0.0,
            clip_denoised: clip_denoised && image,
            clamp_samples: image,
        }
    }

    /// What a network built from this prepared config is conditioned on.
    pub fn cond_kind(&self) -> CondKind<'_> {
        match (&self.caption_vocab, self.num_classes) {
            (Some(v), _) if self.captions => CondKind::Caption(v),
            (_, k) if k > 0 => CondKind::Class(k),
            _ => CondKind::None,
        }
    }

    /// Fills the data-dependent fields and resolves `auto`.
    pub fn prepare(&mut self, data: &DataInfo) -> Result<()> {
        self.input_shape = data.example_shape.clone();
        self.caption_vocab =
            match (self.captions, &data.caption_words) {
                (false, _) => None,
                // a run that is resumed or loaded keeps the vocabulary it was trained with
                (true, _) if self.caption_vocab.is_some() => self.caption_vocab.take(),
                (true, Some(words)) if !words.is_empty() => Some(CaptionVocab {
                    words: words.clone(),
                    max_tokens: self.text.max_tokens,
                }),
                (true, _) => return Err(Error::invalid(
                    "model.net.captions",
                    "a caption model needs captions, and this data set has none (shapes has them)",
                )),
            };
        self.num_classes = match (self.conditional, data.num_classes) {
            (false, _) => 0,
            (true, Some(n)) if n > 0 => n,
            (true, _) => {
                return Err(Error::invalid(
                    "model.net.conditional",
                    "a conditional model needs class labels, and this data set has none",
                ))
            }
        };
        let image = self.input_shape.len() == 3;
        if self.arch == "auto" {
            self.arch = if image { "unet" } else { "mlp" }.into();
        }
        match (self.arch.as_str(), image) {
            ("unet", true) => {
                let (c, h, w) = (
                    self.input_shape[0],
                    self.input_shape[1],
                    self.input_shape[2],
                );
                if h != w {
                    return Err(Error::invalid(
                        "data",
                        format!("the UNet needs square images, got {h}×{w}"),
                    ));
                }
                self.unet.in_channels = c;
                self.unet.out_channels = None;
                self.unet.image_size = h;
                self.unet.num_classes = (self.num_classes > 0).then_some(self.num_classes);
            }
            ("unet", false) => {
                return Err(Error::invalid(
                    "model.net.arch",
                    format!(
                        "unet needs images, the data are vectors of shape {:?}; use mlp",
                        self.input_shape
                    ),
                ))
            }
            ("mlp", _) if self.captions => {
                return Err(Error::invalid(
                    "model.net.captions",
                    "captions condition the UNet (image data); the MLP takes class labels only",
                ))
            }
            ("mlp", _) => {}
            (other, _) => return Err(Error::unknown("model.net.arch", other, ARCHS)),
        }
        self.validate()
    }
}

/// A time-conditioned MLP for vector data: [x, emb(t), emb(y)] → (Linear → SiLU) × depth → Linear.
struct TimeMlp {
    layers: Vec<Linear>,
    out: Linear,
    class_emb: Option<Embedding>,
    num_classes: usize,
    time_dim: usize,
}

impl TimeMlp {
    fn new(cfg: &NetConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.input_shape.iter().product::<usize>();
        let class_emb = if cfg.num_classes > 0 {
            // row `num_classes` is the null class of classifier-free guidance, as in the UNet
            Some(Embedding::new(
                cfg.num_classes + 1,
                cfg.mlp_time_dim,
                vb.pp("class_emb"),
            )?)
        } else {
            None
        };
        let extra = if class_emb.is_some() {
            cfg.mlp_time_dim
        } else {
            0
        };
        let mut layers = Vec::new();
        let mut w = d + cfg.mlp_time_dim + extra;
        for i in 0..cfg.mlp_depth {
            layers.push(Linear::new(w, cfg.mlp_width, vb.pp(format!("fc{i}")))?);
            w = cfg.mlp_width;
        }
        let out = Linear::new(w, d, vb.pp("out"))?;
        Ok(Self {
            layers,
            out,
            class_emb,
            num_classes: cfg.num_classes,
            time_dim: cfg.mlp_time_dim,
        })
    }

    fn forward(&self, x: &Tensor, t: &Tensor, class: Option<&Tensor>) -> Result<Tensor> {
        let temb = timestep_embedding(t, self.time_dim)?; // (b, E)
        let mut parts = vec![x.clone(), temb];
        match (&self.class_emb, class) {
            (Some(e), Some(y)) => parts.push(e.forward(y)?),
            (Some(e), None) => {
                // no labels on a conditional net: the null class for every example
                let null = Tensor::full(self.num_classes as u32, x.dim(0)?, x.device())?;
                parts.push(e.forward(&null)?)
            }
            (None, Some(_)) => {
                return Err(Error::invalid("class", "this network is unconditional"))
            }
            (None, None) => {}
        }
        let mut h = Tensor::cat(&parts, 1)?; // (b, d + E [+ E])
        for l in &self.layers {
            h = l.forward_act(&h, Activation::Silu)?;
        }
        self.out.forward(&h) // (b, d)
    }
}

/// The denoising network of a diffusion model.
pub struct DenoiserNet {
    unet: Option<UNet>,
    mlp: Option<TimeMlp>,
    /// The caption encoder of a caption-conditional UNet.
    text: Option<TextEncoder>,
}

impl DenoiserNet {
    /// Builds the network of a prepared config.
    pub fn new(cfg: &NetConfig, vb: VarBuilder) -> Result<Self> {
        match cfg.arch.as_str() {
            "unet" => Ok(Self {
                unet: Some(UNet::new(&cfg.unet, vb.pp("unet"))?),
                mlp: None,
                text: match (cfg.captions, &cfg.caption_vocab) {
                    (false, _) => None,
                    (true, Some(v)) => Some(TextEncoder::new(
                        &cfg.text,
                        v.vocab_size(),
                        cfg.unet.embed_dim(),
                        vb.pp("text"),
                    )?),
                    (true, None) => {
                        return Err(Error::invalid(
                            "model.net.caption_vocab",
                            "a caption model needs its vocabulary: the config must be prepared",
                        ))
                    }
                },
            }),
            "mlp" => Ok(Self {
                unet: None,
                mlp: Some(TimeMlp::new(cfg, vb.pp("mlp"))?),
                text: None,
            }),
            other => Err(Error::invalid(
                "model.net.arch",
                format!("'{other}' is not resolved: the config must be prepared (unet or mlp)"),
            )),
        }
    }

    /// True for the image network.
    pub fn is_image(&self) -> bool {
        self.unet.is_some()
    }

    /// f(x, t, c), shaped like `x`. A caption model reads `Cond::None` as the empty caption, a class model
    /// as the null class.
    pub fn forward(&self, x: &Tensor, t: &Tensor, cond: &Cond) -> Result<Tensor> {
        let caption = match (&self.text, cond) {
            (Some(enc), Cond::Caption(tokens)) => Some(enc.forward(tokens)?),
            (Some(enc), Cond::None) => {
                Some(enc.forward(&empty_captions(x.dim(0)?, 1, x.device())?)?)
            }
            (Some(_), Cond::Class(_)) => {
                return Err(Error::invalid(
                    "condition",
                    "this network takes captions, not class labels",
                ))
            }
            (None, Cond::Caption(_)) => {
                return Err(Error::invalid(
                    "condition",
                    "this network takes no captions",
                ))
            }
            (None, _) => None,
        };
        match (&self.unet, &self.mlp) {
            (Some(u), _) => u.forward_with(x, t, cond.class(), caption.as_ref()),
            (None, Some(m)) => m.forward(x, t, cond.class()),
            (None, None) => Err(Error::invalid("model.net", "no network built")),
        }
    }
}
