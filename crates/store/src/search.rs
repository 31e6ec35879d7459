//! Backend-independent parts of search execution: the opaque keyset cursor.
//!
//! A cursor names the position after the last match of a page: the values of its sort
//! keys and its write sequence (the final tie-breaker, so positions are total). It is
//! URL-safe base64 of a small JSON document, `{"v":1,"h":<sort signature>,"k":[..],
//! "s":<seq>}`. The signature is a hash of the `_sort` specification: a cursor taken
//! from a query with another sort cannot be applied (its values would be compared with
//! the wrong keys). Everything in a cursor is validated when it is read, so a tampered
//! cursor is a clean [`StoreError::Invalid`].

use crate::api::{Result, StoreError};
use serde_json::{json, Value};
use vigil_fhir::search::SearchQuery;

/// One sort-key value of a cursor position.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    /// The resource has no value for the key.
    Null,
    /// An integer key (dates as milliseconds, `_lastUpdated`).
    Int(i64),
    /// A numeric key (numbers, quantities).
    Real(f64),
    /// A text key (strings, codes, references, `_id`).
    Text(String),
}

/// A position in a sorted result: after the row with these key values and sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// The sort-key values, one per `_sort` key.
    pub keys: Vec<KeyValue>,
    /// The write sequence of the row (the last tie-breaker).
    pub seq: i64,
}

/// A hash of the query's `_sort` specification (FNV-1a), so cursors are only applied
/// to queries sorting the same way.
pub fn sort_signature(query: &SearchQuery) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for k in &query.sort {
        eat(if k.descending { b"-" } else { b"+" });
        eat(k.param.code.as_bytes());
        eat(b",");
    }
    // Keep the value in JSON's exact integer range.
    h & ((1 << 53) - 1)
}

impl Cursor {
    /// The opaque text form.
    pub fn encode(&self, signature: u64) -> String {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| match k {
                KeyValue::Null => Value::Null,
                KeyValue::Int(i) => json!(i),
                // Reals are tagged so they come back as reals (1.0 would read as 1).
                KeyValue::Real(f) => json!({ "r": f }),
                KeyValue::Text(s) => json!(s),
            })
            .collect();
        let doc = json!({"v": 1, "h": signature, "k": keys, "s": self.seq});
        base64url_encode(doc.to_string().as_bytes())
    }

    /// Read a cursor produced by [`Cursor::encode`] for a query with this signature and
    /// number of sort keys.
    pub fn decode(text: &str, signature: u64, keys: usize) -> Result<Cursor> {
        let bad = || StoreError::Invalid("invalid search cursor".into());
        let bytes = base64url_decode(text).ok_or_else(bad)?;
        let doc: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if doc.get("v").and_then(Value::as_u64) != Some(1)
            || doc.get("h").and_then(Value::as_u64) != Some(signature)
        {
            return Err(bad());
        }
        let seq = doc.get("s").and_then(Value::as_i64).ok_or_else(bad)?;
        let list = doc.get("k").and_then(Value::as_array).ok_or_else(bad)?;
        if list.len() != keys {
            return Err(bad());
        }
        let keys = list
            .iter()
            .map(|k| match k {
                Value::Null => Some(KeyValue::Null),
                Value::String(s) => Some(KeyValue::Text(s.clone())),
                Value::Number(n) => n.as_i64().map(KeyValue::Int),
                Value::Object(o) if o.len() == 1 => o
                    .get("r")
                    .and_then(Value::as_f64)
                    .filter(|f| f.is_finite())
                    .map(KeyValue::Real),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        Ok(Cursor { keys, seq })
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// URL-safe base64 without padding (RFC 4648 §5).
fn base64url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(B64[idx as usize]));
        }
    }
    out
}

/// The inverse of [`base64url_encode`]; `None` for anything it would not produce.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let val = |c: u8| B64.iter().position(|&x| x == c).map(|p| p as u32);
    let bytes = text.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let produced = chunk.len() - 1;
        for i in 0..produced {
            out.push(((n >> (16 - 8 * i)) & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let e = base64url_encode(&data);
            assert!(!e.contains(['+', '/', '=']));
            assert_eq!(base64url_decode(&e), Some(data));
        }
        assert_eq!(base64url_decode("a"), None);
        assert_eq!(base64url_decode("a*bc"), None);
    }

    #[test]
    fn cursor_round_trip_and_validation() {
        let c = Cursor {
            keys: vec![
                KeyValue::Null,
                KeyValue::Int(-5),
                KeyValue::Real(1.0),
                KeyValue::Text("x\"y".into()),
            ],
            seq: 42,
        };
        let t = c.encode(7);
        assert_eq!(Cursor::decode(&t, 7, 4), Ok(c));
        assert!(Cursor::decode(&t, 8, 4).is_err());
        assert!(Cursor::decode(&t, 7, 3).is_err());
        assert!(Cursor::decode("garbage!", 7, 4).is_err());
        assert!(Cursor::decode(&base64url_encode(b"{\"v\":1}"), 7, 0).is_err());
        assert!(Cursor::decode("", 7, 0).is_err());
    }
}
