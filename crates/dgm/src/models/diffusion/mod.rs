//! Diffusion and score-based models: DDPM ([`ddpm`]), sharing the denoising network of [`net`] and the samplers of
//! [`crate::schedulers`].

pub mod ddpm;
pub mod net;

pub use ddpm::{Ddpm, DdpmConfig};
