//! AdamW (Loshchilov & Hutter 2019) with PyTorch's semantics, gradient clipping by global norm, and a
//! learning-rate schedule with linear warm-up and cosine decay. The optimiser state is plain named tensors
//! so that it can be checkpointed and resumed bit for bit.

use std::collections::BTreeMap;

use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};

use crate::nn::kernels::adamw_update_cpu;

/// Gradients of a list of variables, in the same order (None: the variable got no gradient).
pub type Grads = Vec<Option<Tensor>>;

/// Picks the gradients of `vars` out of a backward pass.
pub fn collect_grads(vars: &[(String, Var)], store: &GradStore) -> Grads {
    vars.iter()
        .map(|(_, v)| store.get(v.as_tensor()).cloned())
        .collect()
}

/// Adds `more` into `acc` (gradient accumulation).
pub fn accumulate(acc: &mut Grads, more: Grads) -> Result<()> {
    for (a, m) in acc.iter_mut().zip(more) {
        *a = match (a.take(), m) {
            (Some(x), Some(y)) => Some((x + y)?),
            (x, y) => x.or(y),
        };
    }
    Ok(())
}

use crate::{Error, Result};

/// AdamW hyper-parameters. The [`Default`] is Adam's usual β₁ = 0.9, β₂ = 0.999, ε = 10⁻⁸ without weight
/// decay; override fields with `AdamWParams { beta2: 0.99, ..Default::default() }`.
#[derive(Clone, Debug)]
pub struct AdamWParams {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Decay only variables with two or more dimensions (weight matrices, conv kernels, embeddings) and leave
    /// biases and normalisation gains alone, as GPT-2 / nanoGPT do; `false` decays every variable.
    pub decay_matrices_only: bool,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decay_matrices_only: false,
        }
    }
}

/// The first and second moments of one variable: plain vectors updated in place by the fused CPU kernel,
/// or tensors (other devices / dtypes).
enum Moments {
    Cpu(Vec<f32>, Vec<f32>),
    Tensors(Tensor, Tensor),
}

/// AdamW over a fixed list of named variables.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    moments: Vec<Moments>,
    /// Number of updates done so far.
    pub t: u64,
    params: AdamWParams,
}

fn zero_moments(var: &Var) -> Result<Moments> {
    let fused = matches!(var.device(), Device::Cpu) && var.dtype() == DType::F32;
    Ok(if fused {
        Moments::Cpu(vec![0.0; var.elem_count()], vec![0.0; var.elem_count()])
    } else {
        Moments::Tensors(var.zeros_like()?, var.zeros_like()?)
    })
}

