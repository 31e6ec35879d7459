//! Request dispatch: authentication, routing by path, CRUD interactions, history, and
//! the audit record of each request.

use crate::audit::AuditRecord;
use crate::error::ApiError;
use crate::http::{
    self, check_accept, check_json_body, content_type, fhir_response, header_str, if_match,
    info_outcome, parse_resource, version_headers, Prefer, ReturnPref,
};
use crate::FhirApi;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use vigil_auth::{AccessContext, Authorizer, Claims, Interaction};
use vigil_fhir::search::query::decode_pairs;
use vigil_fhir_model::Model;
use vigil_store::{FhirStore, HistoryPage, HistoryQuery, HistoryScope, ReadOutcome, Stored};

/// An authenticated caller.
pub(crate) struct Ctx {
    pub access: crate::careteam::Access,
    pub claims: Claims,
}

/// One request, decoded enough to route it.
pub(crate) struct Req {
    pub method: Method,
    pub segs: Vec<String>,
    /// The raw query string (without `?`).
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn pairs(&self) -> Result<Vec<(String, String)>, ApiError> {
        Ok(decode_pairs(&self.query)?)
    }
}

/// What the audit record says the request was.
pub(crate) struct Action {
    pub name: String,
    pub target: String,
}

/// `[base]/` (outside the nested router, so the path still has the prefix): the same as
/// `[base]`.
pub(crate) async fn dispatch_base(State(api): State<FhirApi>, mut request: Request) -> Response {
    let uri = match request.uri().query() {
        Some(q) => format!("/?{q}"),
        None => "/".to_string(),
    };
    match uri.parse() {
        Ok(u) => *request.uri_mut() = u,
        Err(_) => return ApiError::bad_request("invalid request URI").into_response(),
    }
    dispatch(State(api), request).await
}

/// The axum handler behind every FHIR route.
pub(crate) async fn dispatch(State(api): State<FhirApi>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let format = decode_pairs(&query)
        .ok()
        .and_then(|p| p.into_iter().find(|(n, _)| n == "_format").map(|(_, v)| v));
    if let Err(e) = check_accept(&parts.headers, format.as_deref()) {
        return e.into_response();
    }
    let limit = api.inner.config.max_body_bytes;
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the request body exceeds the limit of {limit} bytes"
        ))
        .into_response()
    };
    if header_str(&parts.headers, "content-length")
        .and_then(|l| l.parse::<usize>().ok())
        .is_some_and(|l| l > limit)
    {
        return too_large();
    }
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return too_large(),
    };
    let req = Req {
        method: parts.method,
        segs,
        query,
        headers: parts.headers,
        body,
    };
    if req.method == Method::GET && req.segs.len() == 1 && req.segs[0] == "metadata" {
        return fhir_response(StatusCode::OK, &crate::capability::statement(&api));
    }
    let ctx = match authenticate(&api, &req.headers).await {
        Ok(ctx) => ctx,
        Err(e) => {
            api.inner.audit.append(AuditRecord {
                time: vigil_store::format_rfc3339(vigil_store::now_millis()),
                subject: "anonymous".into(),
                token_id: None,
                action: "authenticate".into(),
                target: describe_target(&req),
                status: e.status().as_u16(),
            });
            return e.into_response();
        }
    };
    let action = classify(&req);
    let resp = match route(&api, &ctx, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    api.inner.audit.append(AuditRecord {
        time: vigil_store::format_rfc3339(vigil_store::now_millis()),
        subject: ctx.claims.sub.clone(),
        token_id: Some(ctx.claims.jti.clone()),
        action: action.name,
        target: action.target,
        status: resp.status().as_u16(),
    });
    resp
}

