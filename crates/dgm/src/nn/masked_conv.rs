//! Masked convolutions for autoregressive image models: PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu
//! 2016, arXiv:1601.06759) and Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with
//! PixelCNN Decoders", arXiv:1606.05328).
//!
//! An autoregressive image model factorises p(x) = Π_i p(x_i | x_<i) over pixels in raster order (and over
//! colours R → G → B within a pixel), so the features that predict pixel i may depend only on x_<i. A masked
//! convolution enforces this by multiplying its k×k weight by a fixed 0/1 mask: y = (W ⊙ M) ∗ x + b.
//! With c = ⌊k/2⌋ the centre tap, the masks of [`MaskKind`] are
//!
//! * `A` / `B` (PixelCNN): rows above the centre, and the centre row left of the centre; at the centre itself
//!   `A` (first layer) sees only the colours strictly before the output's colour, `B` (later layers) the
//!   colours up to and including it. Stacking them leaves a *blind spot* up and to the right of each pixel.
//! * `Vertical` (Gated PixelCNN's vertical stack): every tap in the centre row and above (ky ≤ c). Its output at
//!   row i sees input rows ≤ i; [`shift_down`] moves it one row down before it feeds the horizontal stack, which
//!   then sees only rows strictly above — all of them within the growing receptive field, so no blind spot.
//! * `HorizontalA` / `HorizontalB` (horizontal stack): the centre row left of the centre, and the centre tap with
//!   the `A` / `B` colour rule.
//!
//! Colours: every channel belongs to a colour group ([`colour_groups`]); with one colour (grey or binary
//! images) rule `A` excludes the centre tap altogether and `B` includes it.
//!
//! Implementation (the choice the module makes): the weight is stored as a full square `(c_out, c_in, k, k)`
//! kernel and the mask applied on every forward pass, so gradients of masked taps are zero and the layer runs
//! through dgm's CPU kernel [`crate::nn::kernels::conv::conv2d`] with symmetric padding c (same-size output). This is
//! exact and simple; it wastes the masked taps' multiply-adds. The horizontal masks keep at most c + 1 taps of
//! one row out of k², so for them the layer instead gathers the active taps as column-shifted copies of the
//! input (zero-padded on the left, so a tap never reads a later column) and runs one 1×1 convolution over their
//! concatenation — the same sum, in about (c + 1)/k² of the multiply-adds. The tests check both paths against
//! candle's stock convolution with the masked kernel.
//!
//! [`gated_activation`] (a CPU kernel in [`super::kernels::gate`], re-exported here) is the Gated PixelCNN
//! non-linearity tanh(a) ⊙ σ(g) over the two halves of a layer's 2p channels.

use candle_core::Tensor;
use candle_nn::init::Init;
use candle_nn::VarBuilder;

pub use super::kernels::gate::gated_activation;
use crate::{Error, Result};

/// Which taps of a k×k kernel a [`MaskedConv2d`] sees (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskKind {
    /// PixelCNN mask A (first layer): rows above, the centre row left of the centre, and at the centre only
    /// earlier colours.
    A,
    /// PixelCNN mask B (later layers): as A, and at the centre colours up to and including the output's.
    B,
    /// Gated PixelCNN vertical stack: all taps in the centre row and above.
    Vertical,
    /// Gated PixelCNN horizontal stack, first layer: the centre row left of the centre, and at the centre only
    /// earlier colours.
    HorizontalA,
    /// Gated PixelCNN horizontal stack, later layers: as `HorizontalA`, and at the centre colours up to and
    /// including the output's.
    HorizontalB,
}

impl MaskKind {
    /// Whether tap (ky, kx) of a kernel with centre c connects input colour `gin` to output colour `gout`.
    pub fn allows(self, ky: usize, kx: usize, c: usize, gin: usize, gout: usize) -> bool {
        let centre = match self {
            MaskKind::A | MaskKind::HorizontalA => gin < gout,
            MaskKind::B | MaskKind::HorizontalB => gin <= gout,
            MaskKind::Vertical => true,
        };
        match self {
            MaskKind::Vertical => ky <= c,
            MaskKind::A | MaskKind::B => ky < c || (ky == c && (kx < c || (kx == c && centre))),
            MaskKind::HorizontalA | MaskKind::HorizontalB => {
                ky == c && (kx < c || (kx == c && centre))
            }
        }
    }

    /// Whether every tap the mask can allow lies in the centre row (the horizontal stack).
    fn one_row(self) -> bool {
        matches!(self, MaskKind::HorizontalA | MaskKind::HorizontalB)
    }
}

