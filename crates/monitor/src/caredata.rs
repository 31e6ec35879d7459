//! The dashboard's view of the clinical data ([`vigil_dashboard::CareData`]), served
//! from the read model in `monitor.db`.

use crate::db::{AlertRow, AlertState, DbError, MonitorDb, PatientRow, VitalPoint};
use crate::metrics::Metrics;
use crate::pipeline::{Change, Pipeline};
use crate::time::{format_rfc3339, now_millis};
use crate::vitals::{vital, VITALS};
use std::sync::Arc;
use vigil_dashboard::{
    Alert, AlertStatus, CareData, CareDataError, PatientDetail, Point, RiskSummary, Role,
    ScorePoint, Update, Viewer, VitalLatest, VitalSeries, WorklistRow,
};

/// How far back the patient page looks by default.
const DEFAULT_HISTORY_MS: i64 = 7 * 24 * 3600 * 1000;

/// [`CareData`] over the monitoring database.
pub struct MonitorCareData {
    db: Arc<MonitorDb>,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    updates: tokio::sync::broadcast::Sender<Update>,
}

impl From<DbError> for CareDataError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound(m) => CareDataError::NotFound(m),
            DbError::Conflict(m) => CareDataError::Conflict(m),
            DbError::Sqlite(e) => CareDataError::Internal(e.to_string()),
        }
    }
}

fn status(s: AlertState) -> AlertStatus {
    match s {
        AlertState::Open => AlertStatus::Open,
        AlertState::Acknowledged => AlertStatus::Acknowledged,
        AlertState::Resolved => AlertStatus::Resolved,
    }
}

fn unit_label(unit: &str) -> String {
    match unit {
        "Cel" => "°C".into(),
        "mm[Hg]" => "mmHg".into(),
        other => other.into(),
    }
}

impl MonitorCareData {
    /// A view over `db`; changes from the pipeline are forwarded to dashboard
    /// subscribers by a task on the current tokio runtime.
    pub fn new(
        db: Arc<MonitorDb>,
        pipeline: Arc<Pipeline>,
        metrics: Arc<Metrics>,
    ) -> Arc<MonitorCareData> {
        let (updates, _) = tokio::sync::broadcast::channel(1024);
        let mut changes = pipeline.subscribe();
        let forward = updates.clone();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(Change::Patient(patient_id)) => {
                        let _ = forward.send(Update::Patient { patient_id });
                    }
                    Ok(Change::Alert {
                        alert_id,
                        patient_id,
                    }) => {
                        let _ = forward.send(Update::Alert {
                            alert_id,
                            patient_id,
                        });
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Arc::new(MonitorCareData {
            db,
            pipeline,
            metrics,
            updates,
        })
    }

    fn visible(&self, viewer: &Viewer, patient_id: &str) -> Result<bool, DbError> {
        if viewer.role == Role::Admin {
            return Ok(true);
        }
        let teams = self.db.patient_teams(patient_id)?;
        Ok(teams.iter().any(|t| viewer.teams.contains(t)))
    }

    fn alert(&self, row: AlertRow) -> Result<Alert, DbError> {
        let name = self
            .db
            .patient(&row.patient_id)?
            .map_or_else(|| row.patient_id.clone(), |p| p.name);
        Ok(Alert {
            id: row.id,
            patient_id: row.patient_id,
            patient_name: name,
            status: status(row.state),
            opened_at: format_rfc3339(row.opened_ms),
            score: row.score,
            band: row.band,
            reason: row.reason,
            acknowledged_by: row.ack_by,
            acknowledged_at: row.ack_ms.map(format_rfc3339),
            note: row.note,
            resolved_at: row.resolved_ms.map(format_rfc3339),
        })
    }

    fn row(&self, p: PatientRow) -> Result<WorklistRow, DbError> {
        let risk = self.db.latest_score(&p.id)?.map(|s| RiskSummary {
            score: s.score,
            band: s.band,
            partial: s.partial,
            missing: s.missing,
            time: format_rfc3339(s.t_ms),
        });
        let latest = self
            .db
            .latest_vitals(&p.id)?
            .into_iter()
            .map(|v: VitalPoint| {
                let label =
                    vital(&v.vital).map_or_else(|| v.vital.clone(), |k| k.label.to_string());
                VitalLatest {
                    vital: v.vital,
                    label,
                    value: v.value,
                    value2: v.value2,
                    unit: unit_label(&v.unit),
                    time: format_rfc3339(v.t_ms),
                }
            })
            .collect();
        Ok(WorklistRow {
            open_alerts: self.db.open_alert_count(&p.id)?,
            flag_active: self.db.flag_state(&p.id)?.is_some_and(|f| f.active),
            patient_id: p.id,
            name: p.name,
            birth_date: p.birth_date,
            gender: p.gender,
            risk,
            latest,
        })
    }
}

impl CareData for MonitorCareData {
    fn test_templates(
        &self,
        request: serde_json::Value,
    ) -> Result<serde_json::Value, CareDataError> {
        crate::templates_api::test_request(&request, &self.pipeline.templates())
            .map_err(CareDataError::Invalid)
    }

