//! Audio for the speech models: WAV files (read and written with the `hound` crate), 8-bit μ-law companding
//! (WaveNet's output alphabet) and the `spoken-digits` data set.
//!
//! **μ-law** (ITU-T G.711's companding law, as WaveNet uses it; van den Oord et al. 2016, §2.2): a sample
//! x ∈ [−1, 1] becomes f(x) = sign(x)·ln(1 + μ|x|)/ln(1 + μ) with μ = 255, quantised to 256 levels by
//! q = round((f(x) + 1)/2 · 255). Decoding inverts both steps: x = sign(y)·((1 + μ)^|y| − 1)/μ with
//! y = 2q/255 − 1. Silence (x = 0) is code [`MU_LAW_SILENCE`] = 128 (y = 1/255, a decoded amplitude of 8·10⁻⁵):
//! the state a WaveNet starts generating from.
//!
//! **spoken-digits** (`<data>/spoken-digits/`, see its MANIFEST entry): 1120 training and 280 test clips of the
//! words "zero" … "nine" at 8 kHz, 16-bit mono, at most 1 s, with `labels.csv` (split, file, digit, accent,
//! voice, …). The test split's voices never occur in training. dgm holds two of the 16 training voices out as
//! its validation split ([`VALIDATION_VOICES`]: 140 clips), so training sees 980 clips of 14 voices. As a
//! [`Dataset`] ([`dataset`]) each clip is its [`CLIP_SAMPLES`] μ-law codes (as f32 values 0 … 255), the clip
//! followed by silence up to 1 s, labelled with its digit.

use std::path::{Path, PathBuf};

use super::{Dataset, Split, Storage};
use crate::{Error, Result};

/// μ of the 8-bit μ-law.
pub const MU: f32 = 255.0;
/// The μ-law code of silence.
pub const MU_LAW_SILENCE: u8 = 128;
/// The sample rate of `spoken-digits`, Hz.
pub const DIGITS_RATE: u32 = 8000;
/// Samples in one `spoken-digits` example: 1 s (clips are padded with silence to this length).
pub const CLIP_SAMPLES: usize = DIGITS_RATE as usize;
/// The class names of `spoken-digits`, in label order.
pub const DIGIT_NAMES: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];
/// The training voices held out as the validation split (one female, one male voice of espeak-ng).
pub const VALIDATION_VOICES: [&str; 2] = ["f4", "m6"];

/// The 8-bit μ-law code of a sample in [−1, 1] (values outside are clipped).
pub fn mu_law_encode(x: f32) -> u8 {
    let x = x.clamp(-1.0, 1.0);
    let y = x.signum() * (MU * x.abs()).ln_1p() / MU.ln_1p();
    ((y + 1.0) / 2.0 * 255.0).round().clamp(0.0, 255.0) as u8
}

/// The sample in [−1, 1] of an 8-bit μ-law code (the inverse of [`mu_law_encode`] up to its quantisation).
pub fn mu_law_decode(q: u8) -> f32 {
    let y = 2.0 * q as f32 / 255.0 - 1.0;
    y.signum() * ((1.0 + MU).powf(y.abs()) - 1.0) / MU
}

/// Reads a mono 16-bit PCM WAV file as samples in [−1, 1) and its sample rate. Anything else (another format,
/// channel count or sample width, or a file that is not WAV) is refused with one line naming the file.
pub fn read_wav(path: &Path) -> Result<(Vec<f32>, u32)> {
    let bad = |msg: String| Error::CorruptData {
        path: path.to_path_buf(),
        msg,
    };
    let mut r = hound::WavReader::open(path).map_err(|e| match e {
        hound::Error::IoError(io) => Error::io(path, io),
        other => bad(format!("not a readable WAV file: {other}")),
    })?;
    let spec = r.spec();
    if spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(bad(format!(
            "{} channel(s) of {}-bit {:?} samples; dgm reads mono 16-bit PCM",
            spec.channels, spec.bits_per_sample, spec.sample_format
        )));
    }
    let samples = r
        .samples::<i16>()
        .map(|s| s.map(|v| v as f32 / 32768.0))
        .collect::<std::result::Result<Vec<f32>, _>>()
        .map_err(|e| bad(format!("truncated or corrupt samples: {e}")))?;
    Ok((samples, spec.sample_rate))
}

