//! Multi-head causal self-attention (Vaswani et al. 2017, eq. 1, masked so that position i sees only
//! positions j ≤ i) as CPU kernels: [`causal_attention`] for training (per sequence and head, small matrix
//! products S = QKᵀ, causal softmax, PV, read straight from the packed `[q | k | v]` projection and written
//! back into `(b·T, C)` with no transposed copies; the backward recomputes the attention weights), and
//! [`cached_attention`] for generation (new queries over cached keys and values, forward only).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};

use super::gemm::sgemm;
use super::isa::simd_dispatch;
use super::math::{exp_approx, max_lanes, sum_lanes};
use super::softmax::{softmax_grad_rows_fast, softmax_last_dim};
use super::{cpu_f32, par_filled, to_candle, with_data};
use crate::rng::Rng;
use crate::{Error, Result};

/// Multi-head causal self-attention over `t` positions from the packed projection `qkv: (b·t, 3C)` (channels
/// `[q | k | v]`, each `[head 0 | head 1 | …]`, rows `(sequence, position)`), → `(b·t, C)` with the heads
/// side by side: o_i = Σ_{j ≤ i} softmax_j(q_i·k_j/√d) v_j. One dgm kernel with its own backward on f32 CPU
/// tensors, [`causal_attention_stock`] elsewhere.
pub fn causal_attention(qkv: &Tensor, t: usize, n_head: usize) -> Result<Tensor> {
    let (m, c3) = qkv.dims2()?;
    check_heads(c3, n_head)?;
    if t == 0 || !m.is_multiple_of(t) {
        return Err(Error::invalid(
            "attention",
            format!("{m} rows are not whole sequences of {t} positions"),
        ));
    }
    if crate::nn::use_cpu_kernel(qkv) {
        return Ok(qkv
            .contiguous()?
            .apply_op1(CausalAttentionOp { t, n_head })?);
    }
    causal_attention_stock(qkv, t, n_head, None)
}

fn check_heads(c3: usize, n_head: usize) -> Result<()> {
    if n_head == 0 || !c3.is_multiple_of(3 * n_head) {
        return Err(Error::invalid(
            "attention",
            format!(
                "a packed projection of {c3} channels cannot hold q, k, v for {n_head} heads; need a \
                 multiple of 3·n_head"
            ),
        ));
    }
    Ok(())
}

/// [`causal_attention`] composed from candle's ops (batched matmuls, a −∞ mask, [`softmax_last_dim`]), with
/// dropout on the attention weights when `dropout` is given (training).
pub fn causal_attention_stock(
    qkv: &Tensor,
    t: usize,
    n_head: usize,
    dropout: Option<(f64, &mut Rng)>,
) -> Result<Tensor> {
    let (m, c3) = qkv.dims2()?;
    check_heads(c3, n_head)?;
    let (b, c) = (m / t.max(1), c3 / 3);
    let qkv = qkv.reshape((b, t, c3))?; // (b, t, 3C)
    let part = |i: usize| -> Result<Tensor> { Ok(qkv.narrow(2, i * c, c)?) }; // (b, t, C)
    let y = attention_composed(&part(0)?, &part(1)?, &part(2)?, n_head, dropout)?; // (b, t, C)
    Ok(y.reshape((m, c))?)
}

