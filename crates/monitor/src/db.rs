//! `monitor.db`: the monitoring side's own SQLite database.
//!
//! It holds what is not a FHIR resource — device credentials, care-team assignments,
//! alerts and their acknowledgements — and a read model of the FHIR data (latest
//! vitals, vital series, NEWS2 history, flag state) that the pipeline keeps up to date
//! so that the worklist never has to search the FHIR store per patient. The read model
//! is written in the same pipeline step as the FHIR writes and every row is keyed by the
//! FHIR resource it came from, so replaying the event log after a crash rewrites the
//! same rows instead of duplicating them.

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Errors of the monitoring database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("monitor database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The requested row does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The change conflicts with the current state (e.g. an alert already acknowledged).
    #[error("{0}")]
    Conflict(String),
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// The FHIR Device id; also the device's login name.
    pub id: String,
    /// The Patient the device belongs to.
    pub patient_id: String,
    /// What kind of device (bp-cuff, pulse-oximeter, ...).
    pub kind: String,
    /// SHA-256 of the device secret.
    pub secret_hash: Vec<u8>,
    /// When it was registered (ms).
    pub created_ms: i64,
    /// When its credential was revoked, if it was.
    pub revoked_ms: Option<i64>,
}

/// One value of a vital sign, from one Observation.
#[derive(Debug, Clone, PartialEq)]
pub struct VitalPoint {
    /// Patient id.
    pub patient_id: String,
    /// Vital key (`heart-rate`, `blood-pressure`, ...).
    pub vital: String,
    /// Effective time (ms).
    pub t_ms: i64,
    /// The value (systolic for blood pressure).
    pub value: f64,
    /// The second value (diastolic for blood pressure).
    pub value2: Option<f64>,
    /// UCUM unit as displayed.
    pub unit: String,
    /// `Observation/<id>`.
    pub observation_ref: String,
}

/// One NEWS2 result.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    /// Patient id.
    pub patient_id: String,
    /// End of the scored window (ms).
    pub t_ms: i64,
    /// Total score.
    pub score: u32,
    /// Band (`low`, `low-medium`, `medium`, `high`).
    pub band: String,
    /// Whether some parameters were missing.
    pub partial: bool,
    /// The missing parameters.
    pub missing: Vec<String>,
    /// `RiskAssessment/<id>`.
    pub risk_assessment_ref: String,
}

/// The patient's current flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagState {
    /// The Flag id of the current (or last) deterioration episode.
    pub flag_id: String,
    /// Whether the flag is active.
    pub active: bool,
    /// When the episode started (ms).
    pub since_ms: i64,
    /// Since when the patient has been at low risk while the flag is still active (the
    /// flag is lowered once this lasts the recovery period).
    pub low_since_ms: Option<i64>,
}

/// Alert status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// Raised, nobody has acknowledged it.
    Open,
    /// Someone acknowledged it.
    Acknowledged,
    /// The patient returned to low risk before anyone acknowledged it.
    Resolved,
}

impl AlertState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    fn parse(s: &str) -> AlertState {
        match s {
            "acknowledged" => AlertState::Acknowledged,
            "resolved" => AlertState::Resolved,
            _ => AlertState::Open,
        }
    }
}

/// An alert for the care team: one per deterioration episode (one Flag).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    /// Alert id.
    pub id: String,
    /// Patient id.
    pub patient_id: String,
    /// The Flag that raised it.
    pub flag_id: String,
    /// Status.
    pub state: AlertState,
    /// When it was raised (ms).
    pub opened_ms: i64,
    /// The highest score seen during the episode.
    pub score: u32,
    /// The band of that score.
    pub band: String,
    /// Why it was raised, for people.
    pub reason: String,
    /// Who acknowledged it.
    pub ack_by: Option<String>,
    /// When.
    pub ack_ms: Option<i64>,
    /// The acknowledgement note.
    pub note: Option<String>,
    /// When the episode ended.
    pub resolved_ms: Option<i64>,
}

/// Cached demographics for the worklist.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatientRow {
    /// Patient id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Birth date.
    pub birth_date: Option<String>,
    /// Administrative gender.
    pub gender: Option<String>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS device(
  id TEXT PRIMARY KEY, patient_id TEXT NOT NULL, kind TEXT NOT NULL,
  secret_hash BLOB NOT NULL, created_ms INTEGER NOT NULL, revoked_ms INTEGER);
