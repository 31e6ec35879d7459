//! Device templates: validity fixtures and payload fixtures of the reference.

use super::*;
use serde_json::json;
use vigil_medtech::{envelope, NormalizeError};

fn errors_of(text: &str) -> vigil_medtech::TemplateErrors {
    match DeviceTemplateSet::parse(text) {
        Ok(s) => panic!("expected errors, parsed {} templates", s.templates.len()),
        Err(e) => e,
    }
}

#[test]
fn valid_single_templates_load() {
    for name in [
        "data_JsonPathContentTemplateValid.json",
        "data_JsonPathContentTemplateValidWithOptional.json",
        "data_IotJsonPathContentTemplateValid.json",
        "data_IotJsonPathContentTemplateValidWithOptional.json",
        "data_IotCentralJsonPathContentTemplateValid.json",
        "data_IotCentralJsonPathContentTemplateValidWithOptional.json",
        "data_CalculatedFunctionContentTemplateValid.json",
        "data_CalculatedFunctionContentTemplateValidExpressionObject.json",
        "data_CalculatedFunctionContentTemplateValidOptional.json",
    ] {
        let set = DeviceTemplateSet::parse(&device_collection(&[&input(name)]))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(set.templates.len(), 1, "{name}");
    }
}

#[test]
fn missing_expressions_are_reported_together() {
    let e = errors_of(&device_collection(&[&input(
        "data_JsonPathContentTemplateInvalidMissingExpression.json",
    )]));
    assert!(
        e.has_field("deviceIdExpression") && e.has_field("timestampExpression"),
        "{e}"
    );
    assert_eq!(e.errors.len(), 2, "{e}");
    assert!(
        e.errors.iter().all(|x| x.path == "$.template[0].template"),
        "{e}"
    );
}

#[test]
fn missing_type_metadata_is_reported() {
    for name in [
        "data_IotJsonPathContentTemplateInvalidMissingTypeMetadata.json",
        "data_IotCentralJsonPathContentTemplateInvalidMissingTypeMetadata.json",
    ] {
        let e = errors_of(&device_collection(&[&input(name)]));
        assert!(
            e.has_field("typeName") && e.has_field("typeMatchExpression"),
            "{name}: {e}"
        );
    }
}

