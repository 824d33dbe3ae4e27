//! Spectral normalisation (Miyato, Kataoka, Koyama & Yoshida 2018, "Spectral normalization for generative
//! adversarial networks"): a layer's weight W, seen as the matrix W ∈ R^{out × n} (a convolution's kernel
//! flattened to n = in·k·k columns, as the paper and PyTorch do), is used as W / σ̂(W), where σ̂ estimates the
//! largest singular value σ(W) by power iteration. Each layer then has Lipschitz constant at most 1 (with
//! 1-Lipschitz activations), the constraint a WGAN-family critic needs, without a gradient penalty.
//!
//! Power iteration keeps a left singular vector estimate u ∈ R^{out} between steps (§2.1, Algorithm 1):
//!
//!   v ← Wᵀu / ‖Wᵀu‖,   u ← W v / ‖W v‖,   σ̂ = uᵀ W v = ‖Wᵀu‖.
//!
//! One iteration per training step suffices because W changes little between steps. Here u is a variable of
//! the model's [`super::Params`] under the layer's name (`…/u`), so it is saved in every checkpoint and a
//! resumed run continues with the same estimate; it never gets a gradient (it is updated in place by
//! [`SpectralNorm::power_iteration`], which a training step calls, never by a forward pass), so optimisers
//! leave it alone. The forward pass computes σ̂ = ‖Wᵀu‖ with u held fixed: its gradient u vᵀ is the
//! paper's (and PyTorch's, which detaches u and v).

use candle_core::Tensor;
use candle_nn::init::Init;
use candle_nn::VarBuilder;

use super::kernels::conv::conv2d;
use super::kernels::linear::{linear, Activation};
use super::layers::torch_uniform;
use crate::{Error, Result};

/// PyTorch's ε in the normalisation of u and v.
const EPS: f64 = 1e-12;

/// The spectral normalisation of one weight tensor (rank ≥ 2, first dimension = outputs).
#[derive(Clone, Debug)]
pub struct SpectralNorm {
    weight: Tensor,
    /// The left singular vector estimate, (out,); a variable without gradient, updated in place.
    u: Tensor,
}

/// x / max(‖x‖, ε) for a vector, on the tensor's device (no copy to the host).
fn unit(x: &Tensor) -> Result<Tensor> {
    let n = x.sqr()?.sum_all()?.sqrt()?.maximum(EPS)?;
    Ok(x.broadcast_div(&n)?)
}

impl SpectralNorm {
    /// Normalises `weight` (a variable of rank ≥ 2); its power-iteration vector is the variable `u` (out,)
    /// under `vb`, drawn N(0, 1) from the run's seed (PyTorch starts from a normal vector too).
    pub fn new(weight: Tensor, vb: VarBuilder) -> Result<Self> {
        if weight.rank() < 2 {
            return Err(Error::invalid(
                "spectral norm",
                format!("needs a weight of rank ≥ 2, got shape {:?}", weight.dims()),
            ));
        }
        let out = weight.dim(0)?;
        let u = vb.get_with_hints(
            out,
            "u",
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        Ok(Self { weight, u })
    }

    /// W as a matrix (out, n), n the product of the other dimensions.
    fn matrix(&self) -> Result<Tensor> {
        let out = self.weight.dim(0)?;
        Ok(self.weight.reshape((out, self.weight.elem_count() / out))?)
    }

    /// Runs `iterations` steps of power iteration on the current weight (no gradient) and stores the new u.
    pub fn power_iteration(&self, iterations: usize) -> Result<()> {
        let w = self.matrix()?.detach(); // (out, n)
        let mut u = unit(&self.u.detach())?; // (out,)
        for _ in 0..iterations {
            let v = unit(&w.t()?.matmul(&u.unsqueeze(1)?)?.squeeze(1)?)?; // (n,)
            u = unit(&w.matmul(&v.unsqueeze(1)?)?.squeeze(1)?)?; // (out,)
        }
        self.u.slice_set(&u.contiguous()?, 0, 0)?;
        Ok(())
    }

    /// σ̂ = ‖Wᵀu‖ with u the stored estimate (normalised) held fixed: a scalar, differentiable in W.
    pub fn sigma(&self) -> Result<Tensor> {
        let u = unit(&self.u.detach())?;
        let wtu = self.matrix()?.t()?.matmul(&u.unsqueeze(1)?)?; // (n, 1)
        Ok(wtu.sqr()?.sum_all()?.sqrt()?)
    }

    /// The normalised weight W / σ̂, of W's shape.
    pub fn weight(&self) -> Result<Tensor> {
        let s = self.sigma()?.maximum(EPS)?;
        Ok(self.weight.broadcast_div(&s)?)
    }

    /// The raw (unnormalised) weight.
    pub fn raw_weight(&self) -> &Tensor {
        &self.weight
    }
}

/// A fully connected layer `y = x (W/σ̂)ᵀ + b` (W (out, in), PyTorch's init, as [`super::Linear::new`]).
#[derive(Clone, Debug)]
pub struct SnLinear {
    sn: SpectralNorm,
    bias: Tensor,
}

impl SnLinear {
    /// Variables `weight` (out, in), `bias` (out,) and `u` (out,) under `vb`.
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let init = torch_uniform(in_dim);
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
        let bias = vb.get_with_hints(out_dim, "bias", init)?;
        Ok(Self {
            sn: SpectralNorm::new(weight, vb)?,
            bias,
        })
    }

