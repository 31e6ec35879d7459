//! The PostgreSQL schema and its migrations.
//!
//! The layout is SQLite's (see `vigil-store`'s `sqlite/schema.rs`): `resource_version`
//! (every version, `seq` the global write order), `resource` (the current version of
//! each resource) and one `idx_*` table per index value kind, keyed by (`resource_type`,
//! `resource_id`, `param`). Differences: `seq` is an identity column, flags are
//! `boolean`, decimals `double precision` (with exact text beside them), identifier
//! types and composite tuples `jsonb`, and every text column uses the `"C"` collation so
//! ordering and prefix ranges are by code point (as SQLite's BINARY), whatever the
//! database's default collation.
//!
//! Bodies are stored as the exact JSON text the store serialized (not `jsonb`, which
//! would reorder keys and reformat numbers): reads return that text parsed.

/// Each migration brings the schema from the previous version to its own; append new
/// ones, never edit released ones. The number applied is in `vigil_schema_version`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
CREATE TABLE resource_version (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    resource_type TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL,
    body TEXT,
    UNIQUE (resource_type, id, version)
);
CREATE INDEX resource_version_type ON resource_version (resource_type, seq);

CREATE TABLE resource (
    resource_type TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (resource_type, id)
);
CREATE INDEX resource_updated ON resource (resource_type, last_updated);
CREATE INDEX resource_seq ON resource (resource_type, seq);

CREATE TABLE idx_token (
    resource_type TEXT COLLATE "C" NOT NULL, resource_id TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    system TEXT COLLATE "C", code TEXT COLLATE "C", text TEXT COLLATE "C",
    identifier_type JSONB
);
CREATE INDEX idx_token_key ON idx_token (resource_type, resource_id, param);
CREATE INDEX idx_token_code ON idx_token (resource_type, param, code, system);

CREATE TABLE idx_string (
    resource_type TEXT COLLATE "C" NOT NULL, resource_id TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    normalized TEXT COLLATE "C" NOT NULL, exact TEXT COLLATE "C" NOT NULL
);
CREATE INDEX idx_string_key ON idx_string (resource_type, resource_id, param);
CREATE INDEX idx_string_value ON idx_string (resource_type, param, normalized);

CREATE TABLE idx_date (
    resource_type TEXT COLLATE "C" NOT NULL, resource_id TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    low BIGINT, high BIGINT, precision BIGINT
);
CREATE INDEX idx_date_key ON idx_date (resource_type, resource_id, param, low);
CREATE INDEX idx_date_value ON idx_date (resource_type, param, low, high);

CREATE TABLE idx_number (
    resource_type TEXT COLLATE "C" NOT NULL, resource_id TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    value DOUBLE PRECISION, low DOUBLE PRECISION, high DOUBLE PRECISION,
    value_text TEXT, low_text TEXT, high_text TEXT
);
CREATE INDEX idx_number_key ON idx_number (resource_type, resource_id, param);
CREATE INDEX idx_number_value ON idx_number (resource_type, param, low, high);

CREATE TABLE idx_quantity (
    resource_type TEXT COLLATE "C" NOT NULL, resource_id TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    value DOUBLE PRECISION, low DOUBLE PRECISION, high DOUBLE PRECISION,
    value_text TEXT, low_text TEXT, high_text TEXT,
    comparator TEXT COLLATE "C", system TEXT COLLATE "C", code TEXT COLLATE "C",
    unit TEXT COLLATE "C",
    canonical_value DOUBLE PRECISION, canonical_low DOUBLE PRECISION,
    canonical_high DOUBLE PRECISION,
    canonical_value_text TEXT, canonical_low_text TEXT, canonical_high_text TEXT,
    canonical_unit TEXT COLLATE "C"
);
CREATE INDEX idx_quantity_key ON idx_quantity (resource_type, resource_id, param);
CREATE INDEX idx_quantity_value ON idx_quantity (resource_type, param, code, low);
CREATE INDEX idx_quantity_canonical ON idx_quantity (resource_type, param, canonical_unit, canonical_low);

