//! Glow: generative flow with invertible 1×1 convolutions (Kingma & Dhariwal 2018, arXiv:1807.03039).
//!
//! One step of flow (§3, Table 1) is three invertible layers:
//!
//!   ActNorm        y = s ⊙ (x + b)                      log|det| = h·w·Σ log|s|
//!   1×1 conv       y = W x at every pixel              log|det| = h·w·log|det W| = h·w·Σ log|s_W|
//!   coupling       y_b = x_b ⊙ σ(h(x_a) + 2) + t(x_a)   log|det| = Σ log σ(h(x_a) + 2)
//!
//! with ActNorm initialised from the first batch so its outputs have zero mean and unit variance per channel
//! (done once by the trainer before the first step of a new run and saved with the weights), and W in the LU
//! parameterisation W = P L (U + diag(sign ⊙ exp(log_s))) (eq. 10) with P and the signs fixed. The
//! multi-scale architecture (RealNVP's): per level a squeeze, K steps, and (but for the last level) half of
//! the channels factored out into z. Pixels in [0, 1] enter shifted to [−½, ½] (`preprocess = "shift"`, the
//! paper's) or through RealNVP's logit (`"logit"`). Sampling takes a temperature T: z ~ N(0, T²I) (§5.2).
//!
//! Deviations: the factored-out halves and the top have a standard normal prior (the paper learns a
//! conditional Gaussian prior for each split from the remaining half); the coupling scales before it
//! shifts, as RealNVP (the paper's y_b = (x_b + t) ⊙ σ(h + 2)); MNIST is modelled at its
//! own 28×28×1 (the paper pads to 32×32 and tiles to 3 channels), so 28×28 allows 2 levels.
//! For vectors (2-D toys) the flow is K steps of ActNorm, a d×d invertible linear map and a half-split
//! coupling.

use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::dequant::{DequantConfig, VariationalDequantizer};
use super::layers::{ActNorm, AffineCoupling, CouplingMask, CouplingScale, InvConv1x1, Logit};
use super::realnvp::check_levels;
use super::{FlowBuilder, FlowModel};
use crate::models::DataInfo;
use crate::{Error, Result};

/// How Glow's pixels in [0, 1] enter the flow.
pub const PREPROCESS: &[&str] = &["shift", "logit"];

/// Glow hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GlowConfig {
    /// Shape of one example (`[c, h, w]` or `[d]`; filled by [`prepare`]).
    pub example_shape: Vec<usize>,
    /// Levels L of the multi-scale architecture (images): each squeezes once, so h and w must be divisible
    /// by 2^L.
    pub levels: usize,
    /// Steps of flow K per level (images), or in all (vectors).
    pub steps: usize,
    /// Channels (images) or units (vectors) of each coupling's conditioner.
    pub hidden: usize,
    /// How the conditioner's output becomes a scale: `sigmoid` (Glow) or `exp_tanh` (RealNVP).
    pub coupling_scale: String,
    /// How pixels enter the flow: `shift` (x − ½, the paper's) or `logit` (RealNVP's).
    pub preprocess: String,
    /// α of the `logit` preprocessing.
    pub logit_alpha: f64,
    /// How 8-bit pixels become continuous values: uniform noise from the data loader, or learned noise
    /// (variational dequantization, Flow++; see [`super::dequant`]).
    pub dequantization: DequantConfig,
    /// Seed of the 1×1 convolutions' fixed parts (the random rotation they start from), so a reloaded model
    /// rebuilds the same P and signs.
    pub conv_seed: u64,
}

impl Default for GlowConfig {
    fn default() -> Self {
        Self {
            example_shape: Vec::new(),
            levels: 2,
            steps: 8,
            hidden: 64,
            coupling_scale: "sigmoid".into(),
            preprocess: "shift".into(),
            logit_alpha: 0.05,
            dequantization: DequantConfig::default(),
            conv_seed: 0,
        }
    }
}

