//! The fuzz targets: one per loader of outside bytes, each with valid seeds and a structure-aware mutator.
//!
//! | target | loader |
//! |---|---|
//! | `mnist` | `data::mnist::load_split` (IDX image + label files, raw or gzipped) |
//! | `omniglot` | `data::ood::load_ood("omniglot")` (a zip of PNGs) |
//! | `png` | `image_io::load_image` |
//! | `safetensors` | `checkpoint::load_tensors` |
//! | `config` | `train::RunConfig::from_toml` (+ `validate`, `run_tokenizer`, `to_toml` round trip) |
//! | `set` | `train::RunConfig::set` (what `--set key=value` parses) |
//! | `tokenizer` | `[model.tokenizer]` of a config through `train::run::run_tokenizer` |
//! | `state` | `train::RunDir::load_state` (a legacy run's state.json) |
//! | `checkpoint` | `train::RunDir::checkpoint` + `RunCheckpoint::tensors` (checkpoint.json and a hashed file) |
//! | `text` | `data::text::load` + `Tokenizer::from_corpus` + `TextCorpus::windows` + `Utf8Stream` |
//!
//! There is no WAV loader in dgm yet, so no WAV target.

use std::io::{Read, Write};
use std::path::Path;

use candle_core::Device;
use dgm::data::text::TextCorpus;
use dgm::data::tokenizer::Utf8Stream;
use dgm::data::{Dataset, Split, Storage, Tokenizer};
use dgm::rng::Rng;
use dgm::train::{RunConfig, RunDir};

use super::{mutate_bytes, mutate_text, Input, Target};

/// Every target name, in campaign order.
pub const NAMES: &[&str] = &[
    "mnist",
    "omniglot",
    "png",
    "safetensors",
    "config",
    "set",
    "tokenizer",
    "state",
    "checkpoint",
    "text",
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    Some(match name {
        "mnist" => mnist(),
        "omniglot" => omniglot(),
        "png" => png(),
        "safetensors" => safetensors(),
        "config" => config(),
        "set" => set(),
        "tokenizer" => tokenizer(),
        "state" => state(),
        "checkpoint" => checkpoint(),
        "text" => text(),
        _ => return None,
    })
}

fn err(e: dgm::Error) -> String {
    e.to_string()
}

fn refs(seeds: &[Input], part: usize) -> Vec<&[u8]> {
    seeds
        .iter()
        .filter_map(|s| s.get(part).map(|p| p.as_slice()))
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // ok: writing to a Vec cannot fail
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

fn unzlib(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(bytes)
        .take(super::MAX_PART as u64)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(bytes);
    c.sum()
}

// ------------------------------------------------------------------------------------------------------
// MNIST IDX

fn idx_images(n: u32, rows: u32, cols: u32, rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [dgm::data::mnist::IMAGES_MAGIC, n, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend((0..n * rows * cols).map(|_| rng.below(256) as u8));
    v
}

fn idx_labels(n: u32, rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&dgm::data::mnist::LABELS_MAGIC.to_be_bytes());
    v.extend_from_slice(&n.to_be_bytes());
    v.extend((0..n).map(|_| rng.below(10) as u8));
    v
}

const IDX_DICT: &[&[u8]] = &[
    &[0, 0, 8, 3],
    &[0, 0, 8, 1],
    &[0, 0, 0, 28],
    &[0xff, 0xff, 0xff, 0xff],
    &[0x1f, 0x8b, 8, 0],
    &[10],
    &[255],
];

fn mnist() -> Target {
    let mut rng = Rng::new(1);
    let mut seeds = Vec::new();
    for n in [1u32, 2, 3] {
        let img = idx_images(n, 28, 28, &mut rng);
        let lab = idx_labels(n, &mut rng);
        seeds.push(vec![img.clone(), lab.clone()]);
        seeds.push(vec![gzip(&img), gzip(&lab)]);
    }
    Target {
        name: "mnist",
        loader: "data::mnist::load_split",
        seeds,
        mutate: Box::new(|rng, seed, seeds| {
            let mut input = seed.clone();
            let parts: &[usize] = match rng.below(5) {
                0 => &[0, 1],
                1 | 2 => &[0],
                _ => &[1],
            };
            for &p in parts {
                let others = refs(seeds, p);
                let is_gz = input[p].starts_with(&[0x1f, 0x8b]);
                // mutate the IDX content, then re-gzip it (so the gzip CRC holds and the parser sees it) ...
                let mut raw = if is_gz {
                    let mut out = Vec::new();
                    let _ = flate2::read::MultiGzDecoder::new(input[p].as_slice())
                        .read_to_end(&mut out);
                    out
                } else {
                    input[p].clone()
                };
                mutate_bytes(rng, &mut raw, IDX_DICT, &others, 4);
                let mut bytes = if rng.below(3) == 0 { gzip(&raw) } else { raw };
                // ... or mutate the gzip stream itself
                if rng.below(6) == 0 {
                    let mut gz = gzip(&bytes);
                    mutate_bytes(rng, &mut gz, IDX_DICT, &[], 2);
                    bytes = gz;
                }
                // two gzip members
                if rng.below(20) == 0 {
                    let half = bytes.len() / 2;
                    bytes = [gzip(&bytes[..half]), gzip(&bytes[half..])].concat();
                }
                input[p] = bytes;
            }
            input
        }),
        run: Box::new(|work, input| {
            std::fs::write(work.join("t10k-images-idx3-ubyte"), &input[0])
                .map_err(|e| e.to_string())?;
            std::fs::write(work.join("t10k-labels-idx1-ubyte"), &input[1])
                .map_err(|e| e.to_string())?;
            let ds = dgm::data::mnist::load_split(work, Split::Test).map_err(err)?;
            // property: a loaded split has one label (0..=9) and 784 pixels per image
            let n = ds.len();
            let labels = ds.labels.as_ref().map_or(0, |l| l.len());
            assert_eq!(labels, n, "labels vs images");
            if let Storage::U8(v) = &ds.storage {
                assert_eq!(v.len(), n * 784, "pixel count");
            }
            Ok(())
        }),
    }
}

// ------------------------------------------------------------------------------------------------------
// PNG

/// A PNG chunk: type and data.
pub type Chunk = ([u8; 4], Vec<u8>);

pub fn png_assemble(chunks: &[Chunk], fix_crc: bool, old_crcs: &[u32]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (i, (ty, data)) in chunks.iter().enumerate() {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(ty);
        out.extend_from_slice(data);
        let crc = if fix_crc || i >= old_crcs.len() {
            crc32(&[ty.as_slice(), data].concat())
        } else {
            old_crcs[i]
        };
        out.extend_from_slice(&crc.to_be_bytes());
    }
    out
}

pub fn png_chunks(png: &[u8]) -> Option<Vec<Chunk>> {
    let mut at = 8;
    let mut out = Vec::new();
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().ok()?) as usize;
        let ty: [u8; 4] = png[at + 4..at + 8].try_into().ok()?;
        let end = at.checked_add(8)?.checked_add(len)?;
        if end + 4 > png.len() {
            return None;
        }
        out.push((ty, png[at + 8..end].to_vec()));
        at = end + 4;
    }
    Some(out)
}

