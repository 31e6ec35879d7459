//! FHIR search queries: parsing a query string (or form body) into typed clauses and
//! result parameters, and serialising them back (for paging links).
//!
//! ```
//! use vigil_fhir::search::{SearchQuery, SearchRegistry, SearchValue, Prefix};
//! let q = SearchQuery::parse(Some("Observation"),
//!     "code=http://loinc.org|29463-7&value-quantity=gt80|http://unitsofmeasure.org|kg&_count=10",
//!     SearchRegistry::r4()).unwrap();
//! assert_eq!(q.clauses.len(), 2);
//! let SearchValue::Quantity(v) = &q.clauses[1].values[0] else { panic!() };
//! assert_eq!(v.number.prefix, Prefix::Gt);
//! assert_eq!(q.count, Some(10));
//! ```
//!
//! Decisions the specification leaves open (each documented where it is implemented):
//! - `+` decodes to a space in query strings as well as in form bodies (most HTTP stacks
//!   do the same, and clients must send a literal plus as `%2B`); because date values
//!   with a timezone are often sent with a bare `+`, a space in a date value is read back
//!   as `+` (`2013-01-14T10:00 10:00` → `+10:00`).
//! - A date-time without a timezone is read as UTC, as indexing does (see
//!   [`DateValue`]).
//! - Empty values (`name=`, or the empty parts of `a,,b`) are ignored: they carry no
//!   criterion; a parameter whose values are all empty adds no clause.
//! - Unknown parameters, unknown modifiers and modifiers that do not apply to the
//!   parameter's type are collected in [`SearchQuery::unknown`] (lenient handling);
//!   [`SearchQuery::strict_errors`] turns them into an error for `handling=strict`.
//!   Malformed values of known parameters are always errors.
//! - Result parameters given twice (`_count`, `_total`, `_summary`, ...) are errors,
//!   except `_sort`, `_elements`, `_include`, `_revinclude` and `_type`, which accumulate.

use super::registry::{SearchParam, SearchRegistry};
use super::values::{implicit_range, DateValue};
use rust_decimal::Decimal;
use std::fmt::Write as _;
use std::str::FromStr;
use vigil_fhir_model::{Model, SearchParamType};

/// Why a query cannot be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A value that does not parse as the parameter's type requires.
    #[error("invalid value `{value}` for search parameter `{param}`: {reason}")]
    InvalidValue {
        /// The parameter name as written (with chain and modifier).
        param: String,
        /// The offending value (one of the comma-separated values).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A parameter that is known but used in a way that cannot be searched.
    #[error("invalid search parameter `{param}`: {reason}")]
    InvalidParameter {
        /// The parameter name as written.
        param: String,
        /// What is wrong.
        reason: String,
    },
    /// The resource type searched is not a concrete R4 resource type.
    #[error("unknown resource type `{0}`")]
    UnknownResourceType(String),
    /// Bad percent-encoding or invalid UTF-8.
    #[error("malformed query string: {0}")]
    Encoding(String),
    /// Unknown or unsupported parameters under strict handling (see
    /// [`SearchQuery::strict_errors`]).
    #[error("unsupported search parameters: {}", list_unknown(.0))]
    Unsupported(Vec<(String, String)>),
}

fn list_unknown(u: &[(String, String)]) -> String {
    u.iter()
        .map(|(n, r)| format!("`{n}` ({r})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A resolved search parameter: enough to evaluate it and to find its definition again
/// (`SearchRegistry::param_by_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamRef {
    /// The parameter's code (`subject`, `_id`).
    pub code: String,
    /// Its type, which decides how values are parsed and compared.
    pub param_type: SearchParamType,
    /// The canonical URL of the definition (for parameters whose definition differs per
    /// type, the one of the first type resolved).
    pub url: String,
    /// For composites: the component types in order.
    pub components: Vec<SearchParamType>,
}

impl ParamRef {
    fn of(p: &SearchParam) -> ParamRef {
        ParamRef {
            code: p.code().to_string(),
            param_type: p.param_type(),
            url: p.url().to_string(),
            components: p.component_types().collect(),
        }
    }
}

/// A comparison prefix of number, date and quantity values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefix {
    /// `eq` (the default): the search range contains the target.
    #[default]
    Eq,
    /// `ne`: not `eq`.
    Ne,
    /// `gt`: the target extends above the search value.
    Gt,
    /// `lt`: the target extends below the search value.
    Lt,
    /// `ge`: `gt` or `eq` (at the value's exact precision for numbers).
    Ge,
    /// `le`: `lt` or `eq` (at the value's exact precision for numbers).
    Le,
    /// `sa`: the target starts after the search range.
    Sa,
    /// `eb`: the target ends before the search range.
    Eb,
    /// `ap`: approximately (within 10%).
    Ap,
}

impl Prefix {
    /// The prefix's two letters.
    pub fn as_str(self) -> &'static str {
        match self {
            Prefix::Eq => "eq",
            Prefix::Ne => "ne",
            Prefix::Gt => "gt",
            Prefix::Lt => "lt",
            Prefix::Ge => "ge",
            Prefix::Le => "le",
            Prefix::Sa => "sa",
            Prefix::Eb => "eb",
            Prefix::Ap => "ap",
        }
    }

    /// The prefix of two letters, if they are one.
    pub fn parse(s: &str) -> Option<Prefix> {
        Some(match s {
            "eq" => Prefix::Eq,
            "ne" => Prefix::Ne,
            "gt" => Prefix::Gt,
            "lt" => Prefix::Lt,
            "ge" => Prefix::Ge,
            "le" => Prefix::Le,
            "sa" => Prefix::Sa,
            "eb" => Prefix::Eb,
            "ap" => Prefix::Ap,
            _ => return None,
        })
    }
}

