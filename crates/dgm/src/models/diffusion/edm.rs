//! EDM: the preconditioned denoiser and training of Karras, Aittala, Aila & Laine 2022, "Elucidating the design
//! space of diffusion-based generative models" (arXiv:2206.00364), Table 1, column "Ours".
//!
//! Noisy data at noise level σ are x = x₀ + σ·n, n ~ N(0, I) (variance exploding, α = 1). The network F is
//! wrapped as the denoiser (eq. 7)
//!
//! D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ)),
//! c_skip = σ_d²/(σ² + σ_d²), c_out = σ·σ_d/√(σ² + σ_d²), c_in = 1/√(σ² + σ_d²), c_noise = ¼·ln σ,
//!
//! chosen so that for data of standard deviation σ_d the network's input c_in·x and its training target
//! (x₀ − c_skip·x)/c_out both have unit variance at every σ (their Appendix B.6). Training draws
//! ln σ ~ N(P_mean, P_std²) and minimises λ(σ)·‖D(x; σ) − x₀‖² with λ(σ) = (σ² + σ_d²)/(σ·σ_d)² = 1/c_out²;
//! since D − x₀ = c_out·(F − (x₀ − c_skip·x)/c_out), this is the same objective as the one we compute,
//!
//! loss = mean over examples and coordinates of (F(c_in·x, c_noise) − (x₀ − c_skip·x)/c_out)²   (eq. 8).
//!
//! The network's time input. dgm's networks embed their time input with the DDPM sinusoid
//! ([`crate::nn::unet::timestep_embedding`]), whose frequencies run from 1 down to 10⁻⁴ per unit of t: it was
//! designed for the step indices t = 0…999. Fed c_noise ∈ [−1.55, 1.10] (σ from 0.002 to 80) directly, every
//! argument t·freq would stay below 1.6 rad and all but the first few channels would be nearly constant. We
//! therefore pass the affine map [`time_input`] t = 500 + 250·c_noise = 500 + 62.5·ln σ, which sends
//! c_noise ∈ [−2, 2] (σ ∈ [3.4·10⁻⁴, 2981]) onto [0, 1000]: the sampling range σ ∈ [0.002, 80] lands on
//! t ∈ [112, 774] and the training distribution's ±4 standard deviations (ln σ = −1.2 ± 4.8) on [125, 725].
//! One unit of t is then Δln σ = 0.016, about the spacing of DDPM's 1000 steps. The map is fixed (it does not
//! depend on σ_min / σ_max), so the network means the same thing at every σ, including the continuous σ a
//! likelihood integrator asks for. Note `Level::t` of [`KarrasSchedule`] is σ itself: the time input is
//! computed from `level.sigma`.
//!
//! Sampling runs any sampler of [`crate::schedulers`] over the Karras levels (eq. 5: σ_min = 0.002,
//! σ_max = 80, ρ = 7), by default Heun's method with 18 steps (35 evaluations, EDM's CIFAR-10 setting); the loop
//! is the one of [`crate::pipelines`].

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::likelihood::{ve_ode_density, Quantization};
use super::net::{DenoiserNet, NetConfig};
use crate::conditioning::{check_class_dropout, training_cond, Cond};
use crate::data::Batch;
use crate::model::{Density, LikelihoodOptions, LogLikelihood, LossOutput, Model, SampleOptions};
use crate::pipelines::{self, Denoiser, DenoiserInfo, SamplerDefaults};
use crate::rng::Rng;
use crate::schedulers::{self, KarrasSchedule, Level, NoiseSchedule, SamplerOptions};
use crate::{Error, Result};

