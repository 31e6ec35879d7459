//! The meaning of a search clause against a resource's index values: the executable
//! specification the storage backends must agree with, used directly by the in-memory
//! backend and by Subscriptions.
//!
//! ```
//! use vigil_fhir::search::{extract, matching, SearchQuery, SearchRegistry};
//! let obs = serde_json::json!({"resourceType": "Observation", "status": "final",
//!     "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
//!     "valueQuantity": {"value": 185, "system": "http://unitsofmeasure.org", "code": "[lb_av]"}});
//! let x = extract(&obs).unwrap();
//! let q = SearchQuery::parse(Some("Observation"),
//!     "code=http://loinc.org|29463-7&value-quantity=gt80|http://unitsofmeasure.org|kg",
//!     SearchRegistry::r4()).unwrap();
//! assert!(matching::resource_matches(&q, &x, &matching::MatchContext::default()).unwrap());
//! ```
//!
//! # Ranges and prefixes
//! Every number, date and quantity is compared as a range. The *target* (the resource's
//! value) is: a date's or Period's instants; a number's or quantity's exact value (a point:
//! resource values are taken at face value, their written precision does not widen them);
//! a Range's bounds; a quantity with a comparator its open interval (`<5` → (−∞, 5]).
//! The *search* range is the value's implicit precision range (`100` → [99.5, 100.5],
//! `2013` → the whole year). Bounds are inclusive; missing target bounds are unbounded.
//! Following the R4 table, with search range [sl, sh] and target [tl, th]:
//! - `eq`: sl ≤ tl and th ≤ sh (the search range contains the target); `ne`: not `eq`;
//! - `gt`: th > sh' and `lt`: tl < sl', where for numbers and quantities sl' = sh' = the
//!   value itself (the spec ignores precision for these prefixes) and for dates the range;
//! - `ge`: `gt`, or the target lies within [sl', sh']; `le` likewise with `lt`;
//! - `sa`: tl > sh'; `eb`: th < sl' (an unbounded end never qualifies);
//! - `ap`: the target overlaps the search range widened to ±10% of the value (numbers,
//!   quantities); for dates, widened by 10% of the distance from [`MatchContext::now`] to
//!   the value when a `now` is given, else the date's own range.
//!
//! # Other types
//! - string: starts-with on the normalized form ([`normalize`]); `:exact` equality of the
//!   text as written; `:contains` substring of the normalized form. `_text` / `_content`
//!   without modifier: every normalized word of the value occurs in the text.
//! - token: `code` any system; `system|code`; `|code` tokens without system; `system|`
//!   any code of the system. Codes and systems compare exactly (case-sensitive).
//!   `:text` starts-with on the normalized display / text; `:not` none of the values
//!   matches (resources without a value match); `:of-type` the identifier's type coding
//!   and value. `:in`, `:not-in`, `:above`, `:below` need a terminology service and give
//!   [`MatchError::NeedsTerminology`] (the server expands them into codes first).
//! - reference: by id (`23`: local references with that id, and absolute ones on this
//!   server when [`MatchContext::base_url`] is set), `Type/id` (also `:[type]`), versions
//!   when given, absolute URLs (on this server: as `Type/id`; elsewhere: by base, type and
//!   id, or the URL as written), canonicals `url|version`. References to contained
//!   resources never match. `:identifier` matches `Reference.identifier` as a token.
//! - uri: equality (a value `url|version` also compares a canonical's version);
//!   `:below` the indexed uri starts with the value; `:above` the value starts with it.
//! - quantity: with a UCUM system and a code UCUM understands, both sides are compared
//!   in canonical units (the units must be commensurable); otherwise the system and code
//!   must be equal. `number||code` (no system) matches the code or the unit text.
//! - composite: one tuple of the resource whose every component matches.
//! - `:missing=true`: the resource has no value for the parameter; `false`: it has one.

use super::extract::{canonical_unit, Extraction};
use super::query::{
    Clause, DateQuery, Modifier, NumberQuery, Prefix, QuantityQuery, ReferenceQuery,
    ReferenceQueryKind, SearchQuery, SearchValue, TokenQuery, TokenSystem,
};
use super::text::normalize;
use super::values::{
    DateValue, IndexValue, NumberValue, QuantityValue, ReferenceKind, ReferenceValue, TokenValue,
    UriValue,
};
use rust_decimal::Decimal;
use vigil_fhirpath::ucum;

const UCUM: &str = "http://unitsofmeasure.org";

