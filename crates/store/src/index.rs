//! Backend-independent helpers for search-index rows: extraction of a resource's rows
//! and a JSON form of index values (used for composite tuples and identifier types,
//! which have no fixed column layout).

use crate::api::OwnedIndexValue;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::str::FromStr;
use vigil_fhir::search::{
    CanonicalQuantity, Coding, Comparator, DateValue, IndexValue, NumberValue, PositionValue,
    QuantityValue, ReferenceKind, ReferenceValue, StringValue, TokenValue, UriValue,
};
use vigil_fhirpath::Precision;

/// The index rows of a resource: (parameter code, value). A resource the extractor
/// cannot index at all (unknown type) gives no rows, and a parameter whose expression
/// fails gives none for that parameter: indexing never fails a write, the server
/// validates before writing.
pub fn extract_rows(resource: &Value) -> Vec<(&'static str, IndexValue<'_>)> {
    match vigil_fhir::search::extract(resource) {
        Ok(x) => x
            .entries
            .into_iter()
            .map(|e| (e.param.code(), e.value))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A decimal as a float for range queries (text columns keep the exact value).
pub fn dec_f64(d: Option<Decimal>) -> Option<f64> {
    d.and_then(|d| d.to_f64())
}

/// A decimal as its exact text (`1.50` keeps its scale).
pub fn dec_text(d: Option<Decimal>) -> Option<String> {
    d.map(|d| d.to_string())
}

/// Parse a decimal written by [`dec_text`].
pub fn parse_dec(s: Option<&str>) -> Option<Decimal> {
    s.and_then(|s| Decimal::from_str(s).ok())
}

/// Precision as stored (0 = year ... 6 = millisecond).
pub fn precision_code(p: Precision) -> i64 {
    match p {
        Precision::Year => 0,
        Precision::Month => 1,
        Precision::Day => 2,
        Precision::Hour => 3,
        Precision::Minute => 4,
        Precision::Second => 5,
        Precision::Millisecond => 6,
    }
}

/// The precision of a stored code.
pub fn precision_from_code(c: i64) -> Option<Precision> {
    Some(match c {
        0 => Precision::Year,
        1 => Precision::Month,
        2 => Precision::Day,
        3 => Precision::Hour,
        4 => Precision::Minute,
        5 => Precision::Second,
        6 => Precision::Millisecond,
        _ => return None,
    })
}

/// Reference kind as stored.
pub fn kind_code(k: ReferenceKind) -> &'static str {
    match k {
        ReferenceKind::Local => "local",
        ReferenceKind::Absolute => "absolute",
        ReferenceKind::Contained => "contained",
        ReferenceKind::Canonical => "canonical",
        ReferenceKind::Urn => "urn",
        ReferenceKind::Logical => "logical",
        ReferenceKind::Other => "other",
    }
}

/// The reference kind of a stored code.
pub fn kind_from_code(s: &str) -> ReferenceKind {
    match s {
        "local" => ReferenceKind::Local,
        "absolute" => ReferenceKind::Absolute,
        "contained" => ReferenceKind::Contained,
        "canonical" => ReferenceKind::Canonical,
        "urn" => ReferenceKind::Urn,
        "logical" => ReferenceKind::Logical,
        _ => ReferenceKind::Other,
    }
}

/// Comparator as stored (the FHIR code).
pub fn comparator_code(c: Comparator) -> &'static str {
    match c {
        Comparator::Lt => "<",
        Comparator::Le => "<=",
        Comparator::Ge => ">=",
        Comparator::Gt => ">",
    }
}

fn s(c: &Option<Cow<'_, str>>) -> Value {
    c.as_deref()
        .map_or(Value::Null, |v| Value::String(v.to_string()))
}

fn d(x: Option<Decimal>) -> Value {
    x.map_or(Value::Null, |v| Value::String(v.to_string()))
}

