//! The feature network itself: a small CNN classifier whose penultimate layer is the feature space (the
//! architecture is described in the module docs of `features`), and [`Embedding`], what it computes for a
//! set of images.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::FeatureNetConfig;
use crate::nn::{Activation, Conv2d, GroupNorm, Linear};
use crate::{Error, Result};

/// One stage-`s`, convolution-`j` block: conv → group norm → SiLU.
#[derive(Clone, Debug)]
struct ConvBlock {
    conv: Conv2d,
    norm: GroupNorm,
}

/// A small CNN classifier whose penultimate layer is the feature space of the quality metrics (see the
/// module documentation for the architecture).
#[derive(Clone, Debug)]
pub struct FeatureNet {
    cfg: FeatureNetConfig,
    image_shape: [usize; 3],
    num_classes: usize,
    data_name: Option<String>,
    blocks: Vec<ConvBlock>,
    feature: Linear,
    classifier: Linear,
}

/// The output size of a 3×3, padding-1 convolution with `stride` on a side of `n` pixels.
fn conv_out(n: usize, stride: usize) -> usize {
    (n + 2 - 3) / stride + 1
}

impl FeatureNet {
    /// A network for images of `image_shape` = `[c, h, w]` and `num_classes` classes, variables under `vb`
    /// (`stage{s}.conv{j}`, `stage{s}.norm{j}`, `feature`, `classifier`).
    pub fn new(
        cfg: &FeatureNetConfig,
        image_shape: [usize; 3],
        num_classes: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        cfg.validate()?;
        let [c, h, w] = image_shape;
        if c == 0 || h == 0 || w == 0 {
            return Err(Error::invalid(
                "image shape",
                format!("{image_shape:?}: every dimension must be at least 1"),
            ));
        }
        if num_classes < 2 {
            return Err(Error::invalid(
                "classes",
                format!("{num_classes}: a classifier needs at least 2 classes"),
            ));
        }
        let mut blocks = Vec::new();
        let (mut ch, mut hh, mut ww) = (c, h, w);
        for (s, &out) in cfg.channels.iter().enumerate() {
            for j in 0..cfg.convs_per_stage {
                let stride = if j == 0 { cfg.strides[s] } else { 1 };
                let conv = Conv2d::new(ch, out, 3, stride, 1, vb.pp(format!("stage{s}.conv{j}")))?;
                let norm = GroupNorm::new(cfg.groups, out, vb.pp(format!("stage{s}.norm{j}")))?;
                blocks.push(ConvBlock { conv, norm });
                ch = out;
                hh = conv_out(hh, stride);
                ww = conv_out(ww, stride);
            }
        }
        let feature = Linear::new(ch * hh * ww, cfg.feature_dim, vb.pp("feature"))?;
        let classifier = Linear::new(cfg.feature_dim, num_classes, vb.pp("classifier"))?;
        Ok(Self {
            cfg: cfg.clone(),
            image_shape,
            num_classes,
            data_name: None,
            blocks,
            feature,
            classifier,
        })
    }

