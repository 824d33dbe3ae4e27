//! Helpers shared by the integration tests (each file under `tests/` is its own crate and uses a part of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `dgm` binary under test, with `DGM_DATA` removed (tests that want data set it).
pub fn dgm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dgm"));
    c.env_remove("DGM_DATA");
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

/// The shared data directory, if `DGM_DATA` is set and holds MNIST (a relative path is taken from the
/// workspace root).
pub fn shared_data() -> Option<PathBuf> {
    let v = std::env::var_os("DGM_DATA")?;
    let p = PathBuf::from(v);
    let p = if p.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
    } else {
        p
    };
    p.join("mnist").is_dir().then_some(p)
}
