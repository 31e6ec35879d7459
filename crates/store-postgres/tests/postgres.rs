//! The conformance suite on PostgreSQL, plus PostgreSQL-specific checks.
//!
//! The server is `VIGIL_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test works in fresh schemas
//! `vigil_test_<random>_<store name>`, dropped when it ends. An unreachable server
//! fails the tests: they never skip.

// Test code: failures should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use vigil_store::{FhirStore, StoreError};
use vigil_store_postgres::{PgOptions, PostgresStore};

fn database_url() -> String {
    std::env::var("VIGIL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// The schemas of one test, dropped with it.
struct Schemas {
    url: String,
    base: String,
    made: Mutex<Vec<String>>,
}

impl Schemas {
    fn new() -> Schemas {
        // The random tail of a v7 UUID: unique across concurrent test processes.
        let id = vigil_store::new_id().replace('-', "");
        Schemas {
            url: database_url(),
            base: format!("vigil_test_{}", &id[id.len() - 12..]),
            made: Mutex::new(Vec::new()),
        }
    }

    /// The schema of store `name`.
    fn schema(&self, name: &str) -> String {
        let tail: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let mut s = format!("{}_{tail}", self.base);
        s.truncate(63);
        let mut made = self.made.lock().unwrap();
        if !made.contains(&s) {
            made.push(s.clone());
        }
        s
    }

    fn open(&self, name: &str) -> PostgresStore {
        let schema = self.schema(name);
        PostgresStore::connect(&self.url, PgOptions::with_schema(&schema)).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} (VIGIL_TEST_DATABASE_URL) is required: {e}",
                self.url
            )
        })
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        for s in self.made.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            // Best effort: a failing drop must not hide the test's own failure.
            let _ = PostgresStore::drop_schema(&self.url, s);
        }
    }
}

mod conformance {
    use super::*;

    vigil_store::store_conformance_tests!({
        let schemas = Schemas::new();
        move |name: &str| -> Box<dyn FhirStore> { Box::new(schemas.open(name)) }
    });
}

/// Connecting twice migrates once; the version table records the schema version.
#[test]
fn migrations_are_idempotent() {
    let schemas = Schemas::new();
    let a = schemas.open("migrate");
    let p = a
        .create(serde_json::json!({"resourceType": "Patient"}))
        .unwrap();
    let b = schemas.open("migrate");
    assert!(b.read("Patient", &p.id).unwrap().found().is_some());
    let mut c = postgres::Client::connect(&schemas.url, postgres::NoTls).unwrap();
    let rows = c
        .query(
            &format!(
                "SELECT version FROM \"{}\".vigil_schema_version",
                a.schema()
            ),
            &[],
        )
        .unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, vec![1]);
}

/// Concurrent first connects to one schema do not race the migration.
#[test]
fn concurrent_connects_migrate_once() {
    let schemas = Schemas::new();
    let schema = schemas.schema("race");
    let url = schemas.url.clone();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (url, schema) = (url.clone(), schema.clone());
            std::thread::spawn(move || {
                PostgresStore::connect(&url, PgOptions::with_schema(&schema)).map(|_| ())
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
}

/// A schema written by a newer build is refused, not used.
#[test]
fn newer_schema_is_refused() {
    let schemas = Schemas::new();
    let a = schemas.open("newer");
    let mut c = postgres::Client::connect(&schemas.url, postgres::NoTls).unwrap();
    c.batch_execute(&format!(
        "UPDATE \"{}\".vigil_schema_version SET version = 99",
        a.schema()
    ))
    .unwrap();
    drop(a);
    let e = PostgresStore::connect(
        &schemas.url,
        PgOptions::with_schema(&schemas.schema("newer")),
    )
    .err()
    .unwrap();
    assert!(
        matches!(&e, StoreError::Storage(m) if m.contains("newer")),
        "{e:?}"
    );
}

/// Bad options and unreachable servers are clean errors.
#[test]
fn connect_errors() {
    for bad in ["", "Public", "a-b", "x\"; DROP SCHEMA public; --"] {
        let e = PostgresStore::connect(&database_url(), PgOptions::with_schema(bad))
            .err()
            .unwrap();
        assert!(matches!(e, StoreError::Invalid(_)), "{bad:?}: {e:?}");
    }
    let e = PostgresStore::connect("postgres://[bad", PgOptions::default())
        .err()
        .unwrap();
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    // Port 1 on localhost: nothing listens there.
    let e = PostgresStore::connect("postgres://postgres@127.0.0.1:1/test", PgOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(&e, StoreError::Storage(m) if m.contains("cannot connect")),
        "{e:?}"
    );
}

/// Text PostgreSQL cannot hold (NUL characters) is rejected as invalid input, and the
/// store stays usable.
#[test]
fn nul_characters_are_invalid() {
    let schemas = Schemas::new();
    let s = schemas.open("nul");
    let e = s
        .create(serde_json::json!({"resourceType": "Patient", "name": [{"family": "a\u{0}b"}]}))
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    let q = vigil_store::conformance::parse_search("Patient", "name=a%00b");
    let e = s
        .search(&q, &vigil_store::SearchPage::default())
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    s.create(serde_json::json!({"resourceType": "Patient"}))
        .unwrap();
}

/// Concurrent creates of one explicit id: exactly one wins, the others are conflicts
/// (the placeholder claim serializes them); concurrent updates-as-create of another id
/// all succeed, as versions 1..n.
#[test]
fn concurrent_claims_of_one_id() {
    use std::sync::Arc;
    use vigil_store::WriteOp;
    let schemas = Schemas::new();
    let s: Arc<PostgresStore> = Arc::new(schemas.open("claims"));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let created = s.transaction(vec![WriteOp::Create {
                    resource: serde_json::json!({"resourceType": "Patient", "gender": "male"}),
                    id: Some("dup".into()),
                }]);
                let updated = s.update(
                    "Patient",
                    "up",
                    serde_json::json!({"resourceType": "Patient", "birthDate": format!("200{t}")}),
                    None,
                );
                (created, updated.map(|(u, created)| (u.version, created)))
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let wins = results.iter().filter(|r| r.0.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    for (c, _) in &results {
        if let Err(e) = c {
            assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        }
    }
    let mut versions: Vec<u64> = results.iter().map(|r| r.1.as_ref().unwrap().0).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    let creates = results.iter().filter(|r| r.1.as_ref().unwrap().1).count();
    assert_eq!(creates, 1);
    assert_eq!(
        s.read("Patient", "dup").unwrap().found().unwrap().version,
        1
    );
}
