//! The HTTP routes (see the crate's docs for the table), their errors as JSON, and the server-sent events of
//! a run.

use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::requests::{
    EditRequest, GenerateRequest, InterpolateRequest, LikelihoodRequest, SampleRequest,
    ScoreRequest, Work,
};
use crate::training::TrainRequest;
use crate::{page, runs, Studio};

/// An error answered as `{"error": "..."}` with its status (and `Retry-After` when retrying helps).
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    msg: String,
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self {
            status,
            msg: msg.into(),
            retry_after: None,
        }
    }
    pub(crate) fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    pub(crate) fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, msg)
    }
    pub(crate) fn conflict(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, msg)
    }
    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, msg)
    }
}

impl From<dgm::Error> for ApiError {
    fn from(e: dgm::Error) -> Self {
        use dgm::Error as E;
        let status = match &e {
            E::Unknown { .. }
            | E::InvalidValue { .. }
            | E::NotApplicable { .. }
            | E::Unsupported(_)
            | E::DataNotFound { .. }
            | E::NotARun { .. } => StatusCode::BAD_REQUEST,
            E::RunExists { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({ "error": self.msg }))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;
type Shared = State<Arc<Studio>>;

/// The studio's routes over `studio`.
pub fn router(studio: Arc<Studio>) -> Router {
    let limit = studio.opts.max_body;
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/api/runs", get(list_runs))
        .route("/api/run", get(run_detail))
        .route("/api/run/samples.png", get(run_samples))
        .route("/api/run/loss.svg", get(run_loss))
        .route("/api/run/events", get(run_events))
        .route("/api/run/example.png", get(run_example))
        .route("/api/run/stop", post(run_stop))
        .route("/api/train", post(train))
        .route("/api/sample", post(sample))
        .route("/api/generate", post(generate))
        .route("/api/edit", post(edit))
        .route("/api/score", post(score))
        .route("/api/interpolate", post(interpolate))
        .route("/api/likelihood", post(likelihood))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/image.png", get(job_image))
        .fallback(|| async {
            ApiError::not_found("no such page or endpoint (GET / is the studio)")
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(guard))
        .with_state(studio)
}

/// Whether `host` (a `Host` header: name or address, optional port) names this machine by address or as
/// `localhost`; a DNS name pointing here (DNS rebinding) does not.
fn host_allowed(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Refuses what a web page elsewhere could make the browser send here: a `Host` that is a DNS name (DNS
/// rebinding; 403) and a POST whose body is not declared JSON (a cross-site form; browsers cannot send
/// `application/json` across origins without a preflight, which the studio does not answer; 415).
async fn guard(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_allowed(host) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Host '{host}' refused: open the studio by address (http://127.0.0.1:PORT/) or as localhost"),
        )
        .into_response();
    }
    if req.method() == axum::http::Method::POST {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|t| t.trim_start().starts_with("application/json"));
        if !json {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "POST bodies are JSON: send Content-Type: application/json",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// `?run=NAME`.
#[derive(Deserialize)]
struct RunQuery {
    run: String,
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body: {e}")))
}

/// Runs blocking file or model work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("internal error: {e}")))?
}

async fn list_runs(State(s): Shared) -> ApiResult<Json<Value>> {
    blocking(move || {
        let found = runs::list(s.root());
        let mut listed: Vec<Value> = found
            .iter()
            .map(|r| {
                let mut v = runs::summary_json(r);
                v["shape"] = runs::example_shape(&r.dir);
                v["training"] = s.training.status(&r.name).unwrap_or(Value::Null);
                v
            })
            .collect();
        // runs started here that have no checkpoint yet
        for (name, live) in s.training.all() {
            if !found.iter().any(|r| r.name == name) {
                listed.push(json!({ "name": name, "training": live, "step": null }));
            }
        }
        let models: Vec<Value> = dgm::models::REGISTRY
            .iter()
            .map(|e| json!({ "name": e.name, "family": e.family, "about": e.about, "default_data": e.default_data }))
            .collect();
        Ok(Json(json!({
            "root": s.root().display().to_string(),
            "runs": listed,
            "models": models,
            "queue": s.jobs.capacity(),
        })))
    })
    .await
}

async fn run_detail(State(s): Shared, Query(q): Query<RunQuery>) -> ApiResult<Json<Value>> {
    blocking(move || {
        let dir = runs::resolve(s.root(), &q.run)?;
        let summary = runs::summary(&dir, &q.run)?;
        let mut v = runs::summary_json(&summary);
        v["shape"] = runs::example_shape(&dir);
        v["config"] = std::fs::read_to_string(dir.join("config.toml"))
            .map(Value::String)
            .unwrap_or(Value::Null);
        v["training"] = s.training.status(&q.run).unwrap_or(Value::Null);
        Ok(Json(v))
    })
    .await
}

async fn run_samples(State(s): Shared, Query(q): Query<RunQuery>) -> ApiResult<Response> {
    blocking(move || {
        let dir = runs::resolve(s.root(), &q.run)?;
        let path = dgm::report::latest_sample(&dir).ok_or_else(|| {
            ApiError::not_found(format!("run '{}' has written no samples yet", q.run))
        })?;
        let bytes = std::fs::read(&path)
            .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
        Ok(png(bytes))
    })
    .await
}

async fn run_loss(State(s): Shared, Query(q): Query<RunQuery>) -> ApiResult<Response> {
    blocking(move || {
        let dir = runs::resolve(s.root(), &q.run)?;
        let svg = runs::summary(&dir, &q.run)?.loss_svg.ok_or_else(|| {
            ApiError::not_found(format!("run '{}' has logged no loss yet", q.run))
        })?;
        Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
    })
    .await
}

fn png(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes,
    )
        .into_response()
}

async fn run_stop(State(s): Shared, Query(q): Query<RunQuery>) -> ApiResult<Response> {
    runs::check_name(&q.run, 1)?;
    s.training.stop(&q.run)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({ "stopping": q.run, "note": "a checkpoint is written after the current step" }),
        ),
    )
        .into_response())
}

async fn train(State(s): Shared, bytes: Bytes) -> ApiResult<Response> {
    let r: TrainRequest = body(&bytes)?;
    let name = r.name.clone();
    blocking(move || s.training.start(s.root(), &s.opts.data_dir, r)).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "run": name }))).into_response())
}