#[test]
fn missing_value_name_is_reported_with_position() {
    for name in [
        "data_IotJsonPathContentTemplateInvalidMissingValueField.json",
        "data_IotCentralJsonPathContentTemplateInvalidMissingValueField.json",
    ] {
        let e = errors_of(
            &input(name)
                .replace("\"templateType\": \"Iot", "\"templateType\": \"iot")
                .pipe(|t| device_collection(&[&t])),
        );
        assert_eq!(e.errors.len(), 1, "{name}: {e}");
        assert_eq!(e.errors[0].field, "valueName");
        assert_eq!(e.errors[0].path, "$.template[0].template.values[0]");
        assert!(e.errors[0].line > 1 && e.errors[0].column > 1, "{e}");
    }
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl Pipe for String {}

#[test]
fn unknown_fields_are_errors() {
    let e = errors_of(&device_collection(&[&input(
        "data_CalculatedFunctionContentTemplateValidInvalidAndMissingMembers.json",
    )]));
    for f in [
        "typeMatchExpressionFake",
        "deviceIdExpressionFake",
        "typeMatchExpression",
        "deviceIdExpression",
    ] {
        assert!(e.has_field(f), "{f}: {e}");
    }
    assert_eq!(e.errors.len(), 4, "{e}");
    // Iot templates have fixed device/time expressions: supplying them is an unknown field.
    let t = r#"{"templateType":"IotJsonPathContent","template":{"typeName":"hr","typeMatchExpression":"$..[?(@Body.hr)]","deviceIdExpression":"$.x","values":[]}}"#;
    let e = errors_of(&device_collection(&[t]));
    assert!(
        e.has_field("deviceIdExpression") && e.errors[0].message.contains("unknown field"),
        "{e}"
    );
}

#[test]
fn collection_fixtures() {
    assert!(
        device_set(&input("data_CollectionContentTemplateEmptyWithType.json"))
            .templates
            .is_empty()
    );
    assert_eq!(
        device_set(&input("data_CollectionContentTemplateMixed.json"))
            .templates
            .len(),
        17
    );
    assert_eq!(
        device_set(&input(
            "data_CollectionContentTemplateMultipleIotCentralJsonPath.json"
        ))
        .templates
        .len(),
        3
    );
    assert_eq!(
        device_set(&input("data_CollectionContentTemplateHrAndSteps.json"))
            .templates
            .len(),
        2
    );
    assert_eq!(
        device_set(&input(
            "data_CollectionContentTemplateHrAndStepsJmesPath.json"
        ))
        .templates
        .len(),
        2
    );

    let e = errors_of(&input("data_CollectionContentTemplateEmpty.json"));
    assert!(
        e.errors[0]
            .message
            .contains("No match found for template type ''"),
        "{e}"
    );

    let e = errors_of(&input("data_CollectionContentTemplateInvalid.json"));
    let at = |i: usize| {
        e.errors
            .iter()
            .filter(|x| x.path.starts_with(&format!("$.template[{i}]")))
            .count()
    };
    assert_eq!((at(0), at(1)), (2, 1), "{e}");

    let e = errors_of(&input("data_CollectionContentTemplateMixedValidity.json"));
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(
        (e.errors[0].path.as_str(), e.errors[0].field.as_str()),
        ("$.template[2].template", "typeMatchExpression")
    );

    let e = errors_of(&input("data_CollectionContentTemplateMultipleMocks.json"));
    assert_eq!(e.errors.len(), 2, "{e}");
    assert!(
        e.errors[0].message.contains("mockA") && e.errors[1].message.contains("mockB"),
        "{e}"
    );

    let e = errors_of(&input(
        "data_InvalidCollectionContentTemplateWithNoTemplateArray.json",
    ));
    assert_eq!(e.errors[0].field, "template", "{e}");
    let e = errors_of(&input("data_InvalidTemplateType.json"));
    assert!(e.errors[0].message.contains("templateType"), "{e}");
    let e = errors_of(&input(
        "data_InvalidCollectionFhirTemplateWithNoTemplateArray.json",
    ));
    assert!(e.errors[0].message.contains("CollectionFhir"), "{e}");
    let e = errors_of(&input("data_InvalidJson.txt"));
    assert!(e.errors[0].message.starts_with("invalid JSON"), "{e}");
    assert_eq!((e.errors[0].line, e.errors[0].column), (3, 1), "{e}");
}

#[test]
fn type_names_match_case_insensitively_with_optional_suffix() {
    let t = r#"{"templateType":"collectioncontentTEMPLATE","template":[{"templateType":"JSONPATHCONTENTTemplate","template":{"typeName":"hr","typeMatchExpression":"$..[?(@hr)]","deviceIdExpression":"$.d","timestampExpression":"$.t"}}]}"#;
    assert_eq!(device_set(t).templates.len(), 1);
}

#[test]
fn bad_expressions_are_template_errors() {
    let t = r#"{"templateType":"CollectionContent","template":[
      {"templateType":"CalculatedContent","template":{"typeName":"a","typeMatchExpression":"$..[?(@x ==)]","deviceIdExpression":{"value":"nosuchfn(@)","language":"JmesPath"},"timestampExpression":{"value":"$.t","language":"Python"},"values":[{"valueName":"v","valueExpression":"$.v","required":"maybe"}]}}]}"#;
    let e = errors_of(t);
    for f in [
        "typeMatchExpression",
        "deviceIdExpression",
        "language",
        "required",
    ] {
        assert!(e.has_field(f), "{f}: {e}");
    }
    let dev = e
        .errors
        .iter()
        .find(|x| x.field == "deviceIdExpression")
        .unwrap();
    assert!(dev.message.contains("nosuchfn"), "{e}");
    assert_eq!(dev.line, 2, "{e}");
}