/// Attention of `q: (b, tq, C)` over `k`, `v`: `(b, tk, C)` (tk ≥ tq), query i sitting at absolute position
/// tk − tq + i and seeing keys 0 ..= tk − tq + i, composed from candle's ops; → `(b, tq, C)`.
fn attention_composed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    n_head: usize,
    dropout: Option<(f64, &mut Rng)>,
) -> Result<Tensor> {
    let (b, tq, c) = q.dims3()?;
    let tk = k.dim(1)?;
    let d = c / n_head;
    let offset = tk.saturating_sub(tq);
    let heads = |x: &Tensor, n: usize| -> Result<Tensor> {
        Ok(x.reshape((b, n, n_head, d))?
            .transpose(1, 2)?
            .contiguous()?) // (b, H, n, d)
    };
    let (qh, kh, vh) = (heads(q, tq)?, heads(k, tk)?, heads(v, tk)?);
    let scores = (qh.matmul(&kh.t()?.contiguous()?)? * (1.0 / (d as f64).sqrt()))?; // (b, H, tq, tk)
    let mask: Vec<f32> = (0..tq)
        .flat_map(|i| {
            (0..tk).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    let mask = Tensor::from_vec(mask, (tq, tk), q.device())?.to_dtype(q.dtype())?;
    let mut att = softmax_last_dim(&scores.broadcast_add(&mask)?)?; // (b, H, tq, tk), rows sum to 1
    if let Some((p, rng)) = dropout {
        att = crate::nn::dropout(&att, p, rng)?;
    }
    let y = att.matmul(&vh)?; // (b, H, tq, d)
    Ok(y.transpose(1, 2)?.contiguous()?.reshape((b, tq, c))?) // (b, tq, C)
}

/// Where the rows of one attention call live: sequences of `nq` queries (row stride `q_stride`) and `nk`
/// keys / values (row stride `kv_stride`), `heads` heads of `d` channels; query i sits at position nk − nq + i.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    nq: usize,
    nk: usize,
    heads: usize,
    d: usize,
    q_stride: usize,
    kv_stride: usize,
}

/// Scales row `s` by `scale` and turns its first `lim` entries into softmax weights, zeroing the rest (the
/// causal mask).
#[inline(always)]
fn softmax_prefix(s: &mut [f32], lim: usize, scale: f32) {
    let (head, tail) = s.split_at_mut(lim);
    head.iter_mut().for_each(|v| *v *= scale);
    let max = max_lanes(head);
    head.iter_mut().for_each(|v| *v = exp_approx(*v - max));
    let inv = 1.0 / sum_lanes(head);
    head.iter_mut().for_each(|v| *v *= inv);
    tail.fill(0.0);
}

/// Causal softmax of every row of the scores `s` (`nq` rows of `nk`), row i keeping keys 0 ..= offset + i.
#[inline(always)]
fn causal_softmax_rows(s: &mut [f32], nk: usize, offset: usize, scale: f32) {
    for (i, row) in s.chunks_exact_mut(nk).enumerate() {
        softmax_prefix(row, offset + i + 1, scale);
    }
}

simd_dispatch! {
    /// [`causal_softmax_rows`], on the widest vectors [`super::isa::isa`] allows.
    fn causal_softmax_rows_fast(s: &mut [f32], nk: usize, offset: usize, scale: f32) = causal_softmax_rows;
}

/// The attention forward on the CPU, per sequence and head with small matrix products: S = Q Kᵀ, P = causal
/// softmax(S/√d), Y = P V, for `b` sequences. `q`, `k`, `v` start at the first element of head 0 of row 0;
/// returns the output `(b·nq, heads·d)`.
fn attention_forward_cpu(q: &[f32], k: &[f32], v: &[f32], g: Geometry, b: usize) -> Vec<f32> {
    let c = g.heads * g.d;
    let scale = 1.0 / (g.d as f32).sqrt();
    let offset = g.nk - g.nq;
    par_filled(b * g.nq * c, g.nq * c, |bi, out| {
        let mut s = vec![0f32; g.nq * g.nk];
        for h in 0..g.heads {
            let qb = &q[bi * g.nq * g.q_stride + h * g.d..];
            let kb = &k[bi * g.nk * g.kv_stride + h * g.d..];
            let vb = &v[bi * g.nk * g.kv_stride + h * g.d..];
            // S (nq × nk) = Q (nq × d) · Kᵀ (d × nk)
            let (qs, ks) = ((g.q_stride, 1), (1, g.kv_stride));
            sgemm(
                (g.nq, g.nk, g.d),
                &mut s,
                g.nk,
                false,
                qb,
                qs,
                kb,
                ks,
                false,
            );
            causal_softmax_rows_fast(&mut s, g.nk, offset, scale);
            // Y (nq × d) = P (nq × nk) · V (nk × d), into the head's columns
            let (ps, vs) = ((g.nk, 1), (g.kv_stride, 1));
            sgemm(
                (g.nq, g.d, g.nk),
                &mut out[h * g.d..],
                c,
                false,
                &s,
                ps,
                vb,
                vs,
                false,
            );
        }
    })
}

/// The backward of the packed causal attention on the CPU: `qkv: (b·t, 3C)`, `dy: (b·t, C)` → d qkv. Per
/// sequence and head, with P recomputed: dV = Pᵀ dY, dP = dY Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)) / √d,
/// dQ = dS K, dK = dSᵀ Q. Masked entries have P = 0, hence dS = 0: no gradient flows to later positions.
fn attention_backward_cpu(
    qkv: &[f32],
    dy: &[f32],
    b: usize,
    t: usize,
    heads: usize,
    d: usize,
) -> Vec<f32> {
    let c = heads * d;
    let c3 = 3 * c;
    let scale = 1.0 / (d as f32).sqrt();
    par_filled(b * t * c3, t * c3, |bi, dst| {
        let src = &qkv[bi * t * c3..(bi + 1) * t * c3];
        let dyb = &dy[bi * t * c..(bi + 1) * t * c];
        let (mut p, mut dp) = (vec![0f32; t * t], vec![0f32; t * t]);
        let (rows, cols) = ((c3, 1), (1, c3)); // a head's block of qkv, and its transpose
        let (sq, st) = ((t, 1), (1, t)); // a t × t matrix, and its transpose
        for h in 0..heads {
            let (qo, ko, vo) = (h * d, c + h * d, 2 * c + h * d);
            let dyh = &dyb[h * d..];
            sgemm(
                (t, t, d),
                &mut p,
                t,
                false,
                &src[qo..],
                rows,
                &src[ko..],
                cols,
                false,
            );
            causal_softmax_rows_fast(&mut p, t, 0, scale);
            sgemm(
                (t, d, t),
                &mut dst[vo..],
                c3,
                false,
                &p,
                st,
                dyh,
                (c, 1),
                false,
            ); // dV
            sgemm(
                (t, t, d),
                &mut dp,
                t,
                false,
                dyh,
                (c, 1),
                &src[vo..],
                cols,
                false,
            ); // dP
            softmax_grad_rows_fast(&p, &mut dp, t, scale); // dS (scaled)
            sgemm(
                (t, d, t),
                &mut dst[qo..],
                c3,
                false,
                &dp,
                sq,
                &src[ko..],
                rows,
                false,
            ); // dQ
            sgemm(
                (t, d, t),
                &mut dst[ko..],
                c3,
                false,
                &dp,
                st,
                &src[qo..],
                rows,
                false,
            ); // dK
        }
    })
}

/// The CPU op behind [`causal_attention`].
struct CausalAttentionOp {
    t: usize,
    n_head: usize,
}

impl CustomOp1 for CausalAttentionOp {
    fn name(&self) -> &'static str {
        "dgm-causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = cpu_f32(self.name(), s, l)?;
        let (m, c3) = l.shape().dims2()?;
        let c = c3 / 3;
        let g = Geometry {
            nq: self.t,
            nk: self.t,
            heads: self.n_head,
            d: c / self.n_head,
            q_stride: c3,
            kv_stride: c3,
        };
        let y = attention_forward_cpu(qkv, &qkv[c..], &qkv[2 * c..], g, m / self.t);
        Ok((CpuStorage::F32(y), Shape::from((m, c))))
    }

    fn bwd(&self, qkv: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (m, c3) = qkv.dims2()?;
        let (b, heads) = (m / self.t, self.n_head);
        let d = c3 / 3 / heads;
        let name = "dgm-causal-attention backward";
        let dqkv = with_data(name, qkv, |q| {
            with_data(name, grad, |g| {
                attention_backward_cpu(q, g, b, self.t, heads, d)
            })
        })
        .and_then(|r| r)
        .map_err(to_candle)?;
        Ok(Some(Tensor::from_vec(dqkv, (m, c3), qkv.device())?))
    }
}

