//! The kernel two-sample statistic as a training loss: the unbiased squared maximum mean discrepancy (Gretton
//! et al. 2012, eq. 3) between two batches, differentiable in both, with a sum of Gaussian kernels (Li,
//! Swersky & Zemel 2015, "Generative moment matching networks", who sum several bandwidths so that no single
//! scale has to be right). It is the statistic of the evaluation suite's two-sample test
//! (`metrics::mmd`, which works on f32 slices in f64 without gradients); a unit test holds the two equal.

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// Squared distances ‖a_i − b_j‖² of the rows of `a` (p, d) and `b` (q, d), from ‖a‖² + ‖b‖² − 2a·b clamped
/// at 0: (p, q).
fn sq_dists(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let na = a.sqr()?.sum_keepdim(1)?; // (p, 1)
    let nb = b.sqr()?.sum_keepdim(1)?.t()?; // (1, q)
    let ab = (a.matmul(&b.t()?)? * 2.0)?; // (p, q)
    Ok(na.broadcast_add(&nb)?.sub(&ab)?.relu()?)
}

fn check(x: &Tensor, y: &Tensor) -> Result<()> {
    let ok = x.rank() == 2
        && y.rank() == 2
        && x.dim(1)? == y.dim(1)?
        && x.dim(0)? >= 2
        && y.dim(0)? >= 2;
    if !ok {
        return Err(Error::invalid(
            "mmd loss",
            format!(
                "needs two matrices (m, d) and (n, d) with m, n ≥ 2 and the same d, got {:?} and {:?}",
                x.dims(),
                y.dims()
            ),
        ));
    }
    Ok(())
}

/// Unbiased MMD² between the rows of `x` (m, d) and `y` (n, d), m, n ≥ 2, under the kernel
/// k(a, b) = Σ_σ exp(−‖a − b‖² / (2σ²)) over `bandwidths` (each positive and finite), as a differentiable
/// scalar: Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + Σ_{i≠j} k(y_i, y_j)/(n(n−1)) − 2 Σ_{i,j} k(x_i, y_j)/(mn).
pub fn mmd2_loss(x: &Tensor, y: &Tensor, bandwidths: &[f64]) -> Result<Tensor> {
    check(x, y)?;
    if bandwidths.is_empty() {
        return Err(Error::invalid(
            "mmd loss bandwidths",
            "needs at least one bandwidth",
        ));
    }
    if let Some(b) = bandwidths.iter().find(|b| !(b.is_finite() && **b > 0.0)) {
        return Err(Error::invalid(
            "mmd loss bandwidths",
            format!("{b} is not a positive finite bandwidth"),
        ));
    }
    // Σ_σ Σ_{i,j} k_σ(a_i, b_j), leaving out i = j when `same`
    let kernel_sum = |a: &Tensor, b: &Tensor, same: bool| -> Result<Tensor> {
        let d2 = sq_dists(a, b)?;
        let mut k = d2.zeros_like()?;
        for &s in bandwidths {
            k = (k + (&d2 * (-1.0 / (2.0 * s * s)))?.exp()?)?;
        }
        if same {
            let off = Tensor::eye(a.dim(0)?, k.dtype(), k.device())?.affine(-1.0, 1.0)?;
            k = (k * off)?;
        }
        Ok(k.sum_all()?)
    };
    let (m, n) = (x.dim(0)? as f64, y.dim(0)? as f64);
    let sxx = (kernel_sum(x, x, true)? / (m * (m - 1.0)))?;
    let syy = (kernel_sum(y, y, true)? / (n * (n - 1.0)))?;
    let sxy = (kernel_sum(x, y, false)? * (2.0 / (m * n)))?;
    Ok(((sxx + syy)? - sxy)?)
}