    /// A network whose weights are plain (untracked) tensors: no backward graph is ever built through it.
    /// `tensors` must hold every variable [`FeatureNet::new`] asks for, with the right shape.
    pub fn from_tensors(
        cfg: &FeatureNetConfig,
        image_shape: [usize; 3],
        num_classes: usize,
        tensors: &BTreeMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.detach()))
            .collect();
        Self::new(
            cfg,
            image_shape,
            num_classes,
            VarBuilder::from_tensors(map, DType::F32, device),
        )
    }

    /// Records the name of the data set the network was trained on (used in error messages).
    pub fn with_data_name(mut self, name: &str) -> Self {
        self.data_name = Some(name.to_string());
        self
    }

    /// The architecture.
    pub fn config(&self) -> &FeatureNetConfig {
        &self.cfg
    }

    /// The `[c, h, w]` of the images the network takes.
    pub fn image_shape(&self) -> [usize; 3] {
        self.image_shape
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Size of the feature vectors.
    pub fn feature_dim(&self) -> usize {
        self.cfg.feature_dim
    }

    /// The data set the network was trained on, when known.
    pub fn data_name(&self) -> Option<&str> {
        self.data_name.as_deref()
    }

    /// Errors unless `images` is `(n, c, h, w)` with this network's `[c, h, w]`.
    pub fn check_images(&self, images: &Tensor) -> Result<()> {
        let dims = images.dims();
        if dims.len() != 4 || dims[1..] != self.image_shape {
            let got = if dims.len() == 4 {
                format!("{:?}", &dims[1..])
            } else {
                format!("{dims:?} (expected (n, c, h, w) images)")
            };
            let on = match &self.data_name {
                Some(n) => format!(" (trained on {n})"),
                None => String::new(),
            };
            return Err(Error::invalid(
                "images",
                format!(
                    "image size {got} does not match the feature network's {:?}{on}",
                    self.image_shape
                ),
            ));
        }
        Ok(())
    }

    /// `(features, logits)` for images `(n, c, h, w)` in [0, 1]: features `(n, feature_dim)`, logits
    /// `(n, num_classes)`. Builds a backward graph when the weights are variables (training).
    pub fn forward(&self, images: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check_images(images)?;
        self.head(&self.trunk(images)?)
    }

    /// The convolutional stages, flattened: `(n, c, h, w)` → `(n, c'·h'·w')`. Every image is computed on
    /// its own (per-image GEMMs, per-image group statistics), so its result does not depend on the batch.
    fn trunk(&self, images: &Tensor) -> Result<Tensor> {
        let mut h = images.to_dtype(DType::F32)?.affine(2.0, -1.0)?; // [0, 1] → [−1, 1]
        for b in &self.blocks {
            h = b.norm.forward_silu(&b.conv.forward(&h)?)?;
        }
        Ok(h.flatten_from(1)?)
    }

    /// `(features, logits)` from the flattened trunk output.
    fn head(&self, h: &Tensor) -> Result<(Tensor, Tensor)> {
        let features = self.feature.forward_act(h, Activation::Silu)?;
        let logits = self.classifier.forward(&features)?;
        Ok((features, logits))
    }

    /// Features, class probabilities (softmax of the logits) and predicted classes of `images` `(n, c, h, w)`
    /// in [0, 1], computed in chunks of `batch_size` images without a backward graph. An image's outputs do
    /// not depend on the chunk size or on the other images.
    pub fn embed(&self, images: &Tensor, batch_size: usize) -> Result<Embedding> {
        self.check_images(images)?;
        if batch_size == 0 {
            return Err(Error::invalid("batch size", "must be at least 1"));
        }
        let n = images.dim(0)?;
        let (dim, classes) = (self.cfg.feature_dim, self.num_classes);
        let mut out = Embedding {
            features: Vec::with_capacity(n * dim),
            dim,
            probs: Vec::with_capacity(n * classes),
            classes,
            predicted: Vec::with_capacity(n),
        };
        let images = images.detach();
        let mut start = 0;
        while start < n {
            let len = batch_size.min(n - start);
            let h = self.trunk(&images.narrow(0, start, len)?)?.detach();
            // The fully connected layers run one image at a time: a GEMM's summation order depends on
            // the number of rows, and an image's features must not depend on its neighbours.
            for r in 0..len {
                let (f, z) = self.head(&h.narrow(0, r, 1)?)?;
                out.features
                    .extend(f.detach().flatten_all()?.to_vec1::<f32>()?);
                let (p, arg) = softmax_argmax(&z.detach().flatten_all()?.to_vec1::<f32>()?);
                out.probs.extend(p);
                out.predicted.push(arg);
            }
            start += len;
        }
        Ok(out)
    }
}

/// Softmax of one row of logits (in f64, then rounded) and the index of the largest logit (first on ties).
fn softmax_argmax(z: &[f32]) -> (Vec<f32>, u32) {
    let mut arg = 0;
    for (i, &v) in z.iter().enumerate() {
        if v > z[arg] {
            arg = i;
        }
    }
    let m = z[arg] as f64;
    let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    (e.iter().map(|v| (v / s) as f32).collect(), arg as u32)
}

/// What [`FeatureNet::embed`] returns: one row per image, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    /// `n × dim` features (the penultimate layer).
    pub features: Vec<f32>,
    /// Feature dimension.
    pub dim: usize,
    /// `n × classes` class probabilities (softmax of the logits); each row sums to 1.
    pub probs: Vec<f32>,
    /// Number of classes.
    pub classes: usize,
    /// The most probable class of each image.
    pub predicted: Vec<u32>,
}

