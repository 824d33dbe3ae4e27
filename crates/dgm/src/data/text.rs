//! Byte-level text corpora (placeholder: being written).
