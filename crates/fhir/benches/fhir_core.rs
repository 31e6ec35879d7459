//! Benchmarks of the FHIR core: validation throughput and search-parameter extraction.
//! Run: `cargo bench -p vigil-fhir --bench fhir_core`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "fhir_core/search_bench.rs"]
mod search_bench;
#[path = "fhir_core/validate_bench.rs"]
mod validate_bench;

criterion::criterion_main!(search_bench::benches, validate_bench::benches);
