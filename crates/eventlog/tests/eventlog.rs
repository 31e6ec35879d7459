//! Tests of the event log: the shared conformance suite on `FileLog`, plus what only a
//! file backend has — torn-tail recovery, crash safety under `kill -9`, segment rollover,
//! retention and the idempotency-key window.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vigil_eventlog::conformance::{keyed, rec};
use vigil_eventlog::{AppendRecord, Appended, EventLog, FileLog, FileLogOptions, LogError};

struct TestDir(PathBuf);

impl TestDir {
    fn new() -> TestDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vigil-eventlog-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
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

mod file_log {
    use super::*;

    vigil_eventlog::eventlog_conformance_tests!({
        let dir = TestDir::new();
        move |name: &str| -> Box<dyn EventLog> {
            Box::new(FileLog::open(&dir.path().join(name), FileLogOptions::default()).unwrap())
        }
    });
}

/// Small segments so a few records roll over.
fn small_segments() -> FileLogOptions {
    FileLogOptions {
        segment_bytes: 1024,
        ..FileLogOptions::default()
    }
}

fn segment_files(topic_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(topic_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn append_n(log: &FileLog, topic: &str, n: usize, tag: &str) {
    for i in 0..n {
        log.append(topic, vec![rec(&format!("{tag}{i:04}-{}", "x".repeat(40)))])
            .unwrap();
    }
}

fn garbage_tail_is_truncated(garbage: &[u8]) {
    let dir = TestDir::new();
    {
        let log = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
        append_n(&log, "ingest", 10, "r");
    }
    let seg = segment_files(&dir.path().join("ingest")).pop().unwrap();
    let good_len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(garbage)
        .unwrap();
    let log = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
    assert_eq!(log.end_offset("ingest").unwrap(), 10);
    assert_eq!(log.read("ingest", 0, 100).unwrap().len(), 10);
    assert_eq!(
        log.append("ingest", vec![rec("after")]).unwrap(),
        vec![Appended::New(10)]
    );
    drop(log);
    let log = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
    let all = log.read("ingest", 0, 100).unwrap();
    assert_eq!(all.len(), 11);
    assert_eq!(all[10].payload, b"after");
}

#[test]
fn torn_tail_partial_header_is_truncated() {
    garbage_tail_is_truncated(&[0x10, 0x00, 0x00]);
}

#[test]
fn torn_tail_partial_body_is_truncated() {
    // A header announcing a 100-byte body of which only 5 bytes made it to disk.
    let mut g = 100u32.to_le_bytes().to_vec();
    g.extend_from_slice(&[0xAB; 4]);
    g.extend_from_slice(b"hello");
    garbage_tail_is_truncated(&g);
}

#[test]
fn torn_tail_bad_checksum_is_truncated() {
    // A complete-looking frame whose CRC does not match (zeroed-out page after a crash).
    let mut g = 40u32.to_le_bytes().to_vec();
    g.extend_from_slice(&[0; 44]);
    garbage_tail_is_truncated(&g);
}

#[test]
fn damage_in_a_closed_segment_is_an_error() {
    let dir = TestDir::new();
    {
        let log = FileLog::open(dir.path(), small_segments()).unwrap();
        append_n(&log, "ingest", 60, "r");
        assert!(log.segment_count("ingest").unwrap() >= 3);
    }
    let first = segment_files(&dir.path().join("ingest")).remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[30] ^= 0xFF;
    std::fs::write(&first, bytes).unwrap();
    match FileLog::open(dir.path(), small_segments()) {
        Err(LogError::Corrupt { path, reason }) => {
            assert!(path.ends_with("00000000000000000000.log"), "{path}");
            assert!(reason.contains("checksum"), "{reason}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a damaged closed segment was accepted"),
    }
}

#[test]
fn segments_roll_over_and_read_across() {
    let dir = TestDir::new();
    let log = FileLog::open(dir.path(), small_segments()).unwrap();
    append_n(&log, "ingest", 100, "r");
    let segments = log.segment_count("ingest").unwrap();
    assert!(segments >= 5, "only {segments} segments");
    assert_eq!(segment_files(&dir.path().join("ingest")).len(), segments);
    // Read pages that straddle segment boundaries.
    let mut from = 0;
    let mut seen = 0;
    while let Some(last) = log.read("ingest", from, 13).unwrap().last().cloned() {
        from = last.offset + 1;
        seen += 1;
        assert!(String::from_utf8(last.payload)
            .unwrap()
            .starts_with(&format!("r{:04}", last.offset)));
    }
    assert_eq!(from, 100);
    assert_eq!(seen, 8);
    drop(log);
    let log = FileLog::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.end_offset("ingest").unwrap(), 100);
    let mid = log.read("ingest", 57, 1).unwrap();
    assert_eq!(mid[0].offset, 57);
}

#[test]
fn concurrent_appenders_across_rollovers() {
    let dir = TestDir::new();
    let log = FileLog::open(dir.path(), small_segments()).unwrap();
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let batch = (0..3).map(|j| rec(&format!("{t}-{i}-{j}"))).collect();
                    let out = log.append("ingest", batch).unwrap();
                    // A batch's offsets are consecutive.
                    assert_eq!(out[2].offset(), out[0].offset() + 2);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(log.end_offset("ingest").unwrap(), 16 * 50 * 3);
    drop(log);
    let log = FileLog::open(dir.path(), small_segments()).unwrap();
    let all = log.read("ingest", 0, usize::MAX).unwrap();
    assert_eq!(all.len(), 2400);
    let distinct: std::collections::HashSet<_> = all.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(distinct.len(), 2400);
}

#[test]
fn retention_deletes_only_consumed_and_old_segments() {
    let dir = TestDir::new();
    let opts = FileLogOptions {
        retention: Duration::ZERO,
        ..small_segments()
    };
    let log = FileLog::open(dir.path(), opts.clone()).unwrap();
    append_n(&log, "ingest", 100, "r");
    let before = log.segment_count("ingest").unwrap();
    // No consumer group yet: nothing may go.
    assert_eq!(log.enforce_retention("ingest").unwrap(), 0);
    // The slow group commits first: with one group, its position alone would decide.
    log.commit("ingest", "slow", 50).unwrap();
    log.commit("ingest", "fast", 100).unwrap();
    let earliest = log.earliest_offset("ingest").unwrap();
    assert!(earliest > 0 && earliest <= 50, "earliest {earliest}");
    assert!(log.segment_count("ingest").unwrap() < before);
    assert_eq!(
        segment_files(&dir.path().join("ingest")).len(),
        log.segment_count("ingest").unwrap()
    );
    match log.read("ingest", 0, 10) {
        Err(LogError::OffsetTruncated {
            requested: 0,
            earliest: e,
        }) => assert_eq!(e, earliest),
        other => panic!("expected OffsetTruncated, got {other:?}"),
    }
    // Everything the slow group has yet to read is still there.
    let rest = log.read("ingest", 50, 1000).unwrap();
    assert_eq!(rest.len(), 50);
    drop(log);
    let log = FileLog::open(dir.path(), opts).unwrap();
    assert_eq!(log.earliest_offset("ingest").unwrap(), earliest);
    assert_eq!(log.end_offset("ingest").unwrap(), 100);
    assert_eq!(
        log.append("ingest", vec![rec("next")]).unwrap(),
        vec![Appended::New(100)]
    );
}

#[test]
fn retention_keeps_segments_younger_than_the_age() {
    let dir = TestDir::new();
    let log = FileLog::open(
        dir.path(),
        FileLogOptions {
            retention: Duration::from_secs(3600),
            ..small_segments()
        },
    )
    .unwrap();
    append_n(&log, "ingest", 100, "r");
    log.commit("ingest", "all", 100).unwrap();
    assert_eq!(log.enforce_retention("ingest").unwrap(), 0);
    assert_eq!(log.earliest_offset("ingest").unwrap(), 0);
}

#[test]
fn idempotency_keys_expire_after_the_window() {
    let dir = TestDir::new();
    let opts = FileLogOptions {
        dedup_window: Duration::from_millis(50),
        ..FileLogOptions::default()
    };
    let log = FileLog::open(dir.path(), opts.clone()).unwrap();
    log.append("ingest", vec![keyed("d/1", "a")]).unwrap();
    assert_eq!(
        log.append("ingest", vec![keyed("d/1", "a")]).unwrap(),
        vec![Appended::Duplicate(0)]
    );
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(
        log.append("ingest", vec![keyed("d/1", "a")]).unwrap(),
        vec![Appended::New(1)]
    );
    drop(log);
    // Rebuilt on open: within the window it is a duplicate; past it, new.
    let log = FileLog::open(dir.path(), opts).unwrap();
    assert_eq!(
        log.append("ingest", vec![keyed("d/1", "a")]).unwrap(),
        vec![Appended::Duplicate(1)]
    );
    std::thread::sleep(Duration::from_millis(120));
    drop(log);
    let log = FileLog::open(
        dir.path(),
        FileLogOptions {
            dedup_window: Duration::from_millis(50),
            ..FileLogOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        log.append("ingest", vec![keyed("d/1", "a")]).unwrap(),
        vec![Appended::New(2)]
    );
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = TestDir::new();
    let _log = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
    assert!(matches!(
        FileLog::open(dir.path(), FileLogOptions::default()),
        Err(LogError::Locked(_))
    ));
}

#[test]
fn oversized_records_are_rejected_whole() {
    let dir = TestDir::new();
    let log = FileLog::open(
        dir.path(),
        FileLogOptions {
            max_record_bytes: 100,
            ..FileLogOptions::default()
        },
    )
    .unwrap();
    let big = AppendRecord {
        key: None,
        timestamp_ms: 0,
        payload: vec![0; 101],
    };
    assert!(matches!(
        log.append("ingest", vec![rec("ok"), big]),
        Err(LogError::RecordTooLarge {
            size: 101,
            max: 100
        })
    ));
    assert_eq!(log.end_offset("ingest").unwrap(), 0);
}

#[test]
fn damaged_commit_file_is_reported() {
    let dir = TestDir::new();
    {
        let log = FileLog::open(dir.path(), FileLogOptions::default()).unwrap();
        log.append("ingest", vec![rec("a")]).unwrap();
        log.commit("ingest", "g", 1).unwrap();
    }
    std::fs::write(dir.path().join("ingest/groups/g.offset"), b"garbage").unwrap();
    assert!(matches!(
        FileLog::open(dir.path(), FileLogOptions::default()),
        Err(LogError::Corrupt { .. })
    ));
}

/// The child side of [`acknowledged_appends_survive_kill_9`]: when started with
/// `VIGIL_EVENTLOG_CRASH_CHILD=<dir>`, append forever from several threads and print
/// `ACK <offset> <payload>` after each append returned. Without the variable it does nothing.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os("VIGIL_EVENTLOG_CRASH_CHILD") else {
        return;
    };
    let log = FileLog::open(Path::new(&dir), small_segments()).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut out = std::io::stdout();
                for i in 0u64.. {
                    let payload = format!("t{t}-{i}");
                    let batch = vec![keyed(&payload, &payload), rec(&format!("{payload}-b"))];
                    let acked = log.append("ingest", batch).unwrap();
                    let line = format!(
                        "ACK {} {payload}\nACK {} {payload}-b\n",
                        acked[0].offset(),
                        acked[1].offset()
                    );
                    out.write_all(line.as_bytes()).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Every append acknowledged before a `kill -9` is there, at its offset, after reopening.
#[test]
fn acknowledged_appends_survive_kill_9() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = TestDir::new();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("VIGIL_EVENTLOG_CRASH_CHILD", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let parse = |line: &str, acked: &mut Vec<(u64, String)>| {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (offset, payload) = rest.split_once(' ').unwrap();
            acked.push((offset.parse::<u64>().unwrap(), payload.to_string()));
        }
    };
    while acked.len() < 1_000 {
        let Some(line) = lines.next() else { break };
        parse(&line.unwrap(), &mut acked);
    }
    // Kill mid-stream (Child::kill is SIGKILL), then collect what was printed before.
    child.kill().unwrap();
    for line in lines {
        let Ok(line) = line else { break };
        parse(&line, &mut acked);
    }
    child.wait().unwrap();
    assert!(
        acked.len() >= 1_000,
        "child acknowledged only {}",
        acked.len()
    );
    let log = FileLog::open(dir.path(), small_segments()).unwrap();
    let all = log.read("ingest", 0, usize::MAX).unwrap();
    assert_eq!(all.len() as u64, log.end_offset("ingest").unwrap());
    for (offset, payload) in &acked {
        let r = all
            .get(*offset as usize)
            .unwrap_or_else(|| panic!("acknowledged offset {offset} lost"));
        assert_eq!(r.payload, payload.as_bytes(), "offset {offset}");
    }
    // Keys rebuilt from the recovered log: retrying an acknowledged keyed append is a duplicate.
    let (offset, payload) = acked.iter().find(|(_, p)| !p.ends_with("-b")).unwrap();
    let again = log.append("ingest", vec![keyed(payload, payload)]).unwrap();
    assert_eq!(again, vec![Appended::Duplicate(*offset)]);
}

#[test]
fn logs_are_shareable_trait_objects() {
    let dir = TestDir::new();
    let log: Arc<dyn EventLog> =
        Arc::new(FileLog::open(dir.path(), FileLogOptions::default()).unwrap());
    log.append("ingest", vec![rec("x")]).unwrap();
    assert_eq!(log.read("ingest", 0, 1).unwrap()[0].payload, b"x");
}
