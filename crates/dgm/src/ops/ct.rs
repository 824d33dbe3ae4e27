//! Parallel-beam computed tomography with few views (sparse-view CT): the Radon transform
//! p(θ, s) = ∫ f(s cos θ − t sin θ, s sin θ + t cos θ) dt at N angles θᵢ = iπ/N, i = 0..N, and detector bins
//! one pixel apart (Kak & Slaney, "Principles of Computerized Tomographic Imaging", ch. 3).
//!
//! Discretisation: the image is constant on unit pixels centred at x = j − (w−1)/2, y = (h−1)/2 − i (row i,
//! column j). Each pixel is split into 4 × 4 sub-pixels, and each sub-pixel's area is shared between the two
//! detector bins nearest to its projection s = x cos θ + y sin θ by linear interpolation ("pixel-driven"
//! projection); bins run from −(D−1)/2 to (D−1)/2 with D the smallest odd number above the image diagonal.
//! At dgm's image sizes the matrix is small (28×28 at 32 views: 1 312 × 784), so A is stored densely and
//! Aᵀ is its exact transpose.
//!
//! The classical reconstruction is filtered back-projection ([`Radon::fbp`]): each projection is convolved with
//! the band-limited ramp filter of Ramachandran & Lakshminarayanan (h(0) = 1/4, h(k) = −1/(π²k²) for odd k,
//! 0 for even k ≠ 0; Kak & Slaney eq. 3.61) and back-projected with linear interpolation, scaled by π/N.

use candle_core::{DType, Device, Tensor};

use super::{check_batch, image_shape, LinearOperator};
use crate::{Error, Result};

/// Sub-pixels per side used to build the projection matrix.
const SUB: usize = 4;
/// The largest projection matrix built, in bytes (it is stored twice: A and Aᵀ).
const MAX_MATRIX_BYTES: usize = 256 << 20;

/// The Radon transform of `(1, h, w)` images at `views` angles: measurements `(views, detectors)`.
#[derive(Clone, Debug)]
pub struct Radon {
    shape: Vec<usize>,
    output: Vec<usize>,
    angles: Vec<f64>,
    /// `(views · detectors, h · w)`.
    a: Tensor,
    /// `(h · w, views · detectors)`.
    a_t: Tensor,
}

impl Radon {
    /// Sparse-view CT of grey `(1, h, w)` images with `views` ≥ 1 angles evenly spread over [0, π).
    pub fn new(shape: &[usize], views: usize, device: &Device) -> Result<Self> {
        let [c, h, w] = image_shape("ct", shape)?;
        if c != 1 {
            return Err(Error::invalid(
                "shape",
                format!("CT works on grey images (1 channel), got {c} channels"),
            ));
        }
        if views == 0 {
            return Err(Error::invalid(
                "views",
                "0: CT needs at least 1 view (projection angle)",
            ));
        }
        let det = detectors(h, w);
        let (m, d) = (views * det, h * w);
        let bytes = m.saturating_mul(d).saturating_mul(2 * 4);
        if bytes > MAX_MATRIX_BYTES {
            return Err(Error::invalid(
                "views",
                format!(
                    "{views} views of a {h}×{w} image need a {m}×{d} projection matrix ({} MB); at most {} MB \
                     is built",
                    bytes >> 20,
                    MAX_MATRIX_BYTES >> 20
                ),
            ));
        }
        let angles: Vec<f64> = (0..views)
            .map(|i| i as f64 * std::f64::consts::PI / views as f64)
            .collect();
        let centre = (det - 1) as f64 / 2.0;
        let area = 1.0 / (SUB * SUB) as f64;
        // sub-pixel offsets from the pixel centre, and one bin accumulator reused for every pixel
        let offsets: Vec<f64> = (0..SUB)
            .map(|s| (s as f64 + 0.5) / SUB as f64 - 0.5)
            .collect();
        let mut acc = vec![0f64; det];
        let mut a = vec![0f32; m * d];
        for (v, &theta) in angles.iter().enumerate() {
            let (cos, sin) = (theta.cos(), theta.sin());
            for i in 0..h {
                for j in 0..w {
                    acc.fill(0.0);
                    for di in &offsets {
                        let y = (h as f64 - 1.0) / 2.0 - (i as f64 + di);
                        for dj in &offsets {
                            let x = j as f64 + dj - (w as f64 - 1.0) / 2.0;
                            let u = x * cos + y * sin + centre;
                            let k = u.floor();
                            let t = u - k;
                            let k = k as isize;
                            if k >= 0 && (k as usize) < det {
                                acc[k as usize] += (1.0 - t) * area;
                            }
                            if k + 1 >= 0 && ((k + 1) as usize) < det {
                                acc[(k + 1) as usize] += t * area;
                            }
                        }
                    }
                    let p = i * w + j;
                    for (k, &val) in acc.iter().enumerate() {
                        if val != 0.0 {
                            a[(v * det + k) * d + p] = val as f32;
                        }
                    }
                }
            }
        }
        let a = Tensor::from_vec(a, (m, d), device)?;
        Ok(Self {
            shape: shape.to_vec(),
            output: vec![views, det],
            angles,
            a_t: a.t()?.contiguous()?,
            a,
        })
    }

