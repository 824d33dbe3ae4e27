//! The traits every model family implements.
//!
//! A model is built from a serde `Config` plus a candle `VarBuilder` (`Model::new(cfg, vb)` by convention;
//! [`crate::models::build`] does it by name). Every model implements [`Model`]: a training [`Model::loss`] and
//! [`Model::sample`]. Capabilities beyond that are optional traits, discovered at run time through
//! [`Model::as_density`] and [`Model::as_latent`] so that the CLI and the evaluation code work on a
//! `Box<dyn Model>` without knowing its family:
//!
//! * [`Density`]: `log_likelihood(x)` → per-example nats **and what kind of number it is**
//!   ([`LikelihoodKind::Exact`], [`LikelihoodKind::LowerBound`], [`LikelihoodKind::Estimate`]).
//!   [`bits_per_dim`] converts it using the data dimension and the run's [`Preprocessing`], so numbers from
//!   different families line up.
//! * [`Latent`]: `encode(x)` / `decode(z)`.
//!
//! # How the families still to come fit, without changing these traits
//!
//! * **VAE / IWAE / CVAE** (here now): `loss` = negative ELBO (or IWAE bound); `Density` with the ELBO
//!   (`LowerBound("ELBO")`) and the IWAE-k estimate (`Estimate("IWAE-k")`), chosen by
//!   [`LikelihoodOptions::estimator`]; `Latent` through the encoder mean and the decoder.
//! * **Autoregressive (MADE, PixelCNN, GPT) and normalizing flows (RealNVP, Glow, MAF, NSF)**: `loss` is the
//!   exact negative log-likelihood, `Density` returns `Exact`. Flows also implement `Latent` (`encode` = f(x),
//!   `decode` = f⁻¹(z)).
//! * **Diffusion / score-based (DDPM, EDM, NCSN)**: `loss` is the denoising objective; the sampler is chosen
//!   at sample time through [`SampleOptions::sampler`] and [`SampleOptions::steps`], which the model hands to a
//!   scheduler from `schedulers/` (the loop `model output → scheduler.step` stays in the model family's
//!   pipeline, visible). `Density` offers `LowerBound("VLB")` and `Estimate("ODE")`; `Latent` is DDIM
//!   inversion.
//! * **Energy-based models**: the density is unnormalised, so they do not implement `Density` (or only with an
//!   `Estimate` from annealed importance sampling); `loss` is contrastive divergence or score matching, and
//!   `sample` runs MCMC (Langevin) with the options' sampler/steps.
//! * **GANs**: no likelihood (no `Density`), and two optimisers. `loss` returns the generator and
//!   discriminator losses as named parts; such a family brings its own training loop (as burn's WGAN example
//!   does) while reusing the data loader, checkpoints, EMA and logging of `train/`. `Latent::decode` is the
//!   generator.
//!
//! Conditioning travels in [`Batch`] (labels, captions) for training and in [`Condition`] for sampling, so a
//! caption-conditioned model later needs no new method either.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::data::Preprocessing;
use crate::rng::Rng;
use crate::Result;

/// A batch of training or evaluation data.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The examples, preprocessed: `(b, c, h, w)` for images, `(b, d)` for vectors.
    pub x: Tensor,
    /// Class labels, `(b,)` u32, when the data set has classes.
    pub labels: Option<Tensor>,
    /// Captions, one per example, when the data set has them.
    pub captions: Option<Vec<String>>,
}

impl Batch {
    /// A batch with examples only.
    pub fn new(x: Tensor) -> Self {
        Self {
            x,
            labels: None,
            captions: None,
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.x.dims().first().copied().unwrap_or(0)
    }

    /// True when the batch holds no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Examples `start..start+len` of the batch.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Batch> {
        Ok(Batch {
            x: self.x.narrow(0, start, len)?,
            labels: match &self.labels {
                Some(l) => Some(l.narrow(0, start, len)?),
                None => None,
            },
            captions: self
                .captions
                .as_ref()
                .map(|c| c[start..start + len].to_vec()),
        })
    }
}