fn queued(s: &Studio, run: &str, work: Work) -> ApiResult<Response> {
    match s.jobs.submit(run, work) {
        Some(id) => Ok((StatusCode::ACCEPTED, Json(json!({ "job": id }))).into_response()),
        None => Err(ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the generation queue is full ({} jobs wait behind the running one); retry in a few seconds",
                    s.jobs.capacity()
                ),
            )
        }),
    }
}

async fn sample(State(s): Shared, bytes: Bytes) -> ApiResult<Response> {
    let r: SampleRequest = body(&bytes)?;
    r.check().map_err(ApiError::bad_request)?;
    let dir = runs::resolve(s.root(), &r.run)?;
    let run = r.run.clone();
    queued(&s, &run, Work::Sample(r, dir))
}

async fn edit(State(s): Shared, bytes: Bytes) -> ApiResult<Response> {
    let r: EditRequest = body(&bytes)?;
    let dir = runs::resolve(s.root(), &r.run)?;
    let run = r.run.clone();
    let w = r.check().map_err(ApiError::bad_request)?;
    queued(&s, &run, Work::Edit(Box::new(w), dir))
}

async fn score(State(s): Shared, bytes: Bytes) -> ApiResult<Response> {
    let r: ScoreRequest = body(&bytes)?;
    r.check().map_err(ApiError::bad_request)?;
    let dir = runs::resolve(s.root(), &r.run)?;
    let run = r.run.clone();
    queued(&s, &run, Work::Score(r, dir))
}

async fn interpolate(State(s): Shared, bytes: Bytes) -> ApiResult<Response> {
    let r: InterpolateRequest = body(&bytes)?;
    let dir = runs::resolve(s.root(), &r.run)?;
    let run = r.run.clone();
    let w = r.check().map_err(ApiError::bad_request)?;
    queued(&s, &run, Work::Interpolate(Box::new(w), dir))
}

async fn likelihood(State(s): Shared, bytes: Bytes) -> ApiResult<Response> {
    let r: LikelihoodRequest = body(&bytes)?;
    let dir = runs::resolve(s.root(), &r.run)?;
    let run = r.run.clone();
    let w = r.check().map_err(ApiError::bad_request)?;
    queued(&s, &run, Work::Likelihood(Box::new(w), dir))
}

/// `?run=NAME&index=I`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExampleQuery {
    run: String,
    index: usize,
}

/// Test example `index` of a run's data set, as a PNG of its own size (no border): a picture to edit.
async fn run_example(State(s): Shared, Query(q): Query<ExampleQuery>) -> ApiResult<Response> {
    blocking(move || {
        let dir = runs::resolve(s.root(), &q.run)?;
        let cfg = dgm::train::run::RunDir::open(&dir)?.load_config()?;
        let ds = dgm::train::run::load_data(&cfg, dgm::data::Split::Test, &s.opts.data_dir)?;
        let mut r = png(runs::example_png(&ds, q.index)?);
        // a caption model's edits are guided by the example's caption: sent along as a header (the body is the
        // picture); `[model.net] captions = true` marks the diffusion models that take captions
        let caption_model = cfg
            .model
            .config
            .get("net")
            .and_then(|n| n.get("captions"))
            .and_then(|c| c.as_bool())
            .unwrap_or(false);
        let caption = ds.captions.as_ref().and_then(|c| c.get(q.index));
        if let (true, Some(c)) = (caption_model, caption) {
            if let Ok(v) = HeaderValue::from_str(c) {
                r.headers_mut().insert("x-dgm-caption", v);
            }
        }
        Ok(r)
    })
    .await
}

