//! Writing and reading the `idx_*` tables.

use super::schema::{INDEX_TABLES, KEY_SPAN};
use crate::api::OwnedIndexValue;
use crate::index::*;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::borrow::Cow;
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

/// The index table of a value, as its position in [`INDEX_TABLES`].
fn table_of(value: &IndexValue<'_>) -> usize {
    match value {
        IndexValue::Token(_) => 0,
        IndexValue::String(_) => 1,
        IndexValue::Date(_) => 2,
        IndexValue::Number(_) => 3,
        IndexValue::Quantity(_) => 4,
        IndexValue::Reference(_) => 5,
        IndexValue::Uri(_) => 6,
        IndexValue::Composite(_) => 7,
        IndexValue::Position(_) => 8,
    }
}

/// Insert the index rows of a resource (fewer than [`KEY_SPAN`], which the caller
/// checks), numbering them per table from the resource's first key.
pub(crate) fn insert_rows(
    conn: &Connection,
    rt: &str,
    rid: i64,
    rows: &[(&str, IndexValue<'_>)],
) -> rusqlite::Result<()> {
    let mut next = [first_key(rid); INDEX_TABLES.len()];
    for (param, value) in rows {
        let slot = &mut next[table_of(value)];
        insert_row(conn, rt, *slot, param, value)?;
        *slot += 1;
    }
    Ok(())
}

fn insert_row(
    conn: &Connection,
    rt: &str,
    k: i64,
    param: &str,
    value: &IndexValue<'_>,
) -> rusqlite::Result<()> {
    match value {
        IndexValue::Token(t) => {
            conn.prepare_cached(
                "INSERT INTO idx_token (k, resource_type, param, system, code, text, \
                 identifier_type) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                k,
                rt,
                param,
                t.system.as_deref(),
                t.code.as_deref(),
                t.text.as_deref(),
                codings_json(&t.identifier_type)
            ])?;
        }
        IndexValue::String(s) => {
            conn.prepare_cached(
                "INSERT INTO idx_string (k, resource_type, param, normalized, exact) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                k,
                rt,
                param,
                s.normalized.as_ref(),
                s.exact.as_ref()
            ])?;
        }
        IndexValue::Date(d) => {
            conn.prepare_cached(
                "INSERT INTO idx_date (k, resource_type, param, low, high, precision) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                k,
                rt,
                param,
                d.low,
                d.high,
                d.precision.map(precision_code)
            ])?;
        }
        IndexValue::Number(n) => {
            conn.prepare_cached(
                "INSERT INTO idx_number (k, resource_type, param, value, low, high, \
                 value_text, low_text, high_text) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                k,
                rt,
                param,
                dec_f64(n.value),
                dec_f64(n.low),
                dec_f64(n.high),
                dec_text(n.value),
                dec_text(n.low),
                dec_text(n.high)
            ])?;
        }
        IndexValue::Quantity(q) => {
            let c = q.canonical.as_ref();
            conn.prepare_cached(
                "INSERT INTO idx_quantity (k, resource_type, param, value, low, high, \
                 value_text, low_text, high_text, comparator, system, code, unit, \
                 canonical_value, canonical_low, canonical_high, canonical_value_text, \
                 canonical_low_text, canonical_high_text, canonical_unit) VALUES (?1, ?2, ?3, \
                 ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
            )?
            .execute(params![
                k,
                rt,
                param,
                dec_f64(q.value),
                dec_f64(q.low),
                dec_f64(q.high),
                dec_text(q.value),
                dec_text(q.low),
                dec_text(q.high),
                q.comparator.map(comparator_code),
                q.system.as_deref(),
                q.code.as_deref(),
                q.unit.as_deref(),
                dec_f64(c.and_then(|c| c.value)),
                dec_f64(c.and_then(|c| c.low)),
                dec_f64(c.and_then(|c| c.high)),
                dec_text(c.and_then(|c| c.value)),
                dec_text(c.and_then(|c| c.low)),
                dec_text(c.and_then(|c| c.high)),
                c.map(|c| c.unit.as_ref())
            ])?;
        }
        IndexValue::Reference(r) => {
            let i = r.identifier.as_ref();
            conn.prepare_cached(
                "INSERT INTO idx_reference (k, resource_type, param, kind, reference, \
                 target_type, target_id, target_version, base_url, url, display, \
                 identifier_system, identifier_value, identifier_text, identifier_type) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?
            .execute(params![
                k,
                rt,
                param,
                kind_code(r.kind),
                r.reference.as_deref(),
                r.resource_type.as_deref(),
                r.id.as_deref(),
                r.version.as_deref(),
                r.base_url.as_deref(),
                r.url.as_deref(),
                r.display.as_deref(),
                i.and_then(|i| i.system.as_deref()),
                i.and_then(|i| i.code.as_deref()),
                i.and_then(|i| i.text.as_deref()),
                i.and_then(|i| codings_json(&i.identifier_type))
            ])?;
        }
        IndexValue::Uri(u) => {
            conn.prepare_cached(
                "INSERT INTO idx_uri (k, resource_type, param, uri, version) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![k, rt, param, u.uri.as_ref(), u.version.as_deref()])?;
        }
        IndexValue::Composite(_) => {
            conn.prepare_cached(
                "INSERT INTO idx_composite (k, resource_type, param, value) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![k, rt, param, value_json(value).to_string()])?;
        }
        IndexValue::Position(p) => {
            conn.prepare_cached(
                "INSERT INTO idx_position (k, resource_type, param, latitude, \
                 longitude, latitude_text, longitude_text) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                k,
                rt,
                param,
                dec_f64(Some(p.latitude)),
                dec_f64(Some(p.longitude)),
                p.latitude.to_string(),
                p.longitude.to_string()
            ])?;
        }
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
        let sql = format!("SELECT param, {cols} FROM {table} {key}");
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([first, end])?;
        while let Some(row) = rows.next()? {
            if let Some(v) = f(row)? {
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
