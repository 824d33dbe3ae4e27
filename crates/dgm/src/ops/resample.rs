//! Down-sampling by an integer factor f, the operator of super-resolution: each output pixel is the mean of an
//! f × f block (box filter, the anti-aliased down-sampling of DDRM and DDNM). A Aᵀ = I / f², so Aᵀ is nearest
//! up-sampling divided by f², the pseudo-inverse A⁺ = f² Aᵀ is nearest up-sampling, and A A⁺ = I.

use candle_core::Tensor;

use super::{check_batch, image_shape, LinearOperator};
use crate::{Error, Result};

/// Mean over `f × f` blocks: `(c, h, w)` → `(c, h/f, w/f)`.
#[derive(Clone, Debug)]
pub struct Downsample {
    factor: usize,
    input: Vec<usize>,
    output: Vec<usize>,
}

impl Downsample {
    /// Down-sampling of `(c, h, w)` images by `factor` ≥ 2, which must divide h and w.
    pub fn new(shape: &[usize], factor: usize) -> Result<Self> {
        let [c, h, w] = image_shape("downsample", shape)?;
        if factor < 2 || h % factor != 0 || w % factor != 0 {
            return Err(Error::invalid(
                "factor",
                format!(
                    "{factor}: the down-sampling factor must be ≥ 2 and divide the image size {h}×{w}"
                ),
            ));
        }
        Ok(Self {
            factor,
            input: shape.to_vec(),
            output: vec![c, h / factor, w / factor],
        })
    }

    /// The factor f.
    pub fn factor(&self) -> usize {
        self.factor
    }

    /// Nearest up-sampling `(n, c, h/f, w/f)` → `(n, c, h, w)`.
    fn upsample(&self, y: &Tensor) -> Result<Tensor> {
        let n = check_batch(&self.name(), "measurement", y, &self.output)?;
        let ([c, h, w], f) = ([self.input[0], self.input[1], self.input[2]], self.factor);
        Ok(y.reshape((n, c, h / f, 1, w / f, 1))?
            .broadcast_as((n, c, h / f, f, w / f, f))?
            .contiguous()?
            .reshape((n, c, h, w))?)
    }
}

impl LinearOperator for Downsample {
    fn name(&self) -> String {
        format!("downsample ×{}", self.factor)
    }

    fn input_shape(&self) -> &[usize] {
        &self.input
    }

    fn output_shape(&self) -> &[usize] {
        &self.output
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let n = check_batch(&self.name(), "image", x, &self.input)?;
        let ([c, h, w], f) = ([self.input[0], self.input[1], self.input[2]], self.factor);
        let blocks = x.reshape((n, c, h / f, f, w / f, f))?;
        Ok((blocks.sum(5)?.sum(3)? / (f * f) as f64)?)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        Ok((self.upsample(y)? / (self.factor * self.factor) as f64)?)
    }

    fn pseudo_inverse(&self, y: &Tensor) -> Result<Option<Tensor>> {
        self.upsample(y).map(Some)
    }
}
