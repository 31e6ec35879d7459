//! Write throughput of the SQLite store (durable: WAL with synchronous=FULL).
//! Run: `cargo bench -p vigil-store --bench store`
//!
//! - `create/threads=N`: single-resource creates from N concurrent threads (the writer
//!   group-commits what they queue);
//! - `transaction/N`: one transaction bundle of N Observations.
//!
//! Throughput is reported per resource.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_store::conformance::observation;
use vigil_store::{FhirStore, SqliteStore, WriteOp};

struct BenchDir(PathBuf);

impl BenchDir {
    fn new(name: &str) -> BenchDir {
        let dir =
            std::env::temp_dir().join(format!("vigil-store-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        BenchDir(dir)
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn creates(c: &mut Criterion) {
    let mut g = c.benchmark_group("create");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    for threads in [1u64, 8] {
        let dir = BenchDir::new(&format!("create{threads}"));
        let store = Arc::new(SqliteStore::open(&dir.0.join("bench.db")).unwrap());
        g.bench_function(format!("threads={threads}"), |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(threads);
                let start = Instant::now();
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let store = store.clone();
                        std::thread::spawn(move || {
                            for i in 0..per {
                                let v = i64::try_from(i % 200).unwrap();
                                store
                                    .create(observation(
                                        &format!("p{t}"),
                                        v,
                                        "2024-05-01T10:00:00Z",
                                    ))
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
                // Scale to the requested iteration count (per * threads may exceed it).
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per * threads) as f64)
            })
        });
        drop(store);
    }
    g.finish();
}

fn transactions(c: &mut Criterion) {
    let mut g = c.benchmark_group("transaction");
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(20);
    for n in [100usize, 1000] {
        let dir = BenchDir::new(&format!("tx{n}"));
        let store = SqliteStore::open(&dir.0.join("bench.db")).unwrap();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n}"), |b| {
            b.iter_batched(
                || {
                    (0..n)
                        .map(|i| WriteOp::Create {
                            resource: observation("p1", (i % 200) as i64, "2024-05-01T10:00:00Z"),
                            id: None,
                        })
                        .collect::<Vec<_>>()
                },
                |ops| store.transaction(ops).unwrap(),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, creates, transactions);
criterion_main!(benches);
