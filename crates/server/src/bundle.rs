//! `POST /` with a batch or transaction Bundle.
//!
//! Batch: each entry runs on its own through the normal routing; its failure becomes
//! that entry's OperationOutcome. Transaction: every entry is resolved first (ids for
//! creates, `If-None-Exist`, conditional update/delete targets, `urn:uuid:` and
//! conditional references), authorized and validated; then all writes go to the store
//! in one [`FhirStore::transaction`](vigil_store::FhirStore::transaction) (all or
//! nothing), in FHIR's processing order (DELETE, POST, PUT/PATCH), and the reads (GET)
//! run after the commit. The response lists the entries in request order.

use crate::api::{
    blocking, check_type_matches, current, is_type, route, validate_for_write, Ctx, Req,
};
use crate::error::ApiError;
use crate::http::{self, check_json_body, fhir_response, header_str, parse_resource, Prefer};
use crate::search::conditional_matches;
use crate::FhirApi;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::HashMap;
use vigil_auth::{Authorizer, Interaction};
use vigil_store::{Stored, WriteOp, WriteOutcome};

/// One parsed Bundle entry.
struct Entry {
    method: Method,
    /// The path without base and leading slash (`Patient/1`, `Patient`).
    path: String,
    query: String,
    full_url: Option<String>,
    resource: Option<Value>,
    if_match: Option<String>,
    if_none_exist: Option<String>,
}

impl Entry {
    fn segs(&self) -> Vec<String> {
        self.path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

fn parse_entry(api: &FhirApi, mut e: Value) -> Result<Entry, ApiError> {
    let request = e
        .get("request")
        .ok_or_else(|| ApiError::bad_request("entry has no request"))?;
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("entry.request has no method"))?;
    let method = match method {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        m => return Err(ApiError::bad_request(format!("unknown method {m}"))),
    };
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("entry.request has no url"))?;
    let base = format!("{}/", api.inner.config.base_url);
    let url = url
        .strip_prefix(&base)
        .unwrap_or(url)
        .trim_start_matches('/');
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (url.to_string(), String::new()),
    };
    let str_field = |name: &str| {
        request
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let if_match = str_field("ifMatch");
    let if_none_exist = str_field("ifNoneExist");
    Ok(Entry {
        method,
        path,
        query,
        full_url: e.get("fullUrl").and_then(Value::as_str).map(str::to_string),
        // Moved out, not copied: a Bundle of 1,000 resources is megabytes of values.
        resource: e.get_mut("resource").map(Value::take),
        if_match,
        if_none_exist,
    })
}

/// The body of a PATCH entry: a Binary holding a JSON Patch.
fn patch_document(resource: Option<&Value>) -> Result<Value, ApiError> {
    let r = resource.ok_or_else(|| ApiError::bad_request("PATCH entry without a resource"))?;
    if r["resourceType"] != "Binary" {
        return Err(ApiError::NotImplemented(
            "PATCH entries must carry a Binary with a JSON Patch (FHIRPath Patch is not supported)"
                .into(),
        ));
    }
    let data = r
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("PATCH Binary has no data"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| ApiError::bad_request(format!("PATCH Binary data is not base64: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("PATCH Binary data is not JSON: {e}")))
}

pub(crate) async fn bundle(api: &FhirApi, ctx: &Ctx, req: Req) -> Result<Response, ApiError> {
    check_json_body(&req.headers)?;
    let mut b = parse_resource(&req.body)?;
    if b["resourceType"] != "Bundle" {
        return Err(ApiError::bad_request(
            "POST to the base takes a batch or transaction Bundle",
        ));
    }
    let entries = match b.get_mut("entry") {
        Some(Value::Array(entries)) => std::mem::take(entries),
        _ => Vec::new(),
    };
    let max = api.inner.config.max_bundle_entries;
    if entries.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "the Bundle has {} entries; this server takes at most {max}",
            entries.len()
        )));
    }
    let prefer = Prefer::from_headers(&req.headers);
    match b.get("type").and_then(Value::as_str) {
        Some("batch") => batch(api, ctx, entries, &req.headers).await,
        Some("transaction") => transaction(api, ctx, entries, prefer).await,
        other => Err(ApiError::BadRequest {
            message: format!(
                "Bundle.type must be batch or transaction, not {}",
                other.unwrap_or("(none)")
            ),
            expression: Some("Bundle.type".into()),
        }),
    }
}

