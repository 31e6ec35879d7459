//! `vigil demo`: the whole system on embedded defaults with a simulated cohort.
//!
//! Starts the server on a data directory, registers the cohort's patients and devices,
//! creates a care-team login, and streams the simulator's readings through the real
//! ingest API with each device's own credential: first a short history, then live, with
//! simulated time running `--speed` times faster than the wall clock (so timestamps
//! run ahead of the real time). A few patients deteriorate (sepsis-like) within the
//! first simulated hours.

use crate::cmd::serve::{runtime, Server};
use crate::config::{Config, ServeArgs};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_dashboard::Role;
use vigil_simulator::{Cohort, SimConfig};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

#[derive(clap::Args)]
pub struct Args {
    /// Number of simulated patients.
    #[arg(long, default_value_t = 50)]
    patients: usize,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Data directory (default: a new directory under the system temp dir). An existing
    /// demo directory is reused: same patients, devices and login.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Simulated minutes per real second × 60 (60: one simulated hour per minute).
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Hours of history streamed before going live.
    #[arg(long, default_value_t = 2)]
    history_hours: u32,
    /// Seed of the simulated cohort.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Do not open the dashboard in a browser.
    #[arg(long)]
    no_browser: bool,
}

/// What a demo directory remembers between runs (kept 0600: it holds credentials).
#[derive(Serialize, Deserialize)]
struct DemoState {
    seed: u64,
    patients: usize,
    start_ms: i64,
    username: String,
    password: String,
    /// Per simulated patient: the FHIR Patient id and, per device index, the credential.
    cohort: Vec<DemoPatient>,
}

#[derive(Serialize, Deserialize)]
struct DemoPatient {
    patient_id: String,
    credentials: BTreeMap<usize, String>,
}

pub fn run(args: Args) -> ExitCode {
    crate::logging::init();
    match demo(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn sim_config(start_ms: i64) -> SimConfig {
    SimConfig {
        start_ms,
        oximeter_interval_ms: 5 * MINUTE,
        wearable_interval_ms: 5 * MINUTE,
        bp_interval_ms: HOUR,
        thermometer_interval_ms: HOUR,
        ..SimConfig::default()
    }
}

fn demo(args: Args) -> Result<()> {
    if !(args.speed > 0.0 && args.speed <= 100_000.0) {
        anyhow::bail!("--speed must be between 0 and 100000");
    }
    if args.patients == 0 || args.patients > 10_000 {
        anyhow::bail!("--patients must be between 1 and 10000");
    }
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("vigil-demo-{}", vigil_store::now_millis())),
    };
    let config = Config::resolve(&ServeArgs {
        data_dir: Some(data_dir.clone()),
        listen: Some(args.listen),
        default_team: Some("demo".into()),
        ..Default::default()
    })?;
    let server = Server::open(&config)?;
    let state = set_up(&server, &args, &data_dir)?;
    let runtime = runtime()?;
    let stop = Arc::new(AtomicBool::new(false));
    runtime.block_on(async {
        let listener = server.bind().await?;
        let stop_streaming = stop.clone();
        let shutdown = async move {
            vigil_server::shutdown_signal().await;
            stop_streaming.store(true, Ordering::Relaxed);
        };
        let mut streamer = None;
        let state = Arc::new(state);
        server
            .run(listener, shutdown, |url| {
                println!();
                println!("  Vigil demo is running: {} patients, simulated time x{}", args.patients, args.speed);
                println!("  Dashboard:  {url}/");
                println!("  Login:      {} / {}", state.username, state.password);
                println!("  FHIR API:   {url}/fhir   (token: vigil token issue --data-dir {} --scope 'system/*.rs')", data_dir.display());
                println!("  Data:       {}", data_dir.display());
                println!("  Stop with Ctrl-C.");
                println!();
                if !args.no_browser {
                    open_browser(&format!("{url}/"));
                }
                let url = url.to_string();
                let state = state.clone();
                let stop = stop.clone();
                let speed = args.speed;
                streamer = std::thread::Builder::new()
                    .name("vigil-demo-devices".into())
                    .spawn(move || stream(&url, &state, speed, &stop))
                    .ok();
            })
            .await?;
        stop.store(true, Ordering::Relaxed);
        if let Some(s) = streamer {
            let _ = s.join();
        }
        anyhow::Ok(())
    })?;
    println!(
        "vigil: demo stopped; its data stays in {}",
        data_dir.display()
    );
    Ok(())
}

fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("demo.json")
}

