use candle_core::{DType, Device, Tensor, Var};

use super::*;
use crate::rng::Rng;

fn dev() -> Device {
    Device::Cpu
}

/// ⟨a, b⟩ in f64.
fn dot(a: &Tensor, b: &Tensor) -> f64 {
    let a: Vec<f64> = a
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f64> = b
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).map(|(x, y)| x * y).sum()
}

fn norm(a: &Tensor) -> f64 {
    dot(a, a).sqrt()
}

fn batch(n: usize, shape: &[usize]) -> Vec<usize> {
    let mut s = vec![n];
    s.extend_from_slice(shape);
    s
}

/// One operator of each kind, on small shapes.
fn operators() -> Vec<Box<dyn LinearOperator>> {
    let d = dev();
    let mut rng = Rng::new(5);
    vec![
        Box::new(Mask::random_pixels(&[3, 8, 8], 0.5, &mut rng, &d).unwrap()),
        Box::new(Mask::centre_box(&[1, 28, 28], 14, &d).unwrap()),
        Box::new(Downsample::new(&[2, 8, 12], 2).unwrap()),
        Box::new(Downsample::new(&[1, 28, 28], 4).unwrap()),
        Box::new(Grey::new(&[3, 6, 5], &d).unwrap()),
        Box::new(Blur::new(&[2, 9, 7], 1.5, &d).unwrap()),
        Box::new(Radon::new(&[1, 12, 10], 5, &d).unwrap()),
        Box::new(Radon::new(&[1, 28, 28], 16, &d).unwrap()),
    ]
}

/// ⟨A x, y⟩ = ⟨x, Aᵀ y⟩ for random x and y: to rounding in f64, and to f32 rounding in f32.
#[test]
fn adjoint_identity_for_every_operator() -> Result<()> {
    let mut rng = Rng::new(1);
    for op in operators() {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            let x = rng
                .randn(batch(3, op.input_shape()), &dev())?
                .to_dtype(dtype)?;
            let y = rng
                .randn(batch(3, op.output_shape()), &dev())?
                .to_dtype(dtype)?;
            let ax = op.apply(&x)?;
            let aty = op.adjoint(&y)?;
            assert_eq!(ax.dims(), y.dims(), "{}", op.name());
            assert_eq!(aty.dims(), x.dims(), "{}", op.name());
            assert_eq!(ax.dtype(), dtype);
            let (l, r) = (dot(&ax, &y), dot(&x, &aty));
            let scale = norm(&ax) * norm(&y);
            assert!(
                (l - r).abs() <= tol * scale,
                "{} ({dtype:?}): <Ax,y> = {l}, <x,A'y> = {r}",
                op.name()
            );
            // and A is linear: A(2x + x') = 2Ax + Ax'
            let x2 = rng.randn(x.shape(), &dev())?.to_dtype(dtype)?;
            let lhs = op.apply(&((&x * 2.0)? + &x2)?)?;
            let rhs = ((ax * 2.0)? + op.apply(&x2)?)?;
            assert!(
                norm(&(lhs - &rhs)?) <= tol * 10.0 * norm(&rhs),
                "{}",
                op.name()
            );
        }
    }
    Ok(())
}

/// Where a pseudo-inverse is given, A A⁺ y = y on the range of A; blur and CT give none.
#[test]
fn pseudo_inverses_invert_on_the_range() -> Result<()> {
    let mut rng = Rng::new(2);
    for op in operators() {
        let z = rng
            .randn(batch(2, op.input_shape()), &dev())?
            .to_dtype(DType::F64)?;
        let y = op.apply(&z)?;
        match op.pseudo_inverse(&y)? {
            Some(x) => {
                assert_eq!(x.dims(), z.dims());
                let back = op.apply(&x)?;
                assert!(norm(&(back - &y)?) <= 1e-12 * norm(&y), "{}", op.name());
                // the minimum-norm solution: no longer than the z that made y
                assert!(norm(&x) <= norm(&z) * (1.0 + 1e-12), "{}", op.name());
            }
            None => {
                let name = op.name();
                assert!(name.starts_with("blur") || name.starts_with("ct"), "{name}");
            }
        }
    }
    Ok(())
}

