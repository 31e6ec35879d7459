//! Writes (one PostgreSQL transaction per request), history, and the shared row
//! helpers. The request rules (ids, `resourceType`, meta, If-Match, one operation per
//! resource) are the SQLite backend's; the conformance suite holds both to them.

use crate::index::{write_sql, Batch};
use crate::pg_error;
use crate::pool::Pooled;
use crate::VersionRow;
use postgres::types::ToSql;
use postgres::Statement;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use vigil_store::rules::{resource_type_of, tombstone, valid_id};
use vigil_store::*;

/// The columns of [`version_row`].
pub(crate) const VERSION_COLS: &str =
    "seq, resource_type, id, version, last_updated, deleted, body";
/// The same, qualified with the alias `v`.
pub(crate) const VERSION_COLS_V: &str =
    "v.seq, v.resource_type, v.id, v.version, v.last_updated, v.deleted, v.body";

/// A row of [`VERSION_COLS`] (from its first column on).
pub(crate) fn version_row(r: &postgres::Row) -> Result<VersionRow> {
    version_row_at(r, 0)
}

/// A row whose [`VERSION_COLS`] start at column `at`.
pub(crate) fn version_row_at(r: &postgres::Row, at: usize) -> Result<VersionRow> {
    let get = || -> Result<VersionRow, postgres::Error> {
        Ok(VersionRow {
            seq: r.try_get(at)?,
            resource_type: r.try_get(at + 1)?,
            id: r.try_get(at + 2)?,
            version: r.try_get(at + 3)?,
            last_updated: r.try_get(at + 4)?,
            deleted: r.try_get(at + 5)?,
            body: r.try_get(at + 6)?,
        })
    };
    get().map_err(pg_error)
}

pub(crate) fn outcome(row: Option<VersionRow>) -> Result<ReadOutcome> {
    Ok(match row {
        None => ReadOutcome::NotFound,
        Some(r) if r.deleted => ReadOutcome::Gone {
            version: u64::try_from(r.version).unwrap_or(0),
            last_updated: r.last_updated,
        },
        Some(r) => ReadOutcome::Found(r.into_stored()?),
    })
}

/// Versions a request queues before they are written together.
const MAX_BATCH: usize = 500;

/// An open write transaction with the connection's statement cache and the versions
/// not written yet.
struct Tx<'a> {
    tx: postgres::Transaction<'a>,
    statements: &'a mut HashMap<String, Statement>,
    batch: Batch,
}

impl Tx<'_> {
    fn stmt(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql).map_err(pg_error)?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// Write the queued versions.
    fn flush(&mut self) -> Result<()> {
        if self.batch.len() == 0 {
            return Ok(());
        }
        let stmt = self.stmt(write_sql())?;
        let batch = std::mem::take(&mut self.batch);
        self.tx.execute(&stmt, &batch.params()).map_err(pg_error)?;
        Ok(())
    }
}

/// The current state of a resource: version, deleted, last_updated.
type Current = Option<(u64, bool, i64)>;

/// Apply `ops` in one transaction: all or none. Returns the outcomes and the latest
/// timestamp given out.
pub(crate) fn apply(
    conn: &mut Pooled<'_>,
    ops: Vec<WriteOp>,
    now: i64,
) -> Result<(Vec<WriteOutcome>, i64)> {
    let (client, statements) = conn.parts();
    let tx = client.transaction().map_err(pg_error)?;
    let mut tx = Tx {
        tx,
        statements,
        batch: Batch::default(),
    };
    let mut out = Vec::with_capacity(ops.len());
    let mut latest = now;
    for op in ops {
        // An error drops the transaction, which rolls it back.
        let o = apply_op(&mut tx, op, now)?;
        if let Some(s) = o.stored() {
            latest = latest.max(s.last_updated);
        }
        out.push(o);
        if tx.batch.len() >= MAX_BATCH {
            tx.flush()?;
        }
    }
    tx.flush()?;
    tx.tx.commit().map_err(pg_error)?;
    Ok((out, latest))
}

/// The current version of a resource, its row locked until the transaction ends.
fn current(tx: &mut Tx<'_>, rt: &str, id: &str) -> Result<Current> {
    let stmt = tx.stmt(
        "SELECT version, deleted, last_updated FROM resource WHERE resource_type = $1::text \
         AND id = $2::text FOR UPDATE",
    )?;
    let row = tx.tx.query_opt(&stmt, &[&rt, &id]).map_err(pg_error)?;
    let Some(row) = row else { return Ok(None) };
    let get = || -> Result<(i64, bool, i64), postgres::Error> {
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
    };
    let (v, deleted, last) = get().map_err(pg_error)?;
    // Version 0 is this transaction's own placeholder (see `claim`): not there yet.
    Ok((v > 0).then(|| (u64::try_from(v).unwrap_or(0), deleted, last)))
}