/// A PNG of `w`×`h` pixels with bit depth `depth` and colour type `color`, random pixels and random filter
/// bytes, plus `extra` chunks (PLTE, tRNS, ...) before the image data.
pub fn make_png(w: u32, h: u32, depth: u8, color: u8, extra: &[Chunk], rng: &mut Rng) -> Vec<u8> {
    let channels = match color {
        0 | 3 => 1,
        2 => 3,
        4 => 2,
        _ => 4,
    };
    let row = (w as usize * channels * depth as usize).div_ceil(8);
    let mut raw = Vec::new();
    for _ in 0..h {
        raw.push(rng.below(5) as u8);
        raw.extend((0..row).map(|_| rng.below(256) as u8));
    }
    if color == 3 {
        // palette indices must stay below the palette size (4 entries)
        let mut i = 0;
        for _ in 0..h {
            i += 1;
            for b in &mut raw[i..i + row] {
                *b &= if depth == 8 { 3 } else { 0x33 };
            }
            i += row;
        }
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
    let mut chunks: Vec<Chunk> = vec![(*b"IHDR", ihdr)];
    chunks.extend_from_slice(extra);
    chunks.push((*b"IDAT", zlib(&raw)));
    chunks.push((*b"IEND", Vec::new()));
    png_assemble(&chunks, true, &[])
}

fn png_seeds(rng: &mut Rng) -> Vec<Vec<u8>> {
    let plte = (*b"PLTE", vec![0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0, 255]);
    let trns = (*b"tRNS", vec![255, 128, 0, 64]);
    let gama = (*b"gAMA", 45455u32.to_be_bytes().to_vec());
    vec![
        make_png(28, 28, 8, 0, &[], rng),
        make_png(8, 8, 8, 2, std::slice::from_ref(&gama), rng),
        make_png(5, 7, 8, 6, &[], rng),
        make_png(6, 5, 4, 3, &[plte.clone(), trns], rng),
        make_png(9, 3, 8, 3, &[plte], rng),
        make_png(4, 4, 16, 0, &[], rng),
        make_png(3, 3, 16, 2, &[], rng),
        make_png(8, 2, 1, 0, &[], rng),
        make_png(4, 4, 8, 4, &[gama], rng),
    ]
}

const PNG_DICT: &[&[u8]] = &[
    b"IHDR",
    b"IDAT",
    b"IEND",
    b"PLTE",
    b"tRNS",
    b"acTL",
    b"fcTL",
    b"fdAT",
    b"iCCP",
    b"zTXt",
    b"iTXt",
    b"eXIf",
    b"sBIT",
    b"\x89PNG\r\n\x1a\n",
    &[0xff, 0xff, 0xff, 0xff],
    &[0, 0, 0, 0],
];

/// Extra chunks the mutator may insert (APNG frames, text, colour information).
fn random_chunk(rng: &mut Rng) -> Chunk {
    let types: [&[u8; 4]; 12] = [
        b"PLTE", b"tRNS", b"acTL", b"fcTL", b"fdAT", b"iCCP", b"zTXt", b"iTXt", b"tEXt", b"sBIT",
        b"cICP", b"pHYs",
    ];
    let ty = *types[rng.below(types.len())];
    let n = [0, 1, 3, 4, 8, 13, 26, 30, 768, 1000][rng.below(10)];
    let mut data: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
    if rng.below(2) == 0 && n >= 8 {
        // a plausible width and height (fcTL) or frame count (acTL) with an interesting value
        let v = super::interesting(rng, 0) as u32;
        data[..4].copy_from_slice(&v.to_be_bytes());
    }
    if (ty == *b"zTXt" || ty == *b"iCCP") && n > 2 {
        data[1] = 0;
        let z = zlib(&vec![b'x'; rng.below(5000)]);
        data.extend(z);
    }
    (ty, data)
}

/// A mutated PNG: chunk-level edits with valid CRCs (IHDR fields, chunks inserted, deleted, duplicated or
/// reordered, image data decompressed, mutated and recompressed), or plain byte mutations.
fn mutate_png(rng: &mut Rng, png: &[u8], others: &[&[u8]]) -> Vec<u8> {
    let Some(mut chunks) = png_chunks(png).filter(|_| rng.below(4) != 0) else {
        let mut b = png.to_vec();
        mutate_bytes(rng, &mut b, PNG_DICT, others, 4);
        return b;
    };
    let old_crcs: Vec<u32> = chunks
        .iter()
        .map(|(t, d)| crc32(&[t.as_slice(), d].concat()))
        .collect();
    for _ in 0..1 + rng.below(3) {
        if chunks.is_empty() {
            chunks.push(random_chunk(rng));
        }
        let i = rng.below(chunks.len());
        match rng.below(8) {
            0 | 1 => {
                // IHDR fields
                if let Some((_, d)) = chunks.iter_mut().find(|(t, _)| t == b"IHDR") {
                    if d.len() >= 13 {
                        match rng.below(4) {
                            0 | 1 => {
                                let at = 4 * rng.below(2);
                                let v = super::interesting(rng, 0) as u32;
                                d[at..at + 4].copy_from_slice(&v.to_be_bytes());
                            }
                            2 => d[8] = [1, 2, 4, 8, 16, rng.below(256) as u8][rng.below(6)],
                            _ => {
                                d[9 + rng.below(4)] =
                                    [0, 1, 2, 3, 4, 6, rng.below(256) as u8][rng.below(7)]
                            }
                        }
                    } else {
                        mutate_bytes(rng, d, &[], &[], 2);
                    }
                }
            }
            2 => {
                // the image data: decompress, mutate, recompress (sometimes in several IDAT chunks)
                let data: Vec<u8> = chunks
                    .iter()
                    .filter(|(t, _)| t == b"IDAT")
                    .flat_map(|(_, d)| d.clone())
                    .collect();
                if let Some(mut raw) = unzlib(&data) {
                    mutate_bytes(rng, &mut raw, &[&[0], &[1], &[2], &[3], &[4], &[5]], &[], 3);
                    let z = zlib(&raw);
                    let first = chunks.iter().position(|(t, _)| t == b"IDAT").unwrap_or(0);
                    chunks.retain(|(t, _)| t != b"IDAT");
                    let pieces = 1 + rng.below(3);
                    let step = z.len().div_ceil(pieces).max(1);
                    for (k, piece) in z.chunks(step).enumerate() {
                        chunks.insert((first + k).min(chunks.len()), (*b"IDAT", piece.to_vec()));
                    }
                }
            }
            3 => {
                let c = random_chunk(rng);
                chunks.insert(i.max(1).min(chunks.len()), c);
            }
            4 => {
                chunks.remove(i);
            }
            5 => {
                let c = chunks[i].clone();
                chunks.insert(rng.below(chunks.len() + 1), c);
            }
            6 => {
                let j = rng.below(chunks.len());
                chunks.swap(i, j);
            }
            _ => mutate_bytes(rng, &mut chunks[i].1, PNG_DICT, &[], 2),
        }
    }
    let mut out = png_assemble(&chunks, rng.below(10) != 0, &old_crcs);
    if rng.below(8) == 0 {
        mutate_bytes(rng, &mut out, PNG_DICT, others, 1);
    }
    out
}

fn png() -> Target {
    let mut rng = Rng::new(2);
    let pngs = png_seeds(&mut rng);
    let dims = [
        (28, 28),
        (8, 8),
        (7, 5),
        (5, 6),
        (3, 9),
        (4, 4),
        (3, 3),
        (2, 8),
        (4, 4),
    ];
    let seeds: Vec<Input> = pngs
        .iter()
        .zip(dims)
        .enumerate()
        .map(|(k, (p, (h, w)))| vec![p.clone(), vec![[1, 3][k % 2], h, w]])
        .collect();
    Target {
        name: "png",
        loader: "image_io::load_image",
        seeds,
        mutate: Box::new(|rng, seed, seeds| {
            let others = refs(seeds, 0);
            let mut input = seed.clone();
            input[0] = mutate_png(rng, &seed[0], &others);
            if rng.below(10) == 0 {
                input[1] = vec![
                    [0, 1, 2, 3, 4][rng.below(5)],
                    rng.below(256) as u8,
                    rng.below(256) as u8,
                ];
            }
            input
        }),
        run: Box::new(|work, input| {
            let path = work.join("in.png");
            std::fs::write(&path, &input[0]).map_err(|e| e.to_string())?;
            let (c, h, w) = (
                input[1][0] as usize,
                input[1][1] as usize,
                input[1][2] as usize,
            );
            let px = dgm::image_io::load_image(&path, c, h, w).map_err(err)?;
            assert_eq!(px.len(), c * h * w, "pixel count");
            Ok(())
        }),
    }
}

// ------------------------------------------------------------------------------------------------------
// Omniglot (zip of PNGs)

const ZIP_DICT: &[&[u8]] = &[
    b"PK\x03\x04",
    b"PK\x01\x02",
    b"PK\x05\x06",
    b"PK\x06\x06",
    b"PK\x06\x07",
    b"PK\x07\x08",
    &[0xff, 0xff, 0xff, 0xff],
    &[0xff, 0xff],
    &[8, 0],
    &[0, 0],
    b".png",
];

pub fn make_zip(files: &[(String, Vec<u8>)], deflate: bool) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in files {
        if z.start_file(name.as_str(), opts).is_err() || z.write_all(bytes).is_err() {
            break;
        }
    }
    z.finish().map(|c| c.into_inner()).unwrap_or_default()
}

