//! Neural spline flows (Durkan, Bekasov, Murray & Papamakarios 2019, arXiv:1906.04032).
//!
//! Every transform is elementwise monotone rational-quadratic spline g_θ ([`super::spline`], §3.1) of K
//! bins on [−B, B] with linear (identity) tails outside, whose 3K − 1 parameters per transformed value come
//! from a network:
//!
//! * `transform = "coupling"` (RQ-NSF (C), §3.2): the input is split in two halves along the channels
//!   (images) or dimensions (vectors); the kept half x_a passes unchanged and
//!
//!     y_b = g_θ(x_b),  θ = NN(x_a),   log|det ∂y/∂x| = Σ_i log g'_θi(x_bi)
//!
//!   with NN an MLP for vectors (two hidden layers of `hidden` ReLU units) and Glow's CNN for images (3×3
//!   conv, ReLU, 1×1 conv, ReLU, 3×3 conv, `hidden` channels); the kept half alternates between steps. The
//!   inverse is one pass, x_b = g_θ⁻¹(y_b).
//! * `transform = "autoregressive"` (RQ-NSF (AR), §3.3): y_i = g_θi(x_i) with θ_i = MADE(x_{<i}), one MADE
//!   (two hidden layers of `hidden` units, [`super::maf::Made`]) outputting 3K − 1 parameters per value,
//!   over the D values of an example (images flattened in raster order), the order reversed between
//!   steps. Density in one pass, sampling in D passes.
//!
//! A step is an optional ActNorm (Glow §3.1), an optional invertible linear map (`linear`: Glow's LU 1×1
//! convolution over the channels of images, a d × d LU linear map for vectors; the paper alternates its
//! transforms with such LU linear layers) and the transform. Vectors: `steps` steps. Images, coupling:
//! Glow's multi-scale architecture, per level a squeeze, `steps` steps and (but for the last level) half
//! of the channels factored out into z (as in the paper's image experiments). Images, autoregressive: a
//! flat stack of `steps` steps over the D = c·h·w values (no squeeze). Pixels enter through RealNVP's
//! logit y = logit(α + (1 − 2α) x). The base is a standard normal.
//!
//! The last layer of every network starts at zero, so all parameters are 0 and each spline is the identity
//! (uniform bins, unit derivatives; see [`super::spline`]): every step starts as the identity (up to the
//! LU map's random rotation). Deviations: no residual blocks, dropout or batch norm in the conditioners;
//! standard normal priors for the factored-out halves (Glow's learned conditional priors are not used).

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{ActNorm, Bijection, Conditioner, InvConv1x1, Logit};
use super::maf::made_footprint;
use super::maf::{Autoregressive, Elementwise};
use super::realnvp::check_levels;
use super::spline::{rq_spline_forward, rq_spline_inverse, SplineSettings};
use super::{check_logit_alpha, check_shape};
use super::{FlowBuilder, FlowModel};
use crate::models::DataInfo;
use crate::{Error, Result};

/// The transforms an NSF is made of.
pub const TRANSFORMS: &[&str] = &["coupling", "autoregressive"];

/// NSF hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NsfConfig {
    /// Shape of one example (`[c, h, w]` or `[d]`; filled by [`prepare`]).
    pub example_shape: Vec<usize>,
    /// `coupling` (RQ-NSF (C)) or `autoregressive` (RQ-NSF (AR)).
    pub transform: String,
    /// Steps per level (images, coupling) or in all.
    pub steps: usize,
    /// Levels of the multi-scale architecture (images, coupling): each squeezes once, so h and w must be
    /// divisible by 2^levels.
    pub levels: usize,
    /// Units (MLP, MADE: two hidden layers) or channels (CNN) of each step's network.
    pub hidden: usize,
    /// K, the number of spline bins.
    pub bins: usize,
    /// B: the splines act on [−B, B] and are the identity outside.
    pub tail_bound: f64,
    /// An ActNorm at the start of every step.
    pub actnorm: bool,
    /// An invertible LU linear map (1×1 convolution on images) before every transform.
    pub linear: bool,
    /// Seed of the fixed random parts: the LU maps' starting rotations and the MADEs' hidden degrees.
    pub seed: u64,
    /// α of the logit preprocessing of pixels.
    pub logit_alpha: f64,
}

