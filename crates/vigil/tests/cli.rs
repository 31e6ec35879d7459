//! The `vigil` command line, run as a real process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "cli/care_team.rs"]
mod care_team;
#[path = "cli/spine.rs"]
mod spine;
#[path = "cli/templates.rs"]
mod templates;

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil")
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "vigil failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

#[test]
fn fhirpath_prints_result_collection_as_json() {
    let patient = fixture("fhirpath-r4/input/patient-example.json");
    let out = vigil(&[
        "fhirpath",
        "Patient.name.where(use = 'official').given",
        "--input",
        &patient,
    ]);
    assert_eq!(stdout_json(&out), serde_json::json!(["Peter", "James"]));

    // complex values as FHIR JSON, dates as strings, System quantities as value/unit
    let out = vigil(&[
        "fhirpath",
        "telecom.first() | birthDate | 37.5 'Cel' | @2014-01-25T14:30",
        "--input",
        &patient,
    ]);
    let v = stdout_json(&out);
    assert_eq!(v[0]["use"], "home");
    assert_eq!(v[1], "1974-12-25");
    assert_eq!(v[2], serde_json::json!({"value": 37.5, "unit": "Cel"}));
    assert_eq!(v[3], "2014-01-25T14:30");
}

#[test]
fn fhirpath_variables_and_exact_decimals() {
    let out = vigil(&["fhirpath", "%threshold + 0.10", "--var", "threshold=1.50"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[1.60]");
    let out = vigil(&[
        "fhirpath",
        "%codes.count()",
        "--var",
        r#"codes=["a","b","c"]"#,
    ]);
    assert_eq!(stdout_json(&out), serde_json::json!([3]));
}

#[test]
fn fhirpath_errors_go_to_stderr_with_position_and_status_2() {
    let out = vigil(&["fhirpath", "1 + (2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("syntax error at 1:7"), "{err}");

    let patient = fixture("fhirpath-r4/input/patient-example.json");
    let out = vigil(&["fhirpath", "name.given1", "--input", &patient]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("semantic error at 1:6"));

    let out = vigil(&["fhirpath", "(1 | 2).single()"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("evaluation error"));
}

#[test]
fn fhirpath_reports_unreadable_input() {
    let out = vigil(&["fhirpath", "1", "--input", "/nonexistent/file.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/file.json"));
}

#[test]
fn validate_reports_every_issue_and_exits_1_on_errors() {
    let good = fixture("fhir-r4-examples/patient-example.json");
    let out = vigil(&["validate", &good]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let dir = std::env::temp_dir().join(format!("vigil-cli-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"resourceType":"Patient","gender":"mal","birthDate":"1974-13-01","nickname":"x"}"#,
    )
    .unwrap();
    let out = vigil(&["validate", "--json", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    let locations: Vec<String> = outcome["issue"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["expression"].as_array().cloned().unwrap_or_default())
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    for expected in ["Patient.gender", "Patient.birthDate", "Patient.nickname"] {
        assert!(
            locations.iter().any(|l| l == expected),
            "{expected} not in {locations:?}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn token_issue_prints_a_token_the_data_dir_key_verifies() {
    let dir = std::env::temp_dir().join(format!("vigil-cli-token-{}", std::process::id()));
    let data_dir = dir.to_str().unwrap();
    let out = vigil(&[
        "token",
        "issue",
        "--data-dir",
        data_dir,
        "--scope",
        "patient/Observation.rs",
        "--patient",
        "p1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let key = vigil_auth::SigningKey::load_or_create(&dir).unwrap();
    let claims = key.verify_now(&token).unwrap();
    assert_eq!(claims.scope, "patient/Observation.rs");
    assert_eq!(claims.patient.as_deref(), Some("p1"));

    // patient/ scopes without a patient context are refused with the reason
    let out = vigil(&[
        "token",
        "issue",
        "--data-dir",
        data_dir,
        "--scope",
        "patient/Observation.rs",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("patient"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vigil(&[
        "token",
        "issue",
        "--data-dir",
        data_dir,
        "--scope",
        "patient/Observation.xyz",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid SMART scope"));
    std::fs::remove_dir_all(&dir).ok();
}

/// Without the `postgres` feature, `--database-url` is refused with how to get it
/// (`tests/serve_postgres.rs` covers the feature).
#[cfg(not(feature = "postgres"))]
#[test]
fn serve_refuses_database_url_without_the_postgres_feature() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", "postgres://postgres@127.0.0.1:5432/test"])
        .output()
        .expect("run vigil");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features postgres"), "{err}");
}

/// `vigil bench fhir` runs end to end on a small workload: every measurement is made
/// and everything it wrote is in the store (what it measures is its own business: no
/// timing is asserted).
#[test]
fn bench_fhir_runs_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = vigil(&[
        "bench",
        "fhir",
        "--data-dir",
        &dir.path().join("data").to_string_lossy(),
        "--creates",
        "40",
        "--observations",
        "0",
        "--patients",
        "20",
        "--bundle-resources",
        "200",
        "--queries",
        "5",
        "--threads",
        "4",
        "--json",
        &json.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["backend"], "sqlite");
    // 40 + 40 creates, twice two Bundles of 100 and one of 1,000 (200 rounded up).
    assert_eq!(v["observations_stored"], 2480);
    for key in [
        "creates_http_per_s",
        "creates_store_per_s",
        "bundle_100_resources_per_s",
        "bundle_1000_resources_per_s",
        "bundle_100_writer_cpu_us_per_resource",
        "observation_search_p99_ms",
        "patient_name_p99_ms",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
}
