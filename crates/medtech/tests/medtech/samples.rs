//! The reference's sample template sets and the mapping generator's expected templates,
//! loaded and run on their documented payloads through to Observations.

use super::*;
use serde_json::json;
use vigil_medtech::{check_mappings, group, Identity, ObservationChange};

fn sample(set: &str) -> (DeviceTemplateSet, FhirTemplateSet) {
    let d = device_set(&fixture(&format!(
        "sample/templates/{set}/devicecontent.json"
    )));
    let f = fhir_set(&fixture(&format!(
        "sample/templates/{set}/fhirmapping.json"
    )));
    (d, f)
}

/// Normalizes, groups and builds Observations; every one must validate.
fn run(
    d: &DeviceTemplateSet,
    f: &FhirTemplateSet,
    envelopes: &[Value],
) -> (Vec<Measurement>, Vec<Value>) {
    let mut ms = Vec::new();
    for e in envelopes {
        ms.extend(d.normalize(e).unwrap_or_else(|err| panic!("{err}")));
    }
    let g = group(&ms, f);
    assert!(g.rejected.is_empty(), "{:?}", g.rejected);
    let id = Identity {
        patient_id: "p1".into(),
        device_id: "d1".into(),
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
    }
    (ms, obs)
}

fn body(b: Value) -> Value {
    json!({"Body": b, "Properties": {}, "SystemProperties": {}})
}

#[test]
fn basic_sample() {
    let (d, f) = sample("basic");
    assert_eq!((d.templates.len(), f.templates.len()), (6, 6));
    let t = "2019-03-01T10:10:00Z";
    let base = |extra: Value| {
        let mut b =
            json!({"deviceid": "device1", "patientid": "patient1", "measurementdatetime": t});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body(b)
    };
    let envs = [
        base(json!({"heartrate": "78"})),
        base(json!({"steps": "200"})),
        base(json!({"systolic": "120", "diastolic": "80"})),
        base(json!({"deviceWorn": "true"})),
    ];
    let (ms, obs) = run(&d, &f, &envs);
    let types: Vec<_> = ms.iter().map(|m| m.type_name.as_str()).collect();
    assert_eq!(types, ["heartrate", "steps", "bloodpressure", "deviceWorn"]);
    assert!(ms
        .iter()
        .all(|m| m.patient_id.as_deref() == Some("patient1")));
    assert_eq!(obs.len(), 4);
    // Hourly SampledData at 1 s: the reading lands in slot 600 of 3600.
    let data: Vec<&str> = obs[0]["valueSampledData"]["data"]
        .as_str()
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!((data.len(), data[600]), (3600, "78"));
    assert_eq!(obs[2]["component"].as_array().unwrap().len(), 2);
    assert_eq!(obs[3]["valueCodeableConcept"]["text"], "Device Worn");
    assert!(
        check_mappings(&d, &f).is_empty(),
        "{:?}",
        check_mappings(&d, &f)
    );
}

