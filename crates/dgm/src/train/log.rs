//! Run logging: `metrics.jsonl` (one JSON object per logged step) and console progress — an indicatif bar on
//! a terminal, plain periodic lines otherwise (CI logs, pipes).

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
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

/// Console progress.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    start: Instant,
    start_step: u64,
    quiet: bool,
}

impl Progress {
    /// Progress from `start_step` to `total`; a bar when stdout is a terminal (and not `quiet`).
    pub fn new(start_step: u64, total: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stdout().is_terminal()).then(|| {
            let b = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            b.set_style(style);
            b.set_position(start_step);
            b
        });
        Self {
            bar,
            total,
            start: Instant::now(),
            start_step,
            quiet,
        }
    }

    /// Seconds since this session's progress started.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Steps per second in this session so far.
    pub fn rate(&self, step: u64) -> f64 {
        (step.saturating_sub(self.start_step)) as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    /// Reports `step` (1-based count of finished steps) with a message; prints a plain line when there is
    /// no bar and `print` is set.
    pub fn update(&self, step: u64, msg: &str, print: bool) {
        let rate = self.rate(step);
        match &self.bar {
            Some(b) => {
                b.set_position(step);
                b.set_message(format!("{msg} {rate:.1} it/s"));
            }
            None if print && !self.quiet => {
                let eta = (self.total - step.min(self.total)) as f64 / rate.max(1e-9);
                println!(
                    "step {step}/{} {msg} {rate:.1} it/s eta {}",
                    self.total,
                    fmt_secs(eta)
                );
            }
            None => {}
        }
    }

    /// Prints a line without breaking the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None if !self.quiet => println!("{line}"),
            None => {}
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// "1h02m", "3m05s", "12s".
pub fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}
