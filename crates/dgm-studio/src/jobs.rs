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

use dgm::model::{Condition, GenerateOptions, SampleOptions};
use dgm::train::{run, Weights};
use serde::Deserialize;
use serde_json::{json, Value};

/// Finished jobs kept for the page (older ones are forgotten).
pub(crate) const KEEP_FINISHED: usize = 64;
/// The most images one sample job draws.
pub(crate) const MAX_SAMPLES: usize = 64;
/// The most tokens one text job generates.
pub(crate) const MAX_TOKENS: usize = 4000;
/// The most sampler steps a job may ask for.
pub(crate) const MAX_STEPS: usize = 2000;

/// `POST /api/sample`: a grid of samples from an image (or 2-D point) model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SampleRequest {
    /// The run's name.
    pub run: String,
    /// Samples (1 to [`MAX_SAMPLES`]).
    #[serde(default = "default_n")]
    pub n: usize,
    #[serde(default)]
    pub seed: u64,
    pub sampler: Option<String>,
    pub steps: Option<usize>,
    pub guidance: Option<f64>,
    /// One class for every sample.
    pub class: Option<u32>,
    pub caption: Option<String>,
    /// A draw from the observation model instead of its mean (VAE family).
    #[serde(default)]
    pub draw: bool,
    #[serde(default = "one")]
    pub temperature: f64,
}

fn default_n() -> usize {
    16
}

fn one() -> f64 {
    1.0
}

/// `POST /api/generate`: a text continuation from a language model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerateRequest {
    pub run: String,
    #[serde(default)]
    pub prompt: String,
    #[serde(default = "default_tokens")]
    pub max_tokens: usize,
    #[serde(default = "one")]
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: u64,
}

fn default_tokens() -> usize {
    300
}

impl SampleRequest {
    /// The checks that need no model: the sizes.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(1..=MAX_SAMPLES).contains(&self.n) {
            return Err(format!("n = {}: give 1 to {MAX_SAMPLES} samples", self.n));
        }
        if self.steps.is_some_and(|s| !(1..=MAX_STEPS).contains(&s)) {
            return Err(format!(
                "steps = {}: give 1 to {MAX_STEPS}",
                self.steps.unwrap_or(0)
            ));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "temperature = {}: must be a positive number",
                self.temperature
            ));
        }
        if self.guidance.is_some_and(|g| !g.is_finite()) {
            return Err("guidance must be a finite number".into());
        }
        Ok(())
    }
}

impl GenerateRequest {
    fn options(&self) -> dgm::Result<GenerateOptions> {
        let o = GenerateOptions {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            kv_cache: true,
        };
        o.validate()?;
        Ok(o)
    }

    /// The checks that need no model.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(1..=MAX_TOKENS).contains(&self.max_tokens) {
            return Err(format!(
                "max_tokens = {}: give 1 to {MAX_TOKENS}",
                self.max_tokens
            ));
        }
        self.options().map(|_| ()).map_err(|e| e.to_string())
    }
}

/// The tasks `POST /api/edit` takes (`dgm edit …` without `reconstruct`, whose sinograms the page cannot draw).
pub(crate) const EDIT_TASKS: &[&str] =
    &["inpaint", "super-resolve", "colorize", "deblur", "sdedit"];
/// The most samples one edit job draws.
pub(crate) const MAX_EDITS: usize = 16;

/// `POST /api/edit`: a diffusion model edits an image (the library's `pipelines::edit`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditRequest {
    pub run: String,
    /// One of [`EDIT_TASKS`].
    pub task: String,
    /// The image: a PNG of exactly the model's size, base64 (a `data:image/png;base64,` URL too).
    pub image: String,
    /// `inpaint` only: a PNG of the model's size, white = missing (to fill), black = kept.
    pub mask: Option<String>,
    /// `super-resolve` only: the down-sampling factor (default 2).
    pub factor: Option<usize>,
    /// `deblur` only: the blur's standard deviation in pixels (default 1).
    pub blur_sigma: Option<f64>,
    pub solver: Option<String>,
    /// The `sdedit` solver only, in (0, 1].
    pub strength: Option<f64>,
    pub sampler: Option<String>,
    pub steps: Option<usize>,
    #[serde(default = "default_edits")]
    pub n: usize,
    #[serde(default)]
    pub seed: u64,
    pub class: Option<u32>,
    pub guidance: Option<f64>,
}

