//! Shared building blocks: the parameter store and dgm's layer types (see [`layers`] for why every model
//! goes through them).

pub mod kernels;
pub mod layers;
pub mod params;

pub use layers::{upsample2x, Conv2d, Embedding, Linear};
pub use params::Params;
