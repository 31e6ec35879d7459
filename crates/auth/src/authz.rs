//! Authorization decisions: may this token do this interaction on this type, on this
//! resource, and what must a search be restricted to.
//!
//! A request is allowed when at least one granted resource scope allows it:
//! - the scope covers the type (or `*`) and has the interaction's permission letter;
//! - a `patient/` scope additionally needs the token's patient, and the resource must
//!   be in that patient's compartment (R4 CompartmentDefinition `patient`: it references
//!   the patient through one of the type's compartment parameters, or is the Patient
//!   itself);
//! - a v2 scope's query constraints must all match the resource.
//!
//! `user/` and `system/` scopes grant type-level access here; the server layers its
//! care-team rules for `user/` grants on top (see [`AccessContext::user`]).

use crate::scope::{
    Interaction, Permission, QueryConstraint, ResourceScope, ScopeContext, ScopeSet,
};
use crate::{AuthError, Claims};
use serde_json::Value;
use std::cell::OnceCell;
use std::fmt;
use vigil_fhir::search::{
    extract, normalize, Extraction, IndexValue, ReferenceKind, SearchRegistry,
};
use vigil_fhir_model::Model;

/// Types outside the patient compartment that a `patient/` scope may still read and
/// search: shared definitions and directory data that carry no patient's information
/// but that patient-facing apps need to render what they read (the medication of a
/// MedicationRequest, the performer of an Observation). Every other type outside the
/// compartment is denied in patient context — `Binary`, `Bundle` and the like can hold
/// anyone's data with nothing that ties them to a patient.
const SHARED_READ_TYPES: &[&str] = &[
    "ActivityDefinition",
    "CodeSystem",
    "ConceptMap",
    "Endpoint",
    "HealthcareService",
    "Location",
    "Medication",
    "Organization",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Questionnaire",
    "StructureDefinition",
    "Substance",
    "ValueSet",
];

/// An authorization refusal, with a human reason for the 403 OperationOutcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Why, in a sentence a client developer can act on.
    pub reason: String,
}

impl Denied {
    fn new(reason: impl Into<String>) -> Denied {
        Denied {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Denied {}

/// A patient-compartment restriction of a search.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompartmentRestriction {
    /// The patient's id.
    pub patient: String,
    /// Reference parameters of which at least one must point at `Patient/{patient}`
    /// (the type's patient compartment parameters).
    pub params: Vec<String>,
    /// Whether the resource with `_id = patient` also matches (searching `Patient`: the
    /// patient itself is in its compartment).
    pub by_id: bool,
}

/// One way a search result may be allowed: AND of the compartment restriction (if any)
/// and every query constraint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchRestriction {
    /// The compartment restriction, for grants through `patient/` scopes.
    pub compartment: Option<CompartmentRestriction>,
    /// A v2 scope's query constraints (`category=vital-signs`), all of which must match,
    /// with FHIR search semantics (a `,` in the value is "any of").
    pub query: Vec<QueryConstraint>,
}

impl SearchRestriction {
    fn is_unrestricted(&self) -> bool {
        self.compartment.is_none() && self.query.is_empty()
    }

    /// Whether every result this allows is also allowed by `other`.
    fn within(&self, other: &SearchRestriction) -> bool {
        (other.compartment.is_none() || self.compartment == other.compartment)
            && other.query.iter().all(|q| self.query.contains(q))
    }
}

/// What the server must AND into a search: the results are those matching the client's
/// criteria and at least one of `any_of` (one entry per distinct granting scope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchConstraint {
    /// The alternatives (never empty): OR them, then AND the result into the search.
    pub any_of: Vec<SearchRestriction>,
}

impl SearchConstraint {
    /// The compartment restriction shared by all alternatives, if they all have the same
    /// one (the common case: only `patient/` scopes) — the server can then run the
    /// search as a compartment search.
    pub fn common_compartment(&self) -> Option<&CompartmentRestriction> {
        let first = self.any_of.first()?.compartment.as_ref()?;
        self.any_of
            .iter()
            .all(|r| r.compartment.as_ref() == Some(first))
            .then_some(first)
    }
}

/// Authorization decisions for one request. Implemented by [`AccessContext`]; the server
/// may wrap it (care-team rules for `user/` grants) behind the same interface.
pub trait Authorizer {
    /// Whether the interaction on the type is allowed at all (before the resource is
    /// known). A `Ok` here still needs [`Authorizer::check_resource`] on each resource
    /// touched, or [`Authorizer::search_constraint`] for searches.
    fn check_type(&self, interaction: &Interaction, resource_type: &str) -> Result<(), Denied>;

