//! Diffusion and score-based models: DDPM ([`ddpm`]), EDM ([`edm`]) and NCSN ([`ncsn`]), sharing the denoising
//! network of [`net`], the class conditioning of [`crate::conditioning`], the samplers of [`crate::schedulers`]
//! and the sampling loop of [`crate::pipelines`] (each implements [`crate::pipelines::Denoiser`]).

pub mod ddpm;
pub mod edm;
pub mod likelihood;
pub mod ncsn;
pub mod net;

pub use ddpm::{Ddpm, DdpmConfig};
pub use edm::{Edm, EdmConfig};
pub use ncsn::{Ncsn, NcsnConfig};
