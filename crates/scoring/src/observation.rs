//! From FHIR Observations to vital-sign readings, and from readings to a NEWS2 input.
//!
//! Recognised codes (LOINC, `http://loinc.org`), on the Observation's `code` with
//! `valueQuantity`, or on a `component`:
//!
//! | LOINC | vital | units accepted |
//! | --- | --- | --- |
//! | 8867-4 | heart rate | `/min` |
//! | 9279-1 | respiratory rate | `/min` |
//! | 2708-6, 59408-5 | SpO2 | `%` |
//! | 8480-6 (alone or in the 85354-9 panel) | systolic BP | `mm[Hg]` |
//! | 8310-5 | temperature | `Cel`, `[degF]` (converted) |
//! | 3151-8 | inhaled O2 flow → on oxygen if > 0 | `L/min` |
//!
//! Consciousness: SNOMED 1104441000000107 (ACVPU) with a `valueCodeableConcept` whose
//! code, display or text is one of `A`/`Alert`, `C`/`Confusion`/`New confusion`,
//! `V`/`Voice`, `P`/`Pain`, `U`/`Unresponsive` (case-insensitive).
//!
//! A quantity with a UCUM `code` other than the accepted ones is skipped (a saturation
//! given as a fraction must not score as 0.97%); one without a code is taken as given.
//! Only `final`, `amended` and `corrected` Observations count: preliminary, cancelled,
//! entered-in-error and unknown ones are ignored.

use crate::time::parse_fhir_datetime_ms;
use crate::{Acvpu, News2Input, SpO2Scale, Vital};
use serde_json::Value;

const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
/// SNOMED CT: ACVPU (consciousness level) observable.
pub const SNOMED_ACVPU: &str = "1104441000000107";
/// SNOMED CT 426896000 |Chronic hypercapnic respiratory failure|: marks NEWS2 Scale 2.
pub const SNOMED_CHRONIC_HYPERCAPNIC_RESPIRATORY_FAILURE: &str = "426896000";
/// ICD-10-CM respiratory failure *with hypercapnia* (acute, chronic, acute on chronic,
/// unspecified): also mark Scale 2.
pub const ICD10CM_HYPERCAPNIC: [&str; 4] = ["J96.02", "J96.12", "J96.22", "J96.92"];

/// One vital-sign value taken from an Observation.
#[derive(Debug, Clone, PartialEq)]
pub struct VitalReading {
    /// Which parameter.
    pub vital: Vital,
    /// The value in the chart's unit (°C, /min, %, mmHg); for consciousness
    /// [`Acvpu::code_value`], for oxygen 1.0 (on oxygen) or 0.0 (air).
    pub value: f64,
    /// When it was measured (effective time), epoch milliseconds.
    pub time_ms: i64,
    /// `"Observation/<id>"`, or empty when the Observation has no id.
    pub observation_ref: String,
}

fn has_code(concept: &Value, system: &str, codes: &[&str]) -> bool {
    concept
        .get("coding")
        .and_then(Value::as_array)
        .is_some_and(|codings| {
            codings.iter().any(|c| {
                c.get("system").and_then(Value::as_str) == Some(system)
                    && c.get("code")
                        .and_then(Value::as_str)
                        .is_some_and(|code| codes.contains(&code))
            })
        })
}

/// The value of a `valueQuantity` in the unit the vital is scored in.
fn quantity_value(vital: Vital, q: &Value) -> Option<f64> {
    let value = q.get("value")?.as_f64()?;
    if !value.is_finite() {
        return None;
    }
    let code = q.get("code").and_then(Value::as_str);
    let accepted: &[&str] = match vital {
        Vital::HeartRate | Vital::RespiratoryRate => &["/min", "{beats}/min", "{breaths}/min"],
        Vital::SpO2 => &["%"],
        Vital::SystolicBp => &["mm[Hg]"],
        Vital::Temperature => &["Cel", "[degF]"],
        Vital::SupplementalOxygen => &["L/min"],
        Vital::Consciousness => &[],
    };
    match code {
        Some("[degF]") if vital == Vital::Temperature => Some((value - 32.0) * 5.0 / 9.0),
        Some(c) if !accepted.contains(&c) => None,
        _ => Some(value),
    }
}

