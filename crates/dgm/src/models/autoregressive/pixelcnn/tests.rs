//! Tests of the Gated PixelCNN: exact normalisation, the autoregressive masks (no pixel sees itself or a
//! later one), sampling and completion.

use super::*;
use crate::data::{Preprocessing, Range};
use crate::model::{Condition, LikelihoodKind, LikelihoodSpace};
use crate::models::DataInfo;
use crate::nn::Params;
use candle_core::Var;

fn info(shape: &[usize], classes: Option<usize>, preprocessing: Preprocessing) -> DataInfo {
    DataInfo {
        example_shape: shape.to_vec(),
        num_classes: classes,
        preprocessing,
        tokenizer: None,
        caption_words: None,
    }
}

const BINARY: Preprocessing = Preprocessing::Binarize { dynamic: true };

fn scaled(range: Range) -> Preprocessing {
    Preprocessing::Scale {
        range,
        dequantize: false,
    }
}

/// A prepared model with seeded random weights.
fn build(mut cfg: PixelCnnConfig, data: &DataInfo, seed: u64) -> Result<(PixelCnn, Params)> {
    prepare(&mut cfg, data)?;
    let p = Params::new(seed, &Device::Cpu);
    let m = PixelCnn::new(cfg, p.var_builder())?;
    Ok((m, p))
}

/// All 2^(h·w) binary images, `(2^(h·w), 1, h, w)`.
fn all_binary(h: usize, w: usize) -> Result<Tensor> {
    let d = h * w;
    let v: Vec<f32> = (0..1usize << d)
        .flat_map(|i| (0..d).map(move |j| ((i >> j) & 1) as f32))
        .collect();
    Ok(Tensor::from_vec(v, (1 << d, 1, h, w), &Device::Cpu)?)
}

fn total_prob(m: &PixelCnn, batch: &Batch) -> Result<f64> {
    let ll = m.log_likelihood(batch, &LikelihoodOptions::default())?;
    assert_eq!(ll.kind, LikelihoodKind::Exact);
    assert_eq!(ll.space, LikelihoodSpace::Discrete);
    Ok(ll.nats.iter().map(|v| v.exp()).sum())
}

