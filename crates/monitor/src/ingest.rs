//! `POST /ingest`: device readings into the durable event log.
//!
//! The body is one JSON message, a JSON array of messages, or NDJSON (any sequence of
//! whitespace-separated JSON objects). Each message is wrapped in the IoT Hub-style
//! envelope the MedTech templates expect (`Body`, `Properties`, `SystemProperties`),
//! with the *authenticated* device id stamped into `SystemProperties` — a device can
//! only ever post as itself — and appended to the `ingest` topic. The append is
//! fsynced before the answer, so a 2xx means the reading survives a crash. A
//! `messageId` in a message (or an `Idempotency-Key` header for a one-message body)
//! makes retries idempotent: the same id from the same device is accepted once.

use crate::devices::{DeviceIdentity, DeviceRegistry};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use vigil_eventlog::{AppendRecord, Appended, EventLog};

/// The topic device messages are appended to.
pub const INGEST_TOPIC: &str = "ingest";
/// The envelope property carrying the device-supplied message id.
pub const MESSAGE_ID_PROPERTY: &str = "vigil-message-id";
/// The SystemProperties field carrying the authenticated device id (IoT Hub's name).
pub const DEVICE_ID_PROPERTY: &str = "iothub-connection-device-id";
/// The SystemProperties field carrying the enqueue time (IoT Hub's name).
pub const ENQUEUED_TIME_PROPERTY: &str = "iothub-enqueuedtime";

/// Ingest limits.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Most messages in one request.
    pub max_messages: usize,
    /// Longest accepted message id.
    pub max_message_id_len: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_body_bytes: 1024 * 1024,
            max_messages: 1_000,
            max_message_id_len: 128,
        }
    }
}

/// What the ingest handler needs.
#[derive(Clone)]
pub struct IngestState {
    /// Device authentication.
    pub registry: Arc<DeviceRegistry>,
    /// The durable log.
    pub log: Arc<dyn EventLog>,
    /// Limits.
    pub limits: IngestLimits,
    /// Counters.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The router with `POST /ingest`.
pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/ingest", post(ingest))
        .with_state(state)
}

/// An ingest rejection: a status and a reason for the device.
#[derive(Debug)]
pub struct IngestError {
    status: StatusCode,
    message: String,
    index: Option<usize>,
}

impl IngestError {
    fn new(status: StatusCode, message: impl Into<String>) -> IngestError {
        IngestError {
            status,
            message: message.into(),
            index: None,
        }
    }

    fn at(mut self, index: usize) -> IngestError {
        self.index = Some(index);
        self
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message});
        if let Some(i) = self.index {
            body["index"] = json!(i);
        }
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(
                    "Bearer realm=\"vigil-ingest\", Basic realm=\"vigil-ingest\"",
                ),
            );
        }
        response
    }
}

/// Splits a body into messages: one object, an array of objects, or NDJSON.
pub fn parse_messages(
    body: &[u8],
    limits: &IngestLimits,
) -> Result<Vec<Map<String, Value>>, IngestError> {
    let mut values = Vec::new();
    for (i, item) in serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .enumerate()
    {
        let value = item.map_err(|e| {
            IngestError::new(
                StatusCode::BAD_REQUEST,
                format!("message {i} is not valid JSON: {e}"),
            )
            .at(i)
        })?;
        values.push(value);
        if values.len() > limits.max_messages {
            break;
        }
    }
    if values.len() == 1 && values[0].is_array() {
        if let Some(Value::Array(items)) = values.pop() {
            values = items;
        }
    }
    if values.is_empty() {
        return Err(IngestError::new(
            StatusCode::BAD_REQUEST,
            "the body holds no message",
        ));
    }
    if values.len() > limits.max_messages {
        return Err(IngestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "more than {} messages in one request; split it",
                limits.max_messages
            ),
        ));
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(m) => Ok(m),
            other => Err(IngestError::new(
                StatusCode::BAD_REQUEST,
                format!("message {i} is a JSON {}, not an object", json_kind(&other)),
            )
            .at(i)),
        })
        .collect()
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Wraps a message in the envelope the device templates read.
pub fn envelope(
    device: &DeviceIdentity,
    message: Map<String, Value>,
    message_id: Option<&str>,
    now_ms: i64,
) -> Value {
    let mut properties = Map::new();
    if let Some(id) = message_id {
        properties.insert(MESSAGE_ID_PROPERTY.into(), Value::String(id.to_string()));
    }
    json!({
        "Body": Value::Object(message),
        "Properties": properties,
        "SystemProperties": {
            DEVICE_ID_PROPERTY: device.device_id,
            ENQUEUED_TIME_PROPERTY: crate::time::format_rfc3339(now_ms),
            "iothub-message-source": "Telemetry",
        }
    })
}