fn vital_for(concept: &Value) -> Option<Vital> {
    let table: [(&[&str], Vital); 6] = [
        (&["8867-4"], Vital::HeartRate),
        (&["9279-1"], Vital::RespiratoryRate),
        (&["2708-6", "59408-5"], Vital::SpO2),
        (&["8480-6"], Vital::SystolicBp),
        (&["8310-5"], Vital::Temperature),
        (&["3151-8"], Vital::SupplementalOxygen),
    ];
    table
        .iter()
        .find(|(codes, _)| has_code(concept, LOINC, codes))
        .map(|&(_, v)| v)
}

fn acvpu_of(concept: &Value) -> Option<Acvpu> {
    let mut words: Vec<&str> = Vec::new();
    if let Some(codings) = concept.get("coding").and_then(Value::as_array) {
        for c in codings {
            words.extend(c.get("code").and_then(Value::as_str));
            words.extend(c.get("display").and_then(Value::as_str));
        }
    }
    words.extend(concept.get("text").and_then(Value::as_str));
    words
        .iter()
        .find_map(|w| match w.trim().to_ascii_lowercase().as_str() {
            "a" | "alert" => Some(Acvpu::Alert),
            "c" | "confusion" | "new confusion" | "confused" => Some(Acvpu::NewConfusion),
            "v" | "voice" => Some(Acvpu::Voice),
            "p" | "pain" => Some(Acvpu::Pain),
            "u" | "unresponsive" => Some(Acvpu::Unresponsive),
            _ => None,
        })
}

fn reading_from(vital: Vital, element: &Value) -> Option<f64> {
    let v = quantity_value(vital, element.get("valueQuantity")?)?;
    if vital == Vital::SupplementalOxygen {
        Some(if v > 0.0 { 1.0 } else { 0.0 })
    } else {
        Some(v)
    }
}

/// When an Observation was measured: `effectiveDateTime`, `effectiveInstant`, or
/// `effectivePeriod.end` (its start if it has no end).
pub fn effective_time_ms(obs: &Value) -> Option<i64> {
    if let Some(s) = obs.get("effectiveDateTime").and_then(Value::as_str) {
        return parse_fhir_datetime_ms(s);
    }
    if let Some(s) = obs.get("effectiveInstant").and_then(Value::as_str) {
        return parse_fhir_datetime_ms(s);
    }
    let p = obs.get("effectivePeriod")?;
    let s = p
        .get("end")
        .or_else(|| p.get("start"))
        .and_then(Value::as_str)?;
    parse_fhir_datetime_ms(s)
}

/// The NEWS2-relevant readings of an Observation (see the module docs for the codes);
/// empty if it is not a usable vital-sign Observation.
pub fn vitals_from_observation(obs: &Value) -> Vec<VitalReading> {
    let mut out = Vec::new();
    if obs.get("resourceType").and_then(Value::as_str) != Some("Observation") {
        return out;
    }
    let status = obs.get("status").and_then(Value::as_str);
    if !matches!(status, Some("final" | "amended" | "corrected")) {
        return out;
    }
    let Some(time_ms) = effective_time_ms(obs) else {
        return out;
    };
    let observation_ref = obs
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(String::new, |id| format!("Observation/{id}"));
    let mut push = |vital: Vital, value: f64| {
        // One reading per vital per Observation (e.g. both SpO2 codes on one resource).
        if !out.iter().any(|r: &VitalReading| r.vital == vital) {
            out.push(VitalReading {
                vital,
                value,
                time_ms,
                observation_ref: observation_ref.clone(),
            });
        }
    };
    let code = obs.get("code").unwrap_or(&Value::Null);
    if let Some(vital) = vital_for(code) {
        if let Some(v) = reading_from(vital, obs) {
            push(vital, v);
        }
    } else if has_code(code, SNOMED, &[SNOMED_ACVPU]) {
        if let Some(level) = obs.get("valueCodeableConcept").and_then(acvpu_of) {
            push(Vital::Consciousness, level.code_value());
        }
    }
    if let Some(components) = obs.get("component").and_then(Value::as_array) {
        for c in components {
            let Some(vital) = c.get("code").and_then(vital_for) else {
                continue;
            };
            if let Some(v) = reading_from(vital, c) {
                push(vital, v);
            }
        }
    }
    out
}