/// The current version of a resource that this transaction may create: its row is
/// locked, or, when it does not exist, a placeholder row (version 0) is inserted and
/// locked in its place, so a concurrent creator of the same id waits for this
/// transaction (and then sees its version) instead of both creating version 1. The
/// placeholder is always replaced by the version written, or rolled back.
fn claim(tx: &mut Tx<'_>, rt: &str, id: &str) -> Result<Current> {
    if let Some(c) = current(tx, rt, id)? {
        return Ok(Some(c));
    }
    let stmt = tx.stmt(
        "INSERT INTO resource (resource_type, id, version, last_updated, deleted, seq) \
         VALUES ($1::text, $2::text, 0, 0, TRUE, 0) ON CONFLICT (resource_type, id) DO NOTHING",
    )?;
    let inserted = tx.tx.execute(&stmt, &[&rt, &id]).map_err(pg_error)?;
    if inserted == 1 {
        return Ok(None);
    }
    // Another transaction created it meanwhile (the insert waited for its commit).
    current(tx, rt, id)
}

fn apply_op(tx: &mut Tx<'_>, op: WriteOp, now: i64) -> Result<WriteOutcome> {
    match op {
        WriteOp::Create { resource, id } => {
            let rt = resource_type_of(&resource)
                .ok_or_else(|| StoreError::Invalid("resource has no resourceType".into()))?
                .to_string();
            // A fresh server-assigned id (a v7 UUID) cannot exist yet: no claim needed
            // (were it to, the unique version key would fail the write as a conflict).
            let assigned = id.is_none();
            let id = id.unwrap_or_else(vigil_store::new_id);
            if !valid_id(&id) {
                return Err(StoreError::Invalid(format!("invalid id {id:?}")));
            }
            if !assigned && claim(tx, &rt, &id)?.is_some() {
                return Err(StoreError::Conflict(format!("{rt}/{id} already exists")));
            }
            write_version(tx, &rt, &id, 1, now, Some(resource), false).map(WriteOutcome::Created)
        }
        WriteOp::Update {
            resource_type: rt,
            id,
            resource,
            if_match,
        } => {
            match resource_type_of(&resource) {
                Some(t) if t == rt => {}
                Some(t) => {
                    return Err(StoreError::Invalid(format!(
                        "resourceType {t} does not match {rt}"
                    )))
                }
                None => return Err(StoreError::Invalid("resource has no resourceType".into())),
            }
            if let Some(body_id) = resource.get("id") {
                if body_id.as_str() != Some(id.as_str()) {
                    return Err(StoreError::Invalid(format!(
                        "the resource's id does not match {id}"
                    )));
                }
            }
            if !valid_id(&id) {
                return Err(StoreError::Invalid(format!("invalid id {id:?}")));
            }
            let cur = claim(tx, &rt, &id)?;
            check_if_match(if_match, cur)?;
            match cur {
                None => write_version(tx, &rt, &id, 1, now, Some(resource), false)
                    .map(WriteOutcome::Created),
                Some((v, deleted, last)) => {
                    let s = write_version(
                        tx,
                        &rt,
                        &id,
                        v + 1,
                        now.max(last),
                        Some(resource),
                        !deleted,
                    )?;
                    Ok(if deleted {
                        WriteOutcome::Created(s)
                    } else {
                        WriteOutcome::Updated(s)
                    })
                }
            }
        }
        WriteOp::Delete {
            resource_type: rt,
            id,
            if_match,
        } => {
            let cur = current(tx, &rt, &id)?;
            check_if_match(if_match, cur)?;
            match cur {
                Some((v, false, last)) => {
                    write_version(tx, &rt, &id, v + 1, now.max(last), None, true)
                        .map(|s| WriteOutcome::Deleted(Some(s)))
                }
                _ => Ok(WriteOutcome::Deleted(None)),
            }
        }
    }
}

fn check_if_match(if_match: Option<u64>, cur: Current) -> Result<()> {
    match (if_match, cur) {
        (Some(expected), Some((actual, _, _))) if expected != actual => {
            Err(StoreError::VersionConflict { expected, actual })
        }
        (Some(expected), None) => Err(StoreError::VersionConflict {
            expected,
            actual: 0,
        }),
        _ => Ok(()),
    }
}

