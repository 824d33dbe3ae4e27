//! Image-restoration metrics for inverse problems: PSNR and SSIM between an estimate and the truth.
//!
//! PSNR = 10 log₁₀(L² / MSE) dB, L the data range (1 for pixels in [0, 1], 2 for [−1, 1]).
//!
//! SSIM (Wang, Bovik, Sheikh & Simoncelli 2004, "Image quality assessment: from error visibility to
//! structural similarity", eq. 13) = (2μₓμᵧ + C₁)(2σₓᵧ + C₂) / ((μₓ² + μᵧ² + C₁)(σₓ² + σᵧ² + C₂)) with
//! C₁ = (0.01 L)², C₂ = (0.03 L)², local statistics under an 11 × 11 Gaussian window of σ = 1.5 taken at every
//! position where the window fits inside the image (the paper's "valid" filtering; covariances with the
//! window's weights, no sample correction), averaged over positions and channels.

use crate::{Error, Result};

/// Side of the SSIM window.
pub const SSIM_WINDOW: usize = 11;

fn check(a: &[f32], b: &[f32], shape: [usize; 3], range: f64) -> Result<()> {
    let [c, h, w] = shape;
    if a.len() != c * h * w || b.len() != a.len() || a.is_empty() {
        return Err(Error::invalid(
            "images",
            format!(
                "{} and {} values for a {c}×{h}×{w} image (both must have {})",
                a.len(),
                b.len(),
                c * h * w
            ),
        ));
    }
    if !(range.is_finite() && range > 0.0) {
        return Err(Error::invalid(
            "range",
            format!("{range}: the data range must be a finite number > 0"),
        ));
    }
    Ok(())
}

/// PSNR in dB of `estimate` against `truth` (`c × h × w` values each) with data range `range`; +∞ when equal.
pub fn psnr(estimate: &[f32], truth: &[f32], shape: [usize; 3], range: f64) -> Result<f64> {
    check(estimate, truth, shape, range)?;
    let mse = estimate
        .iter()
        .zip(truth)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        / truth.len() as f64;
    Ok(10.0 * (range * range / mse).log10())
}

/// Mean SSIM of `estimate` against `truth` (`c × h × w` values each, h and w ≥ 11) with data range `range`.
pub fn ssim(estimate: &[f32], truth: &[f32], shape: [usize; 3], range: f64) -> Result<f64> {
    check(estimate, truth, shape, range)?;
    let [c, h, w] = shape;
    let k = SSIM_WINDOW;
    if h < k || w < k {
        return Err(Error::invalid(
            "images",
            format!("SSIM needs images of at least {k}×{k} pixels, got {h}×{w}"),
        ));
    }
    // the k × k window, row-major, normalised to sum 1
    let g: Vec<f64> = (0..k)
        .map(|i| {
            let d = i as f64 - (k / 2) as f64;
            (-d * d / (2.0 * 1.5 * 1.5)).exp()
        })
        .collect();
    let gs: f64 = g.iter().sum::<f64>().powi(2);
    let window: Vec<f64> = (0..k * k).map(|i| g[i / k] * g[i % k] / gs).collect();
    let (c1, c2) = ((0.01 * range).powi(2), (0.03 * range).powi(2));
    let (mut total, mut count) = (0.0, 0usize);
    for ch in 0..c {
        let x = &estimate[ch * h * w..(ch + 1) * h * w];
        let y = &truth[ch * h * w..(ch + 1) * h * w];
        for i in 0..=h - k {
            for j in 0..=w - k {
                let (mut mx, mut my, mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for (at, &wt) in window.iter().enumerate() {
                    let o = (i + at / k) * w + j + at % k;
                    let (p, q) = (x[o] as f64, y[o] as f64);
                    mx += wt * p;
                    my += wt * q;
                    xx += wt * p * p;
                    yy += wt * q * q;
                    xy += wt * p * q;
                }
                let (vx, vy, cxy) = (xx - mx * mx, yy - my * my, xy - mx * my);
                total += (2.0 * mx * my + c1) * (2.0 * cxy + c2)
                    / ((mx * mx + my * my + c1) * (vx + vy + c2));
                count += 1;
            }
        }
    }
    Ok(total / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn known_answers() -> Result<()> {
        let shape = [1, 16, 16];
        let truth: Vec<f32> = Rng::new(1).uniform_vec(256);
        // an error of d everywhere: PSNR = 10 log10(L² / d²)
        let off: Vec<f32> = truth.iter().map(|v| v + 0.1).collect();
        let p = psnr(&off, &truth, shape, 1.0)?;
        assert!((p - 20.0).abs() < 1e-4, "{p}");
        assert_eq!(psnr(&truth, &truth, shape, 1.0)?, f64::INFINITY);
        // identical images: SSIM 1
        assert!((ssim(&truth, &truth, shape, 1.0)? - 1.0).abs() < 1e-12);
        // two constant images a and b: only the luminance term is left, (2ab + C1) / (a² + b² + C1)
        let (a, b) = (0.3f32, 0.7f32);
        let s = ssim(&[a; 256], &[b; 256], shape, 1.0)?;
        let (a, b) = (a as f64, b as f64);
        let want = (2.0 * a * b + 1e-4) / (a * a + b * b + 1e-4);
        assert!((s - want).abs() < 1e-6, "{s} vs {want}");
        // symmetric, and falls as noise grows
        let mut rng = Rng::new(2);
        let noisy = |s: f32, rng: &mut Rng| -> Vec<f32> {
            truth.iter().map(|v| v + s * rng.normal()).collect()
        };
        let (n1, n2) = (noisy(0.05, &mut rng), noisy(0.3, &mut rng));
        let s1 = ssim(&n1, &truth, shape, 1.0)?;
        assert!((s1 - ssim(&truth, &n1, shape, 1.0)?).abs() < 1e-12);
        assert!(s1 > ssim(&n2, &truth, shape, 1.0)?);
        assert!(psnr(&n1, &truth, shape, 1.0)? > psnr(&n2, &truth, shape, 1.0)?);
        Ok(())
    }

    #[test]
    fn bad_inputs_are_refused() {
        let e = psnr(&[0.0; 3], &[0.0; 4], [1, 2, 2], 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 and 4 values"), "{e}");
        let e = ssim(&[0.0; 64], &[0.0; 64], [1, 8, 8], 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 11×11"), "{e}");
        let e = psnr(&[0.0; 4], &[0.0; 4], [1, 2, 2], 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("data range"), "{e}");
    }
}
