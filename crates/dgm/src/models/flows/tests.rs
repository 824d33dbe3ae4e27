//! Tests of the flows: every log-determinant against the brute-force Jacobian (f64 central differences),
//! inverses of every layer and of whole models (odd splits and the multi-scale factor-out included), the
//! density integrating to 1, ActNorm's data-dependent initialisation and thread-count independence.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::glow::{self, GlowConfig};
use super::layers::*;
use super::realnvp::{self, RealNvpConfig};
use super::*;
use crate::data::Batch;
use crate::model::Model;
use crate::nn::Params;
use crate::rng::Rng;
use crate::train::optim::{collect_grads, AdamW, AdamWParams};

pub(super) const DEV: Device = Device::Cpu;

/// An f64 variable store and its builder.
pub(super) fn store() -> (VarMap, VarBuilder<'static>) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &DEV);
    (vm, vb)
}

/// Sets every variable to N(0, std²) noise (the layers start at the identity, which would hide bugs).
pub(super) fn perturb(vm: &VarMap, std: f64, seed: u64) {
    let mut rng = Rng::new(seed);
    let data = vm.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let v = &data[name];
        let vals: Vec<f64> = (0..v.elem_count())
            .map(|_| rng.normal() as f64 * std)
            .collect();
        v.set(&Tensor::from_vec(vals, v.shape(), &DEV).unwrap())
            .unwrap();
    }
}

/// A `(b, shape…)` f64 tensor of N(0, 1) values times `scale`, or U(lo, hi) values.
pub(super) fn input(b: usize, shape: &[usize], uniform: Option<(f64, f64)>, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let n = b * shape.iter().product::<usize>();
    let v: Vec<f64> = (0..n)
        .map(|_| match uniform {
            Some((lo, hi)) => lo + (hi - lo) * rng.uniform_f64(),
            None => rng.normal() as f64,
        })
        .collect();
    let mut full = vec![b];
    full.extend(shape);
    Tensor::from_vec(v, full, &DEV).unwrap()
}

pub(super) fn vec64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