/// EDM hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdmConfig {
    /// The network F (UNet for images, MLP for vectors); data-dependent fields are filled by `prepare`.
    pub net: NetConfig,
    /// σ_d, the standard deviation of the data the preconditioning assumes (0.5 for images in [−1, 1]).
    pub sigma_data: f64,
    /// P_mean: mean of ln σ during training.
    pub p_mean: f64,
    /// P_std: standard deviation of ln σ during training.
    pub p_std: f64,
    /// Smallest σ visited when sampling.
    pub sigma_min: f64,
    /// Largest σ visited when sampling (the prior is N(0, σ_max² I)).
    pub sigma_max: f64,
    /// ρ of the sampling schedule (eq. 5).
    pub rho: f64,
    /// Class-conditional models: probability of training an example with the null class instead of its
    /// label, which makes classifier-free guidance possible (Ho & Salimans 2022 use 0.1–0.2).
    pub class_dropout: f64,
    /// Clip D to the data range [−1, 1] while sampling (images only).
    pub clip_denoised: bool,
    /// Default sampler of `sample` (one of `schedulers::SAMPLERS`).
    pub sampler: String,
    /// Default number of sampler steps N (noise levels visited).
    pub sample_steps: usize,
    /// Langevin / corrector steps per level, for the `langevin` and `pc` samplers.
    pub langevin_steps: usize,
    /// Langevin step size ε at σ_min (`langevin` sampler; ε_i = ε·σ_i²/σ_min²). The default 4.8·10⁻⁷
    /// = 0.12·σ_min² keeps ε_i/σ_i² = 0.12 at every level, the ratio of NCSN's defaults (a step ε_i ≥ 4·σ_i²
    /// would make the chain diverge).
    pub langevin_eps: f64,
    /// How the data are quantized (filled by `prepare`); the ODE likelihood uses it.
    pub quantization: Quantization,
    /// Heun steps of the probability-flow ODE likelihood (`ode`), unless the caller asks for another number.
    pub ode_steps: usize,
}

impl Default for EdmConfig {
    fn default() -> Self {
        Self {
            net: NetConfig::default(),
            sigma_data: 0.5,
            p_mean: -1.2,
            p_std: 1.2,
            sigma_min: KarrasSchedule::DEFAULT_SIGMA_MIN,
            sigma_max: KarrasSchedule::DEFAULT_SIGMA_MAX,
            rho: KarrasSchedule::DEFAULT_RHO,
            class_dropout: 0.1,
            clip_denoised: true,
            sampler: "heun".into(),
            sample_steps: 18,
            langevin_steps: 5,
            langevin_eps: 4.8e-7,
            quantization: Quantization::default(),
            ode_steps: 100,
        }
    }
}

impl EdmConfig {
    /// A small config for tests.
    pub fn tiny() -> Self {
        Self {
            net: NetConfig::tiny(),
            sample_steps: 8,
            ..Self::default()
        }
    }

    /// Checks the values a user can set.
    pub fn validate(&self) -> Result<()> {
        check_class_dropout(self.class_dropout, "model.class_dropout")?;
        self.quantization.validate()?;
        if self.ode_steps == 0 {
            return Err(Error::invalid("model.ode_steps", "must be at least 1"));
        }
        let positive = |key: &str, v: f64| -> Result<()> {
            match v.is_finite() && v > 0.0 {
                true => Ok(()),
                false => Err(Error::invalid(
                    format!("model.{key}"),
                    format!("must be positive and finite, got {v}"),
                )),
            }
        };
        positive("sigma_data", self.sigma_data)?;
        positive("p_std", self.p_std)?;
        positive("langevin_eps", self.langevin_eps)?;
        if !self.p_mean.is_finite() {
            return Err(Error::invalid(
                "model.p_mean",
                format!("must be finite, got {}", self.p_mean),
            ));
        }
        if !schedulers::SAMPLERS.contains(&self.sampler.as_str()) {
            return Err(Error::unknown(
                "model.sampler",
                &self.sampler,
                schedulers::SAMPLERS,
            ));
        }
        if self.sample_steps == 0 || self.langevin_steps == 0 {
            return Err(Error::invalid(
                "model.sample_steps / model.langevin_steps",
                "must be at least 1",
            ));
        }
        self.schedule()?;
        self.net.validate()
    }

