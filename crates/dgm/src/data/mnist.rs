//! MNIST handwritten digits from the original IDX files.
//!
//! The four files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
//! `t10k-labels-idx1-ubyte`) are looked for, raw or gzipped (`NAME.gz`), under `<dir>/mnist/` and then directly
//! under `<dir>/`. Gzipped files are recognised by their content, so a gzipped file without the `.gz` suffix
//! works too. Splits follow the usual likelihood-benchmark convention: the first 50 000 training images for
//! training, the last 10 000 for validation, and t10k for test.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Dataset, Split, Storage};
use crate::{Error, Result};

/// The magic number of an IDX file of unsigned-byte 3-D arrays (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// The magic number of an IDX file of unsigned-byte 1-D arrays (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Image height and width.
pub const SIDE: usize = 28;
/// Number of classes (digits 0–9).
pub const NUM_CLASSES: usize = 10;
/// How many of the 60 000 training images are held out, from the end, as the validation split.
pub const VALIDATION_SIZE: usize = 10_000;

/// The training images file name (without `.gz`).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// The training labels file name (without `.gz`).
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// The test images file name (without `.gz`).
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// The test labels file name (without `.gz`).
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
/// All four file names (without `.gz`).
pub const FILES: [&str; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

const HOW_TO_GET: &str = "set DGM_DATA or the data directory to a folder holding mnist/train-images-idx3-ubyte.gz, \
     mnist/train-labels-idx1-ubyte.gz, mnist/t10k-images-idx3-ubyte.gz and mnist/t10k-labels-idx1-ubyte.gz \
     (raw or gzipped IDX files; e.g. ../shared/data)";

fn corrupt(path: &Path, msg: impl Into<String>) -> Error {
    Error::CorruptData {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn magic_name(magic: u32) -> &'static str {
    match magic {
        IMAGES_MAGIC => " (that is the magic of an image file)",
        LABELS_MAGIC => " (that is the magic of a label file)",
        _ => "",
    }
}

/// Checks the header of an unsigned-byte IDX file with `ndims` dimensions (`kind` names it in messages, e.g.
/// "IDX3 image file") against `magic` and the file size; returns the dimensions and the payload. The byte
/// count must match the header exactly (truncated files and trailing bytes are errors).
fn parse_idx<'a>(
    bytes: &'a [u8],
    path: &Path,
    magic: u32,
    kind: &str,
    ndims: usize,
) -> Result<(Vec<usize>, &'a [u8])> {
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(corrupt(
            path,
            format!(
                "too short for an {kind}: the header alone is {header} bytes, the file has {}",
                bytes.len()
            ),
        ));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(corrupt(
            path,
            format!(
                "bad magic number {found:#010x}{}; an {kind} starts with {magic:#010x}",
                magic_name(found)
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| be_u32(bytes, 4 + 4 * i) as usize)
        .collect();
    let shown = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×");
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|v| v.checked_add(header))
        .ok_or_else(|| {
            corrupt(
                path,
                format!("header claims {shown} values, more than can be addressed"),
            )
        })?;
    if bytes.len() != expected {
        let what = if bytes.len() < expected {
            "truncated"
        } else {
            "has trailing bytes"
        };
        return Err(corrupt(
            path,
            format!(
                "{what}: the header says {shown}, i.e. {expected} bytes, but the file has {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok((dims, &bytes[header..]))
}

/// Parses an IDX3 unsigned-byte file (images): returns `(n, rows, cols, pixels)` with `n * rows * cols`
/// pixels in row-major order. `path` is only used in error messages.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let (dims, pixels) = parse_idx(bytes, path, IMAGES_MAGIC, "IDX3 image file", 3)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(corrupt(
            path,
            format!("image dimensions {rows}×{cols} in the header; both must be positive"),
        ));
    }
    Ok((n, rows, cols, pixels.to_vec()))
}

/// Parses an IDX1 unsigned-byte file (labels). `path` is only used in error messages. Label values are not
/// checked here (see [`load_split`]).
pub fn parse_idx_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let (_, labels) = parse_idx(bytes, path, LABELS_MAGIC, "IDX1 label file", 1)?;
    Ok(labels.to_vec())
}

/// The paths `name` is looked for at, in order.
fn candidates(dir: &Path, name: &str) -> Vec<PathBuf> {
    let gz = format!("{name}.gz");
    vec![
        dir.join("mnist").join(name),
        dir.join("mnist").join(&gz),
        dir.join(name),
        dir.join(&gz),
    ]
}

/// The first existing path for `name`, or every path tried.
fn locate(dir: &Path, name: &str) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    let c = candidates(dir, name);
    match c.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(c),
    }
}