impl AdamW {
    /// An optimiser for `vars` with zeroed moments.
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let moments = vars
            .iter()
            .map(|(_, v)| zero_moments(v))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            moments,
            t: 0,
            params,
        })
    }

    /// One update with learning rate `lr` from gradients `grads`, each scaled by `scale` first (for clipping
    /// and accumulation). Variables without a gradient are left alone (PyTorch does the same).
    ///
    /// p ← p − lr·λ·p;  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  p ← p − lr·m̂ / (√v̂ + ε)
    pub fn step(&mut self, grads: &Grads, lr: f64, scale: f64) -> Result<()> {
        self.t += 1;
        let p = &self.params;
        let (b1, b2) = (p.beta1, p.beta2);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        let wd = |v: &Var| {
            if p.decay_matrices_only && v.rank() < 2 {
                0.0
            } else {
                p.weight_decay
            }
        };
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            match &mut self.moments[i] {
                Moments::Cpu(m, v) => {
                    let hyper = (b1, b2, p.eps, wd(var));
                    if !adamw_update_cpu(var.as_tensor(), g, m, v, scale, lr, hyper, (bc1, bc2))? {
                        return Err(Error::invalid(
                            "optimizer",
                            "fused AdamW needs contiguous f32 CPU parameters",
                        ));
                    }
                }
                Moments::Tensors(m, v) => {
                    let g = if scale != 1.0 {
                        g.affine(scale, 0.0)?
                    } else {
                        g.clone()
                    };
                    *m = ((&*m * b1)? + (&g * (1.0 - b1))?)?;
                    *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                    let denom = ((&*v / bc2)?.sqrt()? + p.eps)?;
                    let update = ((&*m / bc1)? / denom)?;
                    let mut theta = var.as_tensor().detach();
                    if wd(var) != 0.0 {
                        theta = (theta * (1.0 - lr * wd(var)))?;
                    }
                    var.set(&(theta - (update * lr)?)?)?;
                }
            }
        }
        Ok(())
    }

    /// The moments as named tensors (`m.<name>`, `v.<name>`), for checkpoints.
    pub fn state(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut s = BTreeMap::new();
        for ((name, var), mom) in self.vars.iter().zip(&self.moments) {
            let (m, v) = match mom {
                Moments::Cpu(m, v) => (
                    Tensor::from_slice(m, var.shape(), var.device())?,
                    Tensor::from_slice(v, var.shape(), var.device())?,
                ),
                Moments::Tensors(m, v) => (m.clone(), v.clone()),
            };
            s.insert(format!("m.{name}"), m);
            s.insert(format!("v.{name}"), v);
        }
        Ok(s)
    }

    /// Restores moments saved by [`AdamW::state`] and the update count `t`.
    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>, t: u64) -> Result<()> {
        for ((name, var), mom) in self.vars.iter().zip(self.moments.iter_mut()) {
            let get = |prefix: &str| -> Result<Tensor> {
                let key = format!("{prefix}.{name}");
                let t = state
                    .get(&key)
                    .ok_or_else(|| Error::invalid("optimizer state", format!("'{key}' missing")))?;
                if t.dims() != var.dims() {
                    return Err(Error::invalid(
                        "optimizer state",
                        format!("'{key}' has the wrong shape"),
                    ));
                }
                Ok(t.to_dtype(var.dtype())?.to_device(var.device())?)
            };
            let (m, v) = (get("m")?, get("v")?);
            *mom = match mom {
                Moments::Cpu(..) => Moments::Cpu(
                    m.flatten_all()?.to_vec1::<f32>()?,
                    v.flatten_all()?.to_vec1::<f32>()?,
                ),
                Moments::Tensors(..) => Moments::Tensors(m, v),
            };
        }
        self.t = t;
        Ok(())
    }
}

/// The global L2 norm of all gradients.
pub fn global_grad_norm(grads: &Grads) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter().flatten() {
        sq += g
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    Ok(sq.sqrt())
}

