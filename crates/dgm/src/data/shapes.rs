//! Procedurally generated coloured shapes: RGB images (32×32 by default) with class labels and captions.
//!
//! Each image shows one filled shape ([`CLASS_NAMES`]) in one of the [`COLOURS`], of one of three
//! [`SIZES`], at one of nine positions on a 3×3 grid ([`POSITIONS`]) with a little jitter, on black or (with
//! [`ShapesConfig::background`]) on one of the [`BACKGROUNDS`]. Edges are anti-aliased by supersampling.
//! The label is the shape class and the caption says everything, e.g. "a small red circle at the top left".
//!
//! Image `i` of a data set with seed `s` depends only on `(s, i)` (its own [`Rng::stream`]), never on how many
//! images are generated.

use serde::{Deserialize, Serialize};

use super::{Dataset, Storage};
use crate::rng::Rng;
use crate::{Error, Result};

/// The shape classes, in label order.
pub const CLASS_NAMES: &[&str] = &["circle", "square", "triangle", "diamond", "cross", "star"];

/// The shape colours: name and RGB value.
pub const COLOURS: &[(&str, [u8; 3])] = &[
    ("red", [230, 25, 25]),
    ("green", [30, 190, 40]),
    ("blue", [40, 80, 240]),
    ("yellow", [250, 225, 20]),
    ("magenta", [230, 30, 210]),
    ("cyan", [20, 220, 230]),
    ("white", [255, 255, 255]),
    ("orange", [250, 140, 10]),
];

/// The background colours used with [`ShapesConfig::background`] (darker than every shape colour).
pub const BACKGROUNDS: &[(&str, [u8; 3])] = &[
    ("grey", [90, 90, 90]),
    ("navy", [15, 20, 90]),
    ("maroon", [100, 15, 20]),
    ("dark green", [15, 75, 25]),
    ("purple", [75, 20, 95]),
    ("brown", [95, 60, 20]),
];

/// The size names, smallest first.
pub const SIZES: &[&str] = &["small", "medium", "large"];

/// Half-extent of a shape for each size, as a fraction of the image side.
const SIZE_FRACTIONS: [f32; 3] = [0.16, 0.23, 0.30];

/// Maximum jitter of the shape centre, as a fraction of the image side (each axis, uniform).
const JITTER_FRACTION: f32 = 0.04;

/// The grid positions, row by row from the top left.
pub const POSITIONS: &[&str] = &[
    "top left",
    "top",
    "top right",
    "left",
    "centre",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
];

/// How each position reads in a caption ("at the top left", "in the centre", ...).
const POSITION_PHRASES: &[&str] = &[
    "at the top left",
    "at the top",
    "at the top right",
    "on the left",
    "in the centre",
    "on the right",
    "at the bottom left",
    "at the bottom",
    "at the bottom right",
];

/// Options of the shapes generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShapesConfig {
    /// Side of the square images in pixels (at least 8; default 32).
    pub image_size: usize,
    /// Draw each shape on a random background colour from [`BACKGROUNDS`] (named in the caption) instead of
    /// black.
    pub background: bool,
    /// Anti-aliasing: each pixel is the average of `supersample × supersample` sub-pixel samples
    /// (1 = no anti-aliasing; 1 to 16; default 4).
    pub supersample: usize,
}

impl Default for ShapesConfig {
    fn default() -> Self {
        Self {
            image_size: 32,
            background: false,
            supersample: 4,
        }
    }
}

impl ShapesConfig {
    /// Checks the options; [`generate`] clamps out-of-range values instead.
    pub fn validate(&self) -> Result<()> {
        if !(8..=1024).contains(&self.image_size) {
            return Err(Error::invalid(
                "shapes.image_size",
                format!("{} pixels; must be between 8 and 1024", self.image_size),
            ));
        }
        if !(1..=16).contains(&self.supersample) {
            return Err(Error::invalid(
                "shapes.supersample",
                format!("{}; must be between 1 and 16", self.supersample),
            ));
        }
        Ok(())
    }

