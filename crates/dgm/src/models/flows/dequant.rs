//! Variational dequantization (Ho, Chen, Srinivas, Duan & Abbeel 2019, "Flow++", arXiv:1902.00275, §3.1).
//!
//! A flow is a density, but pixels are 8-bit values k ∈ {0, …, 255}^D. Uniform dequantization (the default,
//! done by the data loader) trains the density p on y = (k + u)/256 with u ~ U[0, 1)^D, which bounds the
//! probability of the values (Theis et al. 2016):
//!
//!   log P(k) ≥ E_u [log p((k + u)/256)] − D ln 256.
//!
//! Variational dequantization learns the noise instead, u ~ q(u | k):
//!
//!   log P(k) ≥ E_{u ~ q(·|k)} [log p((k + u)/256) − log q(u | k)] − D ln 256        (Flow++ eq. 12)
//!
//! which is the uniform bound when q is uniform (log q = 0) and tighter the better q matches p's shape inside
//! each bin, so the flow need not spend capacity on smoothing the bins' edges. With K samples the
//! importance-weighted bound log (1/K) Σ_i p(y_i) / q(u_i | k) − D ln 256 tightens towards log P(k) as K grows
//! (Burda et al. 2016). Both are random per example: estimates of bounds, reported as such.
//!
//! q is a conditional flow on noise: ε ~ N(0, I) (shaped like the image) → `couplings` affine checkerboard
//! couplings (sigmoid scale, flipped in turn) whose conditioners also see features of the image → u = σ(h):
//!
//!   log q(u | k) = log N(ε; 0, I) − Σ log|det coupling| − Σ_i log σ'(h_i),   log σ'(h) = −softplus(h) − softplus(−h).
//!
//! The image features are k/255 − ½ through conv3×3 → ReLU → conv3×3 → ReLU with `hidden` channels. The data
//! must arrive as the 8-bit values scaled to [0, 1] without dequantization (`dequantize = false`, x = k/255).

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{
    softplus, standard_normal_log_prob, sum_per_example, AffineCoupling, CouplingMask,
    CouplingScale,
};
use crate::nn::Conv2d;
use crate::{Error, Result};

/// The dequantization kinds (`model.dequantization.kind`).
pub const KINDS: &[&str] = &["uniform", "variational"];

/// How an image flow turns 8-bit pixels into continuous values (`[model.dequantization]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DequantConfig {
    /// `uniform` (noise U[0, 1) added by the data loader, `dequantize = true`) or `variational` (noise from
    /// a learned q(u | k), data with `dequantize = false`).
    pub kind: String,
    /// Couplings of the variational q.
    pub couplings: usize,
    /// Channels of q's image features and conditioners.
    pub hidden: usize,
}

impl Default for DequantConfig {
    fn default() -> Self {
        Self {
            kind: "uniform".into(),
            couplings: 4,
            hidden: 32,
        }
    }
}

impl DequantConfig {
    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        if !KINDS.contains(&self.kind.as_str()) {
            return Err(Error::unknown(
                "model.dequantization.kind",
                self.kind.clone(),
                KINDS,
            ));
        }
        if self.variational() {
            for (what, v) in [
                ("model.dequantization.couplings", self.couplings),
                ("model.dequantization.hidden", self.hidden),
            ] {
                if v == 0 {
                    return Err(Error::invalid(what, "must be at least 1"));
                }
            }
        }
        Ok(())
    }

    /// Whether q is learned.
    pub fn variational(&self) -> bool {
        self.kind == "variational"
    }
}

/// The learned dequantization noise q(u | k) of a flow over images of one shape.
pub struct VariationalDequantizer {
    embed: (Conv2d, Conv2d),
    couplings: Vec<AffineCoupling>,
}

