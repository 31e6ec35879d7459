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
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vigil_auth::{Authorizer, Interaction};
use vigil_fhir::search::{SearchQuery, SearchRegistry};
use vigil_fhir_model::Model;

/// The state of one export.
#[derive(Debug, Clone)]
enum State {
    Running(String),
    Done(Vec<(String, usize)>),
    Failed(String),
}

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
}

/// The export jobs of a server.
#[derive(Debug, Default)]
pub(crate) struct Jobs(Mutex<HashMap<String, Arc<Job>>>);

impl Jobs {
    fn get(&self, id: &str) -> Option<Arc<Job>> {
        match self.0.lock() {
            Ok(m) => m.get(id).cloned(),
            Err(p) => p.into_inner().get(id).cloned(),
        }
    }
    fn insert(&self, id: String, job: Arc<Job>) {
        match self.0.lock() {
            Ok(mut m) => m.insert(id, job),
            Err(p) => p.into_inner().insert(id, job),
        };
    }
    fn remove(&self, id: &str) {
        match self.0.lock() {
            Ok(mut m) => m.remove(id),
            Err(p) => p.into_inner().remove(id),
        };
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
    api.inner.exports.insert(id.clone(), job.clone());
    let store = api.inner.store.clone();
    tokio::task::spawn_blocking(move || {
        let result = (|| -> Result<Vec<(String, usize)>, ApiError> {
            let mut out = Vec::new();
            for (n, (t, subs)) in plan.iter().enumerate() {
                job.set(State::Running(format!("{t} ({}/{})", n + 1, plan.len())));
                let path = job.dir.join(format!("{t}.ndjson"));
                let mut file = std::io::BufWriter::new(
                    std::fs::File::create(&path)
                        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?,
                );
                let mut count = 0usize;
                let mut cursor: Option<String> = None;
                loop {
                    if job.cancelled.load(Ordering::Relaxed) {
                        return Ok(out);
                    }
                    let page = run_subs(&*store, subs, 1_000, cursor.as_deref(), false)?;
                    for m in &page.matches {
                        writeln!(file, "{}", m.resource)
                            .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
                        count += 1;
                    }
                    match page.next {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                file.flush()
                    .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
                if count > 0 {
                    out.push((t.clone(), count));
                } else {
                    let _ = std::fs::remove_file(&path);
                }
            }
            Ok(out)
        })();
        match result {
            Ok(files) => job.set(State::Done(files)),
            Err(e) => job.set(State::Failed(e.to_string())),
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
    let job = owned_job(api, ctx, id)?;
    if req.method == Method::DELETE {
        job.cancelled.store(true, Ordering::Relaxed);
        api.inner.exports.remove(id);
        let dir = job.dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
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
        State::Failed(why) => Err(ApiError::Internal(format!("export failed: {why}"))),
        State::Done(files) => {
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
    let path = job.dir.join(format!("{t}.ndjson"));
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::NotFound(format!("no export file {name}")))?;
    let mut resp = Response::new(Body::from(bytes));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/fhir+ndjson"),
    );
    Ok(resp)
}
