//! Device registration and authentication.
//!
//! A device is a FHIR Device (linked to its Patient through `Device.patient`) plus a
//! credential in `monitor.db`. The secret is 256 random bits shown once at
//! registration; only its SHA-256 is kept (a slow password hash buys nothing for a
//! random 256-bit secret and would cap ingest throughput). A device presents
//! `Authorization: Bearer <device-id>.<secret>` or HTTP Basic with the device id as
//! user name and the secret as password.

use crate::db::{DbError, DeviceRow, MonitorDb};
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use vigil_store::{FhirStore, ReadOutcome, StoreError};

/// Device kinds Vigil knows how to describe; any other name is accepted as given.
pub const KNOWN_KINDS: &[(&str, &str)] = &[
    ("bp-cuff", "Blood pressure cuff"),
    ("pulse-oximeter", "Pulse oximeter"),
    ("thermometer", "Thermometer"),
    ("scale", "Weighing scale"),
    ("glucometer", "Blood glucose meter"),
    ("wearable", "Wearable vital-signs monitor"),
];

/// Errors of device registration and authentication.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The patient the device should belong to does not exist.
    #[error("Patient/{0} does not exist; create the patient first")]
    PatientNotFound(String),
    /// The kind is not a usable name.
    #[error("invalid device kind {0:?}: use letters, digits and '-'")]
    InvalidKind(String),
    /// The FHIR store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The monitoring database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// No randomness available for the secret.
    #[error("cannot generate a device secret: {0}")]
    Random(String),
}

/// Why a device was not let in (all answered 401; the distinction is logged only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No usable Authorization header.
    MissingCredential,
    /// Unknown device or wrong secret.
    BadCredential,
    /// The device's credential was revoked.
    Revoked,
}

impl AuthFailure {
    /// The reason given to the device.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::MissingCredential => {
                "missing device credential: send 'Authorization: Bearer <device-id>.<secret>' or HTTP Basic with the device id and secret"
            }
            AuthFailure::BadCredential => "unknown device or wrong secret",
            AuthFailure::Revoked => "this device's credential was revoked",
        }
    }
}

/// An authenticated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// The Device id.
    pub device_id: String,
    /// The Patient it belongs to.
    pub patient_id: String,
    /// Its kind.
    pub kind: String,
}

/// A newly registered device and its secret (shown once).
#[derive(Debug, Clone)]
pub struct Registered {
    /// The device.
    pub device: DeviceRow,
    /// The secret; the credential is `<device id>.<secret>`.
    pub secret: String,
}

impl Registered {
    /// The bearer credential.
    pub fn credential(&self) -> String {
        format!("{}.{}", self.device.id, self.secret)
    }
}

/// The registry: registration, lookup and authentication.
pub struct DeviceRegistry {
    db: Arc<MonitorDb>,
    store: Arc<dyn FhirStore>,
    cache: RwLock<HashMap<String, DeviceRow>>,
}

fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Extracts `(device id, secret)` from an Authorization header value.
pub fn parse_credential(authorization: &str) -> Option<(String, String)> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        let (id, secret) = rest.split_once('.')?;
        return Some((id.to_string(), secret.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        return Some((id.to_string(), secret.to_string()));
    }
    None
}

/// The FHIR Device for a registration.
pub fn device_resource(kind: &str, patient_id: &str) -> Value {
    let label = KNOWN_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(kind, |(_, label)| label);
    json!({
        "resourceType": "Device",
        "status": "active",
        "deviceName": [{"name": label, "type": "user-friendly-name"}],
        "type": {"coding": [{"system": "urn:vigil:device-kind", "code": kind}], "text": label},
        "patient": {"reference": format!("Patient/{patient_id}")}
    })
}

impl DeviceRegistry {
    /// A registry over the monitoring database and the FHIR store.
    pub fn new(db: Arc<MonitorDb>, store: Arc<dyn FhirStore>) -> DeviceRegistry {
        DeviceRegistry {
            db,
            store,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Registers a device of `kind` for an existing patient: writes the FHIR Device,
    /// then the credential.
    pub fn register(
        &self,
        patient_id: &str,
        kind: &str,
        now_ms: i64,
    ) -> Result<Registered, DeviceError> {
        if kind.is_empty()
            || kind.len() > 64
            || !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(DeviceError::InvalidKind(kind.to_string()));
        }
        match self.store.read("Patient", patient_id)? {
            ReadOutcome::Found(_) => {}
            _ => return Err(DeviceError::PatientNotFound(patient_id.to_string())),
        }
        let stored = self.store.create(device_resource(kind, patient_id))?;
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| DeviceError::Random(e.to_string()))?;
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let row = DeviceRow {
            id: stored.id.clone(),
            patient_id: patient_id.to_string(),
            kind: kind.to_string(),
            secret_hash: hash_secret(&secret),
            created_ms: now_ms,
            revoked_ms: None,
        };
        self.db.insert_device(&row)?;
        Ok(Registered {
            device: row,
            secret,
        })
    }

    fn lookup(&self, device_id: &str) -> Result<Option<DeviceRow>, DbError> {
        if let Some(row) = self
            .cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(device_id)
        {
            return Ok(Some(row.clone()));
        }
        // A miss may be a device registered by another process (`vigil devices add`
        // against a running server's data directory): read through.
        let row = self.db.device(device_id)?;
        if let Some(row) = &row {
            self.cache
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(device_id.to_string(), row.clone());
        }
        Ok(row)
    }

    /// Forgets cached rows (after a revoke or re-link).
    pub fn invalidate(&self, device_id: &str) {
        self.cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(device_id);
    }

    /// Checks an Authorization header value.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Result<DeviceIdentity, AuthFailure>, DbError> {
        let Some((device_id, secret)) = authorization.and_then(parse_credential) else {
            return Ok(Err(AuthFailure::MissingCredential));
        };
        let Some(row) = self.lookup(&device_id)? else {
            return Ok(Err(AuthFailure::BadCredential));
        };
        if !constant_time_eq(&row.secret_hash, &hash_secret(&secret)) {
            return Ok(Err(AuthFailure::BadCredential));
        }
        if row.revoked_ms.is_some() {
            return Ok(Err(AuthFailure::Revoked));
        }
        Ok(Ok(DeviceIdentity {
            device_id: row.id,
            patient_id: row.patient_id,
            kind: row.kind,
        }))
    }

    /// The patient a device belongs to (for identity resolution).
    pub fn patient_of(&self, device_id: &str) -> Result<Option<String>, DbError> {
        Ok(self.lookup(device_id)?.map(|r| r.patient_id))
    }

    /// Revokes a device.
    pub fn revoke(&self, device_id: &str, now_ms: i64) -> Result<(), DbError> {
        self.db.revoke_device(device_id, now_ms)?;
        self.invalidate(device_id);
        Ok(())
    }

    /// The monitoring database.
    pub fn db(&self) -> &Arc<MonitorDb> {
        &self.db
    }
}
