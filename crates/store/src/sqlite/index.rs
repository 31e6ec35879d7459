//! Writing and reading the `idx_*` tables.

use super::schema::{INDEX_TABLES, KEY_SPAN};
use crate::api::OwnedIndexValue;
use crate::index::*;
use rusqlite::{Connection, OptionalExtension, Row};
use rust_decimal::Decimal;
use std::borrow::Cow;
use std::sync::OnceLock;
use vigil_fhir::search::{
    CanonicalQuantity, Comparator, DateValue, IndexValue, NumberValue, PositionValue,
    QuantityValue, ReferenceValue, SearchRegistry, StringValue, TokenValue, UriValue,
};

/// Parameters answered from the `resource` row's own columns (`id`, `last_updated`):
/// no index rows are stored for them (every live resource of a known type has both).
pub(crate) const ROW_COLUMN_PARAMS: [&str; 2] = ["_id", "_lastUpdated"];

/// The first row key of resource `rid` (its rows are `first..first + KEY_SPAN`).
pub(crate) fn first_key(rid: i64) -> i64 {
    rid.saturating_mul(KEY_SPAN)
}

/// Remove all index rows of a resource.
pub(crate) fn delete_rows(conn: &Connection, rid: i64) -> rusqlite::Result<()> {
    let first = first_key(rid);
    for table in INDEX_TABLES {
        let sql = format!("DELETE FROM {table} WHERE k >= ?1 AND k < ?2");
        conn.prepare_cached(&sql)?
            .execute([first, first + KEY_SPAN])?;
    }
    Ok(())
}

/// A value bound to an index-row INSERT, made on the requesting thread (formatting
/// decimals and composite JSON there keeps it off the single writer thread).
pub(crate) enum Arg {
    Null,
    Int(i64),
    Real(f64),
    Text(Cow<'static, str>),
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Arg::Null => ValueRef::Null,
            Arg::Int(i) => ValueRef::Integer(*i),
            Arg::Real(f) => ValueRef::Real(*f),
            Arg::Text(t) => ValueRef::Text(t.as_bytes()),
        }))
    }
}

fn text(v: Option<Cow<'static, str>>) -> Arg {
    v.map_or(Arg::Null, Arg::Text)
}

fn owned(v: Option<String>) -> Arg {
    v.map_or(Arg::Null, |s| Arg::Text(Cow::Owned(s)))
}

fn real(v: Option<f64>) -> Arg {
    v.map_or(Arg::Null, Arg::Real)
}

/// A decimal value and range as stored: three REAL columns, then the three exact texts.
fn ranges(value: Option<Decimal>, low: Option<Decimal>, high: Option<Decimal>) -> [Arg; 6] {
    [
        real(dec_f64(value)),
        real(dec_f64(low)),
        real(dec_f64(high)),
        owned(dec_text(value)),
        owned(dec_text(low)),
        owned(dec_text(high)),
    ]
}

/// One index row ready to insert: its table (a position in [`INDEX_TABLES`]) and its
/// column values after `k` and `resource_type` (see [`INSERT_COLUMNS`]).
pub(crate) struct RowArgs {
    table: usize,
    args: Vec<Arg>,
}

/// The columns of each index table's INSERT, in [`INDEX_TABLES`] order.
const INSERT_COLUMNS: [&str; 9] = [
    "k, resource_type, param, system, code, text, identifier_type",
    "k, resource_type, param, normalized, exact",
    "k, resource_type, param, low, high, precision",
    "k, resource_type, param, value, low, high, value_text, low_text, high_text",
    "k, resource_type, param, value, low, high, value_text, low_text, high_text, comparator, \
     system, code, unit, canonical_value, canonical_low, canonical_high, canonical_value_text, \
     canonical_low_text, canonical_high_text, canonical_unit",
    "k, resource_type, param, kind, reference, target_type, target_id, target_version, \
     base_url, url, display, identifier_system, identifier_value, identifier_text, \
     identifier_type, also",
    "k, resource_type, param, uri, version",
    "k, resource_type, param, value",
    "k, resource_type, param, latitude, longitude, latitude_text, longitude_text",
];

/// Whether a parameter's rows are stored: not for the row columns (`_id`,
/// `_lastUpdated`) nor for union parameters (see [`is_union`]).
fn stored_param(code: &str) -> bool {
    !ROW_COLUMN_PARAMS.contains(&code) && !is_union(code)
}