/// Run one entry through the normal routing.
async fn run_entry(
    api: &FhirApi,
    ctx: &Ctx,
    e: &Entry,
    outer: &HeaderMap,
) -> Result<Response, ApiError> {
    let segs = e.segs();
    if segs.is_empty() {
        return Err(ApiError::bad_request(
            "entry.request.url names no resource type",
        ));
    }
    let mut headers = HeaderMap::new();
    for name in ["prefer", "accept"] {
        if let Some(v) = outer.get(name) {
            headers.insert(name, v.clone());
        }
    }
    let mut body = Bytes::new();
    if e.method == Method::PATCH {
        let doc = patch_document(e.resource.as_ref())?;
        body = Bytes::from(doc.to_string());
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/json-patch+json"),
        );
    } else if let Some(r) = &e.resource {
        body = Bytes::from(r.to_string());
        headers.insert("content-type", HeaderValue::from_static(http::FHIR_JSON));
    }
    for (name, v) in [
        ("if-match", &e.if_match),
        ("if-none-exist", &e.if_none_exist),
    ] {
        if let Some(v) = v {
            let v = HeaderValue::from_str(v)
                .map_err(|_| ApiError::bad_request(format!("invalid {name} value")))?;
            headers.insert(name, v);
        }
    }
    let method = if e.method == Method::HEAD {
        Method::GET
    } else {
        e.method.clone()
    };
    let req = Req {
        method,
        segs,
        query: e.query.clone(),
        headers,
        body,
    };
    route(api, ctx, req).await
}

fn status_text(s: StatusCode) -> String {
    format!(
        "{} {}",
        s.as_u16(),
        s.canonical_reason().unwrap_or_default()
    )
}

/// A Bundle response entry from a routed response.
async fn entry_from_response(resp: Response) -> Value {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Option<Value> = serde_json::from_slice(&body).ok();
    let mut response = json!({"status": status_text(status)});
    if let Some(l) = header_str(&headers, "location") {
        response["location"] = json!(l);
    }
    if let Some(t) = header_str(&headers, "etag") {
        response["etag"] = json!(t);
    }
    if let Some(lu) = body
        .as_ref()
        .and_then(|b| b["meta"]["lastUpdated"].as_str())
    {
        response["lastModified"] = json!(lu);
    }
    let mut entry = json!({});
    match body {
        Some(b) if b["resourceType"] == "OperationOutcome" => response["outcome"] = b,
        Some(b) => entry["resource"] = b,
        None => {}
    }
    entry["response"] = response;
    entry
}

async fn batch(
    api: &FhirApi,
    ctx: &Ctx,
    entries: Vec<Value>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let mut out = Vec::with_capacity(entries.len());
    for (i, raw) in entries.into_iter().enumerate() {
        let resp = match parse_entry(api, raw) {
            Ok(e) if e.method == Method::POST && e.segs().is_empty() => Err(ApiError::bad_request(
                "a Bundle inside a batch is not processed",
            )),
            Ok(e) => run_entry(api, ctx, &e, headers).await,
            Err(err) => Err(err),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                use axum::response::IntoResponse;
                e.with_context(&format!("Bundle.entry[{i}]"))
                    .into_response()
            }
        };
        out.push(entry_from_response(resp).await);
    }
    Ok(fhir_response(
        StatusCode::OK,
        &json!({"resourceType": "Bundle", "id": vigil_store::new_id(),
            "type": "batch-response", "entry": out}),
    ))
}

/// What a transaction entry becomes once resolved.
enum Plan {
    /// A write, with its index in the store operations.
    Write(usize),
    /// `If-None-Exist` found the resource: no write, answer 200 with it.
    Existing(Stored),
    /// A conditional delete that matched nothing.
    NothingToDelete,
    /// A read, run after the commit.
    Read,
}

fn collect_conditional_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("reference", Value::String(s)) => {
                        if let Some((t, _)) = s.split_once('?') {
                            if is_type(t) && !out.contains(s) {
                                out.push(s.clone());
                            }
                        }
                    }
                    _ => collect_conditional_refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_conditional_refs(x, out)),
        _ => {}
    }
}

/// Replace every string equal to a resolved reference (and occurrences inside the
/// narrative's XHTML) with its target.
fn rewrite(v: &mut Value, map: &HashMap<String, String>, key: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                rewrite(x, map, k);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, map, key)),
        Value::String(s) => {
            if let Some(to) = map.get(s.as_str()) {
                *s = to.clone();
            } else if key == "div" {
                for (from, to) in map {
                    if s.contains(from.as_str()) {
                        *s = s.replace(from.as_str(), to);
                    }
                }
            }
        }
        _ => {}
    }
}