fn hr_payload() -> Value {
    json!({"heartrate": "60", "steps": "10", "device": "abc", "date": "2019-01-01T01:02:03Z", "patient": "p1", "sessionid": "s1"})
}

#[test]
fn json_path_content_extracts_from_the_matched_token() {
    let set = device_set(&device_collection(&[&input(
        "data_JsonPathContentTemplateValidWithOptional.json",
    )]));
    let ms = set
        .normalize(&json!({"Body": hr_payload(), "Properties": {}, "SystemProperties": {}}))
        .unwrap();
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0].type_name, "heartrate");
    assert_eq!(ms[0].device_id, "abc");
    assert_eq!(ms[0].patient_id.as_deref(), Some("p1"));
    assert_eq!(ms[0].correlation_id.as_deref(), Some("s1"));
    assert_eq!(ms[0].occurrence_time, "2019-01-01T01:02:03Z");
    assert_eq!(ms[0].properties, props(&[("hr", "60")]));
    // A defined correlation id is required.
    let mut p = hr_payload();
    p.as_object_mut().unwrap().remove("sessionid");
    let e = set.normalize(&p).unwrap_err();
    assert!(
        matches!(&e, NormalizeError::IncompatibleData { field, .. } if field == "correlationIdExpression"),
        "{e}"
    );
    assert_eq!(e.kind(), "IncompatibleDataException");
}

#[test]
fn hr_and_steps_jsonpath_and_jmespath_agree() {
    for name in [
        "data_CollectionContentTemplateHrAndSteps.json",
        "data_CollectionContentTemplateHrAndStepsJmesPath.json",
    ] {
        let set = device_set(&input(name));
        let ms = set.normalize(&hr_payload()).unwrap();
        assert_eq!(
            summary(&ms),
            vec![
                (
                    "heartrate".into(),
                    "abc".into(),
                    "2019-01-01T01:02:03Z".into(),
                    props(&[("hr", "60")])
                ),
                (
                    "steps".into(),
                    "abc".into(),
                    "2019-01-01T01:02:03Z".into(),
                    props(&[("steps", "10")])
                ),
            ],
            "{name}"
        );
        // No match: nothing, not an error.
        assert!(
            set.normalize(&json!({"other": 1})).unwrap().is_empty(),
            "{name}"
        );
    }
}

#[test]
fn iot_hub_payloads() {
    let set = device_set(&device_collection(&[&input(
        "data_IotJsonPathContentTemplateValid.json",
    )]));
    let ms = set
        .normalize(&json(&input("data_IotHubPayloadExample.json")))
        .unwrap();
    assert_eq!(
        summary(&ms),
        vec![(
            "heartrate".into(),
            "ev-d795-1d04-55ae".into(),
            "2019-01-30T22:45:02.6073744Z".into(),
            props(&[("hr", "203")])
        )]
    );
    // Without the creation time the enqueued time is used.
    let ms = set
        .normalize(&json(&input(
            "data_IotHubPayloadExampleMissingCreateTime.json",
        )))
        .unwrap();
    assert_eq!(ms[0].occurrence_time, "2019-02-01T22:46:01.875Z");
    assert_eq!(ms[0].patient_id, None);

    let bp = r#"{"templateType":"IotJsonPathContent","template":{"typeName":"bloodpressure","typeMatchExpression":"$..[?(@Body.systolic && @Body.diastolic)]","values":[
        {"valueName":"systolic","valueExpression":"$.Body.systolic","required":true},{"valueName":"diastolic","valueExpression":"$.Body.diastolic","required":true}]}}"#;
    let set = device_set(&device_collection(&[
        bp,
        &input("data_IotJsonPathContentTemplateValidWithOptional.json"),
    ]));
    let ms = set
        .normalize(&json(&input("data_IotHubPayloadMultiValueExample.json")))
        .unwrap();
    assert_eq!(ms.len(), 1, "{ms:?}");
    assert_eq!(
        ms[0].properties,
        props(&[("systolic", "111"), ("diastolic", "75")])
    );
}

