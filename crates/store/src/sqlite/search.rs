//! Search execution on the `idx_*` tables.
//!
//! Each clause becomes a condition on the resource row `r` (AND across clauses):
//! `EXISTS (SELECT 1 FROM idx_<kind> x WHERE <x.k in r.rid's key range> AND x.param = ?
//! AND (<value> OR <value> ...))`; `:not` is the
//! `NOT EXISTS` of the positive, `:missing=true` the `NOT EXISTS` of any row of the
//! parameter. Every value from the query is a bound parameter; the only text spliced
//! into the SQL is fixed column names, table names chosen by parameter type, and
//! composite component indexes (integers).
//!
//! Value conditions are written against [`Cols`], which names a value's fields either as
//! columns of an index table or as JSON paths into a composite tuple, so composite
//! components use the very same conditions as top-level parameters.
//!
//! The conditions transcribe [`vigil_fhir::search::matching`] (the specification):
//! ranges follow its prefix table with NULL bounds unbounded, strings compare on the
//! normalized column. Decimals are compared as the REAL columns (exact to the ~15
//! significant digits of a double; the text columns keep the exact value).
//!
//! One case SQL cannot decide is checked in Rust: `:text` on tokens compares the
//! *normalized* display, and the index keeps the display as written. SQL narrows to
//! resources having a display for the parameter, then the candidates are matched with
//! [`vigil_fhir::search::matching`] on their extracted values, fetching further batches
//! until the page is full.
//!
//! Order and paging: `_sort` keys are correlated subqueries (per resource the smallest
//! value ascending, the largest descending; for dates the low bound ascending and the
//! high bound descending), resources without a value last, then `resource.seq` (write
//! order) as the tie-breaker and the default order. Pages are keyset positions over
//! (keys..., seq) — see [`crate::search::Cursor`] — so writes between pages never shift
//! them.

use super::schema::KEY_SPAN;
use super::{storage, version_row, VERSION_COLS};
use crate::api::*;
use crate::search::{sort_signature, Cursor, KeyValue};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::collections::HashSet;
use std::fmt::Write as _;
use vigil_fhir::search::matching::{self, MatchContext};
use vigil_fhir::search::{
    canonical_unit, normalize, Clause, Hop, Include, Modifier, Prefix, QuantityQuery,
    ReferenceQuery, ReferenceQueryKind, SearchParamType, SearchQuery, SearchValue, SortKey,
    TokenQuery, TokenSystem, TotalMode,
};
use vigil_fhirpath::ucum;

const UCUM: &str = "http://unitsofmeasure.org";
/// Candidates fetched per round when some clause is checked in Rust.
const FILTER_BATCH: usize = 200;
/// The most resources `_include` / `_revinclude` add to one page.
const MAX_INCLUDED: usize = 5_000;
/// The most rounds of `:iterate` includes.
const MAX_ITERATE_ROUNDS: usize = 8;

/// `{x}.k` lies in the key range of the resource row aliased `o` (see
/// [`super::schema`]): a rowid range, so SQLite reads just that resource's rows.
fn rows_of(x: &str, o: &str) -> String {
    format!("{x}.k >= {o}.rid * {KEY_SPAN} AND {x}.k < ({o}.rid + 1) * {KEY_SPAN}")
}

/// The `resource.rid` of an index row aliased `x`.
fn rid_of(x: &str) -> String {
    format!("({x}.k / {KEY_SPAN})")
}

/// SQL text with its bound parameters (`?N`, numbered in the order they are added).
#[derive(Default)]
struct Sql {
    text: String,
    args: Vec<SqlValue>,
    aliases: usize,
}

impl Sql {
    /// Append SQL text.
    fn s(&mut self, t: &str) -> &mut Self {
        self.text.push_str(t);
        self
    }

    /// Append a bound parameter.
    fn v(&mut self, v: impl Into<SqlValue>) -> &mut Self {
        self.args.push(v.into());
        let _ = write!(self.text, "?{}", self.args.len());
        self
    }

    /// `{alias}.param` selecting the rows that answer for `code`: the rows of its
    /// sources for a union parameter ([`super::index::stored_codes`]); for a filtered
    /// alias its own rows and its sources' rows marked `also` with it
    /// ([`super::index::stored_rows`]; only `idx_reference` has that column, and only
    /// reference parameters are filtered aliases).
    fn param_is(&mut self, alias: &str, code: &str) -> &mut Self {
        if let Some(sources) = super::index::alias_sources(code) {
            self.s(&format!("({alias}.param IN (")).v(code.to_string());
            for source in sources {
                self.s(", ").v(source.to_string());
            }
            self.s(&format!(") AND ({alias}.param = "))
                .v(code.to_string())
                .s(&format!(" OR {alias}.also = "))
                .v(code.to_string())
                .s("))");
            return self;
        }
        let codes = super::index::stored_codes(code);
        if let [one] = codes.as_slice() {
            self.s(&format!("{alias}.param = ")).v(one.clone());
        } else {
            self.s(&format!("{alias}.param IN ("));
            for (i, c) in codes.into_iter().enumerate() {
                if i > 0 {
                    self.s(", ");
                }
                self.v(c);
            }
            self.s(")");
        }
        self
    }

    /// A fresh table alias for a nested subquery.
    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}

