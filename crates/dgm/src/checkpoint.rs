//! Writing files so that a crash never loses or mixes a user's checkpoint.
//!
//! Single files ([`write_atomic`]) go to a temporary file beside their destination, are flushed to disk
//! (fsync) and renamed over the destination; the directory is synced so that the rename itself is durable.
//!
//! A training checkpoint is several files (weights, EMA, optimizer moments, training state) that only make
//! sense together, so it is committed as one unit ([`commit`]):
//!
//! ```text
//! checkpoints/.staging/        1. every file written and fsynced here (a crash leaves only debris)
//! checkpoints/step-00000120/   2. the staging folder renamed to its final name, parent synced
//! checkpoint.json              3. the manifest — the training state, the folder, each file's size and
//!                                 SHA-256 — written atomically: this rename is the commit point
//!                              4. older step folders, staging debris and stale temporary files removed
//! ```
//!
//! Until step 3 the previous manifest still names the previous, complete folder; after it, the new one.
//! Readers ([`Manifest::read_file`]) verify every file's size and hash, so a torn or bit-flipped file is an
//! error, never silently loaded.
//!
//! Fault injection for tests: the environment variable `DGM_FAULT` makes the process die
//! (`kill@K`: SIGKILL at the K-th write point), fail (`fail@K`: an injected "no space left on device" at the
//! K-th point), pause at every point (`pause@MS`) or name each point on stderr (`trace`). Write points are
//! the places between the steps above (and inside every atomic write), counted from 1 in each process.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The manifest of a committed checkpoint, in the run directory.
pub const MANIFEST_FILE: &str = "checkpoint.json";
/// The folder that holds checkpoint step folders, in the run directory.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The manifest format this dgm writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
const STAGING: &str = ".staging";

/// A test hook: what `DGM_FAULT` asks for (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    Kill(u64),
    Fail(u64),
    Pause(u64),
    Trace,
}

fn fault_mode() -> Fault {
    static MODE: OnceLock<Fault> = OnceLock::new();
    *MODE.get_or_init(|| {
        let Ok(v) = std::env::var("DGM_FAULT") else {
            return Fault::None;
        };
        let num = |s: &str| s.parse::<u64>().ok();
        match v.split_once('@') {
            Some(("kill", k)) => num(k).map_or(Fault::None, Fault::Kill),
            Some(("fail", k)) => num(k).map_or(Fault::None, Fault::Fail),
            Some(("pause", ms)) => num(ms).map_or(Fault::None, Fault::Pause),
            _ if v == "trace" => Fault::Trace,
            _ => Fault::None,
        }
    })
}

/// A write point: where `DGM_FAULT` may kill the process, inject a write error or pause (a no-op otherwise).
pub fn fault_point(name: &str) -> std::io::Result<()> {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mode = fault_mode();
    if mode == Fault::None {
        return Ok(());
    }
    let k = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    match mode {
        Fault::Kill(at) if at == k => kill_self(),
        Fault::Fail(at) if at == k => Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "no space left on device (injected by DGM_FAULT)",
        )),
        Fault::Pause(ms) => {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(())
        }
        Fault::Trace => {
            eprintln!("dgm-fault-point {k} {name}");
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(unix)]
fn kill_self() -> ! {
    // SAFETY: kill(2) on our own pid with a valid signal number; SIGKILL does not return.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

#[cfg(not(unix))]
fn kill_self() -> ! {
    std::process::abort()
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes renames and creations inside `dir` durable; not every platform can open a directory, which is fine
/// to ignore.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes and fsyncs a new file (no rename): for files inside a folder that is not visible yet.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    fault_point("file created")?;
    f.write_all(bytes)?;
    fault_point("file written")?;
    f.sync_all()
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid("path", format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        write_synced(&tmp, bytes)?;
        fault_point("temporary file synced")?;
        std::fs::rename(&tmp, path)?;
        sync_dir(&dir);
        fault_point("renamed")
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Safetensors bytes of named tensors, in name order.
pub fn tensor_bytes(tensors: &BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    safetensors::serialize(tensors.iter(), None)
        .map_err(|e| Error::invalid("tensors", format!("cannot serialise: {e}")))
}

/// Saves named tensors as a safetensors file, atomically. Tensors are written in name order.
pub fn save_tensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    write_atomic(path, &tensor_bytes(tensors)?)
}

/// Parses safetensors `bytes` (read from `path`, named in errors) onto `device`.
pub fn tensors_from_bytes(
    bytes: &[u8],
    path: &Path,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>> {
    let map =
        candle_core::safetensors::load_buffer(bytes, device).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            msg: format!("not a valid safetensors file: {e}"),
        })?;
    Ok(map.into_iter().collect())
}

/// Loads every tensor of a safetensors file onto `device`.
pub fn load_tensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("cannot read: {e}"),
    })?;
    tensors_from_bytes(&bytes, path, device)
}

