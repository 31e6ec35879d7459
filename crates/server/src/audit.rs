//! The audit trail: one record per authenticated request (who, what, when, outcome),
//! appended as a JSON line to `audit.jsonl` and kept in memory for the admin endpoint
//! `GET /fhir/_audit`.
//!
//! A JSONL file is the cheapest durable form: an append per request, no index writes,
//! readable with `jq`/`grep`, and never rewritten (append-only).

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How many recent records [`AuditLog`] keeps in memory.
pub const RECENT_CAPACITY: usize = 10_000;

/// One audited request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When, RFC 3339 UTC.
    pub time: String,
    /// Who: the token's `sub` (`anonymous` when the token was rejected).
    pub subject: String,
    /// The token id (`jti`), when authenticated.
    pub token_id: Option<String>,
    /// The interaction (`read`, `create`, `search`, `transaction`, ...).
    pub action: String,
    /// What: `Patient/1`, `Observation?code=...`, `/` for system level.
    pub target: String,
    /// The HTTP status answered.
    pub status: u16,
}

impl AuditRecord {
    /// As JSON (one line of the file).
    pub fn to_json(&self) -> Value {
        json!({
            "time": self.time,
            "sub": self.subject,
            "jti": self.token_id,
            "action": self.action,
            "target": self.target,
            "status": self.status,
            "outcome": if self.status < 400 { "success" } else { "failure" },
        })
    }
}

/// Why the audit file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    /// The file.
    pub path: PathBuf,
    /// The IO error.
    #[source]
    pub source: std::io::Error,
}

/// The audit sink: an append-only JSONL file (optional) plus the most recent records.
#[derive(Debug)]
pub struct AuditLog {
    file: Option<Mutex<File>>,
    path: Option<PathBuf>,
    recent: Mutex<VecDeque<AuditRecord>>,
}

impl AuditLog {
    /// A log kept in memory only.
    pub fn in_memory() -> AuditLog {
        AuditLog {
            file: None,
            path: None,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// A log appending to `path` (created if absent, never truncated).
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let err = |source| AuditError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        Ok(AuditLog {
            file: Some(Mutex::new(file)),
            path: Some(path.to_path_buf()),
            recent: Mutex::new(VecDeque::new()),
        })
    }

    /// The file records are appended to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Append a record. A failing file write is reported on stderr and does not fail the
    /// request (the record is still kept in memory).
    pub fn append(&self, record: AuditRecord) {
        if let Some(file) = &self.file {
            let mut line = record.to_json().to_string();
            line.push('\n');
            let written = match file.lock() {
                Ok(mut f) => f.write_all(line.as_bytes()),
                Err(poisoned) => poisoned.into_inner().write_all(line.as_bytes()),
            };
            if let Err(e) = written {
                eprintln!("vigil-server: audit log write failed: {e}");
            }
        }
        let mut recent = match self.recent.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        if recent.len() == RECENT_CAPACITY {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// The records kept in memory, oldest first.
    pub fn recent(&self) -> Vec<AuditRecord> {
        match self.recent.lock() {
            Ok(r) => r.iter().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
        }
    }
}
