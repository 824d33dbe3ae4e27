//! Reading run directories into [`RunSummary`]s: finding the runs, then each one's config, checkpoint state,
//! evaluation results, metrics log and latest samples — tolerantly (problems become notes).

use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{NllEntry, RunSummary, MAX_DEPTH};
use crate::data::Preprocessing;
use crate::metrics::NllReport;
use crate::train::plot::loss_curve_svg;
use crate::{Error, Result};

/// Finds every run under `root` (the root itself included) and reads its files; sorted by path.
/// Errors when `root` does not exist or holds no run.
pub fn collect_runs(root: &Path) -> Result<Vec<RunSummary>> {
    if !root.is_dir() {
        return Err(Error::invalid(
            "runs directory",
            format!("{} does not exist or is not a directory", root.display()),
        ));
    }
    let mut dirs = Vec::new();
    find_runs(root, 0, &mut dirs);
    if dirs.is_empty() {
        return Err(Error::invalid(
            "runs directory",
            format!(
                "no runs under {} (a run directory has config.toml and checkpoint.json or state.json)",
                root.display()
            ),
        ));
    }
    dirs.sort();
    Ok(dirs.iter().map(|d| read_run(root, d)).collect())
}

/// Whether `dir` holds a run: `config.toml` and a checkpoint (`checkpoint.json`, or an older run's
/// `state.json`).
pub fn is_run(dir: &Path) -> bool {
    dir.join("config.toml").is_file()
        && (dir.join(crate::checkpoint::MANIFEST_FILE).is_file()
            || dir.join("state.json").is_file())
}

fn find_runs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if is_run(dir) {
        out.push(dir.to_path_buf());
        return;
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    subs.sort();
    for s in subs {
        find_runs(&s, depth + 1, out);
    }
}

fn run_name(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
        _ => {
            let abs = absolute(dir);
            abs.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string())
        }
    }
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn uint(v: &Value, path: &[&str]) -> Option<u64> {
    let x = get(v, path)?;
    x.as_u64().or_else(|| {
        x.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as u64)
    })
}

/// Reads a file, `None` silently when it is absent, `None` with a note when it cannot be read.
fn read_text(dir: &Path, file: &str, notes: &mut Vec<String>) -> Option<String> {
    let path = dir.join(file);
    if !path.is_file() {
        return None;
    }
    match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) => {
            notes.push(format!("{file}: could not be read: {e}"));
            None
        }
    }
}

/// Reads an evaluation result (`what` it is, in words, for the note) into the type dgm writes it from; `None`
/// silently when the file is absent, `None` with a one-line note naming the file when it is not valid JSON or
/// not such a result.
fn read_result<T: DeserializeOwned>(
    dir: &Path,
    file: &str,
    what: &str,
    notes: &mut Vec<String>,
) -> Option<T> {
    let t = read_text(dir, file, notes)?;
    match serde_json::from_str::<T>(&t) {
        Ok(v) => Some(v),
        Err(e) if e.is_data() => {
            notes.push(format!(
                "{file}: not {what} as dgm writes it ({e}); ignored"
            ));
            None
        }
        Err(e) => {
            notes.push(format!("{file}: not valid JSON ({e}); ignored"));
            None
        }
    }
}

/// Reads and parses a JSON file; `None` (with a note) when it is malformed, `None` silently when absent.
fn read_json(dir: &Path, file: &str, notes: &mut Vec<String>) -> Option<Value> {
    let t = read_text(dir, file, notes)?;
    match serde_json::from_str::<Value>(&t) {
        Ok(v) => Some(v),
        Err(e) => {
            notes.push(format!("{file}: not valid JSON ({e}); ignored"));
            None
        }
    }
}

pub(super) fn read_run(root: &Path, dir: &Path) -> RunSummary {
    let mut r = RunSummary {
        dir: dir.to_path_buf(),
        name: run_name(root, dir),
        ..RunSummary::default()
    };
    read_config(dir, &mut r);
    // checkpoint.json holds the training state under "state"; state.json (older runs) is the state itself
    let (state_file, at): (&str, &[&str]) = if dir.join(crate::checkpoint::MANIFEST_FILE).is_file()
    {
        (crate::checkpoint::MANIFEST_FILE, &["state"])
    } else {
        ("state.json", &[])
    };
    if let Some(state) = read_json(dir, state_file, &mut r.notes) {
        let path = |k: &'static str| [at, &[k]].concat();
        r.step = uint(&state, &path("step"));
        r.finished = get(&state, &path("finished")).and_then(Value::as_bool);
    }
    read_likelihoods(dir, &mut r);
    r.quality = read_result(
        dir,
        "eval-quality.json",
        "a sample-quality result",
        &mut r.notes,
    );
    r.ood = read_result(dir, "eval-ood.json", "an OOD result", &mut r.notes);
    for (what, step) in [
        ("eval-quality.json", r.quality.as_ref().map(|q| q.step)),
        ("eval-ood.json", r.ood.as_ref().map(|o| o.step)),
    ] {
        if let (Some(s), Some(now)) = (step, r.step) {
            if s != now {
                r.notes.push(format!(
                    "{what} was computed at step {s}; the run is now at step {now}"
                ));
            }
        }
    }
    read_metrics(dir, &mut r);
    r.sample = latest_sample(dir);
    r
}