async fn authenticate(api: &FhirApi, headers: &HeaderMap) -> Result<Ctx, ApiError> {
    use crate::careteam::Access;
    let token = vigil_auth::bearer_token(header_str(headers, "authorization"))?;
    let claims = api.inner.key.verify_now(token)?;
    let full = AccessContext::from_claims(&claims)?;
    let access = match (api.care_team_policy(), Access::policy_subject(&full)) {
        (Some(policy), Some(fhir_user)) => {
            let patients = if fhir_user.is_empty() {
                // A user/ token that names no user reaches no patient.
                Some(Default::default())
            } else {
                tokio::task::spawn_blocking(move || policy.patients_for(&fhir_user))
                    .await
                    .map_err(|e| ApiError::Internal(format!("care-team lookup failed: {e}")))??
            };
            Access::with_patients(full, patients)
        }
        _ => Access::unrestricted(full),
    };
    Ok(Ctx { access, claims })
}

fn describe_target(req: &Req) -> String {
    let mut t = format!("/{}", req.segs.join("/"));
    if !req.query.is_empty() {
        t.push('?');
        t.push_str(&req.query);
    }
    t
}

/// The interaction name and target for the audit trail.
fn classify(req: &Req) -> Action {
    let s: Vec<&str> = req.segs.iter().map(String::as_str).collect();
    let m = &req.method;
    let name = match (m.as_str(), s.as_slice()) {
        ("POST", []) => "batch/transaction",
        ("GET", []) => "search-system",
        ("GET", ["_history"]) => "history-system",
        (_, [op]) if op.starts_with('$') => op,
        ("GET", ["_audit"]) => "audit-query",
        ("GET", [_]) | ("POST", [_, "_search"]) => "search-type",
        ("POST", [_]) => "create",
        ("PUT", [_]) => "conditional-update",
        ("DELETE", [_]) => "conditional-delete",
        ("GET", [_, "_history"]) => "history-type",
        (_, [_, op]) | (_, [_, _, op]) if op.starts_with('$') => op,
        ("GET", [_, _]) => "read",
        ("PUT", [_, _]) => "update",
        ("PATCH", [_, _]) => "patch",
        ("DELETE", [_, _]) => "delete",
        ("GET", [_, _, "_history"]) => "history-instance",
        ("GET", [_, _, "_history", _]) => "vread",
        _ => "unknown",
    };
    Action {
        name: name.to_string(),
        target: describe_target(req),
    }
}

