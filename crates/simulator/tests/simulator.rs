//! The simulator: determinism, payload shapes and ranges, cadences, cohort make-up, and
//! clinical realism checked with vigil-scoring — deteriorating patients reach NEWS2 ≥ 7,
//! stable ones mostly stay low, the COPD patient scores on Scale 2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use vigil_scoring::time::parse_fhir_datetime_ms;
use vigil_scoring::{
    latest_in_window, news2, spo2_scale_from_conditions, RiskBand, SpO2Scale, Vital, VitalReading,
};
use vigil_simulator::{Cohort, DeviceKind, DeviceReading, Scenario, SimConfig, SimPatient};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn num(body: &Value, field: &str) -> f64 {
    body[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {body}"))
}

/// What normalization would make of a payload, as scoring readings.
fn vitals(readings: &[DeviceReading]) -> Vec<VitalReading> {
    let mut out = Vec::new();
    for (i, r) in readings.iter().enumerate() {
        let mut push = |vital, value| {
            out.push(VitalReading {
                vital,
                value,
                time_ms: r.time_ms,
                observation_ref: format!("Observation/{i}"),
            })
        };
        let b = &r.body;
        match r.device_kind {
            DeviceKind::PulseOximeter => {
                push(Vital::SpO2, num(b, "spo2"));
                push(Vital::HeartRate, num(b, "pulseRate"));
                let flow = b.get("oxygenFlow").and_then(Value::as_f64).unwrap_or(0.0);
                push(
                    Vital::SupplementalOxygen,
                    if flow > 0.0 { 1.0 } else { 0.0 },
                );
            }
            DeviceKind::BpCuff => {
                push(Vital::SystolicBp, num(b, "systolic"));
                push(Vital::HeartRate, num(b, "pulseRate"));
            }
            DeviceKind::Thermometer => push(Vital::Temperature, num(b, "temperature")),
            DeviceKind::Wearable => {
                push(Vital::HeartRate, num(b, "heartRate"));
                push(Vital::RespiratoryRate, num(b, "respiratoryRate"));
            }
            DeviceKind::Scale | DeviceKind::Glucometer => {}
        }
    }
    out
}

fn score_at(
    cohort: &Cohort,
    p: &SimPatient,
    t: i64,
    scale: SpO2Scale,
) -> vigil_scoring::News2Result {
    let window = 6 * HOUR;
    let readings = cohort.readings_between(p, t - window, t + 1);
    let (mut input, _) = latest_in_window(&vitals(&readings), t, window);
    input.scale = scale;
    news2(&input)
}

#[test]
fn same_seed_same_cohort_and_readings() {
    let a = Cohort::generate(42, 30);
    let b = Cohort::generate(42, 30);
    assert_eq!(a, b);
    let start = a.config.start_ms;
    for p in &a.patients {
        assert_eq!(
            a.readings_between(p, start, start + DAY),
            b.readings_between(&b.patients[p.index], start, start + DAY)
        );
    }
    let c = Cohort::generate(43, 30);
    assert_ne!(a.patients, c.patients);
}

#[test]
fn readings_do_not_depend_on_query_boundaries() {
    let cohort = Cohort::generate(7, 5);
    let p = &cohort.patients[0];
    let t0 = cohort.config.start_ms + 17 * MIN + 3_000;
    let whole = cohort.readings_between(p, t0, t0 + 12 * HOUR);
    let mut pieces = Vec::new();
    let mut t = t0;
    for step in [1_000, 7 * MIN, HOUR + 123, 5 * HOUR, 12 * HOUR] {
        let end = (t + step).min(t0 + 12 * HOUR);
        pieces.extend(cohort.readings_between(p, t, end));
        t = end;
    }
    assert_eq!(t, t0 + 12 * HOUR);
    assert_eq!(whole, pieces);
    assert!(whole.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
    assert!(cohort.readings_between(p, t0, t0).is_empty());
    assert!(cohort.readings_between(p, t0, t0 - 1).is_empty());
}

#[test]
fn payloads_have_the_documented_shape_and_plausible_values() {
    let cohort = Cohort::generate(1, 40);
    let start = cohort.config.start_ms;
    let mut seen = std::collections::HashSet::new();
    for p in &cohort.patients {
        for r in cohort.readings_between(p, start, start + 2 * DAY) {
            let b = &r.body;
            let obj = b.as_object().unwrap();
            assert_eq!(b["type"], r.device_kind.type_name());
            let at = b["measuredAt"].as_str().unwrap();
            assert!(at.ends_with('Z') && at.len() == 20, "{at}");
            assert_eq!(parse_fhir_datetime_ms(at), Some(r.time_ms));
            assert_eq!(p.devices[r.device_index].kind, r.device_kind);
            seen.insert(r.device_kind);
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            match r.device_kind {
                DeviceKind::PulseOximeter => {
                    let spo2 = b["spo2"].as_i64().unwrap();
                    assert!((70..=100).contains(&spo2));
                    assert!((30..=220).contains(&b["pulseRate"].as_i64().unwrap()));
                    let on_o2 = p.oxygen_flow > 0.0;
                    assert_eq!(b["oxygenFlow"].as_i64(), Some(if on_o2 { 2 } else { 0 }));
                }
                DeviceKind::BpCuff => {
                    assert_eq!(
                        keys,
                        ["type", "systolic", "diastolic", "pulseRate", "measuredAt"]
                    );
                    let (s, d) = (
                        b["systolic"].as_i64().unwrap(),
                        b["diastolic"].as_i64().unwrap(),
                    );
                    assert!((60..=250).contains(&s) && d < s, "{b}");
                }
                DeviceKind::Thermometer => {
                    assert_eq!(keys, ["type", "temperature", "measuredAt"]);
                    let t = num(b, "temperature");
                    assert!((33.0..=42.5).contains(&t));
                    // One decimal, as written.
                    let text = b["temperature"].to_string();
                    assert!(
                        text.split('.').nth(1).is_none_or(|d| d.len() == 1),
                        "{text}"
                    );
                }
                DeviceKind::Scale => {
                    assert_eq!(keys, ["type", "weight", "measuredAt"]);
                    assert!((40.0..=120.0).contains(&num(b, "weight")));
                }
                DeviceKind::Glucometer => {
                    assert_eq!(keys, ["type", "glucose", "measuredAt"]);
                    assert!((40..=500).contains(&b["glucose"].as_i64().unwrap()));
                }
                DeviceKind::Wearable => {
                    assert_eq!(keys, ["type", "heartRate", "respiratoryRate", "measuredAt"]);
                    assert!((6..=50).contains(&b["respiratoryRate"].as_i64().unwrap()));
                }
            }
        }
    }
    assert_eq!(seen.len(), 6, "every device kind appears in 40 patients");
}

#[test]
fn cadences_follow_the_configuration() {
    let cohort = Cohort::generate(3, 1);
    let p = &cohort.patients[0];
    let start = cohort.config.start_ms;
    let day = cohort.readings_between(p, start, start + DAY);
    let count = |k| day.iter().filter(|r| r.device_kind == k).count();
    assert_eq!(count(DeviceKind::PulseOximeter), 288);
    assert_eq!(count(DeviceKind::BpCuff), 4);
    assert_eq!(count(DeviceKind::Thermometer), 4);

    // The demo's fast cadence: every device within a minute of simulated time.
    let fast = Cohort::generate_with(
        3,
        1,
        SimConfig {
            oximeter_interval_ms: 10_000,
            bp_interval_ms: 60_000,
            thermometer_interval_ms: 60_000,
            ..SimConfig::default()
        },
    );
    let minute = fast.readings_between(&fast.patients[0], start, start + MIN);
    let c = |k| minute.iter().filter(|r| r.device_kind == k).count();
    assert_eq!(c(DeviceKind::PulseOximeter), 6);
    assert_eq!(c(DeviceKind::BpCuff), 1);
    assert_eq!(c(DeviceKind::Thermometer), 1);
}

#[test]
fn cohort_make_up() {
    let cohort = Cohort::generate(11, 100);
    let mut sepsis = 0;
    let mut copd = 0;
    for p in &cohort.patients {
        let kinds: Vec<DeviceKind> = p.devices.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds[..3],
            [
                DeviceKind::BpCuff,
                DeviceKind::PulseOximeter,
                DeviceKind::Thermometer
            ]
        );
        assert!(p.devices.iter().enumerate().all(|(i, d)| d.index == i));
        assert!(matches!(p.gender, "female" | "male"));
        let birth = parse_fhir_datetime_ms(&p.birth_date).unwrap();
        let age_years = (cohort.config.start_ms - birth) as f64 / (365.25 * DAY as f64);
        assert!((44.9..=90.1).contains(&age_years), "{age_years}");
        match p.scenario {
            Scenario::Sepsis { onset_ms, .. } => {
                sepsis += 1;
                assert!(onset_ms > cohort.config.start_ms);
                assert!(kinds.contains(&DeviceKind::Wearable));
            }
            Scenario::CopdScale2 => copd += 1,
            Scenario::Stable => {}
        }
    }
    assert_eq!(sepsis, 8);
    assert_eq!(copd, 1);
    let with = |k| {
        cohort
            .patients
            .iter()
            .filter(|p| p.devices.iter().any(|d| d.kind == k))
            .count()
    };
    assert!((20..=60).contains(&with(DeviceKind::Scale)));
    assert!((10..=50).contains(&with(DeviceKind::Glucometer)));
    assert!((25..=60).contains(&with(DeviceKind::Wearable)));
    // Small cohorts still show a deterioration.
    let small = Cohort::generate(5, 4);
    assert_eq!(
        small
            .patients
            .iter()
            .filter(|p| matches!(p.scenario, Scenario::Sepsis { .. }))
            .count(),
        1
    );
}

#[test]
fn deteriorating_patients_reach_news2_high() {
    let cohort = Cohort::generate(2026, 50);
    let mut checked = 0;
    for p in &cohort.patients {
        let Scenario::Sepsis {
            onset_ms,
            duration_ms,
        } = p.scenario
        else {
            continue;
        };
        checked += 1;
        let before = score_at(&cohort, p, onset_ms, SpO2Scale::Scale1);
        assert!(
            before.total <= 4,
            "{} before onset: {before:?}",
            p.identifier
        );
        // Once at its worst, with every device having reported since.
        let t = onset_ms + duration_ms + 6 * HOUR;
        let after = score_at(&cohort, p, t, SpO2Scale::Scale1);
        assert!(after.total >= 7, "{} at worst: {after:?}", p.identifier);
        assert_eq!(after.band, RiskBand::High);
        assert_eq!(after.missing, vec![Vital::Consciousness]);
    }
    assert_eq!(checked, 4);
}

#[test]
fn stable_patients_mostly_stay_low() {
    let cohort = Cohort::generate(99, 40);
    let (mut low, mut total) = (0, 0);
    for p in cohort
        .patients
        .iter()
        .filter(|p| p.scenario == Scenario::Stable)
    {
        for h in (6..72).step_by(3) {
            let r = score_at(
                &cohort,
                p,
                cohort.config.start_ms + h * HOUR,
                SpO2Scale::Scale1,
            );
            total += 1;
            if r.band == RiskBand::Low {
                low += 1;
            }
            assert!(r.total < 7, "{} stable but high: {r:?}", p.identifier);
        }
    }
    assert!(low * 100 >= total * 95, "only {low} of {total} low");
}

#[test]
fn copd_patient_is_scored_on_scale_2() {
    let cohort = Cohort::generate(8, 20);
    let copd: Vec<&SimPatient> = cohort
        .patients
        .iter()
        .filter(|p| p.scenario == Scenario::CopdScale2)
        .collect();
    assert_eq!(copd.len(), 1);
    let p = copd[0];
    let condition = cohort.condition_resource(p, "Patient/123").unwrap();
    assert_eq!(
        spo2_scale_from_conditions(std::slice::from_ref(&condition)),
        SpO2Scale::Scale2
    );
    assert_eq!(condition["subject"]["reference"], "Patient/123");
    let outcome = vigil_fhir::validate::validate(&condition);
    assert!(!outcome.has_errors(), "{:?}", outcome.to_json());
    for other in cohort.patients.iter().filter(|o| o.index != p.index) {
        assert!(cohort.condition_resource(other, "Patient/1").is_none());
    }
    // SpO2 sits in the 88–92% target; on Scale 2 with oxygen (+2) the patient is not high.
    let start = cohort.config.start_ms;
    let ox: Vec<i64> = cohort
        .readings_between(p, start, start + DAY)
        .iter()
        .filter(|r| r.device_kind == DeviceKind::PulseOximeter)
        .map(|r| r.body["spo2"].as_i64().unwrap())
        .collect();
    let in_target = ox.iter().filter(|s| (88..=92).contains(*s)).count();
    assert!(
        in_target * 100 >= ox.len() * 85,
        "{in_target} of {}",
        ox.len()
    );
    let s2 = score_at(&cohort, p, start + 12 * HOUR, SpO2Scale::Scale2);
    let s1 = score_at(&cohort, p, start + 12 * HOUR, SpO2Scale::Scale1);
    assert!(s2.total < 7, "{s2:?}");
    assert_eq!(s2.score_of(Vital::SupplementalOxygen), Some(2));
    assert!(s1.total > s2.total, "Scale 1 would over-score this patient");
}

#[test]
fn patient_resources_are_valid_fhir() {
    let cohort = Cohort::generate(5, 10);
    for p in &cohort.patients {
        let r = cohort.patient_resource(p);
        let outcome = vigil_fhir::validate::validate(&r);
        assert!(!outcome.has_errors(), "{r}: {:?}", outcome.to_json());
        assert_eq!(r["identifier"][0]["system"], "urn:vigil:demo");
        assert_eq!(r["identifier"][0]["value"], p.identifier);
        assert_eq!(r["name"][0]["family"], p.family);
        assert_eq!(r["birthDate"], p.birth_date);
    }
}