/// A search modifier (`name:exact`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modifier {
    /// `:missing` (any type): value `true`/`false`.
    Missing,
    /// `:exact` (string): case- and accent-sensitive equality.
    Exact,
    /// `:contains` (string): substring of the normalized text.
    Contains,
    /// `:text` (token): starts-with on the display / text.
    Text,
    /// `:not` (token): none of the values matches (absent values included).
    Not,
    /// `:above` (token, uri): subsumes / is a prefix of.
    Above,
    /// `:below` (token, uri): subsumed by / starts with.
    Below,
    /// `:in` (token): in a value set.
    In,
    /// `:not-in` (token): not in a value set.
    NotIn,
    /// `:of-type` (token on Identifier): `type-system|type-code|value`.
    OfType,
    /// `:identifier` (reference): matches `Reference.identifier`.
    Identifier,
    /// `:[type]` (reference): the target's resource type.
    Type(String),
}

impl Modifier {
    /// The modifier as written after the `:`.
    pub fn as_str(&self) -> &str {
        match self {
            Modifier::Missing => "missing",
            Modifier::Exact => "exact",
            Modifier::Contains => "contains",
            Modifier::Text => "text",
            Modifier::Not => "not",
            Modifier::Above => "above",
            Modifier::Below => "below",
            Modifier::In => "in",
            Modifier::NotIn => "not-in",
            Modifier::OfType => "of-type",
            Modifier::Identifier => "identifier",
            Modifier::Type(t) => t,
        }
    }

    /// Whether the clause's values combine as "none matches" rather than "any matches".
    pub fn is_negated(&self) -> bool {
        matches!(self, Modifier::Not | Modifier::NotIn)
    }
}

/// A step from the resource searched to another one before the parameter applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// Chaining, `subject:Patient.`: follow a reference parameter to its targets.
    Chain {
        /// The reference parameter followed.
        param: ParamRef,
        /// The `:[type]` written on the link, if any.
        type_modifier: Option<String>,
        /// The types the link may reach that define the next parameter (just the
        /// written type when there is one).
        target_types: Vec<String>,
    },
    /// Reverse chaining, `_has:Observation:patient:`: resources of `resource_type`
    /// whose `param` references the current resource.
    Has {
        /// The referring resource type.
        resource_type: String,
        /// Its reference parameter that points back.
        param: ParamRef,
    },
}

/// Which system a token value requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSystem {
    /// `code`: any system (or none).
    Any,
    /// `|code`: no system at all.
    NoSystem,
    /// `system|code` or `system|`: exactly this system.
    Is(String),
}

/// A token search value: `[system]|[code]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenQuery {
    /// The system constraint.
    pub system: TokenSystem,
    /// The code; `None` for `system|` (any code in the system).
    pub code: Option<String>,
}

/// A number search value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberQuery {
    /// The comparison prefix.
    pub prefix: Prefix,
    /// The number as written (without prefix), for serialisation.
    pub text: String,
    /// The value.
    pub value: Decimal,
    /// Lower bound of the implicit precision range (`100` → 99.5; `1e2` → 95).
    pub low: Decimal,
    /// Upper bound of the implicit precision range.
    pub high: Decimal,
}

/// A date search value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateQuery {
    /// The comparison prefix.
    pub prefix: Prefix,
    /// The date as written (without prefix).
    pub text: String,
    /// The instants it covers at its precision (`2013` = the whole year).
    pub range: DateValue,
}

/// A quantity search value: `[prefix]number|system|code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityQuery {
    /// The number (prefix, value, implicit range).
    pub number: NumberQuery,
    /// The unit system; `None` when empty or absent.
    pub system: Option<String>,
    /// The unit code; `None` when empty or absent. Without system it matches
    /// `Quantity.code` or `Quantity.unit`.
    pub code: Option<String>,
}

/// How a reference search value was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceQueryKind {
    /// A bare id (`23`), or a bare id with a `:[type]` modifier.
    Id,
    /// `Type/id` or `Type/id/_history/vid`.
    Local,
    /// An absolute URL (`http://server/fhir/Type/id`, or any other URL / URN).
    Absolute,
    /// A canonical with a version, `url|version`.
    Canonical,
}

/// A reference search value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceQuery {
    /// How it was written.
    pub kind: ReferenceQueryKind,
    /// The target type (from `Type/id`, the URL, or a `:[type]` modifier).
    pub resource_type: Option<String>,
    /// The target id.
    pub id: Option<String>,
    /// The `_history` version, or a canonical's `|version`.
    pub version: Option<String>,
    /// For absolute values: the URL as written (without a canonical `|version`).
    pub url: Option<String>,
    /// For absolute RESTful URLs: the server base (before `/Type/id`).
    pub base_url: Option<String>,
}

/// One value of a clause, typed by the parameter type and modifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchValue {
    /// number parameters.
    Number(NumberQuery),
    /// date parameters.
    Date(DateQuery),
    /// quantity parameters.
    Quantity(QuantityQuery),
    /// string parameters (also `:text` on tokens): the unescaped text.
    String(String),
    /// `_text` / `_content` without modifier: every word must occur in the text.
    FullText(String),
    /// token parameters (also `:identifier` on references).
    Token(TokenQuery),
    /// `:of-type` on identifiers: type system, type code, identifier value.
    OfType {
        /// The type coding's system.
        system: String,
        /// The type coding's code.
        code: String,
        /// The identifier value.
        value: String,
    },
    /// reference parameters.
    Reference(ReferenceQuery),
    /// uri parameters, and value-set URLs of `:in` / `:not-in`.
    Uri(String),
    /// composite parameters: one value per component.
    Composite(Vec<SearchValue>),
    /// `:missing=true|false`.
    Missing(bool),
    /// special parameters (`near`): the value as written (still escaped).
    Special(String),
}

/// One AND-ed criterion: a parameter (possibly after chains), a modifier, OR-ed values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// Chains and reverse chains leading to the parameter, in order.
    pub hops: Vec<Hop>,
    /// The parameter the values apply to (on the type the hops reach).
    pub param: ParamRef,
    /// The modifier on the parameter.
    pub modifier: Option<Modifier>,
    /// The values, any of which may match (none, for negated modifiers).
    pub values: Vec<SearchValue>,
}

impl Clause {
    /// Whether the clause needs other resources (chains or `_has`).
    pub fn is_chained(&self) -> bool {
        !self.hops.is_empty()
    }

