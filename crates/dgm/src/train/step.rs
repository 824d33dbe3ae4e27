//! One optimisation step, and the optimisers it updates.
//!
//! The training loop ([`super::trainer`]) owns the data order, logging, validation, sample grids, the EMA,
//! checkpoints and resume; what happens inside one step is a [`TrainStep`]. [`LossStep`] minimises the model's
//! one loss (gradient accumulation over micro-batches, clipping by global norm): the step of every
//! likelihood-based family. A step with several losses and optimisers (a GAN's discriminator and generator
//! updates) is another `TrainStep` over the same [`Optimizers`].
//!
//! [`Optimizers`] splits the model's variables into parameter groups by name prefix. Each group has its own
//! AdamW (β, ε, weight decay), learning-rate schedule, clipping threshold, update count and saved moments, and
//! a step updates a group only from that group's gradients, so one optimiser never moves another's variables.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::data::Batch;
use crate::model::{LossOutput, Model};
pub use crate::model::{DISCRIMINATOR, GENERATOR};
use crate::rng::Rng;
use crate::train::optim::{
    accumulate, collect_grads, global_grad_norm, lr_at, AdamW, AdamWParams, Grads,
};
use crate::{Error, Result};

/// Linear warm-up to `lr`, then cosine decay to `lr · min_lr_ratio` at `total_steps` ([`lr_at`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Final fraction of the peak (1.0 = constant after warm-up).
    pub min_lr_ratio: f64,
    /// The step at which the decay ends.
    pub total_steps: u64,
}

impl Schedule {
    /// The learning rate of step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        lr_at(
            step,
            self.total_steps,
            self.lr,
            self.warmup_steps,
            self.min_lr_ratio,
        )
    }
}

/// A parameter group: which variables, and how they are optimised.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// The group's name (`all` for the single group of a one-loss model; `generator`, `discriminator`, …).
    pub name: String,
    /// The variables whose names start with one of these; empty = every variable no other group claims.
    pub prefixes: Vec<String>,
    /// AdamW's hyper-parameters.
    pub adam: AdamWParams,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// Clip the group's gradients to this global L2 norm (0 = no clipping).
    pub grad_clip: f64,
}

struct Group {
    spec: GroupSpec,
    vars: Vec<(String, Var)>,
    opt: AdamW,
}

/// The optimisers of a run, one per parameter group.
pub struct Optimizers {
    groups: Vec<Group>,
}

/// What one group's update did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupUpdate {
    /// The learning rate used.
    pub lr: f64,
    /// Global L2 norm of the group's (scaled) gradients; NaN when neither clipping nor logging needed it.
    pub grad_norm: f64,
}

/// Where in training an update happens (for the schedule and for error messages).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepAt {
    /// The step being done (0-based; the step count after it is `step + 1`).
    pub step: u64,
    /// The step of the run's committed checkpoint, if any (named when the step fails).
    pub saved: Option<u64>,
    /// Whether this step is logged (then the gradient norm is computed even without clipping).
    pub log: bool,
}

impl Optimizers {
    /// Splits `vars` into the groups `specs`: a variable goes to the first group with a prefix of its name,
    /// else to the group without prefixes (at most one). A variable no group takes, or a group without
    /// variables, is an error naming it.
    pub fn new(vars: Vec<(String, Var)>, specs: Vec<GroupSpec>) -> Result<Self> {
        let catch_all: Vec<usize> = (0..specs.len())
            .filter(|&i| specs[i].prefixes.is_empty())
            .collect();
        if catch_all.len() > 1 || specs.is_empty() {
            return Err(Error::invalid(
                "parameter groups",
                format!(
                    "need at least one group and at most one without prefixes, got {} groups, {} without",
                    specs.len(),
                    catch_all.len()
                ),
            ));
        }
        let mut members: Vec<Vec<(String, Var)>> = vec![Vec::new(); specs.len()];
        for (name, var) in vars {
            let g = specs
                .iter()
                .position(|s| s.prefixes.iter().any(|p| name.starts_with(p.as_str())))
                .or(catch_all.first().copied())
                .ok_or_else(|| {
                    Error::invalid(
                        "parameter groups",
                        format!(
                            "variable '{name}' belongs to no group (groups: {})",
                            names(&specs)
                        ),
                    )
                })?;
            members[g].push((name, var));
        }
        let mut groups = Vec::with_capacity(specs.len());
        for (spec, vars) in specs.into_iter().zip(members) {
            if vars.is_empty() {
                return Err(Error::invalid(
                    "parameter groups",
                    format!("group '{}' has no variables", spec.name),
                ));
            }
            let opt = AdamW::new(vars.clone(), spec.adam.clone())?;
            groups.push(Group { spec, vars, opt });
        }
        Ok(Self { groups })
    }

