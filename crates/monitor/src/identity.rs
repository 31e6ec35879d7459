//! Identity resolution: which Patient, Device and Encounter the Observations of a device
//! message refer to — the reference's `Lookup`, `LookupWithEncounter` and `Create`
//! modes, adapted to authenticated devices (the Device is the one whose credential
//! posted the message; the message can only name it, by id or by one of its
//! identifiers).
//!
//! Device → Patient links are cached. The FHIR API reports every successful write
//! ([`IdentityResolver::invalidate`]), so re-linking a Device to another Patient through
//! `/fhir` takes effect with the next message.

use crate::metrics::Metrics;
use crate::pipeline::Failure;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use vigil_medtech::{Identity, IdentityResolutionType, Measurement, MeasurementGroup};
use vigil_store::{FhirStore, ReadOutcome, StoreError};

/// Most cached entries per map; a full map is cleared (simple, and re-reads are cheap).
const CACHE_LIMIT: usize = 5_000;

/// Why a message's identity could not be resolved.
#[derive(Debug)]
pub enum ResolveError {
    /// The message cannot be attributed: dead-letter (or block on) it.
    Failed(Failure),
    /// The store failed: retry.
    Store(StoreError),
}

impl From<StoreError> for ResolveError {
    fn from(e: StoreError) -> Self {
        ResolveError::Store(e)
    }
}

impl From<Failure> for ResolveError {
    fn from(f: Failure) -> Self {
        ResolveError::Failed(f)
    }
}

/// The FHIR resources a message's Observations refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The Patient id.
    pub patient_id: String,
    /// The Device id (the authenticated device).
    pub device_id: String,
    /// Encounter ids by the encounter identifier value the measurements carry.
    pub encounters: HashMap<String, String>,
    /// Whether the Patient was created (or the Device linked) by this resolution.
    pub linked: bool,
}

impl Resolved {
    /// The Observation references for one group of the message.
    pub fn identity_for(&self, group: &MeasurementGroup) -> Identity {
        Identity {
            patient_id: self.patient_id.clone(),
            device_id: self.device_id.clone(),
            encounter_id: group
                .encounter_id
                .as_ref()
                .and_then(|e| self.encounters.get(e).cloned()),
        }
    }
}

#[derive(Default)]
struct Cache {
    /// Device id → its Patient id (None: not linked).
    devices: HashMap<String, Option<String>>,
    /// (resource type, identifier value) → the one resource carrying it.
    lookups: HashMap<(String, String), String>,
}

/// Resolves identities (see the module docs).
pub struct IdentityResolver {
    store: Arc<dyn FhirStore>,
    mode: IdentityResolutionType,
    metrics: Arc<Metrics>,
    cache: Mutex<Cache>,
    /// Bumped by every invalidation: a value read from the store before an invalidation
    /// is not cached after it (it may be the stale version).
    generation: AtomicU64,
}

fn failure(kind: &str, message: String) -> ResolveError {
    ResolveError::Failed(Failure::new(kind, message))
}

/// The id in a `Patient/{id}` reference (relative, absolute or versioned).
fn referenced_id(reference: &str, resource_type: &str) -> Option<String> {
    let marker = format!("{resource_type}/");
    let start = reference.rfind(&marker).map(|i| i + marker.len())?;
    let rest = &reference[start..];
    // `Patient/1/_history/2` : rfind found `Patient/`, so `rest` is `1/_history/2`.
    let id = rest.split('/').next().unwrap_or(rest);
    (!id.is_empty()).then(|| id.to_string())
}

