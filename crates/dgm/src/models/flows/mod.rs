//! Normalizing flows: invertible networks with an exact log-likelihood by the change of variables
//!
//!   log p(x) = log N(f(x); 0, I) + log |det ∂f(x)/∂x|,
//!
//! an exact encoder (x → z = f(x)) and exact sampling (z ~ N(0, T²I) → x = f⁻¹(z), T the temperature).
//!
//! * [`layers`]: the invertible layers (ActNorm, invertible 1×1 convolution, affine coupling, logit) and the
//!   squeeze.
//! * [`spline`]: rational-quadratic spline transforms with linear tails (Durkan et al. 2019).
//! * [`realnvp`], [`glow`]: the papers' architectures, each a list of [`Step`]s.
//! * [`maf`]: masked autoregressive flow, MADE-based affine autoregressive layers (Papamakarios et al. 2017).
//! * [`nsf`]: neural spline flows, spline couplings or MADE-based spline layers (Durkan et al. 2019).
//! * [`dequant`]: variational dequantization (Flow++), an option of the image flows RealNVP and Glow.
//!
//! [`Flow`] runs a list of steps, including the multi-scale architecture's squeeze and factor-out
//! (RealNVP §3.6): at a [`Step::Split`] the first half of the channels leaves the flow as part of z and the
//! rest goes on; z is the concatenation of the parts in the order they left, then the last output, each
//! flattened. [`FlowModel`] is what every flow shares as a [`Model`]: the pixel preprocessing ([`Logit`]), a
//! standard normal base, the loss (the exact NLL), sampling, [`Density`] and [`Latent`].
//!
//! Images are modelled as densities over uniformly dequantized pixels in [0, 1] (`data.preprocessing =
//! { kind = "scale", range = "zero_one", dequantize = true }`), so their bits/dim bound the probability of the
//! 8-bit values on the same accounting as every other family (see [`crate::model::bits_per_dim`]). With
//! `model.dequantization.kind = "variational"` (RealNVP, Glow) the data arrive as the 8-bit values
//! (`dequantize = false`) and the model adds learned noise itself; its likelihoods are then bounds on the
//! probability of the values directly ([`dequant`]).

pub mod dequant;
pub mod glow;
pub mod layers;
pub mod maf;
pub mod nsf;
pub mod realnvp;
pub mod spline;

use candle_core::{DType, Device, Tensor};

use crate::data::{Batch, Preprocessing};
use crate::model::{
    Condition, Density, Latent, LikelihoodKind, LikelihoodOptions, LikelihoodSpace, LogLikelihood,
    LossOutput, Model, SampleOptions,
};
use crate::models::autoregressive::exact_log_likelihood;
use crate::rng::Rng;
use crate::{Error, Result};
use dequant::{DequantConfig, VariationalDequantizer};
use layers::{squeeze, standard_normal_log_prob, unsqueeze, Bijection, Logit};

/// The likelihood estimators of the flows: the exact likelihood only.
pub use crate::models::autoregressive::ESTIMATORS;

/// The likelihood estimators of a flow with variational dequantization: the bound of [`dequant`] with
/// `samples` noise draws averaged (`elbo`), and its importance-weighted version (`iwae`).
pub const DEQUANT_ESTIMATORS: &[&str] = &["elbo", "iwae"];

/// One step of a [`Flow`].
pub enum Step {
    /// An invertible layer.
    Layer(Box<dyn Bijection>),
    /// `(b, c, h, w)` → `(b, 4c, h/2, w/2)` ([`layers::squeeze`]).
    Squeeze,
    /// The first ⌊c/2⌋ channels leave the flow (factored out into z); the rest go on.
    Split,
}

/// Builds a [`Flow`] step by step, tracking the shape of the activations.
pub struct FlowBuilder {
    input_shape: Vec<usize>,
    shape: Vec<usize>,
    steps: Vec<Step>,
    parts: Vec<Vec<usize>>,
}

impl FlowBuilder {
    /// A flow over examples of shape `shape` (`[c, h, w]` or `[d]`).
    pub fn new(shape: &[usize]) -> Self {
        Self {
            input_shape: shape.to_vec(),
            shape: shape.to_vec(),
            steps: Vec::new(),
            parts: Vec::new(),
        }
    }

