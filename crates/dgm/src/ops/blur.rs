//! Gaussian blur, the operator of deblurring: a separable convolution with the kernel
//! g(k) ∝ exp(−k² / (2σ²)), k = −r..=r with r = ⌈3σ⌉, normalised to sum 1, and zero padding (pixels outside the
//! image count as 0, so A is a plain matrix and its adjoint is exact). As matrices, A X = B_h X B_wᵀ for each
//! channel with B[i][j] = g(i − j), and Aᵀ Y = B_hᵀ Y B_w. Blurring removes high frequencies almost completely,
//! so A has no cheap pseudo-inverse.

use candle_core::{Device, Tensor};

use super::{check_batch, image_shape, LinearOperator};
use crate::{Error, Result};

/// Gaussian blur of `(c, h, w)` images with standard deviation `sigma` pixels.
#[derive(Clone, Debug)]
pub struct Blur {
    sigma: f64,
    shape: Vec<usize>,
    /// `(h, h)` and its transpose.
    bh: Tensor,
    bh_t: Tensor,
    /// `(w, w)` transposed (A multiplies by B_wᵀ on the right) and untransposed.
    bw_t: Tensor,
    bw: Tensor,
}

/// The banded `n × n` matrix B[i][j] = g(i − j) of the normalised Gaussian kernel `g`.
fn band(n: usize, kernel: &[f32], device: &Device) -> Result<Tensor> {
    let r = (kernel.len() / 2) as isize;
    let mut m = vec![0f32; n * n];
    for i in 0..n as isize {
        for j in (i - r).max(0)..(i + r + 1).min(n as isize) {
            m[(i as usize) * n + j as usize] = kernel[(j - i + r) as usize];
        }
    }
    Ok(Tensor::from_vec(m, (n, n), device)?)
}

impl Blur {
    /// Blur of `(c, h, w)` images by a Gaussian of standard deviation `sigma` ∈ (0, 20] pixels.
    pub fn new(shape: &[usize], sigma: f64, device: &Device) -> Result<Self> {
        let [_, h, w] = image_shape("blur", shape)?;
        if !(sigma > 0.0 && sigma <= 20.0) {
            return Err(Error::invalid(
                "blur_sigma",
                format!("{sigma}: the blur's standard deviation must be in (0, 20] pixels"),
            ));
        }
        let r = (3.0 * sigma).ceil() as i64;
        let raw: Vec<f64> = (-r..=r)
            .map(|k| (-(k * k) as f64 / (2.0 * sigma * sigma)).exp())
            .collect();
        let total: f64 = raw.iter().sum();
        let kernel: Vec<f32> = raw.iter().map(|v| (v / total) as f32).collect();
        let (bh, bw) = (band(h, &kernel, device)?, band(w, &kernel, device)?);
        Ok(Self {
            sigma,
            shape: shape.to_vec(),
            bh_t: bh.t()?.contiguous()?,
            bh,
            bw_t: bw.t()?.contiguous()?,
            bw,
        })
    }

    /// `left · X · right` for each `(h, w)` plane of a batch `(n, c, h, w)`.
    fn sandwich(&self, x: &Tensor, left: &Tensor, right: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = (x.dim(0)?, self.shape[0], self.shape[1], self.shape[2]);
        let planes = x.reshape((n * c, h, w))?;
        let dt = x.dtype();
        let y = left
            .to_dtype(dt)?
            .broadcast_matmul(&planes)?
            .broadcast_matmul(&right.to_dtype(dt)?)?;
        Ok(y.reshape((n, c, h, w))?)
    }
}

impl LinearOperator for Blur {
    fn name(&self) -> String {
        format!("blur σ={}", self.sigma)
    }

    fn input_shape(&self) -> &[usize] {
        &self.shape
    }

    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        check_batch(&self.name(), "image", x, &self.shape)?;
        self.sandwich(x, &self.bh, &self.bw_t)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        check_batch(&self.name(), "measurement", y, &self.shape)?;
        self.sandwich(y, &self.bh_t, &self.bw)
    }

    fn image_view(&self, y: &Tensor) -> Result<Tensor> {
        check_batch("blur", "measurement", y, &self.shape)?;
        Ok(y.clone()) // the blurred image itself
    }
}
