//! The VAE family's config: [`VaeConfig`], the presets `vae` / `iwae` / `cvae`, and [`prepare`], which fills
//! the data-dependent fields and picks the observation model that fits the data's preprocessing.

use serde::{Deserialize, Serialize};

use super::decoders::DECODERS;
use crate::data::{Preprocessing, Range};
use crate::models::DataInfo;
use crate::{Error, Result};

/// The preset names.
pub const PRESETS: &[&str] = &["vae", "iwae", "cvae"];
/// Encoder / decoder architectures.
pub const ARCHS: &[&str] = &["mlp", "conv"];
/// Training objectives.
pub const OBJECTIVES: &[&str] = &["elbo", "iwae"];
/// Hidden-layer activations.
pub const ACTIVATIONS: &[&str] = &["relu", "silu", "tanh"];

/// VAE hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaeConfig {
    /// Shape of one example, `[c, h, w]` or `[d]`; filled by [`prepare`] from the data.
    pub input_shape: Vec<usize>,
    /// Condition encoder and decoder on the class label (CVAE).
    pub conditional: bool,
    /// Number of classes of a conditional model (0 when unconditional); filled by [`prepare`].
    pub num_classes: usize,
    /// Encoder / decoder architecture: `mlp` or `conv`.
    pub arch: String,
    /// MLP hidden sizes of the encoder; the decoder uses them reversed.
    pub hidden: Vec<usize>,
    /// Conv encoder channels, one stride-2 3×3 stage each; the decoder mirrors them (nearest ×2 + conv).
    pub channels: Vec<usize>,
    /// Size of the latent code z.
    pub latent_dim: usize,
    /// Hidden-layer activation: `relu`, `silu` or `tanh`.
    pub activation: String,
    /// Observation model: `auto` (from the preprocessing), `bernoulli`, `gaussian` or `logistic`.
    pub decoder: String,
    /// Pixel range of the logistic decoder's 256 levels; filled by [`prepare`] from the preprocessing.
    pub pixel_range: Range,
    /// Weight of the KL term in the `elbo` objective (1 = ELBO, > 1 = β-VAE).
    pub beta: f64,
    /// Training objective: `elbo` or `iwae`.
    pub objective: String,
    /// Samples of z per example in the training objective (the IWAE k).
    pub k: usize,
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            input_shape: vec![],
            conditional: false,
            num_classes: 0,
            arch: "mlp".into(),
            hidden: vec![512, 512],
            channels: vec![32, 64],
            latent_dim: 32,
            activation: "relu".into(),
            decoder: "auto".into(),
            pixel_range: Range::ZeroOne,
            beta: 1.0,
            objective: "elbo".into(),
            k: 1,
        }
    }
}

/// The config of preset `name`: `vae` (MLP, ELBO), `iwae` (same, IWAE k = 5), `cvae` (class-conditional VAE).
pub fn preset(name: &str) -> Result<VaeConfig> {
    let base = VaeConfig::default();
    match name {
        "vae" => Ok(base),
        "iwae" => Ok(VaeConfig {
            objective: "iwae".into(),
            k: 5,
            ..base
        }),
        "cvae" => Ok(VaeConfig {
            conditional: true,
            ..base
        }),
        other => Err(Error::unknown("model", other, PRESETS)),
    }
}

/// Fills the data-dependent fields (input shape, number of classes, logistic pixel range), resolves
/// `decoder = "auto"` from the preprocessing and rejects observation models that do not fit the data.
pub fn prepare(cfg: &mut VaeConfig, data: &DataInfo) -> Result<()> {
    cfg.input_shape = data.example_shape.clone();
    cfg.num_classes = match (cfg.conditional, data.num_classes) {
        (false, _) => 0,
        (true, Some(n)) if n > 0 => n,
        (true, _) => {
            return Err(Error::invalid(
                "model.conditional",
                "a conditional VAE needs class labels, and this data set has none",
            ))
        }
    };
    let p = &data.preprocessing;
    let fits = match (cfg.decoder.as_str(), p) {
        ("auto", Preprocessing::Binarize { .. }) => "bernoulli",
        (
            "auto",
            Preprocessing::Scale {
                dequantize: false, ..
            },
        ) => "logistic",
        ("auto", _) => "gaussian",
        ("bernoulli", Preprocessing::Binarize { .. }) => "bernoulli",
        (
            "logistic",
            Preprocessing::Scale {
                dequantize: false, ..
            },
        ) => "logistic",
        ("gaussian", Preprocessing::Scale { .. } | Preprocessing::Identity) => "gaussian",
        ("bernoulli" | "logistic" | "gaussian", _) => {
            let needs = match cfg.decoder.as_str() {
                "bernoulli" => "binarized pixels (preprocessing kind = binarize)",
                "logistic" => {
                    "8-bit pixels scaled without dequantization (kind = scale, dequantize = false)"
                }
                _ => "continuous values (scaled pixels or raw points), not binarized pixels",
            };
            let msg = format!(
                "decoder '{}' needs {needs}; the data are {}. Use decoder = auto to pick the matching one",
                cfg.decoder,
                p.describe()
            );
            return Err(Error::invalid("model.decoder", msg));
        }
        (other, _) => {
            return Err(Error::unknown(
                "model.decoder",
                other,
                &["auto", "bernoulli", "gaussian", "logistic"],
            ))
        }
    };
    cfg.decoder = fits.into();
    if let Preprocessing::Scale { range, .. } = p {
        cfg.pixel_range = *range;
    }
    validate(cfg)
}

