//! HTTP details of the FHIR API: content negotiation, `Prefer`, ETags, dates, and
//! building `application/fhir+json` responses.

use crate::error::ApiError;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;
use vigil_store::Stored;

/// The media type of every body we produce.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// A response with a FHIR JSON body.
pub fn fhir_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// A FHIR JSON response serialized from any `Serialize` (no intermediate `Value`).
pub fn fhir_response_from<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
            resp
        }
        Err(e) => {
            use axum::response::IntoResponse;
            crate::error::ApiError::Internal(format!("serializing the response: {e}"))
                .into_response()
        }
    }
}

/// A header value as text (`None` when absent or not visible ASCII).
pub fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a media type (without parameters) is one of the JSON forms we speak.
fn is_json_type(mt: &str) -> bool {
    matches!(
        mt,
        "application/fhir+json" | "application/json" | "json" | "application/json+fhir"
    )
}

/// Check `_format` and `Accept`: JSON (or a wildcard) must be acceptable, else 406.
pub fn check_accept(headers: &HeaderMap, format: Option<&str>) -> Result<(), ApiError> {
    if let Some(f) = format {
        let f = f.split(';').next().unwrap_or_default().trim();
        if is_json_type(f) {
            return Ok(());
        }
        return Err(ApiError::NotAcceptable(format!(
            "_format={f} is not supported: this server speaks application/fhir+json only"
        )));
    }
    let Some(accept) = header_str(headers, "accept") else {
        return Ok(());
    };
    let ok = accept.split(',').any(|part| {
        let mt = part.split(';').next().unwrap_or_default().trim();
        mt.is_empty() || mt == "*/*" || mt == "application/*" || is_json_type(mt)
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::NotAcceptable(format!(
            "Accept: {accept} is not supported: this server speaks application/fhir+json only"
        )))
    }
}

/// The body's media type (lowercase, without parameters), if given.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    header_str(headers, "content-type").map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    })
}

/// Check that a resource body is JSON (415 otherwise). An absent Content-Type is read as
/// FHIR JSON, the only format we speak.
pub fn check_json_body(headers: &HeaderMap) -> Result<(), ApiError> {
    match content_type(headers) {
        None => Ok(()),
        Some(ct) if is_json_type(&ct) => Ok(()),
        Some(ct) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {ct} is not supported: send application/fhir+json"
        ))),
    }
}

/// Parse a body as a JSON resource (an object with a `resourceType`).
pub fn parse_resource(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    }
    if v.get("resourceType").and_then(Value::as_str).is_none() {
        return Err(ApiError::BadRequest {
            message: "the body has no resourceType".into(),
            expression: Some("resourceType".into()),
        });
    }
    Ok(v)
}

/// `Prefer: return=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnPref {
    /// `return=minimal`: no body.
    Minimal,
    /// `return=representation` (our default): the resource.
    #[default]
    Representation,
    /// `return=OperationOutcome`: an outcome describing what happened.
    OperationOutcome,
}

/// The parts of `Prefer` this server honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prefer {
    /// `return=`.
    pub ret: ReturnPref,
    /// `handling=strict`.
    pub strict: bool,
    /// `respond-async`.
    pub respond_async: bool,
}

impl Prefer {
    /// From the request's `Prefer` headers (several, or comma-separated).
    pub fn from_headers(headers: &HeaderMap) -> Prefer {
        let mut p = Prefer::default();
        for v in headers.get_all("prefer").iter() {
            let Ok(v) = v.to_str() else { continue };
            for token in v.split([',', ';']) {
                let token = token.trim();
                let (name, value) = match token.split_once('=') {
                    Some((n, v)) => (n.trim(), v.trim().trim_matches('"')),
                    None => (token, ""),
                };
                match (name.to_ascii_lowercase().as_str(), value) {
                    ("return", "minimal") => p.ret = ReturnPref::Minimal,
                    ("return", "representation") => p.ret = ReturnPref::Representation,
                    ("return", "OperationOutcome") => p.ret = ReturnPref::OperationOutcome,
                    ("handling", "strict") => p.strict = true,
                    ("handling", "lenient") => p.strict = false,
                    ("respond-async", _) => p.respond_async = true,
                    _ => {}
                }
            }
        }
        p
    }
}

/// A version from an ETag (`W/"3"`, `"3"`, or `3` as some clients send).
pub fn parse_etag(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    let t = t.trim_matches('"');
    t.parse().ok()
}

/// `If-Match` as a version; 400 when present but not a version ETag.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match header_str(headers, "if-match") {
        None => Ok(None),
        Some(v) => parse_etag(v).map(Some).ok_or_else(|| ApiError::BadRequest {
            message: format!("If-Match {v:?} is not a version ETag like W/\"3\""),
            expression: Some("If-Match".into()),
        }),
    }
}

/// `W/"3"`.
pub fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for `Last-Modified`.
pub fn http_date(ms: i64) -> String {
    let text = vigil_store::format_rfc3339(ms);
    // 2024-05-01T12:00:00.123Z
    let (y, m, d) = (&text[0..4], &text[5..7], &text[8..10]);
    let time = &text[11..19];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let month = m
        .parse::<usize>()
        .ok()
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .copied()
        .unwrap_or("Jan");
    let weekday = DAYS[ms.div_euclid(86_400_000).rem_euclid(7) as usize];
    format!("{weekday}, {d} {month} {y} {time} GMT")
}

/// Set `ETag`, `Last-Modified` and (for writes) `Location` for a stored version.
pub fn version_headers(resp: &mut Response, stored: &Stored, location: Option<&str>) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag(stored.version)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(stored.last_updated)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Some(loc) = location {
        if let Ok(v) = HeaderValue::from_str(loc) {
            h.insert(header::LOCATION, v);
        }
    }
}

/// An informational OperationOutcome (for `Prefer: return=OperationOutcome`).
pub fn info_outcome(message: &str) -> Value {
    serde_json::json!({"resourceType": "OperationOutcome", "issue": [
        {"severity": "information", "code": "informational", "diagnostics": message}]})
}

/// Parse a FHIR instant or date (`_since`, `_at`) to UTC milliseconds (its first
/// instant).
pub fn parse_instant(param: &str, text: &str) -> Result<i64, ApiError> {
    // A `+` in a query string arrives as a space.
    let fixed = text.replace(' ', "+");
    vigil_fhir::search::values::DateValue::from_fhir(&fixed)
        .and_then(|d| d.low)
        .ok_or_else(|| ApiError::BadRequest {
            message: format!("{param}={text} is not a valid FHIR instant"),
            expression: Some(param.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn etags() {
        assert_eq!(parse_etag("W/\"12\""), Some(12));
        assert_eq!(parse_etag("\"3\""), Some(3));
        assert_eq!(parse_etag("W/\"x\""), None);
    }
}
