//! dgm's layer types. Model files build every linear / conv / norm layer through these types, so that the
//! implementation behind them can be swapped without touching any model file: on the CPU in f32 they run
//! dgm's own kernels ([`super::kernels`]), elsewhere (CUDA, other dtypes, or after
//! [`super::set_stock_ops`]) candle's stock ops. Initialisation follows PyTorch's defaults (or nanoGPT's,
//! for [`Linear::nanogpt`] and [`LayerNorm`]) so that side-by-side benchmarks with PyTorch train the same
//! model.

use candle_core::Tensor;
use candle_nn::init::Init;
use candle_nn::VarBuilder;

use super::kernels::conv::{conv2d, conv2d_residual, conv_transpose2d};
use super::kernels::group_norm::group_norm;
use super::kernels::layer_norm::layer_norm;
use super::kernels::linear::{dense, linear, Activation};
use crate::rng::Rng;
use crate::Result;

/// LayerNorm's ε, as in PyTorch and nanoGPT.
pub const LN_EPS: f64 = 1e-5;

/// PyTorch's default init for a layer with `fan_in` inputs: U(−1/√fan_in, 1/√fan_in) for weight and bias.
pub(crate) fn torch_uniform(fan_in: usize) -> Init {
    let b = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// Applies `f`, a map of rows `(m, in)` → `(m, out)`, to `x: (…, in)` → `(…, out)`: a matrix as it is, any
/// other rank flattened to rows and the result reshaped back.
pub(crate) fn over_rows(
    x: &Tensor,
    out: usize,
    f: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if x.rank() == 2 {
        return f(x); // (m, out)
    }
    let dims = x.dims();
    let (lead, d_in) = dims.split_at(dims.len().saturating_sub(1));
    let x2 = x.reshape((
        lead.iter().product::<usize>(),
        d_in.iter().product::<usize>(),
    ))?; // (m, in)
    let y = f(&x2)?; // (m, out)
    let mut shape = lead.to_vec();
    shape.push(out);
    Ok(y.reshape(shape)?)
}

/// Which of the two linear kernels a [`Linear`] runs on (see [`super::kernels::linear`]: they compute the
/// same function but sum in different orders, so each model keeps the one its numbers were made with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinearKernel {
    /// [`linear`]: gemm's own threading, activations fused in.
    Fused,
    /// [`dense`]: products split into blocks of rows over the threads (transformer shapes).
    RowSplit,
}

/// A fully connected layer `y = x Wᵀ + b`, W of shape (out, in) as in PyTorch. Two constructors, one per
/// family of models: [`Linear::new`] (PyTorch's init and the fused-activation kernel) and
/// [`Linear::nanogpt`] (nanoGPT's init, an optional bias, and the row-split kernel of the transformer).
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    /// The bias variable, or a constant zero vector when the layer has none.
    bias: Tensor,
    kernel: LinearKernel,
}

impl Linear {
    /// A linear layer with bias, variables `weight` (out, in) and `bias` (out,) under `vb`, initialised as
    /// PyTorch does, U(−1/√in, 1/√in) for weight and bias; runs on [`linear`].
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let init = torch_uniform(in_dim);
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
        let bias = vb.get_with_hints(out_dim, "bias", init)?;
        Ok(Self {
            weight,
            bias,
            kernel: LinearKernel::Fused,
        })
    }

    /// A linear layer whose weight and bias start at zero (the last layer of a flow's conditioner, so that
    /// each coupling starts as the identity); runs on [`linear`].
    pub fn zeros(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints((out_dim, in_dim), "weight", Init::Const(0.0))?,
            bias: vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?,
            kernel: LinearKernel::Fused,
        })
    }

    /// A linear layer as nanoGPT builds it: `weight` (out, in) drawn N(0, std²), `bias` (out,) zero, or no
    /// bias variable at all when `bias` is false; runs on [`dense`].
    pub fn nanogpt(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        std: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get_with_hints(
            (out_dim, in_dim),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        )?;
        let bias = if bias {
            vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?
        } else {
            Tensor::zeros(out_dim, vb.dtype(), vb.device())?
        };
        Ok(Self {
            weight,
            bias,
            kernel: LinearKernel::RowSplit,
        })
    }

    /// The weight (out, in).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias (out,) (zeros for a layer built without one).
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// Applies the layer to `(…, in)` → `(…, out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Activation::Identity)
    }

    /// `act(x Wᵀ + b)`, `(…, in)` → `(…, out)`; on the CPU the matmul, bias and activation (relu, tanh,
    /// identity) run as one fused op with its own backward ([`linear`]).
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        over_rows(x, self.bias.dim(0)?, |x2| self.forward_2d(x2, act))
    }

    /// `act(x Wᵀ + b)` for `x: (m, in)` on this layer's kernel.
    fn forward_2d(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        match self.kernel {
            LinearKernel::Fused => linear(x, &self.weight, &self.bias, act),
            LinearKernel::RowSplit => act.forward(&dense(x, &self.weight, &self.bias)?),
        }
    }
}

