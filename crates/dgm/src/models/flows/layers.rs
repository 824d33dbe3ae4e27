//! The invertible layers the flows are built from, each with its exact log-determinant:
//!
//! * [`ActNorm`] (Glow §3.1): y = exp(s) ⊙ (x + b) per channel; log|det| = H·W·Σ s. Initialised from data
//!   so that the first batch comes out with zero mean and unit variance per channel ([`Bijection::data_init`]).
//! * [`InvConv1x1`] (Glow §3.2): y = W x at every pixel, W = P L (U + diag(sign ⊙ exp(log_s))) (the LU
//!   parameterisation, eq. 10); log|det| = H·W·Σ log_s. P and the signs are fixed, drawn from a seed as the
//!   LU decomposition of a random rotation; L is unit lower and U strictly upper triangular.
//! * [`AffineCoupling`] (RealNVP §3.3, Glow §3.3): the masked part x_a passes unchanged and conditions the
//!   rest, y_b = x_b ⊙ scale(x_a) + shift(x_a), log|det| = Σ log scale. The mask is a channel split, a
//!   checkerboard (images) or a half split (vectors), each optionally flipped; the scale is RealNVP's
//!   exp(tanh(·)) or Glow's sigmoid(· + 2). The conditioner's last layer starts at zero, so every coupling
//!   starts as the identity (exp(tanh)) or as a fixed scale σ(2) ≈ 0.88 without shift (sigmoid, as Glow).
//! * [`Logit`]: pixels in [0, 1] to logit space, y = logit(α + (1 − 2α) x) (RealNVP §4.1), with its
//!   log-determinant counted, or the shift y = x − ½ (Glow).
//! * [`Reverse`]: the order of the channels (or dimensions) reversed; log|det| = 0.
//!
//! Shapes: images `(b, c, h, w)`, vectors `(b, d)`; every log-determinant is per example, `(b,)`.

use candle_core::{DType, Device, Tensor};
use candle_nn::init::Init;
use candle_nn::VarBuilder;

use crate::nn::{Conv2d, Linear};
use crate::rng::Rng;
use crate::{Error, Result};

/// An invertible map with a tractable Jacobian determinant.
pub trait Bijection: Send + Sync {
    /// y = f(x) and log|det ∂y/∂x| per example `(b,)`.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)>;

    /// x = f⁻¹(y) and log|det ∂x/∂y| per example `(b,)` (the negative of the forward's at that x).
    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)>;

    /// Data-dependent initial values of this layer's variables from a batch `x` of its inputs, by full
    /// variable name, and the layer's output on `x` with those values. Default: no such variables, the
    /// output of [`Bijection::forward`].
    fn data_init(&self, x: &Tensor) -> Result<(Vec<(String, Tensor)>, Tensor)> {
        Ok((Vec::new(), self.forward(x)?.0))
    }
}

/// Sums `(b, …)` to `(b,)`.
pub fn sum_per_example(t: &Tensor) -> Result<Tensor> {
    let b = t.dim(0)?;
    Ok(t.reshape((b, ()))?.sum(1)?)
}

/// Number of positions each channel has: H·W for images, 1 for vectors.
fn positions(x: &Tensor) -> usize {
    x.dims()[2..].iter().product()
}

/// A per-channel parameter `(c,)` broadcast against `x` (channels on dim 1).
fn per_channel(p: &Tensor, x: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1, p.dim(0)?];
    shape.extend(std::iter::repeat_n(1, x.rank() - 2));
    Ok(p.reshape(shape)?.broadcast_as(x.shape())?)
}

/// Activation normalisation: y = exp(s) ⊙ (x + b), per channel.
pub struct ActNorm {
    log_scale: Tensor,
    bias: Tensor,
    prefix: String,
}

impl ActNorm {
    /// An ActNorm over `channels` channels (variables `log_scale` and `bias`, both zero until
    /// [`Bijection::data_init`]).
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            log_scale: vb.get_with_hints(channels, "log_scale", Init::Const(0.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            prefix: vb.prefix(),
        })
    }
}

