//! Autoregressive models: p(x) = Π_i p(x_i | x_<i), an exact likelihood and sequential sampling.
//!
//! * [`made`]: MADE, a masked MLP over binary vectors (Germain et al. 2015).
//! * [`pixelcnn`]: Gated PixelCNN with vertical and horizontal stacks (van den Oord et al. 2016).
//! * [`gpt`]: a decoder-only transformer language model over characters or bytes (GPT-2 / nanoGPT).
//! * [`wavenet`]: WaveNet, dilated causal convolutions over μ-law audio codes (van den Oord et al. 2016).
//! * [`beam`]: beam search over a language model (greedy decoding is beam 1).
//! * [`fim`]: fill-in-the-middle training and prompts for the GPT (Bavarian et al. 2022).
//! * [`sampling`]: temperature, top-k and top-p token sampling, shared by the language models.
//!
//! [`exact_log_likelihood`] is the [`Density::log_likelihood`](crate::model::Density::log_likelihood) body
//! MADE, PixelCNN and WaveNet share.

pub mod beam;
pub mod fim;
pub mod gpt;
pub mod made;
pub mod pixelcnn;
pub mod sampling;
pub mod wavenet;

use crate::model::{LikelihoodKind, LikelihoodOptions, LikelihoodSpace, LogLikelihood};
use crate::{Error, Result};

/// The number of classes a model conditions on: 0 when `class_conditional` is off, the data set's when on;
/// an error when it is on and the data set has no labels (`model` names the model in the message).
pub fn classes_for(
    class_conditional: bool,
    data_classes: Option<usize>,
    model: &str,
) -> Result<usize> {
    match (class_conditional, data_classes) {
        (false, _) => Ok(0),
        (true, Some(n)) if n > 0 => Ok(n),
        (true, _) => Err(Error::invalid(
            "model.class_conditional",
            format!("a class-conditional {model} needs class labels, and this data set has none"),
        )),
    }
}

/// The likelihood estimators of the models here (MADE, PixelCNN, WaveNet): the exact likelihood only.
pub const ESTIMATORS: &[&str] = &["exact"];

/// The exact log p(x) in nats of a model over discrete values, evaluated in chunks: checks the estimator
/// (`exact`, the default) and `opts.chunk` (with `max_chunk`, clamped to 1..=max_chunk; without, 0 is an
/// error), then `prepare()` gives the data and their number of examples n, and `chunk_nats(data, start, len)`
/// the log-likelihoods of examples `start..start + len`, for consecutive chunks covering 0..n.
pub fn exact_log_likelihood<T>(
    opts: &LikelihoodOptions,
    max_chunk: Option<usize>,
    prepare: impl FnOnce() -> Result<(T, usize)>,
    mut chunk_nats: impl FnMut(&T, usize, usize) -> Result<Vec<f64>>,
) -> Result<LogLikelihood> {
    match opts.estimator.as_deref().unwrap_or(ESTIMATORS[0]) {
        "exact" => {}
        other => return Err(Error::unknown("estimator", other, ESTIMATORS)),
    }
    let chunk = match max_chunk {
        Some(max) => opts.chunk.clamp(1, max),
        None if opts.chunk == 0 => {
            return Err(Error::invalid("likelihood options", "chunk must be ≥ 1"))
        }
        None => opts.chunk,
    };
    let (data, n) = prepare()?;
    let mut nats = Vec::with_capacity(n);
    for s in (0..n).step_by(chunk) {
        nats.extend(chunk_nats(&data, s, chunk.min(n - s))?);
    }
    Ok(LogLikelihood {
        nats,
        kind: LikelihoodKind::Exact,
        space: LikelihoodSpace::Discrete,
    })
}
