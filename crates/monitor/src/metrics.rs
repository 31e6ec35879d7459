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
}

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
        let name = "vigil_pipeline_latency_seconds";
        let _ = writeln!(out, "# HELP {name} From append to the event log to scored and stored.\n# TYPE {name} histogram");
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
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
