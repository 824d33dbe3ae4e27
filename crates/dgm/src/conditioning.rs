//! Conditioning shared by the model families: turning a sampling [`Condition`] or a training batch's labels
//! into class labels with the same checks and messages for every model, the null class of classifier-free
//! guidance, and one-hot labels. (Class-conditional generation as in Ho et al. 2020's conditional CIFAR-10
//! models, Karras et al. 2022's class-conditional ImageNet and Sohn et al. 2015's conditional VAE: the label
//! is one more input of the network; the objectives are unchanged.) Caption embeddings will live here too.

use candle_core::{Device, Tensor};

use crate::data::Batch;
use crate::model::Condition;
use crate::rng::Rng;
use crate::{Error, Result};

/// A batch's condition as a denoising network takes it, one entry per example. A conditional network turns
/// it into an embedding that joins its time embedding (the UNet's and the MLP's class tables), so another kind of
/// condition (caption tokens through a text encoder) enters the same way.
#[derive(Clone, Debug)]
pub enum Cond {
    /// No condition: an unconditional network, or the null class of a conditional one.
    None,
    /// Class ids, `(b,)` u32; the id `num_classes` is the [`null_class`].
    Class(Tensor),
}

impl Cond {
    /// The class ids, if any.
    pub fn class(&self) -> Option<&Tensor> {
        match self {
            Cond::None => None,
            Cond::Class(t) => Some(t),
        }
    }

    /// The condition for `n` samples of a network with `num_classes` classes (0 = unconditional) from a
    /// user's [`Condition`] (the checks and messages of [`class_labels`]; `model` names the model).
    pub fn from_condition(
        cond: &Condition,
        num_classes: usize,
        n: usize,
        model: &str,
        device: &Device,
    ) -> Result<Self> {
        Ok(match class_labels(cond, num_classes, n, model, device)? {
            Some(t) => Cond::Class(t),
            None => Cond::None,
        })
    }

    /// The unconditional counterpart of this condition for classifier-free guidance: the null class for each
    /// of its examples, for a network with `num_classes` classes. `None` when there is nothing to drop.
    pub fn null(&self, num_classes: usize) -> Result<Option<Cond>> {
        match self {
            Cond::None => Ok(None),
            Cond::Class(t) => Ok(Some(Cond::Class(null_labels(
                t.dim(0)?,
                num_classes,
                t.device(),
            )?))),
        }
    }

    /// This condition followed by `other` along the batch (both of one kind).
    pub fn cat(&self, other: &Cond) -> Result<Cond> {
        match (self, other) {
            (Cond::None, Cond::None) => Ok(Cond::None),
            (Cond::Class(a), Cond::Class(b)) => Ok(Cond::Class(Tensor::cat(&[a, b], 0)?)),
            _ => Err(Error::invalid(
                "condition",
                "cannot join a class condition and no condition in one batch",
            )),
        }
    }
}

/// Checks class ids against a model with `num_classes` classes; `key` names the value in the message.
pub fn check_classes(ids: &[u32], num_classes: usize, key: &str) -> Result<()> {
    match ids.iter().find(|&&c| c as usize >= num_classes) {
        Some(&bad) => Err(Error::invalid(
            key,
            format!(
                "class {bad} is out of range: the model has classes 0..={}",
                num_classes.saturating_sub(1)
            ),
        )),
        None => Ok(()),
    }
}

/// `(n, C)` one-hot rows (f32) for class ids, each checked against the `num_classes` = C classes; `key`
/// names the ids in the message.
pub fn one_hot(ids: &[u32], num_classes: usize, key: &str, device: &Device) -> Result<Tensor> {
    check_classes(ids, num_classes, key)?;
    let c = num_classes;
    let mut v = vec![0f32; ids.len() * c];
    for (i, &id) in ids.iter().enumerate() {
        v[i * c + id as usize] = 1.0;
    }
    Ok(Tensor::from_vec(v, (ids.len(), c), device)?)
}

/// The null class of classifier-free guidance (Ho & Salimans 2022) for a network with `num_classes` classes:
/// the extra index `num_classes`, which a conditional network embeds as "no class".
pub fn null_class(num_classes: usize) -> u32 {
    num_classes as u32
}

/// `(n,)` u32 labels that are all the [`null_class`].
pub fn null_labels(n: usize, num_classes: usize, device: &Device) -> Result<Tensor> {
    Ok(Tensor::full(null_class(num_classes), n, device)?)
}

/// Classifier-free guidance training: each of the `(b,)` labels replaced by the [`null_class`] with
/// probability `p` (one uniform from `rng` per label, in order).
pub fn drop_labels(labels: &Tensor, num_classes: usize, p: f64, rng: &mut Rng) -> Result<Tensor> {
    let k = null_class(num_classes);
    let ids: Vec<u32> = labels
        .to_vec1::<u32>()?
        .into_iter()
        .map(|c| if rng.uniform_f64() < p { k } else { c })
        .collect();
    let n = ids.len();
    Ok(Tensor::from_vec(ids, n, labels.device())?)
}

