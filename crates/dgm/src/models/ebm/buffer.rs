//! The replay buffer of contrastive-divergence training (Du & Mordatch 2019): persistent Langevin chains. Each
//! training step starts its negative samples from `b` random buffer entries, of which a fraction (5 % in the
//! paper) is replaced by fresh uniform noise so that new modes keep being explored, runs Langevin from them, and
//! writes the results back to the same entries.
//!
//! The buffer is a variable of the model's [`crate::nn::Params`] (`…/buffer`, `(size, …example shape)`, first
//! drawn uniform in [lo, hi] from the run's seed), so every checkpoint holds it and a resumed run continues the
//! very same chains. It never takes part in a loss, so it never has a gradient and optimisers leave it alone; it
//! changes only through [`ReplayBuffer::write`], in place.

use candle_core::Tensor;
use candle_nn::init::Init;
use candle_nn::VarBuilder;

use crate::rng::Rng;
use crate::{Error, Result};

/// Persistent chains for contrastive divergence.
#[derive(Clone, Debug)]
pub struct ReplayBuffer {
    /// `(size, …example shape)`, updated in place.
    states: Tensor,
    /// Range of the uniform noise that starts (and restarts) chains.
    lo: f64,
    hi: f64,
}

impl ReplayBuffer {
    /// A buffer of `size` examples of `shape`, its variable `buffer` under `vb`, drawn uniform in [`lo`, `hi`].
    pub fn new(size: usize, shape: &[usize], lo: f64, hi: f64, vb: VarBuilder) -> Result<Self> {
        if size == 0 || shape.is_empty() || !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::invalid(
                "model.buffer_size",
                format!("a buffer needs at least one example of a known shape and a range lo < hi, got {size} of {shape:?} in [{lo}, {hi}]"),
            ));
        }
        let mut dims = vec![size];
        dims.extend_from_slice(shape);
        let states = vb.get_with_hints(dims, "buffer", Init::Uniform { lo, up: hi })?;
        Ok(Self { states, lo, hi })
    }

    /// Number of chains.
    pub fn len(&self) -> usize {
        self.states.dims()[0]
    }

    /// Always false: a buffer holds at least one chain.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starting points for `b` chains: `b` distinct random entries (their indices are returned for
    /// [`ReplayBuffer::write`]), each replaced with probability `reinit` by fresh uniform noise. A buffer
    /// smaller than `b` is refused by name.
    pub fn draw(&self, b: usize, reinit: f64, rng: &mut Rng) -> Result<(Tensor, Vec<usize>)> {
        if b == 0 || b > self.len() {
            return Err(Error::invalid(
                "model.buffer_size",
                format!("{} chains cannot start a batch of {b}: the buffer must hold at least one batch", self.len()),
            ));
        }
        if !(0.0..=1.0).contains(&reinit) {
            return Err(Error::invalid(
                "model.reinit",
                format!("{reinit} must be a probability in [0, 1]"),
            ));
        }
        let idx: Vec<usize> = rng.permutation(self.len())[..b].to_vec();
        let mut rows = Vec::with_capacity(b);
        for &i in &idx {
            let row = self.states.narrow(0, i, 1)?;
            rows.push(if rng.uniform_f64() < reinit {
                rng.rand(row.shape(), row.device())?
                    .to_dtype(row.dtype())?
                    .affine(self.hi - self.lo, self.lo)?
            } else {
                row.copy()?
            });
        }
        Ok((Tensor::cat(&rows, 0)?, idx))
    }

    /// Writes chains `x` `(b, …)` back to the entries `idx` they were drawn from.
    pub fn write(&self, idx: &[usize], x: &Tensor) -> Result<()> {
        if x.dim(0)? != idx.len() || x.dims()[1..] != self.states.dims()[1..] {
            return Err(Error::invalid(
                "replay buffer",
                format!(
                    "{:?} values for {} entries of {:?}",
                    x.dims(),
                    idx.len(),
                    &self.states.dims()[1..]
                ),
            ));
        }
        let x = x.detach().to_dtype(self.states.dtype())?;
        for (r, &i) in idx.iter().enumerate() {
            if i >= self.len() {
                return Err(Error::invalid(
                    "replay buffer",
                    format!("entry {i} of {}", self.len()),
                ));
            }
            self.states
                .slice_set(&x.narrow(0, r, 1)?.contiguous()?, 0, i)?;
        }
        Ok(())
    }

    /// The chains, `(size, …)`.
    pub fn states(&self) -> &Tensor {
        &self.states
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Params;
    use candle_core::Device;
    use std::collections::BTreeMap;

    fn values(t: &Tensor) -> Result<Vec<u32>> {
        Ok(t.flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .map(|v| v.to_bits())
            .collect())
    }

    /// Drawn entries come back from `write` to the same places; about `reinit` of the starts are fresh noise
    /// in range; the buffer is a variable of the store (saved with the weights), and a store restored from a
    /// snapshot continues bit for bit as the original.
    #[test]
    fn draw_write_and_resume_bit_for_bit() -> Result<()> {
        let dev = Device::Cpu;
        let params = Params::new(3, &dev);
        let buf = ReplayBuffer::new(64, &[2], -1.0, 1.0, params.var_builder().pp("ebm"))?;
        assert!(params.snapshot()?.contains_key("ebm.buffer"));
        let all: Vec<f32> = buf.states().flatten_all()?.to_vec1()?;
        assert!(all.iter().all(|v| (-1.0..=1.0).contains(v)));
        // a draw without reinitialisation returns the entries themselves
        let mut rng = Rng::new(1);
        let (x, idx) = buf.draw(8, 0.0, &mut rng)?;
        for (r, &i) in idx.iter().enumerate() {
            assert_eq!(
                values(&x.narrow(0, r, 1)?)?,
                values(&buf.states().narrow(0, i, 1)?)?
            );
        }
        // write moves exactly those rows
        let moved = (&x + 10.0)?;
        let before: Vec<f32> = buf.states().flatten_all()?.to_vec1()?;
        buf.write(&idx, &moved)?;
        let after: Vec<f32> = buf.states().flatten_all()?.to_vec1()?;
        for i in 0..64 {
            let changed = idx.contains(&i);
            for d in 0..2 {
                let (a, b) = (before[2 * i + d], after[2 * i + d]);
                assert_eq!(changed, (b - a - 10.0).abs() < 1e-5, "row {i}");
                assert_eq!(!changed, a == b, "row {i}");
            }
        }
        // reinitialisation: with reinit 1 every start is fresh noise in range, not a buffer entry (now ≥ 9)
        let (fresh, _) = buf.draw(8, 1.0, &mut rng)?;
        assert!(fresh
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| (-1.0..=1.0).contains(v)));
        // resume: a store restored from a snapshot continues with the same bits
        let step = |b: &ReplayBuffer, rng: &mut Rng| -> Result<()> {
            let (x, idx) = b.draw(16, 0.05, rng)?;
            b.write(&idx, &(x * 0.5)?)
        };
        let snap: BTreeMap<String, Tensor> = params.snapshot()?;
        let restored = Params::new(99, &dev);
        let buf2 = ReplayBuffer::new(64, &[2], -1.0, 1.0, restored.var_builder().pp("ebm"))?;
        restored.assign(&snap, std::path::Path::new("snapshot"))?;
        let (mut r1, mut r2) = (Rng::new(7), Rng::new(7));
        for _ in 0..5 {
            step(&buf, &mut r1)?;
            step(&buf2, &mut r2)?;
        }
        assert_eq!(values(buf.states())?, values(buf2.states())?);
        Ok(())
    }

    #[test]
    fn bad_sizes_are_refused_by_name() -> Result<()> {
        let params = Params::new(0, &Device::Cpu);
        let vb = params.var_builder();
        assert!(ReplayBuffer::new(0, &[2], -1.0, 1.0, vb.pp("a")).is_err());
        assert!(ReplayBuffer::new(4, &[2], 1.0, -1.0, vb.pp("b")).is_err());
        let buf = ReplayBuffer::new(4, &[2], -1.0, 1.0, vb.pp("c"))?;
        let mut rng = Rng::new(0);
        assert!(buf
            .draw(8, 0.05, &mut rng)
            .is_err_and(|e| e.to_string().contains("model.buffer_size")));
        assert!(buf
            .draw(2, 1.5, &mut rng)
            .is_err_and(|e| e.to_string().contains("model.reinit")));
        Ok(())
    }
}