/// Where a value's fields are: columns of an index-table row, or one component of a
/// composite tuple (`idx_composite.value` JSON, see [`crate::index::value_json`]).
#[derive(Clone, Copy)]
enum Cols<'a> {
    Table(&'a str),
    Json(&'a str, usize),
    /// `resource.last_updated` of the resource row aliased so: a point date.
    LastUpdated(&'a str),
}

impl Cols<'_> {
    /// A field as SQL (text or integer).
    fn col(&self, name: &str) -> String {
        match self {
            Cols::Table(a) => format!("{a}.{name}"),
            Cols::LastUpdated(a) => format!("{a}.last_updated"),
            Cols::Json(a, i) => {
                // Column names of the tables → keys of `value_json`.
                let path = match name {
                    "kind" => "kind_of",
                    "target_type" => "type",
                    "target_id" => "id",
                    "target_version" => "version",
                    "canonical_value" => "canonical.value",
                    "canonical_low" => "canonical.low",
                    "canonical_high" => "canonical.high",
                    "canonical_unit" => "canonical.unit",
                    "identifier_system" => "identifier.system",
                    "identifier_value" => "identifier.code",
                    "identifier_type" => "types",
                    other => other,
                };
                format!("json_extract({a}.value, '$.components[{i}].{path}')")
            }
        }
    }

    /// A decimal field as REAL (JSON keeps decimals as text).
    fn num(&self, name: &str) -> String {
        match self {
            Cols::Table(_) | Cols::LastUpdated(_) => self.col(name),
            Cols::Json(..) => format!("CAST({} AS REAL)", self.col(name)),
        }
    }
}

fn real(d: Decimal) -> Result<SqlValue> {
    d.to_f64()
        .map(SqlValue::Real)
        .ok_or_else(|| invalid(format!("number {d} out of range")))
}

/// ±10% of the value, never narrower than the implicit range (as the matcher's `ap`).
fn approx(value: Decimal, low: Decimal, high: Decimal) -> (Decimal, Decimal) {
    let tenth = (value / Decimal::TEN).abs();
    (
        value.checked_sub(tenth).unwrap_or(low).min(low),
        value.checked_add(tenth).unwrap_or(high).max(high),
    )
}

/// The prefix table on ranges: `search` for eq/ne, `exact` for the other prefixes,
/// `approx` for ap; target bounds `tl`/`th` are SQL expressions, NULL = unbounded. Each
/// branch is two-valued (NULLs are tested explicitly) so `ne` can negate `eq`.
#[allow(clippy::too_many_arguments)]
fn range(
    q: &mut Sql,
    prefix: Prefix,
    search: (SqlValue, SqlValue),
    exact: (SqlValue, SqlValue),
    approx: (SqlValue, SqlValue),
    tl: &str,
    th: &str,
) {
    let within = |q: &mut Sql, (l, h): (SqlValue, SqlValue)| {
        q.s(&format!("({tl} IS NOT NULL AND {tl} >= "))
            .v(l)
            .s(&format!(" AND {th} IS NOT NULL AND {th} <= "))
            .v(h)
            .s(")");
    };
    let gt = |q: &mut Sql, h: SqlValue| {
        q.s(&format!("({th} IS NULL OR {th} > ")).v(h).s(")");
    };
    let lt = |q: &mut Sql, l: SqlValue| {
        q.s(&format!("({tl} IS NULL OR {tl} < ")).v(l).s(")");
    };
    match prefix {
        Prefix::Eq => within(q, search),
        Prefix::Ne => {
            q.s("NOT ");
            within(q, search);
        }
        Prefix::Gt => gt(q, exact.1),
        Prefix::Lt => lt(q, exact.0),
        Prefix::Ge => {
            q.s("(");
            gt(q, exact.1.clone());
            q.s(" OR ");
            within(q, exact);
            q.s(")");
        }
        Prefix::Le => {
            q.s("(");
            lt(q, exact.0.clone());
            q.s(" OR ");
            within(q, exact);
            q.s(")");
        }
        Prefix::Sa => {
            q.s(&format!("({tl} IS NOT NULL AND {tl} > "))
                .v(exact.1)
                .s(")");
        }
        Prefix::Eb => {
            q.s(&format!("({th} IS NOT NULL AND {th} < "))
                .v(exact.0)
                .s(")");
        }
        Prefix::Ap => {
            q.s(&format!("(({tl} IS NULL OR {tl} <= "))
                .v(approx.1)
                .s(&format!(") AND ({th} IS NULL OR {th} >= "))
                .v(approx.0)
                .s("))");
        }
    }
}

/// The smallest string greater than every string starting with `p` (by code point,
/// which is SQLite's BINARY order of UTF-8); `None` if there is none.
fn prefix_successor(p: &str) -> Option<String> {
    let mut chars: Vec<char> = p.chars().collect();
    while let Some(last) = chars.pop() {
        let mut n = u32::from(last) + 1;
        if (0xD800..=0xDFFF).contains(&n) {
            n = 0xE000;
        }
        if let Some(c) = char::from_u32(n) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `expr` starts with `prefix` (a range, so the value index can serve it).
fn starts_with(q: &mut Sql, expr: &str, prefix: &str) {
    if prefix.is_empty() {
        q.s(&format!("({expr} IS NOT NULL)"));
        return;
    }
    q.s(&format!("({expr} >= ")).v(prefix.to_string());
    match prefix_successor(prefix) {
        Some(next) => q.s(&format!(" AND {expr} < ")).v(next).s(")"),
        None => q
            .s(&format!(" AND substr({expr}, 1, length("))
            .v(prefix.to_string())
            .s(")) = ")
            .v(prefix.to_string())
            .s(")"),
    };
}

fn token_cond(q: &mut Sql, t: &TokenQuery, system: &str, code: &str) {
    q.s("(");
    match &t.system {
        TokenSystem::Any => q.s("1"),
        TokenSystem::NoSystem => q.s(&format!("{system} IS NULL")),
        TokenSystem::Is(s) => q.s(&format!("{system} = ")).v(s.clone()),
    };
    if let Some(c) = &t.code {
        q.s(&format!(" AND {code} = ")).v(c.clone());
    }
    q.s(")");
}

fn number_target(c: Cols<'_>) -> (String, String) {
    let (v, l, h) = (c.num("value"), c.num("low"), c.num("high"));
    (format!("COALESCE({v}, {l})"), format!("COALESCE({v}, {h})"))
}

/// A quantity's target range: its value as a point, or its bounds when it has a
/// comparator or no value (as the matcher).
fn quantity_target(c: Cols<'_>, prefix: &str) -> (String, String) {
    let (v, l, h) = (
        c.num(&format!("{prefix}value")),
        c.num(&format!("{prefix}low")),
        c.num(&format!("{prefix}high")),
    );
    let cmp = c.col("comparator");
    (
        format!("(CASE WHEN {v} IS NOT NULL AND {cmp} IS NULL THEN {v} ELSE {l} END)"),
        format!("(CASE WHEN {v} IS NOT NULL AND {cmp} IS NULL THEN {v} ELSE {h} END)"),
    )
}

fn quantity_cond(q: &mut Sql, qq: &QuantityQuery, c: Cols<'_>) -> Result<()> {
    let n = &qq.number;
    let numeric = |q: &mut Sql, value: Decimal, low: Decimal, high: Decimal, tl: &str, th: &str| {
        let (al, ah) = approx(value, low, high);
        range(
            q,
            n.prefix,
            (real(low)?, real(high)?),
            (real(value)?, real(value)?),
            (real(al)?, real(ah)?),
            tl,
            th,
        );
        Ok::<(), StoreError>(())
    };
    q.s("(");
    // Canonical comparison for values with a UCUM code this implementation knows; values
    // of the resource without a canonical form fall back to equal system and code.
    let mut canonical = false;
    if let (Some(UCUM), Some(code)) = (qq.system.as_deref(), qq.code.as_deref()) {
        let conv = |d: Decimal| ucum::to_canonical(d, code).map(|(v, _)| v);
        let canon = ucum::to_canonical(n.value, code).map(|(v, c)| (v, canonical_unit(&c)));
        if let (Some((value, unit)), Some(low), Some(high)) = (canon, conv(n.low), conv(n.high)) {
            canonical = true;
            let (tl, th) = quantity_target(c, "canonical_");
            let cu = c.col("canonical_unit");
            q.s(&format!("({cu} IS NOT NULL AND {cu} = "))
                .v(unit)
                .s(" AND ");
            numeric(q, value, low, high, &tl, &th)?;
            q.s(&format!(") OR ({cu} IS NULL AND "));
        }
    }
    let (sys, code, unit) = (c.col("system"), c.col("code"), c.col("unit"));
    match (qq.system.as_deref(), qq.code.as_deref()) {
        (Some(s), Some(cd)) => {
            // Values with this system and code have no canonical form either (only UCUM
            // codes `ucum` knows have one, whatever the value): say so, so the search
            // can use the value index, which holds only such rows (migration 7).
            if !canonical && (s != UCUM || ucum::to_canonical(Decimal::ONE, cd).is_none()) {
                q.s(&format!("{} IS NULL AND ", c.col("canonical_unit")));
            }
            q.s(&format!("{sys} = "))
                .v(s.to_string())
                .s(&format!(" AND {code} = "))
                .v(cd.to_string());
        }
        (Some(s), None) => {
            q.s(&format!("{sys} = ")).v(s.to_string());
        }
        (None, Some(cd)) => {
            q.s(&format!("({code} = "))
                .v(cd.to_string())
                .s(&format!(" OR {unit} = "))
                .v(cd.to_string())
                .s(")");
        }
        (None, None) => {
            q.s("1");
        }
    }
    q.s(" AND ");
    let (tl, th) = quantity_target(c, "");
    numeric(q, n.value, n.low, n.high, &tl, &th)?;
    if canonical {
        q.s(")");
    }
    q.s(")");
    Ok(())
}

fn reference_cond(q: &mut Sql, r: &ReferenceQuery, c: Cols<'_>) {
    let (kind, rtype, rid, rver, base, url) = (
        c.col("kind"),
        c.col("target_type"),
        c.col("target_id"),
        c.col("target_version"),
        c.col("base_url"),
        c.col("url"),
    );
    // Type (when given), id and version (when given) of a RESTful reference.
    let same_target = |q: &mut Sql| {
        if let Some(id) = &r.id {
            q.s(&format!(" AND {rid} = ")).v(id.clone());
        }
        if let Some(t) = &r.resource_type {
            q.s(&format!(" AND {rtype} = ")).v(t.clone());
        }
        if let Some(v) = &r.version {
            q.s(&format!(" AND {rver} = ")).v(v.clone());
        }
    };
    match r.kind {
        // Local references (absolute ones on this server would need the base URL, which
        // the store does not know: they match as absolute URLs).
        ReferenceQueryKind::Id | ReferenceQueryKind::Local => {
            if r.id.is_none() {
                q.s("0");
                return;
            }
            q.s(&format!("({kind} = 'local'"));
            same_target(q);
            q.s(")");
        }
        ReferenceQueryKind::Absolute => match (&r.id, &r.base_url) {
            (Some(_), Some(b)) => {
                q.s(&format!("(({kind} = 'absolute' AND rtrim({base}, '/') = "))
                    .v(b.trim_end_matches('/').to_string());
                same_target(q);
                q.s(&format!(
                    ") OR ({kind} NOT IN ('absolute', 'contained') AND {url} = "
                ))
                .v(r.url.clone().unwrap_or_default())
                .s("))");
            }
            _ => match &r.url {
                Some(u) => {
                    q.s(&format!("({kind} <> 'contained' AND {url} = "))
                        .v(u.clone())
                        .s(")");
                }
                None => {
                    q.s("0");
                }
            },
        },
        ReferenceQueryKind::Canonical => {
            q.s(&format!("({kind} = 'canonical' AND {url} = "))
                .v(r.url.clone().unwrap_or_default());
            if let Some(v) = &r.version {
                q.s(&format!(" AND {rver} = ")).v(v.clone());
            }
            q.s(")");
        }
    }
}

fn uri_cond(q: &mut Sql, v: &str, modifier: Option<&Modifier>, c: Cols<'_>) {
    let (uri, ver) = (c.col("uri"), c.col("version"));
    match modifier {
        Some(Modifier::Below) => {
            if v.is_empty() {
                q.s("0");
            } else {
                starts_with(q, &uri, v);
            }
        }
        Some(Modifier::Above) => {
            q.s(&format!("({uri} <> '' AND substr("))
                .v(v.to_string())
                .s(&format!(", 1, length({uri})) = {uri})"));
        }
        _ => {
            q.s(&format!("({uri} = ")).v(v.to_string());
            if let Some((u, version)) = v.split_once('|') {
                q.s(&format!(" OR ({uri} = "))
                    .v(u.to_string())
                    .s(&format!(" AND {ver} = "))
                    .v(version.to_string())
                    .s(")");
            }
            q.s(")");
        }
    }
}

/// One search value against one index value at `c` (positive sense).
fn value_cond(
    q: &mut Sql,
    value: &SearchValue,
    modifier: Option<&Modifier>,
    ptype: SearchParamType,
    c: Cols<'_>,
) -> Result<()> {
    match value {
        SearchValue::Token(t) if ptype == SearchParamType::Reference => {
            // `:identifier`
            token_cond(
                q,
                t,
                &c.col("identifier_system"),
                &c.col("identifier_value"),
            );
        }
        SearchValue::Token(t) => token_cond(q, t, &c.col("system"), &c.col("code")),
        SearchValue::OfType {
            system,
            code,
            value,
        } => {
            q.s(&format!("({} = ", c.col("code")))
                .v(value.clone())
                .s(&format!(
                    " AND EXISTS (SELECT 1 FROM json_each({}) j WHERE \
                     json_extract(j.value, '$.system') = ",
                    c.col("identifier_type")
                ))
                .v(system.clone())
                .s(" AND json_extract(j.value, '$.code') = ")
                .v(code.clone())
                .s("))");
        }
        SearchValue::String(s) if ptype == SearchParamType::Token => {
            // `:text`: narrowed here, decided in Rust (see the module documentation).
            let _ = s;
            q.s(&format!("({} IS NOT NULL)", c.col("text")));
        }
        SearchValue::String(s) => match modifier {
            Some(Modifier::Exact) => {
                q.s(&format!("({} = ", c.col("exact"))).v(s.clone()).s(")");
            }
            Some(Modifier::Contains) => {
                q.s(&format!("(instr({}, ", c.col("normalized")))
                    .v(normalize(s))
                    .s(") > 0)");
            }
            _ => starts_with(q, &c.col("normalized"), &normalize(s)),
        },
        SearchValue::FullText(s) => {
            q.s("(1");
            for w in normalize(s).split(' ') {
                q.s(&format!(" AND instr({}, ", c.col("normalized")))
                    .v(w.to_string())
                    .s(") > 0");
            }
            q.s(")");
        }
        SearchValue::Date(d) => {
            let (Some(sl), Some(sh)) = (d.range.low, d.range.high) else {
                q.s("0");
                return Ok(());
            };
            let r = (SqlValue::Integer(sl), SqlValue::Integer(sh));
            range(
                q,
                d.prefix,
                r.clone(),
                r.clone(),
                r,
                &c.col("low"),
                &c.col("high"),
            );
        }
        SearchValue::Number(n) => {
            let (tl, th) = number_target(c);
            let (al, ah) = approx(n.value, n.low, n.high);
            range(
                q,
                n.prefix,
                (real(n.low)?, real(n.high)?),
                (real(n.value)?, real(n.value)?),
                (real(al)?, real(ah)?),
                &tl,
                &th,
            );
        }
        SearchValue::Quantity(qq) => quantity_cond(q, qq, c)?,
        SearchValue::Reference(r) => reference_cond(q, r, c),
        SearchValue::Uri(u) => uri_cond(q, u, modifier, c),
        SearchValue::Composite(parts) => {
            let Cols::Table(a) = c else {
                return Err(invalid("nested composite values"));
            };
            q.s(&format!(
                "(json_array_length({a}.value, '$.components') = {}",
                parts.len()
            ));
            for (i, part) in parts.iter().enumerate() {
                let (kind, ptype) = match part {
                    SearchValue::Number(_) => ("number", SearchParamType::Number),
                    SearchValue::Date(_) => ("date", SearchParamType::Date),
                    SearchValue::Quantity(_) => ("quantity", SearchParamType::Quantity),
                    SearchValue::String(_) => ("string", SearchParamType::String),
                    SearchValue::Token(_) => ("token", SearchParamType::Token),
                    SearchValue::Reference(_) => ("reference", SearchParamType::Reference),
                    SearchValue::Uri(_) => ("uri", SearchParamType::Uri),
                    _ => return Err(invalid("unsupported composite component")),
                };
                let comp = Cols::Json(a, i);
                // The component's value kind (`kind`, unlike the column name mapped by
                // `col`, which is a reference's kind).
                q.s(&format!(
                    " AND json_extract({a}.value, '$.components[{i}].kind') = '{kind}' AND "
                ));
                value_cond(q, part, None, ptype, comp)?;
            }
            q.s(")");
        }
        SearchValue::Missing(_) => return Err(invalid("misplaced :missing")),
        SearchValue::Special(_) => {
            return Err(invalid("special parameters (near) are not supported"))
        }
    }
    Ok(())
}

fn table_for(t: SearchParamType) -> Result<&'static str> {
    Ok(match t {
        SearchParamType::Token => "idx_token",
        SearchParamType::String => "idx_string",
        SearchParamType::Date => "idx_date",
        SearchParamType::Number => "idx_number",
        SearchParamType::Quantity => "idx_quantity",
        SearchParamType::Reference => "idx_reference",
        SearchParamType::Uri => "idx_uri",
        SearchParamType::Composite => "idx_composite",
        SearchParamType::Special => {
            return Err(invalid("special parameters (near) are not supported"))
        }
    })
}

/// A clause's condition on the resource row aliased `o` (a `resource` table alias).
fn clause_cond(q: &mut Sql, c: &Clause, hops: &[Hop], o: &str) -> Result<()> {
    let Some((hop, rest)) = hops.split_first() else {
        return leaf_cond(q, c, o);
    };
    let h = q.alias("h");
    let t = q.alias("t");
    match hop {
        Hop::Chain {
            param,
            target_types,
            ..
        } => {
            q.s(&format!(
                "EXISTS (SELECT 1 FROM idx_reference {h} NOT INDEXED JOIN resource {t} ON \
                 {t}.resource_type = {h}.target_type AND {t}.id = {h}.target_id AND \
                 {t}.deleted = 0 WHERE {} AND {h}.kind = 'local' AND ",
                rows_of(&h, o)
            ))
            .param_is(&h, &param.code);
            if !target_types.is_empty() {
                q.s(&format!(" AND {h}.target_type IN ("));
                for (i, tt) in target_types.iter().enumerate() {
                    if i > 0 {
                        q.s(", ");
                    }
                    q.v(tt.clone());
                }
                q.s(")");
            }
        }
        Hop::Has {
            resource_type,
            param,
        } => {
            q.s(&format!(
                "EXISTS (SELECT 1 FROM idx_reference {h} JOIN resource {t} ON \
                 {t}.rid = {} AND {t}.deleted = 0 WHERE {h}.target_type = \
                 {o}.resource_type AND {h}.target_id = {o}.id AND {h}.kind = 'local' AND \
                 {h}.resource_type = ",
                rid_of(&h)
            ))
            .v(resource_type.clone())
            .s(" AND ")
            .param_is(&h, &param.code);
        }
    }
    q.s(" AND ");
    clause_cond(q, c, rest, &t)?;
    q.s(")");
    Ok(())
}

/// The (source type, reference parameter codes) a `_revinclude` probes through the
/// (type, param, target) index: its own type and parameter, or for a wildcard (`*`,
/// `Type:*`) every reference parameter of the named type or of every type. Probing
/// these is what replaced a reverse index of its own, which every reference row paid
/// for on write.
fn revinclude_probes(inc: &Include) -> Vec<(String, Vec<String>)> {
    if let (Some(p), false) = (&inc.param, inc.source_type == "*") {
        return vec![(inc.source_type.clone(), vec![p.clone()])];
    }
    let registry = vigil_fhir::search::SearchRegistry::r4();
    let mut types: Vec<&str> = if inc.source_type == "*" {
        registry.resource_types().collect()
    } else {
        vec![inc.source_type.as_str()]
    };
    types.sort_unstable();
    types
        .into_iter()
        .filter_map(|t| {
            let mut codes: Vec<String> = registry
                .params_for(t)
                .filter(|p| p.param_type() == SearchParamType::Reference && p.is_indexed())
                .filter(|p| inc.param.as_deref().is_none_or(|c| c == p.code()))
                .map(|p| p.code().to_string())
                .collect();
            codes.sort_unstable();
            codes.dedup();
            (!codes.is_empty()).then(|| (t.to_string(), codes))
        })
        .collect()
}

/// Whether the clause needs Rust to decide it (see the module documentation).
fn needs_rust(c: &Clause) -> bool {
    c.param.param_type == SearchParamType::Token && matches!(c.modifier, Some(Modifier::Text))
}

fn leaf_cond(q: &mut Sql, c: &Clause, o: &str) -> Result<()> {
    match &c.modifier {
        Some(m @ (Modifier::In | Modifier::NotIn)) => {
            return Err(invalid(format!(
                "the :{} modifier needs a terminology service",
                m.as_str()
            )))
        }
        Some(m @ (Modifier::Above | Modifier::Below))
            if c.param.param_type == SearchParamType::Token =>
        {
            return Err(invalid(format!(
                "the :{} modifier needs a terminology service",
                m.as_str()
            )))
        }
        _ => {}
    }
    let code = c.param.code.as_str();
    let negated = matches!(c.modifier, Some(Modifier::Not));
    // `_id` and `_lastUpdated` are columns of the resource row.
    if code == "_id"
        && matches!(c.modifier, None | Some(Modifier::Not))
        && c.values.iter().all(|v| matches!(v, SearchValue::Token(_)))
    {
        q.s(if negated { "NOT (0" } else { "(0" });
        for v in &c.values {
            if let SearchValue::Token(t) = v {
                // The id has no system: `sys|x` never matches, `x` and `|x` compare it.
                match (&t.system, &t.code) {
                    (TokenSystem::Is(_), _) | (_, None) => {}
                    (_, Some(id)) => {
                        q.s(&format!(" OR {o}.id = ")).v(id.clone());
                    }
                }
            }
        }
        q.s(")");
        return Ok(());
    }
    if code == "_lastUpdated"
        && c.modifier.is_none()
        && c.values.iter().all(|v| matches!(v, SearchValue::Date(_)))
    {
        q.s("(0");
        for v in &c.values {
            q.s(" OR ");
            value_cond(q, v, None, SearchParamType::Date, Cols::LastUpdated(o))?;
        }
        q.s(")");
        return Ok(());
    }
    if super::index::ROW_COLUMN_PARAMS.contains(&code) {
        // No index rows are stored for these (every live resource has both): what is
        // left is `:missing`, true of none; other modifiers mean nothing here.
        q.s("(0");
        for v in &c.values {
            match v {
                SearchValue::Missing(m) => q.s(if *m { " OR 0" } else { " OR 1" }),
                _ => {
                    return Err(invalid(format!(
                        "`{code}` does not support the :{} modifier",
                        c.modifier.as_ref().map_or("", |m| m.as_str())
                    )))
                }
            };
        }
        q.s(")");
        return Ok(());
    }
    let table = table_for(c.param.param_type)?;
    let x = q.alias("x");
    // Correlated probes of one resource's rows: always by its key range. Without
    // statistics SQLite may otherwise pick a value index (all rows with that code) for
    // the probe, turning each check into a scan.
    let key = |q: &mut Sql| {
        q.s(&format!(
            "SELECT 1 FROM {table} {x} NOT INDEXED WHERE {} AND ",
            rows_of(&x, o)
        ))
        .param_is(&x, code);
    };
    let mut first = true;
    q.s("(");
    let mut positive: Vec<&SearchValue> = Vec::new();
    for v in &c.values {
        if let SearchValue::Missing(m) = v {
            if !first {
                q.s(" OR ");
            }
            first = false;
            q.s(if *m { "NOT EXISTS (" } else { "EXISTS (" });
            key(q);
            q.s(")");
        } else {
            positive.push(v);
        }
    }
    if !positive.is_empty() {
        if !first {
            q.s(" OR ");
        }
        q.s(if negated { "NOT EXISTS (" } else { "EXISTS (" });
        key(q);
        q.s(" AND ");
        or_values(q, &positive, c, &x)?;
        q.s(")");
    }
    q.s(")");
    Ok(())
}

/// The WHERE condition on `r` for the query's types and clauses; returns the clauses
/// that must also be checked in Rust.
fn filter<'q>(q: &mut Sql, query: &'q SearchQuery) -> Result<Vec<&'q Clause>> {
    q.s("r.deleted = 0");
    let types: Vec<&String> = match &query.resource_type {
        Some(t) => vec![t],
        None => query.types.iter().collect(),
    };
    let single_type = match (&query.resource_type, query.types.as_slice()) {
        (Some(t), _) | (None, [t]) => Some(t),
        _ => None,
    };
    let driver = single_type.and_then(|_| {
        (0..query.clauses.len())
            .filter_map(|i| driver_rank(&query.clauses[i]).map(|r| (r, i)))
            .min()
            .map(|(_, i)| i)
    });
    if !types.is_empty() {
        // With a driver clause the resources are looked up by `rid`; the unary `+`
        // keeps SQLite from scanning the type's rows by an index on the type instead.
        q.s(if driver.is_some() {
            " AND +r.resource_type IN ("
        } else {
            " AND r.resource_type IN ("
        });
        for (i, t) in types.into_iter().enumerate() {
            if i > 0 {
                q.s(", ");
            }
            q.v(t.clone());
        }
        q.s(")");
    }
    let mut rust = Vec::new();
    for (i, c) in query.clauses.iter().enumerate() {
        if needs_rust(c) {
            if c.is_chained() {
                return Err(invalid("`:text` is not supported at the end of a chain"));
            }
            rust.push(c);
        }
        q.s(" AND ");
        match (driver == Some(i), single_type) {
            (true, Some(t)) => driver_cond(q, c, t)?,
            _ => clause_cond(q, c, &c.hops, "r")?,
        }
    }
    Ok(rust)
}

