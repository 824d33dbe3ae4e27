//! Run logging: `metrics.jsonl` (one JSON object per logged step) and the session [`Clock`] behind its
//! rates. Console progress is not printed here: the trainer sends [`crate::events::Event`]s.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Map, Value};

use crate::checkpoint::write_atomic;
use crate::{Error, Result};

/// Appends JSON lines to `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// Opens (creates) the log. When resuming at `resume_step`, lines of later steps — written after the
    /// checkpoint by the interrupted session — are dropped, so the log reads like one uninterrupted run.
    pub fn open(path: &Path, resume_step: Option<u64>) -> Result<Self> {
        if let (Some(step), true) = (resume_step, path.exists()) {
            let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let mut kept = String::new();
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|e| Error::io(path, e))?;
                let s = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()));
                if s.is_some_and(|s| s <= step) {
                    kept.push_str(&line);
                    kept.push('\n');
                }
            }
            write_atomic(path, kept.as_bytes())?;
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Appends one record.
    pub fn write(&self, record: &Map<String, Value>) -> Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        let line =
            serde_json::to_string(record).map_err(|e| Error::invalid("metrics", e.to_string()))?;
        writeln!(f, "{line}").map_err(|e| Error::io(&self.path, e))
    }

    /// Reads back every record (for plots and reports).
    pub fn read(path: &Path) -> Result<Vec<Map<String, Value>>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v.as_object().cloned())
            .collect())
    }
}

/// The clock of one training session: elapsed time and steps per second (logged as `it_s`, shown by
/// whoever renders the progress events).
pub struct Clock {
    start: Instant,
    start_step: u64,
}

impl Clock {
    /// A clock started now, at step `start_step`.
    pub fn new(start_step: u64) -> Self {
        Self {
            start: Instant::now(),
            start_step,
        }
    }

    /// Seconds since this session started.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Steps per second in this session so far.
    pub fn rate(&self, step: u64) -> f64 {
        (step.saturating_sub(self.start_step)) as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }
}
