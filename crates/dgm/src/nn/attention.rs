//! Multi-head self-attention over the positions of a feature map, the attention block of the diffusion
//! UNets (Ho et al. 2020, arXiv:2006.11239, §B; Nichol & Dhariwal 2021, arXiv:2102.09672, §3.2 / App. A).
//!
//! For `x: (b, c, h, w)` the n = h·w positions are the tokens, and with H heads of d = c / H channels
//! (Vaswani et al. 2017, arXiv:1706.03762, eq. 1):
//!
//! ```text
//! [q; k; v] = W_qkv · GroupNorm(x) + b_qkv                   1×1 convolution, c → 3c
//! o_h       = v_h · softmax(q_hᵀ k_h / √d)ᵀ                  per head h: (d, n) · (n, n)ᵀ
//! y         = x + W_o · [o_1; …; o_H] + b_o                  1×1 convolution, c → c, residual
//! ```
//!
//! so `y_i = x_i + W_o Σ_j a_ij v_j` with `a_ij = exp(q_i·k_j/√d) / Σ_j' exp(q_i·k_j'/√d)`. Channels of
//! the `qkv` projection are laid out `[q | k | v]`, each `[head 0 | head 1 | …]`. The norm and both
//! projections go through dgm's layer types ([`GroupNorm`], [`Conv2d`]); the attention itself uses candle's
//! batched matmul and dgm's softmax over the last dimension ([`super::kernels::softmax`]).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::kernels::softmax::softmax_last_dim;
use super::layers::{Conv2d, GroupNorm};
use crate::{Error, Result};

/// Multi-head self-attention block over the h·w positions of a `(b, c, h, w)` map, with a pre-norm and a
/// residual connection (see the module docs).
#[derive(Clone, Debug)]
pub struct SelfAttention2d {
    norm: GroupNorm,
    qkv: Conv2d,
    proj: Conv2d,
    channels: usize,
    num_heads: usize,
}

impl SelfAttention2d {
    /// `num_heads` heads over `channels` channels (`channels` must be a multiple of `num_heads`), with a
    /// `groups`-group GroupNorm. Variables under `vb`: `norm.{weight,bias}`, `qkv.{weight,bias}`
    /// (3c, c, 1, 1), `proj.{weight,bias}` (c, c, 1, 1).
    pub fn new(channels: usize, num_heads: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        if num_heads == 0 || !channels.is_multiple_of(num_heads) {
            return Err(Error::invalid(
                "attention num_heads",
                format!(
                    "{num_heads} heads cannot split {channels} channels; use a divisor of {channels}"
                ),
            ));
        }
        Ok(Self {
            norm: GroupNorm::new(groups, channels, vb.pp("norm"))?,
            qkv: Conv2d::new(channels, 3 * channels, 1, 1, 0, vb.pp("qkv"))?,
            proj: Conv2d::new(channels, channels, 1, 1, 0, vb.pp("proj"))?,
            channels,
            num_heads,
        })
    }

