//! The typed values a search index stores, one kind per search-parameter type.
//!
//! The values are designed for FHIR search semantics rather than for round-tripping the
//! resource: dates become instant ranges, quantities carry a canonical UCUM form, strings
//! a normalized form, references their parsed parts. Backends (embedded and PostgreSQL)
//! store them as they are and evaluate prefixes and modifiers against them.
//!
//! Text is `Cow<'a, str>`: borrowed from the indexed resource's JSON wherever the value
//! is the text as written (systems, codes, references, ...), owned where it is derived
//! (normalized strings, canonical units). Extraction thus copies little; a value that
//! must outlive the resource is made independent with `into_owned()`.

use rust_decimal::Decimal;
use std::borrow::Cow;
use vigil_fhirpath::temporal::days_from_civil;
use vigil_fhirpath::{DateTime, Precision};

/// One value of one search parameter for one resource.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue<'a> {
    /// For `number` parameters.
    Number(NumberValue),
    /// For `date` parameters.
    Date(DateValue),
    /// For `string` parameters (and `_text`, `_content`).
    String(StringValue<'a>),
    /// For `token` parameters.
    Token(TokenValue<'a>),
    /// For `reference` parameters.
    Reference(ReferenceValue<'a>),
    /// For `quantity` parameters.
    Quantity(QuantityValue<'a>),
    /// For `uri` parameters.
    Uri(UriValue<'a>),
    /// A composite's tuple: one value per component, in the order of the definition.
    Composite(Vec<IndexValue<'a>>),
    /// The special `near` parameter: `Location.position`.
    Position(PositionValue),
}

/// A number (`decimal`, `integer`, ...) or a `Range` indexed by a number parameter.
///
/// `value` is the number exactly as written: its scale is its precision (`1.50` has scale
/// 2), which `ap` and the implicit-range rules need. `low`/`high` are the interval the
/// value stands for: for a plain number its implicit precision range (`100` → `[99.5,
/// 100.5]`), for a `Range` its bounds (`None` = unbounded, and `value` is `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct NumberValue {
    /// The number as written; `None` for a Range.
    pub value: Option<Decimal>,
    /// Lower bound (inclusive); `None` = unbounded.
    pub low: Option<Decimal>,
    /// Upper bound (inclusive); `None` = unbounded.
    pub high: Option<Decimal>,
}

impl NumberValue {
    /// A plain number with its implicit precision range.
    pub fn exact(value: Decimal) -> NumberValue {
        let (low, high) = implicit_range(value);
        NumberValue {
            value: Some(value),
            low: Some(low),
            high: Some(high),
        }
    }
}

/// The implicit range of a decimal at its written precision: `±0.5` in its last digit
/// (`1.50` → `[1.495, 1.505]`), as FHIR search defines for `eq` on numbers.
pub fn implicit_range(value: Decimal) -> (Decimal, Decimal) {
    // half a unit of the last written digit: 5 × 10^-(scale+1)
    let half = Decimal::new(5, value.scale().saturating_add(1).min(28));
    (
        value.checked_sub(half).unwrap_or(value),
        value.checked_add(half).unwrap_or(value),
    )
}

/// A date/time range as inclusive instants in milliseconds since 1970-01-01T00:00:00Z.
///
/// A value covers the whole period its precision implies: `2013` is
/// `[2013-01-01T00:00:00.000Z, 2013-12-31T23:59:59.999Z]`, a dateTime to the second covers
/// that second. A `Period` runs from its start's low to its end's high; a missing start or
/// end is unbounded (`None`), as the specification reads an open Period. Dates and
/// date-times without a timezone (dates never have one; date-times with a time must, but
/// some data lacks it) are read as UTC — a documented choice: the server has no better
/// knowledge of the author's zone, and UTC keeps indexing independent of server settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateValue {
    /// The first millisecond covered; `None` = unbounded (open Period start).
    pub low: Option<i64>,
    /// The last millisecond covered; `None` = unbounded (open Period end).
    pub high: Option<i64>,
    /// The precision the value was written with (`None` for Periods and Timing bounds).
    pub precision: Option<Precision>,
}

impl DateValue {
    /// Parse a FHIR `date`, `dateTime` or `instant` (also a search value such as `2013-01`)
    /// into the range it covers. `None` if the text is not a valid date.
    pub fn from_fhir(text: &str) -> Option<DateValue> {
        DateTime::parse(text, true).and_then(|d| DateValue::from_datetime(&d))
    }

    /// The range a FHIRPath date/time covers at its precision.
    pub fn from_datetime(d: &DateTime) -> Option<DateValue> {
        let (low, high) = instant_range(d)?;
        Some(DateValue {
            low: Some(low),
            high: Some(high),
            precision: Some(d.precision),
        })
    }

    /// Whether the instant (ms since the epoch) lies within the range.
    pub fn contains(&self, instant: i64) -> bool {
        self.low.is_none_or(|l| l <= instant) && self.high.is_none_or(|h| instant <= h)
    }
}

/// Milliseconds since the epoch of the start and of the last millisecond of the period a
/// date/time covers. Timezones apply from hour precision on; missing ones are UTC.
pub(crate) fn instant_range(d: &DateTime) -> Option<(i64, i64)> {
    if !(1..=12).contains(&d.month) || d.day == 0 {
        return None;
    }
    let day_ms = |y: i32, m: u8, day: u8| days_from_civil(y, m, day).checked_mul(86_400_000);
    let (low, high) = match d.precision {
        Precision::Year => {
            let start = day_ms(d.year, 1, 1)?;
            (start, day_ms(d.year.checked_add(1)?, 1, 1)? - 1)
        }
        Precision::Month => {
            let start = day_ms(d.year, d.month, 1)?;
            let (ny, nm) = if d.month == 12 {
                (d.year.checked_add(1)?, 1)
            } else {
                (d.year, d.month + 1)
            };
            (start, day_ms(ny, nm, 1)? - 1)
        }
        Precision::Day => {
            let start = day_ms(d.year, d.month, d.day)?;
            (start, start + 86_400_000 - 1)
        }
        p => {
            let base = day_ms(d.year, d.month, d.day)?
                + i64::from(d.hour) * 3_600_000
                + i64::from(d.minute) * 60_000
                + i64::from(d.second) * 1000;
            let tz = i64::from(d.tz.unwrap_or(0)) * 60_000;
            let start = base - tz;
            match p {
                Precision::Hour => (start, start + 3_600_000 - 1),
                Precision::Minute => (start, start + 60_000 - 1),
                Precision::Second => (start, start + 999),
                _ => {
                    let t = start + i64::from(d.millis);
                    (t, t)
                }
            }
        }
    };
    Some((low, high))
}

/// A string as stored for `string` search: the original text and the form matching uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringValue<'a> {
    /// Lowercase, accents removed, whitespace collapsed (see [`normalize`](super::normalize)):
    /// what the default (starts-with) and `:contains` searches compare against.
    pub normalized: Cow<'a, str>,
    /// The original text, for `:exact`.
    pub exact: Cow<'a, str>,
}

impl<'a> StringValue<'a> {
    /// The value of a text as written in the resource.
    pub fn new(text: &'a str) -> StringValue<'a> {
        StringValue {
            normalized: super::text::normalize_cow(text),
            exact: Cow::Borrowed(text),
        }
    }

    /// The value with its text owned.
    pub fn into_owned(self) -> StringValue<'static> {
        StringValue {
            normalized: owned(self.normalized),
            exact: owned(self.exact),
        }
    }
}

/// A code system and code (an Identifier's type coding, for `:of-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coding<'a> {
    /// `Coding.system`.
    pub system: Option<Cow<'a, str>>,
    /// `Coding.code`.
    pub code: Option<Cow<'a, str>>,
}

/// A token: `system|code` plus the text `:text` searches.
///
/// - Coding: system, code, display as `text`.
/// - CodeableConcept: one token per coding, plus one with only `text` for `CodeableConcept.text`.
/// - Identifier: system, value as `code`, `type.text` as `text`, the type's codings in
///   `identifier_type` (for `:of-type` = type system|type code|value).
/// - ContactPoint: `ContactPoint.system` (phone, email, ...) as `system`, value as `code`.
/// - Quantity: its system and unit code.
/// - Primitives (code, string, uri, id, boolean, integer, ...): the text as `code`, no
///   system (`true`/`false` for booleans). The system of a bound `code` is not inferred.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenValue<'a> {
    /// The code system (Coding.system, Identifier.system, ContactPoint.system).
    pub system: Option<Cow<'a, str>>,
    /// The code (Coding.code, Identifier.value, ContactPoint.value, a primitive's text).
    pub code: Option<Cow<'a, str>>,
    /// What `:text` searches: Coding.display, CodeableConcept.text, Identifier.type.text.
    pub text: Option<Cow<'a, str>>,
    /// For Identifiers: the codings of `Identifier.type` (`:of-type`).
    pub identifier_type: Vec<Coding<'a>>,
}