/// The colour group of each of `n` channels when they are split as evenly as possible, in order, among
/// `colours` groups: channel o belongs to group ⌊o · colours / n⌋. With `n == colours` this is the identity
/// (the image's own channels); with one colour every channel is in group 0.
pub fn colour_groups(n: usize, colours: usize) -> Vec<usize> {
    (0..n).map(|o| o * colours / n.max(1)).collect()
}

/// The 0/1 mask `(c_out, c_in, k, k)`, flattened row-major, of a `kind` kernel of size `k` between input
/// channels of colour `in_groups[i]` and output channels of colour `out_groups[o]`.
pub fn mask(kind: MaskKind, k: usize, in_groups: &[usize], out_groups: &[usize]) -> Vec<f32> {
    let c = k / 2;
    let mut m = Vec::with_capacity(out_groups.len() * in_groups.len() * k * k);
    for &go in out_groups {
        for &gi in in_groups {
            for ky in 0..k {
                for kx in 0..k {
                    m.push(if kind.allows(ky, kx, c, gi, go) {
                        1.0
                    } else {
                        0.0
                    });
                }
            }
        }
    }
    m
}

/// A k×k convolution (odd k, stride 1, same-size output) whose weight is multiplied by a fixed causal mask:
/// `y = (W ⊙ M) ∗ x + b`, weight `(c_out, c_in, k, k)` and bias `(c_out,)` as in PyTorch's `Conv2d`.
#[derive(Clone, Debug)]
pub struct MaskedConv2d {
    weight: Tensor,
    bias: Tensor,
    /// `(c_out, c_in, k, k)`, 0/1.
    mask: Tensor,
    kind: MaskKind,
    k: usize,
    /// The centre-row columns with any active tap, when the horizontal (one-row) path applies.
    row_taps: Option<Vec<usize>>,
}

impl MaskedConv2d {
    /// A masked `k`×`k` convolution from `in_groups.len()` to `out_groups.len()` channels, each labelled with its
    /// colour group (see [`colour_groups`]); variables `weight` and `bias` under `vb`. The initialisation is
    /// PyTorch's U(−1/√fan_in, 1/√fan_in) with fan_in the mean number of unmasked inputs per output.
    pub fn new(
        kind: MaskKind,
        k: usize,
        in_groups: &[usize],
        out_groups: &[usize],
        vb: VarBuilder,
    ) -> Result<Self> {
        let (ci, co) = (in_groups.len(), out_groups.len());
        if k == 0 || k.is_multiple_of(2) || ci == 0 || co == 0 {
            return Err(Error::invalid(
                "masked conv",
                format!("kernel {k} with {ci} → {co} channels: need an odd kernel size and ≥ 1 channel each way"),
            ));
        }
        let m = mask(kind, k, in_groups, out_groups);
        let active = m.iter().filter(|&&v| v > 0.0).count();
        if active == 0 {
            return Err(Error::invalid(
                "masked conv",
                format!("a {kind:?} mask of size {k} between these colour groups connects nothing; use mask B or a larger kernel"),
            ));
        }
        let fan_in = (active as f64 / co as f64).max(1.0);
        let b = 1.0 / fan_in.sqrt();
        let init = Init::Uniform { lo: -b, up: b };
        let weight = vb.get_with_hints((co, ci, k, k), "weight", init)?;
        let bias = vb.get_with_hints(co, "bias", init)?;
        let mask = Tensor::from_vec(m.clone(), (co, ci, k, k), vb.device())?;
        let c = k / 2;
        let row_taps = (kind.one_row() && k > 1).then(|| {
            (0..k)
                .filter(|&kx| (0..co * ci).any(|oi| m[oi * k * k + c * k + kx] > 0.0))
                .collect::<Vec<usize>>()
        });
        Ok(Self {
            weight,
            bias,
            mask,
            kind,
            k,
            row_taps,
        })
    }

    /// The mask kind.
    pub fn kind(&self) -> MaskKind {
        self.kind
    }

    /// The kernel size k.
    pub fn kernel(&self) -> usize {
        self.k
    }

    /// The masked weight W ⊙ M, `(c_out, c_in, k, k)`.
    pub fn masked_weight(&self) -> Result<Tensor> {
        Ok((&self.weight * &self.mask)?)
    }