fn omniglot() -> Target {
    let mut rng = Rng::new(3);
    let char_png = |w, h, rng: &mut Rng| make_png(w, h, 8, 0, &[], rng);
    let pngs = [
        char_png(105, 105, &mut rng),
        char_png(12, 9, &mut rng),
        make_png(10, 10, 8, 2, &[], &mut rng),
        make_png(6, 5, 1, 0, &[], &mut rng),
    ];
    let names = [
        "images_background/Latin/character01/0001_01.png",
        "b/X.PNG",
        "c.png",
        "readme.txt",
    ];
    let seeds: Vec<Input> = vec![
        vec![make_zip(
            &[
                (names[0].into(), pngs[0].clone()),
                (names[1].into(), pngs[1].clone()),
            ],
            true,
        )],
        vec![make_zip(
            &[
                (names[2].into(), pngs[2].clone()),
                (names[3].into(), b"hi".to_vec()),
            ],
            false,
        )],
        vec![make_zip(&[(names[2].into(), pngs[3].clone())], true)],
    ];
    Target {
        name: "omniglot",
        loader: "data::ood::load_ood(\"omniglot\")",
        seeds,
        mutate: Box::new(move |rng, seed, seeds| {
            if rng.below(5) < 3 {
                // a new archive of mutated PNGs
                let others: Vec<&[u8]> = pngs.iter().map(|p| p.as_slice()).collect();
                let n = 1 + rng.below(3);
                let files: Vec<(String, Vec<u8>)> = (0..n)
                    .map(|k| {
                        let p = &pngs[rng.below(pngs.len())];
                        let bytes = if rng.below(4) == 0 {
                            p.clone()
                        } else {
                            mutate_png(rng, p, &others)
                        };
                        let name = if rng.below(8) == 0 {
                            names[3].to_string()
                        } else {
                            format!("a/{k}.png")
                        };
                        (name, bytes)
                    })
                    .collect();
                let mut z = make_zip(&files, rng.below(2) == 0);
                if rng.below(4) == 0 {
                    mutate_bytes(rng, &mut z, ZIP_DICT, &[], 2);
                }
                vec![z]
            } else {
                let mut z = seed[0].clone();
                mutate_bytes(rng, &mut z, ZIP_DICT, &refs(seeds, 0), 4);
                vec![z]
            }
        }),
        run: Box::new(|work, input| {
            let dir = work.join("omniglot");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            std::fs::write(work.join(dgm::data::ood::OMNIGLOT_ZIP), &input[0])
                .map_err(|e| e.to_string())?;
            let reference = Dataset {
                name: "fuzz".into(),
                example_shape: vec![1, 28, 28],
                storage: Storage::U8(vec![0; 784]),
                labels: None,
                num_classes: None,
                class_names: None,
                captions: None,
            };
            let ds = dgm::data::ood::load_ood("omniglot", &reference, work, 3, 0).map_err(err)?;
            assert!(!ds.is_empty() && ds.len() <= 3, "{} images", ds.len());
            Ok(())
        }),
    }
}

