//! The mapping debugger and template management.
//!
//! - [`test_payloads`] runs device payloads through templates without storing anything and
//!   builds the debugger's JSON (used by `vigil templates test`, `POST /v1/templates/test`
//!   and the dashboard's mapping-debugger page, so all three answer alike).
//! - `POST /v1/templates/test` `{deviceTemplates?, fhirTemplates?, payloads: [..], deviceId?}`
//!   (any valid token): the debugger over the given templates, or the ones in force.
//! - `GET /v1/templates` (`Device` read): the templates in force, their version and when
//!   they were loaded.
//! - `PUT /v1/templates` `{deviceTemplates, fhirTemplates}` (`Device` write, `user/` or
//!   `system/`): validated first (400 with every error located; the old ones stay), then
//!   put in force as the next version and saved under `DATA_DIR/templates/v{N}/` so that
//!   [`latest_saved_templates`] finds them at the next start.
//!
//! Template management needs the data directory, which the [`Monitor`] does not keep:
//! the server calls [`enable_management`] once after assembling the monitor. Until then
//! `PUT` answers 503.

use crate::api::{allow, authenticate, blocking, ApiError, ApiState};
use crate::ingest::{DEVICE_ID_PROPERTY, ENQUEUED_TIME_PROPERTY};
use crate::pipeline::Templates;
use crate::time::{format_rfc3339, now_millis};
use crate::{Monitor, MonitorError};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use vigil_auth::{Interaction, ScopeContext, SigningKey};
use vigil_medtech::{
    DeviceTemplateSet, FhirTemplateSet, Identity, Measurement, NormalizeError, ObservationChange,
    TemplateErrors,
};

pub use vigil_medtech::check_mappings;

/// Device id put in the envelope of a bare payload when none is given.
pub const DEFAULT_TEST_DEVICE: &str = "test-device";
/// Patient id of the debugger's Observations when the measurement names none.
pub const UNKNOWN_PATIENT: &str = "unknown-patient";
/// File name of the device templates in a saved version directory.
pub const DEVICE_FILE: &str = "devicecontent.json";
/// File name of the FHIR templates in a saved version directory.
pub const FHIR_FILE: &str = "fhirmapping.json";

/// One payload for the debugger: a name to show and its text or parsed JSON.
pub struct TestPayload {
    /// File name or `payloads[i]`.
    pub name: String,
    /// The payload: a device body, or a full envelope (an object with `Body`).
    pub payload: Result<Value, String>,
}

/// Template errors of one template text, as JSON (`template` is `device` or `fhir`).
pub fn template_errors_json(template: &str, errors: &TemplateErrors) -> Vec<Value> {
    errors
        .errors
        .iter()
        .map(|e| {
            json!({
                "template": template,
                "path": e.path,
                "line": e.line,
                "column": e.column,
                "field": e.field,
                "message": e.message,
                "location": format!("{}:{}", e.line, e.column),
            })
        })
        .collect()
}

/// Parses both template texts, collecting every error of both at once.
pub fn parse_templates(
    device: &str,
    fhir: Option<&str>,
) -> Result<(DeviceTemplateSet, Option<FhirTemplateSet>), Vec<Value>> {
    let mut errors = Vec::new();
    let d = DeviceTemplateSet::parse(device)
        .map_err(|e| errors.extend(template_errors_json("device", &e)))
        .ok();
    let f = match fhir {
        Some(text) => FhirTemplateSet::parse(text)
            .map_err(|e| errors.extend(template_errors_json("fhir", &e)))
            .ok(),
        None => None,
    };
    match d {
        Some(d) if errors.is_empty() => Ok((d, f)),
        _ => Err(errors),
    }
}

/// Wraps a bare device body in the envelope the pipeline builds at ingest; an object that
/// already has `Body` is taken as an envelope.
pub fn wrap_payload(payload: Value, device_id: &str, now_ms: i64) -> Value {
    if payload.get("Body").is_some() {
        return payload;
    }
    json!({
        "Body": payload,
        "Properties": {},
        "SystemProperties": {
            DEVICE_ID_PROPERTY: device_id,
            ENQUEUED_TIME_PROPERTY: format_rfc3339(now_ms),
            "iothub-message-source": "Telemetry",
        }
    })
}