    /// Whether the interaction on this resource is allowed: for reads, the stored
    /// resource; for create, the resource as written; for update/patch, call it on both
    /// the stored resource and the new one (otherwise a patient-context client could
    /// take over another patient's resource by repointing it); for delete, the stored
    /// resource.
    fn check_resource(&self, interaction: &Interaction, resource: &Value) -> Result<(), Denied>;

    /// What a search (or type history) on the type must be restricted to: `Ok(None)`
    /// when a granting scope is unrestricted, `Err` when search is not permitted at all.
    fn search_constraint(&self, resource_type: &str) -> Result<Option<SearchConstraint>, Denied>;
}

/// The `user/`-scope part of an access context, for the server's care-team rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserAccess<'a> {
    /// The token's `fhirUser` (`Practitioner/123`), whose care teams decide which
    /// patients `user/` scopes reach.
    pub fhir_user: Option<&'a str>,
}

/// The scopes and launch context of an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessContext {
    scopes: ScopeSet,
    patient: Option<String>,
    fhir_user: Option<String>,
}

impl AccessContext {
    /// A context from scopes and an optional patient. Without a patient, `patient/`
    /// scopes grant nothing.
    pub fn new(scopes: ScopeSet, patient: Option<String>) -> AccessContext {
        AccessContext {
            scopes,
            patient,
            fhir_user: None,
        }
    }

    /// With the `fhirUser` of the token.
    pub fn with_fhir_user(mut self, fhir_user: Option<String>) -> AccessContext {
        self.fhir_user = fhir_user;
        self
    }

    /// The context of a verified token: its scopes (an invalid scope string is an error,
    /// reported as 401 — the token is not one we would have issued), patient and
    /// fhirUser.
    pub fn from_claims(claims: &Claims) -> Result<AccessContext, AuthError> {
        Ok(
            AccessContext::new(ScopeSet::parse(&claims.scope)?, claims.patient.clone())
                .with_fhir_user(claims.fhir_user.clone()),
        )
    }

    /// The granted scopes.
    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes
    }

    /// The patient context.
    pub fn patient(&self) -> Option<&str> {
        self.patient.as_deref()
    }

    /// Hook for care-team restrictions: `Some` when the token has `user/` scopes. Such
    /// grants are type-level here; the server limits them to the patients the user's
    /// care teams cover when it has a care-team policy (`vigil_server::careteam`).
    pub fn user(&self) -> Option<UserAccess<'_>> {
        self.scopes.has_user_scopes().then_some(UserAccess {
            fhir_user: self.fhir_user.as_deref(),
        })
    }

    /// The scopes that grant `interaction` on `resource_type`, before resource-level
    /// checks; the reason for refusal when none does.
    fn grants(
        &self,
        interaction: &Interaction,
        resource_type: &str,
    ) -> Result<Vec<&ResourceScope>, Denied> {
        let permission = interaction.permission();
        let mut patient_problem = None;
        let mut out = Vec::new();
        for scope in self.scopes.resource_scopes() {
            if !scope.grants(permission, resource_type) {
                continue;
            }
            if scope.context == ScopeContext::Patient {
                if let Err(why) = self.patient_scope_usable(permission, resource_type) {
                    patient_problem.get_or_insert(why);
                    continue;
                }
            }
            out.push(scope);
        }
        if !out.is_empty() {
            return Ok(out);
        }
        Err(Denied::new(patient_problem.unwrap_or_else(|| {
            format!(
                "no granted scope permits {interaction} on {resource_type} (needs a scope like \
                 patient/{resource_type}.{letter}, user/{resource_type}.{letter} or \
                 system/{resource_type}.{letter}); granted: {granted}",
                letter = permission.letter(),
                granted = if self.scopes.is_empty() {
                    "none".to_string()
                } else {
                    self.scopes.to_string()
                },
            )
        })))
    }

    /// Whether a `patient/` scope can grant `permission` on the type at all.
    fn patient_scope_usable(
        &self,
        permission: Permission,
        resource_type: &str,
    ) -> Result<(), String> {
        if self.patient.is_none() {
            return Err("patient/ scopes grant nothing without a patient context".into());
        }
        if in_patient_compartment_type(resource_type) {
            return Ok(());
        }
        let shared = SHARED_READ_TYPES.contains(&resource_type);
        match permission {
            Permission::Read | Permission::Search if shared => Ok(()),
            _ if shared => Err(format!(
                "{resource_type} is shared data outside any patient's compartment: patient/ \
                 scopes may read and search it but not change it"
            )),
            _ => Err(format!(
                "{resource_type} is not in the patient compartment, so patient/ scopes do not \
                 grant access to it"
            )),
        }
    }
}