impl Bijection for ActNorm {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let y = (x.broadcast_add(&per_channel(&self.bias, x)?)?
            * per_channel(&self.log_scale.exp()?, x)?)?;
        let ld = (self.log_scale.sum_all()? * positions(x) as f64)?;
        Ok((y, ld.broadcast_as(x.dim(0)?)?.contiguous()?))
    }

    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)> {
        let x =
            ((y * per_channel(&self.log_scale.neg()?.exp()?, y)?)? - per_channel(&self.bias, y)?)?;
        let ld = (self.log_scale.sum_all()? * -(positions(y) as f64))?;
        Ok((x, ld.broadcast_as(y.dim(0)?)?.contiguous()?))
    }

    /// b = −mean and s = −log(std + 1e-6) of each channel over the batch and positions (Glow §3.1).
    fn data_init(&self, x: &Tensor) -> Result<(Vec<(String, Tensor)>, Tensor)> {
        let c = x.dim(1)?;
        // (b, c, …) → (c, b·positions)
        let flat = x.detach().transpose(0, 1)?.contiguous()?.reshape((c, ()))?;
        let mean = flat.mean(1)?;
        let var = flat.broadcast_sub(&mean.unsqueeze(1)?)?.sqr()?.mean(1)?;
        let log_scale = ((var.sqrt()? + 1e-6)?.log()?.neg()?).contiguous()?;
        let bias = mean.neg()?.contiguous()?;
        let y = (x.broadcast_add(&per_channel(&bias, x)?)? * per_channel(&log_scale.exp()?, x)?)?;
        let name = |n: &str| format!("{}.{n}", self.prefix);
        Ok((
            vec![(name("log_scale"), log_scale), (name("bias"), bias)],
            y,
        ))
    }
}

/// `m` (c × c, row-major, f64) as a `(c, c)` tensor of `dtype`.
fn matrix(m: &[f64], c: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(m.to_vec(), (c, c), dev)?.to_dtype(dtype)?)
}

/// A random rotation (c × c, f64): Gram–Schmidt on a Gaussian matrix drawn from `rng`.
fn random_rotation(c: usize, rng: &mut Rng) -> Vec<f64> {
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(c);
    while q.len() < c {
        let mut v: Vec<f64> = (0..c).map(|_| rng.normal() as f64).collect();
        for u in &q {
            let d: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
        }
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if n > 1e-6 {
            q.push(v.into_iter().map(|a| a / n).collect());
        }
    }
    q.concat()
}

/// LU decomposition with partial pivoting of a c × c matrix: (P, L, U) with m = P L U, L unit lower
/// triangular, all row-major f64.
pub(super) fn lu(m: &[f64], c: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut u = m.to_vec();
    let mut l = vec![0.0; c * c];
    let mut perm: Vec<usize> = (0..c).collect();
    for k in 0..c {
        let p = (k..c)
            .max_by(|&a, &b| u[a * c + k].abs().total_cmp(&u[b * c + k].abs()))
            .unwrap_or(k);
        if p != k {
            for j in 0..c {
                u.swap(k * c + j, p * c + j);
                l.swap(k * c + j, p * c + j);
            }
            perm.swap(k, p);
        }
        for i in k + 1..c {
            let f = u[i * c + k] / u[k * c + k];
            l[i * c + k] = f;
            for j in k..c {
                u[i * c + j] -= f * u[k * c + j];
            }
        }
    }
    for i in 0..c {
        l[i * c + i] = 1.0;
    }
    // rows were permuted: P_rows m = L U, so m = Pᵀ L U with (Pᵀ)[perm[i]][i] = 1
    let mut p = vec![0.0; c * c];
    for (i, &r) in perm.iter().enumerate() {
        p[r * c + i] = 1.0;
    }
    (p, l, u)
}