/// The SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Size and hash of one file of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Length in bytes.
    pub bytes: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// `checkpoint.json`: the state a committed checkpoint was written in (for training: step, optimiser
/// count, seed, RNG state …), the folder that holds its files, and each file's size and hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest<M> {
    /// [`MANIFEST_FORMAT`] when written.
    pub format: u32,
    /// What the checkpoint is of (for training: step, optimiser count, seed, RNG state …).
    pub state: M,
    /// The folder of the files, relative to the run directory (`checkpoints/step-00000120`).
    pub dir: String,
    /// File name → size and hash.
    pub files: BTreeMap<String, FileRecord>,
}

impl<M> Manifest<M> {
    /// The folder of the checkpoint's files under run directory `root`.
    pub fn dir_path(&self, root: &Path) -> PathBuf {
        root.join(&self.dir)
    }

    /// Reads file `name` of the checkpoint and checks its size and SHA-256 against the manifest.
    pub fn read_file(&self, root: &Path, name: &str) -> Result<Vec<u8>> {
        let path = self.dir_path(root).join(name);
        let Some(rec) = self.files.get(name) else {
            let have: Vec<&str> = self.files.keys().map(String::as_str).collect();
            return Err(Error::Checkpoint {
                path: root.join(MANIFEST_FILE),
                msg: format!(
                    "the checkpoint has no file '{name}' (it has {})",
                    have.join(", ")
                ),
            });
        };
        let bytes = std::fs::read(&path).map_err(|e| Error::Checkpoint {
            path: path.clone(),
            msg: format!("cannot read ({e}); the checkpoint is incomplete"),
        })?;
        if bytes.len() as u64 != rec.bytes {
            return Err(Error::Checkpoint {
                path,
                msg: format!(
                    "{} bytes where the manifest says {}: the file is damaged",
                    bytes.len(),
                    rec.bytes
                ),
            });
        }
        let hash = sha256_hex(&bytes);
        if hash != rec.sha256 {
            return Err(Error::Checkpoint {
                path,
                msg: format!(
                    "SHA-256 {} does not match the manifest's {}: the file is damaged",
                    &hash[..16],
                    rec.sha256.chars().take(16).collect::<String>()
                ),
            });
        }
        Ok(bytes)
    }
}

/// Reads `root/checkpoint.json`; `None` when there is none (no checkpoint committed yet).
pub fn read_manifest<M: DeserializeOwned>(root: &Path) -> Result<Option<Manifest<M>>> {
    let path = root.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let format = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("format").and_then(|f| f.as_u64()));
    if format.is_some_and(|f| f > MANIFEST_FORMAT as u64) {
        return Err(Error::Checkpoint {
            path,
            msg: format!(
                "format {} was written by a newer dgm (this one reads format {MANIFEST_FORMAT})",
                format.unwrap_or_default()
            ),
        });
    }
    let m: Manifest<M> = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path: path.clone(),
        msg: format!("corrupt manifest: {e}"),
    })?;
    let ok_dir = m
        .dir
        .strip_prefix(CHECKPOINTS_DIR)
        .and_then(|r| r.strip_prefix('/'))
        .is_some_and(|d| !d.is_empty() && !d.contains(['/', '\\']) && d != "..");
    let ok_names = m
        .files
        .keys()
        .all(|n| !n.is_empty() && !n.contains(['/', '\\']) && n != "." && n != "..");
    if !ok_dir || !ok_names {
        return Err(Error::Checkpoint {
            path,
            msg: format!(
                "corrupt manifest: folder '{}' or a file name is not inside {CHECKPOINTS_DIR}/",
                m.dir
            ),
        });
    }
    Ok(Some(m))
}

