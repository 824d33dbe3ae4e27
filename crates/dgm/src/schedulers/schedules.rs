//! The three noise-schedule families: which noise levels a model is trained on, and which of them a sampler
//! visits for a given number of steps. All arithmetic is in f64.
//!
//! * [`VpSchedule`] — variance preserving, discrete (DDPM; Ho, Jain & Abbeel 2020, arXiv:2006.11239).
//!   T steps with variances β_k; ᾱ_k = Π_{j≤k} (1 − β_j) and the level of step k is
//!   α = √ᾱ_k, σ = √(1 − ᾱ_k), t = k (α² + σ² = 1). Two β schedules:
//!   - `linear` (Ho et al. 2020, §4): β evenly spaced from 1e-4 to 0.02 for T = 1000. For other T both ends
//!     are multiplied by 1000/T (the convention of Nichol & Dhariwal's released code), so that ᾱ_{T−1} stays
//!     ≈ 4·10⁻⁵ and pure noise remains a good prior; β is clipped at 0.999 (reached only for T ≤ 20).
//!   - `cosine` (Nichol & Dhariwal 2021, "Improved DDPM", arXiv:2102.09672, eq. 17):
//!     ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2), s = 0.008, with
//!     β_t = min(1 − ᾱ(t)/ᾱ(t−1), 0.999). The paper's t runs over 1..=T; our index is k = t − 1, so
//!     β_k = min(1 − f(k+1)/f(k), 0.999) and ᾱ_k = Π_{j≤k} (1 − β_j), which equals f(k+1)/f(0) wherever no
//!     clipping happened (every k < T − 1; the last β, 1 − f(T)/f(T−1) = 1, is clipped). Everything is
//!     floating-point: t/T is never an integer division.
//!
//!   Sampling with S ≤ T steps visits the "trailing" indices of Lin et al. 2024 ("Common diffusion noise
//!   schedules and sample steps are flawed", arXiv:2305.08891, Table 2): k_j = round(T·(S − j)/S) − 1 for
//!   j = 0..S, i.e. T−1, T−1−T/S, …, T/S − 1, then the clean level. The first level is always the noisiest
//!   one (T − 1), which matches the N(0, I) prior, and the clean level plays index −1, so all S intervals
//!   have the same length T/S; S = T visits every index.
//!
//! * [`VeSchedule`] — variance exploding, discrete (NCSN; Song & Ermon 2019, "Generative modeling by
//!   estimating gradients of the data distribution", arXiv:1907.05600): L geometric levels
//!   σ_i = σ_max·(σ_min/σ_max)^{i/(L−1)}, i = 0..L (noisiest first, as the paper's σ_1 > … > σ_L), α = 1,
//!   t = i (the index of the level the network is conditioned on). The defaults follow NCSNv2 (Song & Ermon
//!   2020, "Improved techniques for training score-based generative models", arXiv:2006.09011) for data in
//!   [0, 1]: σ_max = 50 (technique 1: about the largest pairwise distance of the data, their CIFAR-10 value),
//!   σ_min = 0.01 and L = 232 (technique 2, CIFAR-10). [`VeSchedule::ncsn_v1`] gives the 2019 setting
//!   (σ 1 → 0.01, L = 10). Sampling with S ≤ L steps visits the indices round(i·(L−1)/(S−1)), i = 0..S
//!   (both ends included; S = 1 visits the noisiest level only), then the clean level.
//!
//! * [`KarrasSchedule`] — continuous σ (EDM; Karras, Aittala, Aila & Laine 2022, "Elucidating the design
//!   space of diffusion-based generative models", arXiv:2206.00364, eq. 5): for N steps
//!   σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i = 0..N, then σ_N = 0 (clean); α = 1 and
//!   t = σ. Defaults σ_min = 0.002, σ_max = 80, ρ = 7 (their Table 1). N = 1 gives σ_max alone.

use crate::schedulers::{Level, NoiseSchedule};
use crate::{Error, Result};

/// Names accepted by [`VpSchedule::new`].
pub const VP_SCHEDULES: &[&str] = &["linear", "cosine"];

