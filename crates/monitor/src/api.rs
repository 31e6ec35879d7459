//! The monitoring API for services and operators, authenticated with the server's
//! bearer JWTs (`vigil token issue`) and authorized by SMART scopes on the FHIR types
//! involved: devices need `Device` permissions, alerts `Flag` permissions, the
//! dead-letter store unrestricted `Observation` search.
//!
//! - `POST /v1/devices {"patient": id, "kind": k}` → 201 with the device id and its
//!   secret (shown once); `GET /v1/devices[?patient=]`; `DELETE /v1/devices/{id}`
//!   revokes the credential.
//! - `GET /v1/alerts[?status=open|acknowledged|resolved][&patient=]`;
//!   `POST /v1/alerts/{id}/ack {"note": ...}` (the token's subject is recorded).
//! - `GET /v1/dead-letters[?from=offset][&limit=n]`.

use crate::db::{AlertRow, AlertState, DbError};
use crate::pipeline::{Change, DEAD_LETTER_TOPIC};
use crate::Monitor;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use vigil_auth::{AccessContext, Authorizer, Interaction, SigningKey};

/// An API error: status and message.
#[derive(Debug)]
pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({"error": self.1}))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound(m) => ApiError(StatusCode::NOT_FOUND, m),
            DbError::Conflict(m) => ApiError(StatusCode::CONFLICT, m),
            DbError::Sqlite(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) monitor: Arc<Monitor>,
    pub(crate) key: Arc<SigningKey>,
}

/// The `/v1` router.
pub fn router(monitor: Arc<Monitor>, key: Arc<SigningKey>) -> Router {
    Router::new()
        .route("/v1/devices", post(add_device).get(list_devices))
        .route("/v1/devices/{id}", delete(revoke_device))
        .route("/v1/alerts", get(list_alerts))
        .route("/v1/alerts/{id}/ack", post(ack_alert))
        .route("/v1/dead-letters", get(dead_letters))
        .with_state(ApiState { monitor, key })
}

pub(crate) struct Caller {
    pub(crate) subject: String,
    pub(crate) access: AccessContext,
}

pub(crate) fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = vigil_auth::bearer_token(header)
        .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e.to_string()))?;
    let claims = state
        .key
        .verify_now(token)
        .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e.to_string()))?;
    let access = AccessContext::from_claims(&claims)
        .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e.to_string()))?;
    Ok(Caller {
        subject: claims.sub,
        access,
    })
}

pub(crate) fn allow(
    caller: &Caller,
    interaction: Interaction,
    resource_type: &str,
) -> Result<(), ApiError> {
    caller
        .access
        .check_type(&interaction, resource_type)
        .map_err(|d| ApiError(StatusCode::FORBIDDEN, d.to_string()))
}

