//! `vigil bench pipeline`: device readings through the real ingest API, measuring the
//! time from the 2xx answer to the deterioration Flag being readable.
//!
//! Workload: an in-process server on a fresh data directory (embedded defaults);
//! `--patients` patients with a wearable each, posting one reading per request (as a
//! device does) at `--rate` readings/s from `--clients` HTTP clients for `--seconds`.
//! Background readings are normal vitals. Every `--trigger-every` ms one patient that
//! has not deteriorated yet posts a reading that scores NEWS2 high; its latency is from
//! the 2xx answer to the moment its Flag is written (the pipeline's change event,
//! fired after the FHIR write commits). Several rates (`--rate 500,1000,2000`) run in
//! turn; the sustained rate is the highest whose p99 stays under 1 s.

use crate::cmd::serve::{runtime, Server};
use crate::config::{Config, ServeArgs};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil_monitor::pipeline::Change;

/// `vigil bench pipeline` options.
#[derive(clap::Args)]
pub struct PipelineArgs {
    /// Readings per second to offer; several comma-separated rates run in turn.
    #[arg(long, default_value = "1000", value_delimiter = ',')]
    rate: Vec<u32>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Simulated patients (each with a wearable).
    #[arg(long, default_value_t = 500)]
    patients: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Milliseconds between deterioration triggers.
    #[arg(long, default_value_t = 200)]
    trigger_every: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

pub fn run(args: PipelineArgs) -> ExitCode {
    match bench(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct PhaseResult {
    rate: u32,
    offered: u64,
    accepted: u64,
    failed: u64,
    achieved_rate: f64,
    triggers: usize,
    flagged: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn bench(args: PipelineArgs) -> Result<()> {
    anyhow::ensure!(args.patients >= 2, "--patients must be at least 2");
    anyhow::ensure!(
        !args.rate.is_empty() && args.rate.iter().all(|r| *r > 0),
        "--rate must be positive"
    );
    let dir = std::env::temp_dir().join(format!(
        "vigil-bench-pipeline-{}",
        vigil_store::now_millis()
    ));
    let config = Config::resolve(&ServeArgs {
        data_dir: Some(dir.clone()),
        listen: Some("127.0.0.1:0".parse()?),
        default_team: Some("bench".into()),
        ..Default::default()
    })?;
    let server = Server::open(&config)?;
    eprintln!("vigil bench pipeline: data in {}", dir.display());
    let mut credentials = Vec::with_capacity(args.patients);
    for i in 0..args.patients {
        if i % 50 == 0 {
            eprint!("\rregistering patients {i}/{}", args.patients);
        }
        let patient = serde_json::json!({"resourceType": "Patient", "name": [{"family": format!("Bench{i}"), "given": ["Pat"]}]});
        let id = server
            .monitor
            .add_patient(patient, &["bench".to_string()])?;
        let reg = server.monitor.register_device(&id, "wearable")?;
        credentials.push((id, format!("Bearer {}", reg.credential())));
    }
    eprintln!(
        "\rregistered {} patients with a wearable each",
        args.patients
    );
    let flagged_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut changes = server.monitor.pipeline.subscribe();
    let rt = runtime()?;
    let results = rt.block_on(async {
        let listener = server.bind().await?;
        let (stop_tx, stop_rx) = vigil_server::tokio::sync::oneshot::channel::<()>();
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let flagged = flagged_at.clone();
        vigil_server::tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(Change::Alert { patient_id, .. }) => {
                        flagged
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .entry(patient_id)
                            .or_insert_with(Instant::now);
                    }
                    Ok(_) => {}
                    Err(vigil_server::tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        });
        let serving = vigil_server::tokio::spawn(server.run(
            listener,
            async {
                let _ = stop_rx.await;
            },
            move |url| {
                let _ = url_tx.send(url.to_string());
            },
        ));
        let url = vigil_server::tokio::task::spawn_blocking(move || url_rx.recv())
            .await
            .context("server task")?
            .context("the server did not start")?;
        let credentials = Arc::new(credentials);
        let mut results = Vec::new();
        let mut next_trigger = 0usize;
        for &rate in &args.rate {
            let phase = {
                let credentials = credentials.clone();
                let flagged = flagged_at.clone();
                let url = url.clone();
                let clients = args.clients;
                let seconds = args.seconds;
                let trigger_every = args.trigger_every;
                let start_trigger = next_trigger;
                vigil_server::tokio::task::spawn_blocking(move || {
                    run_phase(&url, &credentials, &flagged, rate, seconds, clients, trigger_every, start_trigger)
                })
                .await
                .context("load task")??
            };
            next_trigger += phase.triggers;
            eprintln!(
                "rate {:>5}/s: accepted {} ({:.0}/s), Flag latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({}/{} flagged)",
                phase.rate, phase.accepted, phase.achieved_rate, phase.p50_ms, phase.p99_ms, phase.max_ms, phase.flagged, phase.triggers
            );
            results.push(phase);
            if next_trigger >= credentials.len() {
                eprintln!("(every patient has deteriorated; add --patients to run more rates)");
                break;
            }
        }
        let _ = stop_tx.send(());
        serving.await.context("server task")??;
        anyhow::Ok(results)
    })?;
    println!();
    println!("| offered readings/s | accepted/s | triggers | flagged | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {:.0} | {} | {} | {:.1} | {:.1} | {:.1} |",
            r.rate, r.achieved_rate, r.triggers, r.flagged, r.p50_ms, r.p99_ms, r.max_ms
        );
    }
    let sustained = results
        .iter()
        .filter(|r| {
            r.p99_ms < 1000.0
                && r.flagged == r.triggers
                && r.failed == 0
                && r.achieved_rate >= 0.95 * f64::from(r.rate)
        })
        .map(|r| r.rate)
        .max();
    match sustained {
        Some(r) => println!("\nsustained: {r} readings/s with Flag p99 under 1 s"),
        None => println!("\nno offered rate kept the Flag p99 under 1 s"),
    }
    if let Some(path) = &args.json {
        let json: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({"rate": r.rate, "offered": r.offered, "accepted": r.accepted, "failed": r.failed,
                    "acceptedPerSecond": r.achieved_rate, "triggers": r.triggers, "flagged": r.flagged,
                    "p50Ms": r.p50_ms, "p99Ms": r.p99_ms, "maxMs": r.max_ms})
            })
            .collect();
        std::fs::write(
            path,
            serde_json::to_vec_pretty(
                &serde_json::json!({"phases": json, "sustained": sustained}),
            )?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_phase(
    url: &str,
    credentials: &[(String, String)],
    flagged: &Mutex<HashMap<String, Instant>>,
    rate: u32,
    seconds: u64,
    clients: usize,
    trigger_every: u64,
    first_trigger: usize,
) -> Result<PhaseResult> {
    let ingest = format!("{url}/ingest");
    let total = u64::from(rate) * seconds;
    let issued = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let start = Instant::now();
    let triggers_wanted = ((seconds * 1000) / trigger_every.max(1)) as usize;
    let trigger_range = first_trigger..(first_trigger + triggers_wanted).min(credentials.len());
    let n_triggers = trigger_range.len();
    let trigger_set: Vec<usize> = trigger_range.collect();
    let base_ms = vigil_store::now_millis();
    std::thread::scope(|scope| {
        for c in 0..clients.max(1) {
            let (issued, accepted, failed, stop, acked) =
                (&issued, &accepted, &failed, &stop, &acked);
            let ingest = &ingest;
            let trigger_set = &trigger_set;
            scope.spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
                let mut triggers_done = 0usize;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Client 0 sends the triggers on their schedule.
                    if c == 0 && triggers_done < trigger_set.len()
                        && start.elapsed() >= Duration::from_millis(trigger_every * triggers_done as u64)
                    {
                        let i = trigger_set[triggers_done];
                        triggers_done += 1;
                        let (patient, cred) = &credentials[i];
                        let body = serde_json::json!({"type": "wearable", "heartRate": 135, "respiratoryRate": 29,
                            "measuredAt": vigil_store::format_rfc3339(base_ms + start.elapsed().as_millis() as i64)});
                        match agent.post(ingest).set("Authorization", cred).send_string(&body.to_string()) {
                            Ok(_) => acked
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push((patient.clone(), Instant::now())),
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        continue;
                    }
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    // Pace: reading n is due at n / rate seconds.
                    let due = Duration::from_secs_f64(n as f64 / f64::from(rate));
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    // Background readings come from patients that are not triggers in
                    // this phase (normal vitals, never flagged).
                    let candidates = credentials.len() - trigger_set.len().min(credentials.len());
                    let idx = if candidates == 0 { 0 } else { (n as usize * 7919) % credentials.len() };
                    let idx = if trigger_set.contains(&idx) { (idx + trigger_set.len()) % credentials.len() } else { idx };
                    let (_, cred) = &credentials[idx];
                    let body = serde_json::json!({"type": "wearable", "heartRate": 70 + (n % 15), "respiratoryRate": 14 + (n % 4),
                        "measuredAt": vigil_store::format_rfc3339(base_ms - 3_600_000 + (n as i64 % 3_600_000))});
                    match agent.post(ingest).set("Authorization", cred).send_string(&body.to_string()) {
                        Ok(_) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        // Progress while the phase runs.
        while start.elapsed() < Duration::from_secs(seconds) + Duration::from_secs(1) {
            std::thread::sleep(Duration::from_secs(5).min(Duration::from_secs(seconds)));
            eprintln!(
                "  rate {rate}/s: {}s, {} accepted",
                start.elapsed().as_secs(),
                accepted.load(Ordering::Relaxed)
            );
            if issued.load(Ordering::Relaxed) >= total {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    // Wait (bounded) for the last triggers to be flagged.
    let deadline = Instant::now() + Duration::from_secs(30);
    let acked = acked
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut latencies = Vec::new();
    loop {
        latencies.clear();
        let map = flagged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (patient, at) in &acked {
            if let Some(f) = map.get(patient) {
                latencies.push(f.saturating_duration_since(*at).as_secs_f64() * 1000.0);
            }
        }
        drop(map);
        if latencies.len() == acked.len() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    latencies.sort_by(f64::total_cmp);
    let accepted = accepted.load(Ordering::Relaxed);
    Ok(PhaseResult {
        rate,
        offered: total,
        accepted,
        failed: failed.load(Ordering::Relaxed),
        achieved_rate: accepted as f64 / elapsed.max(1e-9),
        triggers: n_triggers.min(acked.len().max(n_triggers)),
        flagged: latencies.len(),
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
    })
}
