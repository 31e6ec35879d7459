//! The default templates for Vigil's demo devices.

use super::*;
use serde_json::json;
use vigil_medtech::{
    check_mappings, default_device_templates, default_fhir_templates, envelope, group, Identity,
    ObservationChange,
};

fn ingest(device: &str, body: Value) -> Value {
    envelope(body.to_string().as_bytes(), json!({}), json!({"iothub-connection-device-id": device, "iothub-enqueuedtime": "2026-01-01T00:00:09Z"})).unwrap()
}

/// Normalizes one body and maps it to Observations (all must validate), returning
/// `(type, properties)` and the Observations.
type Readings = Vec<(String, Vec<(String, String)>)>;

fn observe(body: Value) -> (Readings, Vec<Value>) {
    let d = device_set(default_device_templates());
    let f = fhir_set(default_fhir_templates());
    let ms = d.normalize(&ingest("dev-42", body)).unwrap();
    for m in &ms {
        assert_eq!(
            (m.device_id.as_str(), m.occurrence_time.as_str()),
            ("dev-42", "2026-01-01T00:00:05Z")
        );
        assert_eq!(serde_json::to_value(m).unwrap()["device_id"], "dev-42");
    }
    let g = group(&ms, &f);
    assert!(g.rejected.is_empty(), "{:?}", g.rejected);
    let id = Identity {
        patient_id: "pat-1".into(),
        device_id: "dev-1".into(),
        encounter_id: None,
    };
    let obs: Vec<Value> = g
        .groups
        .iter()
        .map(|g| match f.observation_for(g, &id, None).unwrap() {
            ObservationChange::Create(o) => o,
            other => panic!("{other:?}"),
        })
        .collect();
    for o in &obs {
        assert_valid(o);
        assert_eq!(o["status"], "final");
        assert_eq!(o["category"][0]["coding"][0]["code"], "vital-signs");
        assert_eq!(o["effectivePeriod"]["start"], "2026-01-01T00:00:05Z");
    }
    (
        ms.iter()
            .map(|m| (m.type_name.clone(), m.properties.clone()))
            .collect(),
        obs,
    )
}

fn loinc(o: &Value) -> Vec<String> {
    o["code"]["coding"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["system"] == "http://loinc.org")
        .map(|c| c["code"].as_str().unwrap().to_string())
        .collect()
}

fn quantity(o: &Value) -> (String, String, String) {
    let q = &o["valueQuantity"];
    (
        q["value"].to_string(),
        q["system"].as_str().unwrap().to_string(),
        q["code"].as_str().unwrap().to_string(),
    )
}

const T: &str = "2026-01-01T00:00:05Z";

#[test]
fn default_templates_fit_together() {
    let d = device_set(default_device_templates());
    let f = fhir_set(default_fhir_templates());
    assert!(
        check_mappings(&d, &f).is_empty(),
        "{:?}",
        check_mappings(&d, &f)
    );
}

#[test]
fn pulse_oximeter() {
    let (ms, obs) =
        observe(json!({"type": "pulse-oximeter", "spo2": 97, "pulseRate": 72, "measuredAt": T}));
    assert_eq!(
        ms,
        vec![
            ("spo2".into(), props(&[("spo2", "97")])),
            ("heartrate".into(), props(&[("hr", "72")]))
        ]
    );
    assert_eq!(loinc(&obs[0]), ["2708-6", "59408-5"]);
    assert_eq!(
        quantity(&obs[0]),
        ("97".into(), "http://unitsofmeasure.org".into(), "%".into())
    );
    assert_eq!(loinc(&obs[1]), ["8867-4"]);
    assert_eq!(
        quantity(&obs[1]),
        (
            "72".into(),
            "http://unitsofmeasure.org".into(),
            "/min".into()
        )
    );
    // Supplemental oxygen, including 0 (room air).
    for flow in ["2", "0"] {
        let (ms, obs) = observe(
            json!({"type": "pulse-oximeter", "spo2": 95, "pulseRate": 80, "oxygenFlow": flow.parse::<i64>().unwrap(), "measuredAt": T}),
        );
        assert_eq!(ms[2], ("oxygenflow".into(), props(&[("flow", flow)])));
        assert_eq!(loinc(&obs[2]), ["3151-8"]);
        assert_eq!(
            quantity(&obs[2]),
            (
                flow.into(),
                "http://unitsofmeasure.org".into(),
                "L/min".into()
            )
        );
    }
}

#[test]
fn bp_cuff() {
    let (ms, obs) = observe(
        json!({"type": "bp-cuff", "systolic": 121, "diastolic": 79, "pulseRate": 70, "measuredAt": T}),
    );
    assert_eq!(
        ms,
        vec![
            ("heartrate".into(), props(&[("hr", "70")])),
            (
                "bloodpressure".into(),
                props(&[("systolic", "121"), ("diastolic", "79")])
            )
        ]
    );
    let bp = &obs[1];
    assert_eq!(loinc(bp), ["85354-9"]);
    let comps = bp["component"].as_array().unwrap();
    assert_eq!(loinc(&comps[0]), ["8480-6"]);
    assert_eq!(loinc(&comps[1]), ["8462-4"]);
    assert_eq!(
        quantity(&comps[0]),
        (
            "121".into(),
            "http://unitsofmeasure.org".into(),
            "mm[Hg]".into()
        )
    );
    assert_eq!(quantity(&comps[1]).0, "79");
}

#[test]
fn thermometer_scale_glucometer_wearable() {
    let (_, obs) = observe(json!({"type": "thermometer", "temperature": 36.8, "measuredAt": T}));
    assert_eq!(
        (loinc(&obs[0]), quantity(&obs[0]).0, quantity(&obs[0]).2),
        (vec!["8310-5".to_string()], "36.8".into(), "Cel".into())
    );
    let (_, obs) = observe(json!({"type": "scale", "weight": 81.2, "measuredAt": T}));
    assert_eq!(
        (loinc(&obs[0]), quantity(&obs[0]).0, quantity(&obs[0]).2),
        (vec!["29463-7".to_string()], "81.2".into(), "kg".into())
    );
    let (_, obs) = observe(json!({"type": "glucometer", "glucose": 104, "measuredAt": T}));
    assert_eq!(
        (loinc(&obs[0]), quantity(&obs[0]).2),
        (vec!["2339-0".to_string()], "mg/dL".into())
    );
    let (ms, obs) = observe(
        json!({"type": "wearable", "heartRate": 80, "respiratoryRate": 16, "oxygenFlow": 0, "measuredAt": T}),
    );
    let types: Vec<_> = ms.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(types, ["heartrate", "respiratoryrate", "oxygenflow"]);
    assert_eq!(loinc(&obs[1]), ["9279-1"]);
    assert_eq!(quantity(&obs[1]).2, "/min");
}

#[test]
fn demo_payload_errors_are_clear() {
    let d = device_set(default_device_templates());
    // No time: the whole message fails, naming the field.
    let e = d
        .normalize(&ingest("dev", json!({"type": "scale", "weight": 80})))
        .unwrap_err();
    assert!(e.to_string().contains("timestampExpression"), "{e}");
    // Unknown device type: dropped (no measurements), as in the reference.
    assert!(d
        .normalize(&ingest("dev", json!({"type": "toaster", "measuredAt": T})))
        .unwrap()
        .is_empty());
}