// ------------------------------------------------------------------------------------------------------
// safetensors

const ST_DICT: &[&[u8]] = &[
    b"\"F32\"",
    b"\"F16\"",
    b"\"BF16\"",
    b"\"F64\"",
    b"\"U8\"",
    b"\"I8\"",
    b"\"U16\"",
    b"\"I16\"",
    b"\"U32\"",
    b"\"I32\"",
    b"\"I64\"",
    b"\"U64\"",
    b"\"BOOL\"",
    b"\"F8_E4M3\"",
    b"\"F8_E5M2\"",
    b"\"F8_E8M0\"",
    b"\"F4\"",
    b"\"F6_E2M3\"",
    b"\"F6_E3M2\"",
    b"\"C64\"",
    b"\"dtype\"",
    b"\"shape\"",
    b"\"data_offsets\"",
    b"\"__metadata__\"",
    b"[]",
    b"[0]",
    b"[0,0]",
    b"[1,1]",
    b"18446744073709551615",
    b"4294967296",
    b"[4294967296,4294967296]",
    b"[18446744073709551615,2]",
    b"[0,18446744073709551615]",
    b"-1",
    b"1e999",
    b"0.5",
    b"null",
    b"{}",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\u0000",
    b"\n",
];

fn safetensors_seeds(rng: &mut Rng) -> Vec<Vec<u8>> {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype as D;
    let mut bytes = |n: usize| -> Vec<u8> { (0..n).map(|_| rng.below(256) as u8).collect() };
    let specs: Vec<Vec<(&str, D, Vec<usize>)>> = vec![
        vec![
            ("a.weight", D::F32, vec![2, 3]),
            ("a.bias", D::F32, vec![3]),
        ],
        vec![
            ("h", D::F16, vec![4]),
            ("b", D::BF16, vec![2, 2]),
            ("d", D::F64, vec![1]),
        ],
        vec![
            ("u", D::U8, vec![5]),
            ("i", D::I64, vec![2]),
            ("w", D::U32, vec![3, 1]),
        ],
        vec![("scalar", D::F32, vec![]), ("empty", D::F32, vec![0, 4])],
        vec![
            ("i16", D::I16, vec![3]),
            ("i32", D::I32, vec![2]),
            ("u16", D::U16, vec![2]),
        ],
        vec![("f8", D::F8_E4M3, vec![4])],
    ];
    let mut out = Vec::new();
    for (k, spec) in specs.iter().enumerate() {
        let datas: Vec<Vec<u8>> = spec
            .iter()
            .map(|(_, d, s)| bytes(s.iter().product::<usize>() * d.bitsize() / 8))
            .collect();
        let views: Vec<(String, TensorView)> = spec
            .iter()
            .zip(&datas)
            .filter_map(|((n, d, s), b)| {
                Some((n.to_string(), TensorView::new(*d, s.clone(), b).ok()?))
            })
            .collect();
        let meta = (k == 0).then(|| {
            [("format".to_string(), "pt".to_string())]
                .into_iter()
                .collect()
        });
        if let Ok(b) = safetensors::serialize(views, meta) {
            out.push(b);
        }
    }
    out
}

