//! FHIR R4 core: validation of resources against the base definitions, and extraction of
//! typed search-index values for every R4 search parameter. Pure logic, no IO.

pub mod search;
pub mod validate;
