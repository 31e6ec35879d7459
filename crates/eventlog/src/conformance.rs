//! The conformance suite every [`EventLog`] backend must pass.
//!
//! Each check is a public function taking a factory: `make(name)` opens the log called
//! `name` — empty the first time, the same data again after the previous log of that name
//! was dropped (for the persistence check). A backend's test binary instantiates all
//! checks as `#[test]`s with [`eventlog_conformance_tests!`](crate::eventlog_conformance_tests):
//!
//! ```text
//! (as instantiated in crates/eventlog/tests/eventlog.rs)
//! vigil_eventlog::eventlog_conformance_tests!({
//!     let dir = TestDir::new();
//!     move |name: &str| -> Box<dyn EventLog> {
//!         Box::new(FileLog::open(&dir.path().join(name), FileLogOptions::default()).unwrap())
//!     }
//! });
//! ```
//!
//! The expression is evaluated once per test, so it can own per-test resources that it
//! releases when dropped. A backend whose topics are shared (a broker) should give each
//! `name` its own topic prefix or namespace.
//!
//! This module is test code compiled into the library so other backends' crates can use
//! it; it panics on failures like any test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A log factory: `make(name)` opens (creating or reopening) the log `name`.
pub type Make<'a> = &'a dyn Fn(&str) -> Box<dyn EventLog>;

/// Generate one `#[test]` per conformance check for a backend; see
/// [`conformance`](crate::conformance).
#[macro_export]
macro_rules! eventlog_conformance_tests {
    ($make:expr) => {
        $crate::eventlog_conformance_tests!(@tests $make;
            append_assigns_consecutive_offsets,
            read_returns_what_was_appended,
            read_bounds_and_paging,
            topics_are_independent,
            duplicate_keys_are_not_appended,
            end_offset_and_wait_for,
            commit_and_committed,
            invalid_names_are_rejected,
            concurrent_appenders_lose_nothing,
            data_survives_reopen
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let make = $make;
                $crate::conformance::$name(&make);
            }
        )*
    };
}

/// A keyless record with this payload.
pub fn rec(payload: &str) -> AppendRecord {
    AppendRecord {
        key: None,
        timestamp_ms: 1_700_000_000_000,
        payload: payload.as_bytes().to_vec(),
    }
}

/// A keyed record.
pub fn keyed(key: &str, payload: &str) -> AppendRecord {
    AppendRecord {
        key: Some(key.to_string()),
        ..rec(payload)
    }
}

fn payloads(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.payload.clone()).unwrap())
        .collect()
}

/// Offsets start at 0 and are consecutive across calls.
pub fn append_assigns_consecutive_offsets(make: Make) {
    let log = make("offsets");
    assert_eq!(log.end_offset("ingest").unwrap(), 0);
    assert_eq!(log.append("ingest", vec![]).unwrap(), vec![]);
    let a = log.append("ingest", vec![rec("a"), rec("b")]).unwrap();
    assert_eq!(a, vec![Appended::New(0), Appended::New(1)]);
    let b = log.append("ingest", vec![rec("c")]).unwrap();
    assert_eq!(b, vec![Appended::New(2)]);
    assert_eq!(log.end_offset("ingest").unwrap(), 3);
}

/// Every field comes back as appended, including binary and empty payloads.
pub fn read_returns_what_was_appended(make: Make) {
    let log = make("fields");
    let binary: Vec<u8> = (0..=255u8).collect();
    let records = vec![
        AppendRecord {
            key: Some("dev-1/msg-1".into()),
            timestamp_ms: -5,
            payload: binary.clone(),
        },
        AppendRecord {
            key: None,
            timestamp_ms: i64::MAX,
            payload: vec![],
        },
        AppendRecord {
            key: Some("ключ/✓".into()),
            timestamp_ms: 1_700_000_000_123,
            payload: b"{\"spo2\":97}".to_vec(),
        },
    ];
    log.append("ingest", records.clone()).unwrap();
    let back = log.read("ingest", 0, 10).unwrap();
    assert_eq!(back.len(), 3);
    for (i, (got, want)) in back.iter().zip(&records).enumerate() {
        assert_eq!(got.offset, i as u64);
        assert_eq!(got.key, want.key);
        assert_eq!(got.timestamp_ms, want.timestamp_ms);
        assert_eq!(got.payload, want.payload);
    }
}