/// The forward-only CPU op of [`cached_attention`]: `(q, k, v)`.
struct CachedAttentionOp {
    n_head: usize,
}

impl CustomOp3 for CachedAttentionOp {
    fn name(&self) -> &'static str {
        "dgm-cached-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (q, k, v) = (
            cpu_f32(name, s1, l1)?,
            cpu_f32(name, s2, l2)?,
            cpu_f32(name, s3, l3)?,
        );
        let (b, nq, c) = l1.shape().dims3()?;
        let nk = l2.shape().dims3()?.1;
        let g = Geometry {
            nq,
            nk,
            heads: self.n_head,
            d: c / self.n_head,
            q_stride: c,
            kv_stride: c,
        };
        let y = attention_forward_cpu(q, k, v, g, b);
        Ok((CpuStorage::F32(y), Shape::from((b, nq, c))))
    }
}

/// Attention of new queries `q: (b, tq, C)` over all keys and values so far, `k`, `v`: `(b, tk, C)` (the
/// cached positions followed by the new ones, tk ≥ tq): query i sits at position tk − tq + i and sees keys
/// 0 ..= tk − tq + i; → `(b, tq, C)`. Inference only (no gradient on the CPU path).
pub fn cached_attention(q: &Tensor, k: &Tensor, v: &Tensor, n_head: usize) -> Result<Tensor> {
    let (b, tq, c) = q.dims3()?;
    let (bk, tk, ck) = k.dims3()?;
    if n_head == 0
        || !c.is_multiple_of(n_head)
        || bk != b
        || ck != c
        || k.dims() != v.dims()
        || tk < tq
    {
        return Err(Error::invalid(
            "cached attention",
            format!(
                "q {:?}, k {:?}, v {:?} with {n_head} heads do not fit together",
                q.dims(),
                k.dims(),
                v.dims()
            ),
        ));
    }
    if crate::nn::use_cpu_kernel(q) {
        return Ok(q.contiguous()?.apply_op3_no_bwd(
            &k.contiguous()?,
            &v.contiguous()?,
            &CachedAttentionOp { n_head },
        )?);
    }
    attention_composed(q, k, v, n_head, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::testing::{assert_close, value_and_grads};
    use crate::nn::rel_err;
    use candle_core::Device;

    #[test]
    fn every_instruction_set_build_gives_the_same_bits() {
        let (nq, nk) = (5, 37); // odd width: vector bodies and scalar tails
        let mut rng = Rng::new(13);
        let s0: Vec<f32> = rng.normal_vec(nq * nk).iter().map(|v| v * 3.0).collect();
        let dp0 = rng.normal_vec(nq * nk);
        crate::nn::kernels::testing::assert_same_bits_on_every_isa("attention softmax", || {
            let mut p = s0.clone();
            causal_softmax_rows_fast(&mut p, nk, nk - nq, 0.125);
            let mut dp = dp0.clone();
            softmax_grad_rows_fast(&p, &mut dp, nk, 0.125);
            [p, dp].concat()
        });
    }

    /// A random packed projection for `b` sequences of `t` positions, C = heads · d.
    fn random_qkv(b: usize, t: usize, c: usize, seed: u64) -> Result<Tensor> {
        Ok((Rng::new(seed).randn((b * t, 3 * c), &Device::Cpu)? * 1.5)?)
    }

    #[test]
    fn causal_attention_kernel_matches_composed_ops() -> Result<()> {
        for (b, t, heads, d, seed) in [
            (2, 7, 2, 4, 1),
            (3, 64, 4, 32, 2),
            (1, 1, 1, 3, 3),
            (2, 9, 3, 5, 4),
        ] {
            let c = heads * d;
            let qkv = random_qkv(b, t, c, seed)?;
            let r = Rng::new(seed + 10).randn((b * t, c), &Device::Cpu)?;
            let ours = value_and_grads(
                |x| causal_attention(&x[0], t, heads),
                std::slice::from_ref(&qkv),
                &r,
            )?;
            let stock = value_and_grads(
                |x| causal_attention_stock(&x[0], t, heads, None),
                std::slice::from_ref(&qkv),
                &r,
            )?;
            assert_close(
                &ours,
                &stock,
                &["y", "dqkv"],
                1e-5,
                &format!("b {b} t {t} heads {heads} d {d}"),
            )?;
        }
        Ok(())
    }

    #[test]
    fn attention_is_causal_and_the_first_position_copies_its_value() -> Result<()> {
        let (b, t, heads, d) = (2, 6, 2, 4);
        let c = heads * d;
        let qkv = random_qkv(b, t, c, 5)?;
        let y = causal_attention(&qkv, t, heads)?;
        // position 0 sees only itself: its output is its own value vector
        let y0 = y.narrow(0, 0, 1)?;
        let v0 = qkv.narrow(0, 0, 1)?.narrow(1, 2 * c, c)?;
        assert!(rel_err(&y0, &v0)? < 1e-6);
        // changing the last position leaves every earlier output unchanged (bit for bit)
        let mut vals = qkv.to_vec2::<f32>()?;
        vals[t - 1].iter_mut().for_each(|v| *v += 1.0);
        let y2 = causal_attention(&Tensor::new(vals, &Device::Cpu)?, t, heads)?;
        let before = |y: &Tensor| -> Result<Vec<f32>> {
            Ok(y.narrow(0, 0, t - 1)?.flatten_all()?.to_vec1::<f32>()?)
        };
        assert_eq!(before(&y)?, before(&y2)?);
        assert_ne!(
            y.narrow(0, t - 1, 1)?.flatten_all()?.to_vec1::<f32>()?,
            y2.narrow(0, t - 1, 1)?.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn cached_attention_over_a_prefix_equals_the_full_causal_attention() -> Result<()> {
        let (b, t, heads, d) = (2, 10, 2, 4);
        let c = heads * d;
        let qkv = random_qkv(b, t, c, 6)?;
        let full = causal_attention(&qkv, t, heads)?.reshape((b, t, c))?;
        let q3 = qkv.reshape((b, t, 3 * c))?;
        let part = |i: usize, from: usize, len: usize| -> Result<Tensor> {
            Ok(q3.narrow(2, i * c, c)?.narrow(1, from, len)?.contiguous()?)
        };
        // new positions s..e attend to keys 0..e, for both the CPU kernel and the composed ops
        for (s, e) in [(0, 10), (3, 4), (4, 9), (9, 10)] {
            let (q, k, v) = (part(0, s, e - s)?, part(1, 0, e)?, part(2, 0, e)?);
            let want = full.narrow(1, s, e - s)?;
            assert!(rel_err(&cached_attention(&q, &k, &v, heads)?, &want)? < 1e-6);
            assert!(rel_err(&attention_composed(&q, &k, &v, heads, None)?, &want)? < 1e-5);
        }
        assert!(
            cached_attention(&part(0, 0, 5)?, &part(1, 0, 4)?, &part(2, 0, 4)?, heads).is_err()
        );
        Ok(())
    }
}
