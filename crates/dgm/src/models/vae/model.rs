//! Variational autoencoders: VAE (Kingma & Welling 2014, arXiv:1312.6114), IWAE (Burda et al. 2015,
//! arXiv:1509.00519), conditional VAE (Sohn et al. 2015) and β-VAE (Higgins et al. 2017).
//!
//! Encoder q(z | x, y) = N(μ(x, y), diag σ²(x, y)), prior p(z) = N(0, I), decoder p(x | z, y) one of the
//! observation models of [`super::decoders`]. With z_i = μ + σ ⊙ ε_i, ε_i ~ N(0, I) and
//! log w_i = log p(x | z_i) + log p(z_i) − log q(z_i | x):
//!
//! * `elbo` objective: L = E_q[log p(x | z)] − β·KL(q(z | x) ‖ p(z)), KL in closed form
//!   ½ Σ (μ² + σ² − 1 − log σ²), the expectation averaged over k samples. β = 1 is the ELBO, β > 1 β-VAE.
//! * `iwae` objective: L_k = log (1/k) Σ_i w_i, by log-sum-exp; L_1 = ELBO ≤ L_k ≤ L_{k+1} ≤ log p(x).
//!
//! The loss is −L averaged over the batch. For evaluation ([`Density`]) the `elbo` estimator is a lower bound
//! and the `iwae` estimator with k samples tends to log p(x) as k grows; both run in bounded-memory chunks.
//! A conditional model concatenates the one-hot label to the encoder's features and to z.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::decoders::{Observation, DECODERS};
use crate::data::{Preprocessing, Range};
use crate::model::{
    Batch, Condition, Density, Latent, LikelihoodKind, LikelihoodOptions, LogLikelihood,
    LossOutput, Model, SampleOptions,
};
use crate::models::DataInfo;
use crate::nn::{upsample2x, Conv2d, Linear};
use crate::rng::Rng;
use crate::{Error, Result};

/// The preset names.
pub const PRESETS: &[&str] = &["vae", "iwae", "cvae"];
/// Encoder / decoder architectures.
pub const ARCHS: &[&str] = &["mlp", "conv"];
/// Training objectives.
pub const OBJECTIVES: &[&str] = &["elbo", "iwae"];
/// Hidden-layer activations.
pub const ACTIVATIONS: &[&str] = &["relu", "silu", "tanh"];
/// Density estimators, the default first.
pub const ESTIMATORS: &[&str] = &["elbo", "iwae"];

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

/// Checks a (prepared) config, naming the bad value and the valid options.
fn validate(cfg: &VaeConfig) -> Result<()> {
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

// ---------------------------------------------------------------------------------------------- blocks

/// Hidden-layer nonlinearity.
#[derive(Clone, Copy, Debug)]
enum Activation {
    Relu,
    Silu,
    Tanh,
}

impl Activation {
    fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Relu => x.relu()?,
            Activation::Silu => x.silu()?,
            Activation::Tanh => x.tanh()?,
        })
    }
}

/// Encoder q(z | x, y): x → features → (μ, log σ²).
struct Encoder {
    mlp: Vec<Linear>,   // mlp arch: [x, y] → hidden…
    convs: Vec<Conv2d>, // conv arch: stride-2 3×3 stages on x
    head: Linear,       // [features, y] (conv) or last hidden (mlp) → 2·latent
}