    /// `(b, c_in, h, w)` → `(b, c_out, h, w)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.row_taps {
            Some(taps) => self.forward_row(x, taps),
            None => self.forward_square(x),
        }
    }

    /// The square path: the masked kernel through dgm's convolution with padding k/2.
    fn forward_square(&self, x: &Tensor) -> Result<Tensor> {
        super::kernels::conv::conv2d(x, &self.masked_weight()?, Some(&self.bias), 1, self.k / 2)
    }

    /// The one-row path: Σ over active centre-row taps kx of W[:, :, c, kx] · x shifted right by c − kx
    /// columns, as one 1×1 convolution over the concatenated shifted copies.
    fn forward_row(&self, x: &Tensor, taps: &[usize]) -> Result<Tensor> {
        let (_, _, _, w) = x.dims4()?;
        let c = self.k / 2;
        let xp = x.pad_with_zeros(3, c, 0)?; // (b, ci, h, w + c): column j + kx − c of x is column j + kx here
        let shifted: Vec<Tensor> = taps
            .iter()
            .map(|&kx| xp.narrow(3, kx, w))
            .collect::<candle_core::Result<_>>()?; // each (b, ci, h, w)
        let wrow = self.masked_weight()?.narrow(2, c, 1)?; // (co, ci, 1, k)
        let wtaps: Vec<Tensor> = taps
            .iter()
            .map(|&kx| wrow.narrow(3, kx, 1))
            .collect::<candle_core::Result<_>>()?; // each (co, ci, 1, 1)
        let xs = Tensor::cat(&shifted, 1)?; // (b, taps·ci, h, w), tap-major
        let ws = Tensor::cat(&wtaps, 1)?; // (co, taps·ci, 1, 1), same order
        super::kernels::conv::conv2d(&xs, &ws, Some(&self.bias), 1, 0)
    }
}

