//! Generation jobs: one worker thread takes them in order from a bounded queue (a job uses every core, so
//! more workers would only share them), and a table keeps each job's state for the page to poll.
//!
//! A full queue is refused at once ([`Jobs::submit`] → `None`), never waited on. Finished jobs are kept
//! until [`KEEP_FINISHED`] newer ones have finished, so memory stays bounded however long the server runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use dgm::train::{run, Weights};
use serde_json::{json, Value};

use crate::api::ApiError;
use crate::requests::{Context, Work};

/// Finished jobs kept for the page (older ones are forgotten).
pub(crate) const KEEP_FINISHED: usize = 64;

/// Where a job is.
#[derive(Clone, Debug, PartialEq)]
enum State {
    Queued,
    Running,
    Done,
    Failed(String),
}

/// The pictures of a sample, edit or interpolate job: the grid and each picture alone, as PNG files.
#[derive(Default)]
pub(crate) struct Images {
    pub(crate) grid: Vec<u8>,
    pub(crate) each: Vec<Vec<u8>>,
}

struct Job {
    kind: &'static str,
    run: String,
    state: State,
    created: Instant,
    started: Option<Instant>,
    finished: Option<Instant>,
    /// The text generated so far (text jobs).
    text: String,
    images: Images,
    /// A result as JSON (score and likelihood jobs).
    result: Option<Value>,
    /// Steps done of the sampling loop, and its length (diffusion sampling and edits).
    progress: Option<(usize, usize)>,
}

#[derive(Default)]
struct Table {
    jobs: BTreeMap<u64, Job>,
    next: u64,
}

impl Table {
    fn forget_old(&mut self) {
        let done: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| matches!(j.state, State::Done | State::Failed(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in done.iter().take(done.len().saturating_sub(KEEP_FINISHED)) {
            self.jobs.remove(id);
        }
    }
}

/// The queue and the table of jobs.
pub(crate) struct Jobs {
    tx: Mutex<SyncSender<(u64, Work)>>,
    table: Arc<Mutex<Table>>,
    capacity: usize,
}

fn lock(t: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // a job that panicked while holding the lock left the table consistent (every update is one assignment)
    t.lock().unwrap_or_else(|p| p.into_inner())
}

impl Jobs {
    /// Starts the worker behind a queue of `capacity` waiting jobs.
    pub(crate) fn start(capacity: usize, data_dir: &std::path::Path) -> dgm::Result<Self> {
        let data_dir = data_dir.to_path_buf();
        let (tx, rx) = sync_channel(capacity);
        let table = Arc::new(Mutex::new(Table::default()));
        let t = table.clone();
        std::thread::Builder::new()
            .name("dgm-studio-worker".into())
            .spawn(move || worker(rx, t, data_dir))
            .map_err(|e| dgm::Error::Unsupported(format!("cannot start the worker thread: {e}")))?;
        Ok(Self {
            tx: Mutex::new(tx),
            table,
            capacity,
        })
    }

    /// Jobs that may wait behind the running one.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `work` for run `run`: its id, or `None` when the queue is full.
    pub(crate) fn submit(&self, run: &str, work: Work) -> Option<u64> {
        let kind = work.kind();
        let id = {
            let mut t = lock(&self.table);
            let id = t.next;
            t.next += 1;
            t.jobs.insert(
                id,
                Job {
                    kind,
                    run: run.to_string(),
                    state: State::Queued,
                    created: Instant::now(),
                    started: None,
                    finished: None,
                    text: String::new(),
                    images: Images::default(),
                    result: None,
                    progress: None,
                },
            );
            id
        };
        let sent = match self.tx.lock() {
            Ok(tx) => tx.try_send((id, work)),
            Err(p) => p.into_inner().try_send((id, work)),
        };
        match sent {
            Ok(()) => Some(id),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                lock(&self.table).jobs.remove(&id);
                None
            }
        }
    }

    /// A job's state as JSON, `None` for an unknown (or forgotten) id.
    pub(crate) fn status(&self, id: u64) -> Option<Value> {
        let t = lock(&self.table);
        let j = t.jobs.get(&id)?;
        let secs = |a: Instant, b: Option<Instant>| {
            b.unwrap_or_else(Instant::now)
                .duration_since(a)
                .as_secs_f64()
        };
        let (state, error) = match &j.state {
            State::Queued => ("queued", None),
            State::Running => ("running", None),
            State::Done => ("done", None),
            State::Failed(e) => ("failed", Some(e.clone())),
        };
        let ahead = t
            .jobs
            .range(..id)
            .filter(|(_, o)| matches!(o.state, State::Queued | State::Running))
            .count();
        Some(json!({
            "id": id,
            "kind": j.kind,
            "run": j.run,
            "state": state,
            "error": error,
            "jobs_ahead": if j.state == State::Queued { Some(ahead) } else { None },
            "waited_s": secs(j.created, j.started.or(j.finished)),
            "ran_s": j.started.map(|s| secs(s, j.finished)),
            "text": if j.kind == "text" { Some(j.text.clone()) } else { None },
            "images": j.images.each.len(),
            "result": j.result,
            "progress": j.progress.map(|(d, t)| [d, t]),
        }))
    }

    /// A finished picture job's grid (`index: None`) or one picture, as PNG bytes; a 404 for an unknown job,
    /// a 400 for one without pictures (yet) or an index past them.
    pub(crate) fn image(&self, id: u64, index: Option<usize>) -> Result<Vec<u8>, ApiError> {
        let t = lock(&self.table);
        let j = t
            .jobs
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
        if !matches!(j.kind, "sample" | "edit" | "interpolate") {
            return Err(ApiError::bad_request(format!(
                "job {id} is a {} job; it has no image",
                j.kind
            )));
        }
        if j.state != State::Done {
            return Err(ApiError::bad_request(format!("job {id} has not finished")));
        }
        match index {
            None => Ok(j.images.grid.clone()),
            Some(i) => j.images.each.get(i).cloned().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "index {i}: job {id} has {} separate images (0 to {}); 2-D point samples have none",
                    j.images.each.len(),
                    j.images.each.len().saturating_sub(1)
                ))
            }),
        }
    }
}