#[test]
fn operators_compute_what_they_say() -> Result<()> {
    let d = dev();
    // block means
    let x = Tensor::arange(0f32, 16.0, &d)?.reshape((1, 1, 4, 4))?;
    let y = Downsample::new(&[1, 4, 4], 2)?.apply(&x)?;
    assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [2.5, 4.5, 10.5, 12.5]);
    // luma of pure red, green and blue, and a constant image keeps its value
    let mut rgb = vec![0f32; 3 * 3];
    rgb[0] = 1.0; // red at pixel 0
    rgb[3 + 1] = 1.0; // green at pixel 1
    rgb[6 + 2] = 1.0; // blue at pixel 2
    let g = Grey::new(&[3, 1, 3], &d)?;
    let y = g.apply(&Tensor::from_vec(rgb, (1, 3, 1, 3), &d)?)?;
    assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [0.299, 0.587, 0.114]);
    let y = g.apply(&Tensor::full(-0.5f32, (1, 3, 1, 3), &d)?)?;
    for v in y.flatten_all()?.to_vec1::<f32>()? {
        assert!((v + 0.5).abs() < 1e-6);
    }
    // the centre box hides the middle 14×14 of 28×28
    let m = Mask::centre_box(&[1, 28, 28], 14, &d)?;
    assert_eq!(m.observed(), 784 - 196);
    let keep = m.keep().flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(
        (keep[7 * 28 + 7], keep[6 * 28 + 7], keep[21 * 28 + 21]),
        (0.0, 1.0, 1.0)
    );
    assert_eq!(Mask::bottom_half(&[1, 28, 28], &d)?.observed(), 14 * 28);
    let mut rng = Rng::new(3);
    let r = Mask::random_pixels(&[1, 100, 100], 0.7, &mut rng, &d)?;
    let frac = 1.0 - r.observed() as f64 / 10_000.0;
    assert!((frac - 0.7).abs() < 0.02, "{frac}");
    // blur keeps a constant far from the edges, and its mass everywhere but near them
    let b = Blur::new(&[1, 21, 21], 1.0, &d)?;
    let y = b.apply(&Tensor::ones((1, 1, 21, 21), DType::F32, &d)?)?;
    let v = y.flatten_all()?.to_vec1::<f32>()?;
    assert!((v[10 * 21 + 10] - 1.0).abs() < 1e-6);
    assert!(v[0] < 0.8, "zero padding darkens the corner: {}", v[0]);
    // a point spreads as the Gaussian: the centre and its neighbour in ratio exp(-1/2)
    let mut point = vec![0f32; 21 * 21];
    point[10 * 21 + 10] = 1.0;
    let y = b.apply(&Tensor::from_vec(point, (1, 1, 21, 21), &d)?)?;
    let v = y.flatten_all()?.to_vec1::<f32>()?;
    let ratio = v[10 * 21 + 11] / v[10 * 21 + 10];
    assert!((ratio - (-0.5f32).exp()).abs() < 1e-5, "{ratio}");
    Ok(())
}

/// A disk of radius R at the centre, by the fraction of each pixel inside it (8×8 sub-samples).
fn disk(n: usize, r: f64, cx: f64, cy: f64) -> Vec<f32> {
    let c = (n as f64 - 1.0) / 2.0;
    let mut img = vec![0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            let mut inside = 0;
            for a in 0..8 {
                for b in 0..8 {
                    let x = j as f64 + (b as f64 + 0.5) / 8.0 - 0.5 - c;
                    let y = c - (i as f64 + (a as f64 + 0.5) / 8.0 - 0.5);
                    if (x - cx).powi(2) + (y - cy).powi(2) <= r * r {
                        inside += 1;
                    }
                }
            }
            img[i * n + j] = inside as f32 / 64.0;
        }
    }
    img
}

