//! NEWS2 against every band boundary of the RCP chart, the band rules, partial scoring,
//! Observation extraction for each code, window selection, and the FHIR builders
//! validated with `vigil_fhir::validate`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use vigil_scoring::observation::effective_time_ms;
use vigil_scoring::time::{format_rfc3339_ms, parse_fhir_datetime_ms};
use vigil_scoring::*;

/// Every band edge of a parameter: (value, expected score).
fn check(f: impl Fn(f64) -> u32, cases: &[(f64, u32)], what: &str) {
    for &(v, want) in cases {
        assert_eq!(f(v), want, "{what} {v}");
    }
}

#[test]
fn respiratory_rate_bands() {
    check(
        news2_respiratory_rate,
        &[
            (0.0, 3),
            (8.0, 3),
            (9.0, 1),
            (11.0, 1),
            (12.0, 0),
            (20.0, 0),
            (21.0, 2),
            (24.0, 2),
            (25.0, 3),
            (60.0, 3),
            // Half up to whole breaths.
            (8.49, 3),
            (8.5, 1),
            (20.49, 0),
            (20.5, 2),
            (24.5, 3),
        ],
        "RR",
    );
}

#[test]
fn spo2_scale_1_bands() {
    let f = |v| news2_spo2(v, SpO2Scale::Scale1, Some(false));
    check(
        f,
        &[
            (80.0, 3),
            (91.0, 3),
            (92.0, 2),
            (93.0, 2),
            (94.0, 1),
            (95.0, 1),
            (96.0, 0),
            (100.0, 0),
            (91.5, 2),
            (95.49, 1),
            (95.5, 0),
        ],
        "SpO2 scale 1",
    );
    // Scale 1 SpO2 does not depend on oxygen (oxygen scores separately).
    assert_eq!(news2_spo2(98.0, SpO2Scale::Scale1, Some(true)), 0);
}

#[test]
fn spo2_scale_2_bands() {
    let air = |v| news2_spo2(v, SpO2Scale::Scale2, Some(false));
    let o2 = |v| news2_spo2(v, SpO2Scale::Scale2, Some(true));
    let low = [
        (83.0, 3),
        (84.0, 2),
        (85.0, 2),
        (86.0, 1),
        (87.0, 1),
        (88.0, 0),
        (92.0, 0),
    ];
    check(air, &low, "scale 2 air");
    check(o2, &low, "scale 2 oxygen");
    check(
        air,
        &[(93.0, 0), (95.0, 0), (97.0, 0), (100.0, 0)],
        "scale 2 air high",
    );
    check(
        o2,
        &[
            (93.0, 1),
            (94.0, 1),
            (95.0, 2),
            (96.0, 2),
            (97.0, 3),
            (100.0, 3),
        ],
        "scale 2 oxygen high",
    );
    // Oxygen unknown: scored as on air (lower bound), oxygen reported missing.
    assert_eq!(news2_spo2(97.0, SpO2Scale::Scale2, None), 0);
}

#[test]
fn systolic_bp_bands() {
    check(
        news2_systolic_bp,
        &[
            (60.0, 3),
            (90.0, 3),
            (91.0, 2),
            (100.0, 2),
            (101.0, 1),
            (110.0, 1),
            (111.0, 0),
            (219.0, 0),
            (220.0, 3),
            (250.0, 3),
            (110.5, 0),
            (219.5, 3),
        ],
        "SBP",
    );
}

#[test]
fn heart_rate_bands() {
    check(
        news2_heart_rate,
        &[
            (30.0, 3),
            (40.0, 3),
            (41.0, 1),
            (50.0, 1),
            (51.0, 0),
            (90.0, 0),
            (91.0, 1),
            (110.0, 1),
            (111.0, 2),
            (130.0, 2),
            (131.0, 3),
            (180.0, 3),
            (40.5, 1),
            (90.4, 0),
            (130.5, 3),
        ],
        "HR",
    );
}