    /// The projection angles θᵢ = iπ/N, radians.
    pub fn angles(&self) -> &[f64] {
        &self.angles
    }

    /// Number of views N.
    pub fn views(&self) -> usize {
        self.output[0]
    }

    /// Number of detector bins D.
    pub fn detectors(&self) -> usize {
        self.output[1]
    }

    /// Filtered back-projection of a batch of sinograms `(n, views, detectors)` → images `(n, 1, h, w)`.
    pub fn fbp(&self, y: &Tensor) -> Result<Tensor> {
        let n = check_batch(&self.name(), "measurement", y, &self.output)?;
        let (views, det) = (self.views(), self.detectors());
        let (h, w) = (self.shape[1], self.shape[2]);
        let sino: Vec<f32> = y.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        // the Ram-Lak filter at offsets −(D−1)..=(D−1)
        let filter: Vec<f64> = (-(det as isize - 1)..det as isize)
            .map(|k| match k {
                0 => 0.25,
                k if k % 2 == 0 => 0.0,
                k => -1.0 / (std::f64::consts::PI.powi(2) * (k * k) as f64),
            })
            .collect();
        let centre = (det - 1) as f64 / 2.0;
        let scale = std::f64::consts::PI / views as f64;
        let mut out = vec![0f32; n * h * w];
        let mut q = vec![0f64; det];
        for b in 0..n {
            let img = &mut out[b * h * w..(b + 1) * h * w];
            let mut acc = vec![0f64; h * w];
            for (v, &theta) in self.angles.iter().enumerate() {
                let p = &sino[(b * views + v) * det..(b * views + v + 1) * det];
                for (k, qk) in q.iter_mut().enumerate() {
                    *qk = p
                        .iter()
                        .enumerate()
                        .map(|(j, &pj)| filter[k + det - 1 - j] * pj as f64)
                        .sum();
                }
                let (cos, sin) = (theta.cos(), theta.sin());
                for i in 0..h {
                    let y = (h as f64 - 1.0) / 2.0 - i as f64;
                    for j in 0..w {
                        let x = j as f64 - (w as f64 - 1.0) / 2.0;
                        let u = x * cos + y * sin + centre;
                        let k = u.floor();
                        let t = u - k;
                        let k = k as isize;
                        let at = |k: isize| {
                            if k >= 0 && (k as usize) < det {
                                q[k as usize]
                            } else {
                                0.0
                            }
                        };
                        acc[i * w + j] += (1.0 - t) * at(k) + t * at(k + 1);
                    }
                }
            }
            for (o, a) in img.iter_mut().zip(&acc) {
                *o = (a * scale) as f32;
            }
        }
        Ok(Tensor::from_vec(out, (n, 1, h, w), y.device())?.to_dtype(y.dtype())?)
    }
}

/// The smallest odd number of unit bins that covers the image diagonal.
fn detectors(h: usize, w: usize) -> usize {
    let diag = ((h * h + w * w) as f64).sqrt().ceil() as usize + 1;
    diag | 1
}

impl LinearOperator for Radon {
    fn name(&self) -> String {
        format!("ct, {} views", self.views())
    }

    fn input_shape(&self) -> &[usize] {
        &self.shape
    }

    fn output_shape(&self) -> &[usize] {
        &self.output
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let n = check_batch(&self.name(), "image", x, &self.shape)?;
        let flat = x.reshape((n, ()))?;
        let y = flat.matmul(&self.a_t.to_dtype(x.dtype())?)?;
        Ok(y.reshape((n, self.output[0], self.output[1]))?)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        let n = check_batch(&self.name(), "measurement", y, &self.output)?;
        let flat = y.reshape((n, ()))?;
        let x = flat.matmul(&self.a.to_dtype(y.dtype())?)?;
        Ok(x.reshape((n, self.shape[0], self.shape[1], self.shape[2]))?)
    }

    fn image_view(&self, y: &Tensor) -> Result<Tensor> {
        self.fbp(y)
    }
}
