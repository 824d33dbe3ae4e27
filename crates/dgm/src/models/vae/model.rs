//! Variational autoencoders: VAE (Kingma & Welling 2014, arXiv:1312.6114), IWAE (Burda et al. 2015,
//! arXiv:1509.00519), conditional VAE (Sohn et al. 2015) and β-VAE (Higgins et al. 2017).
//!
//! Encoder q(z | x, y) = N(μ(x, y), diag σ²(x, y)), prior p(z) = N(0, I), decoder p(x | z, y) one of the
//! observation models of [`super::decoders`]. With z_i = μ + σ ⊙ ε_i, ε_i ~ N(0, I) and
//! log w_i = log p(x | z_i) + log p(z_i) − log q(z_i | x):
//!
//! * `elbo` objective: L = E_q[log p(x | z)] − β·KL(q(z | x) ‖ p(z)), KL in closed form
//!   ½ Σ (μ² + σ² − 1 − log σ²), the expectation averaged over k samples. β = 1 is the ELBO, β > 1 β-VAE.
//! * `iwae` objective: L_k = E[log (1/k) Σ_i w_i] (Burda et al. eq. 8), by log-sum-exp;
//!   ELBO = L_1 ≤ L_k ≤ L_{k+1} ≤ log p(x).
//!
//! The loss is −L averaged over the batch. Its logged parts, in nats per example: `recon` = −E log p(x | z),
//! `kl`, `elbo` = −recon − kl (a bound on log p(x), so negative) and, for `iwae`, the bound `iwae` = L_k.
//! For evaluation ([`Density`]) the `elbo` estimator is a lower bound and the `iwae` estimator with k samples
//! tends to log p(x) as k grows; both run in bounded-memory chunks. A conditional model concatenates the
//! one-hot label to the encoder's features and to z.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use super::config::{validate, VaeConfig};
use super::decoders::Observation;
use crate::conditioning::{class_labels, one_hot};
use crate::data::Batch;
use crate::model::{
    Condition, DecoderBased, Density, Latent, LikelihoodKind, LikelihoodOptions, LogLikelihood,
    LossOutput, Model, SampleAbilities, SampleOptions,
};
use crate::nn::{upsample2x, Activation, Conv2d, Linear};
use crate::rng::Rng;
use crate::{Error, Result};

/// Density estimators, the default first.
pub const ESTIMATORS: &[&str] = &["elbo", "iwae"];

// ---------------------------------------------------------------------------------------------- blocks

/// Encoder q(z | x, y): x → features → (μ, log σ²).
struct Encoder {
    /// mlp arch: [x, y] → hidden layers.
    mlp: Vec<Linear>,
    /// conv arch: stride-2 3×3 stages on x.
    convs: Vec<Conv2d>,
    /// last hidden (mlp) or [conv features, y] (conv) → (μ, log σ²).
    head: Linear,
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
                h = l.forward_act(&h, act)?; // (b, hidden)
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
    /// mlp arch: [z, y] → hidden (reversed) → D; conv arch: one layer [z, y] → (ch, h', w').
    mlp: Vec<Linear>,
    /// conv arch: nearest ×2 + 3×3 conv per stage, back up to (channels[0], h, w).
    convs: Vec<Conv2d>,
    /// conv arch: the last 3×3 conv to the data's channels.
    out: Option<Conv2d>,
    /// conv arch: (ch, h', w') at the bottom.
    grid: (usize, usize, usize),
}

