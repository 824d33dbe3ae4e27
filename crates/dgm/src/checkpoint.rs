//! Writing files so that a crash never loses a user's checkpoint: every file is written to a temporary file
//! beside its destination, flushed to disk (fsync), then renamed over the destination, and the directory is
//! synced so the rename itself is durable.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid("path", format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // make the rename durable; not every platform can open a directory, which is fine to ignore
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Saves named tensors as a safetensors file, atomically. Tensors are written in name order.
pub fn save_tensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let bytes = safetensors::serialize(tensors.iter(), None).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("cannot serialise: {e}"),
    })?;
    write_atomic(path, &bytes)
}

/// Loads every tensor of a safetensors file onto `device`.
pub fn load_tensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("cannot read: {e}"),
    })?;
    let map =
        candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            msg: format!("not a valid safetensors file: {e}"),
        })?;
    Ok(map.into_iter().collect())
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
}
