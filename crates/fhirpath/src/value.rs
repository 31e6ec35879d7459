//! The values FHIRPath expressions produce: System primitives and FHIR nodes (borrowed
//! from the input JSON, with their FHIR type).

use crate::temporal::{DateTime, Time};
use crate::ucum;
use rust_decimal::prelude::*;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::fmt;
use std::rc::Rc;
use std::str::FromStr;
use vigil_fhir_model::{Model, NodeId, TypeKind};

/// A string borrowed from the input or produced by evaluation.
#[derive(Clone)]
pub enum Str<'a> {
    Borrowed(&'a str),
    Shared(Rc<str>),
}

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Str::Borrowed(s) => s,
            Str::Shared(s) => s,
        }
    }
}

impl fmt::Debug for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl From<String> for Str<'_> {
    fn from(s: String) -> Self {
        Str::Shared(s.into())
    }
}

/// A System.Quantity: a decimal value and a unit (UCUM code or calendar duration keyword).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    pub value: Decimal,
    pub unit: Rc<str>,
}

impl Quantity {
    pub fn new(value: Decimal, unit: &str) -> Quantity {
        Quantity {
            value,
            unit: unit.into(),
        }
    }

    /// The UCUM form of the unit: calendar keywords map to their UCUM definite durations
    /// (`year` -> `a`), as the FHIRPath spec does for comparison of `s` and below.
    fn ucum_unit(&self) -> &str {
        match &*self.unit {
            "year" | "years" => "a",
            "month" | "months" => "mo",
            "week" | "weeks" => "wk",
            "day" | "days" => "d",
            "hour" | "hours" => "h",
            "minute" | "minutes" => "min",
            "second" | "seconds" => "s",
            "millisecond" | "milliseconds" => "ms",
            u => u,
        }
    }

    fn is_calendar(&self) -> bool {
        // Years and months vary in length: they are not comparable with UCUM `a` and `mo`.
        matches!(&*self.unit, "year" | "years" | "month" | "months")
    }

    /// Compare two quantities after unit conversion; `None` if not comparable.
    pub fn compare(&self, other: &Quantity) -> Option<Ordering> {
        if self.unit == other.unit {
            return Some(self.value.cmp(&other.value));
        }
        // Calendar durations above a second are not equal to the UCUM definite ones.
        if self.is_calendar() != other.is_calendar() {
            return None;
        }
        let (a, ca) = ucum::to_canonical(self.value, self.ucum_unit())?;
        let (b, cb) = ucum::to_canonical(other.value, other.ucum_unit())?;
        if ca.dims != cb.dims || ca.arbitrary != cb.arbitrary {
            return None;
        }
        Some(a.normalize().cmp(&b.normalize()))
    }

    /// Equivalence (`~`): calendar and UCUM durations match, values compared at the
    /// precision of the less precise operand.
    pub fn equivalent(&self, other: &Quantity) -> bool {
        let (Some((a, ca)), Some((b, cb))) = (
            ucum::to_canonical(self.value, self.ucum_unit()),
            ucum::to_canonical(other.value, other.ucum_unit()),
        ) else {
            return self.unit == other.unit && decimal_equivalent(self.value, other.value);
        };
        ca.dims == cb.dims && ca.arbitrary == cb.arbitrary && decimal_equivalent(a, b)
    }
}

/// Decimal equivalence: equal when rounded to the precision of the less precise value.
pub fn decimal_equivalent(a: Decimal, b: Decimal) -> bool {
    let scale = a.scale().min(b.scale());
    a.round_dp(scale) == b.round_dp(scale)
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_calendar_keyword(&self.unit) {
            write!(f, "{} {}", self.value, self.unit)
        } else {
            write!(f, "{} '{}'", self.value, self.unit)
        }
    }
}

pub fn is_calendar_keyword(u: &str) -> bool {
    matches!(
        u,
        "year"
            | "years"
            | "month"
            | "months"
            | "week"
            | "weeks"
            | "day"
            | "days"
            | "hour"
            | "hours"
            | "minute"
            | "minutes"
            | "second"
            | "seconds"
            | "millisecond"
            | "milliseconds"
    )
}

/// Where a node sits in the FHIR model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeType {
    /// A type or backbone element of the model.
    Known(NodeId),
    /// JSON that the model does not describe (extension content of unknown shape, user
    /// variables); its type is inferred from the JSON.
    Unknown,
}

/// A FHIR element: its JSON value, the `_name` sibling holding a primitive's id and
/// extensions, and its type.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub value: Option<&'a Value>,
    pub ext: Option<&'a Value>,
    pub ty: NodeType,
}

