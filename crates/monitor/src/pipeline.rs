//! The monitoring pipeline: event log → normalization → FHIR Observations → NEWS2 →
//! RiskAssessment / Flag → alerts.
//!
//! One worker thread consumes the `ingest` topic as the consumer group `pipeline`.
//! Each batch is processed and only then committed, so a crash replays at most the
//! last batch; every write is idempotent under replay (Observation and RiskAssessment
//! ids are deterministic, the read model is keyed by resource, a flag transition is
//! recorded together with its alert). A message that cannot be processed goes to the
//! `dead-letter` topic with the reason and the stream goes on, or, under the `block`
//! error policy, is retried until it succeeds and holds back everything after it.

use crate::db::{AlertRow, AlertState, FlagState, MonitorDb, ScoreRow, VitalPoint};
use crate::errors::ErrorPolicy;
use crate::identity::{IdentityResolver, ResolveError};
use crate::ingest::{DEVICE_ID_PROPERTY, INGEST_TOPIC};
use crate::metrics::{Metrics, GROUPING_LATENCY, NORMALIZATION_LATENCY};
use crate::time::{format_rfc3339, now_millis};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use vigil_eventlog::{AppendRecord, EventLog, Record};
use vigil_medtech::{
    DeviceTemplateSet, FhirTemplateSet, IdentityResolutionType, ObservationChange,
};
use vigil_scoring::{News2Input, News2Result, RiskBand, SpO2Scale};
use vigil_store::{FhirStore, ReadOutcome, StoreError, WriteOp};

/// The topic failed messages go to.
pub const DEAD_LETTER_TOPIC: &str = "dead-letter";
/// The pipeline's consumer group.
pub const CONSUMER_GROUP: &str = "pipeline";

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// NEWS2 uses the latest value of each vital within this window before the newest
    /// reading.
    pub window: Duration,
    /// Messages processed per batch (one commit each) while the pipeline keeps up. With
    /// a backlog of more than this, a batch takes up to ten times as many: a catching-up
    /// pipeline then rewrites each merged Observation (hourly SampledData) and scores
    /// each patient once per large batch, not once per 500 messages.
    pub batch_size: usize,
    /// The care team new patients are assigned to when none is known.
    pub default_team: Option<String>,
    /// How long (in the readings' time) a flagged patient must stay at low risk before
    /// the flag is lowered. Stops a patient hovering at a band boundary from raising a
    /// new alert with every other reading.
    pub flag_recovery: Duration,
    /// How a message's Device, Patient and Encounter are found (see [`crate::identity`]).
    pub identity: IdentityResolutionType,
    /// What happens to a message that cannot be processed.
    pub error_policy: ErrorPolicy,
    /// First retry delay of a blocked message (doubled per attempt).
    pub retry_initial: Duration,
    /// Longest retry delay of a blocked message.
    pub retry_max: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            window: Duration::from_secs(4 * 3600),
            batch_size: 500,
            default_team: None,
            flag_recovery: Duration::from_secs(30 * 60),
            identity: IdentityResolutionType::Lookup,
            error_policy: ErrorPolicy::DeadLetter,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable error kind (metrics label).
    pub kind: String,
    /// What went wrong, for people.
    pub message: String,
}

impl Failure {
    pub(crate) fn new(kind: &str, message: impl Into<String>) -> Failure {
        Failure {
            kind: kind.to_string(),
            message: message.into(),
        }
    }
}

/// Something the dashboard should refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// New data for a patient.
    Patient(String),
    /// An alert opened or changed.
    Alert {
        /// Alert id.
        alert_id: String,
        /// Its patient.
        patient_id: String,
    },
}

/// The templates in force; replaced atomically at run time.
pub struct Templates {
    /// Device mapping.
    pub device: DeviceTemplateSet,
    /// FHIR mapping.
    pub fhir: FhirTemplateSet,
}