/// Ho et al.'s first β of the linear schedule (for T = 1000).
pub const LINEAR_BETA_START: f64 = 1e-4;
/// Ho et al.'s last β of the linear schedule (for T = 1000).
pub const LINEAR_BETA_END: f64 = 0.02;
/// The offset s of the cosine schedule (Nichol & Dhariwal 2021, §3.2).
pub const COSINE_OFFSET: f64 = 0.008;
/// The largest β of any VP schedule (Nichol & Dhariwal 2021 clip the cosine schedule's β here).
pub const MAX_BETA: f64 = 0.999;

/// Discrete variance-preserving schedule (DDPM): T steps with variances β_k, see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct VpSchedule {
    kind: &'static str,
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
}

impl VpSchedule {
    /// The schedule `kind` (one of [`VP_SCHEDULES`]) with `num_steps` = T ≥ 1 steps.
    pub fn new(kind: &str, num_steps: usize) -> Result<Self> {
        match kind {
            "linear" => Self::linear(num_steps),
            "cosine" => Self::cosine(num_steps),
            other => Err(Error::unknown("noise schedule", other, VP_SCHEDULES)),
        }
    }

    /// Ho et al.'s linear schedule, β from 1e-4 to 0.02 for T = 1000 (both scaled by 1000/T for other T,
    /// clipped at [`MAX_BETA`]).
    pub fn linear(num_steps: usize) -> Result<Self> {
        check_steps(num_steps)?;
        let scale = 1000.0 / num_steps as f64;
        let (b0, b1) = (scale * LINEAR_BETA_START, scale * LINEAR_BETA_END);
        let betas = linspace(b0, b1, num_steps)
            .into_iter()
            .map(|b| b.min(MAX_BETA))
            .collect();
        Self::from_betas_named("linear", betas)
    }

    /// β evenly spaced from `beta_start` to `beta_end` over `num_steps` steps (no rescaling).
    pub fn linear_range(num_steps: usize, beta_start: f64, beta_end: f64) -> Result<Self> {
        check_steps(num_steps)?;
        Self::from_betas_named("linear", linspace(beta_start, beta_end, num_steps))
    }

    /// Nichol & Dhariwal's cosine schedule with T = `num_steps` (eq. 17, s = 0.008, β ≤ 0.999).
    pub fn cosine(num_steps: usize) -> Result<Self> {
        check_steps(num_steps)?;
        let t_max = num_steps as f64;
        let f = |t: f64| {
            let c = ((t / t_max + COSINE_OFFSET) / (1.0 + COSINE_OFFSET)
                * std::f64::consts::FRAC_PI_2)
                .cos();
            c * c
        };
        let betas = (0..num_steps)
            .map(|k| (1.0 - f(k as f64 + 1.0) / f(k as f64)).min(MAX_BETA))
            .collect();
        Self::from_betas_named("cosine", betas)
    }

    /// A schedule from explicit variances β_k ∈ (0, 1), k = 0..T.
    pub fn from_betas(betas: Vec<f64>) -> Result<Self> {
        check_steps(betas.len())?;
        Self::from_betas_named("custom", betas)
    }

    fn from_betas_named(kind: &'static str, betas: Vec<f64>) -> Result<Self> {
        if let Some((k, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(b.is_finite() && **b > 0.0 && **b < 1.0))
        {
            return Err(Error::invalid(
                "noise schedule",
                format!("beta_{k} = {b} must lie in (0, 1) ({kind} schedule)"),
            ));
        }
        let mut prod = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                prod *= 1.0 - b;
                prod
            })
            .collect();
        Ok(Self {
            kind,
            betas,
            alphas_cumprod,
        })
    }

    /// The number of diffusion steps T.
    pub fn num_steps(&self) -> usize {
        self.betas.len()
    }

    /// The variances β_k, k = 0..T.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// ᾱ_k = Π_{j≤k} (1 − β_j), k = 0..T.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// The level of step k: α = √ᾱ_k, σ = √(1 − ᾱ_k), t = k. An index past the end is clamped to T − 1.
    pub fn level(&self, k: usize) -> Level {
        let k = k.min(self.num_steps() - 1);
        let ab = self.alphas_cumprod[k];
        Level {
            alpha: ab.sqrt(),
            sigma: (1.0 - ab).sqrt(),
            t: k as f64,
        }
    }

    /// The step indices visited with `steps` sampling steps (the trailing spacing, see the module docs),
    /// noisiest first.
    pub fn sampling_indices(&self, steps: usize) -> Result<Vec<usize>> {
        let t_max = self.num_steps();
        check_sampling_steps(steps, t_max, "diffusion steps T")?;
        Ok((0..steps)
            .map(|j| ((t_max * (steps - j)) as f64 / steps as f64).round() as usize - 1)
            .collect())
    }
}

