//! FHIR templates (`CollectionFhir` of `CodeValueFhir`), grouping of measurements and
//! building/merging of Observations.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::device::{normalize_type_name, Measurement};
use crate::error::{Errs, TemplateErrors};
use crate::sjson::{self, Node, Obj, V};
use crate::time::{Instant, TICKS_PER_DAY, TICKS_PER_HOUR, TICKS_PER_MS};

/// The coding system the reference adds to every Observation code and identifier.
pub const SERVICE_SYSTEM: &str = "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/";

/// Most SampledData slots one Observation may carry (a Daily group at 1 s is 86,400).
const MAX_SLOTS: i64 = 1_000_000;

/// How measurements are grouped into one Observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum PeriodInterval {
    /// `-1`: one Observation per correlation id.
    CorrelationId,
    /// `0` (default): one Observation per timestamp.
    Single,
    /// `60`: one per UTC hour.
    Hourly,
    /// `1440`: one per UTC day.
    Daily,
}

/// How the device and patient of a measurement are found in the FHIR store (configured
/// outside the templates in the reference: `ResourceIdentity:ResourceIdentityServiceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum IdentityResolutionType {
    /// Find the Device by identifier, the Patient from `Device.patient` (the default).
    #[default]
    Lookup,
    /// As `Lookup`, and an encounter id is mandatory.
    LookupWithEncounter,
    /// Look up, creating the Patient and Device (deterministic ids) when missing.
    Create,
}

impl std::str::FromStr for IdentityResolutionType {
    type Err = String;
    /// Case-insensitive: `Lookup`, `LookupWithEncounter`, `Create`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lookup" => Ok(IdentityResolutionType::Lookup),
            "lookupwithencounter" => Ok(IdentityResolutionType::LookupWithEncounter),
            "create" => Ok(IdentityResolutionType::Create),
            _ => Err(format!(
                "unknown identity resolution type '{s}' (Lookup, LookupWithEncounter or Create)"
            )),
        }
    }
}

/// A coding in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirCode {
    /// The code (required).
    pub code: String,
    /// The code system.
    pub system: Option<String>,
    /// Display text.
    pub display: Option<String>,
}

/// A category (CodeableConcept) in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirCategory {
    /// Text.
    pub text: Option<String>,
    /// Codings.
    pub codes: Vec<FhirCode>,
}

/// The FHIR type a measured value is written as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FhirValueType {
    /// Every value of the group as one `SampledData` stream.
    SampledData {
        /// Milliseconds between slots.
        default_period_ms: i64,
        /// Unit of the origin.
        unit: Option<String>,
    },
    /// One decimal value.
    Quantity {
        /// Unit text.
        unit: Option<String>,
        /// UCUM (or other) code.
        code: Option<String>,
        /// Unit system.
        system: Option<String>,
    },
    /// One string value.
    String,
    /// A fixed concept (the measured value only signals the event).
    CodeableConcept {
        /// Text.
        text: Option<String>,
        /// Codings.
        codes: Vec<FhirCode>,
    },
}

/// A value mapping: which measurement property, written as what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirValue {
    /// The measurement property name.
    pub value_name: String,
    /// The FHIR representation.
    pub value_type: FhirValueType,
}

/// An Observation component mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirComponent {
    /// Component codes.
    pub codes: Vec<FhirCode>,
    /// Component value.
    pub value: FhirValue,
}

/// One `CodeValueFhir` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeValueFhirTemplate {
    /// Measurement type it maps (case-insensitive).
    pub type_name: String,
    /// The configured period interval.
    pub period_interval: PeriodInterval,
    /// Categories.
    pub category: Vec<FhirCategory>,
    /// Observation codes.
    pub codes: Vec<FhirCode>,
    /// The main value.
    pub value: Option<FhirValue>,
    /// Components.
    pub components: Vec<FhirComponent>,
}

impl CodeValueFhirTemplate {
    fn has_sampled_data(&self) -> bool {
        self.value
            .iter()
            .chain(self.components.iter().map(|c| &c.value))
            .any(|v| matches!(v.value_type, FhirValueType::SampledData { .. }))
    }

    /// The grouping actually applied. The documented behaviour is that `periodInterval` only
    /// concerns SampledData, so templates without SampledData group per timestamp (`Single`);
    /// the reference applies it anyway and then fails on groups with several Quantity values.
    pub fn effective_period(&self) -> PeriodInterval {
        if self.has_sampled_data() {
            self.period_interval
        } else {
            PeriodInterval::Single
        }
    }
}

/// A parsed `CollectionFhir` template set.
#[derive(Debug, Clone, Default)]
pub struct FhirTemplateSet {
    /// Templates in collection order.
    pub templates: Vec<CodeValueFhirTemplate>,
    by_type: HashMap<String, usize>,
}

/// Why measurements could not become an Observation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirMappingError {
    /// No CodeValueFhir template for the measurement type.
    #[error("no FHIR template for measurement type '{type_name}'")]
    TemplateNotFound {
        /// The measurement type.
        type_name: String,
    },
    /// A CorrelationId-grouped template got a measurement without correlation id.
    #[error("measurement of type '{type_name}' from device '{device_id}' has no correlation id, which its FHIR template's periodInterval requires")]
    CorrelationIdNotDefined {
        /// The measurement type.
        type_name: String,
        /// The device.
        device_id: String,
    },
    /// A measurement's timestamp cannot be read.
    #[error("measurement of type '{type_name}' has an invalid occurrence time '{value}'")]
    InvalidMeasurement {
        /// The measurement type.
        type_name: String,
        /// The bad value.
        value: String,
    },
    /// A Quantity needs exactly one decimal value.
    #[error("type '{type_name}', value '{value_name}': {message}")]
    InvalidQuantityValue {
        /// The measurement type.
        type_name: String,
        /// The property.
        value_name: String,
        /// Why.
        message: String,
    },
    /// A value cannot be written (non-numeric SampledData point, several String values, too
    /// many SampledData slots).
    #[error("type '{type_name}', value '{value_name}': {message}")]
    DataMapping {
        /// The measurement type.
        type_name: String,
        /// The property.
        value_name: String,
        /// Why.
        message: String,
    },
    /// The existing Observation cannot be merged (different value type, several dimensions,
    /// not an Observation).
    #[error("cannot merge into the existing Observation: {message}")]
    NotSupported {
        /// Why.
        message: String,
    },
}

impl FhirMappingError {
    /// Stable name for metrics and logs: the reference's exception name.
    pub fn kind(&self) -> &'static str {
        match self {
            FhirMappingError::TemplateNotFound { .. } => "TemplateNotFoundException",
            FhirMappingError::CorrelationIdNotDefined { .. } => "CorrelationIdNotDefinedException",
            FhirMappingError::InvalidMeasurement { .. } => "MeasurementProcessingException",
            FhirMappingError::InvalidQuantityValue { .. } => "InvalidQuantityFhirValueException",
            FhirMappingError::DataMapping { .. } => "FhirDataMappingException",
            FhirMappingError::NotSupported { .. } => "NotSupportedException",
        }
    }
}

/// Measurements of one type/device/patient/encounter/correlation id within one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementGroup {
    /// Measurement type (as in the measurements).
    pub type_name: String,
    /// Device id from the measurements (a business identifier, not a FHIR id).
    pub device_id: String,
    /// Patient id from the measurements.
    pub patient_id: Option<String>,
    /// Encounter id from the measurements.
    pub encounter_id: Option<String>,
    /// Correlation id from the measurements.
    pub correlation_id: Option<String>,
    /// The grouping applied (the template's effective period interval).
    pub period: PeriodInterval,
    /// Start of the group's period (inclusive).
    pub start: Instant,
    /// End of the group's period (inclusive).
    pub end: Instant,
    /// Values per property name, by time. On equal timestamps the later measurement (in
    /// input order) wins.
    pub values: BTreeMap<String, BTreeMap<Instant, String>>,
    /// Measurements that went into the group.
    pub measurement_count: usize,
}

/// A measurement that could not be grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedMeasurement {
    /// Index in the input slice.
    pub index: usize,
    /// Why.
    pub error: FhirMappingError,
}

/// Result of [`group`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grouping {
    /// Groups in order of first appearance.
    pub groups: Vec<MeasurementGroup>,
    /// Measurements that could not be grouped.
    pub rejected: Vec<RejectedMeasurement>,
}