    /// `(b, c, h, w)` → `(b, c, h, w)`: `x + proj(attention(norm(x)))`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if c != self.channels {
            return Err(Error::invalid(
                "attention input",
                format!(
                    "x has {c} channels (shape {:?}); this layer expects {}",
                    x.dims(),
                    self.channels
                ),
            ));
        }
        let (nh, d, n) = (self.num_heads, c / self.num_heads, h * w);
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?; // (b, 3c, h, w)
        let qkv = qkv.reshape((b, 3, nh * d * n))?; // (b, 3, H·d·n)
        let part = |i: usize| -> Result<Tensor> {
            Ok(qkv.narrow(1, i, 1)?.contiguous()?.reshape((b * nh, d, n))?) // (b·H, d, n)
        };
        let q = (part(0)? * (1.0 / (d as f64).sqrt()))?; // (b·H, d, n), scaled by 1/√d
        let (k, v) = (part(1)?, part(2)?); // (b·H, d, n)
        let scores = q.t()?.matmul(&k)?; // (b·H, n, n): q_iᵀ k_j / √d
        let attn = softmax_last_dim(&scores)?; // (b·H, n, n), rows sum to 1
        let out = v.matmul(&attn.t()?)?; // (b·H, d, n): Σ_j a_ij v_j
        let out = out.reshape((b, c, h, w))?; // (b, c, h, w)
        Ok((x + self.proj.forward(&out)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{rel_err, Params};
    use crate::rng::Rng;
    use candle_core::Device;
    use std::collections::BTreeMap;
    use std::path::Path;

    /// A 4-channel, 2-head block whose every parameter (norm affine included) is random.
    fn random_block(seed: u64) -> Result<(SelfAttention2d, Params)> {
        let p = Params::new(seed, &Device::Cpu);
        let a = SelfAttention2d::new(4, 2, 2, p.var_builder())?;
        let mut rng = Rng::new(seed + 100);
        let vals: BTreeMap<String, Tensor> = p
            .snapshot()?
            .into_iter()
            .map(|(k, t)| Ok((k, rng.randn(t.shape(), &Device::Cpu)?)))
            .collect::<Result<_>>()?;
        p.assign(&vals, Path::new("test"))?;
        Ok((a, p))
    }

    /// The block computed with plain f64 loops from the module-doc equations.
    fn reference(
        x: &[f64],
        (b, c, n): (usize, usize, usize),
        snap: &BTreeMap<String, Tensor>,
    ) -> Vec<f64> {
        let get = |k: &str| -> Vec<f64> {
            let v = snap[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.into_iter().map(f64::from).collect()
        };
        let (gw, gb, wq, bq, wo, bo) = (
            get("norm.weight"),
            get("norm.bias"),
            get("qkv.weight"),
            get("qkv.bias"),
            get("proj.weight"),
            get("proj.bias"),
        );
        let (groups, heads) = (2, 2);
        let (cg, d) = (c / groups, c / heads);
        let mut y = x.to_vec();
        for bi in 0..b {
            let xb = &x[bi * c * n..(bi + 1) * c * n]; // (c, n)
                                                       // group norm, ε = 1e-5
            let mut xn = vec![0.0; c * n];
            for g in 0..groups {
                let s = &xb[g * cg * n..(g + 1) * cg * n];
                let mean = s.iter().sum::<f64>() / s.len() as f64;
                let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / s.len() as f64;
                for ch in g * cg..(g + 1) * cg {
                    for p in 0..n {
                        xn[ch * n + p] =
                            gw[ch] * (xb[ch * n + p] - mean) / (var + 1e-5).sqrt() + gb[ch];
                    }
                }
            }
            // qkv: (3c, n)
            let mut qkv = vec![0.0; 3 * c * n];
            for o in 0..3 * c {
                for p in 0..n {
                    qkv[o * n + p] =
                        bq[o] + (0..c).map(|i| wq[o * c + i] * xn[i * n + p]).sum::<f64>();
                }
            }
            let at = |part: usize, head: usize, ch: usize, p: usize| {
                qkv[((part * heads + head) * d + ch) * n + p]
            };
            let mut o = vec![0.0; c * n];
            for hd in 0..heads {
                for i in 0..n {
                    let s: Vec<f64> = (0..n)
                        .map(|j| {
                            (0..d)
                                .map(|e| at(0, hd, e, i) * at(1, hd, e, j))
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                    for e in 0..d {
                        o[(hd * d + e) * n + i] =
                            (0..n).map(|j| (s[j] - m).exp() / z * at(2, hd, e, j)).sum();
                    }
                }
            }
            for ch in 0..c {
                for p in 0..n {
                    y[(bi * c + ch) * n + p] +=
                        bo[ch] + (0..c).map(|i| wo[ch * c + i] * o[i * n + p]).sum::<f64>();
                }
            }
        }
        y
    }

    #[test]
    fn matches_f64_loop_reference() -> Result<()> {
        let (a, p) = random_block(1)?;
        let (b, c, h, w) = (2, 4, 3, 2);
        let x = Rng::new(2).randn((b, c, h, w), &Device::Cpu)?;
        let y = a.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
        let xv: Vec<f64> = x
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect();
        let want = reference(&xv, (b, c, h * w), &p.snapshot()?);
        for (i, (&g, &r)) in y.iter().zip(&want).enumerate() {
            assert!(
                (g as f64 - r).abs() < 1e-4 * (1.0 + r.abs()),
                "element {i}: {g} vs {r}"
            );
        }
        Ok(())
    }

    #[test]
    fn equivariant_to_permuting_positions() -> Result<()> {
        let (a, _) = random_block(3)?;
        let dev = Device::Cpu;
        let (b, c, h, w) = (2, 4, 4, 3);
        let x = Rng::new(4).randn((b, c, h, w), &dev)?;
        let perm: Vec<u32> = Rng::new(5)
            .permutation(h * w)
            .into_iter()
            .map(|i| i as u32)
            .collect();
        let perm = Tensor::new(perm.as_slice(), &dev)?;
        let permute = |t: &Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, c, h * w))?
                .index_select(&perm, 2)?
                .reshape((b, c, h, w))?)
        };
        let lhs = a.forward(&permute(&x)?)?;
        let rhs = permute(&a.forward(&x)?)?;
        assert!(rel_err(&lhs, &rhs)? < 1e-5);
        // and it is not trivially the identity / position-wise: moving one position changes the others
        let mut xv = x.flatten_all()?.to_vec1::<f32>()?;
        xv[0] += 3.0;
        let y1 = a.forward(&Tensor::from_vec(xv, (b, c, h, w), &dev)?)?;
        let y0 = a.forward(&x)?;
        let other = (y1 - &y0)?
            .narrow(3, 1, 1)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(other > 1e-4, "attention did not mix positions ({other})");
        Ok(())
    }

    #[test]
    fn rejects_heads_that_do_not_divide_channels() {
        let p = Params::new(0, &Device::Cpu);
        let e = SelfAttention2d::new(6, 4, 2, p.var_builder())
            .unwrap_err()
            .to_string();
        assert!(e.contains("4 heads cannot split 6 channels"), "{e}");
    }
}