/// A 2-D convolution with bias, weight (out, in, k, k) as in PyTorch's `Conv2d`, initialised as PyTorch does.
/// On the CPU it runs on dgm's GEMM-based kernels ([`super::kernels::conv`]), elsewhere on candle's stock op.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// A k×k convolution with bias, variables `weight` (out, in, k, k) and `bias` (out,) under `vb`.
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
            weight,
            bias,
            stride,
            padding,
        })
    }

    /// A k×k convolution whose weight and bias start at zero (Glow's `ZeroConv2d`).
    pub fn zeros(
        in_ch: usize,
        out_ch: usize,
        k: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints((out_ch, in_ch, k, k), "weight", Init::Const(0.0))?,
            bias: vb.get_with_hints(out_ch, "bias", Init::Const(0.0))?,
            stride,
            padding,
        })
    }

    /// `(b, in, h, w)` → `(b, out, h', w')` with h' = (h + 2·padding − k) / stride + 1.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, &self.weight, Some(&self.bias), self.stride, self.padding)
    }

    /// `forward(x) + shift[:, :, None, None]` with `shift: (b, out)` — one value per image and output channel
    /// (a ResBlock's time embedding) — added by the convolution kernel while it writes its output rather than
    /// by a broadcast add over it.
    pub fn forward_shifted(&self, x: &Tensor, shift: &Tensor) -> Result<Tensor> {
        let bias = shift.broadcast_add(&self.bias)?; // (b, out)
        conv2d(x, &self.weight, Some(&bias), self.stride, self.padding)
    }

    /// `forward(x) + r` for `r` shaped like the output (a residual connection), added by the convolution
    /// kernel while it writes its output where it can ([`super::kernels::conv::conv2d_residual`]).
    pub fn forward_residual(&self, x: &Tensor, r: &Tensor) -> Result<Tensor> {
        conv2d_residual(x, &self.weight, &self.bias, r, self.stride, self.padding)
    }
}

/// A 2-D transposed convolution with bias, weight (in, out, k, k) as in PyTorch's `ConvTranspose2d`
/// (the gradient of a convolution with respect to its input), initialised as PyTorch does.
#[derive(Clone, Debug)]
pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    output_padding: usize,
}

impl ConvTranspose2d {
    /// A k×k transposed convolution; `output_padding` (< stride) adds rows / columns on the bottom / right
    /// so that the output size is (h − 1)·stride − 2·padding + k + output_padding.
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        k: usize,
        stride: usize,
        padding: usize,
        output_padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        // PyTorch computes fan_in from weight.size(1) · k · k = out_ch · k · k for a transposed conv.
        let init = torch_uniform(out_ch * k * k);
        let weight = vb.get_with_hints((in_ch, out_ch, k, k), "weight", init)?;
        let bias = vb.get_with_hints(out_ch, "bias", init)?;
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
            output_padding,
        })
    }

    /// `(b, in, h, w)` → `(b, out, h', w')`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv_transpose2d(
            x,
            &self.weight,
            Some(&self.bias),
            self.stride,
            self.padding,
            self.output_padding,
        )
    }
}

/// Group normalisation (Wu & He, 2018) with a per-channel affine, `weight` initialised to 1 and `bias` to
/// 0, ε = 1e-5 as in PyTorch. [`GroupNorm::forward_silu`] fuses the SiLU that usually follows it.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// `groups` groups over `channels` channels (`channels` must be a multiple of `groups`).
    pub fn new(groups: usize, channels: usize, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(crate::Error::invalid(
                "group norm groups",
                format!("{channels} channels cannot be split into {groups} groups; use a divisor of {channels}"),
            ));
        }
        let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        Ok(Self {
            weight,
            bias,
            groups,
            eps: 1e-5,
        })
    }

    /// `(b, c, …)` → same shape, normalised over each group of channels and all positions.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        group_norm(x, &self.weight, &self.bias, self.groups, self.eps, false)
    }

    /// `silu(group_norm(x))` in one pass (forward and backward) on the CPU.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        group_norm(x, &self.weight, &self.bias, self.groups, self.eps, true)
    }
}

/// LayerNorm (Ba et al. 2016) over the last dimension, `weight` initialised to 1 and `bias` (optional, as
/// nanoGPT's `bias = False`) to 0, ε = [`LN_EPS`].
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    /// The bias variable, or a constant zero vector when the layer has none.
    bias: Tensor,
}

impl LayerNorm {
    /// A LayerNorm over `dim` features; variables `weight` (dim,) and, with `bias`, `bias` (dim,) under `vb`.
    pub fn new(dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let bias = if bias {
            vb.get_with_hints(dim, "bias", Init::Const(0.0))?
        } else {
            Tensor::zeros(dim, vb.dtype(), vb.device())?
        };
        Ok(Self { weight, bias })
    }

