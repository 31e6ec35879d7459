//! Care-team rules for `user/` scopes.
//!
//! `vigil-auth` grants `user/` scopes at the type level. With a [`CareTeamPolicy`], the
//! server narrows them: a `user/` grant on a type of the Patient compartment reaches only
//! the resources in the compartments of the patients the policy lists for the token's
//! `fhirUser` (reads and writes of others are 403; searches are restricted like
//! patient-compartment searches, one sub-query per compartment parameter with the
//! patients as OR values). Types outside the compartment (Device, Organization, …) stay
//! type-level, and `system/` and `patient/` grants of the same token are unaffected. A
//! `user/` token without `fhirUser` reaches no patient's data under a policy.

use crate::error::ApiError;
use serde_json::Value;
use std::collections::HashSet;
use vigil_auth::{
    AccessContext, Authorizer, Denied, Interaction, QueryConstraint, ScopeContext, ScopeSet,
    SearchConstraint, SearchRestriction,
};
use vigil_fhir::search::{extract, IndexValue, ReferenceKind};
use vigil_fhir_model::Model;

/// Which patients a user's `user/` scopes reach.
pub trait CareTeamPolicy: Send + Sync {
    /// The patient ids (`Patient/{id}`) whose compartments the `user/` grants of a token
    /// with this `fhirUser` (e.g. `Practitioner/jo`) reach: `None` for every patient (an
    /// administrator), `Some` of the user's care teams' patients otherwise (empty for an
    /// unknown user). Called once per request, on a blocking thread.
    fn patients_for(&self, fhir_user: &str) -> Result<Option<HashSet<String>>, PolicyError>;
}

/// A policy lookup that failed (answered 500).
#[derive(Debug, thiserror::Error)]
#[error("care-team lookup failed: {0}")]
pub struct PolicyError(pub String);

/// The caller's authorization: the token's [`AccessContext`], narrowed by the care-team
/// policy when there is one and the token has `user/` scopes.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    full: AccessContext,
    care: Option<Care>,
}

#[derive(Debug, Clone)]
struct Care {
    /// The token's grants without its `user/` scopes.
    other: AccessContext,
    /// Only the `user/` scopes.
    user: AccessContext,
    fhir_user: String,
    /// Sorted, for stable search clauses.
    patients: Vec<String>,
    set: HashSet<String>,
}

/// Whether `s` is a FHIR id (so it can go into a search value unescaped).
fn is_fhir_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn in_compartment_type(t: &str) -> bool {
    t == "Patient" || !Model::r4().patient_compartment_params(t).is_empty()
}

impl Access {
    /// No care-team rules: the token's scopes decide.
    pub(crate) fn unrestricted(full: AccessContext) -> Access {
        Access { full, care: None }
    }

    /// `user/` grants limited to `patients` (`None`: no limit).
    pub(crate) fn with_patients(full: AccessContext, patients: Option<HashSet<String>>) -> Access {
        let Some(set) = patients else {
            return Access::unrestricted(full);
        };
        let split = |user: bool| {
            let scopes = ScopeSet::from_scopes(
                full.scopes()
                    .iter()
                    .filter(|s| {
                        s.as_resource()
                            .is_some_and(|r| r.context == ScopeContext::User)
                            == user
                    })
                    .cloned(),
            );
            AccessContext::new(scopes, full.patient().map(str::to_string))
        };
        let set: HashSet<String> = set.into_iter().filter(|p| is_fhir_id(p)).collect();
        let mut patients: Vec<String> = set.iter().cloned().collect();
        patients.sort();
        let care = Care {
            other: split(false),
            user: split(true),
            fhir_user: full
                .user()
                .and_then(|u| u.fhir_user)
                .unwrap_or("(no fhirUser)")
                .to_string(),
            patients,
            set,
        };
        Access {
            full,
            care: Some(care),
        }
    }

    /// The context the policy must be asked about: the token's `fhirUser` when it has
    /// `user/` scopes (`Some("")` without a `fhirUser`).
    pub(crate) fn policy_subject(full: &AccessContext) -> Option<String> {
        full.user()
            .map(|u| u.fhir_user.unwrap_or_default().to_string())
    }
}

