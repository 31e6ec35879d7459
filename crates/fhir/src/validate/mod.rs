//! Validation of FHIR R4 resources (JSON) against the base R4 definitions.
//!
//! [`validate`] checks, in one pass over the resource:
//! - structure: a known `resourceType`, no unknown elements (including misspelled choice
//!   names such as `valueQuantiti`), JSON kinds (object / array / primitive), no empty
//!   arrays, objects or strings, no nulls except the placeholders of primitive arrays aligned
//!   with their `_name` extensions, at most one type of a choice element;
//! - cardinality (min and max);
//! - primitives: JSON type, the definitions' lexical regexes, calendar dates, integer
//!   ranges, base64 padding, id length, the XHTML narrative `div`;
//! - required bindings whose value set the model could expand;
//! - every invariant (FHIRPath constraint) at the elements it applies to, with `%resource`
//!   the resource the element belongs to and `%rootResource` the container of contained
//!   resources (for a Bundle entry, the entry's resource itself, as FHIRPath defines it, so
//!   that `ref-1` finds the entry's own contained resources). Contained resources and
//!   resources inside Bundles / Parameters are validated as resources in their own right.
//!   `ele-1` is checked natively (it applies to every element; through FHIRPath it would
//!   cost more than half the time of validating an Observation).
//!
//! All problems are reported, not just the first, as an [`OperationOutcome`].
//!
//! Not checked: profiles (`meta.profile`), extension definitions, reference targets, and
//! bindings other than required ones or to value sets the model cannot expand.
//!
//! Deviations from the published definitions, each for a defect in them: `cid-0` (names an
//! element ChargeItemDefinition does not have in R4) and `dom-r4b` (names R4B resource
//! types) do not compile and are skipped (both are warnings); `dom-3` applies `as()` to a
//! collection, an error in FHIRPath, and is evaluated with `ofType()` as later versions do.
//! `dom-6` (narrative, a warning) is not applied to contained resources.

mod binding;
mod outcome;
mod plan;
mod primitive;
mod walk;

pub use outcome::{Issue, IssueType, OperationOutcome, Severity};

/// Validate a FHIR R4 resource given as JSON. Never panics; whatever the input, the result
/// lists its problems (`has_errors()` tells whether it is invalid).
///
/// The compiled invariants are prepared on the first call and shared afterwards.
pub fn validate(resource: &serde_json::Value) -> OperationOutcome {
    let mut walker = walk::Walker::new();
    walker.resource(resource, None);
    OperationOutcome {
        issues: walker.issues,
    }
}
