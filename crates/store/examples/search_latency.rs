//! Search latency on a loaded store: N Observations (default 100,000; `VIGIL_N`) over
//! N/100 Patients, then p50/p99 of the two queries:
//!
//! - `Observation?subject=Patient/pK&code=http://loinc.org|8867-4&date=ge2024-01-01&_sort=-date&_count=2`
//! - `Patient?name=<prefix>`
//!
//! Run: `cargo run --release -p vigil-store --example search_latency` (the database is
//! built in a temporary directory and removed afterwards).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;
use vigil_fhir::search::{SearchQuery, SearchRegistry};
use vigil_store::{FhirStore, SearchPage, SqliteStore, WriteOp};

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (at(0.5), at(0.99))
}

fn main() {
    let n: usize = std::env::var("VIGIL_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let patients = (n / 100).max(1);
    let dir = std::env::temp_dir().join(format!("vigil-search-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&dir.join("s.db")).unwrap();
    let start = Instant::now();
    let families = [
        "Chalmers", "Smith", "Müller", "Nguyen", "Okafor", "Garcia", "Ivanova",
    ];
    let ops: Vec<WriteOp> = (0..patients)
        .map(|i| WriteOp::Update {
            resource_type: "Patient".into(),
            id: format!("p{i}"),
            resource: serde_json::json!({"resourceType": "Patient",
                "name": [{"family": format!("{}{i}", families[i % families.len()]), "given": ["Ann"]}],
                "birthDate": "1970-01-01"}),
            if_match: None,
        })
        .collect();
    for chunk in ops.chunks(5_000) {
        store.transaction(chunk.to_vec()).unwrap();
    }
    let mut batch = Vec::with_capacity(5_000);
    for i in 0..n {
        let day = 1 + (i % 28);
        let month = 1 + (i / 28) % 12;
        let year = 2023 + (i % 2);
        let mut o = vigil_store::conformance::observation(
            &format!("p{}", i % patients),
            60 + (i % 40) as i64,
            &format!("{year}-{month:02}-{day:02}T10:00:00Z"),
        );
        if i % 3 == 0 {
            o["code"]["coding"][0]["code"] = serde_json::json!("29463-7");
        }
        batch.push(WriteOp::Create {
            resource: o,
            id: None,
        });
        if batch.len() == 5_000 {
            store.transaction(std::mem::take(&mut batch)).unwrap();
        }
    }
    if !batch.is_empty() {
        store.transaction(batch).unwrap();
    }
    println!(
        "loaded {patients} Patients and {n} Observations in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    let reg = SearchRegistry::r4();
    let runs = 300;
    let mut obs = Vec::with_capacity(runs);
    let mut hits = 0;
    for k in 0..runs {
        let qs = format!(
            "subject=Patient/p{}&code=http://loinc.org|8867-4&date=ge2024-01-01&_sort=-date&_count=2",
            (k * 7919) % patients
        );
        let q = SearchQuery::parse(Some("Observation"), &qs, reg).unwrap();
        let t = Instant::now();
        let r = store.search(&q, &SearchPage::default()).unwrap();
        obs.push(t.elapsed().as_secs_f64() * 1e3);
        hits += r.matches.len();
    }
    let (p50, p99) = percentiles(obs);
    println!("Observation?subject&code&date&_sort=-date&_count=2: p50 {p50:.2} ms, p99 {p99:.2} ms ({hits} matches over {runs} runs)");
    let mut pat = Vec::with_capacity(runs);
    hits = 0;
    for k in 0..runs {
        let prefix = format!("{}{}", families[k % families.len()], k % 10);
        let q = SearchQuery::parse(Some("Patient"), &format!("name={prefix}"), reg).unwrap();
        let t = Instant::now();
        let r = store.search(&q, &SearchPage::default()).unwrap();
        pat.push(t.elapsed().as_secs_f64() * 1e3);
        hits += r.matches.len();
    }
    let (p50, p99) = percentiles(pat);
    println!(
        "Patient?name=<prefix>: p50 {p50:.2} ms, p99 {p99:.2} ms ({hits} matches over {runs} runs)"
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
