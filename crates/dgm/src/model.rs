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
//! * **Energy-based models** (here now): p(x) = exp(−E(x)) / Z on a box; they implement [`EnergyBased`] (the
//!   energy, the box) and a `Density` that is an `Estimate`: −E(x) − log Ẑ with log Ẑ from annealed importance
//!   sampling. `train_loss` is contrastive divergence (it advances the persistent chains of the replay buffer,
//!   which validation's `loss` leaves alone) or NCE; `sample` runs Langevin dynamics for the options' `steps`.
//!   Score matching would need second-order gradients (candle#2462).
//! * **GANs** (here now): no likelihood (no `Density`), and two players with an optimiser each: they implement
//!   [`Adversarial`] (the discriminator's and the generator's losses, and which variables belong to whom), and
//!   the trainer drives them with its two-optimiser step (`train::step`). `loss` is the discriminator's loss
//!   (what validation reports).
//!
//! Conditioning travels in [`Batch`](crate::data::Batch) (labels, captions) for training and in [`Condition`] for sampling, so a
//! caption-conditioned model later needs no new method either.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::data::{Batch, Preprocessing};
use crate::rng::Rng;
use crate::Result;

/// The result of [`Model::loss`].
#[derive(Debug)]
pub struct LossOutput {
    /// The scalar to minimise (mean over the batch), with its autograd graph.
    pub loss: Tensor,
    /// Named scalar parts for logging, e.g. `("recon", …)`, `("kl", …)`.
    pub parts: Vec<(String, f64)>,
}

impl LossOutput {
    /// A loss that is its own one logged part, `name`.
    pub fn single(name: &str, loss: Tensor) -> Result<Self> {
        let v = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        Ok(Self {
            loss,
            parts: vec![(name.to_string(), v)],
        })
    }
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

/// A callback told how far a long computation is, as `(done, total)` steps: a progress bar, or a server's job
/// status. The default reports to nobody. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Progress(Option<std::sync::Arc<dyn Fn(usize, usize) + Send + Sync>>);

impl Progress {
    /// Calls `f(done, total)` at each step.
    pub fn new(f: impl Fn(usize, usize) + Send + Sync + 'static) -> Self {
        Self(Some(std::sync::Arc::new(f)))
    }

    /// Reports `done` of `total` steps.
    pub fn report(&self, done: usize, total: usize) {
        if let Some(f) = &self.0 {
            f(done, total);
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Progress(callback)"
        } else {
            "Progress(none)"
        })
    }
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
    /// Told of each step of the sampling loop, where the family has one (diffusion: each model evaluation or
    /// re-noising of the sampler's plan).
    pub progress: Progress,
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
            progress: Progress::default(),
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

/// Which of the [`SampleOptions`] beyond the seed, the temperature and a class condition a model's
/// [`Model::sample`] uses (see [`Model::sample_abilities`]); [`check_sample_options`] refuses the others
/// instead of ignoring them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleAbilities {
    /// The model has an observation model p(x | z) whose mean it shows by default (the VAE family), so
    /// `mean = false` (a draw from it) means something. Models whose samples are always draws (diffusion,
    /// autoregressive) have none.
    pub observation_mean: bool,
    /// The sampler and its number of steps are chosen at sample time (`sampler`, `steps`: diffusion).
    pub sampler: bool,
    /// Classifier-free guidance (`guidance`): a conditional model trained with condition dropout.
    pub guidance: bool,
    /// Captions as the condition (`Condition::Caption`): a caption-conditional diffusion model.
    pub captions: bool,
}

