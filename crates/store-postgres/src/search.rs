//! Search execution on the `idx_*` tables: the SQLite backend's SQL (see its
//! `sqlite/search.rs` for the design) in PostgreSQL's dialect.
//!
//! Each clause becomes a condition on the resource row `r` (AND across clauses): an
//! `EXISTS` over the parameter's index table (OR across values), `:not` its `NOT
//! EXISTS`, `:missing` the (`NOT`) `EXISTS` of any row of the parameter; chains and
//! `_has` nest `EXISTS` through `idx_reference`. Every value from the query is a bound
//! parameter with an explicit cast (`$3::text`), so PostgreSQL never has to guess a
//! type; the only text spliced into the SQL is fixed column and table names and
//! composite component indexes (integers).
//!
//! Dialect notes: composite tuples are `jsonb` (`#>>` paths, cast to `int8`/`float8`
//! where numbers are compared); string prefixes compare in the `"C"` collation (code
//! point order, as the columns); `:text` on tokens is decided in Rust on the extracted
//! values, as in SQLite. The page query returns the version rows with the keys, so a
//! page is one round trip; includes are fetched per directive for all sources at once.

use crate::pg_error;
use crate::write::{version_row_at, VERSION_COLS_V};
use postgres::types::ToSql;
use postgres::{Client, Statement};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use vigil_fhir::search::matching::{self, MatchContext};
use vigil_fhir::search::{
    canonical_unit, normalize, Clause, Hop, Include, Modifier, Prefix, QuantityQuery,
    ReferenceQuery, ReferenceQueryKind, SearchParamType, SearchQuery, SearchValue, SortKey,
    TokenQuery, TokenSystem, TotalMode,
};
use vigil_fhirpath::ucum;
use vigil_store::search::{sort_signature, Cursor, KeyValue};
use vigil_store::*;

const UCUM: &str = "http://unitsofmeasure.org";
/// Candidates fetched per round when some clause is checked in Rust.
const FILTER_BATCH: usize = 200;
/// The most resources `_include` / `_revinclude` add to one page.
const MAX_INCLUDED: usize = 5_000;
/// The most rounds of `:iterate` includes.
const MAX_ITERATE_ROUNDS: usize = 8;
/// Statements a connection keeps prepared; the cache starts over when full.
const MAX_STATEMENTS: usize = 256;

/// A bound value.
#[derive(Clone, Debug)]
enum Arg {
    I(i64),
    F(f64),
    T(String),
    /// A text array.
    L(Vec<String>),
}

impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::T(s)
    }
}

impl From<i64> for Arg {
    fn from(i: i64) -> Arg {
        Arg::I(i)
    }
}

/// SQL text with its bound parameters (`$N::type`, numbered in the order added).
#[derive(Default)]
struct Sql {
    text: String,
    args: Vec<Arg>,
    aliases: usize,
}

impl Sql {
    /// Append SQL text.
    fn s(&mut self, t: &str) -> &mut Self {
        self.text.push_str(t);
        self
    }

    /// Append a bound parameter.
    fn v(&mut self, v: impl Into<Arg>) -> &mut Self {
        let v = v.into();
        let ty = match v {
            Arg::I(_) => "int8",
            Arg::F(_) => "float8",
            Arg::T(_) => "text",
            Arg::L(_) => "text[]",
        };
        self.args.push(v);
        let _ = write!(self.text, "${}::{ty}", self.args.len());
        self
    }

    /// A fresh table alias for a nested subquery.
    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.args
            .iter()
            .map(|a| match a {
                Arg::I(i) => i as &(dyn ToSql + Sync),
                Arg::F(f) => f as &(dyn ToSql + Sync),
                Arg::T(s) => s as &(dyn ToSql + Sync),
                Arg::L(l) => l as &(dyn ToSql + Sync),
            })
            .collect()
    }
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}

