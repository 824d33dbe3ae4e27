//! 2-D toy densities (placeholder: being written).
use super::Dataset;
use crate::{Error, Result};
/// The toy data set names.
pub const NAMES: &[&str] = &[
    "moons",
    "8gaussians",
    "checkerboard",
    "swissroll",
    "pinwheel",
    "2spirals",
];
/// Samples `n` points.
pub fn generate(_name: &str, _n: usize, _seed: u64) -> Result<Dataset> {
    Err(Error::Unsupported("toy2d not written yet".into()))
}
