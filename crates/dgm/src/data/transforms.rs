//! Preprocessing: how raw 8-bit pixels become model inputs. The choice is recorded in the run's config, and
//! [`crate::model::bits_per_dim`] uses it so that likelihoods from different families line up.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::{Error, Result};

/// The seed of the fixed ("static") binarisation used for evaluation.
pub const STATIC_BINARIZATION_SEED: u64 = 0xB1_7A_12_ED;

/// The interval pixels are scaled into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Range {
    /// [0, 1]
    ZeroOne,
    /// [−1, 1]
    MinusOneOne,
}

impl Range {
    /// (lo, hi).
    pub fn bounds(&self) -> (f32, f32) {
        match self {
            Range::ZeroOne => (0.0, 1.0),
            Range::MinusOneOne => (-1.0, 1.0),
        }
    }
}

/// How raw data become model inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Preprocessing {
    /// Binary pixels: each pixel/255 is the probability of a 1. `dynamic = true` draws afresh every time an
    /// image is drawn (from the run's RNG); `dynamic = false` is one fixed binarisation per example (seed
    /// [`STATIC_BINARIZATION_SEED`] and the example's index), used for evaluation.
    Binarize {
        /// Resample every time (training) or fixed per example (evaluation).
        dynamic: bool,
    },
    /// Pixels scaled into `range`. With `dequantize`, uniform noise is added first: x = (k + u) / 256,
    /// u ~ U[0, 1), then mapped to the range; without it, x = k / 255 mapped to the range.
    Scale {
        /// Target interval.
        range: Range,
        /// Add uniform dequantisation noise.
        dequantize: bool,
    },
    /// Values used as they are (2-D points, text tokens).
    Identity,
}

impl Preprocessing {
    /// A short human-readable description, e.g. "dynamically binarized".
    pub fn describe(&self) -> String {
        match self {
            Preprocessing::Binarize { dynamic: true } => {
                "dynamically binarized (Bernoulli(pixel/255), redrawn each time)".into()
            }
            Preprocessing::Binarize { dynamic: false } => {
                format!("statically binarized (Bernoulli(pixel/255), fixed seed {STATIC_BINARIZATION_SEED:#x})")
            }
            Preprocessing::Scale { range, dequantize } => {
                let (lo, hi) = range.bounds();
                if *dequantize {
                    format!("uniformly dequantized, scaled to [{lo}, {hi}]")
                } else {
                    format!("scaled to [{lo}, {hi}] (no dequantization)")
                }
            }
            Preprocessing::Identity => "raw values".into(),
        }
    }

    /// The preprocessing to evaluate a model trained with `self`: dynamic binarisation becomes the fixed one.
    pub fn for_eval(&self) -> Preprocessing {
        match self {
            Preprocessing::Binarize { .. } => Preprocessing::Binarize { dynamic: false },
            p => p.clone(),
        }
    }

    /// Width of the bin each 8-bit value fills in the preprocessed space, for densities over uniformly
    /// dequantized pixels: value k becomes lo + (hi − lo)(k + u)/256, u ~ U[0, 1), so the bins are
    /// `(hi − lo) / 256` wide and tile [lo, hi]. `None` for everything else: binarized data are discrete,
    /// raw values are genuinely continuous, and pixels scaled without dequantization are 256 points
    /// lo + (hi − lo)k/255 (spaced `(hi − lo) / 255`, see [`Preprocessing::level_spacing`]) that a density
    /// does not fill — a density evaluated there is not turned into a probability by any bin width.
    pub fn bin_width(&self) -> Option<f64> {
        match self {
            Preprocessing::Scale {
                range,
                dequantize: true,
            } => {
                let (lo, hi) = range.bounds();
                Some((hi - lo) as f64 / 256.0)
            }
            _ => None,
        }
    }

    /// The distance between neighbouring 8-bit values scaled without dequantization, `(hi − lo) / 255`
    /// (0 ↦ lo, 255 ↦ hi): the spacing of the levels a discretized decoder puts its bins around. `None` for
    /// other preprocessings.
    pub fn level_spacing(&self) -> Option<f64> {
        match self {
            Preprocessing::Scale {
                range,
                dequantize: false,
            } => {
                let (lo, hi) = range.bounds();
                Some((hi - lo) as f64 / 255.0)
            }
            _ => None,
        }
    }