#[test]
fn temperature_bands() {
    check(
        news2_temperature,
        &[
            (34.0, 3),
            (35.0, 3),
            (35.1, 1),
            (36.0, 1),
            (36.1, 0),
            (38.0, 0),
            (38.1, 1),
            (39.0, 1),
            (39.1, 2),
            (41.0, 2),
            // Half up to one decimal, robust to binary representation.
            (35.04, 3),
            (35.05, 1),
            (36.05, 0),
            (38.04, 0),
            (38.05, 1),
            (39.05, 2),
        ],
        "temperature",
    );
}

#[test]
fn oxygen_and_consciousness() {
    assert_eq!(news2_oxygen(true), 2);
    assert_eq!(news2_oxygen(false), 0);
    assert_eq!(news2_consciousness(Acvpu::Alert), 0);
    for c in [
        Acvpu::NewConfusion,
        Acvpu::Voice,
        Acvpu::Pain,
        Acvpu::Unresponsive,
    ] {
        assert_eq!(news2_consciousness(c), 3);
        assert_eq!(Acvpu::from_code_value(c.code_value()), Some(c));
    }
}

fn full(rr: f64, spo2: f64, o2: bool, sbp: f64, hr: f64, c: Acvpu, t: f64) -> News2Input {
    News2Input {
        respiratory_rate: Some(rr),
        spo2: Some(spo2),
        on_oxygen: Some(o2),
        systolic_bp: Some(sbp),
        heart_rate: Some(hr),
        temperature_c: Some(t),
        consciousness: Some(c),
        scale: SpO2Scale::Scale1,
    }
}

#[test]
fn totals_and_bands() {
    let healthy = news2(&full(16.0, 97.0, false, 125.0, 72.0, Acvpu::Alert, 36.8));
    assert_eq!(healthy.total, 0);
    assert_eq!(healthy.band, RiskBand::Low);
    assert!(!healthy.partial && healthy.missing.is_empty());
    assert_eq!(healthy.parameter_scores.len(), 7);
    assert!(!should_flag(&healthy));

    // 1 (RR 10) + 1 (SpO2 95) + 1 (HR 95) + 1 (T 38.5) = 4: low.
    let four = news2(&full(10.0, 95.0, false, 120.0, 95.0, Acvpu::Alert, 38.5));
    assert_eq!((four.total, four.band), (4, RiskBand::Low));
    assert!(!should_flag(&four));

    // A single 3 with a total under 5: low-medium, flagged.
    let single = news2(&full(16.0, 97.0, false, 120.0, 72.0, Acvpu::Voice, 36.8));
    assert_eq!((single.total, single.band), (3, RiskBand::LowMedium));
    assert!(single.any_single_three && should_flag(&single));

    // Oxygen (+2) and SpO2 93 (2) and HR 105 (1) = 5: medium.
    let five = news2(&full(16.0, 93.0, true, 120.0, 105.0, Acvpu::Alert, 37.0));
    assert_eq!((five.total, five.band), (5, RiskBand::Medium));
    assert_eq!(five.score_of(Vital::SupplementalOxygen), Some(2));
    assert!(should_flag(&five));

    // A single 3 with total 5–6 is medium, not low-medium.
    let six = news2(&full(16.0, 97.0, false, 120.0, 72.0, Acvpu::Pain, 39.5));
    assert_eq!((six.total, six.band), (5, RiskBand::Medium));

    // 2 + 3 + 2 = 7: high.
    let seven = news2(&full(22.0, 90.0, true, 120.0, 80.0, Acvpu::Alert, 37.0));
    assert_eq!((seven.total, seven.band), (7, RiskBand::High));

    // Maximum: 3+3+2+3+3+3+2 = 19 (the 0–20 range's reachable top).
    let worst = news2(&full(
        30.0,
        85.0,
        true,
        80.0,
        140.0,
        Acvpu::Unresponsive,
        40.0,
    ));
    assert_eq!(worst.total, 19);
    assert_eq!(worst.band, RiskBand::High);
}

