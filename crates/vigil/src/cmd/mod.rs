pub mod fhirpath;