CREATE TABLE idx_reference (
    resource_type TEXT COLLATE "C" NOT NULL, resource_id TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL, reference TEXT COLLATE "C",
    target_type TEXT COLLATE "C", target_id TEXT COLLATE "C",
    target_version TEXT COLLATE "C", base_url TEXT COLLATE "C", url TEXT COLLATE "C",
    display TEXT, identifier_system TEXT COLLATE "C", identifier_value TEXT COLLATE "C",
    identifier_text TEXT, identifier_type JSONB
);
CREATE INDEX idx_reference_key ON idx_reference (resource_type, resource_id, param);
CREATE INDEX idx_reference_target ON idx_reference (resource_type, param, target_id, target_type);
CREATE INDEX idx_reference_reverse ON idx_reference (target_type, target_id);
CREATE INDEX idx_reference_url ON idx_reference (resource_type, param, url);

CREATE TABLE idx_uri (
    resource_type TEXT COLLATE "C" NOT NULL, resource_id TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    uri TEXT COLLATE "C" NOT NULL, version TEXT COLLATE "C"
);
CREATE INDEX idx_uri_key ON idx_uri (resource_type, resource_id, param);
CREATE INDEX idx_uri_value ON idx_uri (resource_type, param, uri);

CREATE TABLE idx_composite (
    resource_type TEXT COLLATE "C" NOT NULL, resource_id TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    value JSONB NOT NULL
);
CREATE INDEX idx_composite_key ON idx_composite (resource_type, resource_id, param);

CREATE TABLE idx_position (
    resource_type TEXT COLLATE "C" NOT NULL, resource_id TEXT COLLATE "C" NOT NULL,
    param TEXT COLLATE "C" NOT NULL,
    latitude DOUBLE PRECISION NOT NULL, longitude DOUBLE PRECISION NOT NULL,
    latitude_text TEXT NOT NULL, longitude_text TEXT NOT NULL
);
CREATE INDEX idx_position_key ON idx_position (resource_type, resource_id, param);
CREATE INDEX idx_position_value ON idx_position (resource_type, param, latitude, longitude);
"#,
];

/// Bring `schema` (created if absent) to the latest version in one transaction, under
/// an advisory lock so concurrent connects do not migrate twice. Fails if the schema
/// was written by a newer version of Vigil. `schema` is a validated identifier.
pub(crate) fn migrate(
    client: &mut postgres::Client,
    schema: &str,
) -> Result<Result<(), String>, postgres::Error> {
    let mut tx = client.transaction()?;
    // Serializes migrations of this schema across processes (the lock key is the
    // schema's name hashed by PostgreSQL); released at commit.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('vigil_migrate:' || $1::text))",
        &[&schema],
    )?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; \
         CREATE TABLE IF NOT EXISTS \"{schema}\".vigil_schema_version (version BIGINT NOT NULL)"
    ))?;
    let current: Option<i64> = tx
        .query_one(
            &format!("SELECT MAX(version) FROM \"{schema}\".vigil_schema_version"),
            &[],
        )?
        .get(0);
    let current = usize::try_from(current.unwrap_or(0)).unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Ok(Err(format!(
            "database schema version {current} is newer than this build supports ({})",
            MIGRATIONS.len()
        )));
    }
    if current == MIGRATIONS.len() {
        tx.commit()?;
        return Ok(Ok(()));
    }
    // The migrations use unqualified names: create them in this schema.
    tx.batch_execute(&format!("SET LOCAL search_path TO \"{schema}\""))?;
    for sql in MIGRATIONS.iter().skip(current) {
        tx.batch_execute(sql)?;
    }
    tx.execute("DELETE FROM vigil_schema_version", &[])?;
    tx.execute(
        "INSERT INTO vigil_schema_version (version) VALUES ($1)",
        &[&i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)],
    )?;
    tx.commit()?;
    Ok(Ok(()))
}

/// The index tables, for reading a resource's rows.
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
