//! Euler's method for the probability-flow ODE (Karras, Aittala, Aila & Laine 2022, "Elucidating the design
//! space of diffusion-based generative models", arXiv:2206.00364, Algorithm 1 without its second-order
//! correction), for any levels.
//!
//! In the scaled variables x̃ = x/α and σ̃ = σ/α every schedule is variance exploding and the
//! probability-flow ODE is (Karras et al. eq. 4 with s(t) = α, σ(t) = σ̃)
//!
//! dx̃/dσ̃ = (x̃ − D(x; level))/σ̃,
//!
//! with D the denoiser evaluated at the unscaled x = α·x̃. One Euler step from level t to level s:
//! x̃_s = x̃_t + (σ̃_s − σ̃_t)·(x̃_t − D)/σ̃_t, i.e. with r = σ̃_s/σ̃_t,
//! x_s = α_s·(r·x_t/α_t + (1 − r)·D). To the clean level (r = 0) this returns D. This is algebraically the
//! DDIM update with η = 0 (Song et al. 2021, eq. 13 and §4.3; Karras et al. §3).

use candle_core::Tensor;

use crate::rng::Rng;
use crate::schedulers::{check_levels, combine, step_out_of_range, Level, Sampler};
use crate::Result;

/// σ̃ = σ/α, the noise level of the scaled variable x/α.
pub(crate) fn scaled_sigma(l: &Level) -> f64 {
    l.sigma / l.alpha
}

/// One Euler step of the probability-flow ODE from level `t` to level `s`, given the denoiser's `x0` at `t`.
pub(crate) fn euler_step(t: &Level, s: &Level, x: &Tensor, x0: &Tensor) -> Result<Tensor> {
    let r = scaled_sigma(s) / scaled_sigma(t);
    combine(&[(s.alpha * r / t.alpha, x), (s.alpha * (1.0 - r), x0)])
}

/// Euler sampler of the probability-flow ODE: one evaluation per interval, deterministic.
#[derive(Clone, Debug)]
pub struct Euler {
    levels: Vec<Level>,
}

impl Euler {
    /// The sampler over `levels` (noisiest first, ending with [`Level::CLEAN`]).
    pub fn new(levels: Vec<Level>) -> Result<Self> {
        check_levels(&levels)?;
        Ok(Self { levels })
    }
}

impl Sampler for Euler {
    fn name(&self) -> &'static str {
        "euler"
    }

    fn levels(&self) -> &[Level] {
        &self.levels
    }

    fn step(&mut self, i: usize, x: &Tensor, x0: &Tensor, _rng: &mut Rng) -> Result<Tensor> {
        if i >= self.num_evals() {
            return Err(step_out_of_range(self.name(), i, self.num_evals()));
        }
        euler_step(&self.levels[i], &self.levels[i + 1], x, x0)
    }
}
