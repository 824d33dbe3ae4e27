//! Contrastive divergence (Hinton 2002) in the form image EBMs train with (Du & Mordatch 2019): the gradient of the
//! negative log-likelihood of p(x) = exp(−E(x))/Z is E_data[∇E] − E_model[∇E], and the model expectation is taken
//! over negative samples from MCMC (Langevin dynamics from a replay buffer) that carry no gradient themselves:
//!
//!   L = mean E(x⁺) − mean E(x⁻) + α (mean E(x⁺)² + mean E(x⁻)²),
//!
//! the last term (α small, 1 in the paper's units) keeping the energies near zero so their scale cannot drift.

use candle_core::Tensor;

use crate::{Error, Result};

/// The CD loss from the energies of a data batch `(b,)` and of as many negative samples `(b',)` (detached from
/// their sampler), with energy-magnitude weight `alpha` ≥ 0. Returns the loss (a scalar) and, for the log, the
/// two mean energies.
pub fn cd_loss(e_data: &Tensor, e_neg: &Tensor, alpha: f64) -> Result<(Tensor, f64, f64)> {
    if e_data.elem_count() == 0 || e_neg.elem_count() == 0 {
        return Err(Error::invalid(
            "cd",
            "needs at least one data and one negative energy",
        ));
    }
    if !(alpha.is_finite() && alpha >= 0.0) {
        return Err(Error::invalid(
            "model.alpha",
            format!("{alpha} must be a finite number ≥ 0"),
        ));
    }
    let (pos, neg) = (e_data.mean_all()?, e_neg.mean_all()?);
    let mut loss = (&pos - &neg)?;
    if alpha > 0.0 {
        let reg = (e_data.sqr()?.mean_all()? + e_neg.sqr()?.mean_all()?)?;
        loss = (loss + (reg * alpha)?)?;
    }
    let scalar = |t: &Tensor| -> Result<f64> {
        Ok(t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
    };
    Ok((loss, scalar(&pos)?, scalar(&neg)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ebm::buffer::ReplayBuffer;
    use crate::models::ebm::langevin::{langevin, LangevinConfig};
    use crate::nn::Params;
    use crate::rng::Rng;
    use crate::train::optim::{collect_grads, AdamW, AdamWParams};
    use candle_core::{DType, Device, Var};

    /// A quadratic energy E(x) = ½ (x − μ)ᵀ P (x − μ), P = L Lᵀ with L lower-triangular (a Gaussian with
    /// precision P), trained by CD with persistent Langevin chains (a replay buffer, 5 % restarts) on draws of
    /// N(μ*, Σ*): μ → μ* and P⁻¹ → Σ*.
    #[test]
    fn cd_with_persistent_langevin_recovers_a_gaussian() -> Result<()> {
        let dev = Device::Cpu;
        let (mu_true, chol) = ([1.0f32, -1.0], [[1.0f32, 0.0], [0.6, 0.663]]); // Σ* = C Cᵀ
        let sigma = [[1.0f64, 0.6], [0.6, 0.36 + 0.663 * 0.663]];
        let mu = Var::from_tensor(&Tensor::zeros((1, 2), DType::F32, &dev)?)?;
        // L's three free entries (l11, l21, l22), starting at the identity
        let l = Var::from_tensor(&Tensor::new(&[1.0f32, 0.0, 1.0], &dev)?)?;
        let vars = vec![("mu".to_string(), mu.clone()), ("l".to_string(), l.clone())];
        let mut opt = AdamW::new(vars.clone(), AdamWParams::default())?;
        let energy = |x: &Tensor| -> Result<Tensor> {
            // y = Lᵀ (x − μ); E = ½ ‖y‖²
            let d = x.broadcast_sub(mu.as_tensor())?;
            let lv = l.as_tensor();
            let (l11, l21, l22) = (
                lv.narrow(0, 0, 1)?,
                lv.narrow(0, 1, 1)?,
                lv.narrow(0, 2, 1)?,
            );
            let (d1, d2) = (d.narrow(1, 0, 1)?, d.narrow(1, 1, 1)?);
            let y1 = (d1.broadcast_mul(&l11)? + d2.broadcast_mul(&l21)?)?;
            let y2 = d2.broadcast_mul(&l22)?;
            Ok(((y1.sqr()? + y2.sqr()?)?.squeeze(1)? * 0.5)?)
        };
        let params = Params::new(0, &dev);
        let buffer = ReplayBuffer::new(2048, &[2], -4.0, 4.0, params.var_builder())?;
        let sampler = LangevinConfig::exact(20, 0.02);
        let chol_t = Tensor::new(&chol, &dev)?;
        let truth = Tensor::new(&[mu_true], &dev)?;
        let mut rng = Rng::new(4);
        for step in 0..1500 {
            let x = rng
                .randn((256, 2), &dev)?
                .matmul(&chol_t.t()?)?
                .broadcast_add(&truth)?;
            let (start, idx) = buffer.draw(256, 0.05, &mut rng)?;
            let neg = langevin(&energy, &start, &sampler, None, &mut rng)?;
            buffer.write(&idx, &neg)?;
            let (loss, _, _) = cd_loss(&energy(&x)?, &energy(&neg)?, 0.0)?;
            let lr = if step < 1000 { 0.02 } else { 0.005 };
            opt.step(&collect_grads(&vars, &loss.backward()?), lr, 1.0)?;
        }
        let m = mu.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let lv: Vec<f64> = l
            .as_tensor()
            .to_vec1::<f32>()?
            .iter()
            .map(|&v| v as f64)
            .collect();
        // P = L Lᵀ with L = [[l11, 0], [l21, l22]]; Σ = P⁻¹
        let p = [
            [lv[0] * lv[0], lv[0] * lv[1]],
            [lv[0] * lv[1], lv[1] * lv[1] + lv[2] * lv[2]],
        ];
        let det = p[0][0] * p[1][1] - p[0][1] * p[1][0];
        let cov = [
            [p[1][1] / det, -p[0][1] / det],
            [-p[1][0] / det, p[0][0] / det],
        ];
        assert!(
            (m[0] - 1.0).abs() < 0.1 && (m[1] + 1.0).abs() < 0.1,
            "μ {m:?}"
        );
        for i in 0..2 {
            for j in 0..2 {
                assert!(
                    (cov[i][j] - sigma[i][j]).abs() < 0.15,
                    "Σ[{i}][{j}] {} vs {} (Σ {cov:?})",
                    cov[i][j],
                    sigma[i][j]
                );
            }
        }
        Ok(())
    }

    /// Known values: the loss is the mean-energy gap plus α times the mean squared energies; a negative α is
    /// refused by name.
    #[test]
    fn cd_loss_has_its_textbook_value() -> Result<()> {
        let dev = Device::Cpu;
        let pos = Tensor::new(&[1.0f32, 3.0], &dev)?;
        let neg = Tensor::new(&[-1.0f32, 1.0, 0.0], &dev)?;
        let (loss, mp, mn) = cd_loss(&pos, &neg, 0.5)?;
        // (2 − 0) + 0.5 (5 + 2/3)
        let want = 2.0 + 0.5 * (5.0 + 2.0 / 3.0);
        assert!((loss.to_scalar::<f32>()? as f64 - want).abs() < 1e-5);
        assert_eq!((mp, mn), (2.0, 0.0));
        assert!(cd_loss(&pos, &neg, -1.0).is_err_and(|e| e.to_string().contains("model.alpha")));
        Ok(())
    }
}