fn safetensors() -> Target {
    let mut rng = Rng::new(4);
    let seeds: Vec<Input> = safetensors_seeds(&mut rng)
        .into_iter()
        .map(|b| vec![b])
        .collect();
    Target {
        name: "safetensors",
        loader: "checkpoint::load_tensors",
        seeds,
        mutate: Box::new(|rng, seed, seeds| {
            let file = &seed[0];
            let others = refs(seeds, 0);
            let n = file
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes) as usize;
            if rng.below(5) < 3 && 8 + n <= file.len() {
                // mutate the JSON header and re-frame it with its length (usually the right one)
                let mut header = file[8..8 + n].to_vec();
                let mut data = file[8 + n..].to_vec();
                let headers: Vec<&[u8]> = Vec::new();
                mutate_text(rng, &mut header, ST_DICT, &headers);
                if rng.below(4) == 0 {
                    mutate_bytes(rng, &mut data, &[], &[], 2);
                }
                let len = if rng.below(6) == 0 {
                    super::interesting(rng, header.len())
                } else {
                    header.len() as u64
                };
                let mut out = len.to_le_bytes().to_vec();
                out.extend(header);
                out.extend(data);
                vec![out]
            } else {
                let mut b = file.clone();
                mutate_bytes(rng, &mut b, ST_DICT, &others, 4);
                vec![b]
            }
        }),
        run: Box::new(|work, input| {
            let path = work.join("model.safetensors");
            std::fs::write(&path, &input[0]).map_err(|e| e.to_string())?;
            let tensors = dgm::checkpoint::load_tensors(&path, &Device::Cpu).map_err(err)?;
            for t in tensors.values() {
                // every loaded tensor can be read back as f32 values or reports why not
                let _ = t
                    .to_dtype(candle_core::DType::F32)
                    .and_then(|t| t.flatten_all());
            }
            Ok(())
        }),
    }
}

// ------------------------------------------------------------------------------------------------------
// config.toml, --set, [model.tokenizer]

const TOML_DICT: &[&[u8]] = &[
    b"-1",
    b"0",
    b"1",
    b"1e309",
    b"-1e309",
    b"nan",
    b"inf",
    b"-inf",
    b"-0.0",
    b"1.5",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551616",
    b"0x10",
    b"1979-05-27T07:32:00Z",
    b"true",
    b"\"\"",
    b"\"a\\nb\"",
    b"\"\\u0000\"",
    b"'''\nx\n'''",
    b"\"\"\"\nx\ny\"\"\"",
    b"[]",
    b"[1, 2]",
    b"{}",
    b"{ kind = \"bytes\" }",
    b"{ kind = \"chars\", symbols = [10, 32, 97] }",
    b"[300]",
    b"[-1]",
    b"\"mnist\"",
    b"\"shapes\"",
    b"\"text:\"",
    b"\"text:tinyshakespeare\"",
    b"\"toy2d:moons\"",
    b"\"toy2d:\"",
    b"\"gpt\"",
    b"\"vae\"",
    b"\"ddpm\"",
    b"\"chars\"",
    b"\"bytes\"",
    b"\"identity\"",
    b"\"binarize\"",
    b"\"a\nb\"",
    b"\"\\n\"",
    b"[model]",
    b"[data]",
    b"[train]",
    b"[data.text]",
    b"[model.tokenizer]",
    b"[[train]]",
    b"name",
    b"kind",
    b"symbols",
    b"tokenizer",
    b"\"quoted\nkey\" = 1",
    b"\"x\\ny\" = 2",
    b"=",
    b".",
    b"\n",
    b"#",
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b"'",
];

fn config_seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    if let Ok(rd) = std::fs::read_dir(&dir) {
        let mut paths: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|x| x == "toml") {
                if let Ok(b) = std::fs::read(&p) {
                    out.push(b);
                }
            }
        }
    }
    for (m, d) in [
        ("vae", "shapes"),
        ("gpt", "text:tinyshakespeare"),
        ("ddpm", "toy2d:moons"),
    ] {
        if let Ok(t) = RunConfig::new(m, d).and_then(|c| c.to_toml()) {
            out.push(t.into_bytes());
        }
    }
    out.push(gpt_with_tokenizer().into_bytes());
    out
}

