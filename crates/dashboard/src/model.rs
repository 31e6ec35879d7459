//! The clinical data the dashboard shows, and the [`CareData`] trait that provides it.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// A care-team member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Sees the patients of their teams.
    CareTeam,
    /// Sees every patient.
    Admin,
}

impl Role {
    /// The name used in the database, the CLI and JSON (`care-team`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::CareTeam => "care-team",
            Role::Admin => "admin",
        }
    }

    /// Parses [`Role::as_str`]'s form.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "care-team" => Some(Role::CareTeam),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The signed-in user on whose behalf data is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewer {
    /// Login name.
    pub username: String,
    /// Name shown in the UI and recorded on acknowledgements.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Care teams whose patients this user sees (ignored for admins).
    pub teams: Vec<String>,
}

/// One patient's row in the worklist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorklistRow {
    /// FHIR Patient id.
    pub patient_id: String,
    /// Display name.
    pub name: String,
    /// `YYYY-MM-DD` (or a partial date).
    pub birth_date: Option<String>,
    /// FHIR administrative gender.
    pub gender: Option<String>,
    /// The latest early-warning score, if any.
    pub risk: Option<RiskSummary>,
    /// The latest reading of each vital.
    pub latest: Vec<VitalLatest>,
    /// Number of open alerts.
    pub open_alerts: u32,
    /// Whether a clinical Flag is active.
    pub flag_active: bool,
}

/// The latest NEWS2 score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskSummary {
    /// Aggregate score.
    pub score: u32,
    /// `low`, `low-medium`, `medium` or `high`.
    pub band: String,
    /// Whether parameters were missing.
    pub partial: bool,
    /// The missing parameters' names.
    pub missing: Vec<String>,
    /// RFC 3339 time of the score.
    pub time: String,
}

/// The latest reading of one vital.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitalLatest {
    /// `heart-rate`, `respiratory-rate`, `spo2`, `blood-pressure`, `temperature`, `weight`,
    /// `glucose`, `oxygen-flow`.
    pub vital: String,
    /// Human label.
    pub label: String,
    /// Value (systolic for blood pressure).
    pub value: f64,
    /// Diastolic for blood pressure.
    pub value2: Option<f64>,
    /// Display unit.
    pub unit: String,
    /// RFC 3339 time of the reading.
    pub time: String,
}

/// Everything the patient page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientDetail {
    /// Demographics and latest values.
    pub summary: WorklistRow,
    /// One series per vital.
    pub series: Vec<VitalSeries>,
    /// NEWS2 scores over time.
    pub scores: Vec<ScorePoint>,
    /// Alert history, all statuses.
    pub alerts: Vec<Alert>,
}

/// One vital over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitalSeries {
    /// Vital code (see [`VitalLatest::vital`]).
    pub vital: String,
    /// Human label.
    pub label: String,
    /// Display unit.
    pub unit: String,
    /// Readings in time order.
    pub points: Vec<Point>,
}

/// One reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// RFC 3339 time.
    pub t: String,
    /// Value (systolic for blood pressure).
    pub v: f64,
    /// Diastolic for blood pressure.
    pub v2: Option<f64>,
}

/// One NEWS2 score over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorePoint {
    /// RFC 3339 time.
    pub t: String,
    /// Aggregate score.
    pub score: u32,
    /// Band (see [`RiskSummary::band`]).
    pub band: String,
    /// Whether parameters were missing.
    pub partial: bool,
    /// The missing parameters' names.
    pub missing: Vec<String>,
}

/// An alert's life-cycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Raised, nobody has acknowledged it.
    Open,
    /// A care-team member has acknowledged it.
    Acknowledged,
    /// The condition has cleared.
    Resolved,
}

