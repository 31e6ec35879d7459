//! Writing versions with their `idx_*` rows in one statement, and reading rows back.
//!
//! The versions of a request are queued in a [`Batch`] and written by one statement
//! (per 500 versions): data-modifying CTEs insert the versions, upsert the `resource` rows,
//! delete the previous index rows and insert the new ones, everything from column
//! arrays (`unnest`), one array per column. Each statement costs a fixed overhead
//! (opening some forty tables and indexes), so a bundle of creates shares one. All
//! CTEs of a statement see the same snapshot, so the deletes never see the rows
//! inserted beside them; a request names each resource once, so no row is written
//! twice by one statement.

use crate::schema::INDEX_TABLES;
use postgres::types::ToSql;
use postgres::GenericClient;
use std::borrow::Cow;
use std::sync::OnceLock;
use vigil_fhir::search::{
    CanonicalQuantity, Comparator, DateValue, IndexValue, NumberValue, PositionValue,
    QuantityValue, ReferenceValue, StringValue, TokenValue, UriValue,
};
use vigil_store::index::*;
use vigil_store::OwnedIndexValue;

/// The SQL type of an index column as passed in its array.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ty {
    Text,
    Int,
    Float,
    /// Passed as text, stored as `jsonb`.
    Json,
}

use Ty::*;

/// The columns of each index table after (`resource_type`, `resource_id`), in the order
/// [`Rows`] fills them; the first is always `param`.
const COLUMNS: &[(&str, &[(&str, Ty)])] = &[
    (
        "idx_token",
        &[
            ("param", Text),
            ("system", Text),
            ("code", Text),
            ("text", Text),
            ("identifier_type", Json),
        ],
    ),
    (
        "idx_string",
        &[("param", Text), ("normalized", Text), ("exact", Text)],
    ),
    (
        "idx_date",
        &[
            ("param", Text),
            ("low", Int),
            ("high", Int),
            ("precision", Int),
        ],
    ),
    (
        "idx_number",
        &[
            ("param", Text),
            ("value", Float),
            ("low", Float),
            ("high", Float),
            ("value_text", Text),
            ("low_text", Text),
            ("high_text", Text),
        ],
    ),
    (
        "idx_quantity",
        &[
            ("param", Text),
            ("value", Float),
            ("low", Float),
            ("high", Float),
            ("value_text", Text),
            ("low_text", Text),
            ("high_text", Text),
            ("comparator", Text),
            ("system", Text),
            ("code", Text),
            ("unit", Text),
            ("canonical_value", Float),
            ("canonical_low", Float),
            ("canonical_high", Float),
            ("canonical_value_text", Text),
            ("canonical_low_text", Text),
            ("canonical_high_text", Text),
            ("canonical_unit", Text),
        ],
    ),
    (
        "idx_reference",
        &[
            ("param", Text),
            ("kind", Text),
            ("reference", Text),
            ("target_type", Text),
            ("target_id", Text),
            ("target_version", Text),
            ("base_url", Text),
            ("url", Text),
            ("display", Text),
            ("identifier_system", Text),
            ("identifier_value", Text),
            ("identifier_text", Text),
            ("identifier_type", Json),
        ],
    ),
    (
        "idx_uri",
        &[("param", Text), ("uri", Text), ("version", Text)],
    ),
    ("idx_composite", &[("param", Text), ("value", Json)]),
    (
        "idx_position",
        &[
            ("param", Text),
            ("latitude", Float),
            ("longitude", Float),
            ("latitude_text", Text),
            ("longitude_text", Text),
        ],
    ),
];

/// Parameters of the write statement before the index column arrays: the version
/// arrays (type, id, version, last_updated, deleted, body) and the (type, id) arrays of
/// the resources whose previous index rows are removed.
const FIXED_PARAMS: usize = 8;

