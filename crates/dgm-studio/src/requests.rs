//! The requests the API queues as jobs: their JSON, the checks that need no model (done before a job is
//! queued), and the [`Work`] a job carries to the worker (see `work.rs` for what it does).

use std::path::PathBuf;

use dgm::model::GenerateOptions;
use serde::Deserialize;

/// The most images one sample job draws.
pub(crate) const MAX_SAMPLES: usize = 64;
/// The most tokens one text job generates.
pub(crate) const MAX_TOKENS: usize = 4000;
/// The most sampler steps a job may ask for.
pub(crate) const MAX_STEPS: usize = 2000;

/// `POST /api/sample`: a grid of samples from an image (or 2-D point) model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SampleRequest {
    /// The run's name.
    pub run: String,
    /// Samples (1 to [`MAX_SAMPLES`]).
    #[serde(default = "default_n")]
    pub n: usize,
    #[serde(default)]
    pub seed: u64,
    pub sampler: Option<String>,
    pub steps: Option<usize>,
    pub guidance: Option<f64>,
    /// One class for every sample.
    pub class: Option<u32>,
    pub caption: Option<String>,
    /// A draw from the observation model instead of its mean (VAE family).
    #[serde(default)]
    pub draw: bool,
    #[serde(default = "one")]
    pub temperature: f64,
}

fn default_n() -> usize {
    16
}

fn one() -> f64 {
    1.0
}

/// `POST /api/generate`: a text continuation from a language model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerateRequest {
    pub run: String,
    #[serde(default)]
    pub prompt: String,
    #[serde(default = "default_tokens")]
    pub max_tokens: usize,
    #[serde(default = "one")]
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: u64,
}

fn default_tokens() -> usize {
    300
}

impl SampleRequest {
    /// The checks that need no model: the sizes.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(1..=MAX_SAMPLES).contains(&self.n) {
            return Err(format!("n = {}: give 1 to {MAX_SAMPLES} samples", self.n));
        }
        if self.steps.is_some_and(|s| !(1..=MAX_STEPS).contains(&s)) {
            return Err(format!(
                "steps = {}: give 1 to {MAX_STEPS}",
                self.steps.unwrap_or(0)
            ));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "temperature = {}: must be a positive number",
                self.temperature
            ));
        }
        if self.guidance.is_some_and(|g| !g.is_finite()) {
            return Err("guidance must be a finite number".into());
        }
        Ok(())
    }
}

impl GenerateRequest {
    /// The library's options, checked.
    pub(crate) fn options(&self) -> dgm::Result<GenerateOptions> {
        let o = GenerateOptions {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            kv_cache: true,
        };
        o.validate()?;
        Ok(o)
    }

    /// The checks that need no model.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(1..=MAX_TOKENS).contains(&self.max_tokens) {
            return Err(format!(
                "max_tokens = {}: give 1 to {MAX_TOKENS}",
                self.max_tokens
            ));
        }
        self.options().map(|_| ()).map_err(|e| e.to_string())
    }
}

/// The tasks `POST /api/edit` takes (`dgm edit …` without `reconstruct`, whose sinograms the page cannot draw).
pub(crate) const EDIT_TASKS: &[&str] =
    &["inpaint", "super-resolve", "colorize", "deblur", "sdedit"];
/// The most samples one edit job draws.
pub(crate) const MAX_EDITS: usize = 16;

/// `POST /api/edit`: a diffusion model edits an image (the library's `pipelines::edit`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditRequest {
    pub run: String,
    /// One of [`EDIT_TASKS`].
    pub task: String,
    /// The image: a PNG of exactly the model's size, base64 (a `data:image/png;base64,` URL too).
    pub image: String,
    /// `inpaint` only: a PNG of the model's size, white = missing (to fill), black = kept.
    pub mask: Option<String>,
    /// `super-resolve` only: the down-sampling factor (default 2).
    pub factor: Option<usize>,
    /// `deblur` only: the blur's standard deviation in pixels (default 1).
    pub blur_sigma: Option<f64>,
    pub solver: Option<String>,
    /// The `sdedit` solver only, in (0, 1].
    pub strength: Option<f64>,
    pub sampler: Option<String>,
    pub steps: Option<usize>,
    #[serde(default = "default_edits")]
    pub n: usize,
    #[serde(default)]
    pub seed: u64,
    pub class: Option<u32>,
    /// The condition of a caption-conditional model.
    pub caption: Option<String>,
    pub guidance: Option<f64>,
}

fn default_edits() -> usize {
    4
}

/// The bytes of a base64 file, with or without a `data:…;base64,` prefix.
fn decode_b64(what: &str, s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let body = match s.split_once(";base64,") {
        Some((head, b)) if head.starts_with("data:") => b,
        _ => s,
    };
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| format!("{what}: not base64 ({e}); send a PNG file as base64 or a data: URL"))
}

/// An [`EditRequest`] whose files are decoded.
pub(crate) struct EditWork {
    pub req: EditRequest,
    /// The image's PNG bytes.
    pub image: Vec<u8>,
    /// The mask's PNG bytes.
    pub mask: Option<Vec<u8>>,
}

