//! Writing samples as pictures: image grids and 2-D scatter plots (PNG).

use std::path::Path;

use candle_core::Tensor;
use image::{Rgb, RgbImage};

use crate::checkpoint::write_atomic;
use crate::data::Preprocessing;
use crate::{Error, Result};

fn encode_png(img: &RgbImage, path: &Path) -> Result<()> {
    write_atomic(path, &png_bytes(img)?)
}

/// An image as the bytes of a PNG file.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::invalid("png", e.to_string()))?;
    Ok(bytes)
}

/// The largest picture dgm writes, in pixels: 100 megapixels (300 MB of RGB while it is drawn), e.g. a grid of
/// about 100 000 MNIST samples. Larger grids are refused before any sample is drawn.
pub const MAX_PIXELS: u64 = 100_000_000;

const PAD: usize = 2;

/// A grid of `n` images of `c × h × w` in `ncol` columns with a 2-pixel border: its size in pixels, refused
/// (naming `n`, the size and [`MAX_PIXELS`]) when it is larger than that.
fn grid_size(n: usize, c: usize, h: usize, w: usize, ncol: usize) -> Result<(u32, u32)> {
    if c != 1 && c != 3 {
        return Err(Error::invalid(
            "images",
            format!("expected 1 or 3 channels, got {c}"),
        ));
    }
    let ncol = ncol.clamp(1, n.max(1)) as u64;
    let nrow = (n as u64).div_ceil(ncol).max(1);
    let gw = ncol.saturating_mul(w as u64 + PAD as u64) + PAD as u64;
    let gh = nrow.saturating_mul(h as u64 + PAD as u64) + PAD as u64;
    let pixels = gw.saturating_mul(gh);
    if pixels > MAX_PIXELS {
        return Err(Error::invalid(
            "-n",
            format!(
                "a grid of {n} images of {w}×{h} would be {gw}×{gh} pixels ({:.1} megapixels), over the {} megapixels dgm writes in one PNG; ask for fewer samples",
                pixels as f64 / 1e6,
                MAX_PIXELS / 1_000_000
            ),
        ));
    }
    Ok((gw as u32, gh as u32)) // ok: gw, gh ≤ MAX_PIXELS < u32::MAX
}

/// Arranges `(n, c, h, w)` images (c = 1 or 3, values in the preprocessed space) in a grid with `ncol` columns
/// and a 2-pixel border, and returns it as an RGB image.
pub fn grid(images: &Tensor, prep: &Preprocessing, ncol: usize) -> Result<RgbImage> {
    let (n, c, h, w) = images.dims4()?;
    let mut canvas = SampleCanvas::grid(n, [c, h, w], ncol, prep)?;
    canvas.add(images)?;
    match canvas.kind {
        Kind::Grid { img, .. } => Ok(img),
        Kind::Scatter { img, .. } => Ok(img),
    }
}

enum Kind {
    Grid {
        img: RgbImage,
        shape: [usize; 3],
        ncol: usize,
        prep: Preprocessing,
    },
    Scatter {
        img: RgbImage,
        lim: f32,
    },
}

/// A picture of samples drawn batch by batch, so that sampling many needs the memory of one batch and of the
/// picture, not of all samples: a grid of images (sized for `n` up front, and refused when it would be over
/// [`MAX_PIXELS`]), or a scatter plot of 2-D points (any number of them). Adding the samples in several
/// batches draws the same picture as adding them at once.
pub struct SampleCanvas {
    kind: Kind,
    n: usize,
    added: usize,
}

impl SampleCanvas {
    /// A canvas for `n` samples of one example's `shape`: `[c, h, w]` images in a square-ish grid
    /// (⌈√n⌉ columns), or `[2]` points in a 512 × 512 scatter plot of [−4.5, 4.5]².
    pub fn new(n: usize, shape: &[usize], prep: &Preprocessing) -> Result<Self> {
        match *shape {
            [c, h, w] => Self::grid(n, [c, h, w], (n as f64).sqrt().ceil() as usize, prep),
            [2] => Ok(Self::scatter(n, 4.5, 512)),
            _ => Err(Error::invalid(
                "samples",
                format!(
                    "cannot draw samples of shape {shape:?}: expected images [c, h, w] or points [2]"
                ),
            )),
        }
    }