/// The write statement (see the module documentation); built once.
pub(crate) fn write_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let mut s = String::from(
            "WITH v AS (INSERT INTO resource_version (resource_type, id, version, last_updated, \
             deleted, body) SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], \
             $5::bool[], $6::text[]) RETURNING seq, resource_type, id, version, last_updated, \
             deleted), \
             r AS (INSERT INTO resource (resource_type, id, version, last_updated, deleted, seq) \
             SELECT resource_type, id, version, last_updated, deleted, seq FROM v \
             ON CONFLICT (resource_type, id) DO UPDATE SET version = EXCLUDED.version, \
             last_updated = EXCLUDED.last_updated, deleted = EXCLUDED.deleted, \
             seq = EXCLUDED.seq RETURNING seq)",
        );
        for (i, table) in INDEX_TABLES.iter().enumerate() {
            s.push_str(&format!(
                ", d{i} AS (DELETE FROM {table} x USING unnest($7::text[], $8::text[]) AS d(rt, id) \
                 WHERE x.resource_type = d.rt AND x.resource_id = d.id)"
            ));
        }
        let mut n = FIXED_PARAMS;
        for (i, (table, cols)) in COLUMNS.iter().enumerate() {
            let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
            let mut select = vec!["u.rt".to_string(), "u.id".to_string()];
            let mut arrays = vec![format!("${}::text[]", n + 1), format!("${}::text[]", n + 2)];
            n += 2;
            for (j, (_, ty)) in cols.iter().enumerate() {
                n += 1;
                let (array, value) = match ty {
                    Text => ("text[]", format!("u.c{j}")),
                    Int => ("int8[]", format!("u.c{j}")),
                    Float => ("float8[]", format!("u.c{j}")),
                    Json => ("text[]", format!("u.c{j}::jsonb")),
                };
                arrays.push(format!("${n}::{array}"));
                select.push(value);
            }
            let aliases: Vec<String> = (0..cols.len()).map(|j| format!("c{j}")).collect();
            s.push_str(&format!(
                ", i{i} AS (INSERT INTO {table} (resource_type, resource_id, {}) SELECT {} \
                 FROM unnest({}) AS u(rt, id, {}))",
                names.join(", "),
                select.join(", "),
                arrays.join(", "),
                aliases.join(", ")
            ));
        }
        s.push_str(" SELECT count(*) FROM r");
        s
    })
}

/// One column's values.
enum Col {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
}

/// One cell of a row being added.
enum Cell {
    T(Option<String>),
    I(Option<i64>),
    F(Option<f64>),
}

fn t(s: Option<&str>) -> Cell {
    Cell::T(s.map(str::to_string))
}

/// Versions and their index rows waiting to be written by one statement, as column
/// arrays.
#[derive(Default)]
pub(crate) struct Batch {
    rt: Vec<String>,
    id: Vec<String>,
    version: Vec<i64>,
    last_updated: Vec<i64>,
    deleted: Vec<bool>,
    body: Vec<Option<String>>,
    /// Resources whose previous index rows are removed.
    clear_rt: Vec<String>,
    clear_id: Vec<String>,
    rows: Rows,
}

impl Batch {
    /// Versions queued.
    pub(crate) fn len(&self) -> usize {
        self.rt.len()
    }

    /// Queue a version (`body` None: a tombstone) with the index rows of its resource;
    /// `had_rows`: the previous version's rows are to be removed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        rt: &str,
        id: &str,
        version: i64,
        last_updated: i64,
        body: Option<String>,
        had_rows: bool,
        values: &[(&str, IndexValue<'_>)],
    ) {
        self.rt.push(rt.to_string());
        self.id.push(id.to_string());
        self.version.push(version);
        self.last_updated.push(last_updated);
        self.deleted.push(body.is_none());
        self.body.push(body);
        if had_rows {
            self.clear_rt.push(rt.to_string());
            self.clear_id.push(id.to_string());
        }
        for (param, value) in values {
            self.rows.add(rt, id, param, value);
        }
    }

    /// The statement's parameters, in the order of [`write_sql`].
    pub(crate) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut p: Vec<&(dyn ToSql + Sync)> = vec![
            &self.rt,
            &self.id,
            &self.version,
            &self.last_updated,
            &self.deleted,
            &self.body,
            &self.clear_rt,
            &self.clear_id,
        ];
        p.extend(self.rows.params());
        p
    }
}

/// Index rows as column arrays: per table, (type, id) and then its [`COLUMNS`].
struct Rows {
    tables: Vec<Vec<Col>>,
}

impl Default for Rows {
    fn default() -> Rows {
        Rows {
            tables: COLUMNS
                .iter()
                .map(|(_, cols)| {
                    [Text, Text]
                        .iter()
                        .chain(cols.iter().map(|(_, ty)| ty))
                        .map(|ty| match ty {
                            Text | Json => Col::Text(Vec::new()),
                            Int => Col::Int(Vec::new()),
                            Float => Col::Float(Vec::new()),
                        })
                        .collect()
                })
                .collect(),
        }
    }
}

impl Rows {
    fn push(&mut self, table: usize, cells: Vec<Cell>) {
        for (col, cell) in self.tables[table][2..].iter_mut().zip(cells) {
            match (col, cell) {
                (Col::Text(v), Cell::T(x)) => v.push(x),
                (Col::Int(v), Cell::I(x)) => v.push(x),
                (Col::Float(v), Cell::F(x)) => v.push(x),
                // The cell lists below follow COLUMNS; a unit test checks every kind.
                _ => debug_assert!(false, "index cell of the wrong type for {table}"),
            }
        }
    }

