//! `PATCH [type]/[id]` with a JSON Patch (RFC 6902) document.

use crate::api::{blocking, current, validate_for_write, write_response, Ctx, Req};
use crate::error::ApiError;
use crate::http::{content_type, if_match, Prefer};
use crate::FhirApi;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use vigil_auth::{Authorizer, Interaction};
use vigil_store::StoreError;

/// Why a patch cannot be applied (400; a failed `test` is 422 per FHIR practice).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is malformed.
    #[error("invalid JSON Patch: {0}")]
    Invalid(String),
    /// A path does not exist, or an index is out of range.
    #[error("JSON Patch operation {index} ({op} {path}): {reason}")]
    Path {
        /// The operation's position in the patch.
        index: usize,
        /// The operation.
        op: String,
        /// Its path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A `test` operation failed.
    #[error("JSON Patch test at {0} failed")]
    TestFailed(String),
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn pointer_tokens(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("pointer {path:?} must start with /"))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn get_mut<'v>(doc: &'v mut Value, tokens: &[String]) -> Result<&'v mut Value, String> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t).ok_or_else(|| format!("no member {t:?}"))?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| format!("{t:?} is not an index"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("index {i} out of range"))?
            }
            _ => return Err(format!("cannot descend into a scalar at {t:?}")),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| format!("{last:?} is not an index"))?
            };
            if i > a.len() {
                return Err(format!("index {i} out of range"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err("the parent is not a container".into()),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let (last, parent) = tokens
        .split_last()
        .ok_or_else(|| "cannot remove the whole document".to_string())?;
    match get_mut(doc, parent)? {
        Value::Object(m) => m
            .shift_remove(last)
            .ok_or_else(|| format!("no member {last:?}")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("{last:?} is not an index"))?;
            if i >= a.len() {
                return Err(format!("index {i} out of range"));
            }
            Ok(a.remove(i))
        }
        _ => Err("the parent is not a container".into()),
    }
}

/// Apply an RFC 6902 patch to `doc` (all or nothing: on error `doc` is unchanged).
pub fn apply_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| PatchError::Invalid("the patch must be a JSON array".into()))?;
    let mut work = doc.clone();
    for (index, op) in ops.iter().enumerate() {
        let field = |name: &str| -> Result<&str, PatchError> {
            op.get(name).and_then(Value::as_str).ok_or_else(|| {
                PatchError::Invalid(format!("operation {index} has no string \"{name}\""))
            })
        };
        let name = field("op")?;
        let path = field("path")?;
        let err = |reason: String| PatchError::Path {
            index,
            op: name.to_string(),
            path: path.to_string(),
            reason,
        };
        let tokens = pointer_tokens(path).map_err(err)?;
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                PatchError::Invalid(format!("operation {index} ({name}) has no \"value\""))
            })
        };
        match name {
            "add" => add(&mut work, &tokens, value()?).map_err(err)?,
            "remove" => {
                remove(&mut work, &tokens).map_err(err)?;
            }
            "replace" => {
                let v = value()?;
                *get_mut(&mut work, &tokens).map_err(err)? = v;
            }
            "move" | "copy" => {
                let from = pointer_tokens(field("from")?).map_err(err)?;
                let v = if name == "move" {
                    if tokens.starts_with(&from) && tokens.len() > from.len() {
                        return Err(err("cannot move a value into itself".into()));
                    }
                    remove(&mut work, &from).map_err(err)?
                } else {
                    get_mut(&mut work, &from).map_err(err)?.clone()
                };
                add(&mut work, &tokens, v).map_err(err)?;
            }
            "test" => {
                let v = value()?;
                if *get_mut(&mut work, &tokens).map_err(err)? != v {
                    return Err(PatchError::TestFailed(path.to_string()));
                }
            }
            other => {
                return Err(PatchError::Invalid(format!(
                    "operation {index}: unknown op {other:?}"
                )))
            }
        }
    }
    *doc = work;
    Ok(())
}

