//! Out-of-distribution (OOD) image sets for anomaly-detection evaluation of likelihood models.
//!
//! A model trained on one data set (the *reference*, e.g. MNIST) should give other images a lower likelihood.
//! Deep generative models famously fail this test on some pairs (Nalisnick et al., "Do deep generative models
//! know what they don't know?", ICLR 2019), and simple synthetic sets — uniform noise and constant images —
//! expose the bias of likelihoods towards low-complexity inputs (Serrà et al., "Input complexity and
//! out-of-distribution detection with likelihood-based generative models", ICLR 2020). Corrupted copies of
//! the reference's own test images follow the spirit of Hendrycks & Dietterich, "Benchmarking neural network
//! robustness to common corruptions and perturbations", ICLR 2019 (one fixed severity each here).
//!
//! Every set is returned as a [`Dataset`] with [`Storage::U8`] pixels of the reference's `example_shape`
//! (`[c, h, w]`), no labels, so the same preprocessing and model can score it. Sets ([`OOD_SETS`]):
//!
//! | name | images |
//! |---|---|
//! | `omniglot` | Omniglot characters (`<data>/omniglot/images_background_small1.zip`, 2720 PNGs of 105×105, black on white), area-resized to h×w, inverted to white on black like MNIST, replicated to c channels |
//! | `mnist` | MNIST test digits (the first n), area-resized to h×w, replicated to c channels (OOD for shapes models) |
//! | `noise` | every value independently uniform on {0, …, 255} (mean 127.5) |
//! | `constant` | one uniform random value per channel, the same at every pixel (a flat random colour for RGB, a flat grey for grayscale) |
//! | `corrupt-noise` | reference images + Gaussian noise, σ = [`NOISE_SIGMA`] = 0.15 × 255 ≈ 38 levels, rounded and clamped to [0, 255] |
//! | `corrupt-blur` | reference images blurred by a Gaussian of σ = [`BLUR_SIGMA`] = 1 pixel |
//! | `corrupt-rotate` | reference images rotated about their centre by an angle uniform in [90°, 270°] ([`ROTATE_RANGE`]), bilinear, zero fill |
//! | `invert` | 255 − x of the reference images |
//!
//! Corrupted sets use the first n examples of `reference` (pass the test split), so each OOD image is paired
//! with the in-distribution image it came from.
//!
//! **Area resize** (box filter): output pixel (i, j) of an h×w image made from an H×W source averages the
//! source over the rectangle it covers, `y(i, j) = Σ_{r,s} a_r(i) b_s(j) x(r, s)` where `a_r(i)` is the overlap
//! of source row r, `[r, r+1)`, with `[i·H/h, (i+1)·H/h)`, divided by H/h (and likewise `b_s(j)` for columns).
//! Down-scaling by an integer factor k is the plain mean of each k×k block; up-scaling (28 → 32) mixes at most
//! two neighbours per axis.
//!
//! **Gaussian blur**: the separable kernel `g(k) ∝ exp(−k²/(2σ²))`, `|k| ≤ ⌈3σ⌉`, normalised to sum 1, with
//! the border pixel repeated outside the image (so a constant image stays exactly constant).
//!
//! **Rotation** by θ about the centre `c = ((w−1)/2, (h−1)/2)`: output pixel p takes the bilinear
//! interpolation of the source at `c + R(−θ)(p − c)`, where source pixels outside the image are 0.
//! Multiples of 90° on square images map pixel centres onto pixel centres, so they are exact permutations.
//!
//! All randomness comes from [`Rng::named`]`(seed, "ood:<name>")`, so every set is reproducible for a seed
//! and independent of the others.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{mnist, Dataset, Split, Storage, DATA_ENV};
use crate::image_io::decode_png;
use crate::rng::Rng;
use crate::{Error, Result};

