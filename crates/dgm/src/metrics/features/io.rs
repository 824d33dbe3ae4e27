//! A trained feature network on disk: the directory it is kept in by default, its two files (weights and
//! [`FeatureNetInfo`]), saving and loading.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::{FeatureNet, FeatureNetConfig, FeatureTrainConfig};
use crate::checkpoint::{load_tensors, save_tensors, write_atomic};
use crate::nn::Params;
use crate::{Error, Result};

/// File name of the weights in a feature-network directory.
pub const WEIGHTS_FILE: &str = "features.safetensors";
/// File name of the description ([`FeatureNetInfo`]) in a feature-network directory.
pub const INFO_FILE: &str = "features.json";

/// Everything about a trained feature network except its weights (`features.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureNetInfo {
    /// The data set it was trained on (`mnist`, `shapes`).
    pub data: String,
    /// `[c, h, w]` of its input images.
    pub image_shape: [usize; 3],
    /// Number of classes.
    pub num_classes: usize,
    /// Names of the classes, in label order, when the data set has them.
    pub class_names: Option<Vec<String>>,
    /// The architecture.
    pub net: FeatureNetConfig,
    /// How it was trained.
    pub train: FeatureTrainConfig,
    /// Optimiser steps done.
    pub steps: u64,
    /// The training seed (same as `train.seed`).
    pub seed: u64,
    /// Number of training examples.
    pub train_examples: usize,
    /// Number of test examples the accuracy was measured on.
    pub test_examples: usize,
    /// Accuracy on the test split, in [0, 1].
    pub test_accuracy: f64,
    /// Mean training loss over the last logging window (`train.log_every` steps; all steps when it is 0).
    pub final_train_loss: f64,
    /// Wall-clock training time in seconds (informational; not reproducible).
    pub train_seconds: f64,
    /// Number of scalar parameters.
    pub parameters: usize,
    /// The dgm version that trained it.
    pub dgm_version: String,
}

/// A trained feature network: the inference network, its trainable parameters and its description.
#[derive(Clone, Debug)]
pub struct TrainedFeatureNet {
    /// The network, on plain (untracked) copies of the trained weights: ready for [`FeatureNet::embed`].
    pub net: FeatureNet,
    /// The trained variables.
    pub params: Params,
    /// What it was trained on and how well it does.
    pub info: FeatureNetInfo,
}

impl TrainedFeatureNet {
    /// Writes `features.safetensors` and then `features.json` into `dir` (created if needed), each atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        save_tensors(&dir.join(WEIGHTS_FILE), &self.params.snapshot()?)?;
        let json = serde_json::to_vec_pretty(&self.info)
            .map_err(|e| Error::invalid("features.json", e.to_string()))?;
        write_atomic(&dir.join(INFO_FILE), &json)
    }
}

/// The directory a feature network for `data_name` is kept in by default: `features/<data name>`,
/// relative to the working directory.
pub fn default_dir(data_name: &str) -> PathBuf {
    Path::new("features").join(data_name)
}

/// Loads the feature network saved in `dir` by [`TrainedFeatureNet::save`], with plain (untracked) weights.
pub fn load(dir: &Path, device: &Device) -> Result<(FeatureNet, FeatureNetInfo)> {
    let info_path = dir.join(INFO_FILE);
    let weights_path = dir.join(WEIGHTS_FILE);
    if !info_path.is_file() || !weights_path.is_file() {
        let data = match dir.file_name().and_then(|n| n.to_str()) {
            Some(n @ ("mnist" | "shapes")) => Some(n.to_string()),
            _ => None,
        };
        return Err(Error::FeatureNet {
            path: dir.to_path_buf(),
            msg: format!("not found ({INFO_FILE} and {WEIGHTS_FILE} expected)"),
            data,
        });
    }
    let text = std::fs::read(&info_path).map_err(|e| Error::io(&info_path, e))?;
    let info: FeatureNetInfo = serde_json::from_slice(&text).map_err(|e| Error::Checkpoint {
        path: info_path.clone(),
        msg: format!("not a valid feature-network description: {e}"),
    })?;
    // Register the variables (with checked names and shapes), then rebuild on plain copies of them.
    let params = Params::new(info.seed, device);
    FeatureNet::new(
        &info.net,
        info.image_shape,
        info.num_classes,
        params.var_builder(),
    )?;
    params.assign(&load_tensors(&weights_path, device)?, &weights_path)?;
    let net = FeatureNet::from_tensors(
        &info.net,
        info.image_shape,
        info.num_classes,
        &params.snapshot()?,
        device,
    )?
    .with_data_name(&info.data);
    Ok((net, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::features::tests::{bits, shapes_data, tiny_train};
    use crate::metrics::features::{dataset_images, train_feature_net_on};

    #[test]
    fn save_load_round_trip_gives_identical_embeddings() -> Result<()> {
        let (train, test) = shapes_data(200, 40);
        let t = train_feature_net_on(
            &train,
            &test,
            &FeatureNetConfig::tiny(),
            &tiny_train(5, 1),
            &Device::Cpu,
            &mut |_| {},
        )?;
        let dir = std::env::temp_dir().join(format!("dgm-features-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // nothing there yet: the error says how to make one
        let err = load(&dir, &Device::Cpu).unwrap_err();
        assert!(
            matches!(&err, Error::FeatureNet { data: None, .. }),
            "{err}"
        );
        let err = err.to_string();
        assert!(
            err.contains("not found") && err.contains(INFO_FILE),
            "{err}"
        );
        assert!(err.contains("train one on mnist or shapes"), "{err}");
        t.save(&dir)?;
        let (net, info) = load(&dir, &Device::Cpu)?;
        // as saved (serde_json's float parsing may differ from the value in the last bit)
        let as_json: FeatureNetInfo = serde_json::from_slice(
            &serde_json::to_vec(&t.info).map_err(|e| Error::invalid("json", e.to_string()))?,
        )
        .map_err(|e| Error::invalid("json", e.to_string()))?;
        assert_eq!(info, as_json);
        assert!((info.test_accuracy - t.info.test_accuracy).abs() < 1e-12);
        assert_eq!(net.data_name(), Some("shapes"));
        let images = dataset_images(&test, None, &Device::Cpu)?;
        let a = t.net.embed(&images, 16)?;
        let b = net.embed(&images, 16)?;
        assert_eq!(bits(&a.features), bits(&b.features));
        assert_eq!(bits(&a.probs), bits(&b.probs));
        assert_eq!(a.predicted, b.predicted);
        // only the two files, no temporaries
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        assert_eq!(names, vec![INFO_FILE.to_string(), WEIGHTS_FILE.to_string()]);
        // weights of another architecture are rejected
        let mut other = t.info.clone();
        other.net.feature_dim = 16;
        write_atomic(
            &dir.join(INFO_FILE),
            &serde_json::to_vec(&other).map_err(|e| Error::invalid("json", e.to_string()))?,
        )?;
        assert!(load(&dir, &Device::Cpu).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
