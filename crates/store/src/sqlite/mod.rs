//! The embedded backend: one SQLite database file in WAL mode.
//!
//! Writes go through a single writer thread that group-commits: requests queue on a
//! channel, the writer takes everything queued (up to a limit), applies the requests in
//! one SQLite transaction and commits once; the sync thread (`sync`) then fsyncs the
//! WAL, for all groups committed meanwhile, and only then answers each request, while
//! the writer goes on with the next group. Every request stays atomic on its own: the
//! group is first applied without savepoints (they make SQLite copy each touched page
//! into a sub-journal), and if a request fails, rolled back and applied again with a
//! SAVEPOINT per request, so the failing one is answered with its error without
//! affecting its batch-mates. Reads use a pool of separate read-only connections, which
//! WAL lets run concurrently with the writer.

mod index;
mod schema;
mod search;
mod sync;

use crate::api::*;
use crate::rules::{check_distinct, resource_type_of, tombstone, valid_id};
use crate::time::{format_rfc3339, now_millis};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most operations the writer puts into one group commit; bounds the latency a large
/// queue adds to the first request of a group.
const MAX_BATCH_OPS: usize = 20_000;
/// A group holding this many operations is committed without waiting for more
/// requests (see `Writer::run`): a commit's fixed cost is small next to them, and the
/// wait would only hold their requesters back, who then come back all at once.
const GATHER_ENOUGH_OPS: usize = 100;
/// Most idle read connections kept open.
const MAX_IDLE_READERS: usize = 16;
/// How long a connection waits for a lock held by another process before `Busy`.
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// The longest the writer waits to gather a group (see `Writer::run`); small next to
/// the commit's fsync.
const GATHER_WAIT: Duration = Duration::from_micros(500);
/// Bytes of the database file read through a memory map (SQLite caps it at its
/// compile-time maximum, 2 GiB by default).
const MMAP_SIZE: i64 = 1 << 32;
/// The page size of new database files. Twice SQLite's default: a commit writes each
/// page it changed to the WAL, one frame each (checksummed, written, later copied by
/// the checkpoint), and with most rows appended at the ends of their tables half as many
/// frames carry the same rows (measured: 5–20% more resources/s in Bundles, search
/// latency unchanged; 16 KiB was faster on a small store, slower on a large one).
const PAGE_SIZE: u32 = 8192;
/// Queued write requests before senders block (backpressure).
const QUEUE_CAPACITY: usize = 8_192;

type Reply = mpsc::SyncSender<Result<Vec<WriteOutcome>>>;

/// One queued write request: its operations are applied atomically.
struct Job {
    ops: Vec<WriteOp>,
    /// The index rows of each op's resource, extracted by the requesting thread.
    rows: Vec<Option<Prepared>>,
    reply: Reply,
}

/// A resource to write, made ready before it reaches the writer thread (so this work
/// runs on the requesting threads, in parallel): its index rows and its stored text,
/// both from the body in its stored shape with empty version meta (see [`shape`]).
/// Neither depends on the version the writer will give it: `_content` leaves the
/// version meta out, and `_id` and `_lastUpdated` rows are not stored at all (searches
/// read the `resource` row's columns, and [`index::read_rows`] gives them back).
struct Prepared {
    rows: Vec<index::RowArgs>,
    /// The stored text, when the body was shaped here (the writer then only splices the
    /// version meta in).
    body: Option<ShapedText>,
}

impl Prepared {
    /// From a body already in its stored shape.
    fn new(shaped: &Value, with_text: bool) -> Prepared {
        let rows = index::stored_rows(shaped);
        Prepared {
            rows,
            body: if with_text {
                ShapedText::new(shaped)
            } else {
                None
            },
        }
    }
}

/// Give creates their ids, put bodies into their stored shape and prepare them (on the
/// calling thread).
fn prepare(ops: &mut [WriteOp]) -> Vec<Option<Prepared>> {
    ops.iter_mut()
        .map(|op| match op {
            WriteOp::Create { resource, id } => {
                let id = id.get_or_insert_with(crate::new_id);
                *resource = shape(std::mem::take(resource), id);
                Some(Prepared::new(resource, true))
            }
            WriteOp::Update { resource, id, .. } => {
                // A body naming another id keeps it, for the writer to refuse; its rows
                // come from a shaped copy.
                if resource
                    .get("id")
                    .is_none_or(|b| b.as_str() == Some(id.as_str()))
                {
                    *resource = shape(std::mem::take(resource), id);
                    Some(Prepared::new(resource, true))
                } else {
                    Some(Prepared::new(&shape(resource.clone(), id), false))
                }
            }
            WriteOp::Delete { .. } => None,
        })
        .collect()
}

/// A body in its stored shape: `resourceType`, `id`, then `meta` led by `versionId` and
/// `lastUpdated` (empty here: the writer fills them in, see `set_version_meta`), then
/// the rest in its order.
fn shape(resource: Value, id: &str) -> Value {
    with_meta(resource, id, "", "")
}

/// The JSON text of a shaped body without its `versionId` and `lastUpdated`, and where
/// they go: the writer splices them in once it knows the version, instead of
/// serializing the whole body on its (single) thread.
struct ShapedText {
    text: String,
    /// Just after the `{` of `meta`.
    meta_at: usize,
    /// Whether `meta` has other members (which follow the version meta, after a comma).
    more_meta: bool,
}