/// Route a request (also used for the entries of batches and transactions).
pub(crate) fn route<'a>(
    api: &'a FhirApi,
    ctx: &'a Ctx,
    req: Req,
) -> Pin<Box<dyn Future<Output = Result<Response, ApiError>> + Send + 'a>> {
    Box::pin(async move {
        let segs: Vec<String> = req.segs.clone();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let m = req.method.clone();
        match (m.as_str(), s.as_slice()) {
            ("POST", []) => crate::bundle::bundle(api, ctx, req).await,
            ("GET", []) => {
                let pairs = req.pairs()?;
                crate::search::search(api, ctx, None, pairs, &req.headers, "").await
            }
            ("GET", ["_history"]) => history(api, ctx, HistoryScope::System, &req).await,
            ("GET", ["_audit"]) => audit_query(api, ctx, &req),
            (_, ["$export"]) => crate::export::kickoff(api, ctx, &req, None).await,
            (_, ["$export-poll", job]) => crate::export::poll(api, ctx, &req, job).await,
            ("GET", ["$export-file", job, file]) => crate::export::file(api, ctx, job, file).await,
            (_, [t, ..]) if !is_type(t) => Err(ApiError::NotFound(format!(
                "{t} is not a resource type this server knows"
            ))),
            ("GET", [t]) => {
                let pairs = req.pairs()?;
                crate::search::search(api, ctx, Some(t), pairs, &req.headers, t).await
            }
            ("POST", [t, "_search"]) => {
                match content_type(&req.headers).as_deref() {
                    Some("application/x-www-form-urlencoded") | None => {}
                    Some(ct) => {
                        return Err(ApiError::UnsupportedMediaType(format!(
                            "POST _search takes application/x-www-form-urlencoded, not {ct}"
                        )))
                    }
                }
                let body = std::str::from_utf8(&req.body)
                    .map_err(|_| ApiError::bad_request("the form body is not UTF-8"))?;
                let mut pairs = req.pairs()?;
                pairs.extend(decode_pairs(body)?);
                crate::search::search(api, ctx, Some(t), pairs, &req.headers, t).await
            }
            ("POST", [t]) => create(api, ctx, t, &req).await,
            ("PUT", [t]) => conditional_update(api, ctx, t, &req).await,
            ("DELETE", [t]) => conditional_delete(api, ctx, t, &req).await,
            ("GET", [t, "_history"]) => {
                history(api, ctx, HistoryScope::Type(t.to_string()), &req).await
            }
            (_, [t, "$validate"]) => crate::capability::validate_op(api, ctx, t, None, &req).await,
            (_, [t, "$export"]) if *t == "Patient" => {
                crate::export::kickoff(api, ctx, &req, Some(("Patient", None))).await
            }
            (_, [t, id, "$validate"]) => {
                crate::capability::validate_op(api, ctx, t, Some(id), &req).await
            }
            ("GET", ["Patient", id, "$everything"]) => {
                crate::search::everything(api, ctx, id, &req).await
            }
            (_, ["Group", id, "$export"]) => {
                crate::export::kickoff(api, ctx, &req, Some(("Group", Some(id)))).await
            }
            (_, [_, _, op]) | (_, [_, op]) if op.starts_with('$') => Err(ApiError::NotImplemented(
                format!("operation {op} is not supported here"),
            )),
            ("GET", [t, id]) => read(api, ctx, t, id, None).await,
            ("PUT", [t, id]) => update(api, ctx, t, id, &req).await,
            ("PATCH", [t, id]) => crate::patch::patch(api, ctx, t, id, &req).await,
            ("DELETE", [t, id]) => delete(api, ctx, t, id, &req).await,
            ("GET", [t, id, "_history"]) => {
                history(
                    api,
                    ctx,
                    HistoryScope::Instance(t.to_string(), id.to_string()),
                    &req,
                )
                .await
            }
            ("GET", [t, id, "_history", v]) => {
                let v: u64 = v.parse().map_err(|_| {
                    ApiError::NotFound(format!("{t}/{id}/_history/{v}: not a version number"))
                })?;
                read(api, ctx, t, id, Some(v)).await
            }
            (m, [_] | [_, _] | [_, _, "_history"] | [_, _, "_history", _] | []) => Err(
                ApiError::MethodNotAllowed(format!("{m} is not allowed on /{}", segs.join("/"))),
            ),
            _ => Err(ApiError::NotFound(format!(
                "no FHIR endpoint at /{}",
                segs.join("/")
            ))),
        }
    })
}

/// Whether `t` is a concrete R4 resource type.
pub(crate) fn is_type(t: &str) -> bool {
    Model::r4()
        .type_def(t)
        .is_some_and(|d| !d.is_abstract && Model::r4().is_resource_type(t))
}

/// Run a store call on the blocking pool.
pub(crate) async fn blocking<T, E, F>(api: &FhirApi, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError>,
    F: FnOnce(&dyn FhirStore) -> Result<T, E> + Send + 'static,
    E: Send + 'static,
{
    let store = api.inner.store.clone();
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))?
        .map_err(Into::into)
}

/// `base/Type/id`.
pub(crate) fn full_url(api: &FhirApi, t: &str, id: &str) -> String {
    format!("{}/{t}/{id}", api.inner.config.base_url)
}

/// `Type/id/_history/v` (absolute).
pub(crate) fn location(api: &FhirApi, s: &Stored) -> String {
    format!(
        "{}/{}/{}/_history/{}",
        api.inner.config.base_url, s.resource_type, s.id, s.version
    )
}

