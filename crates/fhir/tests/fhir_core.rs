//! Integration tests of the FHIR core crate: one test binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "fhir_core/query.rs"]
mod query;
#[path = "fhir_core/search.rs"]
mod search;
#[path = "fhir_core/validation.rs"]
mod validation;