/// Every OOD set name [`load_ood`] accepts.
pub const OOD_SETS: &[&str] = &[
    "omniglot",
    "mnist",
    "noise",
    "constant",
    "corrupt-noise",
    "corrupt-blur",
    "corrupt-rotate",
    "invert",
];

/// Standard deviation of the additive Gaussian noise of `corrupt-noise`, in pixel levels (0.15 of 255).
pub const NOISE_SIGMA: f32 = 0.15 * 255.0;
/// Standard deviation of the Gaussian blur of `corrupt-blur`, in pixels.
pub const BLUR_SIGMA: f32 = 1.0;
/// The range of rotation angles of `corrupt-rotate`, in degrees (uniform).
pub const ROTATE_RANGE: (f32, f32) = (90.0, 270.0);
/// The Omniglot archive, relative to the data directory.
pub const OMNIGLOT_ZIP: &str = "omniglot/images_background_small1.zip";
/// The largest width or height of an Omniglot PNG that is decoded (the characters are 105×105).
pub const MAX_PNG_SIDE: u32 = 4096;
/// The most memory one PNG may decode into (bytes).
pub const MAX_PNG_ALLOC: u64 = 32 << 20;
/// The largest uncompressed size of one archive member that is read (bytes).
pub const MAX_MEMBER_BYTES: u64 = 16 << 20;

const MNIST_SETS: &[&str] = &[
    "omniglot",
    "noise",
    "constant",
    "corrupt-noise",
    "corrupt-blur",
    "corrupt-rotate",
];
const SHAPES_SETS: &[&str] = &[
    "mnist",
    "omniglot",
    "noise",
    "constant",
    "invert",
    "corrupt-blur",
];
const OTHER_IMAGE_SETS: &[&str] = &[
    "noise",
    "constant",
    "corrupt-noise",
    "corrupt-blur",
    "corrupt-rotate",
    "invert",
];

/// The OOD sets evaluated by default for a model trained on `in_dist_name`: for `mnist` Omniglot, noise,
/// constant and three corruptions of MNIST itself; shapes-trained models get their own (MNIST digits,
/// Omniglot, noise, constant, inverted and blurred shapes). Other image data sets get the sets that need no
/// files (noise, constant and the corruptions); non-image data (`toy2d:*`, `text:*`) get none.
pub fn default_ood_sets(in_dist_name: &str) -> &'static [&'static str] {
    match in_dist_name {
        "mnist" => MNIST_SETS,
        "shapes" => SHAPES_SETS,
        n if n.starts_with("toy2d:") || n.starts_with("text:") => &[],
        _ => OTHER_IMAGE_SETS,
    }
}

