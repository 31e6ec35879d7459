//! HTTP handlers: pages, assets and the JSON API.
//!
//! | method | path | answer |
//! | --- | --- | --- |
//! | POST | `/api/login` `{username,password}` | 200 `{user}` + session cookie; 401; 429 when rate-limited |
//! | POST | `/api/logout` | 200, cookie cleared |
//! | GET | `/api/me` | `{user}` |
//! | GET | `/api/worklist` | `{patients:[WorklistRow]}` sorted by risk |
//! | GET | `/api/patients/{id}?since=<unix ms>` | `PatientDetail`; 404 |
//! | GET | `/api/alerts?status=open` | `{alerts:[Alert]}` |
//! | POST | `/api/alerts/{id}/ack` `{note?}` | the `Alert`; 404; 409 |
//! | POST | `/api/templates/test` `{payloads,deviceTemplates?,fhirTemplates?}` | the mapping debugger's result; 501 without templates |
//! | GET | `/api/events` | SSE: `event: update`, data `{"kind":"patient"|"alert",...}` |
//!
//! Errors are `{"error": "..."}`. Every `/api` call but login needs a session (401), and
//! state-changing ones the `X-Requested-With: vigil` header (403).

use crate::assets;
use crate::model::{compare_rows, AlertStatus, CareData, CareDataError, Viewer};
use crate::ratelimit::LoginLimiter;
use crate::users::{now_ms, UserStore};
use crate::{DashboardConfig, DashboardError, CSRF_HEADER, SESSION_COOKIE};
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

#[derive(Clone)]
struct AppState {
    users: Arc<UserStore>,
    data: Arc<dyn CareData>,
    config: Arc<DashboardConfig>,
    limiter: Arc<LoginLimiter>,
}

/// An error answered as `{"error": message}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "not signed in or session expired")
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<DashboardError> for ApiError {
    fn from(e: DashboardError) -> Self {
        ApiError::internal(e)
    }
}

impl From<CareDataError> for ApiError {
    fn from(e: CareDataError) -> Self {
        match e {
            CareDataError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            CareDataError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            CareDataError::Internal(m) => ApiError::internal(m),
            CareDataError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
            CareDataError::Unavailable(m) => ApiError::new(StatusCode::NOT_IMPLEMENTED, m),
        }
    }
}

/// Runs blocking work (SQLite, Argon2, `CareData`) off the async executor.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(ApiError::internal(e)),
    }
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// A request with a valid session.
struct Authed {
    viewer: Viewer,
    expires_at_ms: i64,
}

async fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<Option<Authed>, ApiError> {
    let Some(token) = session_token(headers) else {
        return Ok(None);
    };
    let users = st.users.clone();
    let session = blocking(move || users.lookup_session(&token)).await?;
    Ok(session.map(|s| Authed {
        viewer: s.viewer,
        expires_at_ms: s.expires_at_ms,
    }))
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        authenticate(st, &parts.headers)
            .await?
            .ok_or_else(ApiError::unauthorized)
    }
}

fn cookie(config: &DashboardConfig, value: &str, max_age_secs: u64) -> HeaderValue {
    let secure = if config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let c = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    );
    // The token is hex, so the cookie is always a valid header value.
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn user_json(v: &Viewer) -> serde_json::Value {
    json!({
        "username": v.username,
        "display_name": v.display_name,
        "role": v.role,
        "teams": v.teams,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let LoginBody { username, password } = parse_json(&body)?;
    let username = username.trim().to_string();
    if username.is_empty() || password.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "username and password are required",
        ));
    }
    if let Some(wait) = st.limiter.blocked(&username) {
        let secs = wait.as_secs().max(1);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed sign-in attempts; try again in {secs} s"),
        );
        e.retry_after = Some(secs);
        return Err(e);
    }
    let users = st.users.clone();
    let ttl = st.config.session_ttl;
    let u = username.clone();
    let result = blocking(move || -> Result<_, DashboardError> {
        match users.verify_password(&u, &password)? {
            Some(viewer) => {
                let session = users.create_session(&viewer.username, ttl)?;
                Ok(Some((viewer, session)))
            }
            None => Ok(None),
        }
    })
    .await?;
    let Some((viewer, session)) = result else {
        st.limiter.record_failure(&username);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong username or password",
        ));
    };
    st.limiter.record_success(&username);
    let mut resp = Json(json!({ "user": user_json(&viewer) })).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&st.config, &session.token, ttl.as_secs()),
    );
    Ok(resp)
}

async fn logout(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    // Logging out without a (valid) session is not an error: the cookie is cleared anyway.
    if let Some(token) = session_token(&headers) {
        let users = st.users.clone();
        blocking(move || users.delete_session(&token)).await?;
    }
    let mut resp = Json(json!({ "ok": true })).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&st.config, "", 0));
    Ok(resp)
}

async fn me(auth: Authed) -> Json<serde_json::Value> {
    Json(json!({ "user": user_json(&auth.viewer), "expires_at_ms": auth.expires_at_ms }))
}

async fn worklist(State(st): State<AppState>, auth: Authed) -> Result<Response, ApiError> {
    let data = st.data.clone();
    let mut rows = blocking(move || data.worklist(&auth.viewer)).await?;
    rows.sort_by(compare_rows);
    // A typed wrapper serializes straight to bytes; json!() would first build a Value tree.
    #[derive(serde::Serialize)]
    struct Body {
        patients: Vec<crate::model::WorklistRow>,
    }
    Ok(Json(Body { patients: rows }).into_response())
}

type QueryMap = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn query_map(q: QueryMap) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad query string: {e}")))
}

