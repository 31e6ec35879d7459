//! Load figures for the dashboard, on loopback only, bounded in count:
//! Argon2id cost, `GET /api/worklist` throughput with a synthetic 200-patient worklist,
//! and SSE fan-out latency to 200 connected clients.
//!
//! `cargo run --release -p vigil-dashboard --example dashboard_load`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use vigil_dashboard::*;

const PATIENTS: usize = 200;
const REQUESTS: usize = 2000;
const CONCURRENCY: usize = 8;
const SSE_CLIENTS: usize = 200;
const SSE_EVENTS: usize = 50;

/// Every patient is on team "t" and has five vitals.
struct Synthetic {
    rows: Vec<WorklistRow>,
    tx: broadcast::Sender<Update>,
}

impl CareData for Synthetic {
    fn worklist(&self, _: &Viewer) -> Result<Vec<WorklistRow>, CareDataError> {
        Ok(self.rows.clone())
    }
    fn patient(
        &self,
        _: &Viewer,
        _: &str,
        _: Option<i64>,
    ) -> Result<Option<PatientDetail>, CareDataError> {
        Ok(None)
    }
    fn alerts(&self, _: &Viewer, _: Option<AlertStatus>) -> Result<Vec<Alert>, CareDataError> {
        Ok(vec![])
    }
    fn acknowledge(&self, _: &Viewer, id: &str, _: Option<&str>) -> Result<Alert, CareDataError> {
        Err(CareDataError::NotFound(id.into()))
    }
    fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.tx.subscribe()
    }
    fn can_view(&self, _: &Viewer, _: &str) -> bool {
        true
    }
}

fn synthetic() -> Synthetic {
    let vital = |v: &str, value: f64, unit: &str| VitalLatest {
        vital: v.into(),
        label: v.into(),
        value,
        value2: None,
        unit: unit.into(),
        time: "2026-01-01T12:00:00Z".into(),
    };
    let rows = (0..PATIENTS)
        .map(|i| WorklistRow {
            patient_id: format!("p{i}"),
            name: format!("Patient {i:03}"),
            birth_date: Some("1950-01-01".into()),
            gender: Some("female".into()),
            risk: Some(RiskSummary {
                score: (i % 10) as u32,
                band: ["low", "low-medium", "medium", "high"][i % 4].into(),
                partial: false,
                missing: vec![],
                time: "2026-01-01T12:00:00Z".into(),
            }),
            latest: vec![
                vital("heart-rate", 80.0, "/min"),
                vital("respiratory-rate", 16.0, "/min"),
                vital("spo2", 96.0, "%"),
                vital("temperature", 37.1, "Cel"),
                vital("weight", 71.5, "kg"),
            ],
            open_alerts: (i % 3) as u32,
            flag_active: i % 7 == 0,
        })
        .collect();
    Synthetic {
        rows,
        tx: broadcast::channel(1024).0,
    }
}

async fn request(addr: SocketAddr, req: &str) -> (u16, usize) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let status = std::str::from_utf8(&buf[9..12]).unwrap().parse().unwrap();
    (status, buf.len())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::temp_dir().join(format!("vigil-dashboard-load-{}", std::process::id()));
    let users = Arc::new(UserStore::open(&dir).unwrap());

    // Argon2id: hashing (add_user) and verification (each login).
    let t = Instant::now();
    for i in 0..5 {
        users
            .add_user(
                &format!("u{i}"),
                "U",
                "load-test-password",
                Role::CareTeam,
                &["t".into()],
            )
            .unwrap();
    }
    let hash_ms = t.elapsed().as_secs_f64() * 1000.0 / 5.0;
    let t = Instant::now();
    for _ in 0..5 {
        assert!(users
            .verify_password("u0", "load-test-password")
            .unwrap()
            .is_some());
    }
    let verify_ms = t.elapsed().as_secs_f64() * 1000.0 / 5.0;
    println!("argon2id (m=19 MiB, t=2, p=1): add_user {hash_ms:.1} ms, verify {verify_ms:.1} ms");

    let data = Arc::new(synthetic());
    let app = router(users.clone(), data.clone(), DashboardConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let token = users
        .create_session("u0", Duration::from_secs(600))
        .unwrap()
        .token;
    let get = Arc::new(format!(
        "GET /api/worklist HTTP/1.1\r\nHost: x\r\nCookie: vigil_session={token}\r\nConnection: close\r\n\r\n"
    ));

    let (status, size) = request(addr, &get).await;
    assert_eq!(status, 200);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let get = get.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for _ in 0..REQUESTS / CONCURRENCY {
                let t = Instant::now();
                let (status, _) = request(addr, &get).await;
                assert_eq!(status, 200);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await.unwrap());
    }
    let secs = t.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "GET /api/worklist ({PATIENTS} patients, {} KB): {:.0} req/s with {CONCURRENCY} clients, p50 {:.2} ms, p99 {:.2} ms",
        size / 1024,
        lat.len() as f64 / secs,
        pct(&lat, 0.5).as_secs_f64() * 1000.0,
        pct(&lat, 0.99).as_secs_f64() * 1000.0
    );

    // SSE fan-out: time from broadcast to the last of SSE_CLIENTS clients seeing it.
    let mut clients = Vec::new();
    for _ in 0..SSE_CLIENTS {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req =
            format!("GET /api/events HTTP/1.1\r\nHost: x\r\nCookie: vigil_session={token}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        clients.push(s);
    }
    let mut fanout = Vec::new();
    for i in 0..SSE_EVENTS {
        let needle = format!("\"p{i}\"");
        let t = Instant::now();
        data.tx
            .send(Update::Patient {
                patient_id: format!("p{i}"),
            })
            .unwrap();
        for c in clients.iter_mut() {
            let mut got = String::new();
            let mut buf = [0u8; 1024];
            while !got.contains(&needle) {
                let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
                    .await
                    .expect("event within 10 s")
                    .unwrap();
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        fanout.push(t.elapsed());
    }
    fanout.sort();
    println!(
        "SSE fan-out to {SSE_CLIENTS} clients ({SSE_EVENTS} updates): p50 {:.2} ms, max {:.2} ms until the last client has it",
        pct(&fanout, 0.5).as_secs_f64() * 1000.0,
        fanout.last().unwrap().as_secs_f64() * 1000.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