/// Loads the OOD set `name` shaped like `reference` (same `[c, h, w]`, 8-bit pixels, no labels).
///
/// Returns `n` examples, or fewer when the source has fewer: Omniglot has 2720 images (when `n` is smaller, a
/// seeded random subset, kept in archive order, so that all alphabets appear), `mnist` at most the 10 000 test
/// digits, and the corruptions at most `reference.len()` (the first n reference images). `noise` and
/// `constant` always give exactly `n`. `data_dir` is only read by `omniglot` and `mnist`.
pub fn load_ood(
    name: &str,
    reference: &Dataset,
    data_dir: &Path,
    n: usize,
    seed: u64,
) -> Result<Dataset> {
    if !OOD_SETS.contains(&name) {
        return Err(Error::unknown("OOD set", name, OOD_SETS));
    }
    let (c, h, w) = image_shape(reference)?;
    if n == 0 {
        return Err(Error::invalid(
            "n",
            "the number of OOD examples must be at least 1",
        ));
    }
    let mut rng = Rng::named(seed, &format!("ood:{name}"));
    let d = c * h * w;
    let pixels: Vec<u8> = match name {
        "noise" => (0..n * d).map(|_| rng.below(256) as u8).collect(),
        "constant" => {
            let mut v = Vec::with_capacity(n * d);
            for _ in 0..n {
                for _ in 0..c {
                    let level = rng.below(256) as u8;
                    v.extend(std::iter::repeat_n(level, h * w));
                }
            }
            v
        }
        "omniglot" => {
            let gray = load_omniglot(data_dir, h, w, n, &mut rng)?;
            replicate_channels(&gray, h * w, c)
        }
        "mnist" => {
            let test = mnist::load_split(data_dir, Split::Test)?;
            let m = n.min(test.len());
            let src = match &test.storage {
                Storage::U8(v) => v,
                Storage::F32(_) | Storage::Tokens { .. } => {
                    return Err(Error::Unsupported(
                        "MNIST test set is not stored as 8-bit pixels".into(),
                    ))
                }
            };
            let side = mnist::SIDE * mnist::SIDE;
            let mut gray = Vec::with_capacity(m * h * w);
            for i in 0..m {
                let img = &src[i * side..(i + 1) * side];
                gray.extend(resize_area(img, mnist::SIDE, mnist::SIDE, h, w));
            }
            replicate_channels(&gray, h * w, c)
        }
        _ => {
            let Storage::U8(src) = &reference.storage else {
                // image_shape has checked this already
                return Err(Error::Unsupported(
                    "OOD sets need an 8-bit image reference data set".into(),
                ));
            };
            let m = n.min(reference.len());
            if m == 0 {
                return Err(Error::invalid(
                    "reference",
                    format!(
                        "OOD set '{name}' corrupts the reference images, but data set '{}' is empty",
                        reference.name
                    ),
                ));
            }
            let mut out = Vec::with_capacity(m * d);
            for i in 0..m {
                let img = &src[i * d..(i + 1) * d];
                match name {
                    "invert" => out.extend(img.iter().map(|&x| 255 - x)),
                    "corrupt-noise" => out.extend(img.iter().map(|&x| {
                        (x as f32 + NOISE_SIGMA * rng.normal())
                            .round()
                            .clamp(0.0, 255.0) as u8
                    })),
                    "corrupt-blur" => out.extend(gaussian_blur(img, c, h, w, BLUR_SIGMA)),
                    "corrupt-rotate" => {
                        let (lo, hi) = ROTATE_RANGE;
                        let angle = lo + (hi - lo) * rng.uniform();
                        out.extend(rotate(img, c, h, w, angle));
                    }
                    _ => return Err(Error::unknown("OOD set", name, OOD_SETS)),
                }
            }
            out
        }
    };
    Ok(Dataset {
        name: name.to_string(),
        example_shape: vec![c, h, w],
        storage: Storage::U8(pixels),
        labels: None,
        num_classes: None,
        class_names: None,
        captions: None,
    })
}

/// Checks that `reference` holds 8-bit images and returns (c, h, w).
fn image_shape(reference: &Dataset) -> Result<(usize, usize, usize)> {
    match (&reference.storage, reference.example_shape.as_slice()) {
        (Storage::U8(_), &[c, h, w]) if c > 0 && h > 0 && w > 0 => Ok((c, h, w)),
        _ => Err(Error::Unsupported(format!(
            "OOD sets are images, but the reference data set '{}' has examples of shape {:?}{}; \
             OOD detection needs an 8-bit image data set (mnist, shapes)",
            reference.name,
            reference.example_shape,
            if reference.is_image() {
                ""
            } else {
                " stored as real values"
            }
        ))),
    }
}

/// Repeats each single-channel image (of `hw` pixels) `c` times, giving (n, c, h, w) order.
fn replicate_channels(gray: &[u8], hw: usize, c: usize) -> Vec<u8> {
    if c == 1 {
        return gray.to_vec();
    }
    let mut out = Vec::with_capacity(gray.len() * c);
    for img in gray.chunks(hw) {
        for _ in 0..c {
            out.extend_from_slice(img);
        }
    }
    out
}