/// Where a value's fields are: columns of an index-table row, or one component of a
/// composite tuple (`idx_composite.value` jsonb, see [`vigil_store::index::value_json`]).
#[derive(Clone, Copy)]
enum Cols<'a> {
    Table(&'a str),
    Json(&'a str, usize),
    /// `resource.last_updated` of the resource row aliased so: a point date.
    LastUpdated(&'a str),
}

impl Cols<'_> {
    /// The jsonb path of a field of a composite component.
    fn path(name: &str, i: usize) -> String {
        // Column names of the tables → keys of `value_json`.
        let key = match name {
            "kind" => "kind_of",
            "target_type" => "type",
            "target_id" => "id",
            "target_version" => "version",
            "canonical_value" => "canonical,value",
            "canonical_low" => "canonical,low",
            "canonical_high" => "canonical,high",
            "canonical_unit" => "canonical,unit",
            "identifier_system" => "identifier,system",
            "identifier_value" => "identifier,code",
            "identifier_type" => "types",
            other => other,
        };
        format!("'{{components,{i},{key}}}'")
    }

    /// A text field as SQL.
    fn col(&self, name: &str) -> String {
        match self {
            Cols::Table(a) => format!("{a}.{name}"),
            Cols::LastUpdated(a) => format!("{a}.last_updated"),
            Cols::Json(a, i) => format!("({a}.value #>> {})", Self::path(name, *i)),
        }
    }

    /// An integer field (date bounds) as `int8`.
    fn int(&self, name: &str) -> String {
        match self {
            Cols::Table(_) | Cols::LastUpdated(_) => self.col(name),
            Cols::Json(..) => format!("({})::int8", self.col(name)),
        }
    }

    /// A decimal field as `float8` (JSON keeps decimals as text).
    fn num(&self, name: &str) -> String {
        match self {
            Cols::Table(_) | Cols::LastUpdated(_) => self.col(name),
            Cols::Json(..) => format!("({})::float8", self.col(name)),
        }
    }

    /// A jsonb field (identifier types).
    fn json(&self, name: &str) -> String {
        match self {
            Cols::Table(a) | Cols::LastUpdated(a) => format!("{a}.{name}"),
            Cols::Json(a, i) => format!("({a}.value #> {})", Self::path(name, *i)),
        }
    }
}

fn real(d: Decimal) -> Result<Arg> {
    d.to_f64()
        .map(Arg::F)
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
fn range(q: &mut Sql, prefix: Prefix, bounds: [(Arg, Arg); 3], tl: &str, th: &str) {
    let [search, exact, approx] = bounds;
    let within = |q: &mut Sql, (l, h): (Arg, Arg)| {
        q.s(&format!("({tl} IS NOT NULL AND {tl} >= "))
            .v(l)
            .s(&format!(" AND {th} IS NOT NULL AND {th} <= "))
            .v(h)
            .s(")");
    };
    let gt = |q: &mut Sql, h: Arg| {
        q.s(&format!("({th} IS NULL OR {th} > ")).v(h).s(")");
    };
    let lt = |q: &mut Sql, l: Arg| {
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
/// which is the `"C"` collation's order of UTF-8); `None` if there is none.
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

/// `expr` starts with `prefix` (a range in the `"C"` collation, so the value index can
/// serve it).
fn starts_with(q: &mut Sql, expr: &str, prefix: &str) {
    if prefix.is_empty() {
        q.s(&format!("({expr} IS NOT NULL)"));
        return;
    }
    q.s(&format!("({expr} COLLATE \"C\" >= "))
        .v(prefix.to_string());
    match prefix_successor(prefix) {
        Some(next) => q.s(&format!(" AND {expr} COLLATE \"C\" < ")).v(next).s(")"),
        None => q
            .s(&format!(" AND left({expr}, length("))
            .v(prefix.to_string())
            .s(")) = ")
            .v(prefix.to_string())
            .s(")"),
    };
}

fn token_cond(q: &mut Sql, t: &TokenQuery, system: &str, code: &str) {
    q.s("(");
    match &t.system {
        TokenSystem::Any => q.s("TRUE"),
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
            [
                (real(low)?, real(high)?),
                (real(value)?, real(value)?),
                (real(al)?, real(ah)?),
            ],
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
            q.s("TRUE");
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
                q.s("FALSE");
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
                    q.s("FALSE");
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
                q.s("FALSE");
            } else {
                starts_with(q, &uri, v);
            }
        }
        Some(Modifier::Above) => {
            q.s(&format!("({uri} <> '' AND left("))
                .v(v.to_string())
                .s(&format!(", length({uri})) = {uri})"));
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
                    " AND EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN \
                     jsonb_typeof({t}) = 'array' THEN {t} ELSE '[]'::jsonb END) j WHERE \
                     j.value ->> 'system' = ",
                    t = c.json("identifier_type")
                ))
                .v(system.clone())
                .s(" AND j.value ->> 'code' = ")
                .v(code.clone())
                .s("))");
        }
        SearchValue::String(_) if ptype == SearchParamType::Token => {
            // `:text`: narrowed here, decided in Rust (see the module documentation).
            q.s(&format!("({} IS NOT NULL)", c.col("text")));
        }
        SearchValue::String(s) => match modifier {
            Some(Modifier::Exact) => {
                q.s(&format!("({} = ", c.col("exact"))).v(s.clone()).s(")");
            }
            Some(Modifier::Contains) => {
                q.s(&format!("(strpos({}, ", c.col("normalized")))
                    .v(normalize(s))
                    .s(") > 0)");
            }
            _ => starts_with(q, &c.col("normalized"), &normalize(s)),
        },
        SearchValue::FullText(s) => {
            q.s("(TRUE");
            for w in normalize(s).split(' ') {
                q.s(&format!(" AND strpos({}, ", c.col("normalized")))
                    .v(w.to_string())
                    .s(") > 0");
            }
            q.s(")");
        }
        SearchValue::Date(d) => {
            let (Some(sl), Some(sh)) = (d.range.low, d.range.high) else {
                q.s("FALSE");
                return Ok(());
            };
            let r = (Arg::I(sl), Arg::I(sh));
            range(
                q,
                d.prefix,
                [r.clone(), r.clone(), r],
                &c.int("low"),
                &c.int("high"),
            );
        }
        SearchValue::Number(n) => {
            let (tl, th) = number_target(c);
            let (al, ah) = approx(n.value, n.low, n.high);
            range(
                q,
                n.prefix,
                [
                    (real(n.low)?, real(n.high)?),
                    (real(n.value)?, real(n.value)?),
                    (real(al)?, real(ah)?),
                ],
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
                "(jsonb_array_length({a}.value -> 'components') = {}",
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
                // `path`, which is a reference's kind).
                q.s(&format!(
                    " AND ({a}.value #>> '{{components,{i},kind}}') = '{kind}' AND "
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
                "EXISTS (SELECT 1 FROM idx_reference {h} JOIN resource {t} ON \
                 {t}.resource_type = {h}.target_type AND {t}.id = {h}.target_id AND \
                 NOT {t}.deleted WHERE {h}.resource_type = {o}.resource_type AND \
                 {h}.resource_id = {o}.id AND {h}.kind = 'local' AND {h}.param = "
            ))
            .v(param.code.clone());
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
                 {t}.resource_type = {h}.resource_type AND {t}.id = {h}.resource_id AND \
                 NOT {t}.deleted WHERE {h}.target_type = {o}.resource_type AND \
                 {h}.target_id = {o}.id AND {h}.kind = 'local' AND {h}.resource_type = "
            ))
            .v(resource_type.clone())
            .s(&format!(" AND {h}.param = "))
            .v(param.code.clone());
        }
    }
    q.s(" AND ");
    clause_cond(q, c, rest, &t)?;
    q.s(")");
    Ok(())
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
        q.s(if negated { "NOT (FALSE" } else { "(FALSE" });
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
        q.s("(FALSE");
        for v in &c.values {
            q.s(" OR ");
            value_cond(q, v, None, SearchParamType::Date, Cols::LastUpdated(o))?;
        }
        q.s(")");
        return Ok(());
    }
    let table = table_for(c.param.param_type)?;
    let x = q.alias("x");
    let key = |q: &mut Sql| {
        q.s(&format!(
            "SELECT 1 FROM {table} {x} WHERE {x}.resource_type = {o}.resource_type AND \
             {x}.resource_id = {o}.id AND {x}.param = "
        ))
        .v(code.to_string());
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

/// The WHERE condition on `r` for the query's types and clauses.
fn filter(q: &mut Sql, query: &SearchQuery) -> Result<()> {
    q.s("NOT r.deleted");
    let types: Vec<&String> = match &query.resource_type {
        Some(t) => vec![t],
        None => query.types.iter().collect(),
    };
    if !types.is_empty() {
        q.s(" AND r.resource_type IN (");
        for (i, t) in types.into_iter().enumerate() {
            if i > 0 {
                q.s(", ");
            }
            q.v(t.clone());
        }
        q.s(")");
    }
    for c in &query.clauses {
        if needs_rust(c) && c.is_chained() {
            return Err(invalid("`:text` is not supported at the end of a chain"));
        }
        q.s(" AND ");
        clause_cond(q, c, &c.hops, "r")?;
    }
    Ok(())
}

/// The values OR-ed, as `(v1 OR v2 ...)`.
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

/// The SQL type of a sort key's values.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum KeyType {
    Int,
    Real,
    Text,
}

