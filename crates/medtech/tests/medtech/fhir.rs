//! FHIR templates: validity fixtures, grouping, SampledData, Observation building and merging.

use super::*;
use serde_json::json;
use vigil_medtech::{
    encode_sampled_data, group, observation_id, observation_identifier, resource_id,
    FhirMappingError, FhirValueType, Identity, IdentityResolutionType, Instant, ObservationChange,
    PeriodInterval, SERVICE_SYSTEM,
};

fn fhir_errors(text: &str) -> vigil_medtech::TemplateErrors {
    match FhirTemplateSet::parse(text) {
        Ok(s) => panic!("expected errors, parsed {} templates", s.templates.len()),
        Err(e) => e,
    }
}

#[test]
fn valid_code_value_templates_load() {
    for name in [
        "data_CodeValueFhirTemplate_SampledData.json",
        "data_CodeValueFhirTemplate_Quantity.json",
        "data_CodeValueFhirTemplate_String.json",
        "data_CodeValueFhirTemplate_CodeableConceptData.json",
        "data_CodeValueFhirTemplate_Components.json",
        "data_CodeValueFhirTemplate_CodeableConceptAndStringComponent.json",
    ] {
        let set = FhirTemplateSet::parse(&fhir_collection(&[&input(name)]))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(set.templates.len(), 1, "{name}");
    }
    let set = fhir_set(&fhir_collection(&[&input(
        "data_CodeValueFhirTemplate_SampledData.json",
    )]));
    let t = set.template("HEARTRATE").unwrap();
    assert_eq!(t.period_interval, PeriodInterval::Hourly);
    assert_eq!(
        t.value.as_ref().unwrap().value_type,
        FhirValueType::SampledData {
            default_period_ms: 5000,
            unit: Some("bpm".into())
        }
    );
    // Quantity with an hourly period: documented behaviour, the period is ignored.
    let set = fhir_set(&fhir_collection(&[&input(
        "data_CodeValueFhirTemplate_Quantity.json",
    )]));
    assert_eq!(set.templates[0].effective_period(), PeriodInterval::Single);
}

#[test]
fn invalid_code_value_templates() {
    let e = fhir_errors(&fhir_collection(&[&input(
        "data_CodeValueFhirTemplateInvalid_MissingCodeField.json",
    )]));
    assert!(e.has_field("codes"), "{e}");
    let e = fhir_errors(&fhir_collection(&[&input(
        "data_CodeValueFhirTemplateInvalid_MissingFields.json",
    )]));
    assert!(e.has_field("typeName"), "{e}");
    let e = fhir_errors(&fixture("test/Microsoft.Health.Fhir.Ingest.UnitTests/TestInput/data_CodeValueFhirTemplate_Valid.json"));
    assert!(e.has_field("templateType"), "{e}");
}

