//! Runs as the studio sees them: names from requests resolved to run folders (never outside the runs folder),
//! and run summaries as JSON.

use std::path::{Path, PathBuf};

use dgm::report::{collect_runs, RunSummary};
use serde_json::{json, Value};

use crate::api::ApiError;

/// The most `/`-separated parts a run name has (dgm's report looks this deep for runs).
const MAX_PARTS: usize = dgm::report::MAX_DEPTH;
/// The longest run name accepted, in bytes.
const MAX_NAME: usize = 200;

/// Checks that `name` is a relative run name: 1 to [`MAX_PARTS`] `/`-separated parts of letters, digits,
/// `.`, `_` and `-`, none of them `.` or `..`. `parts` limits the parts (1 for a new run's name).
pub(crate) fn check_name(name: &str, parts: usize) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::bad_request(format!(
            "run name '{}': {why}",
            name.chars().take(MAX_NAME).collect::<String>()
        )))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_NAME {
        return bad(&format!("longer than {MAX_NAME} bytes"));
    }
    let split: Vec<&str> = name.split('/').collect();
    if split.len() > parts {
        return bad(&format!(
            "has {} '/'-separated parts; at most {parts} here",
            split.len()
        ));
    }
    for p in split {
        if p.is_empty() || p == "." || p == ".." {
            return bad("a part is empty, '.' or '..'; give a path relative to the runs folder");
        }
        if !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return bad("use letters, digits, '.', '_', '-' and '/' between folders");
        }
    }
    Ok(())
}

/// The folder of run `name` under `root` (already canonical): a 400 for a malformed name, a 404 when it is
/// not a run inside `root` once links are resolved.
pub(crate) fn resolve(root: &Path, name: &str) -> Result<PathBuf, ApiError> {
    check_name(name, MAX_PARTS)?;
    let not_found = || {
        ApiError::not_found(format!(
            "no run '{name}' in the runs folder (GET /api/runs lists them)"
        ))
    };
    let dir = root.join(name).canonicalize().map_err(|_| not_found())?;
    if !dir.starts_with(root) || !dgm::report::is_run(&dir) {
        return Err(not_found());
    }
    Ok(dir)
}

/// Every run under `root`, summarised (an empty list when there is none); runs reached through a link to
/// a folder outside `root` are left out, as [`resolve`] refuses them.
pub(crate) fn list(root: &Path) -> Vec<RunSummary> {
    let mut runs = collect_runs(root).unwrap_or_default();
    runs.retain(|r| r.dir.canonicalize().is_ok_and(|d| d.starts_with(root)));
    runs
}

/// The summary of the one run in `dir`, named `name`.
pub(crate) fn summary(dir: &Path, name: &str) -> Result<RunSummary, ApiError> {
    let mut s = collect_runs(dir)
        .map_err(ApiError::from)?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("no run '{name}'")))?;
    s.name = name.to_string();
    Ok(s)
}

/// A run summary as JSON: what the Runs page shows, the likelihood's kind in words, and what the model can
/// do (from the registry, so that the page can grey out what a run cannot do and say why).
pub(crate) fn summary_json(s: &RunSummary) -> Value {
    let nll = |e: &dgm::report::NllEntry| {
        json!({
            "split": e.split,
            "estimator": e.result.estimator,
            "kind": e.kind_class().label(),
            "kind_text": e.result.kind_text,
            "nll_nats": finite(e.result.nll_nats),
            "stderr_nats": finite(e.result.stderr_nats),
            "bits_per_dim": finite(e.result.bits_per_dim),
        })
    };
    let audio = s
        .data
        .as_deref()
        .and_then(|d| dgm::data::DataSpec::parse(d).ok())
        .is_some_and(|d| d.kind() == dgm::data::DataKind::Audio);
    let abilities = s
        .model
        .as_deref()
        .and_then(|m| dgm::models::entry(m).ok())
        .map(|e| {
            let a = &e.abilities;
            json!({
                "family": e.family,
                "density": a.density,
                "latent": a.latent,
                "text": a.sequence,
                "denoiser": a.denoiser,
                "class_conditional": a.class_conditional,
                // audio runs have no page here yet (their samples are WAV files: `dgm sample`)
                "images": !a.sequence && !audio,
            })
        });
    json!({
        "name": s.name,
        "model": s.model,
        "data": s.data,
        "preprocessing": s.preprocessing,
        "step": s.step,
        "total_steps": s.total_steps,
        "finished": s.finished,
        "likelihood": s.best_nll().map(nll),
        "likelihoods": s.nll.iter().map(nll).collect::<Vec<_>>(),
        "quality": s.quality.as_ref().map(|q| serde_json::to_value(q).unwrap_or(Value::Null)),
        "fid": s.quality.as_ref().and_then(|q| q.sets.fid).map(finite),
        "has_samples": s.sample.is_some(),
        "has_loss": s.loss_svg.is_some(),
        "abilities": abilities,
        "notes": s.notes,
    })
}