    /// A grid of `n` images of `shape` in `ncol` columns.
    pub fn grid(n: usize, shape: [usize; 3], ncol: usize, prep: &Preprocessing) -> Result<Self> {
        let [c, h, w] = shape;
        let (gw, gh) = grid_size(n, c, h, w, ncol)?;
        Ok(Self {
            kind: Kind::Grid {
                img: RgbImage::from_pixel(gw, gh, Rgb([40, 40, 40])),
                shape,
                ncol: ncol.clamp(1, n.max(1)),
                prep: prep.clone(),
            },
            n,
            added: 0,
        })
    }

    /// A `size` × `size` scatter plot of view box [−lim, lim]² (with grey axes) for `n` points.
    pub fn scatter(n: usize, lim: f32, size: u32) -> Self {
        let mut img = RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
        for i in 0..size {
            img.put_pixel(i, size / 2, Rgb([220, 220, 220]));
            img.put_pixel(size / 2, i, Rgb([220, 220, 220]));
        }
        Self {
            kind: Kind::Scatter { img, lim },
            n,
            added: 0,
        }
    }

    /// Samples added so far.
    pub fn added(&self) -> usize {
        self.added
    }

    /// Draws the next batch: `(b, c, h, w)` images or `(b, 2)` points; at most the `n` the canvas was made for.
    pub fn add(&mut self, x: &Tensor) -> Result<()> {
        let b = x.dims().first().copied().unwrap_or(0);
        if self.added + b > self.n {
            return Err(Error::invalid(
                "samples",
                format!(
                    "{b} more samples after {} do not fit a canvas for {}",
                    self.added, self.n
                ),
            ));
        }
        let v = x
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        match &mut self.kind {
            Kind::Grid {
                img,
                shape,
                ncol,
                prep,
            } => {
                let [c, h, w] = *shape;
                if x.dims()[1..] != shape[..] {
                    return Err(Error::invalid(
                        "samples",
                        format!("shape {:?}, the grid holds images of {shape:?}", x.dims()),
                    ));
                }
                for i in 0..b {
                    let k = self.added + i;
                    let (gx, gy) = (PAD + (k % *ncol) * (w + PAD), PAD + (k / *ncol) * (h + PAD));
                    for y in 0..h {
                        for xx in 0..w {
                            let px = |ch: usize| prep.to_u8(v[((i * c + ch) * h + y) * w + xx]);
                            let rgb = if c == 1 {
                                [px(0); 3]
                            } else {
                                [px(0), px(1), px(2)]
                            };
                            img.put_pixel((gx + xx) as u32, (gy + y) as u32, Rgb(rgb));
                        }
                    }
                }
            }
            Kind::Scatter { img, lim } => {
                if x.dims().len() != 2 || x.dims()[1] != 2 {
                    return Err(Error::invalid(
                        "points",
                        format!("expected (n, 2) points, got {:?}", x.dims()),
                    ));
                }
                let (size, lim) = (img.width(), *lim);
                let s = size as f32;
                for k in 0..b {
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
            }
        }
        self.added += b;
        Ok(())
    }

    /// Writes the picture as a PNG, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.png()?)
    }

    /// The picture as the bytes of a PNG file.
    pub fn png(&self) -> Result<Vec<u8>> {
        match &self.kind {
            Kind::Grid { img, .. } | Kind::Scatter { img, .. } => png_bytes(img),
        }
    }
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
    let mut canvas = SampleCanvas::scatter(n, lim, size);
    canvas.add(points)?;
    canvas.save(path)
}

