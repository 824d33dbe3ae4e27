//! Conditioning shared by the model families: turning a sampling [`Condition`] or a training batch's labels
//! and captions into what a network takes ([`Cond`]), with the same checks and messages for every model, the
//! null condition of classifier-free guidance (the null class, the empty caption) and one-hot labels.
//! (Class-conditional generation as in Ho et al. 2020's conditional CIFAR-10 models, Karras et al. 2022's
//! class-conditional ImageNet and Sohn et al. 2015's conditional VAE: the label is one more input of the
//! network; the objectives are unchanged. Captions enter the same way, as an embedding from a text encoder.)

use candle_core::{Device, Tensor};

use crate::data::captions::{empty_captions, CaptionVocab};
use crate::data::Batch;
use crate::model::Condition;
use crate::rng::Rng;
use crate::{Error, Result};

/// What a network is conditioned on.
#[derive(Clone, Copy, Debug)]
pub enum CondKind<'a> {
    /// Nothing: an unconditional network.
    None,
    /// Class labels `0..K` (K ≥ 1), and the null class K.
    Class(usize),
    /// Captions read with this vocabulary; the empty caption is the null condition.
    Caption(&'a CaptionVocab),
}

impl CondKind<'_> {
    /// The number of classes of a class-conditional network (0 otherwise).
    pub fn num_classes(&self) -> usize {
        match self {
            CondKind::Class(k) => *k,
            _ => 0,
        }
    }

    /// Whether the network takes a condition at all.
    pub fn is_conditional(&self) -> bool {
        !matches!(self, CondKind::None)
    }
}

/// A batch's condition as a denoising network takes it, one entry per example. A conditional network turns
/// it into an embedding that joins its time embedding (the UNet's and the MLP's class tables, the text
/// encoder of a caption model).
#[derive(Clone, Debug)]
pub enum Cond {
    /// No condition: an unconditional network, or the null condition of a conditional one.
    None,
    /// Class ids, `(b,)` u32; the id `num_classes` is the [`null_class`].
    Class(Tensor),
    /// Caption tokens, `(b, L)` u32 ([`crate::data::captions`]); the empty caption is the null condition.
    Caption(Tensor),
}

impl Cond {
    /// The class ids, if any.
    pub fn class(&self) -> Option<&Tensor> {
        match self {
            Cond::Class(t) => Some(t),
            _ => None,
        }
    }

    /// The condition for `n` samples of a network conditioned on `kind` from a user's [`Condition`]: class
    /// labels with the checks and messages of [`class_labels`], captions tokenized by the model's vocabulary
    /// (one for all samples or one per sample); `model` names the model in messages.
    pub fn from_condition(
        cond: &Condition,
        kind: CondKind,
        n: usize,
        model: &str,
        device: &Device,
    ) -> Result<Self> {
        let CondKind::Caption(vocab) = kind else {
            return Ok(
                match class_labels(cond, kind.num_classes(), n, model, device)? {
                    Some(t) => Cond::Class(t),
                    None => Cond::None,
                },
            );
        };
        match cond {
            Condition::Caption(c) if c.len() == 1 || c.len() == n => {
                let all: Vec<&str> = (0..n).map(|i| c[i % c.len()].as_str()).collect();
                Ok(Cond::Caption(vocab.encode_batch(&all, device)?))
            }
            Condition::Caption(c) => Err(Error::invalid(
                "condition",
                format!(
                    "{} captions for {n} samples: give one caption for all or one per sample",
                    c.len()
                ),
            )),
            Condition::Class(_) => Err(Error::invalid(
                "condition",
                format!("model '{model}' takes captions, not class labels"),
            )),
            Condition::None => Err(Error::invalid(
                "condition",
                format!(
                    "model '{model}' is caption-conditional: give a caption, e.g. \"a small red circle at the top left\" (\"\" is the empty caption)"
                ),
            )),
        }
    }

    /// The unconditional counterpart of this condition for classifier-free guidance: the null class for each
    /// of its examples (a network with `num_classes` classes), or the empty caption. `None` when there is
    /// nothing to drop.
    pub fn null(&self, num_classes: usize) -> Result<Option<Cond>> {
        match self {
            Cond::None => Ok(None),
            Cond::Class(t) => Ok(Some(Cond::Class(null_labels(
                t.dim(0)?,
                num_classes,
                t.device(),
            )?))),
            Cond::Caption(t) => {
                let (b, len) = t.dims2()?;
                Ok(Some(Cond::Caption(empty_captions(b, len, t.device())?)))
            }
        }
    }

    /// This condition followed by `other` along the batch (both of one kind).
    pub fn cat(&self, other: &Cond) -> Result<Cond> {
        match (self, other) {
            (Cond::None, Cond::None) => Ok(Cond::None),
            (Cond::Class(a), Cond::Class(b)) => Ok(Cond::Class(Tensor::cat(&[a, b], 0)?)),
            (Cond::Caption(a), Cond::Caption(b)) => {
                let len = a.dim(1)?.max(b.dim(1)?);
                Ok(Cond::Caption(Tensor::cat(
                    &[pad_tokens(a, len)?, pad_tokens(b, len)?],
                    0,
                )?))
            }
            _ => Err(Error::invalid(
                "condition",
                "cannot join conditions of different kinds in one batch",
            )),
        }
    }
}

/// `(b, L)` tokens padded on the right to `(b, len)`.
fn pad_tokens(t: &Tensor, len: usize) -> Result<Tensor> {
    let (b, l) = t.dims2()?;
    if l >= len {
        return Ok(t.clone());
    }
    let pad = Tensor::zeros((b, len - l), t.dtype(), t.device())?;
    Ok(Tensor::cat(&[t, &pad], 1)?)
}