    /// The shape of the activations at this point.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Appends an invertible layer (which keeps the shape).
    pub fn push(&mut self, layer: impl Bijection + 'static) {
        self.steps.push(Step::Layer(Box::new(layer)));
    }

    /// Appends a squeeze; the height and width must be even. `what` names the setting that asked for it.
    pub fn squeeze(&mut self, what: &str) -> Result<()> {
        match self.shape[..] {
            [c, h, w] if h % 2 == 0 && w % 2 == 0 && h > 0 && w > 0 => {
                self.shape = vec![4 * c, h / 2, w / 2];
                self.steps.push(Step::Squeeze);
                Ok(())
            }
            _ => Err(Error::invalid(
                what,
                format!(
                    "the flow squeezes activations of shape {:?} (examples {:?}), but a squeeze needs images with an even height and width: use fewer levels or an image size divisible by 2^levels",
                    self.shape, self.input_shape
                ),
            )),
        }
    }

    /// Appends a factor-out of the first ⌊c/2⌋ channels.
    pub fn split(&mut self) -> Result<()> {
        let c = self.shape[0];
        if c < 2 {
            return Err(Error::invalid(
                "flow split",
                format!(
                    "cannot factor out half of {c} channel(s) (shape {:?})",
                    self.shape
                ),
            ));
        }
        let mut out = self.shape.clone();
        out[0] = c / 2;
        self.parts.push(out);
        self.shape[0] = c - c / 2;
        self.steps.push(Step::Split);
        Ok(())
    }

    /// The flow.
    pub fn build(mut self) -> Flow {
        self.parts.push(self.shape.clone());
        Flow {
            steps: self.steps,
            input_shape: self.input_shape,
            parts: self.parts,
        }
    }
}

/// What [`Flow`]'s forward pass does with each layer: (output, log-determinant) from (layer, input).
type LayerFn<'a> = dyn FnMut(&dyn Bijection, &Tensor) -> Result<(Tensor, Tensor)> + 'a;

/// A list of invertible steps with multi-scale factor-out: x `(b, …)` ↔ z `(b, D)`.
pub struct Flow {
    steps: Vec<Step>,
    input_shape: Vec<usize>,
    /// Shapes of the factored-out parts in the order they leave, then of the last output.
    parts: Vec<Vec<usize>>,
}

impl Flow {
    /// The shape of one input example.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// D, the number of values of one example (and of its z).
    pub fn dim(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// z = f(x) `(b, D)` and log|det ∂f/∂x| `(b,)`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.run_forward(x, &mut |layer, h| layer.forward(h))
    }

    /// The forward pass with data-dependent initialisation ([`Bijection::data_init`]) layer by layer: the
    /// values of the initialised variables by name.
    pub fn data_init(&self, x: &Tensor) -> Result<Vec<(String, Tensor)>> {
        let mut values = Vec::new();
        self.run_forward(x, &mut |layer, h| {
            let (vals, y) = layer.data_init(h)?;
            values.extend(vals);
            Ok((y, Tensor::zeros(h.dim(0)?, h.dtype(), h.device())?))
        })?;
        Ok(values)
    }

    fn run_forward(&self, x: &Tensor, apply: &mut LayerFn) -> Result<(Tensor, Tensor)> {
        let b = x.dim(0)?;
        if x.dims()[1..] != self.input_shape[..] {
            return Err(Error::invalid(
                "flow input",
                format!(
                    "examples of shape {:?}, the flow models {:?}",
                    &x.dims()[1..],
                    self.input_shape
                ),
            ));
        }
        let mut h = x.clone();
        let mut logdet = Tensor::zeros(b, x.dtype(), x.device())?;
        let mut zs = Vec::with_capacity(self.parts.len());
        for step in &self.steps {
            match step {
                Step::Layer(layer) => {
                    let (y, ld) = apply(layer.as_ref(), &h)?;
                    h = y;
                    logdet = (logdet + ld)?;
                }
                Step::Squeeze => h = squeeze(&h)?,
                Step::Split => {
                    let c = h.dim(1)?;
                    zs.push(h.narrow(1, 0, c / 2)?.reshape((b, ()))?);
                    h = h.narrow(1, c / 2, c - c / 2)?;
                }
            }
        }
        zs.push(h.reshape((b, ()))?);
        Ok((Tensor::cat(&zs, 1)?, logdet))
    }