/// How a reference was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceKind {
    /// `Patient/123` (or `Patient/123/_history/2`), relative to this server.
    Local,
    /// `http://server/fhir/Patient/123`: another (or this) server's RESTful URL.
    Absolute,
    /// `#p1`: a resource contained in the indexed resource.
    Contained,
    /// A canonical URL (`http://hl7.org/fhir/ValueSet/x|4.0.1`), or a uri used as a reference.
    Canonical,
    /// `urn:uuid:...` / `urn:oid:...` (Bundle-internal identities).
    Urn,
    /// A Reference with only an identifier (and perhaps a type): a logical reference.
    Logical,
    /// Anything else (a conditional reference, an unparseable string).
    Other,
}

/// A reference as stored for `reference` search and chaining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceValue<'a> {
    /// How the reference was written.
    pub kind: ReferenceKind,
    /// The reference as written (`Reference.reference`, or the canonical/uri text).
    pub reference: Option<Cow<'a, str>>,
    /// The target type: from the reference, from `Reference.type`, from the contained
    /// resource, or the type segment of a canonical URL.
    pub resource_type: Option<Cow<'a, str>>,
    /// The target's logical id (the contained resource's id for `#p1`).
    pub id: Option<Cow<'a, str>>,
    /// `_history` version of a reference, or the `|version` of a canonical.
    pub version: Option<Cow<'a, str>>,
    /// For absolute references, the server base (`http://server/fhir`).
    pub base_url: Option<Cow<'a, str>>,
    /// For absolute references and canonicals: the URL without `|version`.
    pub url: Option<Cow<'a, str>>,
    /// `Reference.identifier`, for `:identifier`.
    pub identifier: Option<TokenValue<'a>>,
    /// `Reference.display`.
    pub display: Option<Cow<'a, str>>,
}