/// The condition a training step feeds a network conditioned on `kind`: the batch's labels or captions, each
/// replaced by the null class or the empty caption with probability `dropout` (classifier-free guidance
/// training; one uniform from `rng` per example, in order, and nothing drawn when `dropout` is 0 or the model
/// is unconditional).
///
/// Errors: a conditional model and a batch without labels or captions.
pub fn training_cond(
    batch: &Batch,
    kind: CondKind,
    dropout: f64,
    model: &str,
    rng: &mut Rng,
) -> Result<Cond> {
    let CondKind::Caption(vocab) = kind else {
        return Ok(
            match training_labels(batch, kind.num_classes(), dropout, model, rng)? {
                Some(y) => Cond::Class(y),
                None => Cond::None,
            },
        );
    };
    let captions = batch_captions(batch, model)?;
    let kept: Vec<&str> = captions
        .iter()
        .map(|c| match dropout > 0.0 && rng.uniform_f64() < dropout {
            true => "",
            false => c.as_str(),
        })
        .collect();
    Ok(Cond::Caption(vocab.encode_batch(&kept, batch.x.device())?))
}

/// The condition of a batch for a network conditioned on `kind`, without dropout (for likelihoods and
/// encoding). Errors: a conditional model and a batch without labels or captions.
pub fn batch_cond(batch: &Batch, kind: CondKind, model: &str) -> Result<Cond> {
    match kind {
        CondKind::Caption(vocab) => Ok(Cond::Caption(
            vocab.encode_batch(batch_captions(batch, model)?, batch.x.device())?,
        )),
        kind => Ok(match batch_labels(batch, kind.num_classes(), model)? {
            Some(y) => Cond::Class(y),
            None => Cond::None,
        }),
    }
}

/// A batch's captions, for caption-conditional `model`.
fn batch_captions<'b>(batch: &'b Batch, model: &str) -> Result<&'b [String]> {
    batch.captions.as_deref().ok_or_else(|| {
        Error::invalid(
            "batch.captions",
            format!(
                "a caption-conditional model '{model}' needs captions, and this batch has none"
            ),
        )
    })
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

/// Checks a classifier-free guidance scale for `model` conditioned on `kind`: guidance needs a conditional
/// model (classes or captions) and a finite scale ≥ 0.
pub fn check_guidance(guidance: Option<f64>, kind: CondKind, model: &str) -> Result<()> {
    match guidance {
        None => Ok(()),
        Some(_) if !kind.is_conditional() => Err(Error::invalid(
            "guidance",
            format!(
                "classifier-free guidance needs a conditional model; model '{model}' is unconditional (train one with model.net.conditional = true or model.net.captions = true in its config)"
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

    #[test]
    fn captions_become_tokens_null_and_joined_conditions() -> Result<()> {
        let dev = Device::Cpu;
        let vocab = CaptionVocab::from_captions(["a red circle", "a blue square at the top"], 8);
        let kind = CondKind::Caption(&vocab);
        assert!(kind.is_conditional() && kind.num_classes() == 0);
        let one = Cond::from_condition(
            &Condition::Caption(vec!["a red circle".into()]),
            kind,
            3,
            "ddpm",
            &dev,
        )?;
        let Cond::Caption(t) = &one else {
            return Err(Error::Unsupported("not a caption".into()));
        };
        assert_eq!(t.dims(), [3, 4]);
        let e = Cond::from_condition(
            &Condition::Caption(vec!["a".into(), "a".into()]),
            kind,
            3,
            "ddpm",
            &dev,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("2 captions for 3 samples"), "{e}");
        let e = Cond::from_condition(&Condition::Class(vec![0]), kind, 3, "edm", &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'edm' takes captions"), "{e}");
        // the null condition is the empty caption, padded like the caption; cat pads to the longer one
        let Some(Cond::Caption(null)) = one.null(0)? else {
            return Err(Error::Unsupported("no null caption".into()));
        };
        assert_eq!(null.to_vec2::<u32>()?, vec![vec![1, 0, 0, 0]; 3]);
        let short = Cond::Caption(vocab.encode_batch(&["a"], &dev)?);
        let Cond::Caption(j) = short.cat(&one)? else {
            return Err(Error::Unsupported("not a caption".into()));
        };
        assert_eq!(j.dims(), [4, 4]);
        assert_eq!(j.to_vec2::<u32>()?[0], vec![2, 1, 0, 0]);
        assert!(short.cat(&Cond::None).is_err());
        // training: dropout replaces captions by the empty one, drawn per example in order
        let mut b = Batch::new(Tensor::zeros((200, 2), candle_core::DType::F32, &dev)?);
        b.captions = Some(vec!["a red circle".to_string(); 200]);
        let Cond::Caption(kept) = training_cond(&b, kind, 0.0, "ddpm", &mut Rng::new(0))? else {
            return Err(Error::Unsupported("not a caption".into()));
        };
        assert!(kept.to_vec2::<u32>()?.iter().all(|r| r[0] != 1));
        let dropped = |seed| -> Result<Vec<bool>> {
            match training_cond(&b, kind, 0.25, "ddpm", &mut Rng::new(seed))? {
                Cond::Caption(t) => Ok(t.to_vec2::<u32>()?.iter().map(|r| r[0] == 1).collect()),
                _ => Err(Error::Unsupported("not a caption".into())),
            }
        };
        let d = dropped(4)?;
        let share = d.iter().filter(|&&x| x).count() as f64 / 200.0;
        assert!((0.15..0.35).contains(&share), "{share}");
        assert_eq!(d, dropped(4)?);
        b.captions = None;
        let e = batch_cond(&b, kind, "ncsn").unwrap_err().to_string();
        assert!(e.contains("'ncsn'") && e.contains("captions"), "{e}");
        Ok(())
    }
}
