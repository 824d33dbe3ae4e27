//! RGB → grey, the operator of colorization: y = w · (R, G, B) with the ITU-R BT.601 luma weights
//! w = (0.299, 0.587, 0.114) (the weights of dgm's image loader and of most colorization papers). The weights
//! sum to 1, so a constant image keeps its value in any value space. Aᵀ y = w y, A⁺ y = w y / ‖w‖².

use candle_core::{Device, Tensor};

use super::{check_batch, image_shape, LinearOperator};
use crate::{Error, Result};

/// The BT.601 luma weights of R, G and B.
pub const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// RGB `(3, h, w)` → grey `(1, h, w)`.
#[derive(Clone, Debug)]
pub struct Grey {
    input: Vec<usize>,
    output: Vec<usize>,
    /// `(1, 3, 1, 1)`.
    w: Tensor,
}

impl Grey {
    /// The grey operator for `(3, h, w)` images.
    pub fn new(shape: &[usize], device: &Device) -> Result<Self> {
        let [c, h, w] = image_shape("grey", shape)?;
        if c != 3 {
            return Err(Error::invalid(
                "shape",
                format!("colorization works on RGB images (3 channels), got {c} channel(s)"),
            ));
        }
        Ok(Self {
            input: shape.to_vec(),
            output: vec![1, h, w],
            w: Tensor::from_slice(&LUMA, (1, 3, 1, 1), device)?,
        })
    }
}

impl LinearOperator for Grey {
    fn name(&self) -> String {
        "grey".into()
    }

    fn input_shape(&self) -> &[usize] {
        &self.input
    }

    fn output_shape(&self) -> &[usize] {
        &self.output
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        check_batch("grey", "image", x, &self.input)?;
        Ok(x.broadcast_mul(&self.w.to_dtype(x.dtype())?)?
            .sum_keepdim(1)?)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        check_batch("grey", "measurement", y, &self.output)?;
        Ok(y.broadcast_mul(&self.w.to_dtype(y.dtype())?)?)
    }

    fn pseudo_inverse(&self, y: &Tensor) -> Result<Option<Tensor>> {
        let norm2: f64 = LUMA.iter().map(|&v| (v as f64) * (v as f64)).sum();
        Ok(Some((self.adjoint(y)? / norm2)?))
    }

    fn image_view(&self, y: &Tensor) -> Result<Tensor> {
        check_batch("grey", "measurement", y, &self.output)?;
        Ok(y.repeat((1, self.input[0], 1, 1))?) // the grey image in every channel
    }
}
