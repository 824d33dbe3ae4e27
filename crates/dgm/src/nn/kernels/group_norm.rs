//! Group normalisation, optionally fused with SiLU. On the CPU in f32 it runs as one dgm kernel (forward
//! and backward); elsewhere it is composed from candle's stock ops.
//!
//! The CPU kernel works on one (batch item, group) slab at a time, in parallel over slabs: one pass for
//! the slab's mean and variance (sums in f32 lanes, combined in f64), one pass writing the output. The
//! statistics are kept with the op for its backward (recomputed, to the same bits, if the backward runs
//! twice), which makes one pass for the gradient of the affine output (kept in the dx buffer) with the group
//! sums, and one pass turning that into dx in place. A slab
//! stays in cache between its passes, so each tensor is read from memory about once. Sums run in a fixed
//! order inside each slab and the per-channel parameter gradients are reduced over the batch in a fixed
//! order, so results do not depend on the number of threads.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_f32;
use super::isa::simd_dispatch;
use super::math::exp_approx;
use crate::Result;

/// `y = γ ⊙ (x − μ_g) / √(σ²_g + ε) + β` over groups of channels of `x: (b, c, …)`, then `silu(y)` when
/// `silu` is set. `gamma`, `beta`: `(c,)`.
pub fn group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    if crate::nn::use_cpu_kernel(x) {
        group_norm_cpu(x, gamma, beta, groups, eps, silu)
    } else {
        group_norm_stock(x, gamma, beta, groups, eps, silu)
    }
}

/// The reference: candle's stock ops.
pub fn group_norm_stock(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (b, c) = (dims[0], dims[1]);
    let xg = x.reshape((b, groups, ()))?; // (b, g, c/g · spatial)
    let mean = xg.mean_keepdim(2)?;
    let xc = xg.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(2)?;
    let xn = xc
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape(dims.as_slice())?;
    let mut shape = vec![1, c];
    shape.resize(dims.len(), 1);
    let y = xn
        .broadcast_mul(&gamma.reshape(shape.as_slice())?)?
        .broadcast_add(&beta.reshape(shape.as_slice())?)?;
    Ok(if silu { y.silu()? } else { y })
}

/// dgm's CPU kernel for [`group_norm`] (f32 CPU tensors of any layout; anything else is an error). Called
/// directly by the tests; [`group_norm`] picks it when [`crate::nn::use_cpu_kernel`] says so.
pub(crate) fn group_norm_cpu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let op = GroupNormOp {
        cfg: GroupNormCfg { groups, eps, silu },
        stats: std::sync::Mutex::new(None),
    };
    Ok(x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?)
}

/// Below this many elements a pass runs on the calling thread.
const PAR_MIN_ELEMS: usize = 1 << 15;
/// Roughly how many elements one parallel task should cover (several slabs when slabs are small).
const PAR_TASK_ELEMS: usize = 1 << 14;
/// Lanes of the f32 accumulators in the inner loops (independent sums the compiler can vectorise: one
/// AVX-512 register; the same order on every build). Each lane's total is added in f64.
const LANES: usize = 16;

/// The settings of a group norm.
#[derive(Clone, Copy, Debug)]
struct GroupNormCfg {
    groups: usize,
    eps: f64,
    silu: bool,
}

/// Forward op over (x `(b, c, …)`, γ `(c,)`, β `(c,)`); keeps each slab's (mean, 1/σ) for the backward.
#[derive(Debug)]
struct GroupNormOp {
    cfg: GroupNormCfg,
    stats: std::sync::Mutex<Option<Vec<(f32, f32)>>>,
}

/// The slab geometry of `x: (b, c, …)`: `b · groups` slabs of `c/groups` channels of `hw` positions each.
#[derive(Clone, Copy, Debug)]
struct Slabs {
    c: usize,
    groups: usize,
    /// Channels per group.
    cg: usize,
    /// Positions per channel (product of the spatial dims).
    hw: usize,
}

impl Slabs {
    fn new(x: &Layout, groups: usize, params: &[usize], op: &str) -> candle_core::Result<Self> {
        let dims = x.dims();
        if dims.len() < 2 {
            candle_core::bail!("{op}: input {dims:?} needs at least (b, c)");
        }
        let c = dims[1];
        if groups == 0 || !c.is_multiple_of(groups) {
            candle_core::bail!("{op}: {c} channels do not split into {groups} groups");
        }
        if let Some(&p) = params.iter().find(|&&p| p != c) {
            candle_core::bail!("{op}: {p} affine parameters for {c} channels");
        }
        Ok(Self {
            c,
            groups,
            cg: c / groups,
            hw: dims[2..].iter().product(),
        })
    }