impl GlowConfig {
    /// A small config for tests (data fields still to be filled by [`prepare`]).
    pub fn tiny() -> Self {
        Self {
            steps: 2,
            hidden: 8,
            ..Self::default()
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        super::check_shape(&self.example_shape)?;
        self.dequantization.validate()?;
        for (what, v) in [
            ("model.levels", self.levels),
            ("model.steps", self.steps),
            ("model.hidden", self.hidden),
        ] {
            if v == 0 {
                return Err(Error::invalid(what, "must be at least 1"));
            }
        }
        CouplingScale::parse("model.coupling_scale", &self.coupling_scale)?;
        self.pre()?;
        Ok(())
    }

    /// The preprocessing layer of images.
    fn pre(&self) -> Result<Logit> {
        match self.preprocess.as_str() {
            "shift" => Ok(Logit::Shift),
            "logit" => {
                super::check_logit_alpha(self.logit_alpha)?;
                Ok(Logit::Logit(self.logit_alpha))
            }
            other => Err(Error::unknown("model.preprocess", other, PREPROCESS)),
        }
    }
}

/// A Glow: builds the flow of `cfg` with variables from `vb`.
pub fn new(cfg: &GlowConfig, vb: VarBuilder) -> Result<FlowModel> {
    cfg.validate()?;
    let scale = CouplingScale::parse("model.coupling_scale", &cfg.coupling_scale)?;
    let mut f = FlowBuilder::new(&cfg.example_shape);
    let mut n = 0; // step counter, for variable names
    let mut step = |f: &mut FlowBuilder, mask: CouplingMask| -> Result<()> {
        let vb = vb.pp(format!("step{n}"));
        n += 1;
        let c = f.shape()[0];
        f.push(ActNorm::new(c, vb.pp("actnorm"))?);
        f.push(InvConv1x1::new(c, cfg.conv_seed, vb.pp("invconv"))?);
        f.push(AffineCoupling::new(
            f.shape(),
            mask,
            false,
            scale,
            cfg.hidden,
            vb.pp("coupling"),
        )?);
        Ok(())
    };
    let pre = if cfg.example_shape.len() == 1 {
        for _ in 0..cfg.steps {
            step(&mut f, CouplingMask::Half)?;
        }
        None
    } else {
        for level in 0..cfg.levels {
            f.squeeze("model.levels")?;
            for _ in 0..cfg.steps {
                step(&mut f, CouplingMask::Channel)?;
            }
            if level + 1 < cfg.levels {
                f.split()?;
            }
        }
        Some(cfg.pre()?)
    };
    let deq = match cfg.dequantization.variational() {
        true => Some(VariationalDequantizer::new(
            &cfg.example_shape,
            &cfg.dequantization,
            vb.pp("dequant"),
        )?),
        false => None,
    };
    Ok(FlowModel::new("glow", pre, f.build(), vb.device(), vb.dtype()).with_dequantizer(deq))
}

/// Fills `example_shape` from the data and checks that Glow can model them (dequantized pixels in [0, 1],
/// or vectors of at least 2 dimensions), including that the image size allows the levels' squeezes.
pub fn prepare(cfg: &mut GlowConfig, data: &DataInfo) -> Result<()> {
    super::check_data("glow", data, cfg.pre()?, Some(&cfg.dequantization))?;
    cfg.example_shape = data.example_shape.clone();
    cfg.validate()?;
    check_levels(&cfg.example_shape, cfg.levels)
}

/// Values one training example keeps alive in a step: per step of flow, the conditioner's hidden activations
/// (two layers of `hidden` at the level's resolution, with their ReLUs) and about ten copies of the
/// activations (ActNorm, 1×1 conv and coupling inputs and outputs, scale, shift).
pub fn footprint(cfg: &GlowConfig) -> crate::models::Footprint {
    use crate::models::sat_mul;
    let d: u64 = cfg.example_shape.iter().map(|&v| v as u64).product();
    let (steps, positions) = match cfg.example_shape[..] {
        // the first level (h/2 × w/2 positions) bounds the others
        [c, _, _] => ((cfg.levels * cfg.steps) as u64, d / (4 * c.max(1)) as u64),
        _ => (cfg.steps as u64, 1),
    };
    crate::models::Footprint {
        buffers: 0,
        activations_per_example: sat_mul(steps, 4 * cfg.hidden as u64 * positions + 10 * d),
    }
}
