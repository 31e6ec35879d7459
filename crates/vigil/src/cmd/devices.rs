//! `vigil devices add|list|revoke`: device credentials, on a data directory (the server
//! may be running: SQLite serializes the writers; the server reads new devices through).

use crate::config::{Config, ServeArgs};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vigil_monitor::{DeviceRegistry, MonitorDb};
use vigil_store::{FhirStore, SqliteStore};

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

fn open(data_dir: &std::path::Path) -> Result<(Arc<SqliteStore>, Arc<MonitorDb>)> {
    let config = Config::resolve(&ServeArgs {
        data_dir: Some(data_dir.to_path_buf()),
        ..Default::default()
    })?;
    let fhir_dir = config.data_dir.join("fhir");
    std::fs::create_dir_all(&fhir_dir)
        .with_context(|| format!("creating {}", fhir_dir.display()))?;
    let store =
        Arc::new(SqliteStore::open(&fhir_dir.join("store.db")).context("opening the FHIR store")?);
    let db = Arc::new(MonitorDb::open(&config.data_dir.join("monitor.db"))?);
    Ok((store, db))
}

fn devices(args: Args) -> Result<()> {
    match args.command {
        Command::Add {
            data_dir,
            patient,
            kind,
            json,
        } => {
            let (store, db) = open(&data_dir)?;
            let store_dyn: Arc<dyn FhirStore> = store.clone();
            let registry = DeviceRegistry::new(db.clone(), store_dyn);
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
            let (_, db) = open(&data_dir)?;
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
            let (_, db) = open(&data_dir)?;
            db.revoke_device(&device, vigil_store::now_millis())?;
            println!("revoked Device/{device}");
            Ok(())
        }
    }
}