/// Σ over all binary images of p(x | y) is 1 for 2×2 and 3×3 images, both outputs over binary data, both
/// architectures, unconditional and for every class of a conditional model.
#[test]
fn probabilities_of_all_binary_images_sum_to_one() -> Result<()> {
    for (h, w) in [(2, 2), (3, 3)] {
        let x = all_binary(h, w)?;
        let n = x.dim(0)?;
        for output in ["bernoulli", "softmax"] {
            for blind_spot in [false, true] {
                for classes in [None, Some(3)] {
                    let cfg = PixelCnnConfig {
                        output: output.into(),
                        blind_spot,
                        class_conditional: classes.is_some(),
                        ..PixelCnnConfig::tiny()
                    };
                    let (m, _p) = build(cfg, &info(&[1, h, w], classes, BINARY), 5)?;
                    for y in 0..classes.unwrap_or(1) as u32 {
                        let mut batch = Batch::new(x.clone());
                        if classes.is_some() {
                            batch.labels = Some(Tensor::full(y, n, &Device::Cpu)?);
                        }
                        let total = total_prob(&m, &batch)?;
                        assert!(
                            (total - 1.0).abs() < 1e-5,
                            "{h}×{w} {output} blind {blind_spot} class {y}: Σ p = {total}"
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// For 8-bit data every pixel's conditional sums to 1 over its 256 levels (1×2×2 images, each pixel in
/// turn with random other pixels), and a 1×1×2 image's 65 536 joint probabilities sum to 1; for the
/// softmax and the logistic mixture, with the network's outputs as initialised and scaled up ×8 (sharp,
/// far-off distributions, which exercise both branches of log(1 − e^−Δ) and the open edge bins).
#[test]
fn eight_bit_conditionals_and_joint_sum_to_one() -> Result<()> {
    let dev = Device::Cpu;
    for output in ["softmax", "logistic_mixture"] {
        for (range, gain) in [(Range::ZeroOne, 1.0), (Range::MinusOneOne, 8.0)] {
            let cfg = PixelCnnConfig {
                output: output.into(),
                ..PixelCnnConfig::tiny()
            };
            let (m, p) = build(cfg.clone(), &info(&[1, 2, 2], None, scaled(range)), 6)?;
            for (name, v) in p.vars() {
                if name.starts_with("head2") {
                    v.set(&(v.as_tensor() * gain)?)?;
                }
            }
            let mut rng = Rng::new(7);
            for pixel in 0..4 {
                let base: Vec<u32> = (0..4).map(|_| rng.below(256) as u32).collect();
                let vals: Vec<f32> = (0..256u32)
                    .flat_map(|k| {
                        let mut img = base.clone();
                        img[pixel] = k;
                        img.into_iter()
                            .map(|k| m.level_value(k))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let batch = Batch::new(Tensor::from_vec(vals, (256, 1, 2, 2), &dev)?);
                let lp = m.log_probs(&batch)?.flatten_from(1)?.to_vec2::<f32>()?;
                let total: f64 = lp.iter().map(|r| (r[pixel] as f64).exp()).sum();
                assert!(
                    (total - 1.0).abs() < 1e-5,
                    "{output} {range:?} ×{gain} pixel {pixel}: {total}"
                );
                // the earlier pixels' conditionals do not depend on this pixel
                for r in &lp {
                    for j in 0..pixel {
                        assert_eq!(r[j], lp[0][j], "pixel {j} depends on pixel {pixel}");
                    }
                }
            }
            let (m, p) = build(cfg, &info(&[1, 1, 2], None, scaled(range)), 8)?;
            for (name, v) in p.vars() {
                if name.starts_with("head2") {
                    v.set(&(v.as_tensor() * gain)?)?;
                }
            }
            let vals: Vec<f32> = (0..65536u32)
                .flat_map(|i| [m.level_value(i % 256), m.level_value(i / 256)])
                .collect();
            let batch = Batch::new(Tensor::from_vec(vals, (65536, 1, 1, 2), &dev)?);
            let total = total_prob(&m, &batch)?;
            assert!(
                (total - 1.0).abs() < 1e-4,
                "{output} {range:?} ×{gain} joint: {total}"
            );
        }
    }
    Ok(())
}

/// Gradients `[i][colour_in][j]` with respect to input colour `colour_in` at pixel j.
type Jacobian = Vec<Vec<Vec<f32>>>;

/// Gradients of one image's outputs for colour `colour` at each pixel i with respect to each input
/// colour at each pixel j: of the distribution parameters (`net`) and of the stack's features before the
/// head (`features`, that colour's channel group).
fn jacobians(m: &PixelCnn, colour: usize) -> Result<(Jacobian, Jacobian)> {
    let (c, h, w) = m.dims();
    let x = Var::from_tensor(&((Rng::new(9).rand((1, c, h, w), &Device::Cpu)? * 2.0)? - 1.0)?)?;
    let q = m.cfg.params_per_colour();
    let groups = colour_groups(m.cfg.channels, c);
    let g0 = groups.iter().position(|&g| g == colour).unwrap_or(0);
    let gn = groups.iter().filter(|&&g| g == colour).count();
    let outs = [
        m.net(&x, None)?.narrow(1, colour * q, q)?, // (1, q, h, w)
        m.features(&x, None)?.narrow(1, g0, gn)?,   // (1, gn, h, w)
    ];
    let mut jac = [Vec::new(), Vec::new()];
    for (out, jac) in outs.iter().zip(jac.iter_mut()) {
        for i in 0..h * w {
            let o = out.narrow(2, i / w, 1)?.narrow(3, i % w, 1)?;
            let g = o.sum_all()?.backward()?;
            let gx = g
                .get(&x)
                .map(|t| t.reshape((c, h * w))?.to_vec2::<f32>())
                .transpose()?
                .unwrap_or(vec![vec![0.0; h * w]; c]);
            jac.push(gx);
        }
    }
    let [net, features] = jac;
    Ok((net, features))
}

/// Gated PixelCNN on 7×7 images: every output pixel depends on no later pixel nor itself, and its features
/// depend on every earlier pixel (no blind spot). (Non-zero gradients are checked on the features before
/// the head, which is a per-pixel 1×1 network: at random initialisation its ReLUs can be all off at a pixel,
/// which zeroes that pixel's gradients without saying anything about the receptive field.) The original
/// PixelCNN stack (`blind_spot = true`) is just as causal but misses some earlier pixels.
#[test]
fn receptive_field_has_no_blind_spot() -> Result<()> {
    let (h, w) = (7, 7);
    for blind_spot in [false, true] {
        let cfg = PixelCnnConfig {
            layers: 5,
            blind_spot,
            ..PixelCnnConfig::tiny()
        };
        let (m, _p) = build(cfg, &info(&[1, h, w], None, BINARY), 10)?;
        let (net, features) = jacobians(&m, 0)?;
        let mut missed = 0;
        for i in 0..h * w {
            for j in 0..h * w {
                let (o, f) = (net[i][0][j], features[i][0][j]);
                if j >= i {
                    assert_eq!(
                        (o, f),
                        (0.0, 0.0),
                        "blind_spot {blind_spot}: out {i} depends on in {j}"
                    );
                } else if f == 0.0 {
                    assert!(blind_spot, "gated: out {i} does not see earlier pixel {j}");
                    missed += 1;
                }
            }
        }
        if blind_spot {
            // e.g. pixel (3, 0) does not see (2, 6): up and to the right of it
            assert!(missed > 0, "the original PixelCNN should have a blind spot");
            assert_eq!(features[3 * w][0][2 * w + 6], 0.0);
        }
    }
    Ok(())
}

/// With three colours, colour g of pixel i sees every colour of earlier pixels and colours < g of pixel i.
#[test]
fn colours_are_ordered_r_g_b() -> Result<()> {
    let (c, h, w) = (3, 4, 4);
    for blind_spot in [false, true] {
        let cfg = PixelCnnConfig {
            channels: 12,
            layers: 3,
            blind_spot,
            ..PixelCnnConfig::tiny()
        };
        let (m, _p) = build(cfg, &info(&[c, h, w], None, scaled(Range::ZeroOne)), 11)?;
        for g in 0..c {
            let (net, features) = jacobians(&m, g)?;
            for i in 0..h * w {
                for gi in 0..c {
                    for j in 0..h * w {
                        let (o, f) = (net[i][gi][j], features[i][gi][j]);
                        let allowed = j < i || (j == i && gi < g);
                        if !allowed {
                            assert_eq!(
                                (o, f),
                                (0.0, 0.0),
                                "colour {g} of pixel {i} sees colour {gi} of {j}"
                            );
                        } else if !blind_spot || j == i {
                            assert_ne!(f, 0.0, "colour {g} of pixel {i} misses colour {gi} of {j}");
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Probabilities of the 4 patterns of [`patterns`].
const PATTERN_P: [f64; 4] = [0.4, 0.3, 0.2, 0.1];

/// Four 3×3 binary patterns (a cross, a frame, a diagonal, a checkerboard), `(4, 1, 3, 3)`.
fn patterns() -> Result<Tensor> {
    let v: Vec<f32> = ["010111010", "111101111", "100010001", "101010101"]
        .iter()
        .flat_map(|s| s.bytes().map(|b| (b - b'0') as f32))
        .collect();
    Ok(Tensor::from_vec(v, (4, 1, 3, 3), &Device::Cpu)?)
}

/// A short training run on a known distribution (four 3×3 patterns with probabilities 0.4/0.3/0.2/0.1)
/// drives the cross-entropy E_p[−log q(x)] = H(p) + KL(p‖q), computed exactly over the 4 patterns, from
/// about 9 ln 2 toward the entropy H(p) ≈ 1.280 nats.
#[test]
fn training_reduces_the_nll_to_the_entropy() -> Result<()> {
    use crate::train::optim::{collect_grads, AdamW, AdamWParams};
    let dev = Device::Cpu;
    let entropy: f64 = -PATTERN_P.iter().map(|p| p * p.ln()).sum::<f64>();
    let cfg = PixelCnnConfig {
        channels: 16,
        ..PixelCnnConfig::tiny()
    };
    let (m, params) = build(cfg, &info(&[1, 3, 3], None, BINARY), 12)?;
    let pats = patterns()?;
    let cross_entropy = |m: &PixelCnn| -> Result<f64> {
        let ll = m.log_likelihood(&Batch::new(pats.clone()), &LikelihoodOptions::default())?;
        Ok(-ll
            .nats
            .iter()
            .zip(PATTERN_P)
            .map(|(l, p)| l * p)
            .sum::<f64>())
    };
    let before = cross_entropy(&m)?;
    let vars = params.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWParams {
            ..Default::default()
        },
    )?;
    let mut rng = Rng::new(13);
    for _ in 0..150 {
        // a batch of 64 patterns drawn from p
        let ids: Vec<u32> = (0..64)
            .map(|_| {
                let u = rng.uniform_f64();
                PATTERN_P
                    .iter()
                    .scan(0.0, |acc, p| {
                        *acc += p;
                        Some(*acc)
                    })
                    .position(|c| u < c)
                    .unwrap_or(3) as u32
            })
            .collect();
        let x = pats.index_select(&Tensor::new(ids.as_slice(), &dev)?, 0)?;
        let out = m.loss(&Batch::new(x), &mut rng)?;
        opt.step(&collect_grads(&vars, &out.loss.backward()?), 1e-2, 1.0)?;
    }
    let after = cross_entropy(&m)?;
    assert!(before > entropy + 3.0, "initial cross-entropy {before}");
    assert!(
        after >= entropy - 1e-4,
        "cross-entropy {after} below the entropy {entropy}"
    );
    assert!(
        after < entropy + 0.05,
        "cross-entropy {before} → {after}, entropy {entropy}"
    );
    Ok(())
}

/// Sampling draws from the model's own distribution: the frequencies of the 16 binary 2×2 images (and,
/// class-conditionally, for each class) over 6000 samples match exp(log p) within 5 standard errors, and
/// the same seed gives the same samples.
#[test]
fn samples_follow_the_density() -> Result<()> {
    for (output, classes) in [("bernoulli", None), ("softmax", Some(2))] {
        let cfg = PixelCnnConfig {
            output: output.into(),
            class_conditional: classes.is_some(),
            ..PixelCnnConfig::tiny()
        };
        let (m, p) = build(cfg, &info(&[1, 2, 2], classes, BINARY), 14)?;
        // sharper than at initialisation, so the 16 probabilities differ
        for (name, v) in p.vars() {
            if name.starts_with("head2") {
                v.set(&(v.as_tensor() * 6.0)?)?;
            }
        }
        for y in 0..classes.unwrap_or(1) as u32 {
            let mut opts = SampleOptions::seeded(15 + y as u64);
            let mut batch = Batch::new(all_binary(2, 2)?);
            if classes.is_some() {
                opts.condition = Condition::Class(vec![y]);
                batch.labels = Some(Tensor::full(y, 16, &Device::Cpu)?);
            }
            let want = m
                .log_likelihood(&batch, &LikelihoodOptions::default())?
                .nats;
            let n = 6000;
            let x = m.sample(n, &opts)?;
            assert_eq!(x.dims(), &[n, 1, 2, 2]);
            let v = x.flatten_all()?.to_vec1::<f32>()?;
            assert!(v.iter().all(|&b| b == 0.0 || b == 1.0));
            let mut counts = [0usize; 16];
            for img in v.chunks(4) {
                counts[img
                    .iter()
                    .enumerate()
                    .map(|(j, &b)| (b as usize) << j)
                    .sum::<usize>()] += 1;
            }
            for (c, lp) in counts.iter().zip(&want) {
                let (f, p) = (*c as f64 / n as f64, lp.exp());
                let se = (p * (1.0 - p) / n as f64).sqrt();
                assert!(
                    (f - p).abs() < 5.0 * se + 1e-9,
                    "{output} class {y}: {f} vs {p}"
                );
            }
            let again = m.sample(n, &opts)?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(v, again);
        }
    }
    Ok(())
}

/// The logistic-mixture and softmax samplers of 8-bit pixels: over 20 000 one-pixel samples the
/// frequencies of 8 bins of 32 levels match the model's probabilities (5 standard errors), and the values
/// are exactly the preprocessed levels.
#[test]
fn eight_bit_samples_follow_the_density() -> Result<()> {
    let dev = Device::Cpu;
    for output in ["logistic_mixture", "softmax"] {
        let cfg = PixelCnnConfig {
            output: output.into(),
            ..PixelCnnConfig::tiny()
        };
        let (m, p) = build(cfg, &info(&[1, 1, 1], None, scaled(Range::MinusOneOne)), 16)?;
        for (name, v) in p.vars() {
            if name.starts_with("head2") {
                v.set(&(v.as_tensor() * 4.0)?)?;
            }
        }
        let levels: Vec<f32> = (0..256).map(|k| m.level_value(k)).collect();
        let all = Batch::new(Tensor::from_vec(levels.clone(), (256, 1, 1, 1), &dev)?);
        let probs: Vec<f64> = m
            .log_likelihood(&all, &LikelihoodOptions::default())?
            .nats
            .iter()
            .map(|l| l.exp())
            .collect();
        let n = 20_000;
        let x = m
            .sample(n, &SampleOptions::seeded(17))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut counts = [0usize; 8];
        for v in &x {
            let k = levels.iter().position(|l| l == v);
            assert!(k.is_some(), "{v} is not a level");
            counts[k.unwrap_or(0) / 32] += 1;
        }
        for (b, c) in counts.iter().enumerate() {
            let p: f64 = probs[b * 32..(b + 1) * 32].iter().sum();
            let f = *c as f64 / n as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (f - p).abs() < 5.0 * se + 1e-9,
                "{output} bin {b}: {f} vs {p}"
            );
        }
    }
    Ok(())
}

/// `complete` keeps the known rows bit for bit (8-bit values that are not exactly representable sums),
/// samples the rest on the level grid, is reproducible, and rejects bad arguments.
#[test]
fn complete_keeps_the_known_rows() -> Result<()> {
    let dev = Device::Cpu;
    let data = info(&[1, 5, 4], None, scaled(Range::MinusOneOne));
    let (m, _p) = build(PixelCnnConfig::tiny(), &data, 18)?;
    let mut rng = Rng::new(19);
    // preprocessed exactly as the data pipeline does it
    let mut vals = Vec::new();
    let pixels: Vec<u8> = (0..3 * 20).map(|_| rng.below(256) as u8).collect();
    scaled(Range::MinusOneOne).apply_u8(&pixels, 0, &mut rng, &mut vals)?;
    let x = Tensor::from_vec(vals.clone(), (3, 1, 5, 4), &dev)?;
    let opts = SampleOptions::seeded(20);
    for known in [0, 2, 5] {
        let out = m.complete(&x, known, &opts)?;
        assert_eq!(out.dims(), &[3, 1, 5, 4]);
        let got = out.flatten_all()?.to_vec1::<f32>()?;
        for (img, (g, v)) in got.chunks(20).zip(vals.chunks(20)).enumerate() {
            assert_eq!(
                g[..known * 4]
                    .iter()
                    .map(|f| f.to_bits())
                    .collect::<Vec<_>>(),
                v[..known * 4]
                    .iter()
                    .map(|f| f.to_bits())
                    .collect::<Vec<_>>(),
                "image {img}, {known} rows"
            );
        }
        m.to_levels(&out)?; // every value is a level
        assert_eq!(
            got,
            m.complete(&x, known, &opts)?
                .flatten_all()?
                .to_vec1::<f32>()?
        );
    }
    // rows after the known ones are resampled: with 2 of 5 rows known the rest differs from the input
    let out = m.complete(&x, 2, &opts)?.flatten_all()?.to_vec1::<f32>()?;
    assert_ne!(out[8..20], vals[8..20]);
    assert!(m.complete(&x, 6, &opts).is_err());
    assert!(m.complete(&x.narrow(2, 0, 4)?, 1, &opts).is_err());
    let off_grid = (&x + 0.004)?; // half a level (2/255) off
    let e = m
        .complete(&off_grid, 2, &opts)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("levels"), "{e}");
    Ok(())
}

/// A class-conditional model's likelihood and samples depend on the class; conditions are checked.
#[test]
fn class_conditioning_changes_the_output() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = PixelCnnConfig {
        class_conditional: true,
        ..PixelCnnConfig::tiny()
    };
    let (m, _p) = build(cfg, &info(&[1, 4, 4], Some(3), BINARY), 21)?;
    assert_eq!(m.num_classes(), Some(3));
    let x = all_binary(4, 4)?.narrow(0, 0, 64)?;
    let ll = |y: u32| -> Result<Vec<f64>> {
        let mut b = Batch::new(x.clone());
        b.labels = Some(Tensor::full(y, 64, &dev)?);
        Ok(m.log_likelihood(&b, &LikelihoodOptions::default())?.nats)
    };
    let (l0, l1) = (ll(0)?, ll(1)?);
    assert!(l0.iter().zip(&l1).all(|(a, b)| a != b));
    let sample = |y: u32| -> Result<Vec<f32>> {
        let mut o = SampleOptions::seeded(22);
        o.condition = Condition::Class(vec![y]);
        Ok(m.sample(64, &o)?.flatten_all()?.to_vec1::<f32>()?)
    };
    assert_ne!(sample(0)?, sample(2)?);
    // a conditional model needs a class (in range), labels in the batch
    assert!(m.sample(2, &SampleOptions::seeded(0)).is_err());
    let mut o = SampleOptions::seeded(0);
    o.condition = Condition::Class(vec![3]);
    assert!(m.sample(2, &o).is_err());
    assert!(m
        .log_likelihood(&Batch::new(x.clone()), &LikelihoodOptions::default())
        .is_err());
    // an unconditional model takes none
    let (u, _p) = build(
        PixelCnnConfig::tiny(),
        &info(&[1, 4, 4], Some(3), BINARY),
        21,
    )?;
    assert_eq!(u.num_classes(), None);
    o.condition = Condition::Class(vec![0]);
    assert!(u.sample(2, &o).is_err());
    Ok(())
}

/// prepare fills levels, range, classes and the output, and rejects data PixelCNN cannot model.
#[test]
fn prepare_fills_fields_and_rejects_bad_data() -> Result<()> {
    let mut cfg = PixelCnnConfig::default();
    prepare(&mut cfg, &info(&[1, 28, 28], Some(10), BINARY))?;
    assert_eq!(
        (cfg.levels, cfg.output.as_str(), cfg.num_classes),
        (2, "bernoulli", 0)
    );
    let mut cfg = PixelCnnConfig {
        class_conditional: true,
        ..PixelCnnConfig::default()
    };
    prepare(
        &mut cfg,
        &info(&[3, 32, 32], Some(4), scaled(Range::MinusOneOne)),
    )?;
    assert_eq!(
        (cfg.levels, cfg.range, cfg.output.as_str(), cfg.num_classes),
        (256, Range::MinusOneOne, "logistic_mixture", 4)
    );
    let err = |cfg: PixelCnnConfig, data: DataInfo| -> String {
        let mut cfg = cfg;
        prepare(&mut cfg, &data)
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string())
    };
    let d = PixelCnnConfig::default;
    let e = err(
        d(),
        info(
            &[1, 28, 28],
            None,
            Preprocessing::Scale {
                range: Range::ZeroOne,
                dequantize: true,
            },
        ),
    );
    assert!(e.contains("dequantize = false"), "{e}");
    let e = err(d(), info(&[1, 28, 28], None, Preprocessing::Identity));
    assert!(e.contains("identity"), "{e}");
    let e = err(d(), info(&[784], None, BINARY));
    assert!(e.contains("[784]") && e.contains("made"), "{e}");
    let mut text = info(&[64], None, Preprocessing::Identity);
    text.tokenizer = Some(crate::data::Tokenizer::Bytes);
    assert!(err(d(), text).contains("gpt"));
    let e = err(
        PixelCnnConfig {
            class_conditional: true,
            ..d()
        },
        info(&[1, 28, 28], None, BINARY),
    );
    assert!(e.contains("labels"), "{e}");
    let e = err(
        PixelCnnConfig {
            output: "bernoulli".into(),
            ..d()
        },
        info(&[1, 8, 8], None, scaled(Range::ZeroOne)),
    );
    assert!(e.contains("softmax or logistic_mixture"), "{e}");
    let e = err(
        PixelCnnConfig {
            output: "gaussian".into(),
            ..d()
        },
        info(&[1, 8, 8], None, BINARY),
    );
    assert!(
        e.contains("gaussian") && e.contains("logistic_mixture"),
        "{e}"
    );
    let e = err(
        PixelCnnConfig { channels: 2, ..d() },
        info(&[3, 8, 8], None, scaled(Range::ZeroOne)),
    );
    assert!(e.contains("channels"), "{e}");
    let e = err(
        PixelCnnConfig { kernel: 4, ..d() },
        info(&[1, 8, 8], None, BINARY),
    );
    assert!(e.contains("odd"), "{e}");
    // every key of the config round-trips through TOML (the registry compares keys with the default table)
    let t = crate::models::to_table(&PixelCnnConfig::default())?;
    let back: PixelCnnConfig = crate::models::from_table(&t)?;
    assert_eq!(back, PixelCnnConfig::default());
    Ok(())
}

/// Speed of one training step (loss, backward) of the default config on 32 and 64 binarized MNIST-size
/// images, and of sampling 16.
/// `cargo test --release -p dgm --lib pixelcnn::tests::default_step_speed -- --ignored --nocapture`
#[test]
#[ignore]
fn default_step_speed() -> Result<()> {
    use crate::train::optim::collect_grads;
    let (m, p) = build(
        PixelCnnConfig::default(),
        &info(&[1, 28, 28], None, BINARY),
        0,
    )?;
    let vars = p.vars();
    let mut rng = Rng::new(2);
    for b in [32, 64] {
        let x = rng
            .rand((b, 1, 28, 28), &Device::Cpu)?
            .ge(0.8f32)?
            .to_dtype(DType::F32)?;
        let batch = Batch::new(x);
        let mut times = Vec::new();
        for _ in 0..6 {
            let t = std::time::Instant::now();
            let out = m.loss(&batch, &mut rng)?;
            let _g = collect_grads(&vars, &out.loss.backward()?);
            times.push(t.elapsed().as_secs_f64());
        }
        eprintln!(
            "{} parameters; batch {b}: step times (s) {times:.2?}",
            p.num_parameters()
        );
    }
    if std::env::var_os("PIXELCNN_SKIP_SAMPLE").is_some() {
        return Ok(());
    }
    let t = std::time::Instant::now();
    m.sample(16, &SampleOptions::seeded(3))?;
    eprintln!("16 samples: {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// The sampler's window: the output at every pixel computed on the window of [`PixelCnn::reach`] equals
/// the output computed on the whole image (gated and blind-spot stacks, one and three colours); a window
/// one row shorter changes some output (the reach is tight).
#[test]
fn the_sampling_window_gives_the_full_output() -> Result<()> {
    let (h, w) = (12, 11);
    for (blind_spot, c) in [(false, 1), (true, 1), (false, 3)] {
        let cfg = PixelCnnConfig {
            channels: 6,
            blind_spot,
            ..PixelCnnConfig::tiny()
        };
        let (m, _p) = build(cfg, &info(&[c, h, w], None, scaled(Range::ZeroOne)), 23)?;
        let mut rng = Rng::new(24);
        let levels: Vec<u32> = (0..2 * c * h * w).map(|_| rng.below(256) as u32).collect();
        let full = m.net(&m.inputs(&levels, 2, (0, h), (0, w))?, None)?;
        let (up, side) = m.reach();
        let mut shorter_differs = false;
        for r in 0..h {
            for col in 0..w {
                let at = |t: &Tensor, r: usize, col: usize| -> Result<Vec<f32>> {
                    Ok(t.narrow(2, r, 1)?
                        .narrow(3, col, 1)?
                        .flatten_all()?
                        .to_vec1::<f32>()?)
                };
                let want = at(&full, r, col)?;
                let (c0, c1) = (col.saturating_sub(side), (col + side + 1).min(w));
                for (up, exact) in [(up, true), (up - 1, false)] {
                    let r0 = r.saturating_sub(up);
                    let win = m.net(&m.inputs(&levels, 2, (r0, r + 1), (c0, c1))?, None)?;
                    let got = at(&win, r - r0, col - c0)?;
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    if exact {
                        assert!(err < 1e-5, "blind {blind_spot} c {c} ({r}, {col}): {err}");
                    } else if err > 1e-4 {
                        shorter_differs = true;
                    }
                }
            }
        }
        assert!(
            shorter_differs || blind_spot,
            "a shorter window should change some output"
        );
    }
    Ok(())
}

/// `configs/pixelcnn-mnist.toml` has only keys this config and the trainer know, valid values, and builds a
/// Bernoulli model of 28×28 binary images.
#[test]
fn the_mnist_config_is_valid() -> Result<()> {
    let text = include_str!("../../../../../../configs/pixelcnn-mnist.toml");
    let bad = |e: toml::de::Error| Error::invalid("config", e.to_string());
    let t: toml::Table = toml::from_str(text).map_err(bad)?;
    let section = |name: &str| -> Result<toml::Table> {
        t.get(name)
            .and_then(|v| v.as_table())
            .cloned()
            .ok_or(Error::invalid("config", format!("no [{name}]")))
    };
    let mut model = section("model")?;
    assert_eq!(
        model
            .remove("name")
            .and_then(|v| v.as_str().map(String::from)),
        Some("pixelcnn".into())
    );
    let mut cfg: PixelCnnConfig = crate::models::from_table(&model)?;
    let data: crate::train::DataConfig = section("data")?.try_into().map_err(bad)?;
    assert_eq!(data.preprocessing, BINARY);
    prepare(&mut cfg, &info(&[1, 28, 28], Some(10), data.preprocessing))?;
    assert_eq!(
        (cfg.resolved_output(), cfg.blind_spot),
        ("bernoulli", false)
    );
    let train: crate::train::TrainConfig = section("train")?.try_into().map_err(bad)?;
    train.validate()?;
    Ok(())
}
