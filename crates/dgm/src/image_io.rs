//! Writing samples as pictures: image grids and 2-D scatter plots (PNG).

use std::path::Path;

use candle_core::Tensor;
use image::{Rgb, RgbImage};

use crate::checkpoint::write_atomic;
use crate::data::Preprocessing;
use crate::{Error, Result};

fn encode_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::invalid("png", e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Arranges `(n, c, h, w)` images (c = 1 or 3, values in the preprocessed space) in a grid with `ncol` columns
/// and a 2-pixel border, and returns it as an RGB image.
pub fn grid(images: &Tensor, prep: &Preprocessing, ncol: usize) -> Result<RgbImage> {
    let (n, c, h, w) = images.dims4()?;
    if c != 1 && c != 3 {
        return Err(Error::invalid(
            "images",
            format!("expected 1 or 3 channels, got {c}"),
        ));
    }
    let ncol = ncol.clamp(1, n.max(1));
    let nrow = n.div_ceil(ncol).max(1);
    let pad = 2;
    let (gw, gh) = (ncol * (w + pad) + pad, nrow * (h + pad) + pad);
    let mut img = RgbImage::from_pixel(gw as u32, gh as u32, Rgb([40, 40, 40]));
    let v = images
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    for k in 0..n {
        let (gx, gy) = (pad + (k % ncol) * (w + pad), pad + (k / ncol) * (h + pad));
        for y in 0..h {
            for x in 0..w {
                let px = |ch: usize| prep.to_u8(v[((k * c + ch) * h + y) * w + x]);
                let rgb = if c == 1 {
                    [px(0); 3]
                } else {
                    [px(0), px(1), px(2)]
                };
                img.put_pixel((gx + x) as u32, (gy + y) as u32, Rgb(rgb));
            }
        }
    }
    Ok(img)
}

/// Saves a grid of images (see [`grid`]) as a PNG, atomically.
pub fn save_grid(path: &Path, images: &Tensor, prep: &Preprocessing, ncol: usize) -> Result<()> {
    encode_png(&grid(images, prep, ncol)?, path)
}

/// Saves a scatter plot of `(n, 2)` points as a PNG (`size` × `size` pixels, view box [−lim, lim]²).
pub fn save_scatter(path: &Path, points: &Tensor, lim: f32, size: u32) -> Result<()> {
    let (n, d) = points.dims2()?;
    if d != 2 {
        return Err(Error::invalid(
            "points",
            format!("expected (n, 2) points, got (n, {d})"),
        ));
    }
    let v = points
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut img = RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
    let s = size as f32;
    // axes
    for i in 0..size {
        img.put_pixel(i, size / 2, Rgb([220, 220, 220]));
        img.put_pixel(size / 2, i, Rgb([220, 220, 220]));
    }
    for k in 0..n {
        let (x, y) = (v[2 * k], v[2 * k + 1]);
        let px = ((x + lim) / (2.0 * lim) * s) as i64;
        let py = ((lim - y) / (2.0 * lim) * s) as i64;
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let (qx, qy) = (px + dx, py + dy);
            if qx >= 0 && qy >= 0 && (qx as u32) < size && (qy as u32) < size {
                img.put_pixel(qx as u32, qy as u32, Rgb([30, 80, 200]));
            }
        }
    }
    encode_png(&img, path)
}

/// Reads the image file at `path` as 8-bit pixels in `(c, h, w)` order: grey for `c = 1`, RGB for `c = 3`
/// (colour images are converted to grey by the usual luma weights). Its size must be exactly `h × w`:
/// anything else is an error naming both sizes.
pub fn load_image(path: &Path, c: usize, h: usize, w: usize) -> Result<Vec<u8>> {
    let img =
        image::open(path).map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
    if (img.width() as usize, img.height() as usize) != (w, h) {
        return Err(Error::invalid(
            path.display().to_string(),
            format!(
                "the image is {}×{} pixels; this model takes {w}×{h} images",
                img.width(),
                img.height()
            ),
        ));
    }
    match c {
        1 => Ok(img.to_luma8().into_raw()),
        3 => {
            let rgb = img.to_rgb8();
            let mut out = vec![0u8; 3 * h * w];
            for (i, p) in rgb.pixels().enumerate() {
                for ch in 0..3 {
                    out[ch * h * w + i] = p.0[ch];
                }
            }
            Ok(out)
        }
        _ => Err(Error::invalid(
            "image channels",
            format!("{c}: only 1 (grey) or 3 (RGB) channel images can be read"),
        )),
    }
}

/// Saves model output shaped like a batch: images as a grid, 2-D points as a scatter plot.
pub fn save_samples(path: &Path, x: &Tensor, prep: &Preprocessing) -> Result<()> {
    match x.rank() {
        4 => {
            let n = x.dim(0)?;
            let ncol = (n as f64).sqrt().ceil() as usize;
            save_grid(path, x, prep, ncol)
        }
        2 if x.dim(1)? == 2 => save_scatter(path, x, 4.5, 512),
        _ => Err(Error::invalid(
            "samples",
            format!(
                "cannot draw samples of shape {:?}: expected (n, c, h, w) or (n, 2)",
                x.dims()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_image_round_trips_pixels_and_rejects_other_sizes() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("dgm-imgio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("g.png");
        let mut img = RgbImage::new(3, 2);
        for (i, p) in img.pixels_mut().enumerate() {
            *p = Rgb([10 * i as u8, 100, 200 - 10 * i as u8]);
        }
        encode_png(&img, &path)?;
        let rgb = load_image(&path, 3, 2, 3)?;
        assert_eq!(&rgb[0..6], &[0, 10, 20, 30, 40, 50]);
        assert_eq!(&rgb[6..12], &[100; 6]);
        assert_eq!(&rgb[12..18], &[200, 190, 180, 170, 160, 150]);
        assert_eq!(load_image(&path, 1, 2, 3)?.len(), 6);
        let e = load_image(&path, 1, 28, 28).unwrap_err().to_string();
        assert!(e.contains("3×2") && e.contains("28×28"), "{e}");
        assert!(load_image(&dir.join("missing.png"), 1, 2, 3).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