/// The folder under `dir` (`<dir>/mnist` or `<dir>` itself) that holds all four MNIST files, raw or
/// gzipped; `None` when neither does.
pub fn find(dir: &Path) -> Option<PathBuf> {
    [dir.join("mnist"), dir.to_path_buf()]
        .into_iter()
        .find(|d| {
            FILES
                .iter()
                .all(|name| d.join(name).is_file() || d.join(format!("{name}.gz")).is_file())
        })
}

/// Reads a file, gunzipping it when its content starts with the gzip magic bytes.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| corrupt(path, format!("not a valid gzip file: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Locates, reads and checks one pair of image and label files; returns (pixels, labels).
fn load_pair(dir: &Path, images: &str, labels: &str) -> Result<(Vec<u8>, Vec<u32>)> {
    let img_path = locate(dir, images);
    let lab_path = locate(dir, labels);
    let (img_path, lab_path) = match (img_path, lab_path) {
        (Ok(i), Ok(l)) => (i, l),
        (i, l) => {
            let mut missing = Vec::new();
            for (name, r) in [(images, i), (labels, l)] {
                if let Err(tried) = r {
                    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
                    missing.push(format!("{name} (looked for {})", list.join(", ")));
                }
            }
            return Err(Error::DataNotFound {
                name: "mnist".into(),
                msg: format!(
                    "missing {} under data directory {}; {HOW_TO_GET}",
                    missing.join("; "),
                    dir.display()
                ),
            });
        }
    };
    let (n, rows, cols, pixels) = parse_idx_images(&read_maybe_gz(&img_path)?, &img_path)?;
    if rows != SIDE || cols != SIDE {
        return Err(corrupt(
            &img_path,
            format!("images are {rows}×{cols}; MNIST images must be {SIDE}×{SIDE}"),
        ));
    }
    let raw_labels = parse_idx_labels(&read_maybe_gz(&lab_path)?, &lab_path)?;
    if raw_labels.len() != n {
        return Err(corrupt(
            &lab_path,
            format!(
                "{} labels, but {} holds {n} images; the counts must agree",
                raw_labels.len(),
                img_path.display()
            ),
        ));
    }
    if let Some((i, &l)) = raw_labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= NUM_CLASSES)
    {
        return Err(corrupt(
            &lab_path,
            format!("label {l} at index {i}; MNIST labels must be 0..=9"),
        ));
    }
    Ok((pixels, raw_labels.into_iter().map(u32::from).collect()))
}