/// The inverse of a c × c matrix (f64, Gauss–Jordan with partial pivoting); `None` when it is singular.
pub fn invert(m: &[f64], c: usize) -> Option<Vec<f64>> {
    let mut a = m.to_vec();
    let mut inv: Vec<f64> = (0..c * c)
        .map(|i| if i / c == i % c { 1.0 } else { 0.0 })
        .collect();
    for k in 0..c {
        let p = (k..c).max_by(|&x, &y| a[x * c + k].abs().total_cmp(&a[y * c + k].abs()))?;
        if a[p * c + k].abs() < 1e-300 {
            return None;
        }
        for j in 0..c {
            a.swap(k * c + j, p * c + j);
            inv.swap(k * c + j, p * c + j);
        }
        let d = a[k * c + k];
        for j in 0..c {
            a[k * c + j] /= d;
            inv[k * c + j] /= d;
        }
        for i in 0..c {
            if i != k {
                let f = a[i * c + k];
                for j in 0..c {
                    a[i * c + j] -= f * a[k * c + j];
                    inv[i * c + j] -= f * inv[k * c + j];
                }
            }
        }
    }
    Some(inv)
}

/// Applies the channel matrix `w` (c, c) at every position: `(b, c, …)` → `(b, c, …)`.
fn mix_channels(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let c = dims[1];
    if x.rank() == 2 {
        return Ok(x.matmul(&w.t()?)?);
    }
    let b = dims[0];
    let flat = x.reshape((b, c, ()))?; // (b, c, P)
    let y = w.broadcast_left(b)?.matmul(&flat)?; // (b, c, P)
    Ok(y.reshape(dims)?)
}

/// Invertible 1×1 convolution with the LU parameterisation.
pub struct InvConv1x1 {
    p: Tensor,
    l_mask: Tensor,
    u_mask: Tensor,
    l0: Tensor,
    u0: Tensor,
    sign: Tensor,
    log_s0: Tensor,
    dl: Tensor,
    du: Tensor,
    dlog_s: Tensor,
    channels: usize,
}

impl InvConv1x1 {
    /// A 1×1 convolution over `channels` channels starting at a random rotation drawn from `seed` (fixed
    /// parts rebuilt from it on load); the variables `l`, `u` and `log_s` are offsets from that start.
    pub fn new(channels: usize, seed: u64, vb: VarBuilder) -> Result<Self> {
        let c = channels;
        let (dt, dev) = (vb.dtype(), vb.device().clone());
        let w0 = random_rotation(c, &mut Rng::named(seed, &format!("{}.w0", vb.prefix())));
        let (p, l, u) = lu(&w0, c);
        let diag: Vec<f64> = (0..c).map(|i| u[i * c + i]).collect();
        let strict_u: Vec<f64> = (0..c * c)
            .map(|i| if i % c > i / c { u[i] } else { 0.0 })
            .collect();
        let l_mask: Vec<f64> = (0..c * c)
            .map(|i| if i % c < i / c { 1.0 } else { 0.0 })
            .collect();
        let u_mask: Vec<f64> = (0..c * c)
            .map(|i| if i % c > i / c { 1.0 } else { 0.0 })
            .collect();
        let vec =
            |v: Vec<f64>| -> Result<Tensor> { Ok(Tensor::from_vec(v, c, &dev)?.to_dtype(dt)?) };
        Ok(Self {
            p: matrix(&p, c, dt, &dev)?,
            l_mask: matrix(&l_mask, c, dt, &dev)?,
            u_mask: matrix(&u_mask, c, dt, &dev)?,
            l0: matrix(&l, c, dt, &dev)?,
            u0: matrix(&strict_u, c, dt, &dev)?,
            sign: vec(diag.iter().map(|d| d.signum()).collect())?,
            log_s0: vec(diag.iter().map(|d| d.abs().ln()).collect())?,
            dl: vb.get_with_hints((c, c), "l", Init::Const(0.0))?,
            du: vb.get_with_hints((c, c), "u", Init::Const(0.0))?,
            dlog_s: vb.get_with_hints(c, "log_s", Init::Const(0.0))?,
            channels: c,
        })
    }

