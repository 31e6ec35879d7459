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
//!   at its `resource_version` row) and an integer key `rid`; what reads and searches
//!   join against.
//! - `idx_*`: search index rows of the *current* version of live resources, one table
//!   per value kind. Row keys are `k = rid * 2^20 + n` ([`KEY_SPAN`]), so the rows of
//!   one resource are a rowid range (replacement, `_sort` and clause probes need no
//!   further index), plus a lookup index leading with (`resource_type`, `param`, value
//!   columns) for searches. Decimals are stored as
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
    // 2: integer keys. `resource` gets `rid`, and the rows of each index table are keyed
    // by `k = rid * 2^20 + n` (n numbers a resource's rows in that table), so a
    // resource's rows are one rowid range: no (type, id, param) key indexes to maintain,
    // and new resources append at the end of every table.
    r#"
CREATE TABLE resource_v2 (
    rid INTEGER PRIMARY KEY,
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    UNIQUE (resource_type, id)
);
INSERT INTO resource_v2 (resource_type, id, version, last_updated, deleted, seq)
    SELECT resource_type, id, version, last_updated, deleted, seq FROM resource ORDER BY seq;
DROP TABLE resource;
ALTER TABLE resource_v2 RENAME TO resource;
CREATE INDEX resource_updated ON resource (resource_type, last_updated);

CREATE TABLE idx_token_v2 (
    k INTEGER PRIMARY KEY, resource_type TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT, code TEXT, text TEXT, identifier_type TEXT
);
INSERT INTO idx_token_v2 (k, resource_type, param, system, code, text, identifier_type)
    SELECT r.rid * 1048576 + ROW_NUMBER() OVER (PARTITION BY r.rid ORDER BY x.rowid) - 1,
    x.resource_type, x.param, x.system, x.code, x.text, x.identifier_type
    FROM idx_token x JOIN resource r ON r.resource_type = x.resource_type AND r.id = x.resource_id;
DROP TABLE idx_token;
ALTER TABLE idx_token_v2 RENAME TO idx_token;
CREATE INDEX idx_token_code ON idx_token (resource_type, param, code, system);

CREATE TABLE idx_string_v2 (
    k INTEGER PRIMARY KEY, resource_type TEXT NOT NULL, param TEXT NOT NULL,
    normalized TEXT NOT NULL, exact TEXT NOT NULL
);
INSERT INTO idx_string_v2 (k, resource_type, param, normalized, exact)
    SELECT r.rid * 1048576 + ROW_NUMBER() OVER (PARTITION BY r.rid ORDER BY x.rowid) - 1,
    x.resource_type, x.param, x.normalized, x.exact
    FROM idx_string x JOIN resource r ON r.resource_type = x.resource_type AND r.id = x.resource_id;
DROP TABLE idx_string;
ALTER TABLE idx_string_v2 RENAME TO idx_string;
CREATE INDEX idx_string_value ON idx_string (resource_type, param, normalized);

CREATE TABLE idx_date_v2 (
    k INTEGER PRIMARY KEY, resource_type TEXT NOT NULL, param TEXT NOT NULL,
    low INTEGER, high INTEGER, precision INTEGER
);
INSERT INTO idx_date_v2 (k, resource_type, param, low, high, precision)
    SELECT r.rid * 1048576 + ROW_NUMBER() OVER (PARTITION BY r.rid ORDER BY x.rowid) - 1,
    x.resource_type, x.param, x.low, x.high, x.precision
    FROM idx_date x JOIN resource r ON r.resource_type = x.resource_type AND r.id = x.resource_id;
DROP TABLE idx_date;
ALTER TABLE idx_date_v2 RENAME TO idx_date;
CREATE INDEX idx_date_value ON idx_date (resource_type, param, low, high);

CREATE TABLE idx_number_v2 (
    k INTEGER PRIMARY KEY, resource_type TEXT NOT NULL, param TEXT NOT NULL,
    value REAL, low REAL, high REAL, value_text TEXT, low_text TEXT, high_text TEXT
);
INSERT INTO idx_number_v2 (k, resource_type, param, value, low, high, value_text, low_text, high_text)
    SELECT r.rid * 1048576 + ROW_NUMBER() OVER (PARTITION BY r.rid ORDER BY x.rowid) - 1,
    x.resource_type, x.param, x.value, x.low, x.high, x.value_text, x.low_text, x.high_text
    FROM idx_number x JOIN resource r ON r.resource_type = x.resource_type AND r.id = x.resource_id;