/// FHIR logical ids of what an Observation refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `Patient/{patient_id}`.
    pub patient_id: String,
    /// `Device/{device_id}`.
    pub device_id: String,
    /// `Encounter/{id}`, when resolved.
    pub encounter_id: Option<String>,
}

/// What to write for a group.
#[derive(Debug, Clone, PartialEq)]
pub enum ObservationChange {
    /// No Observation existed: create this one (PUT to its id).
    Create(Value),
    /// The existing Observation merged with the group; status `amended`.
    Update(Value),
    /// The group adds nothing to the existing Observation: no write.
    Unchanged,
}

/// Lowercase hex SHA-256 of `"{system}_{value}"`: the reference's deterministic resource id
/// (Observation: identifier system/value; Patient: `("", patientId)`; Device:
/// `(defaultDeviceIdentifierSystem or "", deviceId)`). 64 characters, a valid FHIR id.
pub fn resource_id(system: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(system.as_bytes());
    h.update(b"_");
    h.update(value.as_bytes());
    hex(&h.finalize())
}

/// Lowercase hex (a table lookup: `write!` per byte costs more than the hash itself).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The Observation identifier `(system, value)` for a group:
/// `{patientId}.{deviceId}.{typeName}.{start}.{end}` (or `.{correlationId}`).
pub fn observation_identifier(group: &MeasurementGroup, identity: &Identity) -> (String, String) {
    let segment = match (&group.correlation_id, group.period) {
        (Some(c), PeriodInterval::CorrelationId) => c.clone(),
        _ => format!("{}.{}", group.start.segment(), group.end.segment()),
    };
    (
        SERVICE_SYSTEM.to_string(),
        format!(
            "{}.{}.{}.{}",
            identity.patient_id, identity.device_id, group.type_name, segment
        ),
    )
}

/// The Observation id for a group: [`resource_id`] of its identifier.
pub fn observation_id(group: &MeasurementGroup, identity: &Identity) -> String {
    let (system, value) = observation_identifier(group, identity);
    resource_id(&system, &value)
}

impl FhirTemplateSet {
    /// Parses a `CollectionFhir` template text, reporting every problem at once (unknown
    /// fields, missing required fields, unknown value types and period intervals, duplicate
    /// type names, and templates that cannot work).
    pub fn parse(json: &str) -> Result<FhirTemplateSet, TemplateErrors> {
        let root = sjson::parse(json).map_err(|e| TemplateErrors { errors: vec![e] })?;
        let mut errs = Errs::default();
        let mut set = FhirTemplateSet::default();
        if let Some(mut obj) = Obj::new(&root, "$", &mut errs) {
            let ty = obj.string("templateType", true, &mut errs);
            let tmpl = obj.get("template");
            obj.finish(&mut errs);
            match ty {
                Some(t) if normalize_type_name(&t) == "collectionfhir" => match tmpl {
                    Some(Node {
                        v: V::Arr(items), ..
                    }) => {
                        let mut seen: HashMap<String, usize> = HashMap::new();
                        for (i, item) in items.iter().enumerate() {
                            let path = format!("$.template[{i}]");
                            let Some(t) = parse_item(item, &path, &mut errs) else {
                                continue;
                            };
                            let key = t.type_name.to_lowercase();
                            if let Some(first) = seen.get(&key) {
                                errs.push(
                                    item,
                                    &format!("{path}.template.typeName"),
                                    "typeName",
                                    format!(
                                        "duplicate typeName '{}' (also template {first})",
                                        t.type_name
                                    ),
                                );
                                continue;
                            }
                            seen.insert(key.clone(), i);
                            set.by_type.insert(key, set.templates.len());
                            set.templates.push(t);
                        }
                    }
                    Some(n) => errs.push(
                        n,
                        "$.template",
                        "template",
                        format!(
                            "'template' must be an array of templates, found {}",
                            n.kind()
                        ),
                    ),
                    None => errs.push(
                        &root,
                        "$",
                        "template",
                        "required field 'template' is missing",
                    ),
                },
                Some(t) => errs.push(
                    &root,
                    "$.templateType",
                    "templateType",
                    format!("No match found for template type '{t}' (expected CollectionFhir)"),
                ),
                None => {}
            }
        }
        if errs.0.is_empty() {
            Ok(set)
        } else {
            Err(TemplateErrors { errors: errs.0 })
        }
    }

    /// The template for a measurement type (case-insensitive).
    pub fn template(&self, type_name: &str) -> Option<&CodeValueFhirTemplate> {
        self.templates.get(self.index_of(type_name)?)
    }

    fn index_of(&self, type_name: &str) -> Option<usize> {
        // Exact (lower-case) names avoid an allocation on the hot path.
        match self.by_type.get(type_name) {
            Some(i) => Some(*i),
            None => self.by_type.get(&type_name.to_lowercase()).copied(),
        }
    }

    /// Builds the Observation for a group: a new one, or `existing` merged with the group
    /// (effectivePeriod widened, SampledData merged, other values and category replaced,
    /// status `amended` only if something changed). `issued` is the current time.
    pub fn observation_for(
        &self,
        group: &MeasurementGroup,
        identity: &Identity,
        existing: Option<&Value>,
    ) -> Result<ObservationChange, FhirMappingError> {
        self.observation_for_at(group, identity, existing, now())
    }

    /// [`Self::observation_for`] with an explicit `issued` time.
    pub fn observation_for_at(
        &self,
        group: &MeasurementGroup,
        identity: &Identity,
        existing: Option<&Value>,
        issued: Instant,
    ) -> Result<ObservationChange, FhirMappingError> {
        let t =
            self.template(&group.type_name)
                .ok_or_else(|| FhirMappingError::TemplateNotFound {
                    type_name: group.type_name.clone(),
                })?;
        match existing {
            None => Ok(ObservationChange::Create(create(
                t, group, identity, issued,
            )?)),
            Some(e) => merge(t, group, e, issued),
        }
    }
}

fn now() -> Instant {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Instant(i64::try_from(d.as_nanos() / 100).unwrap_or(i64::MAX))
}

fn parse_item(node: &Node, path: &str, errs: &mut Errs) -> Option<CodeValueFhirTemplate> {
    let mut obj = Obj::new(node, path, errs)?;
    let ty = obj.string("templateType", true, errs);
    let inner = obj.get("template");
    obj.finish(errs);
    let ty = ty?;
    if normalize_type_name(&ty) != "codevaluefhir" {
        errs.push(
            node,
            &format!("{path}.templateType"),
            "templateType",
            format!("No match found for template type '{ty}' (expected CodeValueFhir)"),
        );
        return None;
    }
    let Some(inner) = inner else {
        errs.push(
            node,
            path,
            "template",
            "required field 'template' is missing",
        );
        return None;
    };
    parse_code_value(inner, &format!("{path}.template"), errs)
}

fn parse_codes(
    o: &mut Obj<'_>,
    name: &str,
    required: bool,
    errs: &mut Errs,
) -> Option<Vec<FhirCode>> {
    let Some(n) = o.get(name) else {
        if required {
            o.missing(name, errs);
            return None;
        }
        return Some(Vec::new());
    };
    let path = o.field_path(name);
    let V::Arr(items) = &n.v else {
        errs.push(
            n,
            &path,
            name,
            format!("'{name}' must be an array, found {}", n.kind()),
        );
        return None;
    };
    let before = errs.0.len();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(mut c) = Obj::new(item, &format!("{path}[{i}]"), errs) else {
            continue;
        };
        let code = c.non_blank("code", true, errs);
        let system = c.string("system", false, errs).filter(|s| !s.is_empty());
        let display = c.string("display", false, errs).filter(|s| !s.is_empty());
        c.finish(errs);
        if let Some(code) = code {
            out.push(FhirCode {
                code,
                system,
                display,
            });
        }
    }
    (errs.0.len() == before).then_some(out)
}

fn int_field(o: &mut Obj<'_>, name: &str, errs: &mut Errs) -> Option<Option<i64>> {
    match o.get(name) {
        None => Some(None),
        Some(Node { v: V::Num(t), .. }) if t.parse::<i64>().is_ok() => Some(t.parse().ok()),
        Some(n) => {
            errs.push(
                n,
                &o.field_path(name),
                name,
                format!("'{name}' must be an integer, found {}", n.kind()),
            );
            None
        }
    }
}

