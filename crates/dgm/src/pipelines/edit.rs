//! Edits in one call: a [`Task`] names the measurement operator, a solver (one of [`SOLVERS`]) turns a
//! measurement into samples with a model's denoiser, and the measurement either comes from an image (degraded
//! here with [`crate::ops::measure`]) or is given (a sinogram read from a file). `dgm edit inpaint |
//! super-resolve | colorize | deblur | reconstruct | sdedit` and the studio call [`edit`].
//!
//! | task | operator | default solver | solvers |
//! |---|---|---|---|
//! | `inpaint` | [`Mask`] | `repaint` | all |
//! | `super-resolve` | [`Downsample`] ×f | `project` | `project`, `dps`, `sdedit` |
//! | `colorize` | [`Grey`] | `project` | `project`, `dps`, `sdedit` |
//! | `deblur` | [`Blur`] | `dps` | `project` (CGLS for A⁺), `dps`, `sdedit` |
//! | `reconstruct` | [`Radon`] (CT) | `project` | `project` (CGLS for A⁺), `dps`, `sdedit` |
//! | `sdedit` | – (the input is the guide) | `sdedit` | `sdedit` |
//!
//! The `sdedit` solver on a measurement starts from the measurement's image view (the masked image, the
//! nearest-upsampled one, the grey one, the blurred one, the FBP reconstruction) at the given strength.

use candle_core::{Device, Tensor};

use super::{sdedit, solve_with, Denoiser, Dps, Pipeline, Project, RePaint};
use crate::conditioning::Cond;
use crate::model::Condition;
use crate::ops::{measure, read_measurement, Blur, Downsample, Grey, LinearOperator, Mask, Radon};
use crate::rng::Rng;
use crate::{Error, Result};

/// Names of the tasks.
pub const TASKS: &[&str] = &[
    "inpaint",
    "super-resolve",
    "colorize",
    "deblur",
    "reconstruct",
    "sdedit",
];

/// SDEdit's strength when none is given (Meng et al. use 0.3–0.6 for stroke paintings).
pub const DEFAULT_STRENGTH: f64 = 0.6;

/// Names of the solvers.
pub const SOLVERS: &[&str] = &["repaint", "project", "dps", "sdedit"];

/// What to do to an image.
#[derive(Clone, Debug)]
pub enum Task {
    /// Fill the pixels a mask marks missing.
    Inpaint(Mask),
    /// Undo a box down-sampling by `factor`.
    SuperResolve {
        /// The down-sampling factor (2 or 4 at 28×28).
        factor: usize,
    },
    /// Colour a grey (luma) image.
    Colorize,
    /// Undo a Gaussian blur of standard deviation `sigma` pixels.
    Deblur {
        /// The blur's standard deviation in pixels.
        sigma: f64,
    },
    /// Sparse-view CT: reconstruct from `views` parallel-beam projections over [0, π).
    Reconstruct {
        /// Number of projection angles.
        views: usize,
    },
    /// Turn a rough guide image into a realistic one (no operator).
    Sdedit,
}

