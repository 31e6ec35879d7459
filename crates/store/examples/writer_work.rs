//! The store's write work for a fixed workload, for counting instructions with
//! `valgrind --tool=callgrind --separate-threads=yes` (deterministic where wall-clock
//! benchmarks on a shared machine are not): `VIGIL_N` (default 5,000) vital-sign
//! Observations over 500 patients, created in transactions of 500.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use serde_json::json;
use vigil_store::{FhirStore, SqliteStore, WriteOp};

fn main() {
    let n: usize = std::env::var("VIGIL_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let dir = std::env::temp_dir().join(format!("vigil-writer-work-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&dir.join("w.db")).unwrap();
    let codes = [
        ("8867-4", "/min"),
        ("9279-1", "/min"),
        ("59408-5", "%"),
        ("8310-5", "Cel"),
    ];
    let ops: Vec<WriteOp> = (0..n)
        .map(|i| {
            let (code, unit) = codes[i % codes.len()];
            WriteOp::Create {
                resource: json!({
                    "resourceType": "Observation", "status": "final",
                    "category": [{"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs", "display": "Vital Signs"}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": code}], "text": code},
                    "subject": {"reference": format!("Patient/p{}", i % 500)},
                    "effectiveDateTime": format!("2024-01-{:02}T{:02}:00:00Z", 1 + i % 28, i % 24),
                    "valueQuantity": {"value": 36 + (i % 50), "unit": unit,
                        "system": "http://unitsofmeasure.org", "code": unit},
                }),
                id: None,
            }
        })
        .collect();
    let mut ops = ops.into_iter();
    loop {
        let batch: Vec<WriteOp> = ops.by_ref().take(500).collect();
        if batch.is_empty() {
            break;
        }
        store.transaction(batch).unwrap();
    }
    store.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