fn parse_value(n: &Node, path: &str, errs: &mut Errs) -> Option<FhirValue> {
    let before = errs.0.len();
    let mut o = Obj::new(n, path, errs)?;
    let value_name = o.non_blank("valueName", true, errs);
    let value_type = o.string("valueType", true, errs);
    let vt = match value_type
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => None,
        Some("sampleddata") => {
            let period = int_field(&mut o, "defaultPeriod", errs);
            let unit = o.string("unit", false, errs).filter(|s| !s.is_empty());
            match period {
                Some(Some(p)) if p > 0 => Some(FhirValueType::SampledData {
                    default_period_ms: p,
                    unit,
                }),
                Some(Some(p)) => {
                    errs.push(
                        n,
                        &o.field_path("defaultPeriod"),
                        "defaultPeriod",
                        format!(
                            "'defaultPeriod' must be a positive number of milliseconds, found {p}"
                        ),
                    );
                    None
                }
                Some(None) => {
                    o.missing("defaultPeriod", errs);
                    None
                }
                None => None,
            }
        }
        Some("quantity") => {
            let unit = o.string("unit", false, errs).filter(|s| !s.is_empty());
            let code = o.string("code", false, errs).filter(|s| !s.is_empty());
            let system = o.string("system", false, errs).filter(|s| !s.is_empty());
            Some(FhirValueType::Quantity { unit, code, system })
        }
        Some("string") => Some(FhirValueType::String),
        Some("codeableconcept") => {
            let text = o.string("text", false, errs).filter(|s| !s.is_empty());
            parse_codes(&mut o, "codes", true, errs)
                .map(|codes| FhirValueType::CodeableConcept { text, codes })
        }
        Some(_) => {
            let at = o.get("valueType").unwrap_or(n);
            errs.push(
                at,
                &o.field_path("valueType"),
                "valueType",
                format!(
                    "unknown valueType '{}' (SampledData, Quantity, String or CodeableConcept)",
                    value_type.unwrap_or_default()
                ),
            );
            None
        }
    };
    o.finish(errs);
    if errs.0.len() != before {
        return None;
    }
    Some(FhirValue {
        value_name: value_name?,
        value_type: vt?,
    })
}

fn parse_code_value(node: &Node, path: &str, errs: &mut Errs) -> Option<CodeValueFhirTemplate> {
    let before = errs.0.len();
    let mut o = Obj::new(node, path, errs)?;
    let type_name = o.non_blank("typeName", true, errs);
    let period = match int_field(&mut o, "periodInterval", errs) {
        Some(None) | Some(Some(0)) => Some(PeriodInterval::Single),
        Some(Some(-1)) => Some(PeriodInterval::CorrelationId),
        Some(Some(60)) => Some(PeriodInterval::Hourly),
        Some(Some(1440)) => Some(PeriodInterval::Daily),
        Some(Some(p)) => {
            let at = o.get("periodInterval").unwrap_or(node);
            errs.push(at, &o.field_path("periodInterval"), "periodInterval", format!("periodInterval {p} is not supported (-1 CorrelationId, 0 Single, 60 Hourly, 1440 Daily)"));
            None
        }
        None => None,
    };
    let codes = parse_codes(&mut o, "codes", true, errs);
    let mut category = Vec::new();
    if let Some(n) = o.get("category") {
        let cpath = o.field_path("category");
        match &n.v {
            V::Arr(items) => {
                for (i, item) in items.iter().enumerate() {
                    let Some(mut c) = Obj::new(item, &format!("{cpath}[{i}]"), errs) else {
                        continue;
                    };
                    let text = c.string("text", false, errs).filter(|s| !s.is_empty());
                    let codes = parse_codes(&mut c, "codes", false, errs);
                    c.finish(errs);
                    if let Some(codes) = codes {
                        category.push(FhirCategory { text, codes });
                    }
                }
            }
            _ => errs.push(
                n,
                &cpath,
                "category",
                format!("'category' must be an array, found {}", n.kind()),
            ),
        }
    }
    let value = o
        .get("value")
        .and_then(|n| parse_value(n, &format!("{path}.value"), errs));
    let mut components = Vec::new();
    if let Some(n) = o.get("components") {
        let cpath = o.field_path("components");
        match &n.v {
            V::Arr(items) => {
                for (i, item) in items.iter().enumerate() {
                    let ipath = format!("{cpath}[{i}]");
                    let Some(mut c) = Obj::new(item, &ipath, errs) else {
                        continue;
                    };
                    let codes = parse_codes(&mut c, "codes", true, errs);
                    let value = match c.get("value") {
                        Some(v) => parse_value(v, &format!("{ipath}.value"), errs),
                        None => {
                            c.missing("value", errs);
                            None
                        }
                    };
                    c.finish(errs);
                    if let (Some(codes), Some(value)) = (codes, value) {
                        components.push(FhirComponent { codes, value });
                    }
                }
            }
            _ => errs.push(
                n,
                &cpath,
                "components",
                format!("'components' must be an array, found {}", n.kind()),
            ),
        }
    }
    o.finish(errs);
    if errs.0.len() != before {
        return None;
    }
    let t = CodeValueFhirTemplate {
        type_name: type_name?,
        period_interval: period?,
        category,
        codes: codes?,
        value,
        components,
    };
    // Reject what cannot work at run time.
    let all_values: Vec<&FhirValue> = t
        .value
        .iter()
        .chain(t.components.iter().map(|c| &c.value))
        .collect();
    let sampled = all_values
        .iter()
        .any(|v| matches!(v.value_type, FhirValueType::SampledData { .. }));
    let single_valued = all_values.iter().any(|v| {
        matches!(
            v.value_type,
            FhirValueType::Quantity { .. } | FhirValueType::String
        )
    });
    if sampled && single_valued && t.period_interval != PeriodInterval::Single {
        errs.push(node, path, "periodInterval", "a template mixing SampledData with Quantity/String values needs periodInterval 0 (Single): a longer period groups several values, which a Quantity or String cannot hold");
        return None;
    }
    for v in &all_values {
        if let FhirValueType::SampledData {
            default_period_ms, ..
        } = v.value_type
        {
            let span = match t.period_interval {
                PeriodInterval::Hourly => TICKS_PER_HOUR,
                PeriodInterval::Daily => TICKS_PER_DAY,
                _ => 0,
            };
            if span / (default_period_ms.saturating_mul(TICKS_PER_MS)) > MAX_SLOTS {
                errs.push(node, path, "defaultPeriod", format!("defaultPeriod {default_period_ms} ms gives more than {MAX_SLOTS} SampledData slots per period"));
                return None;
            }
        }
    }
    let mut names: Vec<&str> = all_values.iter().map(|v| v.value_name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        errs.push(
            node,
            path,
            "valueName",
            format!("valueName '{}' is mapped twice in one template", w[0]),
        );
        return None;
    }
    Some(t)
}