fn default_edits() -> usize {
    4
}

/// The bytes of a base64 file, with or without a `data:…;base64,` prefix.
fn decode_b64(what: &str, s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let body = match s.split_once(";base64,") {
        Some((head, b)) if head.starts_with("data:") => b,
        _ => s,
    };
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| format!("{what}: not base64 ({e}); send a PNG file as base64 or a data: URL"))
}

/// An [`EditRequest`] whose files are decoded.
pub(crate) struct EditWork {
    req: EditRequest,
    image: Vec<u8>,
    mask: Option<Vec<u8>>,
}

impl EditRequest {
    /// The checks that need no model (task, sizes, which settings apply to the task), and the files decoded.
    pub(crate) fn check(self) -> Result<EditWork, String> {
        if !EDIT_TASKS.contains(&self.task.as_str()) {
            return Err(format!(
                "task '{}': choose one of {}",
                self.task,
                EDIT_TASKS.join(", ")
            ));
        }
        if !(1..=MAX_EDITS).contains(&self.n) {
            return Err(format!("n = {}: give 1 to {MAX_EDITS} samples", self.n));
        }
        if self.steps.is_some_and(|s| !(1..=MAX_STEPS).contains(&s)) {
            return Err(format!(
                "steps = {}: give 1 to {MAX_STEPS}",
                self.steps.unwrap_or(0)
            ));
        }
        let only = |given: bool, key: &str, task: &str| {
            if given && self.task != task {
                Err(format!(
                    "{key} does not apply to {}; it is for {task}",
                    self.task
                ))
            } else {
                Ok(())
            }
        };
        only(self.mask.is_some(), "mask", "inpaint")?;
        only(self.factor.is_some(), "factor", "super-resolve")?;
        only(self.blur_sigma.is_some(), "blur_sigma", "deblur")?;
        if self.task == "inpaint" && self.mask.is_none() {
            return Err("inpaint needs a mask: a PNG of the model's size, white where pixels are to be filled".into());
        }
        let image = decode_b64("image", &self.image)?;
        let mask = match &self.mask {
            Some(m) => Some(decode_b64("mask", m)?),
            None => None,
        };
        Ok(EditWork {
            req: self,
            image,
            mask,
        })
    }
}

/// What a job does, with its run's folder resolved.
pub(crate) enum Work {
    Sample(SampleRequest, PathBuf),
    Generate(GenerateRequest, PathBuf),
    Edit(Box<EditWork>, PathBuf),
}

/// Where a job is.
#[derive(Clone, Debug, PartialEq)]
enum State {
    Queued,
    Running,
    Done,
    Failed(String),
}

