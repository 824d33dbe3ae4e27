//! RealNVP: density estimation using Real NVP (Dinh, Sohl-Dickstein & Bengio 2017, arXiv:1605.08803).
//!
//! Affine coupling layers (§3.3): with a binary mask b, the kept part b ⊙ x passes unchanged and
//!
//!   y = b ⊙ x + (1 − b) ⊙ (x ⊙ exp(s(b ⊙ x)) + t(b ⊙ x)),   log|det ∂y/∂x| = Σ (1 − b) ⊙ s(b ⊙ x)   (eq. 9)
//!
//! so the Jacobian is triangular and the inverse costs one pass: x = b ⊙ y + (1 − b) ⊙ (y − t) ⊙ exp(−s).
//! Masks (§3.4): a spatial checkerboard and a channel split, alternated so every value gets transformed.
//! Multi-scale architecture (§3.6), per level: 3 checkerboard couplings, a squeeze (c, h, w) → (4c, h/2, w/2),
//! 3 channel couplings, then half of the channels are factored out into z; the last level has 4 checkerboard
//! couplings. Pixels enter as y = logit(α + (1 − 2α) x) with α = 0.05 (§4.1), its log-determinant counted.
//! For vectors (2-D toys) the flow is `vector_couplings` half-split couplings, alternating halves.
//!
//! Deviations: the couplings' s and t come from a small CNN (Glow's: 3×3 conv, 1×1 conv, 3×3 conv started at
//! zero) instead of deep ResNets with weight normalisation, s = tanh(·) (the paper scales a tanh too), and
//! ActNorm (optional, on by default) stands in for the paper's batch normalisation, whose test-time statistics
//! would make the likelihood depend on the batch.

use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::dequant::{DequantConfig, VariationalDequantizer};
use super::layers::{ActNorm, AffineCoupling, CouplingMask, CouplingScale, Logit};
use super::{FlowBuilder, FlowModel};
use crate::models::DataInfo;
use crate::{Error, Result};

/// RealNVP hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealNvpConfig {
    /// Shape of one example (`[c, h, w]` or `[d]`; filled by [`prepare`]).
    pub example_shape: Vec<usize>,
    /// Scales of the multi-scale architecture (images): each but the last squeezes once, so h and w must be
    /// divisible by 2^(levels − 1).
    pub levels: usize,
    /// Channels (images) or units (vectors) of each coupling's conditioner.
    pub hidden: usize,
    /// Number of couplings for vector data.
    pub vector_couplings: usize,
    /// How the conditioner's output becomes a scale: `exp_tanh` (RealNVP) or `sigmoid` (Glow).
    pub coupling_scale: String,
    /// An ActNorm before every coupling (in place of the paper's batch normalisation).
    pub actnorm: bool,
    /// α of the logit preprocessing of pixels.
    pub logit_alpha: f64,
    /// How 8-bit pixels become continuous values: uniform noise from the data loader, or learned noise
    /// (variational dequantization, Flow++; see [`super::dequant`]).
    pub dequantization: DequantConfig,
}

impl Default for RealNvpConfig {
    fn default() -> Self {
        Self {
            example_shape: Vec::new(),
            levels: 2,
            hidden: 64,
            vector_couplings: 8,
            coupling_scale: "exp_tanh".into(),
            actnorm: true,
            logit_alpha: 0.05,
            dequantization: DequantConfig::default(),
        }
    }
}

