//! FHIR R4 resources for a NEWS2 score: a RiskAssessment per scoring window, and a Flag
//! (the banner on the patient) while the score calls for a response.
//!
//! Modelling (clinical.md, "FHIR R4 modelling"):
//! - `RiskAssessment.method` and `.code` = SNOMED 1104051000000101 (NEWS2 total), text
//!   "NEWS2"; `occurrencePeriod` = the scoring window; `basis` = the score Observation and
//!   the vital-sign Observations used.
//! - The score itself is a **contained Observation** (`#news2-score`): SNOMED
//!   1104051000000101, `valueQuantity` in `{score}`, one `component` per parameter score
//!   (SNOMED sub-score codes where clinical.md gives them, text otherwise), `derivedFrom`
//!   the vitals. It is contained so the assessment is one write; the server may extract it.
//! - `prediction[0].qualitativeRisk`: the HL7 `risk-probability` code, low → `low`,
//!   low-medium → `moderate` (it demands an urgent ward-based response, so it errs towards
//!   escalation), medium → `moderate`, high → `high`; plus the exact RCP band in Vigil's
//!   code system [`BAND_SYSTEM`] (`low`, `low-medium`, `medium`, `high`).
//!   `prediction[0].rationale` states the total and band in words.
//! - A partial score carries a `note` naming the missing parameters, and the rationale
//!   says the total is a lower bound.
//! - `Flag`: category `clinical`, `code` SNOMED NEWS2 with text such as
//!   "NEWS2 5 (medium risk)", the `flag-detail` extension → the RiskAssessment and the
//!   `flag-priority` extension (PH high, PM medium and low-medium).

use crate::time::format_rfc3339_ms;
use crate::{News2Result, RiskBand, SpO2Scale, Vital};
use serde_json::{json, Value};

/// SNOMED CT code of the NEWS2 total score.
pub const SNOMED_NEWS2: &str = "1104051000000101";
/// Vigil's code system for the exact RCP NEWS2 band.
pub const BAND_SYSTEM: &str = "urn:vigil:news2-risk-band";
const SNOMED: &str = "http://snomed.info/sct";
const SCORE_ID: &str = "news2-score";

/// `Flag.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlagStatus {
    /// The flag is shown.
    Active,
    /// No longer applies.
    Inactive,
    /// Raised by mistake.
    EnteredInError,
}

impl FlagStatus {
    /// The FHIR code.
    pub fn code(self) -> &'static str {
        match self {
            FlagStatus::Active => "active",
            FlagStatus::Inactive => "inactive",
            FlagStatus::EnteredInError => "entered-in-error",
        }
    }
}

/// Whether a score calls for a flag: medium or high band, or any single parameter 3.
pub fn should_flag(result: &News2Result) -> bool {
    matches!(result.band, RiskBand::Medium | RiskBand::High) || result.any_single_three
}

fn news2_concept(text: &str) -> Value {
    json!({
        "coding": [{
            "system": SNOMED,
            "code": SNOMED_NEWS2,
            "display": "Royal College of Physicians National Early Warning Score 2 (NEWS2)"
        }],
        "text": text
    })
}

/// The component code of a parameter's sub-score (SNOMED where clinical.md lists one).
fn component_code(vital: Vital, scale: Option<SpO2Scale>) -> Value {
    let (code, text) = match vital {
        Vital::RespiratoryRate => (Some("1104301000000104"), "NEWS2 respiration rate score"),
        Vital::SpO2 if scale == Some(SpO2Scale::Scale2) => (None, "NEWS2 SpO2 scale 2 score"),
        Vital::SpO2 => (Some("1104311000000102"), "NEWS2 SpO2 scale 1 score"),
        Vital::SupplementalOxygen => (Some("1104331000000105"), "NEWS2 air or oxygen score"),
        Vital::SystolicBp => (None, "NEWS2 systolic blood pressure score"),
        Vital::HeartRate => (Some("1104351000000103"), "NEWS2 pulse rate score"),
        Vital::Consciousness => (
            Some("1104441000000107"),
            "NEWS2 consciousness (ACVPU) score",
        ),
        Vital::Temperature => (Some("1104371000000107"), "NEWS2 temperature score"),
    };
    match code {
        Some(c) => json!({"coding": [{"system": SNOMED, "code": c}], "text": text}),
        None => json!({ "text": text }),
    }
}