/// Writes samples in [−1, 1] (clipped) as a mono 16-bit PCM WAV file at `rate` Hz, atomically (the file is
/// made in memory and renamed into place, so a reader never sees half of it).
pub fn write_wav(path: &Path, samples: &[f32], rate: u32) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let io = |e: hound::Error| match e {
        hound::Error::IoError(io) => Error::io(path, io),
        other => Error::io(path, std::io::Error::other(other.to_string())),
    };
    let mut bytes = std::io::Cursor::new(Vec::with_capacity(44 + 2 * samples.len()));
    let mut w = hound::WavWriter::new(&mut bytes, spec).map_err(io)?;
    for &s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32768.0)
            .round()
            .clamp(-32768.0, 32767.0) as i16;
        w.write_sample(v).map_err(io)?;
    }
    w.finalize().map_err(io)?;
    crate::checkpoint::write_atomic(path, bytes.get_ref())
}

/// One clip of `spoken-digits`.
#[derive(Clone, Debug, PartialEq)]
pub struct Clip {
    /// The samples in [−1, 1), at [`DIGITS_RATE`].
    pub samples: Vec<f32>,
    /// The digit spoken (0–9).
    pub digit: u32,
    /// The synthetic voice (test voices never occur in training).
    pub voice: String,
    /// The accent (espeak-ng's language code, e.g. `en-us`).
    pub accent: String,
}