#[test]
fn scale_2_with_oxygen_in_total() {
    let mut input = full(18.0, 97.0, true, 130.0, 80.0, Acvpu::Alert, 37.0);
    input.scale = SpO2Scale::Scale2;
    let r = news2(&input);
    // SpO2 97 on O2 on Scale 2 = 3, oxygen = 2.
    assert_eq!(r.score_of(Vital::SpO2), Some(3));
    assert_eq!(r.total, 5);
    input.on_oxygen = Some(false);
    input.spo2 = Some(90.0);
    let r = news2(&input);
    assert_eq!(r.total, 0, "88–92% on air is this patient's target");
}

#[test]
fn missing_parameters_are_partial_not_zero() {
    let input = News2Input {
        spo2: Some(92.0),
        heart_rate: Some(112.0),
        temperature_c: Some(38.3),
        systolic_bp: Some(118.0),
        ..News2Input::default()
    };
    let r = news2(&input);
    assert!(r.partial);
    assert_eq!(
        r.missing,
        vec![
            Vital::RespiratoryRate,
            Vital::SupplementalOxygen,
            Vital::Consciousness
        ]
    );
    assert_eq!(r.total, 2 + 2 + 1);
    assert_eq!(r.parameter_scores.len(), 4);
    assert!(r.score_of(Vital::RespiratoryRate).is_none());
    // Non-finite values are missing too.
    let r = news2(&News2Input {
        heart_rate: Some(f64::NAN),
        ..News2Input::default()
    });
    assert_eq!(r.missing.len(), 7);
    assert_eq!(r.total, 0);
    assert!(r.partial);
}

#[test]
fn mews_and_qsofa() {
    let m = mews(&MewsInput {
        systolic_bp: Some(75.0),
        heart_rate: Some(115.0),
        respiratory_rate: Some(22.0),
        temperature_c: Some(38.5),
        consciousness: Some(Acvpu::Voice),
    });
    assert_eq!(m.total, 2 + 2 + 2 + 2 + 1);
    assert!(m.trigger);
    let m = mews(&MewsInput {
        systolic_bp: Some(101.0),
        heart_rate: Some(100.0),
        respiratory_rate: Some(14.0),
        temperature_c: Some(35.0),
        consciousness: Some(Acvpu::Alert),
    });
    assert_eq!(m.total, 0);
    assert!(m.missing.is_empty());
    assert_eq!(
        mews(&MewsInput {
            temperature_c: Some(34.9),
            ..MewsInput::default()
        })
        .total,
        2
    );
    let q = qsofa(Some(22.0), Some(100.0), Some(Acvpu::Alert));
    assert_eq!((q.score, q.high_risk), (2, true));
    let q = qsofa(Some(21.0), Some(101.0), None);
    assert_eq!((q.score, q.high_risk), (0, false));
    assert_eq!(q.missing, vec![Vital::Consciousness]);
}

fn obs(id: &str, code: &str, value: Value, unit: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-03-01T08:00:00Z",
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    })
}

fn one(o: &Value) -> (Vital, f64) {
    let r = vitals_from_observation(o);
    assert_eq!(r.len(), 1, "{o}");
    (r[0].vital, r[0].value)
}