    /// x = f⁻¹(z) and log|det ∂f⁻¹/∂z| `(b,)`, from z `(b, D)`.
    pub fn inverse(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, d) = z.dims2()?;
        if d != self.dim() {
            return Err(Error::invalid(
                "flow latent",
                format!("codes of {d} values, the flow's have {}", self.dim()),
            ));
        }
        let mut parts = Vec::with_capacity(self.parts.len());
        let mut at = 0;
        for shape in &self.parts {
            let n: usize = shape.iter().product();
            let mut full = vec![b];
            full.extend(shape);
            parts.push(z.narrow(1, at, n)?.reshape(full)?);
            at += n;
        }
        // `parts` holds one shape per split and the last output's (FlowBuilder::build), so the pops below
        // cannot run dry; they are errors rather than panics all the same
        let missing = || Error::invalid("flow latent", "the flow's parts do not match its splits");
        let mut h = parts.pop().ok_or_else(missing)?;
        let mut logdet = Tensor::zeros(b, z.dtype(), z.device())?;
        for step in self.steps.iter().rev() {
            match step {
                Step::Layer(layer) => {
                    let (x, ld) = layer.inverse(&h)?;
                    h = x;
                    logdet = (logdet + ld)?;
                }
                Step::Squeeze => h = unsqueeze(&h)?,
                Step::Split => {
                    let part = parts.pop().ok_or_else(missing)?;
                    h = Tensor::cat(&[&part, &h], 1)?;
                }
            }
        }
        Ok((h, logdet))
    }
}

/// A flow as a generative model: preprocessing, the flow, and a standard normal base.
pub struct FlowModel {
    name: &'static str,
    pre: Option<Logit>,
    flow: Flow,
    deq: Option<VariationalDequantizer>,
    device: Device,
    dtype: DType,
}

impl FlowModel {
    /// The model `name` (registry name): `pre` maps the data into the flow's input space (images in [0, 1];
    /// `None` for data used as they are), then `flow`, whose variables are of `dtype` on `device`.
    pub fn new(
        name: &'static str,
        pre: Option<Logit>,
        flow: Flow,
        device: &Device,
        dtype: DType,
    ) -> Self {
        Self {
            name,
            pre,
            flow,
            deq: None,
            device: device.clone(),
            dtype,
        }
    }

    /// The model with learned dequantization noise q (`None`: the data arrive dequantized).
    pub fn with_dequantizer(mut self, deq: Option<VariationalDequantizer>) -> Self {
        self.deq = deq;
        self
    }

    /// For variational dequantization: y = (k + u)/256 with u ~ q(u | k) drawn from `rng` (noise for the
    /// examples in order, D values each), and log q(u | k) `(b,)`.
    fn dequantize(
        &self,
        deq: &VariationalDequantizer,
        x: &Tensor,
        rngs: &mut dyn FnMut(usize) -> Vec<f32>,
    ) -> Result<(Tensor, Tensor)> {
        let eps: Vec<f32> = (0..x.dim(0)?).flat_map(&mut *rngs).collect();
        let eps = Tensor::from_vec(eps, x.shape(), &self.device)?.to_dtype(self.dtype)?;
        let (u, log_q) = deq.sample(x, &eps)?;
        Ok((dequant::dequantize(x, &u)?, log_q))
    }

    /// The point of the flow's input space an example stands for: the example itself, or with variational
    /// dequantization the centre of its 8-bit bin, (k + ½)/256 (encoding and ActNorm's initialisation).
    fn point(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.input(x)?;
        Ok(match self.deq {
            Some(_) => ((dequant::levels(&x)? + 0.5)? / 256.0)?,
            None => x,
        })
    }

