//! A whole model through dgm's layer types computes the same loss and gradients on dgm's CPU kernels as on
//! candle's stock ops. (Its own test binary: `set_stock_ops` is process-wide, and this file has one test.)

use candle_core::{Device, Tensor};
use dgm::nn::{set_stock_ops, Activation, Conv2d, ConvTranspose2d, GroupNorm, Linear, Params};
use dgm::rng::Rng;
use dgm::Result;

/// A small UNet-like stack touching every kernel: conv (stride 1 and 2), group norm (+SiLU), transposed
/// conv, linear with a fused activation.
struct Net {
    conv_in: Conv2d,
    gn: GroupNorm,
    conv: Conv2d,
    down: Conv2d,
    up: ConvTranspose2d,
    gn_out: GroupNorm,
    head: Linear,
}

impl Net {
    fn new(p: &Params) -> Result<Self> {
        let vb = p.var_builder();
        Ok(Self {
            conv_in: Conv2d::new(3, 8, 3, 1, 1, vb.pp("conv_in"))?,
            gn: GroupNorm::new(4, 8, vb.pp("gn"))?,
            conv: Conv2d::new(8, 8, 3, 1, 1, vb.pp("conv"))?,
            down: Conv2d::new(8, 16, 3, 2, 1, vb.pp("down"))?,
            up: ConvTranspose2d::new(16, 8, 4, 2, 1, 0, vb.pp("up"))?,
            gn_out: GroupNorm::new(2, 8, vb.pp("gn_out"))?,
            head: Linear::new(8 * 10 * 10, 5, vb.pp("head"))?,
        })
    }

    fn loss(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv_in.forward(x)?; // (b, 8, 10, 10)
        let h = (&h + self.conv.forward(&self.gn.forward_silu(&h)?)?)?;
        let d = self.down.forward(&h)?; // (b, 16, 5, 5)
        let u = self.up.forward(&d)?; // (b, 8, 10, 10)
        let h = self.gn_out.forward(&(u + h)?)?;
        let y = self
            .head
            .forward_act(&h.flatten_from(1)?, Activation::Tanh)?; // (b, 5)
        Ok(y.sqr()?.mean_all()?)
    }
}

#[test]
fn model_loss_and_gradients_match_candle_stock_ops() -> Result<()> {
    let dev = Device::Cpu;
    let params = Params::new(7, &dev);
    let net = Net::new(&params)?;
    let x = Rng::new(1).randn((3, 3, 10, 10), &dev)?;
    let run = |stock: bool| -> Result<(f32, Vec<Vec<f32>>)> {
        set_stock_ops(stock);
        let loss = net.loss(&x)?;
        let grads = loss.backward()?;
        let mut g = vec![];
        for (name, v) in params.vars() {
            let t = grads
                .get(v.as_tensor())
                .ok_or_else(|| dgm::Error::invalid("test", format!("no gradient for {name}")))?;
            g.push(t.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok((loss.to_scalar::<f32>()?, g))
    };
    let (l_ours, g_ours) = run(false)?;
    let (l_stock, g_stock) = run(true)?;
    set_stock_ops(false);
    assert!(
        (l_ours - l_stock).abs() <= 1e-5 * l_stock.abs().max(1.0),
        "{l_ours} vs {l_stock}"
    );
    assert_eq!(g_ours.len(), 14);
    for (a, b) in g_ours.iter().zip(&g_stock) {
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let err = a.iter().zip(b).fold(0f32, |m, (u, v)| m.max((u - v).abs())) / scale;
        assert!(err < 1e-4, "gradient rel err {err}");
    }
    Ok(())
}