/// The response of a write, honouring `Prefer: return`.
pub(crate) fn write_response(
    api: &FhirApi,
    status: StatusCode,
    stored: &Stored,
    prefer: ReturnPref,
    message: &str,
) -> Response {
    let mut resp = match prefer {
        ReturnPref::Minimal => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = status;
            r
        }
        ReturnPref::Representation => fhir_response(status, &stored.resource),
        ReturnPref::OperationOutcome => fhir_response(status, &info_outcome(message)),
    };
    version_headers(&mut resp, stored, Some(&location(api, stored)));
    resp
}

/// Validate a resource for a write: 422 with the validator's outcome on errors.
pub(crate) fn validate_for_write(resource: &Value) -> Result<(), ApiError> {
    let outcome = vigil_fhir::validate::validate(resource);
    if outcome.has_errors() {
        return Err(ApiError::Unprocessable(outcome.to_json()));
    }
    Ok(())
}

/// Check the body's resourceType against the URL's.
pub(crate) fn check_type_matches(resource: &Value, t: &str) -> Result<(), ApiError> {
    let rt = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if rt != t {
        return Err(ApiError::BadRequest {
            message: format!("the body is a {rt}, the URL names {t}"),
            expression: Some("resourceType".into()),
        });
    }
    Ok(())
}

pub(crate) async fn read(
    api: &FhirApi,
    ctx: &Ctx,
    t: &str,
    id: &str,
    version: Option<u64>,
) -> Result<Response, ApiError> {
    let interaction = if version.is_some() {
        Interaction::Vread
    } else {
        Interaction::Read
    };
    ctx.access.check_type(&interaction, t)?;
    let (tt, ii) = (t.to_string(), id.to_string());
    let outcome = blocking(api, move |s| match version {
        Some(v) => s.vread(&tt, &ii, v),
        None => s.read(&tt, &ii),
    })
    .await?;
    match outcome {
        ReadOutcome::Found(stored) => {
            ctx.access.check_resource(&interaction, &stored.resource)?;
            let mut resp = fhir_response(StatusCode::OK, &stored.resource);
            version_headers(&mut resp, &stored, None);
            Ok(resp)
        }
        ReadOutcome::Gone { version, .. } => Err(ApiError::Gone(format!(
            "{t}/{id} was deleted (version {version})"
        ))),
        ReadOutcome::NotFound => Err(ApiError::NotFound(match version {
            Some(v) => format!("{t}/{id} has no version {v}"),
            None => format!("{t}/{id} not found"),
        })),
    }
}

/// The current version, if live.
pub(crate) async fn current(api: &FhirApi, t: &str, id: &str) -> Result<Option<Stored>, ApiError> {
    let (tt, ii) = (t.to_string(), id.to_string());
    Ok(blocking(api, move |s| s.read(&tt, &ii)).await?.found())
}

async fn create(api: &FhirApi, ctx: &Ctx, t: &str, req: &Req) -> Result<Response, ApiError> {
    check_json_body(&req.headers)?;
    let resource = parse_resource(&req.body)?;
    check_type_matches(&resource, t)?;
    ctx.access.check_type(&Interaction::Create, t)?;
    ctx.access.check_resource(&Interaction::Create, &resource)?;
    let prefer = Prefer::from_headers(&req.headers);
    if let Some(cond) = header_str(&req.headers, "if-none-exist") {
        let found = crate::search::conditional_matches(api, ctx, t, cond).await?;
        match found.as_slice() {
            [] => {}
            [one] => {
                let mut resp =
                    write_response(api, StatusCode::OK, one, prefer.ret, "resource exists");
                resp.headers_mut().remove(axum::http::header::LOCATION);
                return Ok(resp);
            }
            _ => {
                return Err(ApiError::PreconditionFailed(format!(
                    "If-None-Exist {cond} matches more than one {t}"
                )))
            }
        }
    }
    validate_for_write(&resource)?;
    let stored = blocking(api, move |s| s.create(resource)).await?;
    api.notify_write(&stored.resource_type, &stored.id);
    Ok(write_response(
        api,
        StatusCode::CREATED,
        &stored,
        prefer.ret,
        "created",
    ))
}

