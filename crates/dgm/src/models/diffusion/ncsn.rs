//! NCSN: a noise-conditional score network trained by denoising score matching (Song & Ermon 2019,
//! "Generative modeling by estimating gradients of the data distribution", arXiv:1907.05600), with the
//! noise conditioning of Song & Ermon 2020 ("Improved techniques for training score-based generative
//! models", arXiv:2006.09011, technique 3): the score is the network's output divided by σ,
//!
//! s_θ(x, σ_i) = F(x, i)/σ_i,
//!
//! where i indexes L geometric noise levels σ_0 = σ_max > … > σ_{L−1} = σ_min ([`VeSchedule`]; the network also
//! sees i, through its sinusoidal time embedding).
//!
//! Objective (Song & Ermon 2019, eqs. 5–6, with λ(σ) = σ²): i ~ U{0, …, L−1}, z ~ N(0, I), x̃ = x + σ_i·z,
//!
//! loss = ½ · mean over examples of σ_i²·‖s_θ(x̃, σ_i) + z/σ_i‖² = ½ · mean over examples of ‖F(x̃, i) + z‖²,
//!
//! a sum over coordinates (so it grows with the data dimension). Its minimiser is the score of the noised data,
//! s_θ(x̃, σ) = ∇ log p_σ(x̃) (Vincent 2011). As a denoiser for the samplers of [`crate::schedulers`], Tweedie's
//! formula gives D(x; σ) = x + σ²·s_θ(x, σ) = E[x₀ | x] = x + σ·F(x, i); the default sampler is annealed
//! Langevin dynamics (their Algorithm 1), and every other sampler runs over the same levels.
//!
//! Defaults, for data scaled to [−1, 1] (images; the 2-D toys are smaller and only pay for unused levels):
//!
//! * σ_max = 50. Technique 1 asks for about the largest Euclidean distance between two training examples.
//!   For 28×28 images in [−1, 1] no distance exceeds 2·√784 = 56; we did not measure the data's own largest
//!   distance and take 50 (NCSNv2's CIFAR-10 value), just under the bound.
//! * σ_min = 0.01 (both papers), about the 8-bit quantisation step of [−1, 1] pixels (2/255 = 0.008): the
//!   last level leaves noise of about one grey level, and `final_denoise` removes it.
//! * L = 100 levels. Technique 2 chooses the ratio γ = σ_{i−1}/σ_i with
//!   Φ(√(2D)(γ − 1) + 3γ) − Φ(√(2D)(γ − 1) − 3γ) ≈ ½; for D = 784 that is γ = 1.082 and
//!   L = 1 + ln(5000)/ln γ = 109 (our computation; for CIFAR-10 the same rule gives 219, the paper uses 232).
//!   We take the cheaper round 100 (γ = 1.090).
//! * T = 5 Langevin steps per level and ε = 1.2·10⁻⁵: technique 4 for L = 100, T = 5, σ_min = 0.01 (the ε
//!   that brings their eq. 4's variance ratio closest to 1; the same computation for CIFAR-10 gives
//!   NCSNv2's 6.2·10⁻⁶).
//!
//! The network's time input is the level index i, as a real number for any σ: i(σ) = (L − 1)·ln(σ_max/σ) /
//! ln(σ_max/σ_min), exact at the levels and interpolated in ln σ between them (a smooth D for a likelihood
//! integrator). Sampling runs the loop of [`crate::pipelines`].

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
use crate::schedulers::{self, Level, NoiseSchedule, SamplerOptions, VeSchedule};
use crate::{Error, Result};

/// NCSN hyper-parameters (`[model]` in a run's config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NcsnConfig {
    /// The network F (UNet for images, MLP for vectors); data-dependent fields are filled by `prepare`.
    pub net: NetConfig,
    /// The largest noise level σ_0 (technique 1: about the largest distance between two examples).
    pub sigma_max: f64,
    /// The smallest noise level σ_{L−1}.
    pub sigma_min: f64,
    /// The number of noise levels L.
    pub num_levels: usize,
    /// Class-conditional models: probability of training an example with the null class instead of its
    /// label, which makes classifier-free guidance possible (Ho & Salimans 2022 use 0.1–0.2).
    pub class_dropout: f64,
    /// Clip D to the data range [−1, 1] while sampling (images only).
    pub clip_denoised: bool,
    /// Default sampler of `sample` (one of `schedulers::SAMPLERS`).
    pub sampler: String,
    /// Default number of levels a sampler visits; 0 = all of them (`num_levels`).
    pub sample_steps: usize,
    /// Langevin steps T per level (`langevin`; corrector steps of `pc`).
    pub langevin_steps: usize,
    /// Langevin step size ε of Algorithm 1 (at the last level; ε_i = ε·σ_i²/σ_L²).
    pub langevin_eps: f64,
    /// End Langevin sampling with one denoising step, x + σ_L²·s (Song & Ermon 2020, Appendix B).
    pub final_denoise: bool,
    /// How the data are quantized (filled by `prepare`); the ODE likelihood uses it.
    pub quantization: Quantization,
    /// Heun steps of the probability-flow ODE likelihood (`ode`), unless the caller asks for another number.
    pub ode_steps: usize,
}