    /// Elements per slab.
    fn len(&self) -> usize {
        self.cg * self.hw
    }

    /// The channels `[from, to)` of slab `i`.
    fn channels(&self, i: usize) -> std::ops::Range<usize> {
        let from = (i % self.groups) * self.cg;
        from..from + self.cg
    }
}

/// Runs `f(i, slab i of out)` over the slabs of `out` (each `slab` long, `slab > 0`), in parallel when
/// there is enough work, and returns the results in slab order.
fn for_slabs<T: Send>(
    out: &mut [f32],
    slab: usize,
    f: impl Fn(usize, &mut [f32]) -> T + Send + Sync,
) -> Vec<T> {
    if out.len() < PAR_MIN_ELEMS {
        out.chunks_exact_mut(slab)
            .enumerate()
            .map(|(i, o)| f(i, o))
            .collect()
    } else {
        out.par_chunks_exact_mut(slab)
            .enumerate()
            .with_min_len((PAR_TASK_ELEMS / slab).max(1))
            .map(|(i, o)| f(i, o))
            .collect()
    }
}

/// σ(y) = 1 / (1 + e^−y).
#[inline(always)]
fn sigmoid(y: f32) -> f32 {
    1.0 / (1.0 + exp_approx(-y))
}

/// The mean and 1/√(σ² + ε) of a slab, from sums of the values shifted by the first one (which keeps the
/// variance accurate when the mean is large).
#[inline(always)]
fn slab_stats(x: &[f32], eps: f64) -> (f32, f32) {
    let Some(&first) = x.first() else {
        return (0.0, (1.0 / eps.sqrt()) as f32);
    };
    let (blocks, rest) = x.as_chunks::<LANES>();
    let (mut s, mut q) = ([0f32; LANES], [0f32; LANES]);
    for blk in blocks {
        for ((s, q), &v) in s.iter_mut().zip(q.iter_mut()).zip(blk) {
            let v = v - first;
            *s += v;
            *q += v * v;
        }
    }
    let (mut sum, mut sq) = (0f64, 0f64);
    for (&s, &q) in s.iter().zip(&q) {
        sum += f64::from(s);
        sq += f64::from(q);
    }
    for &v in rest {
        let v = f64::from(v - first);
        sum += v;
        sq += v * v;
    }
    let shift = f64::from(first);
    let m = x.len() as f64;
    let d = sum / m; // mean − shift
    let var = (sq / m - d * d).max(0.0);
    ((shift + d) as f32, (1.0 / (var + eps).sqrt()) as f32)
}

/// The forward pass over one slab: `x`, `out` are `cg · hw` long, `gamma`, `beta` the slab's `cg` channels.
#[inline(always)]
fn forward_slab<const SILU: bool>(
    x: &[f32],
    out: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    hw: usize,
    eps: f64,
) -> (f32, f32) {
    let (mean, rstd) = slab_stats(x, eps);
    for (((o, xc), &g), &b) in out
        .chunks_exact_mut(hw)
        .zip(x.chunks_exact(hw))
        .zip(gamma)
        .zip(beta)
    {
        let a = g * rstd;
        for (o, &v) in o.iter_mut().zip(xc) {
            let y = (v - mean) * a + b;
            *o = if SILU { y * sigmoid(y) } else { y };
        }
    }
    (mean, rstd)
}

/// (Σ a, Σ a·(x − shift)) over one channel: f32 lanes, added in f64. With `SILU`, `a` is first computed
/// in place from the upstream gradient d: a = d · silu′(y), y = (x − shift)·k + b.
#[inline(always)]
fn channel_sums<const SILU: bool>(
    a: &mut [f32],
    x: &[f32],
    shift: f32,
    k: f32,
    b: f32,
) -> (f64, f64) {
    let mut s0 = [0f32; LANES];
    let mut s1 = [0f32; LANES];
    let silu_grad = |d: &mut f32, v: f32| {
        if SILU {
            let y = (v - shift) * k + b;
            let s = sigmoid(y);
            *d *= s * (1.0 + y * (1.0 - s));
        }
    };
    let (ab, ar) = a.as_chunks_mut::<LANES>();
    let (xb, xr) = x.as_chunks::<LANES>();
    for (av, xv) in ab.iter_mut().zip(xb) {
        for (((s0, s1), a), &v) in s0.iter_mut().zip(s1.iter_mut()).zip(av).zip(xv) {
            silu_grad(a, v);
            *s0 += *a;
            *s1 += *a * (v - shift);
        }
    }
    let (mut sum, mut sum_x) = (0f64, 0f64);
    for (&a, &b) in s0.iter().zip(&s1) {
        sum += f64::from(a);
        sum_x += f64::from(b);
    }
    for (a, &v) in ar.iter_mut().zip(xr) {
        silu_grad(a, v);
        sum += f64::from(*a);
        sum_x += f64::from(*a * (v - shift));
    }
    (sum, sum_x)
}