    fn worklist(&self, viewer: &Viewer) -> Result<Vec<WorklistRow>, CareDataError> {
        let patients = if viewer.role == Role::Admin {
            self.db.patients(None)?
        } else {
            self.db.patients(Some(&viewer.teams))?
        };
        let mut rows = patients
            .into_iter()
            .map(|p| self.row(p))
            .collect::<Result<Vec<_>, _>>()?;
        let rank = |r: &WorklistRow| match r.risk.as_ref().map(|s| s.band.as_str()) {
            Some("high") => 0,
            Some("medium") => 1,
            Some("low-medium") => 2,
            Some(_) => 3,
            None => 4,
        };
        rows.sort_by(|a, b| {
            rank(a)
                .cmp(&rank(b))
                .then_with(|| {
                    let s = |r: &WorklistRow| r.risk.as_ref().map_or(0, |s| s.score);
                    s(b).cmp(&s(a))
                })
                .then_with(|| b.open_alerts.cmp(&a.open_alerts))
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(rows)
    }

    fn patient(
        &self,
        viewer: &Viewer,
        patient_id: &str,
        since_ms: Option<i64>,
    ) -> Result<Option<PatientDetail>, CareDataError> {
        if !self.visible(viewer, patient_id)? {
            return Ok(None);
        }
        let Some(p) = self.db.patient(patient_id)? else {
            return Ok(None);
        };
        let summary = self.row(p)?;
        let since = since_ms.unwrap_or_else(|| now_millis() - DEFAULT_HISTORY_MS);
        // Simulated time can run ahead of the wall clock: anchor the default history at
        // the newest data rather than now.
        let newest = summary
            .latest
            .iter()
            .filter_map(|v| crate::time::parse_rfc3339(&v.time))
            .max();
        let since = match (since_ms, newest) {
            (None, Some(n)) if n > now_millis() => n - DEFAULT_HISTORY_MS,
            _ => since,
        };
        let points = self.db.vitals_since(patient_id, since)?;
        let series = VITALS
            .iter()
            .filter_map(|k| {
                let pts: Vec<Point> = points
                    .iter()
                    .filter(|p| p.vital == k.key)
                    .map(|p| Point {
                        t: format_rfc3339(p.t_ms),
                        v: p.value,
                        v2: p.value2,
                    })
                    .collect();
                (!pts.is_empty()).then(|| VitalSeries {
                    vital: k.key.to_string(),
                    label: k.label.to_string(),
                    unit: unit_label(k.unit),
                    points: pts,
                })
            })
            .collect();
        let scores = self
            .db
            .scores_since(patient_id, since)?
            .into_iter()
            .map(|s| ScorePoint {
                t: format_rfc3339(s.t_ms),
                score: s.score,
                band: s.band,
                partial: s.partial,
                missing: s.missing,
            })
            .collect();
        let alerts = self
            .db
            .alerts(Some(patient_id), None, 200)?
            .into_iter()
            .map(|a| self.alert(a))
            .collect::<Result<_, _>>()?;
        Ok(Some(PatientDetail {
            summary,
            series,
            scores,
            alerts,
        }))
    }

    fn alerts(
        &self,
        viewer: &Viewer,
        status: Option<AlertStatus>,
    ) -> Result<Vec<Alert>, CareDataError> {
        let state = status.map(|s| match s {
            AlertStatus::Open => AlertState::Open,
            AlertStatus::Acknowledged => AlertState::Acknowledged,
            AlertStatus::Resolved => AlertState::Resolved,
        });
        let mut out = Vec::new();
        for row in self.db.alerts(None, state, 500)? {
            if self.visible(viewer, &row.patient_id)? {
                out.push(self.alert(row)?);
            }
        }
        Ok(out)
    }

    fn acknowledge(
        &self,
        viewer: &Viewer,
        alert_id: &str,
        note: Option<&str>,
    ) -> Result<Alert, CareDataError> {
        let row = self
            .db
            .alert(alert_id)?
            .ok_or_else(|| CareDataError::NotFound(format!("alert {alert_id}")))?;
        if !self.visible(viewer, &row.patient_id)? {
            return Err(CareDataError::NotFound(format!("alert {alert_id}")));
        }
        let row = self
            .db
            .acknowledge(alert_id, &viewer.username, note, now_millis())?;
        self.metrics.alert_acknowledged();
        self.pipeline.notify(Change::Alert {
            alert_id: row.id.clone(),
            patient_id: row.patient_id.clone(),
        });
        Ok(self.alert(row)?)
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    fn can_view(&self, viewer: &Viewer, patient_id: &str) -> bool {
        self.visible(viewer, patient_id).unwrap_or(false)
    }
}