impl EditRequest {
    /// The checks that need no model (task, sizes, which settings apply to the task), and the files decoded.
    pub(crate) fn check(self) -> Result<EditWork, String> {
        if !EDIT_TASKS.contains(&self.task.as_str()) {
            return Err(format!(
                "task '{}': choose one of {}",
                self.task,
                EDIT_TASKS.join(", ")
            ));
        }
        if !(1..=MAX_EDITS).contains(&self.n) {
            return Err(format!("n = {}: give 1 to {MAX_EDITS} samples", self.n));
        }
        if self.steps.is_some_and(|s| !(1..=MAX_STEPS).contains(&s)) {
            return Err(format!(
                "steps = {}: give 1 to {MAX_STEPS}",
                self.steps.unwrap_or(0)
            ));
        }
        let only = |given: bool, key: &str, task: &str| {
            if given && self.task != task {
                Err(format!(
                    "{key} does not apply to {}; it is for {task}",
                    self.task
                ))
            } else {
                Ok(())
            }
        };
        only(self.mask.is_some(), "mask", "inpaint")?;
        only(self.factor.is_some(), "factor", "super-resolve")?;
        only(self.blur_sigma.is_some(), "blur_sigma", "deblur")?;
        if self.task == "inpaint" && self.mask.is_none() {
            return Err("inpaint needs a mask: a PNG of the model's size, white where pixels are to be filled".into());
        }
        let image = decode_b64("image", &self.image)?;
        let mask = match &self.mask {
            Some(m) => Some(decode_b64("mask", m)?),
            None => None,
        };
        Ok(EditWork {
            req: self,
            image,
            mask,
        })
    }
}

/// `POST /api/score`: the per-token log-likelihood of a text under a language model (`dgm score`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScoreRequest {
    pub run: String,
    pub text: String,
}

/// The most text one score job reads, in bytes.
pub(crate) const MAX_SCORE_BYTES: usize = 100_000;

impl ScoreRequest {
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.text.is_empty() {
            return Err("text is empty: paste some text to score".into());
        }
        if self.text.len() > MAX_SCORE_BYTES {
            return Err(format!(
                "text has {} bytes; at most {MAX_SCORE_BYTES} are scored here (`dgm score` takes any length)",
                self.text.len()
            ));
        }
        Ok(())
    }
}

/// An image for a job: test example `example` of the run's data set, or a PNG (`image`, base64 or a data
/// URL) of exactly the model's size.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Source {
    pub example: Option<usize>,
    pub image: Option<String>,
}

/// A [`Source`] with its file decoded.
pub(crate) enum Picked {
    Example(usize),
    Png(Vec<u8>),
}

impl Source {
    fn check(&self, what: &str) -> Result<Picked, String> {
        match (self.example, &self.image) {
            (Some(i), None) => Ok(Picked::Example(i)),
            (None, Some(b)) => decode_b64(what, b).map(Picked::Png),
            _ => Err(format!(
                "{what}: give either {{\"example\": INDEX}} (a test example) or {{\"image\": PNG as base64}}"
            )),
        }
    }
}

/// `POST /api/interpolate`: decoded points on the path between two images' latent codes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InterpolateRequest {
    pub run: String,
    pub from: Source,
    pub to: Source,
    /// Points on the path, both codes included (2 to [`MAX_PATH`]).
    #[serde(default = "default_path")]
    pub steps: usize,
}

/// The most points an interpolation decodes.
pub(crate) const MAX_PATH: usize = 32;

fn default_path() -> usize {
    8
}

/// `POST /api/likelihood`: an image's log-likelihood, and where it falls among test examples' and OOD
/// examples' scores.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LikelihoodRequest {
    pub run: String,
    pub image: Source,
    /// Examples scored per reference set (the test split and each OOD set; 0 for none).
    #[serde(default = "default_reference")]
    pub reference: usize,
    /// The OOD sets (default: the data set's, as `dgm eval ood`).
    pub ood: Option<Vec<String>>,
    /// Time steps of the estimator (diffusion: KL terms of the bound, or ODE steps; default the model's, for
    /// the DDPM bound all 999 terms: slow on a CPU).
    pub steps: Option<usize>,
}

/// The most examples a likelihood job scores per reference set.
pub(crate) const MAX_REFERENCE: usize = 1000;

fn default_reference() -> usize {
    64
}

/// What a job does, with its run's folder resolved.
pub(crate) enum Work {
    Sample(SampleRequest, PathBuf),
    Generate(GenerateRequest, PathBuf),
    Edit(Box<EditWork>, PathBuf),
    Score(ScoreRequest, PathBuf),
    Interpolate(Box<(InterpolateRequest, Picked, Picked)>, PathBuf),
    Likelihood(Box<(LikelihoodRequest, Picked)>, PathBuf),
}

impl InterpolateRequest {
    pub(crate) fn check(self) -> Result<(Self, Picked, Picked), String> {
        if !(2..=MAX_PATH).contains(&self.steps) {
            return Err(format!("steps = {}: give 2 to {MAX_PATH}", self.steps));
        }
        let a = self.from.check("from")?;
        let b = self.to.check("to")?;
        Ok((self, a, b))
    }
}

impl LikelihoodRequest {
    pub(crate) fn check(self) -> Result<(Self, Picked), String> {
        if self.reference > MAX_REFERENCE {
            return Err(format!(
                "reference = {}: give 0 to {MAX_REFERENCE} examples per set",
                self.reference
            ));
        }
        if let Some(bad) = self
            .ood
            .iter()
            .flatten()
            .find(|o| !dgm::data::ood::OOD_SETS.contains(&o.as_str()))
        {
            return Err(format!(
                "OOD set '{bad}': choose from {}",
                dgm::data::ood::OOD_SETS.join(", ")
            ));
        }
        if self.steps.is_some_and(|s| !(1..=MAX_STEPS).contains(&s)) {
            return Err(format!(
                "steps = {}: give 1 to {MAX_STEPS}",
                self.steps.unwrap_or(0)
            ));
        }
        let p = self.image.check("image")?;
        Ok((self, p))
    }
}

/// What the worker keeps between jobs for the work: where data sets are, and the reference scores of the
/// likelihood page per run checkpoint (the test split's and the OOD sets' do not change with the image).
pub(crate) struct Context {
    pub data_dir: PathBuf,
    pub references: std::collections::HashMap<String, serde_json::Value>,
}