CREATE INDEX IF NOT EXISTS device_patient ON device(patient_id);
CREATE TABLE IF NOT EXISTS patient(
  id TEXT PRIMARY KEY, name TEXT NOT NULL, birth_date TEXT, gender TEXT);
CREATE TABLE IF NOT EXISTS patient_team(
  patient_id TEXT NOT NULL, team TEXT NOT NULL, PRIMARY KEY(patient_id, team));
CREATE INDEX IF NOT EXISTS patient_team_team ON patient_team(team);
CREATE TABLE IF NOT EXISTS vital_point(
  patient_id TEXT NOT NULL, vital TEXT NOT NULL, t_ms INTEGER NOT NULL,
  value REAL NOT NULL, value2 REAL, unit TEXT NOT NULL, observation_ref TEXT NOT NULL,
  PRIMARY KEY(patient_id, vital, observation_ref));
CREATE INDEX IF NOT EXISTS vital_point_time ON vital_point(patient_id, t_ms);
CREATE TABLE IF NOT EXISTS score(
  patient_id TEXT NOT NULL, t_ms INTEGER NOT NULL, score INTEGER NOT NULL,
  band TEXT NOT NULL, partial INTEGER NOT NULL, missing TEXT NOT NULL,
  risk_assessment_ref TEXT NOT NULL, PRIMARY KEY(patient_id, t_ms));
CREATE TABLE IF NOT EXISTS flag_state(
  patient_id TEXT PRIMARY KEY, flag_id TEXT NOT NULL, active INTEGER NOT NULL,
  since_ms INTEGER NOT NULL, low_since_ms INTEGER);
CREATE TABLE IF NOT EXISTS alert(
  id TEXT PRIMARY KEY, patient_id TEXT NOT NULL, flag_id TEXT NOT NULL UNIQUE,
  state TEXT NOT NULL, opened_ms INTEGER NOT NULL, score INTEGER NOT NULL,
  band TEXT NOT NULL, reason TEXT NOT NULL, ack_by TEXT, ack_ms INTEGER, note TEXT,
  resolved_ms INTEGER);
CREATE INDEX IF NOT EXISTS alert_patient ON alert(patient_id, opened_ms);
CREATE INDEX IF NOT EXISTS alert_state ON alert(state, opened_ms);
";

/// The monitoring database (see the module docs).
pub struct MonitorDb {
    conn: Mutex<Connection>,
}

fn device_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        id: r.get(0)?,
        patient_id: r.get(1)?,
        kind: r.get(2)?,
        secret_hash: r.get(3)?,
        created_ms: r.get(4)?,
        revoked_ms: r.get(5)?,
    })
}

fn alert_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRow> {
    let state: String = r.get(3)?;
    Ok(AlertRow {
        id: r.get(0)?,
        patient_id: r.get(1)?,
        flag_id: r.get(2)?,
        state: AlertState::parse(&state),
        opened_ms: r.get(4)?,
        score: r.get(5)?,
        band: r.get(6)?,
        reason: r.get(7)?,
        ack_by: r.get(8)?,
        ack_ms: r.get(9)?,
        note: r.get(10)?,
        resolved_ms: r.get(11)?,
    })
}

const ALERT_COLUMNS: &str =
    "id, patient_id, flag_id, state, opened_ms, score, band, reason, ack_by, ack_ms, note, resolved_ms";

