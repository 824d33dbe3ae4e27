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
//! voice, …). The test split's voices never occur in training.

use std::path::{Path, PathBuf};

use super::Split;
use crate::{Error, Result};

/// μ of the 8-bit μ-law.
pub const MU: f32 = 255.0;
/// The μ-law code of silence.
pub const MU_LAW_SILENCE: u8 = 128;
/// The sample rate of `spoken-digits`, Hz.
pub const DIGITS_RATE: u32 = 8000;

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

/// Writes samples in [−1, 1] (clipped) as a mono 16-bit PCM WAV file at `rate` Hz.
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
    let mut w = hound::WavWriter::create(path, spec).map_err(io)?;
    for &s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32768.0)
            .round()
            .clamp(-32768.0, 32767.0) as i16;
        w.write_sample(v).map_err(io)?;
    }
    w.finalize().map_err(io)
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

/// The clips of one split of `spoken-digits` under `data_dir`, in `labels.csv` order. The validation split is
/// refused: the data set has none (hold out training voices yourself if you need one).
pub fn load_spoken_digits(data_dir: &Path, split: Split) -> Result<Vec<Clip>> {
    let name = match split {
        Split::Train => "train",
        Split::Test => "test",
        Split::Validation => {
            return Err(Error::invalid(
                "split",
                "spoken-digits has a train and a test split only",
            ))
        }
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
        if rate != DIGITS_RATE {
            return Err(Error::CorruptData {
                path,
                msg: format!("{rate} Hz; spoken-digits clips are {DIGITS_RATE} Hz"),
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

    /// The real data (when `DGM_DATA` holds it; required in CI): 1120 training and 280 test clips of 8 kHz at
    /// most 1 s, every digit in both, and no test voice among the training voices.
    #[test]
    fn spoken_digits_splits_by_voice() -> TestResult {
        let Some(dir) = crate::data::test_data_dir() else {
            println!("skipped: DGM_DATA is not set");
            return Ok(());
        };
        let train = load_spoken_digits(&dir, Split::Train)?;
        let test = load_spoken_digits(&dir, Split::Test)?;
        assert_eq!((train.len(), test.len()), (1120, 280));
        for set in [&train, &test] {
            for d in 0..10 {
                assert!(set.iter().any(|c| c.digit == d), "digit {d} missing");
            }
            assert!(set
                .iter()
                .all(|c| !c.samples.is_empty() && c.samples.len() <= DIGITS_RATE as usize));
        }
        let voices: std::collections::BTreeSet<&str> =
            train.iter().map(|c| c.voice.as_str()).collect();
        assert!(test.iter().all(|c| !voices.contains(c.voice.as_str())));
        assert!(load_spoken_digits(&dir, Split::Validation).is_err());
        Ok(())
    }
}
