//! `vigil devices add|list|revoke`: device credentials, on a data directory (the server
//! may be running: SQLite serializes the writers; the server reads new devices through).

use crate::config::{Config, ServeArgs};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vigil_monitor::{DeviceRegistry, MonitorDb};
use vigil_store::FhirStore;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Register a device for a patient and print its credential (shown once).
    Add {
        /// Data directory of the server.
        #[arg(long, env = "VIGIL_DATA_DIR")]
        data_dir: PathBuf,
        /// The Patient id the device belongs to.
        #[arg(long)]
        patient: String,
        /// Device kind: bp-cuff, pulse-oximeter, thermometer, scale, glucometer, wearable.
        #[arg(long = "type", default_value = "pulse-oximeter")]
        kind: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The server's PostgreSQL FHIR store, when it runs on one (as `vigil serve`).
        #[arg(long, env = "VIGIL_DATABASE_URL")]
        database_url: Option<String>,
        /// The server's PostgreSQL schema. [default: vigil]
        #[arg(long, env = "VIGIL_DATABASE_SCHEMA")]
        database_schema: Option<String>,
    },
    /// List registered devices.
    List {
        #[arg(long, env = "VIGIL_DATA_DIR")]
        data_dir: PathBuf,
        /// Only this patient's.
        #[arg(long)]
        patient: Option<String>,
    },
    /// Revoke a device's credential.
    Revoke {
        #[arg(long, env = "VIGIL_DATA_DIR")]
        data_dir: PathBuf,
        /// The Device id.
        device: String,
    },
}

pub fn run(args: Args) -> ExitCode {
    match devices(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The FHIR store `vigil serve` uses with these settings, and the monitor database.
fn open(args: ServeArgs) -> Result<(Arc<dyn FhirStore>, Arc<MonitorDb>)> {
    let config = Config::resolve(&args)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let store = crate::cmd::serve::open_fhir_store(&config)?.store;
    let db = Arc::new(MonitorDb::open(&config.data_dir.join("monitor.db"))?);
    Ok((store, db))
}

/// The monitor database of a data directory (created if needed).
pub(crate) fn monitor_db(data_dir: &std::path::Path) -> Result<Arc<MonitorDb>> {
    let config = Config::resolve(&ServeArgs {
        data_dir: Some(data_dir.to_path_buf()),
        ..Default::default()
    })?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    Ok(Arc::new(MonitorDb::open(
        &config.data_dir.join("monitor.db"),
    )?))
}

fn devices(args: Args) -> Result<()> {
    match args.command {
        Command::Add {
            data_dir,
            patient,
            kind,
            json,
            database_url,
            database_schema,
        } => {
            let (store, db) = open(ServeArgs {
                data_dir: Some(data_dir),
                database_url,
                database_schema,
                ..Default::default()
            })?;
            let registry = DeviceRegistry::new(db.clone(), store.clone());
            let patient = patient
                .strip_prefix("Patient/")
                .unwrap_or(&patient)
                .to_string();
            let reg = registry.register(&patient, &kind, vigil_store::now_millis())?;
            if db.patient(&patient)?.is_none() {
                if let Some(p) = store.read("Patient", &patient)?.found() {
                    db.upsert_patient(&vigil_monitor::patient_row(&patient, &p.resource))?;
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({"device": reg.device.id, "patient": patient, "kind": kind,
                                       "secret": reg.secret, "credential": reg.credential()})
                );
            } else {
                println!("device:     Device/{}", reg.device.id);
                println!("patient:    Patient/{patient}");
                println!("credential: {}", reg.credential());
                println!("(the device sends `Authorization: Bearer <credential>` to POST /ingest; the secret is not shown again)");
            }
            Ok(())
        }
        Command::List { data_dir, patient } => {
            let db = monitor_db(&data_dir)?;
            for d in db.devices(patient.as_deref())? {
                println!(
                    "{}\tPatient/{}\t{}\t{}",
                    d.id,
                    d.patient_id,
                    d.kind,
                    if d.revoked_ms.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
            Ok(())
        }
        Command::Revoke { data_dir, device } => {
            let db = monitor_db(&data_dir)?;
            db.revoke_device(&device, vigil_store::now_millis())?;
            println!("revoked Device/{device}");
            Ok(())
        }
    }
}