impl Default for NcsnConfig {
    fn default() -> Self {
        Self {
            net: NetConfig::default(),
            sigma_max: 50.0,
            sigma_min: 0.01,
            num_levels: 100,
            class_dropout: 0.1,
            clip_denoised: true,
            sampler: "langevin".into(),
            sample_steps: 0,
            langevin_steps: 5,
            langevin_eps: 1.2e-5,
            final_denoise: true,
            quantization: Quantization::default(),
            ode_steps: 100,
        }
    }
}

impl NcsnConfig {
    /// A small config for tests: 10 levels from σ = 5 to 0.01 (Song & Ermon 2019's L, for data of scale ~1),
    /// 2 Langevin steps per level with their ε = 2·10⁻⁵.
    pub fn tiny() -> Self {
        Self {
            net: NetConfig::tiny(),
            sigma_max: 5.0,
            num_levels: 10,
            langevin_steps: 2,
            langevin_eps: 2e-5,
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
        if !schedulers::SAMPLERS.contains(&self.sampler.as_str()) {
            return Err(Error::unknown(
                "model.sampler",
                &self.sampler,
                schedulers::SAMPLERS,
            ));
        }
        if self.sample_steps > self.num_levels {
            return Err(Error::invalid(
                "model.sample_steps",
                format!(
                    "{} is more than the {} noise levels (0 = all levels)",
                    self.sample_steps, self.num_levels
                ),
            ));
        }
        if self.langevin_steps == 0 {
            return Err(Error::invalid("model.langevin_steps", "must be at least 1"));
        }
        if !(self.langevin_eps.is_finite() && self.langevin_eps > 0.0) {
            return Err(Error::invalid(
                "model.langevin_eps",
                format!("must be positive and finite, got {}", self.langevin_eps),
            ));
        }
        self.schedule()?;
        self.net.validate()
    }

    fn schedule(&self) -> Result<VeSchedule> {
        VeSchedule::new(self.sigma_max, self.sigma_min, self.num_levels)
    }
}

/// Tweedie's formula for variance-exploding noise: D = x + σ²·s, the posterior mean E[x₀ | x] when `score` is
/// ∇ log p_σ(x) of x = x₀ + σ·z.
pub fn tweedie(x: &Tensor, score: &Tensor, sigma: f64) -> Result<Tensor> {
    Ok((x + score.affine(sigma * sigma, 0.0)?)?)
}

/// The denoising score matching loss of a batch: ½ · mean over examples of ‖f + z‖² (summed over the
/// coordinates), for network outputs `f` = σ·s_θ(x + σ·z, σ) and the noise `z` that made the input.
pub fn dsm_loss(f: &Tensor, z: &Tensor) -> Result<Tensor> {
    let per_example = f.elem_count() / f.dim(0)?.max(1);
    Ok(((f + z)?.sqr()?.mean_all()? * (0.5 * per_example as f64))?)
}

/// A trained or fresh NCSN.
pub struct Ncsn {
    cfg: NcsnConfig,
    net: DenoiserNet,
    schedule: VeSchedule,
    device: Device,
}

impl Ncsn {
    /// Builds the model; variables come from `vb`.
    pub fn new(cfg: NcsnConfig, vb: VarBuilder) -> Result<Self> {
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
    pub fn config(&self) -> &NcsnConfig {
        &self.cfg
    }

    /// The noise levels (geometric, σ_max first).
    pub fn schedule(&self) -> &VeSchedule {
        &self.schedule
    }

    /// The levels a sampler with `steps` steps visits, noisiest first, then the clean level.
    pub fn sampling_levels(&self, steps: usize) -> Result<Vec<Level>> {
        self.schedule.sampling_levels(steps)
    }

    /// The network's time input at noise σ: the level index i(σ) = (L − 1)·ln(σ_max/σ)/ln(σ_max/σ_min),
    /// exactly i at σ_i (0 when L = 1).
    pub fn level_index(&self, sigma: f64) -> f64 {
        let l = self.schedule.num_levels();
        if l == 1 {
            return 0.0;
        }
        (l - 1) as f64 * (self.cfg.sigma_max / sigma).ln()
            / (self.cfg.sigma_max / self.cfg.sigma_min).ln()
    }

    /// The score s_θ(x, σ) = F(x, i(σ))/σ for a batch `x` at noise σ > 0 (α = 1).
    pub fn score(&self, x: &Tensor, sigma: f64, cond: &Cond) -> Result<Tensor> {
        let t = Tensor::full(self.level_index(sigma) as f32, x.dim(0)?, &self.device)?; // (b,)
        Ok(self.net.forward(x, &t, cond)?.affine(1.0 / sigma, 0.0)?)
    }

    /// The denoiser D(x; level) = x̃ + σ̃²·s_θ(x̃, σ̃), x̃ = x/α, σ̃ = σ/α, never clipped (a smooth function for
    /// ODE integration); D(x; 0) = x/α.
    pub fn denoise_unclipped(&self, x: &Tensor, level: &Level, cond: &Cond) -> Result<Tensor> {
        let x = x.affine(1.0 / level.alpha, 0.0)?;
        if level.sigma == 0.0 {
            return Ok(x);
        }
        let sigma = level.sigma / level.alpha;
        tweedie(&x, &self.score(&x, sigma, cond)?, sigma)
    }

    /// The samplers' model call: [`Ncsn::denoise_unclipped`], clipped to [−1, 1] for images when the
    /// config's `clip_denoised` is set.
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
            final_denoise: self.cfg.final_denoise,
            ..SamplerOptions::default()
        }
    }
}