/// The patient a caller is restricted to, if any (patient/ scopes).
pub(crate) fn patient_restriction(
    caller: &Caller,
    resource_type: &str,
) -> Result<Option<String>, ApiError> {
    match caller.access.search_constraint(resource_type) {
        Ok(None) => Ok(None),
        Ok(Some(_)) => Ok(Some(
            caller.access.patient().unwrap_or_default().to_string(),
        )),
        Err(d) => Err(ApiError(StatusCode::FORBIDDEN, d.to_string())),
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDevice {
    patient: String,
    kind: String,
}

async fn add_device(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers)?;
    allow(&caller, Interaction::Create, "Device")?;
    let req: NewDevice = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"patient\": \"<Patient id>\", \"kind\": \"<device kind>\"}}: {e}"),
        )
    })?;
    let patient = req
        .patient
        .strip_prefix("Patient/")
        .unwrap_or(&req.patient)
        .to_string();
    if let Some(p) = patient_restriction(&caller, "Device")? {
        if p != patient {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "the token's patient context does not cover this patient".into(),
            ));
        }
    }
    let monitor = state.monitor.clone();
    let registered = blocking(move || {
        monitor
            .register_device(&patient, &req.kind)
            .map_err(|e| match e {
                crate::devices::DeviceError::PatientNotFound(_) => {
                    ApiError(StatusCode::NOT_FOUND, e.to_string())
                }
                crate::devices::DeviceError::InvalidKind(_) => {
                    ApiError(StatusCode::BAD_REQUEST, e.to_string())
                }
                other => ApiError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
            })
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/fhir/Device/{}", registered.device.id),
        )],
        Json(json!({
            "device": registered.device.id,
            "patient": registered.device.patient_id,
            "kind": registered.device.kind,
            "secret": registered.secret,
            "credential": registered.credential(),
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
struct DeviceFilter {
    patient: Option<String>,
}

async fn list_devices(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(filter): Query<DeviceFilter>,
) -> Result<Json<Value>, ApiError> {
    let caller = authenticate(&state, &headers)?;
    allow(&caller, Interaction::Search, "Device")?;
    let patient = match patient_restriction(&caller, "Device")? {
        Some(p) => Some(p),
        None => filter.patient,
    };
    let monitor = state.monitor.clone();
    let rows = blocking(move || Ok(monitor.db.devices(patient.as_deref())?)).await?;
    let devices: Vec<Value> = rows
        .into_iter()
        .map(|d| {
            json!({"device": d.id, "patient": d.patient_id, "kind": d.kind,
                   "registered": crate::time::format_rfc3339(d.created_ms),
                   "revoked": d.revoked_ms.map(crate::time::format_rfc3339)})
        })
        .collect();
    Ok(Json(json!({ "devices": devices })))
}

async fn revoke_device(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = authenticate(&state, &headers)?;
    allow(&caller, Interaction::Delete, "Device")?;
    if patient_restriction(&caller, "Device")?.is_some() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "revoking devices needs a user/ or system/ scope".into(),
        ));
    }
    let monitor = state.monitor.clone();
    blocking(move || Ok(monitor.registry.revoke(&id, crate::time::now_millis())?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The JSON form of an alert.
pub fn alert_json(a: &AlertRow) -> Value {
    json!({
        "id": a.id,
        "patient": a.patient_id,
        "flag": format!("Flag/{}", a.flag_id),
        "status": a.state.as_str(),
        "openedAt": crate::time::format_rfc3339(a.opened_ms),
        "score": a.score,
        "band": a.band,
        "reason": a.reason,
        "acknowledgedBy": a.ack_by,
        "acknowledgedAt": a.ack_ms.map(crate::time::format_rfc3339),
        "note": a.note,
        "resolvedAt": a.resolved_ms.map(crate::time::format_rfc3339),
    })
}

#[derive(Deserialize)]
struct AlertFilter {
    status: Option<String>,
    patient: Option<String>,
}

async fn list_alerts(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(filter): Query<AlertFilter>,
) -> Result<Json<Value>, ApiError> {
    let caller = authenticate(&state, &headers)?;
    allow(&caller, Interaction::Search, "Flag")?;
    let status = match filter.status.as_deref() {
        None => None,
        Some("open") => Some(AlertState::Open),
        Some("acknowledged") => Some(AlertState::Acknowledged),
        Some("resolved") => Some(AlertState::Resolved),
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("unknown status {other:?}: use open, acknowledged or resolved"),
            ))
        }
    };
    let patient = match patient_restriction(&caller, "Flag")? {
        Some(p) => Some(p),
        None => filter.patient,
    };
    let monitor = state.monitor.clone();
    let rows = blocking(move || Ok(monitor.db.alerts(patient.as_deref(), status, 1000)?)).await?;
    Ok(Json(
        json!({ "alerts": rows.iter().map(alert_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AckBody {
    note: Option<String>,
}

async fn ack_alert(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = authenticate(&state, &headers)?;
    allow(&caller, Interaction::Update, "Flag")?;
    let ack: AckBody = if body.iter().all(u8::is_ascii_whitespace) {
        AckBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"note\": \"...\"}}: {e}"),
            )
        })?
    };
    let restriction = patient_restriction(&caller, "Flag")?;
    let monitor = state.monitor.clone();
    let who = caller.subject.clone();
    let row = blocking(move || {
        let current = monitor
            .db
            .alert(&id)?
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("alert {id} not found")))?;
        if restriction.is_some_and(|p| p != current.patient_id) {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("alert {id} not found"),
            ));
        }
        let row =
            monitor
                .db
                .acknowledge(&id, &who, ack.note.as_deref(), crate::time::now_millis())?;
        monitor.metrics.alert_acknowledged();
        monitor.pipeline.notify(Change::Alert {
            alert_id: row.id.clone(),
            patient_id: row.patient_id.clone(),
        });
        Ok(row)
    })
    .await?;
    Ok(Json(alert_json(&row)))
}

#[derive(Deserialize)]
struct Paging {
    from: Option<u64>,
    limit: Option<usize>,
}

async fn dead_letters(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(p): Query<Paging>,
) -> Result<Json<Value>, ApiError> {
    let caller = authenticate(&state, &headers)?;
    allow(&caller, Interaction::Search, "Observation")?;
    if patient_restriction(&caller, "Observation")?.is_some() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "the dead-letter store needs a user/ or system/ scope".into(),
        ));
    }
    let monitor = state.monitor.clone();
    let from = p.from.unwrap_or(0);
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let (records, end) = blocking(move || {
        let log = &monitor.log;
        let map =
            |e: vigil_eventlog::LogError| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        Ok((
            log.read(DEAD_LETTER_TOPIC, from, limit).map_err(map)?,
            log.end_offset(DEAD_LETTER_TOPIC).map_err(map)?,
        ))
    })
    .await?;
    let next = records.last().map(|r| r.offset + 1);
    let entries: Vec<Value> = records
        .into_iter()
        .map(|r| {
            let mut v: Value = serde_json::from_slice(&r.payload).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("offset".into(), json!(r.offset));
            }
            v
        })
        .collect();
    Ok(Json(
        json!({"deadLetters": entries, "next": next, "end": end}),
    ))
}
