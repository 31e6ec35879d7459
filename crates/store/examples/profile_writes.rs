//! Where write time goes: extraction vs. the store (for tuning; not a benchmark).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Instant;
use vigil_store::conformance::observation;
use vigil_store::{FhirStore, SqliteStore, WriteOp};

fn main() {
    let obs = observation("p1", 70, "2024-05-01T10:00:00Z");
    let n = 2000;
    let t = Instant::now();
    let mut rows = 0;
    for _ in 0..n {
        rows += vigil_store::index::extract_rows(&obs).len();
    }
    println!(
        "extract: {:?}/resource, {} rows",
        t.elapsed() / n,
        rows / n as usize
    );
    let dir = std::env::temp_dir().join(format!("vigil-store-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&dir.join("p.db")).unwrap();
    let t = Instant::now();
    let ops = (0..n)
        .map(|_| WriteOp::Create {
            resource: obs.clone(),
            id: None,
        })
        .collect();
    store.transaction(ops).unwrap();
    println!("transaction of {n}: {:?}/resource", t.elapsed() / n);
    let singles = if std::env::var_os("NO_SINGLES").is_some() {
        0
    } else {
        200
    };
    let t = Instant::now();
    for _ in 0..singles {
        store.create(obs.clone()).unwrap();
    }
    println!("single creates: {:?}/create", t.elapsed() / singles.max(1));
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
