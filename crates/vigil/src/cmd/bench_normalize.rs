//! `vigil bench normalize`: device readings from the ingest log into the embedded FHIR
//! store as hourly SampledData Observations, through the real pipeline.
//!
//! Workload: a fresh data directory (SQLite FHIR store, file event log, `monitor.db`);
//! `--devices` patients with one registered device each. Every device sends, each second,
//! three readings (heart rate, steps, blood pressure) in the body format of the reference's
//! `basic` sample templates, which are the templates used (device mapping `JsonPathContent`,
//! FHIR mapping `periodInterval` 60 with 1 s SampledData: one Observation per device, type
//! and UTC hour). The `--readings` messages are wrapped in the envelope `POST /ingest`
//! builds (the device authenticated by its credential) and appended to the `ingest` topic
//! in batches of `--append-batch`; then the pipeline (`vigil_monitor::Pipeline::step`,
//! batches of `--batch-size`) runs until it has committed every offset. The figure is
//! readings per second from log to store. The store is checked afterwards: the number of
//! Observations, and for every device and type the first hour's SampledData string equal
//! to the one the readings must give; no dead letters.

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use vigil_eventlog::{AppendRecord, EventLog, FileLog, FileLogOptions};
use vigil_monitor::ingest::{envelope, INGEST_TOPIC};
use vigil_monitor::pipeline::{CONSUMER_GROUP, DEAD_LETTER_TOPIC};
use vigil_monitor::{Monitor, MonitorOptions, PipelineConfig};
use vigil_store::{FhirStore, SqliteStore};

/// The reference's `basic` sample templates (heart rate, steps, blood pressure, ...).
const DEVICE_TEMPLATES: &str = include_str!(
    "../../../../tests/fixtures/medtech-iomt-fhir/sample/templates/basic/devicecontent.json"
);
const FHIR_TEMPLATES: &str = include_str!(
    "../../../../tests/fixtures/medtech-iomt-fhir/sample/templates/basic/fhirmapping.json"
);

/// Readings start at 2024-01-01T00:00:00Z, an hour boundary.
const T0_MS: i64 = 1_704_067_200_000;
const HOUR_SECS: usize = 3600;