/// The clips of one split of `spoken-digits` under `data_dir`, in `labels.csv` order: the test split is the
/// files' own; train and validation divide the files' training split by voice ([`VALIDATION_VOICES`]).
pub fn load_spoken_digits(data_dir: &Path, split: Split) -> Result<Vec<Clip>> {
    let name = match split {
        Split::Train | Split::Validation => "train",
        Split::Test => "test",
    };
    let root = data_dir.join("spoken-digits");
    let labels = root.join("labels.csv");
    if !labels.is_file() {
        return Err(Error::DataNotFound {
            name: "spoken-digits".into(),
            msg: format!(
                "missing {}; set DGM_DATA or the data directory to a folder holding spoken-digits/ (e.g. ../shared/data)",
                labels.display()
            ),
        });
    }
    let text = std::fs::read_to_string(&labels).map_err(|e| Error::io(&labels, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |c: &str| {
        header
            .iter()
            .position(|h| *h == c)
            .ok_or_else(|| Error::CorruptData {
                path: labels.clone(),
                msg: format!("no '{c}' column in the header {header:?}"),
            })
    };
    let (cs, cf, cd, ca, cv) = (
        col("split")?,
        col("file")?,
        col("digit")?,
        col("accent")?,
        col("voice")?,
    );
    let mut clips = Vec::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let field = |k: usize| {
            f.get(k).copied().ok_or_else(|| Error::CorruptData {
                path: labels.clone(),
                msg: format!("line {} has {} fields", i + 2, f.len()),
            })
        };
        if field(cs)? != name {
            continue;
        }
        let held_out = VALIDATION_VOICES.contains(&field(cv)?);
        if (split == Split::Validation) != held_out && split != Split::Test {
            continue;
        }
        let digit: u32 =
            field(cd)?
                .parse()
                .ok()
                .filter(|d| *d < 10)
                .ok_or_else(|| Error::CorruptData {
                    path: labels.clone(),
                    msg: format!("line {}: digit '{}' is not 0–9", i + 2, f[cd]),
                })?;
        let file = field(cf)?;
        if file.contains(['/', '\\']) || file.starts_with('.') {
            return Err(Error::CorruptData {
                path: labels.clone(),
                msg: format!("line {}: file '{file}' is not a plain file name", i + 2),
            });
        }
        let path: PathBuf = root.join(name).join(file);
        let (samples, rate) = read_wav(&path)?;
        if rate != DIGITS_RATE || samples.len() > CLIP_SAMPLES {
            return Err(Error::CorruptData {
                path,
                msg: format!(
                    "{} samples at {rate} Hz; spoken-digits clips are at most {CLIP_SAMPLES} samples at {DIGITS_RATE} Hz",
                    samples.len()
                ),
            });
        }
        clips.push(Clip {
            samples,
            digit,
            voice: field(cv)?.to_string(),
            accent: field(ca)?.to_string(),
        });
    }
    Ok(clips)
}

/// A split of `spoken-digits` as a data set: per clip its μ-law codes padded with silence to [`CLIP_SAMPLES`]
/// (f32 values 0 … 255, example shape `[CLIP_SAMPLES]`), labelled with its digit (10 classes).
pub fn dataset(data_dir: &Path, split: Split) -> Result<Dataset> {
    let clips = load_spoken_digits(data_dir, split)?;
    let mut codes = Vec::with_capacity(clips.len() * CLIP_SAMPLES);
    for c in &clips {
        codes.extend(c.samples.iter().map(|&x| mu_law_encode(x) as f32));
        codes.extend(std::iter::repeat_n(
            MU_LAW_SILENCE as f32,
            CLIP_SAMPLES - c.samples.len(),
        ));
    }
    Ok(Dataset {
        name: "spoken-digits".into(),
        example_shape: vec![CLIP_SAMPLES],
        storage: Storage::F32(codes),
        labels: Some(clips.iter().map(|c| c.digit).collect()),
        num_classes: Some(10),
        class_names: Some(DIGIT_NAMES.iter().map(|s| s.to_string()).collect()),
        captions: None,
    })
}

/// A WAV file as a model's input: its μ-law codes padded with silence to `length` samples (f32 values
/// 0 … 255), and the number of samples the file has. Refused with one line naming the file: anything
/// [`read_wav`] refuses, another sample rate than `rate`, an empty file, more than `length` samples.
pub fn clip_codes(path: &Path, rate: u32, length: usize) -> Result<(Vec<f32>, usize)> {
    let (samples, r) = read_wav(path)?;
    let bad = |msg: String| Error::CorruptData {
        path: path.to_path_buf(),
        msg,
    };
    if r != rate {
        return Err(bad(format!(
            "{r} Hz; the model was trained on {rate} Hz audio (resample it first, e.g. sox in.wav -r {rate} out.wav)"
        )));
    }
    if samples.is_empty() || samples.len() > length {
        return Err(bad(format!(
            "{} samples; the model takes clips of 1 to {length} samples ({:.2} s)",
            samples.len(),
            length as f64 / rate as f64
        )));
    }
    let mut codes: Vec<f32> = samples.iter().map(|&x| mu_law_encode(x) as f32).collect();
    codes.resize(length, MU_LAW_SILENCE as f32);
    Ok((codes, samples.len()))
}

/// μ-law codes (values 0 … 255, rounded and clipped) decoded to samples in [−1, 1].
pub fn decode_codes(codes: &[f32]) -> Vec<f32> {
    codes
        .iter()
        .map(|&q| mu_law_decode(q.round().clamp(0.0, 255.0) as u8))
        .collect()
}

/// Silence between clips in a WAV of several clips, in samples (0.25 s at 8 kHz).
pub const CLIP_GAP: usize = 2000;

/// Clips of μ-law codes (`(n, len)` f32 values 0 … 255) decoded and joined, [`CLIP_GAP`] samples of silence
/// between them.
pub fn join_clips(codes: &candle_core::Tensor) -> Result<Vec<f32>> {
    let (n, len) = codes.dims2()?;
    let v = codes
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(n * (len + CLIP_GAP));
    for (i, clip) in v.chunks(len.max(1)).enumerate() {
        if i > 0 {
            out.extend(std::iter::repeat_n(0.0, CLIP_GAP));
        }
        out.extend(decode_codes(clip));
    }
    Ok(out)
}

/// Samples of a short-time Fourier transform frame (a Hann window of 32 ms at 8 kHz).
pub const STFT_WINDOW: usize = 256;
/// Samples between STFT frames (8 ms at 8 kHz).
pub const STFT_HOP: usize = 64;

/// The log-power spectrogram of `samples`: one row per frame (a Hann window of [`STFT_WINDOW`] samples every
/// [`STFT_HOP`], the signal padded with zeros at the end), [`STFT_WINDOW`]/2 + 1 frequency bins per row from
/// 0 Hz up, in dB (10·log₁₀ of the power, floored at −100 dB).
///
/// The transform is a direct DFT with precomputed cos/sin tables (33 k multiply-adds per frame): small and
/// run once per clip, so no FFT crate is pulled in for it.
pub fn spectrogram(samples: &[f32]) -> Vec<Vec<f32>> {
    let n = STFT_WINDOW;
    let bins = n / 2 + 1;
    let (hann, cos, sin) = dft_tables();
    let frames = samples.len().div_ceil(STFT_HOP).max(1);
    let mut frame = vec![0f32; n];
    (0..frames)
        .map(|f| {
            for (i, v) in frame.iter_mut().enumerate() {
                *v = samples.get(f * STFT_HOP + i).copied().unwrap_or(0.0) * hann[i];
            }
            (0..bins)
                .map(|k| {
                    let (c, s) = (&cos[k * n..(k + 1) * n], &sin[k * n..(k + 1) * n]);
                    let re: f32 = frame.iter().zip(c).map(|(x, c)| x * c).sum();
                    let im: f32 = frame.iter().zip(s).map(|(x, s)| x * s).sum();
                    10.0 * (re * re + im * im).max(1e-10).log10()
                })
                .collect()
        })
        .collect()
}

/// The Hann window and the DFT's cos / sin tables (bin-major) of [`spectrogram`], computed once per process.
fn dft_tables() -> &'static (Vec<f32>, Vec<f32>, Vec<f32>) {
    static TABLES: std::sync::OnceLock<(Vec<f32>, Vec<f32>, Vec<f32>)> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let n = STFT_WINDOW;
        let hann = (0..n)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / n as f32).cos())
            .collect();
        let (cos, sin) = (0..(n / 2 + 1) * n)
            .map(|i| {
                let a = 2.0 * std::f64::consts::PI * ((i / n) * (i % n) % n) as f64 / n as f64;
                (a.cos() as f32, a.sin() as f32)
            })
            .unzip();
        (hann, cos, sin)
    })
}