/// `resourceType`, `id`, `meta` (with versionId and lastUpdated set, other meta kept),
/// then the rest in its order.
fn with_meta(resource: Value, id: &str, version: u64, last_updated: &str) -> Value {
    let Value::Object(obj) = resource else {
        return resource;
    };
    let mut out = Map::with_capacity(obj.len() + 2);
    let mut meta = Map::new();
    let mut rest = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        match k.as_str() {
            "resourceType" => {
                out.insert(k, v);
            }
            "id" => {}
            "meta" => {
                if let Value::Object(m) = v {
                    meta = m;
                }
            }
            _ => rest.push((k, v)),
        }
    }
    out.insert("id".into(), Value::String(id.to_string()));
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert(
        "lastUpdated".into(),
        Value::String(last_updated.to_string()),
    );
    out.insert("meta".into(), Value::Object(meta));
    out.extend(rest);
    Value::Object(out)
}

/// Queue a new version (a tombstone when `resource` is None) to be made current with
/// its index rows; `had_rows`: the previous version is live (has rows to remove).
fn write_version(
    tx: &mut Tx<'_>,
    rt: &str,
    id: &str,
    version: u64,
    now: i64,
    resource: Option<Value>,
    had_rows: bool,
) -> Result<Stored> {
    let text = format_rfc3339(now);
    let version_i = i64::try_from(version)
        .map_err(|_| StoreError::Storage("version number overflow".into()))?;
    let deleted = resource.is_none();
    let resource = resource.map(|r| with_meta(r, id, version, &text));
    let body = match &resource {
        Some(r) => Some(serde_json::to_string(r).map_err(|e| StoreError::Invalid(e.to_string()))?),
        None => None,
    };
    // Written with the request's other versions (see `Tx::flush`): the request never
    // reads back what it wrote, as it names each resource once.
    match &resource {
        Some(r) => tx.batch.push(
            rt,
            id,
            version_i,
            now,
            body,
            had_rows,
            &vigil_store::index::extract_rows(r),
        ),
        None => tx.batch.push(rt, id, version_i, now, None, had_rows, &[]),
    }
    Ok(Stored {
        resource_type: rt.to_string(),
        id: id.to_string(),
        version,
        last_updated: now,
        resource: Arc::new(resource.unwrap_or_else(|| tombstone(rt, id, version, &text))),
        last_updated_text: text,
        deleted,
    })
}

/// One page of history (see [`FhirStore::history`]); cursors are `s<seq>`.
pub(crate) fn history(
    conn: &mut Pooled<'_>,
    scope: HistoryScope,
    query: HistoryQuery,
) -> Result<HistoryPage> {
    let count = query.count.unwrap_or(50).clamp(1, 1000);
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.strip_prefix('s')
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| StoreError::Invalid(format!("bad history cursor {c:?}")))?,
        ),
    };
    let mut sql = format!("SELECT {VERSION_COLS} FROM resource_version v WHERE TRUE");
    let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    let mut arg = |sql: &mut String, text: &str, v: Box<dyn ToSql + Sync>| {
        args.push(v);
        sql.push_str(&text.replace('?', &format!("${}", args.len())));
    };
    match scope {
        HistoryScope::System => {}
        HistoryScope::Type(rt) => arg(&mut sql, " AND resource_type = ?::text", Box::new(rt)),
        HistoryScope::Instance(rt, id) => {
            arg(&mut sql, " AND resource_type = ?::text", Box::new(rt));
            arg(&mut sql, " AND id = ?::text", Box::new(id));
        }
    }
    if let Some(c) = cursor {
        arg(&mut sql, " AND seq < ?::int8", Box::new(c));
    }
    if let Some(since) = query.since {
        arg(&mut sql, " AND last_updated >= ?::int8", Box::new(since));
    }
    if let Some(at) = query.at {
        arg(&mut sql, " AND last_updated <= ?::int8", Box::new(at));
        // ...and no later version of the same resource had replaced it by then.
        arg(
            &mut sql,
            " AND NOT EXISTS (SELECT 1 FROM resource_version w WHERE \
             w.resource_type = v.resource_type AND w.id = v.id AND w.version > v.version \
             AND w.last_updated <= ?::int8)",
            Box::new(at),
        );
    }
    // One more than the page, to know whether there is a next page.
    arg(
        &mut sql,
        " ORDER BY seq DESC LIMIT ?::int8",
        Box::new(i64::try_from(count).unwrap_or(1000) + 1),
    );
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
    let stmt = conn.prepare(&sql)?;
    let rows = conn.client().query(&stmt, &params).map_err(pg_error)?;
    let more = rows.len() > count;
    let mut entries = Vec::with_capacity(count.min(rows.len()));
    let mut last_seq = None;
    for row in rows.iter().take(count) {
        let row = version_row(row)?;
        last_seq = Some(row.seq);
        entries.push(row.into_stored()?);
    }
    Ok(HistoryPage {
        entries,
        next_cursor: if more {
            last_seq.map(|s| format!("s{s}"))
        } else {
            None
        },
    })
}
