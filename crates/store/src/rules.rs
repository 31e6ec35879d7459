//! Request rules shared by every backend, so that they all accept and refuse the same
//! writes (the conformance suite checks the outcomes; these keep the code in one place).

use crate::api::{Result, StoreError, WriteOp};
use serde_json::Value;
use std::collections::HashSet;

/// The body recorded for a delete: type, id and meta only.
pub fn tombstone(rt: &str, id: &str, version: u64, last_updated: &str) -> Value {
    serde_json::json!({
        "resourceType": rt,
        "id": id,
        "meta": {"versionId": version.to_string(), "lastUpdated": last_updated}
    })
}

/// A transaction may name each resource once (FHIR: the outcome would depend on the
/// order otherwise).
pub fn check_distinct(ops: &[WriteOp]) -> Result<()> {
    if ops.len() < 2 {
        return Ok(());
    }
    let mut seen = HashSet::with_capacity(ops.len());
    for op in ops {
        let key = match op {
            WriteOp::Create {
                id: Some(id),
                resource,
            } => (resource_type_of(resource).unwrap_or_default(), id.as_str()),
            WriteOp::Create { id: None, .. } => continue,
            WriteOp::Update {
                resource_type, id, ..
            }
            | WriteOp::Delete {
                resource_type, id, ..
            } => (resource_type.as_str(), id.as_str()),
        };
        if !seen.insert(key) {
            return Err(StoreError::Conflict(format!(
                "{}/{} appears more than once in the transaction",
                key.0, key.1
            )));
        }
    }
    Ok(())
}

/// The `resourceType` of a resource, if it has one.
pub fn resource_type_of(resource: &Value) -> Option<&str> {
    resource.get("resourceType").and_then(Value::as_str)
}

/// FHIR ids: 1-64 of `[A-Za-z0-9\-\.]`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}