    /// Decoded values as data: with variational dequantization, the 8-bit value of the bin each falls in.
    fn to_data(&self, y: Tensor) -> Result<Tensor> {
        Ok(match self.deq {
            Some(_) => dequant::quantize(&y)?,
            None => y,
        })
    }

    /// The flow.
    pub fn flow(&self) -> &Flow {
        &self.flow
    }

    /// A batch's examples in the model's dtype, checked against the flow's shape.
    fn input(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() < 2 || x.dims()[1..] != self.flow.input_shape[..] {
            return Err(Error::invalid(
                self.name,
                format!(
                    "examples of shape {:?}, the model was built for {:?}",
                    &x.dims()[1..],
                    self.flow.input_shape
                ),
            ));
        }
        Ok(x.to_dtype(self.dtype)?)
    }

    /// z = f(pre(x)) `(b, D)` and the log-determinant of the whole map `(b,)`.
    pub fn encode_with_logdet(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = self.input(x)?;
        let (h, ld0) = match &self.pre {
            Some(p) => p.forward(&x)?,
            None => (x.clone(), Tensor::zeros(x.dim(0)?, x.dtype(), x.device())?),
        };
        let (z, ld) = self.flow.forward(&h)?;
        Ok((z, (ld0 + ld)?))
    }

    /// log p(x) per example in nats, `(b,)`, with its autograd graph.
    pub fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        let (z, ld) = self.encode_with_logdet(x)?;
        Ok((standard_normal_log_prob(&z)? + ld)?)
    }

    /// x = pre⁻¹(f⁻¹(z)) from codes `(b, D)`, shaped like the data.
    pub fn decode_z(&self, z: &Tensor) -> Result<Tensor> {
        let (h, _) = self.flow.inverse(&z.to_dtype(self.dtype)?)?;
        Ok(match &self.pre {
            Some(p) => p.inverse(&h)?.0,
            None => h,
        })
    }

    fn check_unconditional(&self, condition: &Condition) -> Result<()> {
        if *condition != Condition::None {
            return Err(Error::Unsupported(format!(
                "{} is unconditional: it takes no class or caption",
                self.name
            )));
        }
        Ok(())
    }
}

impl Model for FlowModel {
    fn name(&self) -> &str {
        self.name
    }

    /// The exact NLL −log p(x) in nats of the dequantized values (summed over dimensions, averaged over the
    /// batch); with variational dequantization −[log p(y) − log q(u | k)] for one u ~ q per example (the
    /// uniform case has log q = 0). For images also logged as bits/dim of the 8-bit values,
    /// (nll + D ln 256) / (D ln 2) (part `bpd`).
    fn loss(&self, batch: &Batch, rng: &mut Rng) -> Result<LossOutput> {
        let ll = match &self.deq {
            None => self.log_prob(&batch.x)?,
            Some(deq) => {
                let x = self.input(&batch.x)?;
                let (y, log_q) =
                    self.dequantize(deq, &x, &mut |_| rng.normal_vec(self.flow.dim()))?;
                (self.log_prob(&y)? - log_q)?
            }
        };
        let loss = ll.mean_all()?.neg()?;
        let mut out = LossOutput::single("nll", loss)?;
        if self.pre.is_some() {
            let d = self.flow.dim() as f64;
            let bpd = (out.parts[0].1 + d * 256f64.ln()) / (d * std::f64::consts::LN_2);
            out.parts.push(("bpd".into(), bpd));
        }
        Ok(out)
    }

    /// z ~ N(0, T²I) from the seed (T = `opts.temperature`), then x = f⁻¹(z); images are clipped to [0, 1]
    /// (the logit preprocessing keeps them inside; Glow's shift does not).
    fn sample(&self, n: usize, opts: &SampleOptions) -> Result<Tensor> {
        if n == 0 {
            return Err(Error::invalid("n", "the number of samples must be ≥ 1"));
        }
        if !(opts.temperature > 0.0 && opts.temperature.is_finite()) {
            return Err(Error::invalid(
                "temperature",
                format!("{} must be a positive number", opts.temperature),
            ));
        }
        self.check_unconditional(&opts.condition)?;
        let d = self.flow.dim();
        let mut rng = Rng::new(opts.seed);
        let z: Vec<f32> = (0..n * d)
            .map(|_| (rng.normal() as f64 * opts.temperature) as f32)
            .collect();
        let x = self
            .decode_z(&Tensor::from_vec(z, (n, d), &self.device)?)?
            .detach()
            .to_dtype(DType::F32)?;
        match self.pre {
            Some(_) => self.to_data(x.clamp(0f32, 1f32)?),
            None => Ok(x),
        }
    }