impl Encoder {
    fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let (c, mut mlp, mut convs) = (cfg.input_shape[0], vec![], vec![]);
        let width = if cfg.arch == "mlp" {
            let mut w = cfg.input_shape.iter().product::<usize>() + cfg.num_classes;
            for (i, &h) in cfg.hidden.iter().enumerate() {
                mlp.push(Linear::new(w, h, vb.pp(format!("fc{i}")))?);
                w = h;
            }
            w
        } else {
            let mut ch = c;
            for (i, &o) in cfg.channels.iter().enumerate() {
                convs.push(Conv2d::new(ch, o, 3, 2, 1, vb.pp(format!("conv{i}")))?);
                ch = o;
            }
            let s = 1 << cfg.channels.len();
            ch * (cfg.input_shape[1] / s) * (cfg.input_shape[2] / s) + cfg.num_classes
        };
        let head = Linear::new(width, 2 * cfg.latent_dim, vb.pp("head"))?;
        Ok(Self { mlp, convs, head })
    }

    /// `(b, …)` data and `(b, C)` one-hot labels → μ, log σ², each `(b, L)`.
    fn forward(&self, x: &Tensor, y: Option<&Tensor>, act: Activation) -> Result<(Tensor, Tensor)> {
        let cat = |h: Tensor| -> Result<Tensor> {
            Ok(match y {
                Some(y) => Tensor::cat(&[&h, y], 1)?,
                None => h,
            })
        };
        let mut h = if self.convs.is_empty() {
            let mut h = cat(x.flatten_from(1)?)?; // (b, D + C)
            for l in &self.mlp {
                h = act.forward(&l.forward(&h)?)?; // (b, hidden)
            }
            h
        } else {
            let mut h = x.clone(); // (b, c, h, w)
            for conv in &self.convs {
                h = act.forward(&conv.forward(&h)?)?; // (b, ch, h/2, w/2)
            }
            cat(h.flatten_from(1)?)? // (b, ch·h'·w' + C)
        };
        h = self.head.forward(&h)?; // (b, 2L)
        let l = h.dim(1)? / 2;
        Ok((h.narrow(1, 0, l)?, h.narrow(1, l, l)?))
    }
}

/// Decoder network: [z, y] → parameters of p(x | z, y), `(n, D)`.
struct Decoder {
    mlp: Vec<Linear>, // mlp: [z, y] → hidden (reversed) → D; conv: one layer to (ch, h', w')
    convs: Vec<Conv2d>, // conv arch: nearest ×2 + 3×3 conv per stage
    out: Option<Conv2d>, // conv arch: last 3×3 conv to the data channels
    grid: (usize, usize, usize), // conv arch: (ch, h', w') at the bottom
}

impl Decoder {
    fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let (d_in, d_out) = (
            cfg.latent_dim + cfg.num_classes,
            cfg.input_shape.iter().product(),
        );
        let (mut mlp, mut convs, mut out, mut grid) = (vec![], vec![], None, (0, 0, 0));
        if cfg.arch == "mlp" {
            let sizes: Vec<usize> = std::iter::once(d_in)
                .chain(cfg.hidden.iter().rev().copied())
                .chain(std::iter::once(d_out))
                .collect();
            for (i, w) in sizes.windows(2).enumerate() {
                mlp.push(Linear::new(w[0], w[1], vb.pp(format!("fc{i}")))?);
            }
        } else {
            let (n, s) = (cfg.channels.len(), 1 << cfg.channels.len());
            grid = (
                cfg.channels[n - 1],
                cfg.input_shape[1] / s,
                cfg.input_shape[2] / s,
            );
            mlp.push(Linear::new(d_in, grid.0 * grid.1 * grid.2, vb.pp("fc0"))?);
            for i in (0..n).rev() {
                let to = cfg.channels[i.saturating_sub(1)];
                convs.push(Conv2d::new(
                    cfg.channels[i],
                    to,
                    3,
                    1,
                    1,
                    vb.pp(format!("conv{i}")),
                )?);
            }
            out = Some(Conv2d::new(
                cfg.channels[0],
                cfg.input_shape[0],
                3,
                1,
                1,
                vb.pp("out"),
            )?);
        }
        Ok(Self {
            mlp,
            convs,
            out,
            grid,
        })
    }

    /// `(n, L)` codes and `(n, C)` one-hot labels → decoder output `(n, D)`.
    fn forward(&self, z: &Tensor, y: Option<&Tensor>, act: Activation) -> Result<Tensor> {
        let mut h = match y {
            Some(y) => Tensor::cat(&[z, y], 1)?, // (n, L + C)
            None => z.clone(),
        };
        let last = self.mlp.len().saturating_sub(1);
        for (i, l) in self.mlp.iter().enumerate() {
            h = l.forward(&h)?; // (n, hidden)
            if i < last || self.out.is_some() {
                h = act.forward(&h)?;
            }
        }
        if let Some(out) = &self.out {
            let (c, hh, ww) = self.grid;
            h = h.reshape((h.dim(0)?, c, hh, ww))?; // (n, ch, h', w')
            for conv in &self.convs {
                h = act.forward(&conv.forward(&upsample2x(&h)?)?)?; // (n, ch', 2h', 2w')
            }
            h = out.forward(&h)?.flatten_from(1)?; // (n, c·h·w)
        }
        Ok(h)
    }
}