/// The last run loaded, kept while its checkpoint is the newest.
struct Cached {
    dir: PathBuf,
    step: u64,
    run: run::LoadedRun,
}

fn worker(rx: Receiver<(u64, Work)>, table: Arc<Mutex<Table>>, data_dir: PathBuf) {
    let mut cache: Option<Cached> = None;
    let mut ctx = Context {
        data_dir,
        references: Default::default(),
    };
    while let Ok((id, work)) = rx.recv() {
        {
            let mut t = lock(&table);
            if let Some(j) = t.jobs.get_mut(&id) {
                j.state = State::Running;
                j.started = Some(Instant::now());
            }
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let out = Output {
                id,
                table: table.clone(),
            };
            load(&mut cache, work.dir()).and_then(|run| work.run(run, &mut ctx, &out))
        }));
        let state = match outcome {
            Ok(Ok(())) => State::Done,
            Ok(Err(e)) => State::Failed(e.to_string()),
            Err(p) => {
                // the model may be half-updated: load it again next time
                cache = None;
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown".into());
                State::Failed(format!("internal error (the job panicked: {msg})"))
            }
        };
        let mut t = lock(&table);
        if let Some(j) = t.jobs.get_mut(&id) {
            j.state = state;
            j.finished = Some(Instant::now());
        }
        t.forget_old();
    }
}

/// The run in `dir`, from the cache when its checkpoint has not moved on.
fn load<'a>(cache: &'a mut Option<Cached>, dir: &PathBuf) -> dgm::Result<&'a run::LoadedRun> {
    let step = run::RunDir::open(dir)?.require_checkpoint()?.state.step;
    let fresh = cache
        .as_ref()
        .is_some_and(|c| &c.dir == dir && c.step == step);
    if !fresh {
        *cache = None;
        let r = run::load(dir, Weights::Ema, &candle_core::Device::Cpu)?;
        *cache = Some(Cached {
            dir: dir.clone(),
            step: r.state.step,
            run: r,
        });
    }
    match cache {
        Some(c) => Ok(&c.run),
        None => Err(dgm::Error::Unsupported(
            "the run could not be kept loaded".into(),
        )),
    }
}

/// Where a running job writes what it makes.
pub(crate) struct Output {
    id: u64,
    table: Arc<Mutex<Table>>,
}

impl Output {
    /// A progress callback that shows `(done, total)` steps in the job's status.
    pub(crate) fn progress(&self) -> dgm::model::Progress {
        let (id, table) = (self.id, self.table.clone());
        dgm::model::Progress::new(move |done, total| {
            if let Some(j) = lock(&table).jobs.get_mut(&id) {
                j.progress = Some((done, total));
            }
        })
    }

    fn with(&self, f: impl FnOnce(&mut Job)) {
        if let Some(j) = lock(&self.table).jobs.get_mut(&self.id) {
            f(j);
        }
    }

    /// Appends to the job's text (shown while the job runs).
    pub(crate) fn push_text(&self, text: &str) {
        self.with(|j| j.text.push_str(text));
    }

    /// The job's pictures.
    pub(crate) fn set_images(&self, images: Images) {
        self.with(|j| j.images = images);
    }

    /// The job's result as JSON (scores, likelihoods).
    pub(crate) fn set_result(&self, result: Value) {
        self.with(|j| j.result = Some(result));
    }
}