/// How well a clause can drive the plan (lower is more selective, by parameter type);
/// `None` for clauses that cannot (negated, `:missing`, chained, checked in Rust, or on
/// the resource row's own columns).
fn driver_rank(c: &Clause) -> Option<u8> {
    if c.is_chained()
        || needs_rust(c)
        || matches!(
            c.param.code.as_str(),
            "_id" | "_lastUpdated" | "_content" | "_text"
        )
        || matches!(
            c.modifier,
            Some(
                Modifier::Not
                    | Modifier::Missing
                    | Modifier::Contains
                    | Modifier::In
                    | Modifier::NotIn
                    | Modifier::Above
                    | Modifier::Below
            )
        )
        || c.values
            .iter()
            .any(|v| matches!(v, SearchValue::Missing(_)))
    {
        return None;
    }
    Some(match c.param.param_type {
        SearchParamType::Reference => 0,
        SearchParamType::Token => 1,
        SearchParamType::Uri => 2,
        SearchParamType::String => 3,
        SearchParamType::Composite => 4,
        SearchParamType::Quantity => 5,
        SearchParamType::Number => 6,
        SearchParamType::Date => 7,
        SearchParamType::Special => return None,
    })
}

/// A positive clause as `r.rid IN (SELECT <rid of k> FROM idx_... WHERE resource_type =
/// ? AND param = ? AND ...)`: SQLite evaluates the subquery through the value index and
/// looks the resources up by their key, instead of scanning every resource of the
/// type and probing each clause (the plan the correlated `EXISTS` forms get). Same
/// meaning as [`clause_cond`] for the clauses [`driver_rank`] accepts.
fn driver_cond(q: &mut Sql, c: &Clause, resource_type: &str) -> Result<()> {
    let table = table_for(c.param.param_type)?;
    let x = q.alias("x");
    q.s(&format!(
        "r.rid IN (SELECT {} FROM {table} {x} WHERE {x}.resource_type = ",
        rid_of(&x)
    ))
    .v(resource_type.to_string())
    .s(" AND ")
    .param_is(&x, &c.param.code)
    .s(" AND ");
    if table == "idx_string" {
        // Always true here (`_content`/`_text` never drive), but lets SQLite use the
        // partial value index.
        q.s(&format!(
            "{x}.{} AND ",
            super::schema::STRING_VALUE_INDEX_TERM
        ));
    }
    let values: Vec<&SearchValue> = c.values.iter().collect();
    or_values(q, &values, c, &x)?;
    q.s(")");
    Ok(())
}