/// Closed-form KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²): `(b, L)` → `(b,)`.
pub fn gaussian_kl(mu: &Tensor, logvar: &Tensor) -> Result<Tensor> {
    let t = ((mu.sqr()? + logvar.exp()?)? - logvar)?; // (b, L)
    Ok(((t.sum(D::Minus1)? - mu.dim(D::Minus1)? as f64)? * 0.5)?)
}

/// Running log Σ exp(vᵢ) in f64, for IWAE over many chunks.
#[derive(Clone, Copy)]
struct LogSumExp {
    max: f64,
    sum: f64,
}

impl LogSumExp {
    fn push(&mut self, v: f64) {
        if v > self.max {
            self.sum = self.sum * (self.max - v).exp() + 1.0;
            self.max = v;
        } else if v > f64::NEG_INFINITY {
            self.sum += (v - self.max).exp();
        }
    }
    fn value(self) -> f64 {
        self.max + self.sum.ln()
    }
}

// ----------------------------------------------------------------------------------------------- model

/// The VAE family: VAE, IWAE, CVAE and β-VAE, by config.
pub struct Vae {
    name: String,
    cfg: VaeConfig,
    act: Activation,
    encoder: Encoder,
    decoder: Decoder,
    obs: Observation,
    device: Device,
}

/// One reparameterised pass on s samples per example.
struct Pass {
    log_px_z: Tensor,  // log p(x | z_i), (s, b)
    log_ratio: Tensor, // log p(z_i) − log q(z_i | x), (s, b)
}