/// The Radon transform of a centred disk of radius R is 2√(R² − s²) at every angle.
#[test]
fn radon_of_a_centred_disk_matches_its_analytic_projection() -> Result<()> {
    let (n, r) = (64, 20.0);
    let op = Radon::new(&[1, n, n], 6, &dev())?;
    let x = Tensor::from_vec(disk(n, r, 0.0, 0.0), (1, 1, n, n), &dev())?;
    let p: Vec<f32> = op.apply(&x)?.flatten_all()?.to_vec1()?;
    let det = op.detectors();
    let centre = (det - 1) as f64 / 2.0;
    let (mut err, mut total, mut inner) = (0.0, 0.0, 0f64);
    for v in 0..op.views() {
        for k in 0..det {
            let s = k as f64 - centre;
            let exact = 2.0 * (r * r - s * s).max(0.0).sqrt();
            let got = p[v * det + k] as f64;
            err += (got - exact).powi(2);
            total += exact * exact;
            if s.abs() < r - 3.0 {
                inner = inner.max((got - exact).abs() / exact);
            }
        }
    }
    let rel = (err / total).sqrt();
    eprintln!("disk: relative L2 error {rel}, inner max relative error {inner}");
    assert!(rel < 0.04, "relative L2 error {rel}");
    // away from the rim (where 2√(R² − s²) is steepest and the linear interpolation smooths it) within 1 %
    assert!(inner < 0.01, "inner bins off by up to {inner}");
    // a disk moved off-centre projects to the same profile shifted by x cos θ + y sin θ: its mass is the same
    let moved = Tensor::from_vec(disk(n, 8.0, 10.0, -6.0), (1, 1, n, n), &dev())?;
    let pm: Vec<f32> = op.apply(&moved)?.flatten_all()?.to_vec1()?;
    let mass: f64 = disk(n, 8.0, 10.0, -6.0).iter().map(|&v| v as f64).sum();
    for v in 0..op.views() {
        let m: f64 = pm[v * det..(v + 1) * det].iter().map(|&v| v as f64).sum();
        assert!((m - mass).abs() < 1e-3 * mass, "view {v}: {m} vs {mass}");
    }
    Ok(())
}

/// A phantom of three ellipses-as-disks: a large body, a bright inner disk and a dark one.
fn phantom(n: usize) -> Vec<f32> {
    let body = disk(n, 19.0, 0.0, 0.0);
    let bright = disk(n, 6.0, 6.0, 4.0);
    let dark = disk(n, 4.5, -7.0, -5.0);
    (0..n * n)
        .map(|i| body[i] * 0.5 + bright[i] * 0.5 - dark[i] * 0.3)
        .collect()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    norm(&(a - b).unwrap()) / norm(b)
}

/// Filtered back-projection reconstructs the phantom from 90 views within 10 % (relative L2), and gets worse as
/// the views get fewer (the streaks of sparse-view CT).
#[test]
fn fbp_reconstructs_a_phantom() -> Result<()> {
    let n = 48;
    let truth = Tensor::from_vec(phantom(n), (1, 1, n, n), &dev())?;
    let mut errs = Vec::new();
    for views in [90, 24, 8] {
        let op = Radon::new(&[1, n, n], views, &dev())?;
        let rec = op.fbp(&op.apply(&truth)?)?;
        assert_eq!(rec.dims(), truth.dims());
        errs.push(rel_err(&rec, &truth));
    }
    eprintln!("fbp relative L2 errors at 90, 24, 8 views: {errs:?}");
    assert!(errs[0] < 0.10, "90 views: {errs:?}");
    assert!(errs[0] < errs[1] && errs[1] < errs[2], "{errs:?}");
    Ok(())
}

