//! Templates for Vigil's demo devices (pulse oximeter, BP cuff, thermometer, scale,
//! glucometer, wearable). Device bodies carry `type` and `measuredAt`; the device id is the
//! authenticated one from `SystemProperties.iothub-connection-device-id`.
//!
//! They are CalculatedContent rather than IotJsonPathContent: IotJsonPathContent's
//! timestamp is fixed to `Properties.iothub-creation-time-utc`/`iothub-enqueuedtime`, and
//! the reading's own `measuredAt` is the right time for an Observation.

/// The device (normalization) templates, a `CollectionContent` JSON text.
pub fn default_device_templates() -> &'static str {
    include_str!("../templates/devicecontent.json")
}

/// The FHIR mapping templates, a `CollectionFhir` JSON text (LOINC codes, UCUM units,
/// category `vital-signs`, one Observation per reading).
pub fn default_fhir_templates() -> &'static str {
    include_str!("../templates/fhirmapping.json")
}
