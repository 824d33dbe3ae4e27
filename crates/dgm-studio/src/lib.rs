//! # dgm studio: a local web page over the dgm library
//!
//! `dgm studio` serves one self-contained page (its script and style are compiled into the binary; nothing
//! is fetched from elsewhere) and a small JSON API over the runs under a folder:
//!
//! - **Runs**: every run with its model, data, step, likelihood (with its kind: exact, bound, estimate of a
//!   bound, estimate), sample-quality metrics, loss curve and latest samples; a run that is training sends
//!   its new `metrics.jsonl` records and checkpoints as server-sent events, so the page updates live. A run
//!   can be started (a model, a data set, steps, `--set` lines) and stopped (a checkpoint is written) from the
//!   page.
//! - **Sample**: a run, sampler, steps, guidance, class or caption and seed → a grid, and each image as its
//!   own PNG.
//! - **Edit** (a diffusion run): draw → image (SDEdit), paint a mask → fill (inpainting), super-resolution,
//!   colorization and deblurring of a test example or an uploaded picture, with the solver of
//!   [`dgm::pipelines::edit()`].
//! - **Text**: a prompt → a continuation from a language-model run, streamed while it is generated; a pasted
//!   text scored token by token (`dgm score`), each token coloured by its log-probability.
//! - **Likelihood**: an image's bits/dim (with its kind) and where it falls among the scores of test examples
//!   and of the data set's out-of-distribution sets (`dgm eval ood`'s), drawn as histograms.
//! - **Latent**: two images (test examples or uploads) and the decoded points on the path between their codes,
//!   with a slider along it.
//!
//! ## Safety and load
//! The server binds to loopback unless told otherwise. Runs are addressed by their path relative to the runs
//! folder, and only a folder that is a run (config and checkpoint) inside the runs folder — after resolving
//! links — can be named: `..`, absolute paths and anything outside are refused. Request bodies are capped.
//! What another web page could make the browser send here is refused: a `Host` header that is a DNS name
//! other than `localhost` (DNS rebinding, 403) and a POST not declared `application/json` (a cross-site
//! form, 415).
//! Generation runs on one worker thread (one job uses every core) behind a bounded queue: a full queue
//! answers 503 with a `Retry-After` header at once. A failed job keeps its one-line error for the page; a
//! panicking job is caught and reported the same way, and the server keeps serving.
//!
//! ## API
//! | method and path | what |
//! |---|---|
//! | `GET /` | the page |
//! | `GET /api/runs` | every run, summarised, and the models and data sets a run can be started with |
//! | `GET /api/run?run=NAME` | one run, with its config |
//! | `GET /api/run/samples.png?run=NAME` | its latest sample grid |
//! | `GET /api/run/loss.svg?run=NAME` | its loss curve |
//! | `GET /api/run/events?run=NAME` | server-sent events: `metrics` (a new `metrics.jsonl` record), `checkpoint` (`{"step"}`), `progress` (training started here) |
//! | `POST /api/train` | start training a new run: `{"name", "model", "data"?, "steps"?, "seed"?, "set"?: ["key=value"]}` |
//! | `POST /api/run/stop?run=NAME` | stop a run this studio is training, with a checkpoint |
//! | `POST /api/sample` | queue a sample grid: `{"run", "n"?, "seed"?, "sampler"?, "steps"?, "guidance"?, "class"?, "caption"?, "draw"?, "temperature"?}` |
//! | `GET /api/run/example.png?run=NAME&index=I` | test example I of the run's data set, at its own size (a picture to edit); for a caption model its caption in the `x-dgm-caption` header |
//! | `POST /api/edit` | queue an edit: `{"run", "task": "inpaint" \| "super-resolve" \| "colorize" \| "deblur" \| "sdedit", "image": PNG as base64 or data URL, "mask"?: PNG (white = fill; inpaint), "factor"?, "blur_sigma"?, "solver"?, "strength"?, "sampler"?, "steps"?, "n"?, "seed"?, "class"?, "caption"?, "guidance"?}` |
//! | `POST /api/generate` | queue a text continuation: `{"run", "prompt"?, "max_tokens"?, "temperature"?, "top_k"?, "top_p"?, "seed"?}` |
//! | `POST /api/score` | queue the per-token log-likelihood of a text: `{"run", "text"}` |
//! | `POST /api/likelihood` | queue an image's likelihood and the reference sets': `{"run", "image": SOURCE, "reference"?: examples per set, "ood"?: [sets], "steps"?}` |
//! | `POST /api/interpolate` | queue a latent path: `{"run", "from": SOURCE, "to": SOURCE, "steps"?}` |
//! | `GET /api/jobs/ID` | a job's state (`queued` with its place, `running`, `done`, `failed` with the error), and its text so far |
//! | `GET /api/jobs/ID/image.png[?index=I]` | a finished sample, edit or interpolate job's grid, or its I-th picture |
//!
//! A SOURCE is `{"example": I}` (test example I, preprocessed as for evaluation) or `{"image": PNG}` (base64 or a
//! data URL, exactly the model's size). Score and likelihood jobs put their numbers in the job's `result`.
//!
//! Errors are JSON, `{"error": "one line naming the bad value and the valid options"}`, with a 4xx status
//! for a bad request and 5xx for the server's own failures.

