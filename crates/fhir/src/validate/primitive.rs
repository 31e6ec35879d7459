//! Checks of primitive values: JSON representation, lexical form, and the semantic rules the
//! definitions' regexes do not express.

use super::outcome::IssueType;
use regex::Regex;
use serde_json::Value;

/// FHIR strings are limited to 1 MB (the specification's limit for `string`).
const MAX_STRING_BYTES: usize = 1024 * 1024;

/// A problem with a primitive value: its kind and a message.
pub(crate) type Problem = (IssueType, String);

/// Check one primitive value (never null; the caller handles nulls) of the named type.
pub(crate) fn check(type_name: &str, regex: Option<&Regex>, value: &Value) -> Result<(), Problem> {
    match type_name {
        "boolean" => match value {
            Value::Bool(_) => Ok(()),
            other => Err(json_kind("boolean", "a JSON boolean", other)),
        },
        "integer" | "positiveInt" | "unsignedInt" | "decimal" => {
            let Value::Number(n) = value else {
                return Err(json_kind(type_name, "a JSON number", value));
            };
            let text = n.to_string();
            if let Some(re) = regex {
                if !re.is_match(&text) {
                    return Err(invalid(type_name, &text));
                }
            }
            check_integer_range(type_name, &text)
        }
        _ => {
            let Value::String(s) = value else {
                return Err(json_kind(type_name, "a JSON string", value));
            };
            check_string(type_name, regex, s)
        }
    }
}

fn json_kind(type_name: &str, expected: &str, got: &Value) -> Problem {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    (
        IssueType::Structure,
        format!("A {type_name} value must be {expected}, found {got}"),
    )
}

fn invalid(type_name: &str, text: &str) -> Problem {
    let shown: String = text.chars().take(64).collect();
    let more = if shown.len() < text.len() { "..." } else { "" };
    (
        IssueType::Value,
        format!("'{shown}{more}' is not a valid {type_name}"),
    )
}

fn check_integer_range(type_name: &str, text: &str) -> Result<(), Problem> {
    let (min, max): (i64, i64) = match type_name {
        "integer" => (i32::MIN.into(), i32::MAX.into()),
        "positiveInt" => (1, i32::MAX.into()),
        "unsignedInt" => (0, i32::MAX.into()),
        _ => return Ok(()),
    };
    match text.parse::<i64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(()),
        _ => Err((
            IssueType::Value,
            format!("{text} is out of range for {type_name} ({min}..{max})"),
        )),
    }
}

fn check_string(type_name: &str, regex: Option<&Regex>, s: &str) -> Result<(), Problem> {
    if s.is_empty() {
        return Err((
            IssueType::Value,
            format!("A {type_name} value must not be an empty string"),
        ));
    }
    if s.len() > MAX_STRING_BYTES {
        return Err((
            IssueType::Value,
            format!("A {type_name} value must not exceed 1 MB"),
        ));
    }
    match type_name {
        "id" if s.len() > 64 => {
            return Err((
                IssueType::Value,
                format!("An id must be at most 64 characters, found {}", s.len()),
            ));
        }
        "xhtml" => return check_xhtml(s),
        _ => {}
    }
    if let Some(re) = regex {
        if !re.is_match(s) {
            return Err(invalid(type_name, s));
        }
    }
    match type_name {
        "date" | "dateTime" | "instant" => check_calendar(type_name, s),
        "base64Binary" => check_base64(s),
        _ => Ok(()),
    }
}

/// The lexical regexes allow the 31st of every month and the 29th of February of any year.
fn check_calendar(type_name: &str, s: &str) -> Result<(), Problem> {
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|p| p.parse::<u32>().ok());
    let (Some(year), Some(month), Some(day)) = (num(0..4), num(5..7), num(8..10)) else {
        // Year or year-month precision: the regex has checked them.
        return Ok(());
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day > days {
        return Err((
            IssueType::Value,
            format!("'{s}' is not a valid {type_name}: {year}-{month:02} has {days} days"),
        ));
    }
    Ok(())
}