#[test]
fn iot_central_payloads() {
    let set = device_set(&input(
        "data_CollectionContentTemplateMultipleIotCentralJsonPath.json",
    ));
    let ms = set
        .normalize(&json(&input(
            "data_IotCentralPayloadExampleMultipleMessages.json",
        )))
        .unwrap();
    let got: Vec<_> = ms
        .iter()
        .map(|m| {
            (
                m.type_name.as_str(),
                m.occurrence_time.as_str(),
                m.patient_id.as_deref(),
                m.properties.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "heartrate",
                "2021-06-08T19:45:20.202Z",
                Some("1qsi9p8t5l2"),
                props(&[("hr", "75")])
            ),
            (
                "heartrate",
                "2021-06-08T19:44:04.941Z",
                Some("1qsi9p8t5l2"),
                props(&[("hr", "69")])
            ),
            (
                "respiratoryrate",
                "2021-06-08T19:45:20.202Z",
                Some("1qsi9p8t5l2"),
                props(&[("respiratoryrate", "15")])
            ),
            (
                "respiratoryrate",
                "2021-06-08T19:44:04.941Z",
                Some("1qsi9p8t5l2"),
                props(&[("respiratoryrate", "15")])
            ),
            (
                "bloodpressure",
                "2021-06-08T19:45:20.202Z",
                Some("1qsi9p8t5l2"),
                props(&[("systolic", "62"), ("diastolic", "30")])
            ),
            (
                "bloodpressure",
                "2021-06-08T19:44:04.941Z",
                Some("1qsi9p8t5l2"),
                props(&[("systolic", "43"), ("diastolic", "34")])
            ),
        ]
    );
    // Single-message export wrapped as a Body: the template's `$.template.*` values do not
    // exist in this payload, and they are required.
    let set = device_set(&device_collection(&[&input(
        "data_IotCentralJsonPathContentTemplateValid.json",
    )]));
    let env = json!({"Body": json(&input("data_IotCentralPayloadExample.json")), "Properties": {}, "SystemProperties": {}});
    let e = set.normalize(&env).unwrap_err();
    assert!(
        matches!(&e, NormalizeError::IncompatibleData { field, .. } if field == "activity"),
        "{e}"
    );
    let t = input("data_IotCentralJsonPathContentTemplateValid.json")
        .replace("$.template.", "$.telemetry.");
    let ms = device_set(&device_collection(&[&t]))
        .normalize(&env)
        .unwrap();
    assert_eq!(
        summary(&ms),
        vec![(
            "telemetry".into(),
            "1vzb5ghlsg1".into(),
            "2020-08-05T22:26:55.455Z".into(),
            props(&[("activity", "running"), ("bp_diastolic", "7")])
        )]
    );
}

fn documentation_case(name: &str, payload: &str) -> Vec<Measurement> {
    let set = device_set(&input(&format!(
        "data_Documentation_CalculatedFunction_{name}_Template.json"
    )));
    set.normalize(&json(&input(&format!(
        "data_Documentation_CalculatedFunction_{payload}_Payload.json"
    ))))
    .unwrap()
}

