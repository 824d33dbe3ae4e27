//! [`Params`]: the store of a model's trainable variables, initialised from dgm's seeded RNG.
//!
//! candle's `VarMap` initialises with candle's CPU RNG, which cannot be seeded. `Params` is a candle
//! `VarBuilder` backend that draws each new variable from `Rng::named(seed, name)`, so a model's initial
//! weights depend only on the seed and the variable's name: not on creation order or thread count.
//! Variables are kept sorted by name (optimiser state and checkpoints use that order).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::rng::Rng;
use crate::{Error, Result};

/// The name component that marks model state: a variable `state.…` (or `….state.…`) is saved with the weights
/// but is not a parameter: no optimiser moves it (it never has a gradient and gets no moments), and the EMA copies
/// it instead of averaging it. Contrastive divergence's replay buffer is state.
pub const STATE: &str = "state";

/// Whether variable `name` is model state ([`STATE`]) rather than a trained parameter.
pub fn is_state(name: &str) -> bool {
    name.split('.').any(|c| c == STATE)
}

/// A seeded, name-sorted store of trainable variables.
#[derive(Clone, Debug)]
pub struct Params {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
    seed: u64,
    device: Device,
}

impl Params {
    /// An empty store; new variables are initialised from `seed`.
    pub fn new(seed: u64, device: &Device) -> Self {
        Self {
            vars: Arc::new(Mutex::new(BTreeMap::new())),
            seed,
            device: device.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Var>> {
        // A poisoned lock only means another thread panicked while holding it; the map itself is intact.
        self.vars.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A `VarBuilder` (f32) that creates variables in this store.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, self.device.clone())
    }

    /// The device the variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// All variables, sorted by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Number of scalar values in the store, model state ([`is_state`]) included.
    pub fn num_parameters(&self) -> usize {
        self.lock().values().map(|v| v.elem_count()).sum()
    }

    /// The variables an optimiser trains, sorted by name: all but model state ([`is_state`]).
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.vars()
            .into_iter()
            .filter(|(k, _)| !is_state(k))
            .collect()
    }

    /// Number of scalar parameters an optimiser trains ([`Params::trainable_vars`]).
    pub fn num_trainable(&self) -> usize {
        self.trainable_vars()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// A detached copy of every variable's current value, by name.
    pub fn snapshot(&self) -> Result<BTreeMap<String, Tensor>> {
        self.lock()
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?.detach())))
            .collect()
    }

    /// Overwrites every variable with the tensor of the same name in `values`. Every variable must be present
    /// with the same shape; extra entries are an error too (the checkpoint does not match the model).
    pub fn assign(&self, values: &BTreeMap<String, Tensor>, source: &Path) -> Result<()> {
        let vars = self.lock();
        let mismatch = |msg: String| Error::Checkpoint {
            path: source.to_path_buf(),
            msg,
        };
        for (name, var) in vars.iter() {
            let t = values.get(name).ok_or_else(|| {
                mismatch(format!(
                    "tensor '{name}' missing: the checkpoint does not match the model config"
                ))
            })?;
            if t.dims() != var.dims() {
                return Err(mismatch(format!(
                    "tensor '{name}' has shape {:?}, the model config expects {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(&self.device)?)?;
        }
        if let Some(extra) = values.keys().find(|k| !vars.contains_key(*k)) {
            return Err(mismatch(format!(
                "unexpected tensor '{extra}': the checkpoint does not match the model config"
            )));
        }
        Ok(())
    }

    /// Overwrites the named variables with `values` (a model's data-dependent initialisation); each name
    /// must be a variable of this store, of the same shape.
    pub fn set_values(&self, values: &[(String, Tensor)]) -> Result<()> {
        let vars = self.lock();
        for (name, t) in values {
            let var = vars.get(name).ok_or_else(|| {
                Error::invalid("data-dependent init", format!("no variable named '{name}'"))
            })?;
            if t.dims() != var.dims() {
                return Err(Error::invalid(
                    "data-dependent init",
                    format!(
                        "'{name}' has shape {:?}, the value {:?}",
                        var.dims(),
                        t.dims()
                    ),
                ));
            }
            var.set(&t.detach().to_dtype(var.dtype())?.to_device(&self.device)?)?;
        }
        Ok(())
    }

    fn init(&self, shape: &Shape, name: &str, init: Init) -> Result<Tensor> {
        let n = shape.elem_count();
        let mut rng = Rng::named(self.seed, name);
        let uniform = |rng: &mut Rng, lo: f64, hi: f64| -> Vec<f32> {
            (0..n)
                .map(|_| (lo + (hi - lo) * rng.uniform_f64()) as f32)
                .collect()
        };
        let values: Vec<f32> = match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
            Init::Randn { mean, stdev } => (0..n)
                .map(|_| (mean + stdev * rng.normal() as f64) as f32)
                .collect(),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let fan = match fan {
                    FanInOut::FanIn => FanInOut::FanIn.for_shape(shape),
                    FanInOut::FanOut => FanInOut::FanOut.for_shape(shape),
                };
                let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let b = 3f64.sqrt() * std;
                        uniform(&mut rng, -b, b)
                    }
                    NormalOrUniform::Normal => {
                        (0..n).map(|_| (std * rng.normal() as f64) as f32).collect()
                    }
                }
            }
        };
        Ok(Tensor::from_vec(values, shape.clone(), &self.device)?)
    }
}

