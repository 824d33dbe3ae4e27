//! Annealed importance sampling (Neal 2001) for the log-likelihood of a decoder-based model: Wu, Burda,
//! Salakhutdinov & Grosse 2017, "On the quantitative analysis of decoder-based generative models".
//!
//! A decoder g (a GAN's generator, a VAE's decoder mean) with prior z ~ N(0, I) and a Gaussian observation
//! model p(x | z) = N(x; g(z), s²I) defines p(x) = ∫ p(z) p(x | z) dz. AIS moves K chains per example from the
//! prior to the posterior through the intermediate densities f_t(z) = p(z) p(x | z)^{β_t}, 0 = β_0 < … < β_T = 1:
//!
//!   z_0 ~ p(z);   log w = Σ_{t=1}^{T} (β_t − β_{t−1}) log p(x | z_{t−1});   z_t ~ T_t(· | z_{t−1})
//!
//! where T_t is a Hamiltonian Monte Carlo transition (L leapfrog steps, Metropolis–Hastings correction) that
//! leaves f_t invariant. E[w] = p(x) exactly, so p̂(x) = mean_k w_k is unbiased and log p̂(x) is a stochastic
//! lower bound on log p(x) (Jensen) whose gap closes as T grows: reported as `Estimate("AIS")` with its
//! settings. The schedule is the paper's sigmoid one, β_t ∝ σ(δ(2t/T − 1)) rescaled to [0, 1] with δ = 4.
//! Each chain's leapfrog step size adapts towards an acceptance rate of 0.65 (as the paper's code does:
//! multiplied by e^{λ(1 − 0.65)} after an accepted move and by e^{−λ·0.65} after a rejected one); adapting from
//! the chain's own history is the usual practical compromise and a source of (small) bias, stated here.
//!
//! Gradients ∇_z log f_t need only first-order autodiff (candle has no second order, candle#2462; HMC needs
//! none). Every random number comes from dgm's seeded RNG, so a run is reproducible bit for bit.

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::likelihood::{nll_report, NllReport, PerExampleNll, DATA_STREAM};
use crate::conditioning::batch_labels;
use crate::data::{Dataset, Preprocessing};
use crate::distributions::softplus;
use crate::model::{DecoderBased, LikelihoodKind, LikelihoodSpace};
use crate::rng::Rng;
use crate::{Error, Result};

/// Settings of an AIS run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AisConfig {
    /// Number T of intermediate distributions.
    pub steps: usize,
    /// Chains K per example.
    pub chains: usize,
    /// Leapfrog steps L per HMC transition.
    pub leapfrog: usize,
    /// Initial leapfrog step size (adapted per chain).
    pub step_size: f64,
    /// Standard deviation s of the Gaussian observation model N(x; g(z), s²I).
    pub obs_std: f64,
    /// Seed of the chains' random numbers.
    pub seed: u64,
}

impl Default for AisConfig {
    /// T = 1000, K = 16, L = 10, step size 0.05, s = 0.1, seed 0.
    fn default() -> Self {
        Self {
            steps: 1000,
            chains: 16,
            leapfrog: 10,
            step_size: 0.05,
            obs_std: 0.1,
            seed: 0,
        }
    }
}

impl AisConfig {
    /// Refuses settings AIS cannot run with, naming the bad value.
    pub fn validate(&self) -> Result<()> {
        let positive = |name: &'static str, v: usize| {
            if v == 0 {
                Err(Error::invalid(name, "must be at least 1, got 0"))
            } else {
                Ok(())
            }
        };
        positive("ais.steps", self.steps)?;
        positive("ais.chains", self.chains)?;
        positive("ais.leapfrog", self.leapfrog)?;
        for (name, v) in [
            ("ais.step_size", self.step_size),
            ("ais.obs_std", self.obs_std),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::invalid(
                    name,
                    format!("must be a positive finite number, got {v}"),
                ));
            }
        }
        Ok(())
    }
}

/// The outcome of [`ais_log_likelihood`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AisResult {
    /// log p̂(x) per example, nats (a stochastic lower bound on log p(x)).
    pub log_px: Vec<f64>,
    /// Per example, the standard error of log p̂(x) from the spread of the chains' weights (delta method:
    /// sd(w) / (√K · mean(w))); NaN for K = 1.
    pub stderr: Vec<f64>,
    /// Fraction of HMC proposals accepted, over all chains and steps.
    pub accept_rate: f64,
    /// The settings used.
    pub config: AisConfig,
}

/// The paper's sigmoid schedule: β_t = (σ(δ(2t/T − 1)) − σ(−δ)) / (σ(δ) − σ(−δ)), δ = 4, t = 0..=T.
pub fn sigmoid_schedule(steps: usize) -> Vec<f64> {
    let delta = 4.0;
    let s = |t: f64| 1.0 / (1.0 + (-t).exp());
    let (lo, hi) = (s(-delta), s(delta));
    (0..=steps)
        .map(|t| (s(delta * (2.0 * t as f64 / steps as f64 - 1.0)) - lo) / (hi - lo))
        .collect()
}