fn measurement_json(m: &Measurement) -> Value {
    json!({
        "type": m.type_name,
        "occurrenceTime": m.occurrence_time,
        "deviceId": m.device_id,
        "patientId": m.patient_id,
        "encounterId": m.encounter_id,
        "correlationId": m.correlation_id,
        "properties": m.properties.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
    })
}

fn normalize_error_json(e: &NormalizeError) -> Value {
    let mut v = json!({"kind": e.kind(), "errorType": e.error_type(), "message": e.to_string()});
    let (index, template, field, expression) = match e {
        NormalizeError::InvalidDataFormat { .. } => return v,
        NormalizeError::IncompatibleData {
            template,
            template_index,
            field,
            expression,
            ..
        } => (*template_index, template, Some(field), expression),
        NormalizeError::TemplateExpression {
            template,
            template_index,
            expression,
            ..
        } => (*template_index, template, None, expression),
    };
    // The runtime location: which template (and field) of the device collection failed.
    let path = match field {
        Some(f) => format!("$.template[{index}].template ({f})"),
        None => format!("$.template[{index}].template"),
    };
    v["location"] = json!({
        "templates": "device",
        "path": path,
        "templateIndex": index,
        "typeName": template,
        "field": field,
        "expression": expression,
    });
    v
}

/// Runs each payload through the templates, storing nothing: the normalized measurements,
/// with FHIR templates the Observations that would be written (patient from the
/// measurement or [`UNKNOWN_PATIENT`], device from the measurement), and every error with
/// its kind and location. `ok` is false when some payload had an error.
pub fn test_payloads(
    device: &DeviceTemplateSet,
    fhir: Option<&FhirTemplateSet>,
    payloads: Vec<TestPayload>,
    device_id: &str,
    now_ms: i64,
) -> Value {
    // Out-of-range clocks only affect `issued`; fall back to the epoch rather than fail.
    let issued =
        vigil_medtech::Instant::from_unix_millis(now_ms).unwrap_or(vigil_medtech::Instant(0));
    let mut ok = true;
    let mut results = Vec::with_capacity(payloads.len());
    for p in payloads {
        let mut errors = Vec::new();
        let mut measurements = Vec::new();
        let mut observations = Vec::new();
        match p.payload {
            Err(message) => errors.push(json!({
                "kind": "InvalidDataFormatException",
                "errorType": "DeviceMessageError",
                "message": message,
            })),
            Ok(payload) => {
                let envelope = wrap_payload(payload, device_id, now_ms);
                match device.normalize(&envelope) {
                    Err(e) => errors.push(normalize_error_json(&e)),
                    Ok(ms) if ms.is_empty() => errors.push(json!({
                        "kind": "TemplateNotFound",
                        "errorType": "DeviceMessageError",
                        "message": "no device template matched the message (check its \"type\" against the device templates' typeMatchExpression)",
                    })),
                    Ok(ms) => measurements = ms,
                }
            }
        }
        if let Some(fhir) = fhir {
            let grouping = vigil_medtech::group(&measurements, fhir);
            for r in &grouping.rejected {
                errors.push(json!({
                    "kind": r.error.kind(),
                    "errorType": "FhirTemplateError",
                    "message": r.error.to_string(),
                    "location": {"templates": "fhir", "measurement": r.index},
                }));
            }
            for g in &grouping.groups {
                let identity = Identity {
                    patient_id: g
                        .patient_id
                        .clone()
                        .unwrap_or_else(|| UNKNOWN_PATIENT.to_string()),
                    device_id: g.device_id.clone(),
                    encounter_id: g.encounter_id.clone(),
                };
                match fhir.observation_for_at(g, &identity, None, issued) {
                    Ok(ObservationChange::Create(mut o) | ObservationChange::Update(mut o)) => {
                        o["id"] = Value::String(vigil_medtech::observation_id(g, &identity));
                        observations.push(o);
                    }
                    Ok(ObservationChange::Unchanged) => {}
                    Err(e) => errors.push(json!({
                        "kind": e.kind(),
                        "errorType": "FhirTemplateError",
                        "message": e.to_string(),
                        "location": {"templates": "fhir", "type": g.type_name},
                    })),
                }
            }
        }
        ok &= errors.is_empty();
        let mut r = Map::new();
        r.insert("payload".into(), json!(p.name));
        r.insert(
            "measurements".into(),
            measurements.iter().map(measurement_json).collect(),
        );
        if fhir.is_some() {
            r.insert("observations".into(), Value::Array(observations));
        }
        r.insert("errors".into(), Value::Array(errors));
        results.push(Value::Object(r));
    }
    json!({"ok": ok, "results": results})
}