/// Commits a checkpoint of `files` (name → bytes) with state `state` under run directory `root`, as one
/// unit (see the module documentation), then removes the previous checkpoint and any debris. On an error the
/// previous checkpoint is untouched and stays the committed one.
pub fn commit<M: Serialize>(
    root: &Path,
    step: u64,
    state: M,
    files: &[(&str, Vec<u8>)],
) -> Result<Manifest<M>> {
    let ckpts = root.join(CHECKPOINTS_DIR);
    let current = read_manifest::<serde_json::Value>(root)
        .ok()
        .flatten()
        .map(|m| m.dir);
    // a fresh folder name: the step, with a suffix if the committed checkpoint already uses that name
    let mut dir = format!("{CHECKPOINTS_DIR}/step-{step:08}");
    let mut k = 1;
    while current.as_deref() == Some(dir.as_str()) {
        dir = format!("{CHECKPOINTS_DIR}/step-{step:08}-{k}");
        k += 1;
    }
    let staging = ckpts.join(STAGING);
    let target = root.join(&dir);
    let mut records = BTreeMap::new();
    let staged = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(&ckpts)?;
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        if target.exists() {
            std::fs::remove_dir_all(&target)?; // debris of an uncommitted attempt at this step
        }
        std::fs::create_dir(&staging)?;
        for (name, bytes) in files {
            write_synced(&staging.join(name), bytes)?;
            fault_point("checkpoint file synced")?;
            records.insert(
                name.to_string(),
                FileRecord {
                    bytes: bytes.len() as u64,
                    sha256: sha256_hex(bytes),
                },
            );
        }
        sync_dir(&staging);
        std::fs::rename(&staging, &target)?;
        sync_dir(&ckpts);
        fault_point("checkpoint folder in place")
    })();
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        state,
        dir,
        files: records,
    };
    let committed = staged.map_err(|e| Error::io(&ckpts, e)).and_then(|()| {
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| Error::invalid("checkpoint", e.to_string()))?;
        write_atomic(&root.join(MANIFEST_FILE), text.as_bytes())
    });
    if let Err(e) = committed {
        // an error after the manifest's rename (e.g. in syncing) means the commit happened: keep it
        let now = read_manifest::<serde_json::Value>(root).ok().flatten();
        if now.is_none_or(|m| m.dir != manifest.dir) {
            // the previous manifest still names the previous folder; drop what this attempt left
            let _ = std::fs::remove_dir_all(&staging);
            let _ = std::fs::remove_dir_all(&target);
            return Err(e);
        }
    }
    remove_debris(root, Some(&manifest.dir));
    Ok(manifest)
}