#[test]
fn observation_codes() {
    let t0 = parse_fhir_datetime_ms("2026-03-01T08:00:00Z").unwrap();
    assert_eq!(
        one(&obs("a", "8867-4", json!(72), "/min")),
        (Vital::HeartRate, 72.0)
    );
    assert_eq!(
        one(&obs("b", "9279-1", json!(18), "/min")),
        (Vital::RespiratoryRate, 18.0)
    );
    assert_eq!(
        one(&obs("c", "2708-6", json!(96), "%")),
        (Vital::SpO2, 96.0)
    );
    assert_eq!(
        one(&obs("d", "59408-5", json!(95), "%")),
        (Vital::SpO2, 95.0)
    );
    assert_eq!(
        one(&obs("e", "8310-5", json!(37.2), "Cel")),
        (Vital::Temperature, 37.2)
    );
    let (v, f) = one(&obs("f", "8310-5", json!(100.4), "[degF]"));
    assert_eq!(v, Vital::Temperature);
    assert!((f - 38.0).abs() < 1e-9);
    assert_eq!(
        one(&obs("g", "3151-8", json!(2), "L/min")),
        (Vital::SupplementalOxygen, 1.0)
    );
    assert_eq!(
        one(&obs("h", "3151-8", json!(0), "L/min")),
        (Vital::SupplementalOxygen, 0.0)
    );
    let r = vitals_from_observation(&obs("a", "8867-4", json!(72), "/min"));
    assert_eq!(r[0].observation_ref, "Observation/a");
    assert_eq!(r[0].time_ms, t0);

    // BP panel: systolic from its component.
    let bp = json!({
        "resourceType": "Observation", "id": "bp", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "effectivePeriod": {"start": "2026-03-01T07:59:00Z", "end": "2026-03-01T08:00:00Z"},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": {"value": 121, "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
             "valueQuantity": {"value": 79, "code": "mm[Hg]"}}
        ]
    });
    let r = vitals_from_observation(&bp);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].vital, r[0].value, r[0].time_ms),
        (Vital::SystolicBp, 121.0, t0)
    );

    // SpO2 with both codes and an O2-flow component (pulse-oximetry profile shape).
    let mut ox = obs("ox", "2708-6", json!(94), "%");
    ox["code"]["coding"]
        .as_array_mut()
        .unwrap()
        .push(json!({"system": "http://loinc.org", "code": "59408-5"}));
    ox["component"] = json!([{
        "code": {"coding": [{"system": "http://loinc.org", "code": "3151-8"}]},
        "valueQuantity": {"value": 2, "code": "L/min"}
    }]);
    let r = vitals_from_observation(&ox);
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].vital, r[0].value), (Vital::SpO2, 94.0));
    assert_eq!((r[1].vital, r[1].value), (Vital::SupplementalOxygen, 1.0));

    // ACVPU.
    let acvpu = json!({
        "resourceType": "Observation", "id": "c1", "status": "final",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1104441000000107"}]},
        "effectiveInstant": "2026-03-01T08:00:00.000Z",
        "valueCodeableConcept": {"text": "New confusion"}
    });
    let r = vitals_from_observation(&acvpu);
    assert_eq!(r[0].vital, Vital::Consciousness);
    assert_eq!(
        Acvpu::from_code_value(r[0].value),
        Some(Acvpu::NewConfusion)
    );
}

#[test]
fn observations_that_do_not_count() {
    for status in [
        "preliminary",
        "cancelled",
        "entered-in-error",
        "registered",
        "unknown",
    ] {
        let mut o = obs("a", "8867-4", json!(72), "/min");
        o["status"] = json!(status);
        assert!(vitals_from_observation(&o).is_empty(), "{status}");
    }
    for status in ["amended", "corrected"] {
        let mut o = obs("a", "8867-4", json!(72), "/min");
        o["status"] = json!(status);
        assert_eq!(vitals_from_observation(&o).len(), 1, "{status}");
    }
    // Wrong unit (a fraction for SpO2), unknown code, no time, not an Observation.
    assert!(vitals_from_observation(&obs("a", "2708-6", json!(0.97), "1")).is_empty());
    assert!(vitals_from_observation(&obs("a", "29463-7", json!(80), "kg")).is_empty());
    let mut o = obs("a", "8867-4", json!(72), "/min");
    o.as_object_mut().unwrap().remove("effectiveDateTime");
    assert!(vitals_from_observation(&o).is_empty());
    assert!(effective_time_ms(&o).is_none());
    assert!(vitals_from_observation(&json!({"resourceType": "Patient"})).is_empty());
    assert!(vitals_from_observation(&json!("not an object")).is_empty());
    let mut o = obs("a", "8867-4", json!(72), "/min");
    o["valueQuantity"]["value"] = json!("72");
    assert!(vitals_from_observation(&o).is_empty());
}

fn reading(vital: Vital, value: f64, minute: i64, id: &str) -> VitalReading {
    VitalReading {
        vital,
        value,
        time_ms: minute * 60_000,
        observation_ref: format!("Observation/{id}"),
    }
}