/// Update (or create) `t/id` with an already parsed body.
pub(crate) async fn put_resource(
    api: &FhirApi,
    ctx: &Ctx,
    t: &str,
    id: &str,
    mut resource: Value,
    if_match: Option<u64>,
    prefer: ReturnPref,
) -> Result<Response, ApiError> {
    check_type_matches(&resource, t)?;
    match resource.get("id") {
        None => resource["id"] = json!(id),
        Some(Value::String(b)) if b == id => {}
        Some(other) => {
            return Err(ApiError::BadRequest {
                message: format!("the body's id {other} does not match the URL's id {id}"),
                expression: Some(format!("{t}.id")),
            })
        }
    }
    ctx.access.check_type(&Interaction::Update, t)?;
    if let Some(old) = current(api, t, id).await? {
        ctx.access
            .check_resource(&Interaction::Update, &old.resource)?;
    }
    ctx.access.check_resource(&Interaction::Update, &resource)?;
    validate_for_write(&resource)?;
    let (tt, ii) = (t.to_string(), id.to_string());
    let (stored, created) = blocking(api, move |s| s.update(&tt, &ii, resource, if_match)).await?;
    api.notify_write(t, id);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(write_response(
        api,
        status,
        &stored,
        prefer,
        if created { "created" } else { "updated" },
    ))
}

async fn update(
    api: &FhirApi,
    ctx: &Ctx,
    t: &str,
    id: &str,
    req: &Req,
) -> Result<Response, ApiError> {
    check_json_body(&req.headers)?;
    let resource = parse_resource(&req.body)?;
    let prefer = Prefer::from_headers(&req.headers);
    put_resource(
        api,
        ctx,
        t,
        id,
        resource,
        if_match(&req.headers)?,
        prefer.ret,
    )
    .await
}

async fn conditional_update(
    api: &FhirApi,
    ctx: &Ctx,
    t: &str,
    req: &Req,
) -> Result<Response, ApiError> {
    if req.query.is_empty() {
        return Err(ApiError::MethodNotAllowed(
            "PUT on a type needs search criteria (conditional update)".into(),
        ));
    }
    check_json_body(&req.headers)?;
    let resource = parse_resource(&req.body)?;
    let prefer = Prefer::from_headers(&req.headers);
    let found = crate::search::conditional_matches(api, ctx, t, &req.query).await?;
    let body_id = resource
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let id = match found.as_slice() {
        [] => body_id.unwrap_or_else(vigil_store::new_id),
        [one] => {
            if body_id.as_deref().is_some_and(|b| b != one.id) {
                return Err(ApiError::bad_request(format!(
                    "the body's id does not match the resource found ({t}/{})",
                    one.id
                )));
            }
            one.id.clone()
        }
        _ => {
            return Err(ApiError::PreconditionFailed(format!(
                "the criteria {} match more than one {t}",
                req.query
            )))
        }
    };
    put_resource(
        api,
        ctx,
        t,
        &id,
        resource,
        if_match(&req.headers)?,
        prefer.ret,
    )
    .await
}

pub(crate) async fn delete_one(
    api: &FhirApi,
    ctx: &Ctx,
    t: &str,
    id: &str,
    if_match: Option<u64>,
    prefer: ReturnPref,
) -> Result<Response, ApiError> {
    ctx.access.check_type(&Interaction::Delete, t)?;
    if let Some(old) = current(api, t, id).await? {
        ctx.access
            .check_resource(&Interaction::Delete, &old.resource)?;
    }
    let (tt, ii) = (t.to_string(), id.to_string());
    let tomb = blocking(api, move |s| s.delete(&tt, &ii, if_match)).await?;
    if tomb.is_some() {
        api.notify_write(t, id);
    }
    let mut resp = match prefer {
        ReturnPref::OperationOutcome => fhir_response(
            StatusCode::OK,
            &info_outcome(if tomb.is_some() {
                "deleted"
            } else {
                "nothing to delete"
            }),
        ),
        _ => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
    };
    if let Some(tomb) = &tomb {
        version_headers(&mut resp, tomb, None);
    }
    Ok(resp)
}