impl SimpleBackend for Params {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut vars = self.lock();
        if let Some(v) = vars.get(name) {
            if v.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", v.shape())
            }
            return Ok(v.as_tensor().clone());
        }
        let t = self
            .init(&s, name, h)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?
            .to_dtype(dtype)?
            .to_device(dev)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.lock().get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("no variable named {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }
}

/// A `VarBuilder` backend that records every variable a model asks for without allocating it, to count a
/// model's parameters before any memory is committed ([`crate::memory`]). Each variable is one f32 zero
/// broadcast to the requested shape (no storage behind it), so a model can be built as usual. Once the count
/// passes `cap` values the next request fails and [`ShapeCounter::exceeded`] turns true, so a model of 10¹²
/// parameters is refused at its first big layer.
#[derive(Clone, Debug)]
pub struct ShapeCounter {
    state: Arc<Mutex<CounterState>>,
    cap: u64,
}

#[derive(Debug, Default)]
struct CounterState {
    shapes: BTreeMap<String, Shape>,
    total: u64,
    /// The request that passed the cap: its name and shape.
    exceeded: Option<(String, Vec<usize>)>,
}

impl ShapeCounter {
    /// A counter that stops once more than `cap` values are asked for.
    pub fn new(cap: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(CounterState::default())),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, CounterState> {
        // A poisoned lock only means another thread panicked while holding it; the counts are intact.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A `VarBuilder` (f32, CPU) that counts into this counter.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, Device::Cpu)
    }

    /// Values asked for so far (each variable once; including the one that passed the cap, saturating).
    pub fn count(&self) -> u64 {
        self.lock().total
    }

    /// True once a request took the count past the cap.
    pub fn exceeded(&self) -> bool {
        self.lock().exceeded.is_some()
    }

    /// The name and shape of the variable that took the count past the cap.
    pub fn culprit(&self) -> Option<(String, Vec<usize>)> {
        self.lock().exceeded.clone()
    }
}