/// `vigil bench normalize` options.
#[derive(clap::Args)]
pub struct NormalizeArgs {
    /// Readings (ingest messages) appended and processed.
    #[arg(long, default_value_t = 300_000)]
    readings: usize,
    /// Devices, each of its own patient; each sends three readings a second.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Messages the pipeline takes per batch (one store transaction each); default: the
    /// pipeline's own default, as `vigil serve` runs it.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Messages per append to the event log.
    #[arg(long, default_value_t = 10_000)]
    append_batch: usize,
    /// Data directory (must not exist yet; kept). Default: a temporary directory, removed
    /// at the end.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: NormalizeArgs) -> ExitCode {
    match bench(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The three reading types, in sending order: typeName and the body values.
const TYPES: [&str; 3] = ["heartrate", "steps", "bloodpressure"];

/// The values of device `d`'s reading of type `ty` at second `s`, as `(valueName, text)`.
fn values(d: usize, ty: usize, s: usize) -> Vec<(&'static str, String)> {
    match ty {
        0 => vec![("heartrate", (60 + (s * 7 + d) % 40).to_string())],
        1 => vec![("steps", ((s + d) % 100).to_string())],
        _ => vec![
            ("systolic", (110 + (s + 3 * d) % 30).to_string()),
            ("diastolic", (70 + (s + d) % 20).to_string()),
        ],
    }
}

/// Reading `i`: device `i % devices`; that device's reading `k = i / devices` is of type
/// `k % 3` at second `k / 3`.
fn reading(i: usize, devices: usize) -> (usize, usize, usize) {
    let (d, k) = (i % devices, i / devices);
    (d, k % 3, k / 3)
}

struct Enrolled {
    patient_id: String,
    device_id: String,
    credential: String,
}

fn bench(args: NormalizeArgs) -> Result<()> {
    ensure!(args.devices >= 1, "--devices must be at least 1");
    ensure!(args.readings >= 1, "--readings must be at least 1");
    ensure!(args.append_batch >= 1, "--append-batch must be at least 1");
    let (dir, keep) = match &args.data_dir {
        Some(d) => {
            ensure!(
                !d.exists(),
                "{} exists; the benchmark needs a fresh data directory",
                d.display()
            );
            (d.clone(), true)
        }
        None => (
            std::env::temp_dir().join(format!(
                "vigil-bench-normalize-{}",
                vigil_store::now_millis()
            )),
            false,
        ),
    };
    let result = run_in(&args, &dir);
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(args: &NormalizeArgs, dir: &Path) -> Result<()> {
    eprintln!("vigil bench normalize: data in {}", dir.display());
    let templates_dir = dir.join("bench-templates");
    std::fs::create_dir_all(&templates_dir)
        .with_context(|| format!("creating {}", templates_dir.display()))?;
    let device_path = templates_dir.join("devicecontent.json");
    let fhir_path = templates_dir.join("fhirmapping.json");
    std::fs::write(&device_path, DEVICE_TEMPLATES)?;
    std::fs::write(&fhir_path, FHIR_TEMPLATES)?;
    let templates = vigil_monitor::load_templates(Some(&device_path), Some(&fhir_path))?;

    std::fs::create_dir_all(dir.join("fhir"))?;
    let sqlite = Arc::new(SqliteStore::open(&dir.join("fhir/store.db")).context("FHIR store")?);
    let store: Arc<dyn FhirStore> = sqlite.clone();
    let log = Arc::new(
        FileLog::open(&dir.join("eventlog"), FileLogOptions::default()).context("event log")?,
    );
    let log_dyn: Arc<dyn EventLog> = log.clone();
    let mut pipeline = PipelineConfig {
        default_team: Some("bench".into()),
        ..Default::default()
    };
    if let Some(b) = args.batch_size {
        ensure!(b >= 1, "--batch-size must be at least 1");
        pipeline.batch_size = b;
    }
    let batch_size = pipeline.batch_size;
    let monitor = Monitor::open(
        dir,
        store.clone(),
        log_dyn,
        templates,
        MonitorOptions {
            pipeline,
            ..Default::default()
        },
    )?;

    let mut enrolled = Vec::with_capacity(args.devices);
    for d in 0..args.devices {
        let patient = json!({"resourceType": "Patient", "name": [{"family": format!("Bench{d}"), "given": ["Pat"]}]});
        let patient_id = monitor.add_patient(patient, &["bench".to_string()])?;
        let reg = monitor.register_device(&patient_id, "wearable")?;
        enrolled.push(Enrolled {
            patient_id,
            device_id: reg.device.id.clone(),
            credential: format!("Bearer {}", reg.credential()),
        });
    }
    // The identity `POST /ingest` stamps into the envelope comes from the credential.
    let identities = enrolled
        .iter()
        .map(|e| {
            monitor
                .registry
                .authenticate(Some(&e.credential))?
                .map_err(|f| anyhow!("device {}: {}", e.device_id, f.message()))
        })
        .collect::<Result<Vec<_>>>()?;
    eprintln!("registered {} patients with a device each", args.devices);

    // Append, as `POST /ingest` does, in large batches.
    let started = Instant::now();
    let mut body_bytes = 0usize;
    for chunk_start in (0..args.readings).step_by(args.append_batch) {
        let end = (chunk_start + args.append_batch).min(args.readings);
        let now = vigil_store::now_millis();
        let mut records = Vec::with_capacity(end - chunk_start);
        for i in chunk_start..end {
            let (d, ty, s) = reading(i, args.devices);
            let mut body = serde_json::Map::new();
            for (name, v) in values(d, ty, s) {
                body.insert(name.into(), Value::String(v));
            }
            body.insert("deviceid".into(), json!(enrolled[d].device_id));
            body.insert("patientid".into(), json!(enrolled[d].patient_id));
            body.insert(
                "measurementdatetime".into(),
                json!(vigil_store::format_rfc3339(T0_MS + s as i64 * 1000)),
            );
            let env = envelope(&identities[d], body, None, now);
            let payload = serde_json::to_vec(&env)?;
            body_bytes += payload.len();
            records.push(AppendRecord {
                key: None,
                timestamp_ms: now,
                payload,
            });
        }
        log.append(INGEST_TOPIC, records)?;
    }
    let append_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "appended {} readings ({:.1} MB) in {:.2} s ({:.0}/s)",
        args.readings,
        body_bytes as f64 / 1e6,
        append_secs,
        args.readings as f64 / append_secs
    );

    // The pipeline, on this thread, until every offset is committed.
    let target = args.readings as u64;
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let n = monitor.pipeline.step().context("pipeline step")?;
        let committed = log.committed(INGEST_TOPIC, CONSUMER_GROUP)?;
        if committed >= target {
            break;
        }
        ensure!(
            n > 0,
            "the pipeline stopped at offset {committed} of {target}"
        );
        if last_report.elapsed().as_secs() >= 5 {
            eprintln!("  processed {committed}/{target}");
            last_report = Instant::now();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = args.readings as f64 / secs;
    let metrics = monitor.metrics.render();
    let writes = metric(&metrics, "vigil_observations_written_total");
    let dead = metric(&metrics, "vigil_dead_letters_total");

    // The store must hold what the readings give.
    let checks = check_store(store.as_ref(), args, &enrolled)?;
    let dead_records = log.read(DEAD_LETTER_TOPIC, 0, 1)?;
    ensure!(
        dead == 0 && dead_records.is_empty(),
        "{dead} readings were dead-lettered"
    );

    println!("| readings | devices | pipeline batch | seconds | readings/s | Observations | Observation writes |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {:.2} | {:.0} | {} | {} |",
        args.readings, args.devices, batch_size, secs, rate, checks.observations, writes
    );
    println!(
        "\nchecked: {} Observations in the store (as the readings give); {} first-hour SampledData streams of {} slots equal to the readings",
        checks.observations, checks.streams, HOUR_SECS
    );
    if let Some(path) = &args.json {
        let out = json!({
            "readings": args.readings, "devices": args.devices, "batchSize": batch_size,
            "appendSeconds": append_secs, "seconds": secs, "readingsPerSecond": rate,
            "observations": checks.observations, "observationWrites": writes,
            "checkedStreams": checks.streams,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    drop(monitor);
    drop(store);
    if let Ok(s) = Arc::try_unwrap(sqlite) {
        s.close().context("closing the store")?;
    }
    Ok(())
}

/// The sum of a counter's samples in Prometheus text (all label sets).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

struct Checked {
    observations: u64,
    streams: usize,
}

fn search(store: &dyn FhirStore, query: &str, count: u32) -> Result<vigil_store::SearchResult> {
    let q = vigil_fhir::search::query::SearchQuery::parse(
        Some("Observation"),
        query,
        vigil_fhir::search::SearchRegistry::r4(),
    )
    .map_err(|e| anyhow!("query {query}: {e}"))?;
    Ok(store.search(
        &q,
        &vigil_store::SearchPage {
            count: Some(count),
            cursor: None,
        },
    )?)
}

/// LOINC code of each type's Observation in the basic templates.
const CODES: [&str; 3] = ["8867-4", "55423-8", "85354-9"];

fn check_store(
    store: &dyn FhirStore,
    args: &NormalizeArgs,
    enrolled: &[Enrolled],
) -> Result<Checked> {
    // One Observation per device, type and hour the device's readings reach.
    let mut expected = 0u64;
    for d in 0..args.devices.min(args.readings) {
        let k = (args.readings - 1 - d) / args.devices; // the device's last reading number
        for ty in 0..3 {
            if ty > k {
                continue;
            }
            // The device's last reading of this type is at second s_last.
            let s_last = (k - ty) / 3;
            expected += (s_last / HOUR_SECS + 1) as u64;
        }
    }
    let total = search(store, "_total=accurate", 0)?
        .total
        .ok_or_else(|| anyhow!("the store gave no total"))?;
    ensure!(
        total == expected,
        "the store holds {total} Observations, the readings give {expected}"
    );
    // Each device's first-hour stream of each type, slot by slot.
    let mut streams = 0;
    for (d, e) in enrolled.iter().enumerate() {
        for (ty, code) in CODES.iter().enumerate() {
            let mut slots: Vec<Vec<String>> = vec![Vec::new(); HOUR_SECS];
            let mut i = d + ty * args.devices;
            while i < args.readings {
                let (_, t, s) = reading(i, args.devices);
                debug_assert_eq!(t, ty);
                if s >= HOUR_SECS {
                    break;
                }
                slots[s] = values(d, ty, s).into_iter().map(|(_, v)| v).collect();
                i += 3 * args.devices;
            }
            if slots.iter().all(Vec::is_empty) {
                continue;
            }
            let found = search(
                store,
                &format!(
                    "subject=Patient/{}&device=Device/{}&code=http://loinc.org|{code}&date=lt{}",
                    e.patient_id,
                    e.device_id,
                    vigil_store::format_rfc3339(T0_MS + HOUR_SECS as i64 * 1000)
                ),
                10,
            )?;
            ensure!(
                found.matches.len() == 1,
                "{} first-hour {} Observations for Device/{}",
                found.matches.len(),
                TYPES[ty],
                e.device_id
            );
            let obs = &found.matches[0].resource;
            // Blood pressure's values are components, coded with their valueName.
            let fields: Vec<&str> = values(d, ty, 0).into_iter().map(|(f, _)| f).collect();
            for (dim, field) in fields.iter().enumerate() {
                let sampled = if ty == 2 {
                    obs["component"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|c| {
                            c["code"]["coding"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|x| x["code"] == *field)
                        })
                        .map(|c| &c["valueSampledData"])
                } else {
                    Some(&obs["valueSampledData"])
                };
                let got = sampled.and_then(|v| v["data"].as_str()).ok_or_else(|| {
                    anyhow!("Observation {} has no SampledData for {field}", obs["id"])
                })?;
                let want = slots
                    .iter()
                    .map(|v| v.get(dim).map_or("E", String::as_str))
                    .collect::<Vec<_>>()
                    .join(" ");
                ensure!(
                    got == want,
                    "Observation {} ({field}): SampledData of {} characters differs from the {} expected",
                    obs["id"],
                    got.len(),
                    want.len()
                );
                streams += 1;
            }
        }
    }
    Ok(Checked {
        observations: total,
        streams,
    })
}
