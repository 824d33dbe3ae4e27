//! DPM-Solver++(2M) (Lu, Zhou, Bao, Chen, Li & Zhu 2022, "DPM-Solver++: fast solver for guided sampling of
//! diffusion probabilistic models", arXiv:2211.01095, Algorithm 2): a second-order multistep solver of the
//! probability-flow ODE in its data-prediction form, for any levels.
//!
//! With λ = log(α/σ) (half the log-SNR) and h_i = λ_{t_i} − λ_{t_{i−1}}, the exact solution of the ODE
//! over one interval is x_{t_i} = (σ_{t_i}/σ_{t_{i−1}}) x_{t_{i−1}} + σ_{t_i} ∫ e^λ x̂₀(λ) dλ; freezing x̂₀
//! gives the first-order step (= DDIM, η = 0)
//!
//! x_{t_i} = (σ_{t_i}/σ_{t_{i−1}})·x_{t_{i−1}} − α_{t_i}(e^{−h_i} − 1)·D_i,
//!
//! and the multistep second-order scheme uses, with r_i = h_{i−1}/h_i,
//! D_i = (1 + 1/(2r_i))·x̂₀(t_{i−1}) − (1/(2r_i))·x̂₀(t_{i−2}).
//! The first step has no history and is first order (D = x̂₀). The last step goes to σ = 0, where λ = +∞:
//! there e^{−h} = 0, σ_s/σ_t = 0 and r = 0, so the step is taken first order and returns x̂₀ exactly as
//! k-diffusion's `sample_dpmpp_2m` does (no log(0) is ever evaluated). `−(e^{−h} − 1)` is computed with
//! `expm1` for accuracy at small h.

use candle_core::Tensor;

use crate::rng::Rng;
use crate::schedulers::{check_levels, combine, step_out_of_range, Level, Sampler};
use crate::{Error, Result};

/// λ = log(α/σ) of a noisy level (σ > 0).
fn lambda(l: &Level) -> f64 {
    (l.alpha / l.sigma).ln()
}

/// DPM-Solver++(2M): one evaluation per interval, deterministic.
#[derive(Clone, Debug)]
pub struct DpmSolver2M {
    levels: Vec<Level>,
    /// (evaluation index, x̂₀ there, its h) of the previous step.
    prev: Option<(usize, Tensor, f64)>,
}

impl DpmSolver2M {
    /// The sampler over `levels` (noisiest first, ending with [`Level::CLEAN`]).
    pub fn new(levels: Vec<Level>) -> Result<Self> {
        check_levels(&levels)?;
        Ok(Self { levels, prev: None })
    }
}

impl Sampler for DpmSolver2M {
    fn name(&self) -> &'static str {
        "dpm++2m"
    }

    fn levels(&self) -> &[Level] {
        &self.levels
    }

    fn step(&mut self, i: usize, x: &Tensor, x0: &Tensor, _rng: &mut Rng) -> Result<Tensor> {
        if i >= self.num_evals() {
            return Err(step_out_of_range(self.name(), i, self.num_evals()));
        }
        let (t, s) = (self.levels[i], self.levels[i + 1]);
        let prev = self.prev.take();
        if s.sigma == 0.0 {
            return Ok(x0.clone());
        }
        let h = lambda(&s) - lambda(&t);
        let d = match (i, prev) {
            (0, _) => x0.clone(),
            (_, Some((j, x0_prev, h_prev))) if j + 1 == i => {
                let c = 0.5 * h / h_prev; // 1/(2r)
                combine(&[(1.0 + c, x0), (-c, &x0_prev)])?
            }
            _ => {
                return Err(Error::invalid(
                    "dpm++2m step",
                    format!(
                        "step {i} must follow step {}: the solver keeps the previous x̂₀",
                        i - 1
                    ),
                ))
            }
        };
        self.prev = Some((i, x0.clone(), h));
        combine(&[(s.sigma / t.sigma, x), (-s.alpha * (-h).exp_m1(), &d)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::{KarrasSchedule, NoiseSchedule};
    use candle_core::Device;

    /// With a constant denoiser c the multistep correction vanishes ((1 + 1/(2r))c − c/(2r) = c) and every
    /// step is exact for the ODE, whose solution in λ is x_t = c + (x₀ − c)·σ_t/σ₀ (α = 1); the last step
    /// returns c. A step out of order is an error.
    #[test]
    fn exact_on_a_constant_denoiser_and_keeps_its_order() -> Result<()> {
        let levels = KarrasSchedule::default().sampling_levels(6)?;
        let mut s = DpmSolver2M::new(levels.clone())?;
        let dev = Device::Cpu;
        let c = Tensor::new(&[0.5f32, -0.25], &dev)?;
        let mut x = Tensor::new(&[80.0f32, 40.0], &dev)?;
        let mut rng = Rng::new(0);
        for i in 0..s.num_evals() {
            x = s.step(i, &x, &c, &mut rng)?;
            let sig = levels[i + 1].sigma;
            let v = x.to_vec1::<f32>()?;
            let want = [0.5 + 79.5 * sig / 80.0, -0.25 + 40.25 * sig / 80.0];
            for j in 0..2 {
                assert!(
                    (v[j] as f64 - want[j]).abs() < 1e-4 * want[j].abs().max(1.0),
                    "{i}: {v:?} {want:?}"
                );
            }
        }
        let mut s = DpmSolver2M::new(levels)?;
        s.step(0, &x, &c, &mut rng)?;
        assert!(s.step(2, &x, &c, &mut rng).is_err());
        Ok(())
    }
}