fn read_config(dir: &Path, r: &mut RunSummary) {
    let t = match std::fs::read_to_string(dir.join("config.toml")) {
        Ok(t) => t,
        Err(e) => {
            r.notes.push(format!("config.toml: could not be read: {e}"));
            return;
        }
    };
    let cfg: toml::Table = match toml::from_str(&t) {
        Ok(c) => c,
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or("").to_string();
            r.notes
                .push(format!("config.toml: not valid TOML ({first}); ignored"));
            return;
        }
    };
    let s = |table: &str, key: &str| -> Option<String> {
        cfg.get(table)?.get(key)?.as_str().map(str::to_string)
    };
    r.model = s("model", "name");
    r.data = s("data", "name");
    r.total_steps = cfg
        .get("train")
        .and_then(|t| t.get("steps"))
        .and_then(|v| v.as_integer())
        .and_then(|v| u64::try_from(v).ok());
    if let Some(p) = cfg.get("data").and_then(|d| d.get("preprocessing")) {
        match p.clone().try_into::<Preprocessing>() {
            Ok(p) => r.preprocessing = Some(p.describe()),
            Err(_) => {
                let kind = p.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
                r.preprocessing = Some(kind.to_string());
                r.notes.push(format!(
                    "config.toml: data.preprocessing (kind '{kind}') is not one this dgm understands"
                ));
            }
        }
    }
}

fn read_likelihoods(dir: &Path, r: &mut RunSummary) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(String, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter_map(|f| {
            let split = f.strip_prefix("eval-")?.strip_suffix(".json")?.to_string();
            // Only the splits `dgm eval` writes; other eval-*.json files (copies, OOD variants) are not NLLs.
            ["train", "validation", "test"]
                .contains(&split.as_str())
                .then_some((split, f))
        })
        .collect();
    let order = |s: &str| match s {
        "test" => 0,
        "validation" => 1,
        "train" => 2,
        _ => 3,
    };
    files.sort_by(|a, b| order(&a.0).cmp(&order(&b.0)).then(a.0.cmp(&b.0)));
    for (split, file) in files {
        let Some(results) =
            read_result::<Vec<NllReport>>(dir, &file, "a list of likelihood results", &mut r.notes)
        else {
            continue;
        };
        let mut skipped = 0;
        for result in results {
            if !result.nll_nats.is_finite() {
                skipped += 1;
                continue;
            }
            r.nll.push(NllEntry {
                split: split.clone(),
                result,
            });
        }
        if skipped > 0 {
            r.notes.push(format!(
                "{file}: {skipped} result(s) without a numeric nll_nats were skipped"
            ));
        }
    }
}

fn read_metrics(dir: &Path, r: &mut RunSummary) {
    let path = dir.join("metrics.jsonl");
    if !path.is_file() {
        return;
    }
    let t = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            r.notes
                .push(format!("metrics.jsonl: could not be read: {e}"));
            return;
        }
    };
    let mut records: Vec<Map<String, Value>> = Vec::new();
    let mut bad = 0usize;
    for line in t.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => records.push(m),
            _ => bad += 1,
        }
    }
    if bad > 0 {
        r.notes
            .push(format!("metrics.jsonl: {bad} malformed line(s) skipped"));
    }
    match loss_curve_svg(&records, &format!("{} — loss", r.name)) {
        Ok(svg) => r.loss_svg = Some(svg),
        Err(_) => r
            .notes
            .push("metrics.jsonl: no loss values to plot".to_string()),
    }
}

/// The latest sample grid of the run in `dir`: `samples/samples.png` if present, else the
/// `samples/step-N.png` with the largest N.
pub fn latest_sample(dir: &Path) -> Option<PathBuf> {
    let samples = dir.join("samples");
    let main = samples.join("samples.png");
    if main.is_file() {
        return Some(main);
    }
    std::fs::read_dir(&samples)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let step: u64 = name
                .strip_prefix("step-")?
                .strip_suffix(".png")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .filter(|(_, p)| p.is_file())
        .max()
        .map(|(_, p)| p)
}

/// A path made absolute (against the current directory) with `.` and `..` resolved lexically.
pub(super) fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