/// Target of the step-size adaptation.
const TARGET_ACCEPT: f64 = 0.65;
/// Rate λ of the step-size adaptation.
const ADAPT_RATE: f64 = 0.02;

/// The annealed term ℓ(z) and its gradient in z, per chain (for a decoder ℓ = log p(x | z); independent of β: the
/// annealed energy is U_β(z) = ½‖z‖² − β ℓ(z) + const, with ∇U_β = z − β ∇ℓ).
struct LogLik {
    value: Vec<f64>,
    grad: Tensor,
}

/// The chains of a batch of examples: rows ordered example-major (row = example · K + chain).
struct Chains<'a> {
    decode: &'a dyn Fn(&Tensor) -> Result<Tensor>,
    /// The data, repeated per chain: (N, D).
    x: Tensor,
    /// −1 / (2σ²) per data value: (1, D).
    neg_half_precision: Tensor,
    /// log of the Gaussian's normaliser, −Σ_d log σ_d − (D/2) log 2π.
    log_norm: f64,
}

impl Chains<'_> {
    fn log_lik(&self, z: &Tensor) -> Result<LogLik> {
        let zv = Var::from_tensor(&z.detach())?;
        let g = (self.decode)(zv.as_tensor())?;
        let n = z.dim(0)?;
        let g = g.reshape((n, g.elem_count() / n.max(1)))?;
        if g.dims() != self.x.dims() {
            return Err(Error::invalid(
                "ais decoder",
                format!(
                    "decodes to {:?} values per example, the data have {:?}",
                    g.dims(),
                    self.x.dims()
                ),
            ));
        }
        // log p(x | z) = −Σ_d (x_d − g_d(z))² / (2σ_d²) + log_norm: (N,)
        let ll = (g - &self.x)?
            .sqr()?
            .broadcast_mul(&self.neg_half_precision)?
            .sum(1)?;
        LogLik::of(&ll, &zv, self.log_norm)
    }
}

impl LogLik {
    /// From the per-chain values `l` `(N,)` computed from the variable `z`: the values plus `constant`, and
    /// ∇_z Σ l (zero when `l` does not depend on `z`).
    fn of(l: &Tensor, z: &Var, constant: f64) -> Result<Self> {
        let grad = match l.sum_all()?.backward()?.get(z.as_tensor()) {
            Some(g) => g.detach(),
            None => z.as_tensor().zeros_like()?,
        };
        let value = l.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(LogLik {
            value: value.into_iter().map(|v| v + constant).collect(),
            grad,
        })
    }
}

/// U_β(z) per chain, up to a constant that cancels in the Metropolis–Hastings ratio, plus the kinetic energy
/// ½‖p‖²: the Hamiltonian.
fn hamiltonian(z: &Tensor, p: &Tensor, ll: &LogLik, beta: f64) -> Result<Vec<f64>> {
    let half_sq = |t: &Tensor| -> Result<Vec<f64>> {
        Ok((t.sqr()?.sum(1)? * 0.5)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?)
    };
    let (zz, pp) = (half_sq(z)?, half_sq(p)?);
    Ok((0..zz.len())
        .map(|i| zz[i] + pp[i] - beta * ll.value[i])
        .collect())
}

/// ∇U_β(z) = z − β ∇ log p(x | z).
fn grad_u(z: &Tensor, ll: &LogLik, beta: f64) -> Result<Tensor> {
    Ok((z - (&ll.grad * beta)?)?)
}

/// Estimates log p(x) for each row of `x` ((B, …), flattened to (B, D)) under the decoder `decode`
/// ((N, latent_dim) → (N, …) with D values per row; row r of z belongs to example r / K) with prior N(0, I) and
/// observation model N(g(z), diag σ²), by AIS with the settings `cfg`. σ is `std` (one value per data value,
/// `(D,)`: the model's own) when given, else `cfg.obs_std` for every value.
pub fn ais_log_likelihood(
    decode: &dyn Fn(&Tensor) -> Result<Tensor>,
    x: &Tensor,
    latent_dim: usize,
    std: Option<&Tensor>,
    cfg: &AisConfig,
) -> Result<AisResult> {
    cfg.validate()?;
    if latent_dim == 0 || x.rank() < 1 || x.dim(0)? == 0 {
        return Err(Error::invalid(
            "ais",
            format!("needs a latent dimension ≥ 1 and at least one example, got {latent_dim} and data {:?}", x.dims()),
        ));
    }
    let dev: Device = x.device().clone();
    let b = x.dim(0)?;
    let k = cfg.chains;
    let n = b * k;
    let xf = x.to_dtype(DType::F32)?.reshape((b, x.elem_count() / b))?;
    let d = xf.dim(1)?;
    let std = match std {
        Some(s) if s.elem_count() == d => s.to_dtype(DType::F32)?.reshape((1, d))?,
        Some(s) => {
            return Err(Error::invalid(
                "ais observation std",
                format!("{:?} values for data with {d} values per example", s.dims()),
            ))
        }
        None => Tensor::full(cfg.obs_std as f32, (1, d), &dev)?,
    };
    let sd = std.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    if let Some(bad) = sd.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(Error::invalid(
            "ais observation std",
            format!("{bad}: every σ must be a positive finite number"),
        ));
    }
    let log_norm = -sd.iter().map(|s| s.ln()).sum::<f64>()
        - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln();
    let chains = Chains {
        decode,
        x: xf
            .unsqueeze(1)?
            .broadcast_as((b, k, d))?
            .reshape((n, d))?
            .contiguous()?,
        neg_half_precision: (std.sqr()?.recip()? * -0.5)?,
        log_norm,
    };
    let (log_w, accept_rate) = ais_core(&|z| chains.log_lik(z), n, latent_dim, cfg, &dev)?;
    let (log_px, stderr) = log_w.chunks(k).map(log_mean_exp).unzip();
    Ok(AisResult {
        log_px,
        stderr,
        accept_rate,
        config: cfg.clone(),
    })
}