DROP TABLE idx_number;
ALTER TABLE idx_number_v2 RENAME TO idx_number;
CREATE INDEX idx_number_value ON idx_number (resource_type, param, low, high);

CREATE TABLE idx_quantity_v2 (
    k INTEGER PRIMARY KEY, resource_type TEXT NOT NULL, param TEXT NOT NULL,
    value REAL, low REAL, high REAL, value_text TEXT, low_text TEXT, high_text TEXT,
    comparator TEXT, system TEXT, code TEXT, unit TEXT,
    canonical_value REAL, canonical_low REAL, canonical_high REAL,
    canonical_value_text TEXT, canonical_low_text TEXT, canonical_high_text TEXT,
    canonical_unit TEXT
);
INSERT INTO idx_quantity_v2 (k, resource_type, param, value, low, high, value_text, low_text, high_text, comparator, system, code, unit,
    canonical_value, canonical_low, canonical_high, canonical_value_text, canonical_low_text,
    canonical_high_text, canonical_unit)
    SELECT r.rid * 1048576 + ROW_NUMBER() OVER (PARTITION BY r.rid ORDER BY x.rowid) - 1,
    x.resource_type, x.param, x.value, x.low, x.high, x.value_text, x.low_text, x.high_text, x.comparator, x.system, x.code, x.unit, x.canonical_value, x.canonical_low, x.canonical_high, x.canonical_value_text, x.canonical_low_text, x.canonical_high_text, x.canonical_unit
    FROM idx_quantity x JOIN resource r ON r.resource_type = x.resource_type AND r.id = x.resource_id;
DROP TABLE idx_quantity;
ALTER TABLE idx_quantity_v2 RENAME TO idx_quantity;
CREATE INDEX idx_quantity_value ON idx_quantity (resource_type, param, code, low);
CREATE INDEX idx_quantity_canonical ON idx_quantity (resource_type, param, canonical_unit, canonical_low);

CREATE TABLE idx_reference_v2 (
    k INTEGER PRIMARY KEY, resource_type TEXT NOT NULL, param TEXT NOT NULL,
    kind TEXT NOT NULL, reference TEXT, target_type TEXT, target_id TEXT,
    target_version TEXT, base_url TEXT, url TEXT, display TEXT,
    identifier_system TEXT, identifier_value TEXT, identifier_text TEXT,
    identifier_type TEXT
);
INSERT INTO idx_reference_v2 (k, resource_type, param, kind, reference, target_type, target_id, target_version, base_url, url, display,
    identifier_system, identifier_value, identifier_text, identifier_type)
    SELECT r.rid * 1048576 + ROW_NUMBER() OVER (PARTITION BY r.rid ORDER BY x.rowid) - 1,
    x.resource_type, x.param, x.kind, x.reference, x.target_type, x.target_id, x.target_version, x.base_url, x.url, x.display, x.identifier_system, x.identifier_value, x.identifier_text, x.identifier_type
    FROM idx_reference x JOIN resource r ON r.resource_type = x.resource_type AND r.id = x.resource_id;
DROP TABLE idx_reference;
ALTER TABLE idx_reference_v2 RENAME TO idx_reference;
CREATE INDEX idx_reference_target ON idx_reference (resource_type, param, target_id, target_type);
CREATE INDEX idx_reference_reverse ON idx_reference (target_type, target_id);
CREATE INDEX idx_reference_url ON idx_reference (resource_type, param, url);

CREATE TABLE idx_uri_v2 (
    k INTEGER PRIMARY KEY, resource_type TEXT NOT NULL, param TEXT NOT NULL,
    uri TEXT NOT NULL, version TEXT
);
INSERT INTO idx_uri_v2 (k, resource_type, param, uri, version)
    SELECT r.rid * 1048576 + ROW_NUMBER() OVER (PARTITION BY r.rid ORDER BY x.rowid) - 1,
    x.resource_type, x.param, x.uri, x.version
    FROM idx_uri x JOIN resource r ON r.resource_type = x.resource_type AND r.id = x.resource_id;