/// Shifts a feature map one row down: row i of the output is row i − 1 of `x`, row 0 is zero.
/// `(b, c, h, w)` → `(b, c, h, w)`.
pub fn shift_down(x: &Tensor) -> Result<Tensor> {
    let h = x.dim(2)?;
    Ok(x.pad_with_zeros(2, 1, 0)?.narrow(2, 0, h)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Params;
    use crate::rng::Rng;
    use candle_core::{Device, Var};

    const KINDS: [MaskKind; 5] = [
        MaskKind::A,
        MaskKind::B,
        MaskKind::Vertical,
        MaskKind::HorizontalA,
        MaskKind::HorizontalB,
    ];

    /// The single-colour masks of a 5×5 kernel, tap by tap, as drawn in the papers.
    #[test]
    fn masks_match_the_papers_drawings() {
        let draw = |kind| -> String {
            let m = mask(kind, 5, &[0], &[0]);
            m.chunks(5)
                .map(|r| {
                    r.iter()
                        .map(|&v| if v > 0.0 { '1' } else { '.' })
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
                .join("/")
        };
        assert_eq!(draw(MaskKind::A), "11111/11111/11.../...../.....");
        assert_eq!(draw(MaskKind::B), "11111/11111/111../...../.....");
        assert_eq!(draw(MaskKind::Vertical), "11111/11111/11111/...../.....");
        assert_eq!(draw(MaskKind::HorizontalA), "...../...../11.../...../.....");
        assert_eq!(draw(MaskKind::HorizontalB), "...../...../111../...../.....");
        // 1×1: A connects nothing for one colour, B is the identity mask
        assert_eq!(mask(MaskKind::B, 1, &[0], &[0]), vec![1.0]);
        assert_eq!(mask(MaskKind::A, 1, &[0], &[0]), vec![0.0]);
    }

    /// With three colours the centre tap connects colour gi → go only when gi < go (A) or gi ≤ go (B), and the
    /// other taps regardless of colour.
    #[test]
    fn colour_masks_order_r_g_b() {
        assert_eq!(colour_groups(3, 3), vec![0, 1, 2]);
        assert_eq!(colour_groups(8, 3), vec![0, 0, 0, 1, 1, 1, 2, 2]);
        assert_eq!(colour_groups(4, 1), vec![0; 4]);
        let g = [0, 1, 2];
        for (kind, strict) in [
            (MaskKind::A, true),
            (MaskKind::B, false),
            (MaskKind::HorizontalA, true),
        ] {
            let m = mask(kind, 3, &g, &g);
            for go in 0..3 {
                for gi in 0..3 {
                    let at = |ky: usize, kx: usize| m[((go * 3 + gi) * 3 + ky) * 3 + kx];
                    let want = if strict { gi < go } else { gi <= go };
                    assert_eq!(at(1, 1) > 0.0, want, "{kind:?} {gi}→{go}");
                    assert_eq!(at(1, 0), 1.0);
                    assert_eq!(at(1, 2), 0.0);
                    assert_eq!(at(2, 1), 0.0);
                }
            }
        }
    }

    /// Both forward paths equal candle's stock convolution with the masked kernel, and gradients of masked taps
    /// are exactly zero.
    #[test]
    fn forward_matches_the_stock_masked_convolution() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = Rng::new(3);
        for kind in KINDS {
            for (k, colours) in [(3, 1), (5, 1), (3, 3), (7, 1)] {
                let p = Params::new(1, &dev);
                let (ci, co) = (colours * 2, colours * 3);
                let conv = MaskedConv2d::new(
                    kind,
                    k,
                    &colour_groups(ci, colours),
                    &colour_groups(co, colours),
                    p.var_builder(),
                )?;
                let x = Var::from_tensor(&rng.randn((2, ci, 6, 5), &dev)?)?;
                let y = conv.forward(&x)?;
                let want = crate::nn::kernels::conv::conv2d_stock(
                    &x,
                    &conv.masked_weight()?,
                    Some(&conv.bias),
                    1,
                    k / 2,
                )?;
                assert_eq!(y.dims(), &[2, co, 6, 5]);
                let err = crate::nn::rel_err(&y, &want)?;
                assert!(err < 1e-5, "{kind:?} k={k} colours={colours}: {err}");
                let sq = conv.forward_square(&x)?;
                assert!(crate::nn::rel_err(&sq, &want)? < 1e-5);
                let grads = y.sum_all()?.backward()?;
                let gw = grads
                    .get(&conv.weight)
                    .map(|g| g.flatten_all()?.to_vec1::<f32>())
                    .transpose()?
                    .unwrap_or_default();
                let m = mask(
                    kind,
                    k,
                    &colour_groups(ci, colours),
                    &colour_groups(co, colours),
                );
                assert_eq!(gw.len(), m.len());
                for (g, mv) in gw.iter().zip(&m) {
                    if *mv == 0.0 {
                        assert_eq!(*g, 0.0, "{kind:?}: masked tap has gradient");
                    }
                }
                assert!(gw.iter().any(|g| *g != 0.0));
            }
        }
        Ok(())
    }

    /// Output pixel (i, j) depends on input pixel (i', j') exactly where the mask allows it: checked by
    /// gradients of every output pixel of a one-channel map.
    #[test]
    fn receptive_field_of_one_layer() -> Result<()> {
        let dev = Device::Cpu;
        let (h, w, k) = (5, 5, 3);
        for kind in KINDS {
            let p = Params::new(2, &dev);
            let conv = MaskedConv2d::new(kind, k, &[0], &[0], p.var_builder())?;
            // a positive kernel, so an allowed tap can't have a zero weight by chance
            for (_, v) in p.vars() {
                v.set(&(v.as_tensor().abs()? + 0.1)?)?;
            }
            let x = Var::from_tensor(&Rng::new(4).randn((1, 1, h, w), &dev)?)?;
            let y = conv.forward(&x)?;
            for (i, j) in (0..h).flat_map(|i| (0..w).map(move |j| (i, j))) {
                let gx = y.narrow(2, i, 1)?.narrow(3, j, 1)?.sum_all()?.backward()?;
                let g = gx
                    .get(&x)
                    .map(|g| g.flatten_all()?.to_vec1::<f32>())
                    .transpose()?
                    .unwrap_or(vec![0.0; h * w]);
                for (a, b) in (0..h).flat_map(|a| (0..w).map(move |b| (a, b))) {
                    let (dy, dx) = (a as isize - i as isize + 1, b as isize - j as isize + 1);
                    let want = (0..3).contains(&dy)
                        && (0..3).contains(&dx)
                        && kind.allows(dy as usize, dx as usize, 1, 0, 0);
                    assert_eq!(
                        g[a * w + b] != 0.0,
                        want,
                        "{kind:?} out ({i},{j}) in ({a},{b})"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn shift_down_moves_rows_and_bad_kernels_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 6.0, &dev)?.reshape((1, 1, 3, 2))?;
        let y = shift_down(&x)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(y, vec![0.0, 0.0, 0.0, 1.0, 2.0, 3.0]);
        let p = Params::new(0, &dev);
        assert!(MaskedConv2d::new(MaskKind::B, 4, &[0], &[0], p.var_builder()).is_err());
        let e = MaskedConv2d::new(MaskKind::A, 1, &[0], &[0], p.var_builder())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("connects nothing"), "{e}");
        Ok(())
    }
}
