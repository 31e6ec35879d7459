//! vigil-medtech tests: the reference's template and payload fixtures (conformance), the
//! FHIR mapping, and the default demo-device templates.

// Test helpers outside #[test] functions unwrap too; a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "medtech/defaults.rs"]
mod defaults;
#[path = "medtech/device.rs"]
mod device;
#[path = "medtech/fhir.rs"]
mod fhir;
#[path = "medtech/samples.rs"]
mod samples;

use serde_json::Value;
use vigil_medtech::{DeviceTemplateSet, FhirTemplateSet, Measurement};

/// A reference fixture, relative to `tests/fixtures/medtech-iomt-fhir/`.
pub fn fixture(rel: &str) -> String {
    let p = format!(
        "{}/../../tests/fixtures/medtech-iomt-fhir/{rel}",
        env!("CARGO_MANIFEST_DIR")
    );
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    s.trim_start_matches('\u{feff}').to_string()
}

/// A Template.UnitTests input file.
pub fn input(name: &str) -> String {
    fixture(&format!(
        "test/Microsoft.Health.Fhir.Ingest.Template.UnitTests/TestInput/{name}"
    ))
}

/// A JSON fixture as a value.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// Wraps single device templates (the reference tests load them one by one) in a collection.
pub fn device_collection(items: &[&str]) -> String {
    format!(
        "{{\"templateType\":\"CollectionContent\",\"template\":[{}]}}",
        items.join(",")
    )
}

/// Wraps single FHIR templates in a collection.
pub fn fhir_collection(items: &[&str]) -> String {
    format!(
        "{{\"templateType\":\"CollectionFhir\",\"template\":[{}]}}",
        items.join(",")
    )
}

/// Parses device templates, panicking with all errors.
pub fn device_set(text: &str) -> DeviceTemplateSet {
    DeviceTemplateSet::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Parses FHIR templates, panicking with all errors.
pub fn fhir_set(text: &str) -> FhirTemplateSet {
    FhirTemplateSet::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// `(type, device, time, properties)` of measurements, for compact assertions.
pub type Summary = (String, String, String, Vec<(String, String)>);

/// `(type, device, time, properties)` of measurements.
pub fn summary(ms: &[Measurement]) -> Vec<Summary> {
    ms.iter()
        .map(|m| {
            (
                m.type_name.clone(),
                m.device_id.clone(),
                m.occurrence_time.clone(),
                m.properties.clone(),
            )
        })
        .collect()
}

/// Owned property pairs.
pub fn props(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Asserts a resource validates against the R4 definitions without errors.
pub fn assert_valid(resource: &Value) {
    let outcome = vigil_fhir::validate::validate(resource);
    let errors: Vec<String> = outcome.errors().map(|i| i.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}\n{resource:#}");
}
