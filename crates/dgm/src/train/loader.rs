//! Seeded data order. The order is a pure function of (seed, batch number): epoch e uses the permutation
//! drawn from `Rng::stream(seed ^ DATA_SALT, e)`, so resuming at step s needs no saved loader state and gives
//! exactly the batches an uninterrupted run would have seen.

use crate::rng::Rng;
use crate::{Error, Result};

const DATA_SALT: u64 = 0x00DA_7A0F_0DE2;

/// Batches of example indices, reshuffled every epoch; the incomplete last batch of an epoch is dropped.
pub struct Loader {
    n: usize,
    batch_size: usize,
    seed: u64,
    cached: Option<(u64, Vec<usize>)>,
}

impl Loader {
    /// A loader over `n` examples.
    pub fn new(n: usize, batch_size: usize, seed: u64) -> Result<Self> {
        if batch_size == 0 || n < batch_size {
            return Err(Error::invalid(
                "train.batch_size",
                format!("{batch_size} must be between 1 and the number of training examples ({n})"),
            ));
        }
        Ok(Self {
            n,
            batch_size,
            seed,
            cached: None,
        })
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        (self.n / self.batch_size) as u64
    }

    /// The example indices of batch number `b` (counted from the start of training).
    pub fn indices(&mut self, b: u64) -> &[usize] {
        let bpe = self.batches_per_epoch();
        let (epoch, pos) = (b / bpe, (b % bpe) as usize);
        if self.cached.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let perm = Rng::stream(self.seed ^ DATA_SALT, epoch).permutation(self.n);
            self.cached = Some((epoch, perm));
        }
        match &self.cached {
            Some((_, perm)) => &perm[pos * self.batch_size..(pos + 1) * self.batch_size],
            None => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_visits_every_example_once_and_order_is_reproducible() -> Result<()> {
        let mut l = Loader::new(10, 3, 1)?;
        assert_eq!(l.batches_per_epoch(), 3);
        let mut seen: Vec<usize> = (0..3).flat_map(|b| l.indices(b).to_vec()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 9);
        let e1: Vec<usize> = (3..6).flat_map(|b| l.indices(b).to_vec()).collect();
        let mut l2 = Loader::new(10, 3, 1)?;
        assert_eq!(l2.indices(4), &e1[3..6]); // random access = sequential access
        let e0: Vec<usize> = (0..3).flat_map(|b| l2.indices(b).to_vec()).collect();
        assert_ne!(e0, e1); // reshuffled
        assert!(Loader::new(2, 3, 0).is_err());
        Ok(())
    }
}