impl Default for NsfConfig {
    fn default() -> Self {
        Self {
            example_shape: Vec::new(),
            transform: "coupling".into(),
            steps: 4,
            levels: 2,
            hidden: 64,
            bins: 8,
            tail_bound: 3.0,
            actnorm: true,
            linear: true,
            seed: 0,
            logit_alpha: 0.05,
        }
    }
}

impl NsfConfig {
    /// A small config for tests (data fields still to be filled by [`prepare`]).
    pub fn tiny() -> Self {
        Self {
            steps: 2,
            hidden: 8,
            bins: 4,
            ..Self::default()
        }
    }

    /// The spline settings (bins and tail bound; the least bin sizes and derivative are the spline
    /// module's defaults).
    pub fn spline(&self) -> SplineSettings {
        SplineSettings {
            bins: self.bins,
            tail_bound: self.tail_bound,
            ..SplineSettings::default()
        }
    }

    /// Whether the transform is the coupling one (else autoregressive).
    fn coupling(&self) -> Result<bool> {
        match self.transform.as_str() {
            "coupling" => Ok(true),
            "autoregressive" => Ok(false),
            other => Err(Error::unknown("model.transform", other, TRANSFORMS)),
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        check_shape(&self.example_shape)?;
        let coupling = self.coupling()?;
        for (what, v) in [
            ("model.steps", self.steps),
            ("model.levels", self.levels),
            ("model.hidden", self.hidden),
        ] {
            if v == 0 {
                return Err(Error::invalid(what, "must be at least 1"));
            }
        }
        self.spline().validate().map_err(|e| match e {
            Error::InvalidValue { key, msg } => Error::invalid(format!("model.{key}"), msg),
            e => e,
        })?;
        if coupling && self.example_shape.len() == 1 && self.example_shape[0] < 2 {
            return Err(Error::invalid(
                "model.transform",
                format!(
                    "a coupling splits the values in two, but the examples have shape {:?}; use transform = \"autoregressive\"",
                    self.example_shape
                ),
            ));
        }
        check_logit_alpha(self.logit_alpha)
    }
}

/// An NSF: builds the flow of `cfg` with variables from `vb` (`step{n}.{actnorm,linear,coupling,made}.*`).
pub fn new(cfg: &NsfConfig, vb: VarBuilder) -> Result<FlowModel> {
    cfg.validate()?;
    let coupling = cfg.coupling()?;
    let spline = cfg.spline();
    let image = cfg.example_shape.len() > 1;
    let mut f = FlowBuilder::new(&cfg.example_shape);
    let mut n = 0; // step counter, for variable names and alternation
    let mut step = |f: &mut FlowBuilder| -> Result<()> {
        let vb = vb.pp(format!("step{n}"));
        let c = f.shape()[0];
        if cfg.actnorm {
            f.push(ActNorm::new(c, vb.pp("actnorm"))?);
        }
        if cfg.linear {
            f.push(InvConv1x1::new(c, cfg.seed, vb.pp("linear"))?);
        }
        if coupling {
            f.push(SplineCoupling::new(
                f.shape(),
                n % 2 == 1,
                cfg.hidden,
                spline,
                vb.pp("coupling"),
            )?);
        } else {
            f.push(Autoregressive::new(
                f.shape(),
                n % 2 == 1,
                &[cfg.hidden, cfg.hidden],
                Elementwise::Spline(spline),
                cfg.seed,
                vb.pp("made"),
            )?);
        }
        n += 1;
        Ok(())
    };
    if image && coupling {
        for level in 0..cfg.levels {
            f.squeeze("model.levels")?;
            for _ in 0..cfg.steps {
                step(&mut f)?;
            }
            if level + 1 < cfg.levels {
                f.split()?;
            }
        }
    } else {
        for _ in 0..cfg.steps {
            step(&mut f)?;
        }
    }
    let pre = image.then_some(Logit::Logit(cfg.logit_alpha));
    Ok(FlowModel::new(
        "nsf",
        pre,
        f.build(),
        vb.device(),
        vb.dtype(),
    ))
}

/// Fills `example_shape` from the data and checks that NSF can model them (dequantized pixels in [0, 1],
/// or vectors), including that the image size allows the coupling levels' squeezes.
pub fn prepare(cfg: &mut NsfConfig, data: &DataInfo) -> Result<()> {
    super::check_data("nsf", data, Logit::Logit(cfg.logit_alpha), None)?;
    cfg.example_shape = data.example_shape.clone();
    cfg.validate()?;
    if cfg.coupling()? {
        check_levels(&cfg.example_shape, cfg.levels)?;
    }
    Ok(())
}

/// Buffers: the MADEs' masks (autoregressive). Activations per example: per step, the network's hidden
/// activations, its 3K − 1 outputs per transformed value and about sixteen copies of them inside the
/// spline (knots, bin quantities), and about ten copies of the D values (ActNorm, linear map, transform).
pub fn footprint(cfg: &NsfConfig) -> crate::models::Footprint {
    use crate::models::{sat_mul, sat_sum};
    let d = crate::models::sat_prod(&cfg.example_shape);
    let p = (3 * cfg.bins).saturating_sub(1) as u64;
    let h = cfg.hidden as u64;
    let (buffers, per_step, steps) = match (cfg.transform.as_str(), &cfg.example_shape[..]) {
        ("autoregressive", _) => {
            let (masks, act) = made_footprint(d, &[cfg.hidden, cfg.hidden], p, 10);
            let spline = sat_mul(16, sat_mul(d, p));
            (
                sat_mul(cfg.steps as u64, masks),
                sat_sum([act, spline]),
                cfg.steps as u64,
            )
        }
        (_, [c, _, _]) => {
            // the first level (h/2 × w/2 positions) bounds the others
            let positions = d / (4 * (*c).max(1) as u64);
            let net = sat_mul(4, sat_mul(h, positions));
            let spline = sat_mul(17, sat_mul(d / 2, p));
            (
                0,
                sat_sum([net, spline, sat_mul(10, d)]),
                sat_mul(cfg.levels as u64, cfg.steps as u64),
            )
        }
        _ => {
            let spline = sat_mul(17, sat_mul(d / 2 + 1, p));
            (
                0,
                sat_sum([sat_mul(4, h), spline, sat_mul(10, d)]),
                cfg.steps as u64,
            )
        }
    };
    crate::models::Footprint {
        buffers,
        activations_per_example: sat_mul(steps, per_step),
    }
}

/// A rational-quadratic spline coupling over a channel (images) or dimension (vectors) split: ⌊c/2⌋
/// kept first, or ⌈c/2⌉ kept last when flipped.
pub struct SplineCoupling {
    flip: bool,
    net: Conditioner,
    spline: SplineSettings,
}

impl SplineCoupling {
    /// A coupling over inputs of shape `shape` (`[c, h, w]` or `[d]`, c or d ≥ 2) with `hidden`
    /// conditioner units; variables `net.{0,1,2}.{weight,bias}`, the last zero.
    pub fn new(
        shape: &[usize],
        flip: bool,
        hidden: usize,
        spline: SplineSettings,
        vb: VarBuilder,
    ) -> Result<Self> {
        let c = shape[0];
        if c < 2 || !(shape.len() == 1 || shape.len() == 3) {
            return Err(Error::invalid(
                "coupling",
                format!("a spline coupling splits dim 1 in two and needs [c, h, w] or [d] with c, d ≥ 2, got shape {shape:?}"),
            ));
        }
        let (a, b) = split_sizes(c, flip);
        let p = spline.params_per_dim();
        let net = Conditioner::new(shape.len() == 3, a, hidden, b * p, vb)?;
        Ok(Self { flip, net, spline })
    }

