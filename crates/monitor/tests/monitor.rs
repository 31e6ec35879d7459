//! The monitor's HTTP API on a real socket: template management and the mapping debugger.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vigil_auth::{ScopeSet, SigningKey, TokenRequest};
use vigil_eventlog::{FileLog, FileLogOptions};
use vigil_monitor::templates_api::{self, latest_saved_templates};
use vigil_monitor::{Monitor, MonitorDb, MonitorOptions};
use vigil_store::{FhirStore, SqliteStore};

struct Harness {
    base: String,
    key: Arc<SigningKey>,
    monitor: Arc<Monitor>,
    dir: tempfile::TempDir,
}

fn sample(set: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/medtech-iomt-fhir/sample/templates")
        .join(set)
        .join(file)
}

fn sample_json(set: &str, file: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(sample(set, file)).unwrap()).unwrap()
}

fn start(manage: bool) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn FhirStore> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let log = Arc::new(FileLog::open(&dir.path().join("log"), FileLogOptions::default()).unwrap());
    let db = Arc::new(MonitorDb::open_in_memory().unwrap());
    let (templates, version) = templates_api::startup_templates(dir.path(), None, None).unwrap();
    let monitor = Monitor::assemble(db, store, log, templates, MonitorOptions::default());
    if manage {
        templates_api::enable_management(&monitor, dir.path(), version);
    }
    let key = Arc::new(SigningKey::from_bytes([7; 32]));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = monitor.router(key.clone());
    std::thread::spawn(move || rt.block_on(async { axum::serve(listener, app).await.unwrap() }));
    Harness {
        base,
        key,
        monitor,
        dir,
    }
}

impl Harness {
    fn token(&self, scopes: &str, patient: Option<&str>) -> String {
        let mut req = TokenRequest::new("tester", ScopeSet::parse(scopes).unwrap());
        if let Some(p) = patient {
            req = req.patient(p);
        }
        self.key.issue(&req)
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = ureq::request(method, &format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let result = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        (status, resp.into_json().unwrap_or(Value::Null))
    }
}

fn heartrate(value: &str) -> Value {
    json!({"deviceid": "device1", "patientid": "patient1",
           "measurementdatetime": "2019-03-01T10:10:00Z", "heartrate": value})
}

/// `heartrate` lacks deviceIdExpression (line 6, column 19).
const INVALID_DEVICE: &str = "{\n  \"templateType\": \"CollectionContent\",\n  \"template\": [\n    {\n      \"templateType\": \"JsonPathContent\",\n      \"template\": {\n        \"typeName\": \"heartrate\",\n        \"typeMatchExpression\": \"$..[?(@heartrate)]\",\n        \"timestampExpression\": \"$.measurementdatetime\",\n        \"values\": []\n      }\n    }\n  ]\n}\n";

#[test]
fn test_endpoint_runs_given_templates_for_any_valid_token() {
    let h = start(true);
    let body = json!({
        "deviceTemplates": sample_json("basic", "devicecontent.json"),
        "fhirTemplates": sample_json("basic", "fhirmapping.json"),
        "payloads": [heartrate("78"), {"nothing": 1}],
    });
    let (status, _) = h.call("POST", "/v1/templates/test", None, Some(&body));
    assert_eq!(status, 401);
    let (status, _) = h.call(
        "POST",
        "/v1/templates/test",
        Some("not-a-token"),
        Some(&body),
    );
    assert_eq!(status, 401);
    // A patient-scoped token for something unrelated is still a valid token.
    let token = h.token("patient/Observation.read", Some("p1"));
    let (status, v) = h.call("POST", "/v1/templates/test", Some(&token), Some(&body));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], false);
    let r = &v["results"];
    assert_eq!(r[0]["payload"], "payloads[0]");
    assert_eq!(r[0]["measurements"][0]["type"], "heartrate");
    assert_eq!(r[0]["measurements"][0]["deviceId"], "device1");
    assert_eq!(
        r[0]["observations"][0]["subject"]["reference"],
        "Patient/patient1"
    );
    assert_eq!(r[0]["errors"], json!([]));
    assert_eq!(r[1]["errors"][0]["kind"], "TemplateNotFound");
    assert_eq!(v["warnings"], json!([]));

    // Invalid templates given as text: located errors, no results.
    let (status, v) = h.call(
        "POST",
        "/v1/templates/test",
        Some(&token),
        Some(&json!({"deviceTemplates": INVALID_DEVICE, "payloads": [heartrate("1")]})),
    );
    assert_eq!(status, 200);
    assert_eq!(v["ok"], false);
    let e = &v["templateErrors"][0];
    assert_eq!(
        (
            e["template"].as_str(),
            e["line"].as_u64(),
            e["column"].as_u64()
        ),
        (Some("device"), Some(6), Some(19)),
        "{v}"
    );
    assert!(v.get("results").is_none());

    // Malformed requests.
    for bad in [json!({"payloads": []}), json!({"payload": [1]}), json!([1])] {
        let (status, v) = h.call("POST", "/v1/templates/test", Some(&token), Some(&bad));
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"].as_str().is_some());
    }
}

