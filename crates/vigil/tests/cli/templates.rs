//! `vigil templates test|check`: the mapping debugger on the reference's sample templates.

use super::{fixture, vigil};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Output;

fn basic(file: &str) -> String {
    fixture(&format!("medtech-iomt-fhir/sample/templates/basic/{file}"))
}

fn write(dir: &Path, name: &str, v: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p.to_string_lossy().into_owned()
}

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn reading(extra: Value) -> Value {
    let mut b = json!({"deviceid": "device1", "patientid": "patient1",
                       "measurementdatetime": "2019-03-01T10:10:00Z"});
    b.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    b
}

#[test]
fn basic_sample_payloads_give_measurements_and_observations() {
    let dir = tempfile::tempdir().unwrap();
    let hr = write(dir.path(), "hr.json", &reading(json!({"heartrate": "78"})));
    let bp = write(
        dir.path(),
        "bp.json",
        &reading(json!({"systolic": "120", "diastolic": "80"})),
    );
    let out = vigil(&[
        "templates",
        "test",
        "--device",
        &basic("devicecontent.json"),
        "--fhir",
        &basic("fhirmapping.json"),
        &hr,
        &bp,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_out(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["warnings"], json!([]));
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["payload"], hr.as_str());
    let m = &r[0]["measurements"][0];
    assert_eq!(m["type"], "heartrate");
    assert_eq!(m["occurrenceTime"], "2019-03-01T10:10:00Z");
    assert_eq!(m["deviceId"], "device1");
    assert_eq!(m["patientId"], "patient1");
    assert_eq!(m["properties"], json!([{"name": "hr", "value": "78"}]));
    // Hourly SampledData at 1 s: the 10:10:00 reading is slot 600 of 3600.
    let obs = &r[0]["observations"][0];
    assert_eq!(obs["subject"]["reference"], "Patient/patient1");
    assert_eq!(obs["device"]["reference"], "Device/device1");
    assert_eq!(obs["id"].as_str().unwrap().len(), 64);
    let data: Vec<&str> = obs["valueSampledData"]["data"]
        .as_str()
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!((data.len(), data[600]), (3600, "78"));
    // Blood pressure: one measurement with two properties, one Observation with components.
    assert_eq!(r[1]["measurements"][0]["type"], "bloodpressure");
    assert_eq!(
        r[1]["measurements"][0]["properties"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(r[1]["observations"].as_array().unwrap().len(), 1);
    assert_eq!(
        r[1]["observations"][0]["component"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(r[1]["errors"], json!([]));
}

#[test]
fn without_fhir_templates_only_measurements_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    let hr = write(dir.path(), "hr.json", &reading(json!({"heartrate": "61"})));
    let out = vigil(&[
        "templates",
        "test",
        "--device",
        &basic("devicecontent.json"),
        &hr,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v = json_out(&out);
    assert_eq!(
        v["results"][0]["measurements"][0]["properties"][0]["value"],
        "61"
    );
    assert!(v["results"][0].get("observations").is_none(), "{v}");
}

#[test]
fn bare_payloads_are_wrapped_with_the_device_id_and_envelopes_kept() {
    // IotJsonPathContent reads the device id from the envelope's SystemProperties.
    let dir = tempfile::tempdir().unwrap();
    let device = write(
        dir.path(),
        "device.json",
        &json!({"templateType": "CollectionContent", "template": [{
            "templateType": "IotJsonPathContent",
            "template": {"typeName": "heartrate",
                         "typeMatchExpression": "$..[?(@Body.heartrate)]",
                         "values": [{"required": true, "valueExpression": "$.Body.heartrate",
                                     "valueName": "hr"}]}}]}),
    );
    let bare = write(dir.path(), "bare.json", &json!({"heartrate": 70}));
    let envelope = write(
        dir.path(),
        "envelope.json",
        &json!({"Body": {"heartrate": 71}, "Properties": {},
                "SystemProperties": {"iothub-connection-device-id": "from-envelope",
                                     "iothub-enqueuedtime": "2024-05-01T08:00:00Z"}}),
    );
    let out = vigil(&[
        "templates",
        "test",
        "--device",
        &device,
        "--device-id",
        "cuff-7",
        &bare,
        &envelope,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = json_out(&out);
    let r = &v["results"];
    assert_eq!(r[0]["measurements"][0]["deviceId"], "cuff-7");
    assert_eq!(r[1]["measurements"][0]["deviceId"], "from-envelope");
    assert_eq!(
        r[1]["measurements"][0]["occurrenceTime"],
        "2024-05-01T08:00:00Z"
    );

    // Without the flag the device is `test-device`.
    let out = vigil(&["templates", "test", "--device", &device, &bare]);
    assert_eq!(
        json_out(&out)["results"][0]["measurements"][0]["deviceId"],
        "test-device"
    );
}

#[test]
fn payload_errors_are_reported_with_kind_and_location_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    // heartrate matches but its required value is blank.
    let blank = write(dir.path(), "blank.json", &reading(json!({"heartrate": ""})));
    let unmatched = write(dir.path(), "none.json", &reading(json!({"weight": 80})));
    let not_json = dir.path().join("broken.json");
    std::fs::write(&not_json, "{\"heartrate\": ").unwrap();
    let good = write(
        dir.path(),
        "good.json",
        &reading(json!({"heartrate": "90"})),
    );
    let out = vigil(&[
        "templates",
        "test",
        "--device",
        &basic("devicecontent.json"),
        "--fhir",
        &basic("fhirmapping.json"),
        &blank,
        &unmatched,
        not_json.to_str().unwrap(),
        &good,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v = json_out(&out);
    assert_eq!(v["ok"], false);
    let r = &v["results"];
    let e = &r[0]["errors"][0];
    assert_eq!(e["kind"], "IncompatibleDataException", "{e}");
    assert_eq!(e["location"]["templateIndex"], 0);
    assert_eq!(e["location"]["typeName"], "heartrate");
    assert_eq!(e["location"]["field"], "hr");
    assert_eq!(e["location"]["expression"], "$.heartrate");
    assert_eq!(r[1]["errors"][0]["kind"], "TemplateNotFound");
    assert_eq!(r[2]["errors"][0]["kind"], "InvalidDataFormatException");
    // The other payloads still go through.
    assert_eq!(r[3]["errors"], json!([]));
    assert_eq!(r[3]["observations"].as_array().unwrap().len(), 1);
}

/// `heartrate` lacks deviceIdExpression (line 6, column 19) and has an unknown field
/// `bogus` (line 10, column 9).
const INVALID_DEVICE: &str = r#"{
  "templateType": "CollectionContent",
  "template": [
    {
      "templateType": "JsonPathContent",
      "template": {
        "typeName": "heartrate",
        "typeMatchExpression": "$..[?(@heartrate)]",
        "timestampExpression": "$.measurementdatetime",
        "bogus": 1,
        "values": []
      }
    }
  ]
}
"#;

#[test]
fn invalid_templates_exit_2_with_every_error_located() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("devicecontent.json");
    std::fs::write(&bad, INVALID_DEVICE).unwrap();
    let bad = bad.to_str().unwrap();
    let hr = write(dir.path(), "hr.json", &reading(json!({"heartrate": "78"})));
    let out = vigil(&["templates", "test", "--device", bad, &hr]);
    assert_eq!(out.status.code(), Some(2));
    let v = json_out(&out);
    let errors = v["templateErrors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v}");
    assert_eq!(errors[0]["path"], "$.template[0].template");
    assert_eq!(
        (errors[0]["line"].as_u64(), errors[0]["column"].as_u64()),
        (Some(6), Some(19))
    );
    assert!(errors[0]["message"]
        .as_str()
        .unwrap()
        .contains("deviceIdExpression"));
    assert_eq!(errors[1]["path"], "$.template[0].template.bogus");
    assert_eq!(errors[1]["location"], "10:9");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{bad}:6:19: error: $.template[0].template:")),
        "{stderr}"
    );

    let out = vigil(&[
        "templates",
        "check",
        "--device",
        bad,
        "--fhir",
        &basic("fhirmapping.json"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "{bad}:10:9: error: $.template[0].template.bogus: unknown field 'bogus'"
        )),
        "{text}"
    );
    assert!(text.contains("2 template error(s)"), "{text}");
}

#[test]
fn check_accepts_valid_templates_and_prints_mapping_warnings() {
    let out = vigil(&[
        "templates",
        "check",
        "--device",
        &basic("devicecontent.json"),
        "--fhir",
        &basic("fhirmapping.json"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "templates valid (0 warning(s))"
    );

    // The basic device templates against a FHIR set that only maps heart rate.
    let dir = tempfile::tempdir().unwrap();
    let fhir = write(
        dir.path(),
        "fhir.json",
        &json!({"templateType": "CollectionFhir", "template": [{
            "templateType": "CodeValueFhir",
            "template": {"typeName": "heartrate",
                         "codes": [{"code": "8867-4", "system": "http://loinc.org"}],
                         "value": {"valueName": "pulse", "valueType": "Quantity"}}}]}),
    );
    let out = vigil(&[
        "templates",
        "check",
        "--device",
        &basic("devicecontent.json"),
        "--fhir",
        &fhir,
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = json_out(&out);
    let warnings: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings.contains(&"device typeName 'steps' has no FHIR template"),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("valueName 'pulse'")),
        "{warnings:?}"
    );
    assert_eq!(v["templateErrors"], json!([]));

    let out = vigil(&[
        "templates",
        "check",
        "--device",
        "/nonexistent/devicecontent.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read /nonexistent/devicecontent.json"));
}
