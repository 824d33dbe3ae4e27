//! MAF: masked autoregressive flow for density estimation (Papamakarios, Pavlakou & Murray 2017,
//! arXiv:1705.07057).
//!
//! Each layer is an autoregressive affine map whose shifts and log-scales come from one MADE ([`Made`],
//! Germain et al. 2015, with the masks of [`crate::nn::masked`]) over the D values of an example (§3.1):
//!
//!   x_i = u_i exp(α_i) + μ_i,   μ_i = f_μi(x_{1:i−1}),   α_i = f_αi(x_{1:i−1})            (eq. 3)
//!
//! so the density direction is one pass of the MADE,
//!
//!   u_i = (x_i − μ_i) exp(−α_i),   log|det ∂u/∂x| = −Σ_i α_i                             (eq. 4–5)
//!
//! and sampling (x from u) is sequential: D passes, pass t fixing the value of degree t. The MADE outputs
//! (μ_i, α_i) with the output degrees of x_i (two outputs per input), so the Jacobian is triangular in the
//! MADE order. `num_layers` such layers are stacked with the order reversed between them (layer l uses the
//! natural degrees for even l, the reversed ones for odd l: §3.1's reversal, without a separate permutation
//! step), optionally with an ActNorm before each layer. The base is a standard normal. Images are flattened
//! inside each layer (D = c·h·w, one MADE over the raster order) and enter through RealNVP's logit
//! y = logit(α + (1 − 2α) x) with α = `logit_alpha` (the paper uses λ = 10⁻⁶ for MNIST, 0.05 for CIFAR-10).
//!
//! Choices and deviations: α_i = 5·tanh(a_i / 5) from the MADE's raw output a_i (a soft bound |α| < 5 for
//! stability; the paper uses α unbounded); the MADE's output layer starts at zero, so every layer starts as
//! the identity (μ = α = 0); ActNorm (optional, off by default) stands in for the paper's batch
//! normalisation between layers; the MADE's hidden degrees are drawn from `mask_seed` (fixed at
//! construction, so a reload rebuilds the same masks); the sequential inverse computes only the output
//! rows of the value it fixes in each pass and is detached (sampling and decoding need no gradient); no
//! conditional (class-conditional) MAF.

use candle_core::Tensor;
use candle_nn::init::Init;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{ActNorm, Bijection, Logit};
use super::spline::{rq_spline_forward, rq_spline_inverse, SplineSettings};
use super::{FlowBuilder, FlowModel};
use crate::models::DataInfo;
use crate::nn::kernels::linear::linear;
use crate::nn::masked::{made_masks, MaskedLinear};
use crate::nn::Activation;
use crate::rng::Rng;
use crate::{Error, Result};

/// The soft bound A of the log-scales: α = A·tanh(a / A).
pub const LOG_SCALE_BOUND: f64 = 5.0;

/// MAF hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MafConfig {
    /// Shape of one example (`[c, h, w]` or `[d]`; filled by [`prepare`]).
    pub example_shape: Vec<usize>,
    /// Number of autoregressive layers (MADEs).
    pub num_layers: usize,
    /// Hidden layer sizes of each MADE (ReLU).
    pub hidden: Vec<usize>,
    /// An ActNorm before every layer (in place of the paper's batch normalisation).
    pub actnorm: bool,
    /// Seed of the MADEs' hidden degrees (fixed at construction, so reloads rebuild the same masks).
    pub mask_seed: u64,
    /// α of the logit preprocessing of pixels.
    pub logit_alpha: f64,
}

impl Default for MafConfig {
    fn default() -> Self {
        Self {
            example_shape: Vec::new(),
            num_layers: 5,
            hidden: vec![128, 128],
            actnorm: false,
            mask_seed: 0,
            logit_alpha: 0.05,
        }
    }
}