/// Removes what a crash can leave in run directory `root`: step folders other than `keep` (the committed
/// one), the staging folder, and temporary files (`.NAME.PID.tmp`) of the files a training run writes. Best
/// effort: a file that cannot be removed is left.
pub fn remove_debris(root: &Path, keep: Option<&str>) {
    let ckpts = root.join(CHECKPOINTS_DIR);
    if let Ok(entries) = std::fs::read_dir(&ckpts) {
        for e in entries.flatten() {
            let rel = format!("{CHECKPOINTS_DIR}/{}", e.file_name().to_string_lossy());
            if keep != Some(rel.as_str()) {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        let _ = fault_point("debris removed");
    }
    // temporary files of the files training writes (not of others, e.g. a `dgm eval` running beside it)
    let remove_temps = |dir: &Path, owned: &dyn Fn(&str) -> bool| {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if temp_base(&name).is_some_and(owned) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    };
    remove_temps(root, &|base| TRAINING_FILES.contains(&base));
    remove_temps(&root.join("samples"), &|_| true);
}

/// The files in a run directory that training writes (legacy checkpoint files included).
const TRAINING_FILES: &[&str] = &[
    MANIFEST_FILE,
    "config.toml",
    "metrics.jsonl",
    "loss.svg",
    "state.json",
    "model.safetensors",
    "ema.safetensors",
    "optimizer.safetensors",
];

/// `NAME` for the temporary files [`write_atomic`] makes (`.NAME.PID.tmp`), `None` for other names.
fn temp_base(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (base, pid) = inner.rsplit_once('.')?;
    (!base.is_empty() && !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit())).then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_exactly() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("dgm-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let dev = Device::Cpu;
        let mut m = BTreeMap::new();
        let vals: Vec<f32> = (0..24)
            .map(|i| (i as f32).sin() * 1e-3 + f32::EPSILON * i as f32)
            .collect();
        m.insert(
            "a.weight".to_string(),
            Tensor::from_vec(vals.clone(), (2, 3, 4), &dev)?,
        );
        m.insert(
            "b".to_string(),
            Tensor::new(&[f32::MIN_POSITIVE, -0.0, 1e30], &dev)?,
        );
        let p = dir.join("t.safetensors");
        save_tensors(&p, &m)?;
        let back = load_tensors(&p, &dev)?;
        assert_eq!(back.keys().collect::<Vec<_>>(), vec!["a.weight", "b"]);
        assert_eq!(back["a.weight"].dims(), &[2, 3, 4]);
        let got: Vec<u32> = back["a.weight"]
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .map(|x| x.to_bits())
            .collect();
        let want: Vec<u32> = vals.iter().map(|x| x.to_bits()).collect();
        assert_eq!(got, want);
        // no temp file left behind
        let leftovers = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .count();
        assert_eq!(leftovers, 1);
        // a corrupt file is an error, not a panic
        write_atomic(&p, b"not safetensors")?;
        assert!(load_tensors(&p, &dev).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    fn fresh_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dgm-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_commit_replaces_the_previous_checkpoint_as_one_unit() -> Result<()> {
        let root = fresh_dir("commit");
        assert!(read_manifest::<u64>(&root)?.is_none());
        let a = commit(
            &root,
            3,
            30u64,
            &[("w", b"three".to_vec()), ("o", vec![1, 2])],
        )?;
        assert_eq!(a.dir, "checkpoints/step-00000003");
        let m = read_manifest::<u64>(&root)?.unwrap();
        assert_eq!(m, a);
        assert_eq!(m.read_file(&root, "w")?, b"three");
        assert_eq!(m.files["w"].sha256, sha256_hex(b"three"));
        // the same step again (e.g. a resumed run that stops at once) goes to a new folder
        let b = commit(&root, 3, 31u64, &[("w", b"again".to_vec())])?;
        assert_eq!(b.dir, "checkpoints/step-00000003-1");
        let c = commit(&root, 4, 40u64, &[("w", b"four".to_vec())])?;
        let m = read_manifest::<u64>(&root)?.unwrap();
        assert_eq!((m.state, m.dir.as_str()), (40, c.dir.as_str()));
        // only the committed folder is left
        let left: Vec<_> = std::fs::read_dir(root.join(CHECKPOINTS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("step-00000004")]);
        // a flipped bit, a truncation and a missing name are errors naming the file
        let f = root.join(&m.dir).join("w");
        std::fs::write(&f, b"fous").unwrap();
        let e = m.read_file(&root, "w").unwrap_err().to_string();
        assert!(e.contains("SHA-256") && e.contains("damaged"), "{e}");
        std::fs::write(&f, b"fo").unwrap();
        let e = m.read_file(&root, "w").unwrap_err().to_string();
        assert!(e.contains("2 bytes") && e.contains("says 4"), "{e}");
        let e = m.read_file(&root, "x").unwrap_err().to_string();
        assert!(e.contains("no file 'x'") && e.contains("w"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
        Ok(())
    }

    #[test]
    fn debris_is_removed_but_not_the_committed_checkpoint_or_other_files() -> Result<()> {
        let root = fresh_dir("debris");
        let m = commit(&root, 1, 0u64, &[("w", vec![7])])?;
        let ck = root.join(CHECKPOINTS_DIR);
        std::fs::create_dir_all(ck.join(STAGING)).unwrap();
        std::fs::create_dir_all(ck.join("step-00000002")).unwrap();
        std::fs::create_dir_all(root.join("samples")).unwrap();
        for f in [
            ".checkpoint.json.123.tmp",
            ".metrics.jsonl.9.tmp",
            ".eval-test.json.77.tmp",
            "notes.tmp",
            "samples/.samples.png.5.tmp",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        remove_debris(&root, Some(&m.dir));
        assert!(root.join(&m.dir).join("w").is_file());
        assert!(!ck.join(STAGING).exists() && !ck.join("step-00000002").exists());
        assert!(!root.join(".checkpoint.json.123.tmp").exists());
        assert!(!root.join(".metrics.jsonl.9.tmp").exists());
        assert!(!root.join("samples/.samples.png.5.tmp").exists());
        // another process's temporary file (dgm eval beside a training run) and other files stay
        assert!(root.join(".eval-test.json.77.tmp").exists());
        assert!(root.join("notes.tmp").exists());
        assert_eq!(temp_base(".a.b.12.tmp"), Some("a.b"));
        assert_eq!(temp_base(".a.x.tmp"), None);
        assert_eq!(temp_base("a.1.tmp"), None);
        let _ = std::fs::remove_dir_all(&root);
        Ok(())
    }

    #[test]
    fn a_manifest_cannot_point_outside_its_folder() -> Result<()> {
        let root = fresh_dir("escape");
        for (dir, file) in [
            ("../../etc", "w"),
            ("checkpoints/..", "w"),
            ("checkpoints/a/b", "w"),
            ("checkpoints/step-1", "../../x"),
        ] {
            let text = format!(
                r#"{{"format":1,"state":0,"dir":"{dir}","files":{{"{file}":{{"bytes":1,"sha256":"00"}}}}}}"#
            );
            std::fs::write(root.join(MANIFEST_FILE), text).unwrap();
            let e = read_manifest::<u64>(&root).unwrap_err().to_string();
            assert!(e.contains("corrupt manifest"), "{dir} {file}: {e}");
        }
        std::fs::write(
            root.join(MANIFEST_FILE),
            r#"{"format":9,"state":0,"dir":"checkpoints/s","files":{}}"#,
        )
        .unwrap();
        let e = read_manifest::<u64>(&root).unwrap_err().to_string();
        assert!(e.contains("newer dgm"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
        Ok(())
    }
}