    fn group(&self, name: &str) -> Result<&Group> {
        self.groups
            .iter()
            .find(|g| g.spec.name == name)
            .ok_or_else(|| self.unknown(name))
    }

    fn unknown(&self, name: &str) -> Error {
        Error::invalid(
            "parameter group",
            format!(
                "'{name}' is not one of this run's groups ({})",
                self.names().join(", ")
            ),
        )
    }

    /// The groups' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.groups.iter().map(|g| g.spec.name.clone()).collect()
    }

    /// The name of the only group; an error when there are several.
    pub fn only_group(&self) -> Result<String> {
        match self.groups.as_slice() {
            [g] => Ok(g.spec.name.clone()),
            _ => Err(Error::invalid(
                "parameter groups",
                format!(
                    "a one-loss step updates one group, this run has {} ({})",
                    self.groups.len(),
                    self.names().join(", ")
                ),
            )),
        }
    }

    /// The variables of group `name` (sorted by name).
    pub fn vars(&self, name: &str) -> Result<&[(String, Var)]> {
        Ok(&self.group(name)?.vars)
    }

    /// Group `name`'s gradients out of a backward pass, in the order of [`Optimizers::vars`].
    pub fn grads(&self, name: &str, store: &GradStore) -> Result<Grads> {
        Ok(collect_grads(&self.group(name)?.vars, store))
    }

    /// The update count of the first group (the checkpoint's `adam_t`).
    pub fn first_count(&self) -> u64 {
        self.groups.first().map_or(0, |g| g.opt.t)
    }

    /// One AdamW update of group `name` from its gradients `grads` (in the order of [`Optimizers::vars`]),
    /// each scaled by `scale` (1 / micro-batches), clipped to the group's `grad_clip`, with the group's
    /// learning rate at `at.step`. A non-finite gradient norm while clipping stops training with
    /// [`Error::NonFinite`].
    pub fn step(
        &mut self,
        name: &str,
        grads: &Grads,
        scale: f64,
        at: StepAt,
    ) -> Result<GroupUpdate> {
        let Some(i) = self.groups.iter().position(|g| g.spec.name == name) else {
            return Err(self.unknown(name));
        };
        let g = &mut self.groups[i];
        if grads.len() != g.vars.len() {
            return Err(Error::invalid(
                "gradients",
                format!(
                    "group '{name}' has {} variables, got {} gradients",
                    g.vars.len(),
                    grads.len()
                ),
            ));
        }
        let lr = g.spec.schedule.lr_at(at.step);
        let clip_at = g.spec.grad_clip;
        // the global norm costs a pass over all gradients: only when clipping or logging it
        let norm = if clip_at > 0.0 || at.log {
            global_grad_norm(grads)? * scale
        } else {
            f64::NAN
        };
        if clip_at > 0.0 && !norm.is_finite() {
            return Err(Error::NonFinite {
                step: at.step + 1,
                loss: norm,
                checkpoint: at.saved,
            });
        }
        let clip = if clip_at > 0.0 && norm > clip_at {
            clip_at / (norm + 1e-6)
        } else {
            1.0
        };
        g.opt.step(grads, lr, scale * clip)?;
        Ok(GroupUpdate {
            lr,
            grad_norm: norm,
        })
    }

    /// Every group's moments as named tensors (`m.<variable>`, `v.<variable>`; names are unique across groups).
    pub fn state(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut all = BTreeMap::new();
        for g in &self.groups {
            all.extend(g.opt.state()?);
        }
        Ok(all)
    }

    /// Each group's update count, by name.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.groups
            .iter()
            .map(|g| (g.spec.name.clone(), g.opt.t))
            .collect()
    }

    /// Restores moments saved by [`Optimizers::state`] and the update counts; every group must have its count.
    pub fn load_state(
        &mut self,
        state: &BTreeMap<String, Tensor>,
        counts: &BTreeMap<String, u64>,
    ) -> Result<()> {
        for g in &mut self.groups {
            let t = counts.get(&g.spec.name).copied().ok_or_else(|| {
                Error::invalid(
                    "optimizer state",
                    format!("no update count for group '{}'", g.spec.name),
                )
            })?;
            g.opt.load_state(state, t)?;
        }
        Ok(())
    }
}