    /// log|s|, the log of the absolute diagonal of U: `(c,)`.
    fn log_s(&self) -> Result<Tensor> {
        Ok((&self.log_s0 + &self.dlog_s)?)
    }

    /// W = P L (U + diag(sign ⊙ exp(log_s))): `(c, c)`.
    pub fn weight(&self) -> Result<Tensor> {
        let l = (&self.l0 + (&self.dl * &self.l_mask)?)?; // l0 holds the unit diagonal
        let u = ((&self.u0 + (&self.du * &self.u_mask)?)?
            + diag(&(&self.sign * self.log_s()?.exp()?)?)?)?;
        Ok(self.p.matmul(&l)?.matmul(&u)?)
    }
}

/// A diagonal matrix `(c, c)` from a vector `(c,)` (candle has none).
fn diag(v: &Tensor) -> Result<Tensor> {
    let eye = Tensor::eye(v.dim(0)?, v.dtype(), v.device())?;
    Ok(eye.broadcast_mul(&v.unsqueeze(0)?)?)
}

impl Bijection for InvConv1x1 {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let y = mix_channels(x, &self.weight()?)?;
        let ld = (self.log_s()?.sum_all()? * positions(x) as f64)?;
        Ok((y, ld.broadcast_as(x.dim(0)?)?.contiguous()?))
    }

    /// W⁻¹ is computed in f64 on the host from the current W (sampling and encoding only: no gradient flows
    /// through it).
    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)> {
        let c = self.channels;
        let w: Vec<f64> = self
            .weight()?
            .detach()
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        let inv = invert(&w, c)
            .ok_or_else(|| Error::Unsupported("the 1×1 convolution's matrix is singular".into()))?;
        let x = mix_channels(y, &matrix(&inv, c, y.dtype(), y.device())?)?;
        let ld = (self.log_s()?.sum_all()? * -(positions(y) as f64))?;
        Ok((x, ld.broadcast_as(y.dim(0)?)?.contiguous()?))
    }
}

/// Reverses the order of the channels (images) or dimensions (vectors).
pub struct Reverse;

impl Reverse {
    fn apply(x: &Tensor) -> Result<(Tensor, Tensor)> {
        let c = x.dim(1)?;
        let idx: Vec<u32> = (0..c as u32).rev().collect();
        let idx = Tensor::from_vec(idx, c, x.device())?;
        let zero = Tensor::zeros(x.dim(0)?, x.dtype(), x.device())?;
        Ok((x.index_select(&idx, 1)?, zero))
    }
}

impl Bijection for Reverse {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Reverse::apply(x)
    }

    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)> {
        Reverse::apply(y)
    }
}

/// How pixels in [0, 1] enter the flow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Logit {
    /// y = logit(α + (1 − 2α) x) (RealNVP, α = 0.05).
    Logit(f64),
    /// y = x − ½ (Glow).
    Shift,
}

impl Bijection for Logit {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        match *self {
            Logit::Shift => Ok(((x - 0.5)?, Tensor::zeros(x.dim(0)?, x.dtype(), x.device())?)),
            Logit::Logit(a) => {
                // p = α + (1 − 2α) x and q = 1 − p = α + (1 − 2α)(1 − x), each from its own side (1 − x is
                // exact in f32 for x ≥ ½) so that a small α keeps its precision next to 0 and next to 1
                let p = ((x * (1.0 - 2.0 * a))? + a)?;
                let q = x.affine(-1.0, 1.0)?.affine(1.0 - 2.0 * a, a)?;
                let (log_p, log_q) = (p.log()?, q.log()?);
                let y = (&log_p - &log_q)?;
                // dy/dx = (1 − 2α) / (p (1 − p))
                let ld = ((log_p + log_q)?.neg()? + (1.0 - 2.0 * a).ln())?;
                Ok((y, sum_per_example(&ld)?))
            }
        }
    }

    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)> {
        let (x, ld) = match *self {
            Logit::Shift => ((y + 0.5)?, Tensor::zeros(y.dim(0)?, y.dtype(), y.device())?),
            Logit::Logit(a) => {
                let p = candle_nn::ops::sigmoid(y)?;
                let x = ((&p - a)? / (1.0 - 2.0 * a))?;
                // log p = −softplus(−y), log(1 − p) = −softplus(y): finite for any y
                let log_pq = (softplus(&y.neg()?)? + softplus(y)?)?.neg()?;
                let ld = (log_pq - (1.0 - 2.0 * a).ln())?;
                (x, sum_per_example(&ld)?)
            }
        };
        Ok((x, ld))
    }
}