/// Reads the Omniglot archive under `dir`; returns `min(n, count)` images, each area-resized to h×w and
/// inverted (white strokes on black), in archive-name order.
fn load_omniglot(dir: &Path, h: usize, w: usize, n: usize, rng: &mut Rng) -> Result<Vec<u8>> {
    let path: PathBuf = dir.join(OMNIGLOT_ZIP);
    if !path.is_file() {
        return Err(Error::DataNotFound {
            name: "omniglot".into(),
            msg: format!(
                "expected {}; set {DATA_ENV} or the data directory to a folder holding {OMNIGLOT_ZIP} \
                 (e.g. ../shared/data)",
                path.display()
            ),
        });
    }
    let corrupt = |msg: String| Error::CorruptData {
        path: path.clone(),
        msg,
    };
    let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| corrupt(format!("not a readable zip archive: {e}")))?;
    let mut entries: Vec<(String, usize)> = Vec::new();
    for i in 0..zip.len() {
        if let Some(Ok(name)) = zip.name_for_index(i) {
            if name.to_ascii_lowercase().ends_with(".png") {
                entries.push((name.into_owned(), i));
            }
        }
    }
    if entries.is_empty() {
        return Err(corrupt("holds no .png images".into()));
    }
    entries.sort();
    if n < entries.len() {
        let mut keep = rng.permutation(entries.len());
        keep.truncate(n);
        keep.sort_unstable();
        entries = keep.into_iter().map(|k| entries[k].clone()).collect();
    }
    let mut out = Vec::with_capacity(entries.len() * h * w);
    let mut bytes = Vec::new();
    for (raw_name, index) in &entries {
        // member names come from the archive: escaped, so that a newline in one cannot split the message
        let name = raw_name.escape_debug().to_string();
        bytes.clear();
        zip.by_index(*index)
            .map_err(|e| corrupt(format!("{name}: {e}")))?
            .take(MAX_MEMBER_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| corrupt(format!("{name}: {e}")))?;
        if bytes.len() as u64 > MAX_MEMBER_BYTES {
            return Err(corrupt(format!(
                "{name}: larger than {MAX_MEMBER_BYTES} bytes uncompressed; not an Omniglot character"
            )));
        }
        let img = decode_png(&bytes, MAX_PNG_SIDE, MAX_PNG_ALLOC)
            .map_err(|e| corrupt(format!("{name}: not a valid PNG: {e}")))?
            .to_luma8();
        let (sw, sh) = (img.width() as usize, img.height() as usize);
        if sw == 0 || sh == 0 {
            return Err(corrupt(format!("{name}: empty image")));
        }
        let small = resize_area(img.as_raw(), sh, sw, h, w);
        out.extend(small.into_iter().map(|v| 255 - v));
    }
    Ok(out)
}

/// For each of `dst` output cells along one axis of length `src`, the source indices and their area weights
/// (overlap of `[k, k+1)` with the cell's footprint, divided by the footprint's length; they sum to 1).
fn area_weights(src: usize, dst: usize) -> Vec<Vec<(usize, f64)>> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|i| {
            let (a, b) = (i as f64 * scale, (i + 1) as f64 * scale);
            let first = a.floor() as usize;
            let last = (b.ceil() as usize).min(src);
            (first..last)
                .filter_map(|k| {
                    let overlap = (b.min(k as f64 + 1.0) - a.max(k as f64)).max(0.0);
                    (overlap > 1e-12).then_some((k, overlap / scale))
                })
                .collect()
        })
        .collect()
}

/// Resizes one single-channel `sh`×`sw` image to `dh`×`dw` by area averaging (box filter, see the module
/// docs), rounding to the nearest level.
pub fn resize_area(src: &[u8], sh: usize, sw: usize, dh: usize, dw: usize) -> Vec<u8> {
    let rows = area_weights(sh, dh);
    let cols = area_weights(sw, dw);
    let mut out = Vec::with_capacity(dh * dw);
    for rw in &rows {
        for cw in &cols {
            let mut acc = 0.0f64;
            for &(r, a) in rw {
                for &(s, b) in cw {
                    acc += a * b * src[r * sw + s] as f64;
                }
            }
            out.push(acc.round().clamp(0.0, 255.0) as u8);
        }
    }
    out
}

