//! The remote-monitoring spine: device registry and ingest, the normalization and
//! scoring pipeline, alerts, and the dashboard's data.
//!
//! Data flow: a device `POST /ingest`s readings ([`ingest`]) → they are appended to
//! the durable event log → the [`pipeline`] normalizes them with the MedTech-compatible
//! templates into FHIR Observations, scores the patient's window with NEWS2, writes a
//! RiskAssessment and raises or lowers a Flag → a raised Flag opens one alert
//! ([`db`]) → the dashboard ([`caredata`]) and the `/v1` API ([`api`]) show it and
//! take the acknowledgement.

pub mod api;
pub mod caredata;
pub mod db;
pub mod devices;
pub mod errors;
pub mod identity;
pub mod ingest;
pub mod metrics;
pub mod pipeline;
pub mod templates_api;
pub mod time;
pub mod vitals;

use axum::Router;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use vigil_eventlog::EventLog;
use vigil_store::FhirStore;

pub use db::MonitorDb;
pub use devices::{DeviceRegistry, Registered};
pub use errors::ErrorPolicy;
pub use ingest::IngestLimits;
pub use metrics::Metrics;
pub use pipeline::{Pipeline, PipelineConfig, Templates};
pub use vigil_medtech::IdentityResolutionType;

/// Errors opening the monitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The monitoring database.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// Templates that do not load.
    #[error("templates: {0}")]
    Templates(String),
    /// The FHIR store.
    #[error(transparent)]
    Store(#[from] vigil_store::StoreError),
    /// Device registration.
    #[error(transparent)]
    Device(#[from] devices::DeviceError),
}

/// Monitor settings.
#[derive(Debug, Clone, Default)]
pub struct MonitorOptions {
    /// Pipeline settings.
    pub pipeline: PipelineConfig,
    /// Ingest limits.
    pub ingest: IngestLimits,
}

/// The assembled monitoring side of a Vigil server.
pub struct Monitor {
    /// The monitoring database.
    pub db: Arc<MonitorDb>,
    /// Devices.
    pub registry: Arc<DeviceRegistry>,
    /// The pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The event log.
    pub log: Arc<dyn EventLog>,
    /// The FHIR store.
    pub store: Arc<dyn FhirStore>,
    options: MonitorOptions,
}

/// Loads templates: the given files, or Vigil's defaults for its demo devices.
pub fn load_templates(
    device: Option<&Path>,
    fhir: Option<&Path>,
) -> Result<Templates, MonitorError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| MonitorError::Templates(format!("cannot read {}: {e}", p.display())))
    };
    let device_text = match device {
        Some(p) => read(p)?,
        None => vigil_medtech::default_device_templates().to_string(),
    };
    let fhir_text = match fhir {
        Some(p) => read(p)?,
        None => vigil_medtech::default_fhir_templates().to_string(),
    };
    let device = vigil_medtech::DeviceTemplateSet::parse(&device_text).map_err(|e| {
        MonitorError::Templates(format!(
            "device templates{}: {e}",
            device
                .map(|p| format!(" {}", p.display()))
                .unwrap_or_default()
        ))
    })?;
    let fhir = vigil_medtech::FhirTemplateSet::parse(&fhir_text).map_err(|e| {
        MonitorError::Templates(format!(
            "FHIR templates{}: {e}",
            fhir.map(|p| format!(" {}", p.display()))
                .unwrap_or_default()
        ))
    })?;
    Ok(Templates { device, fhir })
}