/// Identifier type codings as JSON (`[{"system":..,"code":..}]`); `None` when empty.
pub fn codings_json(c: &[Coding<'_>]) -> Option<String> {
    if c.is_empty() {
        return None;
    }
    let v: Vec<Value> = c
        .iter()
        .map(|c| json!({"system": s(&c.system), "code": s(&c.code)}))
        .collect();
    Some(Value::Array(v).to_string())
}

/// Codings written by [`codings_json`].
pub fn codings_from_json(text: Option<&str>) -> Vec<Coding<'static>> {
    let Some(v) = text.and_then(|t| serde_json::from_str::<Value>(t).ok()) else {
        return Vec::new();
    };
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|c| Coding {
                    system: gs(c, "system"),
                    code: gs(c, "code"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn gs(v: &Value, k: &str) -> Option<Cow<'static, str>> {
    v.get(k)
        .and_then(Value::as_str)
        .map(|s| Cow::Owned(s.to_string()))
}

fn gd(v: &Value, k: &str) -> Option<Decimal> {
    parse_dec(v.get(k).and_then(Value::as_str))
}

fn token_json(t: &TokenValue<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("system".into(), s(&t.system));
    m.insert("code".into(), s(&t.code));
    m.insert("text".into(), s(&t.text));
    if let Some(types) = codings_json(&t.identifier_type) {
        m.insert(
            "types".into(),
            serde_json::from_str(&types).unwrap_or(Value::Null),
        );
    }
    m
}

fn token_from(v: &Value) -> TokenValue<'static> {
    TokenValue {
        system: gs(v, "system"),
        code: gs(v, "code"),
        text: gs(v, "text"),
        identifier_type: v
            .get("types")
            .map(|t| codings_from_json(Some(&t.to_string())))
            .unwrap_or_default(),
    }
}

/// An index value as JSON, tagged by kind (`{"kind":"token","system":..}`); decimals as
/// strings so they keep their scale. Used for composite tuples, whose components have
/// no fixed columns; [`value_from_json`] reads it back.
pub fn value_json(v: &IndexValue<'_>) -> Value {
    let mut m = Map::new();
    let kind = match v {
        IndexValue::Number(n) => {
            m.insert("value".into(), d(n.value));
            m.insert("low".into(), d(n.low));
            m.insert("high".into(), d(n.high));
            "number"
        }
        IndexValue::Date(x) => {
            m.insert("low".into(), x.low.map_or(Value::Null, Value::from));
            m.insert("high".into(), x.high.map_or(Value::Null, Value::from));
            m.insert(
                "precision".into(),
                x.precision
                    .map_or(Value::Null, |p| Value::from(precision_code(p))),
            );
            "date"
        }
        IndexValue::String(x) => {
            m.insert("normalized".into(), Value::String(x.normalized.to_string()));
            m.insert("exact".into(), Value::String(x.exact.to_string()));
            "string"
        }
        IndexValue::Token(t) => {
            m = token_json(t);
            "token"
        }
        IndexValue::Reference(r) => {
            m.insert("kind_of".into(), Value::from(kind_code(r.kind)));
            m.insert("reference".into(), s(&r.reference));
            m.insert("type".into(), s(&r.resource_type));
            m.insert("id".into(), s(&r.id));
            m.insert("version".into(), s(&r.version));
            m.insert("base_url".into(), s(&r.base_url));
            m.insert("url".into(), s(&r.url));
            m.insert("display".into(), s(&r.display));
            if let Some(i) = &r.identifier {
                m.insert("identifier".into(), Value::Object(token_json(i)));
            }
            "reference"
        }
        IndexValue::Quantity(q) => {
            m.insert("value".into(), d(q.value));
            m.insert("low".into(), d(q.low));
            m.insert("high".into(), d(q.high));
            m.insert(
                "comparator".into(),
                q.comparator
                    .map_or(Value::Null, |c| Value::from(comparator_code(c))),
            );
            m.insert("system".into(), s(&q.system));
            m.insert("code".into(), s(&q.code));
            m.insert("unit".into(), s(&q.unit));
            if let Some(c) = &q.canonical {
                m.insert(
                    "canonical".into(),
                    json!({"value": d(c.value), "low": d(c.low), "high": d(c.high),
                           "unit": c.unit.to_string()}),
                );
            }
            "quantity"
        }
        IndexValue::Uri(u) => {
            m.insert("uri".into(), Value::String(u.uri.to_string()));
            m.insert("version".into(), s(&u.version));
            "uri"
        }
        IndexValue::Composite(c) => {
            m.insert(
                "components".into(),
                Value::Array(c.iter().map(value_json).collect()),
            );
            "composite"
        }
        IndexValue::Position(p) => {
            m.insert("latitude".into(), Value::String(p.latitude.to_string()));
            m.insert("longitude".into(), Value::String(p.longitude.to_string()));
            "position"
        }
    };
    m.insert("kind".into(), Value::from(kind));
    Value::Object(m)
}

/// [`value_json`] as text, written directly: the same text as
/// `value_json(v).to_string()` (a test checks) without building the `Value` tree, which
/// cost several times more for the composite rows every Observation has.
pub fn value_json_text(v: &IndexValue<'_>) -> String {
    let mut w = JsonText(String::with_capacity(256));
    w.value(v);
    w.0
}

/// A JSON object writer for [`value_json_text`]: keys in the order written.
struct JsonText(String);

impl JsonText {
    fn key(&mut self, first: bool, k: &str) {
        if !first {
            self.0.push(',');
        }
        self.string(k);
        self.0.push(':');
    }

    fn string(&mut self, s: &str) {
        if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            // Nothing to escape (codes, systems, units: nearly always).
            self.0.push('"');
            self.0.push_str(s);
            self.0.push('"');
        } else if let Ok(escaped) = serde_json::to_string(s) {
            // serde_json's escaping, so the text is byte for byte what it would write.
            self.0.push_str(&escaped);
        }
    }

    fn opt(&mut self, first: bool, k: &str, v: Option<&str>) {
        self.key(first, k);
        match v {
            Some(v) => self.string(v),
            None => self.0.push_str("null"),
        }
    }

    fn dec(&mut self, first: bool, k: &str, v: Option<Decimal>) {
        self.key(first, k);
        match v {
            Some(v) => {
                let _ = write!(self.0, "\"{v}\"");
            }
            None => self.0.push_str("null"),
        }
    }

    fn int(&mut self, first: bool, k: &str, v: Option<i64>) {
        self.key(first, k);
        match v {
            Some(v) => {
                let _ = write!(self.0, "{v}");
            }
            None => self.0.push_str("null"),
        }
    }

    fn token(&mut self, t: &TokenValue<'_>) {
        self.opt(true, "system", t.system.as_deref());
        self.opt(false, "code", t.code.as_deref());
        self.opt(false, "text", t.text.as_deref());
        if let Some(types) = codings_json(&t.identifier_type) {
            self.key(false, "types");
            self.0.push_str(&types);
        }
    }

    fn value(&mut self, v: &IndexValue<'_>) {
        self.0.push('{');
        let kind = match v {
            IndexValue::Number(n) => {
                self.dec(true, "value", n.value);
                self.dec(false, "low", n.low);
                self.dec(false, "high", n.high);
                "number"
            }
            IndexValue::Date(x) => {
                self.int(true, "low", x.low);
                self.int(false, "high", x.high);
                self.int(false, "precision", x.precision.map(precision_code));
                "date"
            }
            IndexValue::String(x) => {
                self.opt(true, "normalized", Some(&x.normalized));
                self.opt(false, "exact", Some(&x.exact));
                "string"
            }
            IndexValue::Token(t) => {
                self.token(t);
                "token"
            }
            IndexValue::Reference(r) => {
                self.opt(true, "kind_of", Some(kind_code(r.kind)));
                self.opt(false, "reference", r.reference.as_deref());
                self.opt(false, "type", r.resource_type.as_deref());
                self.opt(false, "id", r.id.as_deref());
                self.opt(false, "version", r.version.as_deref());
                self.opt(false, "base_url", r.base_url.as_deref());
                self.opt(false, "url", r.url.as_deref());
                self.opt(false, "display", r.display.as_deref());
                if let Some(i) = &r.identifier {
                    self.key(false, "identifier");
                    self.0.push('{');
                    self.token(i);
                    self.0.push('}');
                }
                "reference"
            }
            IndexValue::Quantity(q) => {
                self.dec(true, "value", q.value);
                self.dec(false, "low", q.low);
                self.dec(false, "high", q.high);
                self.opt(false, "comparator", q.comparator.map(comparator_code));
                self.opt(false, "system", q.system.as_deref());
                self.opt(false, "code", q.code.as_deref());
                self.opt(false, "unit", q.unit.as_deref());
                if let Some(c) = &q.canonical {
                    self.key(false, "canonical");
                    self.0.push('{');
                    self.dec(true, "value", c.value);
                    self.dec(false, "low", c.low);
                    self.dec(false, "high", c.high);
                    self.opt(false, "unit", Some(&c.unit));
                    self.0.push('}');
                }
                "quantity"
            }
            IndexValue::Uri(u) => {
                self.opt(true, "uri", Some(&u.uri));
                self.opt(false, "version", u.version.as_deref());
                "uri"
            }
            IndexValue::Composite(c) => {
                self.key(true, "components");
                self.0.push('[');
                for (i, part) in c.iter().enumerate() {
                    if i > 0 {
                        self.0.push(',');
                    }
                    self.value(part);
                }
                self.0.push(']');
                "composite"
            }
            IndexValue::Position(p) => {
                self.opt(true, "latitude", Some(&p.latitude.to_string()));
                self.opt(false, "longitude", Some(&p.longitude.to_string()));
                "position"
            }
        };
        self.opt(false, "kind", Some(kind));
        self.0.push('}');
    }
}