/// From 0, CGLS converges to the minimum-norm least-squares solution: A⁺ y for down-sampling, and data
/// consistency A x ≈ y for over-determined CT.
#[test]
fn cgls_solves_least_squares() -> Result<()> {
    let mut rng = Rng::new(4);
    let ds = Downsample::new(&[1, 8, 8], 2)?;
    let y = rng.randn((2, 1, 4, 4), &dev())?.to_dtype(DType::F64)?;
    let x = cgls(&ds, &y, 10)?;
    let pinv = ds.pseudo_inverse(&y)?.unwrap();
    assert!(rel_err(&x, &pinv) < 1e-10, "{}", rel_err(&x, &pinv));
    let ct = Radon::new(&[1, 12, 12], 30, &dev())?;
    let truth = rng.randn((1, 1, 12, 12), &dev())?.to_dtype(DType::F64)?;
    let y = ct.apply(&truth)?;
    let x = cgls(&ct, &y, 300)?;
    let fit = rel_err(&ct.apply(&x)?, &y);
    assert!(fit < 1e-4, "data misfit {fit}");
    assert!(rel_err(&x, &truth) < 1e-2, "{}", rel_err(&x, &truth));
    // a wrong-shaped measurement is refused, naming the operator
    let e = cgls(&ct, &Tensor::zeros((1, 3, 3), DType::F64, &dev())?, 3).unwrap_err();
    assert!(e.to_string().contains("ct, 30 views"), "{e}");
    Ok(())
}

/// candle differentiates through every operator: ∇ₓ ½‖A x − y‖² = Aᵀ(A x − y), what DPS needs.
#[test]
fn gradients_flow_through_every_operator() -> Result<()> {
    let mut rng = Rng::new(6);
    for op in operators() {
        let x = Var::from_tensor(
            &rng.randn(batch(2, op.input_shape()), &dev())?
                .to_dtype(DType::F64)?,
        )?;
        let y = rng
            .randn(batch(2, op.output_shape()), &dev())?
            .to_dtype(DType::F64)?;
        let resid = (op.apply(x.as_tensor())? - &y)?;
        let loss = (resid.sqr()?.sum_all()? * 0.5)?;
        let grads = loss.backward()?;
        let g = grads.get(x.as_tensor()).expect("a gradient");
        let want = op.adjoint(&resid)?;
        assert!(rel_err(g, &want) < 1e-12, "{}", op.name());
    }
    Ok(())
}