/// log of the mean of the weights exp(`log_w`) and its standard error by the delta method, sd(w) / (√K mean(w))
/// (NaN for one weight).
fn log_mean_exp(log_w: &[f64]) -> (f64, f64) {
    let k = log_w.len() as f64;
    let max = log_w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let ratios: Vec<f64> = log_w.iter().map(|v| (v - max).exp()).collect();
    let mean = ratios.iter().sum::<f64>() / k;
    let stderr = if log_w.len() > 1 {
        let var = ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (k - 1.0);
        var.sqrt() / (k.sqrt() * mean)
    } else {
        f64::NAN
    };
    (max + mean.ln(), stderr)
}

/// The annealing itself, for any annealed term: `n` chains in R^`dim` start from N(0, I) and move through
/// f_β(z) = N(z; 0, I) exp(β ℓ(z)) along the sigmoid schedule with HMC, where `log_term` gives ℓ and ∇ℓ per
/// chain. Returns each chain's log weight (an unbiased estimate of E_{N(0, I)}[exp ℓ] in expectation of the
/// weight) and the acceptance rate.
fn ais_core(
    log_term: &dyn Fn(&Tensor) -> Result<LogLik>,
    n: usize,
    dim: usize,
    cfg: &AisConfig,
    dev: &Device,
) -> Result<(Vec<f64>, f64)> {
    let betas = sigmoid_schedule(cfg.steps);
    let mut rng = Rng::named(cfg.seed, "metrics/ais");
    let mut z = rng.randn((n, dim), dev)?;
    let mut eps = vec![cfg.step_size; n];
    let mut log_w = vec![0.0f64; n];
    let mut ll = log_term(&z)?;
    let (mut accepted, mut proposed) = (0u64, 0u64);
    for t in 1..=cfg.steps {
        let (beta_prev, beta) = (betas[t - 1], betas[t]);
        for (w, l) in log_w.iter_mut().zip(&ll.value) {
            *w += (beta - beta_prev) * l;
        }
        // one HMC transition leaving f_t ∝ N(z; 0, I) exp(β ℓ(z)) invariant: L leapfrog steps, then accept or reject
        let eps_t = Tensor::from_vec(
            eps.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (n, 1),
            dev,
        )?;
        let half = (&eps_t * 0.5)?;
        let p0 = rng.randn((n, dim), dev)?;
        let h0 = hamiltonian(&z, &p0, &ll, beta)?;
        let mut p = (&p0 - grad_u(&z, &ll, beta)?.broadcast_mul(&half)?)?;
        let mut zn = z.clone();
        let mut lln = None;
        for l in 0..cfg.leapfrog {
            zn = (&zn + p.broadcast_mul(&eps_t)?)?;
            let at = log_term(&zn)?;
            let step = if l + 1 == cfg.leapfrog { &half } else { &eps_t };
            p = (&p - grad_u(&zn, &at, beta)?.broadcast_mul(step)?)?;
            lln = Some(at);
        }
        let lln = lln.ok_or_else(|| Error::invalid("ais.leapfrog", "must be at least 1"))?;
        let h1 = hamiltonian(&zn, &p, &lln, beta)?;
        let mut keep = vec![0u8; n];
        for i in 0..n {
            let log_a = h0[i] - h1[i];
            let accept = log_a.is_finite() && (log_a >= 0.0 || rng.uniform_f64().ln() < log_a);
            keep[i] = u8::from(accept);
            eps[i] *= if accept {
                (ADAPT_RATE * (1.0 - TARGET_ACCEPT)).exp()
            } else {
                (-ADAPT_RATE * TARGET_ACCEPT).exp()
            };
            accepted += u64::from(accept);
        }
        proposed += n as u64;
        // where, not a 0/1 product: a rejected proposal may hold non-finite values
        let m = Tensor::from_vec(keep.clone(), (n, 1), dev)?.broadcast_as((n, dim))?;
        z = m.where_cond(&zn, &z)?;
        ll = LogLik {
            value: (0..n)
                .map(|i| {
                    if keep[i] > 0 {
                        lln.value[i]
                    } else {
                        ll.value[i]
                    }
                })
                .collect(),
            grad: m.where_cond(&lln.grad, &ll.grad)?,
        };
    }
    Ok((log_w, accepted as f64 / proposed.max(1) as f64))
}