/// A `_sort` key as a correlated scalar subquery (or a column of `r`), with its type.
fn sort_expr(q: &mut Sql, k: &SortKey) -> Result<KeyType> {
    let code = k.param.code.as_str();
    match code {
        "_id" => {
            q.s("r.id");
            return Ok(KeyType::Text);
        }
        "_lastUpdated" => {
            q.s("r.last_updated");
            return Ok(KeyType::Int);
        }
        _ => {}
    }
    let agg = if k.descending { "MAX" } else { "MIN" };
    let (table, expr, ty) = match (k.param.param_type, k.descending) {
        (SearchParamType::Token, _) => ("idx_token", "x.code", KeyType::Text),
        (SearchParamType::String, _) => ("idx_string", "x.normalized", KeyType::Text),
        (SearchParamType::Date, false) => ("idx_date", "x.low", KeyType::Int),
        (SearchParamType::Date, true) => ("idx_date", "x.high", KeyType::Int),
        (SearchParamType::Number, false) => {
            ("idx_number", "COALESCE(x.value, x.low)", KeyType::Real)
        }
        (SearchParamType::Number, true) => {
            ("idx_number", "COALESCE(x.value, x.high)", KeyType::Real)
        }
        (SearchParamType::Quantity, false) => (
            "idx_quantity",
            "COALESCE(x.canonical_value, x.canonical_low, x.value, x.low)",
            KeyType::Real,
        ),
        (SearchParamType::Quantity, true) => (
            "idx_quantity",
            "COALESCE(x.canonical_value, x.canonical_high, x.value, x.high)",
            KeyType::Real,
        ),
        (SearchParamType::Reference, _) => ("idx_reference", "x.reference", KeyType::Text),
        (SearchParamType::Uri, _) => ("idx_uri", "x.uri", KeyType::Text),
        _ => return Err(invalid(format!("cannot sort on `{code}`"))),
    };
    q.s(&format!(
        "(SELECT {agg}({expr}) FROM {table} x WHERE x.resource_type = r.resource_type AND \
         x.resource_id = r.id AND x.param = "
    ))
    .v(code.to_string())
    .s(")");
    Ok(ty)
}