/// Reads the image file at `path` ([`load_image`]) as a batch of one `(1, c, h, w)` in the value space of
/// `prep`: each 8-bit value at the centre of its bin for dequantized scaling (lo + (hi − lo)(k + ½)/256), at its
/// level otherwise (lo + (hi − lo)k/255). Binarized and raw preprocessing are refused (edits need an image
/// model's continuous values).
pub fn load_image_tensor(
    path: &Path,
    shape: &[usize],
    prep: &Preprocessing,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let ([c, h, w], range, dequantize) = continuous_image("image", shape, prep)?;
    let pixels = load_image(path, c, h, w)?;
    pixels_to_tensor(&pixels, [c, h, w], range, dequantize, device)
}

/// The `(c, h, w)` of `shape` and the scaling of `prep`, for reading an image as a model's continuous values;
/// errors (named `name`) for a shape that is not an image's and for binarized or raw preprocessing.
fn continuous_image(
    name: &str,
    shape: &[usize],
    prep: &Preprocessing,
) -> Result<([usize; 3], crate::data::transforms::Range, bool)> {
    let &[c, h, w] = shape else {
        return Err(Error::invalid(
            name.to_string(),
            format!("images have shape (c, h, w), the model's examples {shape:?}"),
        ));
    };
    let Preprocessing::Scale { range, dequantize } = prep else {
        return Err(Error::invalid(
            name.to_string(),
            format!(
                "an image for a model trained on {} data cannot be read as continuous values",
                prep.describe()
            ),
        ));
    };
    Ok(([c, h, w], *range, *dequantize))
}

/// [`load_image_tensor`] for an image file held in memory; errors name it `name`.
pub fn image_tensor_from_bytes(
    name: &str,
    bytes: &[u8],
    shape: &[usize],
    prep: &Preprocessing,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let ([c, h, w], range, dequantize) = continuous_image(name, shape, prep)?;
    let pixels = image_from_bytes(name, bytes, c, h, w)?;
    pixels_to_tensor(&pixels, [c, h, w], range, dequantize, device)
}

/// 8-bit pixels `(c, h, w)` as a batch of one in the value space of `Scale { range, dequantize }`.
fn pixels_to_tensor(
    pixels: &[u8],
    [c, h, w]: [usize; 3],
    range: crate::data::transforms::Range,
    dequantize: bool,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let (lo, hi) = range.bounds();
    let v: Vec<f32> = pixels
        .iter()
        .map(|&p| match dequantize {
            true => lo + (hi - lo) * (p as f32 + 0.5) / 256.0,
            false => lo + (hi - lo) * p as f32 / 255.0,
        })
        .collect();
    Ok(Tensor::from_vec(v, (1, c, h, w), device)?)
}