/// The regex accepts any run of 4-character groups; padding may only end the data.
fn check_base64(s: &str) -> Result<(), Problem> {
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let pad = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if pad > 2 || bytes[..bytes.len() - pad].contains(&b'=') {
        return Err((
            IssueType::Value,
            "base64Binary value has misplaced '=' padding".to_string(),
        ));
    }
    Ok(())
}

/// Narrative must be an XHTML `div` in the XHTML namespace (its content is checked by the
/// txt-1/txt-2 invariants).
fn check_xhtml(s: &str) -> Result<(), Problem> {
    let t = s.trim_start();
    let open_end = t.find('>').unwrap_or(t.len());
    let open = &t[..open_end];
    if !t.starts_with("<div")
        || !matches!(
            open.as_bytes().get(4),
            Some(b' ' | b'\t' | b'\n' | b'\r' | b'>' | b'/') | None
        )
    {
        return Err((
            IssueType::Value,
            "Narrative must be an XHTML <div> element".to_string(),
        ));
    }
    if !open.contains("xmlns=\"http://www.w3.org/1999/xhtml\"")
        && !open.contains("xmlns='http://www.w3.org/1999/xhtml'")
    {
        return Err((
            IssueType::Value,
            "Narrative <div> must declare the XHTML namespace (xmlns=\"http://www.w3.org/1999/xhtml\")".to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::plan::anchored;
    use serde_json::json;

    fn re(type_name: &str) -> Option<Regex> {
        let def = vigil_fhir_model::Model::r4().type_def(type_name)?;
        Regex::new(&anchored(def.regex.as_deref()?)).ok()
    }

    fn ok(type_name: &str, v: Value) -> bool {
        check(type_name, re(type_name).as_ref(), &v).is_ok()
    }

    #[test]
    fn dates() {
        assert!(ok("date", json!("2024-02-29")));
        assert!(!ok("date", json!("2023-02-29")));
        assert!(!ok("date", json!("2023-04-31")));
        assert!(ok("date", json!("2023-04")));
        assert!(ok("date", json!("2023")));
        assert!(!ok("date", json!("2023-4-1")));
        assert!(ok("dateTime", json!("2023-04-01T10:00:00+02:00")));
        assert!(!ok("dateTime", json!("2023-04-01T10:00:00")));
        assert!(!ok("instant", json!("2023-04-01T10:00:00")));
        assert!(!ok("instant", json!("2023-04-01")));
        assert!(ok("instant", json!("2023-04-01T10:00:00.123Z")));
        assert!(ok("time", json!("23:59:59")));
        assert!(!ok("time", json!("24:00:00")));
    }

    #[test]
    fn numbers() {
        let n = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
        assert!(ok("decimal", n("1.50")));
        assert!(ok("decimal", n("-0.5e3")));
        assert!(!ok("decimal", json!("1.5")));
        assert!(ok("integer", n("-2147483648")));
        assert!(!ok("integer", n("2147483648")));
        assert!(!ok("integer", n("1.0")));
        assert!(!ok("positiveInt", n("0")));
        assert!(ok("unsignedInt", n("0")));
        assert!(!ok("unsignedInt", n("-1")));
        assert!(ok("boolean", json!(true)));
        assert!(!ok("boolean", json!("true")));
    }

    #[test]
    fn strings() {
        assert!(!ok("string", json!("")));
        assert!(!ok("uri", json!("")));
        assert!(ok("string", json!(" padded ")));
        assert!(!ok("code", json!(" padded")));
        assert!(!ok("id", json!("a".repeat(65))));
        assert!(!ok("id", json!("a_b")));
        assert!(ok("id", json!("a-b.c")));
        assert!(ok("base64Binary", json!("aGVsbG8=")));
        assert!(!ok("base64Binary", json!("aG=sbG8=")));
        assert!(!ok("base64Binary", json!("aGVsbG8")));
        assert!(ok(
            "xhtml",
            json!("<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>")
        ));
        assert!(!ok("xhtml", json!("<div>x</div>")));
        assert!(!ok(
            "xhtml",
            json!("<p xmlns=\"http://www.w3.org/1999/xhtml\">x</p>")
        ));
        assert!(ok(
            "uuid",
            json!("urn:uuid:c757873d-ec9a-4326-a141-556f43239520")
        ));
        assert!(!ok("oid", json!("urn:oid:1.2.03")));
    }
}