/// Refuses the options `model` would ignore: a draw (`mean = false`) from a model without an
/// observation-model mean, a sampler, steps or guidance for a model that does not take them, a class for a
/// model without classes and a caption for a model without captions. The error is an
/// [`crate::Error::NotApplicable`] naming the option (`draw`, `sampler`, `steps`, `guidance`, `class`,
/// `caption`) and why it does not apply.
pub fn check_sample_options(model: &dyn Model, opts: &SampleOptions) -> Result<()> {
    use crate::Error;
    let can = model.sample_abilities();
    let refuse = |option: &'static str, why: String| {
        Err(Error::NotApplicable {
            option,
            model: model.name().to_string(),
            why,
        })
    };
    if !opts.mean && !can.observation_mean {
        return refuse(
            "draw",
            "its samples are always draws (it has no observation-model mean to show instead)"
                .into(),
        );
    }
    if !can.sampler {
        let why = "it has no sampler to choose (diffusion models do: ddpm, edm, ncsn; energy-based models run Langevin: ebm, jem)";
        if opts.sampler.is_some() {
            return refuse("sampler", why.into());
        }
        if opts.steps.is_some() {
            return refuse("steps", why.into());
        }
    }
    if opts.guidance.is_some() && !can.guidance {
        let why = match (model.num_classes(), can.captions) {
            (None, false) => "it is unconditional; classifier-free guidance needs a conditional diffusion model (classes or captions) trained with condition dropout".to_string(),
            _ => "classifier-free guidance needs a conditional diffusion model trained with condition dropout (model.class_dropout > 0)".to_string(),
        };
        return refuse("guidance", why);
    }
    if matches!(opts.condition, Condition::Class(_)) && model.num_classes().is_none() {
        let why = match can.captions {
            true => "it is conditioned on captions, not classes",
            false => "it is unconditional",
        };
        return refuse("class", why.into());
    }
    if matches!(opts.condition, Condition::Caption(_)) && !can.captions {
        let why = match model.num_classes() {
            Some(_) => "it is conditioned on classes, not captions",
            None => "it takes no captions (a caption model is a diffusion model trained with model.net.captions = true on shapes)",
        };
        return refuse("caption", why.into());
    }
    Ok(())
}

/// Which kind of number a log-likelihood is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LikelihoodKind {
    /// The exact log-likelihood (autoregressive models, flows).
    Exact,
    /// A lower bound on log p(x), computed exactly (deterministically), by name. No family here computes
    /// its bound exactly — the ELBO and the VLB are Monte-Carlo estimates ([`LikelihoodKind::BoundEstimate`]) —
    /// but results written by earlier versions of dgm carry this label.
    LowerBound(String),
    /// An unbiased Monte-Carlo estimate of a lower bound on log p(x): each example's value is random, its
    /// expectation is the bound, and the mean over a data set is an unbiased estimate of the mean bound (its
    /// standard error includes the Monte-Carlo noise). E.g. the ELBO with one z sample per example, or the
    /// diffusion VLB with one noise draw per term and K of its T − 1 KL terms (stratified).
    BoundEstimate {
        /// The bound, e.g. `ELBO`, `VLB`.
        bound: String,
        /// How it is estimated, e.g. `1 z sample per example`, `8 of 999 KL terms, one noise draw each`.
        how: String,
    },
    /// A stochastic estimate, by name (e.g. `IWAE-5000`, `ODE`). IWAE-k is itself a lower bound in
    /// expectation that tightens to log p(x) as k grows.
    Estimate(String),
}

impl LikelihoodKind {
    /// A [`LikelihoodKind::BoundEstimate`].
    pub fn bound_estimate(bound: impl Into<String>, how: impl Into<String>) -> Self {
        LikelihoodKind::BoundEstimate {
            bound: bound.into(),
            how: how.into(),
        }
    }

    /// The short name: `exact`, `ELBO`, `VLB`, `IWAE-100`, `ODE`.
    pub fn short_name(&self) -> &str {
        match self {
            LikelihoodKind::Exact => "exact",
            LikelihoodKind::LowerBound(n) | LikelihoodKind::Estimate(n) => n,
            LikelihoodKind::BoundEstimate { bound, .. } => bound,
        }
    }
}