/// Whether resources of this type can be in a patient's compartment.
fn in_patient_compartment_type(resource_type: &str) -> bool {
    resource_type == "Patient"
        || !Model::r4()
            .patient_compartment_params(resource_type)
            .is_empty()
}

impl Authorizer for AccessContext {
    fn check_type(&self, interaction: &Interaction, resource_type: &str) -> Result<(), Denied> {
        self.grants(interaction, resource_type).map(|_| ())
    }

    fn check_resource(&self, interaction: &Interaction, resource: &Value) -> Result<(), Denied> {
        let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
            return Err(Denied::new("not a FHIR resource (no resourceType)"));
        };
        let grants = self.grants(interaction, resource_type)?;
        let label = resource_label(resource_type, resource);
        // Extraction evaluates every search parameter of the type; do it at most once,
        // and only when a compartment or constraint check needs it.
        let extraction: OnceCell<Option<Extraction<'static, '_>>> = OnceCell::new();
        let values = || extraction.get_or_init(|| extract(resource).ok()).as_ref();
        let mut reason = None;
        for scope in grants {
            let outcome = (|| {
                if scope.context == ScopeContext::Patient {
                    if let Some(patient) = self.patient.as_deref() {
                        if in_patient_compartment_type(resource_type)
                            && !in_compartment(resource_type, resource, patient, values())
                        {
                            return Err(format!(
                                "{label} is not in the compartment of Patient/{patient}{}",
                                if interaction.is_write() {
                                    " (a patient-context client can only write resources \
                                     that reference its own patient)"
                                } else {
                                    ""
                                }
                            ));
                        }
                    }
                }
                for c in &scope.constraints {
                    match matches_constraint(resource_type, values(), c) {
                        Ok(true) => {}
                        Ok(false) => {
                            return Err(format!(
                                "{label} does not match the constraint {c} of scope {}",
                                crate::Scope::Resource(scope.clone())
                            ))
                        }
                        Err(why) => {
                            return Err(format!(
                                "{label}: the constraint {c} of scope {} cannot be checked: {why}",
                                crate::Scope::Resource(scope.clone())
                            ))
                        }
                    }
                }
                Ok(())
            })();
            match outcome {
                Ok(()) => return Ok(()),
                Err(why) => {
                    reason.get_or_insert(why);
                }
            }
        }
        Err(Denied::new(reason.unwrap_or_else(|| {
            format!("{interaction} on {label} is not permitted")
        })))
    }

    fn search_constraint(&self, resource_type: &str) -> Result<Option<SearchConstraint>, Denied> {
        let grants = self.grants(&Interaction::Search, resource_type)?;
        let mut any_of: Vec<SearchRestriction> = Vec::new();
        for scope in grants {
            let compartment = match (scope.context, self.patient.as_deref()) {
                (ScopeContext::Patient, Some(patient))
                    if in_patient_compartment_type(resource_type) =>
                {
                    Some(CompartmentRestriction {
                        patient: patient.to_string(),
                        params: Model::r4()
                            .patient_compartment_params(resource_type)
                            .to_vec(),
                        by_id: resource_type == "Patient",
                    })
                }
                _ => None,
            };
            // Sorted, so that the same constraints written in another order compare
            // equal (the subsumption below relies on it).
            let mut query = scope.constraints.clone();
            query.sort();
            let restriction = SearchRestriction { compartment, query };
            if restriction.is_unrestricted() {
                return Ok(None);
            }
            if !any_of.contains(&restriction) {
                any_of.push(restriction);
            }
        }
        // Drop alternatives another one already covers (patient/Observation.rs makes
        // patient/Observation.rs?category=vital-signs redundant).
        let all = any_of.clone();
        any_of.retain(|r| !all.iter().any(|other| other != r && r.within(other)));
        Ok(Some(SearchConstraint { any_of }))
    }
}

/// `Observation/123` for messages (the type alone for resources without an id).
fn resource_label(resource_type: &str, resource: &Value) -> String {
    match resource.get("id").and_then(Value::as_str) {
        Some(id) => format!("{resource_type}/{id}"),
        None => format!("this {resource_type}"),
    }
}

/// Whether the resource is in the patient's compartment: the Patient itself, or a
/// resource referencing `Patient/{patient}` (a local reference: an absolute URL could
/// name another server's patient with the same id) through a compartment parameter.
fn in_compartment(
    resource_type: &str,
    resource: &Value,
    patient: &str,
    values: Option<&Extraction<'_, '_>>,
) -> bool {
    if resource_type == "Patient" && resource.get("id").and_then(Value::as_str) == Some(patient) {
        return true;
    }
    let Some(values) = values else {
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
                        && r.id.as_deref() == Some(patient))
            })
        })
}