/// Groups measurements as the reference does: by (type, device, patient, encounter,
/// correlation id) and then by period boundary of the type's FHIR template.
pub fn group(measurements: &[Measurement], templates: &FhirTemplateSet) -> Grouping {
    type Key<'a> = (
        usize,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<Instant>,
    );
    let mut out = Grouping::default();
    let mut index: HashMap<Key<'_>, usize> = HashMap::new();
    for (i, m) in measurements.iter().enumerate() {
        let reject = |error| RejectedMeasurement { index: i, error };
        let Some(ti) = templates.index_of(&m.type_name) else {
            out.rejected
                .push(reject(FhirMappingError::TemplateNotFound {
                    type_name: m.type_name.clone(),
                }));
            continue;
        };
        let t = &templates.templates[ti];
        let Some(at) = Instant::parse(&m.occurrence_time) else {
            out.rejected
                .push(reject(FhirMappingError::InvalidMeasurement {
                    type_name: m.type_name.clone(),
                    value: m.occurrence_time.clone(),
                }));
            continue;
        };
        let period = t.effective_period();
        let bounds = match period {
            PeriodInterval::Single => Some((at, at)),
            PeriodInterval::Hourly => Some((
                at.floor_hour(),
                Instant(at.floor_hour().0 + TICKS_PER_HOUR - 1),
            )),
            PeriodInterval::Daily => Some((
                at.floor_day(),
                Instant(at.floor_day().0 + TICKS_PER_DAY - 1),
            )),
            PeriodInterval::CorrelationId => {
                if m.correlation_id.is_none() {
                    out.rejected
                        .push(reject(FhirMappingError::CorrelationIdNotDefined {
                            type_name: m.type_name.clone(),
                            device_id: m.device_id.clone(),
                        }));
                    continue;
                }
                None
            }
        };
        let key: Key<'_> = (
            ti,
            &m.device_id,
            m.patient_id.as_deref(),
            m.encounter_id.as_deref(),
            m.correlation_id.as_deref(),
            bounds.map(|b| b.0),
        );
        let gi = *index.entry(key).or_insert_with(|| {
            out.groups.push(MeasurementGroup {
                type_name: m.type_name.clone(),
                device_id: m.device_id.clone(),
                patient_id: m.patient_id.clone(),
                encounter_id: m.encounter_id.clone(),
                correlation_id: m.correlation_id.clone(),
                period,
                start: bounds.map_or(at, |b| b.0),
                end: bounds.map_or(at, |b| b.1),
                values: BTreeMap::new(),
                measurement_count: 0,
            });
            out.groups.len() - 1
        });
        let g = &mut out.groups[gi];
        if bounds.is_none() {
            g.start = g.start.min(at);
            g.end = g.end.max(at);
        }
        g.measurement_count += 1;
        for (name, value) in &m.properties {
            match g.values.get_mut(name) {
                Some(v) => {
                    v.insert(at, value.clone());
                }
                None => {
                    g.values
                        .insert(name.clone(), BTreeMap::from([(at, value.clone())]));
                }
            }
        }
    }
    out
}

fn coding(c: &FhirCode) -> Value {
    let mut m = Map::new();
    if let Some(s) = &c.system {
        m.insert("system".into(), Value::String(s.clone()));
    }
    m.insert("code".into(), Value::String(c.code.clone()));
    if let Some(d) = &c.display {
        m.insert("display".into(), Value::String(d.clone()));
    }
    Value::Object(m)
}

fn service_coding(code: &str) -> Value {
    let mut m = Map::new();
    m.insert("system".into(), Value::String(SERVICE_SYSTEM.into()));
    m.insert("code".into(), Value::String(code.into()));
    m.insert("display".into(), Value::String(code.into()));
    Value::Object(m)
}

fn concept(codes: &[FhirCode], extra: Option<&str>, text: Option<&str>) -> Value {
    let mut coding_list: Vec<Value> = codes.iter().map(coding).collect();
    if let Some(e) = extra {
        coding_list.push(service_coding(e));
    }
    let mut m = Map::new();
    if !coding_list.is_empty() {
        m.insert("coding".into(), Value::Array(coding_list));
    }
    if let Some(t) = text {
        m.insert("text".into(), Value::String(t.into()));
    }
    Value::Object(m)
}

/// FHIR decimal lexical form (after trimming and dropping a leading `+`), as a JSON number.
fn decimal(s: &str) -> Option<Value> {
    serde_json::from_str::<serde_json::Number>(decimal_text(s)?)
        .ok()
        .map(Value::Number)
}

/// The FHIR decimal text of `s` (trimmed, without a leading `+`), `None` when `s` is not one.
fn decimal_text(s: &str) -> Option<&str> {
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    let b = t.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
        return None;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return None;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return None;
        }
    }
    (i == b.len()).then_some(t)
}

/// Encodes points into slots `start, start+p, … ≤ end`; each slot holds the last point in
/// `[slot, slot+p)`, `E` when none.
pub fn encode_sampled_data(
    start: Instant,
    end: Instant,
    period_ms: i64,
    points: &BTreeMap<Instant, String>,
) -> Result<String, String> {
    encode_sorted(
        start,
        end,
        period_ms,
        points.range(start..=end).map(|(t, v)| (*t, v.as_str())),
    )
}

/// `" E"` repeated: gaps are copied from here in chunks instead of slot by slot.
const GAPS: &str = " E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E E";

/// Appends `n` slots of `E`, the first being slot `index` (slots after the first are
/// preceded by a space).
fn push_gaps(s: &mut String, index: usize, mut n: usize) {
    if n == 0 {
        return;
    }
    if index == 0 {
        s.push('E');
        n -= 1;
    }
    while n > 0 {
        let k = n.min(GAPS.len() / 2);
        s.push_str(&GAPS[..2 * k]);
        n -= k;
    }
}

/// [`encode_sampled_data`] over points in ascending time order, all within `[start, end]`.
/// Written straight into the output (no per-slot table): a sparse hour is mostly gaps.
fn encode_sorted<'a>(
    start: Instant,
    end: Instant,
    period_ms: i64,
    points: impl Iterator<Item = (Instant, &'a str)>,
) -> Result<String, String> {
    let p = period_ms.saturating_mul(TICKS_PER_MS).max(1);
    let slots = (end.0 - start.0).max(0) / p + 1;
    if slots > MAX_SLOTS {
        return Err(format!(
            "{slots} SampledData slots exceed the limit of {MAX_SLOTS}"
        ));
    }
    let slots = slots as usize;
    let mut s = String::with_capacity(slots * 2 + 16);
    // Slots written so far, and the slot being filled (the last point in it wins).
    let mut written = 0usize;
    let mut current: Option<(usize, &str)> = None;
    for (t, v) in points {
        if t < start || t > end {
            continue;
        }
        let k = ((t.0 - start.0) / p) as usize;
        match current {
            Some((ck, _)) if ck == k => {}
            Some((ck, cv)) => {
                push_gaps(&mut s, written, ck - written);
                if ck > 0 {
                    s.push(' ');
                }
                s.push_str(cv);
                written = ck + 1;
            }
            None => {}
        }
        current = Some((k, v));
    }
    if let Some((ck, cv)) = current {
        push_gaps(&mut s, written, ck - written);
        if ck > 0 {
            s.push(' ');
        }
        s.push_str(cv);
        written = ck + 1;
    }
    push_gaps(&mut s, written, slots - written);
    Ok(s)
}

/// The points of a SampledData stream as [`decode_sampled_data`] reads them, borrowed and in
/// ascending time order; `None` when the layout does not allow that (a period that is not
/// positive, or instants that would overflow), in which case the caller decodes instead.
fn sampled_points(start: Instant, period_ms: i64, data: &str) -> Option<Vec<(Instant, &str)>> {
    let p = period_ms.checked_mul(TICKS_PER_MS).filter(|p| *p > 0)?;
    // More tokens than bytes is impossible, so this bounds every instant computed below.
    let bound = i64::try_from(data.len()).ok()?;
    start.0.checked_add(bound.checked_mul(p)?)?;
    // ASCII whitespace is Unicode whitespace but for vertical tab; the ASCII splitter is
    // several times faster.
    let tokens: Box<dyn Iterator<Item = &str>> = if data.is_ascii() && !data.contains('\x0b') {
        Box::new(data.split_ascii_whitespace())
    } else {
        Box::new(data.split_whitespace())
    };
    Some(
        tokens
            .enumerate()
            .filter(|(_, t)| !matches!(*t, "E" | "L" | "U"))
            .map(|(i, t)| (Instant(start.0 + i as i64 * p), t))
            .collect(),
    )
}

