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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::data::Preprocessing;
    use crate::model::{Condition, Model, SampleOptions};
    use crate::models::DataInfo;
    use crate::nn::Params;
    use crate::Result;

    fn data(shape: &[usize]) -> DataInfo {
        DataInfo {
            tokenizer: None,
            example_shape: shape.to_vec(),
            num_classes: Some(3),
            preprocessing: Preprocessing::Identity,
        }
    }

    /// The three models, class-conditional, on 2-D vectors or 1×8×8 images, with class dropout `p`.
    fn models(shape: &[usize], p: f64) -> Result<Vec<(Box<dyn Model>, Params)>> {
        let dev = Device::Cpu;
        let mut out: Vec<(Box<dyn Model>, Params)> = Vec::new();
        let mut net = net::NetConfig::tiny();
        net.conditional = true;
        net.unet.attention_resolutions = vec![4];
        let params = Params::new(1, &dev);
        let mut c = DdpmConfig {
            net: net.clone(),
            class_dropout: p,
            ..DdpmConfig::tiny()
        };
        ddpm::prepare(&mut c, &data(shape))?;
        out.push((Box::new(Ddpm::new(c, params.var_builder())?), params));
        let params = Params::new(2, &dev);
        let mut c = EdmConfig {
            net: net.clone(),
            class_dropout: p,
            ..EdmConfig::tiny()
        };
        edm::prepare(&mut c, &data(shape))?;
        out.push((Box::new(Edm::new(c, params.var_builder())?), params));
        let params = Params::new(3, &dev);
        let mut c = NcsnConfig {
            net,
            class_dropout: p,
            ..NcsnConfig::tiny()
        };
        ncsn::prepare(&mut c, &data(shape))?;
        out.push((Box::new(Ncsn::new(c, params.var_builder())?), params));
        Ok(out)
    }

    /// Classifier-free guidance at scale 1 is conditional sampling (D(∅) + 1·(D(c) − D(∅)) = D(c)) for DDPM,
    /// EDM and NCSN alike; a larger scale changes the samples; a model trained without class dropout refuses it.
    #[test]
    fn guidance_at_scale_one_is_conditional_sampling_for_every_model() -> Result<()> {
        for shape in [&[2][..], &[1, 8, 8][..]] {
            for (m, _params) in models(shape, 0.1)? {
                assert!(m.sample_abilities().guidance, "{}", m.name());
                let opts = |g: Option<f64>| SampleOptions {
                    condition: Condition::Class(vec![0, 2, 1, 2]),
                    guidance: g,
                    steps: Some(4),
                    ..SampleOptions::seeded(9)
                };
                let plain = m.sample(4, &opts(None))?;
                let one = m.sample(4, &opts(Some(1.0)))?;
                let three = m.sample(4, &opts(Some(3.0)))?;
                let diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
                    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
                };
                let scale = plain.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                assert!(
                    diff(&plain, &one)? < 1e-4 * scale,
                    "{} {shape:?}: scale 1 differs from conditional sampling by {}",
                    m.name(),
                    diff(&plain, &one)?
                );
                assert!(diff(&plain, &three)? > 1e-3, "{} {shape:?}", m.name());
            }
            for (m, _params) in models(shape, 0.0)? {
                assert!(!m.sample_abilities().guidance);
                let opts = SampleOptions {
                    condition: Condition::Class(vec![1]),
                    guidance: Some(2.0),
                    ..SampleOptions::seeded(9)
                };
                let e = m
                    .sample(2, &opts)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                assert!(e.contains("class dropout"), "{}: {e}", m.name());
            }
        }
        Ok(())
    }
}