impl AlertStatus {
    /// Parses the lowercase form used in JSON and query strings.
    pub fn parse(s: &str) -> Option<AlertStatus> {
        match s {
            "open" => Some(AlertStatus::Open),
            "acknowledged" => Some(AlertStatus::Acknowledged),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

/// An alert raised for a patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Alert id.
    pub id: String,
    /// Patient id.
    pub patient_id: String,
    /// Patient display name.
    pub patient_name: String,
    /// Status.
    pub status: AlertStatus,
    /// RFC 3339 time the alert was raised.
    pub opened_at: String,
    /// Score that raised it.
    pub score: u32,
    /// Band that raised it.
    pub band: String,
    /// Why it was raised, for people.
    pub reason: String,
    /// Display name of who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// RFC 3339 time of acknowledgement.
    pub acknowledged_at: Option<String>,
    /// Note left when acknowledging.
    pub note: Option<String>,
    /// RFC 3339 time the alert resolved.
    pub resolved_at: Option<String>,
}

/// A change the UI should refresh for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Update {
    /// New data for a patient (observation, score, flag).
    Patient {
        /// Patient id.
        patient_id: String,
    },
    /// An alert was raised, acknowledged or resolved.
    Alert {
        /// Alert id.
        alert_id: String,
        /// Patient id.
        patient_id: String,
    },
}

impl Update {
    /// The patient the update is about.
    pub fn patient_id(&self) -> &str {
        match self {
            Update::Patient { patient_id } | Update::Alert { patient_id, .. } => patient_id,
        }
    }
}

/// Errors from [`CareData`].
#[derive(Debug, thiserror::Error)]
pub enum CareDataError {
    /// The resource does not exist or is not visible (HTTP 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with the current state, e.g. already acknowledged (HTTP 409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything else (HTTP 500).
    #[error("internal error: {0}")]
    Internal(String),
    /// The request is malformed (HTTP 400).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// This data source does not offer the feature (HTTP 501).
    #[error("not available: {0}")]
    Unavailable(String),
}

/// The clinical data behind the dashboard. Implementations are blocking; the dashboard
/// calls them on `spawn_blocking`.
pub trait CareData: Send + Sync + 'static {
    /// The viewer's patients (admins: all), in any order; the dashboard sorts by risk.
    fn worklist(&self, viewer: &Viewer) -> Result<Vec<WorklistRow>, CareDataError>;
    /// One patient with series from `since_ms` (Unix ms) on; `None` when the patient does
    /// not exist or the viewer may not see it.
    fn patient(
        &self,
        viewer: &Viewer,
        patient_id: &str,
        since_ms: Option<i64>,
    ) -> Result<Option<PatientDetail>, CareDataError>;
    /// Alerts of the viewer's patients, optionally of one status.
    fn alerts(
        &self,
        viewer: &Viewer,
        status: Option<AlertStatus>,
    ) -> Result<Vec<Alert>, CareDataError>;
    /// Acknowledges an open alert on behalf of `viewer`. `NotFound` when missing or not
    /// visible, `Conflict` when it is not open.
    fn acknowledge(
        &self,
        viewer: &Viewer,
        alert_id: &str,
        note: Option<&str>,
    ) -> Result<Alert, CareDataError>;
    /// A receiver of every update, for any patient; the dashboard filters with
    /// [`CareData::can_view`].
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Update>;
    /// Whether `viewer` may see `patient_id`; used to filter live events. The default
    /// reads the patient, so implementations should override it with a cheap check.
    fn can_view(&self, viewer: &Viewer, patient_id: &str) -> bool {
        matches!(
            self.patient(viewer, patient_id, Some(i64::MAX)),
            Ok(Some(_))
        )
    }
    /// The mapping debugger: runs `request` (`{payloads: [..], deviceTemplates?,
    /// fhirTemplates?, deviceId?}`) through the templates without storing anything and
    /// answers the measurements, Observations and errors. Optional: data sources without
    /// templates keep this default.
    fn test_templates(
        &self,
        request: serde_json::Value,
    ) -> Result<serde_json::Value, CareDataError> {
        let _ = request;
        Err(CareDataError::Unavailable(
            "the mapping debugger is not available on this server".into(),
        ))
    }
}

fn band_rank(band: &str) -> u8 {
    match band {
        "high" => 4,
        "medium" => 3,
        "low-medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

/// Worklist order: band high > medium > low-medium > low > no score, then score
/// descending, then open alerts descending, then name.
pub fn compare_rows(a: &WorklistRow, b: &WorklistRow) -> Ordering {
    let key = |r: &WorklistRow| {
        r.risk
            .as_ref()
            .map_or((0, 0), |s| (band_rank(&s.band) + 1, s.score))
    };
    let (ra, sa) = key(a);
    let (rb, sb) = key(b);
    rb.cmp(&ra)
        .then(sb.cmp(&sa))
        .then(b.open_alerts.cmp(&a.open_alerts))
        .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
        .then_with(|| a.patient_id.cmp(&b.patient_id))
}

/// Sorts worklist rows by [`compare_rows`].
pub fn sort_worklist(rows: &mut [WorklistRow]) {
    rows.sort_by(compare_rows);
}
