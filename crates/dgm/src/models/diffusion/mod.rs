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
            caption_words: None,
            example_shape: shape.to_vec(),
            num_classes: Some(3),
            preprocessing: Preprocessing::Identity,
        }
    }

    /// The three models, class-conditional, on 2-D vectors or 1×8×8 images, with class dropout `p`.
    fn models(shape: &[usize], p: f64) -> Result<Vec<(Box<dyn Model>, Params)>> {
        built(shape, p, false)
    }

    /// The three models conditioned on classes or (`captions`, images only) on captions with the words of
    /// [`CAPTIONS`], with condition dropout `p`.
    fn built(shape: &[usize], p: f64, captions: bool) -> Result<Vec<(Box<dyn Model>, Params)>> {
        let dev = Device::Cpu;
        let mut out: Vec<(Box<dyn Model>, Params)> = Vec::new();
        let mut net = net::NetConfig::tiny();
        net.conditional = !captions;
        net.captions = captions;
        net.unet.attention_resolutions = vec![4];
        let mut data = data(shape);
        if captions {
            let vocab = crate::data::CaptionVocab::from_captions(CAPTIONS, 8);
            data.caption_words = Some(vocab.words);
        }
        let data = |_: &[usize]| data.clone();
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

    /// Captions of the caption-model tests.
    const CAPTIONS: [&str; 3] = ["a red circle", "a blue square at the top", "a red square"];

    /// A caption model (DDPM, EDM, NCSN alike): guidance at scale 1 is conditional sampling and larger scales
    /// change the samples; the caption changes the denoiser, no caption is the empty caption; training reads
    /// the batch's captions (and refuses a batch without); classes, unknown words and a missing caption are
    /// refused with messages that say what to give.
    #[test]
    fn caption_models_guide_train_and_refuse() -> Result<()> {
        use crate::conditioning::Cond;
        use crate::data::Batch;
        let dev = Device::Cpu;
        for (m, _params) in built(&[1, 8, 8], 0.1, true)? {
            let can = m.sample_abilities();
            assert!(can.guidance && can.captions, "{}", m.name());
            assert_eq!(m.num_classes(), None);
            let caps: Vec<String> = [
                "a red circle",
                "",
                "a blue square at the top",
                "a red square",
            ]
            .map(String::from)
            .to_vec();
            let opts = |g: Option<f64>| SampleOptions {
                condition: Condition::Caption(caps.clone()),
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
            assert!(diff(&plain, &one)? < 1e-4, "{}", m.name());
            assert!(diff(&plain, &three)? > 1e-3, "{}", m.name());
            // the denoiser reads the caption; Cond::None is the empty caption
            let d = m.as_denoiser().expect("a denoiser");
            let kind = d.info().cond;
            let x = crate::rng::Rng::new(3).randn((2, 1, 8, 8), &dev)?;
            let level = d.schedule().sampling_levels(4)?[1];
            let enc = |c: &[&str]| -> Result<Cond> {
                let c: Vec<String> = c.iter().map(|s| s.to_string()).collect();
                Cond::from_condition(&Condition::Caption(c), kind, 2, m.name(), &dev)
            };
            let red = d.x0(&x, &level, &enc(&["a red circle"])?)?;
            let blue = d.x0(&x, &level, &enc(&["a blue square at the top"])?)?;
            let empty = d.x0(&x, &level, &enc(&[""])?)?;
            let none = d.x0(&x, &level, &Cond::None)?;
            assert!(diff(&red, &blue)? > 1e-4, "{}", m.name());
            assert!(diff(&empty, &none)? < 1e-6, "{}", m.name());
            // training reads captions, with dropout to the empty caption
            let mut batch = Batch::new(x.clone());
            batch.captions = Some(vec!["a red circle".into(), "a red square".into()]);
            let loss = m
                .loss(&batch, &mut crate::rng::Rng::new(1))?
                .loss
                .to_scalar::<f32>()?;
            assert!(loss.is_finite(), "{}", m.name());
            batch.captions = None;
            let e = m
                .loss(&batch, &mut crate::rng::Rng::new(1))
                .err()
                .map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains("captions")), "{}", m.name());
            // refusals
            let err = |c: Condition| -> String {
                let o = SampleOptions {
                    condition: c,
                    steps: Some(2),
                    ..SampleOptions::seeded(0)
                };
                let e = crate::model::check_sample_options(m.as_ref(), &o)
                    .and_then(|_| m.sample(1, &o).map(|_| ()));
                e.err().map(|e| e.to_string()).unwrap_or_default()
            };
            let e = err(Condition::Class(vec![1]));
            assert!(e.contains("captions, not classes"), "{e}");
            let e = err(Condition::None);
            assert!(e.contains("give a caption"), "{e}");
            let e = err(Condition::Caption(vec!["a green circle".into()]));
            assert!(e.contains("'green'") && e.contains("blue, circle"), "{e}");
            let e = err(Condition::Caption(vec!["a".into(), "a".into()]));
            assert!(e.contains("2 captions for 1 samples"), "{e}");
        }
        // a class model refuses captions
        for (m, _params) in models(&[1, 8, 8], 0.1)? {
            let o = SampleOptions {
                condition: Condition::Caption(vec!["a red circle".into()]),
                ..SampleOptions::seeded(0)
            };
            let e = crate::model::check_sample_options(m.as_ref(), &o).unwrap_err();
            assert!(e.to_string().contains("classes, not captions"), "{e}");
        }
        Ok(())
    }

    /// The caption settings are checked when a config is prepared: not with classes, not on the MLP, not on
    /// data without captions; a prepared (or resumed) config keeps its vocabulary.
    #[test]
    fn caption_configs_are_checked_and_keep_their_vocabulary() -> Result<()> {
        let mut with = data(&[1, 8, 8]);
        with.caption_words = Some(vec!["a".into(), "red".into()]);
        let prep = |net: net::NetConfig, d: &DataInfo| -> std::result::Result<DdpmConfig, String> {
            let mut c = DdpmConfig {
                net,
                ..DdpmConfig::tiny()
            };
            ddpm::prepare(&mut c, d).map_err(|e| e.to_string())?;
            Ok(c)
        };
        let mut net = net::NetConfig::tiny();
        net.captions = true;
        net.unet.attention_resolutions = vec![4];
        let c = prep(net.clone(), &with).map_err(crate::Error::Unsupported)?;
        let vocab = c.net.caption_vocab.clone().expect("a vocabulary");
        assert_eq!(vocab.words, ["a", "red"]);
        // loading the run again on data with other words keeps the trained vocabulary
        let mut other = with.clone();
        other.caption_words = Some(vec!["blue".into()]);
        let again = prep(c.net.clone(), &other).map_err(crate::Error::Unsupported)?;
        assert_eq!(again.net.caption_vocab, Some(vocab));
        let e = prep(net.clone(), &data(&[1, 8, 8])).unwrap_err();
        assert!(e.contains("captions") && e.contains("shapes"), "{e}");
        let mut both = net.clone();
        both.conditional = true;
        assert!(prep(both, &with).unwrap_err().contains("cannot both"));
        let mut vectors = data(&[2]);
        vectors.caption_words = Some(vec!["a".into()]);
        assert!(prep(net, &vectors).unwrap_err().contains("UNet"));
        Ok(())
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