/// The worklist row of a FHIR Patient.
pub fn patient_row(id: &str, patient: &Value) -> db::PatientRow {
    let name = patient["name"]
        .as_array()
        .and_then(|names| names.first())
        .map(|n| {
            if let Some(text) = n["text"].as_str() {
                return text.to_string();
            }
            let given: Vec<&str> = n["given"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let family = n["family"].as_str().unwrap_or("");
            format!("{} {family}", given.join(" ")).trim().to_string()
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("Patient/{id}"));
    db::PatientRow {
        id: id.to_string(),
        name,
        birth_date: patient["birthDate"].as_str().map(str::to_string),
        gender: patient["gender"].as_str().map(str::to_string),
    }
}

/// Stops the pipeline thread when dropped or [`PipelineHandle::stop`]ped.
pub struct PipelineHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PipelineHandle {
    /// Lets the batch in hand finish, then stops.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PipelineHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Monitor {
    /// Opens `DATA_DIR/monitor.db` and assembles the monitor.
    pub fn open(
        data_dir: &Path,
        store: Arc<dyn FhirStore>,
        log: Arc<dyn EventLog>,
        templates: Templates,
        options: MonitorOptions,
    ) -> Result<Arc<Monitor>, MonitorError> {
        let db = Arc::new(MonitorDb::open(&data_dir.join("monitor.db"))?);
        Ok(Self::assemble(db, store, log, templates, options))
    }

    /// Assembles the monitor over an already open database.
    pub fn assemble(
        db: Arc<MonitorDb>,
        store: Arc<dyn FhirStore>,
        log: Arc<dyn EventLog>,
        templates: Templates,
        options: MonitorOptions,
    ) -> Arc<Monitor> {
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(DeviceRegistry::new(db.clone(), store.clone()));
        let pipeline = Arc::new(Pipeline::new(
            store.clone(),
            log.clone(),
            db.clone(),
            templates,
            options.pipeline.clone(),
            metrics.clone(),
        ));
        Arc::new(Monitor {
            db,
            registry,
            pipeline,
            metrics,
            log,
            store,
            options,
        })
    }

    /// Creates a Patient in the FHIR store and puts it on the given care teams' panels.
    pub fn add_patient(&self, patient: Value, teams: &[String]) -> Result<String, MonitorError> {
        let stored = self.store.create(patient)?;
        self.db
            .upsert_patient(&patient_row(&stored.id, &stored.resource))?;
        for team in teams {
            self.db.assign_team(&stored.id, team)?;
        }
        Ok(stored.id)
    }

    /// Registers a device for a patient; makes sure the patient is on the worklist.
    pub fn register_device(
        &self,
        patient_id: &str,
        kind: &str,
    ) -> Result<Registered, devices::DeviceError> {
        let registered = self
            .registry
            .register(patient_id, kind, time::now_millis())?;
        self.pipeline
            .ensure_patient(patient_id)
            .map_err(|e| match e {
                pipeline::PipelineError::Store(s) => devices::DeviceError::Store(s),
                pipeline::PipelineError::Db(d) => devices::DeviceError::Db(d),
                other => devices::DeviceError::Random(other.to_string()),
            })?;
        Ok(registered)
    }

    /// Tells the pipeline a FHIR resource was written outside it (by the FHIR API), so
    /// cached identities are re-read: connect to the FHIR server's write observer.
    pub fn resource_written(&self, resource_type: &str, id: &str) {
        self.pipeline.resource_written(resource_type, id);
    }

    /// Starts the pipeline thread.
    pub fn start(self: &Arc<Self>) -> PipelineHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let pipeline = self.pipeline.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vigil-pipeline".into())
            .spawn(move || pipeline.run(&flag))
            .ok();
        if thread.is_none() {
            tracing::error!("could not start the pipeline thread");
        }
        PipelineHandle { stop, thread }
    }

    /// `/ingest`, `/v1/...` and `/metrics`.
    pub fn router(self: &Arc<Self>, key: Arc<vigil_auth::SigningKey>) -> Router {
        let ingest = ingest::router(ingest::IngestState {
            registry: self.registry.clone(),
            log: self.log.clone(),
            limits: self.options.ingest.clone(),
            metrics: self.metrics.clone(),
        });
        let metrics = self.metrics.clone();
        Router::new()
            .merge(ingest)
            .merge(templates_api::router(self.clone(), key.clone()))
            .merge(api::router(self.clone(), key))
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let metrics = metrics.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            metrics.render(),
                        )
                    }
                }),
            )
    }

    /// The dashboard's data source (needs a tokio runtime: it spawns a forwarding task).
    pub fn care_data(self: &Arc<Self>) -> Arc<caredata::MonitorCareData> {
        caredata::MonitorCareData::new(self.db.clone(), self.pipeline.clone(), self.metrics.clone())
    }
}
