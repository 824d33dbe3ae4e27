//! Measurement operators for inverse problems: y = A x + σ_y ε, with A linear.
//!
//! Controlled generation from a *measurement* (a masked image, a low-resolution one, a grey one, a blurred
//! one, the projections of a CT scanner) needs the forward model A that made it. Every operator here is a
//! [`LinearOperator`]: it applies A and its adjoint Aᵀ (so ⟨A x, y⟩ = ⟨x, Aᵀ y⟩, which the tests check for
//! each), and gives a pseudo-inverse A⁺ where one is cheap. They are written with candle tensor ops, so a
//! solver can differentiate through them (DPS needs ∇ₓ ‖y − A x̂₀(x)‖²).
//!
//! | operator | A | output per example | A⁺ |
//! |---|---|---|---|
//! | [`Mask`] (inpainting) | x ⊙ m, m ∈ {0, 1} | same shape, 0 where missing | itself |
//! | [`Downsample`] (super-resolution) | mean over f × f blocks | `(c, h/f, w/f)` | nearest up-sampling |
//! | [`Grey`] (colorization) | luma 0.299 R + 0.587 G + 0.114 B | `(1, h, w)` | w y / ‖w‖² |
//! | [`Blur`] (deblurring) | separable Gaussian, zero padding | same shape | – |
//! | [`Radon`] (sparse-view CT) | parallel-beam line integrals at N angles in [0, π) | `(N, detectors)` | – (see [`Radon::fbp`]) |
//!
//! Operators are linear, so they work in whatever value space the model uses; measurement noise σ_y
//! ([`measure`]) is in that same space (for dgm's image models, [−1, 1]: a σ_y of 0.05 there is 0.025 of the
//! [0, 1] range). [`cgls`] solves least squares min ‖A x − y‖² for any operator: the classical baseline.
//!
//! This module imports no model: solvers combine an operator with a model's denoiser elsewhere.

mod blur;
mod ct;
mod file;
mod grey;
mod mask;
mod resample;
#[cfg(test)]
mod tests;

pub use blur::Blur;
pub use ct::Radon;
pub use file::read_measurement;
pub use grey::Grey;
pub use mask::Mask;
pub use resample::Downsample;

use candle_core::Tensor;

use crate::rng::Rng;
use crate::{Error, Result};

/// A linear measurement operator A on batches: inputs `(n, input_shape…)`, outputs `(n, output_shape…)`.
pub trait LinearOperator {
    /// A short description (e.g. `downsample ×4`, `ct, 16 views`), for messages and reports.
    fn name(&self) -> String;

    /// The shape of one input example.
    fn input_shape(&self) -> &[usize];

    /// The shape of one measurement.
    fn output_shape(&self) -> &[usize];

    /// A x for a batch `x` of shape `(n, input_shape…)`.
    fn apply(&self, x: &Tensor) -> Result<Tensor>;

    /// Aᵀ y for a batch `y` of shape `(n, output_shape…)`.
    fn adjoint(&self, y: &Tensor) -> Result<Tensor>;

    /// A⁺ y where a pseudo-inverse is cheap (then A A⁺ y = y for every y), `None` otherwise.
    fn pseudo_inverse(&self, y: &Tensor) -> Result<Option<Tensor>> {
        let _ = y;
        Ok(None)
    }

    /// The measurement `y` shown as an image of the input shape, for display and as SDEdit's guide (default:
    /// A⁺ y, else Aᵀ y). Operators whose measurement already is an image of that shape return it as it is
    /// (mask, blur); the grey one repeats its luma in every channel; CT gives the FBP reconstruction.
    fn image_view(&self, y: &Tensor) -> Result<Tensor> {
        match self.pseudo_inverse(y)? {
            Some(x) => Ok(x),
            None => self.adjoint(y),
        }
    }

    /// The operator as a pixel [`Mask`], if it is one (RePaint works with masks only).
    fn as_mask(&self) -> Option<&Mask> {
        None
    }
}