async fn ingest(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let registry = state.registry.clone();
    let device =
        tokio::task::spawn_blocking(move || registry.authenticate(authorization.as_deref()))
            .await
            .map_err(|e| {
                IngestError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("authentication task failed: {e}"),
                )
            })?
            .map_err(|e| IngestError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let device = match device {
        Ok(d) => d,
        Err(failure) => {
            state.metrics.ingest_rejected("unauthorized");
            return Err(IngestError::new(
                StatusCode::UNAUTHORIZED,
                failure.message(),
            ));
        }
    };
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let ok = mime == "application/json"
            || mime == "application/x-ndjson"
            || mime == "application/ndjson"
            || mime == "application/fhir+json"
            || mime.ends_with("+json");
        if !ok {
            state.metrics.ingest_rejected("content-type");
            return Err(IngestError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type {mime} is not accepted; send application/json or application/x-ndjson"),
            ));
        }
    }
    let bytes = axum::body::to_bytes(body, state.limits.max_body_bytes)
        .await
        .map_err(|_| {
            state.metrics.ingest_rejected("too-large");
            IngestError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is larger than {} bytes; split it",
                    state.limits.max_body_bytes
                ),
            )
        })?;
    let messages = parse_messages(&bytes, &state.limits)
        .inspect_err(|_| state.metrics.ingest_rejected("invalid"))?;
    let header_id = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let single = messages.len() == 1;
    let now = crate::time::now_millis();
    let mut records = Vec::with_capacity(messages.len());
    for (i, message) in messages.into_iter().enumerate() {
        let message_id = match message.get("messageId") {
            None | Some(Value::Null) => header_id.clone().filter(|_| single),
            Some(Value::String(s))
                if !s.is_empty() && s.len() <= state.limits.max_message_id_len =>
            {
                Some(s.clone())
            }
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                state.metrics.ingest_rejected("invalid");
                return Err(IngestError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "message {i}: messageId must be a non-empty string of at most {} characters",
                        state.limits.max_message_id_len
                    ),
                )
                .at(i));
            }
        };
        let key = message_id
            .as_ref()
            .map(|m| format!("{}/{m}", device.device_id));
        let env = envelope(&device, message, message_id.as_deref(), now);
        let payload = serde_json::to_vec(&env)
            .map_err(|e| IngestError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        records.push(AppendRecord {
            key,
            timestamp_ms: now,
            payload,
        });
    }
    let log = state.log.clone();
    let appended = tokio::task::spawn_blocking(move || log.append(INGEST_TOPIC, records))
        .await
        .map_err(|e| {
            IngestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("append task failed: {e}"),
            )
        })?
        .map_err(|e| {
            IngestError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the reading was not stored ({e}); retry later"),
            )
        })?;
    let mut accepted = 0u64;
    let mut duplicates = 0u64;
    let results: Vec<Value> = appended
        .iter()
        .map(|a| match a {
            Appended::New(offset) => {
                accepted += 1;
                json!({"offset": offset, "duplicate": false})
            }
            Appended::Duplicate(offset) => {
                duplicates += 1;
                json!({"offset": offset, "duplicate": true})
            }
        })
        .collect();
    state
        .metrics
        .ingest_accepted(&device.kind, accepted, duplicates);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "device": device.device_id,
            "accepted": accepted,
            "duplicates": duplicates,
            "results": results,
        })),
    )
        .into_response())
}