/// Template text from a request field: a JSON string is the text itself (so error
/// locations refer to it), anything else is the template as JSON (locations then refer to
/// its pretty-printed form).
fn template_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

/// The debugger over a request `{deviceTemplates?, fhirTemplates?, payloads: [..],
/// deviceId?}`; templates not given are the ones in force. Template errors are answered
/// as `{"ok": false, "templateErrors": [...]}`; a malformed request is `Err`.
pub fn test_request(request: &Value, in_force: &Templates) -> Result<Value, String> {
    let obj = request
        .as_object()
        .ok_or("expected {\"payloads\": [...], \"deviceTemplates\"?, \"fhirTemplates\"?}")?;
    if let Some(k) = obj.keys().find(|k| {
        !matches!(
            k.as_str(),
            "payloads" | "deviceTemplates" | "fhirTemplates" | "deviceId"
        )
    }) {
        return Err(format!(
            "unknown field {k:?}: expected payloads, deviceTemplates, fhirTemplates, deviceId"
        ));
    }
    let payloads = obj
        .get("payloads")
        .and_then(Value::as_array)
        .ok_or("\"payloads\" must be an array of device payloads")?;
    if payloads.is_empty() {
        return Err("\"payloads\" is empty: give at least one device payload".into());
    }
    let device_id = match obj.get("deviceId") {
        None | Some(Value::Null) => DEFAULT_TEST_DEVICE,
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        Some(_) => return Err("\"deviceId\" must be a non-empty string".into()),
    };
    let given = |k: &str| obj.get(k).filter(|v| !v.is_null()).map(template_text);
    let device_text = given("deviceTemplates");
    let fhir_text = given("fhirTemplates");
    let mut errors = Vec::new();
    let device = match &device_text {
        Some(t) => DeviceTemplateSet::parse(t)
            .map_err(|e| errors.extend(template_errors_json("device", &e)))
            .ok(),
        None => None,
    };
    let fhir = match &fhir_text {
        Some(t) => FhirTemplateSet::parse(t)
            .map_err(|e| errors.extend(template_errors_json("fhir", &e)))
            .ok(),
        None => None,
    };
    if !errors.is_empty() {
        return Ok(json!({"ok": false, "templateErrors": errors}));
    }
    let device = device.as_ref().unwrap_or(&in_force.device);
    let fhir = fhir.as_ref().unwrap_or(&in_force.fhir);
    let payloads = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| TestPayload {
            name: format!("payloads[{i}]"),
            payload: Ok(p.clone()),
        })
        .collect();
    let mut out = test_payloads(device, Some(fhir), payloads, device_id, now_millis());
    out["warnings"] = json!(vigil_medtech::check_mappings(device, fhir));
    Ok(out)
}

/// The newest complete saved version under `DATA_DIR/templates/`: its number and the
/// paths of its device and FHIR template files. `vigil serve` loads it at start.
pub fn latest_saved_templates(data_dir: &Path) -> Option<(u64, PathBuf, PathBuf)> {
    let dir = data_dir.join("templates");
    std::fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let n: u64 = name.to_str()?.strip_prefix('v')?.parse().ok()?;
            let d = e.path().join(DEVICE_FILE);
            let f = e.path().join(FHIR_FILE);
            (d.is_file() && f.is_file()).then_some((n, d, f))
        })
        .max_by_key(|(n, _, _)| *n)
}