/// The values OR-ed, as `(v1 OR v2 ...)`: no constant first term, which would keep
/// SQLite from using the equalities of a single value for an index.
fn or_values(q: &mut Sql, values: &[&SearchValue], c: &Clause, x: &str) -> Result<()> {
    q.s("(");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            q.s(" OR ");
        }
        value_cond(
            q,
            v,
            c.modifier.as_ref(),
            c.param.param_type,
            Cols::Table(x),
        )?;
    }
    q.s(")");
    Ok(())
}

/// A `_sort` key as a correlated scalar subquery (or a column of `r`).
fn sort_expr(q: &mut Sql, k: &SortKey) -> Result<()> {
    let code = k.param.code.as_str();
    match code {
        "_id" => {
            q.s("r.id");
            return Ok(());
        }
        "_lastUpdated" => {
            q.s("r.last_updated");
            return Ok(());
        }
        _ => {}
    }
    let agg = if k.descending { "MAX" } else { "MIN" };
    let (table, expr) = match (k.param.param_type, k.descending) {
        (SearchParamType::Token, _) => ("idx_token", "x.code"),
        (SearchParamType::String, _) => ("idx_string", "x.normalized"),
        (SearchParamType::Date, false) => ("idx_date", "x.low"),
        (SearchParamType::Date, true) => ("idx_date", "x.high"),
        (SearchParamType::Number, false) => ("idx_number", "COALESCE(x.value, x.low)"),
        (SearchParamType::Number, true) => ("idx_number", "COALESCE(x.value, x.high)"),
        (SearchParamType::Quantity, false) => (
            "idx_quantity",
            "COALESCE(x.canonical_value, x.canonical_low, x.value, x.low)",
        ),
        (SearchParamType::Quantity, true) => (
            "idx_quantity",
            "COALESCE(x.canonical_value, x.canonical_high, x.value, x.high)",
        ),
        (SearchParamType::Reference, _) => ("idx_reference", "x.reference"),
        (SearchParamType::Uri, _) => ("idx_uri", "x.uri"),
        _ => return Err(invalid(format!("cannot sort on `{code}`"))),
    };
    q.s(&format!(
        "(SELECT {agg}({expr}) FROM {table} x NOT INDEXED WHERE {} AND ",
        rows_of("x", "r")
    ))
    .param_is("x", code)
    .s(")");
    Ok(())
}

