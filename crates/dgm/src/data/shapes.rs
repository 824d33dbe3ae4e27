//! Shapes (placeholder: being written).
use super::{Dataset, Storage};
/// Generator options.
#[derive(Clone, Debug, Default)]
pub struct ShapesConfig {}
/// Generates `n` images.
pub fn generate(n: usize, _seed: u64, _cfg: &ShapesConfig) -> Dataset {
    Dataset {
        name: "shapes".into(),
        example_shape: vec![3, 32, 32],
        storage: Storage::U8(vec![0; n * 3072]),
        labels: None,
        num_classes: None,
        class_names: None,
        captions: None,
    }
}