/// The estimate of [`ais_log_partition`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AisPartition {
    /// log Ẑ, nats: the log of an unbiased estimate of Z (a stochastic lower bound on log Z).
    pub log_z: f64,
    /// Its standard error from the spread of the K chains' weights (delta method).
    pub stderr: f64,
    /// Fraction of HMC proposals accepted.
    pub accept_rate: f64,
    /// The settings used (`obs_std` plays no part).
    pub config: AisConfig,
}

/// The tractable distribution [`ais_log_partition`] anneals from, and the space its energy lives on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PartitionBase {
    /// An energy over R^D, from N(0, s²I): x = s·u with u ~ N(0, I).
    Gaussian {
        /// s.
        std: f64,
    },
    /// An energy on the box [lo, hi]^D (zero density outside), from x = lo + (hi − lo)·σ(u), u ~ N(0, I): the
    /// Jacobian log|dx/du| = Σ_d [log(hi − lo) + log σ(u_d) + log σ(−u_d)] joins the annealed term, so the chains
    /// move in an unbounded space and never leave the box.
    Box {
        /// Lower end of every coordinate.
        lo: f64,
        /// Upper end.
        hi: f64,
    },
}

impl PartitionBase {
    fn validate(&self) -> Result<()> {
        let ok = match *self {
            PartitionBase::Gaussian { std } => std.is_finite() && std > 0.0,
            PartitionBase::Box { lo, hi } => lo.is_finite() && hi.is_finite() && lo < hi,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(
                "ais base",
                format!("needs a positive finite σ or a box with finite lo < hi, got {self:?}"),
            ))
        }
    }

    /// x(u) for chains `u` `(K, D)` and log|dx/du| per chain `(K,)`.
    fn map(&self, u: &Tensor) -> Result<(Tensor, Tensor)> {
        let d = u.dim(1)? as f64;
        Ok(match *self {
            PartitionBase::Gaussian { std } => (
                (u * std)?,
                Tensor::full((d * std.ln()) as f32, u.dim(0)?, u.device())?,
            ),
            PartitionBase::Box { lo, hi } => {
                // log σ(u) + log σ(−u) = −softplus(−u) − softplus(u)
                let log_j =
                    ((softplus(u)? + softplus(&u.neg()?)?)?.sum(1)?.neg()? + d * (hi - lo).ln())?;
                (candle_nn::ops::sigmoid(u)?.affine(hi - lo, lo)?, log_j)
            }
        })
    }
}

/// log Z = log ∫ exp(−E(x)) dx of an energy over R^D or a box ([`PartitionBase`]; `shape`: one example's shape,
/// D values), by AIS with `cfg.chains` chains: in u (x = x(u), u ~ N(0, I)) the chains anneal N(u; 0, I) exp(β ℓ(u))
/// with ℓ(u) = −E(x(u)) + log|dx/du| + ½‖u‖² + (D/2) log 2π, so that E_{N(0, I)}[exp ℓ] = Z. `energy` maps a batch
/// `(n, …shape)` to one energy per example `(n,)`.
pub fn ais_log_partition(
    energy: &dyn Fn(&Tensor) -> Result<Tensor>,
    shape: &[usize],
    base: PartitionBase,
    cfg: &AisConfig,
    device: &Device,
) -> Result<AisPartition> {
    cfg.validate()?;
    base.validate()?;
    let d: usize = shape.iter().product();
    if d == 0 {
        return Err(Error::invalid(
            "ais base",
            format!("needs an example shape with values, got {shape:?}"),
        ));
    }
    let k = cfg.chains;
    let mut batch_shape = vec![k];
    batch_shape.extend_from_slice(shape);
    let constant = 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln();
    let log_term = |u: &Tensor| -> Result<LogLik> {
        let uv = Var::from_tensor(&u.detach())?;
        let (x, log_j) = base.map(uv.as_tensor())?;
        let e = energy(&x.reshape(batch_shape.as_slice())?)?;
        if e.dims() != [k] {
            return Err(Error::invalid(
                "energy",
                format!(
                    "gives shape {:?} for {k} examples: one energy per example expected",
                    e.dims()
                ),
            ));
        }
        let l = (((uv.as_tensor().sqr()?.sum(1)? * 0.5)? + log_j)? - e.to_dtype(DType::F32)?)?; // (K,)
        LogLik::of(&l, &uv, constant)
    };
    let (log_w, accept_rate) = ais_core(&log_term, k, d, cfg, device)?;
    let (log_z, stderr) = log_mean_exp(&log_w);
    Ok(AisPartition {
        log_z,
        stderr,
        accept_rate,
        config: cfg.clone(),
    })
}