/// Which part of the input a coupling keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CouplingMask {
    /// Images: the first ⌊c/2⌋ channels condition the rest (flipped: the last ⌈c/2⌉ condition the first).
    Channel,
    /// Images: the pixels with (row + column) even condition the odd ones (flipped: the other way).
    Checkerboard,
    /// Vectors: the first ⌊d/2⌋ dimensions condition the rest (flipped: the other way).
    Half,
}

/// How a coupling's conditioner output becomes a positive scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CouplingScale {
    /// scale = exp(tanh(h)) (RealNVP's bounded log-scale).
    ExpTanh,
    /// scale = sigmoid(h + 2) (Glow's).
    Sigmoid,
}

impl CouplingScale {
    /// Parses `exp_tanh` or `sigmoid`.
    pub fn parse(what: &'static str, s: &str) -> Result<Self> {
        match s {
            "exp_tanh" => Ok(Self::ExpTanh),
            "sigmoid" => Ok(Self::Sigmoid),
            other => Err(Error::unknown(what, other, &["exp_tanh", "sigmoid"])),
        }
    }

    /// (scale, log scale) from the raw output h.
    fn of(self, h: &Tensor) -> Result<(Tensor, Tensor)> {
        let log = match self {
            // log sigmoid(h + 2) = −softplus(−(h + 2))
            Self::Sigmoid => softplus(&h.affine(-1.0, -2.0)?)?.neg()?,
            Self::ExpTanh => h.tanh()?,
        };
        Ok((log.exp()?, log))
    }
}

/// softplus(x) = max(x, 0) + log(1 + exp(−|x|)), stable for any x.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    Ok((x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
}

/// The conditioner of a coupling: a small CNN (Glow's: 3×3 conv, ReLU, 1×1 conv, ReLU, 3×3 conv started at
/// zero) for images, an MLP with the same layout for vectors.
pub enum Conditioner {
    /// Images: `(b, in, h, w)` → `(b, out, h, w)`.
    Conv(Conv2d, Conv2d, Conv2d),
    /// Vectors: `(b, in)` → `(b, out)`.
    Mlp(Linear, Linear, Linear),
}

impl Conditioner {
    /// A conditioner from `cin` to `cout` channels (`image`) or units through `hidden`; variables
    /// `net.{0,1,2}.{weight,bias}` under `vb`, the last layer zero (its coupling starts as the identity).
    pub fn new(
        image: bool,
        cin: usize,
        hidden: usize,
        cout: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(if image {
            Conditioner::Conv(
                Conv2d::new(cin, hidden, 3, 1, 1, vb.pp("net.0"))?,
                Conv2d::new(hidden, hidden, 1, 1, 0, vb.pp("net.1"))?,
                Conv2d::zeros(hidden, cout, 3, 1, 1, vb.pp("net.2"))?,
            )
        } else {
            Conditioner::Mlp(
                Linear::new(cin, hidden, vb.pp("net.0"))?,
                Linear::new(hidden, hidden, vb.pp("net.1"))?,
                Linear::zeros(hidden, cout, vb.pp("net.2"))?,
            )
        })
    }

    /// The conditioner's output.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Conditioner::Conv(a, b, c) => c.forward(&b.forward(&a.forward(x)?.relu()?)?.relu()?),
            Conditioner::Mlp(a, b, c) => c.forward(&b.forward(&a.forward(x)?.relu()?)?.relu()?),
        }
    }
}