/// The backward pass over one slab: writes dx into `dx` and returns, per channel, [Σ dy, Σ dy·x̂] (the
/// slab's shares of dβ and dγ), where dy is the gradient at the affine output y = γx̂ + β.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_slab<const SILU: bool>(
    x: &[f32],
    dout: &[f32],
    dx: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    hw: usize,
    eps: f64,
    stats: Option<(f32, f32)>,
) -> Vec<[f64; 2]> {
    let (mean, rstd) = stats.unwrap_or_else(|| slab_stats(x, eps));
    let r = f64::from(rstd);
    let mut sums = Vec::with_capacity(gamma.len());
    // Σ dx̂ and Σ dx̂·x̂ over the slab, with dx̂ = γ·dy
    let (mut s_dxh, mut s_dxh_xh) = (0f64, 0f64);
    for ((((o, xc), dc), &g), &b) in dx
        .chunks_exact_mut(hw)
        .zip(x.chunks_exact(hw))
        .zip(dout.chunks_exact(hw))
        .zip(gamma)
        .zip(beta)
    {
        // dy = dout · silu′(y), kept in dx until the last pass
        o.copy_from_slice(dc);
        let (s_dy, s_dy_xc) = channel_sums::<SILU>(o, xc, mean, g * rstd, b);
        let s_dy_xh = s_dy_xc * r;
        s_dxh += f64::from(g) * s_dy;
        s_dxh_xh += f64::from(g) * s_dy_xh;
        sums.push([s_dy, s_dy_xh]);
    }
    // dx = rstd·(γ·dy − mean(dx̂) − x̂·mean(dx̂·x̂)) = (rstd·γ)·dy + k0 + k2·(x − μ)
    let m = x.len() as f64;
    let k0 = (-r * s_dxh / m) as f32;
    let k2 = (-r * r * s_dxh_xh / m) as f32;
    for ((o, xc), &g) in dx.chunks_exact_mut(hw).zip(x.chunks_exact(hw)).zip(gamma) {
        let k1 = rstd * g;
        for (o, &v) in o.iter_mut().zip(xc) {
            *o = k1 * *o + k0 + k2 * (v - mean);
        }
    }
    sums
}

simd_dispatch! {
    /// [`forward_slab`] with SiLU, on the widest vectors [`super::isa::isa`] allows.
    fn forward_slab_silu(
        x: &[f32],
        out: &mut [f32],
        gamma: &[f32],
        beta: &[f32],
        hw: usize,
        eps: f64,
    ) -> (f32, f32) = forward_slab::<true>;
}

simd_dispatch! {
    /// [`forward_slab`] without SiLU, on the widest vectors [`super::isa::isa`] allows.
    fn forward_slab_plain(
        x: &[f32],
        out: &mut [f32],
        gamma: &[f32],
        beta: &[f32],
        hw: usize,
        eps: f64,
    ) -> (f32, f32) = forward_slab::<false>;
}

simd_dispatch! {
    /// [`backward_slab`] with SiLU, on the widest vectors [`super::isa::isa`] allows.
    #[allow(clippy::too_many_arguments)]
    fn backward_slab_silu(
        x: &[f32],
        dout: &[f32],
        dx: &mut [f32],
        gamma: &[f32],
        beta: &[f32],
        hw: usize,
        eps: f64,
        stats: Option<(f32, f32)>,
    ) -> Vec<[f64; 2]> = backward_slab::<true>;
}