fn order(m: &Method) -> u8 {
    match m.as_str() {
        "DELETE" => 0,
        "POST" => 1,
        "PUT" | "PATCH" => 2,
        _ => 3,
    }
}

async fn transaction(
    api: &FhirApi,
    ctx: &Ctx,
    raw: Vec<Value>,
    prefer: Prefer,
) -> Result<Response, ApiError> {
    let at = |i: usize| move |e: ApiError| e.with_context(&format!("Bundle.entry[{i}]"));
    let mut entries = Vec::with_capacity(raw.len());
    for (i, e) in raw.into_iter().enumerate() {
        let e = parse_entry(api, e).map_err(at(i))?;
        if e.segs().is_empty() || !is_type(&e.segs()[0]) {
            return Err(ApiError::bad_request(format!(
                "entry.request.url {} names no resource type",
                e.path
            ))
            .with_context(&format!("Bundle.entry[{i}]")));
        }
        entries.push(e);
    }
    let mut idx: Vec<usize> = (0..entries.len()).collect();
    idx.sort_by_key(|&i| order(&entries[i].method));

    // Resolve targets and ids.
    let mut refs: HashMap<String, String> = HashMap::new();
    let mut targets: Vec<Option<(String, String)>> = vec![None; entries.len()];
    let mut existing: HashMap<usize, Stored> = HashMap::new();
    for &i in &idx {
        let e = &entries[i];
        let segs = e.segs();
        let t = segs[0].clone();
        let target = match (e.method.as_str(), segs.len(), e.query.is_empty()) {
            ("POST", 1, _) => {
                let mut id = vigil_store::new_id();
                if let Some(cond) = &e.if_none_exist {
                    let found = conditional_matches(api, ctx, &t, cond)
                        .await
                        .map_err(at(i))?;
                    match found.as_slice() {
                        [] => {}
                        [one] => {
                            id = one.id.clone();
                            existing.insert(i, one.clone());
                        }
                        _ => {
                            return Err(ApiError::PreconditionFailed(format!(
                                "If-None-Exist {cond} matches more than one {t}"
                            ))
                            .with_context(&format!("Bundle.entry[{i}]")))
                        }
                    }
                }
                Some((t, id))
            }
            ("PUT" | "PATCH" | "DELETE" | "GET" | "HEAD", 2, true) => Some((t, segs[1].clone())),
            ("PUT" | "DELETE", 1, false) => {
                let found = conditional_matches(api, ctx, &t, &e.query)
                    .await
                    .map_err(at(i))?;
                match found.as_slice() {
                    [] if e.method == Method::DELETE => None,
                    [] => {
                        let id = e
                            .resource
                            .as_ref()
                            .and_then(|r| r.get("id"))
                            .and_then(Value::as_str)
                            .map_or_else(vigil_store::new_id, str::to_string);
                        Some((t, id))
                    }
                    [one] => Some((t, one.id.clone())),
                    _ => {
                        return Err(ApiError::PreconditionFailed(format!(
                            "the criteria {} match more than one {t}",
                            e.query
                        ))
                        .with_context(&format!("Bundle.entry[{i}]")))
                    }
                }
            }
            ("GET" | "HEAD", _, _) => None,
            (m, _, _) => {
                return Err(ApiError::bad_request(format!(
                    "{m} {} is not a valid transaction entry",
                    e.path
                ))
                .with_context(&format!("Bundle.entry[{i}]")))
            }
        };
        if let (Some(full), Some((t, id))) = (&e.full_url, &target) {
            if e.method == Method::POST || e.method == Method::PUT {
                refs.insert(full.clone(), format!("{t}/{id}"));
            }
        }
        targets[i] = target;
    }
    // Conditional references, resolved by search (exactly one match).
    let mut conditional = Vec::new();
    for e in &entries {
        if let Some(r) = &e.resource {
            collect_conditional_refs(r, &mut conditional);
        }
    }
    for c in conditional {
        let (t, q) = c.split_once('?').unwrap_or((&c, ""));
        let found = conditional_matches(api, ctx, t, q).await?;
        match found.as_slice() {
            [one] => {
                refs.insert(c.clone(), format!("{t}/{}", one.id));
            }
            other => {
                return Err(ApiError::PreconditionFailed(format!(
                    "conditional reference {c} matches {} resources (must be exactly one)",
                    other.len()
                )))
            }
        }
    }

    // Build, authorize and validate the writes.
    let mut ops: Vec<WriteOp> = Vec::new();
    let mut plans: Vec<Option<Plan>> = (0..entries.len()).map(|_| None).collect();
    for &i in &idx {
        let e = &mut entries[i];
        let ctxerr = at(i);
        let target = targets[i].clone();
        let plan = match e.method.as_str() {
            "GET" | "HEAD" => Plan::Read,
            "POST" => {
                if let Some(s) = existing.remove(&i) {
                    Plan::Existing(s)
                } else {
                    let (t, id) = target.ok_or_else(|| ApiError::Internal("no target".into()))?;
                    let mut r = e
                        .resource
                        .take()
                        .ok_or_else(|| ctxerr(ApiError::bad_request("POST without resource")))?;
                    if !refs.is_empty() {
                        rewrite(&mut r, &refs, "");
                    }
                    check_type_matches(&r, &t).map_err(at(i))?;
                    ctx.access
                        .check_type(&Interaction::Create, &t)
                        .map_err(|d| at(i)(d.into()))?;
                    ctx.access
                        .check_resource(&Interaction::Create, &r)
                        .map_err(|d| at(i)(d.into()))?;
                    validate_for_write(&r).map_err(at(i))?;
                    ops.push(WriteOp::Create {
                        resource: r,
                        id: Some(id),
                    });
                    Plan::Write(ops.len() - 1)
                }
            }
            "PUT" => {
                let (t, id) = target.ok_or_else(|| ApiError::Internal("no target".into()))?;
                let mut r = e
                    .resource
                    .take()
                    .ok_or_else(|| ctxerr(ApiError::bad_request("PUT without resource")))?;
                if !refs.is_empty() {
                    rewrite(&mut r, &refs, "");
                }
                check_type_matches(&r, &t).map_err(at(i))?;
                match r.get("id") {
                    None => r["id"] = json!(id),
                    Some(Value::String(b)) if *b == id => {}
                    Some(_) => {
                        return Err(at(i)(ApiError::bad_request(
                            "the resource id does not match the entry's url",
                        )))
                    }
                }
                ctx.access
                    .check_type(&Interaction::Update, &t)
                    .map_err(|d| at(i)(d.into()))?;
                if let Some(old) = current(api, &t, &id).await? {
                    ctx.access
                        .check_resource(&Interaction::Update, &old.resource)
                        .map_err(|d| at(i)(d.into()))?;
                }
                ctx.access
                    .check_resource(&Interaction::Update, &r)
                    .map_err(|d| at(i)(d.into()))?;
                validate_for_write(&r).map_err(at(i))?;
                ops.push(WriteOp::Update {
                    resource_type: t,
                    id,
                    resource: r,
                    if_match: entry_if_match(e).map_err(at(i))?,
                });
                Plan::Write(ops.len() - 1)
            }
            "PATCH" => {
                let (t, id) = target.ok_or_else(|| ApiError::Internal("no target".into()))?;
                let doc = patch_document(e.resource.as_ref()).map_err(at(i))?;
                ctx.access
                    .check_type(&Interaction::Patch, &t)
                    .map_err(|d| at(i)(d.into()))?;
                let old = current(api, &t, &id)
                    .await?
                    .ok_or_else(|| at(i)(ApiError::NotFound(format!("{t}/{id} not found"))))?;
                ctx.access
                    .check_resource(&Interaction::Patch, &old.resource)
                    .map_err(|d| at(i)(d.into()))?;
                let mut r = (*old.resource).clone();
                crate::patch::apply_patch(&mut r, &doc).map_err(|p| at(i)(p.into()))?;
                ctx.access
                    .check_resource(&Interaction::Patch, &r)
                    .map_err(|d| at(i)(d.into()))?;
                validate_for_write(&r).map_err(at(i))?;
                let if_match = entry_if_match(e).map_err(at(i))?.or(Some(old.version));
                ops.push(WriteOp::Update {
                    resource_type: t,
                    id,
                    resource: r,
                    if_match,
                });
                Plan::Write(ops.len() - 1)
            }
            "DELETE" => match target {
                None => Plan::NothingToDelete,
                Some((t, id)) => {
                    ctx.access
                        .check_type(&Interaction::Delete, &t)
                        .map_err(|d| at(i)(d.into()))?;
                    if let Some(old) = current(api, &t, &id).await? {
                        ctx.access
                            .check_resource(&Interaction::Delete, &old.resource)
                            .map_err(|d| at(i)(d.into()))?;
                    }
                    ops.push(WriteOp::Delete {
                        resource_type: t,
                        id,
                        if_match: entry_if_match(e).map_err(at(i))?,
                    });
                    Plan::Write(ops.len() - 1)
                }
            },
            m => return Err(at(i)(ApiError::bad_request(format!("unknown method {m}")))),
        };
        plans[i] = Some(plan);
    }

    let outcomes: Vec<WriteOutcome> = blocking(api, move |s| s.transaction(ops)).await?;
    for stored in outcomes.iter().filter_map(WriteOutcome::stored) {
        api.notify_write(&stored.resource_type, &stored.id);
    }
    let mut outcomes: Vec<Option<WriteOutcome>> = outcomes.into_iter().map(Some).collect();

    let mut out = Vec::with_capacity(entries.len());
    let minimal = prefer.ret == http::ReturnPref::Minimal;
    let deleted = || OutEntry::Json(json!({"response": {"status": "204 No Content"}}));
    for (i, plan) in plans.into_iter().enumerate() {
        let entry = match plan {
            Some(Plan::Read) => {
                let resp = match run_entry(api, ctx, &entries[i], &HeaderMap::new()).await {
                    Ok(r) => r,
                    Err(e) => {
                        use axum::response::IntoResponse;
                        e.into_response()
                    }
                };
                OutEntry::Json(entry_from_response(resp).await)
            }
            Some(Plan::Existing(s)) => OutEntry::stored(api, s, StatusCode::OK, minimal),
            Some(Plan::NothingToDelete) => deleted(),
            Some(Plan::Write(k)) => match outcomes.get_mut(k).and_then(Option::take) {
                Some(WriteOutcome::Created(s)) => {
                    OutEntry::stored(api, s, StatusCode::CREATED, minimal)
                }
                Some(WriteOutcome::Updated(s)) => OutEntry::stored(api, s, StatusCode::OK, minimal),
                Some(WriteOutcome::Deleted(_)) | None => deleted(),
            },
            None => OutEntry::Json(json!({"response": {"status": "500 Internal Server Error"}})),
        };
        out.push(entry);
    }
    Ok(http::fhir_response_from(
        StatusCode::OK,
        &ResponseBundle {
            resource_type: "Bundle",
            id: vigil_store::new_id(),
            bundle_type: "transaction-response",
            entry: out,
        },
    ))
}