pub(super) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    vec64(a)
        .iter()
        .zip(vec64(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// log|det| of a d × d matrix (f64, LU with partial pivoting).
pub(super) fn log_abs_det(m: &[f64], d: usize) -> f64 {
    let (_, _, u) = lu(m, d);
    (0..d)
        .map(|i| {
            let piv = u[i * d + i];
            assert!(piv.is_finite() && piv.abs() > 1e-300, "singular Jacobian");
            piv.abs().ln()
        })
        .sum()
}

/// The Jacobian (row-major, `jac[out · D + in]`) of `f` at the single example `x` `(1, …)` by central
/// differences (f64).
pub(super) fn jacobian(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor) -> Vec<f64> {
    let eps = 1e-6;
    let shape = x.shape().clone();
    let v = vec64(x);
    let d = v.len();
    let mut jac = vec![0.0; d * d];
    for j in 0..d {
        let eval = |delta: f64| -> Vec<f64> {
            let mut w = v.clone();
            w[j] += delta;
            vec64(&f(&Tensor::from_vec(w, shape.clone(), &DEV).unwrap()))
        };
        let (hi, lo) = (eval(eps), eval(-eps));
        assert_eq!(hi.len(), d, "the map must keep the number of values");
        for o in 0..d {
            jac[o * d + j] = (hi[o] - lo[o]) / (2.0 * eps);
        }
    }
    jac
}

/// Checks the log-determinants `ld` `(b,)` of `f` at `x` against the brute-force Jacobian's.
pub(super) fn check_logdet(
    name: &str,
    f: &dyn Fn(&Tensor) -> Tensor,
    x: &Tensor,
    ld: &Tensor,
    tol: f64,
) {
    for (i, a) in vec64(ld).into_iter().enumerate() {
        let xi = x.narrow(0, i, 1).unwrap();
        let d = xi.elem_count();
        let b = log_abs_det(&jacobian(f, &xi), d);
        assert!(
            (a - b).abs() < tol * (1.0 + b.abs()),
            "{name}: log-det {a} vs brute force {b}"
        );
    }
}

/// Checks a bijection on `x`: log-det against the brute-force Jacobian, f⁻¹(f(x)) = x, f(f⁻¹(z)) = z
/// at a point z that is not an image of x, and the inverse's log-det = −forward's.
pub(super) fn check_bijection(name: &str, layer: &dyn Bijection, x: &Tensor) {
    let (y, ld) = layer.forward(x).unwrap();
    check_logdet(name, &|t| layer.forward(t).unwrap().0, x, &ld, 1e-5);
    let (back, ld_inv) = layer.inverse(&y).unwrap();
    let err = max_abs_diff(&back, x);
    assert!(err < 1e-9, "{name}: f⁻¹(f(x)) ≠ x ({err})");
    let sum = (ld_inv + &ld).unwrap();
    assert!(
        max_abs_diff(&sum, &sum.zeros_like().unwrap()) < 1e-9,
        "{name}: inverse log-det is not the negative of the forward's"
    );
    let noise = input(y.dim(0).unwrap(), &y.dims()[1..], None, 99);
    let z = (&y + noise.affine(0.3, 0.0).unwrap()).unwrap();
    let (xz, _) = layer.inverse(&z).unwrap();
    let (zz, _) = layer.forward(&xz).unwrap();
    let err = max_abs_diff(&zz, &z);
    assert!(err < 1e-9, "{name}: f(f⁻¹(z)) ≠ z ({err})");
}

/// Checks a whole model on `x`: the log-det of pre + flow against the brute force, the round trips
/// x → z → x and, through the flow alone, z → x → z (f64; the logit's sigmoid would saturate on the
/// large values an inverse may reach from an arbitrary z).
pub(super) fn check_model(name: &str, m: &FlowModel, x: &Tensor) {
    let (z, ld) = m.encode_with_logdet(x).unwrap();
    let d = x.elem_count() / x.dim(0).unwrap();
    assert_eq!(z.dims(), &[x.dim(0).unwrap(), d]);
    // 1e-3 relative: the whole model's brute-force Jacobian (48 × 48 for 3 × 4 × 4) goes through ReLU coupling
    // nets and 1×1 convolutions, so central differences straddle ReLU kinks and the LU amplifies the error;
    // its log-det moved by 2.6e-4 relative (glow) between the gemm crate's AVX2 and AVX-512 kernels, which
    // round differently. A missing or wrong term (a log|det W| per position, a factor-out) is off by nats.
    // The layers' own tests keep 1e-4.
    check_logdet(name, &|t| m.encode_with_logdet(t).unwrap().0, x, &ld, 1e-3);
    let back = m.decode_z(&z).unwrap();
    let err = max_abs_diff(&back, x);
    assert!(err < 1e-7, "{name}: f⁻¹(f(x)) off by {err}");
    let z2 = (&z
        + input(z.dim(0).unwrap(), &[d], None, 98)
            .affine(0.2, 0.0)
            .unwrap())
    .unwrap();
    let (x2, _) = m.flow().inverse(&z2).unwrap();
    let (zz, _) = m.flow().forward(&x2).unwrap();
    let err = max_abs_diff(&zz, &z2);
    assert!(err < 1e-7, "{name}: f(f⁻¹(z)) off by {err}");
}

/// ∫ p over [−half, half]² by the midpoint rule on n × n cells.
pub(super) fn integral_2d(m: &FlowModel, half: f64, n: usize) -> f64 {
    let h = 2.0 * half / n as f64;
    let mut pts = Vec::with_capacity(2 * n * n);
    for i in 0..n {
        for j in 0..n {
            pts.push(-half + (i as f64 + 0.5) * h);
            pts.push(-half + (j as f64 + 0.5) * h);
        }
    }
    let x = Tensor::from_vec(pts, (n * n, 2), &DEV).unwrap();
    let lp = vec64(&m.log_prob(&x).unwrap());
    lp.iter().map(|l| l.exp()).sum::<f64>() * h * h
}

/// `n` points of an equal mixture of N((±2, 0.5), 0.5²I), f32 `(n, 2)`.
pub(super) fn mixture(n: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let v: Vec<f32> = (0..n)
        .flat_map(|_| {
            let c = if rng.uniform() < 0.5 { -2.0 } else { 2.0 };
            [c + 0.5 * rng.normal(), 0.5 + 0.5 * rng.normal()]
        })
        .collect();
    Tensor::from_vec(v, (n, 2), &DEV).unwrap()
}

/// Trains the model `build` makes (f32 [`Params`]) for 200 Adam steps on 512 fixed points of a
/// two-component mixture; returns the mean NLL (nats) on the points before and after.
pub(super) fn train_smoke(build: &dyn Fn(VarBuilder<'static>) -> FlowModel) -> (f64, f64) {
    let params = Params::new(0, &DEV);
    let m = build(params.var_builder());
    let x = mixture(512, 1);
    let batch = Batch::new(x.clone());
    let nll = |m: &FlowModel| -> f64 {
        let lp = m.log_prob(&x).unwrap().mean_all().unwrap();
        -lp.to_scalar::<f32>().unwrap() as f64
    };
    let before = nll(&m);
    let vars = params.vars();
    let mut opt = AdamW::new(vars.clone(), AdamWParams::default()).unwrap();
    let mut rng = Rng::new(2);
    for _ in 0..200 {
        let out = m.loss(&batch, &mut rng).unwrap();
        let grads = collect_grads(&vars, &out.loss.backward().unwrap());
        opt.step(&grads, 1e-2, 1.0).unwrap();
    }
    (before, nll(&m))
}

#[test]
fn every_layer_log_det_matches_the_brute_force_jacobian_and_inverts() {
    for (shape, mask, flips) in [
        (vec![3, 4, 4], CouplingMask::Channel, [false, true]),
        (vec![2, 4, 4], CouplingMask::Checkerboard, [false, true]),
        (vec![1, 3, 5], CouplingMask::Checkerboard, [false, true]),
        (vec![3], CouplingMask::Half, [false, true]),
        (vec![2], CouplingMask::Half, [false, true]),
    ] {
        for flip in flips {
            for scale in [CouplingScale::ExpTanh, CouplingScale::Sigmoid] {
                let (vm, vb) = store();
                let layer = AffineCoupling::new(&shape, mask, flip, scale, 5, vb).unwrap();
                perturb(&vm, 0.5, 1);
                let x = input(2, &shape, None, 2);
                check_bijection(
                    &format!("coupling {mask:?} flip {flip} {scale:?} {shape:?}"),
                    &layer,
                    &x,
                );
            }
        }
    }
    for shape in [vec![3, 2, 3], vec![4]] {
        let (vm, vb) = store();
        let an = ActNorm::new(shape[0], vb.pp("an")).unwrap();
        perturb(&vm, 0.7, 3);
        check_bijection(
            &format!("actnorm {shape:?}"),
            &an,
            &input(2, &shape, None, 4),
        );
        let (vm, vb) = store();
        let conv = InvConv1x1::new(shape[0], 7, vb.pp("conv")).unwrap();
        perturb(&vm, 0.4, 5);
        check_bijection(
            &format!("1×1 conv {shape:?}"),
            &conv,
            &input(2, &shape, None, 6),
        );
    }
    check_bijection("reverse", &Reverse, &input(2, &[5, 2, 2], None, 7));
    let pixels = input(2, &[1, 3, 3], Some((0.0, 1.0)), 8);
    check_bijection("logit", &Logit::Logit(0.05), &pixels);
    check_bijection("shift", &Logit::Shift, &pixels);
}

#[test]
fn squeeze_is_a_permutation_and_unsqueeze_inverts_it() {
    let x = Tensor::arange(0f64, 2.0 * 3.0 * 4.0 * 6.0, &DEV)
        .unwrap()
        .reshape((2, 3, 4, 6))
        .unwrap();
    let s = squeeze(&x).unwrap();
    assert_eq!(s.dims(), &[2, 12, 2, 3]);
    // channel 4k + 2i + j holds pixel (2y + i, 2x + j) of channel k
    let v = |t: &Tensor, idx: [usize; 4]| -> f64 {
        t.get(idx[0])
            .unwrap()
            .get(idx[1])
            .unwrap()
            .get(idx[2])
            .unwrap()
            .get(idx[3])
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    assert_eq!(v(&s, [1, 4 * 2 + 2 + 1, 1, 2]), v(&x, [1, 2, 3, 5]));
    let mut sorted = vec64(&s);
    sorted.sort_by(f64::total_cmp);
    assert_eq!(sorted, vec64(&x), "a squeeze moves values, it changes none");
    assert_eq!(max_abs_diff(&unsqueeze(&s).unwrap(), &x), 0.0);
}

#[test]
fn the_one_by_one_convolution_stays_invertible_and_its_log_det_is_log_det_w() {
    let (vm, vb) = store();
    let conv = InvConv1x1::new(6, 3, vb).unwrap();
    // at the start W is a rotation: |det W| = 1
    let w = vec64(&conv.weight().unwrap());
    assert!(log_abs_det(&w, 6).abs() < 1e-9);
    for seed in 0..5 {
        perturb(&vm, 1.5, seed);
        let w = vec64(&conv.weight().unwrap());
        let inv = invert(&w, 6).expect("W stays invertible");
        for i in 0..6 {
            for j in 0..6 {
                let e: f64 = (0..6).map(|k| w[i * 6 + k] * inv[k * 6 + j]).sum();
                assert!((e - (i == j) as u8 as f64).abs() < 1e-8, "W W⁻¹ ≠ I");
            }
        }
        let x = input(1, &[6, 2, 2], None, 1);
        let (_, ld) = conv.forward(&x).unwrap();
        let want = 4.0 * log_abs_det(&w, 6);
        assert!((vec64(&ld)[0] - want).abs() < 1e-8);
    }
}

/// Builds a flow model over `shape` with f64 variables perturbed by `std`.
fn model(name: &str, shape: &[usize], std: f64) -> (VarMap, FlowModel) {
    let (vm, vb) = store();
    let m = match name {
        "realnvp" => realnvp::new(
            &RealNvpConfig {
                example_shape: shape.to_vec(),
                ..RealNvpConfig::tiny()
            },
            vb,
        ),
        _ => glow::new(
            &GlowConfig {
                example_shape: shape.to_vec(),
                ..GlowConfig::tiny()
            },
            vb,
        ),
    }
    .unwrap();
    perturb(&vm, std, 11);
    (vm, m)
}

#[test]
fn whole_models_log_det_and_inverse_including_the_multi_scale_factor_out() {
    for name in ["realnvp", "glow"] {
        for shape in [vec![1, 4, 4], vec![3, 4, 4], vec![3]] {
            let (_vm, m) = model(name, &shape, 0.3);
            let x = input(2, &shape, Some((0.05, 0.95)), 3);
            check_model(&format!("{name} {shape:?}"), &m, &x);
        }
    }
}

#[test]
fn a_flow_with_an_odd_split_reassembles_in_the_right_order() {
    let (vm, vb) = store();
    let shape = [3usize, 2, 2];
    let mut f = FlowBuilder::new(&shape);
    f.push(
        AffineCoupling::new(
            &shape,
            CouplingMask::Channel,
            false,
            CouplingScale::ExpTanh,
            4,
            vb.pp("a"),
        )
        .unwrap(),
    );
    f.split().unwrap(); // channel 0 leaves, channels 1–2 go on
    let rest = f.shape().to_vec();
    assert_eq!(rest, [2, 2, 2]);
    f.push(
        AffineCoupling::new(
            &rest,
            CouplingMask::Channel,
            true,
            CouplingScale::Sigmoid,
            4,
            vb.pp("b"),
        )
        .unwrap(),
    );
    let flow = f.build();
    perturb(&vm, 0.5, 2);
    let x = input(2, &shape, None, 5);
    let (z, ld) = flow.forward(&x).unwrap();
    // the factored-out part comes first in z: channel 0 of the first layer's output, which that coupling
    // keeps unchanged
    let first = z.narrow(1, 0, 4).unwrap();
    let channel0 = x.narrow(1, 0, 1).unwrap().reshape((2, 4)).unwrap();
    assert_eq!(max_abs_diff(&first, &channel0), 0.0);
    let (back, ld_inv) = flow.inverse(&z).unwrap();
    assert!(max_abs_diff(&back, &x) < 1e-9);
    assert!(
        max_abs_diff(
            &(ld + ld_inv).unwrap(),
            &Tensor::zeros(2, DType::F64, &DEV).unwrap()
        ) < 1e-9
    );
    let (_, ld) = flow.forward(&x).unwrap();
    check_logdet("odd split", &|t| flow.forward(t).unwrap().0, &x, &ld, 1e-5);
}

#[test]
fn the_density_of_each_flow_integrates_to_one_on_the_plane() {
    for name in ["realnvp", "glow"] {
        let (_vm, m) = model(name, &[2], 0.4);
        let total = integral_2d(&m, 25.0, 500);
        assert!(
            (total - 1.0).abs() < 5e-3,
            "{name}: the density integrates to {total}"
        );
    }
}

#[test]
fn actnorm_data_init_standardises_each_channel_once() {
    let (vm, vb) = store();
    let an = ActNorm::new(3, vb.pp("an")).unwrap();
    let x = (input(64, &[3, 2, 2], None, 1).affine(2.5, 4.0)).unwrap();
    let (values, y) = an.data_init(&x).unwrap();
    assert_eq!(values.len(), 2);
    assert_eq!(values[0].0, "an.log_scale");
    // the returned output is what the layer computes once the values are set
    {
        let data = vm.data().lock().unwrap();
        for (name, v) in &values {
            data[name].set(v).unwrap();
        }
    }
    assert!(max_abs_diff(&an.forward(&x).unwrap().0, &y) < 1e-12);
    let flat = y
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((3, ()))
        .unwrap();
    for c in 0..3 {
        let v = vec64(&flat.get(c).unwrap());
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 1e-9 && (var - 1.0).abs() < 1e-4,
            "channel {c}: {mean} {var}"
        );
    }
}

#[test]
fn a_glow_model_data_init_names_real_variables_and_standardises_its_first_actnorm() {
    let params = crate::nn::Params::new(0, &DEV);
    let m = glow::new(
        &GlowConfig {
            example_shape: vec![1, 4, 4],
            ..GlowConfig::tiny()
        },
        params.var_builder(),
    )
    .unwrap();
    let x = input(32, &[1, 4, 4], Some((0.0, 1.0)), 3)
        .to_dtype(DType::F32)
        .unwrap();
    let batch = crate::data::Batch::new(x.clone());
    let values = m.data_init(&batch).unwrap();
    assert_eq!(
        values.len(),
        2 * 2 * 2,
        "two ActNorms per level, two values each"
    );
    let before = m.log_prob(&x).unwrap();
    params.set_values(&values).unwrap();
    let after = m.log_prob(&x).unwrap();
    assert!(
        max_abs_diff(&before, &after) > 1e-3,
        "the values change the model"
    );
    let err = params.set_values(&[("nope".into(), values[0].1.clone())]);
    assert!(err.unwrap_err().to_string().contains("nope"));
}

#[test]
fn log_likelihood_is_the_same_for_any_thread_count() {
    let params = crate::nn::Params::new(4, &DEV);
    let m = realnvp::new(
        &RealNvpConfig {
            example_shape: vec![1, 8, 8],
            hidden: 16,
            ..RealNvpConfig::default()
        },
        params.var_builder(),
    )
    .unwrap();
    let x = input(16, &[1, 8, 8], Some((0.0, 1.0)), 9)
        .to_dtype(DType::F32)
        .unwrap();
    let run = |threads: usize| -> Vec<f32> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| m.log_prob(&x).unwrap().to_vec1::<f32>().unwrap())
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
    assert_eq!(one, run(1), "reproducible");
}
