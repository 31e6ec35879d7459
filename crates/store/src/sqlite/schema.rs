//! The SQLite schema and its migrations.
//!
//! The SQL is kept to what PostgreSQL also accepts (apart from `INTEGER PRIMARY KEY`
//! being SQLite's auto-assigned row id, `BIGINT GENERATED ALWAYS AS IDENTITY` there),
//! so the PostgreSQL backend can share the layout and the search SQL.
//!
//! Layout:
//! - `resource_version`: every version ever written, including deletes (tombstones with
//!   a NULL body). `seq` is the global write order: history is listed by it and its
//!   cursors are `seq` positions, so pages stay stable while writes go on.
//! - `resource`: one row per logical resource with its current version (`seq` points
//!   at its `resource_version` row); what reads and searches join against.
//! - `idx_*`: search index rows of the *current* version of live resources, one table
//!   per value kind, each keyed by (`resource_type`, `resource_id`, `param`) with
//!   that key indexed for replacement and `_sort` joins, plus a lookup index leading
//!   with (`resource_type`, `param`, value columns) for searches. Decimals are stored as
//!   REAL for range comparison and as exact text (`*_text`) for `ap`/precision rules
//!   and exact read-back; dates as inclusive UTC-millisecond ranges (NULL = unbounded).
//!   Composite tuples are JSON (see [`crate::index::value_json`]): their component
//!   kinds vary per parameter.

/// Each migration brings the schema from the previous version to its own; append new
/// ones, never edit released ones. The number applied is in `schema_version`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
CREATE TABLE resource_version (
    seq INTEGER PRIMARY KEY,
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    body TEXT,
    UNIQUE (resource_type, id, version)
);
CREATE INDEX resource_version_type ON resource_version (resource_type, seq);

CREATE TABLE resource (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (resource_type, id)
);
CREATE INDEX resource_updated ON resource (resource_type, last_updated);

CREATE TABLE idx_token (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT, code TEXT, text TEXT, identifier_type TEXT
);
CREATE INDEX idx_token_key ON idx_token (resource_type, resource_id, param);
CREATE INDEX idx_token_code ON idx_token (resource_type, param, code, system);

CREATE TABLE idx_string (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, param TEXT NOT NULL,
    normalized TEXT NOT NULL, exact TEXT NOT NULL
);
CREATE INDEX idx_string_key ON idx_string (resource_type, resource_id, param);
CREATE INDEX idx_string_value ON idx_string (resource_type, param, normalized);

CREATE TABLE idx_date (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, param TEXT NOT NULL,
    low INTEGER, high INTEGER, precision INTEGER
);
CREATE INDEX idx_date_key ON idx_date (resource_type, resource_id, param, low);
CREATE INDEX idx_date_value ON idx_date (resource_type, param, low, high);

CREATE TABLE idx_number (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, param TEXT NOT NULL,
    value REAL, low REAL, high REAL, value_text TEXT, low_text TEXT, high_text TEXT
);
CREATE INDEX idx_number_key ON idx_number (resource_type, resource_id, param);
CREATE INDEX idx_number_value ON idx_number (resource_type, param, low, high);

CREATE TABLE idx_quantity (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, param TEXT NOT NULL,
    value REAL, low REAL, high REAL, value_text TEXT, low_text TEXT, high_text TEXT,
    comparator TEXT, system TEXT, code TEXT, unit TEXT,
    canonical_value REAL, canonical_low REAL, canonical_high REAL,
    canonical_value_text TEXT, canonical_low_text TEXT, canonical_high_text TEXT,
    canonical_unit TEXT
);
CREATE INDEX idx_quantity_key ON idx_quantity (resource_type, resource_id, param);
CREATE INDEX idx_quantity_value ON idx_quantity (resource_type, param, code, low);
CREATE INDEX idx_quantity_canonical ON idx_quantity (resource_type, param, canonical_unit, canonical_low);

CREATE TABLE idx_reference (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, param TEXT NOT NULL,
    kind TEXT NOT NULL, reference TEXT, target_type TEXT, target_id TEXT,
    target_version TEXT, base_url TEXT, url TEXT, display TEXT,
    identifier_system TEXT, identifier_value TEXT, identifier_text TEXT,
    identifier_type TEXT
);
CREATE INDEX idx_reference_key ON idx_reference (resource_type, resource_id, param);
CREATE INDEX idx_reference_target ON idx_reference (resource_type, param, target_id, target_type);
CREATE INDEX idx_reference_reverse ON idx_reference (target_type, target_id);
CREATE INDEX idx_reference_url ON idx_reference (resource_type, param, url);

CREATE TABLE idx_uri (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, param TEXT NOT NULL,
    uri TEXT NOT NULL, version TEXT
);
CREATE INDEX idx_uri_key ON idx_uri (resource_type, resource_id, param);
CREATE INDEX idx_uri_value ON idx_uri (resource_type, param, uri);

CREATE TABLE idx_composite (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, param TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX idx_composite_key ON idx_composite (resource_type, resource_id, param);

CREATE TABLE idx_position (
    resource_type TEXT NOT NULL, resource_id TEXT NOT NULL, param TEXT NOT NULL,
    latitude REAL NOT NULL, longitude REAL NOT NULL,
    latitude_text TEXT NOT NULL, longitude_text TEXT NOT NULL
);
CREATE INDEX idx_position_key ON idx_position (resource_type, resource_id, param);
CREATE INDEX idx_position_value ON idx_position (resource_type, param, latitude, longitude);
"#,
];

/// The index tables, for replacing and removing a resource's rows.
pub(crate) const INDEX_TABLES: &[&str] = &[
    "idx_token",
    "idx_string",
    "idx_date",
    "idx_number",
    "idx_quantity",
    "idx_reference",
    "idx_uri",
    "idx_composite",
    "idx_position",
];

/// Bring the database to the latest schema, each migration in its own transaction.
/// Fails if the database was written by a newer version of Vigil.
pub(crate) fn migrate(conn: &mut rusqlite::Connection) -> rusqlite::Result<Result<(), String>> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: Option<i64> =
        tx.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?;
    let current = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Ok(Err(format!(
            "database schema version {current} is newer than this build supports ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [i64::try_from(i + 1).unwrap_or(i64::MAX)],
        )?;
    }
    tx.commit()?;
    Ok(Ok(()))
}
