//! Images on their way into the feature network: real 8-bit data sets and model samples, both as values
//! pixel / 255 in [0, 1] on the same 8-bit grid.

use candle_core::{DType, Device, Tensor};

use crate::data::{Dataset, Preprocessing, Storage};
use crate::{Error, Result};

/// The raw pixels and `[c, h, w]` of an image data set, or an error naming it for vector data.
pub(super) fn image_pixels(ds: &Dataset) -> Result<(&[u8], [usize; 3])> {
    match (&ds.storage, ds.example_shape.as_slice()) {
        (Storage::U8(v), &[c, h, w]) => Ok((v.as_slice(), [c, h, w])),
        _ => Err(Error::invalid(
            "data",
            format!("feature metrics need image data; {} holds vectors", ds.name),
        )),
    }
}

/// The first `limit` images of an 8-bit image data set (all when `None`) as an f32 tensor `(n, c, h, w)` with
/// values pixel / 255 in [0, 1], the input convention of [`FeatureNet`](super::FeatureNet).
pub fn dataset_images(ds: &Dataset, limit: Option<usize>, device: &Device) -> Result<Tensor> {
    let (pixels, [c, h, w]) = image_pixels(ds)?;
    let n = limit.unwrap_or(ds.len()).min(ds.len());
    if n == 0 {
        return Err(Error::invalid(
            "limit",
            format!("no images to use from {} ({} examples)", ds.name, ds.len()),
        ));
    }
    let d = c * h * w;
    let v: Vec<f32> = pixels[..n * d].iter().map(|&p| p as f32 / 255.0).collect();
    Ok(Tensor::from_vec(v, (n, c, h, w), device)?)
}

/// Model samples `(n, c, h, w)` in the model's preprocessed space → images in [0, 1], quantised to the
/// 8-bit grid exactly as PNG export does ([`Preprocessing::to_u8`], then / 255), so that generated and real
/// images reach the feature network through the same pipeline.
pub fn samples_to_images(x: &Tensor, prep: &Preprocessing) -> Result<Tensor> {
    if x.rank() != 4 {
        return Err(Error::invalid(
            "samples",
            format!(
                "feature metrics need image samples (n, c, h, w); got shape {:?}",
                x.dims()
            ),
        ));
    }
    let v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let q: Vec<f32> = v.iter().map(|&s| prep.to_u8(s) as f32 / 255.0).collect();
    Ok(Tensor::from_vec(q, x.dims(), x.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{shapes, Range};

    #[test]
    fn samples_to_images_quantises_like_png_export() -> Result<()> {
        let dev = Device::Cpu;
        let prep = Preprocessing::Scale {
            range: Range::MinusOneOne,
            dequantize: false,
        };
        // (x + 1) / 2 · 255, rounded, clamped: −1 → 0, 1 → 255, 0 → 127.5 → 128, 0.2 → 153,
        // −0.5 → 63.75 → 64, out of range clamps
        let x = Tensor::new(&[-1f32, 1.0, 0.0, 0.2, -0.5, 3.0, -2.0, 0.9], &dev)?
            .reshape((2, 1, 2, 2))?;
        let got = samples_to_images(&x, &prep)?;
        assert_eq!(got.dims(), &[2, 1, 2, 2]);
        let want: Vec<f32> = [0u8, 255, 128, 153, 64, 255, 0, 242]
            .iter()
            .map(|&k| k as f32 / 255.0)
            .collect();
        assert_eq!(got.flatten_all()?.to_vec1::<f32>()?, want);
        // binarized models: samples are in [0, 1] already (Bernoulli means or 0/1 draws)
        let prep = Preprocessing::Binarize { dynamic: false };
        let x = Tensor::new(&[0f32, 1.0, 0.5, 0.1, -0.3, 1.7], &dev)?.reshape((1, 1, 2, 3))?;
        let want: Vec<f32> = [0u8, 255, 128, 26, 0, 255]
            .iter()
            .map(|&k| k as f32 / 255.0)
            .collect();
        assert_eq!(
            samples_to_images(&x, &prep)?
                .flatten_all()?
                .to_vec1::<f32>()?,
            want
        );
        // the real-data path lands on the same grid: pixel k ↦ k / 255 either way
        let ds = shapes::generate(3, 4, &shapes::ShapesConfig::default());
        let real = dataset_images(&ds, Some(2), &dev)?;
        assert_eq!(real.dims(), &[2, 3, 32, 32]);
        let Storage::U8(px) = &ds.storage else {
            panic!("shapes are images")
        };
        let want: Vec<f32> = px[..2 * 3 * 32 * 32]
            .iter()
            .map(|&k| k as f32 / 255.0)
            .collect();
        assert_eq!(real.flatten_all()?.to_vec1::<f32>()?, want);
        let scale01 = Preprocessing::Scale {
            range: Range::ZeroOne,
            dequantize: false,
        };
        assert_eq!(
            samples_to_images(&real, &scale01)?
                .flatten_all()?
                .to_vec1::<f32>()?,
            want
        );
        assert!(samples_to_images(&Tensor::zeros((4, 2), DType::F32, &dev)?, &prep).is_err());
        Ok(())
    }
}