impl Vae {
    /// Builds the model `name` from a prepared config, variables `enc.*`, `dec.*` under `vb`.
    pub fn new(name: &str, cfg: VaeConfig, vb: VarBuilder) -> Result<Self> {
        validate(&cfg)?;
        let act = match cfg.activation.as_str() {
            "silu" => Activation::Silu,
            "tanh" => Activation::Tanh,
            _ => Activation::Relu,
        };
        let d = cfg.input_shape.iter().product();
        Ok(Self {
            name: name.to_string(),
            act,
            encoder: Encoder::new(&cfg, vb.pp("enc"))?,
            decoder: Decoder::new(&cfg, vb.pp("dec"))?,
            obs: Observation::new(&cfg.decoder, d, cfg.pixel_range, vb.pp("dec"))?,
            device: vb.device().clone(),
            cfg,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// Checks the batch's shape and returns x shaped for the encoder and the one-hot labels `(b, C)`.
    fn inputs(&self, batch: &Batch) -> Result<(Tensor, Option<Tensor>)> {
        if batch.x.dims().get(1..) != Some(&self.cfg.input_shape[..]) {
            let msg = format!(
                "shape {:?}, the model expects (b, {:?})",
                batch.x.dims(),
                self.cfg.input_shape
            );
            return Err(Error::invalid("batch.x", msg));
        }
        let y = match (self.cfg.conditional, &batch.labels) {
            (false, _) => None,
            (true, None) => {
                return Err(Error::invalid(
                    "batch.labels",
                    format!(
                        "model '{}' is class-conditional: the batch needs labels",
                        self.name
                    ),
                ))
            }
            (true, Some(l)) => {
                let l = l.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
                if l.len() != batch.len() {
                    return Err(Error::invalid(
                        "batch.labels",
                        format!("{} labels for {} examples", l.len(), batch.len()),
                    ));
                }
                Some(self.one_hot(&l, "batch.labels")?)
            }
        };
        Ok((batch.x.clone(), y))
    }

    /// `(n, C)` one-hot rows for class ids, each checked against the number of classes.
    fn one_hot(&self, ids: &[u32], key: &str) -> Result<Tensor> {
        let c = self.cfg.num_classes;
        let mut v = vec![0f32; ids.len() * c];
        for (i, &id) in ids.iter().enumerate() {
            if id as usize >= c {
                return Err(Error::invalid(
                    key,
                    format!(
                        "class {id} is out of range; valid classes are 0..={}",
                        c - 1
                    ),
                ));
            }
            v[i * c + id as usize] = 1.0;
        }
        Ok(Tensor::from_vec(v, (ids.len(), c), &self.device)?)
    }

    /// The one-hot labels `(n, C)` a [`Condition`] asks for (one label broadcasts to all n), or `None`.
    fn condition(&self, cond: &Condition, n: usize) -> Result<Option<Tensor>> {
        match (cond, self.cfg.conditional) {
            (Condition::None, false) => Ok(None),
            (Condition::None, true) => Err(Error::invalid(
                "condition",
                format!(
                    "model '{}' is class-conditional: give a class (0..={})",
                    self.name,
                    self.cfg.num_classes - 1
                ),
            )),
            (Condition::Class(_), false) => Err(Error::invalid(
                "condition",
                format!("model '{}' is unconditional: it takes no class", self.name),
            )),
            (Condition::Class(ids), true) => match ids.len() {
                1 => self.one_hot(&vec![ids[0]; n], "condition"),
                m if m == n => self.one_hot(ids, "condition"),
                m => Err(Error::invalid(
                    "condition",
                    format!(
                        "{m} classes for {n} samples: give one class for all or one per sample"
                    ),
                )),
            }
            .map(Some),
            (Condition::Caption(_), _) => Err(Error::invalid(
                "condition",
                format!("model '{}' takes class labels, not captions", self.name),
            )),
        }
    }

    /// The reparameterised pass for noise ε `(s, b, L)`: z_i = μ + σ ⊙ ε_i, scored against x.
    fn pass(
        &self,
        x: &Tensor,
        y: Option<&Tensor>,
        mu: &Tensor,
        logvar: &Tensor,
        eps: &Tensor,
    ) -> Result<Pass> {
        let (s, b, l) = eps.dims3()?;
        let z = eps
            .broadcast_mul(&(logvar * 0.5)?.exp()?)?
            .broadcast_add(mu)?; // (s, b, L)
        let ys = match y {
            Some(y) if s > 1 => Some(
                y.unsqueeze(0)?
                    .broadcast_as((s, b, y.dim(1)?))?
                    .reshape((s * b, ()))?,
            ),
            Some(y) => Some(y.clone()),
            None => None,
        }; // (s·b, C)
        let out = self
            .decoder
            .forward(&z.reshape((s * b, l))?, ys.as_ref(), self.act)?; // (s·b, D)
        let out = out.reshape((s, b, ()))?; // (s, b, D)
        let log_px_z = self.obs.log_prob(&out, &x.flatten_from(1)?)?; // (s, b)
                                                                      // log p(z) − log q(z | x) = Σ_l −½ z² + ½ ε² + ½ log σ²   (the ½ log 2π terms cancel)
        let log_ratio = ((eps.sqr()? - z.sqr()?)?.sum(D::Minus1)? * 0.5)?
            .broadcast_add(&(logvar.sum(D::Minus1)? * 0.5)?)?;
        Ok(Pass {
            log_px_z,
            log_ratio,
        })
    }

    /// The observation mean (or a draw) for codes `(n, L)`, shaped like a batch.
    fn generate(&self, z: &Tensor, y: Option<&Tensor>, draw: Option<&mut Rng>) -> Result<Tensor> {
        let out = self.decoder.forward(z, y, self.act)?; // (n, D)
        let x = match draw {
            Some(rng) => self.obs.sample(&out, rng)?,
            None => self.obs.mean(&out)?,
        };
        let mut shape = vec![z.dim(0)?];
        shape.extend_from_slice(&self.cfg.input_shape);
        Ok(x.reshape(shape)?.detach())
    }
}

impl Model for Vae {
    fn name(&self) -> &str {
        &self.name
    }

    fn loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        if batch.is_empty() {
            return Err(Error::invalid("batch", "empty batch"));
        }
        let (x, y) = self.inputs(batch)?;
        let (mu, logvar) = self.encoder.forward(&x, y.as_ref(), self.act)?; // (b, L)
        let (k, b, l) = (self.cfg.k, batch.len(), self.cfg.latent_dim);
        let eps = rng.randn((k, b, l), &self.device)?;
        let p = self.pass(&x, y.as_ref(), &mu, &logvar, &eps)?;
        let recon = (p.log_px_z.mean_all()? * -1.0)?; // −E_q log p(x | z), per example
        let kl = gaussian_kl(&mu, &logvar)?.mean_all()?;
        let (rv, kv) = (
            recon.to_scalar::<f32>()? as f64,
            kl.to_scalar::<f32>()? as f64,
        );
        let mut parts = vec![
            ("recon".to_string(), rv),
            ("kl".to_string(), kv),
            ("elbo".to_string(), -rv - kv),
        ];
        let loss = if self.cfg.objective == "iwae" {
            // L_k = log (1/k) Σ_i w_i   (Burda et al. eq. 8)
            let log_w = (p.log_px_z + p.log_ratio)?; // (k, b)
            let bound = (log_w.log_sum_exp(0)? - (k as f64).ln())?.mean_all()?;
            parts.push(("iwae".to_string(), bound.to_scalar::<f32>()? as f64));
            bound.neg()?
        } else {
            (recon + (kl * self.cfg.beta)?)?
        };
        Ok(LossOutput { loss, parts })
    }

    fn sample(&self, n: usize, opts: &SampleOptions) -> Result<Tensor> {
        if n == 0 {
            return Err(Error::invalid("n", "the number of samples must be ≥ 1"));
        }
        let y = self.condition(&opts.condition, n)?;
        let mut rng = Rng::new(opts.seed);
        let z = (rng.randn((n, self.cfg.latent_dim), &self.device)? * opts.temperature)?; // (n, L)
        self.generate(
            &z,
            y.as_ref(),
            if opts.mean { None } else { Some(&mut rng) },
        )
    }

    fn num_classes(&self) -> Option<usize> {
        self.cfg.conditional.then_some(self.cfg.num_classes)
    }

    fn as_density(&self) -> Option<&dyn Density> {
        Some(self)
    }

    fn as_latent(&self) -> Option<&dyn Latent> {
        Some(self)
    }
}

impl Density for Vae {
    fn estimators(&self) -> Vec<String> {
        ESTIMATORS.iter().map(|s| s.to_string()).collect()
    }

    /// `elbo`: E_q log p(x | z) over `samples` draws − KL. `iwae`: log (1/k) Σ w_i with k = `samples`.
    /// Examples are taken in groups and samples in chunks of at most `chunk` rows; example i draws its noise
    /// from its own generator (seeded from `Rng::new(seed)`), so the result does not depend on `chunk`.
    fn log_likelihood(&self, batch: &Batch, opts: &LikelihoodOptions) -> Result<LogLikelihood> {
        let iwae = match opts.estimator.as_deref().unwrap_or(ESTIMATORS[0]) {
            "elbo" => false,
            "iwae" => true,
            other => return Err(Error::unknown("estimator", other, ESTIMATORS)),
        };
        let (k, chunk, l) = (opts.samples, opts.chunk, self.cfg.latent_dim);
        if k == 0 || chunk == 0 {
            return Err(Error::invalid(
                "likelihood options",
                format!("samples ({k}) and chunk ({chunk}) must be ≥ 1"),
            ));
        }
        let kind = if iwae {
            LikelihoodKind::Estimate(format!("IWAE-{k}"))
        } else {
            LikelihoodKind::LowerBound("ELBO".into())
        };
        let (x, y) = self.inputs(batch)?;
        let b = batch.len();
        let mut root = Rng::new(opts.seed);
        let mut rngs: Vec<Rng> = (0..b).map(|_| Rng::new(root.next_u64())).collect();
        let group = (chunk / k).clamp(1, b.max(1)); // examples at once
        let mut nats = Vec::with_capacity(b);
        for g0 in (0..b).step_by(group) {
            let g = group.min(b - g0);
            let xg = x.narrow(0, g0, g)?;
            let yg = y.as_ref().map(|y| y.narrow(0, g0, g)).transpose()?;
            let (mu, logvar) = self.encoder.forward(&xg, yg.as_ref(), self.act)?; // (g, L)
            let (mu, logvar) = (mu.detach(), logvar.detach());
            let kl = gaussian_kl(&mu, &logvar)?.to_vec1::<f32>()?;
            let per = (chunk / g).max(1); // samples per chunk: g·per ≤ chunk rows
            let mut lse = vec![
                LogSumExp {
                    max: f64::NEG_INFINITY,
                    sum: 0.0
                };
                g
            ];
            let mut recon = vec![0f64; g];
            for s0 in (0..k).step_by(per) {
                let s = per.min(k - s0);
                let mut eps = Vec::with_capacity(s * g * l);
                for _ in 0..s {
                    rngs[g0..g0 + g]
                        .iter_mut()
                        .for_each(|r| eps.extend(r.normal_vec(l)));
                }
                let eps = Tensor::from_vec(eps, (s, g, l), &self.device)?; // (s, g, L)
                let p = self.pass(&xg, yg.as_ref(), &mu, &logvar, &eps)?;
                let scores = if iwae {
                    (p.log_px_z + p.log_ratio)?
                } else {
                    p.log_px_z
                };
                for row in scores.to_vec2::<f32>()? {
                    for (e, v) in row.into_iter().enumerate() {
                        lse[e].push(v as f64);
                        recon[e] += v as f64;
                    }
                }
            }
            for e in 0..g {
                nats.push(if iwae {
                    lse[e].value() - (k as f64).ln()
                } else {
                    recon[e] / k as f64 - kl[e] as f64
                });
            }
        }
        Ok(LogLikelihood {
            nats,
            kind,
            space: self.obs.space(),
        })
    }
}

impl Latent for Vae {
    fn latent_shape(&self) -> Vec<usize> {
        vec![self.cfg.latent_dim]
    }

    fn encode(&self, batch: &Batch) -> Result<Tensor> {
        let (x, y) = self.inputs(batch)?;
        Ok(self.encoder.forward(&x, y.as_ref(), self.act)?.0.detach()) // μ(x), (b, L)
    }

    fn decode(&self, z: &Tensor, condition: &Condition) -> Result<Tensor> {
        let (n, l) = z.dims2()?;
        if l != self.cfg.latent_dim {
            return Err(Error::invalid(
                "z",
                format!(
                    "shape {:?}, the model expects (n, {})",
                    z.dims(),
                    self.cfg.latent_dim
                ),
            ));
        }
        let y = self.condition(condition, n)?;
        self.generate(z, y.as_ref(), None)
    }
}