mod api;
mod jobs;
mod page;
mod requests;
mod runs;
mod training;
mod work;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use api::router;

/// What the studio serves and how much it takes.
#[derive(Clone, Debug)]
pub struct StudioOptions {
    /// The runs folder: runs are listed from it and new runs are written into it.
    pub runs: PathBuf,
    /// Where data sets are found (`DGM_DATA`, see [`dgm::data::data_dir`]).
    pub data_dir: PathBuf,
    /// Generation jobs that may wait behind the running one before requests get 503.
    pub queue: usize,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
}

impl StudioOptions {
    /// Defaults for the runs folder `runs`: data from `DGM_DATA` (or `./data`), 4 waiting jobs, 8 MiB bodies.
    pub fn new(runs: &Path) -> Self {
        Self {
            runs: runs.to_path_buf(),
            data_dir: dgm::data::data_dir(None),
            queue: 4,
            max_body: 8 << 20,
        }
    }
}

/// The server's shared state.
pub struct Studio {
    /// The runs folder, with links resolved.
    root: PathBuf,
    opts: StudioOptions,
    jobs: jobs::Jobs,
    training: training::Training,
}

impl Studio {
    /// A studio over `opts.runs` (created when missing), with its generation worker started.
    pub fn new(opts: StudioOptions) -> dgm::Result<Arc<Self>> {
        if opts.queue == 0 {
            return Err(dgm::Error::invalid("queue", "must be at least 1"));
        }
        std::fs::create_dir_all(&opts.runs).map_err(|e| dgm::Error::io(&opts.runs, e))?;
        let root = opts
            .runs
            .canonicalize()
            .map_err(|e| dgm::Error::io(&opts.runs, e))?;
        Ok(Arc::new(Self {
            root,
            jobs: jobs::Jobs::start(opts.queue, &opts.data_dir)?,
            training: training::Training::default(),
            opts,
        }))
    }

    /// The runs folder, with links resolved.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Whether `addr` only accepts connections from this machine.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Serves the studio on `addr` until the process ends; `on_ready` gets the bound address (port 0 picks a
/// free one) before the first request is taken.
pub fn serve_blocking(
    addr: SocketAddr,
    opts: StudioOptions,
    on_ready: impl FnOnce(SocketAddr),
) -> dgm::Result<()> {
    let studio = Studio::new(opts)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| dgm::Error::Unsupported(format!("cannot start the server's runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| dgm::Error::invalid("--port", format!("cannot listen on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| dgm::Error::invalid("--port", format!("{addr}: {e}")))?;
        on_ready(local);
        axum::serve(listener, router(studio))
            .await
            .map_err(|e| dgm::Error::Unsupported(format!("the server stopped: {e}")))
    })
}