#[test]
fn healthkit_sample() {
    let (d, f) = sample("healthkitOnFhir");
    assert_eq!((d.templates.len(), f.templates.len()), (17, 17));
    let hk = |extra: Value| {
        let mut b = json!({"uuid": "0D8E4A6C", "startDate": "2020-05-01T08:00:00Z", "endDate": "2020-05-01T08:00:05Z", "deviceId": "hk-device", "patientId": "hk-patient"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body(b)
    };
    let envs = [
        hk(json!({"heartRate": 72, "unit": "count/min"})),
        hk(json!({"stepCount": 12})),
        hk(json!({"bodyMass": 81.2, "unit": "kg"})),
        hk(json!({"height": 1.8})),
    ];
    let (ms, obs) = run(&d, &f, &envs);
    assert_eq!(
        ms.iter().map(|m| m.type_name.as_str()).collect::<Vec<_>>(),
        ["heartrate", "steps", "bodyMass", "height"]
    );
    assert_eq!(obs.len(), 4);
    assert_eq!(obs[2]["valueQuantity"]["value"].to_string(), "81.2");
}

#[test]
fn sandbox_sample() {
    let (d, f) = sample("sandbox");
    let env = json(&input("data_IotCentralPayloadExampleMultipleMessages.json"));
    let (ms, obs) = run(&d, &f, &[env]);
    assert_eq!(ms.len(), 12);
    let knee: Vec<_> = ms.iter().filter(|m| m.type_name == "kneebend").collect();
    assert_eq!(
        (
            knee.len(),
            knee[0].device_id.as_str(),
            knee[0].properties[0].1.as_str()
        ),
        (1, "24bjobtcf8i", "-19")
    );
    assert!(!obs.is_empty());
    // The legacy IoT Hub variant of the sandbox.
    let legacy = device_set(&fixture(
        "sample/templates/sandbox/legacy/devicecontent.json",
    ));
    let env = json!({"Body": {"HeartRate": 80, "RespiratoryRate": 14}, "Properties": {},
        "SystemProperties": {"iothub-connection-device-id": "dev-7", "iothub-enqueuedtime": "2021-01-01T00:00:00Z"}});
    let ms = legacy.normalize(&env).unwrap();
    assert_eq!(
        summary(&ms),
        vec![
            (
                "heartrate".into(),
                "dev-7".into(),
                "2021-01-01T00:00:00Z".into(),
                props(&[("hr", "80")])
            ),
            (
                "respiratoryrate".into(),
                "dev-7".into(),
                "2021-01-01T00:00:00Z".into(),
                props(&[("respiratoryrate", "14")])
            ),
        ]
    );
    assert_eq!(ms[0].patient_id.as_deref(), Some("dev-7"));
}

#[test]
fn mapping_generator_expected_templates() {
    let dir = "tools/mapping-generator/Microsoft.Health.Fhir.Ingest.Template.Generator.Tests";
    for (name, ty, values) in [
        ("HeartRate", "Heart Rate", vec![("beatsPerMinute", "66")]),
        (
            "BloodPressure",
            "Blood Pressure",
            vec![("diastolic", "79"), ("systolic", "119")],
        ),
        (
            "OxygenSaturation",
            "Oxygen Saturation",
            vec![("oxygenPercentage", "99")],
        ),
    ] {
        let d = device_set(&device_collection(&[&fixture(&format!(
            "{dir}/Expected/deviceData_{name}.json"
        ))]));
        let f = fhir_set(&fixture(&format!("{dir}/Expected/fhirMapping_{name}.json")).pipe_fhir());
        let payload = json(&fixture(&format!("{dir}/TestInput/deviceData_{name}.json")));
        let (ms, _obs) = run(&d, &f, &[payload]);
        assert_eq!(ms.len(), 1, "{name}");
        assert_eq!(
            (ms[0].type_name.as_str(), ms[0].properties.clone()),
            (ty, props(&values)),
            "{name}"
        );
        assert_eq!(
            (
                ms[0].patient_id.as_deref(),
                ms[0].encounter_id.as_deref(),
                ms[0].correlation_id.as_deref()
            ),
            (
                Some("TestPatientId"),
                Some("TestEncounter"),
                Some("TestCorrelation")
            )
        );
    }
    let projection = fixture(&format!("{dir}/Expected/deviceData_Projection.json"));
    let items = json(&projection);
    let texts: Vec<String> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let d = device_set(&device_collection(
        &texts.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let ms = d
        .normalize(&json(&fixture(&format!(
            "{dir}/TestInput/deviceData_Projection.json"
        ))))
        .unwrap();
    assert_eq!(
        ms.iter().map(|m| m.type_name.as_str()).collect::<Vec<_>>(),
        ["Blood Pressure", "Heart Rate", "Oxygen Saturation"]
    );
}

trait PipeFhir {
    fn pipe_fhir(self) -> String;
}
impl PipeFhir for String {
    /// The generator writes either a collection or a single CodeValueFhir template.
    fn pipe_fhir(self) -> String {
        if self.contains("\"CollectionFhir\"") {
            self
        } else {
            fhir_collection(&[&self])
        }
    }
}