/// The index rows a resource stores: its search index values less those answered
/// otherwise (row columns, union parameters), and with each value of a filtered alias
/// (R4's Observation `patient`, see [`SearchRegistry::filtered_alias_source`]) folded
/// into the identical value of its source, marked `also`: one row, one entry in the
/// reference index, instead of two. A value with no identical source value (which
/// the parameters' definitions rule out, but the fold does not rely on) keeps its own
/// row.
pub(crate) fn stored_rows(resource: &serde_json::Value) -> Vec<RowArgs> {
    let rt = resource
        .get("resourceType")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let registry = SearchRegistry::r4();
    // Parameters whose rows are not stored are not evaluated at all.
    let mut values: Vec<(&'static str, OwnedIndexValue, Option<&'static str>)> =
        match registry.extract_only(resource, stored_param) {
            Ok(x) => x
                .entries
                .into_iter()
                .map(|e| (e.param.code(), e.value.into_owned(), None))
                .collect(),
            Err(_) => Vec::new(),
        };
    for &(alias, source) in registry.filtered_aliases_of(rt) {
        let mut i = 0;
        while i < values.len() {
            let twin = (values[i].0 == alias)
                .then(|| {
                    values.iter().position(|(q, v, also)| {
                        *q == source && also.is_none() && *v == values[i].1
                    })
                })
                .flatten();
            match twin {
                Some(j) => {
                    values[j].2 = Some(alias);
                    values.remove(i);
                }
                None => i += 1,
            }
        }
    }
    values
        .into_iter()
        .map(|(p, mut v, also)| {
            // The whole-resource texts are searched by their normalized form only; their
            // exact form (as long again) is made from the body when read back.
            if let (true, IndexValue::String(text)) = (WHOLE_TEXT_PARAMS.contains(&p), &mut v) {
                text.exact = Cow::Borrowed("");
            }
            row_args(p, v, also)
        })
        .collect()
}

/// The parameters whose rows hold a text made from the whole resource (`_content`) or
/// its narrative (`_text`): stored without their exact text (see [`stored_rows`]).
const WHOLE_TEXT_PARAMS: [&str; 2] = ["_content", "_text"];

/// The exact text of a whole-text parameter's value, made from the resource's body as
/// extraction makes it (never empty: extraction keeps no empty text).
fn whole_text(param: &str, body: &serde_json::Value) -> String {
    match param {
        "_text" => body
            .get("text")
            .and_then(|t| t.get("div"))
            .and_then(serde_json::Value::as_str)
            .map(vigil_fhir::search::narrative_text)
            .unwrap_or_default(),
        _ => vigil_fhir::search::content_text(body),
    }
}

