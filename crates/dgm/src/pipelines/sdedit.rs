//! SDEdit (Meng et al. 2022, "SDEdit: guided image synthesis and editing with stochastic differential
//! equations", arXiv:2108.01073): a guide image (a stroke painting, a sketch, a photo to edit) is noised to an
//! intermediate level and the sampler runs from there. The strength t₀ ∈ (0, 1] is the fraction of the
//! sampler's steps that run: near 0 the output is the input, at 1 the guide is forgotten (plain sampling);
//! the paper's realism–faithfulness trade-off lies between (they use t₀ ≈ 0.3–0.6).
//!
//! Works with every model and every sampler (it only moves the start of the loop).

use candle_core::Tensor;

use super::{noised, Pipeline, Plain};
use crate::rng::Rng;
use crate::{Error, Result};

/// SDEdit of a batch of guide images `x` (`(n, example_shape…)`, in the model's value space): the sampler
/// `sampler` (default: the model's) over `steps` steps (default: the model's), of which the last
/// round(strength·steps) run from `x` noised to their first level. A strength that leaves no step returns `x`.
pub fn sdedit(
    pipe: &Pipeline,
    x: &Tensor,
    sampler: Option<&str>,
    steps: Option<usize>,
    strength: f64,
    rng: &mut Rng,
) -> Result<Tensor> {
    let model = pipe.model();
    let info = model.info();
    if x.rank() != info.example_shape.len() + 1 || &x.dims()[1..] != info.example_shape {
        return Err(Error::invalid(
            "image",
            format!(
                "model '{}' takes examples of shape {:?}, got a batch of shape {:?}",
                info.name,
                info.example_shape,
                x.dims()
            ),
        ));
    }
    let Some(mut sampler) = pipe.sampler_if_any(sampler, steps, strength)? else {
        return Ok(x.clone()); // no step to run: the input is the output
    };
    let start = noised(x, &sampler.levels()[0], rng)?; // x noised to t₀
    pipe.run(sampler.as_mut(), start, &mut Plain, rng)
}