    fn schedule(&self) -> Result<KarrasSchedule> {
        KarrasSchedule::new(self.sigma_min, self.sigma_max, self.rho)
    }
}

/// The preconditioning coefficients of Table 1 at one noise level σ > 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preconditioning {
    /// c_skip = σ_d²/(σ² + σ_d²).
    pub c_skip: f64,
    /// c_out = σ·σ_d/√(σ² + σ_d²).
    pub c_out: f64,
    /// c_in = 1/√(σ² + σ_d²).
    pub c_in: f64,
    /// c_noise = ¼·ln σ.
    pub c_noise: f64,
}

impl Preconditioning {
    /// The coefficients at noise level `sigma` for data of standard deviation `sigma_data`.
    pub fn new(sigma: f64, sigma_data: f64) -> Self {
        let total = sigma * sigma + sigma_data * sigma_data; // σ² + σ_d²
        Self {
            c_skip: sigma_data * sigma_data / total,
            c_out: sigma * sigma_data / total.sqrt(),
            c_in: 1.0 / total.sqrt(),
            c_noise: 0.25 * sigma.ln(),
        }
    }
}

/// EDM's loss weight λ(σ) = (σ² + σ_d²)/(σ·σ_d)² (= 1/c_out²).
pub fn loss_weight(sigma: f64, sigma_data: f64) -> f64 {
    (sigma * sigma + sigma_data * sigma_data) / (sigma * sigma_data).powi(2)
}

/// The network's time input for c_noise: t = 500 + 250·c_noise (see the module docs for why).
pub fn time_input(c_noise: f64) -> f64 {
    500.0 + 250.0 * c_noise
}