fn key_value(v: SqlValue) -> KeyValue {
    match v {
        SqlValue::Integer(i) => KeyValue::Int(i),
        SqlValue::Real(f) => KeyValue::Real(f),
        SqlValue::Text(s) => KeyValue::Text(s),
        SqlValue::Null | SqlValue::Blob(_) => KeyValue::Null,
    }
}

fn key_sql(k: &KeyValue) -> SqlValue {
    match k {
        KeyValue::Null => SqlValue::Null,
        KeyValue::Int(i) => SqlValue::Integer(*i),
        KeyValue::Real(f) => SqlValue::Real(*f),
        KeyValue::Text(s) => SqlValue::Text(s.clone()),
    }
}

/// The page query: positions (seq, keys) after `after`, in order, at most `limit`.
fn page_sql(query: &SearchQuery, after: Option<&Cursor>, limit: usize) -> Result<Sql> {
    let mut q = Sql::default();
    q.s("SELECT seq");
    for i in 0..query.sort.len() {
        let _ = write!(q.text, ", k{i}");
    }
    q.s(" FROM (SELECT r.seq AS seq");
    for (i, k) in query.sort.iter().enumerate() {
        q.s(", ");
        sort_expr(&mut q, k)?;
        let _ = write!(q.text, " AS k{i}");
    }
    q.s(" FROM resource r WHERE ");
    filter(&mut q, query)?;
    q.s(")");
    if let Some(c) = after {
        // OR over i of (keys before i equal AND key i after), then all equal and seq
        // after. NULL keys sort last: after a NULL only NULLs, and `IS` compares them.
        q.s(" WHERE (0");
        for (i, k) in query.sort.iter().enumerate() {
            let Some(value) = c.keys.get(i) else { break };
            if *value == KeyValue::Null {
                continue;
            }
            q.s(" OR (1");
            for j in 0..i {
                let _ = write!(q.text, " AND k{j} IS ");
                q.v(key_sql(&c.keys[j]));
            }
            let op = if k.descending { "<" } else { ">" };
            let _ = write!(q.text, " AND (k{i} IS NULL OR k{i} {op} ");
            q.v(key_sql(value)).s("))");
        }
        q.s(" OR (1");
        for (j, v) in c.keys.iter().enumerate() {
            let _ = write!(q.text, " AND k{j} IS ");
            q.v(key_sql(v));
        }
        q.s(" AND seq > ").v(c.seq).s("))");
    }
    q.s(" ORDER BY ");
    for (i, k) in query.sort.iter().enumerate() {
        let _ = write!(
            q.text,
            "(k{i} IS NULL), k{i}{}, ",
            if k.descending { " DESC" } else { "" }
        );
    }
    q.s("seq LIMIT ")
        .v(i64::try_from(limit).unwrap_or(i64::MAX));
    Ok(q)
}

