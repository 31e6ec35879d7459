//! Error kinds of the pipeline, classified as the reference classifies them (ErrorType
//! and severity, for the errors metric), and the policy for messages that fail.

use std::time::Duration;

/// What the pipeline does with a message that cannot be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Record it in the `dead-letter` topic and go on (the default).
    #[default]
    DeadLetter,
    /// Retry it with backoff and never move past it (the reference's `Retry` policy):
    /// for deployments where losing or reordering a reading is worse than stalling.
    /// Only a fix (data, templates, FHIR resources) or a restart with another policy
    /// moves the stream on.
    Block,
}

impl std::str::FromStr for ErrorPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dead-letter" | "deadletter" => Ok(ErrorPolicy::DeadLetter),
            "block" => Ok(ErrorPolicy::Block),
            _ => Err(format!("unknown error policy '{s}' (dead-letter or block)")),
        }
    }
}

/// The delay before retry `attempt` (1-based) of a blocked message: `initial` doubled
/// per attempt, at most `max` (the reference: 2^n s capped at 30 s).
pub fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    initial.saturating_mul(factor).min(max)
}

/// Processing stage of an error (the reference's `Operation` dimension).
pub const STAGE_NORMALIZATION: &str = "normalization";
/// FHIR conversion: grouping, identity, Observations.
pub const STAGE_FHIR_CONVERSION: &str = "fhir-conversion";
/// Loading templates.
pub const STAGE_TEMPLATES: &str = "templates";
/// The pipeline's own infrastructure (store, log).
pub const STAGE_PIPELINE: &str = "pipeline";

/// `(ErrorType, severity, stage)` of an error kind. Kinds are the reference's exception
/// names, plus Vigil's own: `DeviceMismatch` (the message names a device other than the
/// one that sent it), `InvalidFhirResource` (the store refused the Observation) and
/// `TemplateNotFound` (no device template matched; the reference drops such a message
/// silently, Vigil counts it as dropped and dead-letters it so it can be found).
pub fn classify(kind: &str) -> (&'static str, &'static str, &'static str) {
    const NB: &str = "non-blocking";
    const B: &str = "blocking";
    match kind {
        "InvalidTemplateException" => ("DeviceTemplateError", B, STAGE_TEMPLATES),
        "TemplateExpressionException" => ("DeviceTemplateError", B, STAGE_NORMALIZATION),
        "IncompatibleDataException" | "InvalidDataFormatException" | "TemplateNotFound" => {
            ("DeviceMessageError", NB, STAGE_NORMALIZATION)
        }
        "CorrelationIdNotDefinedException" => ("DeviceMessageError", B, STAGE_FHIR_CONVERSION),
        "TemplateNotFoundException" => ("GeneralError", NB, STAGE_FHIR_CONVERSION),
        "FhirDataMappingException" => ("FHIRConversionError", B, STAGE_FHIR_CONVERSION),
        "MeasurementProcessingException" => ("FHIRConversionError", NB, STAGE_FHIR_CONVERSION),
        "FhirResourceNotFoundException"
        | "ResourceIdentityNotDefinedException"
        | "PatientDeviceMismatchException"
        | "MultipleResourceFoundException"
        | "InvalidQuantityFhirValueException"
        | "NotSupportedException"
        | "DeviceMismatch"
        | "InvalidFhirResource" => ("FHIRResourceError", NB, STAGE_FHIR_CONVERSION),
        "UnhandledException" => ("GeneralError", B, STAGE_PIPELINE),
        _ => ("GeneralError", NB, STAGE_FHIR_CONVERSION),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parses_and_backoff_doubles_to_the_cap() {
        assert_eq!("Block".parse::<ErrorPolicy>(), Ok(ErrorPolicy::Block));
        assert_eq!(
            "dead-letter".parse::<ErrorPolicy>(),
            Ok(ErrorPolicy::DeadLetter)
        );
        assert!("retry".parse::<ErrorPolicy>().is_err());
        let s = Duration::from_secs;
        let delays: Vec<u64> = (1..=7).map(|n| backoff(s(1), s(30), n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(s(1), s(30), 1000), s(30));
    }

    #[test]
    fn kinds_are_classified() {
        assert_eq!(
            classify("IncompatibleDataException"),
            ("DeviceMessageError", "non-blocking", "normalization")
        );
        assert_eq!(
            classify("MultipleResourceFoundException").0,
            "FHIRResourceError"
        );
        assert_eq!(classify("TemplateExpressionException").1, "blocking");
    }
}
