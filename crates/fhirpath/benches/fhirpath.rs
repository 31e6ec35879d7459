//! Criterion bench of the FHIRPath engine on the workloads `tools/bench-fhirpath.sh`
//! compares with fhirpath.js: `cargo bench -p vigil-fhirpath --bench fhirpath`.
//!
//! Criterion times one round (every case of a workload evaluated once) and reports
//! throughput in evaluations (elements) per second. After each workload it also prints
//! the JSON line `bench.js` and `examples/bench_suite.rs` print (fixed-time measurement,
//! `FHIRPATH_BENCH_SECONDS`, default 5 s after 1 s of warm-up), so the figures can be
//! compared with fhirpath.js's directly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Shared with examples/bench_suite.rs, which also uses the per-case timing.
#[allow(dead_code)]
#[path = "support/workloads.rs"]
mod workloads;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    // `cargo test --benches` / `cargo bench -- --test` run each bench once as a smoke
    // test: skip the fixed-time measurement there.
    let testing = std::env::args().any(|a| a == "--test" || a == "--list");
    let seconds: f64 = std::env::var("FHIRPATH_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    for w in [workloads::suite().unwrap(), workloads::realistic().unwrap()] {
        let mut group = c.benchmark_group(w.name);
        group.throughput(Throughput::Elements(w.cases.len() as u64));
        group.bench_function("evaluate_all_cases", |b| b.iter(|| w.round()));
        group.finish();
        if !testing {
            println!(
                "{}",
                w.measure(Duration::from_secs(1), Duration::from_secs_f64(seconds))
                    .json()
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