/// An affine coupling layer, optionally conditioned on a context (extra conditioner input channels, e.g.
/// the image a variational dequantizer's noise is for).
pub struct AffineCoupling {
    flip: bool,
    scale: CouplingScale,
    net: Conditioner,
    /// Channels (or units) of the context concatenated to the conditioner's input; 0 = none.
    context: usize,
    /// The checkerboard (1, 1, h, w) of the kept pixels (checkerboard masks only).
    board: Option<Tensor>,
}

impl AffineCoupling {
    /// A coupling over inputs of shape `shape` (`[c, h, w]` or `[d]`) with `hidden` conditioner units.
    /// Variables `net.{0,1,2}.{weight,bias}`; the last layer starts at zero (the identity map).
    pub fn new(
        shape: &[usize],
        mask: CouplingMask,
        flip: bool,
        scale: CouplingScale,
        hidden: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::conditioned(shape, mask, flip, scale, hidden, 0, vb)
    }

    /// [`AffineCoupling::new`] whose conditioner also sees a context of `context` channels (units) at the
    /// input's resolution, given to [`AffineCoupling::forward_with`] / [`AffineCoupling::inverse_with`].
    pub fn conditioned(
        shape: &[usize],
        mask: CouplingMask,
        flip: bool,
        scale: CouplingScale,
        hidden: usize,
        context: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (c, image) = match (shape, mask) {
            ([c, _, _], CouplingMask::Channel | CouplingMask::Checkerboard) => (*c, true),
            ([d], CouplingMask::Half) => (*d, false),
            _ => {
                return Err(Error::invalid(
                    "coupling",
                    format!("mask {mask:?} does not apply to examples of shape {shape:?} (channel and checkerboard masks need [c, h, w], half masks [d])"),
                ))
            }
        };
        if mask != CouplingMask::Checkerboard && c < 2 {
            return Err(Error::invalid(
                "coupling",
                format!(
                    "a {mask:?} split needs at least 2 channels or dimensions, got shape {shape:?}"
                ),
            ));
        }
        let (cin, cout) = match mask {
            CouplingMask::Checkerboard => (c, c),
            _ => split_sizes(c, flip),
        };
        let net = Conditioner::new(image, cin + context, hidden, 2 * cout, vb.clone())?;
        let board = match mask {
            CouplingMask::Checkerboard => {
                let (h, w) = (shape[1], shape[2]);
                let keep = if flip { 1 } else { 0 };
                let v: Vec<f32> = (0..h * w)
                    .map(|i| ((i / w + i % w) % 2 == keep) as u8 as f32)
                    .collect();
                Some(Tensor::from_vec(v, (1, 1, h, w), vb.device())?.to_dtype(vb.dtype())?)
            }
            _ => None,
        };
        Ok(Self {
            flip,
            scale,
            net,
            context,
            board,
        })
    }

    /// y = f(x | context) and log|det ∂y/∂x| per example (a coupling built by [`AffineCoupling::conditioned`]).
    pub fn forward_with(&self, x: &Tensor, context: &Tensor) -> Result<(Tensor, Tensor)> {
        self.apply(x, Some(context), false)
    }

    /// x = f⁻¹(y | context) and log|det ∂x/∂y| per example.
    pub fn inverse_with(&self, y: &Tensor, context: &Tensor) -> Result<(Tensor, Tensor)> {
        self.apply(y, Some(context), true)
    }

    /// (kept, transformed) parts of a split input along dim 1.
    fn split(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let c = x.dim(1)?;
        let (a, b) = split_sizes(c, self.flip);
        Ok(if self.flip {
            (x.narrow(1, b, a)?, x.narrow(1, 0, b)?)
        } else {
            (x.narrow(1, 0, a)?, x.narrow(1, a, b)?)
        })
    }

    fn join(&self, kept: &Tensor, changed: &Tensor) -> Result<Tensor> {
        Ok(if self.flip {
            Tensor::cat(&[changed, kept], 1)?
        } else {
            Tensor::cat(&[kept, changed], 1)?
        })
    }

