pub mod demo;
pub mod devices;
pub mod fhirpath;
pub mod serve;
pub mod templates;
pub mod token;
pub mod validate;