    fn as_density(&self) -> Option<&dyn Density> {
        Some(self)
    }

    fn as_latent(&self) -> Option<&dyn Latent> {
        Some(self)
    }

    /// ActNorm's data-dependent initialisation (Glow §3.1) on the batch.
    fn data_init(&self, batch: &Batch) -> Result<Vec<(String, Tensor)>> {
        let x = self.point(&batch.x)?;
        let h = match &self.pre {
            Some(p) => p.forward(&x)?.0,
            None => x,
        };
        self.flow.data_init(&h)
    }
}

impl Density for FlowModel {
    fn estimators(&self) -> Vec<String> {
        let names = match self.deq {
            Some(_) => DEQUANT_ESTIMATORS,
            None => ESTIMATORS,
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// The exact log p(x) in nats, a density over the (dequantized) values, in chunks of `opts.chunk`. With
    /// variational dequantization, the bound on log P(k) of [`dequant`] (`elbo`: the mean over
    /// `opts.samples` draws of u; `iwae`: their importance-weighted log-mean), probabilities of the values.
    fn log_likelihood(&self, batch: &Batch, opts: &LikelihoodOptions) -> Result<LogLikelihood> {
        if let Some(deq) = &self.deq {
            return self.dequantized_log_likelihood(deq, batch, opts);
        }
        let n = batch.x.dim(0)?;
        let mut ll = exact_log_likelihood(
            opts,
            None,
            || Ok((&batch.x, n)),
            |x, s, len| {
                let lp = self.log_prob(&x.narrow(0, s, len)?)?.detach();
                Ok(lp.to_dtype(DType::F64)?.to_vec1::<f64>()?)
            },
        )?;
        ll.space = LikelihoodSpace::Continuous;
        Ok(ll)
    }
}

impl FlowModel {
    fn dequantized_log_likelihood(
        &self,
        deq: &VariationalDequantizer,
        batch: &Batch,
        opts: &LikelihoodOptions,
    ) -> Result<LogLikelihood> {
        let iw = match opts.estimator.as_deref().unwrap_or(DEQUANT_ESTIMATORS[0]) {
            "elbo" => false,
            "iwae" => true,
            other => return Err(Error::unknown("estimator", other, DEQUANT_ESTIMATORS)),
        };
        if opts.samples == 0 || opts.chunk == 0 {
            return Err(Error::invalid(
                "likelihood options",
                format!(
                    "samples ({}) and chunk ({}) must be ≥ 1",
                    opts.samples, opts.chunk
                ),
            ));
        }
        let k = opts.samples;
        let x = self.input(&batch.x)?;
        let (n, d) = (x.dim(0)?, self.flow.dim());
        // one stream per example, so the numbers do not depend on the chunk size
        let mut root = Rng::new(opts.seed);
        let mut rngs: Vec<Rng> = (0..n).map(|_| Rng::new(root.next_u64())).collect();
        let mut nats = Vec::with_capacity(n);
        for s in (0..n).step_by(opts.chunk) {
            let len = opts.chunk.min(n - s);
            let xs = x.narrow(0, s, len)?;
            let mut lse = vec![(f64::NEG_INFINITY, 0.0); len];
            let mut sum = vec![0f64; len];
            for _ in 0..k {
                let mut next = s;
                let (y, log_q) = self.dequantize(deq, &xs, &mut |_| {
                    next += 1;
                    rngs[next - 1].normal_vec(d)
                })?;
                let w = (self.log_prob(&y)? - log_q)?.detach();
                for (e, w) in w
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()?
                    .into_iter()
                    .enumerate()
                {
                    crate::models::vae::model::push_lse(&mut lse[e], w);
                    sum[e] += w;
                }
            }
            let bins = d as f64 * 256f64.ln();
            nats.extend((0..len).map(|e| match iw {
                true => lse[e].0 + lse[e].1.ln() - (k as f64).ln() - bins,
                false => sum[e] / k as f64 - bins,
            }));
        }
        let plural = if k == 1 { "" } else { "s" };
        let kind = match iw {
            true => LikelihoodKind::Estimate(format!("IW-dequantization-{k}")),
            false => LikelihoodKind::bound_estimate(
                "variational dequantization bound",
                format!("{k} u sample{plural} per example"),
            ),
        };
        Ok(LogLikelihood {
            nats,
            kind,
            space: LikelihoodSpace::Discrete,
        })
    }
}

impl Latent for FlowModel {
    fn latent_shape(&self) -> Vec<usize> {
        vec![self.flow.dim()]
    }

    /// z = f(x), exact (with variational dequantization, of the centre of x's bin).
    fn encode(&self, batch: &Batch) -> Result<Tensor> {
        Ok(self.encode_with_logdet(&self.point(&batch.x)?)?.0.detach())
    }

    /// x = f⁻¹(z), exact (with variational dequantization, the 8-bit value of the bin it falls in).
    fn decode(&self, z: &Tensor, condition: &Condition) -> Result<Tensor> {
        self.check_unconditional(condition)?;
        self.to_data(self.decode_z(z)?.detach())
    }
}

/// Checks that a flow can model the data: images must be dequantized pixels in [0, 1] (a density over
/// 256 discrete levels is unbounded) or, for a flow with variational dequantization (`deq`, `None` for the
/// flows without the option), the 8-bit values in [0, 1] without dequantization; vectors are used as they
/// are. Returns the preprocessing layer images need (`None` for vectors).
pub fn check_data(
    name: &str,
    data: &crate::models::DataInfo,
    image_pre: Logit,
    deq: Option<&DequantConfig>,
) -> Result<Option<Logit>> {
    if data.tokenizer.is_some() {
        return Err(Error::invalid(
            "data",
            format!("{name} models images and points, not text"),
        ));
    }
    if let Some(deq) = deq {
        deq.validate()?;
    }
    let variational = deq.is_some_and(DequantConfig::variational);
    let zero_one = |dequantize| Preprocessing::Scale {
        range: crate::data::Range::ZeroOne,
        dequantize,
    };
    match (&data.preprocessing, data.example_shape.len()) {
        (p, 3) if variational && *p == zero_one(false) => Ok(Some(image_pre)),
        (p, _) if variational => Err(Error::invalid(
            "data.preprocessing",
            format!(
                "{name} with variational dequantization adds its own noise to 8-bit images, but the data are {} (shape {:?}); use image data with data.preprocessing = {{ kind = \"scale\", range = \"zero_one\", dequantize = false }}, or model.dequantization.kind = \"uniform\"",
                p.describe(),
                data.example_shape
            ),
        )),
        (p, _) if *p == zero_one(true) => Ok(Some(image_pre)),
        (Preprocessing::Identity, 1) => Ok(None),
        (p, _) => Err(Error::invalid(
            "data.preprocessing",
            format!(
                "{name} is a continuous density and needs dequantized pixels in [0, 1], but the data are {}; use data.preprocessing = {{ kind = \"scale\", range = \"zero_one\", dequantize = true }}{}",
                p.describe(),
                match deq {
                    Some(_) => " (or learned noise: model.dequantization.kind = \"variational\" with dequantize = false)",
                    None => "",
                }
            ),
        )),
    }
}

/// Refuses an unfilled example shape.
pub fn check_shape(shape: &[usize]) -> Result<()> {
    if shape.is_empty() || shape.contains(&0) {
        return Err(Error::invalid(
            "model.example_shape",
            format!("{shape:?}: the data shape was not filled in (call models::prepare first)"),
        ));
    }
    Ok(())
}

/// Refuses a logit α outside [0, 0.5).
pub fn check_logit_alpha(a: f64) -> Result<()> {
    if !(0.0..0.5).contains(&a) {
        return Err(Error::invalid(
            "model.logit_alpha",
            format!("{a} must be in [0, 0.5)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
