pub mod fhirpath;
pub mod validate;