/// A GPT text config whose `[model.tokenizer]` holds a 5-symbol vocabulary, as a trained run saves it.
fn gpt_with_tokenizer() -> String {
    let tok = Tokenizer::Chars {
        symbols: vec![10, 32, 97, 98, 99],
    };
    RunConfig::new("gpt", "text:tinyshakespeare")
        .and_then(|mut c| {
            let t = toml::Value::try_from(&tok)
                .map_err(|e| dgm::Error::invalid("tokenizer", e.to_string()))?;
            c.model.config.insert("tokenizer".into(), t);
            c.to_toml()
        })
        .unwrap_or_default()
}

/// The GPT text config without `[model.tokenizer]`, for appending one.
fn gpt_without_tokenizer() -> String {
    RunConfig::new("gpt", "text:tinyshakespeare")
        .and_then(|mut c| {
            c.model.config.remove("tokenizer");
            c.to_toml()
        })
        .unwrap_or_default()
}

/// Checks a loaded config: its tokenizer (if any) round-trips its vocabulary, and the config round-trips
/// through TOML.
fn check_config(cfg: &RunConfig) -> Result<(), String> {
    if let Some(tok) = dgm::train::run::run_tokenizer(cfg).map_err(err)? {
        let all: Vec<u8> = (0..=255u8).collect();
        let (ids, _) = tok.encode_lossy(&all);
        assert_eq!(ids.len(), tok.vocab_size(), "vocabulary size");
        let back = tok.decode(&ids).map_err(err)?;
        assert_eq!(tok.encode(&back).map_err(err)?, ids, "tokenizer round trip");
        let _ = tok
            .decode(&[u32::MAX])
            .map_err(err)
            .err()
            .map(|e| assert!(!e.contains('\n'), "{e}"));
    }
    let text = cfg.to_toml().map_err(err)?;
    let again = RunConfig::from_toml(&text)
        .map_err(|e| format!("a loaded config does not load again: {e}"))?;
    let text2 = again.to_toml().map_err(err)?;
    assert_eq!(text, text2, "TOML round trip");
    Ok(())
}

fn config() -> Target {
    let seeds: Vec<Input> = config_seeds().into_iter().map(|b| vec![b]).collect();
    Target {
        name: "config",
        loader: "train::RunConfig::from_toml",
        seeds,
        mutate: Box::new(|rng, seed, seeds| {
            let mut b = seed[0].clone();
            mutate_text(rng, &mut b, TOML_DICT, &refs(seeds, 0));
            vec![b]
        }),
        run: Box::new(|_work, input| {
            let text = String::from_utf8_lossy(&input[0]);
            let cfg = RunConfig::from_toml(&text).map_err(err)?;
            check_config(&cfg)
        }),
    }
}

const SET_DICT: &[&[u8]] = &[
    b"seed",
    b"model",
    b"data",
    b"train",
    b"model.name",
    b"model.latent_dim",
    b"model.tokenizer",
    b"model.tokenizer.kind",
    b"model.tokenizer.symbols",
    b"data.name",
    b"data.text.context",
    b"data.text.tokenizer",
    b"data.preprocessing",
    b"data.preprocessing.kind",
    b"data.preprocessing.dynamic",
    b"data.sizes",
    b"train.lr",
    b"train.steps",
    b"train.batch_size",
    b"train.beta1",
    b"train.weight_decay",
    b"=",
    b".",
    b"..",
    b" ",
    b"\n",
];

fn set() -> Target {
    let seeds: Vec<Input> = [
        "train.lr=3e-4",
        "train.steps=10",
        "seed=3",
        "model.latent_dim=16",
        "data.preprocessing.dynamic=false",
        "data.text.tokenizer=bytes",
        "data.text.context=32",
        "model.n_layer=2",
        "model.tokenizer.symbols=[10, 32, 97]",
        "model.tokenizer.kind=bytes",
        "data.name=mnist",
        "train.weight_decay=0.1",
    ]
    .iter()
    .map(|s| vec![s.as_bytes().to_vec(), vec![0]])
    .collect();
    let bases: Vec<RunConfig> = [
        RunConfig::new("vae", "mnist"),
        RunConfig::from_toml(&gpt_with_tokenizer()),
        RunConfig::new("ddpm", "toy2d:moons"),
    ]
    .into_iter()
    .filter_map(|c| c.ok())
    .collect();
    Target {
        name: "set",
        loader: "train::RunConfig::set",
        seeds,
        mutate: Box::new(|rng, seed, seeds| {
            let mut b = seed[0].clone();
            let mut dict: Vec<&[u8]> = SET_DICT.to_vec();
            dict.extend_from_slice(TOML_DICT);
            mutate_text(rng, &mut b, &dict, &refs(seeds, 0));
            vec![b, vec![rng.below(256) as u8]]
        }),
        run: Box::new(move |_work, input| {
            let assignment = String::from_utf8_lossy(&input[0]);
            let which = input.get(1).and_then(|b| b.first()).copied().unwrap_or(0) as usize;
            let mut last = Ok(());
            // the seeds are written for one of the bases; try them all, and report the first error
            for k in 0..bases.len() {
                let mut cfg = bases[(which + k) % bases.len()].clone();
                match cfg.set(&assignment) {
                    Ok(()) => {
                        cfg.validate()
                            .map_err(|e| format!("set() accepted an invalid config: {e}"))?;
                        return check_config(&cfg);
                    }
                    Err(e) => {
                        if last.is_ok() {
                            last = Err(err(e));
                        }
                    }
                }
            }
            last
        }),
    }
}