/// The result of [`Model::loss`].
#[derive(Debug)]
pub struct LossOutput {
    /// The scalar to minimise (mean over the batch), with its autograd graph.
    pub loss: Tensor,
    /// Named scalar parts for logging, e.g. `("recon", …)`, `("kl", …)`.
    pub parts: Vec<(String, f64)>,
}

/// What generation is conditioned on.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Condition {
    /// Unconditional.
    #[default]
    None,
    /// One class label per sample (or a single label used for all samples).
    Class(Vec<u32>),
    /// One caption per sample (or a single caption used for all samples).
    Caption(Vec<String>),
}

/// Options for [`Model::sample`].
#[derive(Clone, Debug)]
pub struct SampleOptions {
    /// Seed for dgm's RNG: the same seed gives the same samples.
    pub seed: u64,
    /// What to condition on.
    pub condition: Condition,
    /// Scale of the prior noise (1.0 = sample the model; < 1 trades diversity for quality).
    pub temperature: f64,
    /// Sampler name, for families whose sampler is chosen at sample time (diffusion, EBM).
    pub sampler: Option<String>,
    /// Number of sampler steps, where that applies.
    pub steps: Option<usize>,
    /// Classifier-free guidance scale s of class-conditional diffusion models (Ho & Salimans 2022,
    /// arXiv:2207.12598): the denoiser becomes D(x; ∅) + s·(D(x; c) − D(x; ∅)); 1 = plain conditional
    /// sampling, > 1 trades diversity for fidelity to the class. `None` = no guidance.
    pub guidance: Option<f64>,
    /// Return the mean of the observation model instead of a draw from it (e.g. Bernoulli probabilities),
    /// which is what people usually look at for VAEs.
    pub mean: bool,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            condition: Condition::None,
            temperature: 1.0,
            sampler: None,
            steps: None,
            guidance: None,
            mean: true,
        }
    }
}

impl SampleOptions {
    /// Default options with `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            ..Self::default()
        }
    }
}

/// Which kind of number a log-likelihood is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LikelihoodKind {
    /// The exact log-likelihood (autoregressive models, flows).
    Exact,
    /// A lower bound on log p(x), by name (e.g. `ELBO`, `VLB`).
    LowerBound(String),
    /// A stochastic estimate, by name (e.g. `IWAE-5000`, `ODE`). IWAE-k is itself a lower bound in
    /// expectation that tightens to log p(x) as k grows.
    Estimate(String),
}

impl std::fmt::Display for LikelihoodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LikelihoodKind::Exact => write!(f, "exact"),
            LikelihoodKind::LowerBound(n) => write!(f, "lower bound ({n})"),
            LikelihoodKind::Estimate(n) => write!(f, "estimate ({n})"),
        }
    }
}

/// Whether the likelihood is a probability of discrete data or a density over continuous values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LikelihoodSpace {
    /// A probability mass over the discrete data values (binary pixels, 256 levels with a discretised decoder).
    Discrete,
    /// A density over the preprocessed continuous values (dequantised or scaled pixels, 2-D points).
    Continuous,
}

/// Per-example log-likelihoods and their kind.
#[derive(Clone, Debug)]
pub struct LogLikelihood {
    /// log p(x) (or its bound / estimate) in nats, one per example.
    pub nats: Vec<f64>,
    /// What kind of number it is.
    pub kind: LikelihoodKind,
    /// Mass over discrete values or density over continuous ones.
    pub space: LikelihoodSpace,
}

/// Options for [`Density::log_likelihood`].
#[derive(Clone, Debug)]
pub struct LikelihoodOptions {
    /// Estimator name (one of [`Density::estimators`]); `None` picks the model's default.
    pub estimator: Option<String>,
    /// Number of importance samples / probes, for estimators that use them (IWAE-k: k; the probability-flow
    /// ODE: Hutchinson probes).
    pub samples: usize,
    /// Number of steps, for estimators that integrate or sum over time (diffusion: the timesteps of the
    /// variational bound, the ODE solver's steps); `None` = the model's default.
    pub steps: Option<usize>,
    /// Largest number of (example × sample) rows evaluated at once, to bound memory.
    pub chunk: usize,
    /// Seed for the estimator's randomness.
    pub seed: u64,
}

