//! Noise-contrastive estimation (Gutmann & Hyvärinen 2010): an unnormalised model log p_θ(x) = −E_θ(x) − c, with
//! c a learned scalar standing in for log Z, is trained as a classifier between data and ν times as many draws
//! from a tractable noise density q. With G(u) = log p_θ(u) − log q(u) − log ν,
//!
//!   J(θ, c) = −E_data[log σ(G(x))] − ν E_q[log(1 − σ(G(y)))],
//!
//! whose minimiser over unrestricted models is p_θ = p_data, normalised: c converges to log Z of exp(−E_θ), which is
//! what makes NCE a likelihood-based estimator that never computes Z. The noise must cover the data (q > 0 where
//! p_data > 0) and be close enough to it for the classification to stay informative.

use candle_core::Tensor;

use crate::distributions::softplus;
use crate::{Error, Result};

/// The NCE loss J from the model's and the noise density's log-densities at the `n` data points `(n,)` and at the
/// `m` noise draws `(m,)` (ν = m / n): the mean over the data of softplus(−G(x)) plus ν times the mean over the
/// noise of softplus(G(y)). A scalar, differentiable in the model's terms.
pub fn nce_loss(
    log_model_data: &Tensor,
    log_noise_data: &Tensor,
    log_model_noise: &Tensor,
    log_noise_noise: &Tensor,
) -> Result<Tensor> {
    let (n, m) = (log_model_data.elem_count(), log_model_noise.elem_count());
    if n == 0 || m == 0 || log_noise_data.elem_count() != n || log_noise_noise.elem_count() != m {
        return Err(Error::invalid(
            "nce",
            format!(
                "needs data and noise terms of matching sizes, got {n} / {} data and {m} / {} noise",
                log_noise_data.elem_count(),
                log_noise_noise.elem_count()
            ),
        ));
    }
    let log_nu = (m as f64 / n as f64).ln();
    let g_data = ((log_model_data - log_noise_data)? - log_nu)?;
    let g_noise = ((log_model_noise - log_noise_noise)? - log_nu)?;
    let data_term = softplus(&g_data.neg()?)?.mean_all()?;
    let noise_term = (softplus(&g_noise)?.mean_all()? * (m as f64 / n as f64))?;
    Ok((data_term + noise_term)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::train::optim::{collect_grads, AdamW, AdamWParams};
    use candle_core::{DType, Device, Var};

    /// log N(x; μ, s²I) in 2-D for rows of `x` (n, 2): (n,).
    fn log_gauss(x: &Tensor, mu: &Tensor, s: f64) -> Result<Tensor> {
        let c = (2.0 * std::f64::consts::PI * s * s).ln();
        Ok(((x.broadcast_sub(mu)?.sqr()?.sum(1)? * (-0.5 / (s * s)))? - c)?)
    }

    /// An unnormalised Gaussian energy E = ½‖x − μ‖²/s² with μ and the normaliser c learned by NCE from data of
    /// N(μ*, s²I) against noise N(0, 1.5²I): μ → μ* and c → log Z = log 2πs², the value no step computed.
    #[test]
    fn nce_recovers_the_mean_and_the_log_normaliser() -> Result<()> {
        let dev = Device::Cpu;
        let (s, q) = (0.7f64, 1.5f64);
        let truth = Tensor::new(&[[1.0f32, -0.5]], &dev)?;
        let mu = Var::from_tensor(&Tensor::zeros((1, 2), DType::F32, &dev)?)?;
        let c = Var::from_tensor(&Tensor::zeros(1, DType::F32, &dev)?)?;
        let vars = vec![("mu".to_string(), mu.clone()), ("c".to_string(), c.clone())];
        let mut opt = AdamW::new(vars.clone(), AdamWParams::default())?;
        let origin = Tensor::zeros((1, 2), DType::F32, &dev)?;
        let mut rng = Rng::new(1);
        let log_model = |x: &Tensor| -> Result<Tensor> {
            let e = (x.broadcast_sub(mu.as_tensor())?.sqr()?.sum(1)? * (0.5 / (s * s)))?;
            Ok(e.neg()?.broadcast_sub(c.as_tensor())?)
        };
        for step in 0..600 {
            let x = (rng.randn((512, 2), &dev)? * s)?.broadcast_add(&truth)?;
            let y = (rng.randn((512, 2), &dev)? * q)?;
            let loss = nce_loss(
                &log_model(&x)?,
                &log_gauss(&x, &origin, q)?,
                &log_model(&y)?,
                &log_gauss(&y, &origin, q)?,
            )?;
            let lr = if step < 400 { 0.05 } else { 0.01 };
            opt.step(&collect_grads(&vars, &loss.backward()?), lr, 1.0)?;
        }
        let got_mu = mu.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let got_c = c.as_tensor().to_vec1::<f32>()?[0] as f64;
        let log_z = (2.0 * std::f64::consts::PI * s * s).ln();
        assert!(
            (got_mu[0] - 1.0).abs() < 0.05 && (got_mu[1] + 0.5).abs() < 0.05,
            "μ {got_mu:?}"
        );
        assert!((got_c - log_z).abs() < 0.05, "c {got_c} vs log Z {log_z}");
        Ok(())
    }

    /// Known values: with G ≡ 0 and ν = 1, J = 2 log 2; mismatched sizes are refused.
    #[test]
    fn nce_loss_has_its_textbook_value() -> Result<()> {
        let dev = Device::Cpu;
        let z = Tensor::zeros(4, DType::F32, &dev)?;
        let j = nce_loss(&z, &z, &z, &z)?.to_scalar::<f32>()? as f64;
        assert!((j - 2.0 * std::f64::consts::LN_2).abs() < 1e-6, "{j}");
        let three = Tensor::zeros(3, DType::F32, &dev)?;
        assert!(nce_loss(&z, &three, &z, &z).is_err());
        Ok(())
    }
}
