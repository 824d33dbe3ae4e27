//! Masked fully connected layers and the MADE mask construction (Germain, Gregor, Murray & Larochelle 2015,
//! "MADE: Masked Autoencoder for Distribution Estimation", arXiv:1502.03509, section 4), shared by MADE and
//! the masked autoregressive flows.
//!
//! A [`MaskedLinear`] computes y = x (W ⊙ M)ᵀ + b with a fixed 0/1 mask M of W's shape (out, in). MADE gives
//! every input j a degree d(j) ∈ {1, …, D} (an ordering of the inputs), every hidden unit k of layer l a degree
//! m^l(k) drawn uniformly from [min_k' m^{l−1}(k'), D − 1], and connects
//!
//! * hidden layers: M^l(k, k') = [m^l(k) ≥ m^{l−1}(k')]                                      (eq. 12)
//! * the output layer: M^V(i, k) = [d(i) > m^L(k)]                                         (eq. 13)
//!
//! so that output i depends only on the inputs j with d(j) < d(i): the product of the masks is strictly
//! lower triangular in the ordering, and the outputs are the conditionals of p(x) = Π_i p(x_i | x_{d<d(i)}).

use candle_core::{Device, Tensor};
use candle_nn::init::Init;
use candle_nn::VarBuilder;

use super::kernels::linear::linear;
use super::layers::over_rows;
use super::Activation;
use crate::rng::Rng;
use crate::{Error, Result};

/// Input orderings [`input_degrees`] knows: `natural` (d(j) = j + 1) and `random` (a seeded permutation).
pub const ORDERS: &[&str] = &["natural", "random"];

/// A fully connected layer with a fixed 0/1 connectivity mask: y = x (W ⊙ M)ᵀ + b, W and M of shape
/// (out, in) as in PyTorch, initialised like [`super::Linear`] (U(−1/√in, 1/√in) for weight and bias). The
/// masked weight goes through dgm's fused linear kernel ([`linear`]); the gradient of a masked
/// weight entry is exactly 0.
#[derive(Clone, Debug)]
pub struct MaskedLinear {
    weight: Tensor,
    bias: Tensor,
    mask: Tensor,
}

impl MaskedLinear {
    /// A masked layer from `in_dim` to `out_dim` with variables `weight` (out, in) and `bias` (out,) under
    /// `vb`, and `mask` (out, in) of zeros and ones (e.g. from [`hidden_mask`] / [`output_mask`]).
    pub fn new(in_dim: usize, out_dim: usize, mask: Tensor, vb: VarBuilder) -> Result<Self> {
        if mask.dims() != [out_dim, in_dim] {
            return Err(Error::invalid(
                "masked linear mask",
                format!(
                    "shape {:?} does not match the layer's (out, in) = ({out_dim}, {in_dim})",
                    mask.dims()
                ),
            ));
        }
        let b = 1.0 / (in_dim.max(1) as f64).sqrt();
        let init = Init::Uniform { lo: -b, up: b };
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
        let bias = vb.get_with_hints(out_dim, "bias", init)?;
        let mask = mask.to_dtype(weight.dtype())?.to_device(weight.device())?;
        Ok(Self { weight, bias, mask })
    }

    /// The layer's mask, (out, in).
    pub fn mask(&self) -> &Tensor {
        &self.mask
    }

    /// The unmasked weight variable, (out, in).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias variable, (out,).
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// `(…, in)` → `(…, out)` without activation.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Activation::Identity)
    }

    /// act(x (W ⊙ M)ᵀ + b) with the layer's own mask, `(…, in)` → `(…, out)`.
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        self.forward_with_mask(x, &self.mask, act)
    }

    /// act(x (W ⊙ mask)ᵀ + b) with another mask of the same shape (connectivity-agnostic training, where
    /// several masks share one set of weights), `(…, in)` → `(…, out)`.
    pub fn forward_with_mask(&self, x: &Tensor, mask: &Tensor, act: Activation) -> Result<Tensor> {
        if mask.dims() != self.weight.dims() {
            return Err(Error::invalid(
                "masked linear mask",
                format!(
                    "shape {:?} does not match the weight's {:?}",
                    mask.dims(),
                    self.weight.dims()
                ),
            ));
        }
        let w = (&self.weight * mask)?; // (out, in)
        over_rows(x, self.bias.dim(0)?, |x2| linear(x2, &w, &self.bias, act))
    }
}

/// The input degrees d(j) ∈ {1, …, d} of an ordering: `natural` gives d(j) = j + 1, `random` a uniformly
/// random permutation drawn from `rng`.
pub fn input_degrees(d: usize, order: &str, rng: &mut Rng) -> Result<Vec<usize>> {
    match order {
        "natural" => Ok((1..=d).collect()),
        "random" => Ok(rng.permutation(d).into_iter().map(|p| p + 1).collect()),
        other => Err(Error::unknown("model.order", other, ORDERS)),
    }
}

