//! The PostgreSQL backend of [`vigil_store::FhirStore`]: [`PostgresStore`].
//!
//! Same semantics as the embedded `SqliteStore` (the shared conformance suite
//! `vigil_store::store_conformance_tests!` runs against both), on the same table layout
//! (see `schema.rs`), with the schema migrated at connect.
//!
//! Writes: each request (one operation or a whole transaction) is one PostgreSQL
//! transaction. The `resource` row of each touched resource is locked (`SELECT … FOR
//! UPDATE`) before its current version is checked, so concurrent writers to one
//! resource serialize and none loses an update; a resource that does not exist yet is
//! claimed by inserting a placeholder row (`ON CONFLICT DO NOTHING` waits for a
//! concurrent creator and then sees its row). The version, the `resource` row and the
//! index rows are then written by one statement. Commits are durable when PostgreSQL
//! runs with its default `synchronous_commit = on`.
//!
//! Reads use a small connection pool; a search runs in one `REPEATABLE READ` read-only
//! transaction so its page, `_total` and includes are one snapshot.
//!
//! ```no_run
//! use vigil_store::FhirStore;
//! use vigil_store_postgres::{PgOptions, PostgresStore};
//! let store = PostgresStore::connect("postgres://postgres@127.0.0.1/test", PgOptions::default())?;
//! let p = store.create(serde_json::json!({"resourceType": "Patient"}))?;
//! assert_eq!(p.version, 1);
//! # Ok::<(), vigil_store::StoreError>(())
//! ```

mod index;
mod pool;
mod schema;
mod search;
mod write;

use pool::Pool;
use postgres::error::SqlState;
use serde_json::Value;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vigil_store::*;

/// Connection options of [`PostgresStore::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// The schema holding Vigil's tables, created if absent (default `vigil`). Lower-case
    /// letters, digits and `_`, starting with a letter or `_`, at most 63 characters.
    /// Tests use one schema each to isolate themselves.
    pub schema: String,
    /// The most connections the store opens (default 16).
    pub max_connections: usize,
    /// How long a request waits for a free connection before [`StoreError::Busy`]
    /// (default 30 s).
    pub acquire_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            schema: "vigil".into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

impl PgOptions {
    /// The default options with another schema.
    pub fn with_schema(schema: &str) -> PgOptions {
        PgOptions {
            schema: schema.to_string(),
            ..PgOptions::default()
        }
    }
}

/// Whether `s` is a schema name this store accepts (it is spliced into SQL quoted, so
/// only plain identifiers are allowed).
pub fn valid_schema_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// The PostgreSQL-backed [`FhirStore`].
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    /// The last `lastUpdated` this process gave out: timestamps never go backwards,
    /// even if the clock does (each resource's versions are also kept in order against
    /// its stored last version, which covers other processes).
    last_ms: AtomicI64,
}

/// A PostgreSQL error as a [`StoreError`]: lock timeouts, deadlocks, serialization
/// failures and connection limits are `Busy` (retry), unique violations `Conflict`,
/// text PostgreSQL cannot store (NUL characters) `Invalid`, the rest `Storage`.
pub(crate) fn pg_error(e: postgres::Error) -> StoreError {
    let busy = [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::QUERY_CANCELED,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
    ];
    match e.code() {
        Some(c) if busy.contains(c) => StoreError::Busy(e.to_string()),
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(e.to_string()),
        Some(c)
            if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                || *c == SqlState::UNTRANSLATABLE_CHARACTER =>
        {
            StoreError::Invalid(e.to_string())
        }
        _ => StoreError::Storage(e.to_string()),
    }
}