/// The row of one index value; `also`: the filtered alias this reference row also
/// answers for (see [`stored_rows`]).
pub(crate) fn row_args(
    param: &'static str,
    value: OwnedIndexValue,
    also: Option<&'static str>,
) -> RowArgs {
    let p = Arg::Text(Cow::Borrowed(param));
    let (table, args) = match value {
        IndexValue::Token(t) => {
            let types = codings_json(&t.identifier_type);
            (
                0,
                vec![p, text(t.system), text(t.code), text(t.text), owned(types)],
            )
        }
        IndexValue::String(s) => (1, vec![p, Arg::Text(s.normalized), Arg::Text(s.exact)]),
        IndexValue::Date(d) => (
            2,
            vec![
                p,
                d.low.map_or(Arg::Null, Arg::Int),
                d.high.map_or(Arg::Null, Arg::Int),
                d.precision
                    .map_or(Arg::Null, |x| Arg::Int(precision_code(x))),
            ],
        ),
        IndexValue::Number(n) => {
            let mut args = vec![p];
            args.extend(ranges(n.value, n.low, n.high));
            (3, args)
        }
        IndexValue::Quantity(q) => {
            let c = q.canonical;
            let cv = |f: fn(&CanonicalQuantity<'static>) -> Option<Decimal>| c.as_ref().and_then(f);
            let (value, low, high) = (cv(|c| c.value), cv(|c| c.low), cv(|c| c.high));
            let mut args = vec![p];
            args.extend(ranges(q.value, q.low, q.high));
            args.extend([
                q.comparator
                    .map_or(Arg::Null, |x| Arg::Text(Cow::Borrowed(comparator_code(x)))),
                text(q.system),
                text(q.code),
                text(q.unit),
            ]);
            args.extend(ranges(value, low, high));
            args.push(text(c.map(|c| c.unit)));
            (4, args)
        }
        IndexValue::Reference(r) => {
            let (system, code, itext, types) = match r.identifier {
                Some(i) => (i.system, i.code, i.text, codings_json(&i.identifier_type)),
                None => (None, None, None, None),
            };
            (
                5,
                vec![
                    p,
                    Arg::Text(Cow::Borrowed(kind_code(r.kind))),
                    text(r.reference),
                    text(r.resource_type),
                    text(r.id),
                    text(r.version),
                    text(r.base_url),
                    text(r.url),
                    text(r.display),
                    text(system),
                    text(code),
                    text(itext),
                    owned(types),
                    also.map_or(Arg::Null, |a| Arg::Text(Cow::Borrowed(a))),
                ],
            )
        }
        IndexValue::Uri(u) => (6, vec![p, Arg::Text(u.uri), text(u.version)]),
        v @ IndexValue::Composite(_) => (7, vec![p, Arg::Text(Cow::Owned(value_json_text(&v)))]),
        IndexValue::Position(pos) => (
            8,
            vec![
                p,
                real(dec_f64(Some(pos.latitude))),
                real(dec_f64(Some(pos.longitude))),
                Arg::Text(Cow::Owned(pos.latitude.to_string())),
                Arg::Text(Cow::Owned(pos.longitude.to_string())),
            ],
        ),
    };
    RowArgs { table, args }
}

/// `INSERT INTO <table> (<columns>) VALUES (?, ..)`, per table. One row per statement:
/// a multi-row INSERT costs SQLite more, as it must journal the pages it changes to be
/// able to undo a statement that fails halfway.
fn insert_sql(table: usize) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        INDEX_TABLES
            .iter()
            .zip(INSERT_COLUMNS)
            .map(|(name, cols)| {
                let width = cols.split(',').count();
                format!(
                    "INSERT INTO {name} ({cols}) VALUES ({})",
                    vec!["?"; width].join(", ")
                )
            })
            .collect()
    });
    &all[table]
}

/// The INSERT statement of each index table (see [`insert_rows`]), in
/// [`INDEX_TABLES`] order.
pub(crate) fn insert_statements(
    conn: &Connection,
) -> rusqlite::Result<Vec<rusqlite::CachedStatement<'_>>> {
    (0..INDEX_TABLES.len())
        .map(|t| conn.prepare_cached(insert_sql(t)))
        .collect()
}