impl Care {
    /// Whether the resource is in the compartment of one of the patients.
    fn covers(&self, resource_type: &str, resource: &Value) -> bool {
        if resource_type == "Patient"
            && resource
                .get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| self.set.contains(id))
        {
            return true;
        }
        let Ok(values) = extract(resource) else {
            return false;
        };
        Model::r4()
            .patient_compartment_params(resource_type)
            .iter()
            .any(|param| {
                values.values(param).any(|v| {
                    matches!(v, IndexValue::Reference(r)
                        if r.kind == ReferenceKind::Local
                            && r.resource_type.as_deref() == Some("Patient")
                            && r.id.as_deref().is_some_and(|id| self.set.contains(id)))
                })
            })
    }

    /// The `user/` grants' search alternatives on a compartment type, narrowed to the
    /// patients: each alternative once per compartment parameter.
    fn narrow(
        &self,
        resource_type: &str,
        alternatives: Vec<SearchRestriction>,
    ) -> Vec<SearchRestriction> {
        if self.patients.is_empty() {
            return Vec::new();
        }
        let mut params: Vec<(String, String)> = Vec::new();
        if resource_type == "Patient" {
            params.push(("_id".into(), self.patients.join(",")));
        }
        let refs: Vec<String> = self
            .patients
            .iter()
            .map(|p| format!("Patient/{p}"))
            .collect();
        for p in Model::r4().patient_compartment_params(resource_type) {
            params.push((p.clone(), refs.join(",")));
        }
        let mut out = Vec::new();
        for alt in alternatives {
            for (param, value) in &params {
                let mut query = alt.query.clone();
                query.push(QueryConstraint {
                    param: param.clone(),
                    value: value.clone(),
                });
                out.push(SearchRestriction {
                    compartment: alt.compartment.clone(),
                    query,
                });
            }
        }
        out
    }
}

impl Authorizer for Access {
    fn check_type(&self, interaction: &Interaction, resource_type: &str) -> Result<(), Denied> {
        self.full.check_type(interaction, resource_type)
    }

    fn check_resource(&self, interaction: &Interaction, resource: &Value) -> Result<(), Denied> {
        let Some(care) = &self.care else {
            return self.full.check_resource(interaction, resource);
        };
        if care.other.check_resource(interaction, resource).is_ok() {
            return Ok(());
        }
        let t = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if care.user.check_type(interaction, t).is_err() {
            // No user/ grant for it: the token's other grants decide (and explain).
            return self.full.check_resource(interaction, resource);
        }
        care.user.check_resource(interaction, resource)?;
        if in_compartment_type(t) && !care.covers(t, resource) {
            let label = match resource.get("id").and_then(Value::as_str) {
                Some(id) => format!("{t}/{id}"),
                None => format!("this {t}"),
            };
            return Err(Denied {
                reason: format!(
                    "{label} is not in the compartment of a patient of the care teams of {} \
                     (user/ scopes reach only those patients' data)",
                    care.fhir_user
                ),
            });
        }
        Ok(())
    }

    fn search_constraint(&self, resource_type: &str) -> Result<Option<SearchConstraint>, Denied> {
        let Some(care) = &self.care else {
            return self.full.search_constraint(resource_type);
        };
        let other = care.other.search_constraint(resource_type);
        if let Ok(None) = other {
            return Ok(None);
        }
        let user = match care.user.search_constraint(resource_type) {
            // No user/ grant for it: the token's other grants decide (and explain).
            Err(_) if other.is_ok() => return other,
            Err(_) => return self.full.search_constraint(resource_type),
            Ok(u) => u,
        };
        let mut any_of: Vec<SearchRestriction> = other
            .map(|c| c.map(|c| c.any_of))
            .ok()
            .flatten()
            .unwrap_or_default();
        if in_compartment_type(resource_type) {
            let alternatives = match user {
                None => vec![SearchRestriction {
                    compartment: None,
                    query: Vec::new(),
                }],
                Some(c) => c.any_of,
            };
            any_of.extend(care.narrow(resource_type, alternatives));
        } else {
            match user {
                None => return Ok(None),
                Some(c) => any_of.extend(c.any_of),
            }
        }
        if any_of.is_empty() {
            return Err(Denied {
                reason: format!(
                    "the care teams of {} cover no patients, so user/ scopes reach no \
                     {resource_type}",
                    care.fhir_user
                ),
            });
        }
        Ok(Some(SearchConstraint { any_of }))
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}