/// Checks that `t` is a batch of examples of `shape` (`(n, shape…)`, n ≥ 1) for operator `op`; returns n.
pub(crate) fn check_batch(op: &str, what: &str, t: &Tensor, shape: &[usize]) -> Result<usize> {
    let dims = t.dims();
    if dims.len() != shape.len() + 1 || &dims[1..] != shape || dims[0] == 0 {
        return Err(Error::invalid(
            what,
            format!(
                "operator '{op}' takes a batch of shape (n, {}) with n ≥ 1, got {dims:?}",
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(dims[0])
}

/// Checks an image shape `(c, h, w)` with positive sizes; returns `[c, h, w]`.
pub(crate) fn image_shape(op: &str, shape: &[usize]) -> Result<[usize; 3]> {
    match *shape {
        [c, h, w] if c > 0 && h > 0 && w > 0 => Ok([c, h, w]),
        _ => Err(Error::invalid(
            "shape",
            format!("operator '{op}' works on images (c, h, w) with positive sizes, got {shape:?}"),
        )),
    }
}

/// A noisy measurement y = A x + σ_y ε, ε ~ N(0, I) drawn from `rng`; σ_y is in the value space of `x`.
pub fn measure(op: &dyn LinearOperator, x: &Tensor, sigma_y: f64, rng: &mut Rng) -> Result<Tensor> {
    if !(sigma_y.is_finite() && sigma_y >= 0.0) {
        return Err(Error::invalid(
            "sigma_y",
            format!("{sigma_y}: the measurement noise must be a finite number ≥ 0"),
        ));
    }
    let y = op.apply(x)?;
    if sigma_y == 0.0 {
        return Ok(y);
    }
    let noise = rng.randn(y.shape(), y.device())?;
    Ok((y + (noise * sigma_y)?)?)
}

/// Per-example sums of squares of a batch: `(n, …)` → `(n, 1)`.
fn sq_norms(t: &Tensor) -> Result<Tensor> {
    let n = t.dim(0)?;
    Ok(t.reshape((n, ()))?.sqr()?.sum_keepdim(1)?)
}

/// `a + s ⊙ b` with a per-example scale `s` of shape `(n, 1)`.
fn axpy(a: &Tensor, s: &Tensor, b: &Tensor) -> Result<Tensor> {
    let n = a.dim(0)?;
    let sb = b.reshape((n, ()))?.broadcast_mul(s)?.reshape(b.shape())?;
    Ok((a + sb)?)
}

/// Least squares by conjugate gradients on the normal equations (CGLS; Hestenes & Stiefel 1952, Björck
/// "Numerical Methods for Least Squares Problems" §7.4): `iters` iterations from x = 0, each example on its own.
/// From 0 the iterates stay in the range of Aᵀ, so they approach the minimum-norm solution A⁺ y; stopping early
/// regularises (few iterations = smooth).
pub fn cgls(op: &dyn LinearOperator, y: &Tensor, iters: usize) -> Result<Tensor> {
    let n = check_batch(&op.name(), "measurement", y, op.output_shape())?;
    let mut shape = vec![n];
    shape.extend_from_slice(op.input_shape());
    let mut x = Tensor::zeros(shape, y.dtype(), y.device())?;
    let mut r = y.clone();
    let mut s = op.adjoint(&r)?;
    let mut p = s.clone();
    let mut gamma = sq_norms(&s)?;
    const TINY: f64 = 1e-30;
    for _ in 0..iters {
        let q = op.apply(&p)?;
        // α = γ / ‖q‖² (0 once converged: γ = 0 and q = 0)
        let alpha = gamma.broadcast_div(&sq_norms(&q)?.maximum(TINY)?)?;
        x = axpy(&x, &alpha, &p)?;
        r = axpy(&r, &alpha.neg()?, &q)?;
        s = op.adjoint(&r)?;
        let next = sq_norms(&s)?;
        let beta = next.broadcast_div(&gamma.maximum(TINY)?)?;
        p = axpy(&s, &beta, &p)?;
        gamma = next;
    }
    Ok(x)
}