#[test]
fn window_selection_takes_latest_in_window() {
    let readings = vec![
        reading(Vital::HeartRate, 70.0, 10, "hr-old"),
        reading(Vital::HeartRate, 120.0, 50, "hr-new"),
        reading(Vital::HeartRate, 150.0, 70, "hr-future"),
        reading(Vital::SpO2, 91.0, 5, "spo2-too-old"),
        reading(Vital::Temperature, 38.4, 40, "bp-and-t"),
        reading(Vital::SystolicBp, 105.0, 40, "bp-and-t"),
        reading(Vital::SupplementalOxygen, 1.0, 30, "o2"),
    ];
    // Window [20 min, 60 min].
    let (input, basis) = latest_in_window(&readings, 60 * 60_000, 40 * 60_000);
    assert_eq!(input.heart_rate, Some(120.0));
    assert_eq!(input.spo2, None);
    assert_eq!(input.on_oxygen, Some(true));
    assert_eq!(input.temperature_c, Some(38.4));
    assert_eq!(input.systolic_bp, Some(105.0));
    assert_eq!(input.scale, SpO2Scale::Scale1);
    assert_eq!(
        basis,
        [
            "Observation/o2",
            "Observation/bp-and-t",
            "Observation/hr-new"
        ]
    );
    let r = news2(&input);
    assert!(r.missing.contains(&Vital::SpO2));
    assert_eq!(r.total, 2 + 1 + 2 + 1);
    // Window edges are inclusive.
    let (input, _) = latest_in_window(&readings, 50 * 60_000, 0);
    assert_eq!(input.heart_rate, Some(120.0));
}

fn condition(system: &str, code: &str, clinical: &str) -> Value {
    json!({
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]},
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/p1"}
    })
}

#[test]
fn scale_from_conditions() {
    let sct = "http://snomed.info/sct";
    assert_eq!(spo2_scale_from_conditions(&[]), SpO2Scale::Scale1);
    assert_eq!(
        spo2_scale_from_conditions(&[condition(sct, "426896000", "active")]),
        SpO2Scale::Scale2
    );
    assert_eq!(
        spo2_scale_from_conditions(&[condition(
            "http://hl7.org/fhir/sid/icd-10-cm",
            "J96.12",
            "active"
        )]),
        SpO2Scale::Scale2
    );
    assert_eq!(
        spo2_scale_from_conditions(&[condition(sct, "426896000", "resolved")]),
        SpO2Scale::Scale1
    );
    assert_eq!(
        spo2_scale_from_conditions(&[condition(sct, "38341003", "active")]),
        SpO2Scale::Scale1
    );
    let mut refuted = condition(sct, "426896000", "active");
    refuted["verificationStatus"] = json!({"coding": [{"code": "refuted"}]});
    assert_eq!(spo2_scale_from_conditions(&[refuted]), SpO2Scale::Scale1);
}

fn assert_valid(resource: &Value) {
    let outcome = vigil_fhir::validate::validate(resource);
    let errors: Vec<String> = outcome.errors().map(|i| format!("{i:?}")).collect();
    assert!(errors.is_empty(), "{resource:#}\n{errors:#?}");
}