    /// The spectral normalisation of the weight (for [`SpectralNorm::power_iteration`]).
    pub fn spectral(&self) -> &SpectralNorm {
        &self.sn
    }

    /// `(m, in)` → `(m, out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.sn.weight()?, &self.bias, Activation::Identity)
    }
}

/// A k×k convolution with a spectrally normalised kernel (W (out, in, k, k) as a matrix (out, in·k·k)).
#[derive(Clone, Debug)]
pub struct SnConv2d {
    sn: SpectralNorm,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl SnConv2d {
    /// Variables `weight` (out, in, k, k), `bias` (out,) and `u` (out,) under `vb`, PyTorch's init.
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        k: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let init = torch_uniform(in_ch * k * k);
        let weight = vb.get_with_hints((out_ch, in_ch, k, k), "weight", init)?;
        let bias = vb.get_with_hints(out_ch, "bias", init)?;
        Ok(Self {
            sn: SpectralNorm::new(weight, vb)?,
            bias,
            stride,
            padding,
        })
    }

    /// The spectral normalisation of the kernel (for [`SpectralNorm::power_iteration`]).
    pub fn spectral(&self) -> &SpectralNorm {
        &self.sn
    }

    /// `(b, in, h, w)` → `(b, out, h', w')`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(
            x,
            &self.sn.weight()?,
            Some(&self.bias),
            self.stride,
            self.padding,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::linalg::sym_eigenvalues;
    use crate::nn::Params;
    use candle_core::{DType, Device};