impl std::fmt::Display for LikelihoodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LikelihoodKind::Exact => write!(f, "exact"),
            LikelihoodKind::LowerBound(n) => write!(f, "lower bound ({n})"),
            LikelihoodKind::BoundEstimate { bound, how } => {
                write!(f, "estimate of a lower bound ({bound}), {how}")
            }
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

    /// The loss of a training step. The same as [`Model::loss`] (which validation computes) unless a training
    /// step also moves model state: contrastive divergence advances its persistent chains here and writes them
    /// back to the replay buffer, which validation must leave alone.
    fn train_loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        self.loss(batch, rng)
    }

    /// Draws `n` samples, shaped like a batch of data (`(n, c, h, w)` or `(n, d)`), in the preprocessed space.
    fn sample(&self, n: usize, opts: &SampleOptions) -> Result<Tensor>;

    /// Number of classes the model is conditioned on, if it is class-conditional (default: a diffusion model's
    /// from its [`crate::pipelines::Denoiser`], else none).
    fn num_classes(&self) -> Option<usize> {
        let k = self.as_denoiser()?.info().cond.num_classes();
        (k > 0).then_some(k)
    }

    /// Which [`SampleOptions`] [`Model::sample`] uses (default: a diffusion model's from its
    /// [`crate::pipelines::Denoiser`], else none beyond the seed, the temperature and a class condition);
    /// [`check_sample_options`] refuses the rest.
    fn sample_abilities(&self) -> SampleAbilities {
        match self.as_denoiser() {
            Some(d) => d.info().sample_abilities(),
            None => SampleAbilities::default(),
        }
    }

    /// The model as a [`Density`], when it has a likelihood.
    fn as_density(&self) -> Option<&dyn Density> {
        None
    }

    /// The model as a [`Latent`] model, when it has encode / decode.
    fn as_latent(&self) -> Option<&dyn Latent> {
        None
    }

    /// The model as a diffusion [`crate::pipelines::Denoiser`] (for guidance, editing and inverse problems).
    fn as_denoiser(&self) -> Option<&dyn crate::pipelines::Denoiser> {
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

    /// The model as an [`Adversarial`] one (a GAN), trained as a two-player game with two optimisers.
    fn as_adversarial(&self) -> Option<&dyn Adversarial> {
        None
    }

    /// The model as a [`DecoderBased`] one (z ~ N(0, I) mapped to an example), whose likelihood annealed
    /// importance sampling can estimate ([`crate::metrics::ais`]).
    fn as_decoder_based(&self) -> Option<&dyn DecoderBased> {
        None
    }

    /// The model as an [`EnergyBased`] one: p(x) ∝ exp(−E(x)) on a box, sampled by Langevin dynamics.
    fn as_energy_based(&self) -> Option<&dyn EnergyBased> {
        None
    }

    /// Data-dependent initial values of some of the model's variables (Glow's ActNorm), by full variable
    /// name, from a batch of training data. The trainer calls it once, before the first step of a new run,
    /// and never on resume or load: the values are saved with the other parameters. Default: none.
    fn data_init(&self, _batch: &Batch) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }
}

/// The name of an [`Adversarial`] model's generator parameter group (`[train.groups.generator]`).
pub const GENERATOR: &str = "generator";
/// The name of an [`Adversarial`] model's discriminator parameter group (`[train.groups.discriminator]`).
pub const DISCRIMINATOR: &str = "discriminator";

/// Models trained as a two-player game (GANs): a generator and a discriminator (or critic), each with its own
/// variables, loss and optimiser.
pub trait Adversarial: Model {
    /// The variable-name prefixes of the two players' parameter groups: (generator, discriminator).
    fn player_prefixes(&self) -> (String, String);

    /// Discriminator updates per generator update.
    fn discriminator_steps(&self) -> usize {
        1
    }

    /// The discriminator's loss on the real `batch` and as many generated examples (the generator is not
    /// differentiated). `training` marks a training step: then per-step state such as spectral normalisation's
    /// power iteration moves first; validation passes `false` and changes nothing.
    fn discriminator_loss(&self, real: &Batch, rng: &mut Rng, training: bool)
        -> Result<LossOutput>;

    /// The generator's loss on as many fresh samples as `real` has examples (with `real`'s labels when the
    /// model is class-conditional).
    fn generator_loss(&self, real: &Batch, rng: &mut Rng) -> Result<LossOutput>;
}

/// Decoder-based models (Wu et al. 2017): an example is a deterministic function g(z) of a standard Gaussian
/// latent z ~ N(0, I) (a GAN's generator, a VAE's decoder mean). With a Gaussian observation model
/// p(x | z) = N(x; g(z), σ²) this defines a density that [`crate::metrics::ais`] estimates.
pub trait DecoderBased: Model {
    /// The size of z.
    fn latent_dim(&self) -> usize;