async fn delete(
    api: &FhirApi,
    ctx: &Ctx,
    t: &str,
    id: &str,
    req: &Req,
) -> Result<Response, ApiError> {
    let prefer = Prefer::from_headers(&req.headers);
    delete_one(api, ctx, t, id, if_match(&req.headers)?, prefer.ret).await
}

async fn conditional_delete(
    api: &FhirApi,
    ctx: &Ctx,
    t: &str,
    req: &Req,
) -> Result<Response, ApiError> {
    if req.query.is_empty() {
        return Err(ApiError::MethodNotAllowed(
            "DELETE on a type needs search criteria (conditional delete)".into(),
        ));
    }
    let prefer = Prefer::from_headers(&req.headers);
    let found = crate::search::conditional_matches(api, ctx, t, &req.query).await?;
    match found.as_slice() {
        [] => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            Ok(r)
        }
        [one] => delete_one(api, ctx, t, &one.id, if_match(&req.headers)?, prefer.ret).await,
        _ => Err(ApiError::PreconditionFailed(format!(
            "the criteria {} match more than one {t} (only single conditional delete is supported)",
            req.query
        ))),
    }
}

/// Whether a history entry may be shown to the caller: the type must allow reads, and
/// under restricted (patient/constrained) grants the version itself must pass the
/// resource check (tombstones, which carry no content, are then hidden).
fn visible(ctx: &Ctx, s: &Stored) -> bool {
    if ctx
        .access
        .check_type(&Interaction::History, &s.resource_type)
        .is_err()
    {
        return false;
    }
    match ctx.access.search_constraint(&s.resource_type) {
        Ok(None) => true,
        Ok(Some(_)) => {
            !s.deleted
                && ctx
                    .access
                    .check_resource(&Interaction::History, &s.resource)
                    .is_ok()
        }
        Err(_) => false,
    }
}

async fn history(
    api: &FhirApi,
    ctx: &Ctx,
    scope: HistoryScope,
    req: &Req,
) -> Result<Response, ApiError> {
    match &scope {
        HistoryScope::Instance(t, _) => ctx.access.check_type(&Interaction::History, t)?,
        HistoryScope::Type(t) => ctx.access.check_type(&Interaction::HistoryType, t)?,
        HistoryScope::System => {}
    }
    let mut hq = HistoryQuery::default();
    let mut passthrough = Vec::new();
    for (name, value) in req.pairs()? {
        match name.as_str() {
            "_since" => hq.since = Some(http::parse_instant("_since", &value)?),
            "_at" => hq.at = Some(http::parse_instant("_at", &value)?),
            "_count" => {
                let c: usize = value.parse().map_err(|_| ApiError::BadRequest {
                    message: format!("_count={value} is not a non-negative integer"),
                    expression: Some("_count".into()),
                })?;
                hq.count = Some(c.clamp(1, api.inner.config.max_page_size));
            }
            "_cursor" => {
                hq.cursor = Some(value);
                continue;
            }
            "_format" | "_pretty" => {}
            _ => continue,
        }
        passthrough.push((name, value));
    }
    if hq.count.is_none() {
        hq.count = Some(api.inner.config.default_page_size);
    }
    let path = match &scope {
        HistoryScope::System => "_history".to_string(),
        HistoryScope::Type(t) => format!("{t}/_history"),
        HistoryScope::Instance(t, id) => format!("{t}/{id}/_history"),
    };
    let (scope2, hq2) = (scope.clone(), hq.clone());
    let page: HistoryPage = blocking(api, move |s| s.history(scope2, hq2)).await?;
    if let HistoryScope::Instance(t, id) = &scope {
        if page.entries.is_empty() && hq.cursor.is_none() && hq.since.is_none() && hq.at.is_none() {
            return Err(ApiError::NotFound(format!("{t}/{id} not found")));
        }
    }
    let base = &api.inner.config.base_url;
    let link = |cursor: Option<&str>| {
        let mut pairs = passthrough.clone();
        if let Some(c) = cursor {
            pairs.push(("_cursor".into(), c.to_string()));
        }
        let qs = encode_pairs(&pairs);
        if qs.is_empty() {
            format!("{base}/{path}")
        } else {
            format!("{base}/{path}?{qs}")
        }
    };
    let mut links = vec![json!({"relation": "self", "url": link(hq.cursor.as_deref())})];
    if let Some(next) = &page.next_cursor {
        links.push(json!({"relation": "next", "url": link(Some(next))}));
    }
    let entries: Vec<Value> = page
        .entries
        .iter()
        .filter(|s| visible(ctx, s))
        .map(|s| history_entry(api, s))
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": vigil_store::new_id(),
        "meta": {"lastUpdated": vigil_store::format_rfc3339(vigil_store::now_millis())},
        "type": "history",
        "link": links,
    });
    if !entries.is_empty() {
        bundle["entry"] = json!(entries);
    }
    Ok(fhir_response(StatusCode::OK, &bundle))
}