#[test]
fn risk_assessment_is_valid_and_complete() {
    let result = news2(&full(22.0, 90.0, true, 120.0, 80.0, Acvpu::Alert, 37.0));
    let basis = vec!["Observation/1".to_string(), "Observation/2".to_string()];
    let start = parse_fhir_datetime_ms("2026-03-01T07:00:00Z").unwrap();
    let end = start + 3_600_000;
    let ra = risk_assessment("p1", start, end, &result, &basis, Some("ra-1"));
    assert_valid(&ra);
    assert_eq!(ra["id"], "ra-1");
    assert_eq!(ra["status"], "final");
    assert_eq!(ra["method"]["coding"][0]["code"], "1104051000000101");
    assert_eq!(ra["subject"]["reference"], "Patient/p1");
    assert_eq!(ra["occurrencePeriod"]["start"], "2026-03-01T07:00:00Z");
    assert_eq!(ra["occurrencePeriod"]["end"], "2026-03-01T08:00:00Z");
    assert_eq!(ra["basis"][0]["reference"], "#news2-score");
    assert_eq!(ra["basis"][2]["reference"], "Observation/2");
    let risk = &ra["prediction"][0]["qualitativeRisk"];
    assert_eq!(risk["coding"][0]["code"], "high");
    assert_eq!(risk["coding"][1]["code"], "high");
    let score = &ra["contained"][0];
    assert_eq!(score["valueQuantity"]["value"], json!(7));
    assert_eq!(score["valueQuantity"]["code"], "{score}");
    assert_eq!(score["component"].as_array().unwrap().len(), 7);
    assert!(ra.get("note").is_none());
    // The validator does reject a broken one (so the checks above mean something).
    let mut broken = ra.clone();
    broken["status"] = json!("done");
    assert!(vigil_fhir::validate::validate(&broken).has_errors());

    // Partial, low-medium, no id, no basis.
    let partial = news2(&News2Input {
        consciousness: Some(Acvpu::Voice),
        heart_rate: Some(80.0),
        ..News2Input::default()
    });
    assert_eq!(partial.band, RiskBand::LowMedium);
    let ra = risk_assessment("p1", start, end, &partial, &[], None);
    assert_valid(&ra);
    assert!(ra.get("id").is_none());
    assert_eq!(
        ra["prediction"][0]["qualitativeRisk"]["coding"][0]["code"],
        "moderate"
    );
    assert_eq!(
        ra["prediction"][0]["qualitativeRisk"]["coding"][1]["code"],
        "low-medium"
    );
    let note = ra["note"][0]["text"].as_str().unwrap();
    assert!(
        note.contains("respiratory rate") && note.contains("temperature"),
        "{note}"
    );
    assert!(ra["prediction"][0]["rationale"]
        .as_str()
        .unwrap()
        .contains("lower bound"));

    // Scale 2 labels its SpO2 component.
    let mut input = full(18.0, 97.0, true, 130.0, 80.0, Acvpu::Alert, 37.0);
    input.scale = SpO2Scale::Scale2;
    let r = news2(&input);
    let ra = risk_assessment_with_scale("p1", start, end, &r, &basis, None, SpO2Scale::Scale2);
    assert_valid(&ra);
    assert!(ra.to_string().contains("SpO2 scale 2 score"));
}

#[test]
fn flag_is_valid() {
    let result = news2(&full(16.0, 93.0, true, 120.0, 105.0, Acvpu::Alert, 37.0));
    let start = parse_fhir_datetime_ms("2026-03-01T08:00:00Z").unwrap();
    let mut f = flag(
        "p1",
        &result,
        "RiskAssessment/ra-1",
        FlagStatus::Active,
        start,
    );
    assert_valid(&f);
    assert_eq!(f["status"], "active");
    assert_eq!(f["code"]["text"], "NEWS2 5 (medium risk)");
    assert_eq!(f["category"][0]["coding"][0]["code"], "clinical");
    assert_eq!(
        f["extension"][0]["valueReference"]["reference"],
        "RiskAssessment/ra-1"
    );
    assert_eq!(f["period"]["start"], "2026-03-01T08:00:00Z");
    assert!(close_flag(&mut f, start + 60_000));
    assert_valid(&f);
    assert_eq!(f["status"], "inactive");
    assert_eq!(f["period"]["end"], "2026-03-01T08:01:00Z");
    assert!(!close_flag(&mut json!([1]), 0));

    let partial = news2(&News2Input {
        consciousness: Some(Acvpu::Pain),
        ..News2Input::default()
    });
    let f = flag(
        "p1",
        &partial,
        "RiskAssessment/x",
        FlagStatus::EnteredInError,
        start,
    );
    assert_valid(&f);
    let text = f["code"]["text"].as_str().unwrap();
    assert!(
        text.starts_with("NEWS2 3 (low-medium risk: consciousness scored 3, partial:"),
        "{text}"
    );
}

#[test]
fn time_format() {
    assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_rfc3339_ms(1_500), "1970-01-01T00:00:01.500Z");
}