impl Decoder {
    fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let (shape, ch) = (&cfg.input_shape, &cfg.channels);
        let (d_in, d_out) = (cfg.latent_dim + cfg.num_classes, shape.iter().product());
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
            let (n, s): (usize, usize) = (ch.len(), 1 << ch.len());
            grid = (ch[n - 1], shape[1] / s, shape[2] / s);
            mlp.push(Linear::new(d_in, grid.0 * grid.1 * grid.2, vb.pp("fc0"))?);
            for i in (0..n).rev() {
                let vb = vb.pp(format!("conv{i}"));
                convs.push(Conv2d::new(ch[i], ch[i.saturating_sub(1)], 3, 1, 1, vb)?);
            }
            out = Some(Conv2d::new(ch[0], shape[0], 3, 1, 1, vb.pp("out"))?);
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
            let a = if i < last || self.out.is_some() {
                act
            } else {
                Activation::Identity
            };
            h = l.forward_act(&h, a)?; // (n, hidden)
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

/// Adds v to a running log Σ exp (kept as (max, Σ exp(vᵢ − max)) in f64), for importance-weighted
/// estimates over many chunks (IWAE; the flows' variational dequantization).
pub(crate) fn push_lse((max, sum): &mut (f64, f64), v: f64) {
    if v > *max {
        *sum = *sum * (*max - v).exp() + 1.0;
        *max = v;
    } else if v > f64::NEG_INFINITY {
        *sum += (v - *max).exp();
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

impl Vae {
    /// Builds the model `name` from a prepared config, variables `enc.*`, `dec.*` under `vb`.
    pub fn new(name: &str, cfg: VaeConfig, vb: VarBuilder) -> Result<Self> {
        validate(&cfg)?;
        let act = Activation::parse("model.activation", &cfg.activation)?;
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
        let (dims, want) = (batch.x.dims(), &self.cfg.input_shape);
        if dims.get(1..) != Some(&want[..]) {
            let msg = format!("shape {dims:?}, the model expects (b, {want:?})");
            return Err(Error::invalid("batch.x", msg));
        }
        let labels = match (self.cfg.conditional, &batch.labels) {
            (false, _) => return Ok((batch.x.clone(), None)),
            (true, Some(l)) => l.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?,
            (true, None) => vec![],
        };
        if labels.len() != batch.len() {
            let msg = format!(
                "{} labels for {} examples (model '{}' is class-conditional)",
                labels.len(),
                batch.len(),
                self.name
            );
            return Err(Error::invalid("batch.labels", msg));
        }
        Ok((
            batch.x.clone(),
            Some(one_hot(
                &labels,
                self.cfg.num_classes,
                "batch.labels",
                &self.device,
            )?),
        ))
    }

    /// The one-hot labels `(n, C)` a [`Condition`] asks for (one label broadcasts to all n), or `None`; the
    /// checks and messages are the shared ones of [`crate::conditioning::class_labels`].
    fn condition(&self, cond: &Condition, n: usize) -> Result<Option<Tensor>> {
        let k = if self.cfg.conditional {
            self.cfg.num_classes
        } else {
            0
        };
        match class_labels(cond, k, n, &self.name, &self.device)? {
            None => Ok(None),
            Some(ids) => Ok(Some(one_hot(
                &ids.to_vec1::<u32>()?,
                k,
                "condition",
                &self.device,
            )?)),
        }
    }

    /// The reparameterised pass for noise ε `(s, b, L)`: z_i = μ + σ ⊙ ε_i. Returns log p(x | z_i) and
    /// log p(z_i) − log q(z_i | x), each `(s, b)`.
    fn pass(
        &self,
        x: &Tensor,
        y: Option<&Tensor>,
        mu: &Tensor,
        logvar: &Tensor,
        eps: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
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
        Ok((log_px_z, log_ratio))
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
        let (log_px_z, log_ratio) = self.pass(&x, y.as_ref(), &mu, &logvar, &eps)?; // (k, b)
        let recon = log_px_z.mean_all()?.neg()?; // −E_q log p(x | z), per example
        let kl = gaussian_kl(&mu, &logvar)?.mean_all()?;
        let (rv, kv) = (
            recon.to_scalar::<f32>()? as f64,
            kl.to_scalar::<f32>()? as f64,
        );
        let mut parts = vec![
            ("recon".into(), rv),
            ("kl".into(), kv),
            ("elbo".into(), -rv - kv),
        ];
        let loss = if self.cfg.objective == "iwae" {
            // L_k = log (1/k) Σ_i w_i   (Burda et al. eq. 8)
            let log_w = (log_px_z + log_ratio)?; // (k, b)
            let bound = (log_w.log_sum_exp(0)? - (k as f64).ln())?.mean_all()?;
            parts.push(("iwae".into(), bound.to_scalar::<f32>()? as f64));
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
        if !(opts.temperature.is_finite() && opts.temperature >= 0.0) {
            let msg = format!("{}: must be a finite number ≥ 0", opts.temperature);
            return Err(Error::invalid("temperature", msg));
        }
        if opts.sampler.is_some() || opts.steps.is_some() || opts.guidance.is_some() {
            let option = match (&opts.sampler, opts.steps) {
                (Some(_), _) => "sampler",
                (None, Some(_)) => "steps",
                (None, None) => "guidance",
            };
            return Err(Error::NotApplicable {
                option,
                model: self.name.clone(),
                why: "it draws samples in one decoder pass; sampler, steps and guidance are options of diffusion models (ddpm, edm, ncsn)".into(),
            });
        }
        let y = self.condition(&opts.condition, n)?;
        let mut rng = Rng::new(opts.seed);
        let z = (rng.randn((n, self.cfg.latent_dim), &self.device)? * opts.temperature)?; // (n, L)
        let draw = if opts.mean { None } else { Some(&mut rng) };
        self.generate(&z, y.as_ref(), draw)
    }

    fn num_classes(&self) -> Option<usize> {
        self.cfg.conditional.then_some(self.cfg.num_classes)
    }

    fn sample_abilities(&self) -> SampleAbilities {
        SampleAbilities {
            observation_mean: true,
            ..SampleAbilities::default()
        }
    }

    fn as_density(&self) -> Option<&dyn Density> {
        Some(self)
    }

    fn as_latent(&self) -> Option<&dyn Latent> {
        Some(self)
    }

    fn as_decoder_based(&self) -> Option<&dyn DecoderBased> {
        Some(self)
    }
}

/// The decoder mean with the model's own Gaussian σ: annealed importance sampling then estimates the same
/// density as the ELBO and IWAE-k bound. A Bernoulli or logistic decoder's density is not Gaussian, so
/// [`DecoderBased::observation_std`] refuses them rather than score a model other than the one trained.
impl DecoderBased for Vae {
    fn latent_dim(&self) -> usize {
        self.cfg.latent_dim
    }

    fn decode_mean(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let y = match (self.cfg.conditional, labels) {
            (true, Some(l)) => Some(one_hot(
                &l.to_dtype(DType::U32)?.to_vec1::<u32>()?,
                self.cfg.num_classes,
                "labels",
                &self.device,
            )?),
            (false, None) => None,
            (true, None) => {
                let msg = format!(
                    "model '{}' is class-conditional and needs labels",
                    self.name
                );
                return Err(Error::invalid("labels", msg));
            }
            (false, Some(_)) => {
                let msg = format!("model '{}' is not class-conditional", self.name);
                return Err(Error::invalid("labels", msg));
            }
        };
        let out = self.decoder.forward(z, y.as_ref(), self.act)?; // (n, D)
        self.obs.mean(&out)
    }

    fn observation_std(&self) -> Result<Option<Tensor>> {
        self.obs.gaussian_std().map(Some).map_err(|e| {
            Error::Unsupported(format!(
                "annealed importance sampling scores a Gaussian observation model, and {e} ({} with                  decoder = \"{}\"); its likelihood is --metric nll (elbo, iwae)",
                self.name, self.cfg.decoder
            ))
        })
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
            let msg = format!("samples ({k}) and chunk ({chunk}) must be ≥ 1");
            return Err(Error::invalid("likelihood options", msg));
        }
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
            let mut lse = vec![(f64::NEG_INFINITY, 0.0); g]; // running log Σ_i w_i
            let mut recon = vec![0f64; g]; // Σ_i log p(x | z_i)
            for s0 in (0..k).step_by(per) {
                let s = per.min(k - s0);
                let mut eps = Vec::with_capacity(s * g * l);
                for _ in 0..s {
                    rngs[g0..g0 + g]
                        .iter_mut()
                        .for_each(|r| eps.extend(r.normal_vec(l)));
                }
                let eps = Tensor::from_vec(eps, (s, g, l), &self.device)?; // (s, g, L)
                let (log_px_z, log_ratio) = self.pass(&xg, yg.as_ref(), &mu, &logvar, &eps)?;
                let rows = log_px_z
                    .to_vec2::<f32>()?
                    .into_iter()
                    .zip(log_ratio.to_vec2::<f32>()?);
                for (px, ratio) in rows {
                    for e in 0..g {
                        push_lse(&mut lse[e], px[e] as f64 + ratio[e] as f64);
                        recon[e] += px[e] as f64;
                    }
                }
            }
            for e in 0..g {
                nats.push(match iwae {
                    true => lse[e].0 + lse[e].1.ln() - (k as f64).ln(),
                    false => recon[e] / k as f64 - kl[e] as f64,
                });
            }
        }
        let kind = match iwae {
            true => LikelihoodKind::Estimate(format!("IWAE-{k}")),
            // the KL term is exact, the reconstruction term a k-sample Monte-Carlo mean
            false => LikelihoodKind::bound_estimate(
                "ELBO",
                format!("{k} z sample{} per example", if k == 1 { "" } else { "s" }),
            ),
        };
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
            let msg = format!(
                "shape {:?}, the model expects (n, {})",
                z.dims(),
                self.cfg.latent_dim
            );
            return Err(Error::invalid("z", msg));
        }
        let y = self.condition(condition, n)?;
        self.generate(z, y.as_ref(), None)
    }
}