impl Task {
    /// The task's name (one of [`TASKS`]).
    pub fn name(&self) -> &'static str {
        match self {
            Task::Inpaint(_) => "inpaint",
            Task::SuperResolve { .. } => "super-resolve",
            Task::Colorize => "colorize",
            Task::Deblur { .. } => "deblur",
            Task::Reconstruct { .. } => "reconstruct",
            Task::Sdedit => "sdedit",
        }
    }

    /// The solver used when none is named.
    pub fn default_solver(&self) -> &'static str {
        match self {
            Task::Inpaint(_) => "repaint",
            Task::Deblur { .. } => "dps",
            Task::Sdedit => "sdedit",
            _ => "project",
        }
    }

    /// The solvers that apply to the task.
    pub fn solvers(&self) -> &'static [&'static str] {
        match self {
            Task::Inpaint(_) => SOLVERS,
            Task::Sdedit => &["sdedit"],
            _ => &["project", "dps", "sdedit"],
        }
    }

    /// The measurement operator for images of `shape` (`None` for `sdedit`).
    pub fn operator(
        &self,
        shape: &[usize],
        device: &Device,
    ) -> Result<Option<Box<dyn LinearOperator>>> {
        Ok(match self {
            Task::Inpaint(mask) => {
                if mask.input_shape()[1..] != shape[1..] {
                    return Err(Error::invalid(
                        "mask",
                        format!(
                            "a {:?} mask for images of shape {shape:?}",
                            &mask.input_shape()[1..]
                        ),
                    ));
                }
                if mask.input_shape() == shape {
                    Some(Box::new(mask.clone()))
                } else {
                    // the same pixels for the model's number of channels
                    let keep = mask.keep().flatten_all()?.to_vec1::<f32>()?;
                    Some(Box::new(Mask::new(shape, keep, device)?))
                }
            }
            Task::SuperResolve { factor } => Some(Box::new(Downsample::new(shape, *factor)?)),
            Task::Colorize => Some(Box::new(Grey::new(shape, device)?)),
            Task::Deblur { sigma } => Some(Box::new(Blur::new(shape, *sigma, device)?)),
            Task::Reconstruct { views } => Some(Box::new(Radon::new(shape, *views, device)?)),
            Task::Sdedit => None,
        })
    }
}

/// Where the edit starts from.
#[derive(Clone, Debug)]
pub enum Input {
    /// An image `(1, c, h, w)` in the model's value space: measured here (or, for `sdedit`, the guide).
    Image(Tensor),
    /// A measurement `(1, output_shape…)` (e.g. a sinogram), in the model's value space.
    Measurement(Tensor),
    /// A measurement in a file (`.npy` or `.csv`, [`crate::ops::read_measurement`]), read for the task's operator.
    MeasurementFile(std::path::PathBuf),
}

/// Settings of [`edit`].
#[derive(Clone, Debug)]
pub struct EditOptions {
    /// Solver name (default: the task's).
    pub solver: Option<String>,
    /// Measurement noise σ_y in the model's value space (added when measuring an image; DPS handles it,
    /// `repaint` and `project` need 0).
    pub sigma_y: f64,
    /// Sampler (default: the model's).
    pub sampler: Option<String>,
    /// Sampling steps (default: the model's).
    pub steps: Option<usize>,
    /// Number of samples.
    pub n: usize,
    /// Seed of the measurement noise and of the sampling.
    pub seed: u64,
    /// SDEdit's strength in (0, 1] (the `sdedit` solver only; default [`DEFAULT_STRENGTH`]).
    pub strength: Option<f64>,
    /// Levels to jump back when resampling (`repaint`, `project`; default 10).
    pub jump: Option<usize>,
    /// Passes per block (`repaint`, `project`; default 5 for `repaint`, 1 = none for `project`).
    pub resample: Option<usize>,
    /// DPS step ζ (`dps`; default 5: the best of 1, 5 and 20 for MNIST at 50 steps, see docs/control.md).
    pub dps_scale: Option<f64>,
    /// CGLS iterations standing in for A⁺ where an operator has no cheap one (`project`; default 10).
    pub cg_iters: Option<usize>,
    /// Class condition.
    pub condition: Condition,
    /// Classifier-free guidance scale.
    pub guidance: Option<f64>,
    /// Told of each step of the sampling loop.
    pub progress: crate::model::Progress,
}

impl Default for EditOptions {
    fn default() -> Self {
        Self {
            solver: None,
            sigma_y: 0.0,
            sampler: None,
            steps: None,
            n: 1,
            seed: 0,
            strength: None,
            jump: None,
            resample: None,
            dps_scale: None,
            cg_iters: None,
            condition: Condition::None,
            guidance: None,
            progress: Default::default(),
        }
    }
}