    /// g(z) for z `(n, latent_dim)`: `(n, …)` values in the model's data space, differentiable in z.
    /// `labels` `(n,)` u32 are required by a class-conditional model and refused by another.
    fn decode_mean(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor>;

    /// The model's own observation standard deviation per data value `(D,)`, when it has a Gaussian
    /// observation model (a VAE's `gaussian` decoder); `None`: the model has none, and the caller picks σ.
    fn observation_std(&self) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// Models with a (bound on / estimate of the) likelihood.
pub trait Density: Model {
    /// The estimator names this model offers; the first is the default.
    fn estimators(&self) -> Vec<String>;

    /// log p(x) per example in nats, with its kind.
    fn log_likelihood(&self, batch: &Batch, opts: &LikelihoodOptions) -> Result<LogLikelihood>;

    /// Whether a class-conditional model scores a batch *without* labels by its own marginal log p(x) (JEM);
    /// otherwise (default) callers that need p(x) marginalise over the classes themselves.
    fn scores_unlabelled(&self) -> bool {
        false
    }
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
            return Err(Error::invalid("max_tokens", "0 must be at least 1"));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::invalid(
                "temperature",
                format!("{} must be a positive number", self.temperature),
            ));
        }
        if self.top_k == Some(0) {
            return Err(Error::invalid("top_k", "0 must be at least 1"));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::invalid("top_p", format!("{p} must be in (0, 1]")));
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

    /// log p(next token | prefix) in nats for every token of the vocabulary, one row per prefix (each
    /// conditioned on its last `context_len() − 1` tokens after the start of text): what beam search expands.
    fn next_log_probs(&self, prefixes: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;

    /// Continues `prompt` (may be empty: then generation starts from the start of text) by
    /// `opts.max_tokens` tokens, calling `on_token` with each as soon as it is drawn (return `false` to
    /// stop early). Returns the generated tokens.
    fn generate(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> Result<bool>,
    ) -> Result<Vec<u32>>;

    /// Fill-in-the-middle: writes the tokens between `prefix` and `suffix` (either may be empty) until the
    /// model ends the middle or `opts.max_tokens` are written, calling `on_token` with each (return `false`
    /// to stop early). Returns the middle. Models not trained for it refuse (the default).
    fn fill_middle(
        &self,
        prefix: &[u32],
        suffix: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> Result<bool>,
    ) -> Result<Vec<u32>> {
        let _ = (prefix, suffix, opts, on_token);
        Err(crate::Error::invalid(
            "model",
            format!("'{}' does not fill in the middle", self.name()),
        ))
    }
}

/// Models that sample the rest of an example given its first part (autoregressive image models, which
/// generate in raster order).
pub trait Complete: Model {
    /// Keeps the first `known_rows` rows of every image in `x` (`(b, c, h, w)`, preprocessed like the
    /// training data) and samples the remaining pixels from p(rest | known).
    fn complete(&self, x: &Tensor, known_rows: usize, opts: &SampleOptions) -> Result<Tensor>;
}

/// What a bits-per-dimension number from [`bits_per_dim`] is, given the likelihood's [`LikelihoodSpace`] and
/// the data's [`Preprocessing`] (see [`bits_per_dim_basis`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BitsPerDim {
    /// A probability of the discrete data values (binary pixels; 8-bit pixels under a discretized decoder
    /// or a 256-way softmax; tokens): −log₂ P(x) / D, no conversion.
    Discrete,
    /// A density over uniformly dequantized 8-bit data, turned into bits of the 8-bit values by the bin
    /// volume: each bin is `(hi − lo) / 256` wide, so −log P(x) ≈ −log p(x) − D ln w. In expectation over the
    /// dequantization noise this is a lower bound on the discrete log-likelihood (Theis et al. 2016).
    Dequantized,
    /// A density of the values as they are, in bits per dimension with no conversion: genuinely continuous
    /// data (2-D points), or 8-bit pixels scaled without dequantization under a continuous decoder. The
    /// latter is NOT a number about the 8-bit probabilities: the data sit on a lattice of 256 levels spaced
    /// `(hi − lo) / 255`, and a density there is neither a probability nor a bound on one (it can grow
    /// without limit by concentrating on the levels). Use a discretized decoder or dequantization instead.
    Density,
}