/// A `(b, 1, …, 1)` column of per-example values, to broadcast against a batch of rank `rank`.
fn column(values: &[f64], rank: usize, device: &Device) -> Result<Tensor> {
    let mut shape = vec![values.len()];
    shape.extend(std::iter::repeat_n(1, rank - 1));
    let v: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// A trained or fresh EDM.
pub struct Edm {
    cfg: EdmConfig,
    net: DenoiserNet,
    schedule: KarrasSchedule,
    device: Device,
}

impl Edm {
    /// Builds the model; variables come from `vb`.
    pub fn new(cfg: EdmConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let device = vb.device().clone();
        let net = DenoiserNet::new(&cfg.net, vb.pp("net"))?;
        let schedule = cfg.schedule()?;
        Ok(Self {
            cfg,
            net,
            schedule,
            device,
        })
    }

    /// The model's config.
    pub fn config(&self) -> &EdmConfig {
        &self.cfg
    }

    /// The sampling schedule (Karras et al. eq. 5).
    pub fn schedule(&self) -> &KarrasSchedule {
        &self.schedule
    }

    /// The levels a sampler with `steps` steps visits, noisiest first, then the clean level.
    pub fn sampling_levels(&self, steps: usize) -> Result<Vec<Level>> {
        self.schedule.sampling_levels(steps)
    }

    /// The denoiser D(x; level) = c_skip·x̃ + c_out·F(c_in·x̃, t(c_noise)) for a batch `x` at one noise level,
    /// never clipped: a smooth function of x and σ, for ODE integration. A level with α ≠ 1
    /// (x = α·x₀ + σ·n) is evaluated as x̃ = x/α at σ̃ = σ/α; at σ = 0, D(x; 0) = x (c_skip = 1, c_out = 0).
    pub fn denoise_unclipped(&self, x: &Tensor, level: &Level, cond: &Cond) -> Result<Tensor> {
        if level.sigma == 0.0 {
            return Ok(x.affine(1.0 / level.alpha, 0.0)?);
        }
        let x = x.affine(1.0 / level.alpha, 0.0)?; // x̃ = x₀ + σ̃·n
        let p = Preconditioning::new(level.sigma / level.alpha, self.cfg.sigma_data);
        let t = Tensor::full(time_input(p.c_noise) as f32, x.dim(0)?, &self.device)?; // (b,)
        let f = self.net.forward(&x.affine(p.c_in, 0.0)?, &t, cond)?; // like x
        Ok(((x * p.c_skip)? + (f * p.c_out)?)?)
    }

    /// The samplers' model call: [`Edm::denoise_unclipped`], clipped to [−1, 1] for images when the config's
    /// `clip_denoised` is set.
    pub fn denoise(&self, x: &Tensor, level: &Level, cond: &Cond) -> Result<Tensor> {
        let d = self.denoise_unclipped(x, level, cond)?;
        if self.cfg.clip_denoised && self.net.is_image() {
            Ok(d.clamp(-1f32, 1f32)?)
        } else {
            Ok(d)
        }
    }

    /// The options handed to the samplers.
    fn sampler_options(&self) -> SamplerOptions {
        SamplerOptions {
            langevin_steps: self.cfg.langevin_steps,
            langevin_eps: self.cfg.langevin_eps,
            ..SamplerOptions::default()
        }
    }
}

impl Model for Edm {
    fn name(&self) -> &str {
        "edm"
    }

    /// ln σ ~ N(P_mean, P_std²), n ~ N(0, I), x = x₀ + σ·n: mean of (F(c_in·x, t) − (x₀ − c_skip·x)/c_out)².
    fn loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        let x0 = &batch.x; // (b, c, h, w) or (b, d)
        let b = x0.dim(0)?;
        // classifier-free guidance training: the null condition with probability class_dropout
        let cond = training_cond(
            batch,
            self.cfg.net.cond_kind(),
            self.cfg.class_dropout,
            "edm",
            rng,
        )?;
        let sigmas: Vec<f64> = (0..b)
            .map(|_| (self.cfg.p_mean + self.cfg.p_std * rng.normal() as f64).exp())
            .collect();
        let pre: Vec<Preconditioning> = sigmas
            .iter()
            .map(|&s| Preconditioning::new(s, self.cfg.sigma_data))
            .collect();
        let col = |f: &dyn Fn(&Preconditioning) -> f64| -> Result<Tensor> {
            let v: Vec<f64> = pre.iter().map(f).collect();
            column(&v, x0.rank(), &self.device)
        };
        let sigma = column(&sigmas, x0.rank(), &self.device)?; // (b, 1, …)
        let (c_in, c_skip) = (col(&|p| p.c_in)?, col(&|p| p.c_skip)?);
        let inv_c_out = col(&|p| 1.0 / p.c_out)?;
        let t: Vec<f32> = pre.iter().map(|p| time_input(p.c_noise) as f32).collect();
        let t = Tensor::from_vec(t, b, &self.device)?; // (b,)
        let n = rng.randn(x0.shape(), &self.device)?;
        let x = (x0 + n.broadcast_mul(&sigma)?)?; // x₀ + σ·n
        let f = self.net.forward(&x.broadcast_mul(&c_in)?, &t, &cond)?;
        let target = (x0 - x.broadcast_mul(&c_skip)?)?.broadcast_mul(&inv_c_out)?;
        let loss = (f - target)?.sqr()?.mean_all()?;
        LossOutput::single("mse", loss)
    }

    /// Runs the sampler named in `opts.sampler` (default: the config's) for `opts.steps` steps from
    /// N(0, σ_max² I) (times `opts.temperature`).
    fn sample(&self, n: usize, opts: &SampleOptions) -> Result<Tensor> {
        pipelines::sample(self, n, opts)
    }

    fn as_denoiser(&self) -> Option<&dyn Denoiser> {
        Some(self)
    }

    fn as_density(&self) -> Option<&dyn Density> {
        Some(self)
    }
}