/// The result of [`edit`].
#[derive(Debug)]
pub struct Edit {
    /// The measurement `(1, output_shape…)` (for `sdedit`: the guide image).
    pub measurement: Tensor,
    /// The measurement shown as an image `(1, c, h, w)`: the masked image, the nearest-upsampled one, the
    /// grey one, the blurred one, the FBP reconstruction, or the guide.
    pub view: Tensor,
    /// The `n` samples `(n, c, h, w)`.
    pub samples: Tensor,
    /// The solver that made them.
    pub solver: String,
    /// The sampler it ran (the solvers fall back to `ddpm` when the model's default does not suit them).
    pub sampler: String,
    /// The operator's description (`none` for sdedit).
    pub operator: String,
}

/// Runs `task` on `input` with `model` (see the module docs for the solvers each task takes).
///
/// Errors: an unknown solver or one that does not apply to the task, a strength given to a solver other than
/// `sdedit` or outside (0, 1], a measurement given to `sdedit`, inputs of the wrong shape, and everything the
/// operators and solvers refuse (views = 0, a noisy measurement for `repaint`/`project`, …).
pub fn edit(model: &dyn Denoiser, task: &Task, input: Input, opts: &EditOptions) -> Result<Edit> {
    let info = model.info();
    let shape = info.example_shape.to_vec();
    let device = info.device;
    if shape.len() != 3 {
        return Err(Error::invalid(
            "model",
            format!(
                "model '{}' makes examples of shape {shape:?}; edits need images (c, h, w)",
                info.name
            ),
        ));
    }
    let solver = opts.solver.as_deref().unwrap_or(task.default_solver());
    if !SOLVERS.contains(&solver) {
        return Err(Error::unknown("solver", solver, SOLVERS));
    }
    if !task.solvers().contains(&solver) {
        return Err(Error::invalid(
            "solver",
            format!(
                "'{solver}' does not apply to {}; it takes {}",
                task.name(),
                task.solvers().join(", ")
            ),
        ));
    }
    if !(opts.sigma_y.is_finite() && opts.sigma_y >= 0.0) {
        return Err(Error::invalid(
            "sigma_y",
            format!(
                "{}: the measurement noise must be a finite number ≥ 0",
                opts.sigma_y
            ),
        ));
    }
    // settings of one solver given to another are refused, not ignored
    let given = [
        ("strength", opts.strength.is_some(), &["sdedit"][..]),
        ("jump", opts.jump.is_some(), &["repaint", "project"][..]),
        (
            "resample",
            opts.resample.is_some(),
            &["repaint", "project"][..],
        ),
        ("dps_scale", opts.dps_scale.is_some(), &["dps"][..]),
        ("cg_iters", opts.cg_iters.is_some(), &["project"][..]),
    ];
    for (key, set, users) in given {
        if set && !users.contains(&solver) {
            return Err(Error::invalid(
                key,
                format!(
                    "applies to the {} solver(s) only; the solver is '{solver}'",
                    users.join(" and ")
                ),
            ));
        }
    }
    if matches!(task, Task::Sdedit) && opts.sigma_y != 0.0 {
        return Err(Error::invalid(
            "sigma_y",
            "sdedit takes the image as it is; there is no measurement to add noise to",
        ));
    }
    if opts.n == 0 {
        return Err(Error::invalid(
            "n",
            "the number of samples must be at least 1",
        ));
    }
    // the n samples, the batch the network sees (×2 under guidance) and its activations, about 64 values per
    // pixel: refuse what cannot fit
    let per = (shape.iter().product::<usize>() as u64).saturating_mul(4 * 64);
    crate::memory::check_bytes(
        &format!("{} samples to edit", opts.n),
        "n",
        (opts.n as u64).saturating_mul(per),
        &crate::memory::available()?,
    )?;
    let mut rng = Rng::new(opts.seed);
    let op = task.operator(&shape, device)?;
    // the measurement and its image view
    let (y, view) = match (&op, input) {
        (None, Input::Image(x)) => {
            check_one(&x, &shape, "image")?;
            (x.clone(), x)
        }
        (None, Input::Measurement(_) | Input::MeasurementFile(_)) => {
            return Err(Error::invalid(
                "measurement",
                "sdedit edits an image, not a measurement",
            ))
        }
        (Some(op), input) => {
            let y = match input {
                Input::Image(x) => {
                    check_one(&x, &shape, "image")?;
                    measure(op.as_ref(), &x, opts.sigma_y, &mut rng)?
                }
                Input::Measurement(y) => {
                    check_one(&y, op.output_shape(), "measurement")?;
                    y
                }
                Input::MeasurementFile(path) => read_measurement(&path, op.output_shape(), device)?,
            };
            let view = op.image_view(&y)?;
            (y, view)
        }
    };
    let cond = Cond::from_condition(&opts.condition, info.cond, opts.n, info.name, device)?;
    let pipe = Pipeline::new(model, cond, opts.guidance)?.with_progress(opts.progress.clone());
    let (sampler, steps) = (opts.sampler.as_deref(), opts.steps);
    let n = opts.n;
    let ys = y.repeat(rep(&y, n))?;
    let (samples, used) = match (solver, op.as_deref()) {
        ("sdedit", _) => {
            let guide = view.repeat(rep(&view, n))?;
            let strength = opts.strength.unwrap_or(DEFAULT_STRENGTH);
            let used = sampler.map_or(model.sampler_defaults().sampler, str::to_string);
            let out = sdedit(&pipe, &guide, sampler, steps, strength, &mut rng)?;
            (out, used)
        }
        ("repaint", Some(op)) => {
            let (j, r) = (opts.jump.unwrap_or(10), opts.resample.unwrap_or(5));
            let mut g = RePaint::new(op, &ys, opts.sigma_y, j, r)?;
            named(solve_with(
                &pipe, &mut g, solver, n, sampler, steps, &mut rng,
            )?)
        }
        ("project", Some(op)) => {
            let (j, r) = (opts.jump.unwrap_or(10), opts.resample.unwrap_or(1));
            let cg = opts.cg_iters.unwrap_or(10);
            let mut g = Project::new(op, &ys, opts.sigma_y, cg, j, r)?;
            named(solve_with(
                &pipe, &mut g, solver, n, sampler, steps, &mut rng,
            )?)
        }
        ("dps", Some(op)) => {
            let mut g = Dps::new(op, &ys, opts.dps_scale.unwrap_or(5.0))?;
            named(solve_with(
                &pipe, &mut g, solver, n, sampler, steps, &mut rng,
            )?)
        }
        (other, _) => return Err(Error::unknown("solver", other, SOLVERS)),
    };
    Ok(Edit {
        measurement: y,
        view,
        samples,
        solver: solver.to_string(),
        sampler: used,
        operator: op.as_ref().map_or("none".to_string(), |o| o.name()),
    })
}

/// The samples and the sampler's name as an owned string.
fn named((t, name): (Tensor, &'static str)) -> (Tensor, String) {
    (t, name.to_string())
}

/// `(n, 1, …, 1)`: repeats of a batch of one.
fn rep(t: &Tensor, n: usize) -> Vec<usize> {
    let mut r = vec![1; t.rank()];
    r[0] = n;
    r
}

/// Checks a batch of one example of `shape`.
fn check_one(t: &Tensor, shape: &[usize], what: &str) -> Result<()> {
    if t.rank() != shape.len() + 1 || t.dim(0)? != 1 || &t.dims()[1..] != shape {
        return Err(Error::invalid(
            what,
            format!(
                "expected one of shape {shape:?}, got a tensor of shape {:?}",
                t.dims()
            ),
        ));
    }
    Ok(())
}