/// Whether the resource matches one scope query constraint, with FHIR search semantics
/// for the parameter types that can be decided on a single resource (token, reference,
/// string, uri); `Err` for others, and for modifiers.
fn matches_constraint(
    resource_type: &str,
    values: Option<&Extraction<'_, '_>>,
    c: &QueryConstraint,
) -> Result<bool, String> {
    if c.param.contains(':') || c.param.contains('.') {
        return Err("modifiers and chains are only applied in searches".into());
    }
    if SearchRegistry::r4()
        .param(resource_type, &c.param)
        .is_none()
    {
        return Err(format!(
            "{} is not a search parameter of {resource_type}",
            c.param
        ));
    }
    let Some(values) = values else {
        return Err("the resource could not be indexed".into());
    };
    let wanted: Vec<&str> = c.value.split(',').collect();
    for v in values.values(&c.param) {
        for w in &wanted {
            if value_matches(v, w)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn value_matches(v: &IndexValue<'_>, wanted: &str) -> Result<bool, String> {
    Ok(match v {
        IndexValue::Token(t) => {
            let code = t.code.as_deref();
            let system = t.system.as_deref();
            match wanted.split_once('|') {
                None => code == Some(wanted),
                Some(("", c)) => system.is_none() && code == Some(c),
                Some((s, "")) => system == Some(s),
                Some((s, c)) => system == Some(s) && code == Some(c),
            }
        }
        IndexValue::Reference(r) => match wanted.split_once('/') {
            _ if r.reference.as_deref() == Some(wanted) => true,
            Some((ty, id)) if !id.contains('/') => {
                r.resource_type.as_deref() == Some(ty) && r.id.as_deref() == Some(id)
            }
            Some(_) => r.url.as_deref() == Some(wanted),
            None => r.id.as_deref() == Some(wanted),
        },
        IndexValue::String(s) => s.normalized.starts_with(&normalize(wanted)),
        IndexValue::Uri(u) => u.uri == wanted,
        _ => return Err(
            "only token, reference, string and uri constraints are checked on a single resource"
                .into(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(scopes: &str, patient: Option<&str>) -> AccessContext {
        AccessContext::new(
            ScopeSet::parse(scopes).unwrap_or_default(),
            patient.map(str::to_string),
        )
    }

    #[test]
    fn same_constraints_in_another_order_collapse() {
        let a = ctx(
            "user/Observation.s?category=a&code=b user/Observation.s?code=b&category=a",
            None,
        );
        let c = a.search_constraint("Observation");
        assert_eq!(c.map(|c| c.map(|c| c.any_of.len())), Ok(Some(1)));
    }

    #[test]
    fn narrower_alternative_dropped() {
        let a = ctx(
            "user/Observation.s?category=a&code=b user/Observation.s?category=a",
            None,
        );
        let any_of = a
            .search_constraint("Observation")
            .ok()
            .flatten()
            .map(|c| c.any_of)
            .unwrap_or_default();
        assert_eq!(any_of.len(), 1);
        assert_eq!(any_of[0].query.len(), 1);
    }

    #[test]
    fn compartment_types() {
        assert!(in_patient_compartment_type("Patient"));
        assert!(in_patient_compartment_type("Observation"));
        assert!(!in_patient_compartment_type("Organization"));
        // Every shared type really is outside the compartment (else it would be
        // reachable without the compartment check).
        for t in SHARED_READ_TYPES {
            assert!(!in_patient_compartment_type(t), "{t}");
            assert!(Model::r4().is_resource_type(t), "{t}");
        }
    }

    #[test]
    fn token_value_matching() {
        let obs = serde_json::json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}});
        let x = extract(&obs).ok();
        let m = |v: &str| {
            matches_constraint(
                "Observation",
                x.as_ref(),
                &QueryConstraint {
                    param: "code".into(),
                    value: v.into(),
                },
            )
        };
        assert_eq!(m("8867-4"), Ok(true));
        assert_eq!(m("http://loinc.org|8867-4"), Ok(true));
        assert_eq!(m("http://loinc.org|"), Ok(true));
        assert_eq!(m("|8867-4"), Ok(false));
        assert_eq!(m("http://snomed.info/sct|8867-4"), Ok(false));
        assert_eq!(m("1,8867-4"), Ok(true));
    }
}
