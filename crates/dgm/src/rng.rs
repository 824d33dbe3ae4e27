//! dgm's seeded random number generator.
//!
//! Every random draw in dgm (weight initialisation, data order, dequantisation noise, dynamic binarisation,
//! reparameterisation noise, sampling) goes through [`Rng`], a ChaCha8 stream cipher generator. candle's own
//! CPU `randn`/`rand` cannot be seeded, so noise is drawn here and copied into a tensor. The same seed gives the
//! same bits on any machine and any thread count, because draws happen sequentially on one thread.

use candle_core::{Device, Shape, Tensor};
use rand::{Rng as _, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::Result;

/// A seeded, reproducible random number generator.
#[derive(Clone, Debug)]
pub struct Rng {
    inner: ChaCha8Rng,
}

/// The complete state of an [`Rng`], for checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 64-bit seed the generator was created from.
    pub seed: u64,
    /// The stream (see [`Rng::stream`]).
    pub stream: u64,
    /// Position in the stream, in 32-bit words.
    pub word_pos: u128,
}

impl Rng {
    /// A generator seeded with `seed` (stream 0).
    pub fn new(seed: u64) -> Self {
        Self::stream(seed, 0)
    }

    /// An independent generator for `(seed, stream)`. Use distinct streams for unrelated purposes
    /// (e.g. one per training step, one per parameter) so that they never share random numbers.
    pub fn stream(seed: u64, stream: u64) -> Self {
        let mut inner = ChaCha8Rng::seed_from_u64(seed);
        inner.set_stream(stream);
        Self { inner }
    }

    /// A generator for `(seed, name)`: the stream is a stable 64-bit hash (FNV-1a) of `name`.
    pub fn named(seed: u64, name: &str) -> Self {
        Self::stream(seed, fnv1a(name.as_bytes()))
    }

    /// The generator's state, enough to resume it exactly with [`Rng::from_state`].
    pub fn state(&self, seed: u64) -> RngState {
        RngState {
            seed,
            stream: self.inner.get_stream(),
            word_pos: self.inner.get_word_pos(),
        }
    }

    /// Rebuilds a generator from a saved [`RngState`].
    pub fn from_state(s: &RngState) -> Self {
        let mut r = Self::stream(s.seed, s.stream);
        r.inner.set_word_pos(s.word_pos);
        r
    }

    /// A uniform 64-bit integer.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A uniform draw from [0, 1).
    pub fn uniform(&mut self) -> f32 {
        self.inner.random::<f32>()
    }

    /// A uniform draw from [0, 1) in double precision.
    pub fn uniform_f64(&mut self) -> f64 {
        self.inner.random::<f64>()
    }

    /// A standard normal draw.
    pub fn normal(&mut self) -> f32 {
        StandardNormal.sample(&mut self.inner)
    }

    /// A uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.inner.random_range(0..n)
    }

    /// `n` standard normal draws.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }

    /// `n` uniform draws from [0, 1).
    pub fn uniform_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }

    /// A tensor of standard normal draws (f32).
    pub fn randn<S: Into<Shape>>(&mut self, shape: S, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.normal_vec(shape.elem_count());
        Ok(Tensor::from_vec(v, shape, device)?)
    }

    /// A tensor of uniform draws from [0, 1) (f32).
    pub fn rand<S: Into<Shape>>(&mut self, shape: S, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.uniform_vec(shape.elem_count());
        Ok(Tensor::from_vec(v, shape, device)?)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// A random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
}

/// FNV-1a 64-bit hash: stable across platforms and Rust versions (unlike `std`'s hasher).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<f32> = Rng::new(7).normal_vec(100);
        let b: Vec<f32> = Rng::new(7).normal_vec(100);
        assert_eq!(a, b);
        let c: Vec<f32> = Rng::new(8).normal_vec(100);
        assert_ne!(a, c);
        let d: Vec<f32> = Rng::stream(7, 1).normal_vec(100);
        assert_ne!(a, d);
    }

    #[test]
    fn state_round_trip_resumes_exactly() {
        let mut r = Rng::stream(3, 9);
        r.normal_vec(37);
        let s = r.state(3);
        let rest: Vec<f32> = r.normal_vec(50);
        let mut r2 = Rng::from_state(&s);
        assert_eq!(rest, r2.normal_vec(50));
    }

    #[test]
    fn normal_moments() {
        let v = Rng::new(1).normal_vec(200_000);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        // standard errors: 1/sqrt(n) = 0.0022 for the mean, sqrt(2/n) = 0.0032 for the variance
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "var {var}");
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = Rng::new(5).permutation(1000);
        p.sort();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn fnv_reference() {
        // published FNV-1a 64 test vectors
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}
