//! MADE: Masked Autoencoder for Distribution Estimation (Germain, Gregor, Murray & Larochelle 2015,
//! arXiv:1502.03509), for binary vectors and binarized images.
//!
//! An MLP whose weights are masked ([`crate::nn::masked`], eq. 12–13) so that its output i sees only the
//! inputs before i in an ordering d(·) of the D pixels; output i is the logit of the conditional
//!
//!   p(x) = Π_i p(x_i | x_{j: d(j) < d(i)}),  p(x_i = 1 | ·) = σ(logit_i)                     (eq. 1, 9)
//!
//! and training minimises the exact negative log-likelihood −log p(x) = Σ_i softplus(l_i) − x_i·l_i
//! (eq. 10; nats, summed over pixels, averaged over the batch).
//!
//! Connectivity-agnostic training (section 4.2): with `num_masks` = K > 1, K sets of masks (hidden degrees,
//! and with `order = "random"` also the input ordering) are drawn from `mask_seed` at construction — so a
//! reloaded model has the same masks — and every training step uses one of them, picked with the step's RNG;
//! the weights are shared. At test time the first `ensemble` masks are averaged,
//! log p(x) = log (1/K') Σ_k p_k(x), which is the exact likelihood of that uniform mixture; sampling from it
//! draws each sample's mask uniformly. (The paper's extra mask-conditioning weights and direct input→output
//! connections are not implemented.)
//!
//! Sampling is ancestral: D forward passes, one pixel each in the mask's ordering.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::exact_log_likelihood;
use crate::data::Batch;
use crate::data::Preprocessing;
use crate::distributions::bernoulli_log_prob;
use crate::model::{
    Complete, Condition, Density, LikelihoodOptions, LogLikelihood, LossOutput, Model,
    SampleOptions,
};
use crate::nn::kernels::linear::linear;
use crate::nn::masked::{input_degrees, made_masks, MadeMasks, MaskedLinear, ORDERS};
use crate::nn::Activation;
use crate::rng::Rng;
use crate::{Error, Result};

/// Likelihood estimators of [`Made`]: the exact log-likelihood only.
pub use super::ESTIMATORS;

/// MADE hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MadeConfig {
    /// Number of binary inputs D (filled by [`prepare`]: the product of the example shape).
    pub input_dim: usize,
    /// Shape of one example, e.g. `[1, 28, 28]` (filled by [`prepare`]); samples are returned in this shape.
    pub example_shape: Vec<usize>,
    /// Hidden layer sizes (the paper's best single-mask MNIST model: one layer of 500).
    pub hidden: Vec<usize>,
    /// Hidden activation: `relu`, `tanh`, `silu` or `identity`.
    pub activation: String,
    /// Number of mask sets K; > 1 is connectivity-agnostic training (one mask per step).
    pub num_masks: usize,
    /// Input ordering: `natural` (raster order) or `random` (each mask set gets its own with K > 1).
    pub order: String,
    /// Number of masks averaged at test time and sampled from (the first ones); 0 = all `num_masks`.
    pub ensemble: usize,
    /// Seed of the masks' degrees and orderings (fixed at construction, so reloads rebuild the same masks).
    pub mask_seed: u64,
}

impl Default for MadeConfig {
    fn default() -> Self {
        Self {
            input_dim: 0,
            example_shape: Vec::new(),
            hidden: vec![500],
            activation: "relu".into(),
            num_masks: 1,
            order: "natural".into(),
            ensemble: 0,
            mask_seed: 0,
        }
    }
}

impl MadeConfig {
    /// A small config for tests (data fields still to be filled by [`prepare`]).
    pub fn tiny() -> Self {
        Self {
            hidden: vec![32],
            ..Self::default()
        }
    }