impl MafConfig {
    /// A small config for tests (data fields still to be filled by [`prepare`]).
    pub fn tiny() -> Self {
        Self {
            num_layers: 2,
            hidden: vec![8],
            ..Self::default()
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        super::check_shape(&self.example_shape)?;
        if self.num_layers == 0 {
            return Err(Error::invalid("model.num_layers", "must be at least 1"));
        }
        check_hidden("model.hidden", &self.hidden)?;
        super::check_logit_alpha(self.logit_alpha)
    }
}

/// Refuses hidden layers of 0 units.
pub(super) fn check_hidden(what: &str, hidden: &[usize]) -> Result<()> {
    if hidden.contains(&0) {
        return Err(Error::invalid(
            what,
            format!("{hidden:?}: every layer needs at least 1 unit"),
        ));
    }
    Ok(())
}

/// A MAF: builds the flow of `cfg` with variables from `vb` (`layer{l}.made.layer{k}.{weight,bias}`,
/// `layer{l}.actnorm.*`).
pub fn new(cfg: &MafConfig, vb: VarBuilder) -> Result<FlowModel> {
    cfg.validate()?;
    let mut f = FlowBuilder::new(&cfg.example_shape);
    for l in 0..cfg.num_layers {
        let vb = vb.pp(format!("layer{l}"));
        if cfg.actnorm {
            f.push(ActNorm::new(f.shape()[0], vb.pp("actnorm"))?);
        }
        f.push(Autoregressive::new(
            f.shape(),
            l % 2 == 1,
            &cfg.hidden,
            Elementwise::Affine,
            cfg.mask_seed,
            vb.pp("made"),
        )?);
    }
    let pre = (cfg.example_shape.len() > 1).then_some(Logit::Logit(cfg.logit_alpha));
    Ok(FlowModel::new(
        "maf",
        pre,
        f.build(),
        vb.device(),
        vb.dtype(),
    ))
}

/// Fills `example_shape` from the data and checks that MAF can model them (dequantized pixels in [0, 1],
/// or vectors).
pub fn prepare(cfg: &mut MafConfig, data: &DataInfo) -> Result<()> {
    super::check_data("maf", data, Logit::Logit(cfg.logit_alpha), None)?;
    cfg.example_shape = data.example_shape.clone();
    cfg.validate()
}

/// The values of one MADE's masks (buffers) and what one example keeps alive in a pass through it: the
/// hidden activations (before and after the ReLU), the `per`·D outputs, and `copies` copies of the D
/// values (input, output, shift, scale, products).
pub(super) fn made_footprint(d: u64, hidden: &[usize], per: u64, copies: u64) -> (u64, u64) {
    use crate::models::{sat_mul, sat_sum};
    let mut sizes = vec![d];
    sizes.extend(hidden.iter().map(|&h| h as u64));
    sizes.push(sat_mul(d, per));
    let masks = sat_sum(sizes.windows(2).map(|io| sat_mul(io[0], io[1])));
    let hidden = sat_sum(hidden.iter().map(|&h| h as u64));
    let act = sat_sum([
        sat_mul(2, hidden),
        sat_mul(2, sat_mul(d, per)),
        sat_mul(copies, d),
    ]);
    (masks, act)
}

/// Buffers: every MADE's masks. Activations per example: per layer, the MADE's hidden activations, its
/// 2D outputs and about eight copies of the D values (plus ActNorm's).
pub fn footprint(cfg: &MafConfig) -> crate::models::Footprint {
    use crate::models::sat_mul;
    let d = crate::models::sat_prod(&cfg.example_shape);
    let (masks, act) = made_footprint(d, &cfg.hidden, 2, 8);
    let layers = cfg.num_layers as u64;
    crate::models::Footprint {
        buffers: sat_mul(layers, masks),
        activations_per_example: sat_mul(layers, act),
    }
}

/// A MADE over D inputs with `per` outputs per input (output i·per + j belongs to input i and sees only
/// the inputs of lower degree), ReLU hidden layers, and an output layer that starts at zero.
pub(super) struct Made {
    hidden: Vec<MaskedLinear>,
    out_weight: Tensor,
    out_bias: Tensor,
    out_mask: Tensor,
    degrees: Vec<usize>,
    per: usize,
}

impl Made {
    /// A MADE over inputs of degrees `degrees` (a permutation of 1..=D) with `hidden` layer sizes and
    /// `per` outputs per input. Hidden degrees are drawn from `seed` and the builder's prefix; variables
    /// `layer{k}.weight` and `layer{k}.bias` (k = 0..=hidden.len(), the last one zero-initialised).
    pub(super) fn new(
        degrees: &[usize],
        hidden: &[usize],
        per: usize,
        seed: u64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let d = degrees.len();
        let out_deg: Vec<usize> = degrees
            .iter()
            .flat_map(|&g| std::iter::repeat_n(g, per))
            .collect();
        let mut rng = Rng::named(seed, &format!("{}.masks", vb.prefix()));
        let mm = made_masks(degrees, hidden, &out_deg, &mut rng, vb.device())?;
        let mut sizes = vec![d];
        sizes.extend(hidden);
        let layers = hidden
            .iter()
            .enumerate()
            .map(|(k, &h)| {
                MaskedLinear::new(sizes[k], h, mm.masks[k].clone(), vb.pp(format!("layer{k}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let last = sizes[hidden.len()];
        let vo = vb.pp(format!("layer{}", hidden.len()));
        let out_weight = vo.get_with_hints((d * per, last), "weight", Init::Const(0.0))?;
        let out_bias = vo.get_with_hints(d * per, "bias", Init::Const(0.0))?;
        let out_mask = mm.masks[hidden.len()].to_dtype(vb.dtype())?;
        Ok(Self {
            hidden: layers,
            out_weight,
            out_bias,
            out_mask,
            degrees: degrees.to_vec(),
            per,
        })
    }

    /// The last hidden layer's activations, `(b, D)` → `(b, last)`.
    fn hidden(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.hidden {
            h = layer.forward_act(&h, Activation::Relu)?;
        }
        Ok(h)
    }

    /// `(b, D)` → `(b, D, per)`.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, d) = x.dims2()?;
        let w = (&self.out_weight * &self.out_mask)?;
        let out = linear(&self.hidden(x)?, &w, &self.out_bias, Activation::Identity)?;
        Ok(out.reshape((b, d, self.per))?)
    }

    /// The outputs of input `i` alone, `(b, D)` → `(b, 1, per)` (the output layer's rows of `i` only).
    fn forward_one(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        let (b, p) = (x.dim(0)?, self.per);
        let w = (self.out_weight.narrow(0, i * p, p)? * self.out_mask.narrow(0, i * p, p)?)?;
        let bias = self.out_bias.narrow(0, i * p, p)?;
        let out = linear(&self.hidden(x)?, &w, &bias, Activation::Identity)?;
        Ok(out.reshape((b, 1, p))?)
    }
}

/// The elementwise invertible map an [`Autoregressive`] layer applies to each value given its MADE
/// outputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Elementwise {
    /// u = (x − μ)·exp(−α) from (μ, a), α = A·tanh(a / A) (MAF).
    Affine,
    /// A rational-quadratic spline with linear tails from 3K − 1 parameters (RQ-NSF (AR)).
    Spline(SplineSettings),
}

impl Elementwise {
    /// The MADE outputs per value.
    fn per(&self) -> usize {
        match self {
            Elementwise::Affine => 2,
            Elementwise::Spline(s) => s.params_per_dim(),
        }
    }

    /// The map (`inverse` false: density direction) of `v` `(b, D)` with parameters `p` `(b, D, per)`:
    /// the result and log|det| per value, both `(b, D)`.
    fn apply(&self, v: &Tensor, p: &Tensor, inverse: bool) -> Result<(Tensor, Tensor)> {
        match self {
            Elementwise::Affine => {
                let mu = p.narrow(2, 0, 1)?.squeeze(2)?;
                let alpha = p
                    .narrow(2, 1, 1)?
                    .squeeze(2)?
                    .affine(1.0 / LOG_SCALE_BOUND, 0.0)?
                    .tanh()?
                    .affine(LOG_SCALE_BOUND, 0.0)?;
                Ok(if inverse {
                    (((v * alpha.exp()?)? + mu)?, alpha)
                } else {
                    (((v - mu)? * alpha.neg()?.exp()?)?, alpha.neg()?)
                })
            }
            Elementwise::Spline(s) if inverse => rq_spline_inverse(v, p, s),
            Elementwise::Spline(s) => rq_spline_forward(v, p, s),
        }
    }
}

/// An autoregressive layer over the D values of each example (any shape, flattened in raster order):
/// u = τ(x; MADE(x)) in one pass, x from u in D passes.
pub(super) struct Autoregressive {
    made: Made,
    map: Elementwise,
}

impl Autoregressive {
    /// A layer over examples of shape `shape` in the natural raster order, or the reversed one; `hidden`
    /// MADE layer sizes, masks from `seed`, variables under `vb`.
    pub(super) fn new(
        shape: &[usize],
        reversed: bool,
        hidden: &[usize],
        map: Elementwise,
        seed: u64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let d: usize = shape.iter().product();
        let degrees: Vec<usize> = if reversed {
            (1..=d).rev().collect()
        } else {
            (1..=d).collect()
        };
        Ok(Self {
            made: Made::new(&degrees, hidden, map.per(), seed, vb)?,
            map,
        })
    }

    /// The input degrees (the autoregressive order) of the flattened values.
    #[cfg(test)]
    pub(super) fn degrees(&self) -> &[usize] {
        &self.made.degrees
    }
}

impl Bijection for Autoregressive {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = x.dim(0)?;
        let x2 = x.reshape((b, ()))?;
        let (u, lad) = self.map.apply(&x2, &self.made.forward(&x2)?, false)?;
        Ok((u.reshape(x.shape())?, lad.sum(1)?))
    }

    /// D passes in the MADE order: pass t computes the parameters of the value of degree t from the values
    /// found so far (all of lower degree) and inverts that value alone (the output layer's rows of that
    /// value only). Sampling and decoding only: the result is detached (no gradient flows through the
    /// inverse; D graphs of the MADE would otherwise stay alive until the end).
    fn inverse(&self, u: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = u.dim(0)?;
        let u2 = u.reshape((b, ()))?;
        let d = u2.dim(1)?;
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by_key(|&i| self.made.degrees[i]);
        let mut cols = vec![u2.narrow(1, 0, 1)?.detach().zeros_like()?; d];
        let mut lads = Vec::with_capacity(d);
        for i in order {
            let p = self.made.forward_one(&Tensor::cat(&cols, 1)?, i)?;
            let (xi, lad) = self.map.apply(&u2.narrow(1, i, 1)?, &p, true)?;
            cols[i] = xi.detach();
            lads.push(lad.detach());
        }
        let x = Tensor::cat(&cols, 1)?;
        let lad = Tensor::cat(&lads, 1)?;
        Ok((x.reshape(u.shape())?, lad.sum(1)?))
    }
}

#[cfg(test)]
mod tests {
    //! Shared by the NSF tests: an f64 store, perturbation, brute-force Jacobians, bijection checks, the
    //! plane integral and a training smoke test.

    use candle_core::DType;
    use candle_nn::VarMap;

    use super::super::tests::*;
    use super::*;
    use crate::nn::Params;

    fn maf(shape: &[usize], actnorm: bool, std: f64) -> (VarMap, FlowModel) {
        let (vm, vb) = store();
        let m = new(
            &MafConfig {
                example_shape: shape.to_vec(),
                hidden: vec![8, 6],
                actnorm,
                ..MafConfig::tiny()
            },
            vb,
        )
        .unwrap();
        perturb(&vm, std, 11);
        (vm, m)
    }

    /// Each MAF layer (natural and reversed order, 0–2 hidden layers, vectors of 3 and 5 values and a
    /// 2×2×2 image): log-det = the brute-force Jacobian's, both round trips, and the Jacobian is
    /// triangular in the MADE order (∂u_o/∂x_j = 0 whenever d(j) > d(o)) with a nonzero diagonal and
    /// some nonzero entry below it.
    #[test]
    fn each_maf_layer_is_triangular_in_the_made_order_with_the_brute_force_log_det() {
        for shape in [vec![3], vec![5], vec![2, 2, 2]] {
            for reversed in [false, true] {
                for hidden in [vec![], vec![16], vec![16, 12]] {
                    let (vm, vb) = store();
                    let layer =
                        Autoregressive::new(&shape, reversed, &hidden, Elementwise::Affine, 3, vb)
                            .unwrap();
                    perturb(&vm, 0.5, 1);
                    let name = format!("maf layer {shape:?} reversed {reversed} {hidden:?}");
                    let x = input(2, &shape, None, 2);
                    check_bijection(&name, &layer, &x);
                    let deg = layer.degrees().to_vec();
                    let d = deg.len();
                    let jac = jacobian(
                        &|t| layer.forward(t).unwrap().0,
                        &x.narrow(0, 0, 1).unwrap(),
                    );
                    let mut below = 0.0f64;
                    for o in 0..d {
                        assert!(jac[o * d + o].abs() > 1e-3, "{name}: zero diagonal at {o}");
                        for j in 0..d {
                            if deg[j] > deg[o] {
                                assert_eq!(jac[o * d + j], 0.0, "{name}: u_{o} depends on x_{j}");
                            } else if j != o {
                                below = below.max(jac[o * d + j].abs());
                            }
                        }
                    }
                    if !hidden.is_empty() || d > 1 {
                        assert!(below > 1e-6, "{name}: no autoregressive dependence at all");
                    }
                }
            }
        }
    }

    /// Whole MAFs on vectors of 3 and 5 values and on 1×4×4 images (through the logit), with and without
    /// ActNorm: log-det against the brute force, and both round trips to 1e-7.
    #[test]
    fn whole_maf_models_log_det_and_round_trips() {
        for (shape, actnorm) in [
            (vec![3], false),
            (vec![5], true),
            (vec![1, 4, 4], false),
            (vec![1, 4, 4], true),
        ] {
            let (_vm, m) = maf(&shape, actnorm, 0.3);
            let x = match shape.len() {
                1 => input(2, &shape, None, 3),
                _ => input(2, &shape, Some((0.05, 0.95)), 3),
            };
            check_model(&format!("maf {shape:?} actnorm {actnorm}"), &m, &x);
        }
    }

    #[test]
    fn the_maf_density_integrates_to_one_on_the_plane() {
        let (_vm, m) = maf(&[2], true, 0.4);
        let total = integral_2d(&m, 25.0, 400);
        assert!(
            (total - 1.0).abs() < 5e-3,
            "the density integrates to {total}"
        );
    }

    /// At the start (zero output layers) every layer is the identity: z = x and log p is the base's.
    #[test]
    fn a_new_maf_is_the_identity() {
        let params = Params::new(0, &DEV);
        let m = new(
            &MafConfig {
                example_shape: vec![3],
                ..MafConfig::tiny()
            },
            params.var_builder(),
        )
        .unwrap();
        let x = input(4, &[3], None, 5).to_dtype(DType::F32).unwrap();
        let (z, ld) = m.encode_with_logdet(&x).unwrap();
        assert_eq!(max_abs_diff(&z, &x), 0.0);
        assert_eq!(vec64(&ld), vec![0.0; 4]);
    }

    #[test]
    fn maf_training_reduces_the_nll_on_a_mixture() {
        let (before, after) = train_smoke(&|vb| {
            new(
                &MafConfig {
                    example_shape: vec![2],
                    num_layers: 4,
                    hidden: vec![32, 32],
                    ..MafConfig::default()
                },
                vb,
            )
            .unwrap()
        });
        println!("maf: NLL {before:.3} → {after:.3} nats");
        assert!(
            after < before - 1.0 && after < 3.0,
            "NLL {before} → {after}"
        );
    }

    #[test]
    fn config_refusals_name_the_setting() {
        let ok = MafConfig {
            example_shape: vec![2],
            ..MafConfig::default()
        };
        ok.validate().unwrap();
        for (bad, key) in [
            (
                MafConfig {
                    num_layers: 0,
                    ..ok.clone()
                },
                "model.num_layers",
            ),
            (
                MafConfig {
                    hidden: vec![4, 0],
                    ..ok.clone()
                },
                "model.hidden",
            ),
            (
                MafConfig {
                    logit_alpha: 0.5,
                    ..ok.clone()
                },
                "model.logit_alpha",
            ),
            (
                MafConfig {
                    example_shape: vec![],
                    ..ok.clone()
                },
                "model.example_shape",
            ),
        ] {
            let e = bad.validate().unwrap_err();
            assert_eq!(e.option(), Some(key), "{e}");
        }
    }
}