#[test]
fn measurements_are_seeded_and_noise_has_the_asked_scale() -> Result<()> {
    let op = Downsample::new(&[1, 40, 40], 2)?;
    let x = Tensor::zeros((4, 1, 40, 40), DType::F32, &dev())?;
    let a = measure(&op, &x, 0.1, &mut Rng::new(9))?;
    let b = measure(&op, &x, 0.1, &mut Rng::new(9))?;
    assert_eq!(
        a.flatten_all()?.to_vec1::<f32>()?,
        b.flatten_all()?.to_vec1::<f32>()?
    );
    let sd = norm(&a) / (a.elem_count() as f64).sqrt();
    assert!((sd - 0.1).abs() < 0.01, "{sd}");
    let clean = measure(&op, &(x + 1.0)?, 0.0, &mut Rng::new(9))?;
    assert!(clean
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|&v| v == 1.0));
    for bad in [-0.1, f64::NAN, f64::INFINITY] {
        let e = measure(&op, &clean, bad, &mut Rng::new(0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sigma_y"), "{e}");
    }
    Ok(())
}

#[test]
fn bad_operators_and_inputs_are_refused_with_the_value() {
    let d = dev();
    let msg = |r: Result<()>| r.unwrap_err().to_string();
    let e = msg(Downsample::new(&[1, 28, 28], 3).map(|_| ()));
    assert!(e.contains('3') && e.contains("28×28"), "{e}");
    let e = msg(Radon::new(&[1, 28, 28], 0, &d).map(|_| ()));
    assert!(e.contains("views") && e.contains("at least 1"), "{e}");
    let e = msg(Radon::new(&[3, 28, 28], 8, &d).map(|_| ()));
    assert!(e.contains("grey"), "{e}");
    // refused before anything is allocated
    let e = msg(Radon::new(&[1, 28, 28], 100_000, &d).map(|_| ()));
    assert!(e.contains("100000 views") && e.contains("MB"), "{e}");
    let e = msg(Grey::new(&[1, 28, 28], &d).map(|_| ()));
    assert!(e.contains("RGB"), "{e}");
    let e = msg(Blur::new(&[1, 28, 28], 0.0, &d).map(|_| ()));
    assert!(e.contains("sigma"), "{e}");
    let e = msg(Mask::new(&[1, 2, 2], vec![0.0, 1.0, 0.5, 1.0], &d).map(|_| ()));
    assert!(e.contains("0.5"), "{e}");
    let e = msg(Mask::rect(&[1, 28, 28], 20, 20, 10, 4, &d).map(|_| ()));
    assert!(e.contains("does not fit"), "{e}");
    let e = msg(Mask::centre_box(&[1, 28, 28], 0, &d).map(|_| ()));
    assert!(e.contains("box side 0"), "{e}");
    let e = msg(Mask::random_pixels(&[1, 28, 28], 1.5, &mut Rng::new(0), &d).map(|_| ()));
    assert!(e.contains("1.5"), "{e}");
    let e = msg(Mask::new(&[1, 0, 2], vec![], &d).map(|_| ()));
    assert!(e.contains("positive sizes"), "{e}");
    // a batch of the wrong shape, and an empty batch, name the operator and the shape it takes
    let op = Downsample::new(&[1, 28, 28], 2).unwrap();
    for dims in [vec![2, 1, 14, 14], vec![1, 28, 28], vec![0, 1, 28, 28]] {
        let x = Tensor::zeros(dims, DType::F32, &d).unwrap();
        let e = msg(op.apply(&x).map(|_| ()));
        assert!(
            e.contains("downsample ×2") && e.contains("(n, 1, 28, 28)"),
            "{e}"
        );
    }
}

/// A free-form mask from an image: white = missing, black = observed; grey pixels and wrong sizes refused.
#[test]
fn masks_from_images() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("dgm-ops-mask-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let save = |name: &str, w: u32, h: u32, f: &dyn Fn(u32, u32) -> u8| {
        let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
        let p = dir.join(name);
        img.save(&p).unwrap();
        p
    };
    let p = save("stroke.png", 28, 28, &|x, y| if x == y { 255 } else { 0 });
    let m = Mask::from_image(&p, &[1, 28, 28], &dev())?;
    assert_eq!(m.observed(), 784 - 28);
    assert_eq!(m.keep().flatten_all()?.to_vec1::<f32>()?[29], 0.0);
    let p = save("grey.png", 28, 28, &|x, _| if x == 3 { 128 } else { 0 });
    let e = Mask::from_image(&p, &[1, 28, 28], &dev())
        .unwrap_err()
        .to_string();
    assert!(e.contains("28 of its 784 pixels are grey"), "{e}");
    let p = save("small.png", 14, 14, &|_, _| 0);
    let e = Mask::from_image(&p, &[1, 28, 28], &dev())
        .unwrap_err()
        .to_string();
    assert!(e.contains("14×14") && e.contains("28×28"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Every operator shows a measurement as an image of its input shape.
#[test]
fn image_views_have_the_input_shape() -> Result<()> {
    let mut rng = Rng::new(8);
    for op in operators() {
        let mut shape = vec![2];
        shape.extend_from_slice(op.input_shape());
        let x = rng.randn(shape.as_slice(), &dev())?;
        let y = op.apply(&x)?;
        let v = op.image_view(&y)?;
        assert_eq!(v.dims(), x.dims(), "{}", op.name());
    }
    Ok(())
}