impl Embedding {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.predicted.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.predicted.is_empty()
    }

    /// The features of image `i`.
    pub fn feature_row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// The class probabilities of image `i`.
    pub fn prob_row(&self, i: usize) -> &[f32] {
        &self.probs[i * self.classes..(i + 1) * self.classes]
    }

    /// The fraction of images whose predicted class is `labels[i]` (`labels` as long as the embedding).
    pub fn accuracy(&self, labels: &[u32]) -> Result<f64> {
        if labels.len() != self.len() || labels.is_empty() {
            return Err(Error::invalid(
                "labels",
                format!("{} labels for {} images", labels.len(), self.len()),
            ));
        }
        let right = self
            .predicted
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count();
        Ok(right as f64 / labels.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::features::tests::bits;
    use crate::nn::Params;
    use crate::rng::Rng;

    #[test]
    fn embed_checks_sizes_and_returns_consistent_rows() -> Result<()> {
        let dev = Device::Cpu;
        let p = Params::new(3, &dev);
        let net = FeatureNet::new(&FeatureNetConfig::tiny(), [1, 28, 28], 10, p.var_builder())?
            .with_data_name("mnist");
        let wrong = Tensor::zeros((2, 3, 32, 32), DType::F32, &dev)?;
        let err = net.embed(&wrong, 8).unwrap_err().to_string();
        assert!(
            err.contains(
                "image size [3, 32, 32] does not match the feature network's [1, 28, 28] (trained on mnist)"
            ),
            "{err}"
        );
        assert!(net
            .embed(&Tensor::zeros((2, 784), DType::F32, &dev)?, 8)
            .is_err());
        let x = Rng::new(9).rand((13, 1, 28, 28), &dev)?;
        assert!(net.embed(&x, 0).is_err());
        let e = net.embed(&x, 5)?;
        assert_eq!((e.len(), e.dim, e.classes), (13, 32, 10));
        assert_eq!(e.features.len(), 13 * 32);
        for i in 0..13 {
            let row = e.prob_row(i);
            let s: f64 = row.iter().map(|&v| v as f64).sum();
            assert!((s - 1.0).abs() < 1e-5, "row {i} sums to {s}");
            assert!(row.iter().all(|&v| v > 0.0));
            let best = row.iter().cloned().fold(f32::MIN, f32::max);
            assert_eq!(row[e.predicted[i] as usize], best);
        }
        // the same images in other chunkings give the same bits
        let whole = net.embed(&x, 64)?;
        assert_eq!(bits(&whole.features), bits(&e.features));
        assert_eq!(bits(&whole.probs), bits(&e.probs));
        let one = net.embed(&x.narrow(0, 7, 1)?, 1)?;
        assert_eq!(bits(one.feature_row(0)), bits(e.feature_row(7)));
        // features agree with forward on tracked weights
        let (f, _) = net.forward(&x)?;
        let f = f.flatten_all()?.to_vec1::<f32>()?;
        for (a, b) in f.iter().zip(&whole.features) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn softmax_of_a_known_row() {
        let (p, arg) = softmax_argmax(&[0.0, (2f32).ln(), 0.0, 1000.0 - 1000.0]);
        assert_eq!(arg, 1);
        for (got, want) in p.iter().zip([0.2, 0.4, 0.2, 0.2]) {
            assert!((got - want).abs() < 1e-7, "{p:?}");
        }
        // huge logits do not overflow
        let (p, arg) = softmax_argmax(&[1e30, 0.0]);
        assert_eq!((p, arg), (vec![1.0, 0.0], 0));
    }

    /// Output sizes with the default three stride-2 stages: 28 → 14 → 7 → 4 and 32 → 16 → 8 → 4 (a 3×3,
    /// padding-1, stride-2 convolution maps a side n to ⌊(n − 1) / 2⌋ + 1); a stride-1 stage keeps the size.
    #[test]
    fn forward_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let one_stride_1 = FeatureNetConfig {
            strides: vec![2, 1, 2],
            ..Default::default()
        };
        for (cfg, shape, flat) in [
            (FeatureNetConfig::default(), [1, 28, 28], 64 * 4 * 4),
            (FeatureNetConfig::default(), [3, 32, 32], 64 * 4 * 4),
            (one_stride_1.clone(), [1, 28, 28], 64 * 7 * 7),
            (one_stride_1, [3, 32, 32], 64 * 8 * 8),
        ] {
            let p = Params::new(0, &dev);
            let net = FeatureNet::new(&cfg, shape, 6, p.var_builder())?;
            let snap = p.snapshot()?;
            assert_eq!(snap["feature.weight"].dims(), &[128, flat]);
            let x = Tensor::zeros((2, shape[0], shape[1], shape[2]), DType::F32, &dev)?;
            let (f, z) = net.forward(&x)?;
            assert_eq!((f.dims(), z.dims()), (&[2, 128][..], &[2, 6][..]));
        }
        Ok(())
    }
}