/// `max_records` limits, reads start mid-log, reads at or past the end are empty.
pub fn read_bounds_and_paging(make: Make) {
    let log = make("paging");
    let batch: Vec<_> = (0..25).map(|i| rec(&format!("r{i}"))).collect();
    log.append("ingest", batch).unwrap();
    assert!(log.read("ingest", 0, 0).unwrap().is_empty());
    assert_eq!(payloads(&log.read("ingest", 3, 2).unwrap()), ["r3", "r4"]);
    assert!(log.read("ingest", 25, 10).unwrap().is_empty());
    assert!(log.read("ingest", 1_000, 10).unwrap().is_empty());
    let mut all = Vec::new();
    let mut from = 0;
    loop {
        let page = log.read("ingest", from, 7).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        from = page.last().unwrap().offset + 1;
        all.extend(page);
    }
    let want: Vec<String> = (0..25).map(|i| format!("r{i}")).collect();
    assert_eq!(payloads(&all), want);
    assert!(all.iter().enumerate().all(|(i, r)| r.offset == i as u64));
}

/// Offsets, keys and groups are per topic.
pub fn topics_are_independent(make: Make) {
    let log = make("topics");
    log.append("ingest", vec![keyed("k", "i0"), rec("i1")])
        .unwrap();
    let dl = log.append("dead-letter", vec![keyed("k", "d0")]).unwrap();
    assert_eq!(dl, vec![Appended::New(0)]);
    assert_eq!(log.end_offset("ingest").unwrap(), 2);
    assert_eq!(log.end_offset("dead-letter").unwrap(), 1);
    assert_eq!(payloads(&log.read("dead-letter", 0, 10).unwrap()), ["d0"]);
    log.commit("ingest", "normalizer", 2).unwrap();
    assert_eq!(log.committed("dead-letter", "normalizer").unwrap(), 0);
}

/// A key seen before (in an earlier call or earlier in the same call) is not appended.
pub fn duplicate_keys_are_not_appended(make: Make) {
    let log = make("dedup");
    let first = log
        .append("ingest", vec![keyed("dev/1", "a"), keyed("dev/2", "b")])
        .unwrap();
    assert_eq!(first, vec![Appended::New(0), Appended::New(1)]);
    let again = log
        .append(
            "ingest",
            vec![
                keyed("dev/2", "b-retry"),
                keyed("dev/3", "c"),
                keyed("dev/3", "c-again"),
                rec("no key"),
            ],
        )
        .unwrap();
    assert_eq!(
        again,
        vec![
            Appended::Duplicate(1),
            Appended::New(2),
            Appended::Duplicate(2),
            Appended::New(3)
        ]
    );
    assert_eq!(again[0].offset(), 1);
    let all = log.read("ingest", 0, 100).unwrap();
    assert_eq!(payloads(&all), ["a", "b", "c", "no key"]);
}

/// `wait_for` times out with false and wakes with true when another thread appends.
pub fn end_offset_and_wait_for(make: Make) {
    let log: Arc<dyn EventLog> = Arc::from(make("wait"));
    let started = Instant::now();
    assert!(!log
        .wait_for("ingest", 0, Duration::from_millis(50))
        .unwrap());
    assert!(started.elapsed() >= Duration::from_millis(50));
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            log.append("ingest", vec![rec("x")]).unwrap();
        })
    };
    assert!(log.wait_for("ingest", 0, Duration::from_secs(30)).unwrap());
    writer.join().unwrap();
    assert_eq!(log.end_offset("ingest").unwrap(), 1);
    // Already satisfied: immediate true. Waiting for the next offset times out.
    assert!(log.wait_for("ingest", 0, Duration::ZERO).unwrap());
    assert!(!log
        .wait_for("ingest", 1, Duration::from_millis(10))
        .unwrap());
}