fn tokenizer() -> Target {
    let seeds: Vec<Input> = [
        "kind = \"chars\"\nsymbols = [10, 32, 97, 98, 99]\n".to_string(),
        "kind = \"bytes\"\n".to_string(),
        format!(
            "kind = \"chars\"\nsymbols = {:?}\n",
            (b'\n'..=b'z')
                .filter(|b| b.is_ascii_graphic() || *b == b'\n' || *b == b' ')
                .collect::<Vec<u8>>()
        ),
        "kind = \"chars\"\nsymbols = [0, 255]\n".to_string(),
    ]
    .into_iter()
    .map(|s| vec![s.into_bytes()])
    .collect();
    let base = gpt_without_tokenizer();
    Target {
        name: "tokenizer",
        loader: "train::run::run_tokenizer ([model.tokenizer] of config.toml)",
        seeds,
        mutate: Box::new(|rng, seed, seeds| {
            let mut b = seed[0].clone();
            mutate_text(rng, &mut b, TOML_DICT, &refs(seeds, 0));
            vec![b]
        }),
        run: Box::new(move |_work, input| {
            let text = format!(
                "{base}\n[model.tokenizer]\n{}",
                String::from_utf8_lossy(&input[0])
            );
            let cfg = RunConfig::from_toml(&text).map_err(err)?;
            check_config(&cfg)
        }),
    }
}

// ------------------------------------------------------------------------------------------------------
// state.json

const JSON_DICT: &[&[u8]] = &[
    b"-1",
    b"0",
    b"1.5",
    b"1e400",
    b"18446744073709551615",
    b"18446744073709551616",
    b"340282366920938463463374607431768211455",
    b"340282366920938463463374607431768211456",
    b"true",
    b"null",
    b"\"\"",
    b"\"a\\nb\"",
    b"\"\\ud800\"",
    b"[]",
    b"{}",
    b"\"step\"",
    b"\"rng\"",
    b"\"word_pos\"",
    b"\"seed\"",
    b"\"finished\"",
    b"\"dgm_version\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\n",
];

fn state() -> Target {
    let seeds: Vec<Input> = [
        r#"{"step":1000,"adam_t":1000,"seed":0,"rng":{"seed":0,"stream":1000,"word_pos":0},"finished":false,"dgm_version":"0.1.0"}"#,
        "{\n  \"step\": 2000,\n  \"adam_t\": 1999,\n  \"seed\": 18446744073709551615,\n  \"rng\": {\n    \"seed\": 7,\n    \"stream\": 3,\n    \"word_pos\": 340282366920938463463374607431768211455\n  },\n  \"finished\": true,\n  \"dgm_version\": \"0.1.0\"\n}",
    ]
    .iter()
    .map(|s| vec![s.as_bytes().to_vec()])
    .collect();
    Target {
        name: "state",
        loader: "train::RunDir::load_state (state.json)",
        seeds,
        mutate: Box::new(|rng, seed, seeds| {
            let mut b = seed[0].clone();
            mutate_text(rng, &mut b, JSON_DICT, &refs(seeds, 0));
            vec![b]
        }),
        run: Box::new(|work, input| {
            std::fs::write(work.join("state.json"), &input[0]).map_err(|e| e.to_string())?;
            let s = RunDir::new(work).load_state().map_err(err)?;
            // a loaded state resumes its generator
            let _ = dgm::rng::Rng::from_state(&s.rng).next_u64();
            Ok(())
        }),
    }
}

// ------------------------------------------------------------------------------------------------------
// checkpoint.json (the manifest) and the file it vouches for

const CHECKPOINT_DIR: &str = "checkpoints/step-00000001";

const MANIFEST_DICT: &[&[u8]] = &[
    b"\"format\"",
    b"\"state\"",
    b"\"dir\"",
    b"\"files\"",
    b"\"bytes\"",
    b"\"sha256\"",
    b"\"model.safetensors\"",
    b"\"checkpoints/step-00000001\"",
    b"\"checkpoints/..\"",
    b"\"checkpoints/\"",
    b"\"../x\"",
    b"\"/etc\"",
    b"\"checkpoints/a/b\"",
    // a multi-byte hash (JSON escapes of é): sliced by bytes it would split a character
    br#""\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9""#,
    "\"éééééééééé\"".as_bytes(),
    b"2",
    b"4294967296",
];

/// A manifest for `file` (as `model.safetensors` in [`CHECKPOINT_DIR`]) with training state `state`.
fn manifest_for(state: &str, file: &[u8]) -> Vec<u8> {
    format!(
        r#"{{"format":1,"state":{state},"dir":"{CHECKPOINT_DIR}","files":{{"model.safetensors":{{"bytes":{},"sha256":"{}"}}}}}}"#,
        file.len(),
        dgm::checkpoint::sha256_hex(file)
    )
    .into_bytes()
}

const SEED_STATE: &str = r#"{"step":1,"adam_t":1,"seed":3,"rng":{"seed":3,"stream":1,"word_pos":0},"finished":false,"dgm_version":"0.1.0"}"#;