/// Reads the image file at `path` as 8-bit pixels in `(c, h, w)` order: grey for `c = 1`, RGB for `c = 3`
/// (colour images are converted to grey by the usual luma weights). Its size must be exactly `h × w`:
/// anything else is an error naming both sizes.
///
/// The size is read from the file's header first, so a wrong size is refused before any pixel is decoded (a
/// 20000 × 20000 upload costs a few bytes of reading, not 1.2 GB of pixels); the decoder is then limited to
/// `h × w` and to the memory those pixels need. PNGs go through [`decode_png`]'s chunk checks (the `png` crate
/// panics on some malformed palettes); files larger than any `h × w` image could reasonably be are refused
/// before they are read.
pub fn load_image(path: &Path, c: usize, h: usize, w: usize) -> Result<Vec<u8>> {
    if c != 1 && c != 3 {
        return Err(Error::invalid(
            "image channels",
            format!("{c}: only 1 (grey) or 3 (RGB) channel images can be read"),
        ));
    }
    let name = path.display().to_string();
    let max_file = max_image_bytes(h, w);
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > max_file {
        return Err(Error::invalid(
            name,
            format!(
                "the file has {len} bytes, more than any {w}×{h} image needs ({max_file} at most)"
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    image_from_bytes(&name, &bytes, c, h, w)
}

/// The most bytes an encoded `h × w` image is accepted with: its raw pixels in their widest form plus 16 MiB
/// of metadata.
pub fn max_image_bytes(h: usize, w: usize) -> u64 {
    max_decoded(h, w).saturating_add(16 << 20)
}

/// The decoded image in its widest form (16-bit RGBA) and a copy for the colour conversion.
fn max_decoded(h: usize, w: usize) -> u64 {
    (w as u64 * h as u64).saturating_mul(16).max(1 << 20)
}

/// [`load_image`] for an image file held in memory; errors name it `name`.
pub fn image_from_bytes(name: &str, bytes: &[u8], c: usize, h: usize, w: usize) -> Result<Vec<u8>> {
    if c != 1 && c != 3 {
        return Err(Error::invalid(
            "image channels",
            format!("{c}: only 1 (grey) or 3 (RGB) channel images can be read"),
        ));
    }
    let bad = |e: String| Error::invalid(name.to_string(), e);
    let max_alloc = max_decoded(h, w);
    if bytes.len() as u64 > max_image_bytes(h, w) {
        return Err(bad(format!(
            "{} bytes, more than any {w}×{h} image needs",
            bytes.len()
        )));
    }
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| bad(one_line(&e.to_string())))
    };
    let (iw, ih) = reader()?
        .into_dimensions()
        .map_err(|e| bad(one_line(&e.to_string())))?;
    if (iw as usize, ih as usize) != (w, h) {
        return Err(bad(format!(
            "the image is {iw}×{ih} pixels; this model takes {w}×{h} images"
        )));
    }
    let img = if reader()?.format() == Some(image::ImageFormat::Png) {
        decode_png(bytes, iw.max(ih), max_alloc).map_err(bad)?
    } else {
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(iw);
        limits.max_image_height = Some(ih);
        limits.max_alloc = Some(max_alloc);
        let mut r = reader()?;
        r.limits(limits);
        r.decode().map_err(|e| bad(one_line(&e.to_string())))?
    };
    if c == 1 {
        return Ok(img.to_luma8().into_raw());
    }
    let rgb = img.to_rgb8();
    let mut out = vec![0u8; 3 * h * w];
    for (i, p) in rgb.pixels().enumerate() {
        for ch in 0..3 {
            out[ch * h * w + i] = p.0[ch];
        }
    }
    Ok(out)
}

/// `s` on one line: runs of whitespace (newlines included) become one space.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes a PNG held in memory, after checking what the decoder trusts: the signature, a first chunk IHDR
/// whose width and height are positive and at most `max_side`, and PLTE chunks of whole RGB entries (at most
/// 256; the `png` crate panics on a PLTE whose length is not a multiple of 3). The decoder then refuses to
/// allocate more than `max_alloc` bytes, so a small file declaring a huge image fails before any large
/// allocation. Errors are one line.
pub fn decode_png(
    bytes: &[u8],
    max_side: u32,
    max_alloc: u64,
) -> std::result::Result<image::DynamicImage, String> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) {
        return Err("no PNG signature".into());
    }
    let mut at = SIGNATURE.len();
    let mut first = true;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = &head[4..8];
        let data = bytes.get(at + 8..(at + 8).saturating_add(len));
        if first {
            let Some(d) = data.filter(|d| kind == b"IHDR" && d.len() == 13) else {
                return Err("the first chunk is not a 13-byte IHDR".into());
            };
            let w = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
            let h = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
            if w == 0 || h == 0 || w > max_side || h > max_side {
                return Err(format!(
                    "the header declares {w}×{h} pixels; sides of 1 to {max_side} are accepted"
                ));
            }
            first = false;
        }
        if kind == b"PLTE" && (!len.is_multiple_of(3) || len > 768) {
            return Err(format!(
                "PLTE chunk of {len} bytes; a palette is 1 to 256 RGB entries of 3 bytes"
            ));
        }
        if kind == b"IEND" || data.is_none() {
            break;
        }
        at = at.saturating_add(12).saturating_add(len);
    }
    if first {
        return Err("truncated before the IHDR chunk".into());
    }
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    reader.decode().map_err(|e| one_line(&e.to_string()))
}