/// The preprocessing AIS scores data under: the run's evaluation preprocessing with uniform dequantization on
/// (a density over dequantized pixels bounds the probability of the 8-bit values, so its bits/dim compare with
/// every family's), or raw values (2-D points). Binarized data are refused: the observation model is Gaussian,
/// a density over continuous values.
pub fn ais_preprocessing(prep: &Preprocessing) -> Result<Preprocessing> {
    match prep {
        Preprocessing::Scale { range, .. } => Ok(Preprocessing::Scale {
            range: *range,
            dequantize: true,
        }),
        Preprocessing::Identity => Ok(Preprocessing::Identity),
        Preprocessing::Binarize { .. } => Err(Error::Unsupported(format!(
            "annealed importance sampling scores a Gaussian observation model, a density over continuous \
             values, and these data are {}",
            prep.describe()
        ))),
    }
}

/// Example × chain rows AIS evaluates at once (bounds memory; the examples per batch follow from the chains
/// alone, so the result does not depend on any batch size).
const AIS_ROWS: usize = 2048;

/// Scores the first `limit` examples of `data` (all if `None`) by AIS under `model`, preprocessed by `prep`
/// (use [`ais_preprocessing`]): a class-conditional model scores log p(x | y) with each example's own class.
/// σ is the model's own ([`DecoderBased::observation_std`]) when it has one, else `cfg.obs_std`. The chains of
/// the batch starting at example i use seed `cfg.seed + i`. Returns the report (estimator `ais`, kind
/// `Estimate("AIS …")` naming T, K, L and σ) and the HMC acceptance rate. `progress(done, total)` is called
/// after each batch.
pub fn evaluate_ais(
    model: &dyn DecoderBased,
    data: &Dataset,
    prep: &Preprocessing,
    cfg: &AisConfig,
    limit: Option<usize>,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(NllReport, f64)> {
    cfg.validate()?;
    let n = limit.unwrap_or(data.len()).min(data.len());
    if n == 0 {
        return Err(Error::invalid("limit", "no examples to evaluate"));
    }
    let own_std = model.observation_std()?;
    let per_batch = (AIS_ROWS / cfg.chains).max(1);
    let mut data_rng = Rng::stream(cfg.seed, DATA_STREAM);
    let (mut nats, mut accepted) = (Vec::with_capacity(n), 0.0);
    for start in (0..n).step_by(per_batch) {
        let end = (start + per_batch).min(n);
        let idx: Vec<usize> = (start..end).collect();
        let batch = data.batch(&idx, prep, &mut data_rng, device)?;
        // each example's label, repeated for its K chains (rows are example-major)
        let classes = model.num_classes().unwrap_or(0);
        let labels = batch_labels(&batch, classes, model.name())?
            .map(|l| -> Result<Tensor> {
                Ok(l.to_dtype(DType::U32)?
                    .unsqueeze(1)?
                    .broadcast_as((idx.len(), cfg.chains))?
                    .flatten_all()?)
            })
            .transpose()?;
        let decode = |z: &Tensor| model.decode_mean(z, labels.as_ref());
        let run = AisConfig {
            seed: cfg.seed.wrapping_add(start as u64),
            ..cfg.clone()
        };
        let r = ais_log_likelihood(
            &decode,
            &batch.x,
            model.latent_dim(),
            own_std.as_ref(),
            &run,
        )?;
        nats.extend(r.log_px.iter().map(|v| -v));
        accepted += r.accept_rate * idx.len() as f64;
        progress(end, n);
    }
    let sigma = match &own_std {
        Some(s) => format!(
            "the model's own σ (mean {:.4})",
            s.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?
        ),
        None => format!("σ = {}", cfg.obs_std),
    };
    let accept_rate = accepted / n as f64;
    let note = format!(
        "each example's value is log of the mean of its K chains' importance weights: an unbiased estimate of \
         p(x), so a stochastic lower bound on log p(x) whose gap closes as T grows; HMC acceptance rate {:.2}",
        accept_rate
    );
    let report = ais_report(
        nats,
        "AIS, ",
        &sigma,
        cfg,
        model.num_classes(),
        data,
        prep,
        note,
    );
    Ok((report, accept_rate))
}

/// The report of an AIS likelihood: per-example `nats` as `Estimate("<prefix>T = …, K = … chains, L = …
/// leapfrog steps<, what>")` with `note`, for the examples of `data` preprocessed by `prep`.
#[allow(clippy::too_many_arguments)]
pub(super) fn ais_report(
    nats: Vec<f64>,
    prefix: &str,
    what: &str,
    cfg: &AisConfig,
    num_classes: Option<usize>,
    data: &Dataset,
    prep: &Preprocessing,
    note: String,
) -> NllReport {
    let what = if what.is_empty() {
        String::new()
    } else {
        format!(", {what}")
    };
    let per = PerExampleNll {
        nats,
        kind: LikelihoodKind::Estimate(format!(
            "{prefix}T = {}, K = {} chains, L = {} leapfrog steps{what}",
            cfg.steps, cfg.chains, cfg.leapfrog
        )),
        space: LikelihoodSpace::Continuous,
    };
    let mut report = nll_report(
        "ais",
        cfg.chains,
        Some(cfg.steps),
        &per,
        num_classes,
        data.example_dim(),
        prep,
    );
    report.note = Some(note);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// log N(x; b, W Wᵀ + s²I) in f64 (Cholesky), x and b of length D, W (D, k) row-major.
    fn exact_log_px(x: &[f64], w: &[f64], bias: &[f64], s: f64, dd: usize, k: usize) -> f64 {
        let mut c = vec![0.0; dd * dd];
        for i in 0..dd {
            for j in 0..dd {
                c[i * dd + j] = (0..k).map(|l| w[i * k + l] * w[j * k + l]).sum::<f64>()
                    + if i == j { s * s } else { 0.0 };
            }
        }
        // Cholesky C = L Lᵀ
        let mut l = vec![0.0; dd * dd];
        for i in 0..dd {
            for j in 0..=i {
                let sum: f64 = (0..j).map(|m| l[i * dd + m] * l[j * dd + m]).sum();
                l[i * dd + j] = if i == j {
                    (c[i * dd + i] - sum).sqrt()
                } else {
                    (c[i * dd + j] - sum) / l[j * dd + j]
                };
            }
        }
        // solve L y = x − b
        let mut y = vec![0.0; dd];
        for i in 0..dd {
            let sum: f64 = (0..i).map(|m| l[i * dd + m] * y[m]).sum();
            y[i] = (x[i] - bias[i] - sum) / l[i * dd + i];
        }
        let log_det: f64 = (0..dd).map(|i| l[i * dd + i].ln()).sum::<f64>() * 2.0;
        -0.5 * (y.iter().map(|v| v * v).sum::<f64>()
            + log_det
            + dd as f64 * (2.0 * std::f64::consts::PI).ln())
    }

    /// On a linear-Gaussian decoder g(z) = W z + b the marginal is N(b, W Wᵀ + s²I): AIS agrees with it within
    /// three of its standard errors (which are below 0.1 nats), and is bit-reproducible.
    #[test]
    fn ais_recovers_the_exact_log_likelihood_of_a_linear_gaussian_decoder() -> Result<()> {
        let (dd, k, s) = (5usize, 2usize, 0.5f64);
        let mut rng = Rng::new(3);
        let w: Vec<f64> = (0..dd * k).map(|_| rng.normal() as f64).collect();
        let bias: Vec<f64> = (0..dd).map(|_| 0.5 * rng.normal() as f64).collect();
        let dev = Device::Cpu;
        let wt = Tensor::from_vec(
            w.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (dd, k),
            &dev,
        )?;
        let bt = Tensor::from_vec(
            bias.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (1, dd),
            &dev,
        )?;
        let decode = |z: &Tensor| -> Result<Tensor> { Ok(z.matmul(&wt.t()?)?.broadcast_add(&bt)?) };
        // three data points drawn from the model
        let xs: Vec<f64> = (0..3)
            .flat_map(|_| {
                let z: Vec<f64> = (0..k).map(|_| rng.normal() as f64).collect();
                (0..dd)
                    .map(|i| {
                        bias[i]
                            + (0..k).map(|l| w[i * k + l] * z[l]).sum::<f64>()
                            + s * rng.normal() as f64
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let x = Tensor::from_vec(
            xs.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (3, dd),
            &dev,
        )?;
        let cfg = AisConfig {
            steps: 500,
            chains: 32,
            leapfrog: 5,
            step_size: 0.05,
            obs_std: s,
            seed: 1,
        };
        let r = ais_log_likelihood(&decode, &x, k, None, &cfg)?;
        assert!(
            r.accept_rate > 0.3 && r.accept_rate < 0.95,
            "accept rate {}",
            r.accept_rate
        );
        for i in 0..3 {
            let exact = exact_log_px(&xs[i * dd..(i + 1) * dd], &w, &bias, s, dd, k);
            let est = r.log_px[i];
            assert!(
                (est - exact).abs() < 3.0 * r.stderr[i] + 0.02 && r.stderr[i] < 0.1,
                "example {i}: AIS {est} ± {} vs exact {exact}",
                r.stderr[i]
            );
        }
        assert_eq!(ais_log_likelihood(&decode, &x, k, None, &cfg)?, r);
        Ok(())
    }

    /// Without annealing steps to speak of (T = 1), AIS is importance sampling from the prior: an estimate with
    /// a much larger spread than the annealed one (whose log-weight variance falls as 1/T), which matches the
    /// exact value.
    #[test]
    fn more_annealing_steps_tighten_the_estimate() -> Result<()> {
        let dev = Device::Cpu;
        let decode = |z: &Tensor| -> Result<Tensor> { Ok((z * 3.0)?) };
        let x = Tensor::from_vec(vec![2.5f32, -1.0], (1, 2), &dev)?;
        let run = |steps| {
            ais_log_likelihood(
                &decode,
                &x,
                2,
                None,
                &AisConfig {
                    steps,
                    chains: 64,
                    leapfrog: 5,
                    step_size: 0.05,
                    obs_std: 0.5,
                    seed: 2,
                },
            )
        };
        // exact: x ~ N(0, (9 + s²) I)
        let v = 9.0 + 0.5f64 * 0.5;
        let exact = -(2.5f64 * 2.5 + 1.0) / (2.0 * v) - (2.0 * std::f64::consts::PI * v).ln();
        let (short, long) = (run(1)?, run(2000)?);
        let l = long.log_px[0];
        assert!(
            (l - exact).abs() < 3.0 * long.stderr[0] + 0.02,
            "T = 2000: {l} ± {} vs {exact}",
            long.stderr[0]
        );
        assert!(
            long.stderr[0] < 0.05 && short.stderr[0] > 4.0 * long.stderr[0],
            "{short:?} {long:?}"
        );
        Ok(())
    }

    /// With the model's own σ per data value (a VAE's Gaussian decoder) the observation model is N(g(z),
    /// diag σ²): for g(z) = 3z the marginal is N(0, diag(9 + σ_d²)), matched within the estimate's error; a σ
    /// of the wrong length or not positive is refused.
    #[test]
    fn a_per_value_observation_std_is_used() -> Result<()> {
        let dev = Device::Cpu;
        let decode = |z: &Tensor| -> Result<Tensor> { Ok((z * 3.0)?) };
        let x = Tensor::from_vec(vec![2.5f32, -1.0], (1, 2), &dev)?;
        let cfg = AisConfig {
            steps: 500,
            chains: 32,
            leapfrog: 5,
            step_size: 0.05,
            obs_std: 0.5,
            seed: 4,
        };
        let sd = [0.3f64, 1.5];
        let std = Tensor::from_vec(sd.iter().map(|&s| s as f32).collect::<Vec<_>>(), 2, &dev)?;
        let r = ais_log_likelihood(&decode, &x, 2, Some(&std), &cfg)?;
        let exact: f64 = [2.5f64, -1.0]
            .iter()
            .zip(sd)
            .map(|(x, s)| {
                let v = 9.0 + s * s;
                -x * x / (2.0 * v) - 0.5 * (2.0 * std::f64::consts::PI * v).ln()
            })
            .sum();
        assert!(
            (r.log_px[0] - exact).abs() < 3.0 * r.stderr[0] + 0.02,
            "{} ± {} vs {exact}",
            r.log_px[0],
            r.stderr[0]
        );
        let three = Tensor::ones(3, DType::F32, &dev)?;
        assert!(ais_log_likelihood(&decode, &x, 2, Some(&three), &cfg).is_err());
        let zero = Tensor::zeros(2, DType::F32, &dev)?;
        assert!(ais_log_likelihood(&decode, &x, 2, Some(&zero), &cfg)
            .is_err_and(|e| e.to_string().contains("positive")));
        Ok(())
    }

    /// The AIS settings of the partition-function tests: T = 300, K = 256, L = 5.
    fn grid_cfg(seed: u64) -> AisConfig {
        AisConfig {
            steps: 300,
            chains: 256,
            leapfrog: 5,
            step_size: 0.1,
            obs_std: 1.0,
            seed,
        }
    }

    /// A ring E = (‖x‖ − 2)² / (2 · 0.1) over R².
    fn ring_energy(x: &Tensor) -> Result<Tensor> {
        Ok(((x.sqr()?.sum(1)?.sqrt()? - 2.0)?.sqr()? * 5.0)?)
    }

    /// log Z of energies over R²: a Gaussian mixture with unnormalised components (Z = 4 · 2π s² exactly) and a
    /// ring E = (‖x‖ − 2)² / (2 · 0.1) (Z by a Riemann sum on a fine grid); AIS from N(0, 2²I) agrees within three
    /// standard errors, and T = 1 (importance sampling from the base) is far noisier.
    #[test]
    fn ais_log_partition_matches_exact_and_grid_values() -> Result<()> {
        let dev = Device::Cpu;
        let mixture = |x: &Tensor| -> Result<Tensor> {
            let mu = Tensor::new(
                &[[1.5f32, 1.5], [1.5, -1.5], [-1.5, 1.5], [-1.5, -1.5]],
                x.device(),
            )?;
            let d = x.unsqueeze(1)?.broadcast_sub(&mu.unsqueeze(0)?)?;
            let logp = (d.sqr()?.sum(2)? * -2.0)?; // s = 0.5
            let m = logp.max_keepdim(1)?.detach();
            Ok((logp.broadcast_sub(&m)?.exp()?.sum(1)?.log()? + m.squeeze(1)?)?.neg()?)
        };
        // the ring's Z on a grid over [−4, 4]², spacing 0.005
        let h = 0.005f64;
        let grid_z: f64 = (0..1601)
            .flat_map(|i| (0..1601).map(move |j| (-4.0 + h * i as f64, -4.0 + h * j as f64)))
            .map(|(a, b)| (-5.0 * ((a * a + b * b).sqrt() - 2.0).powi(2)).exp() * h * h)
            .sum();
        let cfg = grid_cfg(3);
        for (name, energy, exact) in [
            (
                "mixture",
                &mixture as &dyn Fn(&Tensor) -> Result<Tensor>,
                (2.0 * std::f64::consts::PI).ln(),
            ),
            ("ring", &ring_energy, grid_z.ln()),
        ] {
            let gauss = PartitionBase::Gaussian { std: 2.0 };
            let r = ais_log_partition(energy, &[2], gauss, &cfg, &dev)?;
            assert!(
                (r.log_z - exact).abs() < 3.0 * r.stderr + 0.01 && r.stderr < 0.05,
                "{name}: AIS {} ± {} vs {exact}",
                r.log_z,
                r.stderr
            );
            let one = ais_log_partition(
                energy,
                &[2],
                gauss,
                &AisConfig {
                    steps: 1,
                    ..cfg.clone()
                },
                &dev,
            )?;
            assert!(
                one.stderr > 2.0 * r.stderr,
                "{name}: T = 1 ± {} vs ± {}",
                one.stderr,
                r.stderr
            );
        }
        let flat = PartitionBase::Gaussian { std: 0.0 };
        assert!(ais_log_partition(&ring_energy, &[2], flat, &cfg, &dev).is_err());
        let empty = PartitionBase::Box { lo: 1.0, hi: 1.0 };
        assert!(ais_log_partition(&ring_energy, &[2], empty, &cfg, &dev).is_err());
        Ok(())
    }

    /// On a box: the ring cut to [−2.5, 2.5]² (its Z by a grid sum over the box), a tilted plane
    /// E = x₁ + 2x₂ on [−1, 1]² (Z = (e − e⁻¹)(e² − e⁻²)/2 exactly) and, in 64 dimensions, a constant energy
    /// (Z = 2⁶⁴ · e⁻³: the volume).
    #[test]
    fn ais_log_partition_on_a_box_matches_exact_and_grid_values() -> Result<()> {
        let dev = Device::Cpu;
        let h = 0.0025f64;
        let grid_z: f64 = (0..2000)
            .flat_map(|i| {
                (0..2000).map(move |j| (-2.5 + h * (i as f64 + 0.5), -2.5 + h * (j as f64 + 0.5)))
            })
            .map(|(a, b)| (-5.0 * ((a * a + b * b).sqrt() - 2.0).powi(2)).exp() * h * h)
            .sum();
        let plane = |x: &Tensor| -> Result<Tensor> {
            Ok((x.narrow(1, 0, 1)? + (x.narrow(1, 1, 1)? * 2.0)?)?.squeeze(1)?)
        };
        let e = std::f64::consts::E;
        let plane_z = (e - 1.0 / e) * (e * e - 1.0 / (e * e)) / 2.0;
        let constant =
            |x: &Tensor| -> Result<Tensor> { Ok(((x.flatten_from(1)?.sum(1)? * 0.0)? + 3.0)?) };
        let cfg = grid_cfg(4);
        for (name, energy, shape, (lo, hi), exact) in [
            (
                "ring",
                &ring_energy as &dyn Fn(&Tensor) -> Result<Tensor>,
                vec![2],
                (-2.5, 2.5),
                grid_z.ln(),
            ),
            ("plane", &plane, vec![2], (-1.0, 1.0), plane_z.ln()),
            (
                "constant",
                &constant,
                vec![1, 8, 8],
                (-1.0, 1.0),
                64.0 * 2f64.ln() - 3.0,
            ),
        ] {
            let r = ais_log_partition(energy, &shape, PartitionBase::Box { lo, hi }, &cfg, &dev)?;
            assert!(
                (r.log_z - exact).abs() < 3.0 * r.stderr + 0.01 && r.stderr < 0.05,
                "{name}: AIS {} ± {} vs {exact}",
                r.log_z,
                r.stderr
            );
        }
        Ok(())
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let bad = AisConfig {
            chains: 0,
            ..AisConfig::default()
        };
        assert!(bad
            .validate()
            .is_err_and(|e| e.to_string().contains("ais.chains")));
        let bad = AisConfig {
            obs_std: -1.0,
            ..AisConfig::default()
        };
        assert!(bad
            .validate()
            .is_err_and(|e| e.to_string().contains("ais.obs_std")));
        assert_eq!(sigmoid_schedule(10)[0], 0.0);
        assert!((sigmoid_schedule(10)[10] - 1.0).abs() < 1e-15);
    }
}