/// The current version with write sequence `seq`.
fn load(conn: &Connection, seq: i64) -> Result<Option<Stored>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {VERSION_COLS} FROM resource_version WHERE seq = ?1"
        ))
        .and_then(|mut s| s.query_row([seq], version_row).optional())
        .map_err(storage)?;
    row.map(|r| r.into_stored().map_err(storage)).transpose()
}

/// Whether a candidate satisfies the clauses SQL only narrowed.
fn rust_check(rust: &SearchQuery, stored: &Stored) -> Result<bool> {
    if rust.clauses.is_empty() {
        return Ok(true);
    }
    let Ok(x) = vigil_fhir::search::extract(&stored.resource) else {
        return Ok(false);
    };
    matching::resource_matches(rust, &x, &MatchContext::default())
        .map_err(|e| invalid(e.to_string()))
}

fn run_rows(conn: &Connection, q: &Sql, keys: usize) -> Result<Vec<(i64, Vec<KeyValue>)>> {
    let mut stmt = conn.prepare(&q.text).map_err(storage)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(q.args.iter()), |r| {
            let seq: i64 = r.get(0)?;
            let mut k = Vec::with_capacity(keys);
            for i in 0..keys {
                k.push(key_value(r.get::<_, SqlValue>(i + 1)?));
            }
            Ok((seq, k))
        })
        .map_err(storage)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(storage)
}

