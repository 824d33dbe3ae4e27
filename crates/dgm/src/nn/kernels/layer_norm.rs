//! LayerNorm (Ba et al. 2016) over the last dimension as one CPU kernel with its own backward: rows in
//! parallel blocks, each row's mean and variance in two passes with [`LANES`] partial sums, the backward
//! recomputing them and reducing the per-parameter sums block by block in a fixed order.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::isa::simd_dispatch;
use super::math::{axpy, dot, sum_lanes, LANES};
use super::{cpu_f32, par_filled, to_candle, with_data};
use crate::Result;

/// LayerNorm of `x: (…, c)` over its last dimension with affine `gamma`, `beta`: `(c,)`: dgm's CPU kernel on
/// f32 CPU tensors, candle's ops elsewhere.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if crate::nn::use_cpu_kernel(x) {
        Ok(x.contiguous()?.apply_op3(
            &gamma.contiguous()?,
            &beta.contiguous()?,
            LayerNormOp { eps },
        )?)
    } else {
        layer_norm_stock(x, gamma, beta, eps)
    }
}

/// The reference LayerNorm: candle's stock ops.
pub fn layer_norm_stock(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(xn.broadcast_mul(gamma)?.broadcast_add(beta)?)
}

/// Rows of a LayerNorm handled by one parallel task.
const LN_ROWS: usize = 32;

/// (mean, 1/√(σ² + ε)) of one row, two passes in f32 with LANES partial sums.
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len().max(1) as f32;
    let (xc, xr) = x.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for c in xc {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    let mean = (acc.iter().sum::<f32>() + xr.iter().sum::<f32>()) / n;
    let mut acc = [0f32; LANES];
    for c in xc {
        for l in 0..LANES {
            let d = c[l] - mean;
            acc[l] += d * d;
        }
    }
    let var =
        (acc.iter().sum::<f32>() + xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// LayerNorm of the rows of `x` (each `γ.len()` long) into `y`.
#[inline(always)]
fn ln_rows(x: &[f32], g: &[f32], b: &[f32], eps: f32, y: &mut [f32]) {
    let c = g.len();
    for (y, x) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        let (mean, rstd) = row_stats(x, eps);
        for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(g).zip(b) {
            *y = (x - mean) * rstd * g + b;
        }
    }
}

simd_dispatch! {
    /// [`ln_rows`], on the widest vectors [`super::isa::isa`] allows.
    fn ln_rows_fast(x: &[f32], g: &[f32], b: &[f32], eps: f32, y: &mut [f32]) = ln_rows;
}

/// The LayerNorm backward over the rows of one block: dx into `dx`, and this block's dγ, dβ into `dg`, `db`
/// (zeroed first); `xh`, `gw` are scratch rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn ln_grad_rows(
    x: &[f32],
    g: &[f32],
    gm: &[f32],
    eps: f32,
    dx: &mut [f32],
    dg: &mut [f32],
    db: &mut [f32],
    scratch: &mut [f32],
) {
    let c = gm.len();
    dg.fill(0.0);
    db.fill(0.0);
    let (xh, gw) = scratch.split_at_mut(c);
    for ((dx, x), g) in dx
        .chunks_exact_mut(c)
        .zip(x.chunks_exact(c))
        .zip(g.chunks_exact(c))
    {
        let (mean, rstd) = row_stats(x, eps);
        for j in 0..c {
            xh[j] = (x[j] - mean) * rstd;
            gw[j] = g[j] * gm[j];
            dg[j] += g[j] * xh[j];
            db[j] += g[j];
        }
        let a = sum_lanes(gw) / c as f32;
        let bsum = dot(gw, xh) / c as f32;
        for j in 0..c {
            dx[j] = rstd * (gw[j] - a - xh[j] * bsum);
        }
    }
}

simd_dispatch! {
    /// [`ln_grad_rows`], on the widest vectors [`super::isa::isa`] allows.
    #[allow(clippy::too_many_arguments)]
    fn ln_grad_rows_fast(
        x: &[f32],
        g: &[f32],
        gm: &[f32],
        eps: f32,
        dx: &mut [f32],
        dg: &mut [f32],
        db: &mut [f32],
        scratch: &mut [f32]
    ) = ln_grad_rows;
}

/// The CPU op behind [`layer_norm`]: `(x, γ, β)`.
struct LayerNormOp {
    eps: f64,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "dgm-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, g, b) = (
            cpu_f32(name, s1, l1)?,
            cpu_f32(name, s2, l2)?,
            cpu_f32(name, s3, l3)?,
        );
        let c = l1.dims().last().copied().unwrap_or(1);
        if c == 0 || g.len() != c || b.len() != c {
            candle_core::bail!(
                "{name}: affine of {} / {} for {c} features",
                g.len(),
                b.len()
            );
        }
        let eps = self.eps as f32;
        let y = par_filled(x.len(), c * LN_ROWS, |i, y| {
            let x0 = i * c * LN_ROWS;
            ln_rows_fast(&x[x0..x0 + y.len()], g, b, eps, y)
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = gamma.elem_count();
        let (dx, dg, db) = layer_norm_backward(x, gamma, grad, c, self.eps).map_err(to_candle)?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dg, c, dev)?),
            Some(Tensor::from_vec(db, c, dev)?),
        ))
    }
}