    /// The parameter name as it is serialised (`subject:Patient.name:exact`).
    pub fn name(&self) -> String {
        let mut s = String::new();
        for hop in &self.hops {
            match hop {
                Hop::Chain {
                    param,
                    type_modifier,
                    ..
                } => {
                    s.push_str(&param.code);
                    if let Some(t) = type_modifier {
                        s.push(':');
                        s.push_str(t);
                    }
                    s.push('.');
                }
                Hop::Has {
                    resource_type,
                    param,
                } => {
                    let _ = write!(s, "_has:{resource_type}:{}:", param.code);
                }
            }
        }
        s.push_str(&self.param.code);
        if let Some(m) = &self.modifier {
            s.push(':');
            s.push_str(m.as_str());
        }
        s
    }

    /// The values serialised as in a query (`a,b`, escaped).
    pub fn value_text(&self) -> String {
        self.values
            .iter()
            .map(value_text)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A `_sort` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The parameter sorted on.
    pub param: ParamRef,
    /// `-param`: descending.
    pub descending: bool,
}

/// An `_include` / `_revinclude` directive: `Type:param[:targetType]` or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// The type holding the reference parameter; `*` for the bare wildcard.
    pub source_type: String,
    /// The reference parameter; `None` for `*` / `Type:*` (all references).
    pub param: Option<String>,
    /// Only targets of this type.
    pub target_type: Option<String>,
    /// `:iterate` (or its R3 name `:recurse`): apply to included resources too.
    pub iterate: bool,
}

/// `_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMode {
    /// `none`
    None,
    /// `estimate`
    Estimate,
    /// `accurate`
    Accurate,
}

/// `_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryMode {
    /// `true`: summary elements only.
    True,
    /// `text`: text, id, meta and mandatory elements.
    Text,
    /// `data`: everything but the text.
    Data,
    /// `count`: the count only.
    Count,
    /// `false`: everything.
    False,
}

/// `_contained`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainedMode {
    /// `false` (default): only container resources.
    False,
    /// `true`: only contained resources.
    True,
    /// `both`.
    Both,
}

/// `_containedType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainedType {
    /// `container` (default): return the container.
    Container,
    /// `contained`: return the contained resource.
    Contained,
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchQuery {
    /// The type searched (`None` for a search across all types).
    pub resource_type: Option<String>,
    /// `_type`: the types of a system-level search.
    pub types: Vec<String>,
    /// The criteria, all of which must hold.
    pub clauses: Vec<Clause>,
    /// `_sort`, in order of significance.
    pub sort: Vec<SortKey>,
    /// `_count`.
    pub count: Option<u32>,
    /// `_total`.
    pub total: Option<TotalMode>,
    /// `_summary`.
    pub summary: Option<SummaryMode>,
    /// `_elements`.
    pub elements: Vec<String>,
    /// `_include`.
    pub include: Vec<Include>,
    /// `_revinclude`.
    pub revinclude: Vec<Include>,
    /// `_contained`.
    pub contained: Option<ContainedMode>,
    /// `_containedType`.
    pub contained_type: Option<ContainedType>,
    /// `_cursor`: the server's opaque paging position.
    pub cursor: Option<String>,
    /// `_format` and `_pretty`, kept for paging links.
    pub passthrough: Vec<(String, String)>,
    /// Parameters ignored, with the reason (unknown, unsupported modifier, ...).
    pub unknown: Vec<(String, String)>,
}

/// Result parameters given at most once.
const SINGLE: [&str; 6] = [
    "_count",
    "_total",
    "_summary",
    "_contained",
    "_containedType",
    "_cursor",
];

impl SearchQuery {
    /// Parse a URL query string (without the `?`): `&`-separated `name=value` pairs,
    /// percent-decoded, `+` as space. `resource_type` is `None` for system-level search.
    pub fn parse(
        resource_type: Option<&str>,
        query_string: &str,
        registry: &SearchRegistry,
    ) -> Result<SearchQuery, QueryError> {
        let pairs = decode_pairs(query_string)?;
        SearchQuery::from_pairs(resource_type, &pairs, registry)
    }

    /// Parse an `application/x-www-form-urlencoded` body of `POST [type]/_search` (the
    /// same decoding as [`SearchQuery::parse`]).
    pub fn parse_form(
        resource_type: Option<&str>,
        body: &str,
        registry: &SearchRegistry,
    ) -> Result<SearchQuery, QueryError> {
        SearchQuery::parse(resource_type, body, registry)
    }