#[test]
fn collection_fhir_fixtures() {
    assert_eq!(
        fhir_set(&input("data_CollectionFhirTemplateValid.json"))
            .templates
            .len(),
        6
    );
    assert!(
        fhir_set(&input("data_CollectionFhirTemplateEmptyWithType.json"))
            .templates
            .is_empty()
    );
    let e = fhir_errors(&input("data_CollectionFhirTemplateEmpty.json"));
    assert!(
        e.errors[0]
            .message
            .contains("No match found for template type ''"),
        "{e}"
    );
    let e = fhir_errors(&input("data_CollectionFhirTemplateMultipleMocks.json"));
    assert_eq!(e.errors.len(), 2, "{e}");
    let e = fhir_errors(&input("data_CollectionFhirTemplateMixedValidity.json"));
    assert_eq!(e.errors.len(), 1, "{e}");
    assert_eq!(
        (e.errors[0].path.as_str(), e.errors[0].field.as_str()),
        ("$.template[1].template", "typeName")
    );
    // Despite its name this fixture is a device template collection.
    let e = fhir_errors(&input("data_CollectionFhirTemplateMixed.json"));
    assert!(
        e.errors[0]
            .message
            .contains("'CollectionContent' (expected CollectionFhir)"),
        "{e}"
    );
    assert_eq!(
        device_set(&input("data_CollectionFhirTemplateMixed.json"))
            .templates
            .len(),
        17
    );
    // Duplicate type names (case-insensitive) are template errors.
    let valid = input("data_CollectionFhirTemplateValid.json");
    let items: Vec<String> = json(&valid)["template"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let dup = items[0].replace("\"heartrate\"", "\"HeartRate\"");
    let e = fhir_errors(&fhir_collection(&[&items[0], &items[1], &dup]));
    assert_eq!(e.errors.len(), 1, "{e}");
    assert!(
        e.errors[0]
            .message
            .starts_with("duplicate typeName 'HeartRate' (also template 0)"),
        "{e}"
    );
    let e = fhir_errors(&input("data_CollectionFhirTemplateInvalid.json"));
    let at = |i: usize, f: &str| {
        e.errors
            .iter()
            .any(|x| x.path.starts_with(&format!("$.template[{i}]")) && x.field == f)
    };
    assert!(at(0, "typeName"), "{e}");
    assert!(
        at(1, "code") && at(1, "valueName") && at(1, "valueType"),
        "{e}"
    );
    assert!(
        at(2, "code") && at(2, "typeName") && at(2, "defaultPeriod"),
        "{e}"
    );
    assert!(at(3, "code") && at(4, "code"), "{e}");
}

#[test]
fn validation_fixtures() {
    let dir = "test/Microsoft.Health.Fhir.Ingest.Validation.UnitTests/TestInput";
    let dev = device_set(&fixture(&format!(
        "{dir}/data_CollectionContentTemplateHrAndBloodPressureValid.json"
    )));
    let good = fhir_set(&fixture(&format!(
        "{dir}/data_CollectionFhirTemplateValid.json"
    )));
    assert!(vigil_medtech::check_mappings(&dev, &good).is_empty());
    let bad_name = fhir_set(&fixture(&format!(
        "{dir}/data_CollectionFhirTemplateIncorrectValueNameInvalid.json"
    )));
    let w = vigil_medtech::check_mappings(&dev, &bad_name);
    assert!(
        w.iter().any(|w| w.contains("systolicBadValueName")),
        "{w:?}"
    );
    let missing = fhir_set(&fixture(&format!(
        "{dir}/data_CollectionFhirTemplateMissingTypeInvalid.json"
    )));
    assert!(!vigil_medtech::check_mappings(&dev, &missing).is_empty());
    assert!(FhirTemplateSet::parse(&fhir_collection(&[&fixture(&format!(
        "{dir}/data_CodeValueFhirTemplateInvalid_MissingFields.json"
    ))]))
    .is_err());
    assert!(DeviceTemplateSet::parse(&fixture(&format!(
        "{dir}/data_CollectionContentTemplateInvalid.json"
    )))
    .is_err());
}

#[test]
fn templates_that_cannot_work_are_rejected() {
    let t = |body: &str| {
        format!(
            r#"{{"templateType":"CollectionFhir","template":[{{"templateType":"CodeValueFhir","template":{{"typeName":"x","codes":[{{"code":"c"}}],{body}}}}}]}}"#
        )
    };
    let e = fhir_errors(&t(
        r#""periodInterval":60,"value":{"valueName":"a","valueType":"SampledData","defaultPeriod":1000},"components":[{"codes":[{"code":"d"}],"value":{"valueName":"b","valueType":"Quantity"}}]"#,
    ));
    assert!(e.has_field("periodInterval"), "{e}");
    let e = fhir_errors(&t(
        r#""periodInterval":30,"value":{"valueName":"a","valueType":"Quantity"}"#,
    ));
    assert!(
        e.errors[0]
            .message
            .contains("periodInterval 30 is not supported"),
        "{e}"
    );
    let e = fhir_errors(&t(r#""value":{"valueName":"a","valueType":"Integer"}"#));
    assert!(
        e.errors[0].message.contains("unknown valueType 'Integer'"),
        "{e}"
    );
    let e = fhir_errors(&t(
        r#""periodInterval":1440,"value":{"valueName":"a","valueType":"SampledData","defaultPeriod":0}"#,
    ));
    assert!(e.has_field("defaultPeriod"), "{e}");
    let e = fhir_errors(&t(
        r#""periodInterval":1440,"value":{"valueName":"a","valueType":"SampledData","defaultPeriod":1000,"extra":1}"#,
    ));
    assert!(
        e.has_field("extra") && e.errors[0].message == "unknown field 'extra'",
        "{e}"
    );
    let e = fhir_errors(&t(
        r#""periodInterval":1440,"value":{"valueName":"a","valueType":"SampledData","defaultPeriod":1}"#,
    ));
    assert!(
        e.errors[0]
            .message
            .contains("more than 1000000 SampledData slots"),
        "{e}"
    );
}

#[test]
fn sampled_data_encoding() {
    let t0 = Instant::parse("2019-01-01T00:00:00Z").unwrap();
    let min = |k: i64| Instant(t0.0 + k * 60 * 10_000_000);
    // 11 one-minute values over a 10-minute window (end exclusive of the 11th).
    let pts: std::collections::BTreeMap<_, _> = (0..11).map(|k| (min(k), k.to_string())).collect();
    assert_eq!(
        encode_sampled_data(t0, Instant(min(10).0 - 1), 60_000, &pts).unwrap(),
        "0 1 2 3 4 5 6 7 8 9"
    );
    // Gaps are E; in a slot the last value wins.
    let pts: std::collections::BTreeMap<_, _> = [
        (min(0), "1".to_string()),
        (Instant(min(0).0 + 5), "2".to_string()),
        (min(3), "4".to_string()),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        encode_sampled_data(t0, min(4), 60_000, &pts).unwrap(),
        "2 E E 4 E"
    );
    // Hourly at 1 s gives 3600 slots; Single gives one.
    let end = Instant(t0.0 + 3_600 * 10_000_000 - 1);
    assert_eq!(
        encode_sampled_data(t0, end, 1000, &Default::default())
            .unwrap()
            .split(' ')
            .count(),
        3600
    );
    assert_eq!(
        encode_sampled_data(t0, t0, 1000, &Default::default()).unwrap(),
        "E"
    );
}

fn m(ty: &str, dev: &str, t: &str, p: &[(&str, &str)]) -> Measurement {
    Measurement {
        type_name: ty.into(),
        occurrence_time: t.into(),
        device_id: dev.into(),
        patient_id: Some("p".into()),
        encounter_id: None,
        correlation_id: None,
        properties: props(p),
    }
}

fn ident() -> Identity {
    Identity {
        patient_id: "pat1".into(),
        device_id: "dev1".into(),
        encounter_id: None,
    }
}

#[test]
fn grouping_by_period() {
    let set = fhir_set(&input("data_CollectionFhirTemplateValid.json"));
    let ms = vec![
        m("heartrate", "d1", "2019-01-01T00:10:00Z", &[("hr", "60")]),
        m("heartrate", "d1", "2019-01-01T00:59:59Z", &[("hr", "61")]),
        m("heartrate", "d1", "2019-01-01T01:00:00Z", &[("hr", "62")]),
        m("heartrate", "d2", "2019-01-01T00:10:00Z", &[("hr", "70")]),
        m("HeartRate", "d1", "2019-01-01T00:10:00Z", &[("hr", "65")]),
        m(
            "deviceWorn",
            "d1",
            "2019-01-01T00:10:00Z",
            &[("deviceWorn", "true")],
        ),
        m("unknown", "d1", "2019-01-01T00:10:00Z", &[]),
        m("heartrate", "d1", "not a time", &[]),
    ];
    let g = group(&ms, &set);
    assert_eq!(g.groups.len(), 4, "{g:#?}");
    let first = &g.groups[0];
    assert_eq!(
        (first.start.to_string(), first.end.to_string()),
        (
            "2019-01-01T00:00:00Z".into(),
            "2019-01-01T00:59:59.9999999Z".into()
        )
    );
    assert_eq!(first.measurement_count, 3);
    // Same timestamp: the later measurement wins.
    let hr: Vec<_> = first.values["hr"].values().cloned().collect();
    assert_eq!(hr, vec!["65", "61"]);
    assert_eq!(g.groups[1].start.to_string(), "2019-01-01T01:00:00Z");
    assert_eq!(g.groups[3].start, g.groups[3].end);
    let kinds: Vec<_> = g
        .rejected
        .iter()
        .map(|r| (r.index, r.error.kind()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (6, "TemplateNotFoundException"),
            (7, "MeasurementProcessingException")
        ]
    );
    let (sys, value) = observation_identifier(first, &ident());
    assert_eq!(sys, SERVICE_SYSTEM);
    assert_eq!(value, "pat1.dev1.heartrate.20190101000000Z.20190101005959Z");
    let id = observation_id(first, &ident());
    assert_eq!(id, resource_id(SERVICE_SYSTEM, &value));
    assert_eq!(id.len(), 64);
    assert!(id
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
}

#[test]
fn correlation_and_daily_groups() {
    let t = |p: i64| {
        format!(
            r#"{{"templateType":"CollectionFhir","template":[{{"templateType":"CodeValueFhir","template":{{"typeName":"hr","periodInterval":{p},"codes":[{{"code":"8867-4","system":"http://loinc.org"}}],"value":{{"valueName":"hr","valueType":"SampledData","defaultPeriod":60000}}}}}}]}}"#
        )
    };
    let set = fhir_set(&t(-1));
    let mut a = m("hr", "d", "2019-01-01T10:00:00Z", &[("hr", "1")]);
    a.correlation_id = Some("session-1".into());
    let mut b = m("hr", "d", "2019-01-01T09:58:00Z", &[("hr", "2")]);
    b.correlation_id = Some("session-1".into());
    let c = m("hr", "d", "2019-01-01T09:00:00Z", &[("hr", "3")]);
    let g = group(&[a, b, c], &set);
    assert_eq!(g.groups.len(), 1);
    assert_eq!(
        (g.groups[0].start.to_string(), g.groups[0].end.to_string()),
        ("2019-01-01T09:58:00Z".into(), "2019-01-01T10:00:00Z".into())
    );
    assert_eq!(
        observation_identifier(&g.groups[0], &ident()).1,
        "pat1.dev1.hr.session-1"
    );
    assert!(matches!(
        g.rejected[0].error,
        FhirMappingError::CorrelationIdNotDefined { .. }
    ));
    let obs = match set.observation_for(&g.groups[0], &ident(), None).unwrap() {
        ObservationChange::Create(o) => o,
        other => panic!("{other:?}"),
    };
    assert_eq!(obs["valueSampledData"]["data"], "2 E 1");

    let set = fhir_set(&t(1440));
    let g = group(
        &[m("hr", "d", "2019-03-05T23:59:00+01:00", &[("hr", "1")])],
        &set,
    );
    assert_eq!(
        (g.groups[0].start.to_string(), g.groups[0].end.to_string()),
        (
            "2019-03-05T00:00:00Z".into(),
            "2019-03-05T23:59:59.9999999Z".into()
        )
    );
}

fn issued() -> Instant {
    Instant::parse("2020-01-01T00:00:00Z").unwrap()
}

#[test]
fn observation_create_sampled_data_and_merge() {
    let set = fhir_set(&input("data_CollectionFhirTemplateValid.json"));
    let ms = vec![
        m("heartrate", "d1", "2019-01-01T00:00:01Z", &[("hr", "60")]),
        m("heartrate", "d1", "2019-01-01T00:00:03Z", &[("hr", "62")]),
    ];
    let g = &group(&ms, &set).groups[0];
    let ObservationChange::Create(obs) =
        set.observation_for_at(g, &ident(), None, issued()).unwrap()
    else {
        panic!()
    };
    assert_eq!(obs["id"], observation_id(g, &ident()));
    assert_eq!(obs["status"], "final");
    assert_eq!(obs["subject"]["reference"], "Patient/pat1");
    assert_eq!(obs["device"]["reference"], "Device/dev1");
    assert_eq!(obs["code"]["text"], "heartrate");
    assert_eq!(
        obs["code"]["coding"][1],
        json!({"system": SERVICE_SYSTEM, "code": "heartrate", "display": "heartrate"})
    );
    assert_eq!(
        obs["effectivePeriod"],
        json!({"start": "2019-01-01T00:00:00Z", "end": "2019-01-01T00:59:59.9999999Z"})
    );
    let sd = &obs["valueSampledData"];
    assert_eq!(
        (
            sd["period"].clone(),
            sd["dimensions"].clone(),
            sd["origin"].clone()
        ),
        (
            json!(1000),
            json!(1),
            json!({"value": 0, "unit": "count/min"})
        )
    );
    let data = sd["data"].as_str().unwrap();
    assert_eq!(data.split(' ').count(), 3600);
    assert!(data.starts_with("E 60 E 62 E"), "{}", &data[..20]);
    assert_valid(&obs);

    // Merging the same data changes nothing.
    assert_eq!(
        set.observation_for_at(g, &ident(), Some(&obs), issued())
            .unwrap(),
        ObservationChange::Unchanged
    );
    // New point and a replaced point: merged, amended.
    let ms2 = vec![
        m("heartrate", "d1", "2019-01-01T00:00:03Z", &[("hr", "63")]),
        m("heartrate", "d1", "2019-01-01T00:00:04Z", &[("hr", "64")]),
    ];
    let g2 = &group(&ms2, &set).groups[0];
    let ObservationChange::Update(up) = set
        .observation_for_at(g2, &ident(), Some(&obs), issued())
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(up["status"], "amended");
    assert_eq!(up["id"], obs["id"]);
    assert!(up["valueSampledData"]["data"]
        .as_str()
        .unwrap()
        .starts_with("E 60 E 63 64 E"));
    // A different existing value type cannot be merged.
    let mut q = obs.clone();
    q.as_object_mut().unwrap().shift_remove("valueSampledData");
    q["valueQuantity"] = json!({"value": 1});
    let e = set
        .observation_for_at(g2, &ident(), Some(&q), issued())
        .unwrap_err();
    assert_eq!(e.kind(), "NotSupportedException");
}

#[test]
fn observation_components_quantity_string_concept() {
    let set = fhir_set(&fhir_collection(&[
        &input("data_CodeValueFhirTemplate_Quantity.json"),
        &input("data_CodeValueFhirTemplate_CodeableConceptAndStringComponent.json"),
    ]));
    let g = group(
        &[m(
            "bloodpressure",
            "d",
            "2019-01-01T00:00:00Z",
            &[("systolic", "120"), ("diastolic", "80.5")],
        )],
        &set,
    );
    let ObservationChange::Create(obs) = set
        .observation_for_at(&g.groups[0], &ident(), None, issued())
        .unwrap()
    else {
        panic!()
    };
    let comps = obs["component"].as_array().unwrap();
    assert_eq!(comps.len(), 2);
    assert_eq!(comps[0]["code"]["text"], "diastolic");
    assert_eq!(
        comps[0]["valueQuantity"],
        json!({"value": 80.5, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"})
    );
    assert_eq!(comps[1]["valueQuantity"]["value"].to_string(), "120");
    assert_eq!(
        obs["effectivePeriod"]["start"],
        obs["effectivePeriod"]["end"]
    );
    assert_valid(&obs);
    // Replace a component value on merge.
    let g2 = group(
        &[m(
            "bloodpressure",
            "d",
            "2019-01-01T00:00:00Z",
            &[("systolic", "121")],
        )],
        &set,
    );
    let ObservationChange::Update(up) = set
        .observation_for_at(&g2.groups[0], &ident(), Some(&obs), issued())
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        up["component"][1]["valueQuantity"]["value"].to_string(),
        "121"
    );
    assert_eq!(up["component"][0], obs["component"][0]);
    // Non-numeric quantity.
    let bad = group(
        &[m(
            "bloodpressure",
            "d",
            "2019-01-01T00:00:00Z",
            &[("systolic", "high")],
        )],
        &set,
    );
    let e = set
        .observation_for_at(&bad.groups[0], &ident(), None, issued())
        .unwrap_err();
    assert_eq!(e.kind(), "InvalidQuantityFhirValueException");

    let g = group(
        &[m(
            "alarmEvent",
            "d",
            "2019-01-01T00:00:00Z",
            &[("alarm", "1"), ("reason", "low battery")],
        )],
        &set,
    );
    let ObservationChange::Create(obs) = set
        .observation_for_at(&g.groups[0], &ident(), None, issued())
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(obs["valueCodeableConcept"]["text"], "Alarm!");
    assert_eq!(obs["component"][0]["valueString"], "low battery");
    assert_valid(&obs);
}

#[test]
fn identity_resolution_type_parses() {
    assert_eq!(
        "create".parse::<IdentityResolutionType>().unwrap(),
        IdentityResolutionType::Create
    );
    assert_eq!(
        "LookupWithEncounter"
            .parse::<IdentityResolutionType>()
            .unwrap(),
        IdentityResolutionType::LookupWithEncounter
    );
    assert_eq!(
        IdentityResolutionType::default(),
        IdentityResolutionType::Lookup
    );
    assert!("lookup-ish".parse::<IdentityResolutionType>().is_err());
    // Deterministic ids for Create mode: Patient sha256("_" + id).
    assert_eq!(resource_id("", "p1"), resource_id("", "p1"));
    assert_ne!(resource_id("", "p1"), resource_id("sys", "p1"));
}