/// The spectrogram of `samples` as a PNG: time left to right (one column per frame), frequency bottom to top
/// (0 to 4 kHz at 8 kHz), the top 80 dB of its power from black through red to yellow.
pub fn spectrogram_png(samples: &[f32]) -> Result<Vec<u8>> {
    let spec = spectrogram(samples);
    let bins = STFT_WINDOW / 2 + 1;
    let top = spec
        .iter()
        .flatten()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let mut img = image::RgbImage::new(spec.len() as u32, bins as u32);
    for (x, col) in spec.iter().enumerate() {
        for (k, &db) in col.iter().enumerate() {
            let v = ((db - top + 80.0) / 80.0).clamp(0.0, 1.0);
            let rgb = [
                (v * 2.0).min(1.0),
                (v * 2.0 - 0.6).clamp(0.0, 1.0),
                (v * 3.0 - 2.0).clamp(0.0, 1.0),
            ]
            .map(|c| (c * 255.0).round() as u8);
            img.put_pixel(x as u32, (bins - 1 - k) as u32, image::Rgb(rgb));
        }
    }
    crate::image_io::png_bytes(&img)
}

/// Side of the spectrogram images a digit classifier reads ([`spectrogram_image`]).
pub const SPEC_IMAGE: usize = 32;

/// A clip's spectrogram as an 8-bit image of 1 × [`SPEC_IMAGE`] × [`SPEC_IMAGE`] values (the input of a
/// digit classifier, e.g. dgm's feature network): the frames averaged into 32 columns over the whole clip,
/// the lowest 128 frequency bins (0 … 3.97 kHz at 8 kHz) averaged into 32 bands of 4, low frequencies at
/// the bottom row; −40 … +40 dB mapped linearly to 0 … 255 (clipped).
pub fn spectrogram_image(samples: &[f32]) -> Vec<u8> {
    let spec = spectrogram(samples);
    let frames = spec.len();
    let side = SPEC_IMAGE;
    let band = (STFT_WINDOW / 2) / side;
    let mut img = vec![0u8; side * side];
    for col in 0..side {
        let (f0, f1) = (
            col * frames / side,
            ((col + 1) * frames / side).max(col * frames / side + 1),
        );
        let f1 = f1.min(frames);
        for row in 0..side {
            let mut acc = 0.0;
            for frame in &spec[f0..f1] {
                acc += frame[row * band..(row + 1) * band].iter().sum::<f32>();
            }
            let db = acc / ((f1 - f0) * band) as f32;
            let v = ((db + 40.0) / 80.0 * 255.0).round().clamp(0.0, 255.0);
            img[(side - 1 - row) * side + col] = v as u8;
        }
    }
    img
}