/// The pipeline (see the module docs).
pub struct Pipeline {
    store: Arc<dyn FhirStore>,
    log: Arc<dyn EventLog>,
    db: Arc<MonitorDb>,
    templates: RwLock<Arc<Templates>>,
    config: PipelineConfig,
    metrics: Arc<Metrics>,
    changes: tokio::sync::broadcast::Sender<Change>,
    scales: Mutex<HashMap<String, SpO2Scale>>,
    identity: IdentityResolver,
    /// Offsets below this were counted in the device-event metrics (replays and retries
    /// are not counted twice).
    events_counted: AtomicU64,
    /// Offsets below this were counted in the FHIR-conversion metrics.
    conversions_counted: AtomicU64,
    /// The message the `block` policy is holding the stream at: (offset, attempts).
    blocked: Mutex<Option<(u64, u32)>>,
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `low`, `low-medium`, `medium`, `high`.
pub fn band_name(band: RiskBand) -> &'static str {
    band.label()
}

fn vital_name(v: vigil_scoring::Vital) -> &'static str {
    v.label()
}

impl Pipeline {
    /// A pipeline over the given components.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn FhirStore>,
        log: Arc<dyn EventLog>,
        db: Arc<MonitorDb>,
        templates: Templates,
        config: PipelineConfig,
        metrics: Arc<Metrics>,
    ) -> Pipeline {
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        let identity = IdentityResolver::new(store.clone(), config.identity, metrics.clone());
        Pipeline {
            identity,
            events_counted: AtomicU64::new(0),
            conversions_counted: AtomicU64::new(0),
            blocked: Mutex::new(None),
            store,
            log,
            db,
            templates: RwLock::new(Arc::new(templates)),
            config,
            metrics,
            changes,
            scales: Mutex::new(HashMap::new()),
        }
    }

    /// Subscribes to changes (for live dashboards).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Sends a change to subscribers (also used by alert acknowledgement).
    pub fn notify(&self, change: Change) {
        // No subscribers is fine.
        let _ = self.changes.send(change);
    }

    /// Replaces the templates (already validated by the caller).
    pub fn set_templates(&self, templates: Templates) {
        *self
            .templates
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(templates);
    }

    /// The templates in force.
    pub fn templates(&self) -> Arc<Templates> {
        self.templates
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Runs until `stop` is set, then finishes the batch in hand and returns.
    pub fn run(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            match self.step() {
                Ok(0) => {
                    let next = self
                        .log
                        .committed(INGEST_TOPIC, CONSUMER_GROUP)
                        .unwrap_or(0);
                    let _ = self
                        .log
                        .wait_for(INGEST_TOPIC, next, Duration::from_millis(200));
                }
                Ok(_) => {}
                Err(PipelineError::Blocked {
                    offset,
                    kind,
                    attempts,
                    ..
                }) => {
                    let delay = crate::errors::backoff(
                        self.config.retry_initial,
                        self.config.retry_max,
                        attempts,
                    );
                    tracing::warn!(offset, kind = %kind, attempts, delay_ms = delay.as_millis() as u64, "pipeline blocked on a failing message (error_policy = block); retrying");
                    sleep_unless_stopped(delay, stop);
                }
                Err(e) => {
                    self.metrics.error("UnhandledException");
                    tracing::error!(error = %e, "pipeline step failed; retrying in 1 s");
                    sleep_unless_stopped(Duration::from_secs(1), stop);
                }
            }
        }
    }

    /// Processes one batch; returns how many messages it took. Errors are
    /// infrastructure failures (the batch is retried) or [`PipelineError::Blocked`];
    /// bad messages are dead-lettered (or block, per the error policy).
    pub fn step(&self) -> Result<usize, PipelineError> {
        let from = self.log.committed(INGEST_TOPIC, CONSUMER_GROUP)?;
        let backlog = self.log.end_offset(INGEST_TOPIC)?.saturating_sub(from);
        let batch = self.config.batch_size.max(1);
        let take = if backlog > batch as u64 {
            usize::try_from(backlog)
                .unwrap_or(usize::MAX)
                .min(batch.saturating_mul(10))
        } else {
            batch
        };
        let records = self.log.read(INGEST_TOPIC, from, take)?;
        let Some(last) = records.last() else {
            return Ok(0);
        };
        let mut next = last.offset + 1;
        // Under the `block` policy: how many records (from the start) this step handles.
        let mut end = records.len();
        let mut blocked = None;
        let templates = self.templates();
        let mut touched: BTreeMap<String, Vec<VitalPoint>> = BTreeMap::new();
        // Fast path: prepare every record's Observations, then write them all in one
        // transaction (one fsync per batch instead of one per reading).
        let mut pending = Pending::default();
        let mut prepared = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            match self.process(&templates, record, Some(&mut pending)) {
                Ok(_) => prepared.push(record),
                Err(Processing::Failed(failure)) => {
                    if let Some(b) = self.fail(record, &failure)? {
                        (next, end, blocked) = (record.offset, i, Some(b));
                        break;
                    }
                }
                Err(Processing::Infrastructure(e)) => return Err(e),
            }
        }
        if end == 0 {
            if let Some(b) = blocked.take() {
                // Blocked at the first record: nothing to write.
                return Err(b);
            }
        }
        let observation_ops: Vec<WriteOp> = pending
            .order
            .iter()
            .filter_map(|id| pending.by_id.get(id).map(|p| (id, p)))
            .map(|(id, p)| WriteOp::Update {
                resource_type: "Observation".into(),
                id: id.clone(),
                resource: p.resource.clone(),
                if_match: p.if_match,
            })
            .collect();
        let written = observation_ops.len() as u64;
        for p in pending.order.iter().filter_map(|id| pending.by_id.get(id)) {
            let points = crate::vitals::vital_points(&p.patient_id, &p.resource);
            touched
                .entry(p.patient_id.clone())
                .or_default()
                .extend(points);
        }
        // The batch's Observations and the RiskAssessments scored from them go to the
        // store in one transaction: one commit, and the index pages both touch (the
        // patient's references, the dates) are written to the WAL once, not twice.
        let mut scored = self.score_batch(&touched)?;
        let mut ops = observation_ops;
        ops.extend(scored.iter().map(Self::risk_assessment_op));
        match self.store.transaction(ops) {
            Ok(_) => self.metrics.observations_written(written),
            Err(
                StoreError::VersionConflict { .. }
                | StoreError::Invalid(_)
                | StoreError::Conflict(_),
            ) => {
                // Someone else changed one of the Observations, or one is invalid: fall
                // back to writing record by record, which retries conflicts and
                // dead-letters only the message that cannot be stored; then score again
                // from what was written. (The read model may keep a vital of a message
                // dead-lettered here; its Observation is not in the store.)
                touched.clear();
                for record in prepared {
                    match self.process(&templates, record, None) {
                        Ok(points) => {
                            for p in points {
                                touched.entry(p.patient_id.clone()).or_default().push(p);
                            }
                        }
                        Err(Processing::Failed(failure)) => {
                            if let Some(b) = self.fail(record, &failure)? {
                                next = record.offset;
                                end = records
                                    .iter()
                                    .position(|r| r.offset == record.offset)
                                    .unwrap_or(0);
                                blocked = Some(b);
                                break;
                            }
                        }
                        Err(Processing::Infrastructure(e)) => return Err(e),
                    }
                }
                scored = self.score_batch(&touched)?;
                self.store
                    .transaction(scored.iter().map(Self::risk_assessment_op).collect())?;
            }
            Err(e) => return Err(e.into()),
        }
        let records = &records[..end];
        self.metrics.normalized(records.len() as u64);
        let rows: Vec<ScoreRow> = scored.iter().map(Self::score_row).collect();
        self.db.put_scores(&rows)?;
        for s in &scored {
            self.metrics.risk_assessment_written();
            self.update_flag(&s.patient_id, &s.result, &s.ra_id, s.window_end)?;
            self.notify(Change::Patient(s.patient_id.clone()));
        }
        self.log.commit(INGEST_TOPIC, CONSUMER_GROUP, next)?;
        if let (0, Some(b)) = (end, blocked) {
            return Err(b);
        }
        let now = now_millis();
        for record in records {
            self.metrics
                .observe_pipeline_latency((now - record.timestamp_ms).max(0) as f64 / 1000.0);
        }
        Ok(records.len())
    }

    /// Puts the batch's new vitals into the read model and scores each touched
    /// patient's window.
    fn score_batch(
        &self,
        touched: &BTreeMap<String, Vec<VitalPoint>>,
    ) -> Result<Vec<Scored>, PipelineError> {
        for patient_id in touched.keys() {
            self.ensure_patient(patient_id)?;
        }
        // One read-model transaction for the whole batch (one fsync). Rewriting a
        // point is harmless: they are keyed by patient, vital and Observation.
        let all_points: Vec<VitalPoint> = touched.values().flatten().cloned().collect();
        self.db.put_vitals(&all_points)?;
        let mut scored = Vec::with_capacity(touched.len());
        for (patient_id, points) in touched {
            if let Some(s) = self.score(patient_id, points)? {
                scored.push(s);
            }
        }
        Ok(scored)
    }

    fn risk_assessment_op(s: &Scored) -> WriteOp {
        WriteOp::Update {
            resource_type: "RiskAssessment".into(),
            id: s.ra_id.clone(),
            resource: s.risk_assessment.clone(),
            if_match: None,
        }
    }

    /// A message failed: under `dead-letter`, records it and lets the stream go on
    /// (`None`); under `block`, returns the error that holds the stream at it.
    fn fail(
        &self,
        record: &Record,
        failure: &Failure,
    ) -> Result<Option<PipelineError>, PipelineError> {
        if self.config.error_policy == ErrorPolicy::DeadLetter {
            self.dead_letter(record, failure)?;
            return Ok(None);
        }
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let attempts = match *blocked {
            Some((offset, n)) if offset == record.offset => n + 1,
            _ => {
                // Counted once per message; each attempt counts as a retry.
                self.metrics.error(&failure.kind);
                1
            }
        };
        *blocked = Some((record.offset, attempts));
        self.metrics.pipeline_retry(&failure.kind);
        Ok(Some(PipelineError::Blocked {
            offset: record.offset,
            kind: failure.kind.clone(),
            message: failure.message.clone(),
            attempts,
        }))
    }

    /// The message the `block` policy holds the stream at, with the attempts so far.
    pub fn blocked_at(&self) -> Option<(u64, u32)> {
        *self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A resource was written through the FHIR API: drop cached identities it may
    /// change (a Device re-linked to another Patient).
    pub fn resource_written(&self, resource_type: &str, id: &str) {
        self.identity.invalidate(resource_type, id);
    }

    fn dead_letter(&self, record: &Record, failure: &Failure) -> Result<(), PipelineError> {
        self.metrics.dead_lettered(&failure.kind);
        self.metrics.error(&failure.kind);
        tracing::warn!(offset = record.offset, kind = %failure.kind, error = %failure.message, "message dead-lettered");
        let envelope: Value = serde_json::from_slice(&record.payload).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&record.payload).into_owned())
        });
        let entry = json!({
            "sourceTopic": INGEST_TOPIC,
            "sourceOffset": record.offset,
            "errorKind": failure.kind,
            "error": failure.message,
            "failedAt": format_rfc3339(now_millis()),
            "message": envelope,
        });
        let payload =
            serde_json::to_vec(&entry).map_err(|e| PipelineError::Internal(e.to_string()))?;
        self.log.append(
            DEAD_LETTER_TOPIC,
            vec![AppendRecord {
                // Keyed by source offset: a replay after a crash does not dead-letter twice.
                key: Some(format!("{INGEST_TOPIC}/{}", record.offset)),
                timestamp_ms: now_millis(),
                payload,
            }],
        )?;
        Ok(())
    }

    /// Normalizes one record into Observations. With `pending`, the Observations are
    /// added to the batch (merging with earlier records of the batch) instead of being
    /// written; without, each is written at once. Returns the vital values written
    /// (direct mode only).
    fn process(
        &self,
        templates: &Templates,
        record: &Record,
        pending: Option<&mut Pending>,
    ) -> Result<Vec<VitalPoint>, Processing> {
        // Replays and blocked retries are not counted again.
        let first_seen = self
            .events_counted
            .fetch_max(record.offset + 1, Ordering::Relaxed)
            <= record.offset;
        if first_seen {
            self.metrics.device_event();
        }
        let envelope: Value = serde_json::from_slice(&record.payload).map_err(|e| {
            Failure::new(
                "InvalidDataFormatException",
                format!("the stored message is not JSON: {e}"),
            )
        })?;
        let device_id = envelope["SystemProperties"][DEVICE_ID_PROPERTY]
            .as_str()
            .ok_or_else(|| {
                Failure::new(
                    "ResourceIdentityNotDefinedException",
                    "the message has no authenticated device id",
                )
            })?
            .to_string();
        let measurements = templates
            .device
            .normalize(&envelope)
            .map_err(|e| Failure::new(e.kind(), e.to_string()))?;
        if first_seen {
            self.metrics.normalized_events(measurements.len() as u64);
            self.metrics
                .observe_stage_latency(NORMALIZATION_LATENCY, seconds_since(record.timestamp_ms));
            if measurements.is_empty() {
                self.metrics.dropped_event();
            }
        }
        if measurements.is_empty() {
            return Err(Failure::new(
                "TemplateNotFound",
                "no device template matched the message (check its \"type\" against the device templates' typeMatchExpression)",
            )
            .into());
        }
        let resolved = self.identity.resolve(&device_id, &measurements)?;
        if resolved.linked {
            // Create mode made or linked the Patient: put it on the worklist.
            self.ensure_patient(&resolved.patient_id)?;
        }
        let patient_id = resolved.patient_id.clone();
        // FhirResourceSaved operations of this record's Observations.
        let mut saved: Vec<&'static str> = Vec::new();
        let grouping = vigil_medtech::group(&measurements, &templates.fhir);
        if let Some(rejected) = grouping.rejected.first() {
            return Err(Failure::new(
                rejected.error.kind(),
                format!("measurement {}: {}", rejected.index, rejected.error),
            )
            .into());
        }
        let mut points = Vec::new();
        if let Some(pending) = pending {
            // Collected first, merged into the batch only if the whole record succeeds.
            let mut mine: Vec<(String, PendingObservation)> = Vec::new();
            for group in &grouping.groups {
                let identity = resolved.identity_for(group);
                let id = vigil_medtech::observation_id(group, &identity);
                let earlier = mine
                    .iter()
                    .rev()
                    .find(|(i, _)| *i == id)
                    .map(|(_, p)| (p.resource.clone(), p.if_match))
                    .or_else(|| {
                        pending
                            .by_id
                            .get(&id)
                            .map(|p| (p.resource.clone(), p.if_match))
                    });
                let (existing, if_match) = match earlier {
                    Some((resource, if_match)) => (Some(resource), if_match),
                    None => match self
                        .store
                        .read("Observation", &id)
                        .map_err(PipelineError::from)?
                    {
                        ReadOutcome::Found(s) => (Some((*s.resource).clone()), Some(s.version)),
                        _ => (None, None),
                    },
                };
                let change = templates
                    .fhir
                    .observation_for(group, &identity, existing.as_ref())
                    .map_err(|e| Failure::new(e.kind(), e.to_string()))?;
                let mut resource = match change {
                    ObservationChange::Create(v) => {
                        saved.push("Created");
                        v
                    }
                    ObservationChange::Update(v) => {
                        saved.push("Updated");
                        v
                    }
                    ObservationChange::Unchanged => {
                        saved.push("NoOperation");
                        continue;
                    }
                };
                resource["id"] = Value::String(id.clone());
                mine.push((
                    id,
                    PendingObservation {
                        resource,
                        if_match,
                        patient_id: patient_id.clone(),
                    },
                ));
            }
            for (id, p) in mine {
                if !pending.by_id.contains_key(&id) {
                    pending.order.push(id.clone());
                }
                pending.by_id.insert(id, p);
            }
            self.converted(record, measurements.len(), grouping.groups.len(), &saved);
            return Ok(points);
        }
        for group in &grouping.groups {
            let identity = resolved.identity_for(group);
            let id = vigil_medtech::observation_id(group, &identity);
            let mut attempts = 0;
            loop {
                attempts += 1;
                let existing = match self
                    .store
                    .read("Observation", &id)
                    .map_err(PipelineError::from)?
                {
                    ReadOutcome::Found(s) => Some(s),
                    _ => None,
                };
                let change = templates
                    .fhir
                    .observation_for(
                        group,
                        &identity,
                        existing.as_ref().map(|s| s.resource.as_ref()),
                    )
                    .map_err(|e| Failure::new(e.kind(), e.to_string()))?;
                let (resource, operation) = match change {
                    ObservationChange::Create(v) => (v, "Created"),
                    ObservationChange::Update(v) => (v, "Updated"),
                    ObservationChange::Unchanged => {
                        saved.push("NoOperation");
                        break;
                    }
                };
                let mut resource = resource;
                resource["id"] = Value::String(id.clone());
                match self.store.update(
                    "Observation",
                    &id,
                    resource,
                    existing.as_ref().map(|s| s.version),
                ) {
                    Ok((stored, _)) => {
                        saved.push(operation);
                        self.metrics.observations_written(1);
                        points.extend(crate::vitals::vital_points(&patient_id, &stored.resource));
                        break;
                    }
                    // Another writer changed it between our read and write: merge again.
                    Err(StoreError::VersionConflict { .. }) if attempts < 5 => continue,
                    Err(StoreError::Invalid(m)) => {
                        return Err(Failure::new("InvalidFhirResource", m).into());
                    }
                    Err(e) => return Err(Processing::Infrastructure(e.into())),
                }
            }
        }
        self.converted(record, measurements.len(), grouping.groups.len(), &saved);
        Ok(points)
    }

    /// A record went through FHIR conversion: count it once, and release the `block`
    /// policy if it was the message holding the stream.
    fn converted(&self, record: &Record, measurements: usize, groups: usize, saved: &[&str]) {
        if self
            .conversions_counted
            .fetch_max(record.offset + 1, Ordering::Relaxed)
            <= record.offset
        {
            self.metrics
                .measurements(measurements as u64, groups as u64);
            for operation in saved {
                self.metrics.fhir_resource_saved("Observation", operation);
            }
            self.metrics
                .observe_stage_latency(GROUPING_LATENCY, seconds_since(record.timestamp_ms));
        }
        let mut blocked = self
            .blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((offset, attempts)) = *blocked {
            if offset == record.offset {
                tracing::info!(
                    offset,
                    attempts,
                    "blocked message processed; the pipeline goes on"
                );
                *blocked = None;
            }
        }
    }

    fn spo2_scale(&self, patient_id: &str) -> Result<SpO2Scale, PipelineError> {
        if let Some(s) = self
            .scales
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(patient_id)
        {
            return Ok(*s);
        }
        let query = vigil_fhir::search::query::SearchQuery::parse(
            Some("Condition"),
            &format!("subject=Patient/{patient_id}&_count=200"),
            vigil_fhir::search::SearchRegistry::r4(),
        )
        .map_err(|e| PipelineError::Internal(e.to_string()))?;
        let result = self
            .store
            .search(&query, &vigil_store::SearchPage::default())?;
        let conditions: Vec<Value> = result
            .matches
            .iter()
            .map(|s| (*s.resource).clone())
            .collect();
        let scale = vigil_scoring::spo2_scale_from_conditions(&conditions);
        self.scales
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(patient_id.to_string(), scale);
        Ok(scale)
    }

    /// Makes sure the patient is on the worklist: caches its demographics from the FHIR
    /// store and assigns the default care team the first time it is seen.
    pub fn ensure_patient(&self, patient_id: &str) -> Result<(), PipelineError> {
        if self.db.patient(patient_id)?.is_some() {
            return Ok(());
        }
        let row = match self.store.read("Patient", patient_id)? {
            ReadOutcome::Found(s) => crate::patient_row(patient_id, &s.resource),
            _ => crate::patient_row(patient_id, &Value::Null),
        };
        self.db.upsert_patient(&row)?;
        if let Some(team) = &self.config.default_team {
            if self.db.patient_teams(patient_id)?.is_empty() {
                self.db.assign_team(patient_id, team)?;
            }
        }
        Ok(())
    }

    /// Forgets the cached SpO2 scale of a patient (their Conditions changed).
    pub fn forget_scale(&self, patient_id: &str) {
        self.scales
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(patient_id);
    }

    /// Scores the patient's window ending at their newest new reading.
    fn score(
        &self,
        patient_id: &str,
        new_points: &[VitalPoint],
    ) -> Result<Option<Scored>, PipelineError> {
        let Some(window_end) = new_points.iter().map(|p| p.t_ms).max() else {
            return Ok(None);
        };
        let window_ms = i64::try_from(self.config.window.as_millis()).unwrap_or(i64::MAX);
        let window_start = window_end.saturating_sub(window_ms);
        let in_window = self.db.vitals_since(patient_id, window_start)?;
        let mut latest: HashMap<&str, &VitalPoint> = HashMap::new();
        for p in in_window.iter().filter(|p| p.t_ms <= window_end) {
            let slot = latest.entry(p.vital.as_str()).or_insert(p);
            if p.t_ms >= slot.t_ms {
                *slot = p;
            }
        }
        let value = |k: &str| latest.get(k).map(|p| p.value);
        let input = News2Input {
            respiratory_rate: value("respiratory-rate"),
            spo2: value("spo2"),
            on_oxygen: value("oxygen-flow").map(|f| f > 0.0),
            systolic_bp: value("blood-pressure"),
            heart_rate: value("heart-rate"),
            temperature_c: value("temperature"),
            consciousness: None,
            scale: self.spo2_scale(patient_id)?,
        };
        let result = vigil_scoring::news2(&input);
        let mut basis: Vec<String> = latest.values().map(|p| p.observation_ref.clone()).collect();
        basis.sort();
        basis.dedup();
        // Led by the window's end time (hex milliseconds): new RiskAssessments land at the
        // end of the store's id indexes instead of on a random page each, which keeps
        // the WAL written per batch small. Still deterministic, so a replayed batch
        // rewrites the same resources.
        let ra_id = format!(
            "news2-{:011x}-{}",
            window_end.max(0),
            &short_hash(&[patient_id, &window_end.to_string()])[..20]
        );
        let ra = vigil_scoring::risk_assessment_with_scale(
            patient_id,
            window_start,
            window_end,
            &result,
            &basis,
            Some(&ra_id),
            input.scale,
        );
        Ok(Some(Scored {
            patient_id: patient_id.to_string(),
            result,
            ra_id,
            risk_assessment: ra,
            window_end,
        }))
    }

    /// The read-model row of a score.
    fn score_row(scored: &Scored) -> ScoreRow {
        ScoreRow {
            patient_id: scored.patient_id.clone(),
            t_ms: scored.window_end,
            score: scored.result.total,
            band: band_name(scored.result.band).to_string(),
            partial: scored.result.partial,
            missing: scored
                .result
                .missing
                .iter()
                .map(|v| vital_name(*v).to_string())
                .collect(),
            risk_assessment_ref: format!("RiskAssessment/{}", scored.ra_id),
        }
    }

    fn reason(result: &News2Result) -> String {
        let mut reason = format!("NEWS2 {} ({} risk)", result.total, band_name(result.band));
        let threes: Vec<&str> = result
            .parameter_scores
            .iter()
            .filter(|(_, s)| *s == 3)
            .map(|(v, _)| vital_name(*v))
            .collect();
        if !threes.is_empty() {
            reason.push_str(&format!("; scores 3: {}", threes.join(", ")));
        }
        if result.partial {
            let missing: Vec<&str> = result.missing.iter().map(|v| vital_name(*v)).collect();
            reason.push_str(&format!("; partial, missing {}", missing.join(", ")));
        }
        reason
    }

    fn flag_resource(
        patient_id: &str,
        result: &News2Result,
        ra_ref: &str,
        since_ms: i64,
        id: &str,
    ) -> Value {
        let mut flag = vigil_scoring::flag(
            patient_id,
            result,
            ra_ref,
            vigil_scoring::FlagStatus::Active,
            since_ms,
        );
        flag["id"] = Value::String(id.to_string());
        flag
    }

    fn update_flag(
        &self,
        patient_id: &str,
        result: &News2Result,
        ra_id: &str,
        at_ms: i64,
    ) -> Result<(), PipelineError> {
        let state = self.db.flag_state(patient_id)?;
        let active = state.as_ref().filter(|s| s.active);
        let ra_ref = format!("RiskAssessment/{ra_id}");
        if vigil_scoring::should_flag(result) {
            if let Some(state) = active {
                if state.low_since_ms.is_some() {
                    // The recovery did not last: the same episode continues.
                    self.db.set_low_since(patient_id, None)?;
                }
                // The same deterioration continues: no new alert; record a worse score.
                if self.db.escalate_alert(
                    &state.flag_id,
                    result.total,
                    band_name(result.band),
                    &Self::reason(result),
                )? {
                    let flag = Self::flag_resource(
                        patient_id,
                        result,
                        &ra_ref,
                        state.since_ms,
                        &state.flag_id,
                    );
                    self.store.update("Flag", &state.flag_id, flag, None)?;
                    self.notify(Change::Alert {
                        alert_id: state.flag_id.clone(),
                        patient_id: patient_id.to_string(),
                    });
                }
                return Ok(());
            }
            let flag_id = format!(
                "deterioration-{}",
                short_hash(&[patient_id, &at_ms.to_string()])
            );
            let flag = Self::flag_resource(patient_id, result, &ra_ref, at_ms, &flag_id);
            self.store.update("Flag", &flag_id, flag, None)?;
            let alert = AlertRow {
                id: flag_id.clone(),
                patient_id: patient_id.to_string(),
                flag_id: flag_id.clone(),
                state: AlertState::Open,
                opened_ms: now_millis(),
                score: result.total,
                band: band_name(result.band).to_string(),
                reason: Self::reason(result),
                ack_by: None,
                ack_ms: None,
                note: None,
                resolved_ms: None,
            };
            self.db.raise_flag(
                patient_id,
                &FlagState {
                    flag_id: flag_id.clone(),
                    active: true,
                    since_ms: at_ms,
                    low_since_ms: None,
                },
                &alert,
            )?;
            self.metrics.flag_raised();
            tracing::info!(
                patient = patient_id,
                score = result.total,
                band = band_name(result.band),
                "deterioration flag raised"
            );
            self.notify(Change::Alert {
                alert_id: flag_id,
                patient_id: patient_id.to_string(),
            });
        } else if let Some(state) = active {
            let recovery_ms =
                i64::try_from(self.config.flag_recovery.as_millis()).unwrap_or(i64::MAX);
            let low_since = match state.low_since_ms {
                Some(t) => t,
                None => {
                    self.db.set_low_since(patient_id, Some(at_ms))?;
                    at_ms
                }
            };
            if at_ms.saturating_sub(low_since) < recovery_ms {
                return Ok(());
            }
            let mut flag = match self.store.read("Flag", &state.flag_id)? {
                ReadOutcome::Found(s) => (*s.resource).clone(),
                _ => {
                    Self::flag_resource(patient_id, result, &ra_ref, state.since_ms, &state.flag_id)
                }
            };
            vigil_scoring::close_flag(&mut flag, at_ms.max(state.since_ms));
            self.store.update("Flag", &state.flag_id, flag, None)?;
            self.db
                .lower_flag(patient_id, &state.flag_id, now_millis())?;
            self.metrics.flag_lowered();
            self.notify(Change::Alert {
                alert_id: state.flag_id.clone(),
                patient_id: patient_id.to_string(),
            });
        }
        Ok(())
    }
}

