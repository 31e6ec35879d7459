//! Validation throughput on typical remote-monitoring resources: a vital-signs Observation
//! (the bulk of Vigil's writes), a blood-pressure panel with components, and a Patient.
//! Criterion prints the throughput in resources per second (`thrpt`).

use criterion::{black_box, Criterion, Throughput};
use serde_json::{json, Value};
use vigil_fhir::validate::validate;

fn heart_rate() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "hr-20240501-0815",
        "meta": {"lastUpdated": "2024-05-01T08:15:03.120Z"},
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
                 "text": "Heart rate"},
        "subject": {"reference": "Patient/p-1042"},
        "effectiveDateTime": "2024-05-01T08:15:00+02:00",
        "valueQuantity": {"value": 72, "unit": "beats/minute",
                          "system": "http://unitsofmeasure.org", "code": "/min"},
        "device": {"reference": "Device/watch-77"}
    })
}

fn blood_pressure() -> Value {
    let comp = |code: &str, display: &str, value: f64| {
        json!({
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "valueQuantity": {"value": value, "unit": "mmHg",
                              "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
        })
    };
    json!({
        "resourceType": "Observation",
        "id": "bp-20240501-0816",
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9",
                             "display": "Blood pressure panel with all children optional"}]},
        "subject": {"reference": "Patient/p-1042"},
        "effectiveDateTime": "2024-05-01T08:16:00+02:00",
        "component": [
            comp("8480-6", "Systolic blood pressure", 128.0),
            comp("8462-4", "Diastolic blood pressure", 81.0)
        ]
    })
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p-1042",
        "text": {"status": "generated",
                 "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Anna Meier, born 1951-03-14</div>"},
        "identifier": [{"system": "urn:oid:2.16.756.5.32", "value": "7560000000123"}],
        "active": true,
        "name": [{"use": "official", "family": "Meier", "given": ["Anna", "Luise"]}],
        "telecom": [{"system": "phone", "value": "+41 44 000 00 00", "use": "mobile"}],
        "gender": "female",
        "birthDate": "1951-03-14",
        "address": [{"line": ["Bahnhofstrasse 1"], "city": "Zürich", "postalCode": "8001", "country": "CH"}],
        "generalPractitioner": [{"reference": "Practitioner/dr-7"}]
    })
}

fn bench_validate(c: &mut Criterion) {
    let cases = [
        ("heart_rate_observation", heart_rate()),
        ("bp_observation", blood_pressure()),
        ("patient", patient()),
    ];
    for (_, r) in &cases {
        let outcome = validate(r);
        assert!(
            !outcome.has_errors(),
            "bench input is invalid: {:?}",
            outcome.issues
        );
    }
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Elements(1));
    for (name, resource) in &cases {
        group.bench_function(*name, |b| b.iter(|| validate(black_box(resource))));
    }
    group.finish();
}

criterion::criterion_group!(benches, bench_validate);