    fn apply(&self, x: &Tensor, inverse: bool) -> Result<(Tensor, Tensor)> {
        let (bsz, c) = (x.dim(0)?, x.dim(1)?);
        let (a, b) = split_sizes(c, self.flip);
        let (kept, other) = if self.flip {
            (x.narrow(1, b, a)?, x.narrow(1, 0, b)?)
        } else {
            (x.narrow(1, 0, a)?, x.narrow(1, a, b)?)
        };
        let p = self.spline.params_per_dim();
        let h = self.net.forward(&kept)?;
        // (b, cb·P, …) → (b, cb·positions, P): channel j's P parameters sit at channels j·P..(j + 1)·P
        let params = if x.rank() == 4 {
            let (hh, ww) = (x.dim(2)?, x.dim(3)?);
            h.reshape((bsz, b, p, hh, ww))?
                .permute((0, 1, 3, 4, 2))?
                .reshape((bsz, b * hh * ww, p))?
        } else {
            h.reshape((bsz, b, p))?
        };
        let flat = other.reshape((bsz, ()))?;
        let (y, lad) = if inverse {
            rq_spline_inverse(&flat, &params, &self.spline)?
        } else {
            rq_spline_forward(&flat, &params, &self.spline)?
        };
        let y = y.reshape(other.shape())?;
        let out = if self.flip {
            Tensor::cat(&[&y, &kept], 1)?
        } else {
            Tensor::cat(&[&kept, &y], 1)?
        };
        Ok((out, lad.sum(1)?))
    }
}

/// Sizes (kept, transformed) of a split of `c`: ⌊c/2⌋ kept, or ⌈c/2⌉ when flipped.
fn split_sizes(c: usize, flip: bool) -> (usize, usize) {
    if flip {
        (c - c / 2, c / 2)
    } else {
        (c / 2, c - c / 2)
    }
}

impl Bijection for SplineCoupling {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.apply(x, false)
    }

    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)> {
        self.apply(y, true)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Var};
    use candle_nn::VarMap;

    use super::super::tests::*;
    use super::*;
    use crate::nn::Params;

    fn nsf(transform: &str, shape: &[usize], std: f64) -> (VarMap, FlowModel) {
        let (vm, vb) = store();
        let m = new(
            &NsfConfig {
                example_shape: shape.to_vec(),
                transform: transform.into(),
                ..NsfConfig::tiny()
            },
            vb,
        )
        .unwrap();
        perturb(&vm, std, 11);
        (vm, m)
    }

    /// Spline settings with a small bound, so that N(0, 1) inputs land on both the spline and the tails.
    fn settings() -> SplineSettings {
        SplineSettings {
            bins: 5,
            tail_bound: 1.5,
            ..SplineSettings::default()
        }
    }

    /// Each spline coupling (vectors of 2, 3 and 5 values, 3- and 4-channel images, both halves) and each
    /// autoregressive spline layer (vectors of 3 and 5, a 1×2×3 image, both orders): log-det = the
    /// brute-force Jacobian's and both round trips, with inputs inside and outside the bound. The MADE layer's
    /// Jacobian is triangular in its order.
    #[test]
    fn each_nsf_layer_log_det_matches_the_brute_force_jacobian_and_inverts() {
        for shape in [vec![2], vec![3], vec![5], vec![3, 2, 2], vec![4, 2, 3]] {
            for flip in [false, true] {
                let (vm, vb) = store();
                let layer = SplineCoupling::new(&shape, flip, 6, settings(), vb).unwrap();
                perturb(&vm, 0.5, 1);
                let x = input(2, &shape, None, 2).affine(1.2, 0.0).unwrap();
                check_bijection(
                    &format!("spline coupling {shape:?} flip {flip}"),
                    &layer,
                    &x,
                );
            }
        }
        for shape in [vec![3], vec![5], vec![1, 2, 3]] {
            for reversed in [false, true] {
                let (vm, vb) = store();
                let spline = Elementwise::Spline(settings());
                let layer =
                    Autoregressive::new(&shape, reversed, &[12, 12], spline, 4, vb).unwrap();
                perturb(&vm, 0.5, 3);
                let x = input(2, &shape, None, 4).affine(1.2, 0.0).unwrap();
                let name = format!("spline AR {shape:?} reversed {reversed}");
                check_bijection(&name, &layer, &x);
                let deg = layer.degrees().to_vec();
                let d = deg.len();
                let jac = jacobian(
                    &|t| layer.forward(t).unwrap().0,
                    &x.narrow(0, 0, 1).unwrap(),
                );
                for o in 0..d {
                    for j in 0..d {
                        if deg[j] > deg[o] {
                            assert_eq!(jac[o * d + j], 0.0, "{name}: y_{o} depends on x_{j}");
                        }
                    }
                }
            }
        }
    }

    /// Whole NSFs (both transforms) on vectors of 3 and 5 values and on 1×4×4 images: log-det against the
    /// brute force (logit included) and both round trips to 1e-7.
    #[test]
    fn whole_nsf_models_log_det_and_round_trips() {
        for transform in TRANSFORMS {
            for shape in [vec![3], vec![5], vec![1, 4, 4]] {
                let (_vm, m) = nsf(transform, &shape, 0.3);
                let x = match shape.len() {
                    1 => input(2, &shape, None, 3).affine(2.0, 0.0).unwrap(),
                    _ => input(2, &shape, Some((0.05, 0.95)), 3),
                };
                check_model(&format!("nsf {transform} {shape:?}"), &m, &x);
            }
        }
    }

    #[test]
    fn the_nsf_density_integrates_to_one_on_the_plane() {
        for transform in TRANSFORMS {
            let (_vm, m) = nsf(transform, &[2], 0.2);
            let total = integral_2d(&m, 25.0, 300);
            assert!(
                (total - 1.0).abs() < 5e-3,
                "{transform}: the density integrates to {total}"
            );
        }
    }

    /// A new NSF (no ActNorm or LU map) is the identity: the zero-initialised networks give all-zero spline
    /// parameters, which the spline module maps to the identity.
    #[test]
    fn a_new_nsf_without_linear_maps_is_the_identity() {
        for transform in TRANSFORMS {
            let params = Params::new(0, &DEV);
            let m = new(
                &NsfConfig {
                    example_shape: vec![3],
                    transform: transform.to_string(),
                    actnorm: false,
                    linear: false,
                    ..NsfConfig::tiny()
                },
                params.var_builder(),
            )
            .unwrap();
            let x = input(8, &[3], None, 5)
                .affine(2.0, 0.0)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let (z, ld) = m.encode_with_logdet(&x).unwrap();
            assert!(max_abs_diff(&z, &x) < 1e-5, "{transform}");
            assert!(vec64(&ld).iter().all(|v| v.abs() < 1e-5), "{transform}");
        }
    }

    /// Inputs at ±50 (far outside the bound), whole batches outside and mixed batches give finite
    /// log-likelihoods and finite gradients for every variable (f32, trained-looking random weights).
    #[test]
    fn inputs_far_outside_the_tail_bound_give_finite_likelihoods_and_gradients() {
        for transform in TRANSFORMS {
            let params = Params::new(0, &DEV);
            let m = new(
                &NsfConfig {
                    example_shape: vec![3],
                    transform: transform.to_string(),
                    ..NsfConfig::tiny()
                },
                params.var_builder(),
            )
            .unwrap();
            let vars = params.vars();
            let mut rng = crate::rng::Rng::new(7);
            for (_, v) in &vars {
                let noise = rng
                    .randn(v.shape(), &DEV)
                    .unwrap()
                    .affine(0.5, 0.0)
                    .unwrap();
                v.set(&noise).unwrap();
            }
            let far: Vec<f32> = vec![50.0, -50.0, 50.0, -50.0, -50.0, 50.0];
            let mixed: Vec<f32> = vec![50.0, 0.3, -50.0, -0.7, 1.2, 49.0];
            for (case, v) in [("outside", far), ("mixed", mixed)] {
                let x = Var::from_tensor(&Tensor::from_vec(v, (2, 3), &DEV).unwrap()).unwrap();
                let lp = m.log_prob(x.as_tensor()).unwrap();
                assert!(
                    vec64(&lp).iter().all(|v| v.is_finite()),
                    "{transform} {case}: {lp}"
                );
                let grads = lp.sum_all().unwrap().backward().unwrap();
                let mut all: Vec<(String, Tensor)> = vars
                    .iter()
                    .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                    .collect();
                all.push(("x".into(), x.as_tensor().clone()));
                for (name, var) in &all {
                    let g = grads
                        .get(var)
                        .unwrap_or_else(|| panic!("{transform}: no gradient for {name}"));
                    assert!(
                        vec64(g).iter().all(|v| v.is_finite()),
                        "{transform} {case}: {name}"
                    );
                }
            }
        }
    }

    #[test]
    fn nsf_training_reduces_the_nll_on_a_mixture() {
        for transform in TRANSFORMS {
            let (before, after) = train_smoke(&|vb| {
                new(
                    &NsfConfig {
                        example_shape: vec![2],
                        transform: transform.to_string(),
                        hidden: 32,
                        ..NsfConfig::default()
                    },
                    vb,
                )
                .unwrap()
            });
            println!("nsf {transform}: NLL {before:.3} → {after:.3} nats");
            assert!(
                after < before - 1.0 && after < 3.0,
                "{transform}: NLL {before} → {after}"
            );
        }
    }

    #[test]
    fn config_refusals_name_the_setting() {
        let ok = NsfConfig {
            example_shape: vec![2],
            ..NsfConfig::default()
        };
        ok.validate().unwrap();
        for (bad, key) in [
            (
                NsfConfig {
                    example_shape: vec![1],
                    ..ok.clone()
                },
                "model.transform",
            ),
            (
                NsfConfig {
                    steps: 0,
                    ..ok.clone()
                },
                "model.steps",
            ),
            (
                NsfConfig {
                    bins: 0,
                    ..ok.clone()
                },
                "model.bins",
            ),
            (
                NsfConfig {
                    tail_bound: -1.0,
                    ..ok.clone()
                },
                "model.tail_bound",
            ),
            (
                NsfConfig {
                    logit_alpha: -0.1,
                    ..ok.clone()
                },
                "model.logit_alpha",
            ),
        ] {
            let e = bad.validate().unwrap_err();
            assert_eq!(e.option(), Some(key), "{e}");
        }
        let e = NsfConfig {
            transform: "both".into(),
            ..ok.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("model.transform") && e.contains("both"), "{e}");
        let mut c = NsfConfig::default();
        let data = DataInfo {
            example_shape: vec![1, 6, 6],
            num_classes: None,
            preprocessing: crate::data::Preprocessing::Scale {
                range: crate::data::Range::ZeroOne,
                dequantize: true,
            },
            tokenizer: None,
            caption_words: None,
        };
        let e = prepare(&mut c, &data).unwrap_err();
        assert_eq!(e.option(), Some("model.levels"), "{e}");
        c.transform = "autoregressive".into();
        prepare(&mut c, &data).unwrap();
        NsfConfig {
            transform: "autoregressive".into(),
            example_shape: vec![1],
            ..ok
        }
        .validate()
        .unwrap();
    }
}
