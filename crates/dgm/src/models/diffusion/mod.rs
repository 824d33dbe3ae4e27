//! Diffusion and score-based models: DDPM ([`ddpm`]), EDM ([`edm`]) and NCSN ([`ncsn`]), sharing the denoising
//! network of [`net`], the class conditioning of [`condition`] and the samplers of [`crate::schedulers`].

pub mod condition;
pub mod ddpm;
pub mod edm;
pub mod likelihood;
pub mod ncsn;
pub mod net;

pub use ddpm::{Ddpm, DdpmConfig};
pub use edm::{Edm, EdmConfig};
pub use ncsn::{Ncsn, NcsnConfig};