    fn clamped(&self) -> ShapesConfig {
        ShapesConfig {
            image_size: self.image_size.clamp(8, 1024),
            background: self.background,
            supersample: self.supersample.clamp(1, 16),
        }
    }
}

/// Everything about one generated image.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeSpec {
    /// Index into [`CLASS_NAMES`] (the label).
    pub class: usize,
    /// Index into [`COLOURS`].
    pub colour: usize,
    /// Index into [`SIZES`].
    pub size: usize,
    /// Index into [`POSITIONS`].
    pub position: usize,
    /// Index into [`BACKGROUNDS`], or `None` for black.
    pub background: Option<usize>,
    /// Centre of the shape in pixels (x to the right, y down; pixel `(i, j)` covers `[i, i+1) × [j, j+1)`).
    pub centre: (f32, f32),
    /// Half-extent of the shape in pixels.
    pub radius: f32,
}

impl ShapeSpec {
    /// The attributes of image `index` of the data set with seed `seed`.
    pub fn sample(seed: u64, index: u64, cfg: &ShapesConfig) -> ShapeSpec {
        let cfg = cfg.clamped();
        let mut r = Rng::stream(seed, index);
        let class = r.below(CLASS_NAMES.len());
        let colour = r.below(COLOURS.len());
        let size = r.below(SIZES.len());
        let position = r.below(POSITIONS.len());
        let jx = 2.0 * r.uniform() - 1.0;
        let jy = 2.0 * r.uniform() - 1.0;
        let background = if cfg.background {
            Some(r.below(BACKGROUNDS.len()))
        } else {
            None
        };
        let side = cfg.image_size as f32;
        let radius = SIZE_FRACTIONS[size] * side;
        let jitter = JITTER_FRACTION * side;
        // grid of centres keeping the whole (jittered) shape inside the image
        let margin = radius + jitter;
        let grid = |k: usize| margin + (side - 2.0 * margin) * k as f32 / 2.0;
        let centre = (
            grid(position % 3) + jitter * jx,
            grid(position / 3) + jitter * jy,
        );
        ShapeSpec {
            class,
            colour,
            size,
            position,
            background,
            centre,
            radius,
        }
    }

    /// The caption, e.g. "a small red circle at the top left" or "a large blue star in the centre on a grey
    /// background".
    pub fn caption(&self) -> String {
        let mut s = format!(
            "a {} {} {} {}",
            SIZES[self.size],
            COLOURS[self.colour].0,
            CLASS_NAMES[self.class],
            POSITION_PHRASES[self.position]
        );
        if let Some(b) = self.background {
            s.push_str(" on a ");
            s.push_str(BACKGROUNDS[b].0);
            s.push_str(" background");
        }
        s
    }

    /// The RGB colour of the shape.
    pub fn rgb(&self) -> [u8; 3] {
        COLOURS[self.colour].1
    }

    /// The RGB colour of the background.
    pub fn background_rgb(&self) -> [u8; 3] {
        self.background.map_or([0, 0, 0], |b| BACKGROUNDS[b].1)
    }

    /// True when the point `(x, y)` (in pixels) lies inside the shape.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        let u = (x - self.centre.0) / self.radius;
        let v = (y - self.centre.1) / self.radius;
        inside(self.class, u, v)
    }

    /// Draws the image into `out`, `3 * side * side` bytes in (c, h, w) order.
    pub fn render(&self, cfg: &ShapesConfig, out: &mut [u8]) {
        let cfg = cfg.clamped();
        let side = cfg.image_size;
        let plane = side * side;
        let fg = self.rgb();
        let bg = self.background_rgb();
        for c in 0..3 {
            out[c * plane..(c + 1) * plane].fill(bg[c]);
        }
        let s = cfg.supersample;
        let total = (s * s) as u32;
        let offsets: Vec<f32> = (0..s).map(|k| (k as f32 + 0.5) / s as f32).collect();
        // pixels that can touch the shape
        let lo = |c: f32| ((c - self.radius).floor().max(0.0)) as usize;
        let hi = |c: f32| (((c + self.radius).ceil()) as usize).min(side);
        let (x0, x1) = (lo(self.centre.0), hi(self.centre.0));
        let (y0, y1) = (lo(self.centre.1), hi(self.centre.1));
        let inv_r = 1.0 / self.radius;
        for py in y0..y1 {
            for px in x0..x1 {
                let mut cov = 0u32;
                for &oy in &offsets {
                    let v = (py as f32 + oy - self.centre.1) * inv_r;
                    for &ox in &offsets {
                        let u = (px as f32 + ox - self.centre.0) * inv_r;
                        cov += inside(self.class, u, v) as u32;
                    }
                }
                if cov == 0 {
                    continue;
                }
                let at = py * side + px;
                for c in 0..3 {
                    let mixed =
                        (fg[c] as u32 * cov + bg[c] as u32 * (total - cov) + total / 2) / total;
                    out[c * plane + at] = mixed as u8;
                }
            }
        }
    }
}