/// Committed offsets default to 0, are per group, may move back, and not past the end.
pub fn commit_and_committed(make: Make) {
    let log = make("commit");
    assert_eq!(log.committed("ingest", "normalizer").unwrap(), 0);
    log.append("ingest", (0..5).map(|i| rec(&i.to_string())).collect())
        .unwrap();
    log.commit("ingest", "normalizer", 3).unwrap();
    log.commit("ingest", "archiver", 5).unwrap();
    assert_eq!(log.committed("ingest", "normalizer").unwrap(), 3);
    assert_eq!(log.committed("ingest", "archiver").unwrap(), 5);
    log.commit("ingest", "normalizer", 1).unwrap();
    assert_eq!(log.committed("ingest", "normalizer").unwrap(), 1);
    let err = log.commit("ingest", "normalizer", 6).unwrap_err();
    assert!(
        matches!(err, LogError::OffsetBeyondEnd { offset: 6, end: 5 }),
        "{err}"
    );
    assert_eq!(log.committed("ingest", "normalizer").unwrap(), 1);
}

/// Names that could escape the log's namespace or are empty are rejected.
pub fn invalid_names_are_rejected(make: Make) {
    let log = make("names");
    for bad in ["", "../etc", "a/b", ".hidden", "sp ace", "x\0y"] {
        assert!(
            matches!(
                log.append(bad, vec![rec("x")]),
                Err(LogError::InvalidName { kind: "topic", .. })
            ),
            "topic {bad:?} accepted"
        );
        assert!(
            matches!(
                log.commit("ingest", bad, 0),
                Err(LogError::InvalidName { kind: "group", .. })
            ),
            "group {bad:?} accepted"
        );
    }
    assert!(log.end_offset("ok.topic_name-1").is_ok());
}

/// Many threads appending at once: offsets are unique and contiguous, nothing lost.
pub fn concurrent_appenders_lose_nothing(make: Make) {
    let log: Arc<dyn EventLog> = Arc::from(make("concurrent"));
    let threads = 8;
    let per_thread = 100;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut offsets = Vec::new();
                for i in 0..per_thread {
                    let batch = if i % 10 == 0 {
                        vec![keyed(&format!("t{t}/{i}"), &format!("t{t}-{i}"))]
                    } else {
                        vec![rec(&format!("t{t}-{i}"))]
                    };
                    let out = log.append("ingest", batch).unwrap();
                    offsets.push(out[0]);
                }
                offsets
            })
        })
        .collect();
    let mut offsets = HashSet::new();
    for h in handles {
        for a in h.join().unwrap() {
            let Appended::New(o) = a else {
                panic!("unexpected duplicate {a:?}")
            };
            assert!(offsets.insert(o), "offset {o} assigned twice");
        }
    }
    let total = (threads * per_thread) as u64;
    assert_eq!(offsets.len() as u64, total);
    assert_eq!(log.end_offset("ingest").unwrap(), total);
    let all = log.read("ingest", 0, usize::MAX).unwrap();
    assert_eq!(all.len() as u64, total);
    let got: HashSet<String> = payloads(&all).into_iter().collect();
    for t in 0..threads {
        for i in 0..per_thread {
            assert!(got.contains(&format!("t{t}-{i}")));
        }
    }
}

/// Records, committed offsets and idempotency keys survive closing and reopening.
pub fn data_survives_reopen(make: Make) {
    {
        let log = make("reopen");
        log.append("ingest", vec![keyed("dev/1", "a"), rec("b")])
            .unwrap();
        log.append("dead-letter", vec![rec("bad")]).unwrap();
        log.commit("ingest", "normalizer", 1).unwrap();
    }
    let log = make("reopen");
    assert_eq!(log.end_offset("ingest").unwrap(), 2);
    assert_eq!(payloads(&log.read("ingest", 0, 10).unwrap()), ["a", "b"]);
    assert_eq!(payloads(&log.read("dead-letter", 0, 10).unwrap()), ["bad"]);
    assert_eq!(log.committed("ingest", "normalizer").unwrap(), 1);
    assert_eq!(
        log.append("ingest", vec![keyed("dev/1", "a-retry"), rec("c")])
            .unwrap(),
        vec![Appended::Duplicate(0), Appended::New(2)]
    );
}
