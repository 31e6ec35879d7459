//! `vigil serve --database-url postgres://…` as a real process: the FHIR API (create,
//! read, search, a transaction posted to `[base]/`) and the monitoring pipeline write to
//! PostgreSQL, and the data is there after a restart.
//!
//! Needs the `postgres` feature (`cargo test -p vigil --features postgres --test
//! serve_postgres`, run by `.ci/run`) and the server at `VIGIL_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`). Each run uses a fresh schema,
//! dropped at the end. An unreachable server fails the test: it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vigil_store::FhirStore;
use vigil_store_postgres::{PgOptions, PostgresStore};

fn database_url() -> String {
    std::env::var("VIGIL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh schema, dropped with the value.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new() -> Schema {
        let id = vigil_store::new_id().replace('-', "");
        Schema {
            url: database_url(),
            name: format!("vigil_test_serve_{}", &id[id.len() - 12..]),
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Best effort: a failing drop must not hide the test's own failure.
        let _ = PostgresStore::drop_schema(&self.url, &self.name);
    }
}

/// A running `vigil serve` on a free port.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data_dir: &Path, schema: &Schema) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--database-url", &schema.url])
            .env("VIGIL_DATABASE_SCHEMA", &schema.name)
            .env("VIGIL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vigil serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| {
                    panic!(
                        "vigil serve exited before printing its URL (PostgreSQL at {} \
                         (VIGIL_TEST_DATABASE_URL) is required; see its error above)",
                        schema.url
                    )
                })
                .unwrap();
            if let Some(rest) = line.split("serving on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server { child, base }
    }

    /// SIGTERM and wait: a graceful stop.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "vigil serve exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "vigil serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(data_dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["token", "issue", "--data-dir"])
        .arg(data_dir)
        .args(["--scope", "system/*.cruds"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("Bearer {}", String::from_utf8(out.stdout).unwrap().trim())
}

/// (status, JSON body) without turning 4xx/5xx into errors.
fn call(req: ureq::Request, body: Option<&Value>) -> (u16, Value) {
    let req = req.timeout(Duration::from_secs(30));
    let result = match body {
        Some(b) => req
            .set("Content-Type", "application/fhir+json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn serve_on_postgres_fhir_api_and_pipeline() {
    let schema = Schema::new();
    let dir = tempfile::tempdir().unwrap();
    let bearer = token(dir.path());
    let server = Server::start(dir.path(), &schema);
    let base = server.base.clone();
    let fhir = format!("{base}/fhir");

    // Create, read, search.
    let (status, created) = call(
        ureq::post(&format!("{fhir}/Patient")).set("Authorization", &bearer),
        Some(
            &json!({"resourceType": "Patient", "name": [{"family": "Pgtester", "given": ["Ada"]}],
            "gender": "female", "birthDate": "1950-03-02"}),
        ),
    );
    assert_eq!(status, 201, "{created}");
    let pid = created["id"].as_str().unwrap().to_string();
    let (status, read) = call(
        ureq::get(&format!("{fhir}/Patient/{pid}")).set("Authorization", &bearer),
        None,
    );
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["name"][0]["family"], "Pgtester");
    assert_eq!(read["meta"]["versionId"], "1");
    let (status, found) = call(
        ureq::get(&format!("{fhir}/Patient?name=pgtest")).set("Authorization", &bearer),
        None,
    );
    assert_eq!(status, 200, "{found}");
    assert_eq!(ids(&found), vec![pid.clone()]);
    let (_, none) = call(
        ureq::get(&format!("{fhir}/Patient?name=nobody")).set("Authorization", &bearer),
        None,
    );
    assert!(ids(&none).is_empty(), "{none}");

    // A transaction posted to the base with a trailing slash.
    let obs = |v: u32| {
        json!({"resource": {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": format!("Patient/{pid}")},
            "effectiveDateTime": "2024-05-01T08:00:00Z",
            "valueQuantity": {"value": v, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}},
            "request": {"method": "POST", "url": "Observation"}})
    };
    let (status, tx) = call(
        ureq::post(&format!("{fhir}/")).set("Authorization", &bearer),
        Some(
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": [obs(61), obs(62)]}),
        ),
    );
    assert_eq!(status, 200, "{tx}");
    assert_eq!(tx["type"], "transaction-response");
    let (_, hr) = call(
        ureq::get(&format!(
            "{fhir}/Observation?subject=Patient/{pid}&code=8867-4&_sort=value-quantity"
        ))
        .set("Authorization", &bearer),
        None,
    );
    let values: Vec<i64> = hr["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["valueQuantity"]["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, vec![61, 62]);

    // The pipeline writes through the same store: a device reading becomes an
    // Observation in PostgreSQL.
    let (status, device) = call(
        ureq::post(&format!("{base}/v1/devices")).set("Authorization", &bearer),
        Some(&json!({"patient": pid, "kind": "pulse-oximeter"})),
    );
    assert_eq!(status, 201, "{device}");
    let credential = format!("Bearer {}", device["credential"].as_str().unwrap());
    let (status, accepted) = call(
        ureq::post(&format!("{base}/ingest")).set("Authorization", &credential),
        Some(
            &json!({"type": "pulse-oximeter", "spo2": 94, "pulseRate": 77,
            "measuredAt": "2024-05-01T09:00:00Z"}),
        ),
    );
    assert_eq!(status, 202, "{accepted}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let spo2 = loop {
        let (status, b) = call(
            ureq::get(&format!(
                "{fhir}/Observation?subject=Patient/{pid}&code=59408-5"
            ))
            .set("Authorization", &bearer),
            None,
        );
        assert_eq!(status, 200, "{b}");
        if let Some(id) = ids(&b).into_iter().next() {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline wrote no SpO2 Observation"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    server.stop();

    // Nothing went to the embedded store; everything is in the schema, and a restarted
    // server serves it.
    assert!(!dir.path().join("fhir/store.db").exists());
    let direct = PostgresStore::connect(&schema.url, PgOptions::with_schema(&schema.name))
        .expect("PostgreSQL is reachable");
    assert!(direct.read("Patient", &pid).unwrap().found().is_some());
    assert!(direct.read("Observation", &spo2).unwrap().found().is_some());
    drop(direct);
    let server = Server::start(dir.path(), &schema);
    let (status, read) = call(
        ureq::get(&format!("{}/fhir/Patient/{pid}", server.base)).set("Authorization", &bearer),
        None,
    );
    assert_eq!(status, 200, "{read}");
    server.stop();
}

/// `vigil bench fhir --postgres` runs end to end against PostgreSQL, in its own schema.
#[test]
fn bench_fhir_runs_on_postgres() {
    let schema = Schema::new();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "bench",
            "fhir",
            "--postgres",
            &schema.url,
            "--postgres-schema",
        ])
        .arg(&schema.name)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--creates", "40", "--observations", "0", "--patients", "20"])
        .args([
            "--bundle-resources",
            "200",
            "--queries",
            "5",
            "--threads",
            "4",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["backend"], "postgresql");
    assert_eq!(v["observations_stored"], 2480);
    for key in [
        "creates_http_per_s",
        "bundle_1000_resources_per_s",
        "observation_search_p99_ms",
        "patient_name_p99_ms",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    // The resources really are in that schema.
    let store = PostgresStore::connect(&schema.url, PgOptions::with_schema(&schema.name)).unwrap();
    let query = vigil_fhir::search::SearchQuery::parse(
        Some("Observation"),
        "_total=accurate",
        vigil_fhir::search::SearchRegistry::r4(),
    )
    .unwrap();
    let found = store
        .search(&query, &vigil_store::SearchPage::default())
        .unwrap();
    assert_eq!(found.total, Some(2480));
}