impl Denoiser for Edm {
    fn info(&self) -> DenoiserInfo<'_> {
        let c = &self.cfg;
        c.net
            .denoiser_info("edm", &self.device, c.clip_denoised, c.class_dropout)
    }

    fn schedule(&self) -> &dyn NoiseSchedule {
        &self.schedule
    }

    fn sampler_defaults(&self) -> SamplerDefaults {
        SamplerDefaults {
            sampler: self.cfg.sampler.clone(),
            steps: self.cfg.sample_steps,
            options: self.sampler_options(),
        }
    }

    fn x0(&self, x: &Tensor, level: &Level, cond: &Cond) -> Result<Tensor> {
        self.denoise_unclipped(x, level, cond)
    }
}

impl Density for Edm {
    fn estimators(&self) -> Vec<String> {
        vec!["ode".to_string()]
    }

    /// `ode`: the probability-flow ODE estimate of [`super::likelihood`] over `opts.steps` Heun steps (default
    /// `ode_steps`) from σ_min to σ_max, evenly in ln σ, with `opts.samples` Hutchinson probes; for discrete
    /// data, of the uniformly dequantized data plus D·ln(bin width) (an estimate of a bound on the discrete
    /// probability, comparable with DDPM's `vlb` and `ode`).
    fn log_likelihood(&self, batch: &Batch, opts: &LikelihoodOptions) -> Result<LogLikelihood> {
        ve_ode_density(
            batch,
            opts,
            "edm",
            self.cfg.net.cond_kind(),
            (self.cfg.sigma_min, self.cfg.sigma_max),
            self.cfg.ode_steps,
            &self.cfg.quantization,
            |x, l, c| self.denoise_unclipped(x, l, c),
        )
    }
}