/// Degrees of a hidden layer of `size` units after a layer with degrees `prev`, for `d` inputs: each drawn
/// uniformly from [min(prev), d − 1] (section 4; for d = 1 every hidden unit gets degree 0 and sees no input).
pub fn hidden_degrees(prev: &[usize], size: usize, d: usize, rng: &mut Rng) -> Vec<usize> {
    let hi = d.saturating_sub(1);
    let lo = prev.iter().copied().min().unwrap_or(1).min(hi);
    (0..size).map(|_| lo + rng.below(hi - lo + 1)).collect()
}

/// The hidden-layer mask (eq. 12), (out, in): M(k, j) = [out_deg(k) ≥ in_deg(j)].
pub fn hidden_mask(in_deg: &[usize], out_deg: &[usize], device: &Device) -> Result<Tensor> {
    mask_from(in_deg, out_deg, |o, i| o >= i, device)
}

/// The output-layer mask (eq. 13), (out, in): M(i, k) = [out_deg(i) > in_deg(k)], with `out_deg` the input
/// degree of the variable each output belongs to (an input may own several outputs, e.g. a flow's shift and
/// log-scale).
pub fn output_mask(in_deg: &[usize], out_deg: &[usize], device: &Device) -> Result<Tensor> {
    mask_from(in_deg, out_deg, |o, i| o > i, device)
}

fn mask_from(
    in_deg: &[usize],
    out_deg: &[usize],
    connect: impl Fn(usize, usize) -> bool,
    device: &Device,
) -> Result<Tensor> {
    let v: Vec<f32> = out_deg
        .iter()
        .flat_map(|&o| in_deg.iter().map(move |&i| (o, i)))
        .map(|(o, i)| if connect(o, i) { 1.0 } else { 0.0 })
        .collect();
    Ok(Tensor::from_vec(v, (out_deg.len(), in_deg.len()), device)?)
}

/// The degrees and masks of one MADE network.
#[derive(Clone, Debug)]
pub struct MadeMasks {
    /// The input degrees d(j), an ordering of 1..=D.
    pub input_degrees: Vec<usize>,
    /// The degrees of each hidden layer's units.
    pub hidden_degrees: Vec<Vec<usize>>,
    /// One mask per layer, (out, in): the hidden layers' (eq. 12), then the output layer's (eq. 13).
    pub masks: Vec<Tensor>,
}