fn names(specs: &[GroupSpec]) -> String {
    specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a [`TrainStep`] gets: the model, the step's random numbers and batches, and the optimisers.
pub struct StepContext<'a> {
    /// Where in training this step is.
    pub at: StepAt,
    /// The model being trained.
    pub model: &'a dyn Model,
    /// The step's random stream (data noise, the model's own sampling): `Rng::stream(seed ^ salt, step)`.
    pub rng: &'a mut Rng,
    /// Micro-batch `i` < [`TrainStep::batches_per_step`] of this step, drawn with the given generator.
    pub batch: &'a mut dyn FnMut(usize, &mut Rng) -> Result<Batch>,
    /// The optimisers, one per parameter group.
    pub opt: &'a mut Optimizers,
}

/// What a step reports for the log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// Named scalars (`loss` first for a one-loss step), averaged over micro-batches.
    pub parts: Vec<(String, f64)>,
    /// The learning rate of the (first) group updated.
    pub lr: f64,
    /// Its gradient norm (NaN when not computed).
    pub grad_norm: f64,
}

/// One optimisation step of a model, however many losses and optimisers it has.
pub trait TrainStep {
    /// How many micro-batches one step draws (step s draws batches s·n … s·n + n − 1 of the data order).
    fn batches_per_step(&self) -> usize;

    /// Does step `ctx.at.step`: draws its batches, computes its losses, updates its groups.
    fn step(&mut self, ctx: &mut StepContext<'_>) -> Result<StepReport>;
}

/// The value of a loss as f64; a NaN or infinite one stops training with [`Error::NonFinite`] naming the step
/// and the committed checkpoint.
fn finite_loss(out: &LossOutput, at: StepAt) -> Result<f64> {
    let v = out
        .loss
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?;
    if !v.is_finite() {
        return Err(Error::NonFinite {
            step: at.step + 1,
            loss: v,
            checkpoint: at.saved,
        });
    }
    Ok(v)
}

/// Minimise the model's training loss ([`Model::train_loss`]) over one group: `grad_accum` micro-batches,
/// gradients summed and scaled by 1 / `grad_accum`, then one update.
#[derive(Clone, Debug)]
pub struct LossStep {
    /// Micro-batches per update.
    pub grad_accum: usize,
}

impl TrainStep for LossStep {
    fn batches_per_step(&self) -> usize {
        self.grad_accum
    }

    fn step(&mut self, ctx: &mut StepContext<'_>) -> Result<StepReport> {
        let group = ctx.opt.only_group()?;
        let mut grads: Grads = vec![None; ctx.opt.vars(&group)?.len()];
        let mut parts: Vec<(String, f64)> = Vec::new();
        for micro in 0..self.grad_accum {
            let batch = (ctx.batch)(micro, ctx.rng)?;
            let out = ctx.model.train_loss(&batch, ctx.rng)?;
            let loss = finite_loss(&out, ctx.at)?;
            accumulate(&mut grads, ctx.opt.grads(&group, &out.loss.backward()?)?)?;
            add_parts(&mut parts, &[("loss".to_string(), loss)], self.grad_accum);
            add_parts(&mut parts, &out.parts, self.grad_accum);
        }
        let u = ctx
            .opt
            .step(&group, &grads, 1.0 / self.grad_accum as f64, ctx.at)?;
        Ok(StepReport {
            parts,
            lr: u.lr,
            grad_norm: u.grad_norm,
        })
    }
}

/// One step of a GAN ([`crate::model::Adversarial`]): `d_steps` discriminator updates, each on its own real
/// micro-batch, then one generator update (sized and labelled like the last real batch). Each update applies
/// only its own group's gradients: the generator's loss also has gradients for the discriminator, and they are
/// dropped. Logged: `loss` (the discriminator's, averaged over its updates), `g_loss`, and the model's parts.
#[derive(Clone, Debug)]
pub struct GanStep {
    /// Discriminator updates per step.
    pub d_steps: usize,
}

impl TrainStep for GanStep {
    fn batches_per_step(&self) -> usize {
        self.d_steps.max(1)
    }

