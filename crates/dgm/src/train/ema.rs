//! Exponential moving average of the weights (Polyak averaging), with the usual warm-up of the decay,
//! d_t = min(decay, (1 + t) / (10 + t)), so that the average is useful early in short runs.

use candle_core::Var;

use crate::nn::Params;
use crate::Result;

/// EMA weights kept in their own [`Params`] store, so a second model instance built on it samples with them.
pub struct Ema {
    /// The averaged weights.
    pub params: Params,
    decay: f64,
}

impl Ema {
    /// An EMA store initialised to the current weights of `source` (same names and shapes).
    pub fn new(source: &Params, shadow: Params, decay: f64) -> Result<Self> {
        shadow.assign(&source.snapshot()?, std::path::Path::new("ema"))?;
        Ok(Self {
            params: shadow,
            decay,
        })
    }

    /// The decay used at update number `t` (0-based).
    pub fn decay_at(&self, t: u64) -> f64 {
        self.decay.min((1.0 + t as f64) / (10.0 + t as f64))
    }

    /// ema ← d·ema + (1 − d)·w for every variable, with d = [`Ema::decay_at`]`(t)`.
    pub fn update(&self, source: &[(String, Var)], t: u64) -> Result<()> {
        let d = self.decay_at(t);
        for ((_, w), (_, e)) in source.iter().zip(self.params.vars()) {
            let new = ((e.as_tensor() * d)? + (w.as_tensor().detach() * (1.0 - d))?)?;
            e.set(&new)?;
        }
        Ok(())
    }
}