impl BitsPerDim {
    /// What the number is, in words, for reports.
    pub fn describe(&self) -> &'static str {
        match self {
            BitsPerDim::Discrete => "bits of the discrete data values",
            BitsPerDim::Dequantized => {
                "bits of the 8-bit values: a density of uniformly dequantized data plus the bin volume (a bound in expectation over the noise)"
            }
            BitsPerDim::Density => {
                "bits of a continuous density of the values as given, not of 8-bit values"
            }
        }
    }
}

/// Which conversion [`bits_per_dim`] applies to a likelihood in `space` of data preprocessed by `prep`.
pub fn bits_per_dim_basis(space: LikelihoodSpace, prep: &Preprocessing) -> BitsPerDim {
    match (space, prep.bin_width()) {
        (LikelihoodSpace::Discrete, _) => BitsPerDim::Discrete,
        (LikelihoodSpace::Continuous, Some(_)) => BitsPerDim::Dequantized,
        (LikelihoodSpace::Continuous, None) => BitsPerDim::Density,
    }
}

/// Converts a negative log-likelihood of one example (nats) to bits per dimension, using the data dimension
/// and the preprocessing recorded with the run; [`bits_per_dim_basis`] says which conversion applies:
///
/// * [`BitsPerDim::Discrete`]: a probability of discrete data, `nll / (D ln 2)`.
/// * [`BitsPerDim::Dequantized`]: a density over uniformly dequantized 8-bit data, turned into a probability
///   of the 256-level values by the bin width `w = (hi − lo) / 256`: `(nll − D ln w) / (D ln 2)`.
/// * [`BitsPerDim::Density`]: a density of the values as given, `nll / (D ln 2)` (2-D points, or scaled pixels
///   without dequantization under a continuous decoder — not bits of 8-bit values).
pub fn bits_per_dim(
    nll_nats: f64,
    dims: usize,
    space: LikelihoodSpace,
    prep: &Preprocessing,
) -> f64 {
    let d = dims as f64;
    let correction = match (bits_per_dim_basis(space, prep), prep.bin_width()) {
        (BitsPerDim::Dequantized, Some(w)) => -d * w.ln(),
        _ => 0.0,
    };
    (nll_nats + correction) / (d * std::f64::consts::LN_2)
}