impl ShapedText {
    /// `None` unless the body has the shape [`shape`] gives.
    fn new(shaped: &Value) -> Option<ShapedText> {
        let obj = shaped.as_object()?;
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        let mut meta_at = None;
        let mut more_meta = false;
        out.push(b'{');
        for (n, (k, v)) in obj.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, k).ok()?;
            out.push(b':');
            match (k.as_str(), v) {
                ("meta", Value::Object(meta)) => {
                    let mut entries = meta.iter();
                    let version_first = matches!(entries.next(), Some((k, _)) if k == "versionId")
                        && matches!(entries.next(), Some((k, _)) if k == "lastUpdated");
                    if !version_first || meta_at.is_some() {
                        return None;
                    }
                    out.push(b'{');
                    meta_at = Some(out.len());
                    for (mk, mv) in entries {
                        if more_meta {
                            out.push(b',');
                        }
                        more_meta = true;
                        serde_json::to_writer(&mut out, mk).ok()?;
                        out.push(b':');
                        serde_json::to_writer(&mut out, mv).ok()?;
                    }
                    out.push(b'}');
                }
                _ => serde_json::to_writer(&mut out, v).ok()?,
            }
        }
        out.push(b'}');
        Some(ShapedText {
            text: String::from_utf8(out).ok()?,
            meta_at: meta_at?,
            more_meta,
        })
    }

    /// The stored text of `version` written at `last_updated`.
    fn finish(&self, version: u64, last_updated: &str) -> String {
        let (head, tail) = self.text.split_at(self.meta_at);
        let mut out = String::with_capacity(self.text.len() + 64);
        out.push_str(head);
        out.push_str("\"versionId\":\"");
        out.push_str(&version.to_string());
        out.push_str("\",\"lastUpdated\":\"");
        out.push_str(last_updated);
        out.push('"');
        if self.more_meta {
            out.push(',');
        }
        out.push_str(tail);
        out
    }
}

/// Where readers get a connection.
enum Readers {
    /// A file database: a pool of read-only connections.
    Pool {
        path: PathBuf,
        idle: Mutex<Vec<Connection>>,
    },
    /// An in-memory database has one connection; readers share the writer's (which
    /// holds the lock for a whole group commit, so readers never see a partial one).
    Shared(Arc<Mutex<Connection>>),
}

/// The SQLite-backed [`FhirStore`].
///
/// Dropping it (or [`close`](SqliteStore::close)) stops accepting writes, lets the
/// writer finish every queued request, and waits for it.
pub struct SqliteStore {
    queue: Option<mpsc::SyncSender<Job>>,
    writer: Option<JoinHandle<()>>,
    readers: Readers,
}