simd_dispatch! {
    /// [`backward_slab`] without SiLU, on the widest vectors [`super::isa::isa`] allows.
    #[allow(clippy::too_many_arguments)]
    fn backward_slab_plain(
        x: &[f32],
        dout: &[f32],
        dx: &mut [f32],
        gamma: &[f32],
        beta: &[f32],
        hw: usize,
        eps: f64,
        stats: Option<(f32, f32)>,
    ) -> Vec<[f64; 2]> = backward_slab::<false>;
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "dgm-group-norm"
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
        let (x, gamma, beta) = (
            cpu_f32(name, s1, l1)?,
            cpu_f32(name, s2, l2)?,
            cpu_f32(name, s3, l3)?,
        );
        let sl = Slabs::new(l1, self.cfg.groups, &[gamma.len(), beta.len()], name)?;
        let mut out = vec![0f32; x.len()];
        let len = sl.len();
        if len > 0 {
            let (hw, eps, silu) = (sl.hw, self.cfg.eps, self.cfg.silu);
            let stats = for_slabs(&mut out, len, |i, o| {
                let ch = sl.channels(i);
                let (xs, g, b) = (&x[i * len..(i + 1) * len], &gamma[ch.clone()], &beta[ch]);
                if silu {
                    forward_slab_silu(xs, o, g, b, hw, eps)
                } else {
                    forward_slab_plain(xs, o, g, b, hw, eps)
                }
            });
            if let Ok(mut cell) = self.stats.lock() {
                *cell = Some(stats);
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c) = (x.elem_count(), gamma.elem_count());
        let gamma_beta = Tensor::cat(&[&gamma.flatten_all()?, &beta.flatten_all()?], 0)?;
        // the forward's statistics, once (a second backward recomputes them, to the same bits)
        let stats = self.stats.lock().ok().and_then(|mut s| s.take());
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &grad.contiguous()?,
            &gamma_beta,
            &GroupNormGrad {
                cfg: self.cfg,
                stats,
            },
        )?; // (n + 2c,): dx, dγ, dβ
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        // copies, so that holding the small parameter gradients does not keep dx's buffer alive
        let dgamma = packed
            .narrow(0, n, c)?
            .force_contiguous()?
            .reshape(gamma.shape())?;
        let dbeta = packed
            .narrow(0, n + c, c)?
            .force_contiguous()?
            .reshape(beta.shape())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// The backward pass of [`GroupNormOp`] over (x, upstream gradient, [γ; β]), packed into one flat
/// `(n + 2c,)` tensor: dx, then dγ, then dβ; with the forward's per-slab statistics when it has them.
struct GroupNormGrad {
    cfg: GroupNormCfg,
    stats: Option<Vec<(f32, f32)>>,
}

impl CustomOp3 for GroupNormGrad {
    fn name(&self) -> &'static str {
        "dgm-group-norm-grad"
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
        let (x, dout, gamma_beta) = (
            cpu_f32(name, s1, l1)?,
            cpu_f32(name, s2, l2)?,
            cpu_f32(name, s3, l3)?,
        );
        let (gamma, beta) = gamma_beta.split_at(gamma_beta.len() / 2);
        let sl = Slabs::new(l1, self.cfg.groups, &[gamma.len(), beta.len()], name)?;
        if dout.len() != x.len() {
            candle_core::bail!("{name}: {} gradients for {} inputs", dout.len(), x.len());
        }
        let (n, c, len) = (x.len(), sl.c, sl.len());
        let mut out = vec![0f32; n + 2 * c];
        let (dx, dparams) = out.split_at_mut(n);
        if len > 0 {
            let (hw, eps, silu) = (sl.hw, self.cfg.eps, self.cfg.silu);
            let stats = self.stats.as_deref().filter(|s| s.len() * len == n);
            let sums = for_slabs(dx, len, |i, o| {
                let st = stats.map(|s| s[i]);
                let ch = sl.channels(i);
                let span = i * len..(i + 1) * len;
                let (xs, ds) = (&x[span.clone()], &dout[span]);
                let (g, b) = (&gamma[ch.clone()], &beta[ch]);
                if silu {
                    backward_slab_silu(xs, ds, o, g, b, hw, eps, st)
                } else {
                    backward_slab_plain(xs, ds, o, g, b, hw, eps, st)
                }
            });
            // dγ, dβ: each channel's slab shares summed over the batch, in batch order
            let (dgamma, dbeta) = dparams.split_at_mut(c);
            for (ch, (dg, db)) in dgamma.iter_mut().zip(dbeta.iter_mut()).enumerate() {
                let (group, j) = (ch / sl.cg, ch % sl.cg);
                let (mut sg, mut sb) = (0f64, 0f64);
                for batch in sums.chunks_exact(sl.groups) {
                    let [s_dy, s_dy_xh] = batch[group][j];
                    sb += s_dy;
                    sg += s_dy_xh;
                }
                *dg = sg as f32;
                *db = sb as f32;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n + 2 * c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::kernels::isa::{with_isa, Isa};
    use crate::nn::rel_err;
    use crate::rng::Rng;
    use candle_core::{Device, Var};

    type Grads = [Tensor; 3];

    /// max |a − b| / max(max |b|, 1e-6).
    /// The output and the gradients of (x, γ, β) for `loss = Σ out ⊙ r`, with x taken through `view`.
    fn run(
        f: fn(&Tensor, &Tensor, &Tensor, usize, f64, bool) -> Result<Tensor>,
        vars: &[Var; 3],
        view: &dyn Fn(&Tensor) -> Result<Tensor>,
        r: &Tensor,
        groups: usize,
        silu: bool,
    ) -> Result<(Tensor, Grads)> {
        let x = view(vars[0].as_tensor())?;
        let out = f(
            &x,
            vars[1].as_tensor(),
            vars[2].as_tensor(),
            groups,
            1e-5,
            silu,
        )?;
        let grads = (&out * r)?.sum_all()?.backward()?;
        let grad = |v: &Var| -> Tensor {
            let Some(t) = grads.get(v.as_tensor()) else {
                panic!("a gradient is missing");
            };
            t.clone()
        };
        Ok((out, [grad(&vars[0]), grad(&vars[1]), grad(&vars[2])]))
    }

    fn inputs(base: &[usize], c: usize, seed: u64) -> Result<[Var; 3]> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(seed);
        // an offset and scale so that the mean matters
        let x = ((rng.randn(base, &dev)? * 1.7)? + 0.4)?;
        let gamma = (rng.randn(c, &dev)? + 1.0)?;
        let beta = rng.randn(c, &dev)?;
        Ok([
            Var::from_tensor(&x)?,
            Var::from_tensor(&gamma)?,
            Var::from_tensor(&beta)?,
        ])
    }

    fn check(
        base: &[usize],
        c: usize,
        groups: usize,
        view: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        for silu in [false, true] {
            let vars = inputs(base, c, 11)?;
            let shape = view(vars[0].as_tensor())?.dims().to_vec();
            let r = Rng::new(12).randn(shape.as_slice(), &Device::Cpu)?;
            let (o1, g1) = run(group_norm_cpu, &vars, view, &r, groups, silu)?;
            let (o2, g2) = run(group_norm_stock, &vars, view, &r, groups, silu)?;
            let e = rel_err(&o1, &o2)?;
            assert!(e < 1e-4, "{shape:?} silu={silu}: output rel err {e}");
            for (name, (a, b)) in ["dx", "dgamma", "dbeta"].iter().zip(g1.iter().zip(&g2)) {
                assert_eq!(a.dims(), b.dims());
                let e = rel_err(a, b)?;
                assert!(e < 1e-4, "{shape:?} silu={silu}: {name} rel err {e}");
            }
        }
        Ok(())
    }

    fn same(x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }

    #[test]
    fn every_instruction_set_build_gives_the_same_bits_as_the_baseline_build() {
        let mut rng = Rng::new(77);
        let (cg, hw) = (3, 37); // odd sizes: vector bodies and scalar tails
        let x: Vec<f32> = rng
            .normal_vec(cg * hw)
            .iter()
            .map(|v| v * 3.0 + 1.5)
            .collect();
        let dout = rng.normal_vec(cg * hw);
        let (g, b) = (rng.normal_vec(cg), rng.normal_vec(cg));
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let mut o1 = vec![0f32; cg * hw];
        let stats = forward_slab::<true>(&x, &mut o1, &g, &b, hw, 1e-5);
        let mut d1 = vec![0f32; cg * hw];
        let s1 = backward_slab::<true>(&x, &dout, &mut d1, &g, &b, hw, 1e-5, None);
        for i in Isa::available() {
            let (mut o2, mut d2) = (vec![0f32; cg * hw], vec![0f32; cg * hw]);
            let s2 = with_isa(i, || {
                // the statistics kept from the forward give the same bits as recomputing them
                let kept = forward_slab_silu(&x, &mut o2, &g, &b, hw, 1e-5);
                assert_eq!(kept, stats);
                backward_slab_silu(&x, &dout, &mut d2, &g, &b, hw, 1e-5, Some(kept))
            });
            assert_eq!(bits(&o1), bits(&o2), "{i:?}");
            assert_eq!(bits(&d1), bits(&d2), "{i:?}");
            assert_eq!(s1, s2, "{i:?}");
        }
    }

    #[test]
    fn matches_stock_on_4d_inputs() -> Result<()> {
        check(&[1, 4, 3, 5], 4, 2, &same)?;
        check(&[3, 6, 7, 1], 6, 3, &same)?;
        check(&[2, 8, 9, 9], 8, 8, &same)?;
        check(&[2, 8, 9, 9], 8, 1, &same)?;
        // large enough to run in parallel
        check(&[4, 16, 24, 24], 16, 4, &same)
    }

    #[test]
    fn matches_stock_on_rank_2_and_3_inputs() -> Result<()> {
        check(&[2, 6, 10], 6, 3, &same)?;
        check(&[5, 6], 6, 2, &same)
    }

    #[test]
    fn matches_stock_on_non_contiguous_inputs() -> Result<()> {
        // (2, 10, 6) → (2, 6, 10), transposed
        check(&[2, 10, 6], 6, 2, &|x: &Tensor| Ok(x.transpose(1, 2)?))?;
        // (3, 8, 5, 7) → (3, 8, 5, 4), narrowed along the last dim
        check(&[3, 8, 5, 7], 8, 4, &|x: &Tensor| Ok(x.narrow(3, 1, 4)?))
    }

    #[test]
    fn handles_constant_slabs_and_rejects_bad_groups() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::full(3f32, (2, 4, 3), &dev)?;
        let (g, b) = (
            Tensor::ones(4, candle_core::DType::F32, &dev)?,
            Tensor::zeros(4, candle_core::DType::F32, &dev)?,
        );
        let y = group_norm_cpu(&x, &g, &b, 2, 1e-5, true)?;
        let e = rel_err(&y, &group_norm_stock(&x, &g, &b, 2, 1e-5, true)?)?;
        assert!(e < 1e-4);
        assert!(group_norm_cpu(&x, &g, &b, 3, 1e-5, false).is_err());
        assert!(group_norm_cpu(&x, &g.narrow(0, 0, 3)?, &b, 2, 1e-5, false).is_err());
        Ok(())
    }

    #[test]
    fn sigmoid_saturates_without_overflow() {
        assert!(sigmoid(-200.0) < 1e-37 && sigmoid(200.0) == 1.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }

    fn bits(t: &Tensor) -> Result<Vec<u32>> {
        Ok(t.flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .map(|v| v.to_bits())
            .collect())
    }

    /// The kernel's output and gradients, as bits, on a pool of `threads` threads.
    fn kernel_bits(threads: usize, silu: bool) -> Result<Vec<Vec<u32>>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        pool.install(|| -> Result<Vec<Vec<u32>>> {
            let vars = inputs(&[4, 32, 20, 20], 32, 5)?;
            let r = Rng::new(6).randn((4, 32, 20, 20), &Device::Cpu)?;
            let (out, grads) = run(group_norm_cpu, &vars, &same, &r, 8, silu)?;
            let mut v = vec![bits(&out)?];
            for g in &grads {
                v.push(bits(g)?);
            }
            Ok(v)
        })
    }

    #[test]
    fn bitwise_reproducible_across_calls_and_thread_counts() -> Result<()> {
        for silu in [false, true] {
            let one = kernel_bits(1, silu)?;
            let two = kernel_bits(2, silu)?;
            let again = kernel_bits(2, silu)?;
            assert!(
                one == two,
                "results depend on the thread count (silu={silu})"
            );
            assert!(two == again, "results differ between calls (silu={silu})");
        }
        Ok(())
    }

    #[test]
    fn a_second_backward_recomputes_the_kept_statistics_to_the_same_bits() -> Result<()> {
        let [x, gamma, beta] = inputs(&[2, 4, 5, 3], 4, 21)?;
        let y = group_norm_cpu(&x, &gamma, &beta, 2, 1e-5, true)?;
        let r = Rng::new(22).randn(y.dims(), &Device::Cpu)?;
        let loss = (&y * &r)?.sum_all()?;
        let (g1, g2) = (loss.backward()?, loss.backward()?); // the second finds no kept statistics
        for v in [&x, &gamma, &beta] {
            let (a, b) = (g1.get(v).map(bits), g2.get(v).map(bits));
            assert!(a.is_some() && a.transpose()? == b.transpose()?);
        }
        Ok(())
    }
}
