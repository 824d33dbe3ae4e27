//! Diffusion and score-based models: DDPM ([`ddpm`]), EDM ([`edm`]) and NCSN ([`ncsn`]), sharing the denoising
//! network of [`net`], the class conditioning of [`crate::conditioning`] and the samplers of [`crate::schedulers`];
//! [`run_sampler`] is the sampling loop EDM and NCSN share.

pub mod ddpm;
pub mod edm;
pub mod likelihood;
pub mod ncsn;
pub mod net;

pub use ddpm::{Ddpm, DdpmConfig};
pub use edm::{Edm, EdmConfig};
pub use ncsn::{Ncsn, NcsnConfig};

use candle_core::{Device, Tensor};

use crate::model::SampleOptions;
use crate::rng::Rng;
use crate::schedulers::{Level, Sampler};
use crate::{Error, Result};

/// Refuses classifier-free guidance in a model trained without class dropout (EDM, NCSN).
pub(crate) fn refuse_guidance(opts: &SampleOptions) -> Result<()> {
    if opts.guidance.is_some() {
        return Err(Error::invalid(
            "guidance",
            "classifier-free guidance needs a model trained with class dropout; only 'ddpm' has that so far",
        ));
    }
    Ok(())
}

/// The sampling loop of EDM and NCSN: `n` draws of shape `input_shape` from the sampler's initial noise
/// (times `opts.temperature`, noise seeded by `opts.seed`), then for each of the sampler's evaluations the
/// model's detached denoiser D(x; level) (`denoise`) and a sampler step; images are clamped to [−1, 1].
pub(crate) fn run_sampler<F>(
    sampler: &mut dyn Sampler,
    n: usize,
    input_shape: &[usize],
    opts: &SampleOptions,
    clamp: bool,
    device: &Device,
    mut denoise: F,
) -> Result<Tensor>
where
    F: FnMut(&Tensor, &Level) -> Result<Tensor>,
{
    let mut rng = Rng::new(opts.seed);
    let mut shape = vec![n];
    shape.extend_from_slice(input_shape);
    let mut x = sampler.init_noise(&shape.into(), &mut rng, device)?;
    if opts.temperature != 1.0 {
        x = (x * opts.temperature)?;
    }
    for i in 0..sampler.num_evals() {
        // the model's D(x; σ) at the sampler's level, detached (candle has no no-grad mode)
        let level = sampler.level(i);
        let d = denoise(&x, &level)?.detach();
        x = sampler.step(i, &x, &d, &mut rng)?; // scheduler step
    }
    if clamp {
        x = x.clamp(-1f32, 1f32)?;
    }
    Ok(x)
}