/// Loads one MNIST split from the data directory `dir`: `Train` is the first 50 000 training images,
/// `Validation` the last 10 000, `Test` the 10 000 t10k images. Examples are 1×28×28 raw pixels with labels.
pub fn load_split(dir: &Path, split: Split) -> Result<Dataset> {
    let (images, labels) = match split {
        Split::Train | Split::Validation => (TRAIN_IMAGES, TRAIN_LABELS),
        Split::Test => (TEST_IMAGES, TEST_LABELS),
    };
    let (pixels, labels) = load_pair(dir, images, labels)?;
    let n = labels.len();
    let full = Dataset {
        name: "mnist".into(),
        example_shape: vec![1, SIDE, SIDE],
        storage: Storage::U8(pixels),
        labels: Some(labels),
        num_classes: Some(NUM_CLASSES),
        class_names: Some((0..NUM_CLASSES).map(|d| d.to_string()).collect()),
        captions: None,
    };
    match split {
        Split::Test => Ok(full),
        Split::Train | Split::Validation => {
            if n <= VALIDATION_SIZE {
                let path = locate(dir, TRAIN_IMAGES).unwrap_or_else(|_| dir.join(TRAIN_IMAGES));
                return Err(corrupt(
                    &path,
                    format!(
                        "{n} training images; the last {VALIDATION_SIZE} are the validation split, so more \
                         than {VALIDATION_SIZE} are needed (MNIST has 60000)"
                    ),
                ));
            }
            let cut = n - VALIDATION_SIZE;
            Ok(if split == Split::Train {
                full.slice(0, cut)
            } else {
                full.slice(cut, n)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IMAGES_MAGIC, n, rows, cols] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(pixels);
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    fn gz(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes)?;
        e.finish()
    }

    /// A fresh empty temporary directory for one test.
    fn temp_dir(tag: &str) -> std::io::Result<PathBuf> {
        let d = std::env::temp_dir().join(format!("dgm-mnist-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    fn msg(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn parses_valid_images_and_labels() -> Result<()> {
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8 * 10).collect();
        let p = Path::new("x-images");
        let (n, r, c, px) = parse_idx_images(&idx_images(2, 3, 4, &pixels), p)?;
        assert_eq!((n, r, c), (2, 3, 4));
        assert_eq!(px, pixels);
        let l = parse_idx_labels(&idx_labels(&[3, 1, 4]), Path::new("x-labels"))?;
        assert_eq!(l, vec![3, 1, 4]);
        Ok(())
    }

    #[test]
    fn truncated_files_name_the_file_and_sizes() {
        let pixels = vec![7u8; 2 * 28 * 28];
        let mut bytes = idx_images(2, 28, 28, &pixels);
        bytes.truncate(bytes.len() - 5);
        let e =
            msg(parse_idx_images(&bytes, Path::new("dir/train-images-idx3-ubyte")).unwrap_err());
        assert!(e.contains("dir/train-images-idx3-ubyte"), "{e}");
        assert!(e.contains("truncated"), "{e}");
        assert!(e.contains(&format!("{}", 16 + 2 * 784)), "{e}");
        assert!(e.contains(&format!("{}", 16 + 2 * 784 - 5)), "{e}");

        let mut lab = idx_labels(&[1, 2, 3]);
        lab.pop();
        let e = msg(parse_idx_labels(&lab, Path::new("labels-file")).unwrap_err());
        assert!(e.contains("labels-file") && e.contains("truncated"), "{e}");
        assert!(e.contains("11 bytes") && e.contains("10 bytes"), "{e}");

        // shorter than the header
        let e = msg(parse_idx_images(&[0, 0, 8], Path::new("tiny")).unwrap_err());
        assert!(e.contains("tiny") && e.contains("16 bytes"), "{e}");
        // trailing bytes
        let mut long = idx_labels(&[1]);
        long.push(0);
        let e = msg(parse_idx_labels(&long, Path::new("long")).unwrap_err());
        assert!(e.contains("trailing"), "{e}");
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let lab = idx_labels(&[1, 2]);
        let e =
            msg(parse_idx_images(&[lab.clone(), vec![0; 8]].concat(), Path::new("f")).unwrap_err());
        assert!(e.contains("0x00000801") && e.contains("0x00000803"), "{e}");
        assert!(e.contains("label file"), "{e}");
        let img = idx_images(1, 1, 1, &[0]);
        let e = msg(parse_idx_labels(&img, Path::new("g")).unwrap_err());
        assert!(e.contains("0x00000803") && e.contains("0x00000801"), "{e}");
        let mut bad = idx_labels(&[1]);
        bad[3] = 0x99;
        assert!(parse_idx_labels(&bad, Path::new("h")).is_err());
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::write(dir.join(name), bytes)
    }

    #[test]
    fn wrong_dims_count_mismatch_and_bad_labels_are_rejected() -> TestResult {
        let d = temp_dir("dims")?;
        // 2 images of 27×28
        write(
            &d,
            "t10k-images-idx3-ubyte",
            &idx_images(2, 27, 28, &vec![0; 2 * 27 * 28]),
        )?;
        write(&d, "t10k-labels-idx1-ubyte", &idx_labels(&[1, 2]))?;
        let e = msg(load_split(&d, Split::Test).unwrap_err());
        assert!(
            e.contains("27×28") && e.contains("28×28") && e.contains("t10k-images"),
            "{e}"
        );

        // 3 images, 2 labels
        write(
            &d,
            "t10k-images-idx3-ubyte",
            &idx_images(3, 28, 28, &vec![0; 3 * 784]),
        )?;
        let e = msg(load_split(&d, Split::Test).unwrap_err());
        assert!(e.contains("2 labels") && e.contains("3 images"), "{e}");

        // a label of 10
        write(&d, "t10k-labels-idx1-ubyte", &idx_labels(&[1, 10, 2]))?;
        let e = msg(load_split(&d, Split::Test).unwrap_err());
        assert!(e.contains("label 10") && e.contains("index 1"), "{e}");

        // all good now
        write(&d, "t10k-labels-idx1-ubyte", &idx_labels(&[1, 9, 2]))?;
        let ds = load_split(&d, Split::Test)?;
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.labels, Some(vec![1, 9, 2]));
        let _ = std::fs::remove_dir_all(&d);
        Ok(())
    }

    #[test]
    fn gz_round_trip_and_layouts() -> TestResult {
        let d = temp_dir("gz")?;
        std::fs::create_dir_all(d.join("mnist"))?;
        let pixels: Vec<u8> = (0..4 * 784).map(|i| (i * 7 % 256) as u8).collect();
        let labels = [0u8, 5, 9, 3];
        write(
            &d.join("mnist"),
            "t10k-images-idx3-ubyte.gz",
            &gz(&idx_images(4, 28, 28, &pixels))?,
        )?;
        // labels directly under <dir>, raw
        write(&d, "t10k-labels-idx1-ubyte", &idx_labels(&labels))?;
        let ds = load_split(&d, Split::Test)?;
        assert_eq!(ds.name, "mnist");
        assert_eq!(ds.example_shape, vec![1, 28, 28]);
        assert_eq!(ds.num_classes, Some(10));
        assert_eq!(ds.labels, Some(vec![0, 5, 9, 3]));
        let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(ds.class_names, Some(names));
        assert!(ds.captions.is_none());
        match &ds.storage {
            Storage::U8(v) => assert_eq!(v, &pixels),
            _ => panic!("mnist must be u8"),
        }
        // not all four files: find() says no
        assert_eq!(find(&d), None);

        // a corrupt gzip stream names the file
        let mut bad = gz(&idx_images(4, 28, 28, &pixels))?;
        bad.truncate(bad.len() / 2);
        write(&d.join("mnist"), "t10k-images-idx3-ubyte.gz", &bad)?;
        let e = msg(load_split(&d, Split::Test).unwrap_err());
        assert!(
            e.contains("t10k-images-idx3-ubyte.gz") && e.contains("gzip"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&d);
        Ok(())
    }

    #[test]
    fn missing_files_say_where_we_looked_and_how_to_fix_it() -> TestResult {
        let d = temp_dir("missing")?;
        let e = load_split(&d, Split::Train).unwrap_err();
        assert!(matches!(&e, Error::DataNotFound { name, .. } if name == "mnist"));
        let m = msg(e);
        for p in candidates(&d, TRAIN_IMAGES)
            .iter()
            .chain(candidates(&d, TRAIN_LABELS).iter())
        {
            assert!(
                m.contains(&p.display().to_string()),
                "{m} lacks {}",
                p.display()
            );
        }
        assert!(
            m.contains("DGM_DATA") && m.contains("data directory"),
            "{m}"
        );
        assert_eq!(find(&d), None);
        let _ = std::fs::remove_dir_all(&d);
        Ok(())
    }

    #[test]
    fn real_mnist_counts_and_test_histogram() -> TestResult {
        let Some(dir) = crate::data::test_data_dir() else {
            println!("skipped: DGM_DATA is not set");
            return Ok(());
        };
        let found = find(&dir).ok_or("DGM_DATA is set but holds no MNIST")?;
        assert!(found.ends_with("mnist") || found == dir);
        let train = load_split(&dir, Split::Train)?;
        let val = load_split(&dir, Split::Validation)?;
        let test = load_split(&dir, Split::Test)?;
        assert_eq!(
            (train.len(), val.len(), test.len()),
            (50_000, 10_000, 10_000)
        );
        let mut hist = [0usize; 10];
        for &l in test
            .labels
            .as_ref()
            .ok_or("mnist test split has no labels")?
        {
            hist[l as usize] += 1;
        }
        assert_eq!(
            hist,
            [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
        );
        // train + validation label histogram = the published 60k training histogram
        let mut hist = [0usize; 10];
        for ds in [&train, &val] {
            for &l in ds.labels.as_ref().ok_or("mnist split has no labels")? {
                hist[l as usize] += 1;
            }
        }
        assert_eq!(
            hist,
            [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
        );
        // mean pixel of the test set (MANIFEST: 33.791)
        if let Storage::U8(v) = &test.storage {
            let mean = v.iter().map(|&p| p as f64).sum::<f64>() / v.len() as f64;
            assert!((mean - 33.791).abs() < 0.001, "mean {mean}");
        }
        Ok(())
    }
}
