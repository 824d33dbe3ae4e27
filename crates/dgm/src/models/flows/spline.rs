//! Rational-quadratic spline transforms with linear tails (Durkan, Bekasov, Murray & Papamakarios 2019,
//! "Neural Spline Flows", arXiv:1906.04032), elementwise and differentiable in the spline parameters.
//!
//! On [−B, B] the map g is a monotone rational-quadratic spline of K bins; outside it is the identity
//! (log|dg/dx| = 0). The knots (x_k, y_k), k = 0..K, run from (−B, −B) to (B, B); the bin widths and
//! heights are softmaxes of the unnormalised parameters, each at least `min_bin_width` (`min_bin_height`)
//! of the interval, w = min + (1 − min·K)·softmax(θ) (§3.1). The interior derivatives are
//! δ_k = min_derivative + softplus(θ_k + c), c = log(exp(1 − min_derivative) − 1), and the boundary
//! derivatives are δ_0 = δ_K = 1, so that the spline joins the identity tails smoothly (the "linear tails"
//! of §3.3). The shift c (nflows pads the boundaries with it; here it also shifts the interior) makes
//! all-zero parameters the identity: uniform bins with every derivative 1, so a flow whose parameter
//! network starts at zero starts as the identity.
//!
//! In bin k, with w_k = x_{k+1} − x_k, h_k = y_{k+1} − y_k, s_k = h_k / w_k, ξ = (x − x_k)/w_k ∈ [0, 1] and
//! D = s_k + (δ_{k+1} + δ_k − 2 s_k) ξ(1 − ξ) (eq. 4 and appendix A):
//!
//!   y = y_k + h_k [s_k ξ² + δ_k ξ(1 − ξ)] / D,
//!   dy/dx = s_k² [δ_{k+1} ξ² + 2 s_k ξ(1 − ξ) + δ_k (1 − ξ)²] / D²            (eq. 5).
//!
//! The inverse (eqs. 6–8 and appendix A) solves a ξ² + b ξ + c = 0 for ξ ∈ [0, 1], with
//!
//!   a = h_k (s_k − δ_k) + (y − y_k)(δ_{k+1} + δ_k − 2 s_k),
//!   b = h_k δ_k − (y − y_k)(δ_{k+1} + δ_k − 2 s_k),
//!   c = −s_k (y − y_k),
//!
//! by the numerically stable root ξ = 2c / (−b − √(b² − 4ac)) (eq. 29), then x = x_k + ξ w_k and
//! log|dx/dy| = −log|dy/dx| at that ξ.
//!
//! Robustness (the NaN class of nflows issues #23 / #87): the spline branch is always evaluated on inputs
//! inside (−B, B) (positions outside, or exactly on ±B, are evaluated at 0 and then discarded by
//! `where_cond`), so the discarded branch is finite and contributes exact zeros to every gradient. The bin
//! of an input is the number of interior knots it is ≥ to, which lies in [0, K − 1] by construction.
//! Shapes: inputs `(b, d)`, parameters `(b, d, 3K − 1)`; f32 or f64 (both the same), any device.

use candle_core::{DType, Tensor, D};

use crate::{Error, Result};

/// Settings of a rational-quadratic spline with linear tails.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplineSettings {
    /// K, the number of bins on [−B, B] (≥ 1).
    pub bins: usize,
    /// B: the spline acts on [−B, B], the identity outside (finite, > 0).
    pub tail_bound: f64,
    /// The least width of a bin, as a fraction of 2B (> 0, and < 1/K).
    pub min_bin_width: f64,
    /// The least height of a bin, as a fraction of 2B (> 0, and < 1/K).
    pub min_bin_height: f64,
    /// The least derivative at an interior knot (> 0 and < 1).
    pub min_derivative: f64,
}

impl Default for SplineSettings {
    /// 8 bins on [−3, 3], least widths, heights and derivatives 1e-3.
    fn default() -> Self {
        SplineSettings {
            bins: 8,
            tail_bound: 3.0,
            min_bin_width: 1e-3,
            min_bin_height: 1e-3,
            min_derivative: 1e-3,
        }
    }
}

impl SplineSettings {
    /// The number of unnormalised parameters per transformed dimension: 3K − 1 (K widths, K heights and
    /// K − 1 interior derivatives).
    pub fn params_per_dim(&self) -> usize {
        self.bins.saturating_mul(3).saturating_sub(1)
    }