/// The result of a sample job: the grid and, for images, each image alone, as PNG files.
#[derive(Default)]
struct Images {
    grid: Vec<u8>,
    each: Vec<Vec<u8>>,
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
    pub(crate) fn start(capacity: usize) -> dgm::Result<Self> {
        let (tx, rx) = sync_channel(capacity);
        let table = Arc::new(Mutex::new(Table::default()));
        let t = table.clone();
        std::thread::Builder::new()
            .name("dgm-studio-worker".into())
            .spawn(move || worker(rx, t))
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
        let kind = match &work {
            Work::Sample(..) => "sample",
            Work::Generate(..) => "text",
            Work::Edit(..) => "edit",
        };
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
        }))
    }

    /// A finished sample job's grid (`index: None`) or one image, as PNG bytes; `Err` says why not.
    pub(crate) fn image(&self, id: u64, index: Option<usize>) -> Result<Vec<u8>, String> {
        let t = lock(&self.table);
        let j = t.jobs.get(&id).ok_or_else(|| format!("no job {id}"))?;
        if j.kind == "text" {
            return Err(format!("job {id} is a {} job; it has no image", j.kind));
        }
        if j.state != State::Done {
            return Err(format!("job {id} has not finished"));
        }
        match index {
            None => Ok(j.images.grid.clone()),
            Some(i) => j.images.each.get(i).cloned().ok_or_else(|| {
                format!(
                    "index {i}: job {id} has {} separate images (0 to {}); 2-D point samples have none",
                    j.images.each.len(),
                    j.images.each.len().saturating_sub(1)
                )
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

fn worker(rx: Receiver<(u64, Work)>, table: Arc<Mutex<Table>>) {
    let mut cache: Option<Cached> = None;
    while let Ok((id, work)) = rx.recv() {
        {
            let mut t = lock(&table);
            if let Some(j) = t.jobs.get_mut(&id) {
                j.state = State::Running;
                j.started = Some(Instant::now());
            }
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            execute(id, &work, &table, &mut cache)
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

fn execute(
    id: u64,
    work: &Work,
    table: &Mutex<Table>,
    cache: &mut Option<Cached>,
) -> dgm::Result<()> {
    match work {
        Work::Sample(r, dir) => {
            let images = sample(r, load(cache, dir)?)?;
            if let Some(j) = lock(table).jobs.get_mut(&id) {
                j.images = images;
            }
            Ok(())
        }
        Work::Generate(r, dir) => generate(id, r, load(cache, dir)?, table),
        Work::Edit(w, dir) => {
            let images = edit(w, load(cache, dir)?)?;
            if let Some(j) = lock(table).jobs.get_mut(&id) {
                j.images = images;
            }
            Ok(())
        }
    }
}

/// Runs an edit: the grid shows the input, the measurement as an image (for `sdedit` the guide alone) and the
/// samples; each sample is also kept alone.
fn edit(w: &EditWork, run: &run::LoadedRun) -> dgm::Result<Images> {
    use dgm::pipelines::{edit, EditOptions, Input, Task};
    let r = &w.req;
    let Some(model) = run.model.as_denoiser() else {
        return Err(dgm::Error::Unsupported(format!(
            "run '{}' ({}) cannot edit images; edits take a diffusion run: {}",
            r.run,
            run.model.name(),
            dgm::models::names_with(|a| a.denoiser).join(", ")
        )));
    };
    let shape = model.info().example_shape.to_vec();
    let prep = &run.config.data.preprocessing;
    let dev = candle_core::Device::Cpu;
    let x = dgm::image_io::image_tensor_from_bytes("image", &w.image, &shape, prep, &dev)?;
    let task = match (r.task.as_str(), &w.mask) {
        ("inpaint", Some(m)) => {
            Task::Inpaint(dgm::ops::Mask::from_image_bytes("mask", m, &shape, &dev)?)
        }
        ("super-resolve", _) => Task::SuperResolve {
            factor: r.factor.unwrap_or(2),
        },
        ("colorize", _) => Task::Colorize,
        ("deblur", _) => Task::Deblur {
            sigma: r.blur_sigma.unwrap_or(1.0),
        },
        ("sdedit", _) => Task::Sdedit,
        (t, _) => return Err(dgm::Error::unknown("task", t, EDIT_TASKS)),
    };
    let opts = EditOptions {
        solver: r.solver.clone().filter(|s| !s.is_empty()),
        sampler: r.sampler.clone().filter(|s| !s.is_empty()),
        steps: r.steps,
        n: r.n,
        seed: r.seed,
        strength: r.strength,
        condition: r
            .class
            .map_or(Condition::None, |k| Condition::Class(vec![k])),
        guidance: r.guidance,
        ..EditOptions::default()
    };
    let out = edit(model, &task, Input::Image(x.clone()), &opts)?;
    let f32 = |t: &candle_core::Tensor| t.to_dtype(candle_core::DType::F32);
    let mut tiles = Vec::new();
    if !matches!(task, Task::Sdedit) {
        tiles.push(x);
    }
    tiles.push(f32(&out.view)?);
    tiles.push(f32(&out.samples)?);
    let grid = candle_core::Tensor::cat(&tiles, 0)?;
    let mut images = Images {
        grid: dgm::image_io::png_bytes(&dgm::image_io::grid(&grid, prep, grid.dim(0)?)?)?,
        each: Vec::new(),
    };
    for i in 0..r.n {
        let one = f32(&out.samples.narrow(0, i, 1)?)?;
        images
            .each
            .push(dgm::image_io::png_bytes(&dgm::image_io::grid(
                &one, prep, 1,
            )?)?);
    }
    Ok(images)
}

fn sample(r: &SampleRequest, run: &run::LoadedRun) -> dgm::Result<Images> {
    let model = run.model.as_ref();
    if model.as_sequence().is_some() {
        return Err(dgm::Error::Unsupported(format!(
            "run '{}' is a language model ({}): use the Text page",
            r.run,
            model.name()
        )));
    }
    let mut opts = SampleOptions::seeded(r.seed);
    opts.temperature = r.temperature;
    opts.mean = !r.draw;
    opts.sampler = r.sampler.clone().filter(|s| !s.is_empty());
    opts.steps = r.steps;
    opts.guidance = r.guidance;
    opts.condition = match (&r.caption, r.class) {
        (Some(_), Some(_)) => {
            return Err(dgm::Error::invalid(
                "class",
                "give a class or a caption, not both",
            ))
        }
        (Some(c), None) => Condition::Caption(vec![c.clone()]),
        (None, Some(k)) => Condition::Class(vec![k]),
        (None, None) => Condition::None,
    };
    dgm::model::check_sample_options(model, &opts)?;
    let prep = &run.config.data.preprocessing;
    let shape = dgm::models::example_shape(&run.config.model.name, &run.config.model.config)?;
    let mut canvas = dgm::image_io::SampleCanvas::new(r.n, &shape, prep)?;
    // the same samples as `dgm sample --run RUN -n N --seed S` with the same options (one batch)
    let x = model.sample(r.n, &opts)?;
    canvas.add(&x)?;
    let mut images = Images {
        grid: canvas.png()?,
        each: Vec::new(),
    };
    if shape.len() == 3 {
        for i in 0..r.n {
            let mut one = dgm::image_io::SampleCanvas::new(1, &shape, prep)?;
            one.add(&x.narrow(0, i, 1)?)?;
            images.each.push(one.png()?);
        }
    }
    Ok(images)
}

fn generate(
    id: u64,
    r: &GenerateRequest,
    run: &run::LoadedRun,
    table: &Mutex<Table>,
) -> dgm::Result<()> {
    let Some(lm) = run.model.as_sequence() else {
        return Err(dgm::Error::Unsupported(format!(
            "run '{}' is not a language model ({}): text needs one of {}",
            r.run,
            run.model.name(),
            dgm::models::names_with(|a| a.sequence).join(", ")
        )));
    };
    let opts = r.options()?;
    let tok = lm.tokenizer();
    let ids = tok
        .encode(r.prompt.as_bytes())
        .map_err(|e| dgm::Error::invalid("prompt", e.to_string()))?;
    let mut stream = dgm::data::tokenizer::Utf8Stream::default();
    let push = |text: &str| {
        if let Some(j) = lock(table).jobs.get_mut(&id) {
            j.text.push_str(text);
        }
    };
    push(&stream.push(r.prompt.as_bytes()));
    lm.generate(&ids, &opts, &mut |t| {
        if let Some(b) = tok.token_byte(t) {
            push(&stream.push(&[b]));
        }
        Ok(true)
    })?;
    push(&stream.finish());
    Ok(())
}
