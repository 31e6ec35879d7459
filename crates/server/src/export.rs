//! Bulk Data `$export` (system, `Patient/$export`, `Group/{id}/$export`).
//!
//! Kick-off (`Prefer: respond-async`) answers 202 with `Content-Location:
//! base/$export-poll/{job}`; a background blocking task pages through the store (1,000
//! resources at a time, so memory stays bounded) and writes one NDJSON file per type
//! under `export_dir/{job}/`. Polling answers 202 with `X-Progress` until the manifest
//! (200) is ready; `DELETE` on the poll URL cancels and removes the files. Files are
//! served at `base/$export-file/{job}/{Type}.ndjson` to the token subject that started
//! the job. What is exported is what the same token could search (the same
//! authorization sub-queries as search).
//!
//! Jobs survive a restart: each job's state (owner, request, status, output files,
//! error) is kept in `export_dir/{job}/job.json`, written atomically (temporary file,
//! fsync, rename) when the job starts and when it ends; the NDJSON files are fsynced
//! before the job is recorded as complete. At start the server loads the jobs of its
//! export directory: completed ones are served as before; one that was running when the
//! server stopped is recorded as failed (its poll answers 500 with an OperationOutcome,
//! per the Bulk Data spec; the client starts a new export) and its partial files are
//! removed. Finished jobs are deleted with their files [`FhirServerConfig::export_retention`]
//! after they finished. The export directory belongs to one server process.
//!
//! [`FhirServerConfig::export_retention`]: crate::FhirServerConfig::export_retention

use crate::api::{Ctx, Req};
use crate::error::ApiError;
use crate::http::{fhir_response, parse_instant, Prefer};
use crate::search::{build_subs, run_subs};
use crate::FhirApi;
use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use vigil_auth::{Authorizer, Interaction};
use vigil_fhir::search::{SearchQuery, SearchRegistry};
use vigil_fhir_model::Model;

/// The state of one export.
#[derive(Debug, Clone)]
enum State {
    Running(String),
    /// The files (type, resource count) and when the job finished (Unix ms).
    Done(Vec<(String, usize)>, i64),
    /// Why, and when the job finished (Unix ms).
    Failed(String, i64),
}

/// The job record's file in the job's directory.
const JOB_FILE: &str = "job.json";

#[derive(Debug)]
pub(crate) struct Job {
    owner: String,
    request: String,
    transaction_time: String,
    dir: PathBuf,
    state: Mutex<State>,
    cancelled: AtomicBool,
}

impl Job {
    fn set(&self, s: State) {
        match self.state.lock() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }
    fn get(&self) -> State {
        match self.state.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// When the job finished, if it has.
    fn finished_ms(&self) -> Option<i64> {
        match self.get() {
            State::Running(_) => None,
            State::Done(_, at) | State::Failed(_, at) => Some(at),
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "owner": self.owner,
            "request": self.request,
            "transactionTime": self.transaction_time,
        });
        match self.get() {
            State::Running(_) => v["status"] = json!("running"),
            State::Done(files, at) => {
                v["status"] = json!("completed");
                v["finished"] = json!(at);
                v["output"] = files
                    .iter()
                    .map(|(t, n)| json!({"type": t, "count": n}))
                    .collect();
            }
            State::Failed(why, at) => {
                v["status"] = json!("failed");
                v["finished"] = json!(at);
                v["error"] = json!(why);
            }
        }
        v
    }

