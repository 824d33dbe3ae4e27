//! [`Batch`]: the examples (and their labels or captions) that a data set hands to a model's
//! [`loss`](crate::model::Model::loss) and [`log_likelihood`](crate::model::Density::log_likelihood).

use candle_core::Tensor;

use crate::Result;

/// A batch of training or evaluation data.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The examples, preprocessed: `(b, c, h, w)` for images, `(b, d)` for vectors.
    pub x: Tensor,
    /// Class labels, `(b,)` u32, when the data set has classes.
    pub labels: Option<Tensor>,
    /// Captions, one per example, when the data set has them.
    pub captions: Option<Vec<String>>,
}

impl Batch {
    /// A batch with examples only.
    pub fn new(x: Tensor) -> Self {
        Self {
            x,
            labels: None,
            captions: None,
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.x.dims().first().copied().unwrap_or(0)
    }

    /// True when the batch holds no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Examples `start..start+len` of the batch.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Batch> {
        Ok(Batch {
            x: self.x.narrow(0, start, len)?,
            labels: match &self.labels {
                Some(l) => Some(l.narrow(0, start, len)?),
                None => None,
            },
            captions: self
                .captions
                .as_ref()
                .map(|c| c[start..start + len].to_vec()),
        })
    }
}
