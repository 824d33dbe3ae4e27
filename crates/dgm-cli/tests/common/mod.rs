//! Helpers shared by the integration tests (each file under `tests/` is its own crate and uses a part of them).
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `dgm` binary under test, with `DGM_DATA` removed (tests that want data set it).
pub fn dgm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dgm"));
    c.env_remove("DGM_DATA");
    c
}

/// `dgm train NAME --data DATA --out OUT --steps STEPS --quiet --seed 3` with `--set` for each of `sets` (the
/// small configs of the family tests).
pub fn train_cmd(name: &str, data: &str, out: &Path, steps: u32, sets: &[&str]) -> Command {
    let mut c = dgm();
    c.args(["train", name, "--data", data, "--out"])
        .arg(out)
        .args(["--steps", &steps.to_string(), "--quiet", "--seed", "3"]);
    for s in sets {
        c.args(["--set", s]);
    }
    c
}

/// A fresh temporary directory, removed when the test passes (kept for a look when it fails).
pub struct TmpDir(PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh temporary directory named after the test binary's process and `name`.
pub fn tmp(name: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("dgm-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

/// Runs a command with no stdin and collects its output.
pub fn run(c: &mut Command) -> Output {
    c.stdin(Stdio::null()).output().unwrap()
}

/// A command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A command's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Bad input: exit code 2, one line on stderr that contains each of `needles`, no panic.
pub fn assert_bad_input(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit 2, got {:?}; stderr: {err}",
        o.status.code()
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "panic: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks '{n}': {err}");
    }
}

/// The shared data directory holding MNIST, from `DGM_DATA` (a relative path is taken from the workspace
/// root). Without it a test that needs MNIST skips (and says so) — except in CI (`CI=true` or `DGM_DATA`
/// set), where a missing data set fails the test instead of letting it pass silently.
pub fn shared_data() -> Option<PathBuf> {
    find_data(
        std::env::var_os("CI"),
        std::env::var_os("DGM_DATA"),
        "mnist",
    )
}

/// True when data sets must be present: in CI (`CI` is `true` or `1`) or when `DGM_DATA` is set.
pub fn data_required(ci: Option<&OsString>, dgm_data: Option<&OsString>) -> bool {
    let ci = ci.is_some_and(|v| v == "true" || v == "1");
    ci || dgm_data.is_some_and(|v| !v.is_empty())
}

/// The data folder `dgm_data` (the value of `DGM_DATA`) when it holds the data set folder `set`; `None`
/// (printing that the test skips) when it does not and data are not required; panics with the reason when
/// they are (see [`data_required`]).
pub fn find_data(ci: Option<OsString>, dgm_data: Option<OsString>, set: &str) -> Option<PathBuf> {
    let required = data_required(ci.as_ref(), dgm_data.as_ref());
    let dir = dgm_data.filter(|v| !v.is_empty()).map(|v| {
        let p = PathBuf::from(v);
        if p.is_relative() {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
        } else {
            p
        }
    });
    match dir {
        Some(p) if p.join(set).is_dir() => Some(p),
        Some(p) if required => panic!(
            "data set '{set}' not found: {} has no '{set}' folder (DGM_DATA is set, so a missing data set fails the test)",
            p.display()
        ),
        None if required => panic!(
            "data set '{set}' needed, but DGM_DATA is not set (in CI, CI=true, a missing data set fails the test)"
        ),
        _ => {
            eprintln!("skipped: DGM_DATA is not set, so the test needing '{set}' does not run");
            None
        }
    }
}