#[test]
fn templates_are_replaced_validated_versioned_and_saved() {
    let h = start(true);
    let reader = h.token("user/Device.read", None);
    let writer = h.token("system/Device.write", None);

    let (status, _) = h.call(
        "GET",
        "/v1/templates",
        Some(&h.token("user/Observation.read", None)),
        None,
    );
    assert_eq!(status, 403);
    let (status, v) = h.call("GET", "/v1/templates", Some(&reader), None);
    assert_eq!(status, 200);
    assert_eq!(v["version"], 0);
    assert_eq!(v["managed"], true);
    assert!(v["loadedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["deviceTemplates"]["templateType"], "CollectionContent");

    let basic = json!({
        "deviceTemplates": sample_json("basic", "devicecontent.json"),
        "fhirTemplates": sample_json("basic", "fhirmapping.json"),
    });
    // Scopes: read is not enough, nor a patient-scoped write.
    let (status, _) = h.call("PUT", "/v1/templates", Some(&reader), Some(&basic));
    assert_eq!(status, 403);
    let patient_writer = h.token("patient/Device.write", Some("p1"));
    let (status, _) = h.call("PUT", "/v1/templates", Some(&patient_writer), Some(&basic));
    assert_eq!(status, 403);

    // Invalid: 400 with every error located, the old templates stay.
    let before = h.monitor.pipeline.templates().device.templates.len();
    let invalid = json!({"deviceTemplates": INVALID_DEVICE,
                         "fhirTemplates": {"templateType": "CollectionFhir", "template": [{"templateType": "Nope"}]}});
    let (status, v) = h.call("PUT", "/v1/templates", Some(&writer), Some(&invalid));
    assert_eq!(status, 400, "{v}");
    let errors = v["templateErrors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["template"] == "device" && e["line"] == 6 && e["column"] == 19),
        "{v}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e["template"] == "fhir"
                && e["path"].as_str().unwrap().starts_with("$.template[0]")),
        "{v}"
    );
    assert_eq!(
        h.monitor.pipeline.templates().device.templates.len(),
        before
    );
    // Counted as the reference's template errors, per template.
    let m = h.monitor.metrics.render();
    for error_type in ["DeviceTemplateError", "FHIRTemplateError"] {
        let line = format!("vigil_medtech_errors_total{{name=\"InvalidTemplateException\",error_type=\"{error_type}\",severity=\"blocking\",stage=\"templates\"}} 1");
        assert!(m.lines().any(|l| l == line), "{line} in\n{m}");
    }
    assert_eq!(
        h.call("GET", "/v1/templates", Some(&reader), None).1["version"],
        0
    );
    assert!(latest_saved_templates(h.dir.path()).is_none());
    let (status, _) = h.call(
        "PUT",
        "/v1/templates",
        Some(&writer),
        Some(&json!({"deviceTemplates": {}})),
    );
    assert_eq!(status, 400);

    // Valid: in force as version 1 and saved.
    let (status, v) = h.call("PUT", "/v1/templates", Some(&writer), Some(&basic));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["warnings"], json!([]));
    assert_eq!(h.monitor.pipeline.templates().device.templates.len(), 6);
    let (n, device, fhir) = latest_saved_templates(h.dir.path()).unwrap();
    assert_eq!(n, 1);
    assert_eq!(device, h.dir.path().join("templates/v1/devicecontent.json"));
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&fhir).unwrap()).unwrap();
    assert_eq!(saved, basic["fhirTemplates"]);
    let (_, v) = h.call("GET", "/v1/templates", Some(&reader), None);
    assert_eq!(v["version"], 1);
    assert_eq!(v["deviceTemplates"], basic["deviceTemplates"]);

    // The debugger now defaults to the templates in force.
    let any = h.token("patient/Observation.read", Some("p1"));
    let (_, v) = h.call(
        "POST",
        "/v1/templates/test",
        Some(&any),
        Some(&json!({"payloads": [heartrate("64")]})),
    );
    assert_eq!(
        v["results"][0]["measurements"][0]["properties"][0]["value"], "64",
        "{v}"
    );

    // A second version, given as text, with a mapping warning (FHIR set lacks steps etc.).
    let healthkit_fhir = std::fs::read_to_string(sample("sandbox", "fhirmapping.json")).unwrap();
    let (status, v) = h.call(
        "PUT",
        "/v1/templates",
        Some(&writer),
        Some(
            &json!({"deviceTemplates": basic["deviceTemplates"], "fhirTemplates": healthkit_fhir}),
        ),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["version"], 2);
    assert!(!v["warnings"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(
        std::fs::read_to_string(h.dir.path().join("templates/v2/fhirmapping.json")).unwrap(),
        healthkit_fhir
    );

    // A restart loads the latest saved version.
    let (templates, version) = templates_api::startup_templates(h.dir.path(), None, None).unwrap();
    assert_eq!(version.version, 2);
    assert_eq!(version.fhir, healthkit_fhir);
    assert_eq!(templates.device.templates.len(), 6);
}

#[test]
fn replacing_needs_management_enabled() {
    let h = start(false);
    let writer = h.token("system/Device.write", None);
    let body = json!({
        "deviceTemplates": sample_json("basic", "devicecontent.json"),
        "fhirTemplates": sample_json("basic", "fhirmapping.json"),
    });
    let (status, v) = h.call("PUT", "/v1/templates", Some(&writer), Some(&body));
    assert_eq!(status, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not enabled"));
    assert!(latest_saved_templates(h.dir.path()).is_none());
}

#[test]
fn latest_saved_version_ignores_incomplete_and_foreign_entries() {
    let dir = tempfile::tempdir().unwrap();
    assert!(latest_saved_templates(dir.path()).is_none());
    let root = dir.path().join("templates");
    let put = |name: &str, files: &[&str]| {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in files {
            std::fs::write(d.join(f), "{}").unwrap();
        }
    };
    put("v3", &["devicecontent.json", "fhirmapping.json"]);
    put("v10", &["devicecontent.json", "fhirmapping.json"]);
    put("v11", &["devicecontent.json"]);
    put(".v12.tmp", &["devicecontent.json", "fhirmapping.json"]);
    put("vx", &["devicecontent.json", "fhirmapping.json"]);
    let (n, d, f) = latest_saved_templates(dir.path()).unwrap();
    assert_eq!(n, 10);
    assert_eq!(d, root.join("v10/devicecontent.json"));
    assert_eq!(f, root.join("v10/fhirmapping.json"));
    let _: &Path = dir.path();
}

#[path = "monitor/medtech.rs"]
mod medtech;