impl<'a> ReferenceValue<'a> {
    pub(crate) fn empty(kind: ReferenceKind) -> ReferenceValue<'a> {
        ReferenceValue {
            kind,
            reference: None,
            resource_type: None,
            id: None,
            version: None,
            base_url: None,
            url: None,
            identifier: None,
            display: None,
        }
    }

    /// The value with its text owned.
    pub fn into_owned(self) -> ReferenceValue<'static> {
        ReferenceValue {
            kind: self.kind,
            reference: self.reference.map(owned),
            resource_type: self.resource_type.map(owned),
            id: self.id.map(owned),
            version: self.version.map(owned),
            base_url: self.base_url.map(owned),
            url: self.url.map(owned),
            identifier: self.identifier.map(TokenValue::into_owned),
            display: self.display.map(owned),
        }
    }

    /// Whether this is a reference to a contained resource (`#id`).
    pub fn is_contained(&self) -> bool {
        self.kind == ReferenceKind::Contained
    }

    /// The absolute URL of the target: the URL itself for absolute references and
    /// canonicals, `{server_base}/{type}/{id}` for local ones; `None` otherwise.
    pub fn absolute_url(&self, server_base: &str) -> Option<String> {
        match self.kind {
            ReferenceKind::Absolute | ReferenceKind::Canonical => {
                self.url.as_deref().map(str::to_string)
            }
            ReferenceKind::Local => Some(format!(
                "{}/{}/{}",
                server_base.trim_end_matches('/'),
                self.resource_type.as_deref()?,
                self.id.as_deref()?
            )),
            _ => None,
        }
    }
}

/// A quantity comparator as written in the data (`<5`: the true value is below 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>=`
    Ge,
    /// `>`
    Gt,
}

impl Comparator {
    /// The comparator of `Quantity.comparator`'s code.
    pub fn parse(s: &str) -> Option<Comparator> {
        Some(match s {
            "<" => Comparator::Lt,
            "<=" => Comparator::Le,
            ">=" => Comparator::Ge,
            ">" => Comparator::Gt,
            _ => return None,
        })
    }
}

