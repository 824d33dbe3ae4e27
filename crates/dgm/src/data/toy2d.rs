//! 2-D toy densities for flows, diffusion and energy-based models.
//!
//! The definitions follow FFJORD's `toy_data.py` (Grathwohl et al., 2019), drawn per point so that the first
//! `n` points of a larger sample are the `n`-point sample (same seed):
//!
//! - `moons`: scikit-learn's `make_moons` (two interleaved half circles, Gaussian noise σ = 0.1, a point's
//!   position along its moon uniform), mapped by x ↦ 2x + (−1, −0.2) as in FFJORD;
//! - `8gaussians`: an equal mixture of 8 Gaussians, centres at radius 4/1.414 ≈ 2√2 on the compass points,
//!   standard deviation 0.5/1.414;
//! - `checkerboard`: uniform on the 8 occupied 2×2 squares of a 4×4 checkerboard covering [−4, 4)²;
//! - `swissroll`: scikit-learn's `make_swiss_roll` (noise 1.0), coordinates (x, z), divided by 5;
//! - `pinwheel`: 5 spiral arms (radial σ 0.3, tangential σ 0.1, rate 0.25), times 2;
//! - `2spirals`: two interleaved spirals, divided by 3, plus Gaussian noise σ = 0.1.
//!
//! All lie roughly inside [−4, 4]².

use super::{Dataset, Storage};
use crate::rng::Rng;
use crate::{Error, Result};

/// The toy data set names.
pub const NAMES: &[&str] = &[
    "moons",
    "8gaussians",
    "checkerboard",
    "swissroll",
    "pinwheel",
    "2spirals",
];

/// FFJORD's 8gaussians: centres at `SCALE` on the unit compass directions, std `STD`, all divided by `DIV`.
const G8_SCALE: f64 = 4.0;
const G8_STD: f64 = 0.5;
const G8_DIV: f64 = 1.414;

/// The 8 mixture centres of `8gaussians` (in the output coordinates).
pub fn eight_gaussians_centres() -> [(f64, f64); 8] {
    let s = std::f64::consts::FRAC_1_SQRT_2;
    let dirs = [
        (1.0, 0.0),
        (-1.0, 0.0),
        (0.0, 1.0),
        (0.0, -1.0),
        (s, s),
        (s, -s),
        (-s, s),
        (-s, -s),
    ];
    dirs.map(|(x, y)| (G8_SCALE * x / G8_DIV, G8_SCALE * y / G8_DIV))
}

/// The standard deviation of each `8gaussians` component (in the output coordinates).
pub fn eight_gaussians_std() -> f64 {
    G8_STD / G8_DIV
}

/// True when `(x, y)` lies in one of the occupied squares of `checkerboard` (inside [−4, 4)², the squares
/// `[2i, 2i+2) × [2j, 2j+2)` with `i + j` even).
pub fn in_checkerboard(x: f64, y: f64) -> bool {
    if !(-4.0..4.0).contains(&x) || !(-4.0..4.0).contains(&y) {
        return false;
    }
    let i = (x / 2.0).floor() as i64;
    let j = (y / 2.0).floor() as i64;
    (i + j).rem_euclid(2) == 0
}

fn sample_point(name: &str, r: &mut Rng) -> Option<[f32; 2]> {
    use std::f64::consts::PI;
    let (x, y): (f64, f64) = match name {
        "moons" => {
            let t = PI * r.uniform_f64();
            let (mx, my) = if r.uniform() < 0.5 {
                (t.cos(), t.sin())
            } else {
                (1.0 - t.cos(), 1.0 - t.sin() - 0.5)
            };
            let nx = mx + 0.1 * r.normal() as f64;
            let ny = my + 0.1 * r.normal() as f64;
            (2.0 * nx - 1.0, 2.0 * ny - 0.2)
        }
        "8gaussians" => {
            let c = eight_gaussians_centres()[r.below(8)];
            let std = eight_gaussians_std();
            (c.0 + std * r.normal() as f64, c.1 + std * r.normal() as f64)
        }
        "checkerboard" => {
            let x1 = 4.0 * r.uniform_f64() - 2.0;
            let shift = if r.uniform() < 0.5 { 0.0 } else { -2.0 };
            let x2 = r.uniform_f64() + shift + (x1.floor().rem_euclid(2.0));
            (2.0 * x1, 2.0 * x2)
        }
        "swissroll" => {
            let t = 1.5 * PI * (1.0 + 2.0 * r.uniform_f64());
            let x = t * t.cos() + r.normal() as f64;
            let z = t * t.sin() + r.normal() as f64;
            (x / 5.0, z / 5.0)
        }
        "pinwheel" => {
            let k = r.below(5) as f64;
            let f0 = 1.0 + 0.3 * r.normal() as f64;
            let f1 = 0.1 * r.normal() as f64;
            let angle = 2.0 * PI * k / 5.0 + 0.25 * f0.exp();
            let (s, c) = angle.sin_cos();
            (2.0 * (f0 * c + f1 * s), 2.0 * (-f0 * s + f1 * c))
        }
        "2spirals" => {
            let n = r.uniform_f64().sqrt() * 540.0 * (2.0 * PI) / 360.0;
            let dx = -n.cos() * n + 0.5 * r.uniform_f64();
            let dy = n.sin() * n + 0.5 * r.uniform_f64();
            let sign = if r.uniform() < 0.5 { 1.0 } else { -1.0 };
            (
                sign * dx / 3.0 + 0.1 * r.normal() as f64,
                sign * dy / 3.0 + 0.1 * r.normal() as f64,
            )
        }
        _ => return None,
    };
    Some([x as f32, y as f32])
}

