//! Exponential moving average of the weights (Polyak averaging), with the usual warm-up of the decay,
//! d_t = min(decay, (1 + t) / (10 + t)), so that the average is useful early in short runs.

use candle_core::Var;

use crate::nn::kernels::ema_update_cpu;
use crate::nn::params::is_state;
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

    /// ema ← d·ema + (1 − d)·w for every variable, with d = [`Ema::decay_at`]`(t)`; model state
    /// ([`crate::nn::params::is_state`], e.g. a replay buffer) is copied, not averaged.
    pub fn update(&self, source: &[(String, Var)], t: u64) -> Result<()> {
        let d = self.decay_at(t);
        for ((name, w), (_, e)) in source.iter().zip(self.params.vars()) {
            if is_state(name) {
                e.set(&w.as_tensor().detach())?;
            } else if !ema_update_cpu(e.as_tensor(), w.as_tensor(), d)? {
                let new = ((e.as_tensor() * d)? + (w.as_tensor().detach() * (1.0 - d))?)?;
                e.set(&new)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::init::Init;

    /// Model state (`state.…`) is copied into the EMA, the parameters averaged; neither is an optimiser's.
    #[test]
    fn model_state_is_copied_not_averaged() -> Result<()> {
        let dev = Device::Cpu;
        let make = |v: f64| -> Result<Params> {
            let p = Params::new(0, &dev);
            p.var_builder().get_with_hints(2, "w", Init::Const(v))?;
            p.var_builder()
                .pp("state")
                .get_with_hints(2, "buffer", Init::Const(v))?;
            Ok(p)
        };
        let src = make(1.0)?;
        let ema = Ema::new(&src, make(0.0)?, 0.9)?;
        let vars = src.vars();
        for (_, v) in &vars {
            v.set(&Tensor::new(&[3f32, 3.0], &dev)?)?;
        }
        ema.update(&vars, 1000)?;
        let got: Vec<(String, Vec<f32>)> = ema
            .params
            .vars()
            .into_iter()
            .map(|(k, v)| Ok((k, v.as_tensor().to_vec1::<f32>()?)))
            .collect::<Result<_>>()?;
        assert_eq!(got[0].0, "state.buffer");
        assert_eq!(got[0].1, [3.0, 3.0]);
        assert!(got[1].1.iter().all(|v| (v - 1.2).abs() < 1e-6), "{got:?}");
        assert_eq!(src.trainable_vars().len(), 1);
        assert_eq!((src.num_parameters(), src.num_trainable()), (4, 2));
        Ok(())
    }

    #[test]
    fn ema_follows_the_formula_on_both_paths() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let src = Params::new(0, &dev);
            src.var_builder()
                .to_dtype(dtype)
                .get_with_hints(3, "w", Init::Const(1.0))?;
            let shadow = Params::new(0, &dev);
            shadow
                .var_builder()
                .to_dtype(dtype)
                .get_with_hints(3, "w", Init::Const(0.0))?;
            let ema = Ema::new(&src, shadow, 0.9)?; // starts at the weights: 1
            let vars = src.vars();
            vars[0]
                .1
                .set(&Tensor::new(&[3f64, 3.0, 3.0], &dev)?.to_dtype(dtype)?)?;
            ema.update(&vars, 1000)?; // d = min(0.9, 1001/1010) = 0.9: 0.9·1 + 0.1·3 = 1.2
            let e = ema.params.vars()[0]
                .1
                .as_tensor()
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?;
            assert!(e.iter().all(|v| (v - 1.2).abs() < 1e-6), "{dtype:?}: {e:?}");
            assert!((ema.decay_at(0) - 0.1).abs() < 1e-12);
        }
        Ok(())
    }
}