fn score_quantity(n: u32) -> Value {
    json!({"value": n, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"})
}

fn band_text(result: &News2Result) -> String {
    let mut s = format!("NEWS2 {} ({} risk", result.total, result.band.label());
    if result.band == RiskBand::LowMedium {
        let threes: Vec<&str> = result
            .parameter_scores
            .iter()
            .filter(|&&(_, sc)| sc == 3)
            .map(|&(v, _)| v.label())
            .collect();
        s.push_str(&format!(": {} scored 3", threes.join(", ")));
    }
    if result.partial {
        s.push_str(&format!(", partial: {} missing", missing_list(result)));
    }
    s.push(')');
    s
}

fn missing_list(result: &News2Result) -> String {
    result
        .missing
        .iter()
        .map(|v| v.label())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A RiskAssessment recording a NEWS2 `result` for `patient_id` over the window
/// `[window_start_ms, window_end_ms]`, based on the Observations `basis`
/// (`"Observation/<id>"`). `id` sets `RiskAssessment.id` (e.g. for an update). The SpO2
/// sub-score is labelled Scale 1 unless `result` scored Scale 2 (see
/// [`risk_assessment_with_scale`]).
pub fn risk_assessment(
    patient_id: &str,
    window_start_ms: i64,
    window_end_ms: i64,
    result: &News2Result,
    basis: &[String],
    id: Option<&str>,
) -> Value {
    risk_assessment_with_scale(
        patient_id,
        window_start_ms,
        window_end_ms,
        result,
        basis,
        id,
        SpO2Scale::Scale1,
    )
}

/// [`risk_assessment`] with the SpO2 scale the score was computed on, so the SpO2
/// sub-score component names the right scale.
pub fn risk_assessment_with_scale(
    patient_id: &str,
    window_start_ms: i64,
    window_end_ms: i64,
    result: &News2Result,
    basis: &[String],
    id: Option<&str>,
    scale: SpO2Scale,
) -> Value {
    let subject = json!({ "reference": format!("Patient/{patient_id}") });
    let period = json!({
        "start": format_rfc3339_ms(window_start_ms),
        "end": format_rfc3339_ms(window_end_ms),
    });
    let components: Vec<Value> = result
        .parameter_scores
        .iter()
        .map(|&(v, s)| json!({"code": component_code(v, Some(scale)), "valueQuantity": score_quantity(s)}))
        .collect();
    let mut score_obs = json!({
        "resourceType": "Observation",
        "id": SCORE_ID,
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "survey",
            "display": "Survey"
        }]}],
        "code": news2_concept("NEWS2 total score"),
        "subject": subject.clone(),
        "effectivePeriod": period.clone(),
        "valueQuantity": score_quantity(result.total),
    });
    if !basis.is_empty() {
        score_obs["derivedFrom"] = basis.iter().map(|r| json!({ "reference": r })).collect();
    }
    if !components.is_empty() {
        score_obs["component"] = Value::Array(components);
    }
    let (hl7_code, hl7_display) = match result.band {
        RiskBand::Low => ("low", "Low likelihood"),
        RiskBand::LowMedium | RiskBand::Medium => ("moderate", "Moderate likelihood"),
        RiskBand::High => ("high", "High likelihood"),
    };
    let band_display = match result.band {
        RiskBand::Low => "Low",
        RiskBand::LowMedium => "Low-medium",
        RiskBand::Medium => "Medium",
        RiskBand::High => "High",
    };
    let mut rationale = band_text(result);
    if result.partial {
        rationale.push_str("; missing parameters are not scored, so the total is a lower bound");
    }
    let mut basis_refs = vec![json!({ "reference": format!("#{SCORE_ID}") })];
    basis_refs.extend(basis.iter().map(|r| json!({ "reference": r })));

    let mut ra = json!({ "resourceType": "RiskAssessment" });
    if let Some(id) = id {
        ra["id"] = json!(id);
    }
    ra["contained"] = json!([score_obs]);
    ra["status"] = json!("final");
    ra["method"] = news2_concept("NEWS2");
    ra["code"] = news2_concept("NEWS2 clinical risk");
    ra["subject"] = subject;
    ra["occurrencePeriod"] = period;
    ra["basis"] = Value::Array(basis_refs);
    ra["prediction"] = json!([{
        "outcome": { "text": "Acute clinical deterioration (NEWS2 clinical risk band)" },
        "qualitativeRisk": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/risk-probability",
                    "code": hl7_code,
                    "display": hl7_display
                },
                { "system": BAND_SYSTEM, "code": result.band.label(), "display": band_display }
            ],
            "text": band_display
        },
        "rationale": rationale
    }]);
    if result.partial {
        ra["note"] = json!([{
            "text": format!(
                "Partial NEWS2: not measured in this window: {}. Missing parameters are not scored.",
                missing_list(result)
            )
        }]);
    }
    ra
}

/// A Flag for `patient_id` showing a NEWS2 `result`, pointing at its RiskAssessment
/// (`risk_assessment_ref`, e.g. `"RiskAssessment/123"`) through the `flag-detail`
/// extension, from `period_start_ms`.
pub fn flag(
    patient_id: &str,
    result: &News2Result,
    risk_assessment_ref: &str,
    status: FlagStatus,
    period_start_ms: i64,
) -> Value {
    let priority = match result.band {
        RiskBand::High => ("PH", "High priority"),
        RiskBand::Medium | RiskBand::LowMedium => ("PM", "Medium priority"),
        RiskBand::Low => ("PL", "Low priority"),
    };
    json!({
        "resourceType": "Flag",
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/flag-detail",
                "valueReference": { "reference": risk_assessment_ref }
            },
            {
                "url": "http://hl7.org/fhir/StructureDefinition/flag-priority",
                "valueCodeableConcept": { "coding": [{
                    "system": "http://hl7.org/fhir/flag-priority-code",
                    "code": priority.0,
                    "display": priority.1
                }]}
            }
        ],
        "status": status.code(),
        "category": [{ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/flag-category",
            "code": "clinical",
            "display": "Clinical"
        }]}],
        "code": news2_concept(&band_text(result)),
        "subject": { "reference": format!("Patient/{patient_id}") },
        "period": { "start": format_rfc3339_ms(period_start_ms) }
    })
}

/// Close a flag: set `status` inactive and `period.end`. Does nothing (and returns false)
/// if `flag` is not a JSON object.
pub fn close_flag(flag: &mut Value, end_ms: i64) -> bool {
    if !flag.is_object() {
        return false;
    }
    flag["status"] = json!(FlagStatus::Inactive.code());
    if !flag["period"].is_object() {
        flag["period"] = json!({});
    }
    flag["period"]["end"] = json!(format_rfc3339_ms(end_ms));
    true
}