DROP TABLE idx_uri;
ALTER TABLE idx_uri_v2 RENAME TO idx_uri;
CREATE INDEX idx_uri_value ON idx_uri (resource_type, param, uri);

CREATE TABLE idx_composite_v2 (
    k INTEGER PRIMARY KEY, resource_type TEXT NOT NULL, param TEXT NOT NULL,
    value TEXT NOT NULL
);
INSERT INTO idx_composite_v2 (k, resource_type, param, value)
    SELECT r.rid * 1048576 + ROW_NUMBER() OVER (PARTITION BY r.rid ORDER BY x.rowid) - 1,
    x.resource_type, x.param, x.value
    FROM idx_composite x JOIN resource r ON r.resource_type = x.resource_type AND r.id = x.resource_id;
DROP TABLE idx_composite;
ALTER TABLE idx_composite_v2 RENAME TO idx_composite;

CREATE TABLE idx_position_v2 (
    k INTEGER PRIMARY KEY, resource_type TEXT NOT NULL, param TEXT NOT NULL,
    latitude REAL NOT NULL, longitude REAL NOT NULL,
    latitude_text TEXT NOT NULL, longitude_text TEXT NOT NULL
);
INSERT INTO idx_position_v2 (k, resource_type, param, latitude, longitude, latitude_text, longitude_text)
    SELECT r.rid * 1048576 + ROW_NUMBER() OVER (PARTITION BY r.rid ORDER BY x.rowid) - 1,
    x.resource_type, x.param, x.latitude, x.longitude, x.latitude_text, x.longitude_text
    FROM idx_position x JOIN resource r ON r.resource_type = x.resource_type AND r.id = x.resource_id;
DROP TABLE idx_position;
ALTER TABLE idx_position_v2 RENAME TO idx_position;
CREATE INDEX idx_position_value ON idx_position (resource_type, param, latitude, longitude);
"#,
    // 3: `_id` and `_lastUpdated` are answered from the `resource` row (its id and
    // last_updated columns), so their index rows only cost writes: one of them a
    // random-key insert per resource.
    r#"
DELETE FROM idx_token WHERE param = '_id';
DELETE FROM idx_date WHERE param = '_lastUpdated';
"#,
    // 4: the whole-resource text of `_content` and `_text` (long, random keys) leaves the
    // string value index: those searches match substrings, which the index cannot
    // narrow, so it only cost writes. The search SQL repeats the WHERE term to use it.
    r#"
DROP INDEX idx_string_value;
CREATE INDEX idx_string_value ON idx_string (resource_type, param, normalized)
    WHERE param NOT IN ('_content', '_text');
"#,
    // 5: rows of union parameters are no longer stored (searches read their sources', see
    // `index::is_union`; a test checks this list against the registry's), and only
    // references with a URL (absolute, canonical) enter the URL index: local ones, most
    // of them, have none.
    r#"
DELETE FROM idx_token WHERE resource_type = 'Observation'
    AND param IN ('combo-code', 'combo-data-absent-reason', 'combo-value-concept');
DELETE FROM idx_quantity WHERE resource_type = 'Observation' AND param = 'combo-value-quantity';
DELETE FROM idx_composite WHERE resource_type = 'Observation'
    AND param IN ('combo-code-value-concept', 'combo-code-value-quantity');
DROP INDEX idx_reference_url;
CREATE INDEX idx_reference_url ON idx_reference (resource_type, param, url) WHERE url IS NOT NULL;
"#,
    // 6: fewer index entries per reference, the most costly rows to write (their keys
    // are spread over all patients, so each lands on a page of its own):
    // - `also`: a filtered alias's value (Observation `patient`, the `subject` values
    //   that are Patients) is written as a mark on its source's identical row instead of
    //   a row of its own (see `index::stored_rows`). Rows written before stay as they
    //   are: searches read both forms.
    // - no reverse (target) index: reverse lookups (`_has`, `_revinclude`) know the
    //   source types and parameters, and probe the (type, param, target) index, which
    //   now also covers `also`.
    r#"