/// Learning rate at `step` (0-based): linear warm-up to `lr` over `warmup` steps, then cosine decay to
/// `lr * min_ratio` at step `total`.
pub fn lr_at(step: u64, total: u64, lr: f64, warmup: u64, min_ratio: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    lr * (min_ratio + (1.0 - min_ratio) * cosine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_shape() {
        assert!((lr_at(0, 100, 1.0, 10, 0.1) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, 1.0, 10, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 100, 1.0, 10, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(55, 100, 1.0, 10, 0.1) - 0.55).abs() < 1e-12); // halfway: (1 + 0.1) / 2
        assert!((lr_at(100, 100, 1.0, 10, 0.1) - 0.1).abs() < 1e-12);
        assert!((lr_at(50, 100, 2.0, 0, 1.0) - 2.0).abs() < 1e-12);
    }

    /// Reference: the AdamW update rule (as PyTorch implements it) in f64, on f(p) = Σ p², p₀ = [1, −2],
    /// lr 0.1, wd 0.01, for 3 steps. f32 parameters go through the fused CPU kernel, f64 ones through the
    /// tensor-op path used on other devices.
    #[test]
    fn adamw_matches_the_update_rule() -> Result<()> {
        let dev = Device::Cpu;
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
            let p = Var::from_tensor(&Tensor::new(&[1f64, -2.0], &dev)?.to_dtype(dtype)?)?;
            let params = AdamWParams {
                weight_decay: 0.01,
                ..Default::default()
            };
            let mut opt = AdamW::new(vec![("p".into(), p.clone())], params.clone())?;
            let mut rp = [1f64, -2.0];
            let (mut rm, mut rv) = ([0f64; 2], [0f64; 2]);
            for t in 1..=3 {
                let loss = p.as_tensor().sqr()?.sum_all()?;
                let grads = collect_grads(&[("p".into(), p.clone())], &loss.backward()?);
                opt.step(&grads, 0.1, 1.0)?;
                for i in 0..2 {
                    let g = 2.0 * rp[i];
                    rp[i] *= 1.0 - 0.1 * 0.01;
                    rm[i] = 0.9 * rm[i] + 0.1 * g;
                    rv[i] = 0.999 * rv[i] + 0.001 * g * g;
                    let mh = rm[i] / (1.0 - 0.9f64.powi(t));
                    let vh = rv[i] / (1.0 - 0.999f64.powi(t));
                    rp[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
                }
                let got = p.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>()?;
                for i in 0..2 {
                    assert!(
                        (got[i] - rp[i]).abs() < tol,
                        "{dtype:?} step {t}: {got:?} vs {rp:?}"
                    );
                }
            }
            // state round trip
            let st = opt.state()?;
            let mut opt2 = AdamW::new(vec![("p".into(), p.clone())], params)?;
            opt2.load_state(&st, opt.t)?;
            assert_eq!(opt2.t, 3);
            let m = |s: &BTreeMap<String, Tensor>| {
                s["m.p"]
                    .to_dtype(DType::F64)
                    .and_then(|t| t.to_vec1::<f64>())
            };
            assert_eq!(m(&opt2.state()?)?, m(&st)?);
        }
        Ok(())
    }

    /// With zero gradients AdamW only decays: p ← p (1 − lr λ). `decay_matrices_only` leaves vectors alone.
    #[test]
    fn decay_matrices_only_spares_biases_and_gains() -> Result<()> {
        let dev = Device::Cpu;
        for only in [false, true] {
            let w = Var::from_tensor(&Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev)?)?;
            let b = Var::from_tensor(&Tensor::new(&[1f32, -1.0], &dev)?)?;
            let vars = vec![("w".to_string(), w.clone()), ("b".to_string(), b.clone())];
            let params = AdamWParams {
                beta2: 0.99,
                weight_decay: 0.5,
                decay_matrices_only: only,
                ..Default::default()
            };
            let mut opt = AdamW::new(vars.clone(), params)?;
            let grads: Grads = vec![
                Some(w.as_tensor().zeros_like()?),
                Some(b.as_tensor().zeros_like()?),
            ];
            opt.step(&grads, 0.1, 1.0)?;
            let wv = w.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            assert!((wv[3] - 4.0 * 0.95).abs() < 1e-6, "{wv:?}");
            let bv = b.as_tensor().to_vec1::<f32>()?;
            let want = if only { 1.0 } else { 0.95 };
            assert!((bv[0] - want).abs() < 1e-6, "only {only}: {bv:?}");
        }
        Ok(())
    }

    #[test]
    fn grad_norm() -> Result<()> {
        let dev = Device::Cpu;
        let p = Var::new(&[3f32, 4.0], &dev)?;
        let store = (p.as_tensor() * 1.0)?.sum_all()?.backward()?; // gradient [1, 1]
        let mut grads = collect_grads(&[("p".into(), p)], &store);
        assert!((global_grad_norm(&grads)? - 2f64.sqrt()).abs() < 1e-6);
        accumulate(&mut grads, vec![Some(Tensor::new(&[2f32, 2.0], &dev)?)])?; // now [3, 3]
        let n = global_grad_norm(&grads)? / 3.0;
        assert!((n - 2f64.sqrt()).abs() < 1e-6);
        Ok(())
    }
}
