//! Appends per second with 1 and 16 concurrent appenders of ~200-byte records, each append
//! a single durable (fsynced) record: the ingest gateway's pattern, one reading per request.
//!
//! `cargo run --release -p vigil-eventlog --example append_throughput [-- SECONDS]`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_eventlog::{AppendRecord, EventLog, FileLog, FileLogOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: u64 = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 3,
    };
    let dir = std::env::temp_dir().join(format!("vigil-eventlog-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let log = FileLog::open(&dir, FileLogOptions::default())?;
    let payload = br#"{"type":"pulse-oximeter","spo2":97,"pulseRate":72,"measuredAt":"2026-01-01T00:00:00Z","device":"0123456789abcdef","patient":"p-000123","seq":1234567,"fw":"1.2.3"}"#;
    println!("record payload: {} bytes + key", payload.len());
    for appenders in [1usize, 16] {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let topic = format!("bench-{appenders}");
        let start = Instant::now();
        let handles: Vec<_> = (0..appenders)
            .map(|t| {
                let (log, stop, count, topic) =
                    (log.clone(), stop.clone(), count.clone(), topic.clone());
                std::thread::spawn(move || -> Result<(), vigil_eventlog::LogError> {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        log.append(
                            &topic,
                            vec![AppendRecord {
                                key: Some(format!("dev-{t}/{i}")),
                                timestamp_ms: 0,
                                payload: payload.to_vec(),
                            }],
                        )?;
                        i += 1;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().map_err(|_| "appender panicked")??;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let n = count.load(Ordering::Relaxed);
        println!(
            "{appenders:>2} appender(s): {n} durable appends in {elapsed:.1} s = {:.0} appends/s",
            n as f64 / elapsed
        );
    }
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