fn history_entry(api: &FhirApi, s: &Stored) -> Value {
    let (t, id) = (&s.resource_type, &s.id);
    let (method, url, status) = if s.deleted {
        ("DELETE", format!("{t}/{id}"), "204 No Content")
    } else if s.version == 1 {
        ("POST", t.to_string(), "201 Created")
    } else {
        ("PUT", format!("{t}/{id}"), "200 OK")
    };
    let mut e = json!({
        "fullUrl": full_url(api, t, id),
        "request": {"method": method, "url": url},
        "response": {
            "status": status,
            "etag": http::etag(s.version),
            "lastModified": s.last_updated_text,
        },
    });
    if !s.deleted {
        e["resource"] = (*s.resource).clone();
    }
    e
}

/// Percent-encode pairs as a query string.
pub(crate) fn encode_pairs(pairs: &[(String, String)]) -> String {
    use vigil_fhir::search::query::percent_encode;
    pairs
        .iter()
        .map(|(n, v)| format!("{}={}", percent_encode(n), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `GET /_audit`: the recent audit records, for administrators (a `system/` or `user/`
/// scope that may search AuditEvent). Filters: `subject`, `action`, `_count` (newest
/// first).
fn audit_query(api: &FhirApi, ctx: &Ctx, req: &Req) -> Result<Response, ApiError> {
    ctx.access.check_type(&Interaction::Search, "AuditEvent")?;
    if ctx.access.search_constraint("AuditEvent")?.is_some() {
        return Err(ApiError::Forbidden(
            "the audit trail needs an unrestricted AuditEvent search scope".into(),
        ));
    }
    let mut subject = None;
    let mut action = None;
    let mut count = 100usize;
    for (n, v) in req.pairs()? {
        match n.as_str() {
            "subject" => subject = Some(v),
            "action" => action = Some(v),
            "_count" => count = v.parse().unwrap_or(100),
            _ => {}
        }
    }
    let records: Vec<Value> = api
        .inner
        .audit
        .recent()
        .into_iter()
        .rev()
        .filter(|r| subject.as_deref().is_none_or(|s| r.subject == s))
        .filter(|r| action.as_deref().is_none_or(|a| r.action == a))
        .take(count)
        .map(|r| r.to_json())
        .collect();
    Ok(fhir_response(
        StatusCode::OK,
        &json!({ "records": records }),
    ))
}