/// The class labels for `n` samples of `model` (its registry name, used in messages), a network with
/// `num_classes` classes (0 = unconditional), from `cond`: `None` for an unconditional model, else an `(n,)`
/// u32 tensor. One class is repeated for all samples; otherwise there must be one per sample.
///
/// Errors: a class for an unconditional model, no class for a conditional one, a class out of range, a
/// caption, or a number of classes that is neither 1 nor `n`.
pub fn class_labels(
    cond: &Condition,
    num_classes: usize,
    n: usize,
    model: &str,
    device: &Device,
) -> Result<Option<Tensor>> {
    let k = num_classes;
    match (cond, k) {
        (Condition::None, 0) => Ok(None),
        (Condition::Class(ids), k) if k > 0 && (ids.len() == 1 || ids.len() == n) => {
            check_classes(ids, k, "class")?;
            let ids = if ids.len() == 1 {
                vec![ids[0]; n]
            } else {
                ids.clone()
            };
            Ok(Some(Tensor::from_vec(ids, n, device)?))
        }
        (Condition::Class(ids), k) if k > 0 => Err(Error::invalid(
            "condition",
            format!(
                "{} classes for {n} samples: give one class for all or one per sample",
                ids.len()
            ),
        )),
        (Condition::None, k) => Err(Error::invalid(
            "condition",
            format!(
                "model '{model}' is class-conditional: give a class (0..={})",
                k - 1
            ),
        )),
        (Condition::Class(_), _) => Err(Error::invalid(
            "condition",
            format!("model '{model}' is unconditional: it takes no class"),
        )),
        (Condition::Caption(_), _) => Err(Error::invalid(
            "condition",
            format!("model '{model}' takes class labels, not captions"),
        )),
    }
}

/// The labels of a training `batch` for a network with `num_classes` classes: `None` for an unconditional
/// model (labels the data may have are ignored), the batch's `(b,)` labels for a conditional one.
///
/// Errors: a conditional model and a batch without labels.
pub fn batch_labels(batch: &Batch, num_classes: usize, model: &str) -> Result<Option<Tensor>> {
    match (&batch.labels, num_classes) {
        (_, 0) => Ok(None),
        (Some(l), _) => Ok(Some(l.clone())),
        (None, _) => Err(Error::invalid(
            "batch.labels",
            format!("a class-conditional model '{model}' needs labels"),
        )),
    }
}

/// The labels a training step feeds a network with `num_classes` classes: [`batch_labels`], each replaced by
/// the [`null_class`] with probability `dropout` (classifier-free guidance training, [`drop_labels`]; nothing is
/// drawn from `rng` when `dropout` is 0 or the model is unconditional).
pub fn training_labels(
    batch: &Batch,
    num_classes: usize,
    dropout: f64,
    model: &str,
    rng: &mut Rng,
) -> Result<Option<Tensor>> {
    match batch_labels(batch, num_classes, model)? {
        Some(y) if dropout > 0.0 => Ok(Some(drop_labels(&y, num_classes, dropout, rng)?)),
        y => Ok(y),
    }
}

/// Checks a config's class-dropout probability (`key` names it): in [0, 1).
pub fn check_class_dropout(p: f64, key: &str) -> Result<()> {
    match (0.0..1.0).contains(&p) {
        true => Ok(()),
        false => Err(Error::invalid(
            key,
            format!("{p} must be in [0, 1) (the probability of training with the null class)"),
        )),
    }
}

/// Checks a classifier-free guidance scale for `model` with `num_classes` classes (0 = unconditional):
/// guidance needs a class-conditional model and a finite scale ≥ 0.
pub fn check_guidance(guidance: Option<f64>, num_classes: usize, model: &str) -> Result<()> {
    match guidance {
        None => Ok(()),
        Some(_) if num_classes == 0 => Err(Error::invalid(
            "guidance",
            format!(
                "classifier-free guidance needs a class-conditional model; model '{model}' is unconditional (train one with model.net.conditional = true in its config)"
            ),
        )),
        Some(s) if !(s.is_finite() && s >= 0.0) => Err(Error::invalid(
            "guidance",
            format!("{s}: the guidance scale must be a finite number ≥ 0 (1 = no guidance)"),
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn labels_are_repeated_checked_and_named() -> Result<()> {
        let dev = Device::Cpu;
        assert!(class_labels(&Condition::None, 0, 3, "edm", &dev)?.is_none());
        let one = class_labels(&Condition::Class(vec![2]), 4, 3, "edm", &dev)?;
        assert_eq!(
            one.map(|t| t.to_vec1::<u32>()).transpose()?,
            Some(vec![2, 2, 2])
        );
        let each = class_labels(&Condition::Class(vec![0, 3, 1]), 4, 3, "edm", &dev)?;
        assert_eq!(
            each.map(|t| t.to_vec1::<u32>()).transpose()?,
            Some(vec![0, 3, 1])
        );
        let err = |c: Condition, k: usize| -> String {
            match class_labels(&c, k, 3, "ncsn", &Device::Cpu) {
                Err(e) => e.to_string(),
                Ok(_) => String::from("no error"),
            }
        };
        let e = err(Condition::Class(vec![4]), 4);
        assert!(e.contains('4') && e.contains("0..=3"), "{e}");
        assert!(err(Condition::Class(vec![0, 1]), 4).contains("2 classes for 3 samples"));
        let e = err(Condition::None, 4);
        assert!(
            e.contains("'ncsn'") && e.contains("class-conditional"),
            "{e}"
        );
        let e = err(Condition::Class(vec![0]), 0);
        assert!(e.contains("'ncsn'") && e.contains("unconditional"), "{e}");
        let e = err(Condition::Caption(vec!["a".into()]), 4);
        assert!(e.contains("captions"), "{e}");
        let b = Batch::new(Tensor::zeros((2, 2), candle_core::DType::F32, &dev)?);
        assert!(batch_labels(&b, 0, "edm")?.is_none());
        let e = batch_labels(&b, 3, "edm")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("'edm'") && e.contains("labels"), "{e}");
        Ok(())
    }
}
