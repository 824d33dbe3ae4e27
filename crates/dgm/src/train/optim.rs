//! AdamW (Loshchilov & Hutter 2019) with PyTorch's semantics, gradient clipping by global norm, and a
//! learning-rate schedule with linear warm-up and cosine decay. The optimiser state is plain named tensors
//! so that it can be checkpointed and resumed bit for bit.

use std::collections::BTreeMap;

use candle_core::{backprop::GradStore, Tensor, Var};

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

/// AdamW hyper-parameters.
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
}

/// AdamW over a fixed list of named variables.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Number of updates done so far.
    pub t: u64,
    params: AdamWParams,
}

impl AdamW {
    /// An optimiser for `vars` with zeroed moments.
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let m = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            m,
            v,
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
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = &grads[i] else { continue };
            let g = if scale != 1.0 {
                g.affine(scale, 0.0)?
            } else {
                g.clone()
            };
            let m = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((&v / bc2)?.sqrt()? + p.eps)?;
            let update = ((&m / bc1)? / denom)?;
            let mut theta = var.as_tensor().detach();
            if p.weight_decay != 0.0 {
                theta = (theta * (1.0 - lr * p.weight_decay))?;
            }
            var.set(&(theta - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The moments as named tensors (`m.<name>`, `v.<name>`), for checkpoints.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut s = BTreeMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            s.insert(format!("m.{name}"), self.m[i].clone());
            s.insert(format!("v.{name}"), self.v[i].clone());
        }
        s
    }

    /// Restores moments saved by [`AdamW::state`] and the update count `t`.
    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>, t: u64) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
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
                *slot = t.to_device(var.device())?;
            }
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

    /// Reference: PyTorch's AdamW on f(p) = Σ p², p₀ = [1, −2], lr 0.1, wd 0.01, after 1 and 3 steps
    /// (computed by hand from the update rule in f64).
    #[test]
    fn adamw_matches_the_update_rule() -> Result<()> {
        let dev = Device::Cpu;
        let p = Var::new(&[1f32, -2.0], &dev)?;
        let params = AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let mut opt = AdamW::new(vec![("p".into(), p.clone())], params.clone())?;
        // reference in f64
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
            let got = p.as_tensor().to_vec1::<f32>()?;
            for i in 0..2 {
                assert!(
                    (got[i] as f64 - rp[i]).abs() < 1e-6,
                    "step {t}: {got:?} vs {rp:?}"
                );
            }
        }
        // first step of Adam moves each coordinate by ≈ lr against the gradient sign
        assert!(rp[0] < 1.0 && rp[1] > -2.0);
        // state round trip
        let st = opt.state();
        let mut opt2 = AdamW::new(vec![("p".into(), p.clone())], params)?;
        opt2.load_state(&st, opt.t)?;
        assert_eq!(opt2.t, 3);
        assert_eq!(
            opt2.state()["m.p"].to_vec1::<f32>()?,
            st["m.p"].to_vec1::<f32>()?
        );
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