    /// Preprocesses one example of raw pixels (example number `index` of its split), appending to `out`.
    pub fn apply_u8(
        &self,
        pixels: &[u8],
        index: usize,
        rng: &mut Rng,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        match self {
            Preprocessing::Binarize { dynamic } => {
                let mut fixed;
                let r = if *dynamic {
                    rng
                } else {
                    fixed = Rng::stream(STATIC_BINARIZATION_SEED, index as u64);
                    &mut fixed
                };
                out.extend(pixels.iter().map(|&p| {
                    if r.uniform() < p as f32 / 255.0 {
                        1.0
                    } else {
                        0.0
                    }
                }));
            }
            Preprocessing::Scale { range, dequantize } => {
                let (lo, hi) = range.bounds();
                let w = hi - lo;
                if *dequantize {
                    out.extend(
                        pixels
                            .iter()
                            .map(|&p| lo + w * (p as f32 + rng.uniform()) / 256.0),
                    );
                } else {
                    out.extend(pixels.iter().map(|&p| lo + w * p as f32 / 255.0));
                }
            }
            Preprocessing::Identity => {
                return Err(Error::invalid(
                    "data.preprocessing",
                    "8-bit images need binarize or scale preprocessing, not identity",
                ))
            }
        }
        Ok(())
    }

    /// Preprocesses one example of real values (2-D points), appending to `out`.
    pub fn apply_f32(&self, values: &[f32], out: &mut Vec<f32>) -> Result<()> {
        match self {
            Preprocessing::Identity => {
                out.extend_from_slice(values);
                Ok(())
            }
            other => Err(Error::invalid(
                "data.preprocessing",
                format!(
                    "real-valued data use identity preprocessing, not {}",
                    other.describe()
                ),
            )),
        }
    }

    /// Maps model outputs in the preprocessed space back to 8-bit pixels (for PNGs).
    pub fn to_u8(&self, x: f32) -> u8 {
        let v = match self {
            Preprocessing::Scale { range, .. } => {
                let (lo, hi) = range.bounds();
                (x - lo) / (hi - lo)
            }
            _ => x,
        };
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn all_pixels() -> Vec<u8> {
        (0..=255u8).collect()
    }

    fn apply(p: &Preprocessing, pixels: &[u8], index: usize, rng: &mut Rng) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        p.apply_u8(pixels, index, rng, &mut out)?;
        Ok(out)
    }

    #[test]
    fn scale_maps_0_and_255_to_the_range_ends() -> Result<()> {
        for (range, lo, hi) in [(Range::ZeroOne, 0.0, 1.0), (Range::MinusOneOne, -1.0, 1.0)] {
            let p = Preprocessing::Scale {
                range,
                dequantize: false,
            };
            let out = apply(&p, &all_pixels(), 0, &mut Rng::new(0))?;
            assert_eq!(out.len(), 256);
            assert_eq!(out[0], lo);
            assert!((out[255] - hi).abs() < 1e-6, "{}", out[255]);
            assert!(out.windows(2).all(|w| w[0] < w[1]));
            // to_u8 inverts the scaling exactly
            for (k, &x) in out.iter().enumerate() {
                assert_eq!(p.to_u8(x) as usize, k);
            }
            assert_eq!(p.to_u8(hi + 5.0), 255);
            assert_eq!(p.to_u8(lo - 5.0), 0);
            // 256 points spaced (hi − lo)/255 apart: no bins for a density to fill
            assert_eq!(p.bin_width(), None);
            let gap = p.level_spacing().unwrap();
            assert_eq!(gap, (hi - lo) as f64 / 255.0);
            assert!(out
                .windows(2)
                .all(|w| ((w[1] - w[0]) as f64 - gap).abs() < 1e-6));
        }
        Ok(())
    }

    #[test]
    fn dequantization_stays_inside_the_bin() -> Result<()> {
        for range in [Range::ZeroOne, Range::MinusOneOne] {
            let (lo, hi) = range.bounds();
            let w = hi - lo;
            let p = Preprocessing::Scale {
                range,
                dequantize: true,
            };
            let mut rng = Rng::new(1);
            let mut mean_u = 0.0f64;
            let reps = 200;
            for _ in 0..reps {
                let out = apply(&p, &all_pixels(), 0, &mut rng)?;
                for (k, &x) in out.iter().enumerate() {
                    let a = lo + w * k as f32 / 256.0;
                    let b = lo + w * (k + 1) as f32 / 256.0;
                    assert!(
                        x >= a - 1e-6 && x < b + 1e-6,
                        "pixel {k}: {x} not in [{a}, {b})"
                    );
                    mean_u += ((x - lo) / w * 256.0 - k as f32) as f64;
                    // maps back to the same pixel or its neighbour
                    assert!((p.to_u8(x) as i32 - k as i32).abs() <= 1);
                }
            }
            // the bins the noise fills tile [lo, hi]: 256 of width (hi − lo)/256
            assert_eq!(p.bin_width(), Some(w as f64 / 256.0));
            assert_eq!(p.level_spacing(), None);
            // the noise is uniform on [0, 1): mean 1/2 (sd of the mean ≈ 0.0013)
            mean_u /= (256 * reps) as f64;
            assert!((mean_u - 0.5).abs() < 0.01, "{mean_u}");
            // fresh noise on every call
            assert_ne!(
                apply(&p, &all_pixels(), 0, &mut rng)?,
                apply(&p, &all_pixels(), 0, &mut rng)?
            );
        }
        Ok(())
    }

