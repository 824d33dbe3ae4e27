//! Fixtures shared by the unit tests of the `features` modules (small generated data sets, a short training
//! config), and a test of the checks that span them: vector data and bad configs are refused.

use std::path::Path;

use candle_core::Device;

use super::*;
use crate::data::{shapes, Dataset};
use crate::nn::Params;
use crate::{Error, Result};

pub(super) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Small generated shapes splits (3×32×32, 6 classes).
pub(super) fn shapes_data(n_train: usize, n_test: usize) -> (Dataset, Dataset) {
    let cfg = shapes::ShapesConfig::default();
    (
        shapes::generate(n_train, 11, &cfg),
        shapes::generate(n_test, 12, &cfg),
    )
}

pub(super) fn tiny_train(steps: u64, seed: u64) -> FeatureTrainConfig {
    FeatureTrainConfig {
        steps,
        batch_size: 32,
        lr: 8e-3,
        warmup_steps: 20,
        max_shift: 0,
        seed,
        log_every: 100,
        ..Default::default()
    }
}

#[test]
fn vector_data_and_bad_configs_are_rejected() -> Result<()> {
    let dev = Device::Cpu;
    let toy = crate::data::toy2d::generate("moons", 10, 0)?;
    let err = dataset_images(&toy, None, &dev).unwrap_err().to_string();
    assert!(
        err.contains("feature metrics need image data; toy2d:moons holds vectors"),
        "{err}"
    );
    let err = train_feature_net(
        "toy2d:moons",
        Path::new("."),
        &FeatureNetConfig::tiny(),
        &FeatureTrainConfig::default(),
        &dev,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("mnist or shapes"), "{err}");
    let bad = FeatureNetConfig {
        channels: vec![8, 12],
        groups: 8,
        ..FeatureNetConfig::tiny()
    };
    let err = bad.validate().unwrap_err().to_string();
    assert!(
        err.contains("features.groups") && err.contains("12"),
        "{err}"
    );
    let p = Params::new(0, &dev);
    assert!(FeatureNet::new(&FeatureNetConfig::tiny(), [1, 28, 28], 1, p.var_builder()).is_err());
    assert!(FeatureTrainConfig {
        lr: 0.0,
        ..Default::default()
    }
    .validate()
    .is_err());
    assert!(FeatureTrainConfig {
        epochs: 0,
        steps: 0,
        ..Default::default()
    }
    .validate()
    .is_err());
    // configs round-trip through TOML and reject unknown keys
    let text = toml::to_string(&FeatureNetConfig::default())
        .map_err(|e| Error::invalid("toml", e.to_string()))?;
    assert_eq!(
        toml::from_str::<FeatureNetConfig>(&text)
            .map_err(|e| Error::invalid("toml", e.to_string()))?,
        FeatureNetConfig::default()
    );
    assert!(toml::from_str::<FeatureTrainConfig>("epoch = 3").is_err());
    assert_eq!(default_dir("mnist"), Path::new("features/mnist"));
    // a shift as large as the image is refused before any training
    let (train, test) = shapes_data(40, 10);
    let err = train_feature_net_on(
        &train,
        &test,
        &FeatureNetConfig::tiny(),
        &FeatureTrainConfig {
            max_shift: 32,
            ..tiny_train(1, 0)
        },
        &dev,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("features.max_shift"), "{err}");
    Ok(())
}