/// The merge of new points into stored SampledData when the stored stream is laid out as
/// the result will be (same start and period, single spaces, no `L`/`U`, no more slots than
/// the result): each slot keeps its stored token unless a new point falls in it (a new
/// point is never earlier than the slot's stored one), so the stored text is copied around
/// the slots that change. `None` when those conditions do not hold; the caller then decodes
/// and re-encodes, which gives the same text.
fn splice_sampled_data(
    (old_start, old_period_ms, old): (Instant, i64, &str),
    (start, end): (Instant, Instant),
    period_ms: i64,
    points: &BTreeMap<Instant, String>,
) -> Option<String> {
    let p = period_ms.checked_mul(TICKS_PER_MS).filter(|p| *p > 0)?;
    if old_period_ms != period_ms || old_start != start || end < start {
        return None;
    }
    let slots = (end.0 - start.0) / p + 1;
    if slots > MAX_SLOTS {
        return None;
    }
    let slots = slots as usize;
    let bytes = old.as_bytes();
    let old_slots = canonical_slots(bytes)?;
    if old_slots > slots {
        return None;
    }
    let mut out = String::with_capacity(old.len() + (slots - old_slots) * 2 + 16);
    // Slots written to `out` so far; stored tokens `at..` start at byte `pos` of `old`.
    let (mut written, mut at, mut pos) = (0usize, 0usize, 0usize);
    let mut changes = points
        .range(start..=end)
        .map(|(t, v)| (((t.0 - start.0) / p) as usize, v.as_str()))
        .peekable();
    while let Some((k, mut v)) = changes.next() {
        // The last point in the slot wins.
        while let Some(&(k2, v2)) = changes.peek() {
            if k2 != k {
                break;
            }
            v = v2;
            changes.next();
        }
        // Stored tokens before slot k, copied as they are.
        let copy = k.min(old_slots).saturating_sub(at);
        if copy > 0 {
            let q = skip_tokens(bytes, pos, copy);
            if written > 0 {
                out.push(' ');
            }
            out.push_str(old[pos..q].trim_end_matches(' '));
            (written, at, pos) = (written + copy, at + copy, q);
        }
        // Slots past the stored ones.
        push_gaps(&mut out, written, k - written);
        if k > 0 {
            out.push(' ');
        }
        out.push_str(v);
        written = k + 1;
        if k < old_slots {
            // The stored token of slot k is replaced.
            (at, pos) = (k + 1, skip_tokens(bytes, pos, 1));
        }
    }
    if at < old_slots {
        if written > 0 {
            out.push(' ');
        }
        out.push_str(&old[pos..]);
        written = old_slots;
    }
    push_gaps(&mut out, written, slots - written);
    Some(out)
}

/// The number of tokens of SampledData text laid out as this module writes it (ASCII,
/// tokens separated by single spaces, no `L`/`U`); `None` for any other layout. Branch-free
/// over blocks, so that the compiler vectorizes it: it runs on every merge.
fn canonical_slots(bytes: &[u8]) -> Option<usize> {
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return Some(0);
    };
    if first == b' ' || last == b' ' {
        return None;
    }
    let (mut bad, mut spaces) = (0u8, 0usize);
    for block in bytes.chunks(64) {
        let mut n = 0u8;
        for &b in block {
            bad |= u8::from(b >= 0x80)
                | u8::from(b.wrapping_sub(0x09) <= 0x0d - 0x09)
                | u8::from(b == b'L')
                | u8::from(b == b'U');
            n += u8::from(b == b' ');
        }
        spaces += usize::from(n);
    }
    let doubled = bytes.iter().zip(&bytes[1..]).fold(0u8, |acc, (a, b)| {
        acc | (u8::from(*a == b' ') & u8::from(*b == b' '))
    });
    (bad == 0 && doubled == 0).then_some(spaces + 1)
}

/// The byte offset of the token `n` tokens after the one starting at `pos` (single-space
/// separated), counting spaces a block at a time.
fn skip_tokens(bytes: &[u8], mut pos: usize, mut n: usize) -> usize {
    const BLOCK: usize = 64;
    while n > 0 && pos + BLOCK <= bytes.len() {
        let spaces = bytes[pos..pos + BLOCK]
            .iter()
            .fold(0u8, |n, &b| n + u8::from(b == b' '));
        let spaces = usize::from(spaces);
        if spaces >= n {
            break;
        }
        n -= spaces;
        pos += BLOCK;
    }
    while n > 0 && pos < bytes.len() {
        if bytes[pos] == b' ' {
            n -= 1;
        }
        pos += 1;
    }
    pos
}