impl VariationalDequantizer {
    /// q for images of shape `[c, h, w]`; variables `embed.{0,1}.*` and `coupling{i}.net.*` under `vb`.
    pub fn new(shape: &[usize], cfg: &DequantConfig, vb: VarBuilder) -> Result<Self> {
        let &[c, _, _] = shape else {
            return Err(Error::invalid(
                "model.dequantization.kind",
                format!("variational dequantization is for 8-bit images, not examples of shape {shape:?}"),
            ));
        };
        let embed = (
            Conv2d::new(c, cfg.hidden, 3, 1, 1, vb.pp("embed.0"))?,
            Conv2d::new(cfg.hidden, cfg.hidden, 3, 1, 1, vb.pp("embed.1"))?,
        );
        let couplings = (0..cfg.couplings)
            .map(|i| {
                AffineCoupling::conditioned(
                    shape,
                    CouplingMask::Checkerboard,
                    i % 2 == 1,
                    CouplingScale::Sigmoid,
                    cfg.hidden,
                    cfg.hidden,
                    vb.pp(format!("coupling{i}")),
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self { embed, couplings })
    }

    /// u ∈ (0, 1)^D (shaped like `x`) and log q(u | k) per example `(b,)`, for images `x = k/255` and noise
    /// `eps` ~ N(0, I) of the same shape; differentiable in q's variables.
    pub fn sample(&self, x: &Tensor, eps: &Tensor) -> Result<(Tensor, Tensor)> {
        let ctx = self
            .embed
            .1
            .forward(&self.embed.0.forward(&(x - 0.5)?)?.relu()?)?
            .relu()?;
        let mut log_q = standard_normal_log_prob(eps)?;
        let mut h = eps.clone();
        for c in &self.couplings {
            let (y, ld) = c.forward_with(&h, &ctx)?;
            log_q = (log_q - ld)?;
            h = y;
        }
        // u = σ(h) = exp(−softplus(−h)); log σ'(h) = −softplus(h) − softplus(−h)
        let sp_neg = softplus(&h.neg()?)?;
        let log_dsigmoid = (softplus(&h)? + &sp_neg)?.neg()?;
        log_q = (log_q - sum_per_example(&log_dsigmoid)?)?;
        Ok((sp_neg.neg()?.exp()?, log_q))
    }
}

/// The 8-bit values k of images scaled to [0, 1] without dequantization (x = k/255), as floats.
pub fn levels(x: &Tensor) -> Result<Tensor> {
    Ok((x * 255.0)?.round()?.clamp(0f32, 255f32)?)
}

/// y = (k + u)/256 for images x = k/255 and u ∈ [0, 1]^D.
pub fn dequantize(x: &Tensor, u: &Tensor) -> Result<Tensor> {
    Ok(((levels(x)? + u)? / 256.0)?)
}

/// Values y ∈ [0, 1] back to images k/255 with k = ⌊256 y⌋ (the bin y falls in), clipped to 0..=255.
pub fn quantize(y: &Tensor) -> Result<Tensor> {
    Ok(((y * 256.0)?.floor()?.clamp(0f32, 255f32)? / 255.0)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Tensor};

    use super::super::glow::{self, GlowConfig};
    use super::super::tests::{check_logdet, input, perturb, store, vec64, DEV};
    use super::super::FlowModel;
    use super::*;
    use crate::data::Batch;
    use crate::model::{Density, Latent, LikelihoodOptions, Model, SampleOptions};
    use crate::models::flows::layers::standard_normal_log_prob;
    use crate::rng::Rng;

    /// `b` images of shape `shape` with random 8-bit values, as k/255 (f64).
    fn images(b: usize, shape: &[usize], seed: u64) -> Tensor {
        let k = input(b, shape, Some((0.0, 256.0)), seed);
        (k.floor().unwrap().clamp(0.0, 255.0).unwrap() / 255.0).unwrap()
    }

    fn variational() -> DequantConfig {
        DequantConfig {
            kind: "variational".into(),
            couplings: 3,
            hidden: 6,
        }
    }

    /// A Glow over `shape` with a variational dequantizer, f64 variables perturbed by `std`.
    fn model(shape: &[usize], std: f64) -> FlowModel {
        let (vm, vb) = store();
        let m = glow::new(
            &GlowConfig {
                example_shape: shape.to_vec(),
                levels: 1,
                preprocess: "logit".into(),
                dequantization: variational(),
                ..GlowConfig::tiny()
            },
            vb,
        )
        .unwrap();
        perturb(&vm, std, 5);
        m
    }

    #[test]
    fn log_q_is_the_noise_density_through_the_brute_force_jacobian() {
        for shape in [[1, 2, 2], [2, 3, 2]] {
            let (vm, vb) = store();
            let q = VariationalDequantizer::new(&shape, &variational(), vb).unwrap();
            perturb(&vm, 0.4, 7);
            let x = images(3, &shape, 1);
            let eps = input(3, &shape, None, 2);
            let (u, log_q) = q.sample(&x, &eps).unwrap();
            assert!(vec64(&u).iter().all(|&v| v > 0.0 && v < 1.0));
            // log q(u) = log N(ε) − log|det ∂u/∂ε|, so log N(ε) − log q is the log-det of ε ↦ u
            let ld = (standard_normal_log_prob(&eps).unwrap() - &log_q).unwrap();
            for i in 0..3 {
                let xi = x.narrow(0, i, 1).unwrap();
                let f = |e: &Tensor| q.sample(&xi, e).unwrap().0;
                check_logdet(
                    "dequantizer",
                    &f,
                    &eps.narrow(0, i, 1).unwrap(),
                    &ld.narrow(0, i, 1).unwrap(),
                    1e-5,
                );
            }
        }
    }

    #[test]
    fn the_bound_is_below_log_p_of_the_values_and_importance_weighting_closes_the_gap() {
        // log P(k) = log ∫_{[0,1)^D} p((k + u)/256) du − D ln 256 by the midpoint rule (D = 4, 8⁴ cells):
        // the density barely changes inside a bin of width 1/256, so the rule is accurate to ~1e-6
        let shape = [1, 2, 2];
        let m = model(&shape, 0.3);
        let x = images(2, &shape, 3);
        let n = 8;
        let mut cells = Vec::new();
        for c in 0..n * n * n * n {
            let mut v = c;
            for _ in 0..4 {
                cells.push(((v % n) as f64 + 0.5) / n as f64);
                v /= n;
            }
        }
        let u = Tensor::from_vec(cells, (n * n * n * n, 1, 2, 2), &DEV).unwrap();
        let opts = |estimator: &str, samples: usize| LikelihoodOptions {
            estimator: Some(estimator.into()),
            samples,
            chunk: 1,
            seed: 4,
            ..LikelihoodOptions::default()
        };
        let batch = Batch::new(x.clone());
        let elbo = m.log_likelihood(&batch, &opts("elbo", 400)).unwrap().nats;
        let iw = m.log_likelihood(&batch, &opts("iwae", 4000)).unwrap().nats;
        for e in 0..2 {
            let xe = x.narrow(0, e, 1).unwrap().broadcast_as(u.shape()).unwrap();
            let y = dequantize(&xe, &u).unwrap();
            let lp = vec64(&m.log_prob(&y).unwrap());
            let mx = lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mean = lp.iter().map(|l| (l - mx).exp()).sum::<f64>() / lp.len() as f64;
            let log_p = mx + mean.ln() - 4.0 * 256f64.ln();
            let gap = log_p - elbo[e];
            assert!(gap > 0.01, "ELBO {} is below log P {log_p}", elbo[e]);
            // q is far from the model's (nearly uniform) conditional inside the bin, so the importance
            // weights are heavy-tailed: 4000 samples close half of the gap or more; one estimate may land
            // a little above log P (the IW bound holds in expectation)
            assert!(
                iw[e] > elbo[e] && iw[e] <= log_p + 0.05 * gap && log_p - iw[e] < 0.6 * gap,
                "IW bound {} between the ELBO {} and log P {log_p}",
                iw[e],
                elbo[e]
            );
        }
    }

    #[test]
    fn estimates_do_not_depend_on_the_chunk_and_the_loss_is_the_negative_bound() {
        let shape = [1, 4, 4];
        let m = model(&shape, 0.1);
        let batch = Batch::new(images(5, &shape, 6));
        let at = |chunk: usize| {
            let o = LikelihoodOptions {
                estimator: Some("iwae".into()),
                samples: 3,
                chunk,
                seed: 1,
                ..LikelihoodOptions::default()
            };
            m.log_likelihood(&batch, &o).unwrap().nats
        };
        assert_eq!(at(1), at(5));
        assert_eq!(at(2), at(100));
        let out = m.loss(&batch, &mut Rng::new(0)).unwrap();
        let loss = out
            .loss
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        // the loss is the nats of the dequantized density, the bound plus the bins
        let elbo = LikelihoodOptions {
            samples: 200,
            chunk: 5,
            ..LikelihoodOptions::default()
        };
        let mean: f64 = m
            .log_likelihood(&batch, &elbo)
            .unwrap()
            .nats
            .iter()
            .sum::<f64>()
            / 5.0;
        let d = 16.0 * 256f64.ln();
        assert!(
            (loss - (-mean - d)).abs() < 0.05 * (1.0 + loss.abs()),
            "loss {loss} vs −bound − D ln 256 = {}",
            -mean - d
        );
    }

    #[test]
    fn samples_and_decodings_are_8_bit_values_and_encode_decode_returns_them() {
        let shape = [1, 4, 4];
        let m = model(&shape, 0.05);
        let s = m.sample(6, &SampleOptions::default()).unwrap();
        for v in vec64(&s) {
            let k = v * 255.0;
            assert!(
                (k - k.round()).abs() < 1e-4 && (0.0..=255.0).contains(&k),
                "{v}"
            );
        }
        let x = images(4, &shape, 8);
        let batch = Batch::new(x.clone());
        let back = m
            .decode(&m.encode(&batch).unwrap(), &Default::default())
            .unwrap();
        let err = super::super::tests::max_abs_diff(&back, &x);
        assert!(err < 1e-9, "decode(encode(x)) ≠ x ({err})");
    }

    #[test]
    fn settings_and_data_are_checked() {
        let bad = DequantConfig {
            kind: "learned".into(),
            ..DequantConfig::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("learned") && e.contains("variational"), "{e}");
        let zero = DequantConfig {
            couplings: 0,
            ..variational()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("couplings"));
        let (_, vb) = store();
        let e = VariationalDequantizer::new(&[2], &variational(), vb)
            .err()
            .unwrap();
        assert!(e.to_string().contains("images"), "{e}");
    }
}