/// What matching needs to know beyond the values.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatchContext<'c> {
    /// This server's base URL (`https://example.org/fhir`): absolute references to it
    /// are the same as local ones.
    pub base_url: Option<&'c str>,
    /// The current instant (ms since the epoch), for `ap` on dates.
    pub now: Option<i64>,
}

/// A clause the pure matcher cannot decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// `:in`, `:not-in`, `:above`, `:below` on tokens.
    #[error("the :{modifier} modifier needs a terminology service")]
    NeedsTerminology {
        /// The modifier.
        modifier: String,
    },
    /// A parameter kind the matcher does not evaluate (`near`).
    #[error("{0}")]
    Unsupported(String),
    /// An error in one clause of a query.
    #[error("search parameter `{param}`: {source}")]
    Clause {
        /// The clause's parameter name.
        param: String,
        /// What failed.
        source: Box<MatchError>,
    },
}

/// Whether a resource (its extraction) satisfies every clause of the query that needs no
/// other resource. Chained and `_has` clauses are skipped: the caller resolves them
/// (they need the referenced resources). The resource type is not checked.
pub fn resource_matches(
    query: &SearchQuery,
    extraction: &Extraction<'_, '_>,
    ctx: &MatchContext<'_>,
) -> Result<bool, MatchError> {
    for clause in query.clauses.iter().filter(|c| !c.is_chained()) {
        let values: Vec<&IndexValue<'_>> = extraction.values(&clause.param.code).collect();
        let ok = clause_matches(clause, &values, ctx).map_err(|e| MatchError::Clause {
            param: clause.name(),
            source: Box::new(e),
        })?;
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether the values of the clause's parameter satisfy the clause: any of its values
/// matches, or for negated modifiers (`:not`, `:not-in`) none of them does.
pub fn clause_matches(
    clause: &Clause,
    values: &[&IndexValue<'_>],
    ctx: &MatchContext<'_>,
) -> Result<bool, MatchError> {
    let negated = clause.modifier.as_ref().is_some_and(Modifier::is_negated);
    for v in &clause.values {
        let m = value_matches(v, clause.modifier.as_ref(), values, ctx)?;
        // For negated modifiers `value_matches` is already negated: all must hold.
        if negated && !m {
            return Ok(false);
        }
        if !negated && m {
            return Ok(true);
        }
    }
    Ok(negated)
}

/// Whether one search value (with the clause's modifier) matches a resource with these
/// values of the parameter. For `:not` / `:not-in` the result is the negation: no value
/// matches the code.
pub fn value_matches(
    value: &SearchValue,
    modifier: Option<&Modifier>,
    values: &[&IndexValue<'_>],
    ctx: &MatchContext<'_>,
) -> Result<bool, MatchError> {
    match (value, modifier) {
        (SearchValue::Missing(missing), _) => return Ok(values.is_empty() == *missing),
        (_, Some(m @ (Modifier::In | Modifier::NotIn))) => {
            return Err(MatchError::NeedsTerminology {
                modifier: m.as_str().to_string(),
            })
        }
        (SearchValue::Token(_), Some(m @ (Modifier::Above | Modifier::Below))) => {
            return Err(MatchError::NeedsTerminology {
                modifier: m.as_str().to_string(),
            })
        }
        (SearchValue::Special(_), _) => {
            return Err(MatchError::Unsupported(
                "special parameters (near) are not evaluated by the matcher".into(),
            ))
        }
        _ => {}
    }
    let any = values.iter().any(|v| one(value, modifier, v, ctx));
    Ok(if matches!(modifier, Some(Modifier::Not)) {
        !any
    } else {
        any
    })
}

/// One search value against one index value (positive sense).
fn one(
    value: &SearchValue,
    modifier: Option<&Modifier>,
    v: &IndexValue<'_>,
    ctx: &MatchContext<'_>,
) -> bool {
    match (value, v) {
        (SearchValue::Number(q), IndexValue::Number(n)) => number_matches(q, n),
        (SearchValue::Date(q), IndexValue::Date(d)) => date_matches(q, d, ctx),
        (SearchValue::Quantity(q), IndexValue::Quantity(t)) => quantity_matches(q, t),
        (SearchValue::String(q), IndexValue::String(s)) => match modifier {
            Some(Modifier::Exact) => s.exact == q.as_str(),
            Some(Modifier::Contains) => s.normalized.contains(&normalize(q)),
            _ => s.normalized.starts_with(&normalize(q)),
        },
        (SearchValue::String(q), IndexValue::Token(t)) => {
            // `:text` on tokens.
            t.text
                .as_deref()
                .is_some_and(|text| normalize(text).starts_with(&normalize(q)))
        }
        (SearchValue::FullText(q), IndexValue::String(s)) => {
            normalize(q).split(' ').all(|w| s.normalized.contains(w))
        }
        (SearchValue::Token(q), IndexValue::Token(t)) => token_matches(q, t),
        (SearchValue::Token(q), IndexValue::Reference(r)) => {
            // `:identifier`
            r.identifier.as_ref().is_some_and(|t| token_matches(q, t))
        }
        (
            SearchValue::OfType {
                system,
                code,
                value,
            },
            IndexValue::Token(t),
        ) => {
            t.code.as_deref() == Some(value.as_str())
                && t.identifier_type.iter().any(|c| {
                    c.system.as_deref() == Some(system.as_str())
                        && c.code.as_deref() == Some(code.as_str())
                })
        }
        (SearchValue::Reference(q), IndexValue::Reference(r)) => reference_matches(q, r, ctx),
        (SearchValue::Uri(q), IndexValue::Uri(u)) => uri_matches(q, u, modifier),
        (SearchValue::Uri(q), IndexValue::Reference(r)) => {
            // uri values against canonicals indexed as references.
            let u = UriValue {
                uri: r.url.clone().unwrap_or_default(),
                version: r.version.clone(),
            };
            uri_matches(q, &u, modifier)
        }
        (SearchValue::Composite(parts), IndexValue::Composite(tuple)) => {
            parts.len() == tuple.len() && parts.iter().zip(tuple).all(|(p, t)| one(p, None, t, ctx))
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Ranges

/// The R4 prefix table on ranges (see the module documentation). `search` is the
/// implicit range (for `eq`/`ne`), `exact` the range the other prefixes use, `approx`
/// the `ap` range; `None` target bounds are unbounded.
fn compare<T: Ord + Copy>(
    prefix: Prefix,
    search: (T, T),
    exact: (T, T),
    approx: (T, T),
    target: (Option<T>, Option<T>),
) -> bool {
    let (tl, th) = target;
    let within = |(l, h): (T, T)| tl.is_some_and(|x| x >= l) && th.is_some_and(|x| x <= h);
    let gt = || th.is_none_or(|x| x > exact.1);
    let lt = || tl.is_none_or(|x| x < exact.0);
    match prefix {
        Prefix::Eq => within(search),
        Prefix::Ne => !within(search),
        Prefix::Gt => gt(),
        Prefix::Lt => lt(),
        Prefix::Ge => gt() || within(exact),
        Prefix::Le => lt() || within(exact),
        Prefix::Sa => tl.is_some_and(|x| x > exact.1),
        Prefix::Eb => th.is_some_and(|x| x < exact.0),
        Prefix::Ap => tl.is_none_or(|x| x <= approx.1) && th.is_none_or(|x| x >= approx.0),
    }
}

/// ±10% of the value, never narrower than the implicit range.
fn approx(value: Decimal, low: Decimal, high: Decimal) -> (Decimal, Decimal) {
    let tenth = (value / Decimal::TEN).abs();
    (
        value.checked_sub(tenth).unwrap_or(low).min(low),
        value.checked_add(tenth).unwrap_or(high).max(high),
    )
}

fn number_matches(q: &NumberQuery, n: &NumberValue) -> bool {
    let target = match n.value {
        Some(v) => (Some(v), Some(v)),
        None => (n.low, n.high),
    };
    compare(
        q.prefix,
        (q.low, q.high),
        (q.value, q.value),
        approx(q.value, q.low, q.high),
        target,
    )
}

fn date_matches(q: &DateQuery, d: &DateValue, ctx: &MatchContext<'_>) -> bool {
    let (Some(sl), Some(sh)) = (q.range.low, q.range.high) else {
        return false;
    };
    let widen = ctx.now.map_or(0, |now| (now - sl).abs() / 10);
    compare(
        q.prefix,
        (sl, sh),
        (sl, sh),
        (sl.saturating_sub(widen), sh.saturating_add(widen)),
        (d.low, d.high),
    )
}

fn quantity_matches(q: &QuantityQuery, t: &QuantityValue<'_>) -> bool {
    let n = &q.number;
    // Canonical comparison when the value's unit is a UCUM unit this implementation knows.
    if let (Some(UCUM), Some(code)) = (q.system.as_deref(), q.code.as_deref()) {
        let conv = |d: Decimal| ucum::to_canonical(d, code).map(|(v, _)| v);
        let canon = ucum::to_canonical(n.value, code).map(|(v, c)| (v, canonical_unit(&c)));
        if let (Some((value, unit)), Some(low), Some(high)) = (canon, conv(n.low), conv(n.high)) {
            if let Some(tc) = &t.canonical {
                if tc.unit != unit {
                    return false;
                }
                let target = match (tc.value, t.comparator) {
                    (Some(v), None) => (Some(v), Some(v)),
                    _ => (tc.low, tc.high),
                };
                return compare(
                    n.prefix,
                    (low, high),
                    (value, value),
                    approx(value, low, high),
                    target,
                );
            }
        }
    }
    let units_ok = match (q.system.as_deref(), q.code.as_deref()) {
        (Some(s), Some(c)) => t.system.as_deref() == Some(s) && t.code.as_deref() == Some(c),
        (Some(s), None) => t.system.as_deref() == Some(s),
        (None, Some(c)) => t.code.as_deref() == Some(c) || t.unit.as_deref() == Some(c),
        (None, None) => true,
    };
    let target = match (t.value, t.comparator) {
        (Some(v), None) => (Some(v), Some(v)),
        _ => (t.low, t.high),
    };
    units_ok
        && compare(
            n.prefix,
            (n.low, n.high),
            (n.value, n.value),
            approx(n.value, n.low, n.high),
            target,
        )
}

// ---------------------------------------------------------------------------------------
// Tokens, references, uris

fn token_matches(q: &TokenQuery, t: &TokenValue<'_>) -> bool {
    let system_ok = match &q.system {
        TokenSystem::Any => true,
        TokenSystem::NoSystem => t.system.is_none(),
        TokenSystem::Is(s) => t.system.as_deref() == Some(s.as_str()),
    };
    system_ok
        && q.code
            .as_deref()
            .is_none_or(|c| t.code.as_deref() == Some(c))
}

/// Whether an absolute reference points at this server.
fn on_this_server(r: &ReferenceValue<'_>, ctx: &MatchContext<'_>) -> bool {
    match (r.base_url.as_deref(), ctx.base_url) {
        (Some(b), Some(ours)) => b.trim_end_matches('/') == ours.trim_end_matches('/'),
        _ => false,
    }
}

fn reference_matches(q: &ReferenceQuery, r: &ReferenceValue<'_>, ctx: &MatchContext<'_>) -> bool {
    if r.kind == ReferenceKind::Contained {
        return false;
    }
    let same = |a: &Option<String>, b: &Option<std::borrow::Cow<'_, str>>| {
        a.as_deref().is_none_or(|a| b.as_deref() == Some(a))
    };
    // Same type (when the query has one), id and version (when the query has one).
    let local_target = |q: &ReferenceQuery| {
        (r.kind == ReferenceKind::Local
            || (r.kind == ReferenceKind::Absolute && on_this_server(r, ctx)))
            && q.id.is_some()
            && same(&q.id, &r.id)
            && same(&q.resource_type, &r.resource_type)
            && same(&q.version, &r.version)
    };
    match q.kind {
        ReferenceQueryKind::Id | ReferenceQueryKind::Local => local_target(q),
        ReferenceQueryKind::Absolute => {
            let ours = match (q.base_url.as_deref(), ctx.base_url) {
                (Some(b), Some(o)) => b.trim_end_matches('/') == o.trim_end_matches('/'),
                _ => false,
            };
            if ours && local_target(q) {
                return true;
            }
            if q.id.is_some() && r.kind == ReferenceKind::Absolute {
                // A RESTful URL elsewhere: same base, type, id (and version if given).
                return q.base_url.as_deref().map(|b| b.trim_end_matches('/'))
                    == r.base_url.as_deref().map(|b| b.trim_end_matches('/'))
                    && same(&q.id, &r.id)
                    && same(&q.resource_type, &r.resource_type)
                    && same(&q.version, &r.version);
            }
            q.url.is_some() && r.url.as_deref() == q.url.as_deref()
        }
        ReferenceQueryKind::Canonical => {
            r.kind == ReferenceKind::Canonical
                && r.url.as_deref() == q.url.as_deref()
                && same(&q.version, &r.version)
        }
    }
}

fn uri_matches(q: &str, u: &UriValue<'_>, modifier: Option<&Modifier>) -> bool {
    match modifier {
        Some(Modifier::Below) => !q.is_empty() && u.uri.starts_with(q),
        Some(Modifier::Above) => !u.uri.is_empty() && q.starts_with(u.uri.as_ref()),
        _ => {
            if u.uri == q {
                return true;
            }
            // `url|version` against a canonical with its version split off.
            match q.split_once('|') {
                Some((url, version)) => u.uri == url && u.version.as_deref() == Some(version),
                None => false,
            }
        }
    }
}