/// Merges two ascending point sequences; on equal instants the `new` point wins.
fn merge_points<'a>(
    old: &'a [(Instant, &'a str)],
    new: &'a BTreeMap<Instant, String>,
) -> impl Iterator<Item = (Instant, &'a str)> + 'a {
    let mut old = old.iter().copied().peekable();
    let mut new = new.iter().map(|(t, v)| (*t, v.as_str())).peekable();
    std::iter::from_fn(move || match (old.peek(), new.peek()) {
        (Some(o), Some(n)) if o.0 < n.0 => old.next(),
        (Some(o), Some(n)) if o.0 == n.0 => {
            old.next();
            new.next()
        }
        (_, Some(_)) => new.next(),
        (Some(_), None) => old.next(),
        (None, None) => None,
    })
}

/// Decodes a SampledData stream laid out from `start` every `period_ms`, skipping `E`, `L`
/// and `U` tokens.
pub fn decode_sampled_data(
    start: Instant,
    period_ms: i64,
    data: &str,
) -> BTreeMap<Instant, String> {
    let p = period_ms.saturating_mul(TICKS_PER_MS);
    data.split_whitespace()
        .enumerate()
        .filter(|(_, t)| !matches!(*t, "E" | "L" | "U"))
        .map(|(i, t)| (Instant(start.0 + i as i64 * p), t.to_string()))
        .collect()
}

fn map_err(t: &CodeValueFhirTemplate, v: &FhirValue, message: String) -> FhirMappingError {
    FhirMappingError::DataMapping {
        type_name: t.type_name.clone(),
        value_name: v.value_name.clone(),
        message,
    }
}

/// The `value[x]` element name and value for a mapping, `None` when the group has no data
/// for it. `prior` is the existing element of the same name (SampledData merges into it).
fn build_value(
    t: &CodeValueFhirTemplate,
    v: &FhirValue,
    g: &MeasurementGroup,
    span: (Instant, Instant),
    prior: Option<(&str, &Value, Instant)>,
) -> Result<Option<(&'static str, Value)>, FhirMappingError> {
    let Some(points) = g.values.get(&v.value_name) else {
        return Ok(None);
    };
    if points.is_empty() {
        return Ok(None);
    }
    match &v.value_type {
        FhirValueType::SampledData {
            default_period_ms,
            unit,
        } => {
            for val in points.values() {
                if decimal_text(val).is_none() {
                    return Err(map_err(
                        t,
                        v,
                        format!("SampledData value '{val}' is not a decimal"),
                    ));
                }
            }
            let data = match prior {
                None => encode_sampled_data(span.0, span.1, *default_period_ms, points),
                Some((key, old, old_start)) => {
                    if key != "valueSampledData" {
                        return Err(FhirMappingError::NotSupported {
                            message: format!(
                                "existing value is {key}, the template maps '{}' as SampledData",
                                v.value_name
                            ),
                        });
                    }
                    if old.get("dimensions").and_then(Value::as_u64).unwrap_or(1) > 1 {
                        return Err(FhirMappingError::NotSupported {
                            message: "existing SampledData has more than one dimension".into(),
                        });
                    }
                    let old_period =
                        old.get("period")
                            .and_then(|p| p.as_f64())
                            .unwrap_or(*default_period_ms as f64) as i64;
                    let old_data = old.get("data").and_then(Value::as_str).unwrap_or("");
                    if let Some(data) = splice_sampled_data(
                        (old_start, old_period, old_data),
                        span,
                        *default_period_ms,
                        points,
                    ) {
                        Ok(data)
                    } else {
                        // The stored points stay borrowed from the old data string; the merge
                        // is one pass over both sorted sequences.
                        match sampled_points(old_start, old_period, old_data) {
                            Some(old_points) => encode_sorted(
                                span.0,
                                span.1,
                                *default_period_ms,
                                merge_points(&old_points, points),
                            ),
                            None => {
                                let mut merged =
                                    decode_sampled_data(old_start, old_period, old_data);
                                for (k, x) in points {
                                    merged.insert(*k, x.clone());
                                }
                                encode_sampled_data(span.0, span.1, *default_period_ms, &merged)
                            }
                        }
                    }
                }
            }
            .map_err(|m| map_err(t, v, m))?;
            let mut origin = Map::new();
            origin.insert("value".into(), Value::from(0));
            if let Some(u) = unit {
                origin.insert("unit".into(), Value::String(u.clone()));
            }
            let mut sd = Map::new();
            sd.insert("origin".into(), Value::Object(origin));
            sd.insert("period".into(), Value::from(*default_period_ms));
            sd.insert("dimensions".into(), Value::from(1));
            sd.insert("data".into(), Value::String(data));
            Ok(Some(("valueSampledData", Value::Object(sd))))
        }
        FhirValueType::Quantity { unit, code, system } => {
            if points.len() != 1 {
                return Err(FhirMappingError::InvalidQuantityValue {
                    type_name: t.type_name.clone(),
                    value_name: v.value_name.clone(),
                    message: format!(
                        "a Quantity needs exactly one value, the group has {}",
                        points.len()
                    ),
                });
            }
            let raw = points.values().next().map(String::as_str).unwrap_or("");
            let Some(num) = decimal(raw) else {
                return Err(FhirMappingError::InvalidQuantityValue {
                    type_name: t.type_name.clone(),
                    value_name: v.value_name.clone(),
                    message: format!("'{raw}' is not a decimal"),
                });
            };
            let mut q = Map::new();
            q.insert("value".into(), num);
            if let Some(u) = unit {
                q.insert("unit".into(), json!(u));
            }
            if let Some(s) = system {
                q.insert("system".into(), json!(s));
            }
            if let Some(c) = code {
                q.insert("code".into(), json!(c));
            }
            Ok(Some(("valueQuantity", Value::Object(q))))
        }
        FhirValueType::String => {
            if points.len() != 1 {
                return Err(map_err(
                    t,
                    v,
                    format!(
                        "a String value needs exactly one value, the group has {}",
                        points.len()
                    ),
                ));
            }
            Ok(points.values().next().map(|s| ("valueString", json!(s))))
        }
        FhirValueType::CodeableConcept { text, codes } => Ok(Some((
            "valueCodeableConcept",
            concept(codes, None, text.as_deref()),
        ))),
    }
}

const VALUE_KEYS: [&str; 4] = [
    "valueSampledData",
    "valueQuantity",
    "valueString",
    "valueCodeableConcept",
];

fn value_entry(obj: &Map<String, Value>) -> Option<(&str, &Value)> {
    obj.iter()
        .find(|(k, _)| k.starts_with("value"))
        .map(|(k, v)| (k.as_str(), v))
}

fn period_json(start: Instant, end: Instant) -> Value {
    let mut m = Map::new();
    m.insert("start".into(), Value::String(start.to_string()));
    m.insert("end".into(), Value::String(end.to_string()));
    Value::Object(m)
}

fn reference(target: String) -> Value {
    let mut m = Map::new();
    m.insert("reference".into(), Value::String(target));
    Value::Object(m)
}

fn create(
    t: &CodeValueFhirTemplate,
    g: &MeasurementGroup,
    id: &Identity,
    issued: Instant,
) -> Result<Value, FhirMappingError> {
    let (system, value) = observation_identifier(g, id);
    let mut o = Map::new();
    o.insert("resourceType".into(), Value::String("Observation".into()));
    o.insert("id".into(), Value::String(resource_id(&system, &value)));
    let mut identifier = Map::new();
    identifier.insert("system".into(), Value::String(system));
    identifier.insert("value".into(), Value::String(value));
    o.insert(
        "identifier".into(),
        Value::Array(vec![Value::Object(identifier)]),
    );
    o.insert("status".into(), Value::String("final".into()));
    if !t.category.is_empty() {
        o.insert(
            "category".into(),
            Value::Array(
                t.category
                    .iter()
                    .map(|c| concept(&c.codes, None, c.text.as_deref()))
                    .collect(),
            ),
        );
    }
    o.insert(
        "code".into(),
        concept(&t.codes, Some(&t.type_name), Some(&t.type_name)),
    );
    o.insert(
        "subject".into(),
        reference(format!("Patient/{}", id.patient_id)),
    );
    if let Some(e) = &id.encounter_id {
        o.insert("encounter".into(), reference(format!("Encounter/{e}")));
    }
    o.insert("effectivePeriod".into(), period_json(g.start, g.end));
    o.insert("issued".into(), Value::String(issued.to_string()));
    o.insert(
        "device".into(),
        reference(format!("Device/{}", id.device_id)),
    );
    if let Some(v) = &t.value {
        if let Some((k, val)) = build_value(t, v, g, (g.start, g.end), None)? {
            o.insert(k.into(), val);
        }
    }
    let mut comps = Vec::new();
    for c in &t.components {
        if let Some((k, val)) = build_value(t, &c.value, g, (g.start, g.end), None)? {
            let mut m = Map::new();
            m.insert(
                "code".into(),
                concept(
                    &c.codes,
                    Some(&c.value.value_name),
                    Some(&c.value.value_name),
                ),
            );
            m.insert(k.into(), val);
            comps.push(Value::Object(m));
        }
    }
    if !comps.is_empty() {
        o.insert("component".into(), Value::Array(comps));
    }
    Ok(Value::Object(o))
}

fn is_component_for(c: &Value, value_name: &str) -> bool {
    c.pointer("/code/coding")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|x| {
                x.get("system").and_then(Value::as_str) == Some(SERVICE_SYSTEM)
                    && x.get("code").and_then(Value::as_str) == Some(value_name)
            })
        })
}

fn merge(
    t: &CodeValueFhirTemplate,
    g: &MeasurementGroup,
    existing: &Value,
    issued: Instant,
) -> Result<ObservationChange, FhirMappingError> {
    let Some(old) = existing
        .as_object()
        .filter(|o| o.get("resourceType").and_then(Value::as_str) == Some("Observation"))
    else {
        return Err(FhirMappingError::NotSupported {
            message: "the existing resource is not an Observation".into(),
        });
    };
    // Copied without what is rebuilt below (the value and the components, which hold the
    // SampledData streams): placeholders keep the members' positions.
    let value_key = t
        .value
        .as_ref()
        .and_then(|_| value_entry(old))
        .map(|(k, _)| k)
        .filter(|k| VALUE_KEYS.contains(k));
    let rebuilt_components = old
        .get("component")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    let mut o: Map<String, Value> = old
        .iter()
        .map(|(k, v)| {
            let placeholder =
                Some(k.as_str()) == value_key || (rebuilt_components && k == "component");
            (k.clone(), if placeholder { Value::Null } else { v.clone() })
        })
        .collect();
    let old_start = existing
        .pointer("/effectivePeriod/start")
        .and_then(Value::as_str)
        .and_then(Instant::parse);
    let old_end = existing
        .pointer("/effectivePeriod/end")
        .and_then(Value::as_str)
        .and_then(Instant::parse);
    let start = old_start.map_or(g.start, |s| s.min(g.start));
    let end = old_end.map_or(g.end, |e| e.max(g.end));
    let prior_start = old_start.unwrap_or(g.start);
    o.insert("effectivePeriod".into(), period_json(start, end));
    if t.category.is_empty() {
        o.shift_remove("category");
    } else {
        o.insert(
            "category".into(),
            Value::Array(
                t.category
                    .iter()
                    .map(|c| concept(&c.codes, None, c.text.as_deref()))
                    .collect(),
            ),
        );
    }
    if let Some(v) = &t.value {
        let prior = value_entry(old).map(|(k, x)| (k, x, prior_start));
        if let Some((k, val)) = build_value(t, v, g, (start, end), prior)? {
            for key in VALUE_KEYS {
                o.shift_remove(key);
            }
            o.insert(k.into(), val);
        } else if let Some((k, x)) = value_key.zip(prior) {
            // Nothing new for the value: the stored one stays, in its place.
            o.insert(k.into(), x.1.clone());
        }
    }
    let mut comps: Vec<Value> = old
        .get("component")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in &t.components {
        let pos = comps
            .iter()
            .position(|x| is_component_for(x, &c.value.value_name));
        let prior = pos
            .and_then(|p| comps[p].as_object())
            .and_then(value_entry)
            .map(|(k, x)| (k, x, prior_start));
        if let Some((k, val)) = build_value(t, &c.value, g, (start, end), prior)? {
            match pos.and_then(|p| comps[p].as_object_mut()) {
                Some(m) => {
                    let stale: Vec<String> = m
                        .keys()
                        .filter(|k| k.starts_with("value"))
                        .cloned()
                        .collect();
                    for s in stale {
                        m.shift_remove(&s);
                    }
                    m.insert(k.into(), val);
                }
                None => {
                    let mut m = Map::new();
                    m.insert(
                        "code".into(),
                        concept(
                            &c.codes,
                            Some(&c.value.value_name),
                            Some(&c.value.value_name),
                        ),
                    );
                    m.insert(k.into(), val);
                    comps.push(Value::Object(m));
                }
            }
        }
    }
    if !comps.is_empty() {
        o.insert("component".into(), Value::Array(comps));
    }
    if same_content(&o, old) {
        return Ok(ObservationChange::Unchanged);
    }
    o.insert("status".into(), Value::String("amended".into()));
    o.insert("issued".into(), Value::String(issued.to_string()));
    Ok(ObservationChange::Update(Value::Object(o)))
}