ALTER TABLE idx_reference ADD COLUMN also TEXT;
DROP INDEX idx_reference_reverse;
DROP INDEX idx_reference_target;
CREATE INDEX idx_reference_target ON idx_reference (resource_type, param, target_id, target_type, also);
"#,
    // 7: a quantity row enters one value index, not two (values are spread over their
    // range, so each entry costs a page write): the canonical index when it has a
    // canonical form, the (code, value) index when it has none. Searches by a UCUM
    // code compare canonical forms, falling back to code for rows without one; the
    // search SQL states which kind of row each branch wants.
    r#"
DROP INDEX idx_quantity_value;
CREATE INDEX idx_quantity_value ON idx_quantity (resource_type, param, code, low)
    WHERE canonical_unit IS NULL;
DROP INDEX idx_quantity_canonical;
CREATE INDEX idx_quantity_canonical ON idx_quantity (resource_type, param, canonical_unit, canonical_low)
    WHERE canonical_unit IS NOT NULL;
"#,
];

/// The union parameters migration 5 removes the rows of, by index table.
#[cfg(test)]
pub(crate) const MIGRATION_5_UNIONS: &[(&str, &str)] = &[
    ("idx_token", "combo-code"),
    ("idx_token", "combo-data-absent-reason"),
    ("idx_token", "combo-value-concept"),
    ("idx_quantity", "combo-value-quantity"),
    ("idx_composite", "combo-code-value-concept"),
    ("idx_composite", "combo-code-value-quantity"),
];

/// The WHERE term of the partial `idx_string_value` index (migration 4): a query must
/// contain it, exactly, for SQLite to use the index.
pub(crate) const STRING_VALUE_INDEX_TERM: &str = "param NOT IN ('_content', '_text')";