/// Insert the index rows of a resource (fewer than [`KEY_SPAN`], which the caller
/// checks) with [`insert_statements`], numbering them per table from the resource's
/// first key.
pub(crate) fn insert_rows(
    statements: &mut [rusqlite::CachedStatement<'_>],
    rt: &str,
    rid: i64,
    rows: &[RowArgs],
) -> rusqlite::Result<()> {
    let mut next = [first_key(rid); INDEX_TABLES.len()];
    for row in rows {
        let k = next[row.table];
        next[row.table] += 1;
        let mut args: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(row.args.len() + 2);
        args.push(&k);
        args.push(&rt);
        args.extend(row.args.iter().map(|a| a as &dyn rusqlite::ToSql));
        match statements.get_mut(row.table) {
            Some(statement) => statement.execute(args.as_slice())?,
            None => return Err(rusqlite::Error::InvalidQuery),
        };
    }
    Ok(())
}

fn cow(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<Cow<'static, str>>> {
    Ok(r.get::<_, Option<String>>(i)?.map(Cow::Owned))
}

fn dec(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<rust_decimal::Decimal>> {
    Ok(parse_dec(r.get::<_, Option<String>>(i)?.as_deref()))
}

/// All index rows of a resource, read back into values. Rows that do not decode (only
/// possible if the database was edited by hand) are left out.
pub(crate) fn read_rows(
    conn: &Connection,
    rt: &str,
    id: &str,
) -> rusqlite::Result<Vec<(String, OwnedIndexValue)>> {
    let mut out = Vec::new();
    let row: Option<(i64, i64, bool)> = conn
        .prepare_cached(
            "SELECT rid, last_updated, deleted FROM resource WHERE resource_type = ?1 AND id = ?2",
        )?
        .query_row([rt, id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0))
        })
        .optional()?;
    let Some((rid, last_updated, deleted)) = row else {
        return Ok(out);
    };
    if deleted {
        return Ok(out);
    }
    // The rows of `ROW_COLUMN_PARAMS`, as extraction gives them, for the types it knows.
    if vigil_fhir::search::SearchRegistry::r4()
        .param(rt, "_id")
        .is_some()
    {
        out.push((
            "_id".to_string(),
            IndexValue::Token(TokenValue {
                system: None,
                code: Some(Cow::Owned(id.to_string())),
                text: None,
                identifier_type: Vec::new(),
            }),
        ));
        if let Some(d) = DateValue::from_fhir(&crate::time::format_rfc3339(last_updated)) {
            out.push(("_lastUpdated".to_string(), IndexValue::Date(d)));
        }
    }
    let (first, end) = (first_key(rid), first_key(rid) + KEY_SPAN);
    let key = "WHERE k >= ?1 AND k < ?2 ORDER BY k";
    let mut q = |cols: &str,
                 table: &str,
                 f: &dyn Fn(&Row<'_>) -> rusqlite::Result<Option<OwnedIndexValue>>|
     -> rusqlite::Result<()> {
        // `idx_reference` rows may also be a filtered alias's (`also`, see `stored_rows`).
        let with_also = table == "idx_reference";
        let sql = if with_also {
            format!("SELECT param, {cols}, also FROM {table} {key}")
        } else {
            format!("SELECT param, {cols} FROM {table} {key}")
        };
        let also_at = cols.split(',').count() + 1;
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([first, end])?;
        while let Some(row) = rows.next()? {
            if let Some(v) = f(row)? {
                if with_also {
                    if let Some(alias) = row.get::<_, Option<String>>(also_at)? {
                        out.push((alias, v.clone()));
                    }
                }
                out.push((row.get::<_, String>(0)?, v));
            }
        }
        Ok(())
    };
    q("system, code, text, identifier_type", "idx_token", &|r| {
        Ok(Some(IndexValue::Token(TokenValue {
            system: cow(r, 1)?,
            code: cow(r, 2)?,
            text: cow(r, 3)?,
            identifier_type: codings_from_json(r.get::<_, Option<String>>(4)?.as_deref()),
        })))
    })?;
    q("normalized, exact", "idx_string", &|r| {
        Ok(Some(IndexValue::String(StringValue {
            normalized: Cow::Owned(r.get(1)?),
            exact: Cow::Owned(r.get(2)?),
        })))
    })?;
    q("low, high, precision", "idx_date", &|r| {
        Ok(Some(IndexValue::Date(DateValue {
            low: r.get(1)?,
            high: r.get(2)?,
            precision: r.get::<_, Option<i64>>(3)?.and_then(precision_from_code),
        })))
    })?;
    q("value_text, low_text, high_text", "idx_number", &|r| {
        Ok(Some(IndexValue::Number(NumberValue {
            value: dec(r, 1)?,
            low: dec(r, 2)?,
            high: dec(r, 3)?,
        })))
    })?;
    q(
        "value_text, low_text, high_text, comparator, system, code, unit, \
         canonical_value_text, canonical_low_text, canonical_high_text, canonical_unit",
        "idx_quantity",
        &|r| {
            let canonical = match r.get::<_, Option<String>>(11)? {
                Some(unit) => Some(CanonicalQuantity {
                    value: dec(r, 8)?,
                    low: dec(r, 9)?,
                    high: dec(r, 10)?,
                    unit: Cow::Owned(unit),
                }),
                None => None,
            };
            Ok(Some(IndexValue::Quantity(QuantityValue {
                value: dec(r, 1)?,
                low: dec(r, 2)?,
                high: dec(r, 3)?,
                comparator: r
                    .get::<_, Option<String>>(4)?
                    .as_deref()
                    .and_then(Comparator::parse),
                system: cow(r, 5)?,
                code: cow(r, 6)?,
                unit: cow(r, 7)?,
                canonical,
            })))
        },
    )?;
    q(
        "kind, reference, target_type, target_id, target_version, base_url, url, display, \
         identifier_system, identifier_value, identifier_text, identifier_type",
        "idx_reference",
        &|r| {
            let (is, iv, it) = (cow(r, 9)?, cow(r, 10)?, cow(r, 11)?);
            let itype = r.get::<_, Option<String>>(12)?;
            let identifier = if is.is_some() || iv.is_some() || it.is_some() || itype.is_some() {
                Some(TokenValue {
                    system: is,
                    code: iv,
                    text: it,
                    identifier_type: codings_from_json(itype.as_deref()),
                })
            } else {
                None
            };
            Ok(Some(IndexValue::Reference(ReferenceValue {
                kind: kind_from_code(&r.get::<_, String>(1)?),
                reference: cow(r, 2)?,
                resource_type: cow(r, 3)?,
                id: cow(r, 4)?,
                version: cow(r, 5)?,
                base_url: cow(r, 6)?,
                url: cow(r, 7)?,
                identifier,
                display: cow(r, 8)?,
            })))
        },
    )?;
    q("uri, version", "idx_uri", &|r| {
        Ok(Some(IndexValue::Uri(UriValue {
            uri: Cow::Owned(r.get(1)?),
            version: cow(r, 2)?,
        })))
    })?;
    q("value", "idx_composite", &|r| {
        Ok(serde_json::from_str(&r.get::<_, String>(1)?)
            .ok()
            .and_then(|v| value_from_json(&v)))
    })?;
    q("latitude_text, longitude_text", "idx_position", &|r| {
        Ok(dec(r, 1)?.zip(dec(r, 2)?).map(|(latitude, longitude)| {
            IndexValue::Position(PositionValue {
                latitude,
                longitude,
            })
        }))
    })?;
    // Whole-text rows stored without their exact text get it back from the body.
    let mut body: Option<serde_json::Value> = None;
    for (param, value) in &mut out {
        let IndexValue::String(text) = value else {
            continue;
        };
        if !text.exact.is_empty() || !WHOLE_TEXT_PARAMS.contains(&param.as_str()) {
            continue;
        }
        if body.is_none() {
            let stored: Option<String> = conn
                .prepare_cached(
                    "SELECT v.body FROM resource r JOIN resource_version v ON v.seq = r.seq \
                     WHERE r.rid = ?1",
                )?
                .query_row([rid], |r| r.get(0))
                .optional()?
                .flatten();
            body = stored.and_then(|b| serde_json::from_str(&b).ok());
        }
        if let Some(b) = &body {
            text.exact = Cow::Owned(whole_text(param, b));
        }
    }
    add_union_rows(rt, &mut out);
    Ok(out)
}

/// Whether this backend keeps no rows of a parameter: a union parameter (R4's
/// Observation `combo-*`) is answered from its sources' rows (see
/// [`SearchRegistry::union_sources`]), which saves a third of an Observation's rows.
pub(crate) fn is_union(code: &str) -> bool {
    SearchRegistry::r4().union_sources(code).is_some()
}

/// The parameters whose rows answer for `code`: its sources for a union parameter,
/// else itself.
pub(crate) fn stored_codes(code: &str) -> Vec<String> {
    match SearchRegistry::r4().union_sources(code) {
        Some(sources) => sources.iter().map(|s| s.to_string()).collect(),
        None => vec![code.to_string()],
    }
}

/// The sources whose rows marked `also = code` answer for the filtered alias `code`
/// (see [`stored_rows`]), or `None` when it is no filtered alias.
pub(crate) fn alias_sources(code: &str) -> Option<&'static [&'static str]> {
    SearchRegistry::r4().filtered_alias_sources(code)
}

/// Add the rows of the union parameters of `rt`, from their sources' rows (without
/// repeats, as extraction gives them), to a resource's rows read back.
fn add_union_rows(rt: &str, rows: &mut Vec<(String, OwnedIndexValue)>) {
    let registry = SearchRegistry::r4();
    for (code, sources) in registry.union_parameters() {
        if registry.param(rt, code).is_none() {
            continue;
        }
        let mut values: Vec<OwnedIndexValue> = Vec::new();
        for (param, value) in rows.iter() {
            if sources.contains(&param.as_str()) && !values.contains(value) {
                values.push(value.clone());
            }
        }
        rows.extend(values.into_iter().map(|v| (code.to_string(), v)));
    }
}