/// The memory estimate of a (prepared) config, in f32 values (see [`crate::models::Footprint`]). Per example:
/// the input, the encoder's layers (MLP: `hidden`; conv: `channels[i]` maps at 1/2^(i+1) of the size) and the
/// 2·latent_dim Gaussian parameters; then `k` times the decoder (latent, the layers mirrored, twice for the conv
/// decoder's up-sampling, and two values per data value of the observation model); all × 2 for the gradients.
pub fn footprint(cfg: &VaeConfig) -> crate::models::Footprint {
    use crate::models::{sat_mul, sat_prod, sat_sum};
    let d = sat_prod(&cfg.input_shape);
    let l = cfg.latent_dim as u64;
    let (enc, dec) = match (cfg.arch.as_str(), &cfg.input_shape[..]) {
        ("conv", [_, h, w]) => {
            let mut side = sat_mul(*h as u64, *w as u64);
            let mut e = 0u64;
            for &ch in &cfg.channels {
                side /= 4;
                e = e.saturating_add(sat_mul(ch as u64, side));
            }
            (e, sat_mul(e, 2))
        }
        _ => {
            let e = sat_sum(cfg.hidden.iter().map(|&h| h as u64));
            (e, e)
        }
    };
    let encoder = sat_sum([d, enc, sat_mul(2, l)]);
    let decoder = sat_sum([l, dec, sat_mul(2, d)]);
    crate::models::Footprint {
        buffers: 0,
        activations_per_example: sat_mul(2, encoder.saturating_add(sat_mul(cfg.k as u64, decoder))),
    }
}

/// Checks a (prepared) config, naming the bad value and the valid options.
pub(super) fn validate(cfg: &VaeConfig) -> Result<()> {
    let check = |key: &'static str, v: &str, opts: &[&str]| {
        if opts.contains(&v) {
            Ok(())
        } else {
            Err(Error::unknown(key, v, opts))
        }
    };
    check("model.arch", &cfg.arch, ARCHS)?;
    check("model.objective", &cfg.objective, OBJECTIVES)?;
    check("model.activation", &cfg.activation, ACTIVATIONS)?;
    if cfg.decoder == "auto" {
        return Err(Error::invalid("model.decoder", "'auto' is resolved from the data by prepare; set bernoulli, gaussian or logistic to build the model directly"));
    }
    check("model.decoder", &cfg.decoder, DECODERS)?;
    let bad = |key: &str, msg: String| Err(Error::invalid(key, msg));
    if cfg.input_shape.is_empty() || cfg.input_shape.contains(&0) {
        return bad("model.input_shape", format!("{:?}: expected [c, h, w] or [d] with every size ≥ 1 (prepare fills it from the data)", cfg.input_shape));
    }
    if cfg.latent_dim == 0 || cfg.k == 0 || cfg.hidden.contains(&0) || cfg.channels.contains(&0) {
        return bad(
            "model",
            format!(
                "latent_dim ({}), k ({}), hidden {:?} and channels {:?} must all be ≥ 1",
                cfg.latent_dim, cfg.k, cfg.hidden, cfg.channels
            ),
        );
    }
    if !(cfg.beta.is_finite() && cfg.beta >= 0.0) {
        return bad(
            "model.beta",
            format!("{}: must be a finite number ≥ 0", cfg.beta),
        );
    }
    if cfg.objective == "iwae" && cfg.beta != 1.0 {
        return bad(
            "model.beta",
            format!(
                "{}: the iwae objective has no KL weight; use beta = 1 or objective = elbo",
                cfg.beta
            ),
        );
    }
    if cfg.conditional != (cfg.num_classes > 0) {
        return bad("model.num_classes", format!("{} with conditional = {}: a conditional model needs ≥ 1 class, an unconditional one 0", cfg.num_classes, cfg.conditional));
    }
    if cfg.arch == "conv" {
        let s = 1usize << cfg.channels.len().min(16);
        match cfg.input_shape[..] {
            [_, h, w] if h % s == 0 && w % s == 0 && (1..=16).contains(&cfg.channels.len()) => {}
            _ => return bad("model.input_shape", format!("{:?}: the conv arch needs [c, h, w] images with h and w divisible by 2^{} (one halving per entry of channels {:?}, 1 to 16 stages)", cfg.input_shape, cfg.channels.len(), cfg.channels)),
        }
    }
    Ok(())
}