/// Bytes one generated example takes in memory: two f32 coordinates.
pub const EXAMPLE_BYTES: u64 = 2 * std::mem::size_of::<f32>() as u64;

/// Samples `n` points of the toy density `name` (one of [`NAMES`]) with seed `seed`. The data set is
/// named `toy2d:<name>`, has example shape `[2]`, f32 storage and no labels.
pub fn generate(name: &str, n: usize, seed: u64) -> Result<Dataset> {
    if !NAMES.contains(&name) {
        return Err(Error::unknown("toy2d data set", name, NAMES));
    }
    let mut r = Rng::named(seed, name);
    let mut v = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let p = sample_point(name, &mut r)
            .ok_or_else(|| Error::unknown("toy2d data set", name, NAMES))?;
        v.extend_from_slice(&p);
    }
    Ok(Dataset {
        name: format!("toy2d:{name}"),
        example_shape: vec![2],
        storage: Storage::F32(v),
        labels: None,
        num_classes: None,
        class_names: None,
        captions: None,
    })
}

/// The log density (natural log, per unit area) of the toy distribution `name` at `(x, y)`, where it has a
/// closed form: `8gaussians` (the Gaussian mixture) and `checkerboard` (1/32 on the occupied squares,
/// −∞ elsewhere). `None` for the other names.
pub fn log_density(name: &str, x: f32, y: f32) -> Option<f64> {
    let (x, y) = (x as f64, y as f64);
    match name {
        "8gaussians" => {
            let s = eight_gaussians_std();
            let log_norm = -(2.0 * std::f64::consts::PI * s * s).ln() - 8f64.ln();
            let terms = eight_gaussians_centres()
                .map(|(cx, cy)| log_norm - ((x - cx).powi(2) + (y - cy).powi(2)) / (2.0 * s * s));
            let m = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            Some(m + terms.iter().map(|t| (t - m).exp()).sum::<f64>().ln())
        }
        "checkerboard" => Some(if in_checkerboard(x, y) {
            -(32f64.ln())
        } else {
            f64::NEG_INFINITY
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn points(ds: &Dataset) -> &[f32] {
        match &ds.storage {
            Storage::F32(v) => v,
            _ => panic!("toy2d must be f32"),
        }
    }

    fn moments(v: &[f32]) -> ([f64; 2], [f64; 2]) {
        let n = (v.len() / 2) as f64;
        let mut m = [0.0; 2];
        let mut s = [0.0; 2];
        for p in v.chunks(2) {
            for d in 0..2 {
                m[d] += p[d] as f64 / n;
            }
        }
        for p in v.chunks(2) {
            for d in 0..2 {
                s[d] += (p[d] as f64 - m[d]).powi(2) / n;
            }
        }
        (m, [s[0].sqrt(), s[1].sqrt()])
    }

    #[test]
    fn deterministic_shaped_and_finite() -> Result<()> {
        for name in NAMES {
            let a = generate(name, 500, 3)?;
            let b = generate(name, 500, 3)?;
            let c = generate(name, 500, 4)?;
            assert_eq!(a.name, format!("toy2d:{name}"));
            assert_eq!(a.example_shape, vec![2]);
            assert_eq!(a.len(), 500);
            assert!(a.labels.is_none() && !a.is_image());
            assert_eq!(points(&a), points(&b), "{name}");
            assert_ne!(points(&a), points(&c), "{name}");
            // prefix property: the first 100 points do not depend on n
            let small = generate(name, 100, 3)?;
            assert_eq!(points(&small), &points(&a)[..200], "{name}");
            let v = points(&a);
            assert!(v.iter().all(|x| x.is_finite() && x.abs() < 6.0), "{name}");
        }
        let e = generate("spirals", 10, 0).unwrap_err().to_string();
        assert!(
            e.contains("spirals") && e.contains("2spirals") && e.contains("checkerboard"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn checkerboard_points_lie_in_occupied_squares() -> Result<()> {
        let ds = generate("checkerboard", 20_000, 1)?;
        let v = points(&ds);
        let mut counts = [0usize; 16];
        for p in v.chunks(2) {
            let (x, y) = (p[0] as f64, p[1] as f64);
            assert!(in_checkerboard(x, y), "({x}, {y})");
            let i = ((x + 4.0) / 2.0).floor() as usize;
            let j = ((y + 4.0) / 2.0).floor() as usize;
            counts[i * 4 + j] += 1;
        }
        // 8 occupied squares, each with about 1/8 of the points (sd of a count ≈ 47)
        let occupied: Vec<usize> = counts.iter().copied().filter(|&c| c > 0).collect();
        assert_eq!(occupied.len(), 8);
        for c in occupied {
            assert!((c as f64 - 2500.0).abs() < 250.0, "{counts:?}");
        }
        assert!(
            !in_checkerboard(-3.0, -1.0)
                && in_checkerboard(-3.0, -3.0)
                && !in_checkerboard(4.0, 0.0)
        );
        Ok(())
    }

    #[test]
    fn eight_gaussians_points_are_near_the_centres() -> TestResult {
        let ds = generate("8gaussians", 16_000, 2)?;
        let centres = eight_gaussians_centres();
        let std = eight_gaussians_std();
        let mut counts = [0usize; 8];
        let mut sq = 0.0;
        for p in points(&ds).chunks(2) {
            let (k, d2) = centres
                .iter()
                .enumerate()
                .map(|(k, c)| (k, (p[0] as f64 - c.0).powi(2) + (p[1] as f64 - c.1).powi(2)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .ok_or("no 8gaussians centres")?;
            assert!(d2.sqrt() < 6.0 * std);
            counts[k] += 1;
            sq += d2;
        }
        // E|x - c|^2 = 2 σ^2 for a 2-D isotropic Gaussian
        let msd = sq / 16_000.0;
        assert!((msd / (2.0 * std * std) - 1.0).abs() < 0.05, "{msd}");
        for c in counts {
            assert!((c as f64 - 2000.0).abs() < 200.0, "{counts:?}");
        }
        assert!((centres[0].0 - 2.0 * 2f64.sqrt()).abs() < 0.01);
        Ok(())
    }

    #[test]
    fn log_densities_integrate_to_one() -> TestResult {
        for name in ["8gaussians", "checkerboard"] {
            let h = 0.02f64;
            let mut total = 0.0;
            let steps = (12.0 / h) as i64;
            for i in 0..steps {
                for j in 0..steps {
                    let x = -6.0 + (i as f64 + 0.5) * h;
                    let y = -6.0 + (j as f64 + 0.5) * h;
                    let log_p = log_density(name, x as f32, y as f32)
                        .ok_or_else(|| format!("{name} has no log density"))?;
                    total += log_p.exp() * h * h;
                }
            }
            assert!((total - 1.0).abs() < 1e-3, "{name}: {total}");
        }
        assert!(log_density("moons", 0.0, 0.0).is_none());
        // the 8gaussians density peaks at a centre: log(1/(8·2πσ²))
        let c = eight_gaussians_centres()[4];
        let s = eight_gaussians_std();
        let peak = log_density("8gaussians", c.0 as f32, c.1 as f32)
            .ok_or("8gaussians has no log density")?;
        assert!(
            (peak + (8.0 * 2.0 * std::f64::consts::PI * s * s).ln()).abs() < 1e-3,
            "{peak}"
        );
        Ok(())
    }

    #[test]
    fn moons_swissroll_pinwheel_spirals_moments() -> Result<()> {
        // moons (FFJORD mapping of make_moons): x has mean 0 (±0.05 for 20k points), y mean 2·0.25 − 0.2 = 0.3
        let (m, s) = moments(points(&generate("moons", 20_000, 5)?));
        assert!(m[0].abs() < 0.05 && (m[1] - 0.3).abs() < 0.05, "{m:?}");
        assert!(
            s[0] > 1.0 && s[0] < 2.0 && s[1] > 0.5 && s[1] < 1.5,
            "{s:?}"
        );
        // pinwheel and 2spirals are symmetric about the origin
        for name in ["pinwheel", "2spirals"] {
            let (m, s) = moments(points(&generate(name, 20_000, 6)?));
            assert!(m[0].abs() < 0.1 && m[1].abs() < 0.1, "{name} {m:?}");
            assert!(s[0] > 0.5 && s[1] > 0.5, "{name} {s:?}");
        }
        // swiss roll: radius |(x, z)|·5 = t ∈ [1.5π, 4.5π] up to noise
        let v = points(&generate("swissroll", 5_000, 7)?).to_vec();
        let mean_r = v
            .chunks(2)
            .map(|p| 5.0 * ((p[0] as f64).powi(2) + (p[1] as f64).powi(2)).sqrt())
            .sum::<f64>()
            / 5_000.0;
        assert!(
            (mean_r - 3.0 * std::f64::consts::PI).abs() < 0.3,
            "{mean_r}"
        );
        Ok(())
    }
}