    fn from_json(dir: PathBuf, v: &Value) -> Option<Job> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let finished = v.get("finished").and_then(Value::as_i64);
        let state = match (v.get("status").and_then(Value::as_str)?, finished) {
            ("running", _) => State::Running(String::new()),
            ("completed", Some(at)) => {
                let mut files = Vec::new();
                for o in v.get("output")?.as_array()? {
                    let t = o.get("type")?.as_str()?;
                    // Only resource types name files (nothing else is ever served).
                    if !crate::api::is_type(t) {
                        return None;
                    }
                    files.push((
                        t.to_string(),
                        usize::try_from(o.get("count")?.as_u64()?).ok()?,
                    ));
                }
                State::Done(files, at)
            }
            ("failed", Some(at)) => State::Failed(text("error").unwrap_or_default(), at),
            _ => return None,
        };
        Some(Job {
            owner: text("owner")?,
            request: text("request")?,
            transaction_time: text("transactionTime")?,
            dir,
            state: Mutex::new(state),
            cancelled: AtomicBool::new(false),
        })
    }

    /// Write the job record atomically: a crash leaves the old record or the new one.
    fn persist(&self) -> std::io::Result<()> {
        let tmp = self.dir.join("job.json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(self.to_json().to_string().as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, self.dir.join(JOB_FILE))?;
        sync_dir(&self.dir)
    }
}

/// Make a directory's entries (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Whether a directory name can be a job id (what `new_id` makes; nothing that could
/// leave the export directory).
fn is_job_id(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The export jobs of a server.
#[derive(Debug, Default)]
pub(crate) struct Jobs(Mutex<HashMap<String, Arc<Job>>>);

impl Jobs {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.map().get(id).cloned()
    }
    fn insert(&self, id: String, job: Arc<Job>) {
        self.map().insert(id, job);
    }
    fn remove(&self, id: &str) {
        self.map().remove(id);
    }

    /// The jobs recorded in `dir` by an earlier run of the server. A job that was
    /// running is recorded as failed (its partial files removed); expired jobs and
    /// directories without a readable record (a kick-off interrupted before its first
    /// record, a cancelled job) are deleted. Problems are reported on stderr: a damaged
    /// export directory must not stop the server.
    pub(crate) fn load(dir: &Path, retention: Duration) -> Jobs {
        let jobs = Jobs::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return jobs,
            Err(e) => {
                eprintln!(
                    "vigil-server: cannot read the export directory {}: {e}",
                    dir.display()
                );
                return jobs;
            }
        };
        let now = vigil_store::now_millis();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !is_job_id(&name) || !path.is_dir() {
                continue;
            }
            let job = std::fs::read(path.join(JOB_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| Job::from_json(path.clone(), &v));
            let Some(job) = job else {
                let _ = std::fs::remove_dir_all(&path);
                continue;
            };
            if let State::Running(_) = job.get() {
                job.set(State::Failed(
                    "the server stopped while this export was running; start a new export".into(),
                    now,
                ));
                remove_ndjson(&path);
                if let Err(e) = job.persist() {
                    eprintln!("vigil-server: cannot record export {name} as failed: {e}");
                }
            }
            if job
                .finished_ms()
                .is_some_and(|at| expired(at, now, retention))
            {
                let _ = std::fs::remove_dir_all(&path);
                continue;
            }
            jobs.insert(name, Arc::new(job));
        }
        jobs
    }

    /// Delete the jobs that finished more than `retention` ago, with their files.
    fn sweep(&self, retention: Duration) {
        let now = vigil_store::now_millis();
        let old: Vec<(String, Arc<Job>)> = self
            .map()
            .iter()
            .filter(|(_, j)| {
                j.finished_ms()
                    .is_some_and(|at| expired(at, now, retention))
            })
            .map(|(id, j)| (id.clone(), j.clone()))
            .collect();
        for (id, job) in old {
            self.remove(&id);
            let _ = std::fs::remove_dir_all(&job.dir);
        }
    }
}

fn expired(finished_ms: i64, now_ms: i64, retention: Duration) -> bool {
    let keep = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_sub(finished_ms) >= keep
}

/// Remove a job's NDJSON files (partial output of an interrupted job).
fn remove_ndjson(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "ndjson") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Which patients a Patient/Group export covers (`None`: all).
fn group_patients(group: &Value) -> Vec<String> {
    group["member"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["entity"]["reference"].as_str())
        .filter_map(|r| r.strip_prefix("Patient/"))
        .map(str::to_string)
        .collect()
}