impl NoiseSchedule for VpSchedule {
    fn name(&self) -> &str {
        self.kind
    }

    fn sampling_levels(&self, steps: usize) -> Result<Vec<Level>> {
        let mut levels: Vec<Level> = self
            .sampling_indices(steps)?
            .into_iter()
            .map(|k| self.level(k))
            .collect();
        levels.push(Level::CLEAN);
        Ok(levels)
    }
}

/// Discrete variance-exploding schedule (NCSN): L geometric noise levels, see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct VeSchedule {
    sigmas: Vec<f64>,
}

impl VeSchedule {
    /// NCSNv2's largest σ (CIFAR-10, data in [0, 1]).
    pub const DEFAULT_SIGMA_MAX: f64 = 50.0;
    /// NCSN's smallest σ (data in [0, 1]).
    pub const DEFAULT_SIGMA_MIN: f64 = 0.01;
    /// NCSNv2's number of levels for CIFAR-10.
    pub const DEFAULT_NUM_LEVELS: usize = 232;

    /// `num_levels` = L geometric levels from `sigma_max` down to `sigma_min` (L = 1: σ_max alone).
    pub fn new(sigma_max: f64, sigma_min: f64, num_levels: usize) -> Result<Self> {
        check_sigma_range(sigma_min, sigma_max)?;
        if num_levels == 0 {
            return Err(Error::invalid(
                "noise schedule",
                "the number of noise levels must be at least 1, got 0",
            ));
        }
        Ok(Self::geometric_unchecked(sigma_max, sigma_min, num_levels))
    }

    /// Song & Ermon 2019's setting: 10 levels from σ = 1 to 0.01.
    pub fn ncsn_v1() -> Self {
        Self::geometric_unchecked(1.0, 0.01, 10)
    }

    /// Geometric levels; the caller has checked 0 < σ_min < σ_max and L ≥ 1.
    fn geometric_unchecked(sigma_max: f64, sigma_min: f64, l: usize) -> Self {
        let ratio = (sigma_min / sigma_max).ln();
        let sigmas = (0..l)
            .map(|i| match i {
                0 => sigma_max,
                i if i == l - 1 => sigma_min,
                i => sigma_max * (ratio * i as f64 / (l - 1) as f64).exp(),
            })
            .collect();
        Self { sigmas }
    }

    /// The noise levels σ_i, i = 0..L, largest first.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// The number of levels L.
    pub fn num_levels(&self) -> usize {
        self.sigmas.len()
    }

    /// The level of index i: α = 1, σ = σ_i, t = i. An index past the end is clamped to L − 1.
    pub fn level(&self, i: usize) -> Level {
        let i = i.min(self.num_levels() - 1);
        Level {
            alpha: 1.0,
            sigma: self.sigmas[i],
            t: i as f64,
        }
    }

    /// The level indices visited with `steps` sampling steps, round(j·(L−1)/(S−1)), noisiest first.
    pub fn sampling_indices(&self, steps: usize) -> Result<Vec<usize>> {
        let l = self.num_levels();
        check_sampling_steps(steps, l, "noise levels L")?;
        if steps == 1 {
            return Ok(vec![0]);
        }
        Ok((0..steps)
            .map(|j| ((j * (l - 1)) as f64 / (steps - 1) as f64).round() as usize)
            .collect())
    }
}

impl Default for VeSchedule {
    fn default() -> Self {
        Self::geometric_unchecked(
            Self::DEFAULT_SIGMA_MAX,
            Self::DEFAULT_SIGMA_MIN,
            Self::DEFAULT_NUM_LEVELS,
        )
    }
}

impl NoiseSchedule for VeSchedule {
    fn name(&self) -> &str {
        "geometric"
    }

    fn sampling_levels(&self, steps: usize) -> Result<Vec<Level>> {
        let mut levels: Vec<Level> = self
            .sampling_indices(steps)?
            .into_iter()
            .map(|i| self.level(i))
            .collect();
        levels.push(Level::CLEAN);
        Ok(levels)
    }
}

