//! A third-party FHIR client library (npm `fhir-kit-client`, pinned by
//! `tests/fhir-client/package-lock.json`) drives the real server through CRUD, search,
//! paging, history and a transaction (`tests/fhir-client/client.mjs`).

use super::*;
use std::path::PathBuf;
use std::process::Command;

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fhir-client")
}

#[test]
fn fhir_kit_client_drives_the_server() {
    let dir = client_dir();
    let installed = dir.join("node_modules/fhir-kit-client/package.json");
    assert!(
        installed.is_file(),
        "the third-party client is not installed: run `npm ci --prefix tests/fhir-client` \
         at the repository root (needs Node.js >= 20; .ci/run does it)"
    );
    let s = start();
    let output = Command::new("node")
        .arg(dir.join("client.mjs"))
        .current_dir(&dir)
        .env("VIGIL_FHIR_BASE", &s.base)
        .env("VIGIL_FHIR_TOKEN", s.admin())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `node` (install Node.js >= 20): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "client script failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    let out: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("client output is not JSON ({e}): {stdout}"));

    assert_eq!(out["fhirVersion"], "4.0.1", "{out}");
    // CRUD
    assert_eq!(out["createdVersion"], "1");
    assert_eq!(out["readFamily"], "Kitclient");
    assert_eq!(out["updatedVersion"], "2");
    assert_eq!(
        out["vreadHasTelecom"], false,
        "vread of version 1 predates the update"
    );
    assert_eq!(out["patchedGender"], "other");
    assert_eq!(out["patchedVersion"], "3");
    // Transaction: 9 entries, all created, urn:uuid rewritten to the new id.
    assert_eq!(out["transactionType"], "transaction-response");
    assert_eq!(out["transactionStatuses"], json!(vec!["201 Created"; 9]));
    assert_eq!(out["urnResolved"], true);
    // Search and paging: 7 matches in pages of 3, newest first.
    assert_eq!(out["searchTotal"], 7);
    assert_eq!(out["pageSizes"], json!([3, 3, 1]));
    assert_eq!(out["searchedCount"], 7);
    assert_eq!(out["datesDescending"], true);
    assert_eq!(out["patientsByName"], 2);
    // History: the patient's three versions, newest first; the type history has all 8
    // Observations.
    assert_eq!(out["historyType"], "history");
    assert_eq!(out["historyVersions"], json!(["3", "2", "1"]));
    assert_eq!(out["typeHistoryCount"], 8);
    // Delete, then 410; a bad token is 401.
    assert_eq!(out["readAfterDelete"], 410);
    assert_eq!(out["badTokenStatus"], 401);

    // What the client wrote is really there, seen through our own HTTP client.
    let r = s.get("/Observation?code=http://loinc.org|8867-4&_summary=count");
    assert_eq!(r.body["total"], 7, "{}", r.text);
}