/// A transaction-response Bundle, serialized straight from the stored resources (a
/// `Value` tree of it would copy every resource once more).
#[derive(serde::Serialize)]
struct ResponseBundle {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    id: String,
    #[serde(rename = "type")]
    bundle_type: &'static str,
    entry: Vec<OutEntry>,
}

/// One entry of a [`ResponseBundle`].
#[derive(serde::Serialize)]
#[serde(untagged)]
enum OutEntry {
    Json(Value),
    Stored {
        #[serde(rename = "fullUrl")]
        full_url: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        resource: Option<SharedResource>,
        response: StoredResponse,
    },
}

/// A stored resource, serialized where it is (serde's `Arc` support needs its `rc`
/// feature for this one use).
struct SharedResource(std::sync::Arc<Value>);

impl serde::Serialize for SharedResource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_ref().serialize(s)
    }
}

#[derive(serde::Serialize)]
struct StoredResponse {
    status: String,
    location: String,
    etag: String,
    #[serde(rename = "lastModified")]
    last_modified: String,
}

impl OutEntry {
    fn stored(api: &FhirApi, s: Stored, status: StatusCode, minimal: bool) -> OutEntry {
        OutEntry::Stored {
            full_url: crate::api::full_url(api, &s.resource_type, &s.id),
            response: StoredResponse {
                status: status_text(status),
                location: format!("{}/{}/_history/{}", s.resource_type, s.id, s.version),
                etag: http::etag(s.version),
                last_modified: s.last_updated_text,
            },
            resource: (!minimal).then_some(SharedResource(s.resource)),
        }
    }
}

fn entry_if_match(e: &Entry) -> Result<Option<u64>, ApiError> {
    match &e.if_match {
        None => Ok(None),
        Some(v) => http::parse_etag(v)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("ifMatch {v:?} is not a version ETag"))),
    }
}