/// The templates in force as management sees them: texts, version and load time.
#[derive(Debug, Clone)]
pub struct TemplateVersion {
    /// 0 for the templates given at start (files or defaults), N for a saved `v{N}`.
    pub version: u64,
    /// The device template text.
    pub device: String,
    /// The FHIR template text.
    pub fhir: String,
    /// When they were put in force (Unix ms).
    pub loaded_ms: i64,
}

/// The templates to start with: the latest version saved under `data_dir` if there is
/// one, otherwise the given files (or Vigil's defaults), as version 0.
pub fn startup_templates(
    data_dir: &Path,
    device: Option<&Path>,
    fhir: Option<&Path>,
) -> Result<(Templates, TemplateVersion), MonitorError> {
    let (version, device, fhir) = match latest_saved_templates(data_dir) {
        Some((n, d, f)) => (n, Some(d), Some(f)),
        None => (
            0,
            device.map(Path::to_path_buf),
            fhir.map(Path::to_path_buf),
        ),
    };
    let read = |p: &Option<PathBuf>, default: &str| match p {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| MonitorError::Templates(format!("cannot read {}: {e}", p.display()))),
        None => Ok(default.to_string()),
    };
    let device_text = read(&device, vigil_medtech::default_device_templates())?;
    let fhir_text = read(&fhir, vigil_medtech::default_fhir_templates())?;
    let templates = crate::load_templates(device.as_deref(), fhir.as_deref())?;
    Ok((
        templates,
        TemplateVersion {
            version,
            device: device_text,
            fhir: fhir_text,
            loaded_ms: now_millis(),
        },
    ))
}

struct Managed {
    data_dir: Option<PathBuf>,
    current: TemplateVersion,
}

type Registry = Mutex<Vec<(Weak<crate::Pipeline>, Arc<Mutex<Managed>>)>>;

// Keyed by pipeline so several monitors in one process (tests) stay apart without a
// field on `Monitor`.
fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Vec::new()))
}

fn managed(monitor: &Monitor) -> Arc<Mutex<Managed>> {
    let mut reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
    reg.retain(|(w, _)| w.strong_count() > 0);
    let key = Arc::downgrade(&monitor.pipeline);
    if let Some((_, m)) = reg.iter().find(|(w, _)| w.ptr_eq(&key)) {
        return m.clone();
    }
    // Not enabled: the texts of the start-up templates are unknown, so none are shown.
    let m = Arc::new(Mutex::new(Managed {
        data_dir: None,
        current: TemplateVersion {
            version: 0,
            device: String::new(),
            fhir: String::new(),
            loaded_ms: now_millis(),
        },
    }));
    reg.push((key, m.clone()));
    m
}

/// Enables `PUT /v1/templates` for `monitor`: new versions are saved under
/// `data_dir/templates/`; `current` is what is in force now (from [`startup_templates`]).
pub fn enable_management(monitor: &Monitor, data_dir: &Path, current: TemplateVersion) {
    let m = managed(monitor);
    let mut m = m.lock().unwrap_or_else(PoisonError::into_inner);
    m.data_dir = Some(data_dir.to_path_buf());
    m.current = current;
}