/// A quantity in base UCUM units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalQuantity<'a> {
    /// The value in base units; `None` for a Range.
    pub value: Option<Decimal>,
    /// The lower bound in base units.
    pub low: Option<Decimal>,
    /// The upper bound in base units.
    pub high: Option<Decimal>,
    /// The canonical unit: base units with exponents (`g`, `m.s-2`, `g.m-3`, `1`).
    pub unit: Cow<'a, str>,
}

/// A Quantity (and subtypes: Age, Duration, ...), Money or Range indexed by a quantity
/// parameter.
///
/// `value` is as written (scale = precision). `low`/`high` are the interval it stands
/// for: the implicit precision range, narrowed/opened by a comparator (`<5` → `(∞, 5]`),
/// or a Range's bounds (`value` is then `None`). `canonical` is the same in base UCUM
/// units, present when the system is UCUM and the code is a unit this UCUM
/// implementation understands — so `5.4 mg` and `0.0054 g` index alike. Money has
/// system `urn:iso:std:iso:4217` and the currency as code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityValue<'a> {
    /// The value as written; `None` for a Range.
    pub value: Option<Decimal>,
    /// Lower bound (inclusive); `None` = unbounded.
    pub low: Option<Decimal>,
    /// Upper bound (inclusive); `None` = unbounded.
    pub high: Option<Decimal>,
    /// `Quantity.comparator`.
    pub comparator: Option<Comparator>,
    /// `Quantity.system` (`urn:iso:std:iso:4217` for Money).
    pub system: Option<Cow<'a, str>>,
    /// `Quantity.code` (the currency for Money).
    pub code: Option<Cow<'a, str>>,
    /// `Quantity.unit`, the human-readable unit.
    pub unit: Option<Cow<'a, str>>,
    /// The quantity in base UCUM units, when it is a UCUM quantity.
    pub canonical: Option<CanonicalQuantity<'a>>,
}

/// A uri (or canonical, with a `|version` split off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriValue<'a> {
    /// The uri (for a canonical, without its `|version`).
    pub uri: Cow<'a, str>,
    /// A canonical's version.
    pub version: Option<Cow<'a, str>>,
}

/// A geographic position (WGS84), for `near`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionValue {
    /// Degrees north.
    pub latitude: Decimal,
    /// Degrees east.
    pub longitude: Decimal,
}

fn owned(c: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(c.into_owned())
}

impl IndexValue<'_> {
    /// The value with all text owned, independent of the indexed resource.
    pub fn into_owned(self) -> IndexValue<'static> {
        match self {
            IndexValue::Number(n) => IndexValue::Number(n),
            IndexValue::Date(d) => IndexValue::Date(d),
            IndexValue::String(s) => IndexValue::String(s.into_owned()),
            IndexValue::Token(t) => IndexValue::Token(t.into_owned()),
            IndexValue::Reference(r) => IndexValue::Reference(r.into_owned()),
            IndexValue::Quantity(q) => IndexValue::Quantity(q.into_owned()),
            IndexValue::Uri(u) => IndexValue::Uri(UriValue {
                uri: owned(u.uri),
                version: u.version.map(owned),
            }),
            IndexValue::Composite(c) => {
                IndexValue::Composite(c.into_iter().map(IndexValue::into_owned).collect())
            }
            IndexValue::Position(p) => IndexValue::Position(p),
        }
    }
}

impl Coding<'_> {
    /// The value with its text owned.
    pub fn into_owned(self) -> Coding<'static> {
        Coding {
            system: self.system.map(owned),
            code: self.code.map(owned),
        }
    }
}

impl TokenValue<'_> {
    /// The value with its text owned.
    pub fn into_owned(self) -> TokenValue<'static> {
        TokenValue {
            system: self.system.map(owned),
            code: self.code.map(owned),
            text: self.text.map(owned),
            identifier_type: self
                .identifier_type
                .into_iter()
                .map(Coding::into_owned)
                .collect(),
        }
    }
}

impl QuantityValue<'_> {
    /// The value with its text owned.
    pub fn into_owned(self) -> QuantityValue<'static> {
        QuantityValue {
            value: self.value,
            low: self.low,
            high: self.high,
            comparator: self.comparator,
            system: self.system.map(owned),
            code: self.code.map(owned),
            unit: self.unit.map(owned),
            canonical: self.canonical.map(|c| CanonicalQuantity {
                value: c.value,
                low: c.low,
                high: c.high,
                unit: owned(c.unit),
            }),
        }
    }
}