impl SimpleBackend for ShapeCounter {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut st = self.lock();
        match st.shapes.get(name) {
            Some(old) if old != &s => {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {old:?}")
            }
            Some(_) => {}
            None => {
                let n = s
                    .dims()
                    .iter()
                    .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
                let total = n.and_then(|n| st.total.checked_add(n));
                match total {
                    Some(t) if t <= self.cap => st.total = t,
                    _ => {
                        st.total = total.unwrap_or(u64::MAX);
                        st.exceeded = Some((name.to_string(), s.dims().to_vec()));
                        candle_core::bail!(
                            "variable {name} of shape {s:?} takes the parameter count past {}",
                            self.cap
                        )
                    }
                }
                st.shapes.insert(name.to_string(), s.clone());
            }
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.lock().shapes.get(name) {
            Some(s) => Tensor::zeros((), dtype, dev)?.broadcast_as(s.clone()),
            None => candle_core::bail!("no variable named {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lock().shapes.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_depends_on_seed_and_name_only() -> Result<()> {
        let dev = Device::Cpu;
        let a = Params::new(1, &dev);
        let vb = a.var_builder();
        let x = vb.get_with_hints(
            (3, 4),
            "x",
            Init::Randn {
                mean: 0.,
                stdev: 1.,
            },
        )?;
        let _y = vb.get_with_hints(5, "y", Init::Uniform { lo: -1., up: 1. })?;
        // other creation order
        let b = Params::new(1, &dev);
        let vb = b.var_builder();
        let _y = vb.get_with_hints(5, "y", Init::Uniform { lo: -1., up: 1. })?;
        let x2 = vb.get_with_hints(
            (3, 4),
            "x",
            Init::Randn {
                mean: 0.,
                stdev: 1.,
            },
        )?;
        assert_eq!(
            x.flatten_all()?.to_vec1::<f32>()?,
            x2.flatten_all()?.to_vec1::<f32>()?
        );
        let c = Params::new(2, &dev);
        let x3 = c.var_builder().get_with_hints(
            (3, 4),
            "x",
            Init::Randn {
                mean: 0.,
                stdev: 1.,
            },
        )?;
        assert_ne!(
            x.flatten_all()?.to_vec1::<f32>()?,
            x3.flatten_all()?.to_vec1::<f32>()?
        );
        let names: Vec<String> = a.vars().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, vec!["x", "y"]);
        Ok(())
    }

    #[test]
    fn assign_checks_names_and_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let p = Params::new(0, &dev);
        p.var_builder().get_with_hints(3, "w", Init::Const(0.))?;
        let mut good = BTreeMap::new();
        good.insert("w".to_string(), Tensor::new(&[1f32, 2., 3.], &dev)?);
        p.assign(&good, Path::new("x"))?;
        assert_eq!(p.snapshot()?["w"].to_vec1::<f32>()?, vec![1., 2., 3.]);
        let mut bad = BTreeMap::new();
        bad.insert("w".to_string(), Tensor::new(&[1f32, 2.], &dev)?);
        assert!(p.assign(&bad, Path::new("x")).is_err());
        let mut missing = BTreeMap::new();
        missing.insert("v".to_string(), Tensor::new(&[1f32, 2., 3.], &dev)?);
        assert!(p.assign(&missing, Path::new("x")).is_err());
        Ok(())
    }

    #[test]
    fn shape_counter_counts_without_allocating_and_stops_at_the_cap() -> Result<()> {
        let c = ShapeCounter::new(1_000);
        let vb = c.var_builder();
        let w = vb.get_with_hints((10, 20), "w", Init::Const(0.))?;
        assert_eq!(w.dims(), &[10, 20]);
        vb.get_with_hints((10, 20), "w", Init::Const(0.))?; // the same variable again: counted once
        vb.get_with_hints(5, "b", Init::Const(0.))?;
        assert_eq!((c.count(), c.exceeded()), (205, false));
        // 10^12 values: refused at once, nothing allocated (this would need 4 TB)
        let big = ShapeCounter::new(1_000_000);
        assert!(big
            .var_builder()
            .get_with_hints((1_000_000, 1_000_000), "huge", Init::Const(0.))
            .is_err());
        assert!(big.exceeded());
        // a product that overflows u64 is refused the same way
        let over = ShapeCounter::new(u64::MAX);
        assert!(over
            .var_builder()
            .get_with_hints((usize::MAX, 4), "x", Init::Const(0.))
            .is_err());
        assert!(over.exceeded());
        Ok(())
    }
}