impl RealNvpConfig {
    /// A small config for tests (data fields still to be filled by [`prepare`]).
    pub fn tiny() -> Self {
        Self {
            hidden: 8,
            vector_couplings: 4,
            ..Self::default()
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        super::check_shape(&self.example_shape)?;
        self.dequantization.validate()?;
        if self.levels == 0 {
            return Err(Error::invalid("model.levels", "must be at least 1"));
        }
        if self.hidden == 0 {
            return Err(Error::invalid("model.hidden", "must be at least 1"));
        }
        if self.vector_couplings == 0 {
            return Err(Error::invalid(
                "model.vector_couplings",
                "must be at least 1",
            ));
        }
        CouplingScale::parse("model.coupling_scale", &self.coupling_scale)?;
        super::check_logit_alpha(self.logit_alpha)?;
        Ok(())
    }
}

/// A RealNVP: builds the flow of `cfg` with variables from `vb`.
pub fn new(cfg: &RealNvpConfig, vb: VarBuilder) -> Result<FlowModel> {
    cfg.validate()?;
    let scale = CouplingScale::parse("model.coupling_scale", &cfg.coupling_scale)?;
    let mut f = FlowBuilder::new(&cfg.example_shape);
    let mut n = 0; // coupling counter, for variable names
    let mut coupling = |f: &mut FlowBuilder, mask: CouplingMask, flip: bool| -> Result<()> {
        let vb = vb.pp(format!("coupling{n}"));
        n += 1;
        if cfg.actnorm {
            f.push(ActNorm::new(f.shape()[0], vb.pp("actnorm"))?);
        }
        f.push(AffineCoupling::new(
            f.shape(),
            mask,
            flip,
            scale,
            cfg.hidden,
            vb,
        )?);
        Ok(())
    };
    let pre = if cfg.example_shape.len() == 1 {
        for i in 0..cfg.vector_couplings {
            coupling(&mut f, CouplingMask::Half, i % 2 == 1)?;
        }
        None
    } else {
        for level in 0..cfg.levels {
            let last = level + 1 == cfg.levels;
            for i in 0..if last { 4 } else { 3 } {
                coupling(&mut f, CouplingMask::Checkerboard, i % 2 == 1)?;
            }
            if !last {
                f.squeeze("model.levels")?;
                for i in 0..3 {
                    coupling(&mut f, CouplingMask::Channel, i % 2 == 1)?;
                }
                f.split()?;
            }
        }
        Some(Logit::Logit(cfg.logit_alpha))
    };
    let deq = match cfg.dequantization.variational() {
        true => Some(VariationalDequantizer::new(
            &cfg.example_shape,
            &cfg.dequantization,
            vb.pp("dequant"),
        )?),
        false => None,
    };
    Ok(FlowModel::new("realnvp", pre, f.build(), vb.device(), vb.dtype()).with_dequantizer(deq))
}

/// Fills `example_shape` from the data and checks that RealNVP can model them (dequantized pixels in
/// [0, 1], or vectors), including that the image size allows the levels' squeezes.
pub fn prepare(cfg: &mut RealNvpConfig, data: &DataInfo) -> Result<()> {
    super::check_data(
        "realnvp",
        data,
        Logit::Logit(cfg.logit_alpha),
        Some(&cfg.dequantization),
    )?;
    cfg.example_shape = data.example_shape.clone();
    cfg.validate()?;
    check_levels(&cfg.example_shape, cfg.levels - 1)
}

/// Refuses images whose height and width are not divisible by 2^`squeezes`, naming `model.levels`.
pub fn check_levels(shape: &[usize], squeezes: usize) -> Result<()> {
    if let [_, h, w] = shape {
        let k = 1usize << squeezes.min(30);
        if h % k != 0 || w % k != 0 {
            return Err(Error::invalid(
                "model.levels",
                format!(
                    "{} levels squeeze {squeezes} time(s), so the image size must be divisible by {k}, but it is {h}×{w}: use fewer levels",
                    squeezes + 1
                ),
            ));
        }
    }
    Ok(())
}

/// Values one training example keeps alive in a step: per coupling, the conditioner's hidden activations
/// (two layers of `hidden` at the coupling's resolution, with their ReLUs) and about six copies of the
/// activations (input, output, scale, shift, products), plus the same for ActNorm.
pub fn footprint(cfg: &RealNvpConfig) -> crate::models::Footprint {
    use crate::models::sat_mul;
    let d: u64 = cfg.example_shape.iter().map(|&v| v as u64).product();
    let positions = match cfg.example_shape[..] {
        [c, _, _] => d / c.max(1) as u64,
        _ => 1,
    };
    let couplings = match cfg.example_shape.len() {
        1 => cfg.vector_couplings as u64,
        _ => 6 * cfg.levels as u64 + 1,
    };
    // squeezes keep h·w·c constant and shrink the positions: the first level's count bounds the others
    let per = 4 * cfg.hidden as u64 * positions + 8 * d;
    crate::models::Footprint {
        buffers: 0,
        activations_per_example: sat_mul(couplings, per),
    }
}