impl<'a> Node<'a> {
    /// A node for a resource, typed from its `resourceType`.
    pub fn resource(value: &'a Value) -> Node<'a> {
        let ty = crate::eval::resource_type(value);
        Node {
            value: Some(value),
            ext: None,
            ty,
        }
    }

    /// A node for JSON of a known FHIR type name (`Quantity`, `date`, `Patient`).
    pub fn typed(value: &'a Value, type_name: &str) -> Node<'a> {
        let tables = crate::lookup::tables();
        if tables.is_resource_type(type_name)
            || type_name == "Resource"
            || type_name == "DomainResource"
        {
            return Node::resource(value);
        }
        let ty = tables
            .type_id(type_name)
            .map_or(NodeType::Unknown, NodeType::Known);
        Node {
            value: Some(value),
            ext: None,
            ty,
        }
    }

    /// A node for an element value with a known model node (e.g. a backbone element).
    pub fn with_def(value: Option<&'a Value>, ext: Option<&'a Value>, def: NodeId) -> Node<'a> {
        Node {
            value,
            ext,
            ty: NodeType::Known(def),
        }
    }

    pub fn def(&self) -> Option<&'static vigil_fhir_model::NodeDef> {
        match self.ty {
            NodeType::Known(id) => Some(Model::r4().node(id)),
            NodeType::Unknown => None,
        }
    }

    /// The FHIR type name (`Patient`, `HumanName`, `BackboneElement`, `string`), or the
    /// System type inferred from JSON for untyped nodes.
    pub fn type_name(&self) -> &'static str {
        if let Some(d) = self.def() {
            return &d.type_name;
        }
        match self.value {
            Some(Value::Bool(_)) => "boolean",
            Some(Value::Number(n)) => {
                if n.is_i64() {
                    "integer"
                } else {
                    "decimal"
                }
            }
            Some(Value::String(_)) => "string",
            _ => "Element",
        }
    }

    pub fn is_primitive(&self) -> bool {
        match self.def() {
            Some(d) => d.kind == TypeKind::Primitive,
            None => !matches!(
                self.value,
                Some(Value::Object(_)) | Some(Value::Array(_)) | None
            ),
        }
    }

    pub fn is_resource(&self) -> bool {
        self.def().is_some_and(|d| d.kind == TypeKind::Resource)
    }

    pub fn object(&self) -> Option<&'a Map<String, Value>> {
        self.value.and_then(Value::as_object)
    }

    /// The System value of a primitive node, if it has one.
    pub fn to_system(&self) -> Option<Item<'a>> {
        if !self.is_primitive() {
            return None;
        }
        let v = self.value?;
        let system = self.def().and_then(|d| d.system_type.as_deref());
        Some(match (v, system) {
            (Value::Bool(b), _) => Item::Boolean(*b),
            (Value::Number(n), Some("Integer")) => Item::Integer(n.as_i64()?),
            (Value::Number(n), Some("Decimal")) => Item::Decimal(parse_decimal(n.as_str())?),
            (Value::Number(n), None) => match n.as_i64() {
                Some(i) => Item::Integer(i),
                None => Item::Decimal(parse_decimal(n.as_str())?),
            },
            (Value::Number(n), _) => Item::String(Str::Shared(n.as_str().into())),
            (Value::String(s), Some("Date")) => Item::Date(DateTime::parse(s, false)?),
            (Value::String(s), Some("DateTime")) => {
                let d = DateTime::parse(s, true)?;
                Item::DateTime(d)
            }
            (Value::String(s), Some("Time")) => Item::Time(Time::parse(s)?),
            (Value::String(s), Some("Integer")) => Item::Integer(s.parse().ok()?),
            (Value::String(s), Some("Decimal")) => Item::Decimal(parse_decimal(s)?),
            (Value::String(s), Some("Boolean")) => Item::Boolean(s == "true"),
            (Value::String(s), _) => Item::String(Str::Borrowed(s)),
            _ => return None,
        })
    }

    /// A FHIR Quantity (or Age, Duration, ...) node as a System.Quantity: the UCUM code
    /// when the system is UCUM, else the human unit.
    pub fn to_quantity(&self) -> Option<Quantity> {
        let def = self.def()?;
        if !crate::lookup::tables().node_is_subtype(def.id, "Quantity") {
            return None;
        }
        let obj = self.object()?;
        let get = |k: &str| crate::lookup::get(obj, k);
        let value = get("value").and_then(|v| match v {
            Value::Number(n) => parse_decimal(n.as_str()),
            _ => None,
        })?;
        let ucum_system =
            get("system").and_then(Value::as_str) == Some("http://unitsofmeasure.org");
        let unit = match (
            get("code").and_then(Value::as_str),
            get("unit").and_then(Value::as_str),
        ) {
            (Some(code), _) if ucum_system => code,
            (_, Some(unit)) => unit,
            (Some(code), None) => code,
            (None, None) => "1",
        };
        Some(Quantity::new(value, unit))
    }
}

