//! Search-parameter extraction: all parameters of a typical remote-monitoring vital-signs
//! Observation, and of the official R4 examples.

use criterion::{black_box, Criterion};
use serde_json::{json, Value};
use vigil_fhir::search::SearchRegistry;

/// A blood-pressure reading as a remote-monitoring device gateway sends it: identifier,
/// category, LOINC code, subject, encounter, effective time, performer, a heart-rate
/// valueQuantity, and systolic/diastolic components.
pub fn vital_signs_observation() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "bp-4711",
        "meta": {"lastUpdated": "2024-03-01T08:15:02.120Z",
                 "profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]},
        "identifier": [{"system": "urn:vigil:device-reading", "value": "4711-20240301-0815"}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9",
                             "display": "Blood pressure panel with all children optional"}],
                 "text": "Blood pressure"},
        "subject": {"reference": "Patient/p-123"},
        "encounter": {"reference": "Encounter/e-9"},
        "effectiveDateTime": "2024-03-01T08:15:00+01:00",
        "issued": "2024-03-01T08:15:02.120+01:00",
        "performer": [{"reference": "Practitioner/pr-7"}],
        "device": {"reference": "Device/cuff-42"},
        "valueQuantity": {"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
             "valueQuantity": {"value": 128, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}]},
             "valueQuantity": {"value": 84, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
        ]
    })
}

fn load(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/fhir-r4-examples")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bench_extract(c: &mut Criterion) {
    let registry = SearchRegistry::r4();
    let obs = vital_signs_observation();
    let n = registry.extract(&obs).unwrap().entries.len();
    assert!(n > 20, "{n} entries");
    c.bench_function("search/extract vital-signs Observation (all params)", |b| {
        b.iter(|| registry.extract(black_box(&obs)).unwrap().entries.len())
    });
    let patient = load("patient-example.json");
    c.bench_function("search/extract patient-example (all params)", |b| {
        b.iter(|| registry.extract(black_box(&patient)).unwrap().entries.len())
    });
    let official_obs = load("observation-example.json");
    c.bench_function("search/extract observation-example (all params)", |b| {
        b.iter(|| {
            registry
                .extract(black_box(&official_obs))
                .unwrap()
                .entries
                .len()
        })
    });
}

criterion::criterion_group!(benches, bench_extract);
