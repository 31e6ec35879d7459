//! PostgreSQL store benchmark: write throughput and search latency on a loaded store.
//!
//! 1. single creates/s (one request per Observation) with 1 and 8 threads;
//! 2. transaction bundles of 100 Observations, resources/s (1 and 2 threads);
//! 3. a load of `VIGIL_N` Observations (default 100,000) over N/100 Patients in
//!    bundles, then `ANALYZE`, then p50/p99 of the queries:
//!    `Observation?subject=Patient/pK&code=http://loinc.org|8867-4&date=ge2024-01-01&_sort=-date&_count=50`
//!    and `Patient?name=<prefix>`.
//!
//! Run: `cargo run --release -p vigil-store-postgres --example pg_bench` with the server
//! at `VIGIL_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! Everything is written to a fresh schema `vigil_bench_<random>`, dropped at the end
//! (kept, for `EXPLAIN`, with `VIGIL_BENCH_KEEP=1`; `VIGIL_BENCH_SCHEMA=<kept schema>`
//! then runs only the searches on it, with the same `VIGIL_N`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;
use vigil_fhir::search::{SearchQuery, SearchRegistry};
use vigil_store::conformance::observation;
use vigil_store::{FhirStore, SearchPage, WriteOp};
use vigil_store_postgres::{PgOptions, PostgresStore};

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (at(0.5), at(0.99))
}

fn obs(i: usize, patients: usize) -> serde_json::Value {
    let day = 1 + (i % 28);
    let month = 1 + (i / 28) % 12;
    let year = 2023 + (i % 2);
    let mut o = observation(
        &format!("p{}", i % patients),
        60 + (i % 40) as i64,
        &format!("{year}-{month:02}-{day:02}T10:00:00Z"),
    );
    if i.is_multiple_of(3) {
        o["code"]["coding"][0]["code"] = serde_json::json!("29463-7");
    }
    o
}

/// `threads` threads each writing `per_thread` requests made by `f(thread, i)`;
/// returns the resources written per second.
fn run_threads(
    store: &Arc<PostgresStore>,
    threads: usize,
    per_thread: usize,
    f: fn(&PostgresStore, usize, usize) -> usize,
) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || (0..per_thread).map(|i| f(&s, t, i)).sum::<usize>())
        })
        .collect();
    let n: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("VIGIL_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let patients = (n / 100).max(1);
    let url = std::env::var("VIGIL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let id = vigil_store::new_id().replace('-', "");
    let reuse = std::env::var("VIGIL_BENCH_SCHEMA").ok();
    let schema = reuse
        .clone()
        .unwrap_or_else(|| format!("vigil_bench_{}", &id[id.len() - 12..]));
    let store = Arc::new(PostgresStore::connect(&url, PgOptions::with_schema(&schema)).unwrap());
    let families = [
        "Chalmers", "Smith", "Müller", "Nguyen", "Okafor", "Garcia", "Ivanova",
    ];
    if reuse.is_none() {
        write_and_load(&store, n, patients, &families);
    }

    search(&store, patients, &families);
    drop(store);
    if reuse.is_some() || std::env::var_os("VIGIL_BENCH_KEEP").is_some() {
        println!("kept schema {schema}");
    } else {
        PostgresStore::drop_schema(&url, &schema).unwrap();
    }
}

/// Phases 1 to 3: write throughput, then the load.
fn write_and_load(store: &Arc<PostgresStore>, n: usize, patients: usize, families: &[&str]) {
    // 1. Single creates.
    for threads in [1, 8] {
        let per = 4_000 / threads;
        let rate = run_threads(store, threads, per, |s, t, i| {
            s.create(obs(t * 100_000 + i, 1_000)).unwrap();
            1
        });
        println!("single creates, {threads} thread(s): {rate:.0}/s");
    }
    // 2. Transaction bundles of 100.
    for threads in [1, 2] {
        let rate = run_threads(store, threads, 40 / threads, |s, t, i| {
            let ops: Vec<WriteOp> = (0..100)
                .map(|k| WriteOp::Create {
                    resource: obs(t * 1_000_000 + i * 100 + k, 1_000),
                    id: None,
                })
                .collect();
            s.transaction(ops).unwrap().len()
        });
        println!("transaction bundles of 100, {threads} thread(s): {rate:.0} resources/s");
    }

    // 3. Load, then search.
    let start = Instant::now();
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
    for chunk in ops.chunks(500) {
        store.transaction(chunk.to_vec()).unwrap();
    }
    // Two loaders: the machine has two cores, and PostgreSQL works while we extract.
    let loaders: Vec<_> = (0..2)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                let mut batch = Vec::with_capacity(500);
                for i in (t..n).step_by(2) {
                    batch.push(WriteOp::Create {
                        resource: obs(i, patients),
                        id: None,
                    });
                    if batch.len() == 500 {
                        s.transaction(std::mem::take(&mut batch)).unwrap();
                    }
                }
                if !batch.is_empty() {
                    s.transaction(batch).unwrap();
                }
            })
        })
        .collect();
    for l in loaders {
        l.join().unwrap();
    }
    let load = start.elapsed().as_secs_f64();
    println!(
        "loaded {patients} Patients and {n} Observations in {load:.1}s ({:.0} resources/s)",
        (n + patients) as f64 / load
    );
    store.analyze().unwrap();
}

/// Search latency: p50 and p99 of the two queries.
fn search(store: &PostgresStore, patients: usize, families: &[&str]) {
    let reg = SearchRegistry::r4();
    let runs = 300;
    let mut obs_ms = Vec::with_capacity(runs);
    let mut hits = 0;
    for k in 0..runs {
        let qs = format!(
            "subject=Patient/p{}&code=http://loinc.org|8867-4&date=ge2024-01-01&_sort=-date&_count=50",
            (k * 7919) % patients
        );
        let q = SearchQuery::parse(Some("Observation"), &qs, reg).unwrap();
        let t = Instant::now();
        let r = store.search(&q, &SearchPage::default()).unwrap();
        obs_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        hits += r.matches.len();
    }
    let (p50, p99) = percentiles(obs_ms);
    println!(
        "Observation?subject&code&date=ge&_sort=-date&_count=50: p50 {p50:.2} ms, p99 {p99:.2} ms ({:.1} matches/query)",
        hits as f64 / runs as f64
    );
    let mut pat_ms = Vec::with_capacity(runs);
    let mut hits = 0;
    for k in 0..runs {
        let qs = format!("name={}{}", families[k % families.len()], k % 10);
        let q = SearchQuery::parse(Some("Patient"), &qs, reg).unwrap();
        let t = Instant::now();
        let r = store.search(&q, &SearchPage::default()).unwrap();
        pat_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        hits += r.matches.len();
    }
    let (p50, p99) = percentiles(pat_ms);
    println!(
        "Patient?name=<prefix>: p50 {p50:.2} ms, p99 {p99:.2} ms ({:.1} matches/query)",
        hits as f64 / runs as f64
    );
}
