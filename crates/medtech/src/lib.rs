//! MedTech-compatible (Azure MedTech service / IoMT FHIR Connector) normalization:
//! device templates turn device messages into measurements, FHIR templates turn grouped
//! measurements into FHIR R4 Observations. Pure logic: no IO, no async.

mod device;
mod error;
mod jmes;
mod jsonpath;
mod sjson;
mod time;

pub use device::{
    envelope, DeviceTemplate, DeviceTemplateKind, DeviceTemplateSet, Expression,
    ExpressionLanguage, Measurement, NormalizeError, ValueExpression,
};
pub use error::{TemplateError, TemplateErrors};
pub use jsonpath::{JsonPath, JsonPathError};
pub use time::Instant;
mod fhir;
pub use fhir::{
    check_mappings, decode_sampled_data, encode_sampled_data, group, observation_id,
    observation_identifier, resource_id, CodeValueFhirTemplate, FhirCategory, FhirCode,
    FhirComponent, FhirMappingError, FhirTemplateSet, FhirValue, FhirValueType, Grouping, Identity,
    IdentityResolutionType, MeasurementGroup, ObservationChange, PeriodInterval,
    RejectedMeasurement, SERVICE_SYSTEM,
};
mod defaults;
pub use defaults::{default_device_templates, default_fhir_templates};