    /// The number of masks used at test time (`ensemble`, or all of them for 0).
    pub fn ensemble_size(&self) -> usize {
        if self.ensemble == 0 {
            self.num_masks
        } else {
            self.ensemble
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        if self.input_dim == 0 {
            return Err(Error::invalid(
                "model.input_dim",
                "0: the data shape was not filled in (call models::prepare first)",
            ));
        }
        let shape: usize = self.example_shape.iter().product();
        if self.example_shape.is_empty() || shape != self.input_dim {
            return Err(Error::invalid(
                "model.example_shape",
                format!(
                    "{:?} does not hold input_dim = {} values",
                    self.example_shape, self.input_dim
                ),
            ));
        }
        if self.hidden.contains(&0) {
            return Err(Error::invalid(
                "model.hidden",
                format!("{:?}: every layer needs at least 1 unit", self.hidden),
            ));
        }
        Activation::parse("model.activation", &self.activation)?;
        if self.num_masks == 0 {
            return Err(Error::invalid("model.num_masks", "must be at least 1"));
        }
        if self.ensemble > self.num_masks {
            return Err(Error::invalid(
                "model.ensemble",
                format!(
                    "{} exceeds num_masks = {} (0 = all masks)",
                    self.ensemble, self.num_masks
                ),
            ));
        }
        if !ORDERS.contains(&self.order.as_str()) {
            return Err(Error::unknown("model.order", &self.order, ORDERS));
        }
        Ok(())
    }
}

/// A MADE over D binary inputs, with one or several mask sets sharing its weights.
pub struct Made {
    cfg: MadeConfig,
    layers: Vec<MaskedLinear>,
    masks: Vec<MadeMasks>,
    act: Activation,
    device: Device,
}

impl Made {
    /// Builds the model; variables (`layer{l}.weight`, `layer{l}.bias`) come from `vb`, the masks from
    /// `cfg.mask_seed`.
    pub fn new(cfg: MadeConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let device = vb.device().clone();
        let d = cfg.input_dim;
        let mut rng = Rng::named(cfg.mask_seed, "made-masks");
        let masks = (0..cfg.num_masks)
            .map(|_| {
                let deg = input_degrees(d, &cfg.order, &mut rng)?;
                made_masks(&deg, &cfg.hidden, &deg, &mut rng, &device)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut sizes = vec![d];
        sizes.extend(&cfg.hidden);
        sizes.push(d);
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(l, io)| {
                let mask = masks[0].masks[l].clone();
                MaskedLinear::new(io[0], io[1], mask, vb.pp(format!("layer{l}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let act = Activation::parse("model.activation", &cfg.activation)?;
        Ok(Self {
            cfg,
            layers,
            masks,
            act,
            device,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &MadeConfig {
        &self.cfg
    }

    /// Number of mask sets K.
    pub fn num_masks(&self) -> usize {
        self.masks.len()
    }

    /// The input degrees d(j) ∈ 1..=D (the ordering) of mask set `mask`.
    pub fn order(&self, mask: usize) -> Result<&[usize]> {
        Ok(&self.mask_set(mask)?.input_degrees)
    }

    fn mask_set(&self, mask: usize) -> Result<&MadeMasks> {
        self.masks.get(mask).ok_or_else(|| {
            Error::invalid(
                "made mask",
                format!("{mask} is out of range: the model has {}", self.masks.len()),
            )
        })
    }

    /// The conditional logits l_i(x_{d<d(i)}) under mask set `mask`: `(b, D)` → `(b, D)`.
    pub fn logits(&self, x: &Tensor, mask: usize) -> Result<Tensor> {
        let set = self.mask_set(mask)?;
        let last = self.layers.len() - 1;
        let mut h = x.clone(); // (b, D)
        for (l, (layer, m)) in self.layers.iter().zip(&set.masks).enumerate() {
            let act = if l == last {
                Activation::Identity
            } else {
                self.act
            };
            h = layer.forward_with_mask(&h, m, act)?; // (b, hidden_l) … (b, D)
        }
        Ok(h)
    }

    /// log p_k(x) = Σ_i x_i·l_i − softplus(l_i) under mask set `mask`, in nats: `(b, D)` → `(b,)`.
    pub fn log_prob(&self, x: &Tensor, mask: usize) -> Result<Tensor> {
        bernoulli_log_prob(&self.logits(x, mask)?, x)
    }

    /// A batch's examples as `(b, D)` f32.
    fn flat(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let d = x.elem_count() / b.max(1);
        if d != self.cfg.input_dim {
            return Err(Error::invalid(
                "made input",
                format!(
                    "examples of shape {:?} have {d} values, the model expects {} ({:?})",
                    &x.dims()[1..],
                    self.cfg.input_dim,
                    self.cfg.example_shape
                ),
            ));
        }
        Ok(x.reshape((b, d))?.to_dtype(DType::F32)?)
    }

    /// Samples, in place, every pixel of the rows of `buf` (`n × D`, row-major) whose degree under mask set
    /// `mask` exceeds `known`, one pixel per pass in the ordering, logits divided by `temperature`.
    ///
    /// Each pass is a forward pass, made cheap: the masked weights are formed once, the first layer's
    /// pre-activation x W₀ᵀ + b₀ is updated by the one column of the pixel just drawn (it is linear in x), and
    /// the output layer computes only the next pixel's logit. The pixels still to draw start at 0; they reach
    /// none of the outputs that precede them, so their value does not matter.
    fn fill(
        &self,
        buf: &mut [f32],
        n: usize,
        mask: usize,
        known: usize,
        temperature: f64,
        rng: &mut Rng,
    ) -> Result<()> {
        let d = self.cfg.input_dim;
        let set = self.mask_set(mask)?;
        let mut by_degree = vec![0usize; d]; // by_degree[t − 1] = the input of degree t
        for (j, &deg) in set.input_degrees.iter().enumerate() {
            by_degree[deg - 1] = j;
        }
        let todo = &by_degree[known.min(d)..];
        for &j in todo {
            (0..n).for_each(|r| buf[r * d + j] = 0.0);
        }
        // W ⊙ M and b of every layer, detached: candle has no no-grad mode
        let w: Vec<(Tensor, Tensor)> = self
            .layers
            .iter()
            .zip(&set.masks)
            .map(|(l, m)| Ok(((l.weight() * m)?.detach(), l.bias().detach())))
            .collect::<Result<_>>()?;
        let last = w.len() - 1;
        let x = Tensor::from_slice(buf, (n, d), &self.device)?; // (n, D)
        let mut pre = linear(&x, &w[0].0, &w[0].1, Activation::Identity)?; // (n, out₀)
        for &j in todo {
            let logit = if last == 0 {
                pre.narrow(1, j, 1)? // (n, 1): no hidden layer, pre holds the logits
            } else {
                let mut h = self.act.forward(&pre)?; // (n, hidden₀)
                for (wl, bl) in &w[1..last] {
                    h = linear(&h, wl, bl, self.act)?; // (n, hidden_l)
                }
                let (wj, bj) = (w[last].0.narrow(0, j, 1)?, w[last].1.narrow(0, j, 1)?);
                linear(&h, &wj, &bj, Activation::Identity)? // (n, 1)
            };
            let logit = logit.detach().flatten_all()?.to_vec1::<f32>()?;
            let mut col = vec![0f32; n];
            for (r, l) in logit.into_iter().enumerate() {
                let p = 1.0 / (1.0 + (-(l as f64) / temperature).exp());
                col[r] = if rng.uniform_f64() < p { 1.0 } else { 0.0 };
                buf[r * d + j] = col[r];
            }
            // pre += x_j ⊗ W₀[:, j]
            let xj = Tensor::from_vec(col, (n, 1), &self.device)?; // (n, 1)
            let w0j = w[0].0.narrow(1, j, 1)?.t()?; // (1, out₀)
            pre = (pre + xj.broadcast_mul(&w0j)?)?.detach();
        }
        Ok(())
    }

    /// Fills `buf` (`n × D`) by [`Made::fill`], each row under a mask set drawn uniformly from the ensemble
    /// (rows grouped by mask so that each group takes D − known passes).
    fn fill_ensemble(
        &self,
        buf: &mut [f32],
        n: usize,
        known: usize,
        opts: &SampleOptions,
    ) -> Result<()> {
        if !(opts.temperature > 0.0 && opts.temperature.is_finite()) {
            return Err(Error::invalid(
                "temperature",
                format!("{} must be a positive number", opts.temperature),
            ));
        }
        if opts.condition != Condition::None || opts.guidance.is_some() {
            return Err(Error::Unsupported(
                "made is unconditional: it takes no class, caption or guidance".into(),
            ));
        }
        let (d, k) = (self.cfg.input_dim, self.cfg.ensemble_size());
        let mut rng = Rng::new(opts.seed);
        let which: Vec<usize> = (0..n)
            .map(|_| if k > 1 { rng.below(k) } else { 0 })
            .collect();
        for mask in 0..k {
            let rows: Vec<usize> = (0..n).filter(|&r| which[r] == mask).collect();
            if rows.is_empty() {
                continue;
            }
            let mut sub: Vec<f32> = rows
                .iter()
                .flat_map(|&r| buf[r * d..(r + 1) * d].iter().copied())
                .collect();
            self.fill(
                &mut sub,
                rows.len(),
                mask,
                known,
                opts.temperature,
                &mut rng,
            )?;
            for (i, &r) in rows.iter().enumerate() {
                buf[r * d..(r + 1) * d].copy_from_slice(&sub[i * d..(i + 1) * d]);
            }
        }
        Ok(())
    }

    fn shaped(&self, buf: Vec<f32>, n: usize) -> Result<Tensor> {
        let mut shape = vec![n];
        shape.extend(&self.cfg.example_shape);
        Ok(Tensor::from_vec(buf, shape, &self.device)?)
    }
}

impl Model for Made {
    fn name(&self) -> &str {
        "made"
    }

    /// The exact NLL −log p_k(x) (nats, summed over pixels, averaged over the batch), with one mask set k
    /// drawn from `rng` per step when there are several (connectivity-agnostic training).
    fn loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        let x = self.flat(&batch.x)?; // (b, D)
        let k = if self.masks.len() > 1 {
            rng.below(self.masks.len())
        } else {
            0
        };
        let loss = self.log_prob(&x, k)?.mean_all()?.neg()?;
        let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        Ok(LossOutput {
            loss,
            parts: vec![("nll".into(), v)],
        })
    }

    /// Ancestral sampling, D forward passes, pixel by pixel in the ordering; values 0/1 shaped like the data.
    /// `opts.temperature` divides the logits. `opts.mean` is ignored: the draws are always 0/1 (the mean of
    /// the joint is not a per-pixel quantity MADE can compute in one pass, and a probability image of the last
    /// conditionals would not be one either). `opts.sampler` and `opts.steps` do not apply.
    fn sample(&self, n: usize, opts: &SampleOptions) -> Result<Tensor> {
        if n == 0 {
            return Err(Error::invalid("n", "the number of samples must be ≥ 1"));
        }
        let mut buf = vec![0f32; n * self.cfg.input_dim];
        self.fill_ensemble(&mut buf, n, 0, opts)?;
        self.shaped(buf, n)
    }

    fn as_density(&self) -> Option<&dyn Density> {
        Some(self)
    }

    fn as_complete(&self) -> Option<&dyn Complete> {
        Some(self)
    }
}

impl Density for Made {
    fn estimators(&self) -> Vec<String> {
        ESTIMATORS.iter().map(|s| s.to_string()).collect()
    }

    /// The exact log p(x) in nats: of the single mask, or of the uniform mixture of the first `ensemble`
    /// masks, log (1/K) Σ_k p_k(x) (log-sum-exp in f64). `opts.chunk` bounds the rows per pass.
    fn log_likelihood(&self, batch: &Batch, opts: &LikelihoodOptions) -> Result<LogLikelihood> {
        let k = self.cfg.ensemble_size();
        let prepare = || {
            let x = self.flat(&batch.x)?; // (b, D)
            let b = x.dim(0)?;
            Ok((x, b))
        };
        exact_log_likelihood(opts, None, prepare, |x, s, len| {
            let xs = x.narrow(0, s, len)?;
            let per: Vec<Vec<f32>> = (0..k)
                .map(|m| Ok(self.log_prob(&xs, m)?.detach().to_vec1::<f32>()?))
                .collect::<Result<_>>()?;
            let mut nats = Vec::with_capacity(len);
            for e in 0..xs.dim(0)? {
                let lp: Vec<f64> = per.iter().map(|p| p[e] as f64).collect();
                let mx = lp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = lp.iter().map(|v| (v - mx).exp()).sum();
                nats.push(mx + (sum / k as f64).ln());
            }
            Ok(nats)
        })
    }
}

impl Complete for Made {
    /// With the natural (raster) order and one channel, the first `known_rows` rows are a prefix of the
    /// ordering: they are copied unchanged and the rest is drawn from p(rest | known) like [`Model::sample`].
    fn complete(&self, x: &Tensor, known_rows: usize, opts: &SampleOptions) -> Result<Tensor> {
        if self.cfg.order != "natural" {
            return Err(Error::Unsupported(format!(
                "made completes images only with order = \"natural\" (this model uses \"{}\"): the known \
                 rows must come first in the ordering",
                self.cfg.order
            )));
        }
        let shape = &self.cfg.example_shape;
        if shape.len() != 3 || shape[0] != 1 {
            return Err(Error::Unsupported(format!(
                "made completes one-channel images (c, h, w) = (1, h, w); this model's examples are {shape:?}"
            )));
        }
        if x.rank() != 4 || x.dims()[1..] != shape[..] {
            return Err(Error::invalid(
                "complete input",
                format!("shape {:?} is not (b, {:?})", x.dims(), shape),
            ));
        }
        let (h, w) = (shape[1], shape[2]);
        if known_rows > h {
            return Err(Error::invalid(
                "known rows",
                format!("{known_rows} exceeds the image height {h}"),
            ));
        }
        let n = x.dim(0)?;
        let mut buf = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        self.fill_ensemble(&mut buf, n, known_rows * w, opts)?;
        self.shaped(buf, n)
    }
}

/// The memory estimate of a prepared config (see [`crate::models::Footprint`]): the buffers are the
/// `num_masks` mask sets (one (out, in) f32 mask per layer each); per example the input, each hidden layer
/// before and after its activation and the output logits, × 2 for the gradients.
pub fn footprint(cfg: &MadeConfig) -> crate::models::Footprint {
    use crate::models::{sat_mul, sat_sum};
    let d = cfg.input_dim as u64;
    let mut sizes = vec![d];
    sizes.extend(cfg.hidden.iter().map(|&h| h as u64));
    sizes.push(d);
    let mask_set = sat_sum(sizes.windows(2).map(|io| sat_mul(io[0], io[1])));
    let hidden = sat_sum(cfg.hidden.iter().map(|&h| h as u64));
    crate::models::Footprint {
        buffers: sat_mul(cfg.num_masks as u64, mask_set),
        activations_per_example: sat_mul(2, sat_sum([d, sat_mul(2, hidden), d])),
    }
}

/// Fills `input_dim` and `example_shape` from the data and checks that MADE can model them: its Bernoulli
/// conditionals need binarized pixels.
pub fn prepare(cfg: &mut MadeConfig, data: &crate::models::DataInfo) -> Result<()> {
    if !matches!(data.preprocessing, Preprocessing::Binarize { .. }) || data.tokenizer.is_some() {
        return Err(Error::invalid(
            "data.preprocessing",
            format!(
                "made has Bernoulli outputs and needs binary data, but the data are {}; use \
                 data.preprocessing = {{ kind = \"binarize\", dynamic = true }} on an image data set",
                data.preprocessing.describe()
            ),
        ));
    }
    cfg.example_shape = data.example_shape.clone();
    cfg.input_dim = data.example_shape.iter().product();
    cfg.validate()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Range;
    use crate::models::DataInfo;
    use crate::nn::Params;
    use crate::train::optim::{collect_grads, AdamW, AdamWParams};
    use candle_core::Var;

    fn info(shape: &[usize], preprocessing: Preprocessing) -> DataInfo {
        DataInfo {
            example_shape: shape.to_vec(),
            num_classes: None,
            preprocessing,
            tokenizer: None,
            caption_words: None,
        }
    }

    fn binarized(shape: &[usize]) -> DataInfo {
        info(shape, Preprocessing::Binarize { dynamic: true })
    }

    fn build(mut cfg: MadeConfig, shape: &[usize], seed: u64) -> Result<(Made, Params)> {
        prepare(&mut cfg, &binarized(shape))?;
        let params = Params::new(seed, &Device::Cpu);
        let m = Made::new(cfg, params.var_builder())?;
        Ok((m, params))
    }

    fn cfg(hidden: &[usize], num_masks: usize, order: &str) -> MadeConfig {
        MadeConfig {
            hidden: hidden.to_vec(),
            num_masks,
            order: order.into(),
            ..MadeConfig::tiny()
        }
    }

    fn adam() -> AdamWParams {
        AdamWParams {
            ..Default::default()
        }
    }

    /// All 2^d binary vectors, row r = the bits of r (pixel j = bit j), as `(2^d, d)`.
    fn all_binary(d: usize) -> Result<Tensor> {
        let v: Vec<f32> = (0..1usize << d)
            .flat_map(|r| (0..d).map(move |j| ((r >> j) & 1) as f32))
            .collect();
        Ok(Tensor::from_vec(v, (1 << d, d), &Device::Cpu)?)
    }

    /// The index r of a binary row (pixel j = bit j).
    fn code(row: &[f32]) -> usize {
        row.iter()
            .enumerate()
            .map(|(j, &v)| (v as usize) << j)
            .sum()
    }

    /// Pearson's χ² of `counts` against probabilities `p`.
    fn chi2(counts: &[usize], p: &[f64]) -> f64 {
        let n: usize = counts.iter().sum();
        counts
            .iter()
            .zip(p)
            .map(|(&c, &q)| {
                let e = n as f64 * q;
                (c as f64 - e).powi(2) / e
            })
            .sum()
    }

    /// The model's exact pmf over all 2^D vectors, by enumeration.
    fn pmf(m: &Made) -> Result<Vec<f64>> {
        let d = m.config().input_dim;
        let x = all_binary(d)?.reshape([&[1usize << d][..], &m.config().example_shape].concat())?;
        let ll = m.log_likelihood(&Batch::new(x), &LikelihoodOptions::default())?;
        Ok(ll.nats.iter().map(|v| v.exp()).collect())
    }

    /// Σ_x p(x) = 1 over all 16 binary 2×2 images, for each single mask (natural and random orders, two
    /// hidden layers) and for the ensemble mixture, whose log p is log-mean-exp of the masks'.
    #[test]
    fn probabilities_sum_to_one_by_enumeration() -> Result<()> {
        let shape = [1, 2, 2];
        for (order, k, seed) in [
            ("natural", 1, 1),
            ("random", 1, 2),
            ("random", 3, 3),
            ("natural", 3, 4),
        ] {
            let (m, _p) = build(cfg(&[16, 16], k, order), &shape, seed)?;
            let x = all_binary(4)?;
            let mut per = Vec::new();
            for mask in 0..k {
                let lp = m.log_prob(&x, mask)?.to_vec1::<f32>()?;
                let total: f64 = lp.iter().map(|&v| (v as f64).exp()).sum();
                assert!(
                    (total - 1.0).abs() < 1e-5,
                    "{order} mask {mask}: Σp = {total}"
                );
                // not trivially uniform
                let spread = lp.iter().fold(f32::MIN, |a, &b| a.max(b))
                    - lp.iter().fold(f32::MAX, |a, &b| a.min(b));
                assert!(spread > 0.05, "{order} mask {mask}: log p spread {spread}");
                per.push(lp);
            }
            let p = pmf(&m)?;
            let total: f64 = p.iter().sum();
            assert!(
                (total - 1.0).abs() < 1e-5,
                "{order} ensemble of {k}: Σp = {total}"
            );
            for (r, &pr) in p.iter().enumerate() {
                let mix = per.iter().map(|lp| (lp[r] as f64).exp()).sum::<f64>() / k as f64;
                assert!((pr - mix).abs() < 1e-6 * mix.max(1e-3));
            }
        }
        Ok(())
    }

    /// ∂ logit_i / ∂ x_j = 0 exactly whenever d(j) ≥ d(i), for every mask of a two-layer MADE with random
    /// orders; and every output after the first in the ordering depends on some earlier input.
    #[test]
    fn outputs_depend_only_on_earlier_inputs() -> Result<()> {
        let d = 6;
        let (m, _p) = build(cfg(&[24, 24], 3, "random"), &[d], 5)?;
        let mut rng = Rng::new(6);
        let x = Var::from_tensor(&rng.randn((5, d), &Device::Cpu)?)?;
        for mask in 0..3 {
            let deg = m.order(mask)?.to_vec();
            let logits = m.logits(x.as_tensor(), mask)?; // (5, d)
            for i in 0..d {
                let g = logits.narrow(1, i, 1)?.sum_all()?.backward()?;
                let gx = g
                    .get(x.as_tensor())
                    .ok_or_else(|| Error::invalid("test", "no gradient for x"))?
                    .abs()?
                    .sum(0)?
                    .to_vec1::<f32>()?; // (d,)
                let mut allowed_nonzero = 0;
                for j in 0..d {
                    if deg[j] >= deg[i] {
                        assert_eq!(
                            gx[j], 0.0,
                            "mask {mask}: logit {i} (d={}) ← x_{j} (d={})",
                            deg[i], deg[j]
                        );
                    } else if gx[j] > 0.0 {
                        allowed_nonzero += 1;
                    }
                }
                if deg[i] > 1 {
                    assert!(
                        allowed_nonzero > 0,
                        "mask {mask}: logit {i} sees no earlier input"
                    );
                }
            }
        }
        Ok(())
    }

    /// A 3-pixel distribution with known entropy: x₁ ~ B(0.8), x₂ = x₁ w.p. 0.9, x₃ = x₁ XOR x₂ w.p. 0.85,
    /// so H = h(0.8) + h(0.9) + h(0.85) nats.
    fn target() -> (Vec<f64>, f64) {
        let h = |p: f64| -(p * p.ln() + (1.0 - p) * (1.0 - p).ln());
        let mut p = vec![0.0; 8];
        for (r, pr) in p.iter_mut().enumerate() {
            let (a, b, c) = (r & 1, (r >> 1) & 1, (r >> 2) & 1);
            let pa = if a == 1 { 0.8 } else { 0.2 };
            let pb = if a == b { 0.9 } else { 0.1 };
            let pc = if c == a ^ b { 0.85 } else { 0.15 };
            *pr = pa * pb * pc;
        }
        (p, h(0.8) + h(0.9) + h(0.85))
    }

    /// Trains on draws from [`target`]: the exact cross-entropy −Σ p log q reaches the entropy (KL < 0.01
    /// nats), for one natural-order mask and for 4 random-order masks (connectivity-agnostic, ensemble of 4);
    /// and 4000 samples of the trained model follow its own pmf (χ², 7 dof, p > 10⁻⁴).
    #[test]
    fn training_reaches_the_entropy_and_samples_match() -> Result<()> {
        let (p, entropy) = target();
        let mut cdf = p.clone();
        for i in 1..8 {
            cdf[i] += cdf[i - 1];
        }
        for (order, k) in [("natural", 1), ("random", 4)] {
            let (m, params) = build(cfg(&[32], k, order), &[1, 1, 3], 7)?;
            let vars = params.vars();
            let mut opt = AdamW::new(vars.clone(), adam())?;
            let mut rng = Rng::new(8);
            let steps = if k == 1 { 300 } else { 600 };
            for _ in 0..steps {
                let x: Vec<f32> = (0..256)
                    .flat_map(|_| {
                        let u = rng.uniform_f64();
                        let r = cdf.iter().position(|&c| u < c).unwrap_or(7);
                        (0..3).map(move |j| ((r >> j) & 1) as f32)
                    })
                    .collect();
                let x = Tensor::from_vec(x, (256, 1, 1, 3), &Device::Cpu)?;
                let out = m.loss(&Batch::new(x), &mut rng)?;
                opt.step(&collect_grads(&vars, &out.loss.backward()?), 1e-2, 1.0)?;
            }
            let q = pmf(&m)?;
            let ce: f64 = p.iter().zip(&q).map(|(&pi, &qi)| -pi * qi.ln()).sum();
            assert!(
                ce - entropy < 0.01 && ce >= entropy - 1e-6,
                "{order}×{k}: CE {ce} vs H {entropy}"
            );
            let s = m.sample(4000, &SampleOptions::seeded(9))?;
            assert_eq!(s.dims(), &[4000, 1, 1, 3]);
            let rows = s.flatten_from(1)?.to_vec2::<f32>()?;
            assert!(rows.iter().flatten().all(|&v| v == 0.0 || v == 1.0));
            let mut counts = vec![0usize; 8];
            rows.iter().for_each(|r| counts[code(r)] += 1);
            let c2 = chi2(&counts, &q);
            println!(
                "{order}×{k}: cross-entropy {ce:.5} nats, entropy {entropy:.5}, sample χ² {c2:.2}"
            );
            assert!(
                c2 < 29.9,
                "{order}×{k}: χ² = {c2}, counts {counts:?}, q {q:?}"
            );
            // the same seed gives the same samples
            assert_eq!(
                m.sample(5, &SampleOptions::seeded(9))?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
                m.sample(5, &SampleOptions::seeded(9))?
                    .flatten_all()?
                    .to_vec1::<f32>()?
            );
        }
        Ok(())
    }

    /// Samples of untrained models of every depth (no hidden layer, one, two; one and two random-order masks,
    /// temperature 1) follow the model's own pmf over the 8 binary vectors (χ², 7 dof, p > 10⁻⁴); a low
    /// temperature concentrates them on the mode.
    #[test]
    fn samples_follow_the_pmf_for_any_depth() -> Result<()> {
        for (hidden, k, seed) in [(vec![], 1, 20), (vec![8], 2, 21), (vec![8, 8], 2, 22)] {
            let (m, _p) = build(cfg(&hidden, k, "random"), &[3], seed)?;
            let q = pmf(&m)?;
            let s = m
                .sample(4000, &SampleOptions::seeded(seed))?
                .to_vec2::<f32>()?;
            let mut counts = vec![0usize; 8];
            s.iter().for_each(|r| counts[code(r)] += 1);
            let c2 = chi2(&counts, &q);
            assert!(
                c2 < 29.9,
                "{hidden:?}×{k}: χ² = {c2}, counts {counts:?}, q {q:?}"
            );
        }
        // temperature → 0 makes every conditional a hard decision
        let (m, _p) = build(cfg(&[8], 1, "natural"), &[3], 23)?;
        let opts = SampleOptions {
            temperature: 1e-4,
            ..SampleOptions::seeded(1)
        };
        let s = m.sample(50, &opts)?.to_vec2::<f32>()?;
        assert!(s.iter().all(|r| r == &s[0]));
        assert!(m
            .sample(
                2,
                &SampleOptions {
                    temperature: 0.0,
                    ..opts
                }
            )
            .is_err());
        Ok(())
    }

    /// Completion keeps the known rows bit-exactly and draws the rest from the model's conditional
    /// q(x₃, x₄ | x₁, x₂) (χ², 3 dof); other orders and bad arguments are refused.
    #[test]
    fn complete_keeps_known_rows_and_samples_the_conditional() -> Result<()> {
        let (m, _p) = build(cfg(&[16], 1, "natural"), &[1, 2, 2], 10)?;
        let mut rng = Rng::new(11);
        let x = Tensor::from_vec(
            (0..32).map(|_| (rng.below(2)) as f32).collect::<Vec<_>>(),
            (8, 1, 2, 2),
            &Device::Cpu,
        )?;
        let opts = SampleOptions::seeded(12);
        let c = m.complete(&x, 1, &opts)?;
        let (xv, cv) = (
            x.flatten_from(1)?.to_vec2::<f32>()?,
            c.flatten_from(1)?.to_vec2::<f32>()?,
        );
        for (a, b) in xv.iter().zip(&cv) {
            assert_eq!(a[..2], b[..2]);
            assert!(b.iter().all(|&v| v == 0.0 || v == 1.0));
        }
        assert_eq!(
            m.complete(&x, 2, &opts)?.flatten_all()?.to_vec1::<f32>()?,
            x.flatten_all()?.to_vec1::<f32>()?
        );
        assert!(m.complete(&x, 3, &opts).is_err());
        // the conditional of the bottom row given the top row (1, 0)
        let n = 3000;
        let known: Vec<f32> = (0..n).flat_map(|_| [1.0, 0.0, 0.0, 0.0]).collect();
        let c = m.complete(
            &Tensor::from_vec(known, (n, 1, 2, 2), &Device::Cpu)?,
            1,
            &opts,
        )?;
        let q = pmf(&m)?;
        let cond: Vec<f64> = (0..4).map(|s| q[1 | (s << 2)]).collect();
        let z: f64 = cond.iter().sum();
        let cond: Vec<f64> = cond.iter().map(|v| v / z).collect();
        let mut counts = vec![0usize; 4];
        for r in c.flatten_from(1)?.to_vec2::<f32>()? {
            assert_eq!(r[..2], [1.0, 0.0]);
            counts[code(&r[2..])] += 1;
        }
        let c2 = chi2(&counts, &cond);
        assert!(c2 < 21.1, "χ² = {c2}, counts {counts:?}, q {cond:?}");
        // a random order has no row prefix
        let (r, _p) = build(cfg(&[16], 1, "random"), &[1, 2, 2], 10)?;
        let e = r
            .complete(&x, 1, &opts)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("natural"), "{e}");
        Ok(())
    }

    /// prepare fills the data fields from binarized data and refuses anything else with a message naming the
    /// binarize choice; the config round-trips through the registry's TOML table; masks depend on mask_seed.
    #[test]
    fn prepare_config_and_mask_seed() -> Result<()> {
        let mut c = MadeConfig::default();
        prepare(&mut c, &binarized(&[1, 28, 28]))?;
        assert_eq!(
            (c.input_dim, c.example_shape.clone()),
            (784, vec![1, 28, 28])
        );
        for prep in [
            Preprocessing::Scale {
                range: Range::ZeroOne,
                dequantize: true,
            },
            Preprocessing::Identity,
        ] {
            let e = prepare(&mut MadeConfig::default(), &info(&[1, 28, 28], prep))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("data.preprocessing") && e.contains("binarize"),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
        let t = crate::models::to_table(&c)?;
        assert_eq!(crate::models::from_table::<MadeConfig>(&t)?, c);
        assert!(
            crate::models::from_table::<MadeConfig>(&crate::models::to_table(
                &MadeConfig::default()
            )?)
            .is_ok()
        );
        // bad values are named
        for (key, bad) in [
            (
                "model.order",
                MadeConfig {
                    order: "reverse".into(),
                    ..c.clone()
                },
            ),
            (
                "model.ensemble",
                MadeConfig {
                    ensemble: 2,
                    ..c.clone()
                },
            ),
            (
                "model.num_masks",
                MadeConfig {
                    num_masks: 0,
                    ..c.clone()
                },
            ),
            (
                "model.hidden",
                MadeConfig {
                    hidden: vec![0],
                    ..c.clone()
                },
            ),
            (
                "model.activation",
                MadeConfig {
                    activation: "gelu".into(),
                    ..c.clone()
                },
            ),
        ] {
            let e = bad
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(key), "{key}: {e}");
        }
        // the masks are a function of mask_seed alone
        let orders = |seed: u64| -> Result<Vec<Vec<usize>>> {
            let mut c = cfg(&[8], 3, "random");
            c.mask_seed = seed;
            let (m, _p) = build(c, &[5], 0)?;
            (0..3).map(|k| Ok(m.order(k)?.to_vec())).collect()
        };
        assert_eq!(orders(1)?, orders(1)?);
        assert_ne!(orders(1)?, orders(2)?);
        Ok(())
    }

    /// Time of one training step (loss, backward, AdamW) of the default MNIST config at batch 100.
    /// `cargo test --release -p dgm --lib models::autoregressive::made::tests::step_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn step_speed() -> Result<()> {
        let (m, params) = build(MadeConfig::default(), &[1, 28, 28], 0)?;
        let vars = params.vars();
        let mut opt = AdamW::new(vars.clone(), adam())?;
        let mut rng = Rng::new(1);
        let x = rng
            .rand((100, 1, 28, 28), &Device::Cpu)?
            .ge(0.5)?
            .to_dtype(DType::F32)?;
        let batch = Batch::new(x);
        let mut times = Vec::new();
        for _ in 0..30 {
            let t = std::time::Instant::now();
            let out = m.loss(&batch, &mut rng)?;
            opt.step(&collect_grads(&vars, &out.loss.backward()?), 1e-3, 1.0)?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "made 784-500-784, batch 100: median step {:.2} ms",
            times[15] * 1e3
        );
        let t = std::time::Instant::now();
        m.sample(16, &SampleOptions::seeded(0))?;
        println!("sampling 16 images: {:.2} s", t.elapsed().as_secs_f64());
        Ok(())
    }
}
