//! Autoregressive models: p(x) = Π_i p(x_i | x_<i), an exact likelihood and sequential sampling.
//!
//! * [`made`]: MADE, a masked MLP over binary vectors (Germain et al. 2015).
//! * [`pixelcnn`]: Gated PixelCNN with vertical and horizontal stacks (van den Oord et al. 2016).
//! * [`gpt`]: a decoder-only transformer language model over characters or bytes (GPT-2 / nanoGPT).
//! * [`sampling`]: temperature, top-k and top-p token sampling, shared by the language models.

pub mod gpt;
pub mod made;
pub mod pixelcnn;
pub mod sampling;