    /// The largest singular value of the row-major `m × n` matrix `w`, in f64, from the eigenvalues of W Wᵀ.
    fn sigma_max(w: &[f64], m: usize, n: usize) -> Result<f64> {
        let mut g = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..m {
                g[i * m + j] = (0..n).map(|k| w[i * n + k] * w[j * n + k]).sum();
            }
        }
        let ev = sym_eigenvalues(&g, m)?;
        Ok(ev[m - 1].max(0.0).sqrt())
    }

    fn as_f64(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    }

    /// σ̂ after power iteration equals the largest singular value (by eigen-decomposition in f64), for a
    /// linear weight and a convolution kernel seen as a matrix, and the normalised weight has σ = 1.
    #[test]
    fn power_iteration_finds_the_largest_singular_value() -> Result<()> {
        let params = Params::new(7, &Device::Cpu);
        let vb = params.var_builder();
        let lin = SnLinear::new(12, 9, vb.pp("lin"))?;
        let conv = SnConv2d::new(3, 5, 3, 1, 1, vb.pp("conv"))?;
        for (sn, m, n) in [(lin.spectral(), 9, 12), (conv.spectral(), 5, 27)] {
            let exact = sigma_max(&as_f64(sn.raw_weight())?, m, n)?;
            let before = sn.sigma()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            sn.power_iteration(100)?;
            let est = sn.sigma()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            assert!(
                before < exact * (1.0 + 1e-6),
                "σ̂ ≤ σ always: {before} vs {exact}"
            );
            assert!(
                (est - exact).abs() < 1e-5 * exact,
                "σ̂ {est} vs σ_max {exact} ({m}×{n})"
            );
            let normalised = sigma_max(&as_f64(&sn.weight()?)?, m, n)?;
            assert!((normalised - 1.0).abs() < 1e-5, "σ(W/σ̂) = {normalised}");
        }
        Ok(())
    }

    /// The gradient of σ̂ with respect to W (u held fixed) equals the derivative of the true σ_max by central
    /// finite differences in f64 once u has converged (both are u₁v₁ᵀ), and u itself gets no gradient.
    #[test]
    fn sigma_gradient_matches_finite_differences_of_the_singular_value() -> Result<()> {
        let params = Params::new(3, &Device::Cpu);
        let lin = SnLinear::new(4, 3, params.var_builder())?;
        let sn = lin.spectral();
        sn.power_iteration(200)?;
        let grads = sn.sigma()?.backward()?;
        let g = as_f64(
            grads
                .get(sn.raw_weight())
                .ok_or_else(|| Error::invalid("test", "no gradient for W"))?,
        )?;
        let vars = params.vars();
        let u = vars
            .iter()
            .find(|(k, _)| k == "u")
            .ok_or_else(|| Error::invalid("test", "no variable u"))?;
        assert!(
            grads.get(u.1.as_tensor()).is_none(),
            "u must get no gradient"
        );
        let w = as_f64(sn.raw_weight())?;
        let h = 1e-6;
        for i in 0..w.len() {
            let (mut p, mut q) = (w.clone(), w.clone());
            p[i] += h;
            q[i] -= h;
            let fd = (sigma_max(&p, 3, 4)? - sigma_max(&q, 3, 4)?) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 1e-4,
                "∂σ/∂W[{i}]: autodiff {} vs fd {fd}",
                g[i]
            );
        }
        Ok(())
    }

    /// A forward pass does not move u (only `power_iteration` does), and power iteration is deterministic:
    /// two stores with the same seed end with the same bits.
    #[test]
    fn forward_leaves_u_alone_and_power_iteration_is_deterministic() -> Result<()> {
        let run = || -> Result<(Vec<f32>, Vec<f32>)> {
            let params = Params::new(11, &Device::Cpu);
            let conv = SnConv2d::new(2, 4, 3, 2, 1, params.var_builder())?;
            let x = Tensor::ones((1, 2, 6, 6), DType::F32, &Device::Cpu)?;
            let u0 = conv.spectral().u.flatten_all()?.to_vec1::<f32>()?;
            let y = conv.forward(&x)?;
            assert_eq!(y.dims(), &[1, 4, 3, 3]);
            assert_eq!(conv.spectral().u.flatten_all()?.to_vec1::<f32>()?, u0);
            conv.spectral().power_iteration(3)?;
            let u1 = conv.spectral().u.flatten_all()?.to_vec1::<f32>()?;
            assert_ne!(u1, u0);
            Ok((u1, conv.forward(&x)?.flatten_all()?.to_vec1::<f32>()?))
        };
        assert_eq!(run()?, run()?);
        Ok(())
    }

    #[test]
    fn refuses_a_vector_weight() -> Result<()> {
        let params = Params::new(0, &Device::Cpu);
        let w = Tensor::ones(3, DType::F32, &Device::Cpu)?;
        let e = SpectralNorm::new(w, params.var_builder()).err();
        assert!(e.is_some_and(|e| e.to_string().contains("rank ≥ 2")));
        Ok(())
    }
}