pub fn parse_decimal(s: &str) -> Option<Decimal> {
    Decimal::from_str(s)
        .ok()
        .or_else(|| Decimal::from_scientific(s).ok())
}

/// One item of a FHIRPath collection.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    Boolean(bool),
    Integer(i64),
    Long(i64),
    Decimal(Decimal),
    String(Str<'a>),
    Date(DateTime),
    DateTime(DateTime),
    Time(Time),
    Quantity(Quantity),
    Node(Node<'a>),
    /// The result of `type()`: a type's namespace and name.
    Type {
        namespace: &'static str,
        name: &'static str,
    },
}

pub type Collection<'a> = Vec<Item<'a>>;

impl<'a> Item<'a> {
    pub fn string(s: impl Into<Rc<str>>) -> Item<'a> {
        Item::String(Str::Shared(s.into()))
    }

    /// The item with FHIR primitives turned into their System values; complex nodes stay.
    pub fn system(&self) -> Item<'a> {
        match self {
            Item::Node(n) => n.to_system().unwrap_or_else(|| self.clone()),
            _ => self.clone(),
        }
    }

    /// The name of the item's type in its namespace (`System.Integer` or `FHIR.code`).
    pub fn type_info(&self) -> (&'static str, &'static str) {
        match self {
            Item::Boolean(_) => ("System", "Boolean"),
            Item::Integer(_) => ("System", "Integer"),
            Item::Long(_) => ("System", "Long"),
            Item::Decimal(_) => ("System", "Decimal"),
            Item::String(_) => ("System", "String"),
            Item::Date(_) => ("System", "Date"),
            Item::DateTime(_) => ("System", "DateTime"),
            Item::Time(_) => ("System", "Time"),
            Item::Quantity(_) => ("System", "Quantity"),
            Item::Node(n) => ("FHIR", n.type_name()),
            Item::Type { .. } => ("System", "TypeInfo"),
        }
    }

    pub fn as_str(&self) -> Option<Str<'a>> {
        match self.system() {
            Item::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.system() {
            Item::Boolean(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self.system() {
            Item::Integer(i) | Item::Long(i) => Some(i),
            _ => None,
        }
    }

    /// The quantity meaning of an item: a System Quantity or a FHIR Quantity node.
    pub fn as_quantity(&self) -> Option<Quantity> {
        match self {
            Item::Quantity(q) => Some(q.clone()),
            Item::Node(n) => n.to_quantity(),
            _ => None,
        }
    }

    /// The FHIR JSON (or JSON scalar) form of the item, as the `vigil fhirpath` command
    /// prints it.
    pub fn to_json(&self) -> Value {
        match self {
            Item::Boolean(b) => Value::Bool(*b),
            Item::Integer(i) | Item::Long(i) => Value::from(*i),
            Item::Decimal(d) => decimal_json(*d),
            Item::String(s) => Value::String(s.to_string()),
            Item::Date(d) | Item::DateTime(d) => Value::String(d.to_string()),
            Item::Time(t) => Value::String(t.to_string()),
            Item::Quantity(q) => {
                let mut m = Map::new();
                m.insert("value".into(), decimal_json(q.value));
                m.insert("unit".into(), Value::String(q.unit.to_string()));
                Value::Object(m)
            }
            Item::Node(n) => match (n.value, n.ext) {
                (Some(v), _) => v.clone(),
                (None, Some(e)) => e.clone(),
                (None, None) => Value::Null,
            },
            Item::Type { namespace, name } => {
                serde_json::json!({"namespace": namespace, "name": name})
            }
        }
    }
}

fn decimal_json(d: Decimal) -> Value {
    serde_json::from_str(&d.to_string()).unwrap_or(Value::Null)
}

impl fmt::Display for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.system() {
            Item::Boolean(b) => write!(f, "{b}"),
            Item::Integer(i) | Item::Long(i) => write!(f, "{i}"),
            Item::Decimal(d) => write!(f, "{d}"),
            Item::String(s) => write!(f, "{}", &*s),
            Item::Date(d) | Item::DateTime(d) => write!(f, "{d}"),
            Item::Time(t) => write!(f, "{t}"),
            Item::Quantity(q) => write!(f, "{q}"),
            other => write!(f, "{}", other.to_json()),
        }
    }
}