impl Model for Ncsn {
    fn name(&self) -> &str {
        "ncsn"
    }

    /// i ~ U{0, …, L−1}, z ~ N(0, I), x̃ = x + σ_i·z: ½ · mean over examples of ‖F(x̃, i) + z‖².
    fn loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        let x0 = &batch.x; // (b, c, h, w) or (b, d)
        let b = x0.dim(0)?;
        // classifier-free guidance training: the null condition with probability class_dropout
        let cond = training_cond(
            batch,
            self.cfg.net.cond_kind(),
            self.cfg.class_dropout,
            "ncsn",
            rng,
        )?;
        let idx: Vec<usize> = (0..b)
            .map(|_| rng.below(self.schedule.num_levels()))
            .collect();
        let mut shape = vec![b];
        shape.extend(std::iter::repeat_n(1, x0.rank() - 1));
        let sigma: Vec<f32> = idx
            .iter()
            .map(|&i| self.schedule.sigmas()[i] as f32)
            .collect();
        let sigma = Tensor::from_vec(sigma, shape, &self.device)?; // (b, 1, …)
        let t: Vec<f32> = idx.iter().map(|&i| i as f32).collect();
        let t = Tensor::from_vec(t, b, &self.device)?; // (b,)
        let z = rng.randn(x0.shape(), &self.device)?;
        let xt = (x0 + z.broadcast_mul(&sigma)?)?; // x̃ = x + σ_i·z
        let f = self.net.forward(&xt, &t, &cond)?; // σ_i·s_θ(x̃, σ_i)
        let loss = dsm_loss(&f, &z)?;
        LossOutput::single("dsm", loss)
    }

    /// Runs the sampler named in `opts.sampler` (default: the config's, annealed Langevin dynamics) over
    /// `opts.steps` of the levels (default: the config's `sample_steps`, 0 = all), from N(0, σ_max² I) (times
    /// `opts.temperature`).
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

impl Denoiser for Ncsn {
    fn info(&self) -> DenoiserInfo<'_> {
        let c = &self.cfg;
        c.net
            .denoiser_info("ncsn", &self.device, c.clip_denoised, c.class_dropout)
    }

    fn schedule(&self) -> &dyn NoiseSchedule {
        &self.schedule
    }

    fn sampler_defaults(&self) -> SamplerDefaults {
        SamplerDefaults {
            sampler: self.cfg.sampler.clone(),
            steps: match self.cfg.sample_steps {
                0 => self.cfg.num_levels,
                s => s,
            },
            options: self.sampler_options(),
        }
    }

    fn x0(&self, x: &Tensor, level: &Level, cond: &Cond) -> Result<Tensor> {
        self.denoise_unclipped(x, level, cond)
    }
}

