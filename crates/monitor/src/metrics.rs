//! The monitoring pipeline's counters, exposed in the Prometheus text format at
//! `/metrics`. Typed methods (rather than free-form names at call sites) keep the
//! metric names and labels in one place.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histogram buckets.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    total: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; LATENCY_BUCKETS.len()];
        }
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.total += 1;
    }
}

/// All counters.
#[derive(Default)]
pub struct Metrics {
    labelled: Mutex<BTreeMap<(&'static str, String), u64>>,
    readings_normalized: AtomicU64,
    observations_written: AtomicU64,
    risk_assessments_written: AtomicU64,
    flags_raised: AtomicU64,
    flags_lowered: AtomicU64,
    alerts_acknowledged: AtomicU64,
    pipeline_latency: Mutex<Histogram>,
    // The reference's (MedTech) metrics, under Prometheus names.
    device_events: AtomicU64,
    normalized_events: AtomicU64,
    dropped_events: AtomicU64,
    measurements: AtomicU64,
    measurement_groups: AtomicU64,
    stage_latency: Mutex<BTreeMap<&'static str, Histogram>>,
}

/// Normalization stage latency (the reference's `DeviceEventProcessingLatencyMs`).
pub const NORMALIZATION_LATENCY: &str = "vigil_medtech_device_event_processing_latency_seconds";
/// Grouping stage latency (the reference's `MeasurementIngestionLatencyMs`).
pub const GROUPING_LATENCY: &str = "vigil_medtech_measurement_ingestion_latency_seconds";

impl Metrics {
    fn add(&self, name: &'static str, label: String, n: u64) {
        *self
            .labelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((name, label))
            .or_default() += n;
    }

    /// Messages accepted (and duplicates ignored) from one device kind.
    pub fn ingest_accepted(&self, kind: &str, accepted: u64, duplicates: u64) {
        self.add(
            "vigil_ingest_messages_total",
            format!("kind=\"{}\"", escape(kind)),
            accepted,
        );
        if duplicates > 0 {
            self.add(
                "vigil_ingest_duplicates_total",
                format!("kind=\"{}\"", escape(kind)),
                duplicates,
            );
        }
    }

    /// A rejected ingest request.
    pub fn ingest_rejected(&self, reason: &'static str) {
        self.add(
            "vigil_ingest_rejected_total",
            format!("reason=\"{reason}\""),
            1,
        );
    }

    /// A message sent to the dead-letter topic.
    pub fn dead_lettered(&self, kind: &str) {
        self.add(
            "vigil_dead_letters_total",
            format!("error=\"{}\"", escape(kind)),
            1,
        );
    }

    /// Messages normalized into measurements.
    pub fn normalized(&self, messages: u64) {
        self.readings_normalized
            .fetch_add(messages, Ordering::Relaxed);
    }

    /// Observations written (created or changed).
    pub fn observations_written(&self, n: u64) {
        self.observations_written.fetch_add(n, Ordering::Relaxed);
    }