/// Read back a value written by [`value_json`]; `None` if it is not one.
pub fn value_from_json(v: &Value) -> Option<OwnedIndexValue> {
    Some(match v.get("kind")?.as_str()? {
        "number" => IndexValue::Number(NumberValue {
            value: gd(v, "value"),
            low: gd(v, "low"),
            high: gd(v, "high"),
        }),
        "date" => IndexValue::Date(DateValue {
            low: v.get("low").and_then(Value::as_i64),
            high: v.get("high").and_then(Value::as_i64),
            precision: v
                .get("precision")
                .and_then(Value::as_i64)
                .and_then(precision_from_code),
        }),
        "string" => IndexValue::String(StringValue {
            normalized: gs(v, "normalized")?,
            exact: gs(v, "exact")?,
        }),
        "token" => IndexValue::Token(token_from(v)),
        "reference" => IndexValue::Reference(ReferenceValue {
            kind: kind_from_code(v.get("kind_of").and_then(Value::as_str).unwrap_or("")),
            reference: gs(v, "reference"),
            resource_type: gs(v, "type"),
            id: gs(v, "id"),
            version: gs(v, "version"),
            base_url: gs(v, "base_url"),
            url: gs(v, "url"),
            identifier: v.get("identifier").map(token_from),
            display: gs(v, "display"),
        }),
        "quantity" => IndexValue::Quantity(QuantityValue {
            value: gd(v, "value"),
            low: gd(v, "low"),
            high: gd(v, "high"),
            comparator: v
                .get("comparator")
                .and_then(Value::as_str)
                .and_then(Comparator::parse),
            system: gs(v, "system"),
            code: gs(v, "code"),
            unit: gs(v, "unit"),
            canonical: match v.get("canonical") {
                Some(c) if c.is_object() => Some(CanonicalQuantity {
                    value: gd(c, "value"),
                    low: gd(c, "low"),
                    high: gd(c, "high"),
                    unit: gs(c, "unit")?,
                }),
                _ => None,
            },
        }),
        "uri" => IndexValue::Uri(UriValue {
            uri: gs(v, "uri")?,
            version: gs(v, "version"),
        }),
        "composite" => IndexValue::Composite(
            v.get("components")?
                .as_array()?
                .iter()
                .map(value_from_json)
                .collect::<Option<Vec<_>>>()?,
        ),
        "position" => IndexValue::Position(PositionValue {
            latitude: gd(v, "latitude")?,
            longitude: gd(v, "longitude")?,
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let obs = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 120.50, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}],
            "effectiveDateTime": "2024-01-02T03:04:05Z",
            "subject": {"reference": "Patient/p1", "display": "P"}});
        let rows = extract_rows(&obs);
        assert!(rows
            .iter()
            .any(|(_, v)| matches!(v, IndexValue::Composite(_))));
        for (_, v) in rows {
            let back = value_from_json(&value_json(&v)).unwrap();
            assert_eq!(back, v.into_owned());
        }
    }

    /// The direct writer gives the very text of the `Value` form, for every value of
    /// every official example (each also as a one-component composite) and for values
    /// with identifiers, identifier types and text that needs escaping.
    #[test]
    fn json_text_is_the_value_forms_text() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/fhir-r4-examples");
        let mut bodies: Vec<Value> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect();
        bodies.push(json!({"resourceType": "Patient",
            "name": [{"family": "O\"Brien \\ \u{e9}\t\u{1}"}],
            "generalPractitioner": [{"identifier": {"system": "urn:npi", "value": "42",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NPI"}]}}}],
            "identifier": [{"system": "urn:mrn", "value": "1",
                "type": {"coding": [{"system": "s", "code": "MR"}, {"code": "X"}], "text": "t"}}]}));
        bodies.push(json!({"resourceType": "Location",
            "position": {"latitude": 52.5200, "longitude": -13.405}}));
        let mut kinds = std::collections::BTreeSet::new();
        let mut checked = 0;
        for body in &bodies {
            for (_, v) in extract_rows(body) {
                kinds.insert(value_json(&v)["kind"].as_str().unwrap().to_string());
                let wrapped = IndexValue::Composite(vec![v.clone()]);
                for v in [v, wrapped] {
                    assert_eq!(value_json_text(&v), value_json(&v).to_string());
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "{checked}");
        assert_eq!(kinds.len(), 9, "{kinds:?}");
    }
}