impl PostgresStore {
    /// Connect to the database at `url` (a libpq-style URL or key=value string),
    /// create the schema if needed and migrate it to the current version.
    ///
    /// Errors: [`StoreError::Invalid`] for a malformed URL or schema name,
    /// [`StoreError::Storage`] when the server cannot be reached or the schema is
    /// newer than this build.
    pub fn connect(url: &str, options: PgOptions) -> Result<PostgresStore> {
        if !valid_schema_name(&options.schema) {
            return Err(StoreError::Invalid(format!(
                "invalid schema name {:?} (lower-case letters, digits and _)",
                options.schema
            )));
        }
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("bad database URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let mut first = config
            .connect(postgres::NoTls)
            .map_err(|e| StoreError::Storage(format!("cannot connect to PostgreSQL: {e}")))?;
        schema::migrate(&mut first, &options.schema)
            .map_err(pg_error)?
            .map_err(StoreError::Storage)?;
        // Every pooled connection resolves the unqualified table names in the schema
        // (after any server options the URL gives).
        let server_options = match config.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} -c search_path={}", options.schema),
            _ => format!("-c search_path={}", options.schema),
        };
        config.options(&server_options);
        let pool = Pool::new(config, options.max_connections, options.acquire_timeout);
        let last: Option<i64> = {
            let mut c = pool.get()?;
            c.client()
                .query_opt(
                    "SELECT last_updated FROM resource_version ORDER BY seq DESC LIMIT 1",
                    &[],
                )
                .map_err(pg_error)?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(pg_error)?
        };
        Ok(PostgresStore {
            pool,
            schema: options.schema,
            last_ms: AtomicI64::new(last.unwrap_or(0)),
        })
    }

    /// The schema this store uses.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Drop `schema` and everything in it (for tests and tools). Errors as
    /// [`connect`](PostgresStore::connect).
    pub fn drop_schema(url: &str, schema: &str) -> Result<()> {
        if !valid_schema_name(schema) {
            return Err(StoreError::Invalid(format!(
                "invalid schema name {schema:?}"
            )));
        }
        let config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("bad database URL: {e}")))?;
        let mut c = config
            .connect(postgres::NoTls)
            .map_err(|e| StoreError::Storage(format!("cannot connect to PostgreSQL: {e}")))?;
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .map_err(pg_error)
    }

    /// Update the planner statistics of the store's tables (`ANALYZE`); useful after a
    /// bulk load, before autovacuum gets to it.
    pub fn analyze(&self) -> Result<()> {
        let mut c = self.pool.get()?;
        c.client()
            .batch_execute(
                "ANALYZE resource_version; ANALYZE resource; ANALYZE idx_token; \
                 ANALYZE idx_string; ANALYZE idx_date; ANALYZE idx_number; \
                 ANALYZE idx_quantity; ANALYZE idx_reference; ANALYZE idx_uri; \
                 ANALYZE idx_composite; ANALYZE idx_position",
            )
            .map_err(pg_error)
    }

    /// The timestamp for a write starting now: never before one given out earlier.
    fn clock(&self) -> i64 {
        now_millis().max(self.last_ms.load(Ordering::Relaxed))
    }

    fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteOutcome>> {
        vigil_store::rules::check_distinct(&ops)?;
        let now = self.clock();
        let mut conn = self.pool.get()?;
        let (out, latest) = write::apply(&mut conn, ops, now)?;
        self.last_ms.fetch_max(latest, Ordering::Relaxed);
        Ok(out)
    }

    fn write_one(&self, op: WriteOp) -> Result<WriteOutcome> {
        self.write(vec![op])?
            .pop()
            .ok_or_else(|| StoreError::Storage("no outcome for the operation".into()))
    }
}

impl FhirStore for PostgresStore {
    fn create(&self, resource: Value) -> Result<Stored> {
        match self.write_one(WriteOp::Create { resource, id: None })? {
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
        match self.write_one(op)? {
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
        match self.write_one(op)? {
            WriteOutcome::Deleted(s) => Ok(s),
            _ => Err(StoreError::Storage("unexpected outcome of delete".into())),
        }
    }

    fn read(&self, resource_type: &str, id: &str) -> Result<ReadOutcome> {
        let mut c = self.pool.get()?;
        let stmt = c.prepare(&format!(
            "SELECT {} FROM resource r JOIN resource_version v ON v.seq = r.seq \
             WHERE r.resource_type = $1::text AND r.id = $2::text",
            write::VERSION_COLS_V
        ))?;
        let row = c
            .client()
            .query_opt(&stmt, &[&resource_type, &id])
            .map_err(pg_error)?;
        write::outcome(row.as_ref().map(write::version_row).transpose()?)
    }

    fn vread(&self, resource_type: &str, id: &str, version: u64) -> Result<ReadOutcome> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(ReadOutcome::NotFound);
        };
        let mut c = self.pool.get()?;
        let stmt = c.prepare(&format!(
            "SELECT {} FROM resource_version WHERE resource_type = $1::text AND id = $2::text \
             AND version = $3::int8",
            write::VERSION_COLS
        ))?;
        let row = c
            .client()
            .query_opt(&stmt, &[&resource_type, &id, &version])
            .map_err(pg_error)?;
        write::outcome(row.as_ref().map(write::version_row).transpose()?)
    }

    fn history(&self, scope: HistoryScope, query: HistoryQuery) -> Result<HistoryPage> {
        let mut c = self.pool.get()?;
        write::history(&mut c, scope, query)
    }

    fn transaction(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteOutcome>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        self.write(ops)
    }

    fn search(
        &self,
        query: &vigil_fhir::search::SearchQuery,
        page: &SearchPage,
    ) -> Result<SearchResult> {
        let mut c = self.pool.get()?;
        let (client, statements) = c.parts();
        search::search(client, statements, query, page)
    }

    fn index_values(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Vec<(String, OwnedIndexValue)>> {
        let mut c = self.pool.get()?;
        // Rows exist only for live current versions (they are removed on delete).
        index::read_rows(c.client(), resource_type, id).map_err(pg_error)
    }
}

/// A stored version as read, before it becomes a [`Stored`].
pub(crate) struct VersionRow {
    pub(crate) seq: i64,
    pub(crate) resource_type: String,
    pub(crate) id: String,
    pub(crate) version: i64,
    pub(crate) last_updated: i64,
    pub(crate) deleted: bool,
    pub(crate) body: Option<String>,
}

impl VersionRow {
    pub(crate) fn into_stored(self) -> Result<Stored> {
        let version = u64::try_from(self.version).unwrap_or(0);
        let text = format_rfc3339(self.last_updated);
        let resource = match self.body {
            Some(b) => serde_json::from_str(&b).map_err(|e| {
                StoreError::Storage(format!(
                    "stored body of {}/{} is not JSON: {e}",
                    self.resource_type, self.id
                ))
            })?,
            None => vigil_store::rules::tombstone(&self.resource_type, &self.id, version, &text),
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