    #[test]
    fn dynamic_binarization_has_mean_p_and_is_redrawn() -> Result<()> {
        let p = Preprocessing::Binarize { dynamic: true };
        let pixels = [0u8, 64, 128, 200, 255];
        let mut rng = Rng::new(2);
        let reps = 20_000;
        let mut sums = [0.0f64; 5];
        let mut draws = Vec::new();
        for _ in 0..reps {
            let out = apply(&p, &pixels, 3, &mut rng)?;
            assert!(out.iter().all(|&x| x == 0.0 || x == 1.0));
            for (s, &x) in sums.iter_mut().zip(&out) {
                *s += x as f64;
            }
            if draws.len() < 2 {
                draws.push(apply(&p, &[128; 64], 3, &mut rng)?);
            }
        }
        for (s, &px) in sums.iter().zip(&pixels) {
            let want = px as f64 / 255.0;
            let mean = s / reps as f64;
            // sd of the mean ≤ 0.0036
            assert!((mean - want).abs() < 0.015, "pixel {px}: {mean} vs {want}");
        }
        assert_eq!(sums[0], 0.0);
        assert_eq!(sums[4], reps as f64);
        assert_ne!(draws[0], draws[1]);
        Ok(())
    }

    #[test]
    fn static_binarization_is_fixed_per_example() -> Result<()> {
        let p = Preprocessing::Binarize { dynamic: false };
        let pixels = [128u8; 200];
        let a = apply(&p, &pixels, 17, &mut Rng::new(1))?;
        let b = apply(&p, &pixels, 17, &mut Rng::new(999))?;
        let mut used = Rng::new(5);
        used.normal_vec(10);
        let c = apply(&p, &pixels, 17, &mut used)?;
        assert_eq!(a, b);
        assert_eq!(a, c);
        // and the rng passed in is not consumed
        let mut fresh = Rng::new(5);
        fresh.normal_vec(10);
        assert_eq!(used.next_u64(), fresh.next_u64());
        // another example index gets another binarization, with about half the pixels on
        let d = apply(&p, &pixels, 18, &mut Rng::new(1))?;
        assert_ne!(a, d);
        let on = a.iter().sum::<f32>();
        assert!((60.0..140.0).contains(&on), "{on}");
        assert_eq!(p.for_eval(), p);
        assert_eq!(Preprocessing::Binarize { dynamic: true }.for_eval(), p);
        Ok(())
    }

    #[test]
    fn identity_rejects_pixels_and_passes_reals() -> Result<()> {
        let mut out = Vec::new();
        assert!(Preprocessing::Identity
            .apply_u8(&[1, 2], 0, &mut Rng::new(0), &mut out)
            .is_err());
        Preprocessing::Identity.apply_f32(&[1.5, -2.0], &mut out)?;
        assert_eq!(out, vec![1.5, -2.0]);
        assert!(Preprocessing::Binarize { dynamic: true }
            .apply_f32(&[0.5], &mut out)
            .is_err());
        Ok(())
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Wrapper {
        preprocessing: Preprocessing,
    }

    #[test]
    fn serde_toml_round_trip() -> TestResult {
        let w: Wrapper = toml::from_str("[preprocessing]\nkind = \"binarize\"\ndynamic = true\n")?;
        assert_eq!(w.preprocessing, Preprocessing::Binarize { dynamic: true });
        let w: Wrapper = toml::from_str(
            "[preprocessing]\nkind = \"scale\"\nrange = \"minus_one_one\"\ndequantize = false\n",
        )?;
        assert_eq!(
            w.preprocessing,
            Preprocessing::Scale {
                range: Range::MinusOneOne,
                dequantize: false
            }
        );
        for p in [
            Preprocessing::Binarize { dynamic: false },
            Preprocessing::Scale {
                range: Range::ZeroOne,
                dequantize: true,
            },
            Preprocessing::Identity,
        ] {
            let w = Wrapper { preprocessing: p };
            let text = toml::to_string(&w)?;
            assert_eq!(toml::from_str::<Wrapper>(&text)?, w, "{text}");
        }
        assert!(toml::from_str::<Wrapper>("[preprocessing]\nkind = \"binarise\"\n").is_err());
        assert!(toml::from_str::<Wrapper>(
            "[preprocessing]\nkind = \"binarize\"\ndynamic = true\nx = 1\n"
        )
        .is_err());
        Ok(())
    }
}