    /// Refuses settings the spline cannot use, naming the value and its valid range.
    pub fn validate(&self) -> Result<()> {
        let k = self.bins;
        if k == 0 {
            return Err(Error::invalid("bins", "0 bins; a spline needs at least 1"));
        }
        if !(self.tail_bound.is_finite() && self.tail_bound > 0.0) {
            return Err(Error::invalid(
                "tail_bound",
                format!("{} is not a finite number > 0", self.tail_bound),
            ));
        }
        for (key, v) in [
            ("min_bin_width", self.min_bin_width),
            ("min_bin_height", self.min_bin_height),
        ] {
            if !(v.is_finite() && v > 0.0 && v * (k as f64) < 1.0) {
                return Err(Error::invalid(
                    key,
                    format!(
                        "{v} with {k} bins; it must be > 0 and < 1/bins = {}",
                        1.0 / k as f64
                    ),
                ));
            }
        }
        let m = self.min_derivative;
        if !(m > 0.0 && m < 1.0) {
            return Err(Error::invalid(
                "min_derivative",
                format!("{m} is not in (0, 1)"),
            ));
        }
        Ok(())
    }
}

/// y = g(x) and log|dy/dx|, elementwise. `x`: `(b, d)`; `params`: `(b, d, 3K − 1)` unnormalised (widths
/// `params[..K]`, heights `params[K..2K]`, interior derivatives `params[2K..]`), mapped as in the module
/// docs. Returns `(y, logabsdet)`, both `(b, d)`; outside [−B, B], y = x and logabsdet = 0.
pub fn rq_spline_forward(
    x: &Tensor,
    params: &Tensor,
    s: &SplineSettings,
) -> Result<(Tensor, Tensor)> {
    apply(x, params, s, false)
}

/// The inverse of [`rq_spline_forward`]: x = g⁻¹(y) and log|dx/dy| = −log|dy/dx| at that x, both `(b, d)`.
pub fn rq_spline_inverse(
    y: &Tensor,
    params: &Tensor,
    s: &SplineSettings,
) -> Result<(Tensor, Tensor)> {
    apply(y, params, s, true)
}

/// The knots of the splines of a batch, each `(b, d, K + 1)`: abscissae, ordinates and derivatives.
struct Knots {
    xs: Tensor,
    ys: Tensor,
    derivs: Tensor,
}

/// The quantities of the bin each input lies in, each `(b, d)`: its left knot (x_k, y_k), width, height and
/// the derivatives at its two ends.
struct Bin {
    x_k: Tensor,
    y_k: Tensor,
    w: Tensor,
    h: Tensor,
    d0: Tensor,
    d1: Tensor,
}

impl Bin {
    /// The slope s_k = h_k / w_k.
    fn slope(&self) -> Result<Tensor> {
        Ok((&self.h / &self.w)?)
    }

    /// log dy/dx at relative position ξ in the bin (eq. 5).
    fn log_derivative(&self, xi: &Tensor) -> Result<Tensor> {
        let s = self.slope()?;
        let t = (xi * xi.affine(-1.0, 1.0)?)?;
        let den = self.denominator(&s, &t)?;
        let one_minus = xi.affine(-1.0, 1.0)?;
        let num = ((&self.d1 * xi.sqr()?)? + (&s * &t)?.affine(2.0, 0.0)?)?;
        let num = ((num + (&self.d0 * one_minus.sqr()?)?)? * s.sqr()?)?;
        Ok((num.log()? - den.log()?.affine(2.0, 0.0)?)?)
    }

    /// D = s + (δ_{k+1} + δ_k − 2s) ξ(1 − ξ), with `t` = ξ(1 − ξ).
    fn denominator(&self, s: &Tensor, t: &Tensor) -> Result<Tensor> {
        Ok((s + (self.curvature(s)? * t)?)?)
    }

    /// δ_{k+1} + δ_k − 2s.
    fn curvature(&self, s: &Tensor) -> Result<Tensor> {
        Ok(((&self.d0 + &self.d1)? - s.affine(2.0, 0.0)?)?)
    }
}

