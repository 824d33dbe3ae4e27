//! 2-D convolution and transposed convolution. On the CPU in f32 they run on dgm's GEMM-based kernels
//! (forward and both gradients); elsewhere on candle's stock ops.

use candle_core::Tensor;

use crate::Result;

/// `conv2d(x, w) + b` for `x: (n, c_in, h, w)`, `w: (c_out, c_in, k, k)`, `b: (c_out,)`.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_stock(x, w, b, stride, padding)
}

/// The reference: candle's stock `conv2d` and a broadcast bias add.
pub fn conv2d_stock(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let y = x.conv2d(w, padding, stride, 1, 1)?;
    Ok(match b {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?)?,
        None => y,
    })
}

/// Transposed convolution for `x: (n, c_in, h, w)`, `w: (c_in, c_out, k, k)` (PyTorch's layout).
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    conv_transpose2d_stock(x, w, b, stride, padding, output_padding)
}

/// The reference: candle's stock `conv_transpose2d` and a broadcast bias add.
pub fn conv_transpose2d_stock(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    let y = x.conv_transpose2d(w, padding, output_padding, stride, 1)?;
    Ok(match b {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?)?,
        None => y,
    })
}