/// Observations of the batch being prepared, by id, in first-seen order.
#[derive(Default)]
struct Pending {
    by_id: HashMap<String, PendingObservation>,
    order: Vec<String>,
}

struct PendingObservation {
    resource: Value,
    /// The stored version the merge was based on (None: new).
    if_match: Option<u64>,
    patient_id: String,
}

/// A computed NEWS2 window, written with the batch's other RiskAssessments.
struct Scored {
    patient_id: String,
    result: News2Result,
    ra_id: String,
    risk_assessment: Value,
    window_end: i64,
}

/// How processing one message can fail.
enum Processing {
    /// The message is bad: dead-letter it.
    Failed(Failure),
    /// The system is: retry the batch.
    Infrastructure(PipelineError),
}

impl From<Failure> for Processing {
    fn from(f: Failure) -> Self {
        Processing::Failed(f)
    }
}

impl From<ResolveError> for Processing {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Failed(f) => Processing::Failed(f),
            ResolveError::Store(s) => Processing::Infrastructure(s.into()),
        }
    }
}

/// Seconds from a log timestamp to now (0 for a clock step backwards).
fn seconds_since(timestamp_ms: i64) -> f64 {
    (now_millis() - timestamp_ms).max(0) as f64 / 1000.0
}

impl From<PipelineError> for Processing {
    fn from(e: PipelineError) -> Self {
        Processing::Infrastructure(e)
    }
}

/// Infrastructure failures of the pipeline (the batch is retried).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The event log failed.
    #[error("event log: {0}")]
    Log(#[from] vigil_eventlog::LogError),
    /// The FHIR store failed.
    #[error("FHIR store: {0}")]
    Store(#[from] StoreError),
    /// The monitoring database failed.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
    /// The `block` error policy holds the stream at a failing message.
    #[error("blocked at ingest offset {offset} after {attempts} attempt(s): {kind}: {message}")]
    Blocked {
        /// The message's offset in the ingest topic.
        offset: u64,
        /// Its error kind.
        kind: String,
        /// What went wrong.
        message: String,
        /// Attempts so far.
        attempts: u32,
    },
}

/// Sleeps `total`, waking early when `stop` is set (a long backoff must not delay
/// shutdown).
fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let deadline = std::time::Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}