    /// Build from already-decoded `(name, value)` pairs.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(
        resource_type: Option<&str>,
        pairs: &[(N, V)],
        registry: &SearchRegistry,
    ) -> Result<SearchQuery, QueryError> {
        let model = Model::r4();
        if let Some(rt) = resource_type {
            if registry.plans(rt).is_none() {
                return Err(QueryError::UnknownResourceType(rt.to_string()));
            }
        }
        let mut q = SearchQuery {
            resource_type: resource_type.map(str::to_string),
            ..SearchQuery::default()
        };
        // `_type` first: it decides what the other parameters resolve against.
        for (name, value) in pairs {
            if name.as_ref() == "_type" {
                for t in value.as_ref().split(',').filter(|t| !t.is_empty()) {
                    if registry.plans(t).is_none() {
                        return Err(QueryError::InvalidValue {
                            param: "_type".into(),
                            value: t.into(),
                            reason: "not a resource type".into(),
                        });
                    }
                    if !q.types.iter().any(|x| x == t) {
                        q.types.push(t.to_string());
                    }
                }
            }
        }
        let context: Vec<String> = match resource_type {
            Some(rt) => vec![rt.to_string()],
            None => q.types.clone(),
        };
        let parser = Parser { registry, model };
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            let (base, modifier) = match name.split_once(':') {
                Some((b, m)) => (b, Some(m)),
                None => (name, None),
            };
            if let Some(single) = SINGLE.iter().find(|s| **s == base) {
                if seen.contains(single) {
                    return Err(QueryError::InvalidParameter {
                        param: name.into(),
                        reason: "given more than once".into(),
                    });
                }
                seen.push(single);
            }
            let bad = |reason: &str| QueryError::InvalidValue {
                param: name.to_string(),
                value: value.to_string(),
                reason: reason.to_string(),
            };
            let no_modifier = |q: &mut SearchQuery| -> bool {
                if modifier.is_some() {
                    q.unknown
                        .push((name.to_string(), format!("{base} takes no modifier")));
                    return false;
                }
                true
            };
            match base {
                "_type" => {}
                "_sort" => {
                    if !no_modifier(&mut q) {
                        continue;
                    }
                    for key in value.split(',').filter(|k| !k.is_empty()) {
                        let (descending, code) = match key.strip_prefix('-') {
                            Some(c) => (true, c),
                            None => (false, key),
                        };
                        match parser.resolve(code, &context) {
                            Ok(r) => q.sort.push(SortKey {
                                param: r.param,
                                descending,
                            }),
                            Err(reason) => {
                                return Err(QueryError::InvalidValue {
                                    param: "_sort".into(),
                                    value: key.into(),
                                    reason,
                                })
                            }
                        }
                    }
                }
                "_count" => {
                    if no_modifier(&mut q) {
                        q.count = Some(
                            value
                                .parse::<u32>()
                                .map_err(|_| bad("expected a non-negative integer"))?,
                        );
                    }
                }
                "_total" => {
                    if no_modifier(&mut q) {
                        q.total = Some(match value {
                            "none" => TotalMode::None,
                            "estimate" => TotalMode::Estimate,
                            "accurate" => TotalMode::Accurate,
                            _ => return Err(bad("expected none, estimate or accurate")),
                        });
                    }
                }
                "_summary" => {
                    if no_modifier(&mut q) {
                        q.summary = Some(match value {
                            "true" => SummaryMode::True,
                            "text" => SummaryMode::Text,
                            "data" => SummaryMode::Data,
                            "count" => SummaryMode::Count,
                            "false" => SummaryMode::False,
                            _ => return Err(bad("expected true, text, data, count or false")),
                        });
                    }
                }
                "_elements" => {
                    if no_modifier(&mut q) {
                        for e in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                            if !e
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                            {
                                return Err(bad("element names are letters and digits"));
                            }
                            q.elements.push(e.to_string());
                        }
                    }
                }
                "_include" | "_revinclude" => {
                    let iterate = match modifier {
                        None => false,
                        Some("iterate" | "recurse") => true,
                        Some(m) => {
                            q.unknown
                                .push((name.to_string(), format!("unknown modifier :{m}")));
                            continue;
                        }
                    };
                    for v in value.split(',').filter(|v| !v.is_empty()) {
                        match parser.include(v, iterate) {
                            Ok(inc) if base == "_include" => q.include.push(inc),
                            Ok(inc) => q.revinclude.push(inc),
                            Err(reason) => q.unknown.push((format!("{name}={v}"), reason)),
                        }
                    }
                }
                "_contained" => {
                    if no_modifier(&mut q) {
                        q.contained = Some(match value {
                            "false" => ContainedMode::False,
                            "true" => ContainedMode::True,
                            "both" => ContainedMode::Both,
                            _ => return Err(bad("expected true, false or both")),
                        });
                    }
                }
                "_containedType" => {
                    if no_modifier(&mut q) {
                        q.contained_type = Some(match value {
                            "container" => ContainedType::Container,
                            "contained" => ContainedType::Contained,
                            _ => return Err(bad("expected container or contained")),
                        });
                    }
                }
                "_cursor" => {
                    if no_modifier(&mut q) {
                        q.cursor = Some(value.to_string());
                    }
                }
                "_format" | "_pretty" => q.passthrough.push((name.into(), value.into())),
                "_query" | "_filter" | "_list" | "_score" => q
                    .unknown
                    .push((name.to_string(), format!("{base} is not supported"))),
                _ => match parser.name(name, &context)? {
                    Ok((hops, param, modifier)) => {
                        let values = parser.values(name, &param, modifier.as_ref(), value)?;
                        if !values.is_empty() {
                            q.clauses.push(Clause {
                                hops,
                                param,
                                modifier,
                                values,
                            });
                        }
                    }
                    Err(reason) => q.unknown.push((name.to_string(), reason)),
                },
            }
        }
        Ok(q)
    }

    /// Under `Prefer: handling=strict`, the error for the parameters that were ignored.
    pub fn strict_errors(&self) -> Option<QueryError> {
        (!self.unknown.is_empty()).then(|| QueryError::Unsupported(self.unknown.clone()))
    }

    /// The query as a canonical query string: clauses in their order, then the result
    /// parameters in a fixed order; values normalised (escaping, prefix `eq` omitted)
    /// and percent-encoded. Parsing it gives back an equal query (less `unknown`).
    pub fn to_query_string(&self) -> String {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if !self.types.is_empty() {
            pairs.push(("_type".into(), self.types.join(",")));
        }
        for c in &self.clauses {
            pairs.push((c.name(), c.value_text()));
        }
        if !self.sort.is_empty() {
            let keys: Vec<String> = self
                .sort
                .iter()
                .map(|k| format!("{}{}", if k.descending { "-" } else { "" }, k.param.code))
                .collect();
            pairs.push(("_sort".into(), keys.join(",")));
        }
        if let Some(c) = self.count {
            pairs.push(("_count".into(), c.to_string()));
        }
        if let Some(t) = self.total {
            let t = match t {
                TotalMode::None => "none",
                TotalMode::Estimate => "estimate",
                TotalMode::Accurate => "accurate",
            };
            pairs.push(("_total".into(), t.into()));
        }
        if let Some(s) = self.summary {
            let s = match s {
                SummaryMode::True => "true",
                SummaryMode::Text => "text",
                SummaryMode::Data => "data",
                SummaryMode::Count => "count",
                SummaryMode::False => "false",
            };
            pairs.push(("_summary".into(), s.into()));
        }
        if !self.elements.is_empty() {
            pairs.push(("_elements".into(), self.elements.join(",")));
        }
        for (name, list) in [
            ("_include", &self.include),
            ("_revinclude", &self.revinclude),
        ] {
            for inc in list {
                let n = if inc.iterate {
                    format!("{name}:iterate")
                } else {
                    name.to_string()
                };
                pairs.push((n, include_text(inc)));
            }
        }
        if let Some(c) = self.contained {
            let c = match c {
                ContainedMode::False => "false",
                ContainedMode::True => "true",
                ContainedMode::Both => "both",
            };
            pairs.push(("_contained".into(), c.into()));
        }
        if let Some(c) = self.contained_type {
            let c = match c {
                ContainedType::Container => "container",
                ContainedType::Contained => "contained",
            };
            pairs.push(("_containedType".into(), c.into()));
        }
        pairs.extend(self.passthrough.iter().cloned());
        if let Some(c) = &self.cursor {
            pairs.push(("_cursor".into(), c.clone()));
        }
        pairs
            .iter()
            .map(|(n, v)| format!("{}={}", percent_encode(n), percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn include_text(inc: &Include) -> String {
    match (&inc.param, &inc.target_type) {
        _ if inc.source_type == "*" => "*".to_string(),
        (None, _) => format!("{}:*", inc.source_type),
        (Some(p), None) => format!("{}:{p}", inc.source_type),
        (Some(p), Some(t)) => format!("{}:{p}:{t}", inc.source_type),
    }
}

// ---------------------------------------------------------------------------------------
// Parameter names

struct Parser<'p> {
    registry: &'p SearchRegistry,
    model: &'static Model,
}

/// A parameter resolved against a set of types.
struct Resolved {
    param: ParamRef,
    /// The types of the context that define it.
    types: Vec<String>,
    /// The union of its targets on those types (reference parameters).
    targets: Vec<String>,
}

/// The parsed name, or why it is ignored.
type NameResult = Result<(Vec<Hop>, ParamRef, Option<Modifier>), String>;

impl Parser<'_> {
    /// Resolve a code on the types of `context` (on `Resource`/`DomainResource`
    /// parameters when it is empty). The reason is for [`SearchQuery::unknown`].
    fn resolve(&self, code: &str, context: &[String]) -> Result<Resolved, String> {
        if context.is_empty() {
            let p = self
                .registry
                .params()
                .iter()
                .find(|p| {
                    p.code() == code
                        && p.def
                            .base
                            .iter()
                            .any(|b| b == "Resource" || b == "DomainResource")
                })
                .ok_or_else(|| format!("unknown parameter `{code}` for all resource types"))?;
            return Ok(Resolved {
                param: ParamRef::of(p),
                types: Vec::new(),
                targets: p.target().to_vec(),
            });
        }
        let mut found: Option<Resolved> = None;
        for t in context {
            let Some(p) = self.registry.param(t, code) else {
                continue;
            };
            match &mut found {
                None => {
                    found = Some(Resolved {
                        param: ParamRef::of(p),
                        types: vec![t.clone()],
                        targets: p.target().to_vec(),
                    })
                }
                Some(r) => {
                    if r.param.param_type != p.param_type() {
                        return Err(format!(
                            "`{code}` has different types on {} and {t}",
                            r.types.join(",")
                        ));
                    }
                    r.types.push(t.clone());
                    for x in p.target() {
                        if !r.targets.contains(x) {
                            r.targets.push(x.clone());
                        }
                    }
                }
            }
        }
        found.ok_or_else(|| format!("unknown parameter `{code}` for {}", context.join(",")))
    }

    /// Parse a parameter name: hops (`a.b`, `_has:T:p:`), the code and the modifier.
    /// The outer error is a malformed name; the inner one an ignorable unknown.
    fn name(&self, name: &str, context: &[String]) -> Result<NameResult, QueryError> {
        let invalid = |reason: String| QueryError::InvalidParameter {
            param: name.to_string(),
            reason,
        };
        let mut ctx: Vec<String> = context.to_vec();
        let mut hops: Vec<Hop> = Vec::new();
        let mut rest = name;
        loop {
            if let Some(r) = rest.strip_prefix("_has:") {
                let mut parts = r.splitn(3, ':');
                let (Some(ty), Some(code), Some(tail)) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(invalid(
                        "expected _has:[type]:[reference parameter]:[parameter]".into(),
                    ));
                };
                if tail.is_empty() || ty.is_empty() || code.is_empty() {
                    return Err(invalid(
                        "expected _has:[type]:[reference parameter]:[parameter]".into(),
                    ));
                }
                if self.registry.plans(ty).is_none() {
                    return Ok(Err(format!("unknown resource type `{ty}` in _has")));
                }
                let r = match self.resolve(code, &[ty.to_string()]) {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(e)),
                };
                if r.param.param_type != SearchParamType::Reference {
                    return Err(invalid(format!(
                        "`{ty}:{code}` is not a reference parameter"
                    )));
                }
                // It must be able to point at the current resource.
                if !ctx.is_empty()
                    && !r.targets.is_empty()
                    && !ctx.iter().any(|c| r.targets.contains(c))
                {
                    return Err(invalid(format!(
                        "`{ty}:{code}` cannot reference {}",
                        ctx.join(",")
                    )));
                }
                hops.push(Hop::Has {
                    resource_type: ty.to_string(),
                    param: r.param,
                });
                ctx = vec![ty.to_string()];
                rest = tail;
                continue;
            }
            let (head, tail) = match rest.split_once('.') {
                Some((h, t)) => (h, Some(t)),
                None => (rest, None),
            };
            let (code, modifier) = match head.split_once(':') {
                Some((c, m)) => (c, Some(m)),
                None => (head, None),
            };
            if code.is_empty() {
                return Err(invalid("empty parameter name".into()));
            }
            let r = match self.resolve(code, &ctx) {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            // Narrow the previous link to the types that define this parameter.
            if let Some(Hop::Chain { target_types, .. }) = hops.last_mut() {
                if !r.types.is_empty() {
                    *target_types = r.types.clone();
                }
            }
            let Some(tail) = tail else {
                let modifier = match modifier {
                    None => None,
                    Some(m) => match self.modifier(m, &r) {
                        Ok(m) => Some(m),
                        Err(e) => return Ok(Err(e)),
                    },
                };
                return Ok(Ok((hops, r.param, modifier)));
            };
            if r.param.param_type != SearchParamType::Reference {
                return Err(invalid(format!(
                    "`{code}` is not a reference parameter and cannot be chained"
                )));
            }
            if tail.is_empty() {
                return Err(invalid("empty chained parameter".into()));
            }
            let target_types = match modifier {
                Some(t) => {
                    if !self.model.is_resource_type(t) {
                        return Ok(Err(format!("unknown modifier :{t} on a chain")));
                    }
                    if !r.targets.is_empty() && !r.targets.iter().any(|x| x == t) {
                        return Err(invalid(format!("`{code}` cannot reference {t}")));
                    }
                    vec![t.to_string()]
                }
                None => r.targets.clone(),
            };
            hops.push(Hop::Chain {
                param: r.param,
                type_modifier: modifier.map(str::to_string),
                target_types: target_types.clone(),
            });
            ctx = target_types;
            rest = tail;
        }
    }

    /// Check a modifier applies to the parameter's type (R4's table).
    fn modifier(&self, m: &str, r: &Resolved) -> Result<Modifier, String> {
        use SearchParamType as T;
        let t = r.param.param_type;
        let modifier = match m {
            "missing" => Modifier::Missing,
            "exact" => Modifier::Exact,
            "contains" => Modifier::Contains,
            "text" => Modifier::Text,
            "not" => Modifier::Not,
            "above" => Modifier::Above,
            "below" => Modifier::Below,
            "in" => Modifier::In,
            "not-in" => Modifier::NotIn,
            "of-type" => Modifier::OfType,
            "identifier" => Modifier::Identifier,
            ty if self.model.is_resource_type(ty) => {
                if t != T::Reference {
                    return Err(format!(
                        "modifier :{ty} applies to reference parameters only"
                    ));
                }
                if !r.targets.is_empty() && !r.targets.iter().any(|x| x == ty) {
                    return Err(format!("`{}` cannot reference {ty}", r.param.code));
                }
                return Ok(Modifier::Type(ty.to_string()));
            }
            other => return Err(format!("unknown modifier :{other}")),
        };
        let ok = match &modifier {
            Modifier::Missing => true,
            Modifier::Exact | Modifier::Contains => t == T::String,
            Modifier::Text | Modifier::Not | Modifier::In | Modifier::NotIn | Modifier::OfType => {
                t == T::Token
            }
            Modifier::Above | Modifier::Below => t == T::Token || t == T::Uri,
            Modifier::Identifier => t == T::Reference,
            Modifier::Type(_) => true,
        };
        if ok {
            Ok(modifier)
        } else {
            Err(format!(
                "modifier :{m} is not supported on {} parameters",
                type_name(t)
            ))
        }
    }

    /// Parse the comma-separated values of a clause.
    fn values(
        &self,
        name: &str,
        param: &ParamRef,
        modifier: Option<&Modifier>,
        raw: &str,
    ) -> Result<Vec<SearchValue>, QueryError> {
        let mut out = Vec::new();
        for part in split_unescaped(raw, ',') {
            if part.is_empty() {
                continue;
            }
            let bad = |reason: String| QueryError::InvalidValue {
                param: name.to_string(),
                value: part.to_string(),
                reason,
            };
            let v = parse_value(param, modifier, part, self.model).map_err(bad)?;
            if !out.contains(&v) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Parse an `_include` / `_revinclude` value.
    fn include(&self, v: &str, iterate: bool) -> Result<Include, String> {
        if v == "*" {
            return Ok(Include {
                source_type: "*".into(),
                param: None,
                target_type: None,
                iterate,
            });
        }
        let mut parts = v.split(':');
        let (Some(ty), Some(code)) = (parts.next(), parts.next()) else {
            return Err("expected [type]:[parameter][:targetType]".into());
        };
        let target = parts.next();
        if parts.next().is_some() {
            return Err("expected [type]:[parameter][:targetType]".into());
        }
        if self.registry.plans(ty).is_none() {
            return Err(format!("unknown resource type `{ty}`"));
        }
        if code == "*" {
            return Ok(Include {
                source_type: ty.into(),
                param: None,
                target_type: None,
                iterate,
            });
        }
        let p = self
            .registry
            .param(ty, code)
            .ok_or_else(|| format!("unknown parameter `{code}` for {ty}"))?;
        if p.param_type() != SearchParamType::Reference {
            return Err(format!("`{ty}:{code}` is not a reference parameter"));
        }
        if let Some(t) = target {
            if !self.model.is_resource_type(t) {
                return Err(format!("unknown target type `{t}`"));
            }
            if !p.target().is_empty() && !p.target().iter().any(|x| x == t) {
                return Err(format!("`{ty}:{code}` cannot reference {t}"));
            }
        }
        Ok(Include {
            source_type: ty.into(),
            param: Some(code.into()),
            target_type: target.map(str::to_string),
            iterate,
        })
    }
}

fn type_name(t: SearchParamType) -> &'static str {
    match t {
        SearchParamType::Number => "number",
        SearchParamType::Date => "date",
        SearchParamType::String => "string",
        SearchParamType::Token => "token",
        SearchParamType::Reference => "reference",
        SearchParamType::Composite => "composite",
        SearchParamType::Quantity => "quantity",
        SearchParamType::Uri => "uri",
        SearchParamType::Special => "special",
    }
}

// ---------------------------------------------------------------------------------------
// Values

/// Parse one (still escaped) value. The error is the reason, without the names.
fn parse_value(
    param: &ParamRef,
    modifier: Option<&Modifier>,
    raw: &str,
    model: &Model,
) -> Result<SearchValue, String> {
    use SearchParamType as T;
    match modifier {
        Some(Modifier::Missing) => {
            return match raw {
                "true" => Ok(SearchValue::Missing(true)),
                "false" => Ok(SearchValue::Missing(false)),
                _ => Err("expected true or false".into()),
            }
        }
        Some(Modifier::Text | Modifier::Exact | Modifier::Contains) => {
            return Ok(SearchValue::String(unescape(raw)))
        }
        Some(Modifier::In | Modifier::NotIn) => return Ok(SearchValue::Uri(unescape(raw))),
        Some(Modifier::OfType) => {
            let parts = split_unescaped(raw, '|');
            return match parts.as_slice() {
                [s, c, v] if !s.is_empty() && !c.is_empty() && !v.is_empty() => {
                    Ok(SearchValue::OfType {
                        system: unescape(s),
                        code: unescape(c),
                        value: unescape(v),
                    })
                }
                _ => Err("expected [type system]|[type code]|[identifier value]".into()),
            };
        }
        Some(Modifier::Identifier) => return token(raw).map(SearchValue::Token),
        _ => {}
    }
    match param.param_type {
        T::Number => number(raw).map(SearchValue::Number),
        T::Date => date(raw).map(SearchValue::Date),
        T::Quantity => quantity(raw).map(SearchValue::Quantity),
        T::String if matches!(param.code.as_str(), "_text" | "_content") => {
            Ok(SearchValue::FullText(unescape(raw)))
        }
        T::String => Ok(SearchValue::String(unescape(raw))),
        T::Token => token(raw).map(SearchValue::Token),
        T::Uri => Ok(SearchValue::Uri(unescape(raw))),
        T::Reference => {
            let ty = match modifier {
                Some(Modifier::Type(t)) => Some(t.as_str()),
                _ => None,
            };
            reference(raw, ty, model).map(SearchValue::Reference)
        }
        T::Composite => {
            let parts = split_unescaped(raw, '$');
            if parts.len() != param.components.len() {
                return Err(format!(
                    "expected {} `$`-separated components",
                    param.components.len()
                ));
            }
            let mut values = Vec::with_capacity(parts.len());
            for (p, &t) in parts.iter().zip(&param.components) {
                let comp = ParamRef {
                    code: String::new(),
                    param_type: t,
                    url: String::new(),
                    components: Vec::new(),
                };
                values.push(parse_value(&comp, None, p, model)?);
            }
            Ok(SearchValue::Composite(values))
        }
        T::Special => Ok(SearchValue::Special(raw.to_string())),
    }
}

/// Split off a comparison prefix. Two leading letters that are not a prefix are an error
/// (a value of these types never starts with a letter).
fn prefix(raw: &str) -> Result<(Prefix, &str), String> {
    let b = raw.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() {
        let head = raw.get(..2).unwrap_or("");
        return match Prefix::parse(head) {
            Some(p) => Ok((p, &raw[2..])),
            None => Err(format!(
                "unknown prefix `{head}` (expected eq, ne, gt, lt, ge, le, sa, eb or ap)"
            )),
        };
    }
    Ok((Prefix::Eq, raw))
}

fn number(raw: &str) -> Result<NumberQuery, String> {
    let raw = unescape(raw);
    let (prefix, text) = prefix(&raw)?;
    let (value, low, high) = parse_decimal(text).ok_or_else(|| "not a number".to_string())?;
    Ok(NumberQuery {
        prefix,
        text: text.to_string(),
        value,
        low,
        high,
    })
}

/// A decimal with its implicit range. In exponent notation the range is half a unit of
/// the digit after the mantissa's last one, so that `1e2` gives [95, 105] as in the
/// specification's example (its table reads one more digit than the mantissa's).
pub(crate) fn parse_decimal(text: &str) -> Option<(Decimal, Decimal, Decimal)> {
    let valid = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    if !valid {
        return None;
    }
    match text.find(['e', 'E']) {
        None => {
            let v = Decimal::from_str(text).ok()?;
            let (l, h) = implicit_range(v);
            Some((v, l, h))
        }
        Some(i) => {
            let mantissa = Decimal::from_str(&text[..i]).ok()?;
            let exp: i32 = text[i + 1..].parse().ok()?;
            let value = Decimal::from_scientific(text).ok()?;
            let k = exp.checked_sub(i32::try_from(mantissa.scale()).ok()?)? - 2;
            let half = Decimal::from_scientific(&format!("5e{k}")).ok()?;
            Some((value, value.checked_sub(half)?, value.checked_add(half)?))
        }
    }
}

fn date(raw: &str) -> Result<DateQuery, String> {
    // A `+` of a timezone decoded as a space (see the module documentation).
    let raw = unescape(raw).replace(' ', "+");
    let (prefix, text) = prefix(&raw)?;
    let range = DateValue::from_fhir(text).ok_or_else(|| {
        "not a date (expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.sss]] with \
         an optional Z or ±hh:mm)"
            .to_string()
    })?;
    Ok(DateQuery {
        prefix,
        text: text.to_string(),
        range,
    })
}

fn quantity(raw: &str) -> Result<QuantityQuery, String> {
    let parts = split_unescaped(raw, '|');
    let (num, system, code) = match parts.as_slice() {
        [n] => (*n, None, None),
        [n, s, c] => (*n, Some(unescape(s)), Some(unescape(c))),
        _ => return Err("expected [prefix]number[|system|code]".into()),
    };
    let number = number(num)?;
    Ok(QuantityQuery {
        number,
        system: system.filter(|s| !s.is_empty()),
        code: code.filter(|s| !s.is_empty()),
    })
}

fn token(raw: &str) -> Result<TokenQuery, String> {
    let parts = split_unescaped(raw, '|');
    match parts.as_slice() {
        [c] => Ok(TokenQuery {
            system: TokenSystem::Any,
            code: Some(unescape(c)),
        }),
        [s, c] => {
            let code = (!c.is_empty()).then(|| unescape(c));
            if s.is_empty() {
                if code.is_none() {
                    return Err("empty token (expected [system]|[code])".into());
                }
                Ok(TokenQuery {
                    system: TokenSystem::NoSystem,
                    code,
                })
            } else {
                Ok(TokenQuery {
                    system: TokenSystem::Is(unescape(s)),
                    code,
                })
            }
        }
        _ => Err("expected [system]|[code] (escape a literal | as \\|)".into()),
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn reference(
    raw: &str,
    type_modifier: Option<&str>,
    model: &Model,
) -> Result<ReferenceQuery, String> {
    let mut q = ReferenceQuery {
        kind: ReferenceQueryKind::Id,
        resource_type: None,
        id: None,
        version: None,
        url: None,
        base_url: None,
    };
    let parts = split_unescaped(raw, '|');
    let (text, canonical_version) = match parts.as_slice() {
        [t] => (unescape(t), None),
        [t, v] => (unescape(t), Some(unescape(v))),
        _ => return Err("expected a reference (id, Type/id, URL or url|version)".into()),
    };
    if text.contains("://") || text.starts_with("urn:") {
        q.kind = ReferenceQueryKind::Absolute;
        if let Some(v) = canonical_version {
            q.kind = ReferenceQueryKind::Canonical;
            q.version = Some(v).filter(|v| !v.is_empty());
            q.url = Some(text);
            return Ok(q);
        }
        // A RESTful URL: `{base}/Type/id[/_history/vid]`.
        let segs: Vec<&str> = text.split('/').collect();
        let n = segs.len();
        let at = |i: usize| segs.get(i).copied();
        let rest = if n >= 4 && at(n - 2) == Some("_history") {
            Some((n - 4, at(n - 1)))
        } else if n >= 2 {
            Some((n - 2, None))
        } else {
            None
        };
        if let Some((i, version)) = rest {
            if let (Some(ty), Some(id)) = (at(i), at(i + 1)) {
                if i > 0 && model.is_resource_type(ty) && is_id(id) {
                    q.resource_type = Some(ty.to_string());
                    q.id = Some(id.to_string());
                    q.version = version.map(str::to_string);
                    q.base_url = Some(segs[..i].join("/"));
                }
            }
        }
        if let (Some(t), Some(rt)) = (type_modifier, &q.resource_type) {
            if t != rt {
                return Err(format!("the URL is of type {rt}, not {t}"));
            }
        }
        q.url = Some(text);
        return Ok(q);
    }
    if canonical_version.is_some() {
        return Err("a |version needs an absolute canonical URL".into());
    }
    let segs: Vec<&str> = text.split('/').collect();
    match segs.as_slice() {
        [id] if is_id(id) => {
            q.id = Some((*id).to_string());
            q.resource_type = type_modifier.map(str::to_string);
        }
        [ty, id] | [ty, id, "_history", _] if model.is_resource_type(ty) && is_id(id) => {
            if type_modifier.is_some_and(|t| t != *ty) {
                return Err(format!("the reference is of type {ty}, not the modifier's"));
            }
            q.kind = ReferenceQueryKind::Local;
            q.resource_type = Some((*ty).to_string());
            q.id = Some((*id).to_string());
            if let [_, _, _, v] = segs.as_slice() {
                if !is_id(v) {
                    return Err("invalid version id".into());
                }
                q.version = Some((*v).to_string());
            }
        }
        _ => return Err("expected a reference (id, Type/id, Type/id/_history/vid or URL)".into()),
    }
    Ok(q)
}

// ---------------------------------------------------------------------------------------
// Serialisation

/// One value as written in a query (escaped, not percent-encoded).
pub fn value_text(v: &SearchValue) -> String {
    let prefixed = |p: Prefix, t: &str| match p {
        Prefix::Eq => escape(t),
        p => format!("{}{}", p.as_str(), escape(t)),
    };
    match v {
        SearchValue::Number(n) => prefixed(n.prefix, &n.text),
        SearchValue::Date(d) => prefixed(d.prefix, &d.text),
        SearchValue::Quantity(q) => {
            let mut s = prefixed(q.number.prefix, &q.number.text);
            if q.system.is_some() || q.code.is_some() {
                let _ = write!(
                    s,
                    "|{}|{}",
                    escape(q.system.as_deref().unwrap_or("")),
                    escape(q.code.as_deref().unwrap_or(""))
                );
            }
            s
        }
        SearchValue::String(s) | SearchValue::FullText(s) | SearchValue::Uri(s) => escape(s),
        SearchValue::Token(t) => {
            let code = escape(t.code.as_deref().unwrap_or(""));
            match &t.system {
                TokenSystem::Any => code,
                TokenSystem::NoSystem => format!("|{code}"),
                TokenSystem::Is(s) => format!("{}|{code}", escape(s)),
            }
        }
        SearchValue::OfType {
            system,
            code,
            value,
        } => format!("{}|{}|{}", escape(system), escape(code), escape(value)),
        SearchValue::Reference(r) => match r.kind {
            ReferenceQueryKind::Id => escape(r.id.as_deref().unwrap_or("")),
            ReferenceQueryKind::Local => {
                let mut s = format!(
                    "{}/{}",
                    r.resource_type.as_deref().unwrap_or(""),
                    r.id.as_deref().unwrap_or("")
                );
                if let Some(v) = &r.version {
                    let _ = write!(s, "/_history/{v}");
                }
                escape(&s)
            }
            ReferenceQueryKind::Absolute => escape(r.url.as_deref().unwrap_or("")),
            ReferenceQueryKind::Canonical => format!(
                "{}|{}",
                escape(r.url.as_deref().unwrap_or("")),
                escape(r.version.as_deref().unwrap_or(""))
            ),
        },
        SearchValue::Composite(c) => c.iter().map(value_text).collect::<Vec<_>>().join("$"),
        SearchValue::Missing(b) => b.to_string(),
        SearchValue::Special(s) => s.clone(),
    }
}

/// Escape the search syntax characters `\ , | $` with a backslash.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '|' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Undo [`escape`]: `\,` `\|` `\$` `\\` become the character; other backslashes stay.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&n) = chars.peek() {
                if matches!(n, '\\' | ',' | '|' | '$') {
                    out.push(n);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

/// Split at `sep` where it is not escaped by a backslash; the parts stay escaped.
pub fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Split a query string into percent-decoded `(name, value)` pairs (`+` is a space).
pub fn decode_pairs(query: &str) -> Result<Vec<(String, String)>, QueryError> {
    let query = query.strip_prefix('?').unwrap_or(query);
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((percent_decode(n)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, QueryError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| QueryError::Encoding(format!("bad percent-escape in `{s}`")))?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| QueryError::Encoding(format!("`{s}` is not UTF-8")))
}

/// Percent-encode for a query component: unreserved characters and `: / , $ @ ! * ' ( ) ;`
/// stay readable; everything else (including `+ & = | \ %` and spaces) is escaped.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b':'
                    | b'/'
                    | b','
                    | b'$'
                    | b'@'
                    | b'!'
                    | b'*'
                    | b'\''
                    | b'('
                    | b')'
                    | b';'
            )
        {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