/// Energy-based models: p(x) = exp(−E(x)) / Z on the box [lo, hi]^D (the data's range; Langevin chains are kept
/// in it), with Z unknown. [`crate::metrics::ais`] estimates log Z by annealed importance sampling.
pub trait EnergyBased: Model {
    /// E(x) per example `(n,)` for a batch `(n, …)`: the marginal energy, or with `labels` `(n,)` the energy of
    /// (x, y) of a model that also classifies (JEM: E(x, y) = −f(x)[y]).
    fn energy(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Tensor>;

    /// The box [lo, hi] every value lives in (the density is zero outside).
    fn domain(&self) -> (f64, f64);

    /// Per example of `x` `(n, …)`: `None` when all its values lie in the box, else `Some((min, max))` of its
    /// values (its density is zero).
    fn outside_domain(&self, x: &Tensor) -> Result<Vec<Option<(f64, f64)>>> {
        let (lo, hi) = self.domain();
        let x = x.flatten_from(1)?;
        let mn = x
            .min(1)?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?;
        let mx = x
            .max(1)?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?;
        Ok(mn
            .into_iter()
            .zip(mx)
            .map(|(a, b)| (a < lo || b > hi).then_some((a, b)))
            .collect())
    }

    /// The shape of one example.
    fn example_shape(&self) -> &[usize];

    /// Whether the model is also a classifier (JEM): then [`EnergyBased::class_logits`] gives logits.
    fn classifies(&self) -> bool {
        false
    }

    /// Class logits `(n, K)` of a model that is also a classifier (JEM), else `None`.
    fn class_logits(&self, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Range;

    /// Every preprocessing there is.
    fn all_preprocessings() -> Vec<Preprocessing> {
        let mut all = vec![
            Preprocessing::Binarize { dynamic: true },
            Preprocessing::Binarize { dynamic: false },
            Preprocessing::Identity,
        ];
        for range in [Range::ZeroOne, Range::MinusOneOne] {
            for dequantize in [false, true] {
                all.push(Preprocessing::Scale { range, dequantize });
            }
        }
        all
    }

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

    /// Every (likelihood space, preprocessing) pair — i.e. every decoder on every data it can see: discrete
    /// decoders (Bernoulli, discretized logistic / Gaussian, 256-way softmax) give `Discrete`, continuous ones
    /// (Gaussian, the ODE on continuous data) `Continuous` — converts as its basis says, and only densities
    /// over dequantized pixels get the bin correction.
    #[test]
    fn bits_per_dim_for_every_space_and_preprocessing() {
        let ln2 = std::f64::consts::LN_2;
        let (d, nll) = (12usize, 30.0f64);
        let plain = nll / (d as f64 * ln2);
        for prep in all_preprocessings() {
            for space in [LikelihoodSpace::Discrete, LikelihoodSpace::Continuous] {
                let case = format!("{space:?} over {}", prep.describe());
                let basis = bits_per_dim_basis(space, &prep);
                let got = bits_per_dim(nll, d, space, &prep);
                let want_basis = match (space, &prep) {
                    (LikelihoodSpace::Discrete, _) => BitsPerDim::Discrete,
                    (
                        LikelihoodSpace::Continuous,
                        Preprocessing::Scale {
                            dequantize: true, ..
                        },
                    ) => BitsPerDim::Dequantized,
                    // raw points, and scaled pixels that are NOT dequantized: a density on a lattice is no
                    // probability of the 8-bit values, so it is not converted as if it were
                    (LikelihoodSpace::Continuous, _) => BitsPerDim::Density,
                };
                assert_eq!(basis, want_basis, "{case}");
                match basis {
                    // the discrete decoders' numbers are unchanged: nll / (D ln 2)
                    BitsPerDim::Discrete | BitsPerDim::Density => {
                        assert!((got - plain).abs() < 1e-12, "{case}: {got} vs {plain}")
                    }
                    BitsPerDim::Dequantized => {
                        let Preprocessing::Scale { range, .. } = prep else {
                            unreachable!("dequantized data are scaled")
                        };
                        let (lo, hi) = range.bounds();
                        let w = (hi - lo) as f64 / 256.0;
                        let want = (nll - d as f64 * w.ln()) / (d as f64 * ln2);
                        assert!((got - want).abs() < 1e-12, "{case}: {got} vs {want}");
                    }
                }
            }
        }
        // a density that puts all its mass near the 256 levels of non-dequantized data can be huge; read as
        // 8-bit probabilities (the old (hi − lo)/256 bin correction) it gave fewer than 0 bits per dimension
        let lattice = Preprocessing::Scale {
            range: Range::ZeroOne,
            dequantize: false,
        };
        let peaked = -(d as f64) * 10.0; // log-density 10 nats per dimension
        let old = (peaked + d as f64 * 256f64.ln()) / (d as f64 * ln2);
        assert!(old < 0.0, "{old}");
        assert_eq!(
            bits_per_dim_basis(LikelihoodSpace::Continuous, &lattice),
            BitsPerDim::Density
        );
        assert!(bits_per_dim(peaked, d, LikelihoodSpace::Continuous, &lattice) < 0.0);
    }

    #[test]
    fn kinds_say_what_they_are() {
        let elbo = LikelihoodKind::bound_estimate("ELBO", "1 z sample per example");
        assert_eq!(
            elbo.to_string(),
            "estimate of a lower bound (ELBO), 1 z sample per example"
        );
        assert_eq!(elbo.short_name(), "ELBO");
        assert_eq!(LikelihoodKind::Exact.to_string(), "exact");
        assert_eq!(
            LikelihoodKind::Estimate("IWAE-8".into()).to_string(),
            "estimate (IWAE-8)"
        );
        // the JSON names the bound and how it is estimated
        let j = serde_json::to_value(&elbo).unwrap();
        assert_eq!(j["BoundEstimate"]["bound"], "ELBO");
        assert_eq!(j["BoundEstimate"]["how"], "1 z sample per example");
    }
}