/// Execute a search (see [`FhirStore::search`]) on one connection, inside one read
/// transaction so the page, its total and its includes are one snapshot.
pub(super) fn search(
    conn: &Connection,
    query: &SearchQuery,
    page: &SearchPage,
) -> Result<SearchResult> {
    struct ReadTx<'c>(Option<&'c Connection>);
    impl Drop for ReadTx<'_> {
        fn drop(&mut self) {
            // A read transaction: ending it by ROLLBACK changes nothing.
            if let Some(c) = self.0 {
                let _ = c.execute_batch("ROLLBACK");
            }
        }
    }
    let _tx = if conn.is_autocommit() {
        conn.execute_batch("BEGIN").map_err(storage)?;
        ReadTx(Some(conn))
    } else {
        ReadTx(None)
    };
    let count = page
        .count
        .or(query.count)
        .unwrap_or(DEFAULT_SEARCH_COUNT)
        .min(MAX_SEARCH_COUNT) as usize;
    let signature = sort_signature(query);
    let cursor = match page.cursor.as_deref().or(query.cursor.as_deref()) {
        Some(text) => Some(Cursor::decode(text, signature, query.sort.len())?),
        None => None,
    };
    let rust = SearchQuery {
        clauses: query
            .clauses
            .iter()
            .filter(|c| needs_rust(c))
            .cloned()
            .collect(),
        ..SearchQuery::default()
    };
    let keys = query.sort.len();
    let mut found: Vec<(Stored, Cursor)> = Vec::new();
    if count > 0 {
        let mut after = cursor;
        let batch = if rust.clauses.is_empty() {
            count + 1
        } else {
            (count + 1).max(FILTER_BATCH)
        };
        'fetch: loop {
            let sql = page_sql(query, after.as_ref(), batch)?;
            let rows = run_rows(conn, &sql, keys)?;
            let full = rows.len() == batch;
            for (seq, k) in rows {
                let position = Cursor { keys: k, seq };
                if let Some(stored) = load(conn, seq)? {
                    if rust_check(&rust, &stored)? {
                        found.push((stored, position.clone()));
                        if found.len() > count {
                            break 'fetch;
                        }
                    }
                }
                after = Some(position);
            }
            if !full {
                break;
            }
        }
    }
    let more = found.len() > count;
    found.truncate(count);
    let next_cursor = if more {
        found.last().map(|(_, c)| c.encode(signature))
    } else {
        None
    };
    let total = match query.total {
        Some(TotalMode::Accurate | TotalMode::Estimate) => Some(total(conn, query, &rust)?),
        _ => None,
    };
    let matches: Vec<Stored> = found.into_iter().map(|(s, _)| s).collect();
    let included = includes(conn, query, &matches)?;
    Ok(SearchResult {
        matches,
        next_cursor,
        total,
        included,
    })
}