fn storage(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Busy(e.to_string())
        }
        _ => StoreError::Storage(e.to_string()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves a connection that is still usable: SQLite
    // rolls back an unfinished transaction on the next BEGIN failure path, so recover.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.set_prepared_statement_cache_capacity(128);
    // Savepoint sub-journals and sorter spills in memory, not in temporary files; reads
    // of the database file through a shared memory map instead of a copy per connection.
    conn.execute_batch(&format!(
        "PRAGMA temp_store=MEMORY; PRAGMA mmap_size={MMAP_SIZE};"
    ))?;
    Ok(())
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, migrating its schema to the
    /// current version.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let mut conn = Connection::open(path).map_err(storage)?;
        // Only a new, empty database takes it; an existing one keeps its page size.
        conn.execute_batch(&format!("PRAGMA page_size={PAGE_SIZE}"))
            .map_err(storage)?;
        configure(&conn).map_err(storage)?;
        // WAL: readers do not block the writer nor it them. synchronous=NORMAL: the
        // commit itself does not fsync; the sync thread fsyncs the WAL before any write
        // is acknowledged (see `sync`), so an acknowledged write survives a crash.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(storage)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Storage(format!(
                "cannot enable WAL journal mode (got {mode})"
            )));
        }
        // A 64 MB page cache for the writer: a transaction of 1,000 resources dirties more
        // pages than a small cache holds, which then spill into the WAL mid-transaction.
        // The sync thread checkpoints; SQLite's automatic checkpoint in the commit path
        // only takes over if the WAL grows past ~200 MB.
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536; \
             PRAGMA wal_autocheckpoint=50000;",
        )
        .map_err(storage)?;
        schema::migrate(&mut conn)
            .map_err(storage)?
            .map_err(StoreError::Storage)?;
        let readers = Readers::Pool {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        };
        Self::start(Arc::new(Mutex::new(conn)), readers, Some(path))
    }

    /// A store in memory, for tests: nothing survives it.
    pub fn open_in_memory() -> Result<SqliteStore> {
        let mut conn = Connection::open_in_memory().map_err(storage)?;
        configure(&conn).map_err(storage)?;
        schema::migrate(&mut conn)
            .map_err(storage)?
            .map_err(StoreError::Storage)?;
        let conn = Arc::new(Mutex::new(conn));
        Self::start(conn.clone(), Readers::Shared(conn), None)
    }

    fn start(
        conn: Arc<Mutex<Connection>>,
        readers: Readers,
        path: Option<&Path>,
    ) -> Result<SqliteStore> {
        let last: Option<i64> = lock(&conn)
            .query_row("SELECT MAX(last_updated) FROM resource_version", [], |r| {
                r.get(0)
            })
            .map_err(storage)?;
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE_CAPACITY);
        let poison = Arc::new(sync::Poison::default());
        let (durability, syncer) = match path {
            Some(path) => {
                let (stx, srx) = mpsc::channel::<sync::Answers>();
                let mut syncer = sync::Syncer::new(path, poison.clone());
                let handle = std::thread::Builder::new()
                    .name("vigil-store-sync".into())
                    .spawn(move || syncer.run(&srx))
                    .map_err(|e| {
                        StoreError::Storage(format!("cannot start the sync thread: {e}"))
                    })?;
                (sync::Durability::Syncer(stx), Some(handle))
            }
            None => (sync::Durability::Immediate, None),
        };
        let mut writer = Writer {
            conn,
            last_ms: last.unwrap_or(0),
            durability: Some(durability),
            syncer,
            poison,
        };
        let handle = std::thread::Builder::new()
            .name("vigil-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Storage(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteStore {
            queue: Some(tx),
            writer: Some(handle),
            readers,
        })
    }

    /// Finish all queued writes and stop the writer. Errors if the writer thread
    /// panicked (queued writes were then answered with errors).
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        // Dropping the sender ends the writer's loop once the queue is drained.
        self.queue = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Err(_)) => Err(StoreError::Storage("writer thread panicked".into())),
            _ => Ok(()),
        }
    }

    fn submit(&self, mut ops: Vec<WriteOp>) -> Result<Vec<WriteOutcome>> {
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| StoreError::Busy("store is closed".into()))?;
        let rows = prepare(&mut ops);
        let (reply, answer) = mpsc::sync_channel(1);
        queue
            .send(Job { ops, rows, reply })
            .map_err(|_| StoreError::Storage("writer thread stopped".into()))?;
        answer
            .recv()
            .map_err(|_| StoreError::Storage("writer thread stopped".into()))?
    }

    fn submit_one(&self, op: WriteOp) -> Result<WriteOutcome> {
        self.submit(vec![op])?
            .pop()
            .ok_or_else(|| StoreError::Storage("writer gave no outcome".into()))
    }

    fn with_reader<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R> {
        match &self.readers {
            Readers::Shared(conn) => f(&lock(conn)).map_err(storage),
            Readers::Pool { path, idle } => {
                let taken = lock(idle).pop();
                let conn = match taken {
                    Some(c) => c,
                    None => {
                        let c = Connection::open_with_flags(
                            path,
                            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                        )
                        .map_err(storage)?;
                        configure(&c).map_err(storage)?;
                        c
                    }
                };
                let out = f(&conn).map_err(storage);
                let mut idle = lock(idle);
                if idle.len() < MAX_IDLE_READERS {
                    idle.push(conn);
                }
                out
            }
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; close() reports them.
        let _ = self.shutdown();
    }
}

/// A row of `resource_version` as read.
struct VersionRow {
    seq: i64,
    resource_type: String,
    id: String,
    version: i64,
    last_updated: i64,
    deleted: bool,
    body: Option<String>,
}

impl VersionRow {
    fn into_stored(self) -> rusqlite::Result<Stored> {
        let version = u64::try_from(self.version).unwrap_or(0);
        let text = format_rfc3339(self.last_updated);
        let resource = match self.body {
            Some(b) => serde_json::from_str(&b).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    6,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
            None => tombstone(&self.resource_type, &self.id, version, &text),
        };
        Ok(Stored {
            resource_type: self.resource_type,
            id: self.id,
            version,
            last_updated: self.last_updated,
            last_updated_text: text,
            deleted: self.deleted,
            resource: Arc::new(resource),
        })
    }
}

const VERSION_COLS: &str = "seq, resource_type, id, version, last_updated, deleted, body";

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    Ok(VersionRow {
        seq: r.get(0)?,
        resource_type: r.get(1)?,
        id: r.get(2)?,
        version: r.get(3)?,
        last_updated: r.get(4)?,
        deleted: r.get::<_, i64>(5)? != 0,
        body: r.get(6)?,
    })
}

fn outcome(row: Option<VersionRow>) -> rusqlite::Result<ReadOutcome> {
    Ok(match row {
        None => ReadOutcome::NotFound,
        Some(r) if r.deleted => ReadOutcome::Gone {
            version: u64::try_from(r.version).unwrap_or(0),
            last_updated: r.last_updated,
        },
        Some(r) => ReadOutcome::Found(r.into_stored()?),
    })
}

impl FhirStore for SqliteStore {
    fn create(&self, resource: Value) -> Result<Stored> {
        match self.submit_one(WriteOp::Create { resource, id: None })? {
            WriteOutcome::Created(s) => Ok(s),
            _ => Err(StoreError::Storage("unexpected outcome of create".into())),
        }
    }