/// Clips of μ-law codes (`n` rows of `len` values 0 … 255) as spectrogram images (`n` × 1 × 32 × 32 values,
/// [`spectrogram_image`]).
pub fn spectrogram_images(codes: &[f32], len: usize) -> Vec<u8> {
    use rayon::prelude::*;
    codes
        .par_chunks(len.max(1))
        .flat_map_iter(|c| spectrogram_image(&decode_codes(c)))
        .collect()
}

/// A data set of clips of codes ([`dataset`]) as a labelled image data set of their spectrograms
/// ([`spectrogram_images`]), for training and applying a digit classifier.
pub fn spectrogram_dataset(ds: &Dataset) -> Result<Dataset> {
    let Storage::F32(codes) = &ds.storage else {
        return Err(Error::invalid(
            "data",
            format!("{} is not a data set of audio clips", ds.name),
        ));
    };
    let len = ds.example_dim();
    Ok(Dataset {
        name: format!("{}-spectrograms", ds.name),
        example_shape: vec![1, SPEC_IMAGE, SPEC_IMAGE],
        storage: Storage::U8(spectrogram_images(codes, len)),
        labels: ds.labels.clone(),
        num_classes: ds.num_classes,
        class_names: ds.class_names.clone(),
        captions: None,
    })
}