impl Default for LikelihoodOptions {
    fn default() -> Self {
        Self {
            estimator: None,
            samples: 1,
            steps: None,
            chunk: 4096,
            seed: 0,
        }
    }
}

/// Every generative model.
pub trait Model {
    /// The model's registry name (`vae`, `iwae`, `cvae`, ...).
    fn name(&self) -> &str;

    /// The training objective on a batch: a scalar to minimise and named parts for logging.
    /// Randomness (noise, Monte-Carlo samples) comes from `rng`.
    fn loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput>;

    /// Draws `n` samples, shaped like a batch of data (`(n, c, h, w)` or `(n, d)`), in the preprocessed space.
    fn sample(&self, n: usize, opts: &SampleOptions) -> Result<Tensor>;

    /// Number of classes the model is conditioned on, if it is class-conditional.
    fn num_classes(&self) -> Option<usize> {
        None
    }

    /// The model as a [`Density`], when it has a likelihood.
    fn as_density(&self) -> Option<&dyn Density> {
        None
    }

    /// The model as a [`Latent`] model, when it has encode / decode.
    fn as_latent(&self) -> Option<&dyn Latent> {
        None
    }

    /// The model as a [`Sequence`] model (language models), when it generates and scores token sequences.
    fn as_sequence(&self) -> Option<&dyn Sequence> {
        None
    }

    /// The model as a [`Complete`] model, when it can sample the rest of a partly known example.
    fn as_complete(&self) -> Option<&dyn Complete> {
        None
    }
}

/// Models with a (bound on / estimate of the) likelihood.
pub trait Density: Model {
    /// The estimator names this model offers; the first is the default.
    fn estimators(&self) -> Vec<String>;

    /// log p(x) per example in nats, with its kind.
    fn log_likelihood(&self, batch: &Batch, opts: &LikelihoodOptions) -> Result<LogLikelihood>;
}

/// Models with a latent representation.
pub trait Latent: Model {
    /// Shape of one latent code.
    fn latent_shape(&self) -> Vec<usize>;

    /// A deterministic code per example (e.g. the encoder mean), `(b, latent…)`.
    fn encode(&self, batch: &Batch) -> Result<Tensor>;

    /// Data (observation mean) from codes, shaped like a batch.
    fn decode(&self, z: &Tensor, condition: &Condition) -> Result<Tensor>;

    /// The point a fraction `t` ∈ [0, 1] of the way from code `z0` to code `z1` (default: the straight line).
    fn interpolate(&self, z0: &Tensor, z1: &Tensor, t: f64) -> Result<Tensor> {
        Ok(((z0 * (1.0 - t))? + (z1 * t)?)?)
    }
}