#[test]
fn documentation_calculated_content_examples() {
    let t = "2019-02-01T22:46:01.875Z";
    assert_eq!(
        summary(&documentation_case("HeartRate", "HeartRate")),
        vec![(
            "heartrate".into(),
            "device123".into(),
            t.into(),
            props(&[("hr", "78")])
        )]
    );
    assert_eq!(
        summary(&documentation_case("BloodPressure", "BloodPressure")),
        vec![(
            "bloodpressure".into(),
            "device123".into(),
            t.into(),
            props(&[("systolic", "123"), ("diastolic", "87")])
        )]
    );
    assert_eq!(
        summary(&documentation_case(
            "MultipleMeasurements",
            "MultipleMeasurements"
        )),
        vec![
            (
                "heartrate".into(),
                "device123".into(),
                t.into(),
                props(&[("hr", "78")])
            ),
            (
                "stepcount".into(),
                "device123".into(),
                t.into(),
                props(&[("steps", "2")])
            )
        ]
    );
    let ms = documentation_case("HeartRate", "MultipleMeasurements_FromArray");
    let got: Vec<_> = ms
        .iter()
        .map(|m| (m.occurrence_time.as_str(), m.properties[0].1.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("2019-02-01T20:46:01.875Z", "78"),
            ("2019-02-01T21:46:01.875Z", "81"),
            ("2019-02-01T22:46:01.875Z", "72")
        ]
    );
    let ms = documentation_case("MultipleMatches", "MultipleMatches");
    assert_eq!(
        summary(&ms),
        vec![
            (
                "heartrate".into(),
                "device123".into(),
                "2021-07-13T17:29:01.061144Z".into(),
                props(&[("systolic", "120"), ("diastolic", "80")])
            ),
            (
                "heartrate".into(),
                "device123".into(),
                "2021-07-13T17:28:01.061122Z".into(),
                props(&[("systolic", "122"), ("diastolic", "82")])
            ),
        ]
    );
    let ms = documentation_case("TransformData", "TransformData");
    assert_eq!(
        summary(&ms),
        vec![
            (
                "heightInMeters".into(),
                "device123".into(),
                t.into(),
                props(&[("height", "1.9812")])
            ),
            (
                "heightInMeters".into(),
                "device123".into(),
                "2019-02-01T23:46:01.875Z".into(),
                props(&[("height", "1.9304")])
            ),
        ]
    );
}

fn jmes_value(expr: &str, data: Value) -> Result<Option<String>, NormalizeError> {
    let t = format!(
        r#"{{"templateType":"CollectionContent","template":[{{"templateType":"CalculatedContent","template":{{"typeName":"x","typeMatchExpression":"$","deviceIdExpression":"'d'","timestampExpression":"'2020-01-01T00:00:00Z'","defaultExpressionLanguage":"JmesPath","values":[{{"valueName":"v","valueExpression":{}}}]}}}}]}}"#,
        serde_json::to_string(expr).unwrap()
    );
    let set = device_set(&t.replace(
        "\"typeMatchExpression\":\"$\"",
        "\"typeMatchExpression\":{\"value\":\"$\",\"language\":\"JsonPath\"}",
    ));
    let ms = set.normalize(&data)?;
    Ok(ms[0].properties.first().map(|p| p.1.clone()))
}

