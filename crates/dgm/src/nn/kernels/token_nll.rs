//! The language model's loss, −log softmax(logits)[target] per row, as one CPU kernel (one pass forward;
//! backward softmax − one-hot).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::{cpu_f32, to_candle, with_data};
use crate::{Error, Result};

/// −log softmax(logits)[target] per row: `logits: (m, V)` f32, `targets: (m,)` u32 → `(m,)` nats. dgm's CPU
/// kernel (one pass, backward softmax − one-hot) on f32 CPU tensors, candle's ops elsewhere.
pub fn token_nll(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (m, _) = logits.dims2()?;
    if targets.dims() != [m] {
        return Err(Error::invalid(
            "token_nll",
            format!("{:?} targets for {m} rows of logits", targets.dims()),
        ));
    }
    if crate::nn::use_cpu_kernel(logits) {
        let targets = targets.to_dtype(DType::U32)?.contiguous()?;
        return Ok(logits.contiguous()?.apply_op2(&targets, TokenNllOp)?);
    }
    token_nll_stock(logits, targets)
}

/// [`token_nll`] composed from candle's ops (max-shifted log-sum-exp, the max detached, and a gather).
pub fn token_nll_stock(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach(); // (m, 1)
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?; // (m, 1)
    let picked = shifted.gather(&targets.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?; // (m, 1)
    Ok((lse - picked)?.squeeze(1)?)
}

/// The CPU op behind [`token_nll`]: `(logits, targets)`.
struct TokenNllOp;

/// Softmax of one row of logits into `p`; returns log Σ exp(ℓ − max) and the max.
#[inline(always)]
fn row_softmax(l: &[f32], p: &mut [f32]) -> (f32, f32) {
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for (p, &l) in p.iter_mut().zip(l) {
        *p = (l - max).exp();
        sum += f64::from(*p);
    }
    let inv = (1.0 / sum) as f32;
    p.iter_mut().for_each(|v| *v *= inv);
    (sum.ln() as f32, max)
}

impl CustomOp2 for TokenNllOp {
    fn name(&self) -> &'static str {
        "dgm-token-nll"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let logits = cpu_f32(self.name(), s1, l1)?;
        let (CpuStorage::U32(t), Some((a, b))) = (s2, l2.contiguous_offsets()) else {
            candle_core::bail!("dgm-token-nll: targets must be contiguous u32")
        };
        let targets = &t[a..b];
        let (m, v) = l1.shape().dims2()?;
        if let Some((i, &bad)) = targets.iter().enumerate().find(|(_, &y)| y as usize >= v) {
            candle_core::bail!("dgm-token-nll: target {bad} in row {i} is outside the {v} logits");
        }
        let mut nll = vec![0f32; m];
        nll.par_iter_mut()
            .zip(logits.par_chunks(v.max(1)))
            .zip(targets.par_iter())
            .for_each(|((o, l), &y)| {
                let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = l.iter().map(|&x| f64::from((x - max).exp())).sum();
                *o = (sum.ln() as f32) + max - l[y as usize];
            });
        Ok((CpuStorage::F32(nll), Shape::from(m)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _nll: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (m, v) = logits.dims2()?;
        let targets = targets.to_vec1::<u32>()?;
        let g = grad.to_vec1::<f32>()?;
        let dl = with_data("dgm-token-nll backward", logits, |l| {
            let mut dl = vec![0f32; m * v];
            dl.par_chunks_mut(v.max(1))
                .zip(l.par_chunks(v.max(1)))
                .enumerate()
                .for_each(|(i, (d, l))| {
                    row_softmax(l, d);
                    d[targets[i] as usize] -= 1.0;
                    d.iter_mut().for_each(|x| *x *= g[i]);
                });
            dl
        })
        .map_err(to_candle)?;
        Ok((Some(Tensor::from_vec(dl, (m, v), logits.device())?), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::testing::{assert_close, value_and_grads};
    use crate::rng::Rng;
    use candle_core::Device;

    #[test]
    fn token_nll_kernel_matches_composed_ops_and_known_values() -> Result<()> {
        let dev = Device::Cpu;
        let (m, v) = (37, 65);
        let mut rng = Rng::new(9);
        let logits = (rng.randn((m, v), &dev)? * 4.0)?;
        let targets: Vec<u32> = (0..m).map(|_| rng.below(v) as u32).collect();
        let targets = Tensor::new(targets.as_slice(), &dev)?;
        let r = rng.randn(m, &dev)?;
        let ours = value_and_grads(
            |t| token_nll(&t[0], &targets),
            std::slice::from_ref(&logits),
            &r,
        )?;
        let stock = value_and_grads(
            |t| token_nll_stock(&t[0], &targets),
            std::slice::from_ref(&logits),
            &r,
        )?;
        assert_close(&ours, &stock, &["nll", "dlogits"], 1e-5, "token_nll")?;
        // uniform logits: ln V whatever the target; the gradient of each row sums to zero
        let flat = Tensor::zeros((3, v), DType::F32, &dev)?;
        let nll = token_nll(&flat, &Tensor::new(&[0u32, 5, 64], &dev)?)?.to_vec1::<f32>()?;
        assert!(
            nll.iter().all(|x| (x - (v as f32).ln()).abs() < 1e-5),
            "{nll:?}"
        );
        let rows = ours[1].sum(1)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(rows < 1e-5);
        // a target outside the logits is an error
        assert!(token_nll(&flat, &Tensor::new(&[0u32, 5, 65], &dev)?).is_err());
        Ok(())
    }
}