fn split_missing(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

impl MonitorDb {
    /// Opens (creating if needed) `monitor.db` at `path`.
    pub fn open(path: &Path) -> Result<MonitorDb, DbError> {
        let conn = Connection::open(path)?;
        // Device credentials and acknowledgements are primary data: full fsync.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::init(conn)
    }

    /// An in-memory database (tests).
    pub fn open_in_memory() -> Result<MonitorDb, DbError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<MonitorDb, DbError> {
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(MonitorDb {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (statements are
        // atomic), so a poisoned lock is safe to reuse.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // ---- devices -------------------------------------------------------------

    /// Registers a device.
    pub fn insert_device(&self, d: &DeviceRow) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO device(id, patient_id, kind, secret_hash, created_ms, revoked_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                d.id,
                d.patient_id,
                d.kind,
                d.secret_hash,
                d.created_ms,
                d.revoked_ms
            ],
        )?;
        Ok(())
    }

    /// One device.
    pub fn device(&self, id: &str) -> Result<Option<DeviceRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, patient_id, kind, secret_hash, created_ms, revoked_ms FROM device WHERE id = ?1",
                [id],
                device_from_row,
            )
            .optional()?)
    }

    /// All devices, or a patient's.
    pub fn devices(&self, patient_id: Option<&str>) -> Result<Vec<DeviceRow>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, patient_id, kind, secret_hash, created_ms, revoked_ms FROM device
             WHERE ?1 IS NULL OR patient_id = ?1 ORDER BY created_ms, id",
        )?;
        let rows = stmt.query_map([patient_id], device_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Re-links a device to another patient (the FHIR Device was changed).
    pub fn relink_device(&self, id: &str, patient_id: &str) -> Result<bool, DbError> {
        let n = self.conn().execute(
            "UPDATE device SET patient_id = ?2 WHERE id = ?1 AND patient_id <> ?2",
            params![id, patient_id],
        )?;
        Ok(n > 0)
    }

    /// Revokes a device's credential.
    pub fn revoke_device(&self, id: &str, now_ms: i64) -> Result<(), DbError> {
        let n = self.conn().execute(
            "UPDATE device SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
            params![id, now_ms],
        )?;
        if n == 0 {
            return Err(DbError::NotFound(format!("active device {id}")));
        }
        Ok(())
    }

    // ---- patients and teams --------------------------------------------------

    /// Records (or refreshes) a patient's demographics for the worklist.
    pub fn upsert_patient(&self, p: &PatientRow) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO patient(id, name, birth_date, gender) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name,
               birth_date = excluded.birth_date, gender = excluded.gender",
            params![p.id, p.name, p.birth_date, p.gender],
        )?;
        Ok(())
    }

    /// A patient's cached demographics.
    pub fn patient(&self, id: &str) -> Result<Option<PatientRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, birth_date, gender FROM patient WHERE id = ?1",
                [id],
                |r| {
                    Ok(PatientRow {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        birth_date: r.get(2)?,
                        gender: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Puts a patient in a care team's panel.
    pub fn assign_team(&self, patient_id: &str, team: &str) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO patient_team(patient_id, team) VALUES (?1, ?2)",
            params![patient_id, team],
        )?;
        Ok(())
    }

    /// Takes a patient out of a care team's panel; whether it was in it.
    pub fn unassign_team(&self, patient_id: &str, team: &str) -> Result<bool, DbError> {
        let n = self.conn().execute(
            "DELETE FROM patient_team WHERE patient_id = ?1 AND team = ?2",
            params![patient_id, team],
        )?;
        Ok(n > 0)
    }

    /// The teams a patient belongs to.
    pub fn patient_teams(&self, patient_id: &str) -> Result<Vec<String>, DbError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT team FROM patient_team WHERE patient_id = ?1 ORDER BY team")?;
        let rows = stmt.query_map([patient_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Patients in any of `teams`, or every known patient when `teams` is `None`.
    pub fn patients(&self, teams: Option<&[String]>) -> Result<Vec<PatientRow>, DbError> {
        let conn = self.conn();
        let map = |r: &rusqlite::Row<'_>| {
            Ok(PatientRow {
                id: r.get(0)?,
                name: r.get(1)?,
                birth_date: r.get(2)?,
                gender: r.get(3)?,
            })
        };
        match teams {
            None => {
                let mut stmt =
                    conn.prepare("SELECT id, name, birth_date, gender FROM patient ORDER BY name")?;
                let rows = stmt.query_map([], map)?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Some(teams) => {
                let mut out = Vec::new();
                let mut seen = std::collections::HashSet::new();
                let mut stmt = conn.prepare(
                    "SELECT p.id, p.name, p.birth_date, p.gender FROM patient p
                     JOIN patient_team t ON t.patient_id = p.id WHERE t.team = ?1",
                )?;
                for team in teams {
                    for row in stmt.query_map([team], map)? {
                        let row = row?;
                        if seen.insert(row.id.clone()) {
                            out.push(row);
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    // ---- read model: vitals and scores ----------------------------------------

    /// Records vital values (replacing the values of the same Observations).
    pub fn put_vitals(&self, points: &[VitalPoint]) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO vital_point(patient_id, vital, t_ms, value, value2, unit, observation_ref)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for p in points {
                stmt.execute(params![
                    p.patient_id,
                    p.vital,
                    p.t_ms,
                    p.value,
                    p.value2,
                    p.unit,
                    p.observation_ref
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A patient's vital values with `t_ms >= since_ms`, oldest first.
    pub fn vitals_since(
        &self,
        patient_id: &str,
        since_ms: i64,
    ) -> Result<Vec<VitalPoint>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT patient_id, vital, t_ms, value, value2, unit, observation_ref FROM vital_point
             WHERE patient_id = ?1 AND t_ms >= ?2 ORDER BY t_ms, vital",
        )?;
        let rows = stmt.query_map(params![patient_id, since_ms], |r| {
            Ok(VitalPoint {
                patient_id: r.get(0)?,
                vital: r.get(1)?,
                t_ms: r.get(2)?,
                value: r.get(3)?,
                value2: r.get(4)?,
                unit: r.get(5)?,
                observation_ref: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest value of each vital of a patient.
    pub fn latest_vitals(&self, patient_id: &str) -> Result<Vec<VitalPoint>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT v.patient_id, v.vital, v.t_ms, v.value, v.value2, v.unit, v.observation_ref
             FROM vital_point v
             WHERE v.patient_id = ?1 AND v.t_ms = (SELECT max(t_ms) FROM vital_point w
                   WHERE w.patient_id = v.patient_id AND w.vital = v.vital)
             GROUP BY v.vital ORDER BY v.vital",
        )?;
        let rows = stmt.query_map([patient_id], |r| {
            Ok(VitalPoint {
                patient_id: r.get(0)?,
                vital: r.get(1)?,
                t_ms: r.get(2)?,
                value: r.get(3)?,
                value2: r.get(4)?,
                unit: r.get(5)?,
                observation_ref: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records NEWS2 results (replacing those for the same window ends), in one
    /// transaction.
    pub fn put_scores(&self, scores: &[ScoreRow]) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO score(patient_id, t_ms, score, band, partial, missing, risk_assessment_ref)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for s in scores {
                stmt.execute(params![
                    s.patient_id,
                    s.t_ms,
                    s.score,
                    s.band,
                    s.partial,
                    s.missing.join(","),
                    s.risk_assessment_ref
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// A patient's NEWS2 history since `since_ms`, oldest first.
    pub fn scores_since(&self, patient_id: &str, since_ms: i64) -> Result<Vec<ScoreRow>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT patient_id, t_ms, score, band, partial, missing, risk_assessment_ref FROM score
             WHERE patient_id = ?1 AND t_ms >= ?2 ORDER BY t_ms",
        )?;
        let rows = stmt.query_map(params![patient_id, since_ms], score_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A patient's latest NEWS2 result.
    pub fn latest_score(&self, patient_id: &str) -> Result<Option<ScoreRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT patient_id, t_ms, score, band, partial, missing, risk_assessment_ref FROM score
                 WHERE patient_id = ?1 ORDER BY t_ms DESC LIMIT 1",
                [patient_id],
                score_from_row,
            )
            .optional()?)
    }

    // ---- flags and alerts -----------------------------------------------------

    /// The patient's current flag state.
    pub fn flag_state(&self, patient_id: &str) -> Result<Option<FlagState>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT flag_id, active, since_ms, low_since_ms FROM flag_state WHERE patient_id = ?1",
                [patient_id],
                |r| {
                    Ok(FlagState {
                        flag_id: r.get(0)?,
                        active: r.get(1)?,
                        since_ms: r.get(2)?,
                        low_since_ms: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Raises a flag and opens its alert in one transaction (so a crash never leaves a
    /// raised flag without an alert). Idempotent per flag id.
    pub fn raise_flag(
        &self,
        patient_id: &str,
        flag: &FlagState,
        alert: &AlertRow,
    ) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO flag_state(patient_id, flag_id, active, since_ms, low_since_ms) VALUES (?1, ?2, 1, ?3, NULL)",
            params![patient_id, flag.flag_id, flag.since_ms],
        )?;
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO alert({ALERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                alert.id,
                alert.patient_id,
                alert.flag_id,
                alert.state.as_str(),
                alert.opened_ms,
                alert.score,
                alert.band,
                alert.reason,
                alert.ack_by,
                alert.ack_ms,
                alert.note,
                alert.resolved_ms
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records since when an active flag's patient has been at low risk (`None`: not).
    pub fn set_low_since(
        &self,
        patient_id: &str,
        low_since_ms: Option<i64>,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE flag_state SET low_since_ms = ?2 WHERE patient_id = ?1",
            params![patient_id, low_since_ms],
        )?;
        Ok(())
    }

    /// Raises the recorded score of an open episode's alert when the patient worsens.
    /// Returns whether anything changed.
    pub fn escalate_alert(
        &self,
        flag_id: &str,
        score: u32,
        band: &str,
        reason: &str,
    ) -> Result<bool, DbError> {
        let n = self.conn().execute(
            "UPDATE alert SET score = ?2, band = ?3, reason = ?4 WHERE flag_id = ?1 AND score < ?2",
            params![flag_id, score, band, reason],
        )?;
        Ok(n > 0)
    }

    /// Lowers a flag: the episode ends; its alert is resolved if nobody acknowledged it.
    pub fn lower_flag(&self, patient_id: &str, flag_id: &str, now_ms: i64) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE flag_state SET active = 0 WHERE patient_id = ?1 AND flag_id = ?2",
            params![patient_id, flag_id],
        )?;
        tx.execute(
            "UPDATE alert SET state = 'resolved', resolved_ms = ?2 WHERE flag_id = ?1 AND state = 'open'",
            params![flag_id, now_ms],
        )?;
        tx.execute(
            "UPDATE alert SET resolved_ms = ?2 WHERE flag_id = ?1 AND resolved_ms IS NULL",
            params![flag_id, now_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// One alert.
    pub fn alert(&self, id: &str) -> Result<Option<AlertRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {ALERT_COLUMNS} FROM alert WHERE id = ?1"),
                [id],
                alert_from_row,
            )
            .optional()?)
    }

    /// Alerts, newest first, optionally of one patient and/or one state.
    pub fn alerts(
        &self,
        patient_id: Option<&str>,
        state: Option<AlertState>,
        limit: usize,
    ) -> Result<Vec<AlertRow>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alert WHERE (?1 IS NULL OR patient_id = ?1)
             AND (?2 IS NULL OR state = ?2) ORDER BY opened_ms DESC, id LIMIT ?3"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(
            params![patient_id, state.map(AlertState::as_str), limit],
            alert_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Acknowledges an open (or resolved but never acknowledged) alert.
    pub fn acknowledge(
        &self,
        id: &str,
        by: &str,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<AlertRow, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let current = tx
            .query_row(
                &format!("SELECT {ALERT_COLUMNS} FROM alert WHERE id = ?1"),
                [id],
                alert_from_row,
            )
            .optional()?
            .ok_or_else(|| DbError::NotFound(format!("alert {id}")))?;
        if current.ack_by.is_some() {
            return Err(DbError::Conflict(format!(
                "alert {id} was already acknowledged by {}",
                current.ack_by.as_deref().unwrap_or("someone")
            )));
        }
        tx.execute(
            "UPDATE alert SET state = 'acknowledged', ack_by = ?2, ack_ms = ?3, note = ?4 WHERE id = ?1",
            params![id, by, now_ms, note],
        )?;
        let updated = tx.query_row(
            &format!("SELECT {ALERT_COLUMNS} FROM alert WHERE id = ?1"),
            [id],
            alert_from_row,
        )?;
        tx.commit()?;
        Ok(updated)
    }

    /// Number of open alerts of a patient.
    pub fn open_alert_count(&self, patient_id: &str) -> Result<u32, DbError> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM alert WHERE patient_id = ?1 AND state = 'open'",
            [patient_id],
            |r| r.get(0),
        )?)
    }
}

fn score_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScoreRow> {
    let missing: String = r.get(5)?;
    Ok(ScoreRow {
        patient_id: r.get(0)?,
        t_ms: r.get(1)?,
        score: r.get(2)?,
        band: r.get(3)?,
        partial: r.get(4)?,
        missing: split_missing(&missing),
        risk_assessment_ref: r.get(6)?,
    })
}