    fn update(
        &self,
        resource_type: &str,
        id: &str,
        resource: Value,
        if_match: Option<u64>,
    ) -> Result<(Stored, bool)> {
        let op = WriteOp::Update {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            resource,
            if_match,
        };
        match self.submit_one(op)? {
            WriteOutcome::Created(s) => Ok((s, true)),
            WriteOutcome::Updated(s) => Ok((s, false)),
            WriteOutcome::Deleted(_) => {
                Err(StoreError::Storage("unexpected outcome of update".into()))
            }
        }
    }

    fn delete(
        &self,
        resource_type: &str,
        id: &str,
        if_match: Option<u64>,
    ) -> Result<Option<Stored>> {
        let op = WriteOp::Delete {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            if_match,
        };
        match self.submit_one(op)? {
            WriteOutcome::Deleted(s) => Ok(s),
            _ => Err(StoreError::Storage("unexpected outcome of delete".into())),
        }
    }

    fn read(&self, resource_type: &str, id: &str) -> Result<ReadOutcome> {
        self.with_reader(|c| {
            let row = c
                .prepare_cached(
                    "SELECT v.seq, v.resource_type, v.id, v.version, v.last_updated, v.deleted, \
                     v.body FROM resource r JOIN resource_version v ON v.seq = r.seq \
                     WHERE r.resource_type = ?1 AND r.id = ?2",
                )?
                .query_row([resource_type, id], version_row)
                .optional()?;
            outcome(row)
        })
    }