/// The examples of docs/CustomFunctions.md.
#[test]
fn custom_functions_documentation_tables() {
    let lr = |l: i64, r: f64| json!({"left": l, "right": r});
    assert_eq!(
        jmes_value("add(`10`, `10`)", json!({})).unwrap().as_deref(),
        Some("20")
    );
    assert_eq!(
        jmes_value("add(left, right)", lr(40, 50.0))
            .unwrap()
            .as_deref(),
        Some("90")
    );
    assert_eq!(
        jmes_value("divide(`10`, `10`)", json!({}))
            .unwrap()
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        jmes_value("divide(left, right)", lr(40, 50.0))
            .unwrap()
            .as_deref(),
        Some("0.8")
    );
    assert_eq!(
        jmes_value("divide(left, right)", lr(0, 50.0))
            .unwrap()
            .as_deref(),
        Some("0")
    );
    let e = jmes_value("divide(left, right)", lr(50, 0.0)).unwrap_err();
    assert!(
        e.to_string().contains("division by zero") && e.kind() == "TemplateExpressionException",
        "{e}"
    );
    assert_eq!(
        jmes_value("multiply(left, right)", lr(40, 50.0))
            .unwrap()
            .as_deref(),
        Some("2000")
    );
    assert_eq!(
        jmes_value("pow(`10`, `10`)", json!({})).unwrap().as_deref(),
        Some("10000000000")
    );
    assert!(jmes_value("pow(left, right)", lr(40, 50.0))
        .unwrap_err()
        .to_string()
        .contains("overflow"));
    assert_eq!(
        jmes_value("pow(left, right)", lr(100, 0.5))
            .unwrap()
            .as_deref(),
        Some("10")
    );
    assert_eq!(
        jmes_value("subtract(left, right)", lr(0, 50.0))
            .unwrap()
            .as_deref(),
        Some("-50")
    );
    assert_eq!(
        jmes_value("insertString('mple', 'sa', `0`)", json!({}))
            .unwrap()
            .as_deref(),
        Some("sample")
    );
    let s = |o: &str, i: &str, p: i64| json!({"original": o, "toInsert": i, "pos": p});
    assert_eq!(
        jmes_value("insertString(original, toInsert, pos)", s("suess", "cc", 2))
            .unwrap()
            .as_deref(),
        Some("success")
    );
    assert_eq!(
        jmes_value(
            "insertString(original, toInsert, pos)",
            s("myString", "!!", 8)
        )
        .unwrap()
        .as_deref(),
        Some("myString!!")
    );
    assert_eq!(
        jmes_value(
            "insertString(original, toInsert, length(original))",
            s("myString", "!!", 0)
        )
        .unwrap()
        .as_deref(),
        Some("myString!!")
    );
    assert!(jmes_value(
        "insertString(original, toInsert, pos)",
        s("myString", "!!", 100)
    )
    .unwrap_err()
    .to_string()
    .contains("out of range"));
    assert!(jmes_value(
        "insertString(original, toInsert, pos)",
        s("myString", "!!", -1)
    )
    .unwrap_err()
    .to_string()
    .contains("out of range"));
    assert_eq!(
        jmes_value("fromUnixTimestamp(unix)", json!({"unix": 1625677200}))
            .unwrap()
            .as_deref(),
        Some("2021-07-07T17:00:00Z")
    );
    assert_eq!(
        jmes_value("fromUnixTimestamp(unix)", json!({"unix": 0}))
            .unwrap()
            .as_deref(),
        Some("1970-01-01T00:00:00Z")
    );
    assert_eq!(
        jmes_value(
            "fromUnixTimestampMs(unix)",
            json!({"unix": 1626799080000i64})
        )
        .unwrap()
        .as_deref(),
        Some("2021-07-20T16:38:00Z")
    );
    // Wrong argument type.
    assert!(jmes_value("add('a', `1`)", json!({})).is_err());
}

#[test]
fn jmespath_timestamps_and_multiple_matches() {
    let t = r#"{"templateType":"CollectionContent","template":[{"templateType":"CalculatedContent","template":{"defaultExpressionLanguage":"JmesPath","typeName":"hr",
      "typeMatchExpression":"Body.points[?hr]","deviceIdExpression":"Body.id","timestampExpression":"fromUnixTimestampMs(matchedToken.ms)",
      "values":[{"valueName":"hr","valueExpression":"matchedToken.hr","required":true}]}}]}"#;
    let ms = device_set(t).normalize(&json!({"Body": {"id": "d", "points": [{"hr": 60, "ms": 1000}, {"x": 1}, {"hr": 61.5, "ms": 2500}]}})).unwrap();
    assert_eq!(
        summary(&ms),
        vec![
            (
                "hr".into(),
                "d".into(),
                "1970-01-01T00:00:01Z".into(),
                props(&[("hr", "60")])
            ),
            (
                "hr".into(),
                "d".into(),
                "1970-01-01T00:00:02.5Z".into(),
                props(&[("hr", "61.5")])
            )
        ]
    );
}