fn total(conn: &Connection, query: &SearchQuery, rust: &SearchQuery) -> Result<u64> {
    let mut q = Sql::default();
    if rust.clauses.is_empty() {
        q.s("SELECT COUNT(*) FROM resource r WHERE ");
        filter(&mut q, query)?;
        let n: i64 = conn
            .prepare(&q.text)
            .and_then(|mut s| s.query_row(rusqlite::params_from_iter(q.args.iter()), |r| r.get(0)))
            .map_err(storage)?;
        return Ok(u64::try_from(n).unwrap_or(0));
    }
    q.s("SELECT r.seq FROM resource r WHERE ");
    filter(&mut q, query)?;
    let mut n = 0;
    for (seq, _) in run_rows(conn, &q, 0)? {
        if let Some(s) = load(conn, seq)? {
            if rust_check(rust, &s)? {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// `_include` and `_revinclude` resources of a page: targets of the directives'
/// references (local ones), `:iterate` directives applied again to what they added.
fn includes(conn: &Connection, query: &SearchQuery, matches: &[Stored]) -> Result<Vec<Stored>> {
    if query.include.is_empty() && query.revinclude.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: HashSet<(String, String)> = matches
        .iter()
        .map(|m| (m.resource_type.clone(), m.id.clone()))
        .collect();
    let mut out: Vec<Stored> = Vec::new();
    let mut frontier: Vec<Stored> = matches.to_vec();
    // Per `_revinclude`, the (source type, parameters) its probes look at, the same for
    // every source resource.
    let revinclude_probes: Vec<Vec<(String, Vec<String>)>> =
        query.revinclude.iter().map(revinclude_probes).collect();
    for round in 0..=MAX_ITERATE_ROUNDS {
        let mut next = Vec::new();
        let active = |i: &&Include| round == 0 || i.iterate;
        for source in &frontier {
            let mut seqs: Vec<i64> = Vec::new();
            for inc in query.include.iter().filter(active) {
                if inc.source_type != "*" && inc.source_type != source.resource_type {
                    continue;
                }
                let mut q = Sql::default();
                q.s(&format!(
                    "SELECT t.seq FROM resource s JOIN idx_reference x NOT INDEXED ON {} \
                     JOIN resource t ON t.resource_type = x.target_type AND \
                     t.id = x.target_id AND t.deleted = 0 WHERE s.resource_type = ",
                    rows_of("x", "s")
                ))
                .v(source.resource_type.clone())
                .s(" AND s.id = ")
                .v(source.id.clone())
                .s(" AND x.kind = 'local'");
                if let Some(p) = &inc.param {
                    q.s(" AND ").param_is("x", p);
                }
                if let Some(t) = &inc.target_type {
                    q.s(" AND x.target_type = ").v(t.clone());
                }
                seqs.extend(run_rows(conn, &q, 0)?.into_iter().map(|(s, _)| s));
            }
            for (inc, probes) in query.revinclude.iter().zip(&revinclude_probes) {
                if !active(&inc)
                    || inc
                        .target_type
                        .as_ref()
                        .is_some_and(|t| *t != source.resource_type)
                {
                    continue;
                }
                for (source_type, params) in probes {
                    let mut q = Sql::default();
                    q.s(&format!(
                        "SELECT t.seq FROM idx_reference x JOIN resource t ON t.rid = {} AND \
                         t.deleted = 0 WHERE x.resource_type = ",
                        rid_of("x")
                    ))
                    .v(source_type.clone())
                    .s(" AND x.target_type = ")
                    .v(source.resource_type.clone())
                    .s(" AND x.target_id = ")
                    .v(source.id.clone())
                    .s(" AND x.kind = 'local'");
                    if let [p] = params.as_slice() {
                        q.s(" AND ").param_is("x", p);
                    } else {
                        q.s(" AND x.param IN (");
                        for (i, c) in params.iter().enumerate() {
                            if i > 0 {
                                q.s(", ");
                            }
                            q.v(c.clone());
                        }
                        q.s(")");
                    }
                    seqs.extend(run_rows(conn, &q, 0)?.into_iter().map(|(s, _)| s));
                }
            }
            for seq in seqs {
                if out.len() >= MAX_INCLUDED {
                    return Ok(out);
                }
                if let Some(s) = load(conn, seq)? {
                    if seen.insert((s.resource_type.clone(), s.id.clone())) {
                        out.push(s.clone());
                        next.push(s);
                    }
                }
            }
        }
        let iterating = query
            .include
            .iter()
            .chain(&query.revinclude)
            .any(|i| i.iterate);
        if next.is_empty() || !iterating {
            break;
        }
        frontier = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor() {
        assert_eq!(prefix_successor("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
    }

    /// The plan SQLite makes for a search's page query.
    fn plan(conn: &Connection, resource_type: &str, q: &str) -> String {
        let query = SearchQuery::parse(
            Some(resource_type),
            q,
            vigil_fhir::search::SearchRegistry::r4(),
        )
        .unwrap();
        let sql = page_sql(&query, None, 10).unwrap();
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", sql.text))
            .unwrap();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(sql.args.iter()), |r| {
                r.get::<_, String>(3)
            })
            .unwrap();
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .unwrap()
            .join("\n")
    }

    /// Each quantity row is in one of the two partial quantity indexes (migration 7):
    /// the canonical one when it has a canonical form, the value one otherwise; a
    /// search by system and code uses the one its values are in.
    #[test]
    fn quantity_searches_use_the_partial_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap().unwrap();
        let p = plan(
            &conn,
            "Observation",
            "value-quantity=gt100|http://unitsofmeasure.org|/min",
        );
        assert!(p.contains("idx_quantity_canonical"), "{p}");
        assert!(p.contains("idx_quantity_value"), "{p}");
        let p = plan(
            &conn,
            "Observation",
            "value-quantity=5|http://example.org/units|tablet",
        );
        assert!(p.contains("idx_quantity_value"), "{p}");
    }

    /// SQLite only uses the partial string value index (migration 4) if the query
    /// repeats its WHERE term.
    #[test]
    fn string_searches_use_the_partial_value_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap().unwrap();
        let p = plan(&conn, "Patient", "name=smi");
        assert!(p.contains("idx_string_value"), "{p}");
        // `_content` never drives a search; it must still work, by its rows.
        let p = plan(&conn, "Patient", "_content=smith");
        assert!(!p.contains("idx_string_value"), "{p}");
    }
}