/// Index rows per resource and table: row keys are `rid * KEY_SPAN + n`, `n < KEY_SPAN`.
pub(crate) const KEY_SPAN: i64 = 1 << 20;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FhirStore, ReadOutcome, SearchPage};
    use rusqlite::Connection;
    use vigil_fhir::search::{SearchQuery, SearchRegistry};

    /// A database as schema version 1 left it: two resources and their index rows in
    /// the (type, id)-keyed layout.
    fn version_1_database(path: &std::path::Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            r#"
INSERT INTO schema_version VALUES (1);
INSERT INTO resource_version VALUES (1, 'Patient', 'a', 1, 1000, 0,
  '{"resourceType":"Patient","id":"a","meta":{"versionId":"1","lastUpdated":"1970-01-01T00:00:01Z"},"name":[{"family":"Ames"}]}');
INSERT INTO resource_version VALUES (2, 'Observation', 'o1', 1, 1000, 0,
  '{"resourceType":"Observation","id":"o1","meta":{"versionId":"1","lastUpdated":"1970-01-01T00:00:01Z"},"status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/a"}}');
INSERT INTO resource VALUES ('Patient', 'a', 1, 1000, 0, 1);
INSERT INTO resource VALUES ('Observation', 'o1', 1, 1000, 0, 2);
INSERT INTO idx_string (resource_type, resource_id, param, normalized, exact)
  VALUES ('Patient', 'a', 'name', 'ames', 'Ames'), ('Patient', 'a', 'family', 'ames', 'Ames');
INSERT INTO idx_token (resource_type, resource_id, param, system, code)
  VALUES ('Observation', 'o1', 'status', NULL, 'final'),
         ('Observation', 'o1', 'code', 'http://loinc.org', '8867-4'),
         ('Observation', 'o1', 'combo-code', 'http://loinc.org', '8867-4');
INSERT INTO idx_reference (resource_type, resource_id, param, kind, reference, target_type, target_id)
  VALUES ('Observation', 'o1', 'subject', 'local', 'Patient/a', 'Patient', 'a'),
         ('Observation', 'o1', 'patient', 'local', 'Patient/a', 'Patient', 'a');
"#,
        )
        .unwrap();
    }

    /// Migration 5 removes the rows of exactly the registry's union parameters.
    #[test]
    fn migration_5_names_the_union_parameters() {
        use vigil_fhir::search::SearchParamType as T;
        let reg = SearchRegistry::r4();
        let mut expected: Vec<(&str, &str)> = reg
            .union_parameters()
            .map(|(code, _)| {
                let table = match reg.param("Observation", code).map(|p| p.param_type()) {
                    Some(T::Token) => "idx_token",
                    Some(T::Quantity) => "idx_quantity",
                    Some(T::Composite) => "idx_composite",
                    other => panic!("{code}: {other:?}"),
                };
                (table, code)
            })
            .collect();
        expected.sort();
        let mut listed = MIGRATION_5_UNIONS.to_vec();
        listed.sort();
        assert_eq!(listed, expected);
        for (table, code) in MIGRATION_5_UNIONS {
            assert!(MIGRATIONS[4].contains(&format!("'{code}'")), "{code}");
            assert!(
                MIGRATIONS[4].contains(&format!("DELETE FROM {table} ")),
                "{table}"
            );
        }
    }

    #[test]
    fn version_1_databases_migrate_to_integer_keys() {
        let dir = std::env::temp_dir().join(format!("vigil-store-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v1.db");
        version_1_database(&path);
        let store = crate::SqliteStore::open(&path).unwrap();
        let reg = SearchRegistry::r4();
        let search = |rt: &str, q: &str| {
            let q = SearchQuery::parse(Some(rt), q, reg).unwrap();
            let r = store.search(&q, &SearchPage::default()).unwrap();
            r.matches.into_iter().map(|m| m.id).collect::<Vec<_>>()
        };
        assert_eq!(
            search(
                "Observation",
                "subject=Patient/a&code=http://loinc.org|8867-4"
            ),
            ["o1"]
        );
        assert_eq!(search("Observation", "status=final&_sort=code"), ["o1"]);
        assert_eq!(search("Patient", "name=am"), ["a"]);
        assert_eq!(
            search("Patient", "_has:Observation:subject:status=final"),
            ["a"]
        );
        assert_eq!(search("Observation", "combo-code=8867-4"), ["o1"]);
        // A `patient` row of its own, as written before migration 6, still answers.
        assert_eq!(search("Observation", "patient=Patient/a"), ["o1"]);
        assert_eq!(
            search("Patient", "_has:Observation:patient:code=8867-4"),
            ["a"]
        );
        let rows = store.index_values("Observation", "o1").unwrap();
        // The four migrated rows, plus `_id` and `_lastUpdated` from the resource row,
        // and `combo-code` from `code` (its own row is gone).
        assert_eq!(rows.len(), 7, "{rows:?}");
        assert_eq!(rows.iter().filter(|(p, _)| p == "combo-code").count(), 1);
        // Writes after the migration replace the migrated rows.
        let mut o1 = match store.read("Observation", "o1").unwrap() {
            ReadOutcome::Found(s) => (*s.resource).clone(),
            other => panic!("{other:?}"),
        };
        o1["status"] = serde_json::json!("amended");
        store.update("Observation", "o1", o1, Some(1)).unwrap();
        assert!(search("Observation", "status=final").is_empty());
        assert_eq!(
            search("Observation", "status=amended&subject=Patient/a"),
            ["o1"]
        );
        // Rewritten, its `patient` value is a mark on the `subject` row.
        assert_eq!(search("Observation", "patient=Patient/a"), ["o1"]);
        let rows = store.index_values("Observation", "o1").unwrap();
        let extracted = match store.read("Observation", "o1").unwrap() {
            ReadOutcome::Found(s) => crate::index::extract_rows(&s.resource).len(),
            other => panic!("{other:?}"),
        };
        assert_eq!(rows.len(), extracted, "{rows:?}");
        assert_eq!(rows.iter().filter(|(p, _)| p == "patient").count(), 1);
        store.close().unwrap();
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let combo: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM idx_token WHERE param = 'combo-code'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(combo, 0);
        let references: Vec<(String, Option<String>)> = conn
            .prepare("SELECT param, also FROM idx_reference ORDER BY k")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            references,
            [("subject".to_string(), Some("patient".to_string()))]
        );
        // The Patient kept rid 1 (order of `seq`), its two string rows keys 0 and 1.
        let keys: Vec<i64> = conn
            .prepare("SELECT k FROM idx_string WHERE resource_type = 'Patient' ORDER BY k")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(keys, [KEY_SPAN, KEY_SPAN + 1]);
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