/// Writes clips of μ-law codes (`(n, len)`) as one WAV at `rate` ([`join_clips`]) and the spectrogram of that
/// WAV as a PNG beside it (the same name with `.png`); returns the PNG's path.
pub fn write_clips(path: &Path, codes: &candle_core::Tensor, rate: u32) -> Result<PathBuf> {
    let samples = join_clips(codes)?;
    write_wav(path, &samples, rate)?;
    let png = path.with_extension("png");
    crate::checkpoint::write_atomic(&png, &spectrogram_png(&samples)?)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    /// Every code decodes to a sample that encodes back to itself; encoding then decoding a sample errs by
    /// at most half a quantisation step of the companded value; silence is 128; the codes are monotone.
    #[test]
    fn mu_law_round_trips() {
        for q in 0..=255u8 {
            assert_eq!(mu_law_encode(mu_law_decode(q)), q, "code {q}");
        }
        assert_eq!(mu_law_encode(0.0), MU_LAW_SILENCE);
        assert!(mu_law_decode(MU_LAW_SILENCE).abs() < 1e-4);
        assert_eq!((mu_law_encode(-1.0), mu_law_encode(1.0)), (0, 255));
        let f = |x: f32| x.signum() * (MU * x.abs()).ln_1p() / MU.ln_1p();
        let mut last = 0;
        for k in 0..=2000 {
            let x = -1.0 + k as f32 / 1000.0;
            let q = mu_law_encode(x);
            assert!(q >= last, "not monotone at {x}");
            last = q;
            let err = (f(mu_law_decode(q)) - f(x)).abs();
            assert!(err <= 1.0 / 255.0 + 1e-5, "{x}: companded error {err}");
        }
    }

    /// A written WAV reads back to the same 16-bit samples and rate; a file that is not WAV and a stereo
    /// WAV are refused with one line naming the file.
    #[test]
    fn wav_round_trips_and_refuses_what_it_cannot_read() -> TestResult {
        let d = std::env::temp_dir().join(format!("dgm-wav-{}", std::process::id()));
        std::fs::create_dir_all(&d)?;
        let x: Vec<f32> = (0..800)
            .map(|i| (i as f32 * 0.05).sin() * 0.8 + if i == 5 { 3.0 } else { 0.0 })
            .collect();
        let p = d.join("a.wav");
        write_wav(&p, &x, 8000)?;
        let (y, rate) = read_wav(&p)?;
        assert_eq!(rate, 8000);
        assert_eq!(y.len(), x.len());
        for (a, b) in x.iter().zip(&y) {
            let a = a.clamp(-1.0, 1.0);
            assert!((a - b).abs() <= 1.0 / 32768.0 + 1e-7, "{a} vs {b}");
        }
        // the same bits the second time: 16-bit values are exact
        write_wav(&d.join("b.wav"), &y, 8000)?;
        assert_eq!(read_wav(&d.join("b.wav"))?.0, y);
        std::fs::write(d.join("c.wav"), b"not a wav file")?;
        let e = read_wav(&d.join("c.wav")).unwrap_err().to_string();
        assert!(
            e.contains("c.wav") && e.contains("WAV") && !e.contains('\n'),
            "{e}"
        );
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(d.join("s.wav"), spec)?;
        w.write_sample(0i16)?;
        w.write_sample(0i16)?;
        w.finalize()?;
        let e = read_wav(&d.join("s.wav")).unwrap_err().to_string();
        assert!(e.contains("2 channel(s)") && e.contains("mono"), "{e}");
        std::fs::remove_dir_all(&d)?;
        Ok(())
    }

    /// A pure tone puts its power in its own frequency bin (1 kHz at 8 kHz → bin 32 of 129), 60 dB above the
    /// bins far from it; the PNG is one column per frame and one row per bin.
    #[test]
    fn spectrogram_finds_a_tone() -> TestResult {
        let tone: Vec<f32> = (0..1024)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 8000.0).sin() * 0.5)
            .collect();
        let spec = spectrogram(&tone);
        assert_eq!(spec.len(), 16);
        let col = &spec[4];
        assert_eq!(col.len(), 129);
        let peak = (0..129)
            .max_by(|&a, &b| col[a].total_cmp(&col[b]))
            .unwrap_or(0);
        assert_eq!(peak, 32);
        assert!(col[32] - col[80] > 60.0, "{} vs {}", col[32], col[80]);
        let png = image::load_from_memory(&spectrogram_png(&tone)?)?;
        assert_eq!((png.width(), png.height()), (16, 129));
        // as a classifier's image: the tone's band (bins 32…35 → row 8 from the bottom) is the brightest row
        let img = spectrogram_image(&tone);
        assert_eq!(img.len(), SPEC_IMAGE * SPEC_IMAGE);
        let row_sum = |r: usize| -> u32 {
            img[(SPEC_IMAGE - 1 - r) * SPEC_IMAGE..][..SPEC_IMAGE]
                .iter()
                .map(|&v| v as u32)
                .sum()
        };
        let brightest = (0..SPEC_IMAGE).max_by_key(|&r| row_sum(r)).unwrap_or(0);
        assert_eq!(brightest, 8);
        let silence = spectrogram_image(&[0.0; 1024]);
        assert!(silence.iter().all(|&v| v == 0));
        Ok(())
    }

    /// A user's WAV becomes codes padded with silence; another rate, an empty or too long clip and a file
    /// that is not WAV are refused with one line naming the file.
    #[test]
    fn clip_codes_pads_and_refuses() -> TestResult {
        let d = std::env::temp_dir().join(format!("dgm-clipcodes-{}", std::process::id()));
        std::fs::create_dir_all(&d)?;
        let p = d.join("a.wav");
        write_wav(&p, &[0.5, -0.5, 0.0], 8000)?;
        let (codes, n) = clip_codes(&p, 8000, 5)?;
        assert_eq!(n, 3);
        assert_eq!(codes[3..], [128.0, 128.0]);
        assert_eq!(codes[0], mu_law_encode(0.5) as f32);
        for (rate, len, needle) in [(16000, 5, "8000 Hz"), (8000, 2, "1 to 2 samples")] {
            let e = clip_codes(&p, rate, len).unwrap_err().to_string();
            assert!(
                e.contains("a.wav") && e.contains(needle) && !e.contains('\n'),
                "{e}"
            );
        }
        write_wav(&d.join("e.wav"), &[], 8000)?;
        assert!(clip_codes(&d.join("e.wav"), 8000, 5).is_err());
        std::fs::write(d.join("t.wav"), "text")?;
        let e = clip_codes(&d.join("t.wav"), 8000, 5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.wav") && e.contains("WAV"), "{e}");
        std::fs::remove_dir_all(&d)?;
        Ok(())
    }

    /// Clips written as one WAV come back as their decoded codes with silence between them.
    #[test]
    fn clips_are_joined_with_silence() -> TestResult {
        let d = std::env::temp_dir().join(format!("dgm-clips-{}", std::process::id()));
        std::fs::create_dir_all(&d)?;
        let codes = candle_core::Tensor::new(
            &[[0f32, 255.0, 128.0], [200.0, 10.0, 128.0]],
            &candle_core::Device::Cpu,
        )?;
        let p = d.join("two.wav");
        let png = write_clips(&p, &codes, 8000)?;
        assert!(png.ends_with("two.png") && png.is_file());
        let (y, rate) = read_wav(&p)?;
        assert_eq!((rate, y.len()), (8000, 6 + CLIP_GAP));
        assert!((y[0] + 1.0).abs() < 1e-3 && (y[1] - 1.0).abs() < 1e-3);
        assert!(y[3..3 + CLIP_GAP].iter().all(|&v| v == 0.0));
        assert!((y[3 + CLIP_GAP] - mu_law_decode(200)).abs() < 1e-4);
        std::fs::remove_dir_all(&d)?;
        Ok(())
    }

    /// The real data (when `DGM_DATA` holds it; required in CI): 980 training, 140 validation and 280 test
    /// clips of 8 kHz at most 1 s, every digit in each, and no voice in two splits; as a data set, codes padded
    /// with silence.
    #[test]
    fn spoken_digits_splits_by_voice() -> TestResult {
        let Some(dir) = crate::data::test_data_dir() else {
            println!("skipped: DGM_DATA is not set");
            return Ok(());
        };
        let train = load_spoken_digits(&dir, Split::Train)?;
        let val = load_spoken_digits(&dir, Split::Validation)?;
        let test = load_spoken_digits(&dir, Split::Test)?;
        assert_eq!((train.len(), val.len(), test.len()), (980, 140, 280));
        for set in [&train, &val, &test] {
            for d in 0..10 {
                assert!(set.iter().any(|c| c.digit == d), "digit {d} missing");
            }
            assert!(set
                .iter()
                .all(|c| !c.samples.is_empty() && c.samples.len() <= DIGITS_RATE as usize));
        }
        let voices = |s: &[Clip]| -> std::collections::BTreeSet<String> {
            s.iter().map(|c| c.voice.clone()).collect()
        };
        let (vt, vv, vs) = (voices(&train), voices(&val), voices(&test));
        assert_eq!((vt.len(), vv.len(), vs.len()), (14, 2, 4));
        assert!(vt.is_disjoint(&vv) && vt.is_disjoint(&vs) && vv.is_disjoint(&vs));
        let ds = dataset(&dir, Split::Validation)?;
        assert_eq!(
            (ds.len(), ds.example_shape.clone()),
            (140, vec![CLIP_SAMPLES])
        );
        let crate::data::Storage::F32(codes) = &ds.storage else {
            panic!("codes are f32 values");
        };
        let first = &codes[..CLIP_SAMPLES];
        let n = val[0].samples.len();
        assert_eq!(first[0], mu_law_encode(val[0].samples[0]) as f32);
        assert!(first[n..].iter().all(|&q| q == MU_LAW_SILENCE as f32));
        assert_eq!(ds.labels.as_ref().map(|l| l[0]), Some(val[0].digit));
        Ok(())
    }
}