    fn add(&mut self, rt: &str, id: &str, param: &str, value: &IndexValue<'_>) {
        let p = Cell::T(Some(param.to_string()));
        let table = match value {
            IndexValue::Token(_) => 0,
            IndexValue::String(_) => 1,
            IndexValue::Date(_) => 2,
            IndexValue::Number(_) => 3,
            IndexValue::Quantity(_) => 4,
            IndexValue::Reference(_) => 5,
            IndexValue::Uri(_) => 6,
            IndexValue::Composite(_) => 7,
            IndexValue::Position(_) => 8,
        };
        for (col, key) in self.tables[table].iter_mut().zip([rt, id]) {
            if let Col::Text(v) = col {
                v.push(Some(key.to_string()));
            }
        }
        match value {
            IndexValue::Token(tk) => self.push(
                0,
                vec![
                    p,
                    t(tk.system.as_deref()),
                    t(tk.code.as_deref()),
                    t(tk.text.as_deref()),
                    Cell::T(codings_json(&tk.identifier_type)),
                ],
            ),
            IndexValue::String(s) => {
                self.push(1, vec![p, t(Some(&s.normalized)), t(Some(&s.exact))])
            }
            IndexValue::Date(d) => self.push(
                2,
                vec![
                    p,
                    Cell::I(d.low),
                    Cell::I(d.high),
                    Cell::I(d.precision.map(precision_code)),
                ],
            ),
            IndexValue::Number(n) => self.push(
                3,
                vec![
                    p,
                    Cell::F(dec_f64(n.value)),
                    Cell::F(dec_f64(n.low)),
                    Cell::F(dec_f64(n.high)),
                    Cell::T(dec_text(n.value)),
                    Cell::T(dec_text(n.low)),
                    Cell::T(dec_text(n.high)),
                ],
            ),
            IndexValue::Quantity(q) => {
                let c = q.canonical.as_ref();
                self.push(
                    4,
                    vec![
                        p,
                        Cell::F(dec_f64(q.value)),
                        Cell::F(dec_f64(q.low)),
                        Cell::F(dec_f64(q.high)),
                        Cell::T(dec_text(q.value)),
                        Cell::T(dec_text(q.low)),
                        Cell::T(dec_text(q.high)),
                        t(q.comparator.map(comparator_code)),
                        t(q.system.as_deref()),
                        t(q.code.as_deref()),
                        t(q.unit.as_deref()),
                        Cell::F(dec_f64(c.and_then(|c| c.value))),
                        Cell::F(dec_f64(c.and_then(|c| c.low))),
                        Cell::F(dec_f64(c.and_then(|c| c.high))),
                        Cell::T(dec_text(c.and_then(|c| c.value))),
                        Cell::T(dec_text(c.and_then(|c| c.low))),
                        Cell::T(dec_text(c.and_then(|c| c.high))),
                        t(c.map(|c| c.unit.as_ref())),
                    ],
                );
            }
            IndexValue::Reference(r) => {
                let i = r.identifier.as_ref();
                self.push(
                    5,
                    vec![
                        p,
                        t(Some(kind_code(r.kind))),
                        t(r.reference.as_deref()),
                        t(r.resource_type.as_deref()),
                        t(r.id.as_deref()),
                        t(r.version.as_deref()),
                        t(r.base_url.as_deref()),
                        t(r.url.as_deref()),
                        t(r.display.as_deref()),
                        t(i.and_then(|i| i.system.as_deref())),
                        t(i.and_then(|i| i.code.as_deref())),
                        t(i.and_then(|i| i.text.as_deref())),
                        Cell::T(i.and_then(|i| codings_json(&i.identifier_type))),
                    ],
                );
            }
            IndexValue::Uri(u) => self.push(6, vec![p, t(Some(&u.uri)), t(u.version.as_deref())]),
            IndexValue::Composite(_) => {
                self.push(7, vec![p, Cell::T(Some(value_json_text(value)))])
            }
            IndexValue::Position(pos) => self.push(
                8,
                vec![
                    p,
                    Cell::F(dec_f64(Some(pos.latitude))),
                    Cell::F(dec_f64(Some(pos.longitude))),
                    Cell::T(Some(pos.latitude.to_string())),
                    Cell::T(Some(pos.longitude.to_string())),
                ],
            ),
        }
    }

    /// The column arrays as statement parameters, after the fixed ones.
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.tables
            .iter()
            .flatten()
            .map(|c| match c {
                Col::Text(v) => v as &(dyn ToSql + Sync),
                Col::Int(v) => v as &(dyn ToSql + Sync),
                Col::Float(v) => v as &(dyn ToSql + Sync),
            })
            .collect()
    }
}

fn cow(r: &postgres::Row, i: usize) -> Result<Option<Cow<'static, str>>, postgres::Error> {
    Ok(r.try_get::<_, Option<String>>(i)?.map(Cow::Owned))
}