/// A token search value matching `value` exactly (FHIR search escapes).
fn escape_token(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | '|' | ',' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl IdentityResolver {
    /// A resolver in the given mode.
    pub fn new(
        store: Arc<dyn FhirStore>,
        mode: IdentityResolutionType,
        metrics: Arc<Metrics>,
    ) -> IdentityResolver {
        IdentityResolver {
            store,
            mode,
            metrics,
            cache: Mutex::new(Cache::default()),
            generation: AtomicU64::new(0),
        }
    }

    /// The configured mode.
    pub fn mode(&self) -> IdentityResolutionType {
        self.mode
    }

    /// A resource was written through the FHIR API: forget what may have changed.
    pub fn invalidate(&self, resource_type: &str, id: &str) {
        if !matches!(resource_type, "Device" | "Patient" | "Encounter") {
            return;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if resource_type == "Device" {
            cache.devices.remove(id);
        }
        // An identifier may have been added to or removed from any resource of the type.
        cache.lookups.retain(|(t, _), _| t != resource_type);
    }

    fn cache_device(&self, generation: u64, device_id: &str, patient: Option<String>) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if cache.devices.len() >= CACHE_LIMIT {
            cache.devices.clear();
        }
        cache.devices.insert(device_id.to_string(), patient);
    }

    /// The Patient linked to the Device (`Device.patient`), cached.
    fn device_patient(&self, device_id: &str) -> Result<Option<String>, ResolveError> {
        if let Some(p) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .devices
            .get(device_id)
        {
            return Ok(p.clone());
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let device = match self.store.read("Device", device_id)? {
            ReadOutcome::Found(s) => s,
            _ => {
                return Err(failure(
                    "FhirResourceNotFoundException",
                    format!("Device/{device_id} is not in the FHIR store"),
                ))
            }
        };
        let patient = device.resource["patient"]["reference"]
            .as_str()
            .and_then(|r| referenced_id(r, "Patient"));
        self.cache_device(generation, device_id, patient.clone());
        Ok(patient)
    }

    /// The one `resource_type` whose identifier has the value `value` (any system);
    /// `None` when there is none, `MultipleResourceFoundException` when several.
    fn find_by_identifier(
        &self,
        resource_type: &str,
        value: &str,
    ) -> Result<Option<String>, ResolveError> {
        let key = (resource_type.to_string(), value.to_string());
        if let Some(id) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lookups
            .get(&key)
        {
            return Ok(Some(id.clone()));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let query = vigil_fhir::search::query::SearchQuery::from_pairs(
            Some(resource_type),
            &[
                ("identifier", escape_token(value).as_str()),
                ("_count", "2"),
            ],
            vigil_fhir::search::SearchRegistry::r4(),
        )
        .map_err(|e| {
            failure(
                "ResourceIdentityNotDefinedException",
                format!("cannot search {resource_type} by identifier {value:?}: {e}"),
            )
        })?;
        let result = self
            .store
            .search(&query, &vigil_store::SearchPage::default())?;
        match result.matches.as_slice() {
            [] => Ok(None),
            [one] => {
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                if self.generation.load(Ordering::SeqCst) == generation {
                    if cache.lookups.len() >= CACHE_LIMIT {
                        cache.lookups.clear();
                    }
                    cache.lookups.insert(key, one.id.clone());
                }
                Ok(Some(one.id.clone()))
            }
            several => Err(failure(
                "MultipleResourceFoundException",
                format!(
                    "more than one {resource_type} has the identifier {value:?} ({})",
                    several
                        .iter()
                        .map(|s| format!("{resource_type}/{}", s.id))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// Resolves the identity of one message sent by `device_id` (the authenticated
    /// device) that produced `measurements`.
    pub fn resolve(
        &self,
        device_id: &str,
        measurements: &[Measurement],
    ) -> Result<Resolved, ResolveError> {
        let mut named_devices: Vec<&str> =
            measurements.iter().map(|m| m.device_id.as_str()).collect();
        named_devices.sort_unstable();
        named_devices.dedup();
        let mut named_patients: Vec<&str> = measurements
            .iter()
            .filter_map(|m| m.patient_id.as_deref())
            .collect();
        named_patients.sort_unstable();
        named_patients.dedup();

        let linked_patient = self.device_patient(device_id)?;
        for name in named_devices {
            self.check_device_name(device_id, name)?;
        }
        let mut linked = false;
        let patient_id = match linked_patient {
            Some(p) => {
                for name in &named_patients {
                    self.check_patient_name(device_id, &p, name)?;
                }
                p
            }
            None if self.mode == IdentityResolutionType::Create => {
                let pid = match named_patients.as_slice() {
                    [one] => *one,
                    [] => {
                        return Err(failure(
                            "ResourceIdentityNotDefinedException",
                            format!("Device/{device_id} has no patient and the message carries no patient id (Create mode needs the template's patientIdExpression)"),
                        ))
                    }
                    several => {
                        return Err(failure(
                            "PatientDeviceMismatchException",
                            format!("one message from Device/{device_id} names several patients: {}", several.join(", ")),
                        ))
                    }
                };
                let p = self.ensure_patient(pid)?;
                self.link_device(device_id, &p)?;
                linked = true;
                p
            }
            None => {
                return Err(failure(
                    "FhirResourceNotFoundException",
                    format!("Device/{device_id} is not linked to a Patient (Device.patient)"),
                ))
            }
        };

        let mut encounters = HashMap::new();
        for m in measurements {
            match &m.encounter_id {
                None if self.mode == IdentityResolutionType::LookupWithEncounter => {
                    return Err(failure(
                        "ResourceIdentityNotDefinedException",
                        format!("measurement of type '{}' has no encounter id, which LookupWithEncounter requires (the template's encounterIdExpression)", m.type_name),
                    ))
                }
                None => {}
                Some(e) if encounters.contains_key(e) => {}
                Some(e) => match self.find_by_identifier("Encounter", e)? {
                    Some(id) => {
                        encounters.insert(e.clone(), id);
                    }
                    None => {
                        return Err(failure(
                            "FhirResourceNotFoundException",
                            format!("no Encounter has the identifier {e:?}"),
                        ))
                    }
                },
            }
        }
        Ok(Resolved {
            patient_id,
            device_id: device_id.to_string(),
            encounters,
            linked,
        })
    }

    /// The message may name its device by id or by one of its identifiers only.
    fn check_device_name(&self, device_id: &str, name: &str) -> Result<(), ResolveError> {
        if name == device_id {
            return Ok(());
        }
        match self.find_by_identifier("Device", name)? {
            Some(found) if found == device_id => Ok(()),
            found => Err(failure(
                "DeviceMismatch",
                format!(
                    "the message names device {name}{} but was sent by Device/{device_id}",
                    found.map(|f| format!(" (Device/{f})")).unwrap_or_default()
                ),
            )),
        }
    }

    /// A patient id in the message must be the linked Patient's id or identifier.
    fn check_patient_name(
        &self,
        device_id: &str,
        patient_id: &str,
        name: &str,
    ) -> Result<(), ResolveError> {
        if name == patient_id {
            return Ok(());
        }
        match self.find_by_identifier("Patient", name)? {
            Some(found) if found == patient_id => Ok(()),
            _ => Err(failure(
                "PatientDeviceMismatchException",
                format!("the message names patient {name} but Device/{device_id} belongs to Patient/{patient_id}"),
            )),
        }
    }

    /// Create mode: the Patient with identifier `value`, created with the reference's
    /// deterministic id (SHA-256 of `"_" + value`) when there is none, so that
    /// concurrent messages never create two.
    fn ensure_patient(&self, value: &str) -> Result<String, ResolveError> {
        if let Some(id) = self.find_by_identifier("Patient", value)? {
            return Ok(id);
        }
        let id = vigil_medtech::resource_id("", value);
        if let ReadOutcome::Found(_) = self.store.read("Patient", &id)? {
            return Ok(id);
        }
        let patient = json!({
            "resourceType": "Patient",
            "id": id,
            "identifier": [{"value": value}],
        });
        match self.store.update("Patient", &id, patient, None) {
            Ok((_, created)) => {
                self.metrics
                    .fhir_resource_saved("Patient", if created { "Created" } else { "Updated" });
                Ok(id)
            }
            Err(StoreError::Invalid(m)) => Err(failure(
                "ResourceIdentityNotDefinedException",
                format!("cannot create a Patient with identifier {value:?}: {m}"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Create mode: sets `Device.patient`; a Device linked meanwhile to another Patient
    /// is a mismatch.
    fn link_device(&self, device_id: &str, patient_id: &str) -> Result<(), ResolveError> {
        for _ in 0..5 {
            let generation = self.generation.load(Ordering::SeqCst);
            let stored = match self.store.read("Device", device_id)? {
                ReadOutcome::Found(s) => s,
                _ => {
                    return Err(failure(
                        "FhirResourceNotFoundException",
                        format!("Device/{device_id} is not in the FHIR store"),
                    ))
                }
            };
            let current = stored.resource["patient"]["reference"]
                .as_str()
                .and_then(|r| referenced_id(r, "Patient"));
            match current {
                Some(p) if p == patient_id => {
                    self.cache_device(generation, device_id, Some(p));
                    return Ok(());
                }
                Some(p) => {
                    return Err(failure(
                        "PatientDeviceMismatchException",
                        format!(
                            "Device/{device_id} is linked to Patient/{p}, not Patient/{patient_id}"
                        ),
                    ))
                }
                None => {}
            }
            let mut device: Value = (*stored.resource).clone();
            device["patient"] = json!({"reference": format!("Patient/{patient_id}")});
            match self
                .store
                .update("Device", device_id, device, Some(stored.version))
            {
                Ok(_) => {
                    self.metrics.fhir_resource_saved("Device", "Updated");
                    self.cache_device(generation, device_id, Some(patient_id.to_string()));
                    return Ok(());
                }
                // Changed between our read and write: look again.
                Err(StoreError::VersionConflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(failure(
            "PatientDeviceMismatchException",
            format!("Device/{device_id} kept changing while it was being linked to Patient/{patient_id}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_escapes() {
        assert_eq!(
            referenced_id("Patient/p1", "Patient").as_deref(),
            Some("p1")
        );
        assert_eq!(
            referenced_id("http://x/fhir/Patient/p1/_history/3", "Patient").as_deref(),
            Some("p1")
        );
        assert_eq!(referenced_id("Group/g", "Patient"), None);
        assert_eq!(escape_token("a|b,c$d\\"), "a\\|b\\,c\\$d\\\\");
    }
}