async fn generate(State(s): Shared, bytes: Bytes) -> ApiResult<Response> {
    let r: GenerateRequest = body(&bytes)?;
    r.check().map_err(ApiError::bad_request)?;
    let dir = runs::resolve(s.root(), &r.run)?;
    let run = r.run.clone();
    queued(&s, &run, Work::Generate(r, dir))
}

fn job_id(id: &str) -> ApiResult<u64> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("job id '{id}': not a number")))
}

async fn job(State(s): Shared, UrlPath(id): UrlPath<String>) -> ApiResult<Json<Value>> {
    let id = job_id(&id)?;
    s.jobs.status(id).map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "no job {id} (finished jobs are kept for a while, then forgotten)"
        ))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageQuery {
    index: Option<usize>,
}

async fn job_image(
    State(s): Shared,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<ImageQuery>,
) -> ApiResult<Response> {
    let id = job_id(&id)?;
    s.jobs.image(id, q.index).map(png)
}

/// How often a run's files are looked at for the event stream.
const POLL: Duration = Duration::from_millis(500);
/// The most of `metrics.jsonl` read per look (a record is a few hundred bytes).
const MAX_READ: u64 = 1 << 20;

/// What the event stream of a run has seen.
struct Watch {
    studio: Arc<Studio>,
    name: String,
    metrics: PathBuf,
    dir: PathBuf,
    offset: u64,
    step: Option<u64>,
    pending: std::collections::VecDeque<SseEvent>,
    /// The last progress sent (sent again only when it changes).
    progress: Option<String>,
    first: bool,
}

impl Watch {
    /// New `metrics.jsonl` records (whole lines only) and a new checkpoint step, as events.
    fn look(&mut self) {
        if let Ok(mut f) = std::fs::File::open(&self.metrics) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < self.offset {
                // the file was replaced (a restarted run): read it from the start
                self.offset = 0;
            }
            if self.first {
                // the page draws the history from loss.svg; stream what comes after
                self.offset = len;
            } else if len > self.offset && f.seek(SeekFrom::Start(self.offset)).is_ok() {
                let mut buf = Vec::new();
                let _ = f.take(MAX_READ).read_to_end(&mut buf);
                let whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                for line in buf[..whole].split(|&b| b == b'\n') {
                    if let Ok(text) = std::str::from_utf8(line) {
                        if !text.trim().is_empty() {
                            self.pending
                                .push_back(SseEvent::default().event("metrics").data(text.trim()));
                        }
                    }
                }
                self.offset += whole as u64;
            }
        }
        let step = dgm::train::run::RunDir::new(&self.dir)
            .checkpoint()
            .ok()
            .flatten()
            .map(|c| c.state.step);
        if step.is_some() && step != self.step {
            if !self.first {
                self.pending.push_back(
                    SseEvent::default()
                        .event("checkpoint")
                        .data(json!({ "step": step }).to_string()),
                );
            }
            self.step = step;
        }
        if let Some(live) = self
            .studio
            .training
            .status(&self.name)
            .map(|v| v.to_string())
        {
            if self.progress.as_ref() != Some(&live) {
                self.pending
                    .push_back(SseEvent::default().event("progress").data(&live));
                self.progress = Some(live);
            }
        }
        self.first = false;
    }
}

async fn run_events(
    State(s): Shared,
    Query(q): Query<RunQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    // a run started here may have no checkpoint yet: then its folder is watched by name
    let dir = match runs::resolve(s.root(), &q.run) {
        Ok(d) => d,
        Err(e) => {
            if s.training.status(&q.run).is_none() {
                return Err(e);
            }
            s.root().join(&q.run)
        }
    };
    let watch = Watch {
        studio: s.clone(),
        name: q.run.clone(),
        metrics: dir.join("metrics.jsonl"),
        dir,
        offset: 0,
        step: None,
        pending: Default::default(),
        progress: None,
        first: true,
    };
    let stream = futures_util::stream::unfold(watch, |mut w| async move {
        loop {
            if let Some(e) = w.pending.pop_front() {
                return Some((Ok(e), w));
            }
            if !w.first {
                tokio::time::sleep(POLL).await;
            }
            w = match tokio::task::spawn_blocking(move || {
                w.look();
                w
            })
            .await
            {
                Ok(w) => w,
                Err(_) => return None,
            };
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
