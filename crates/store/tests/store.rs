//! The conformance suite on the SQLite backend (a file database per test), plus
//! SQLite-specific checks.

// Test code: failures should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use vigil_store::{FhirStore, SqliteStore};

/// A temporary directory removed when dropped.
struct TestDir(PathBuf);

impl TestDir {
    fn new() -> TestDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vigil-store-test-{}-{}-{}",
            std::process::id(),
            vigil_store::now_millis(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

mod sqlite_file {
    use super::*;

    vigil_store::store_conformance_tests!({
        let dir = TestDir::new();
        move |name: &str| -> Box<dyn FhirStore> {
            Box::new(SqliteStore::open(&dir.path().join(format!("{name}.db"))).unwrap())
        }
    });
}

mod sqlite_memory {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// In memory, "reopening" hands out the same store again.
    struct Shared(Arc<SqliteStore>);

    impl FhirStore for Shared {
        fn create(&self, r: serde_json::Value) -> vigil_store::Result<vigil_store::Stored> {
            self.0.create(r)
        }
        fn update(
            &self,
            rt: &str,
            id: &str,
            r: serde_json::Value,
            m: Option<u64>,
        ) -> vigil_store::Result<(vigil_store::Stored, bool)> {
            self.0.update(rt, id, r, m)
        }
        fn delete(
            &self,
            rt: &str,
            id: &str,
            m: Option<u64>,
        ) -> vigil_store::Result<Option<vigil_store::Stored>> {
            self.0.delete(rt, id, m)
        }
        fn read(&self, rt: &str, id: &str) -> vigil_store::Result<vigil_store::ReadOutcome> {
            self.0.read(rt, id)
        }
        fn vread(
            &self,
            rt: &str,
            id: &str,
            v: u64,
        ) -> vigil_store::Result<vigil_store::ReadOutcome> {
            self.0.vread(rt, id, v)
        }
        fn history(
            &self,
            s: vigil_store::HistoryScope,
            q: vigil_store::HistoryQuery,
        ) -> vigil_store::Result<vigil_store::HistoryPage> {
            self.0.history(s, q)
        }
        fn transaction(
            &self,
            ops: Vec<vigil_store::WriteOp>,
        ) -> vigil_store::Result<Vec<vigil_store::WriteOutcome>> {
            self.0.transaction(ops)
        }
        fn index_values(
            &self,
            rt: &str,
            id: &str,
        ) -> vigil_store::Result<Vec<(String, vigil_store::OwnedIndexValue)>> {
            self.0.index_values(rt, id)
        }
        fn search(
            &self,
            q: &vigil_fhir::search::SearchQuery,
            p: &vigil_store::SearchPage,
        ) -> vigil_store::Result<vigil_store::SearchResult> {
            self.0.search(q, p)
        }
    }

    vigil_store::store_conformance_tests!({
        let stores: Mutex<HashMap<String, Arc<SqliteStore>>> = Mutex::default();
        move |name: &str| -> Box<dyn FhirStore> {
            let mut stores = stores.lock().unwrap();
            let s = stores
                .entry(name.to_string())
                .or_insert_with(|| Arc::new(SqliteStore::open_in_memory().unwrap()));
            Box::new(Shared(s.clone()))
        }
    });
}

/// The child side of [`acknowledged_writes_survive_kill_9`]: when started with
/// `VIGIL_STORE_CRASH_CHILD=<db path>`, write forever from several threads and print
/// `ID <type> <id>` after each write returned. Without the variable it does nothing.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os("VIGIL_STORE_CRASH_CHILD") else {
        return;
    };
    let store = std::sync::Arc::new(SqliteStore::open(Path::new(&path)).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || loop {
                if t == 0 {
                    let ops = (0..10)
                        .map(|i| vigil_store::WriteOp::Create {
                            resource: vigil_store::conformance::observation("p", i, "2024-01-01"),
                            id: None,
                        })
                        .collect();
                    let out = store.transaction(ops).unwrap();
                    for o in out {
                        let s = o.stored().unwrap();
                        println!("ID {} {}", s.resource_type, s.id);
                    }
                } else {
                    let s = store
                        .create(vigil_store::conformance::observation("p", 1, "2024-01-01"))
                        .unwrap();
                    println!("ID {} {}", s.resource_type, s.id);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Every write acknowledged before a `kill -9` is there after reopening.
#[cfg(unix)]
#[test]
fn acknowledged_writes_survive_kill_9() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = TestDir::new();
    let db = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("VIGIL_STORE_CRASH_CHILD", &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = Vec::new();
    while acked.len() < 2_000 {
        let Some(line) = lines.next() else { break };
        if let Some(rest) = line.unwrap().strip_prefix("ID ") {
            acked.push(rest.to_string());
        }
    }
    // Kill mid-stream (Child::kill is SIGKILL on Unix), then collect what was printed
    // before the kill: those writes were acknowledged.
    child.kill().unwrap();
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix("ID ") {
            acked.push(rest.to_string());
        }
    }
    child.wait().unwrap();
    assert!(acked.len() >= 2_000, "child wrote only {}", acked.len());
    let store = SqliteStore::open(&db).unwrap();
    for entry in &acked {
        let (rt, id) = entry.split_once(' ').unwrap();
        assert!(
            matches!(
                store.read(rt, id).unwrap(),
                vigil_store::ReadOutcome::Found(_)
            ),
            "acknowledged {rt}/{id} lost"
        );
    }
}