/// Writes `v{n}` atomically: a temporary directory renamed into place, so a crash never
/// leaves a half-written version for [`latest_saved_templates`] to load.
fn save_version(data_dir: &Path, n: u64, device: &str, fhir: &str) -> std::io::Result<()> {
    let root = data_dir.join("templates");
    std::fs::create_dir_all(&root)?;
    let tmp = root.join(format!(".v{n}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp)?;
    for (name, text) in [(DEVICE_FILE, device), (FHIR_FILE, fhir)] {
        let mut f = std::fs::File::create(tmp.join(name))?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, root.join(format!("v{n}")))
}

fn text_json(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The `/v1/templates` router.
pub fn router(monitor: Arc<Monitor>, key: Arc<SigningKey>) -> Router {
    Router::new()
        .route("/v1/templates", get(get_templates).put(put_templates))
        .route("/v1/templates/test", post(test_templates))
        .with_state(ApiState { monitor, key })
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

async fn test_templates(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authenticate(&state, &headers)?;
    let request = parse_body(&body)?;
    let monitor = state.monitor.clone();
    let out = blocking(move || {
        test_request(&request, &monitor.pipeline.templates())
            .map_err(|m| ApiError(StatusCode::BAD_REQUEST, m))
    })
    .await?;
    Ok(Json(out))
}

async fn get_templates(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = authenticate(&state, &headers)?;
    allow(&caller, Interaction::Read, "Device")?;
    let m = managed(&state.monitor);
    let m = m.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(Json(json!({
        "version": m.current.version,
        "loadedAt": format_rfc3339(m.current.loaded_ms),
        "managed": m.data_dir.is_some(),
        "deviceTemplates": text_json(&m.current.device),
        "fhirTemplates": text_json(&m.current.fhir),
    })))
}

async fn put_templates(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = authenticate(&state, &headers)?;
    allow(&caller, Interaction::Update, "Device")?;
    // Templates apply to every patient's devices, so a patient/ grant is not enough.
    let update = Interaction::Update.permission();
    if !caller
        .access
        .scopes()
        .resource_scopes()
        .any(|s| s.context != ScopeContext::Patient && s.grants(update, "Device"))
    {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "replacing templates needs Device write with a user/ or system/ scope".into(),
        ));
    }
    let request = parse_body(&body)?;
    let (device_text, fhir_text) = match (
        request.get("deviceTemplates").filter(|v| !v.is_null()),
        request.get("fhirTemplates").filter(|v| !v.is_null()),
    ) {
        (Some(d), Some(f)) if request.as_object().is_some_and(|o| o.len() == 2) => {
            (template_text(d), template_text(f))
        }
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "expected {\"deviceTemplates\": ..., \"fhirTemplates\": ...} (each the template JSON or its text)".into(),
            ))
        }
    };
    let monitor = state.monitor.clone();
    blocking(move || {
        let (device, fhir) = match parse_templates(&device_text, Some(&fhir_text)) {
            Ok((d, Some(f))) => (d, f),
            Ok((_, None)) => {
                return Err(ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "FHIR templates were not parsed".into(),
                ))
            }
            Err(errors) => {
                for (which, error_type) in
                    [("device", "DeviceTemplateError"), ("fhir", "FHIRTemplateError")]
                {
                    if errors.iter().any(|e| e["template"] == which) {
                        monitor
                            .metrics
                            .error_as("InvalidTemplateException", error_type);
                    }
                }
                return Ok((
                    StatusCode::BAD_REQUEST,
                    Json(json!({
                        "error": format!("{} template error(s); the templates in force are unchanged", errors.len()),
                        "templateErrors": errors,
                    })),
                ))
            }
        };
        let warnings = vigil_medtech::check_mappings(&device, &fhir);
        let m = managed(&monitor);
        // Held across save and swap so concurrent PUTs get distinct, ordered versions.
        let mut m = m.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(data_dir) = m.data_dir.clone() else {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "template management is not enabled on this server (no data directory)".into(),
            ));
        };
        let version = match latest_saved_templates(&data_dir) {
            Some((n, _, _)) => n.max(m.current.version) + 1,
            None => m.current.version + 1,
        };
        save_version(&data_dir, version, &device_text, &fhir_text).map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot save the templates: {e}"),
            )
        })?;
        monitor.pipeline.set_templates(Templates { device, fhir });
        m.current = TemplateVersion {
            version,
            device: device_text,
            fhir: fhir_text,
            loaded_ms: now_millis(),
        };
        tracing::info!(version, "templates replaced");
        Ok((
            StatusCode::OK,
            Json(json!({
                "version": version,
                "loadedAt": format_rfc3339(m.current.loaded_ms),
                "warnings": warnings,
            })),
        ))
    })
    .await
}