    fn step(&mut self, ctx: &mut StepContext<'_>) -> Result<StepReport> {
        let adv = ctx.model.as_adversarial().ok_or_else(|| {
            Error::invalid(
                "train step",
                format!("model '{}' is not a GAN", ctx.model.name()),
            )
        })?;
        let (at, n) = (ctx.at, self.batches_per_step());
        let mut parts: Vec<(String, f64)> = Vec::new();
        let mut last = None;
        for i in 0..n {
            let real = (ctx.batch)(i, ctx.rng)?;
            let out = adv.discriminator_loss(&real, ctx.rng, true)?;
            let l = finite_loss(&out, at)?;
            let grads = ctx.opt.grads(DISCRIMINATOR, &out.loss.backward()?)?;
            ctx.opt.step(DISCRIMINATOR, &grads, 1.0, at)?;
            add_parts(&mut parts, &[("loss".to_string(), l)], n);
            add_parts(&mut parts, &out.parts, n);
            last = Some(real);
        }
        let real = last.ok_or_else(|| Error::invalid("gan step", "no real batch"))?;
        let out = adv.generator_loss(&real, ctx.rng)?;
        let l = finite_loss(&out, at)?;
        let grads = ctx.opt.grads(GENERATOR, &out.loss.backward()?)?;
        let u = ctx.opt.step(GENERATOR, &grads, 1.0, at)?;
        add_parts(&mut parts, &[("g_loss".to_string(), l)], 1);
        add_parts(&mut parts, &out.parts, 1);
        Ok(StepReport {
            parts,
            lr: u.lr,
            grad_norm: u.grad_norm,
        })
    }
}

/// Adds `parts / n` into `acc` by name (averaging over micro-batches and over the logging window).
pub fn add_parts(acc: &mut Vec<(String, f64)>, parts: &[(String, f64)], n: usize) {
    for (k, v) in parts {
        let v = v / n as f64;
        match acc.iter_mut().find(|(name, _)| name == k) {
            Some(e) => e.1 += v,
            None => acc.push((k.clone(), v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn spec(name: &str, prefixes: &[&str], lr: f64) -> GroupSpec {
        GroupSpec {
            name: name.into(),
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            adam: AdamWParams::default(),
            schedule: Schedule {
                lr,
                warmup_steps: 0,
                min_lr_ratio: 1.0,
                total_steps: 10,
            },
            grad_clip: 0.0,
        }
    }

    fn var(v: &[f32]) -> Result<Var> {
        Ok(Var::from_tensor(&Tensor::new(v, &Device::Cpu)?)?)
    }

    fn values(v: &Var) -> Result<Vec<f32>> {
        Ok(v.as_tensor().to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }

    /// Two groups (a GAN's discriminator and generator): stepping one moves only its own variables, with its
    /// own learning rate and update count, even when the loss has gradients for both; the saved state of both
    /// restores into a fresh set that then continues identically.
    #[test]
    fn two_optimisers_step_only_their_own_groups() -> Result<()> {
        let d = var(&[1.0, 2.0])?;
        let g = var(&[-1.0])?;
        let vars = || {
            vec![
                ("disc.w".to_string(), d.clone()),
                ("gen.w".to_string(), g.clone()),
            ]
        };
        let make = |vars| {
            Optimizers::new(
                vars,
                vec![
                    spec("generator", &["gen."], 0.1),
                    spec("discriminator", &["disc."], 0.01),
                ],
            )
        };
        let mut opt = make(vars())?;
        assert_eq!(opt.names(), ["generator", "discriminator"]);
        assert_eq!(opt.vars("generator")?.len(), 1);
        let at = StepAt {
            step: 0,
            saved: None,
            log: true,
        };
        // loss = Σ d² + g²: both have gradients; only the discriminator's are applied
        let loss = (d.as_tensor().sqr()?.sum_all()? + g.as_tensor().sqr()?.sum_all()?)?;
        let store = loss.backward()?;
        let dv = opt.vars("discriminator")?.to_vec();
        let upd = opt.step("discriminator", &collect_grads(&dv, &store), 1.0, at)?;
        assert_eq!(upd.lr, 0.01);
        assert!((upd.grad_norm - 20f64.sqrt()).abs() < 1e-5);
        assert_eq!(values(&g)?, [-1.0]);
        // Adam's first step moves each coordinate by lr (sign of the gradient)
        let dvals = values(&d)?;
        assert!(
            (dvals[0] - 0.99).abs() < 1e-6 && (dvals[1] - 1.99).abs() < 1e-6,
            "{dvals:?}"
        );
        let gv = opt.vars("generator")?.to_vec();
        let loss = g.as_tensor().sqr()?.sum_all()?;
        opt.step("generator", &collect_grads(&gv, &loss.backward()?), 1.0, at)?;
        assert!((values(&g)?[0] + 0.9).abs() < 1e-6);
        assert_eq!(values(&d)?, dvals);
        assert_eq!(
            opt.counts(),
            BTreeMap::from([
                ("discriminator".to_string(), 1u64),
                ("generator".to_string(), 1u64)
            ])
        );
        // a gradient list of the wrong group is refused
        assert!(opt
            .step("generator", &collect_grads(&dv, &store), 1.0, at)
            .is_err());
        assert!(opt
            .step("critic", &Vec::new(), 1.0, at)
            .is_err_and(|e| e.to_string().contains("generator, discriminator")));
        // save → restore into a copy → one more identical step on both
        let (state, counts) = (opt.state()?, opt.counts());
        let (d2, g2) = (var(&values(&d)?)?, var(&values(&g)?)?);
        let mut opt2 = make(vec![
            ("disc.w".to_string(), d2.clone()),
            ("gen.w".to_string(), g2.clone()),
        ])?;
        opt2.load_state(&state, &counts)?;
        for (o, w) in [(&mut opt, &g), (&mut opt2, &g2)] {
            let gv = o.vars("generator")?.to_vec();
            let loss = (w.as_tensor().sqr()?.sum_all()? * 3.0)?;
            o.step(
                "generator",
                &collect_grads(&gv, &loss.backward()?),
                1.0,
                StepAt { step: 1, ..at },
            )?;
        }
        assert_eq!(values(&g)?, values(&g2)?);
        Ok(())
    }

    #[test]
    fn groups_must_cover_every_variable_once() -> Result<()> {
        let vars = vec![
            ("a.w".to_string(), var(&[1.0])?),
            ("b.w".to_string(), var(&[1.0])?),
        ];
        let e = Optimizers::new(vars.clone(), vec![spec("a", &["a."], 0.1)]).err();
        assert!(e.is_some_and(|e| e.to_string().contains("'b.w' belongs to no group")));
        let e = Optimizers::new(vars.clone(), vec![spec("x", &[], 0.1), spec("y", &[], 0.1)]).err();
        assert!(e.is_some());
        let e = Optimizers::new(
            vars.clone(),
            vec![spec("all", &[], 0.1), spec("c", &["c."], 0.1)],
        )
        .err();
        assert!(e.is_some_and(|e| e.to_string().contains("'c' has no variables")));
        let opt = Optimizers::new(vars, vec![spec("a", &["a."], 0.1), spec("rest", &[], 0.1)])?;
        assert_eq!(opt.vars("rest")?.len(), 1);
        assert!(opt.only_group().is_err());
        Ok(())
    }
}