fn checkpoint() -> Target {
    let mut rng = Rng::new(5);
    let seeds: Vec<Input> = safetensors_seeds(&mut rng)
        .into_iter()
        .take(3)
        .map(|f| vec![manifest_for(SEED_STATE, &f), f])
        .collect();
    Target {
        name: "checkpoint",
        loader:
            "train::RunDir::checkpoint + RunCheckpoint::tensors (checkpoint.json, checkpoints/…)",
        seeds,
        mutate: Box::new(|rng, seed, seeds| {
            let (mut manifest, mut file) = (seed[0].clone(), seed[1].clone());
            match rng.below(4) {
                // the manifest: fields, names, folders, hashes, sizes, JSON syntax
                0 | 1 => mutate_text(rng, &mut manifest, MANIFEST_DICT, &refs(seeds, 0)),
                // the file alone: the hash check must catch it
                2 => mutate_bytes(rng, &mut file, &[], &refs(seeds, 1), 3),
                // the file with a manifest that vouches for it: the safetensors parser sees it
                _ => {
                    mutate_bytes(rng, &mut file, ST_DICT, &refs(seeds, 1), 3);
                    manifest = manifest_for(SEED_STATE, &file);
                }
            }
            vec![manifest, file]
        }),
        run: Box::new(|work, input| {
            let dir = work.join(CHECKPOINT_DIR);
            let _ = std::fs::remove_dir_all(work.join("checkpoints"));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            std::fs::write(dir.join("model.safetensors"), &input[1]).map_err(|e| e.to_string())?;
            std::fs::write(work.join("checkpoint.json"), &input[0]).map_err(|e| e.to_string())?;
            let run = RunDir::new(work);
            let Some(c) = run.checkpoint().map_err(err)? else {
                return Err("no checkpoint".into());
            };
            c.tensors(&run, "model.safetensors", &Device::Cpu)
                .map_err(err)?;
            let _ = dgm::rng::Rng::from_state(&c.state.rng).next_u64();
            Ok(())
        }),
    }
}

// ------------------------------------------------------------------------------------------------------
// text corpora and tokenizers

fn text() -> Target {
    let mut seeds: Vec<Vec<u8>> = vec![
        b"First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
            .to_vec(),
        "héllo → wörld ✓ Grüße, 日本語\n".as_bytes().to_vec(),
        vec![0xff, 0xfe, 0xc3, 0x28, 0xe2, 0x82, b'a', 0, b'\n'],
        b"x".to_vec(),
        (0..=255u8).collect(),
    ];
    if let Some(dir) = std::env::var_os("DGM_DATA").filter(|v| !v.is_empty()) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(dir);
        if let Ok(b) = std::fs::read(dir.join("tinyshakespeare/input.txt")) {
            seeds.push(b[..b.len().min(4000)].to_vec());
        }
    }
    Target {
        name: "text",
        loader: "data::text::load + Tokenizer + TextCorpus::windows + Utf8Stream",
        seeds: seeds.into_iter().map(|b| vec![b]).collect(),
        mutate: Box::new(|rng, seed, seeds| {
            let mut b = seed[0].clone();
            mutate_bytes(
                rng,
                &mut b,
                &[b"\n", "é".as_bytes(), &[0xe2, 0x82], &[0xf0, 0x9f, 0x98]],
                &refs(seeds, 0),
                4,
            );
            vec![b]
        }),
        run: Box::new(|work, input| {
            let path = work.join("corpus.txt");
            std::fs::write(&path, &input[0]).map_err(|e| e.to_string())?;
            let corpus = dgm::data::text::load(&path.display().to_string(), work).map_err(err)?;
            assert_eq!(corpus.bytes, input[0], "corpus bytes");
            check_corpus(&corpus)
        }),
    }
}

fn check_corpus(corpus: &TextCorpus) -> Result<(), String> {
    let bytes = &corpus.bytes;
    let context = 1 + bytes.len() % 13;
    for name in dgm::data::tokenizer::TOKENIZER_NAMES {
        let tok = Tokenizer::from_corpus(name, bytes).map_err(err)?;
        tok.validate().map_err(err)?;
        let ids = tok.encode(bytes).map_err(err)?;
        assert_eq!(&tok.decode(&ids).map_err(err)?, bytes, "{name} round trip");
        for split in [Split::Train, Split::Validation] {
            // short splits are refused with an error; the others give windows that all fit
            if let Ok(ds) = corpus.windows(split, &tok, context) {
                assert!(!ds.is_empty(), "no windows");
            }
        }
    }
    // a vocabulary built from half the corpus: the rest may hold bytes outside it
    let half = &bytes[..bytes.len() / 2];
    if let Ok(tok) = Tokenizer::from_corpus("chars", half) {
        if let Err(e) = tok.encode(bytes) {
            let e = err(e);
            if e.contains(['\n', '\r']) {
                return Err(e);
            }
        }
    }
    // the streaming decoder gives what a one-shot lossy decode gives, however the bytes are cut
    let mut s = Utf8Stream::default();
    let mut out = String::new();
    let step = 1 + bytes.len() % 7;
    for piece in bytes.chunks(step) {
        out.push_str(&s.push(piece));
    }
    out.push_str(&s.finish());
    assert_eq!(out, String::from_utf8_lossy(bytes), "Utf8Stream");
    Ok(())
}