    /// RiskAssessments written.
    pub fn risk_assessment_written(&self) {
        self.risk_assessments_written
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A Flag raised (and its alert opened).
    pub fn flag_raised(&self) {
        self.flags_raised.fetch_add(1, Ordering::Relaxed);
    }

    /// A Flag made inactive.
    pub fn flag_lowered(&self) {
        self.flags_lowered.fetch_add(1, Ordering::Relaxed);
    }

    /// An alert acknowledged.
    pub fn alert_acknowledged(&self) {
        self.alerts_acknowledged.fetch_add(1, Ordering::Relaxed);
    }

    /// A device message taken by the normalization stage (`DeviceEvent`).
    pub fn device_event(&self) {
        self.device_events.fetch_add(1, Ordering::Relaxed);
    }

    /// Measurements produced by normalization (`NormalizedEvent`).
    pub fn normalized_events(&self, n: u64) {
        self.normalized_events.fetch_add(n, Ordering::Relaxed);
    }

    /// A message no device template matched (`DroppedEvent`).
    pub fn dropped_event(&self) {
        self.dropped_events.fetch_add(1, Ordering::Relaxed);
    }

    /// Measurements and measurement groups taken by FHIR conversion (`Measurement`,
    /// `MeasurementGroup`).
    pub fn measurements(&self, measurements: u64, groups: u64) {
        self.measurements.fetch_add(measurements, Ordering::Relaxed);
        self.measurement_groups.fetch_add(groups, Ordering::Relaxed);
    }

    /// A FHIR resource saved by the pipeline (`FhirResourceSaved`); `operation` is
    /// `Created`, `Updated` or `NoOperation`.
    pub fn fhir_resource_saved(&self, resource_type: &str, operation: &str) {
        self.add(
            "vigil_medtech_fhir_resources_saved_total",
            format!(
                "resource_type=\"{}\",operation=\"{}\"",
                escape(resource_type),
                escape(operation)
            ),
            1,
        );
    }

    /// An error of the given kind (see [`crate::errors::classify`]), by the reference's
    /// ErrorType and severity and the stage.
    pub fn error(&self, kind: &str) {
        self.error_as(kind, crate::errors::classify(kind).0);
    }

    /// An error of the given kind with an explicit ErrorType (template errors are
    /// `DeviceTemplateError` or `FHIRTemplateError` depending on the template).
    pub fn error_as(&self, kind: &str, error_type: &str) {
        let (_, severity, stage) = crate::errors::classify(kind);
        self.add(
            "vigil_medtech_errors_total",
            format!(
                "name=\"{}\",error_type=\"{error_type}\",severity=\"{severity}\",stage=\"{stage}\"",
                escape(kind)
            ),
            1,
        );
    }

    /// A blocked message retried (error policy `block`).
    pub fn pipeline_retry(&self, kind: &str) {
        self.add(
            "vigil_pipeline_retries_total",
            format!("error=\"{}\"", escape(kind)),
            1,
        );
    }

    /// A stage latency sample ([`NORMALIZATION_LATENCY`] or [`GROUPING_LATENCY`]).
    pub fn observe_stage_latency(&self, name: &'static str, seconds: f64) {
        self.stage_latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name)
            .or_default()
            .observe(seconds);
    }

    /// Time from a message's append to the end of its processing.
    pub fn observe_pipeline_latency(&self, seconds: f64) {
        self.pipeline_latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let simple = [
            (
                "vigil_pipeline_messages_normalized_total",
                "Device messages normalized.",
                &self.readings_normalized,
            ),
            (
                "vigil_observations_written_total",
                "Observations created or changed.",
                &self.observations_written,
            ),
            (
                "vigil_risk_assessments_written_total",
                "NEWS2 RiskAssessments written.",
                &self.risk_assessments_written,
            ),
            (
                "vigil_flags_raised_total",
                "Deterioration Flags raised (one alert each).",
                &self.flags_raised,
            ),
            (
                "vigil_flags_lowered_total",
                "Flags made inactive on return to low risk.",
                &self.flags_lowered,
            ),
            (
                "vigil_alerts_acknowledged_total",
                "Alerts acknowledged.",
                &self.alerts_acknowledged,
            ),
            (
                "vigil_medtech_device_events_total",
                "Device messages taken by normalization (DeviceEvent).",
                &self.device_events,
            ),
            (
                "vigil_medtech_normalized_events_total",
                "Measurements produced by normalization (NormalizedEvent).",
                &self.normalized_events,
            ),
            (
                "vigil_medtech_dropped_events_total",
                "Device messages no device template matched (DroppedEvent).",
                &self.dropped_events,
            ),
            (
                "vigil_medtech_measurements_total",
                "Measurements taken by FHIR conversion (Measurement).",
                &self.measurements,
            ),
            (
                "vigil_medtech_measurement_groups_total",
                "Measurement groups taken by FHIR conversion (MeasurementGroup).",
                &self.measurement_groups,
            ),
        ];
        for (name, help, v) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let labelled = self
            .labelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut last = "";
        for ((name, label), v) in &labelled {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{{{label}}} {v}");
        }
        let h = self
            .pipeline_latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        render_histogram(
            &mut out,
            "vigil_pipeline_latency_seconds",
            "From append to the event log to scored and stored.",
            &h,
        );
        drop(h);
        let stages = self
            .stage_latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let empty = Histogram::default();
        for (name, help) in [
            (
                NORMALIZATION_LATENCY,
                "Normalization stage: from append to the event log to normalized (DeviceEventProcessingLatency).",
            ),
            (
                GROUPING_LATENCY,
                "Grouping stage: from append to the event log to grouped into Observations (MeasurementIngestionLatency).",
            ),
        ] {
            render_histogram(&mut out, name, help, stages.get(name).unwrap_or(&empty));
        }
        out
    }
}

fn render_histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{bound}\"}} {}",
            h.counts.get(i).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
        h.total, h.sum, h.total
    );
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