/// Checks the shapes and dtypes and returns (b, d).
fn check(v: &Tensor, params: &Tensor, s: &SplineSettings, name: &str) -> Result<(usize, usize)> {
    s.validate()?;
    let (b, d) = v
        .dims2()
        .map_err(|_| Error::invalid(name, format!("shape {:?} is not (b, d)", v.dims())))?;
    let p = s.params_per_dim();
    if params.dims() != [b, d, p] {
        return Err(Error::invalid(
            "params",
            format!(
                "shape {:?} does not fit {name} of shape {:?} with {} bins: expected (b, d, 3K − 1) = ({b}, {d}, {p})",
                params.dims(),
                v.dims(),
                s.bins
            ),
        ));
    }
    let (dt, pt) = (v.dtype(), params.dtype());
    if !matches!(dt, DType::F32 | DType::F64) || dt != pt {
        return Err(Error::invalid(
            "params",
            format!("dtypes {name} {dt:?} and params {pt:?}; both must be f32 or both f64"),
        ));
    }
    Ok((b, d))
}

/// Softmax over the last dimension from basic ops (differentiable; the detached max only shifts).
fn softmax_last(u: &Tensor) -> Result<Tensor> {
    let m = u.max_keepdim(D::Minus1)?.detach();
    let e = u.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// softplus(u) = log(1 + exp(u)), stably: relu(u) + log(1 + exp(−|u|)).
fn softplus(u: &Tensor) -> Result<Tensor> {
    let tail = u.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    Ok((u.relu()? + tail)?)
}

/// The K + 1 knots on [−B, B] from K unnormalised sizes `(b, d, K)`, each bin at least `min` of 2B.
fn knot_positions(u: &Tensor, min: f64, bound: f64) -> Result<Tensor> {
    let (b, d, k) = u.dims3()?;
    let ones = Tensor::ones((b, d, 1), u.dtype(), u.device())?;
    let (lo, hi) = (ones.affine(-bound, 0.0)?, ones.affine(bound, 0.0)?);
    if k == 1 {
        return Ok(Tensor::cat(&[lo, hi], 2)?);
    }
    let sizes = softmax_last(u)?.affine(1.0 - min * k as f64, min)?;
    let interior = sizes
        .cumsum(2)?
        .narrow(2, 0, k - 1)?
        .affine(2.0 * bound, -bound)?;
    Ok(Tensor::cat(&[lo, interior, hi], 2)?)
}

/// The knots of the splines given by `params` `(b, d, 3K − 1)`.
fn knots(params: &Tensor, s: &SplineSettings) -> Result<Knots> {
    let (b, d, _) = params.dims3()?;
    let k = s.bins;
    let xs = knot_positions(&params.narrow(2, 0, k)?, s.min_bin_width, s.tail_bound)?;
    let ys = knot_positions(&params.narrow(2, k, k)?, s.min_bin_height, s.tail_bound)?;
    let ones = Tensor::ones((b, d, 1), params.dtype(), params.device())?;
    let derivs = if k == 1 {
        Tensor::cat(&[&ones, &ones], 2)?
    } else {
        let m = s.min_derivative;
        let shift = (1.0 - m).exp_m1().ln();
        let inner = params.narrow(2, 2 * k, k - 1)?.affine(1.0, shift)?;
        let inner = softplus(&inner)?.affine(1.0, m)?;
        Tensor::cat(&[&ones, &inner, &ones], 2)?
    };
    Ok(Knots { xs, ys, derivs })
}

/// The bin of each value of `v` `(b, d)` among the knots `(b, d, K + 1)`: the number of interior knots it is
/// ≥ to, in [0, K − 1], as a `(b, d, 1)` u32 index.
fn locate(v: &Tensor, knots: &Tensor) -> Result<Tensor> {
    let (b, d, k1) = knots.dims3()?;
    if k1 == 2 {
        return Ok(Tensor::zeros((b, d, 1), DType::U32, v.device())?);
    }
    let interior = knots.narrow(2, 1, k1 - 2)?;
    let ge = v.unsqueeze(2)?.broadcast_ge(&interior)?;
    Ok(ge
        .to_dtype(v.dtype())?
        .sum_keepdim(2)?
        .to_dtype(DType::U32)?)
}

/// The entries of `t` `(b, d, n)` at `idx` `(b, d, 1)`, as `(b, d)`.
fn pick(t: &Tensor, idx: &Tensor) -> Result<Tensor> {
    Ok(t.contiguous()?.gather(idx, 2)?.squeeze(2)?)
}

/// The bins at `idx` of the knots `kn`.
fn bin_at(kn: &Knots, idx: &Tensor) -> Result<Bin> {
    let k = kn.xs.dim(2)? - 1;
    let (x_k, y_k) = (
        pick(&kn.xs.narrow(2, 0, k)?, idx)?,
        pick(&kn.ys.narrow(2, 0, k)?, idx)?,
    );
    let w = (pick(&kn.xs.narrow(2, 1, k)?, idx)? - &x_k)?;
    let h = (pick(&kn.ys.narrow(2, 1, k)?, idx)? - &y_k)?;
    let d0 = pick(&kn.derivs.narrow(2, 0, k)?, idx)?;
    let d1 = pick(&kn.derivs.narrow(2, 1, k)?, idx)?;
    Ok(Bin {
        x_k,
        y_k,
        w,
        h,
        d0,
        d1,
    })
}

/// The forward map (`inverse` false) or its inverse on `v` `(b, d)`.
fn apply(
    v: &Tensor,
    params: &Tensor,
    s: &SplineSettings,
    inverse: bool,
) -> Result<(Tensor, Tensor)> {
    check(v, params, s, if inverse { "y" } else { "x" })?;
    let inside = v.abs()?.lt(s.tail_bound)?;
    let zeros = v.zeros_like()?;
    // Outside (−B, B) the spline branch sees 0, so it stays finite where it is discarded.
    let vi = inside.where_cond(v, &zeros)?;
    let kn = knots(params, s)?;
    let (out, lad) = if inverse {
        let bin = bin_at(&kn, &locate(&vi, &kn.ys)?)?;
        let sl = bin.slope()?;
        let dy = (&vi - &bin.y_k)?;
        let dyc = (&dy * bin.curvature(&sl)?)?;
        let a = ((&bin.h * (&sl - &bin.d0)?)? + &dyc)?;
        let bq = ((&bin.h * &bin.d0)? - &dyc)?;
        let c = (&sl * &dy)?.neg()?;
        let disc = (bq.sqr()? - (&a * &c)?.affine(4.0, 0.0)?)?.relu()?;
        let xi = (c.affine(2.0, 0.0)? / (bq.neg()? - disc.sqrt()?)?)?;
        let x = (&bin.x_k + (&xi * &bin.w)?)?;
        (x, bin.log_derivative(&xi)?.neg()?)
    } else {
        let bin = bin_at(&kn, &locate(&vi, &kn.xs)?)?;
        let sl = bin.slope()?;
        let xi = ((&vi - &bin.x_k)? / &bin.w)?;
        let t = (&xi * xi.affine(-1.0, 1.0)?)?;
        let num = ((&sl * xi.sqr()?)? + (&bin.d0 * &t)?)?;
        let y = (&bin.y_k + ((&bin.h * num)? / bin.denominator(&sl, &t)?)?)?;
        (y, bin.log_derivative(&xi)?)
    };
    Ok((
        inside.where_cond(&out, v)?,
        inside.where_cond(&lad, &zeros)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::{Device, Var};

    const B: f64 = 3.0;

    /// Random parameters `(b, d, 3K − 1)` of standard deviation `scale`.
    fn random_params(
        rng: &mut Rng,
        b: usize,
        d: usize,
        s: &SplineSettings,
        scale: f64,
    ) -> Result<Tensor> {
        Ok(rng
            .randn((b, d, s.params_per_dim()), &Device::Cpu)?
            .affine(scale, 0.0)?)
    }

    /// `n` rows of `d` values: ±B, then (up to) K − 1 rows of interior knots of the matching row of `kn`
    /// (`(b, d, K + 1)`), then uniform draws in [−4, 4].
    fn inputs(rng: &mut Rng, kn: &Tensor) -> Result<Tensor> {
        let dtype = kn.dtype();
        let kn = kn.to_dtype(DType::F64)?.to_vec3::<f64>()?;
        let (b, d, k1) = (kn.len(), kn[0].len(), kn[0][0].len());
        let mut v = Vec::with_capacity(b * d);
        for (r, row) in kn.iter().enumerate() {
            for knots in row {
                v.push(match r {
                    0 => B,
                    1 => -B,
                    r if r - 2 < k1 - 2 => knots[r - 1],
                    _ => rng.uniform_f64() * 8.0 - 4.0,
                });
            }
        }
        Ok(Tensor::from_vec(v, (b, d), &Device::Cpu)?.to_dtype(dtype)?)
    }

    /// max |a − b| over all entries (a and b of any float dtypes).
    fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
        let d = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?;
        Ok(d.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
    }

    /// The entries of `t` as f64.
    fn flat(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    }

    /// inverse(forward(x)) = x and forward(inverse(y)) = y, inside and outside the bound, at ±B and at the
    /// interior knots, with logabsdets that are each other's negatives.
    #[test]
    fn inverse_undoes_forward_and_back() -> Result<()> {
        let s = SplineSettings::default();
        let mut rng = Rng::new(1);
        let (b, d) = (64, 3);
        let p32 = random_params(&mut rng, b, d, &s, 2.0)?;
        for dtype in [DType::F64, DType::F32] {
            let p = p32.to_dtype(dtype)?;
            let kn = knots(&p, &s)?;
            let x = inputs(&mut rng, &kn.xs)?;
            let (y, lad) = rq_spline_forward(&x, &p, &s)?;
            let (x2, lad_inv) = rq_spline_inverse(&y, &p, &s)?;
            let y = inputs(&mut rng, &kn.ys)?;
            let (x3, lad_inv3) = rq_spline_inverse(&y, &p, &s)?;
            let (y3, lad3) = rq_spline_forward(&x3, &p, &s)?;
            let cases = [(&x, &x2, &lad, &lad_inv), (&y, &y3, &lad3, &lad_inv3)];
            for (case, (a, a2, l, li)) in cases.into_iter().enumerate() {
                let (a, a2, l, li) = (flat(a)?, flat(a2)?, flat(l)?, flat(li)?);
                for i in 0..a.len() {
                    let msg = format!(
                        "{dtype:?} case {case} entry {i}: {} {} {} {}",
                        a[i], a2[i], l[i], li[i]
                    );
                    // f32 loses ~1e-7 / (dy/dx) in x where the spline is flat (and dy/dx in y where it
                    // is steep): its tolerances grow with that conditioning; f64 is held to 1e-4 everywhere.
                    let cond = if dtype == DType::F32 {
                        l[i].abs().exp()
                    } else {
                        1.0
                    };
                    assert!((a[i] - a2[i]).abs() < 1e-4 * cond.max(1.0), "{msg}");
                    assert!(
                        (l[i] + li[i]).abs() < 1e-3 * (cond / 100.0).max(1.0),
                        "{msg}"
                    );
                }
            }
        }
        Ok(())
    }

    /// The forward logabsdet is the log of the finite-difference derivative (computed in f64), the f32
    /// computation agrees with the f64 one, and the inverse logabsdet is its negative at the matched point.
    #[test]
    fn logabsdet_matches_finite_differences() -> Result<()> {
        let s = SplineSettings {
            bins: 5,
            ..Default::default()
        };
        let mut rng = Rng::new(2);
        let (b, d) = (40, 4);
        let p32 = random_params(&mut rng, b, d, &s, 2.0)?;
        let p = p32.to_dtype(DType::F64)?;
        // A second-order one-sided difference, g'(x) ≈ (−3g(x) + 4g(x + h) − g(x + 2h)) / 2h: a central one
        // straddles the knots the inputs sit on, where g'' jumps (by ~1e3 on narrow bins), and errs by
        // h·jump/4; this one stays in the bin to the right of x.
        let h = 1e-6;
        let x = inputs(&mut rng, &knots(&p, &s)?.xs)?;
        let (y0, lad) = rq_spline_forward(&x, &p, &s)?;
        let (y1, _) = rq_spline_forward(&x.affine(1.0, h)?, &p, &s)?;
        let (y2, _) = rq_spline_forward(&x.affine(1.0, 2.0 * h)?, &p, &s)?;
        let diff = ((y1.affine(4.0, 0.0)? - y0.affine(3.0, 0.0)?)? - y2)?;
        let fd = flat(&diff.affine(0.5 / h, 0.0)?)?;
        for (i, (l, g)) in flat(&lad)?.into_iter().zip(fd).enumerate() {
            let rel = (l.exp() - g).abs() / g;
            assert!(
                rel < 1e-3,
                "entry {i}: exp(logabsdet) {} vs difference {g}",
                l.exp()
            );
        }
        let (_, lad_inv) = rq_spline_inverse(&y0, &p, &s)?;
        assert!(max_abs_diff(&lad_inv.neg()?, &lad)? < 1e-6);
        // f32 against f64 on the same inputs; with parameters of scale 1 (at scale 2 a few entries on very
        // narrow bins lose ~1e-2 to the f32 rounding of the knots)
        let p32 = p32.affine(0.5, 0.0)?;
        let x32 = inputs(&mut rng, &knots(&p32, &s)?.xs)?;
        let (_, lad32) = rq_spline_forward(&x32, &p32, &s)?;
        let (x, p) = (x32.to_dtype(DType::F64)?, p32.to_dtype(DType::F64)?);
        let (_, lad) = rq_spline_forward(&x, &p, &s)?;
        assert!(
            max_abs_diff(&lad32, &lad)? < 1e-4,
            "{}",
            max_abs_diff(&lad32, &lad)?
        );
        Ok(())
    }

    /// The autograd gradient of a loss with respect to the parameters matches central differences (f64).
    #[test]
    fn parameter_gradients_match_finite_differences() -> Result<()> {
        let s = SplineSettings {
            bins: 4,
            ..Default::default()
        };
        let mut rng = Rng::new(3);
        let (b, d) = (6, 2);
        let p = random_params(&mut rng, b, d, &s, 1.5)?.to_dtype(DType::F64)?;
        let x = rng
            .rand((b, d), &Device::Cpu)?
            .affine(7.0, -3.5)?
            .to_dtype(DType::F64)?;
        let wy = rng.randn((b, d), &Device::Cpu)?.to_dtype(DType::F64)?;
        let loss = |p: &Tensor, inverse: bool| -> Result<Tensor> {
            let (y, lad) = if inverse {
                rq_spline_inverse(&x, p, &s)?
            } else {
                rq_spline_forward(&x, p, &s)?
            };
            Ok(((y * &wy)?.sum_all()? + lad.sum_all()?)?)
        };
        for inverse in [false, true] {
            let var = Var::from_tensor(&p)?;
            let grads = loss(var.as_tensor(), inverse)?.backward()?;
            let g = flat(grads.get(var.as_tensor()).expect("a gradient"))?;
            let base = flat(&p)?;
            let eps = 1e-6;
            for i in (0..base.len()).step_by(3) {
                let mut v = base.clone();
                v[i] += eps;
                let up = loss(
                    &Tensor::from_vec(v.clone(), p.shape(), &Device::Cpu)?,
                    inverse,
                )?;
                v[i] -= 2.0 * eps;
                let down = loss(&Tensor::from_vec(v, p.shape(), &Device::Cpu)?, inverse)?;
                let fd = (up.to_scalar::<f64>()? - down.to_scalar::<f64>()?) / (2.0 * eps);
                assert!(
                    (fd - g[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                    "{inverse} {i}: {fd} vs {}",
                    g[i]
                );
            }
        }
        Ok(())
    }

    /// Sorted inputs give strictly increasing outputs, and ±B map to ±B.
    #[test]
    fn monotone_and_fixes_the_bounds() -> Result<()> {
        let s = SplineSettings::default();
        let mut rng = Rng::new(4);
        let n = 401;
        for _ in 0..5 {
            let p = random_params(&mut rng, 1, 1, &s, 3.0)?;
            let p = p.broadcast_as((n, 1, s.params_per_dim()))?;
            for dtype in [DType::F64, DType::F32] {
                let p = p.to_dtype(dtype)?;
                let x = Tensor::arange(0u32, n as u32, &Device::Cpu)?
                    .to_dtype(dtype)?
                    .affine(8.0 / (n - 1) as f64, -4.0)?
                    .reshape((n, 1))?;
                let (y, _) = rq_spline_forward(&x, &p, &s)?;
                let y = flat(&y)?;
                // strictly in f64; f32 cannot resolve the steps where the spline is very flat
                let increasing = |w: &[f64]| w[0] < w[1] || (dtype == DType::F32 && w[0] == w[1]);
                assert!(y.windows(2).all(increasing), "{dtype:?}: {y:?}");
                let ends = Tensor::new(&[[-B], [B]], &Device::Cpu)?.to_dtype(dtype)?;
                let (y, lad) = rq_spline_forward(&ends, &p.narrow(0, 0, 2)?, &s)?;
                assert_eq!(flat(&y)?, [-B, B]);
                assert_eq!(flat(&lad)?, [0.0, 0.0]);
                let (x, lad) = rq_spline_inverse(&ends, &p.narrow(0, 0, 2)?, &s)?;
                assert_eq!(flat(&x)?, [-B, B]);
                assert_eq!(flat(&lad)?, [0.0, 0.0]);
            }
        }
        Ok(())
    }

    /// Outside [−B, B] the map is the identity with logabsdet exactly 0, and the gradients stay finite for
    /// batches entirely outside, inputs on ±B and on knots, and extreme parameters (±50).
    #[test]
    fn identity_outside_with_finite_gradients() -> Result<()> {
        let s = SplineSettings::default();
        let mut rng = Rng::new(5);
        let (b, d) = (16, 3);
        let outside = Tensor::from_vec(
            (0..b * d)
                .map(|i| {
                    if i % 2 == 0 {
                        3.0 + i as f32
                    } else {
                        -3.001 - 1e6 * i as f32
                    }
                })
                .collect(),
            (b, d),
            &Device::Cpu,
        )?;
        let extreme = rng
            .randn((b, d, s.params_per_dim()), &Device::Cpu)?
            .ge(0.0)?;
        let extreme = extreme.to_dtype(DType::F32)?.affine(100.0, -50.0)?;
        let random = random_params(&mut rng, b, d, &s, 2.0)?;
        for p in [&random, &extreme] {
            let on_knots = inputs(&mut rng, &knots(p, &s)?.xs)?;
            for (case, x) in [("outside", &outside), ("knots and bounds", &on_knots)] {
                for inverse in [false, true] {
                    let (pv, xv) = (Var::from_tensor(p)?, Var::from_tensor(x)?);
                    let f = if inverse {
                        rq_spline_inverse
                    } else {
                        rq_spline_forward
                    };
                    let (y, lad) = f(xv.as_tensor(), pv.as_tensor(), &s)?;
                    if case == "outside" {
                        assert_eq!(flat(&y)?, flat(x)?);
                        assert!(flat(&lad)?.iter().all(|&v| v == 0.0));
                    }
                    let grads = (y.sum_all()? + lad.sum_all()?)?.backward()?;
                    let gp = flat(grads.get(pv.as_tensor()).expect("a gradient"))?;
                    let gx = flat(grads.get(xv.as_tensor()).expect("a gradient"))?;
                    let what = format!("{case}, inverse {inverse}");
                    assert!(gp.iter().chain(&gx).all(|v| v.is_finite()), "{what}");
                    assert!(
                        flat(&y)?.iter().chain(&flat(&lad)?).all(|v| v.is_finite()),
                        "{what}"
                    );
                    if case == "outside" {
                        assert!(gp.iter().all(|&v| v == 0.0), "{what}");
                        assert!(gx.iter().all(|&v| v == 1.0), "{what}");
                    }
                }
            }
        }
        Ok(())
    }

    /// Known answers: all-zero parameters give the identity (uniform bins, derivatives 1); with any
    /// parameters each interior knot x_k maps to y_k with derivative δ_k = min_derivative + softplus(θ_k + c).
    #[test]
    fn known_answers() -> Result<()> {
        let s = SplineSettings::default();
        let mut rng = Rng::new(6);
        let (b, d) = (32, 2);
        let x = rng.rand((b, d), &Device::Cpu)?.affine(8.0, -4.0)?;
        let zero = Tensor::zeros((b, d, s.params_per_dim()), DType::F32, &Device::Cpu)?;
        for f in [rq_spline_forward, rq_spline_inverse] {
            let (y, lad) = f(&x, &zero, &s)?;
            assert!(max_abs_diff(&y, &x)? < 1e-5);
            assert!(max_abs_diff(&lad, &lad.zeros_like()?)? < 1e-5);
        }
        let k = s.bins;
        let p = random_params(&mut rng, 1, 1, &s, 2.0)?.to_dtype(DType::F64)?;
        let v = flat(&p)?;
        let sizes = |u: &[f64], min: f64| {
            let e: Vec<f64> = u.iter().map(|u| u.exp()).collect();
            let total: f64 = e.iter().sum();
            let mut acc = 0.0;
            e.iter()
                .map(|e| {
                    acc += min + (1.0 - min * k as f64) * e / total;
                    2.0 * B * acc - B
                })
                .collect::<Vec<f64>>()
        };
        let (xk, yk) = (sizes(&v[..k], 1e-3), sizes(&v[k..2 * k], 1e-3));
        for j in 0..k - 1 {
            let c = (1.0 - 1e-3f64).exp_m1().ln();
            let delta = 1e-3 + (1.0 + (v[2 * k + j] + c).exp()).ln();
            let x = Tensor::new(&[[xk[j]]], &Device::Cpu)?;
            let (y, lad) = rq_spline_forward(&x, &p, &s)?;
            let (y, lad) = (flat(&y)?[0], flat(&lad)?[0]);
            assert!((y - yk[j]).abs() < 1e-9, "knot {j}: {y} vs {}", yk[j]);
            assert!(
                (lad.exp() - delta).abs() < 1e-9 * delta.max(1.0),
                "knot {j}: {} vs {delta}",
                lad.exp()
            );
        }
        Ok(())
    }

    /// Bad settings and mismatched shapes are refused, naming the value and what was expected.
    #[test]
    fn refuses_bad_settings_and_shapes() -> Result<()> {
        let ok = SplineSettings::default();
        ok.validate()?;
        assert_eq!(ok.params_per_dim(), 23);
        SplineSettings { bins: 1, ..ok }.validate()?;
        let bad = [
            (SplineSettings { bins: 0, ..ok }, "bins"),
            (
                SplineSettings {
                    tail_bound: 0.0,
                    ..ok
                },
                "tail_bound",
            ),
            (
                SplineSettings {
                    tail_bound: -1.0,
                    ..ok
                },
                "tail_bound",
            ),
            (
                SplineSettings {
                    tail_bound: f64::NAN,
                    ..ok
                },
                "tail_bound",
            ),
            (
                SplineSettings {
                    tail_bound: f64::INFINITY,
                    ..ok
                },
                "tail_bound",
            ),
            (
                SplineSettings {
                    min_bin_width: 0.125,
                    ..ok
                },
                "min_bin_width",
            ),
            (
                SplineSettings {
                    min_bin_width: 0.0,
                    ..ok
                },
                "min_bin_width",
            ),
            (
                SplineSettings {
                    min_bin_width: f64::NAN,
                    ..ok
                },
                "min_bin_width",
            ),
            (
                SplineSettings {
                    min_bin_height: 0.5,
                    ..ok
                },
                "min_bin_height",
            ),
            (
                SplineSettings {
                    min_bin_height: -1e-3,
                    ..ok
                },
                "min_bin_height",
            ),
            (
                SplineSettings {
                    min_derivative: 0.0,
                    ..ok
                },
                "min_derivative",
            ),
            (
                SplineSettings {
                    min_derivative: 1.0,
                    ..ok
                },
                "min_derivative",
            ),
            (
                SplineSettings {
                    min_derivative: f64::INFINITY,
                    ..ok
                },
                "min_derivative",
            ),
        ];
        for (s, key) in bad {
            let e = s.validate().unwrap_err();
            assert_eq!(e.option(), Some(key), "{e}");
        }
        let e = SplineSettings {
            min_bin_width: 0.125,
            ..ok
        }
        .validate()
        .unwrap_err();
        assert!(
            e.to_string().contains("0.125") && e.to_string().contains("8 bins"),
            "{e}"
        );
        let dev = Device::Cpu;
        let x = Tensor::zeros((4, 3), DType::F32, &dev)?;
        for (shape, needle) in [
            ((4, 3, 22), "[4, 3, 22]"),
            ((5, 3, 23), "[5, 3, 23]"),
            ((4, 2, 23), "[4, 2, 23]"),
        ] {
            let p = Tensor::zeros(shape, DType::F32, &dev)?;
            for f in [rq_spline_forward, rq_spline_inverse] {
                let e = f(&x, &p, &ok).unwrap_err();
                let msg = e.to_string();
                assert!(matches!(e, Error::InvalidValue { .. }), "{msg}");
                assert!(
                    msg.contains(needle) && msg.contains("[4, 3]") && msg.contains("(4, 3, 23)"),
                    "{msg}"
                );
            }
        }
        let p = Tensor::zeros((4, 3, 23), DType::F32, &dev)?;
        let e = rq_spline_forward(&x.unsqueeze(0)?, &p, &ok).unwrap_err();
        assert!(e.to_string().contains("[1, 4, 3]"), "{e}");
        let e = rq_spline_forward(&x, &p.to_dtype(DType::F64)?, &ok).unwrap_err();
        assert!(e.to_string().contains("F64"), "{e}");
        Ok(())
    }
}
