//! Search-parameter extraction: for any resource, the typed index values of every R4
//! search parameter that applies to its type.
//!
//! ```
//! use vigil_fhir::search::{extract, IndexValue, SearchRegistry};
//! let obs = serde_json::json!({"resourceType": "Observation", "status": "final",
//!     "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
//!     "subject": {"reference": "Patient/example"}});
//! let x = extract(&obs).unwrap();
//! let IndexValue::Token(t) = x.values("code").next().unwrap() else { panic!() };
//! assert_eq!(t.code.as_deref(), Some("29463-7"));
//! let IndexValue::Reference(r) = x.values("patient").next().unwrap() else { panic!() };
//! assert_eq!((r.resource_type.as_deref(), r.id.as_deref()), (Some("Patient"), Some("example")));
//! assert!(SearchRegistry::r4().param("Observation", "value-quantity").is_some());
//! ```
//!
//! How it works: [`SearchRegistry::r4`] prepares once, for each concrete resource type,
//! the parameters that apply to it (base = the type, `Resource` or `DomainResource`),
//! each expression reduced to the union parts written for that type and compiled — as
//! a direct path where it is plain navigation (nearly all are), else as FHIRPath.
//! [`SearchRegistry::extract`] evaluates them (references resolved by type, so
//! `where(resolve() is Patient)` works without the target; contained ones by the
//! contained resource) and converts the items into [`IndexValue`]s by parameter type;
//! see [`values`] for what each kind holds. Each parameter's values are distinct.
//!
//! Values borrow their text from the resource JSON (`Cow`), so extraction copies little;
//! [`IndexValue::into_owned`] detaches one.
//!
//! Parameters R4 defines without an expression:
//! - `_text`: the narrative's text content (tags stripped, entities decoded), one string;
//! - `_content`: all string values of the resource (except the narrative markup and
//!   `resourceType`) joined by spaces, one string — a document for the backend's
//!   full-text search;
//! - `_query`: nothing to index (it names an operation); [`SearchParam::is_indexed`] is false.
//!
//! The special `near` gives a [`PositionValue`] from `Location.position`.
//!
//! Bundles are indexed by the Bundle's own parameters only: their entries are resources
//! of their own, indexed when stored. `composition`/`message` reference `entry[0]`'s
//! resource when it is of the parameter's target type (Composition, MessageHeader).
//!
//! Deviations from the letter of the R4 definitions, each to make them index what they
//! mean: `x as T` / `x.as(T)` are evaluated as `x.ofType(T)` (see [`rewrite_as`]), and
//! the swapped component definitions of `DocumentReference-relationship` are repaired.

mod extract;
pub mod matching;
mod path;
pub mod query;
mod registry;
mod text;
pub mod values;

pub use extract::{
    canonical_unit, extract, ExtractError, ExtractProblem, Extraction, IndexEntry, Skipped,
};
pub use matching::{MatchContext, MatchError};
pub use query::{
    Clause, ContainedMode, ContainedType, DateQuery, Hop, Include, Modifier, NumberQuery, ParamRef,
    Prefix, QuantityQuery, QueryError, ReferenceQuery, ReferenceQueryKind, SearchQuery,
    SearchValue, SortKey, SummaryMode, TokenQuery, TokenSystem, TotalMode,
};
pub use registry::{
    head_type, rewrite_as, split_union, PrepareProblem, RegistryOptions, SearchParam,
    SearchRegistry,
};
pub use text::{content_text, narrative_text, normalize, normalize_cow};
pub use values::{
    implicit_range, CanonicalQuantity, Coding, Comparator, DateValue, IndexValue, NumberValue,
    PositionValue, QuantityValue, ReferenceKind, ReferenceValue, StringValue, TokenValue, UriValue,
};
pub use vigil_fhir_model::SearchParamType;
