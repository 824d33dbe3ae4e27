//! Feature means and unbiased covariances, accumulated in f64 in a fixed order.

use rayon::prelude::*;

use super::{check_points, dot};
use crate::Result;

/// Samples per block when accumulating a covariance (a block of 256-dimensional f64 features is 1 MiB).
const COV_BLOCK: usize = 512;

/// Mean and unbiased covariance (denominator n − 1) of the rows of `x` (row-major, `dim` columns, at least two
/// rows). Returns `(mean, cov)` with `cov` row-major `dim × dim`, exactly symmetric. Two passes (mean first,
/// then centred products), all in f64; the result does not depend on the thread count.
pub fn mean_cov(x: &[f32], dim: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = check_points("features", x, dim, 2)?;
    let mut mean = vec![0.0f64; dim];
    for row in x.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    for m in &mut mean {
        *m /= n as f64;
    }
    // Upper triangle of Σ (x − μ)(x − μ)ᵀ, accumulated block of samples by block of samples; within a block
    // each output row is one rayon task and sums its block in a fixed order.
    let mut acc = vec![0.0f64; dim * dim];
    let mut blk = vec![0.0f64; dim * COV_BLOCK];
    for start in (0..n).step_by(COV_BLOCK) {
        let bs = COV_BLOCK.min(n - start);
        // Centred block, transposed: blk[j * bs + t] = x[start + t][j] − μ_j.
        for (t, row) in x[start * dim..(start + bs) * dim]
            .chunks_exact(dim)
            .enumerate()
        {
            for j in 0..dim {
                blk[j * bs + t] = row[j] as f64 - mean[j];
            }
        }
        let blk = &blk[..dim * bs];
        acc.par_chunks_mut(dim).enumerate().for_each(|(i, out)| {
            let bi = &blk[i * bs..(i + 1) * bs];
            for (j, o) in out.iter_mut().enumerate().skip(i) {
                *o += dot(bi, &blk[j * bs..(j + 1) * bs]);
            }
        });
    }
    let denom = (n - 1) as f64;
    let mut cov = vec![0.0f64; dim * dim];
    for i in 0..dim {
        for j in i..dim {
            let v = acc[i * dim + j] / denom;
            cov[i * dim + j] = v;
            cov[j * dim + i] = v;
        }
    }
    Ok((mean, cov))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn mean_cov_hand_example() -> Result<()> {
        // Points (1,2), (3,4), (5,0): mean (3,2); deviations x: −2,0,2; y: 0,2,−2.
        // var x = 8/2 = 4, var y = 8/2 = 4, cov = (0 + 0 − 4)/2 = −2.
        let (m, c) = mean_cov(&[1.0, 2.0, 3.0, 4.0, 5.0, 0.0], 2)?;
        assert_eq!(m, vec![3.0, 2.0]);
        assert_eq!(c, vec![4.0, -2.0, -2.0, 4.0]);
        assert!(mean_cov(&[1.0, 2.0], 2).is_err()); // one point
        assert!(mean_cov(&[1.0, 2.0, 3.0], 2).is_err()); // not whole rows
        assert!(mean_cov(&[1.0, f32::NAN, 3.0, 4.0], 2).is_err());
        Ok(())
    }

    #[test]
    fn mean_cov_large_block_boundaries_match_direct_sum() -> Result<()> {
        // More samples than one block, odd count; compare with a direct two-pass sum.
        let (n, dim) = (1301, 5);
        let mut rng = Rng::new(3);
        let x: Vec<f32> = (0..n * dim)
            .map(|i| rng.normal() + (i % dim) as f32 * 10.0)
            .collect();
        let (m, c) = mean_cov(&x, dim)?;
        for j in 0..dim {
            let mj = (0..n).map(|i| x[i * dim + j] as f64).sum::<f64>() / n as f64;
            assert!((mj - m[j]).abs() < 1e-12 * (1.0 + mj.abs()));
            for k in 0..dim {
                let mk = (0..n).map(|i| x[i * dim + k] as f64).sum::<f64>() / n as f64;
                let ckj = (0..n)
                    .map(|i| (x[i * dim + j] as f64 - mj) * (x[i * dim + k] as f64 - mk))
                    .sum::<f64>()
                    / (n - 1) as f64;
                assert!(
                    (ckj - c[j * dim + k]).abs() < 1e-10,
                    "{ckj} vs {}",
                    c[j * dim + k]
                );
            }
        }
        Ok(())
    }
}