/// Continuous σ schedule of EDM (Karras et al. 2022, eq. 5), see the module docs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KarrasSchedule {
    sigma_min: f64,
    sigma_max: f64,
    rho: f64,
}

impl KarrasSchedule {
    /// EDM's σ_min.
    pub const DEFAULT_SIGMA_MIN: f64 = 0.002;
    /// EDM's σ_max.
    pub const DEFAULT_SIGMA_MAX: f64 = 80.0;
    /// EDM's ρ.
    pub const DEFAULT_RHO: f64 = 7.0;
    /// The most steps [`NoiseSchedule::sampling_levels`] accepts (a sanity limit: σ is continuous).
    pub const MAX_STEPS: usize = 100_000;

    /// The schedule with 0 < `sigma_min` < `sigma_max` and `rho` > 0.
    pub fn new(sigma_min: f64, sigma_max: f64, rho: f64) -> Result<Self> {
        check_sigma_range(sigma_min, sigma_max)?;
        if !(rho.is_finite() && rho > 0.0) {
            return Err(Error::invalid(
                "noise schedule",
                format!("rho must be positive and finite, got {rho}"),
            ));
        }
        Ok(Self {
            sigma_min,
            sigma_max,
            rho,
        })
    }

    /// σ_min.
    pub fn sigma_min(&self) -> f64 {
        self.sigma_min
    }

    /// σ_max.
    pub fn sigma_max(&self) -> f64 {
        self.sigma_max
    }

    /// ρ.
    pub fn rho(&self) -> f64 {
        self.rho
    }

    /// The level of noise σ: α = 1, σ, t = σ.
    pub fn level(&self, sigma: f64) -> Level {
        Level {
            alpha: 1.0,
            sigma,
            t: sigma,
        }
    }

    /// Eq. 5's σ_0 = σ_max > … > σ_{N−1} = σ_min for N = `steps` (without the final 0).
    pub fn sigmas(&self, steps: usize) -> Result<Vec<f64>> {
        check_sampling_steps(steps, Self::MAX_STEPS, "steps of the Karras schedule")?;
        let (a, b) = (
            self.sigma_max.powf(1.0 / self.rho),
            self.sigma_min.powf(1.0 / self.rho),
        );
        Ok((0..steps)
            .map(|i| match i {
                0 => self.sigma_max,
                i if i == steps - 1 => self.sigma_min,
                i => (a + i as f64 / (steps - 1) as f64 * (b - a)).powf(self.rho),
            })
            .collect())
    }
}

impl Default for KarrasSchedule {
    fn default() -> Self {
        Self {
            sigma_min: Self::DEFAULT_SIGMA_MIN,
            sigma_max: Self::DEFAULT_SIGMA_MAX,
            rho: Self::DEFAULT_RHO,
        }
    }
}

impl NoiseSchedule for KarrasSchedule {
    fn name(&self) -> &str {
        "karras"
    }

    fn sampling_levels(&self, steps: usize) -> Result<Vec<Level>> {
        let mut levels: Vec<Level> = self
            .sigmas(steps)?
            .into_iter()
            .map(|s| self.level(s))
            .collect();
        levels.push(Level::CLEAN);
        Ok(levels)
    }
}

/// Checks the σ range of a variance-exploding schedule: finite, 0 < σ_min < σ_max.
pub fn check_sigma_range(sigma_min: f64, sigma_max: f64) -> Result<()> {
    if !(sigma_min.is_finite() && sigma_max.is_finite() && sigma_min > 0.0 && sigma_max > sigma_min)
    {
        return Err(Error::invalid(
            "noise schedule",
            format!("need 0 < sigma_min < sigma_max, got sigma_min = {sigma_min}, sigma_max = {sigma_max}"),
        ));
    }
    Ok(())
}

fn check_steps(num_steps: usize) -> Result<()> {
    if num_steps == 0 {
        return Err(Error::invalid(
            "noise schedule",
            "the number of diffusion steps T must be at least 1, got 0",
        ));
    }
    Ok(())
}

fn check_sampling_steps(steps: usize, max: usize, what: &str) -> Result<()> {
    if steps == 0 || steps > max {
        return Err(Error::invalid(
            "steps",
            format!("the number of sampling steps must be between 1 and the {what} ({max}), got {steps}"),
        ));
    }
    Ok(())
}