    /// (scale, log scale, shift) of the transformed part, from the kept part's conditioner input and the
    /// context, if any.
    fn params(&self, cond: &Tensor, context: Option<&Tensor>) -> Result<(Tensor, Tensor, Tensor)> {
        let h = match (context, self.context) {
            (None, 0) => self.net.forward(cond)?,
            (Some(ctx), n) if n > 0 && ctx.dim(1)? == n => {
                self.net.forward(&Tensor::cat(&[cond, ctx], 1)?)?
            }
            (ctx, n) => {
                return Err(Error::invalid(
                    "coupling",
                    format!(
                        "built for a context of {n} channel(s), given {}",
                        match ctx {
                            Some(c) => format!("{:?}", c.dims()),
                            None => "none".into(),
                        }
                    ),
                ))
            }
        };
        let half = h.dim(1)? / 2;
        let (s, log) = self.scale.of(&h.narrow(1, 0, half)?)?;
        Ok((s, log, h.narrow(1, half, half)?))
    }

    fn apply(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        inverse: bool,
    ) -> Result<(Tensor, Tensor)> {
        if let Some(board) = &self.board {
            let keep = board.broadcast_as(x.shape())?;
            let change = keep.affine(-1.0, 1.0)?;
            let (s, log, t) = self.params(&(x * &keep)?, context)?;
            // the kept pixels get scale 1, shift 0
            let s = ((s * &change)? + &keep)?;
            let (log, t) = ((log * &change)?, (t * &change)?);
            let y = match inverse {
                false => ((x * s)? + t)?,
                true => ((x - t)? / s)?,
            };
            let ld = sum_per_example(&log)?;
            return Ok((y, if inverse { ld.neg()? } else { ld }));
        }
        let (kept, other) = self.split(x)?;
        let (s, log, t) = self.params(&kept, context)?;
        let changed = match inverse {
            false => ((other * s)? + t)?,
            true => ((other - t)? / s)?,
        };
        let ld = sum_per_example(&log)?;
        Ok((
            self.join(&kept, &changed)?,
            if inverse { ld.neg()? } else { ld },
        ))
    }
}

/// Sizes (kept, transformed) of a split of `c`: ⌊c/2⌋ kept, or ⌈c/2⌉ when flipped.
fn split_sizes(c: usize, flip: bool) -> (usize, usize) {
    if flip {
        (c - c / 2, c / 2)
    } else {
        (c / 2, c - c / 2)
    }
}

impl Bijection for AffineCoupling {
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.apply(x, None, false)
    }

    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)> {
        self.apply(y, None, true)
    }
}

/// Squeeze (RealNVP §3.6): `(b, c, h, w)` → `(b, 4c, h/2, w/2)`, each 2×2 block of a channel becoming four
/// channels (channel k·4 + 2i + j holds pixel (2y + i, 2x + j) of channel k).
pub fn squeeze(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    Ok(x.reshape((b, c, h / 2, 2, w / 2, 2))?
        .permute((0, 1, 3, 5, 2, 4))?
        .reshape((b, c * 4, h / 2, w / 2))?)
}

/// The inverse of [`squeeze`].
pub fn unsqueeze(x: &Tensor) -> Result<Tensor> {
    let (b, c4, h, w) = x.dims4()?;
    let c = c4 / 4;
    Ok(x.reshape((b, c, 2, 2, h, w))?
        .permute((0, 1, 4, 2, 5, 3))?
        .reshape((b, c, h * 2, w * 2))?)
}

/// The last-dimension sum helper used by the models' Gaussian base: Σ_i −½ z_i² − ½ log 2π per example.
pub fn standard_normal_log_prob(z: &Tensor) -> Result<Tensor> {
    let d = z.elem_count() / z.dim(0)?.max(1);
    let sq = sum_per_example(&z.sqr()?)?;
    Ok((sq * -0.5)?.affine(1.0, -0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln())?)
}