/// Half-width of the cross's arms and the star's geometry, in units of the shape radius.
const CROSS_ARM: f32 = 0.3;

/// The unit normals and offsets of the 5 lines forming a regular pentagram of outer radius 1, pointing up.
/// A point is inside the filled star when it is on the inner side of at least 4 of them.
fn star_lines() -> &'static [(f32, f32, f32); 5] {
    static LINES: std::sync::OnceLock<[(f32, f32, f32); 5]> = std::sync::OnceLock::new();
    LINES.get_or_init(|| {
        // outer vertices, the first pointing up (y down in image coordinates)
        let vert = |k: usize| {
            let a = -std::f32::consts::FRAC_PI_2 + k as f32 * 2.0 * std::f32::consts::PI / 5.0;
            (a.cos(), a.sin())
        };
        std::array::from_fn(|k| {
            // the line through vertices k and k + 2
            let (ax, ay) = vert(k);
            let (bx, by) = vert((k + 2) % 5);
            let (nx, ny) = (by - ay, ax - bx);
            let len = (nx * nx + ny * ny).sqrt();
            let (nx, ny) = (nx / len, ny / len);
            let d = nx * ax + ny * ay;
            // orient so that the centre is on the inner side: n·p <= d with d > 0
            if d < 0.0 {
                (-nx, -ny, -d)
            } else {
                (nx, ny, d)
            }
        })
    })
}

/// Whether the point `(u, v)`, in units of the shape radius around its centre (v down), lies in shape `class`.
fn inside(class: usize, u: f32, v: f32) -> bool {
    match class {
        // circle
        0 => u * u + v * v <= 1.0,
        // square
        1 => u.abs() <= 0.85 && v.abs() <= 0.85,
        // triangle, apex up: vertices (0, -1), (±1, 0.8)
        2 => v <= 0.8 && 1.8 * u.abs() - v <= 1.0,
        // diamond
        3 => u.abs() + v.abs() <= 1.0,
        // cross (plus sign)
        4 => {
            let (a, b) = (u.abs(), v.abs());
            (a <= CROSS_ARM && b <= 1.0) || (b <= CROSS_ARM && a <= 1.0)
        }
        // star
        _ => {
            if u * u + v * v > 1.0 {
                return false;
            }
            star_lines()
                .iter()
                .filter(|(nx, ny, d)| nx * u + ny * v <= *d)
                .count()
                >= 4
        }
    }
}

/// Bytes one generated example takes in memory at most: its 3·side² pixels, its label, and its caption (the
/// `String` and its longest possible text), so that `n` examples can be checked against the memory before
/// they are generated.
pub fn example_bytes(cfg: &ShapesConfig) -> u64 {
    let side = cfg.clamped().image_size as u64;
    let longest = |v: &[&str]| v.iter().map(|s| s.len()).max().unwrap_or(0);
    let caption = "a    on a  background".len()
        + longest(SIZES)
        + COLOURS.iter().map(|c| c.0.len()).max().unwrap_or(0)
        + longest(CLASS_NAMES)
        + longest(POSITION_PHRASES)
        + BACKGROUNDS.iter().map(|b| b.0.len()).max().unwrap_or(0);
    3 * side * side
        + std::mem::size_of::<u32>() as u64
        + std::mem::size_of::<String>() as u64
        + caption as u64
}