    /// `(…, dim)` → same shape: γ ⊙ (x − μ) / √(σ² + ε) + β over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, LN_EPS)
    }
}

/// Nearest-neighbour 2× upsampling: `(b, c, h, w)` → `(b, c, 2h, 2w)` (dgm's kernel on the CPU, see
/// [`super::kernels::resample`]).
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    super::kernels::resample::upsample2x(x)
}

/// Dropout: each element zeroed with probability `p`, the rest scaled by 1/(1 − p), the mask drawn from `rng`.
pub fn dropout(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let scale = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.uniform_f64() < p { 0.0 } else { scale })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

/// An embedding table (n, dim), e.g. for class labels.
#[derive(Clone, Debug)]
pub struct Embedding {
    table: Tensor,
}

impl Embedding {
    /// `n` embeddings of size `dim`, initialised N(0, 1) as in PyTorch.
    pub fn new(n: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        let table = vb.get_with_hints(
            (n, dim),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        Ok(Self { table })
    }

    /// `(b,)` u32 indices → `(b, dim)`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.table.index_select(ids, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Params;
    use candle_core::{DType, Device, Var};

    /// Same values as nearest-neighbour up-sampling; the gradient of each input pixel is the sum of its 2×2
    /// copies' gradients.
    #[test]
    fn upsample2x_copies_pixels_and_sums_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_vec(
            (0..24).map(|v| v as f32).collect::<Vec<f32>>(),
            (1, 2, 3, 4),
            &dev,
        )?;
        let y = upsample2x(&x)?;
        assert_eq!(y.dims(), &[1, 2, 6, 8]);
        let want = x.upsample_nearest2d(6, 8)?;
        assert_eq!(
            y.flatten_all()?.to_vec1::<f32>()?,
            want.flatten_all()?.to_vec1::<f32>()?
        );
        // weights r = position index: dL/dx = Σ over the 2×2 block of r
        let r = Tensor::arange(0f32, 96f32, &dev)?.reshape((1, 2, 6, 8))?;
        let g = (y * &r)?.sum_all()?.backward()?;
        let gx = g.get(&x).map(|t| t.flatten_all()).transpose()?;
        let gx = gx
            .map(|t| t.to_vec1::<f32>())
            .transpose()?
            .unwrap_or_default();
        let (c, i, j) = (1usize, 2usize, 3usize);
        let r = |a: usize, b: usize| (c * 48 + a * 8 + b) as f32;
        let want =
            r(2 * i, 2 * j) + r(2 * i, 2 * j + 1) + r(2 * i + 1, 2 * j) + r(2 * i + 1, 2 * j + 1);
        assert_eq!(gx[c * 12 + i * 4 + j], want);
        Ok(())
    }

    #[test]
    fn linear_is_x_w_plus_b_for_any_leading_shape() -> Result<()> {
        let dev = Device::Cpu;
        let p = Params::new(0, &dev);
        let l = Linear::new(3, 2, p.var_builder())?;
        let snap = p.snapshot()?;
        let (w, b) = (
            snap["weight"].to_vec2::<f32>()?,
            snap["bias"].to_vec1::<f32>()?,
        );
        assert!(w
            .iter()
            .flatten()
            .chain(&b)
            .all(|v| v.abs() <= 1.0 / 3f32.sqrt()));
        let x = Tensor::new(&[[[1f32, 2., 3.], [0., -1., 0.5]]], &dev)?; // (1, 2, 3)
        let y = l.forward(&x)?.to_vec3::<f32>()?;
        let xv = x.to_vec3::<f32>()?;
        for r in 0..2 {
            for o in 0..2 {
                let want: f32 = (0..3).map(|i| xv[0][r][i] * w[o][i]).sum::<f32>() + b[o];
                assert!((y[0][r][o] - want).abs() < 1e-6);
            }
        }
        Ok(())
    }

    #[test]
    fn dropout_zeroes_a_fraction_p_and_rescales_the_rest() -> Result<()> {
        let dev = Device::Cpu;
        let n = 40_000;
        let x = Tensor::ones(n, DType::F32, &dev)?;
        let y = dropout(&x, 0.25, &mut Rng::new(1))?.to_vec1::<f32>()?;
        let zeros = y.iter().filter(|v| **v == 0.0).count() as f64 / n as f64;
        // 5 standard errors of a Bernoulli(0.25) frequency
        assert!(
            (zeros - 0.25).abs() < 5.0 * (0.25f64 * 0.75 / n as f64).sqrt(),
            "{zeros}"
        );
        assert!(y.iter().all(|v| *v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        assert_eq!(
            dropout(&x, 0.0, &mut Rng::new(1))?.to_vec1::<f32>()?,
            vec![1.0; n]
        );
        Ok(())
    }
}