/// The shape of one of the run's examples (`[c, h, w]` for images), `null` when its config cannot say.
pub(crate) fn example_shape(dir: &Path) -> Value {
    dgm::train::run::RunDir::open(dir)
        .and_then(|d| d.load_config())
        .and_then(|c| dgm::models::example_shape(&c.model.name, &c.model.config))
        .map(|s| json!(s))
        .unwrap_or(Value::Null)
}

/// Example `index` of an image data set as a PNG of its own size: its 8-bit pixels as they are.
pub(crate) fn example_png(ds: &dgm::data::Dataset, index: usize) -> Result<Vec<u8>, ApiError> {
    let (dgm::data::Storage::U8(px), &[c, h, w]) = (&ds.storage, &ds.example_shape[..]) else {
        return Err(ApiError::bad_request(format!(
            "data set '{}' is not made of images",
            ds.name
        )));
    };
    if index >= ds.len() {
        return Err(ApiError::bad_request(format!(
            "index {index}: the test split of '{}' has {} examples (0 to {})",
            ds.name,
            ds.len(),
            ds.len().saturating_sub(1)
        )));
    }
    let one = &px[index * c * h * w..(index + 1) * c * h * w];
    let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let at = |ch: usize| one[(ch.min(c - 1) * h + y as usize) * w + x as usize];
        image::Rgb([at(0), at(1), at(2)])
    });
    dgm::image_io::png_bytes(&img).map_err(ApiError::from)
}

/// `x` as JSON, `null` when it is not finite.
fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_runs_folder_are_refused() {
        for bad in [
            "",
            "..",
            "../x",
            "a/../../b",
            "/etc",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            "a b",
            "a/b/c/d/e",
            "%2e%2e",
        ] {
            assert!(check_name(bad, MAX_PARTS).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "run-1", "group/run_2", "a.b/c.d"] {
            assert!(check_name(good, MAX_PARTS).is_ok(), "{good:?} refused");
        }
        assert!(check_name("a/b", 1).is_err());
    }

    #[test]
    fn a_link_out_of_the_runs_folder_is_not_a_run_of_it() {
        let base = std::env::temp_dir().join(format!("dgm-studio-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (root, outside) = (base.join("runs"), base.join("outside"));
        for d in [&root, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        // a run outside the root, linked from inside
        std::fs::write(outside.join("config.toml"), "").unwrap();
        std::fs::write(outside.join("checkpoint.json"), "{}").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let root = root.canonicalize().unwrap();
        let e = resolve(&root, "link").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::NOT_FOUND);
        // the same folder inside the root is one
        std::fs::create_dir_all(root.join("inside")).unwrap();
        std::fs::write(root.join("inside/config.toml"), "").unwrap();
        std::fs::write(root.join("inside/checkpoint.json"), "{}").unwrap();
        assert_eq!(
            resolve(&root, "inside").unwrap(),
            root.join("inside").canonicalize().unwrap()
        );
        // a folder that is not a run is not found
        std::fs::create_dir_all(root.join("empty")).unwrap();
        assert!(resolve(&root, "empty").is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
