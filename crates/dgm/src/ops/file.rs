//! Measurements from files, so that a reconstruction can start from data (a scanner's sinogram) rather than
//! from an image degraded here: NumPy `.npy` (read by candle) or CSV text (one row per line, values separated
//! by commas or whitespace; a small reader of our own, since a numeric table needs no CSV quoting rules).

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Reads one measurement of `shape` (e.g. `(views, detectors)`) from `path` (`.npy` or `.csv`) as a batch of
/// one, `(1, shape…)` f32. The file may hold the values in any layout with the right count (a CSV with one
/// row per view is the natural one); anything else is refused naming the file and the expected shape.
pub fn read_measurement(path: &Path, shape: &[usize], device: &Device) -> Result<Tensor> {
    let name = path.display().to_string();
    let want: usize = shape.iter().product();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    let values: Vec<f32> = match ext.as_deref() {
        Some("npy") => {
            let t = Tensor::read_npy(path)
                .map_err(|e| Error::invalid(&name, format!("not a readable .npy file: {e}")))?;
            t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?
        }
        Some("csv") | Some("txt") => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let mut v = Vec::new();
            for (i, line) in text.lines().enumerate() {
                for field in line
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|f| !f.is_empty())
                {
                    let x: f32 = field.parse().map_err(|_| {
                        Error::invalid(&name, format!("line {}: '{field}' is not a number", i + 1))
                    })?;
                    v.push(x);
                }
            }
            v
        }
        _ => {
            return Err(Error::invalid(
                &name,
                "a measurement file must end in .npy or .csv",
            ))
        }
    };
    if values.len() != want {
        return Err(Error::invalid(
            &name,
            format!(
                "{} values, but a measurement of shape {shape:?} has {want}",
                values.len()
            ),
        ));
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(
            &name,
            format!("holds {bad}; values must be finite"),
        ));
    }
    let mut dims = vec![1];
    dims.extend_from_slice(shape);
    Ok(Tensor::from_vec(values, dims, device)?)
}