/// Whether two Observations differ only in bookkeeping (status, issued, meta), which alone
/// does not make a write. Compared in place: the maps hold the whole SampledData.
fn same_content(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    const BOOKKEEPING: [&str; 3] = ["status", "issued", "meta"];
    let content = |m: &Map<String, Value>| {
        m.len() - BOOKKEEPING.iter().filter(|k| m.contains_key(**k)).count()
    };
    content(a) == content(b)
        && a.iter()
            .filter(|(k, _)| !BOOKKEEPING.contains(&k.as_str()))
            .all(|(k, v)| b.get(k) == Some(v))
}

/// Mismatches between device and FHIR templates that would make data go nowhere: a device
/// typeName without FHIR template, or a FHIR valueName that no device template of that type
/// produces. Empty when they fit together.
pub fn check_mappings(
    device: &crate::device::DeviceTemplateSet,
    fhir: &FhirTemplateSet,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for d in &device.templates {
        let key = d.type_name.to_lowercase();
        if seen.contains(&key) {
            continue;
        }
        seen.push(key.clone());
        let Some(t) = fhir.template(&d.type_name) else {
            out.push(format!(
                "device typeName '{}' has no FHIR template",
                d.type_name
            ));
            continue;
        };
        let produced: Vec<&str> = device
            .templates
            .iter()
            .filter(|x| x.type_name.to_lowercase() == key)
            .flat_map(|x| x.values.iter().map(|v| v.name.as_str()))
            .collect();
        for v in t.value.iter().chain(t.components.iter().map(|c| &c.value)) {
            if !produced.contains(&v.value_name.as_str()) {
                out.push(format!("FHIR template '{}' maps valueName '{}', which no device template of that type produces", t.type_name, v.value_name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot-table encoder the streaming one replaced.
    fn encode_reference(
        start: Instant,
        end: Instant,
        period_ms: i64,
        points: &BTreeMap<Instant, String>,
    ) -> Result<String, String> {
        let p = period_ms.saturating_mul(TICKS_PER_MS).max(1);
        let slots = (end.0 - start.0).max(0) / p + 1;
        if slots > MAX_SLOTS {
            return Err(format!(
                "{slots} SampledData slots exceed the limit of {MAX_SLOTS}"
            ));
        }
        let mut data: Vec<Option<&str>> = vec![None; slots as usize];
        for (t, v) in points.range(start..=end) {
            let k = ((t.0 - start.0) / p) as usize;
            if let Some(slot) = data.get_mut(k) {
                *slot = Some(v.as_str());
            }
        }
        Ok(data
            .iter()
            .map(|d| d.unwrap_or("E"))
            .collect::<Vec<_>>()
            .join(" "))
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> i64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n) as i64
        }
    }

    const S: i64 = 10_000_000;

    fn random_points(
        r: &mut Rng,
        base: Instant,
        n: u64,
        spread_s: u64,
    ) -> BTreeMap<Instant, String> {
        (0..r.next(n))
            .map(|_| {
                // Whole seconds mostly, sometimes in between, before or after the span.
                let t = base.0 + (r.next(spread_s + 20) - 10) * S + r.next(3) * (S / 3);
                (Instant(t), r.next(1000).to_string())
            })
            .collect()
    }

    #[test]
    fn streaming_encoder_matches_the_slot_table() {
        let mut r = Rng(0x2545_F491_4F6C_DD1D);
        let t0 = Instant::parse("2019-03-01T10:00:00Z").unwrap();
        for _ in 0..3_000 {
            let start = Instant(t0.0 + r.next(5) * S / 2);
            let end = Instant((start.0 + r.next(400) * S / 3 - r.next(2)).max(start.0));
            let period = [1, 700, 1000, 1500, 60_000][r.next(5) as usize];
            let pts = random_points(&mut r, t0, 300, 150);
            assert_eq!(
                encode_sampled_data(start, end, period, &pts),
                encode_reference(start, end, period, &pts),
                "{start:?} {end:?} {period}"
            );
        }
        let huge = Instant(t0.0 + 2_000_000 * S);
        assert_eq!(
            encode_sampled_data(t0, huge, 1000, &BTreeMap::new()),
            encode_reference(t0, huge, 1000, &BTreeMap::new())
        );
    }

    #[test]
    fn streaming_merge_matches_decode_and_insert() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let t0 = Instant::parse("2019-03-01T10:00:00Z").unwrap();
        for _ in 0..3_000 {
            let old_start = Instant(t0.0 + r.next(6) * S / 2);
            let old_period = [-1000, 0, 500, 1000, 1000, 2000][r.next(6) as usize];
            // Stored data with gaps, L/U markers and irregular whitespace.
            let mut data = String::new();
            for i in 0..r.next(200) {
                if i > 0 {
                    data.push_str([" ", " ", "  ", "\n", "\u{a0}"][r.next(5) as usize]);
                }
                let tok = match r.next(8) {
                    0..=2 => "E".to_string(),
                    3 => "L".to_string(),
                    4 => "U".to_string(),
                    _ => r.next(100).to_string(),
                };
                data.push_str(&tok);
            }
            let new = random_points(&mut r, t0, 20, 250);
            let start = Instant(old_start.0.min(t0.0) - r.next(2) * S);
            let end = Instant(start.0 + r.next(300) * S + S - 1);
            let period = [500, 1000, 3000][r.next(3) as usize];
            let mut merged = decode_sampled_data(old_start, old_period, &data);
            for (k, x) in &new {
                merged.insert(*k, x.clone());
            }
            let expected = encode_reference(start, end, period, &merged);
            if let Some(spliced) =
                splice_sampled_data((old_start, old_period, &data), (start, end), period, &new)
            {
                assert_eq!(Ok(spliced), expected, "{data:?} {old_period}");
            }
            let got = match sampled_points(old_start, old_period, &data) {
                Some(old) => encode_sorted(start, end, period, merge_points(&old, &new)),
                None => {
                    assert!(old_period <= 0);
                    continue;
                }
            };
            assert_eq!(got, expected, "{data:?} {old_period}");
        }
    }

    #[test]
    fn splicing_matches_decode_and_insert() {
        let mut r = Rng(0xD1B5_4A32_D192_ED03);
        let t0 = Instant::parse("2019-03-01T10:00:00Z").unwrap();
        let mut spliced = 0;
        for _ in 0..5_000 {
            let period = [1000, 1000, 250][r.next(3) as usize];
            let p = period * TICKS_PER_MS;
            // Stored data as this module writes it: single spaces, E for gaps.
            let old_slots = r.next(120) as usize;
            let data = (0..old_slots)
                .map(|_| match r.next(3) {
                    0 => "E".to_string(),
                    _ => r.next(300).to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ");
            let end =
                Instant(t0.0 + (old_slots as i64 + r.next(40) - 5).max(0) * p + r.next(p as u64));
            let new: BTreeMap<Instant, String> = (0..r.next(12))
                .map(|_| {
                    let t = t0.0 + r.next(160) * p + [0, 1, p / 2, p - 1][r.next(4) as usize];
                    (Instant(t), r.next(300).to_string())
                })
                .collect();
            let mut merged = decode_sampled_data(t0, period, &data);
            for (k, x) in &new {
                merged.insert(*k, x.clone());
            }
            let expected = encode_reference(t0, end, period, &merged);
            match splice_sampled_data((t0, period, &data), (t0, end), period, &new) {
                Some(got) => {
                    spliced += 1;
                    assert_eq!(Ok(got), expected, "{data:?} {new:?} {end:?}");
                }
                // Only when the stored stream is longer than the merged span.
                None => assert!(old_slots as i64 > (end.0 - t0.0) / p + 1),
            }
        }
        assert!(spliced > 4_000, "{spliced}");
        // Layouts the splice leaves to the general merge.
        let one = BTreeMap::from([(t0, "1".to_string())]);
        let end = Instant(t0.0 + 10 * S);
        for data in ["1  2", " 1", "1 ", "1\t2", "L 1", "1 U", "1\u{a0}2"] {
            assert_eq!(
                splice_sampled_data((t0, 1000, data), (t0, end), 1000, &one),
                None,
                "{data:?}"
            );
        }
        assert_eq!(
            splice_sampled_data((t0, 2000, "1"), (t0, end), 1000, &one),
            None
        );
        assert_eq!(
            splice_sampled_data((Instant(t0.0 + S), 1000, "1"), (t0, end), 1000, &one),
            None
        );
    }

    /// `merge` as it was before it stopped copying the parts it rebuilds.
    fn merge_reference(
        t: &CodeValueFhirTemplate,
        g: &MeasurementGroup,
        existing: &Value,
        issued: Instant,
    ) -> Result<ObservationChange, FhirMappingError> {
        let Some(old) = existing
            .as_object()
            .filter(|o| o.get("resourceType").and_then(Value::as_str) == Some("Observation"))
        else {
            return Err(FhirMappingError::NotSupported {
                message: "the existing resource is not an Observation".into(),
            });
        };
        let mut o = old.clone();
        let old_start = existing
            .pointer("/effectivePeriod/start")
            .and_then(Value::as_str)
            .and_then(Instant::parse);
        let old_end = existing
            .pointer("/effectivePeriod/end")
            .and_then(Value::as_str)
            .and_then(Instant::parse);
        let start = old_start.map_or(g.start, |s| s.min(g.start));
        let end = old_end.map_or(g.end, |e| e.max(g.end));
        let prior_start = old_start.unwrap_or(g.start);
        o.insert("effectivePeriod".into(), period_json(start, end));
        if t.category.is_empty() {
            o.shift_remove("category");
        } else {
            o.insert(
                "category".into(),
                Value::Array(
                    t.category
                        .iter()
                        .map(|c| concept(&c.codes, None, c.text.as_deref()))
                        .collect(),
                ),
            );
        }
        if let Some(v) = &t.value {
            let prior = value_entry(old).map(|(k, x)| (k, x, prior_start));
            if let Some((k, val)) = build_value(t, v, g, (start, end), prior)? {
                for key in VALUE_KEYS {
                    o.shift_remove(key);
                }
                o.insert(k.into(), val);
            }
        }
        let mut comps: Vec<Value> = old
            .get("component")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for c in &t.components {
            let pos = comps
                .iter()
                .position(|x| is_component_for(x, &c.value.value_name));
            let prior = pos
                .and_then(|p| comps[p].as_object())
                .and_then(value_entry)
                .map(|(k, x)| (k, x, prior_start));
            if let Some((k, val)) = build_value(t, &c.value, g, (start, end), prior)? {
                match pos.and_then(|p| comps[p].as_object_mut()) {
                    Some(m) => {
                        let stale: Vec<String> = m
                            .keys()
                            .filter(|k| k.starts_with("value"))
                            .cloned()
                            .collect();
                        for s in stale {
                            m.shift_remove(&s);
                        }
                        m.insert(k.into(), val);
                    }
                    None => {
                        let mut m = Map::new();
                        m.insert(
                            "code".into(),
                            concept(
                                &c.codes,
                                Some(&c.value.value_name),
                                Some(&c.value.value_name),
                            ),
                        );
                        m.insert(k.into(), val);
                        comps.push(Value::Object(m));
                    }
                }
            }
        }
        if !comps.is_empty() {
            o.insert("component".into(), Value::Array(comps));
        }
        // Only a change of content makes a write; status, issued and meta are bookkeeping.
        let strip = |m: &Map<String, Value>| -> Map<String, Value> {
            let mut c = m.clone();
            for k in ["status", "issued", "meta"] {
                c.shift_remove(k);
            }
            c
        };
        if strip(&o) == strip(old) {
            return Ok(ObservationChange::Unchanged);
        }
        o.insert("status".into(), Value::String("amended".into()));
        o.insert("issued".into(), Value::String(issued.to_string()));
        Ok(ObservationChange::Update(Value::Object(o)))
    }

    fn template_set() -> FhirTemplateSet {
        FhirTemplateSet::parse(
            r#"{"templateType": "CollectionFhir", "template": [
              {"templateType": "CodeValueFhir", "template": {"typeName": "hr", "periodInterval": 60,
                "codes": [{"code": "8867-4", "system": "http://loinc.org"}],
                "value": {"valueName": "hr", "valueType": "SampledData", "defaultPeriod": 1000}}},
              {"templateType": "CodeValueFhir", "template": {"typeName": "bp", "periodInterval": 60,
                "codes": [{"code": "85354-9"}], "category": [{"text": "vitals"}],
                "components": [
                  {"codes": [{"code": "8480-6"}], "value": {"valueName": "sys", "valueType": "SampledData", "defaultPeriod": 1000}},
                  {"codes": [{"code": "8462-4"}], "value": {"valueName": "dia", "valueType": "SampledData", "defaultPeriod": 1000}}]}},
              {"templateType": "CodeValueFhir", "template": {"typeName": "temp", "codes": [{"code": "8310-5"}],
                "value": {"valueName": "t", "valueType": "Quantity", "unit": "Cel"}}}]}"#,
        )
        .unwrap()
    }

    fn measurement(ty: &str, second: i64, props: &[(&str, &str)]) -> Measurement {
        Measurement {
            type_name: ty.into(),
            occurrence_time: Instant(
                Instant::parse("2019-03-01T10:00:00Z").unwrap().0 + second * S,
            )
            .to_string(),
            device_id: "d".into(),
            patient_id: Some("p".into()),
            encounter_id: None,
            correlation_id: None,
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn merge_matches_the_copying_merge() {
        let set = template_set();
        let id = Identity {
            patient_id: "p".into(),
            device_id: "d".into(),
            encounter_id: None,
        };
        let issued = Instant::parse("2020-01-01T00:00:00Z").unwrap();
        let mut r = Rng(0x1234_5678_9ABC_DEF1);
        let mut compared = 0;
        for round in 0..600 {
            let ty = ["hr", "bp", "temp"][round % 3];
            let props = |r: &mut Rng| -> Vec<(String, String)> {
                let mut p = Vec::new();
                for name in ["hr", "sys", "dia", "t"] {
                    if r.next(4) > 0 {
                        p.push((name.to_string(), (60 + r.next(60)).to_string()));
                    }
                }
                p
            };
            let make = |r: &mut Rng, n: i64| -> Vec<Measurement> {
                (0..n)
                    .map(|_| {
                        let mut m = measurement(ty, r.next(3600), &[]);
                        m.properties = props(r);
                        if ty == "temp" {
                            m.occurrence_time = measurement(ty, 7, &[]).occurrence_time;
                        }
                        m
                    })
                    .collect()
            };
            let n = 1 + r.next(5);
            let first = make(&mut r, n);
            let Some(g1) = group(&first, &set).groups.into_iter().next() else {
                continue;
            };
            let Ok(ObservationChange::Create(mut existing)) =
                set.observation_for_at(&g1, &id, None, issued)
            else {
                continue;
            };
            // Stored resources carry more than Vigil writes.
            match r.next(5) {
                0 => existing["meta"] = serde_json::json!({"versionId": "3"}),
                1 => existing["valueInteger"] = serde_json::json!(5),
                2 => existing["component"] = serde_json::json!([]),
                3 => existing["note"] = serde_json::json!([{"text": "n"}]),
                _ => {}
            }
            let n = 1 + r.next(5);
            let second = if r.next(4) == 0 {
                first.clone()
            } else {
                make(&mut r, n)
            };
            let Some(g2) = group(&second, &set).groups.into_iter().next() else {
                continue;
            };
            let t = set.template(ty).unwrap();
            let new = merge(t, &g2, &existing, issued);
            let old = merge_reference(t, &g2, &existing, issued);
            let text = |c: &Result<ObservationChange, FhirMappingError>| match c {
                Ok(ObservationChange::Update(v)) => format!("update {v}"),
                other => format!("{other:?}"),
            };
            assert_eq!(text(&new), text(&old), "{existing}");
            compared += 1;
        }
        assert!(compared > 300, "{compared}");
    }
}