/// Saves model output shaped like a batch: images as a grid, 2-D points as a scatter plot.
/// Samples in several batches: add each to a [`SampleCanvas`] instead.
pub fn save_samples(path: &Path, x: &Tensor, prep: &Preprocessing) -> Result<()> {
    let dims = x.dims();
    let n = dims.first().copied().unwrap_or(0);
    let mut canvas = SampleCanvas::new(n, &dims[1.min(dims.len())..], prep)?;
    canvas.add(x)?;
    canvas.save(path)
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

    /// A PNG chunk: length, type, data, CRC-32 of type and data.
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(kind);
        out.extend(data);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend(crc.sum().to_be_bytes());
    }

    /// A 20000 × 20000 upload is refused from its header. The file (a few hundred bytes) holds the header and
    /// only the first rows of pixels, so decoding it could not succeed: the refusal naming its size can only
    /// come from reading the header before the pixels (decoding all 400 MB first, as before, failed on the
    /// missing rows instead).
    #[test]
    fn a_huge_image_is_refused_from_its_header_before_decoding() -> Result<()> {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("dgm-imgio-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("big.png");
        let side: u32 = 20_000;
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        let mut ihdr = Vec::new();
        ihdr.extend(side.to_be_bytes());
        ihdr.extend(side.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]); // 8-bit grey, no interlace
        chunk(&mut png, b"IHDR", &ihdr);
        // 4 rows of 20000 zero pixels (each row: filter byte 0, then the pixels)
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&vec![0u8; 4 * (side as usize + 1)])
            .map_err(|e| Error::io(&path, e))?;
        chunk(
            &mut png,
            b"IDAT",
            &z.finish().map_err(|e| Error::io(&path, e))?,
        );
        chunk(&mut png, b"IEND", &[]);
        assert!(png.len() < 1000);
        std::fs::write(&path, &png).map_err(|e| Error::io(&path, e))?;
        let e = load_image(&path, 1, 28, 28).unwrap_err().to_string();
        assert!(e.contains("20000×20000") && e.contains("28×28"), "{e}");
        // the right size gets past the header and fails on the missing rows, within the decoder's limits
        assert!(load_image(&path, 1, 20_000, 20_000).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// Drawing samples in batches gives the same picture as drawing them at once; a grid too large to write is
    /// refused before anything is drawn.
    #[test]
    fn canvas_in_batches_equals_one_batch_and_refuses_huge_grids() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let prep = Preprocessing::Scale {
            range: crate::data::Range::ZeroOne,
            dequantize: false,
        };
        let mut rng = crate::rng::Rng::new(5);
        let x = rng.rand((300, 3, 8, 8), &dev)?;
        let whole = grid(&x, &prep, 18)?;
        let mut c = SampleCanvas::new(300, &[3, 8, 8], &prep)?;
        c.add(&x.narrow(0, 0, 256)?)?;
        c.add(&x.narrow(0, 256, 44)?)?;
        assert_eq!(c.added(), 300);
        let Kind::Grid { img, .. } = &c.kind else {
            panic!("not a grid")
        };
        assert_eq!(img.as_raw(), whole.as_raw());
        assert!(c.add(&x.narrow(0, 0, 1)?).is_err()); // more than n
                                                      // points: the same with a scatter plot
        let p = ((rng.randn((5000, 2), &dev)? * 2.0)?).contiguous()?;
        let mut one = SampleCanvas::new(5000, &[2], &prep)?;
        one.add(&p)?;
        let mut two = SampleCanvas::new(5000, &[2], &prep)?;
        two.add(&p.narrow(0, 0, 4096)?)?;
        two.add(&p.narrow(0, 4096, 904)?)?;
        let (Kind::Scatter { img: a, .. }, Kind::Scatter { img: b, .. }) = (&one.kind, &two.kind)
        else {
            panic!("not scatter plots")
        };
        assert_eq!(a.as_raw(), b.as_raw());
        // 10⁹ MNIST samples: a 948 700-pixel-wide grid, refused by size
        let e = SampleCanvas::new(1_000_000_000, &[1, 28, 28], &prep)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("-n") && e.contains("1000000000") && e.contains("megapixels"),
            "{e}"
        );
        assert!(SampleCanvas::new(10, &[5], &prep).is_err());
        Ok(())
    }
}