/// Registers the cohort (or reloads an earlier run's).
fn set_up(server: &Server, args: &Args, data_dir: &Path) -> Result<DemoState> {
    let path = state_path(data_dir);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let state: DemoState = serde_json::from_str(&text).with_context(|| {
            format!("{} is damaged; start with a new --data-dir", path.display())
        })?;
        println!(
            "vigil: reusing the demo in {} ({} patients)",
            data_dir.display(),
            state.patients
        );
        return Ok(state);
    }
    let start_ms = vigil_store::now_millis() - i64::from(args.history_hours) * HOUR;
    let cohort = Cohort::generate_with(args.seed, args.patients, sim_config(start_ms));
    let password = vigil_dashboard::users::generate_password()?;
    let username = "nurse".to_string();
    server.users.add_user(
        &username,
        "Demo Nurse",
        &password,
        Role::CareTeam,
        &["demo".to_string()],
    )?;
    let mut patients = Vec::new();
    let team = vec!["demo".to_string()];
    for (i, p) in cohort.patients.iter().enumerate() {
        eprint!(
            "\rvigil: registering patients and devices {}/{}",
            i + 1,
            cohort.patients.len()
        );
        let patient_id = server
            .monitor
            .add_patient(cohort.patient_resource(p), &team)?;
        if let Some(condition) = cohort.condition_resource(p, &format!("Patient/{patient_id}")) {
            vigil_store::FhirStore::create(server.store.as_ref(), condition)?;
        }
        let mut credentials = BTreeMap::new();
        for d in &p.devices {
            let reg = server
                .monitor
                .register_device(&patient_id, d.kind.type_name())?;
            credentials.insert(d.index, reg.credential());
        }
        patients.push(DemoPatient {
            patient_id,
            credentials,
        });
    }
    eprintln!();
    let state = DemoState {
        seed: args.seed,
        patients: args.patients,
        start_ms,
        username,
        password,
        cohort: patients,
    };
    write_private(&path, &serde_json::to_vec_pretty(&state)?)?;
    Ok(state)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn open_browser(url: &str) {
    for opener in ["xdg-open", "open"] {
        if std::process::Command::new(opener)
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok()
        {
            return;
        }
    }
    println!("  (could not open a browser; open {url} yourself)");
}

/// Posts the cohort's readings: the history first, then live at `speed`.
fn stream(base_url: &str, state: &DemoState, speed: f64, stop: &AtomicBool) {
    let cohort = Cohort::generate_with(state.seed, state.patients, sim_config(state.start_ms));
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let ingest = format!("{base_url}/ingest");
    // Resume where an earlier run of this directory got to: never before the start.
    let mut sim_from = state.start_ms;
    let history_end = vigil_store::now_millis().max(state.start_ms);
    let mut posted = 0u64;
    let mut failures = 0u64;
    let post_range = |from: i64, to: i64, posted: &mut u64, failures: &mut u64| {
        for (p, demo) in cohort.patients.iter().zip(&state.cohort) {
            let mut by_device: BTreeMap<usize, Vec<serde_json::Value>> = BTreeMap::new();
            for r in cohort.readings_between(p, from, to) {
                let mut body = r.body;
                // Idempotent retries: the device's own message id for the reading.
                body["messageId"] = serde_json::json!(format!("{}-{}", r.device_index, r.time_ms));
                by_device.entry(r.device_index).or_default().push(body);
            }
            for (device, messages) in by_device {
                let Some(credential) = demo.credentials.get(&device) else {
                    continue;
                };
                let n = messages.len() as u64;
                let body = serde_json::Value::Array(messages).to_string();
                match agent
                    .post(&ingest)
                    .set("Authorization", &format!("Bearer {credential}"))
                    .set("Content-Type", "application/json")
                    .send_string(&body)
                {
                    Ok(_) => *posted += n,
                    Err(e) => {
                        *failures += 1;
                        if *failures <= 5 {
                            eprintln!("vigil demo: posting a reading failed: {e}");
                        }
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
        }
    };
    // History, in one-hour slices with progress.
    let hours = ((history_end - sim_from) as f64 / HOUR as f64)
        .ceil()
        .max(0.0) as i64;
    for h in 0..hours {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let to = (sim_from + HOUR).min(history_end);
        post_range(sim_from, to, &mut posted, &mut failures);
        sim_from = to;
        eprintln!(
            "vigil demo: history {}/{} h streamed ({posted} readings)",
            h + 1,
            hours
        );
    }
    // Live.
    let wall_start = Instant::now();
    let sim_start = sim_from;
    let mut last_report = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        let elapsed = wall_start.elapsed().as_secs_f64();
        let sim_to = sim_start + (elapsed * speed * 1000.0) as i64;
        post_range(sim_from, sim_to, &mut posted, &mut failures);
        sim_from = sim_to;
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            eprintln!(
                "vigil demo: simulated time {} — {posted} readings posted{}",
                vigil_store::format_rfc3339(sim_from),
                if failures > 0 {
                    format!(", {failures} failed posts")
                } else {
                    String::new()
                }
            );
        }
    }
}