/// The median heuristic's bandwidth: the median Euclidean distance between distinct rows of the pooled
/// x ∪ y (no gradient; for an even number of pairs the mean of the two middle ones). Coinciding rows are
/// skipped; all rows equal is an error.
pub fn median_distance(x: &Tensor, y: &Tensor) -> Result<f64> {
    check(x, y)?;
    let pooled = Tensor::cat(&[&x.detach(), &y.detach()], 0)?.to_dtype(DType::F64)?;
    let n = pooled.dim(0)?;
    let d2 = sq_dists(&pooled, &pooled)?.to_vec2::<f64>()?;
    let mut d: Vec<f64> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .map(|(i, j)| d2[i][j].sqrt())
        .filter(|v| *v > 0.0)
        .collect();
    if d.is_empty() {
        return Err(Error::invalid(
            "median bandwidth",
            "all points coincide; the median heuristic needs two distinct points",
        ));
    }
    d.sort_by(f64::total_cmp);
    let k = d.len();
    Ok(if k % 2 == 1 {
        d[k / 2]
    } else {
        0.5 * (d[k / 2 - 1] + d[k / 2])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::mmd::{median_bandwidth, mmd2_unbiased_gaussian};
    use crate::rng::Rng;
    use candle_core::{Device, Var};

    fn normal_2d(n: usize, mean: [f32; 2], scale: [f32; 2], rng: &mut Rng) -> Vec<f32> {
        (0..n)
            .flat_map(|_| {
                [
                    mean[0] + scale[0] * rng.normal(),
                    mean[1] + scale[1] * rng.normal(),
                ]
            })
            .collect()
    }

    /// The loss equals the evaluation suite's exact f64 statistic for one bandwidth and the sum of the
    /// statistics for several, its gradient matches central finite differences of that statistic, and the
    /// median distance equals the suite's median heuristic.
    #[test]
    fn mmd2_loss_matches_the_statistic_and_its_gradient() -> Result<()> {
        let mut rng = Rng::new(5);
        let x = normal_2d(7, [0.0, 0.0], [1.0, 1.0], &mut rng);
        let y = normal_2d(6, [0.5, -0.3], [1.5, 0.7], &mut rng);
        let bws = [0.7, 2.0];
        let exact = |x: &[f32]| -> Result<f64> {
            Ok(mmd2_unbiased_gaussian(x, &y, 2, bws[0])?
                + mmd2_unbiased_gaussian(x, &y, 2, bws[1])?)
        };
        let xv = Var::from_tensor(&Tensor::from_vec(x.clone(), (7, 2), &Device::Cpu)?)?;
        let yt = Tensor::from_vec(y.clone(), (6, 2), &Device::Cpu)?;
        let one = mmd2_loss(xv.as_tensor(), &yt, &bws[..1])?.to_scalar::<f32>()? as f64;
        let one_exact = mmd2_unbiased_gaussian(&x, &y, 2, bws[0])?;
        assert!((one - one_exact).abs() < 1e-5, "{one} vs {one_exact}");
        let loss = mmd2_loss(xv.as_tensor(), &yt, &bws)?;
        let both = loss.to_scalar::<f32>()? as f64;
        assert!((both - exact(&x)?).abs() < 1e-5, "{both} vs {}", exact(&x)?);
        let grads = loss.backward()?;
        let g = grads
            .get(xv.as_tensor())
            .ok_or_else(|| Error::invalid("test", "no gradient"))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let h = 1e-3f32;
        for i in 0..x.len() {
            let (mut p, mut q) = (x.clone(), x.clone());
            p[i] += h;
            q[i] -= h;
            let fd = (exact(&p)? - exact(&q)?) / (2.0 * h as f64);
            assert!(
                (fd - g[i] as f64).abs() < 2e-3,
                "∂/∂x[{i}]: {} vs {fd}",
                g[i]
            );
        }
        let med = median_distance(xv.as_tensor(), &yt)?;
        let suite = median_bandwidth(&x, &y, 2, 1000, 0)?;
        assert!((med - suite).abs() < 1e-5 * suite, "{med} vs {suite}");
        assert!(mmd2_loss(xv.as_tensor(), &yt, &[]).is_err());
        assert!(mmd2_loss(xv.as_tensor(), &yt, &[-1.0]).is_err());
        assert!(mmd2_loss(&xv.as_tensor().narrow(0, 0, 1)?, &yt, &bws).is_err());
        Ok(())
    }
}