/// Options for [`Sequence::generate`].
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Number of tokens to generate (at least 1).
    pub max_tokens: usize,
    /// Divides the logits before the softmax (> 0; < 1 sharpens, > 1 flattens).
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (`None` = all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` ∈ (0, 1] (nucleus
    /// sampling, Holtzman et al. 2020); `None` = all.
    pub top_p: Option<f64>,
    /// Seed for dgm's RNG: the same seed gives the same tokens, with or without the cache.
    pub seed: u64,
    /// Reuse the keys and values of earlier positions (the KV cache) instead of recomputing the context.
    pub kv_cache: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 0,
            kv_cache: true,
        }
    }
}

impl GenerateOptions {
    /// Rejects options that cannot work, naming the value.
    pub fn validate(&self) -> Result<()> {
        use crate::Error;
        if self.max_tokens == 0 {
            return Err(Error::invalid("max-tokens", "0 must be at least 1"));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::invalid(
                "temperature",
                format!("{} must be a positive number", self.temperature),
            ));
        }
        if self.top_k == Some(0) {
            return Err(Error::invalid("top-k", "0 must be at least 1"));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::invalid("top-p", format!("{p} must be in (0, 1]")));
            }
        }
        Ok(())
    }
}

/// Language models: token sequences with an exact, autoregressive likelihood
/// p(x_1 … x_n) = Π_i p(x_i | x_<i).
pub trait Sequence: Model {
    /// The tokenizer the model was trained with.
    fn tokenizer(&self) -> &crate::data::Tokenizer;

    /// The longest context the model attends to, in tokens.
    fn context_len(&self) -> usize;

    /// log p(ids[i] | ids[..i]) in nats for every position i (the first token is conditioned on the start
    /// of the text only); a text longer than the context is scored with a sliding window.
    fn token_log_probs(&self, ids: &[u32]) -> Result<Vec<f64>>;

    /// Continues `prompt` (may be empty: then generation starts from the start of text) by
    /// `opts.max_tokens` tokens, calling `on_token` with each as soon as it is drawn (return `false` to
    /// stop early). Returns the generated tokens.
    fn generate(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> Result<bool>,
    ) -> Result<Vec<u32>>;
}

/// Models that sample the rest of an example given its first part (autoregressive image models, which
/// generate in raster order).
pub trait Complete: Model {
    /// Keeps the first `known_rows` rows of every image in `x` (`(b, c, h, w)`, preprocessed like the
    /// training data) and samples the remaining pixels from p(rest | known).
    fn complete(&self, x: &Tensor, known_rows: usize, opts: &SampleOptions) -> Result<Tensor>;
}

/// Converts a negative log-likelihood of one example (nats) to bits per dimension, using the data dimension
/// and the preprocessing recorded with the run.
///
/// * A [`LikelihoodSpace::Discrete`] number is already a probability of the discrete data: `nll / (D ln 2)`.
/// * A [`LikelihoodSpace::Continuous`] density over 8-bit data scaled into an interval (dequantised or not) is
///   turned into a probability of the 256-level pixel values by the bin volume: each pixel bin has width
///   `w = (hi − lo) / 256`, so `−log P(x) ≈ −log p(x) − D ln w` (with uniform dequantisation this is the usual
///   lower bound of Theis et al. 2016 on the discrete log-likelihood).
/// * A density over genuinely continuous data (2-D points) stays a density: `nll / (D ln 2)`.
pub fn bits_per_dim(
    nll_nats: f64,
    dims: usize,
    space: LikelihoodSpace,
    prep: &Preprocessing,
) -> f64 {
    let d = dims as f64;
    let correction = match (space, prep.bin_width()) {
        (LikelihoodSpace::Continuous, Some(w)) => -d * w.ln(),
        _ => 0.0,
    };
    (nll_nats + correction) / (d * std::f64::consts::LN_2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Range;

    #[test]
    fn bits_per_dim_binary_and_dequantized() {
        let ln2 = std::f64::consts::LN_2;
        // 784 binary pixels at p = 1/2 each: exactly 1 bit per dim.
        let nll = 784.0 * ln2;
        let b = bits_per_dim(
            nll,
            784,
            LikelihoodSpace::Discrete,
            &Preprocessing::Binarize { dynamic: true },
        );
        assert!((b - 1.0).abs() < 1e-12);
        // uniform density on [0,1]^D over dequantised 8-bit data: log p = 0 → 8 bits per dim.
        let prep = Preprocessing::Scale {
            range: Range::ZeroOne,
            dequantize: true,
        };
        assert!((bits_per_dim(0.0, 10, LikelihoodSpace::Continuous, &prep) - 8.0).abs() < 1e-12);
        // uniform on [-1,1]^D: density 2^-D → nll = D ln 2, still 8 bits per dim of the 8-bit data.
        let prep = Preprocessing::Scale {
            range: Range::MinusOneOne,
            dequantize: true,
        };
        assert!(
            (bits_per_dim(10.0 * ln2, 10, LikelihoodSpace::Continuous, &prep) - 8.0).abs() < 1e-12
        );
    }
}