/// Generates `n` shape images with seed `seed`: data set `shapes`, examples `[3, side, side]` (u8), labels
/// = shape class ([`CLASS_NAMES`]), captions from [`ShapeSpec::caption`]. Out-of-range options are clamped
/// (see [`ShapesConfig::validate`]).
pub fn generate(n: usize, seed: u64, cfg: &ShapesConfig) -> Dataset {
    generate_holding_out(n, seed, cfg, &[])
}

/// [`generate`] without the (colour, shape) pairs in `holdout` (indices into [`COLOURS`] and
/// [`CLASS_NAMES`]): images whose pair is held out are skipped, so the data set has the first `n` images of
/// the sequence that are kept (each still depends only on its seed and index). Holding out every pair is an
/// error of [`parse_holdout`]; here it would yield nothing, so `holdout` is ignored then.
pub fn generate_holding_out(
    n: usize,
    seed: u64,
    cfg: &ShapesConfig,
    holdout: &[(usize, usize)],
) -> Dataset {
    let cfg = cfg.clamped();
    let all = holdout.len() >= COLOURS.len() * CLASS_NAMES.len()
        && (0..COLOURS.len()).all(|c| (0..CLASS_NAMES.len()).all(|s| holdout.contains(&(c, s))));
    let side = cfg.image_size;
    let d = 3 * side * side;
    let mut pixels = vec![0u8; n * d];
    let mut labels = Vec::with_capacity(n);
    let mut captions = Vec::with_capacity(n);
    let mut index = 0u64;
    for out in pixels.chunks_exact_mut(d) {
        let spec = loop {
            let s = ShapeSpec::sample(seed, index, &cfg);
            index += 1;
            if all || !holdout.contains(&(s.colour, s.class)) {
                break s;
            }
        };
        spec.render(&cfg, out);
        labels.push(spec.class as u32);
        captions.push(spec.caption());
    }
    Dataset {
        name: "shapes".into(),
        example_shape: vec![3, side, side],
        storage: Storage::U8(pixels),
        labels: Some(labels),
        num_classes: Some(CLASS_NAMES.len()),
        class_names: Some(CLASS_NAMES.iter().map(|s| s.to_string()).collect()),
        captions: Some(captions),
    }
}