    fn vread(&self, resource_type: &str, id: &str, version: u64) -> Result<ReadOutcome> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(ReadOutcome::NotFound);
        };
        self.with_reader(|c| {
            let row = c
                .prepare_cached(&format!(
                    "SELECT {VERSION_COLS} FROM resource_version \
                     WHERE resource_type = ?1 AND id = ?2 AND version = ?3"
                ))?
                .query_row(params![resource_type, id, version], version_row)
                .optional()?;
            outcome(row)
        })
    }

    fn history(&self, scope: HistoryScope, query: HistoryQuery) -> Result<HistoryPage> {
        let count = query.count.unwrap_or(50).clamp(1, 1000);
        let cursor = match query.cursor.as_deref() {
            None => None,
            Some(c) => Some(
                c.strip_prefix('s')
                    .and_then(|n| n.parse::<i64>().ok())
                    .ok_or_else(|| StoreError::Invalid(format!("bad history cursor {c:?}")))?,
            ),
        };
        let mut sql = format!("SELECT {VERSION_COLS} FROM resource_version v WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |sql: &mut String, text: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&text.replace('?', &format!("?{}", args.len())));
        };
        use rusqlite::types::Value as V;
        match &scope {
            HistoryScope::System => {}
            HistoryScope::Type(rt) => arg(&mut sql, " AND resource_type = ?", V::Text(rt.clone())),
            HistoryScope::Instance(rt, id) => {
                arg(&mut sql, " AND resource_type = ?", V::Text(rt.clone()));
                arg(&mut sql, " AND id = ?", V::Text(id.clone()));
            }
        }
        if let Some(c) = cursor {
            arg(&mut sql, " AND seq < ?", V::Integer(c));
        }
        if let Some(since) = query.since {
            arg(&mut sql, " AND last_updated >= ?", V::Integer(since));
        }
        if let Some(at) = query.at {
            arg(&mut sql, " AND last_updated <= ?", V::Integer(at));
            // ...and no later version of the same resource had replaced it by then.
            arg(
                &mut sql,
                " AND NOT EXISTS (SELECT 1 FROM resource_version w WHERE \
                 w.resource_type = v.resource_type AND w.id = v.id AND w.version > v.version \
                 AND w.last_updated <= ?)",
                V::Integer(at),
            );
        }
        // One more than the page, to know whether there is a next page.
        arg(
            &mut sql,
            " ORDER BY seq DESC LIMIT ?",
            V::Integer(count as i64 + 1),
        );
        let rows = self.with_reader(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), version_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let more = rows.len() > count;
        let mut entries = Vec::with_capacity(count.min(rows.len()));
        let mut last_seq = None;
        for row in rows.into_iter().take(count) {
            last_seq = Some(row.seq);
            entries.push(row.into_stored().map_err(storage)?);
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

    fn transaction(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteOutcome>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(ops)
    }

    fn search(
        &self,
        query: &vigil_fhir::search::SearchQuery,
        page: &SearchPage,
    ) -> Result<SearchResult> {
        self.with_reader(|c| Ok(search::search(c, query, page)))?
    }

    fn index_values(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Vec<(String, OwnedIndexValue)>> {
        self.with_reader(|c| index::read_rows(c, resource_type, id))
    }
}

/// The writer thread's state.
struct Writer {
    conn: Arc<Mutex<Connection>>,
    /// Where committed groups are answered (None once the writer stops).
    durability: Option<sync::Durability>,
    /// The sync thread, joined when the writer stops.
    syncer: Option<JoinHandle<()>>,
    /// Set when an fsync failed: writes are refused from then on.
    poison: Arc<sync::Poison>,
    /// The last `lastUpdated` given out: timestamps never go backwards, even if the
    /// clock does, so `_since` and version order agree.
    last_ms: i64,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Job>) {
        // How many requests the previous group held: the requesters answered by a commit
        // tend to come back together, but they wake up one by one (there may be fewer
        // cores than requesters), so the writer waits briefly for as many as came last
        // time rather than committing each alone. A lone requester never waits.
        let mut expected = 1;
        // recv() fails only when every sender is gone and the queue is empty: the
        // graceful shutdown finishes all queued writes.
        while let Ok(first) = rx.recv() {
            let mut ops = first.ops.len();
            let mut batch = vec![first];
            let deadline = Instant::now() + GATHER_WAIT;
            while ops < MAX_BATCH_OPS {
                let next = if batch.len() < expected && ops < GATHER_ENOUGH_OPS {
                    let left = deadline.saturating_duration_since(Instant::now());
                    rx.recv_timeout(left).ok()
                } else {
                    rx.try_recv().ok()
                };
                match next {
                    Some(job) => {
                        ops += job.ops.len();
                        batch.push(job);
                    }
                    None => break,
                }
            }
            expected = batch.len();
            self.commit_batch(batch);
        }
        // Let the sync thread answer what it holds, then wait for it.
        self.durability = None;
        if let Some(h) = self.syncer.take() {
            let _ = h.join();
        }
    }

    fn commit_batch(&mut self, batch: Vec<Job>) {
        let conn = Arc::clone(&self.conn);
        let conn = lock(&conn);
        let now = now_millis().max(self.last_ms);
        let now_text = format_rfc3339(now);
        if let Err(e) = self.poison.check() {
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
            return;
        }
        let mut results: Vec<(Job, Result<Vec<WriteOutcome>>)> = Vec::with_capacity(batch.len());
        // First without savepoints: a savepoint makes SQLite copy every page a request
        // touches into its sub-journal, and pages at the end of the indexes are touched
        // by every request of a group. Requests rarely fail; when one does, the group is
        // rolled back and applied again with a savepoint per request.
        let mut pending = Some(batch);
        let mut isolated = false;
        while let Some(mut batch) = pending.take() {
            if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                let err = storage(e);
                for job in batch {
                    let _ = job.reply.send(Err(err.clone()));
                }
                return;
            }
            let mut tx = match Tx::new(&conn, now, &now_text) {
                Ok(tx) => tx,
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    let err = storage(e);
                    for job in batch {
                        let _ = job.reply.send(Err(err.clone()));
                    }
                    return;
                }
            };
            if isolated {
                for mut job in batch {
                    let result = Self::apply_job(&mut tx, &mut job.ops, &job.rows);
                    results.push((job, result));
                }
                break;
            }
            let mut outcomes = Vec::with_capacity(batch.len());
            let mut failed = false;
            for job in &mut batch {
                match check_distinct(&job.ops)
                    .and_then(|()| apply_ops(&mut tx, &mut job.ops, &job.rows))
                {
                    Ok(o) => outcomes.push(o),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            drop(tx);
            if failed {
                let _ = conn.execute_batch("ROLLBACK");
                isolated = true;
                pending = Some(batch);
                continue;
            }
            results.extend(batch.into_iter().zip(outcomes.into_iter().map(Ok)));
        }
        let committed = conn.execute_batch("COMMIT").map_err(storage);
        if let Err(e) = &committed {
            // The whole group is lost: nothing was acknowledged, answer every request
            // with the error (the ones that had failed keep their own error).
            let _ = conn.execute_batch("ROLLBACK");
            for (_, r) in &mut results {
                if r.is_ok() {
                    *r = Err(e.clone());
                }
            }
        } else {
            self.last_ms = now;
        }
        drop(conn);
        // The written bodies move into the answers; the rest of each request (its index
        // rows) is freed by the sync thread, off this one.
        let answers: sync::Answers = results
            .into_iter()
            .map(|(mut job, mut result)| {
                if let Ok(outcomes) = &mut result {
                    move_resources(&mut job.ops, outcomes);
                }
                (job.reply, result, job.rows)
            })
            .collect();
        match (&self.durability, committed) {
            // Committed: answered once the WAL is fsynced (see `sync`).
            (Some(d), Ok(())) => d.answer(answers),
            _ => {
                for (reply, result, _) in answers {
                    // The requester may have given up (its thread ended); nothing to do.
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Apply one request's operations inside a savepoint: all or none.
    fn apply_job(
        tx: &mut Tx<'_>,
        ops: &mut [WriteOp],
        rows: &[Option<Prepared>],
    ) -> Result<Vec<WriteOutcome>> {
        check_distinct(ops)?;
        let conn = tx.conn;
        conn.execute_batch("SAVEPOINT job").map_err(storage)?;
        match apply_ops(tx, ops, rows) {
            Ok(out) => {
                conn.execute_batch("RELEASE job").map_err(storage)?;
                Ok(out)
            }
            Err(e) => {
                conn.execute_batch("ROLLBACK TO job; RELEASE job")
                    .map_err(storage)?;
                Err(e)
            }
        }
    }
}

/// What the writer applies a group with: the connection, its statements checked out of
/// the statement cache once per group (a lookup hashes the SQL text: per row, that was
/// a few percent of the writer's time), and the group's timestamp.
struct Tx<'c> {
    conn: &'c Connection,
    current: rusqlite::CachedStatement<'c>,
    insert_version: rusqlite::CachedStatement<'c>,
    insert_resource: rusqlite::CachedStatement<'c>,
    update_resource: rusqlite::CachedStatement<'c>,
    /// The INSERT of each index table, in `schema::INDEX_TABLES` order.
    insert_rows: Vec<rusqlite::CachedStatement<'c>>,
    now: i64,
    now_text: &'c str,
}

impl<'c> Tx<'c> {
    fn new(conn: &'c Connection, now: i64, now_text: &'c str) -> rusqlite::Result<Tx<'c>> {
        Ok(Tx {
            conn,
            current: conn.prepare_cached(
                "SELECT rid, version, deleted FROM resource WHERE resource_type = ?1 AND id = ?2",
            )?,
            insert_version: conn.prepare_cached(
                "INSERT INTO resource_version (resource_type, id, version, last_updated, deleted, \
                 body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?,
            insert_resource: conn.prepare_cached(
                "INSERT INTO resource (resource_type, id, version, last_updated, deleted, seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?,
            update_resource: conn.prepare_cached(
                "UPDATE resource SET version = ?2, last_updated = ?3, deleted = ?4, seq = ?5 \
                 WHERE rid = ?1",
            )?,
            insert_rows: index::insert_statements(conn)?,
            now,
            now_text,
        })
    }
}

/// Apply operations in turn, stopping at the first error (the caller undoes them).
fn apply_ops(
    tx: &mut Tx<'_>,
    ops: &mut [WriteOp],
    rows: &[Option<Prepared>],
) -> Result<Vec<WriteOutcome>> {
    ops.iter_mut()
        .enumerate()
        .map(|(i, op)| apply_op(tx, op, rows.get(i).and_then(Option::as_ref)))
        .collect()
}

/// A resource's row in `resource`: its key, current version and deleted flag.
#[derive(Clone, Copy)]
struct Current {
    rid: i64,
    version: u64,
    deleted: bool,
}

/// The current version of a resource.
fn current(tx: &mut Tx<'_>, rt: &str, id: &str) -> Result<Option<Current>> {
    tx.current
        .query_row([rt, id], |r| {
            Ok(Current {
                rid: r.get(0)?,
                version: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                deleted: r.get::<_, i64>(2)? != 0,
            })
        })
        .optional()
        .map_err(storage)
}

/// Once the group is committed, the outcomes of `ops` take their written bodies (the
/// writer stored them with a placeholder, see `write_version`).
fn move_resources(ops: &mut [WriteOp], outcomes: &mut [WriteOutcome]) {
    for (op, outcome) in ops.iter_mut().zip(outcomes.iter_mut()) {
        let resource = match op {
            WriteOp::Create { resource, .. } | WriteOp::Update { resource, .. } => resource,
            WriteOp::Delete { .. } => continue,
        };
        if let WriteOutcome::Created(s) | WriteOutcome::Updated(s) = outcome {
            s.resource = Arc::new(std::mem::take(resource));
        }
    }
}

fn apply_op(tx: &mut Tx<'_>, op: &mut WriteOp, rows: Option<&Prepared>) -> Result<WriteOutcome> {
    match op {
        WriteOp::Create { resource, id } => {
            let rt = resource_type_of(resource)
                .ok_or_else(|| StoreError::Invalid("resource has no resourceType".into()))?
                .to_string();
            let id = id.clone().unwrap_or_else(crate::new_id);
            if !valid_id(&id) {
                return Err(StoreError::Invalid(format!("invalid id {id:?}")));
            }
            // No lookup first: the unique (type, id, version) key refuses a second
            // version 1, which `write_version` reports as the conflict.
            write_version(tx, &rt, &id, Some((resource, rows)), None).map(WriteOutcome::Created)
        }
        WriteOp::Update {
            resource_type: rt,
            id,
            resource,
            if_match,
        } => {
            match resource_type_of(resource) {
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
            if !valid_id(id) {
                return Err(StoreError::Invalid(format!("invalid id {id:?}")));
            }
            let cur = current(tx, rt, id)?;
            check_if_match(*if_match, cur)?;
            match cur {
                None => write_version(tx, rt, id, Some((resource, rows)), None)
                    .map(WriteOutcome::Created),
                Some(c) => {
                    let s = write_version(tx, rt, id, Some((resource, rows)), Some(c))?;
                    Ok(if c.deleted {
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
            let cur = current(tx, rt, id)?;
            check_if_match(*if_match, cur)?;
            match cur {
                Some(c) if !c.deleted => {
                    write_version(tx, rt, id, None, Some(c)).map(|s| WriteOutcome::Deleted(Some(s)))
                }
                _ => Ok(WriteOutcome::Deleted(None)),
            }
        }
    }
}

fn check_if_match(if_match: Option<u64>, cur: Option<Current>) -> Result<()> {
    match (if_match, cur.map(|c| c.version)) {
        (Some(expected), Some(actual)) if expected != actual => {
            Err(StoreError::VersionConflict { expected, actual })
        }
        (Some(expected), None) => Err(StoreError::VersionConflict {
            expected,
            actual: 0,
        }),
        _ => Ok(()),
    }
}

/// `resourceType`, `id`, `meta` (led by versionId and lastUpdated, other meta kept after
/// them), then the rest in its order.
fn with_meta(resource: Value, id: &str, version: &str, last_updated: &str) -> Value {
    let Value::Object(mut obj) = resource else {
        return resource;
    };
    // In place when `resourceType` leads (or is absent), as bodies almost always have
    // it: two shifting inserts instead of a new map with every key hashed again.
    let typed = obj.contains_key("resourceType");
    if !typed || obj.keys().next().map(String::as_str) == Some("resourceType") {
        let mut meta = Map::new();
        meta.insert("versionId".into(), Value::String(version.to_string()));
        meta.insert(
            "lastUpdated".into(),
            Value::String(last_updated.to_string()),
        );
        if let Some(Value::Object(m)) = obj.shift_remove("meta") {
            meta.extend(
                m.into_iter()
                    .filter(|(k, _)| k != "versionId" && k != "lastUpdated"),
            );
        }
        obj.shift_remove("id");
        let at = usize::from(typed);
        obj.shift_insert(at, "id".into(), Value::String(id.to_string()));
        obj.shift_insert(at + 1, "meta".into(), Value::Object(meta));
        return Value::Object(obj);
    }
    rebuilt_with_meta(obj, id, version, last_updated)
}

/// [`with_meta`] for any key order: the keys moved into a new map.
fn rebuilt_with_meta(
    obj: Map<String, Value>,
    id: &str,
    version: &str,
    last_updated: &str,
) -> Value {
    let mut out = Map::with_capacity(obj.len() + 2);
    let mut meta = Map::new();
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert(
        "lastUpdated".into(),
        Value::String(last_updated.to_string()),
    );
    let mut rest = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        match k.as_str() {
            "resourceType" => {
                out.insert(k, v);
            }
            "id" => {}
            "meta" => {
                if let Value::Object(m) = v {
                    meta.extend(
                        m.into_iter()
                            .filter(|(k, _)| k != "versionId" && k != "lastUpdated"),
                    );
                }
            }
            _ => rest.push((k, v)),
        }
    }
    out.insert("id".into(), Value::String(id.to_string()));
    out.insert("meta".into(), Value::Object(meta));
    out.extend(rest);
    Value::Object(out)
}

/// Set `meta.versionId` and `meta.lastUpdated` of a body `prepare` put in its stored
/// shape (in place: the keys keep their order); any other body is reshaped.
fn set_version_meta(r: &mut Value, id: &str, version: u64, last_updated: &str) {
    let shaped = r.get("id").and_then(Value::as_str) == Some(id);
    if let (true, Some(Value::Object(meta))) = (shaped, r.get_mut("meta")) {
        meta.insert("versionId".into(), Value::String(version.to_string()));
        meta.insert(
            "lastUpdated".into(),
            Value::String(last_updated.to_string()),
        );
        return;
    }
    *r = with_meta(std::mem::take(r), id, &version.to_string(), last_updated);
}

/// Write a new version (a tombstone when `resource` is None) and make it current.
/// `previous`: the resource's current row, None if it did not exist (only live versions
/// have index rows to remove).
fn write_version(
    tx: &mut Tx<'_>,
    rt: &str,
    id: &str,
    resource: Option<(&mut Value, Option<&Prepared>)>,
    previous: Option<Current>,
) -> Result<Stored> {
    let version = previous.map_or(1, |p| p.version + 1);
    let (now, text) = (tx.now, tx.now_text.to_string());
    let version_i = i64::try_from(version)
        .map_err(|_| StoreError::Storage("version number overflow".into()))?;
    let deleted = resource.is_none();
    let (resource, prepared) = match resource {
        Some((r, p)) => {
            set_version_meta(r, id, version, &text);
            (Some(&*r), p)
        }
        None => (None, None),
    };
    let body = match (resource, prepared.and_then(|p| p.body.as_ref())) {
        (Some(_), Some(shaped)) => Some(shaped.finish(version, &text)),
        (Some(r), None) => {
            Some(serde_json::to_string(r).map_err(|e| StoreError::Invalid(e.to_string()))?)
        }
        (None, _) => None,
    };
    // Rows extracted by the requester, or here.
    let extracted: Vec<index::RowArgs>;
    let rows: &[index::RowArgs] = match (prepared, resource) {
        (Some(p), Some(_)) => &p.rows,
        (None, Some(r)) => {
            extracted = index::stored_rows(r);
            &extracted
        }
        (_, None) => &[],
    };
    let count = rows.len();
    if i64::try_from(count).map_or(true, |n| n > schema::KEY_SPAN) {
        return Err(StoreError::Invalid(format!(
            "{rt}/{id} has {count} search index values, more than the store keeps per resource"
        )));
    }
    let mut sql = || -> rusqlite::Result<()> {
        let conn = tx.conn;
        tx.insert_version
            .execute(params![rt, id, version_i, now, i64::from(deleted), body])?;
        let seq = conn.last_insert_rowid();
        let rid = match previous {
            Some(p) => {
                tx.update_resource.execute(params![
                    p.rid,
                    version_i,
                    now,
                    i64::from(deleted),
                    seq
                ])?;
                if !p.deleted {
                    index::delete_rows(conn, p.rid)?;
                }
                p.rid
            }
            None => {
                tx.insert_resource.execute(params![
                    rt,
                    id,
                    version_i,
                    now,
                    i64::from(deleted),
                    seq
                ])?;
                conn.last_insert_rowid()
            }
        };
        index::insert_rows(&mut tx.insert_rows, rt, rid, rows)
    };
    sql().map_err(|e| match e {
        // Only a resource that exists already has a version 1 (`previous` is None for
        // creates and updates-as-create).
        rusqlite::Error::SqliteFailure(f, _)
            if previous.is_none() && f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(format!("{rt}/{id} already exists"))
        }
        e => storage(e),
    })?;
    Ok(Stored {
        resource_type: rt.to_string(),
        id: id.to_string(),
        version,
        last_updated: now,
        // A live write's body is moved in by `move_resources` once the group commits.
        resource: Arc::new(if deleted {
            tombstone(rt, id, version, &text)
        } else {
            Value::Null
        }),
        last_updated_text: text,
        deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The in-place shaping gives what moving every key into a new map gives.
    #[test]
    fn shaping_in_place_keeps_the_rebuilt_order() {
        let bodies = [
            json!({"resourceType": "Patient", "active": true}),
            json!({"resourceType": "Patient", "active": true, "id": "x", "gender": "male"}),
            json!({"resourceType": "Patient", "meta": {"lastUpdated": "2020-01-01T00:00:00Z",
                   "tag": [{"code": "t"}], "versionId": "9"}, "id": "x", "active": true}),
            json!({"resourceType": "Patient", "meta": "not an object", "active": true}),
            json!({"active": true, "meta": {"source": "s"}, "id": "x"}),
        ];
        for body in bodies {
            let Value::Object(obj) = body.clone() else {
                unreachable!()
            };
            let rebuilt = rebuilt_with_meta(obj, "p1", "3", "2024-01-01T00:00:00Z");
            let shaped = with_meta(body, "p1", "3", "2024-01-01T00:00:00Z");
            assert_eq!(
                serde_json::to_string(&shaped).unwrap(),
                serde_json::to_string(&rebuilt).unwrap()
            );
        }
        // `resourceType` not first: moved to the front.
        let shaped = with_meta(
            json!({"active": true, "resourceType": "Patient"}),
            "p1",
            "1",
            "t",
        );
        assert_eq!(
            serde_json::to_string(&shaped).unwrap(),
            r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"1","lastUpdated":"t"},"active":true}"#
        );
    }

    #[test]
    fn new_database_files_take_the_page_size_and_keep_whole_texts_short() {
        let dir = std::env::temp_dir().join(format!("vigil-store-page-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.db");
        let store = SqliteStore::open(&path).unwrap();
        let p = store
            .create(json!({"resourceType": "Patient", "active": true,
                "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Ann Émile</div>"},
                "name": [{"family": "Émile", "given": ["Ann"]}]}))
            .unwrap();
        // The whole-text rows keep no exact text; it is made again from the body.
        let read_back = store.index_values("Patient", &p.id).unwrap();
        let extracted = crate::index::extract_rows(&p.resource);
        for code in ["_content", "_text"] {
            let want: Vec<_> = extracted
                .iter()
                .filter(|(c, _)| *c == code)
                .map(|(_, v)| v.clone())
                .collect();
            let got: Vec<_> = read_back
                .iter()
                .filter(|(c, _)| c == code)
                .map(|(_, v)| v.clone())
                .collect();
            assert_eq!(got.len(), 1, "{code}");
            assert_eq!(got, want, "{code}");
        }
        store.close().unwrap();
        let conn = Connection::open(&path).unwrap();
        let size: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(size, PAGE_SIZE);
        let exact: Vec<String> = conn
            .prepare("SELECT exact FROM idx_string WHERE param IN ('_content', '_text')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(exact, ["", ""]);
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The text the writer stores is the final body serialized, whatever meta it had.
    #[test]
    fn spliced_text_is_the_final_body() {
        let bodies = [
            json!({"resourceType": "Patient", "name": [{"family": "Ng"}]}),
            json!({"resourceType": "Patient", "id": "x", "meta": {"tag": [{"code": "a"}],
                "versionId": "9", "lastUpdated": "2020-01-01T00:00:00Z", "source": "s"}}),
            json!({"resourceType": "Patient", "meta": {}, "active": true,
                "extension": [{"url": "u", "valueMeta": {"versionId": "1"}}]}),
        ];
        for body in bodies {
            let mut shaped = shape(body, "p-1");
            let text = ShapedText::new(&shaped).unwrap();
            set_version_meta(&mut shaped, "p-1", 12, "2024-05-01T12:00:00.123Z");
            let stored = text.finish(12, "2024-05-01T12:00:00.123Z");
            assert_eq!(stored, serde_json::to_string(&shaped).unwrap());
            let meta = shaped["meta"].as_object().unwrap();
            assert_eq!(meta.keys().next().map(String::as_str), Some("versionId"));
            assert_eq!(shaped["meta"]["versionId"], "12");
        }
    }
}