/// Blurs a (c, h, w) image channel by channel with a Gaussian of standard deviation `sigma` pixels
/// (separable, radius ⌈3σ⌉, border pixels repeated). `sigma <= 0` returns the image unchanged.
pub fn gaussian_blur(img: &[u8], c: usize, h: usize, w: usize, sigma: f32) -> Vec<u8> {
    if sigma <= 0.0 {
        return img.to_vec();
    }
    let r = (3.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f32> = (-r..=r)
        .map(|k| (-((k * k) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let clampi = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    let mut out = Vec::with_capacity(img.len());
    let mut tmp = vec![0f32; h * w];
    for ch in img.chunks(h * w).take(c) {
        for y in 0..h {
            for x in 0..w {
                tmp[y * w + x] = kernel
                    .iter()
                    .enumerate()
                    .map(|(j, k)| k * ch[y * w + clampi(x as isize + j as isize - r, w)] as f32)
                    .sum();
            }
        }
        for y in 0..h {
            for x in 0..w {
                let v: f32 = kernel
                    .iter()
                    .enumerate()
                    .map(|(j, k)| k * tmp[clampi(y as isize + j as isize - r, h) * w + x])
                    .sum();
                out.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// Rotates a (c, h, w) image by `degrees` (counter-clockwise as displayed) about its centre, with bilinear
/// interpolation and zeros where the rotated image leaves the source (see the module docs).
pub fn rotate(img: &[u8], c: usize, h: usize, w: usize, degrees: f32) -> Vec<u8> {
    let theta = (degrees as f64).to_radians();
    let (sin, cos) = theta.sin_cos();
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let mut out = Vec::with_capacity(img.len());
    for ch in img.chunks(h * w).take(c) {
        let at = |y: i64, x: i64| -> f64 {
            if y < 0 || x < 0 || y >= h as i64 || x >= w as i64 {
                0.0
            } else {
                ch[y as usize * w + x as usize] as f64
            }
        };
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                // image rows grow downwards, so a counter-clockwise turn on screen is R(θ) with y flipped;
                // the source of output p is c + R(−θ)(p − c) in those screen coordinates
                let sx = cx + cos * dx - sin * dy;
                let sy = cy + sin * dx + cos * dy;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as i64, y0 as i64);
                let v = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                    + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
                out.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(c: usize, h: usize, w: usize, n: usize, seed: u64) -> Dataset {
        let mut rng = Rng::new(seed);
        Dataset {
            name: "fake".into(),
            example_shape: vec![c, h, w],
            storage: Storage::U8((0..n * c * h * w).map(|_| rng.below(256) as u8).collect()),
            labels: Some(vec![0; n]),
            num_classes: Some(1),
            class_names: None,
            captions: None,
        }
    }

    fn pixels(d: &Dataset) -> &[u8] {
        match &d.storage {
            Storage::U8(v) => v,
            _ => panic!("not u8"),
        }
    }

    fn mean(v: &[u8]) -> f64 {
        v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
    }

    fn var(v: &[u8]) -> f64 {
        let m = mean(v);
        v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / v.len() as f64
    }

    fn omniglot_dir() -> Option<PathBuf> {
        let dirs = [
            crate::data::test_data_dir(),
            Some(PathBuf::from("/work/shared/data")),
        ];
        dirs.into_iter()
            .flatten()
            .find(|d| d.join(OMNIGLOT_ZIP).is_file())
    }

    #[test]
    fn synthetic_sets_have_the_reference_shape_and_no_labels() -> Result<()> {
        let nowhere = Path::new("/nonexistent-dgm-data");
        for (c, h, w) in [(1, 28, 28), (3, 32, 32)] {
            let r = reference(c, h, w, 10, 1);
            for name in OOD_SETS
                .iter()
                .filter(|n| !["omniglot", "mnist"].contains(n))
            {
                let d = load_ood(name, &r, nowhere, 7, 3)?;
                assert_eq!(d.example_shape, vec![c, h, w], "{name}");
                assert_eq!(d.len(), 7, "{name}");
                assert_eq!(pixels(&d).len(), 7 * c * h * w, "{name}");
                assert!(d.labels.is_none(), "{name}");
                assert_eq!(d.name, *name);
            }
            // corruptions are capped at the reference size, generated sets are not
            assert_eq!(load_ood("invert", &r, nowhere, 50, 3)?.len(), 10);
            assert_eq!(load_ood("noise", &r, nowhere, 50, 3)?.len(), 50);
        }
        Ok(())
    }

    #[test]
    fn deterministic_for_a_seed() -> Result<()> {
        let r = reference(3, 16, 16, 8, 2);
        let nowhere = Path::new("/nonexistent-dgm-data");
        for name in ["noise", "constant", "corrupt-noise", "corrupt-rotate"] {
            let a = load_ood(name, &r, nowhere, 8, 11)?;
            let b = load_ood(name, &r, nowhere, 8, 11)?;
            let c = load_ood(name, &r, nowhere, 8, 12)?;
            assert_eq!(pixels(&a), pixels(&b), "{name}");
            assert_ne!(pixels(&a), pixels(&c), "{name}");
        }
        Ok(())
    }

    #[test]
    fn errors_name_the_problem() {
        let r = reference(1, 8, 8, 4, 0);
        let nowhere = Path::new("/nonexistent-dgm-data");
        let e = load_ood("cifar", &r, nowhere, 4, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cifar") && e.contains("omniglot") && e.contains("corrupt-blur"),
            "{e}"
        );
        let points = Dataset {
            name: "toy2d:moons".into(),
            example_shape: vec![2],
            storage: Storage::F32(vec![0.0; 8]),
            labels: None,
            num_classes: None,
            class_names: None,
            captions: None,
        };
        let e = load_ood("noise", &points, nowhere, 4, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("toy2d:moons") && e.contains("image"), "{e}");
        let e = load_ood("omniglot", &r, nowhere, 4, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent-dgm-data/omniglot/images_background_small1.zip")
                && e.contains("DGM_DATA"),
            "{e}"
        );
    }

    #[test]
    fn noise_is_uniform() -> Result<()> {
        let r = reference(1, 28, 28, 1, 0);
        let d = load_ood("noise", &r, Path::new("."), 200, 5)?;
        let v = pixels(&d);
        // uniform on {0..255}: mean 127.5, variance (256² − 1)/12 = 5461.25; 156 800 values give a
        // standard error of the mean of 0.19
        assert!((mean(v) - 127.5).abs() < 1.0, "mean {}", mean(v));
        assert!((var(v) - 5461.25).abs() < 100.0, "var {}", var(v));
        Ok(())
    }

    #[test]
    fn constant_images_are_constant_per_channel() -> Result<()> {
        let r = reference(3, 8, 8, 1, 0);
        let d = load_ood("constant", &r, Path::new("."), 50, 5)?;
        let mut colours = Vec::new();
        for img in pixels(&d).chunks(3 * 64) {
            for ch in img.chunks(64) {
                assert!(ch.iter().all(|&x| x == ch[0]));
            }
            colours.push((img[0], img[64], img[128]));
        }
        // random colours, not all grey and not all the same
        assert!(colours.iter().any(|&(a, b, c)| a != b || b != c));
        colours.sort();
        colours.dedup();
        assert!(colours.len() > 40);
        Ok(())
    }

    #[test]
    fn invert_twice_is_identity() -> Result<()> {
        let r = reference(3, 8, 8, 5, 4);
        let once = load_ood("invert", &r, Path::new("."), 5, 0)?;
        assert_eq!(pixels(&once)[0], 255 - pixels(&r)[0]);
        let twice = load_ood("invert", &once, Path::new("."), 5, 0)?;
        assert_eq!(pixels(&twice), pixels(&r));
        Ok(())
    }

    #[test]
    fn blur_keeps_constants_and_smooths_noise() -> Result<()> {
        let flat = vec![93u8; 2 * 16 * 16];
        assert_eq!(gaussian_blur(&flat, 2, 16, 16, 1.5), flat);
        let r = reference(1, 32, 32, 4, 9);
        let b = load_ood("corrupt-blur", &r, Path::new("."), 4, 0)?;
        let (v0, v1) = (var(pixels(&r)), var(pixels(&b)));
        // white noise through a normalised Gaussian of σ = 1 keeps Σ g² ≈ 1/(4πσ²) ≈ 0.08 of its variance
        assert!(v1 < 0.2 * v0, "variance {v0} -> {v1}");
        assert!((mean(pixels(&b)) - mean(pixels(&r))).abs() < 2.0);
        Ok(())
    }

    #[test]
    fn rotation_by_right_angles_is_exact() {
        let r = reference(3, 9, 9, 1, 6);
        let img = pixels(&r).to_vec();
        let half = rotate(&img, 3, 9, 9, 180.0);
        // 180°: pixel (y, x) goes to (h−1−y, w−1−x)
        assert_eq!(half[0], img[9 * 9 - 1]);
        assert_eq!(half[9 * 9 + 2 * 9 + 3], img[9 * 9 + 6 * 9 + 5]);
        assert_eq!(rotate(&half, 3, 9, 9, 180.0), img);
        let mut q = img.clone();
        for _ in 0..4 {
            q = rotate(&q, 3, 9, 9, 90.0);
        }
        assert_eq!(q, img);
        // counter-clockwise on screen: the top-right corner moves to the top-left
        let mut one = vec![0u8; 9];
        one[2] = 200; // (row 0, col 2) of a 3×3 image
        assert_eq!(rotate(&one, 1, 3, 3, 90.0)[0], 200);
    }

    #[test]
    fn rotation_there_and_back_is_close_in_the_middle() {
        // a smooth image: bilinear interpolation is nearly exact on it
        let (h, w) = (32, 32);
        let img: Vec<u8> = (0..h * w)
            .map(|i| {
                let (y, x) = ((i / w) as f32, (i % w) as f32);
                (127.0 + 100.0 * ((x / 6.0).sin() * (y / 7.0).cos())) as u8
            })
            .collect();
        let back = rotate(&rotate(&img, 1, h, w, 37.0), 1, h, w, -37.0);
        let mut worst = 0i32;
        for y in 10..22 {
            for x in 10..22 {
                worst = worst.max((back[y * w + x] as i32 - img[y * w + x] as i32).abs());
            }
        }
        assert!(worst <= 6, "max error {worst}");
    }

    #[test]
    fn rotate_set_angles_are_in_range() -> Result<()> {
        // a single bright pixel at the top centre of a 15×15 image: after a turn in [90°, 270°] it is in
        // the lower half or on the middle row
        let mut img = vec![0u8; 15 * 15];
        img[7] = 255;
        let r = Dataset {
            name: "dot".into(),
            example_shape: vec![1, 15, 15],
            storage: Storage::U8(img.repeat(40)),
            labels: None,
            num_classes: None,
            class_names: None,
            captions: None,
        };
        let d = load_ood("corrupt-rotate", &r, Path::new("."), 40, 1)?;
        for out in pixels(&d).chunks(225) {
            let top: u32 = out[..7 * 15].iter().map(|&x| x as u32).sum();
            let all: u32 = out.iter().map(|&x| x as u32).sum();
            assert!(all > 0 && top == 0, "energy in the top half");
        }
        Ok(())
    }

    #[test]
    fn area_resize_hand_examples() {
        #[rustfmt::skip]
        let src = [
            0, 4, 10, 20,
            8, 12, 30, 40,
            100, 100, 1, 2,
            100, 100, 3, 6,
        ];
        assert_eq!(resize_area(&src, 4, 4, 2, 2), vec![6, 25, 100, 3]);
        // 2× up-scaling repeats each pixel in a 2×2 block
        assert_eq!(
            resize_area(&[10, 20, 30, 40], 2, 2, 4, 4),
            vec![10, 10, 20, 20, 10, 10, 20, 20, 30, 30, 40, 40, 30, 30, 40, 40]
        );
        // 3 → 2: each output covers 1.5 source pixels, the middle one split between them:
        // (30 + 0.5·60) / 1.5 = 40 and (0.5·60 + 90) / 1.5 = 80
        assert_eq!(resize_area(&[30, 60, 90], 1, 3, 1, 2), vec![40, 80]);
        // a constant image stays constant at any size, e.g. Omniglot's 105 → 28
        assert!(resize_area(&[77; 105 * 105], 105, 105, 28, 28)
            .iter()
            .all(|&v| v == 77));
        assert!(resize_area(&[77; 28 * 28], 28, 28, 32, 32)
            .iter()
            .all(|&v| v == 77));
    }

    #[test]
    fn default_sets_are_known_names() {
        for data in ["mnist", "shapes", "cifar"] {
            let sets = default_ood_sets(data);
            assert!(!sets.is_empty());
            assert!(sets.iter().all(|s| OOD_SETS.contains(s)), "{sets:?}");
        }
        assert!(default_ood_sets("shapes").contains(&"mnist"));
        assert!(!default_ood_sets("mnist").contains(&"mnist"));
        assert!(default_ood_sets("toy2d:moons").is_empty());
    }

    #[test]
    fn omniglot_loads_dark_white_on_black_images() -> Result<()> {
        let Some(dir) = crate::data::require_test_data(omniglot_dir(), OMNIGLOT_ZIP) else {
            return Ok(());
        };
        let r = reference(1, 28, 28, 1, 0);
        let all = load_ood("omniglot", &r, &dir, 10_000, 0)?;
        assert_eq!(all.len(), 2720);
        assert_eq!(all.example_shape, vec![1, 28, 28]);
        let v = pixels(&all);
        // strokes cover a small part of each character, so after inversion the images are mostly black
        assert!(mean(v) < 64.0, "mean {}", mean(v));
        assert!(v.iter().any(|&x| x > 200), "no bright strokes");
        // a subset is a seeded subset of the same images, replicated to RGB for a 3×32×32 reference
        let rgb = reference(3, 32, 32, 1, 0);
        let some = load_ood("omniglot", &rgb, &dir, 100, 4)?;
        assert_eq!(some.len(), 100);
        let p = pixels(&some);
        for img in p.chunks(3 * 1024) {
            assert_eq!(img[..1024], img[1024..2048]);
            assert_eq!(img[..1024], img[2048..]);
        }
        assert_eq!(p, pixels(&load_ood("omniglot", &rgb, &dir, 100, 4)?));
        Ok(())
    }

    #[test]
    fn mnist_set_for_shapes_models() -> Result<()> {
        let found = crate::data::test_data_dir().filter(|d| mnist::find(d).is_some());
        let Some(dir) = crate::data::require_test_data(found, "MNIST") else {
            return Ok(());
        };
        let r = reference(3, 32, 32, 1, 0);
        let d = load_ood("mnist", &r, &dir, 64, 0)?;
        assert_eq!((d.len(), d.example_shape.clone()), (64, vec![3, 32, 32]));
        let v = pixels(&d);
        // MNIST's mean pixel is ≈ 33.8; area resizing keeps the mean up to the rounding of each pixel
        assert!((mean(v) - 33.8).abs() < 8.0, "mean {}", mean(v));
        Ok(())
    }
}
