//! Reading written results back. serde_json writes a non-finite `f64` (NaN, ±∞) as `null`, and files written by
//! older versions of dgm lack the fields added since; the result structs of [`crate::metrics`] read such a
//! number as NaN, the value that says "unknown":
//! `#[serde(default = "json::nan", deserialize_with = "json::number")]` (absent or `null`: NaN).

use serde::{Deserialize, Deserializer};

/// NaN: the value of a number a file lacks.
pub(crate) fn nan() -> f64 {
    f64::NAN
}

/// A number, NaN for `null`.
pub(crate) fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A list of numbers, NaN for each `null`.
pub(crate) fn numbers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}