pub(crate) async fn kickoff(
    api: &FhirApi,
    ctx: &Ctx,
    req: &Req,
    scope: Option<(&str, Option<&str>)>,
) -> Result<Response, ApiError> {
    if req.method != Method::GET && req.method != Method::POST {
        return Err(ApiError::MethodNotAllowed("$export takes GET".into()));
    }
    if !Prefer::from_headers(&req.headers).respond_async {
        return Err(ApiError::bad_request(
            "$export needs the header Prefer: respond-async",
        ));
    }
    sweep(api).await;
    let mut types: Vec<String> = Vec::new();
    let mut since = None;
    let mut filters: Vec<(String, String)> = Vec::new();
    for (n, v) in req.pairs()? {
        match n.as_str() {
            "_type" => types.extend(v.split(',').filter(|t| !t.is_empty()).map(str::to_string)),
            "_since" => since = Some((v.clone(), parse_instant("_since", &v)?)),
            "_typeFilter" => {
                for f in v.split(',') {
                    let (t, q) = f.split_once('?').ok_or_else(|| {
                        ApiError::bad_request(format!("_typeFilter {f} is not Type?query"))
                    })?;
                    filters.push((t.to_string(), q.to_string()));
                }
            }
            "_outputFormat"
                if !matches!(
                    v.as_str(),
                    "application/fhir+ndjson" | "application/ndjson" | "ndjson"
                ) =>
            {
                return Err(ApiError::bad_request(format!(
                    "_outputFormat {v} is not supported (ndjson only)"
                )));
            }
            _ => {}
        }
    }
    let model = Model::r4();
    // Patient-level exports cover the compartment types.
    let patient_level = scope.is_some();
    if types.is_empty() {
        types = model
            .resource_types()
            .filter(|t| crate::api::is_type(t))
            .filter(|t| {
                !patient_level || *t == "Patient" || !model.patient_compartment_params(t).is_empty()
            })
            .filter(|t| ctx.access.search_constraint(t).is_ok())
            .map(str::to_string)
            .collect();
    }
    for t in &types {
        if !crate::api::is_type(t) {
            return Err(ApiError::bad_request(format!(
                "_type {t} is not a resource type"
            )));
        }
    }
    let patients: Option<Vec<String>> = match scope {
        Some(("Group", Some(id))) => {
            ctx.access.check_type(&Interaction::Read, "Group")?;
            let g = crate::api::current(api, "Group", id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("Group/{id} not found")))?;
            ctx.access.check_resource(&Interaction::Read, &g.resource)?;
            Some(group_patients(&g.resource))
        }
        _ => None,
    };
    // One list of sub-queries per type, authorized like a search by this token.
    let reg = SearchRegistry::r4();
    let mut plan: Vec<(String, Vec<SearchQuery>)> = Vec::new();
    for t in &types {
        let mut variants: Vec<Vec<(String, String)>> = vec![Vec::new()];
        if let Some(ps) = &patients {
            variants = Vec::new();
            for p in ps {
                if t == "Patient" {
                    variants.push(vec![("_id".into(), p.clone())]);
                }
                for param in model.patient_compartment_params(t) {
                    variants.push(vec![(param.clone(), format!("Patient/{p}"))]);
                }
            }
        }
        let mut subs = Vec::new();
        for mut pairs in variants {
            if let Some((text, _)) = &since {
                pairs.push(("_lastUpdated".into(), format!("ge{text}")));
            }
            let typed: Vec<&(String, String)> = filters.iter().filter(|(ft, _)| ft == t).collect();
            let base = SearchQuery::from_pairs(Some(t), &pairs, reg)?;
            if typed.is_empty() {
                subs.extend(build_subs(ctx, &base)?);
            } else {
                // Each _typeFilter of the type is an alternative (OR).
                for (_, q) in typed {
                    let f = SearchQuery::parse(Some(t), q, reg)?;
                    if let Some(e) = f.strict_errors() {
                        return Err(e.into());
                    }
                    let mut with = base.clone();
                    with.clauses.extend(f.clauses);
                    subs.extend(build_subs(ctx, &with)?);
                }
            }
        }
        if !subs.is_empty() {
            plan.push((t.clone(), subs));
        }
    }
    let id = vigil_store::new_id();
    let dir = api.inner.config.export_dir.join(&id);
    std::fs::create_dir_all(&dir)
        .map_err(|e| ApiError::Internal(format!("cannot create {}: {e}", dir.display())))?;
    let request = format!(
        "{}/{}{}",
        api.inner.config.base_url,
        req.segs.join("/"),
        if req.query.is_empty() {
            String::new()
        } else {
            format!("?{}", req.query)
        }
    );
    let job = Arc::new(Job {
        owner: ctx.claims.sub.clone(),
        request,
        transaction_time: vigil_store::format_rfc3339(vigil_store::now_millis()),
        dir,
        state: Mutex::new(State::Running("starting".into())),
        cancelled: AtomicBool::new(false),
    });
    let first = job.clone();
    tokio::task::spawn_blocking(move || first.persist())
        .await
        .map_err(|e| ApiError::Internal(format!("export task failed: {e}")))?
        .map_err(|e| ApiError::Internal(format!("cannot record the export job: {e}")))?;
    api.inner.exports.insert(id.clone(), job.clone());
    let store = api.inner.store.clone();
    let page_size = api.inner.config.export_page_size.clamp(1, 1_000) as u32;
    tokio::task::spawn_blocking(move || {
        let result = (|| -> Result<Vec<(String, usize)>, ApiError> {
            let mut out = Vec::new();
            for (n, (t, subs)) in plan.iter().enumerate() {
                job.set(State::Running(format!("{t} ({}/{})", n + 1, plan.len())));
                let path = job.dir.join(format!("{t}.ndjson"));
                let io_err =
                    |e: std::io::Error| ApiError::Internal(format!("{}: {e}", path.display()));
                let mut file =
                    std::io::BufWriter::new(std::fs::File::create(&path).map_err(io_err)?);
                let mut count = 0usize;
                let mut cursor: Option<String> = None;
                // One page in memory at a time, whatever the size of the export.
                loop {
                    if job.cancelled.load(Ordering::Relaxed) {
                        return Ok(out);
                    }
                    let page = run_subs(&*store, subs, page_size, cursor.as_deref(), false)?;
                    for m in &page.matches {
                        writeln!(file, "{}", m.resource).map_err(io_err)?;
                        count += 1;
                    }
                    match page.next {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                let file = file.into_inner().map_err(|e| io_err(e.into_error()))?;
                if count > 0 {
                    // Durable before the record says the job is complete.
                    file.sync_all().map_err(io_err)?;
                    out.push((t.clone(), count));
                } else {
                    drop(file);
                    let _ = std::fs::remove_file(&path);
                }
            }
            sync_dir(&job.dir)
                .map_err(|e| ApiError::Internal(format!("{}: {e}", job.dir.display())))?;
            Ok(out)
        })();
        if job.cancelled.load(Ordering::Relaxed) {
            // Cancelled: the poll handler removed the record; remove the files too.
            let _ = std::fs::remove_dir_all(&job.dir);
            return;
        }
        let now = vigil_store::now_millis();
        match result {
            Ok(files) => job.set(State::Done(files, now)),
            Err(e) => job.set(State::Failed(e.to_string(), now)),
        }
        if let Err(e) = job.persist() {
            // Served from memory until a restart, which then reports it as failed.
            eprintln!("vigil-server: cannot record the end of export job: {e}");
        }
        if job.cancelled.load(Ordering::Relaxed) {
            // Cancelled while finishing: the record just written must not outlive it.
            let _ = std::fs::remove_dir_all(&job.dir);
        }
    });
    let mut resp = fhir_response(
        StatusCode::ACCEPTED,
        &crate::http::info_outcome("export started"),
    );
    let loc = format!("{}/$export-poll/{id}", api.inner.config.base_url);
    if let Ok(v) = HeaderValue::from_str(&loc) {
        resp.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    Ok(resp)
}

/// Delete expired jobs (off the async workers: it removes files).
async fn sweep(api: &FhirApi) {
    let api = api.clone();
    let _ = tokio::task::spawn_blocking(move || {
        api.inner.exports.sweep(api.inner.config.export_retention)
    })
    .await;
}

fn owned_job(api: &FhirApi, ctx: &Ctx, id: &str) -> Result<Arc<Job>, ApiError> {
    match api.inner.exports.get(id) {
        Some(j) if j.owner == ctx.claims.sub => Ok(j),
        _ => Err(ApiError::NotFound(format!("no export job {id}"))),
    }
}

pub(crate) async fn poll(
    api: &FhirApi,
    ctx: &Ctx,
    req: &Req,
    id: &str,
) -> Result<Response, ApiError> {
    sweep(api).await;
    let job = owned_job(api, ctx, id)?;
    if req.method == Method::DELETE {
        job.cancelled.store(true, Ordering::Relaxed);
        api.inner.exports.remove(id);
        let running = matches!(job.get(), State::Running(_));
        let dir = job.dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            // The record goes first: a restart forgets the job even if the files
            // could not all be removed yet. A running job's task removes its own files
            // when it sees the cancellation.
            let _ = std::fs::remove_file(dir.join(JOB_FILE));
            if !running {
                let _ = std::fs::remove_dir_all(dir);
            }
        })
        .await;
        return Ok(fhir_response(
            StatusCode::ACCEPTED,
            &crate::http::info_outcome("export cancelled"),
        ));
    }
    match job.get() {
        State::Running(progress) => {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::ACCEPTED;
            if let Ok(v) = HeaderValue::from_str(&progress) {
                resp.headers_mut().insert("x-progress", v);
            }
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(resp)
        }
        State::Failed(why, _) => Err(ApiError::Internal(format!("export failed: {why}"))),
        State::Done(files, _) => {
            let output: Vec<Value> = files
                .iter()
                .map(|(t, n)| {
                    json!({"type": t, "count": n, "url": format!(
                        "{}/$export-file/{id}/{t}.ndjson", api.inner.config.base_url)})
                })
                .collect();
            let manifest = json!({
                "transactionTime": job.transaction_time,
                "request": job.request,
                "requiresAccessToken": true,
                "output": output,
                "error": [],
            });
            let mut resp = Response::new(Body::from(manifest.to_string()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
    }
}

pub(crate) async fn file(
    api: &FhirApi,
    ctx: &Ctx,
    id: &str,
    name: &str,
) -> Result<Response, ApiError> {
    let job = owned_job(api, ctx, id)?;
    let t = name
        .strip_suffix(".ndjson")
        .filter(|t| crate::api::is_type(t))
        .ok_or_else(|| ApiError::NotFound(format!("no export file {name}")))?;
    // Only files of a completed job (a running job's are partial).
    let State::Done(files, _) = job.get() else {
        return Err(ApiError::NotFound(format!("no export file {name}")));
    };
    if !files.iter().any(|(ft, _)| ft == t) {
        return Err(ApiError::NotFound(format!("no export file {name}")));
    }
    let path = job.dir.join(format!("{t}.ndjson"));
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::NotFound(format!("no export file {name}")))?;
    // Streamed in chunks: a file of any size is served in bounded memory.
    let mut resp = Response::new(Body::from_stream(FileChunks {
        file,
        buf: vec![0; 64 * 1024],
    }));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+ndjson"),
    );
    Ok(resp)
}

/// A file as a stream of chunks.
struct FileChunks {
    file: tokio::fs::File,
    buf: Vec<u8>,
}

impl futures_core::Stream for FileChunks {
    type Item = std::io::Result<axum::body::Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut rb = tokio::io::ReadBuf::new(&mut this.buf);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut this.file), cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => {
                Poll::Ready(Some(Ok(axum::body::Bytes::copy_from_slice(rb.filled()))))
            }
        }
    }
}
