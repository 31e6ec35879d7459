pub mod fhirpath;
pub mod serve;
pub mod token;
pub mod validate;