/// `n` values evenly spaced from `a` to `b` inclusive (n = 1: `a`).
fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![a],
        _ => (0..n)
            .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs()
    }

    #[test]
    fn linear_schedule_matches_ho_et_al() -> Result<()> {
        let s = VpSchedule::new("linear", 1000)?;
        assert_eq!(s.num_steps(), 1000);
        assert_eq!(s.betas()[0], 1e-4);
        assert!((s.betas()[999] - 0.02).abs() < 1e-15);
        // β_k = 1e-4 + k·(0.02 − 1e-4)/999: the middle one by hand
        assert!((s.betas()[500] - (1e-4 + 500.0 * 0.0199 / 999.0)).abs() < 1e-15);
        assert_eq!(s.alphas_cumprod()[0], 1.0 - 1e-4);
        // ᾱ_{T−1} through an independent sum of logs: exp(Σ ln(1 − β_k)) = 4.0358e-5 (also computed with
        // numpy's cumprod: 4.0358297653756754e-05)
        let log_sum: f64 = (0..1000)
            .map(|k| (-(1e-4 + 0.0199 * k as f64 / 999.0)).ln_1p())
            .sum();
        let ab = s.alphas_cumprod()[999];
        assert!(rel(ab, log_sum.exp()) < 1e-10, "{ab}");
        assert!(rel(ab, 4.035_829_765e-5) < 1e-8, "{ab}");
        // T = 100 rescales both ends by 10
        let s100 = VpSchedule::linear(100)?;
        assert!((s100.betas()[0] - 1e-3).abs() < 1e-15 && (s100.betas()[99] - 0.2).abs() < 1e-15);
        Ok(())
    }

    #[test]
    fn cosine_schedule_matches_eq_17() -> Result<()> {
        let t_max = 1000.0;
        let f = |t: f64| ((t / t_max + 0.008) / 1.008 * PI / 2.0).cos().powi(2);
        let s = VpSchedule::cosine(1000)?;
        // index convention: ᾱ_k = f(k + 1)/f(0) (the paper's t = k + 1), for each k before the clipped last
        for k in [0usize, 1, 10, 250, 500, 900, 998] {
            let want = f(k as f64 + 1.0) / f(0.0);
            assert!(rel(s.alphas_cumprod()[k], want) < 1e-11, "k = {k}");
        }
        // f(T) = cos²(π/2) = 0, so β_{T−1} = 1 is clipped to 0.999 and ᾱ_{T−1} = 0.001·ᾱ_{T−2}
        assert_eq!(s.betas()[999], 0.999);
        assert!(rel(s.alphas_cumprod()[999], 0.001 * f(999.0) / f(0.0)) < 1e-10);
        // ᾱ_{T−2} = cos²(π/2 · 1.007/1.008)/f(0) ≈ 2.4288e-6 (Python, float64)
        assert!(rel(s.alphas_cumprod()[998], 2.428_766_907e-6) < 1e-8);
        // a non-multiple T: t/T must be a real division (integer division would make f constant)
        let s7 = VpSchedule::cosine(7)?;
        let f7 = |t: f64| ((t / 7.0 + 0.008) / 1.008 * PI / 2.0).cos().powi(2);
        assert!(rel(s7.alphas_cumprod()[2], f7(3.0) / f7(0.0)) < 1e-12);
        Ok(())
    }

    #[test]
    fn vp_levels_and_trailing_indices() -> Result<()> {
        let s = VpSchedule::linear(1000)?;
        for k in [0, 17, 999] {
            let l = s.level(k);
            assert!((l.alpha * l.alpha + l.sigma * l.sigma - 1.0).abs() < 1e-14);
            assert!((l.alpha - s.alphas_cumprod()[k].sqrt()).abs() < 1e-15);
            assert_eq!(l.t, k as f64);
        }
        let idx = s.sampling_indices(10)?;
        assert_eq!(idx, vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
        // T = 10, S = 3: round(10·3/3) − 1 = 9, round(6.67) − 1 = 6, round(3.33) − 1 = 2
        assert_eq!(VpSchedule::linear(10)?.sampling_indices(3)?, vec![9, 6, 2]);
        assert_eq!(s.sampling_indices(1)?, vec![999]);
        let all = s.sampling_indices(1000)?;
        assert_eq!(all, (0..1000).rev().collect::<Vec<_>>());
        let lv = s.sampling_levels(10)?;
        assert_eq!(lv.len(), 11);
        assert_eq!(lv[0], s.level(999));
        assert_eq!(lv[10], Level::CLEAN);
        assert!(s.sampling_levels(0).is_err());
        let e = s.sampling_levels(1001).unwrap_err().to_string();
        assert!(e.contains("1001") && e.contains("1000"), "{e}");
        assert!(VpSchedule::new("quadratic", 10).is_err());
        assert!(VpSchedule::new("linear", 0).is_err());
        assert!(VpSchedule::from_betas(vec![0.1, 1.0]).is_err());
        Ok(())
    }

    #[test]
    fn ve_schedule_is_geometric() -> Result<()> {
        let s = VeSchedule::new(50.0, 0.01, 232)?;
        let sig = s.sigmas();
        assert_eq!((sig[0], sig[231]), (50.0, 0.01));
        let r = (0.01f64 / 50.0).powf(1.0 / 231.0);
        for w in sig.windows(2) {
            assert!(rel(w[1] / w[0], r) < 1e-12);
        }
        assert_eq!(s, VeSchedule::default());
        let v1 = VeSchedule::ncsn_v1();
        // Song & Ermon 2019: 10 levels from 1 to 0.01, ratio 0.01^(1/9) = 0.5995
        assert!(rel(v1.sigmas()[1], 0.599_484_250_3) < 1e-9);
        assert_eq!(
            v1.level(3),
            Level {
                alpha: 1.0,
                sigma: v1.sigmas()[3],
                t: 3.0
            }
        );
        // L = 10, S = 4: round(0), round(3), round(6), round(9)
        assert_eq!(v1.sampling_indices(4)?, vec![0, 3, 6, 9]);
        // L = 10, S = 5: j·9/4 = 0, 2.25, 4.5, 6.75, 9 → 0, 2, 5 (4.5 rounds up), 7, 9
        assert_eq!(v1.sampling_indices(5)?, vec![0, 2, 5, 7, 9]);
        assert_eq!(v1.sampling_indices(1)?, vec![0]);
        let lv = v1.sampling_levels(10)?;
        assert_eq!(lv.len(), 11);
        assert_eq!(lv[10], Level::CLEAN);
        assert!(v1.sampling_levels(11).is_err() && v1.sampling_levels(0).is_err());
        assert!(VeSchedule::new(0.01, 50.0, 10).is_err());
        assert!(VeSchedule::new(50.0, 0.01, 0).is_err());
        Ok(())
    }

    #[test]
    fn karras_schedule_eq_5() -> Result<()> {
        let k = KarrasSchedule::default();
        let s = k.sigmas(18)?;
        assert_eq!((s[0], s[17]), (80.0, 0.002));
        // σ^{1/ρ} is linear in i
        let lin: Vec<f64> = s.iter().map(|v| v.powf(1.0 / 7.0)).collect();
        let d = (0.002f64.powf(1.0 / 7.0) - 80f64.powf(1.0 / 7.0)) / 17.0;
        for w in lin.windows(2) {
            assert!((w[1] - w[0] - d).abs() < 1e-12);
        }
        // the middle of a 3-step schedule: ((80^{1/7} + 0.002^{1/7})/2)^7 = 2.51522 (Python, float64)
        let mid = k.sigmas(3)?[1];
        assert!(
            rel(
                mid,
                ((80f64.powf(1.0 / 7.0) + 0.002f64.powf(1.0 / 7.0)) / 2.0).powi(7)
            ) < 1e-12
        );
        assert!((mid - 2.515_219).abs() < 1e-5, "{mid}");
        let lv = k.sampling_levels(2)?;
        assert_eq!(lv, vec![k.level(80.0), k.level(0.002), Level::CLEAN]);
        assert_eq!(lv[0].t, 80.0);
        assert_eq!(k.sigmas(1)?, vec![80.0]);
        assert!(k.sampling_levels(0).is_err());
        assert!(KarrasSchedule::new(0.002, 80.0, 0.0).is_err());
        assert!(KarrasSchedule::new(80.0, 0.002, 7.0).is_err());
        Ok(())
    }
}