async fn patient(
    State(st): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let q = query_map(q)?;
    let since = match q.get("since") {
        None => None,
        Some(s) => Some(s.parse::<i64>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("since must be Unix milliseconds, got {s:?}"),
            )
        })?),
    };
    let data = st.data.clone();
    let pid = id.clone();
    match blocking(move || data.patient(&auth.viewer, &pid, since)).await? {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("patient {id:?} not found"),
        )),
    }
}

async fn alerts(
    State(st): State<AppState>,
    auth: Authed,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let q = query_map(q)?;
    let status = match q.get("status").map(String::as_str) {
        None | Some("") | Some("all") => None,
        Some(s) => Some(AlertStatus::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("status must be open, acknowledged, resolved or all; got {s:?}"),
            )
        })?),
    };
    let data = st.data.clone();
    let list = blocking(move || data.alerts(&auth.viewer, status)).await?;
    #[derive(serde::Serialize)]
    struct Body {
        alerts: Vec<crate::model::Alert>,
    }
    Ok(Json(Body { alerts: list }).into_response())
}

#[derive(Deserialize, Default)]
struct AckBody {
    note: Option<String>,
}

async fn acknowledge(
    State(st): State<AppState>,
    auth: Authed,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: AckBody = if body.iter().all(u8::is_ascii_whitespace) {
        AckBody::default()
    } else {
        parse_json(&body)?
    };
    let note = body
        .note
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 2000) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "note too long: at most 2000 characters",
        ));
    }
    let data = st.data.clone();
    let alert = blocking(move || data.acknowledge(&auth.viewer, &id, note.as_deref())).await?;
    Ok(Json(alert).into_response())
}

/// The mapping debugger: any signed-in user may run payloads through templates; nothing
/// is stored.
async fn test_templates(
    State(st): State<AppState>,
    _auth: Authed,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: serde_json::Value = parse_json(&body)?;
    let data = st.data.clone();
    let result = blocking(move || data.test_templates(request)).await?;
    Ok(Json(result).into_response())
}

struct EventState {
    rx: tokio::sync::broadcast::Receiver<crate::model::Update>,
    data: Arc<dyn CareData>,
    viewer: Arc<Viewer>,
    expires_at_ms: i64,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

/// The next event this viewer may see; `None` ends the stream.
async fn next_event(st: &mut EventState) -> Option<Event> {
    loop {
        let received = match &mut st.shutdown {
            Some(shutdown) => tokio::select! {
                r = st.rx.recv() => r,
                _ = shutdown.wait_for(|stop| *stop) => return None,
            },
            None => st.rx.recv().await,
        };
        let update = match received {
            Ok(u) => u,
            // Missed events: tell the client to re-fetch everything.
            Err(RecvError::Lagged(_)) => {
                return Some(
                    Event::default()
                        .event("update")
                        .data(r#"{"kind":"resync"}"#),
                );
            }
            Err(RecvError::Closed) => return None,
        };
        // An expired session ends the stream; the client then finds out on re-connect.
        if now_ms() >= st.expires_at_ms {
            return None;
        }
        let (d, v, pid) = (
            st.data.clone(),
            st.viewer.clone(),
            update.patient_id().to_string(),
        );
        let visible = tokio::task::spawn_blocking(move || d.can_view(&v, &pid))
            .await
            .unwrap_or(false);
        if visible {
            if let Ok(ev) = Event::default().event("update").json_data(&update) {
                return Some(ev);
            }
        }
    }
}

async fn events(
    State(st): State<AppState>,
    auth: Authed,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let state = EventState {
        rx: st.data.subscribe(),
        data: st.data.clone(),
        viewer: Arc::new(auth.viewer),
        expires_at_ms: auth.expires_at_ms,
        shutdown: st.config.shutdown.clone(),
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        next_event(&mut state).await.map(|ev| (Ok(ev), state))
    });
    Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(st.config.keep_alive)
            .text("keep-alive"),
    )
}

async fn api_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such API endpoint")
}

async fn api_method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

/// Rejects state-changing API calls without the CSRF header.
async fn csrf_guard(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let ok = safe
        || req
            .headers()
            .get(CSRF_HEADER.0)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(CSRF_HEADER.1.as_bytes()));
    if ok {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "missing header X-Requested-With: vigil (CSRF protection)",
        )
        .into_response()
    }
}

/// Adds the headers every response carries: no caching of API data, a strict CSP.
async fn security_headers(req: Request, next: Next) -> Response {
    let is_api = req.uri().path().starts_with("/api/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if is_api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// `/` and `/patients/{id}`: the app with a session, the login page without.
async fn page(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let signed_in = matches!(authenticate(&st, &headers).await, Ok(Some(_)));
    let html = if signed_in {
        assets::APP_HTML
    } else {
        assets::LOGIN_HTML
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match assets::get(&name) {
        Some((mime, body)) => (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

pub(crate) fn router(
    users: Arc<UserStore>,
    data: Arc<dyn CareData>,
    config: DashboardConfig,
) -> Router {
    let limiter = Arc::new(LoginLimiter::new(
        config.login_max_failures,
        config.login_window,
    ));
    let state = AppState {
        users,
        data,
        config: Arc::new(config),
        limiter,
    };
    let api = Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/worklist", get(worklist))
        .route("/patients/{id}", get(patient))
        .route("/alerts", get(alerts))
        .route("/alerts/{id}/ack", post(acknowledge))
        .route("/events", get(events))
        .route("/templates/test", post(test_templates))
        .fallback(api_not_found)
        .method_not_allowed_fallback(api_method_not_allowed)
        .layer(middleware::from_fn(csrf_guard));
    Router::new()
        .route("/", get(page))
        .route("/patients/{id}", get(page))
        .route("/mapping", get(page))
        .route("/assets/{name}", get(asset))
        .nest("/api", api)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}