#[test]
fn message_errors() {
    let set = device_set(&input("data_CollectionContentTemplateHrAndSteps.json"));
    // Several tokens for a single value.
    let e = set.normalize(&json!({"heartrate": "1", "device": "a", "date": "2020-01-01T00:00:00Z", "x": {"heartrate": "2"}})).unwrap_err();
    assert_eq!(e.kind(), "IncompatibleDataException", "{e}");
    let two = r#"{"templateType":"CollectionContent","template":[{"templateType":"JsonPathContent","template":{"typeName":"hr","typeMatchExpression":"$","deviceIdExpression":"$..id","timestampExpression":"$.t"}}]}"#;
    let e = device_set(two)
        .normalize(&json!({"t": "2020-01-01T00:00:00Z", "a": {"id": 1}, "b": {"id": 2}}))
        .unwrap_err();
    assert_eq!(e.kind(), "TemplateExpressionException", "{e}");
    assert!(e.to_string().contains("2 tokens"), "{e}");
    // Blank device id, bad time.
    let e = set
        .normalize(&json!({"heartrate": "1", "device": "  ", "date": "2020-01-01T00:00:00Z"}))
        .unwrap_err();
    assert!(
        matches!(&e, NormalizeError::IncompatibleData { field, .. } if field == "deviceIdExpression"),
        "{e}"
    );
    let e = set
        .normalize(&json!({"heartrate": "1", "device": "a", "date": "yesterday"}))
        .unwrap_err();
    assert!(
        e.to_string().contains("'yesterday' is not an ISO 8601"),
        "{e}"
    );
    // Required value missing vs optional value missing.
    let e = set
        .normalize(&json!({"heartrate": null, "device": "a", "date": "2020-01-01T00:00:00Z"}))
        .unwrap_err();
    assert!(
        matches!(&e, NormalizeError::IncompatibleData { field, .. } if field == "hr"),
        "{e}"
    );
    // A body that is not JSON.
    let e = envelope(b"not json", json!({}), json!({})).unwrap_err();
    assert_eq!(
        (e.kind(), e.error_type()),
        ("InvalidDataFormatException", "DeviceMessageError")
    );
    let env = envelope(
        "\u{feff}{\"a\":1}".as_bytes(),
        json!({}),
        json!({"iothub-connection-device-id": "d"}),
    )
    .unwrap();
    assert_eq!(env["Body"]["a"], 1);
}

#[test]
fn optional_values_are_left_out() {
    let set = device_set(&input("data_CollectionContentTemplateMixed.json"));
    let env = json!({"Body": {"patientActiveTime": 12, "patientRestingTime": "3"}, "Properties": {}, "SystemProperties": {"iothub-connection-device-id": "boot1", "iothub-enqueuedtime": "2020-05-05T10:00:00+02:00"}});
    let ms = set.normalize(&env).unwrap();
    assert_eq!(
        summary(&ms),
        vec![(
            "bootTime".into(),
            "boot1".into(),
            "2020-05-05T08:00:00Z".into(),
            props(&[("activeTime", "12"), ("restingTime", "3")])
        )]
    );
}

#[test]
fn jsonpath_filters() {
    use vigil_medtech::JsonPath;
    let doc = json!({"Body": {"dataSourceId": "x:merged:y", "point": [
        {"dataTypeName": "a", "v": 1}, {"dataTypeName": "b", "v": 2.5}, {"dataTypeName": "a", "v": "3"}]}});
    let sel = |p: &str| {
        JsonPath::compile(p)
            .unwrap()
            .select(&doc)
            .into_iter()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sel("$..[?(@dataTypeName == 'a' && $.Body.dataSourceId =~ /merged/)].v"),
        vec![json!(1), json!("3")]
    );
    assert_eq!(
        sel("$.Body.point[?(@.v > 2)].v"),
        vec![json!(2.5), json!("3")]
    );
    assert_eq!(
        sel("$.Body.point[?(@.v == '1')].dataTypeName"),
        vec![json!("a")]
    );
    assert_eq!(sel("$.Body.point[-1:].v"), vec![json!("3")]);
    assert_eq!(sel("$.Body.point[0,2].v"), vec![json!(1), json!("3")]);
    assert_eq!(sel("$..v"), vec![json!(1), json!(2.5), json!("3")]);
    assert_eq!(sel("$['Body']['dataSourceId']"), vec![json!("x:merged:y")]);
    assert_eq!(sel("Body.point[*].v").len(), 3);
    assert_eq!(sel("$..[?(@.dataTypeName =~ /^B$/i)].v"), vec![json!(2.5)]);
    for bad in [
        "$.[",
        "$..",
        "$[?(@.a ==)]",
        "$[?(@.a =~ 'x')]",
        "$[?(@.a =~ /(/)]",
        "",
    ] {
        assert!(JsonPath::compile(bad).is_err(), "{bad}");
    }
}
