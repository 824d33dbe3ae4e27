//! Heun's second-order method for the probability-flow ODE (Karras, Aittala, Aila & Laine 2022,
//! "Elucidating the design space of diffusion-based generative models", arXiv:2206.00364, Algorithm 1 with
//! S_churn = 0, i.e. deterministic), for any levels, in the scaled variables x̃ = x/α, σ̃ = σ/α of
//! [`crate::schedulers::Euler`], where dx̃/dσ̃ = (x̃ − D)/σ̃.
//!
//! For each interval t → s with s not clean (Algorithm 1, lines 5–8):
//!
//! d = (x̃_t − D(x_t; t))/σ̃_t,  x̃' = x̃_t + (σ̃_s − σ̃_t)·d                  (Euler trial point)
//! d' = (x̃' − D(α_s x̃'; s))/σ̃_s,  x̃_s = x̃_t + (σ̃_s − σ̃_t)·(d + d')/2     (trapezoidal correction)
//!
//! and the last interval, to σ = 0, is a plain Euler step (d' would divide by 0), which returns D. So N
//! intervals take 2N − 1 evaluations, listed in order by [`Sampler::level`]: t₀, t₁ | t₁, t₂ | … |
//! t_{N−2}, t_{N−1} | t_{N−1}. The first evaluation of an interval returns the trial point x' (at level s),
//! the second the corrected sample; x̃_t and d are kept inside the sampler between the two calls.

use candle_core::Tensor;

use crate::rng::Rng;
use crate::schedulers::euler::{euler_step, scaled_sigma};
use crate::schedulers::{check_levels, combine, step_out_of_range, Level, Sampler};
use crate::{Error, Result};

/// Heun sampler (EDM's deterministic sampler): two evaluations per interval, one for the last.
#[derive(Clone, Debug)]
pub struct Heun {
    levels: Vec<Level>,
    /// (interval, x at its start, its denoiser output) between the two evaluations of an interval.
    pending: Option<(usize, Tensor, Tensor)>,
}

impl Heun {
    /// The sampler over `levels` (noisiest first, ending with [`Level::CLEAN`]).
    pub fn new(levels: Vec<Level>) -> Result<Self> {
        check_levels(&levels)?;
        Ok(Self {
            levels,
            pending: None,
        })
    }

    fn intervals(&self) -> usize {
        self.levels.len() - 1
    }

    /// (interval, second evaluation?) of evaluation `i`.
    fn locate(&self, i: usize) -> (usize, bool) {
        (i / 2, i % 2 == 1)
    }
}

impl Sampler for Heun {
    fn name(&self) -> &'static str {
        "heun"
    }

    fn num_evals(&self) -> usize {
        2 * self.intervals() - 1
    }

    /// The level of evaluation `i` ([`Level::CLEAN`] past the end).
    fn level(&self, i: usize) -> Level {
        if i >= self.num_evals() {
            return Level::CLEAN;
        }
        let (k, second) = self.locate(i);
        self.levels[k + usize::from(second)]
    }

    fn levels(&self) -> &[Level] {
        &self.levels
    }

    fn step(&mut self, i: usize, x: &Tensor, x0: &Tensor, _rng: &mut Rng) -> Result<Tensor> {
        if i >= self.num_evals() {
            return Err(step_out_of_range(self.name(), i, self.num_evals()));
        }
        let (k, second) = self.locate(i);
        let (t, s) = (self.levels[k], self.levels[k + 1]);
        if s.sigma == 0.0 {
            // the last interval: Euler to σ = 0
            self.pending = None;
            return euler_step(&t, &s, x, x0);
        }
        if !second {
            self.pending = Some((k, x.clone(), x0.clone()));
            return euler_step(&t, &s, x, x0);
        }
        let (x_t, d_t) = match self.pending.take() {
            Some((kk, x_t, d_t)) if kk == k => (x_t, d_t),
            _ => {
                return Err(Error::invalid(
                    "heun step",
                    format!("evaluation {i} is the second of interval {k}, but the first did not come before"),
                ))
            }
        };
        // x̃_s = x̃_t + h/2·(x̃_t − D_t)/σ̃_t + h/2·(x̃' − D')/σ̃_s with h = σ̃_s − σ̃_t, then x_s = α_s x̃_s
        let (st, ss) = (scaled_sigma(&t), scaled_sigma(&s));
        let h2 = 0.5 * (ss - st);
        let (ct, cs) = (h2 / st, h2 / ss);
        combine(&[
            (s.alpha * (1.0 + ct) / t.alpha, &x_t),
            (-s.alpha * ct, &d_t),
            (cs, x), // α_s·(h/2)/σ̃_s·(x'/α_s)
            (-s.alpha * cs, x0),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::{KarrasSchedule, NoiseSchedule};
    use candle_core::Device;

    /// One interval by hand (Algorithm 1, lines 5–8), for a denoiser that returns a constant c: the ODE
    /// dx/dσ = (x − c)/σ has the exact solution x(σ) = c + (x₀ − c)·σ/σ₀, which Heun's method (like Euler's)
    /// integrates exactly, and evaluations out of order are an error.
    #[test]
    fn heun_is_exact_on_a_linear_flow_and_keeps_its_order() -> Result<()> {
        let sch = KarrasSchedule::default();
        let levels = sch.sampling_levels(4)?;
        let mut h = Heun::new(levels.clone())?;
        let dev = Device::Cpu;
        let c = Tensor::new(&[0.5f32, -0.25], &dev)?;
        let mut x = Tensor::new(&[80.0f32, 40.0], &dev)?;
        let mut rng = Rng::new(0);
        for i in 0..h.num_evals() {
            x = h.step(i, &x, &c, &mut rng)?;
            let l = h.level(i + 1);
            if l.sigma > 0.0 && i % 2 == 1 {
                // after each corrected step: c + (x₀ − c)·σ/80
                let v = x.to_vec1::<f32>()?;
                let want = [0.5 + 79.5 * l.sigma / 80.0, -0.25 + 40.25 * l.sigma / 80.0];
                for j in 0..2 {
                    assert!(
                        (v[j] as f64 - want[j]).abs() < 1e-4 * want[j].abs().max(1.0),
                        "{i}: {v:?} {want:?}"
                    );
                }
            }
        }
        assert_eq!(x.to_vec1::<f32>()?, vec![0.5, -0.25]);
        // the second evaluation of an interval without the first
        let mut h = Heun::new(levels)?;
        assert!(h.step(1, &x, &c, &mut rng).is_err());
        Ok(())
    }
}