impl Density for Ncsn {
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
            "ncsn",
            self.cfg.net.cond_kind(),
            (self.cfg.sigma_min, self.cfg.sigma_max),
            self.cfg.ode_steps,
            &self.cfg.quantization,
            |x, l, c| self.denoise_unclipped(x, l, c),
        )
    }
}

/// Fills the data-dependent fields and checks the data fit the model.
pub fn prepare(cfg: &mut NcsnConfig, data: &crate::models::DataInfo) -> Result<()> {
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

    fn tiny(cfg: NcsnConfig, shape: &[usize], seed: u64) -> Result<(Ncsn, Params)> {
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
        let m = Ncsn::new(cfg, params.var_builder())?;
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

    /// Gaussian data x₀ ~ N(μ, s² I) noised to x = x₀ + σ·z have the score −(x − μ)/(s² + σ²); Tweedie's
    /// D = x + σ²·s must be the posterior mean, computed here by precision weighting:
    /// E[x₀ | x] = (x/σ² + μ/s²)/(1/σ² + 1/s²).
    #[test]
    fn tweedie_with_the_true_score_is_the_posterior_mean() -> Result<()> {
        let (mu, s) = (0.7f64, 0.4f64);
        let x = Rng::new(1).randn((6, 3), &Device::Cpu)?.affine(2.0, 0.0)?;
        for sigma in [0.01, 0.3, 1.0, 20.0] {
            let score = x.affine(-1.0 / (s * s + sigma * sigma), mu / (s * s + sigma * sigma))?;
            let d = tweedie(&x, &score, sigma)?;
            let w = 1.0 / (1.0 / (sigma * sigma) + 1.0 / (s * s));
            let want = x.affine(w / (sigma * sigma), w * mu / (s * s))?;
            let err = (d - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 1e-5, "σ = {sigma}: {err}");
        }
        Ok(())
    }

    /// The model's D and loss through the network, with F fixed at a constant b: D = x/α + (σ/α)·b (the score
    /// is b/σ), and E[loss] = ½·Σ_d E[(b + z_d)²] = ½·d·(1 + b²) = 1 + b² for d = 2. The loss is a mean over
    /// 20 000 examples of ½‖b + z‖² (standard deviation ≤ 1.3 for b ≤ 0.5), standard error ≤ 0.01; tolerance 0.05.
    #[test]
    fn denoiser_and_loss_through_the_network() -> Result<()> {
        let (m, params) = tiny(NcsnConfig::tiny(), &[2], 2)?;
        let x = Rng::new(3).randn((4, 2), &Device::Cpu)?;
        let batch = Batch::new(Rng::new(4).randn((20_000, 2), &Device::Cpu)?);
        for b in [0.0f32, 0.5] {
            constant_output(&params, b)?;
            for (alpha, sigma) in [(1.0, 0.01), (1.0, 0.7), (1.0, 5.0), (0.5, 2.0)] {
                let level = Level {
                    alpha,
                    sigma,
                    t: 0.0,
                };
                let d = m.denoise_unclipped(&x, &level, &Cond::None)?;
                let want = x.affine(1.0 / alpha, sigma / alpha * b as f64)?;
                let err = (d - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(err < 1e-5, "b = {b}, α = {alpha}, σ = {sigma}: {err}");
            }
            let l = m.loss(&batch, &mut Rng::new(5))?.parts[0].1;
            let want = 1.0 + (b * b) as f64;
            assert!(
                (l - want).abs() < 0.05,
                "b = {b}: loss {l}, expected {want}"
            );
        }
        // the time input is the level index at the levels, and interpolates in ln σ between them
        for i in 0..10 {
            let sigma = m.schedule().sigmas()[i];
            assert!((m.level_index(sigma) - i as f64).abs() < 1e-9);
        }
        let mid = (m.schedule().sigmas()[3] * m.schedule().sigmas()[4]).sqrt();
        assert!((m.level_index(mid) - 3.5).abs() < 1e-9);
        Ok(())
    }

    /// The DSM loss is minimised by the true score (Vincent 2011). For x₀ ~ N(μ, s² I) in d = 2 dimensions the
    /// oracle output F = σ·∇ log p_σ(x̃) = −σ(x̃ − μ)/(s² + σ²) makes F + z ~ N(0, s²/(s² + σ²)·I), so the
    /// expected loss is ½·d·s²/(s² + σ²) at every level; every perturbation δ of F adds ½·E‖δ‖². With
    /// N = 20 000 examples per level the oracle loss has relative standard error 1/√N = 0.7%; tolerance 4%.
    #[test]
    fn the_true_score_minimises_the_dsm_loss() -> Result<()> {
        let dev = Device::Cpu;
        let (mu, s) = (0.5f64, 0.3f64);
        let mut rng = Rng::new(6);
        const N: usize = 20_000;
        for sigma in VeSchedule::new(5.0, 0.01, 6)?.sigmas().to_vec() {
            let x0 = rng.randn((N, 2), &dev)?.affine(s, mu)?;
            let z = rng.randn((N, 2), &dev)?;
            let xt = (&x0 + z.affine(sigma, 0.0)?)?;
            let v = s * s + sigma * sigma;
            let oracle = xt.affine(-sigma / v, sigma * mu / v)?;
            let loss = |f: &Tensor| -> Result<f64> {
                Ok(dsm_loss(f, &z)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
            };
            let best = loss(&oracle)?;
            let want = s * s / v; // ½·d·s²/(s² + σ²), d = 2
            assert!(
                (best - want).abs() < 0.04 * want,
                "σ = {sigma}: {best} vs {want}"
            );
            for (what, f) in [
                ("F + 0.1", oracle.affine(1.0, 0.1)?),
                ("1.2·F", oracle.affine(1.2, 0.0)?),
                ("0.8·F", oracle.affine(0.8, 0.0)?),
                ("0", oracle.zeros_like()?),
            ] {
                let l = loss(&f)?;
                assert!(l > best, "σ = {sigma}: {what} gives {l} ≤ {best}");
            }
            // the shift adds exactly ½·d·0.1² = 0.01 in expectation
            let shifted = loss(&oracle.affine(1.0, 0.1)?)? - best;
            assert!((shifted - 0.01).abs() < 0.003, "σ = {sigma}: {shifted}");
        }
        Ok(())
    }

    #[test]
    fn loss_and_samples_on_vectors_with_every_sampler() -> Result<()> {
        let (m, _p) = tiny(NcsnConfig::tiny(), &[2], 3)?;
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
        // the default: annealed Langevin over every level
        let x = m.sample(3, &SampleOptions::seeded(1))?.to_vec2::<f32>()?;
        assert!(x.iter().flatten().all(|v| v.is_finite()));
        Ok(())
    }

    #[test]
    fn bad_configs_samplers_steps_and_conditions_are_errors() -> Result<()> {
        let (m, _p) = tiny(NcsnConfig::tiny(), &[2], 0)?;
        let mut o = SampleOptions::seeded(0);
        o.sampler = Some("eulr".into());
        let e = m.sample(2, &o).map(|_| ()).unwrap_err().to_string();
        assert!(
            e.contains("eulr") && e.contains("langevin") && e.contains("pc"),
            "{e}"
        );
        o.sampler = None;
        for steps in [0, 11] {
            o.steps = Some(steps);
            let e = m.sample(2, &o).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains("steps") && e.contains(&steps.to_string()), "{e}");
        }
        let mut o = SampleOptions::seeded(0);
        o.condition = Condition::Class(vec![1]);
        let e = m.sample(2, &o).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("'ncsn'") && e.contains("unconditional"), "{e}");
        for bad in [
            NcsnConfig {
                sigma_min: 10.0,
                ..NcsnConfig::tiny()
            },
            NcsnConfig {
                num_levels: 0,
                ..NcsnConfig::tiny()
            },
            NcsnConfig {
                sample_steps: 11,
                ..NcsnConfig::tiny()
            },
            NcsnConfig {
                langevin_eps: 0.0,
                ..NcsnConfig::tiny()
            },
            NcsnConfig {
                sampler: "ode".into(),
                ..NcsnConfig::tiny()
            },
        ] {
            assert!(tiny(bad, &[2], 0).is_err());
        }
        Ok(())
    }

    type M2 = [[f64; 2]; 2];

    fn mul(a: &M2, b: &M2) -> M2 {
        [0, 1].map(|i| [0, 1].map(|j| a[i][0] * b[0][j] + a[i][1] * b[1][j]))
    }

    fn transpose(a: &M2) -> M2 {
        [[a[0][0], a[1][0]], [a[0][1], a[1][1]]]
    }

    /// `s·a + d·I`.
    fn affine(a: &M2, s: f64, d: f64) -> M2 {
        [
            [s * a[0][0] + d, s * a[0][1]],
            [s * a[1][0], s * a[1][1] + d],
        ]
    }

    fn inverse(a: &M2) -> M2 {
        let det = a[0][0] * a[1][1] - a[0][1] * a[1][0];
        [
            [a[1][1] / det, -a[0][1] / det],
            [-a[1][0] / det, a[0][0] / det],
        ]
    }

    fn apply(a: &M2, v: [f64; 2]) -> [f64; 2] {
        [0, 1].map(|i| a[i][0] * v[0] + a[i][1] * v[1])
    }

    /// Training on a correlated 2-D Gaussian N(μ, Σ) and sampling with annealed Langevin dynamics
    /// (L = 20 levels from 5 to 0.01, T = 10 steps per level, ε = 10⁻⁴). Langevin dynamics with finitely many
    /// steps does not reach N(μ, Σ): once σ_i is small, its steps ε_i = ε·σ_i²/σ_L² are tiny next to Σ and the
    /// chain freezes. With the exact score −(Σ + σ_i² I)⁻¹(x − μ) every step is linear, so the mean and the
    /// covariance of the samples follow exactly from m ← μ + A(m − μ), C ← A·C·Aᵀ + ε_i·I with
    /// A = I − (ε_i/2)(Σ + σ_i² I)⁻¹, from m = 0, C = σ_max² I, and the final denoising step
    /// B = I − σ_L²(Σ + σ_L² I)⁻¹ (about 1.09·Σ here). The trained model's samples must match that prediction:
    /// 4000 samples (sampling error of a covariance entry ≈ 0.007); tolerances 0.04 on the mean, 0.035 on C.
    #[test]
    fn trained_on_a_gaussian_langevin_samples_the_predicted_moments() -> Result<()> {
        use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
        let dev = Device::Cpu;
        let cfg = NcsnConfig {
            num_levels: 20,
            langevin_steps: 10,
            langevin_eps: 1e-4,
            ..NcsnConfig::tiny()
        };
        let (m, params) = tiny(cfg, &[2], 5)?;
        let (mu, chol) = ([0.6f32, -0.4], [[0.55f32, 0.0], [0.22, 0.4]]); // Σ = L·Lᵀ
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
        // the prediction for the exact score
        let l = chol.map(|r| r.map(|v| v as f64));
        let (mu64, cov_data) = (mu.map(|v| v as f64), mul(&l, &transpose(&l)));
        let (mut mean, mut cov) = ([0.0; 2], affine(&cov_data, 0.0, 25.0));
        let sigmas = m.schedule().sigmas().to_vec();
        let last = sigmas[sigmas.len() - 1];
        for s in &sigmas {
            let e = 1e-4 * (s / last).powi(2);
            let a = affine(&inverse(&affine(&cov_data, 1.0, s * s)), -e / 2.0, 1.0);
            for _ in 0..10 {
                let d = apply(&a, [mean[0] - mu64[0], mean[1] - mu64[1]]);
                mean = [mu64[0] + d[0], mu64[1] + d[1]];
                cov = affine(&mul(&mul(&a, &cov), &transpose(&a)), 1.0, e);
            }
        }
        let b = affine(
            &inverse(&affine(&cov_data, 1.0, last * last)),
            -last * last,
            1.0,
        );
        let d = apply(&b, [mean[0] - mu64[0], mean[1] - mu64[1]]);
        let mean = [mu64[0] + d[0], mu64[1] + d[1]];
        let cov = mul(&mul(&b, &cov), &transpose(&b));
        // train, then sample
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
            opt.set_learning_rate(3e-3 * (1.0 - k as f64 / STEPS as f64));
            let b = Batch::new(draw(&mut rng, 256)?);
            opt.backward_step(&m.loss(&b, &mut rng)?.loss)?;
        }
        let x = m
            .sample(4000, &SampleOptions::seeded(8))?
            .to_vec2::<f32>()?;
        let n = x.len() as f64;
        let got = [0, 1].map(|j| x.iter().map(|r| r[j] as f64).sum::<f64>() / n);
        let got_cov = |j: usize, k: usize| {
            x.iter()
                .map(|r| (r[j] as f64 - got[j]) * (r[k] as f64 - got[k]))
                .sum::<f64>()
                / (n - 1.0)
        };
        for j in 0..2 {
            assert!((got[j] - mean[j]).abs() < 0.04, "mean {got:?} vs {mean:?}");
            for (k, want) in cov[j].iter().enumerate() {
                let c = got_cov(j, k);
                assert!((c - want).abs() < 0.035, "C[{j}][{k}] = {c} vs {want}");
            }
        }
        Ok(())
    }
}