/// A cursor key as a bound value of the key's type; `None` for NULL. A key of another
/// type than the sort key's is a tampered cursor.
fn key_arg(k: &KeyValue, ty: KeyType) -> Result<Option<Arg>> {
    Ok(match (k, ty) {
        (KeyValue::Null, _) => None,
        (KeyValue::Int(i), KeyType::Int) => Some(Arg::I(*i)),
        (KeyValue::Real(f), KeyType::Real) => Some(Arg::F(*f)),
        (KeyValue::Int(i), KeyType::Real) => Some(Arg::F(*i as f64)),
        (KeyValue::Text(s), KeyType::Text) => Some(Arg::T(s.clone())),
        _ => return Err(invalid("search cursor does not fit this query")),
    })
}

/// `k{j}` equal to a cursor key (NULL included).
fn key_equal(q: &mut Sql, j: usize, k: &Option<Arg>) {
    match k {
        None => {
            let _ = write!(q.text, " AND k{j} IS NULL");
        }
        Some(a) => {
            let _ = write!(q.text, " AND k{j} = ");
            q.v(a.clone());
        }
    }
}

/// The page query: positions (seq, keys) after `after`, in order, at most `limit`,
/// with their version rows (from column `1 + keys`).
fn page_sql(
    query: &SearchQuery,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<(Sql, Vec<KeyType>)> {
    let mut q = Sql::default();
    let mut types = Vec::with_capacity(query.sort.len());
    q.s("SELECT p.seq");
    for i in 0..query.sort.len() {
        let _ = write!(q.text, ", p.k{i}");
    }
    let _ = write!(q.text, ", {VERSION_COLS_V} FROM (SELECT seq");
    for i in 0..query.sort.len() {
        let _ = write!(q.text, ", k{i}");
    }
    q.s(" FROM (SELECT r.seq AS seq");
    for (i, k) in query.sort.iter().enumerate() {
        q.s(", ");
        types.push(sort_expr(&mut q, k)?);
        let _ = write!(q.text, " AS k{i}");
    }
    q.s(" FROM resource r WHERE ");
    filter(&mut q, query)?;
    q.s(") s");
    if let Some(c) = after {
        let keys: Vec<Option<Arg>> = c
            .keys
            .iter()
            .zip(&types)
            .map(|(k, ty)| key_arg(k, *ty))
            .collect::<Result<_>>()?;
        // OR over i of (keys before i equal AND key i after), then all equal and seq
        // after. NULL keys sort last: after a NULL only NULLs.
        q.s(" WHERE (FALSE");
        for (i, k) in query.sort.iter().enumerate() {
            let Some(Some(value)) = keys.get(i) else {
                continue;
            };
            q.s(" OR (TRUE");
            for (j, kj) in keys.iter().enumerate().take(i) {
                key_equal(&mut q, j, kj);
            }
            let op = if k.descending { "<" } else { ">" };
            let _ = write!(q.text, " AND (k{i} IS NULL OR k{i} {op} ");
            q.v(value.clone()).s("))");
        }
        q.s(" OR (TRUE");
        for (j, kj) in keys.iter().enumerate() {
            key_equal(&mut q, j, kj);
        }
        q.s(" AND seq > ").v(c.seq).s("))");
    }
    let mut order = String::new();
    for (i, k) in query.sort.iter().enumerate() {
        let _ = write!(
            order,
            "k{i}{} NULLS LAST, ",
            if k.descending { " DESC" } else { "" }
        );
    }
    let _ = write!(q.text, " ORDER BY {order}seq LIMIT ");
    q.v(i64::try_from(limit).unwrap_or(i64::MAX));
    // The version rows are joined to the page only (not to every candidate).
    let outer = order.replace('k', "p.k");
    let _ = write!(
        q.text,
        ") p JOIN resource_version v ON v.seq = p.seq ORDER BY {outer}p.seq"
    );
    Ok((q, types))
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

fn key_value(row: &postgres::Row, i: usize, ty: KeyType) -> Result<KeyValue> {
    let v = match ty {
        KeyType::Int => row
            .try_get::<_, Option<i64>>(i)
            .map(|v| v.map(KeyValue::Int)),
        KeyType::Real => row
            .try_get::<_, Option<f64>>(i)
            .map(|v| v.map(KeyValue::Real)),
        KeyType::Text => row
            .try_get::<_, Option<String>>(i)
            .map(|v| v.map(KeyValue::Text)),
    };
    Ok(v.map_err(pg_error)?.unwrap_or(KeyValue::Null))
}

/// A read-only search transaction with the connection's prepared statements.
///
/// Search SQL depends only on the query's shape (values are parameters), so statements
/// are prepared once per connection, saving a round trip and the parse per query. They
/// are always planned with their values (`plan_cache_mode = force_custom_plan`):
/// PostgreSQL's generic plans, which it would switch to after five executions, do not
/// know how selective a reference or code is and were measured 100x slower on the
/// issue's Observation query.
struct Reader<'a> {
    client: &'a mut Client,
    statements: &'a mut HashMap<String, Statement>,
    open: bool,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if self.open {
            // After an error: end the transaction so the connection is reusable (if
            // this fails the connection is broken, and the pool drops it).
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }
}

impl<'a> Reader<'a> {
    fn begin(
        client: &'a mut Client,
        statements: &'a mut HashMap<String, Statement>,
    ) -> Result<Reader<'a>> {
        // One round trip: the snapshot is taken at the first query.
        client
            .batch_execute(
                "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
                 SET LOCAL plan_cache_mode = force_custom_plan",
            )
            .map_err(pg_error)?;
        Ok(Reader {
            client,
            statements,
            open: true,
        })
    }

    fn commit(mut self) -> Result<()> {
        self.open = false;
        self.client.batch_execute("COMMIT").map_err(pg_error)
    }

    fn query(&mut self, q: &Sql) -> Result<Vec<postgres::Row>> {
        let stmt = match self.statements.get(&q.text) {
            Some(s) => s.clone(),
            None => {
                let s = self.client.prepare(&q.text).map_err(pg_error)?;
                if self.statements.len() >= MAX_STATEMENTS {
                    self.statements.clear();
                }
                self.statements.insert(q.text.clone(), s.clone());
                s
            }
        };
        self.client.query(&stmt, &q.params()).map_err(pg_error)
    }
}