impl From<PatchError> for ApiError {
    fn from(e: PatchError) -> ApiError {
        match e {
            PatchError::TestFailed(_) => ApiError::Unprocessable(serde_json::json!({
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "processing", "diagnostics": e.to_string()}]
            })),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

/// Patch `t/id` with a parsed JSON Patch; retried when a concurrent write lands between
/// the read and the write (unless the client pinned the version with `If-Match`).
pub(crate) async fn patch_resource(
    api: &FhirApi,
    ctx: &Ctx,
    t: &str,
    id: &str,
    patch: &Value,
    if_match: Option<u64>,
) -> Result<(vigil_store::Stored, bool), ApiError> {
    ctx.access.check_type(&Interaction::Patch, t)?;
    for _attempt in 0..3 {
        let Some(old) = current(api, t, id).await? else {
            let (tt, ii) = (t.to_string(), id.to_string());
            return Err(match blocking(api, move |s| s.read(&tt, &ii)).await? {
                vigil_store::ReadOutcome::Gone { .. } => {
                    ApiError::Gone(format!("{t}/{id} was deleted"))
                }
                _ => ApiError::NotFound(format!("{t}/{id} not found")),
            });
        };
        if let Some(v) = if_match {
            if v != old.version {
                return Err(ApiError::PreconditionFailed(format!(
                    "If-Match names version {v}, current is {}",
                    old.version
                )));
            }
        }
        ctx.access
            .check_resource(&Interaction::Patch, &old.resource)?;
        let mut doc = (*old.resource).clone();
        apply_patch(&mut doc, patch)?;
        if doc.get("resourceType").and_then(Value::as_str) != Some(t)
            || doc.get("id").and_then(Value::as_str) != Some(id)
        {
            return Err(ApiError::bad_request(
                "a patch may not change resourceType or id",
            ));
        }
        ctx.access.check_resource(&Interaction::Patch, &doc)?;
        validate_for_write(&doc)?;
        let (tt, ii, version) = (t.to_string(), id.to_string(), old.version);
        match blocking(api, move |s| {
            Ok::<_, StoreError>(s.update(&tt, &ii, doc, Some(version)))
        })
        .await?
        {
            Ok(r) => {
                api.notify_write(t, id);
                return Ok(r);
            }
            Err(StoreError::VersionConflict { .. }) if if_match.is_none() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict(format!(
        "{t}/{id} kept changing while the patch was applied; retry"
    )))
}

pub(crate) async fn patch(
    api: &FhirApi,
    ctx: &Ctx,
    t: &str,
    id: &str,
    req: &Req,
) -> Result<Response, ApiError> {
    match content_type(&req.headers).as_deref() {
        Some("application/json-patch+json") => {}
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "PATCH takes application/json-patch+json, not {}",
                other.unwrap_or("(none)")
            )))
        }
    }
    let patch: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let prefer = Prefer::from_headers(&req.headers);
    let (stored, _) = patch_resource(api, ctx, t, id, &patch, if_match(&req.headers)?).await?;
    Ok(write_response(
        api,
        StatusCode::OK,
        &stored,
        prefer.ret,
        "patched",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc6902_operations() {
        let mut d = json!({"a": [1, 2], "b": {"c": "x"}});
        let p = json!([
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "replace", "path": "/b/c", "value": "y"},
            {"op": "copy", "from": "/b", "path": "/d"},
            {"op": "move", "from": "/a/0", "path": "/e"},
            {"op": "remove", "path": "/d"},
            {"op": "test", "path": "/a", "value": [2, 3]}
        ]);
        apply_patch(&mut d, &p).unwrap();
        assert_eq!(d, json!({"a": [2, 3], "b": {"c": "y"}, "e": 1}));
        let before = d.clone();
        let bad =
            json!([{"op": "remove", "path": "/a/0"}, {"op": "test", "path": "/a/0", "value": 9}]);
        assert!(matches!(
            apply_patch(&mut d, &bad),
            Err(PatchError::TestFailed(_))
        ));
        assert_eq!(d, before);
        assert!(apply_patch(&mut d, &json!([{"op": "remove", "path": "/zz"}])).is_err());
        assert!(apply_patch(&mut d, &json!({"op": "add"})).is_err());
    }
}