/// Pick, for each vital, the latest reading in `[window_end_ms - window_ms,
/// window_end_ms]` (on equal times, the later in the slice). Returns the NEWS2 input
/// (Scale 1; set `scale` from [`spo2_scale_from_conditions`]) and the references of the
/// Observations used, deduplicated, in chart order — the RiskAssessment's `basis`.
pub fn latest_in_window(
    readings: &[VitalReading],
    window_end_ms: i64,
    window_ms: i64,
) -> (News2Input, Vec<String>) {
    let start = window_end_ms.saturating_sub(window_ms);
    let mut chosen: Vec<(Vital, &VitalReading)> = Vec::new();
    for r in readings {
        if r.time_ms < start || r.time_ms > window_end_ms || !r.value.is_finite() {
            continue;
        }
        match chosen.iter_mut().find(|(v, _)| *v == r.vital) {
            Some(slot) if r.time_ms >= slot.1.time_ms => slot.1 = r,
            Some(_) => {}
            None => chosen.push((r.vital, r)),
        }
    }
    let mut input = News2Input::default();
    let mut basis: Vec<String> = Vec::new();
    for vital in Vital::CHART_ORDER {
        let Some((_, r)) = chosen.iter().find(|(v, _)| *v == vital) else {
            continue;
        };
        let v = r.value;
        match vital {
            Vital::RespiratoryRate => input.respiratory_rate = Some(v),
            Vital::SpO2 => input.spo2 = Some(v),
            Vital::SupplementalOxygen => input.on_oxygen = Some(v > 0.0),
            Vital::SystolicBp => input.systolic_bp = Some(v),
            Vital::HeartRate => input.heart_rate = Some(v),
            Vital::Consciousness => input.consciousness = Acvpu::from_code_value(v),
            Vital::Temperature => input.temperature_c = Some(v),
        }
        if !r.observation_ref.is_empty() && !basis.contains(&r.observation_ref) {
            basis.push(r.observation_ref.clone());
        }
    }
    (input, basis)
}

/// Scale 2 if any Condition records hypercapnic respiratory failure (SNOMED 426896000 or
/// ICD-10-CM J96.x2) and is neither inactive/resolved nor refuted/entered in error.
pub fn spo2_scale_from_conditions(conditions: &[Value]) -> SpO2Scale {
    let applies = |c: &Value| {
        if c.get("resourceType").and_then(Value::as_str) != Some("Condition") {
            return false;
        }
        let status_code = |field: &str| {
            c.get(field)
                .and_then(|s| s.get("coding"))
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|x| x.get("code"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let Some(s) = status_code("clinicalStatus") {
            if !matches!(s.as_str(), "active" | "recurrence" | "relapse") {
                return false;
            }
        }
        if let Some(s) = status_code("verificationStatus") {
            if matches!(s.as_str(), "refuted" | "entered-in-error") {
                return false;
            }
        }
        let code = c.get("code").unwrap_or(&Value::Null);
        has_code(
            code,
            SNOMED,
            &[SNOMED_CHRONIC_HYPERCAPNIC_RESPIRATORY_FAILURE],
        ) || has_code(
            code,
            "http://hl7.org/fhir/sid/icd-10-cm",
            &ICD10CM_HYPERCAPNIC,
        )
    };
    if conditions.iter().any(applies) {
        SpO2Scale::Scale2
    } else {
        SpO2Scale::Scale1
    }
}