/// Parses held-out (colour, shape) pairs such as `"red circle"` into indices into [`COLOURS`] and
/// [`CLASS_NAMES`] (`key` names the setting in messages).
///
/// Errors: an entry that is not "<colour> <shape>", an unknown colour or shape (the valid ones named), or a
/// list that holds out every pair.
pub fn parse_holdout(pairs: &[String], key: &'static str) -> Result<Vec<(usize, usize)>> {
    let colours: Vec<&str> = COLOURS.iter().map(|c| c.0).collect();
    let parsed = pairs
        .iter()
        .map(|p| {
            let mut words = p.split_whitespace();
            let (Some(c), Some(s), None) = (words.next(), words.next(), words.next()) else {
                return Err(Error::invalid(
                    key,
                    format!("'{p}' is not a pair \"<colour> <shape>\", e.g. \"red circle\""),
                ));
            };
            let c = colours
                .iter()
                .position(|&x| x == c)
                .ok_or_else(|| Error::unknown(key, c, &colours))?;
            let s = CLASS_NAMES
                .iter()
                .position(|&x| x == s)
                .ok_or_else(|| Error::unknown(key, s, CLASS_NAMES))?;
            Ok((c, s))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut distinct = parsed.clone();
    distinct.sort();
    distinct.dedup();
    if distinct.len() == COLOURS.len() * CLASS_NAMES.len() {
        return Err(Error::invalid(
            key,
            "holds out every (colour, shape) pair: nothing would be left to train on",
        ));
    }
    Ok(parsed)
}

/// The attributes a caption states, as indices into [`SIZES`], [`COLOURS`], [`CLASS_NAMES`], [`POSITIONS`]
/// and (when present) [`BACKGROUNDS`]. The inverse of [`ShapeSpec::caption`]; `None` when `caption` is not
/// in that form. Useful to check what a text-conditioned model was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptionParts {
    /// Index into [`SIZES`].
    pub size: usize,
    /// Index into [`COLOURS`].
    pub colour: usize,
    /// Index into [`CLASS_NAMES`].
    pub class: usize,
    /// Index into [`POSITIONS`].
    pub position: usize,
    /// Index into [`BACKGROUNDS`], if the caption names a background.
    pub background: Option<usize>,
}

/// Parses a caption written by [`ShapeSpec::caption`] (see [`CaptionParts`]).
pub fn parse_caption(caption: &str) -> Option<CaptionParts> {
    let rest = caption.strip_prefix("a ")?;
    let (size, rest) = strip_one(rest, SIZES.iter().copied())?;
    let (colour, rest) = strip_one(rest.strip_prefix(' ')?, COLOURS.iter().map(|c| c.0))?;
    let (class, rest) = strip_one(rest.strip_prefix(' ')?, CLASS_NAMES.iter().copied())?;
    let (position, rest) = strip_one(rest.strip_prefix(' ')?, POSITION_PHRASES.iter().copied())?;
    let background = if rest.is_empty() {
        None
    } else {
        let b = rest.strip_prefix(" on a ")?.strip_suffix(" background")?;
        Some(BACKGROUNDS.iter().position(|c| c.0 == b)?)
    };
    Some(CaptionParts {
        size,
        colour,
        class,
        position,
        background,
    })
}

/// Strips the longest of `options` that `s` starts with; returns its index and the rest.
fn strip_one<'a, 'b>(
    s: &'a str,
    options: impl Iterator<Item = &'b str>,
) -> Option<(usize, &'a str)> {
    options
        .enumerate()
        .filter(|(_, o)| s.starts_with(o))
        .max_by_key(|(_, o)| o.len())
        .map(|(i, o)| (i, &s[o.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn bytes(ds: &Dataset) -> &[u8] {
        match &ds.storage {
            Storage::U8(v) => v,
            _ => panic!("shapes must be u8"),
        }
    }

    fn pixel(img: &[u8], side: usize, x: usize, y: usize) -> [u8; 3] {
        let p = side * side;
        [
            img[y * side + x],
            img[p + y * side + x],
            img[2 * p + y * side + x],
        ]
    }

    #[test]
    fn deterministic_and_independent_of_n() -> TestResult {
        let cfg = ShapesConfig::default();
        let a = generate(100, 7, &cfg);
        let b = generate(100, 7, &cfg);
        let c = generate(100, 8, &cfg);
        assert_eq!(bytes(&a), bytes(&b));
        assert_eq!(a.captions, b.captions);
        assert_ne!(bytes(&a), bytes(&c));
        let small = generate(10, 7, &cfg);
        assert_eq!(bytes(&small), &bytes(&a)[..10 * 3072]);
        let small_captions = small.captions.as_ref().ok_or("shapes has no captions")?;
        let a_captions = a.captions.as_ref().ok_or("shapes has no captions")?;
        assert_eq!(small_captions[..], a_captions[..10]);
        assert_eq!(a.example_shape, vec![3, 32, 32]);
        assert_eq!(a.len(), 100);
        assert_eq!(a.num_classes, Some(6));
        let class_names = a.class_names.as_ref().ok_or("shapes has no class names")?;
        assert_eq!(class_names[5], "star");
        Ok(())
    }

    #[test]
    fn captions_match_labels_and_parse_back() -> TestResult {
        for background in [false, true] {
            let cfg = ShapesConfig {
                background,
                ..Default::default()
            };
            let ds = generate(500, 1, &cfg);
            let labels = ds.labels.as_ref().ok_or("shapes has no labels")?;
            let captions = ds.captions.as_ref().ok_or("shapes has no captions")?;
            for (i, (cap, &l)) in captions.iter().zip(labels).enumerate() {
                let words: Vec<&str> = cap.split(' ').collect();
                assert!(words.contains(&CLASS_NAMES[l as usize]), "{cap} vs {l}");
                let parts = parse_caption(cap).ok_or_else(|| format!("unparsable: {cap}"))?;
                let spec = ShapeSpec::sample(1, i as u64, &cfg);
                assert_eq!(parts.class, l as usize);
                assert_eq!(
                    (parts.size, parts.colour, parts.position, parts.background),
                    (spec.size, spec.colour, spec.position, spec.background)
                );
                assert_eq!(cap.contains("background"), background, "{cap}");
            }
        }
        let spec = ShapeSpec {
            class: 0,
            colour: 0,
            size: 0,
            position: 0,
            background: None,
            centre: (0.0, 0.0),
            radius: 1.0,
        };
        assert_eq!(spec.caption(), "a small red circle at the top left");
        assert!(parse_caption("a small red blob at the top left").is_none());
        assert!(parse_caption("a small red circle at the top left on a pink background").is_none());
        Ok(())
    }

    #[test]
    fn shape_centre_has_the_stated_colour_and_corners_the_background() {
        for background in [false, true] {
            let cfg = ShapesConfig {
                background,
                ..Default::default()
            };
            let ds = generate(600, 11, &cfg);
            let v = bytes(&ds);
            for i in 0..600 {
                let spec = ShapeSpec::sample(11, i as u64, &cfg);
                let img = &v[i * 3072..(i + 1) * 3072];
                let (cx, cy) = (spec.centre.0 as usize, spec.centre.1 as usize);
                assert_eq!(pixel(img, 32, cx, cy), spec.rgb(), "{}", spec.caption());
                // the image corner farthest from the shape is background
                let fx = if spec.centre.0 < 16.0 { 31 } else { 0 };
                let fy = if spec.centre.1 < 16.0 { 31 } else { 0 };
                assert_eq!(pixel(img, 32, fx, fy), spec.background_rgb());
                // the shape lies inside the image and its position agrees with the grid cell
                for c in [spec.centre.0, spec.centre.1] {
                    assert!(c - spec.radius >= -1e-4 && c + spec.radius <= 32.0 + 1e-4);
                }
                let col = spec.position % 3;
                let third = |c: f32| {
                    if c < 14.0 {
                        0
                    } else if c <= 18.0 {
                        1
                    } else {
                        2
                    }
                };
                assert_eq!(third(spec.centre.0), col, "{}", spec.caption());
                assert_eq!(
                    third(spec.centre.1),
                    spec.position / 3,
                    "{}",
                    spec.caption()
                );
            }
        }
    }

    #[test]
    fn anti_aliased_edges_and_areas() {
        // a large centred circle: the edge has intermediate values, and the covered area ≈ π r²
        let cfg = ShapesConfig::default();
        let mut spec = ShapeSpec::sample(0, 0, &cfg);
        spec.class = 0;
        spec.colour = 6; // white
        spec.background = None;
        spec.centre = (16.0, 16.0);
        spec.radius = 9.6;
        let mut img = vec![0u8; 3072];
        spec.render(&cfg, &mut img);
        let red = &img[..1024];
        let area = red.iter().map(|&p| p as f64 / 255.0).sum::<f64>();
        let want = std::f64::consts::PI * 9.6f64.powi(2);
        assert!((area / want - 1.0).abs() < 0.02, "{area} vs {want}");
        assert!(
            red.iter().any(|&p| p > 20 && p < 235),
            "no anti-aliased pixels"
        );
        // areas relative to the circle: square 4·0.85² = 2.89, diamond 2, cross 4·0.3·2 − 0.36 = 2.04,
        // triangle 2·1.8/2 = 1.8 (half base 1, height 1.8), star (pentagram, outer radius 1) ≈ 1.123
        for (class, rel) in [(1, 2.89), (2, 1.8), (3, 2.0), (4, 2.04), (5, 1.1226)] {
            spec.class = class;
            spec.render(&cfg, &mut img);
            let area = img[..1024].iter().map(|&p| p as f64 / 255.0).sum::<f64>();
            let want = rel * 9.6f64.powi(2);
            assert!(
                (area / want - 1.0).abs() < 0.03,
                "{}: {area} vs {want}",
                CLASS_NAMES[class]
            );
        }
    }

    #[test]
    fn labels_roughly_uniform_and_fast() -> TestResult {
        let t = std::time::Instant::now();
        let ds = generate(20_000, 3, &ShapesConfig::default());
        let secs = t.elapsed().as_secs_f64();
        println!("20000 shapes in {secs:.3} s");
        assert!(secs < 5.0, "{secs} s");
        let mut counts = [0usize; 6];
        let labels = ds.labels.as_ref().ok_or("shapes has no labels")?;
        for &l in &labels[..6000] {
            counts[l as usize] += 1;
        }
        // 1000 expected each, sd ≈ 29
        for c in counts {
            assert!((c as f64 - 1000.0).abs() < 130.0, "{counts:?}");
        }
        Ok(())
    }

    #[test]
    fn config_serde_and_validation() -> TestResult {
        let cfg = ShapesConfig::default();
        let text = toml::to_string(&cfg)?;
        assert_eq!(toml::from_str::<ShapesConfig>(&text)?, cfg);
        let partial: ShapesConfig = toml::from_str("background = true")?;
        assert!(partial.background && partial.image_size == 32);
        assert!(toml::from_str::<ShapesConfig>("colour = 3").is_err());
        let bad = ShapesConfig {
            image_size: 4,
            ..Default::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("image_size") && e.contains('4'), "{e}");
        assert!(cfg.validate().is_ok());
        let big = generate(
            2,
            0,
            &ShapesConfig {
                image_size: 64,
                ..Default::default()
            },
        );
        assert_eq!(big.example_shape, vec![3, 64, 64]);
        assert_eq!(bytes(&big).len(), 2 * 3 * 64 * 64);
        Ok(())
    }

    #[test]
    fn held_out_pairs_are_skipped_and_parsed_with_named_errors() -> Result<()> {
        let cfg = ShapesConfig {
            image_size: 8,
            supersample: 1,
            ..ShapesConfig::default()
        };
        let pairs = parse_holdout(&["red circle".into(), "blue square".into()], "data.holdout")?;
        assert_eq!(pairs, vec![(0, 0), (2, 1)]);
        let all = generate(400, 7, &cfg);
        let kept = generate_holding_out(300, 7, &cfg, &pairs);
        let parts: Vec<CaptionParts> = kept
            .captions
            .as_ref()
            .map(|c| c.iter().filter_map(|c| parse_caption(c)).collect())
            .unwrap_or_default();
        assert_eq!(parts.len(), 300);
        assert!(parts.iter().all(|p| !pairs.contains(&(p.colour, p.class))));
        // the kept images are the full sequence's, in order, without the held-out ones
        let expected: Vec<&String> = all
            .captions
            .as_ref()
            .map(|c| {
                c.iter()
                    .filter(|c| {
                        parse_caption(c).is_some_and(|p| !pairs.contains(&(p.colour, p.class)))
                    })
                    .take(300)
                    .collect()
            })
            .unwrap_or_default();
        let got: Vec<&String> = kept.captions.iter().flatten().collect();
        assert_eq!(got, expected);
        let err = |p: &[&str]| {
            let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
            parse_holdout(&p, "data.holdout").unwrap_err().to_string()
        };
        assert!(err(&["purple circle"]).contains("purple"));
        assert!(err(&["red blob"]).contains("blob"));
        assert!(err(&["red"]).contains("<colour> <shape>"));
        let every: Vec<String> = COLOURS
            .iter()
            .flat_map(|c| CLASS_NAMES.iter().map(move |s| format!("{} {s}", c.0)))
            .collect();
        let every: Vec<&str> = every.iter().map(String::as_str).collect();
        assert!(err(&every).contains("every"));
        Ok(())
    }
}
