pub mod fhirpath;
pub mod token;
pub mod validate;
