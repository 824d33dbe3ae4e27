//! Training runs started from the page: one at a time, on a thread of its own, with a stop flag (the
//! trainer finishes its step and writes a checkpoint, as after Ctrl-C) and its latest progress for the
//! page's live view.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dgm::events::Event;
use dgm::train::{self, RunConfig, TrainOptions, TrainOutcome};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::ApiError;
use crate::runs::check_name;

/// The most steps a run started from the page may ask for.
pub(crate) const MAX_STEPS: u64 = 10_000_000;

/// `POST /api/train`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrainRequest {
    /// The new run's folder name (one part, inside the runs folder).
    pub name: String,
    /// A registry name (`dgm train MODEL`).
    pub model: String,
    /// The data set; the model's default when left out.
    pub data: Option<String>,
    pub steps: Option<u64>,
    pub seed: Option<u64>,
    /// `key=value` lines, as `dgm train --set`.
    #[serde(default)]
    pub set: Vec<String>,
}

/// The state of a run this studio trains or trained.
#[derive(Clone, Debug)]
struct Live {
    stop: Arc<AtomicBool>,
    state: &'static str,
    step: u64,
    total: u64,
    it_s: f64,
    loss: Option<f64>,
    error: Option<String>,
}

impl Live {
    fn json(&self) -> Value {
        json!({
            "state": self.state,
            "step": self.step,
            "total_steps": self.total,
            "it_s": self.it_s,
            "loss": self.loss,
            "error": self.error,
        })
    }

    fn active(&self) -> bool {
        matches!(self.state, "starting" | "training")
    }
}

/// The runs started from this studio, by name.
#[derive(Default)]
pub(crate) struct Training {
    live: Arc<Mutex<BTreeMap<String, Live>>>,
}

fn lock(m: &Mutex<BTreeMap<String, Live>>) -> MutexGuard<'_, BTreeMap<String, Live>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Training {
    /// Checks `r` and starts training it into `root/name` on a new thread.
    pub(crate) fn start(
        &self,
        root: &Path,
        data_dir: &Path,
        r: TrainRequest,
    ) -> Result<(), ApiError> {
        check_name(&r.name, 1)?;
        if let Some((name, _)) = lock(&self.live).iter().find(|(_, l)| l.active()) {
            return Err(ApiError::conflict(format!(
                "run '{name}' is training: stop it first (POST /api/run/stop?run={name}); the studio trains one run at a time"
            )));
        }
        let dir = root.join(&r.name);
        if dir.exists() {
            return Err(ApiError::conflict(format!(
                "'{}' already exists in the runs folder: choose another name",
                r.name
            )));
        }
        let data = match &r.data {
            Some(d) => d.clone(),
            None => dgm::models::entry(&r.model)?.default_data.to_string(),
        };
        let mut cfg = RunConfig::new(&r.model, &data)?;
        if let Some(s) = r.seed {
            cfg.seed = s;
        }
        if let Some(s) = r.steps {
            if !(1..=MAX_STEPS).contains(&s) {
                return Err(ApiError::bad_request(format!(
                    "steps = {s}: give 1 to {MAX_STEPS}"
                )));
            }
            cfg.train.steps = s;
        }
        for kv in &r.set {
            cfg.set(kv)?;
        }
        cfg.validate()?;
        let opts = TrainOptions::new(data_dir);
        let stop = opts.stop.clone();
        let live = Live {
            stop,
            state: "starting",
            step: 0,
            total: cfg.train.steps,
            it_s: 0.0,
            loss: None,
            error: None,
        };
        lock(&self.live).insert(r.name.clone(), live);
        let table = self.live.clone();
        let name = r.name.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("dgm-studio-train-{name}"))
            .spawn(move || {
                let update = |f: &mut dyn FnMut(&mut Live)| {
                    if let Some(l) = lock(&table).get_mut(&name) {
                        f(l);
                    }
                };
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    train::train(&dir, &cfg, false, &opts, &mut |e| match e {
                        Event::TrainStart { total_steps, .. } => update(&mut |l| {
                            l.state = "training";
                            l.total = *total_steps;
                        }),
                        Event::Step {
                            step,
                            total_steps,
                            it_s,
                            logged,
                        } => update(&mut |l| {
                            l.step = *step;
                            l.total = *total_steps;
                            l.it_s = *it_s;
                            if let Some(s) = logged {
                                l.loss = s.losses.first().map(|(_, v)| *v);
                            }
                        }),
                        _ => {}
                    })
                }));
                update(&mut |l| match &outcome {
                    Ok(Ok(TrainOutcome::Finished { .. })) => l.state = "finished",
                    Ok(Ok(TrainOutcome::Interrupted { .. })) => l.state = "stopped",
                    Ok(Err(e)) => {
                        l.state = "failed";
                        l.error = Some(e.to_string());
                    }
                    Err(_) => {
                        l.state = "failed";
                        l.error = Some("internal error: training panicked".into());
                    }
                });
            });
        if let Err(e) = spawned {
            lock(&self.live).remove(&r.name);
            return Err(ApiError::internal(format!(
                "cannot start a training thread: {e}"
            )));
        }
        Ok(())
    }

    /// Asks run `name` to stop after its current step with a checkpoint.
    pub(crate) fn stop(&self, name: &str) -> Result<(), ApiError> {
        let live = lock(&self.live);
        match live.get(name) {
            Some(l) if l.active() => {
                l.stop.store(true, Ordering::SeqCst);
                Ok(())
            }
            Some(l) => Err(ApiError::conflict(format!(
                "run '{name}' is not training (it {})",
                l.state
            ))),
            None => Err(ApiError::not_found(format!(
                "run '{name}' was not started from this studio; stop a run trained by `dgm train` with Ctrl-C"
            ))),
        }
    }

    /// The progress of run `name`, if this studio started it.
    pub(crate) fn status(&self, name: &str) -> Option<Value> {
        lock(&self.live).get(name).map(Live::json)
    }

    /// Every run this studio started, with its progress.
    pub(crate) fn all(&self) -> Vec<(String, Value)> {
        lock(&self.live)
            .iter()
            .map(|(n, l)| (n.clone(), l.json()))
            .collect()
    }
}