/// Fills the data-dependent fields and checks the data fit the model.
pub fn prepare(cfg: &mut EdmConfig, data: &crate::models::DataInfo) -> Result<()> {
    cfg.net.prepare(data)?;
    cfg.quantization = Quantization::from_preprocessing(&data.preprocessing);
    cfg.validate()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Preprocessing;
    use crate::model::Condition;
    use crate::models::DataInfo;
    use crate::nn::Params;
    use candle_core::DType;
    use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

    fn tiny(cfg: EdmConfig, shape: &[usize], seed: u64) -> Result<(Edm, Params)> {
        let mut cfg = cfg;
        let data = DataInfo {
            tokenizer: None,
            caption_words: None,
            example_shape: shape.to_vec(),
            num_classes: None,
            preprocessing: Preprocessing::Identity,
        };
        prepare(&mut cfg, &data)?;
        let params = Params::new(seed, &Device::Cpu);
        let m = Edm::new(cfg, params.var_builder())?;
        Ok((m, params))
    }

    /// Makes the MLP's output layer constant: F(·) ≡ `bias` (weights 0).
    fn constant_output(params: &Params, bias: f32) -> Result<()> {
        let mut set = 0;
        for (name, v) in params.vars() {
            if name.starts_with("net.mlp.out.") {
                let fill = if name.ends_with("bias") { bias } else { 0.0 };
                v.set(&v.as_tensor().ones_like()?.affine(fill as f64, 0.0)?)?;
                set += 1;
            }
        }
        assert_eq!(set, 2, "the output layer's weight and bias");
        Ok(())
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    /// Table 1's formulas, written here in terms of r = σ/σ_d, at several σ; their values at σ = σ_d; and the
    /// time input's range for the default sampling levels.
    #[test]
    fn preconditioning_matches_table_1() {
        for sd in [0.5, 1.3] {
            for sigma in [0.002, 0.1, 0.5, 1.0, 7.0, 80.0] {
                let p = Preconditioning::new(sigma, sd);
                let r = sigma / sd;
                assert!(close(p.c_skip, 1.0 / (1.0 + r * r), 1e-12), "{sigma}");
                assert!(close(p.c_out, sd * r / (1.0 + r * r).sqrt(), 1e-12));
                assert!(close(p.c_in, 1.0 / (sd * (1.0 + r * r).sqrt()), 1e-12));
                assert!(close(p.c_noise, sigma.ln() / 4.0, 1e-12));
                assert!(close(
                    loss_weight(sigma, sd) * p.c_out * p.c_out,
                    1.0,
                    1e-12
                ));
            }
            let p = Preconditioning::new(sd, sd);
            assert!(close(p.c_skip, 0.5, 1e-15));
            assert!(close(p.c_out, sd / 2f64.sqrt(), 1e-15));
            assert!(close(p.c_in, 1.0 / (sd * 2f64.sqrt()), 1e-15));
        }
        assert_eq!(time_input(0.0), 500.0); // σ = 1
        let t = |s: f64| time_input(Preconditioning::new(s, 0.5).c_noise);
        // 500 + 62.5·ln 0.002 = 111.58, 500 + 62.5·ln 80 = 773.87
        assert!((t(0.002) - 111.58).abs() < 0.01 && (t(80.0) - 773.87).abs() < 0.01);
    }

    /// Appendix B.6: for data of standard deviation σ_d, x = x₀ + σ·n has Var(c_in·x) = 1 and the training
    /// target (x₀ − c_skip·x)/c_out has Var = 1, at every σ. The data here are ±σ_d with probability ½ (not
    /// Gaussian: only the variance matters). N = 100 000 draws per σ; a variance estimate's standard error is
    /// √((μ₄ − 1)/N) ≤ √(2/N) = 0.0045 (μ₄ ≤ 3 here), so the tolerance 0.03 is over 6 standard errors.
    #[test]
    fn input_and_target_have_unit_variance() {
        let sd = 0.5;
        let mut rng = Rng::new(11);
        const N: usize = 100_000;
        for sigma in [0.002, 0.05, 0.5, 2.0, 80.0] {
            let p = Preconditioning::new(sigma, sd);
            let (mut input, mut target) = (Vec::with_capacity(N), Vec::with_capacity(N));
            for _ in 0..N {
                let x0 = if rng.uniform() < 0.5 { -sd } else { sd };
                let x = x0 + sigma * rng.normal() as f64;
                input.push(p.c_in * x);
                target.push((x0 - p.c_skip * x) / p.c_out);
            }
            for (what, v) in [("c_in·x", &input), ("target", &target)] {
                let m = v.iter().sum::<f64>() / N as f64;
                let var = v.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / (N - 1) as f64;
                assert!((var - 1.0).abs() < 0.03, "σ = {sigma}: Var({what}) = {var}");
            }
        }
    }

    /// For x₀ ~ N(0, σ_d² I), E[x₀ | x] = σ_d²/(σ² + σ_d²)·x = c_skip·x: the ideal F is 0. With the network's
    /// output fixed at 0 the model's D must equal that posterior mean (also at a level with α ≠ 1, where
    /// E[x₀ | x = α·x₀ + σ·n] = α·σ_d²/(α²·σ_d² + σ²)·x, and at σ = 0, where D = x). Its loss is then
    /// E[target²] = 1 (the target is N(0, 1) at every σ), and with F ≡ b it is 1 + b²: the ideal F is better.
    /// The loss is a mean of 40 000 squared N(0, 1) values (standard error √(2/40000) = 0.007); tolerance 0.035.
    #[test]
    fn the_ideal_network_gives_the_posterior_mean_and_the_lowest_loss() -> Result<()> {
        let (m, params) = tiny(EdmConfig::tiny(), &[2], 1)?;
        constant_output(&params, 0.0)?;
        let sd = m.config().sigma_data;
        let x = Rng::new(2).randn((5, 2), &Device::Cpu)?.affine(3.0, 0.0)?;
        for (alpha, sigma) in [
            (1.0, 0.002),
            (1.0, 0.5),
            (1.0, 3.0),
            (1.0, 80.0),
            (0.8, 0.6),
        ] {
            let level = Level {
                alpha,
                sigma,
                t: sigma,
            };
            let d = m.denoise_unclipped(&x, &level, &Cond::None)?;
            let want = x.affine(
                alpha * sd * sd / (alpha * alpha * sd * sd + sigma * sigma),
                0.0,
            )?;
            let err = (d - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 1e-5, "α = {alpha}, σ = {sigma}: {err}");
        }
        let d0 = m.denoise_unclipped(&x, &Level::CLEAN, &Cond::None)?;
        assert_eq!(d0.to_vec2::<f32>()?, x.to_vec2::<f32>()?);
        let batch = Batch::new(
            Rng::new(3)
                .randn((20_000, 2), &Device::Cpu)?
                .affine(sd, 0.0)?,
        );
        let loss = |m: &Edm| -> Result<f64> { Ok(m.loss(&batch, &mut Rng::new(4))?.parts[0].1) };
        let ideal = loss(&m)?;
        assert!((ideal - 1.0).abs() < 0.035, "{ideal}");
        constant_output(&params, 0.3)?;
        let off = loss(&m)?;
        assert!(
            (off - 1.09).abs() < 0.035 && off > ideal,
            "{off} vs {ideal}"
        );
        Ok(())
    }

    #[test]
    fn loss_and_samples_on_vectors_with_every_sampler() -> Result<()> {
        let (m, _p) = tiny(EdmConfig::tiny(), &[2], 3)?;
        let batch = Batch::new(Rng::new(4).randn((16, 2), &Device::Cpu)?);
        let l = m.loss(&batch, &mut Rng::new(5))?.loss.to_scalar::<f32>()?;
        assert!(l.is_finite() && l > 0.0, "{l}");
        for sampler in schedulers::SAMPLERS {
            for steps in [1, 2, 5] {
                let mut o = SampleOptions::seeded(7);
                o.sampler = Some(sampler.to_string());
                o.steps = Some(steps);
                let x = m.sample(6, &o)?;
                assert_eq!(x.dims(), &[6, 2]);
                let v = x.flatten_all()?.to_vec1::<f32>()?;
                assert!(v.iter().all(|v| v.is_finite()), "{sampler} {steps}: {v:?}");
                assert_eq!(v, m.sample(6, &o)?.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        Ok(())
    }

    #[test]
    fn bad_configs_samplers_steps_and_conditions_are_errors() -> Result<()> {
        let (m, _p) = tiny(EdmConfig::tiny(), &[2], 0)?;
        let mut o = SampleOptions::seeded(0);
        o.sampler = Some("eulr".into());
        let e = m.sample(2, &o).map(|_| ()).unwrap_err().to_string();
        assert!(
            e.contains("eulr") && e.contains("heun") && e.contains("dpm++2m"),
            "{e}"
        );
        o.sampler = None;
        o.steps = Some(0);
        let e = m.sample(2, &o).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("steps"), "{e}");
        let mut o = SampleOptions::seeded(0);
        o.condition = Condition::Class(vec![1]);
        let e = m.sample(2, &o).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("'edm'") && e.contains("unconditional"), "{e}");
        assert!(m.sample(0, &SampleOptions::seeded(0)).is_err());
        for bad in [
            EdmConfig {
                sigma_data: 0.0,
                ..EdmConfig::tiny()
            },
            EdmConfig {
                sigma_min: 100.0,
                ..EdmConfig::tiny()
            },
            EdmConfig {
                sampler: "ode".into(),
                ..EdmConfig::tiny()
            },
        ] {
            assert!(tiny(bad, &[2], 0).is_err());
        }
        // a conditional model needs labels to train and a class to sample
        let mut cfg = EdmConfig::tiny();
        cfg.net.conditional = true;
        let data = DataInfo {
            tokenizer: None,
            caption_words: None,
            example_shape: vec![2],
            num_classes: Some(3),
            preprocessing: Preprocessing::Identity,
        };
        prepare(&mut cfg, &data)?;
        let p = Params::new(0, &Device::Cpu);
        let c = Edm::new(cfg, p.var_builder())?;
        assert!(c
            .loss(
                &Batch::new(Tensor::zeros((4, 2), DType::F32, &Device::Cpu)?),
                &mut Rng::new(0)
            )
            .is_err());
        let e = c
            .sample(2, &SampleOptions::seeded(0))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("class-conditional") && e.contains("0..=2"),
            "{e}"
        );
        let mut o = SampleOptions::seeded(0);
        o.condition = Condition::Class(vec![2]);
        assert_eq!(c.sample(3, &o)?.dims(), &[3, 2]);
        Ok(())
    }

    /// Training on a correlated 2-D Gaussian N(μ, Σ) and sampling with Heun's method gives samples whose mean
    /// and covariance match the data's. 50 steps, not EDM's 18: for data of standard deviation 0.55 the
    /// 18-step Heun discretisation alone (with the exact denoiser) inflates the variance by 11%, 50 steps by
    /// 1.2% (the linear ODE dx/dσ = σx/(s² + σ²) integrated with these levels). 4000 samples: the sampling
    /// error of the mean is ≈ 0.009 and of a covariance entry ≈ 0.007; the tolerances, 0.04 on the mean and
    /// 0.035 on Σ, leave the rest to the model's fit after 1500 Adam steps with a linearly decaying learning
    /// rate (about 2 s in release; over 6 initialisation seeds the largest errors were 0.02 on the mean and
    /// 0.024 on Σ).
    #[test]
    fn trained_on_a_gaussian_it_samples_its_mean_and_covariance() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = EdmConfig {
            sample_steps: 50,
            ..EdmConfig::tiny()
        };
        let (m, params) = tiny(cfg, &[2], 5)?;
        let (mu, chol) = ([0.6f32, -0.4], [[0.55f32, 0.0], [0.22, 0.4]]); // Σ = L·Lᵀ
        let sigma = [
            [chol[0][0] * chol[0][0], chol[0][0] * chol[1][0]],
            [
                chol[1][0] * chol[0][0],
                chol[1][0] * chol[1][0] + chol[1][1] * chol[1][1],
            ],
        ];
        let draw = |rng: &mut Rng, n: usize| -> Result<Tensor> {
            let z = rng.normal_vec(2 * n);
            let v: Vec<f32> = (0..n)
                .flat_map(|i| {
                    let (a, b) = (z[2 * i], z[2 * i + 1]);
                    [
                        mu[0] + chol[0][0] * a,
                        mu[1] + chol[1][0] * a + chol[1][1] * b,
                    ]
                })
                .collect();
            Ok(Tensor::from_vec(v, (n, 2), &dev)?)
        };
        let vars = params.vars().into_iter().map(|(_, v)| v).collect();
        let adam = ParamsAdamW {
            lr: 3e-3,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        };
        let mut opt = AdamW::new(vars, adam)?;
        let mut rng = Rng::new(6);
        const STEPS: usize = 1500;
        for k in 0..STEPS {
            // linear decay to 0: the last weights are an average over the noise of the late steps
            opt.set_learning_rate(3e-3 * (1.0 - k as f64 / STEPS as f64));
            let b = Batch::new(draw(&mut rng, 256)?);
            opt.backward_step(&m.loss(&b, &mut rng)?.loss)?;
        }
        let x = m
            .sample(4000, &SampleOptions::seeded(8))?
            .to_vec2::<f32>()?;
        let n = x.len() as f32;
        let mean = [0, 1].map(|j| x.iter().map(|r| r[j]).sum::<f32>() / n);
        let cov = |j: usize, k: usize| {
            x.iter()
                .map(|r| (r[j] - mean[j]) * (r[k] - mean[k]))
                .sum::<f32>()
                / (n - 1.0)
        };
        for j in 0..2 {
            assert!((mean[j] - mu[j]).abs() < 0.04, "mean {mean:?} vs {mu:?}");
            for (k, want) in sigma[j].iter().enumerate() {
                let c = cov(j, k);
                assert!((c - want).abs() < 0.035, "Σ[{j}][{k}] = {c} vs {want}");
            }
        }
        Ok(())
    }
}