/// Draws the hidden degrees of a MADE with `hidden` layer sizes over inputs of degrees `input_degrees`
/// (D = its length) from `rng`, and builds its masks; the outputs have degrees `output_degrees` (for MADE
/// itself the input degrees, one output per input).
pub fn made_masks(
    input_degrees: &[usize],
    hidden: &[usize],
    output_degrees: &[usize],
    rng: &mut Rng,
    device: &Device,
) -> Result<MadeMasks> {
    let d = input_degrees.len();
    let mut sorted = input_degrees.to_vec();
    sorted.sort_unstable();
    if d == 0 || sorted.iter().enumerate().any(|(k, &deg)| deg != k + 1) {
        return Err(Error::invalid(
            "made input degrees",
            format!("{input_degrees:?} must be a permutation of 1..={d} (and not empty)"),
        ));
    }
    let mut hidden_degs: Vec<Vec<usize>> = Vec::with_capacity(hidden.len());
    let mut masks = Vec::with_capacity(hidden.len() + 1);
    let mut prev = input_degrees.to_vec();
    for &size in hidden {
        let m = hidden_degrees(&prev, size, d, rng);
        masks.push(hidden_mask(&prev, &m, device)?); // (size, prev)
        hidden_degs.push(m.clone());
        prev = m;
    }
    masks.push(output_mask(&prev, output_degrees, device)?); // (outputs, last)
    Ok(MadeMasks {
        input_degrees: input_degrees.to_vec(),
        hidden_degrees: hidden_degs,
        masks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Params;
    use candle_core::Var;

    /// The 0/1 connectivity from inputs to outputs: [product of the masks > 0], (out, in).
    fn connectivity(masks: &[Tensor]) -> Result<Vec<Vec<bool>>> {
        let mut p = masks[0].clone();
        for m in &masks[1..] {
            p = m.matmul(&p)?;
        }
        Ok(p.to_vec2::<f32>()?
            .into_iter()
            .map(|r| r.into_iter().map(|v| v > 0.0).collect())
            .collect())
    }

    #[test]
    fn degrees_orders_and_mask_rules() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(3);
        assert_eq!(input_degrees(4, "natural", &mut rng)?, vec![1, 2, 3, 4]);
        let r = input_degrees(9, "random", &mut rng)?;
        let mut s = r.clone();
        s.sort_unstable();
        assert_eq!(s, (1..=9).collect::<Vec<_>>());
        assert!(input_degrees(3, "reverse", &mut rng).is_err());
        // hidden degrees lie in [min(prev), D − 1] and cover it for a wide layer
        let prev = vec![3, 4, 5, 6, 7];
        let h = hidden_degrees(&prev, 500, 7, &mut rng);
        assert!(h.iter().all(|&m| (3..=6).contains(&m)));
        assert!((3..=6).all(|m| h.contains(&m)));
        // eq. 12 and 13 entry by entry on a hand example
        let hm = hidden_mask(&[1, 2, 3], &[2, 1], &dev)?.to_vec2::<f32>()?;
        assert_eq!(hm, vec![vec![1.0, 1.0, 0.0], vec![1.0, 0.0, 0.0]]);
        let om = output_mask(&[2, 1], &[1, 2, 3], &dev)?.to_vec2::<f32>()?;
        assert_eq!(om, vec![vec![0.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0]]);
        // not a permutation
        assert!(made_masks(&[1, 1, 2], &[4], &[1, 1, 2], &mut rng, &dev).is_err());
        Ok(())
    }

    /// Output i is connected to input j iff d(j) < d(i), for the natural and random orders: never to a later
    /// input (the autoregressive property), and with wide hidden layers to every earlier one.
    #[test]
    fn mask_product_is_strictly_lower_triangular_in_the_order() -> Result<()> {
        let dev = Device::Cpu;
        let d = 6;
        for (order, seed) in [("natural", 1), ("random", 2), ("random", 3)] {
            for hidden in [vec![], vec![64], vec![64, 64]] {
                let mut rng = Rng::new(seed);
                let deg = input_degrees(d, order, &mut rng)?;
                let mm = made_masks(&deg, &hidden, &deg, &mut rng, &dev)?;
                assert_eq!(mm.masks.len(), hidden.len() + 1);
                let c = connectivity(&mm.masks)?;
                for i in 0..d {
                    for j in 0..d {
                        assert_eq!(
                            c[i][j],
                            deg[j] < deg[i],
                            "{order} {hidden:?}: output {i} (degree {}) ← input {j} (degree {})",
                            deg[i],
                            deg[j]
                        );
                    }
                }
            }
        }
        // two outputs per input (a flow's shift and scale) follow the same rule
        let mut rng = Rng::new(4);
        let deg = input_degrees(4, "random", &mut rng)?;
        let out: Vec<usize> = deg.iter().chain(deg.iter()).copied().collect();
        let mm = made_masks(&deg, &[32], &out, &mut rng, &dev)?;
        let c = connectivity(&mm.masks)?;
        for (i, &o) in out.iter().enumerate() {
            for (j, &dj) in deg.iter().enumerate() {
                assert_eq!(c[i][j], dj < o);
            }
        }
        Ok(())
    }

    /// The layer computes x (W ⊙ M)ᵀ + b, and masked weights get exactly zero gradient.
    #[test]
    fn masked_linear_matches_dense_with_zeroed_weights() -> Result<()> {
        let dev = Device::Cpu;
        let params = Params::new(5, &dev);
        let mask = hidden_mask(&[1, 2, 3, 4], &[1, 3, 2], &dev)?; // (3, 4)
        let layer = MaskedLinear::new(4, 3, mask.clone(), params.var_builder().pp("l"))?;
        assert!(MaskedLinear::new(4, 2, mask.clone(), params.var_builder().pp("bad")).is_err());
        let mut rng = Rng::new(6);
        let x = Var::from_tensor(&rng.randn((5, 4), &dev)?)?;
        let y = layer.forward(x.as_tensor())?;
        let w = params
            .vars()
            .into_iter()
            .find(|(n, _)| n == "l.weight")
            .map(|(_, v)| v)
            .ok_or_else(|| Error::invalid("test", "no weight"))?;
        let b = params
            .vars()
            .into_iter()
            .find(|(n, _)| n == "l.bias")
            .map(|(_, v)| v)
            .ok_or_else(|| Error::invalid("test", "no bias"))?;
        let want = x
            .as_tensor()
            .matmul(&(w.as_tensor() * &mask)?.t()?)?
            .broadcast_add(b.as_tensor())?;
        assert!(crate::nn::rel_err(&y, &want)? < 1e-6);
        let g = y.sum_all()?.backward()?;
        let gw = g
            .get(w.as_tensor())
            .ok_or_else(|| Error::invalid("test", "no grad"))?
            .to_vec2::<f32>()?;
        let m = mask.to_vec2::<f32>()?;
        for (gr, mr) in gw.iter().zip(&m) {
            for (gv, mv) in gr.iter().zip(mr) {
                if *mv == 0.0 {
                    assert_eq!(*gv, 0.0);
                } else {
                    assert!(gv.abs() > 0.0);
                }
            }
        }
        // rank-3 input goes through the same map
        let x3 = x.as_tensor().reshape((5, 1, 4))?;
        let y3 = layer.forward(&x3)?.reshape((5, 3))?;
        assert!(crate::nn::rel_err(&y3, &y)? < 1e-6);
        Ok(())
    }
}