/// dx, dγ, dβ of LayerNorm: with x̂ = (x − μ)·r and g′ = g ⊙ γ, dx = r·(g′ − mean(g′) − x̂·mean(g′ ⊙ x̂)),
/// dγ = Σ_rows g ⊙ x̂, dβ = Σ_rows g. The per-parameter sums are reduced block by block in a fixed order.
fn layer_norm_backward(
    x: &Tensor,
    gamma: &Tensor,
    grad: &Tensor,
    c: usize,
    eps: f64,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let eps = eps as f32;
    let name = "dgm-layer-norm backward";
    let out = with_data(name, x, |x| {
        with_data(name, gamma, |gm| {
            with_data(name, grad, |g| {
                let mut dx = vec![0f32; x.len()];
                let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
                    .par_chunks_mut(c * LN_ROWS)
                    .zip(x.par_chunks(c * LN_ROWS))
                    .zip(g.par_chunks(c * LN_ROWS))
                    .map(|((dx, x), g)| {
                        let (mut dg, mut db) = (vec![0f32; c], vec![0f32; c]);
                        let mut scratch = vec![0f32; 2 * c];
                        ln_grad_rows_fast(x, g, gm, eps, dx, &mut dg, &mut db, &mut scratch);
                        (dg, db)
                    })
                    .collect();
                let (mut dg, mut db) = (vec![0f32; c], vec![0f32; c]);
                for (pg, pb) in partial {
                    axpy(&mut dg, 1.0, &pg);
                    axpy(&mut db, 1.0, &pb);
                }
                (dx, dg, db)
            })
        })
    })???;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::testing::{assert_close, value_and_grads};
    use crate::nn::LN_EPS;
    use crate::rng::Rng;
    use candle_core::{DType, Device};

    #[test]
    fn every_instruction_set_build_gives_the_same_bits() {
        let mut rng = Rng::new(5);
        let (rows, c) = (3, 37); // odd width: vector bodies and scalar tails
        let x: Vec<f32> = rng
            .normal_vec(rows * c)
            .iter()
            .map(|v| v * 2.0 + 0.7)
            .collect();
        let (g, b, dy) = (
            rng.normal_vec(c),
            rng.normal_vec(c),
            rng.normal_vec(rows * c),
        );
        crate::nn::kernels::testing::assert_same_bits_on_every_isa("layer norm rows", || {
            let mut y = vec![0f32; rows * c];
            ln_rows_fast(&x, &g, &b, 1e-5, &mut y);
            let (mut dx, mut dg, mut db) = (vec![0f32; rows * c], vec![0f32; c], vec![0f32; c]);
            let mut scratch = vec![0f32; 2 * c];
            ln_grad_rows_fast(&x, &dy, &g, 1e-5, &mut dx, &mut dg, &mut db, &mut scratch);
            [y, dx, dg, db].concat()
        });
    }

    #[test]
    fn layer_norm_kernel_matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        for (m, c, seed) in [(1, 5, 1), (70, 128, 2), (33, 37, 3), (4, 1, 4)] {
            let mut rng = Rng::new(seed);
            // a large common offset checks the variance's numerics
            let x = ((rng.randn((m, c), &dev)? * 2.0)? + 3.0)?;
            let (g, b) = (rng.randn(c, &dev)?, rng.randn(c, &dev)?);
            let r = rng.randn((m, c), &dev)?;
            let run = |stock: bool| {
                value_and_grads(
                    |t| {
                        if stock {
                            layer_norm_stock(&t[0], &t[1], &t[2], LN_EPS)
                        } else {
                            layer_norm(&t[0], &t[1], &t[2], LN_EPS)
                        }
                    },
                    &[x.clone(), g.clone(), b.clone()],
                    &r,
                )
            };
            let tol = if c == 1 { 1e-3 } else { 1e-4 };
            assert_close(
                &run(false)?,
                &run(true)?,
                &["y", "dx", "dγ", "dβ"],
                tol,
                &format!("({m}, {c})"),
            )?;
        }
        // rank 3 input, normalised rows have mean β and (with γ = 1, β = 0) unit variance
        let x = Rng::new(5).randn((2, 3, 64), &dev)?;
        let y = layer_norm(
            &x,
            &Tensor::ones(64, DType::F32, &dev)?,
            &Tensor::zeros(64, DType::F32, &dev)?,
            LN_EPS,
        )?;
        for row in y.flatten_to(1)?.to_vec2::<f32>()? {
            let mean = row.iter().sum::<f32>() / 64.0;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 64.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                "mean {mean} var {var}"
            );
        }
        Ok(())
    }
}
