//! The FHIR server over real HTTP: a server on 127.0.0.1:0 with a temporary SQLite
//! store, driven with a blocking HTTP client.
// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use vigil_auth::{ScopeSet, SigningKey, TokenRequest};
use vigil_fhir::search::SearchQuery;
use vigil_server::{FhirApi, FhirServerConfig};
use vigil_store::{FhirStore, SqliteStore};

struct Server {
    base: String,
    api: FhirApi,
    key: Arc<SigningKey>,
    dir: tempfile::TempDir,
}

fn start() -> Server {
    start_with(|_| {}, None)
}

fn start_with(
    tweak: impl FnOnce(&mut FhirServerConfig),
    wrap: Option<fn(SqliteStore) -> Arc<dyn FhirStore>>,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (base, api, key) = launch(dir.path(), "fhir.db", tweak, wrap, None);
    Server {
        base,
        api,
        key,
        dir,
    }
}

/// A server on `dir` (store file `db` in it, exports in `dir/export`, the audit in
/// `dir/audit.jsonl`), with an optional care-team policy; runs until the test ends.
fn launch(
    dir: &std::path::Path,
    db: &str,
    tweak: impl FnOnce(&mut FhirServerConfig),
    wrap: Option<fn(SqliteStore) -> Arc<dyn FhirStore>>,
    policy: Option<Arc<dyn vigil_server::CareTeamPolicy>>,
) -> (String, FhirApi, Arc<SigningKey>) {
    let store = SqliteStore::open(&dir.join(db)).unwrap();
    let store: Arc<dyn FhirStore> = match wrap {
        Some(w) => w(store),
        None => Arc::new(store),
    };
    let key = Arc::new(SigningKey::from_bytes([9; 32]));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}/fhir");
    let mut config = FhirServerConfig::new(&base);
    config.audit_file = Some(dir.join("audit.jsonl"));
    config.export_dir = dir.join("export");
    tweak(&mut config);
    let mut api = FhirApi::new(store, key.clone(), config);
    if let Some(p) = policy {
        api = api.with_care_team_policy(p);
    }
    let app = axum::Router::new().merge(api.mount("/fhir"));
    std::thread::spawn(move || {
        rt.block_on(vigil_server::serve(listener, app, std::future::pending()))
            .unwrap();
    });
    (base, api, key)
}

struct Resp {
    status: u16,
    headers: HashMap<String, String>,
    body: Value,
    text: String,
}

impl Server {
    fn token(&self, scopes: &str, patient: Option<&str>) -> String {
        let mut req = TokenRequest::new("tester", ScopeSet::parse(scopes).unwrap());
        if let Some(p) = patient {
            req = req.patient(p);
        }
        self.key.issue(&req)
    }

    fn admin(&self) -> String {
        self.token("system/*.cruds", None)
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = ureq::request(method, &url);
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        for (n, v) in headers {
            req = req.set(n, v);
        }
        let result = match body {
            Some(b) => req.send_string(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("transport error: {e}"),
        };
        let status = resp.status();
        let mut h = HashMap::new();
        for name in resp.headers_names() {
            if let Some(v) = resp.header(&name) {
                h.insert(name.to_ascii_lowercase(), v.to_string());
            }
        }
        let text = resp.into_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers: h,
            body,
            text,
        }
    }

    fn get(&self, path: &str) -> Resp {
        self.call("GET", path, Some(&self.admin()), &[], None)
    }

    fn post(&self, path: &str, body: &Value) -> Resp {
        self.call(
            "POST",
            path,
            Some(&self.admin()),
            &[("Content-Type", "application/fhir+json")],
            Some(&body.to_string()),
        )
    }

    fn put(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Resp {
        let mut h = vec![("Content-Type", "application/fhir+json")];
        h.extend_from_slice(headers);
        self.call(
            "PUT",
            path,
            Some(&self.admin()),
            &h,
            Some(&body.to_string()),
        )
    }

    fn create_patient(&self, family: &str) -> String {
        let r = self.post("/Patient", &patient(family));
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["id"].as_str().unwrap().to_string()
    }
}

fn patient(family: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family}], "gender": "female",
        "identifier": [{"system": "urn:mrn", "value": family}]})
}

fn observation(patient: &str, value: f64) -> Value {
    json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
}

fn issue_code(r: &Resp) -> String {
    assert_eq!(r.body["resourceType"], "OperationOutcome", "{}", r.text);
    r.body["issue"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn entries(r: &Resp) -> Vec<Value> {
    r.body["entry"].as_array().cloned().unwrap_or_default()
}

fn link(r: &Resp, rel: &str) -> Option<String> {
    r.body["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == rel)
        .map(|l| l["url"].as_str().unwrap_or_default().to_string())
}

#[path = "server/basics.rs"]
mod basics;
#[path = "server/bundles.rs"]
mod bundles;
#[path = "server/care_team.rs"]
mod care_team;
#[path = "server/exports.rs"]
mod exports;
#[path = "server/mounting.rs"]
mod mounting;
#[path = "server/observer.rs"]
mod observer;
#[path = "server/search.rs"]
mod search;
#[path = "server/third_party.rs"]
mod third_party;