/// Execute a search (see [`FhirStore::search`]) in one read-only snapshot.
pub(crate) fn search(
    client: &mut Client,
    statements: &mut HashMap<String, Statement>,
    query: &SearchQuery,
    page: &SearchPage,
) -> Result<SearchResult> {
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
    let mut tx = Reader::begin(client, statements)?;
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
            let (sql, types) = page_sql(query, after.as_ref(), batch)?;
            let rows = tx.query(&sql)?;
            let full = rows.len() == batch;
            for row in &rows {
                let seq: i64 = row.try_get(0).map_err(pg_error)?;
                let mut k = Vec::with_capacity(keys);
                for (i, ty) in types.iter().enumerate() {
                    k.push(key_value(row, i + 1, *ty)?);
                }
                let position = Cursor { keys: k, seq };
                let stored = version_row_at(row, 1 + keys)?.into_stored()?;
                if rust_check(&rust, &stored)? {
                    found.push((stored, position.clone()));
                    if found.len() > count {
                        break 'fetch;
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
        Some(TotalMode::Accurate | TotalMode::Estimate) => Some(total(&mut tx, query, &rust)?),
        _ => None,
    };
    let matches: Vec<Stored> = found.into_iter().map(|(s, _)| s).collect();
    let included = includes(&mut tx, query, &matches)?;
    // Read-only: ending it either way changes nothing.
    tx.commit()?;
    Ok(SearchResult {
        matches,
        next_cursor,
        total,
        included,
    })
}

fn total(tx: &mut Reader<'_>, query: &SearchQuery, rust: &SearchQuery) -> Result<u64> {
    let mut q = Sql::default();
    if rust.clauses.is_empty() {
        q.s("SELECT COUNT(*) FROM resource r WHERE ");
        filter(&mut q, query)?;
        let rows = tx.query(&q)?;
        let n: i64 = match rows.first() {
            Some(r) => r.try_get(0).map_err(pg_error)?,
            None => 0,
        };
        return Ok(u64::try_from(n).unwrap_or(0));
    }
    let _ = write!(
        q.text,
        "SELECT {VERSION_COLS_V} FROM resource r JOIN resource_version v ON v.seq = r.seq WHERE "
    );
    filter(&mut q, query)?;
    let mut n = 0;
    for row in tx.query(&q)? {
        if rust_check(rust, &version_row_at(&row, 0)?.into_stored()?)? {
            n += 1;
        }
    }
    Ok(n)
}

/// `_include` and `_revinclude` resources of a page: targets of the directives'
/// references (local ones), `:iterate` directives applied again to what they added.
fn includes(tx: &mut Reader<'_>, query: &SearchQuery, matches: &[Stored]) -> Result<Vec<Stored>> {
    if query.include.is_empty() && query.revinclude.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: HashSet<(String, String)> = matches
        .iter()
        .map(|m| (m.resource_type.clone(), m.id.clone()))
        .collect();
    let mut out: Vec<Stored> = Vec::new();
    let mut frontier: Vec<Stored> = matches.to_vec();
    let iterating = query
        .include
        .iter()
        .chain(&query.revinclude)
        .any(|i| i.iterate);
    for round in 0..=MAX_ITERATE_ROUNDS {
        // The frontier's ids by type: each directive is one query per source type.
        let mut by_type: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for s in &frontier {
            by_type
                .entry(s.resource_type.as_str())
                .or_default()
                .push(s.id.clone());
        }
        let active = |i: &&Include| round == 0 || i.iterate;
        let mut queries: Vec<Sql> = Vec::new();
        for (rt, ids) in &by_type {
            for inc in query.include.iter().filter(active) {
                if inc.source_type != "*" && inc.source_type != *rt {
                    continue;
                }
                let mut q = Sql::default();
                let _ = write!(
                    q.text,
                    "SELECT {VERSION_COLS_V} FROM idx_reference x JOIN resource t ON \
                     t.resource_type = x.target_type AND t.id = x.target_id AND NOT t.deleted \
                     JOIN resource_version v ON v.seq = t.seq WHERE x.resource_type = "
                );
                q.v(rt.to_string()).s(" AND x.resource_id = ANY(");
                q.v(Arg::L(ids.clone())).s(") AND x.kind = 'local'");
                if let Some(p) = &inc.param {
                    q.s(" AND x.param = ").v(p.clone());
                }
                if let Some(t) = &inc.target_type {
                    q.s(" AND x.target_type = ").v(t.clone());
                }
                queries.push(q);
            }
            for inc in query.revinclude.iter().filter(active) {
                if inc.target_type.as_ref().is_some_and(|t| t != rt) {
                    continue;
                }
                let mut q = Sql::default();
                let _ = write!(
                    q.text,
                    "SELECT {VERSION_COLS_V} FROM idx_reference x JOIN resource t ON \
                     t.resource_type = x.resource_type AND t.id = x.resource_id AND \
                     NOT t.deleted JOIN resource_version v ON v.seq = t.seq WHERE \
                     x.target_type = "
                );
                q.v(rt.to_string()).s(" AND x.target_id = ANY(");
                q.v(Arg::L(ids.clone())).s(") AND x.kind = 'local'");
                if inc.source_type != "*" {
                    q.s(" AND x.resource_type = ").v(inc.source_type.clone());
                }
                if let Some(p) = &inc.param {
                    q.s(" AND x.param = ").v(p.clone());
                }
                queries.push(q);
            }
        }
        let mut next = Vec::new();
        for q in queries {
            for row in tx.query(&q)? {
                if out.len() >= MAX_INCLUDED {
                    return Ok(out);
                }
                let s = version_row_at(&row, 0)?.into_stored()?;
                if seen.insert((s.resource_type.clone(), s.id.clone())) {
                    out.push(s.clone());
                    next.push(s);
                }
            }
        }
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
}
