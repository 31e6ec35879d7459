//! Which Observations are vital signs the monitor shows and scores, and their values.
//!
//! The read model keeps one row per (Observation, vital); blood pressure is one vital
//! with the systolic value and the diastolic as `value2`, because that is how it is
//! charted and how NEWS2 reads it (systolic only).

use crate::db::VitalPoint;
use serde_json::Value;

/// A vital the monitor knows: read-model key, LOINC code, label and unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VitalKind {
    /// Read-model key (stable; used in URLs and the dashboard).
    pub key: &'static str,
    /// LOINC codes that carry it (any of them).
    pub loinc: &'static [&'static str],
    /// Label for people.
    pub label: &'static str,
    /// UCUM unit the value is shown in.
    pub unit: &'static str,
}

/// Every vital, in display order.
pub const VITALS: &[VitalKind] = &[
    VitalKind {
        key: "heart-rate",
        loinc: &["8867-4"],
        label: "Heart rate",
        unit: "/min",
    },
    VitalKind {
        key: "respiratory-rate",
        loinc: &["9279-1"],
        label: "Respiratory rate",
        unit: "/min",
    },
    VitalKind {
        key: "spo2",
        loinc: &["59408-5", "2708-6"],
        label: "SpO\u{2082}",
        unit: "%",
    },
    VitalKind {
        key: "blood-pressure",
        loinc: &["85354-9"],
        label: "Blood pressure",
        unit: "mm[Hg]",
    },
    VitalKind {
        key: "temperature",
        loinc: &["8310-5"],
        label: "Temperature",
        unit: "Cel",
    },
    VitalKind {
        key: "oxygen-flow",
        loinc: &["3151-8"],
        label: "Supplemental O\u{2082}",
        unit: "L/min",
    },
    VitalKind {
        key: "weight",
        loinc: &["29463-7"],
        label: "Body weight",
        unit: "kg",
    },
    VitalKind {
        key: "glucose",
        loinc: &["2339-0"],
        label: "Glucose",
        unit: "mg/dL",
    },
];

/// The vital with this key.
pub fn vital(key: &str) -> Option<&'static VitalKind> {
    VITALS.iter().find(|v| v.key == key)
}

fn loinc_codes(concept: &Value) -> impl Iterator<Item = &str> {
    concept["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["system"].as_str() == Some("http://loinc.org"))
        .filter_map(|c| c["code"].as_str())
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    }
}

fn quantity_value(q: &Value, unit: &str) -> Option<f64> {
    let value = number(&q["value"])?;
    let code = q["code"]
        .as_str()
        .or_else(|| q["unit"].as_str())
        .unwrap_or(unit);
    match (code, unit) {
        (a, b) if a == b => Some(value),
        ("[degF]", "Cel") => Some((value - 32.0) * 5.0 / 9.0),
        ("[lb_av]", "kg") => Some(value * 0.453_592_37),
        ("mmol/L", "mg/dL") => Some(value * 18.0),
        _ => None,
    }
}

/// The time an Observation applies to: effectiveDateTime, effectiveInstant or the end
/// of effectivePeriod (the reading's latest moment).
pub fn effective_ms(obs: &Value) -> Option<i64> {
    let text = obs["effectiveDateTime"]
        .as_str()
        .or_else(|| obs["effectiveInstant"].as_str())
        .or_else(|| obs["effectivePeriod"]["end"].as_str())
        .or_else(|| obs["effectivePeriod"]["start"].as_str())?;
    crate::time::parse_rfc3339(text)
}

/// The vital values in an Observation (none if it is not a usable vital sign).
pub fn vital_points(patient_id: &str, obs: &Value) -> Vec<VitalPoint> {
    let status = obs["status"].as_str().unwrap_or("");
    if !matches!(status, "final" | "amended" | "corrected" | "preliminary") {
        return Vec::new();
    }
    let (Some(id), Some(t_ms)) = (obs["id"].as_str(), effective_ms(obs)) else {
        return Vec::new();
    };
    let observation_ref = format!("Observation/{id}");
    let codes: Vec<&str> = loinc_codes(&obs["code"]).collect();
    let mut out = Vec::new();
    for kind in VITALS {
        if !kind.loinc.iter().any(|c| codes.contains(c)) {
            continue;
        }
        let (value, value2) = if kind.key == "blood-pressure" {
            let component = |code: &str| {
                obs["component"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| loinc_codes(&c["code"]).any(|x| x == code))
                    .and_then(|c| quantity_value(&c["valueQuantity"], "mm[Hg]"))
            };
            match component("8480-6") {
                Some(sys) => (sys, component("8462-4")),
                None => continue,
            }
        } else {
            match quantity_value(&obs["valueQuantity"], kind.unit) {
                Some(v) => (v, None),
                None => continue,
            }
        };
        out.push(VitalPoint {
            patient_id: patient_id.to_string(),
            vital: kind.key.to_string(),
            t_ms,
            value,
            value2,
            unit: kind.unit.to_string(),
            observation_ref: observation_ref.clone(),
        });
        // One Observation is one vital (SpO2 carries two codes for the same value).
        break;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_blood_pressure_and_converts_units() {
        let bp = json!({"resourceType":"Observation","id":"bp1","status":"final",
            "code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},
            "effectiveDateTime":"2026-01-01T10:00:00Z",
            "component":[
              {"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":128,"code":"mm[Hg]"}},
              {"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":82,"code":"mm[Hg]"}}]});
        let p = vital_points("p1", &bp);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].vital.as_str(), p[0].value, p[0].value2),
            ("blood-pressure", 128.0, Some(82.0))
        );
        let t = json!({"resourceType":"Observation","id":"t1","status":"final",
            "code":{"coding":[{"system":"http://loinc.org","code":"8310-5"}]},
            "effectiveDateTime":"2026-01-01T10:00:00Z","valueQuantity":{"value":100.4,"code":"[degF]"}});
        let p = vital_points("p1", &t);
        assert!((p[0].value - 38.0).abs() < 1e-9);
        let cancelled = json!({"resourceType":"Observation","id":"t2","status":"entered-in-error",
            "code":{"coding":[{"system":"http://loinc.org","code":"8310-5"}]},
            "effectiveDateTime":"2026-01-01T10:00:00Z","valueQuantity":{"value":39,"code":"Cel"}});
        assert!(vital_points("p1", &cancelled).is_empty());
    }
}