fn dec(r: &postgres::Row, i: usize) -> Result<Option<rust_decimal::Decimal>, postgres::Error> {
    Ok(parse_dec(r.try_get::<_, Option<String>>(i)?.as_deref()))
}

type RowFn = dyn Fn(&postgres::Row) -> Result<Option<OwnedIndexValue>, postgres::Error>;

/// All index rows of a resource, read back into values. Rows that do not decode (only
/// possible if the database was edited by hand) are left out.
pub(crate) fn read_rows(
    client: &mut impl GenericClient,
    rt: &str,
    id: &str,
) -> Result<Vec<(String, OwnedIndexValue)>, postgres::Error> {
    let mut out = Vec::new();
    let mut q = |cols: &str, table: &str, f: &RowFn| -> Result<(), postgres::Error> {
        let sql = format!(
            "SELECT param, {cols} FROM {table} WHERE resource_type = $1::text \
             AND resource_id = $2::text"
        );
        for row in client.query(&sql, &[&rt, &id])? {
            if let Some(v) = f(&row)? {
                out.push((row.try_get::<_, String>(0)?, v));
            }
        }
        Ok(())
    };
    q(
        "system, code, text, identifier_type::text",
        "idx_token",
        &|r| {
            Ok(Some(IndexValue::Token(TokenValue {
                system: cow(r, 1)?,
                code: cow(r, 2)?,
                text: cow(r, 3)?,
                identifier_type: codings_from_json(r.try_get::<_, Option<String>>(4)?.as_deref()),
            })))
        },
    )?;
    q("normalized, exact", "idx_string", &|r| {
        Ok(Some(IndexValue::String(StringValue {
            normalized: Cow::Owned(r.try_get(1)?),
            exact: Cow::Owned(r.try_get(2)?),
        })))
    })?;
    q("low, high, precision", "idx_date", &|r| {
        Ok(Some(IndexValue::Date(DateValue {
            low: r.try_get(1)?,
            high: r.try_get(2)?,
            precision: r
                .try_get::<_, Option<i64>>(3)?
                .and_then(precision_from_code),
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
            let canonical = match r.try_get::<_, Option<String>>(11)? {
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
                    .try_get::<_, Option<String>>(4)?
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
         identifier_system, identifier_value, identifier_text, identifier_type::text",
        "idx_reference",
        &|r| {
            let (is, iv, it) = (cow(r, 9)?, cow(r, 10)?, cow(r, 11)?);
            let itype = r.try_get::<_, Option<String>>(12)?;
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
                kind: kind_from_code(&r.try_get::<_, String>(1)?),
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
            uri: Cow::Owned(r.try_get(1)?),
            version: cow(r, 2)?,
        })))
    })?;
    q("value::text", "idx_composite", &|r| {
        Ok(serde_json::from_str(&r.try_get::<_, String>(1)?)
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of value fills each column of its table exactly once (the cell lists
    /// follow `COLUMNS`), and the statement numbers one parameter per column.
    #[test]
    fn rows_follow_the_column_spec() {
        let obs = serde_json::json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 120.50, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}],
            "effectiveDateTime": "2024-01-02T03:04:05Z",
            "subject": {"reference": "Patient/p1"}});
        let loc = serde_json::json!({"resourceType": "Location", "name": "Ward",
            "position": {"latitude": 52.52, "longitude": 13.405}});
        let risk = serde_json::json!({"resourceType": "RiskAssessment", "status": "final",
            "subject": {"reference": "Patient/p1"}, "prediction": [{"probabilityDecimal": 0.25}]});
        let vs = serde_json::json!({"resourceType": "ValueSet", "status": "active",
            "url": "http://example.org/vs"});
        let mut filled = vec![false; COLUMNS.len()];
        for r in [&obs, &loc, &risk, &vs] {
            let values = extract_rows(r);
            let mut rows = Rows::default();
            for (param, value) in &values {
                rows.add("T", "i", param, value);
            }
            for (i, cols) in rows.tables.iter().enumerate() {
                let lens: Vec<usize> = cols
                    .iter()
                    .map(|c| match c {
                        Col::Text(v) => v.len(),
                        Col::Int(v) => v.len(),
                        Col::Float(v) => v.len(),
                    })
                    .collect();
                assert!(lens.windows(2).all(|w| w[0] == w[1]), "{}", COLUMNS[i].0);
                filled[i] |= lens[0] > 0;
            }
        }
        assert!(filled.iter().all(|f| *f), "{filled:?}");
        let columns: usize = COLUMNS.iter().map(|(_, c)| c.len() + 2).sum();
        assert_eq!(Batch::default().params().len(), FIXED_PARAMS + columns);
        let last = format!("${}::", FIXED_PARAMS + columns);
        assert!(write_sql().contains(&last));
        assert!(!write_sql().contains(&format!("${}::", FIXED_PARAMS + columns + 1)));
    }
}
