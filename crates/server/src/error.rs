//! The server's one error type: every failure a request can have, each with its HTTP
//! status and OperationOutcome issue code (one table, like Meilisearch's error codes).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use vigil_auth::{AuthError, Denied};
use vigil_fhir::search::QueryError;
use vigil_store::StoreError;

/// Why a request failed. [`ApiError::status`] and [`ApiError::issue_code`] give the
/// HTTP status and the OperationOutcome `issue.code`; the response body is always an
/// OperationOutcome.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 401: missing, malformed, expired or forged bearer token. `bearer_error` is the
    /// RFC 6750 `error` code of the `WWW-Authenticate` challenge.
    #[error("{message}")]
    Unauthorized {
        /// What is wrong with the credentials.
        message: String,
        /// `invalid_token`, `invalid_request`, or none for a missing token.
        bearer_error: Option<&'static str>,
    },
    /// 403: the token's scopes do not allow the interaction.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource, version, type or endpoint.
    #[error("{0}")]
    NotFound(String),
    /// 410: the resource was deleted.
    #[error("{0}")]
    Gone(String),
    /// 405: the endpoint exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 406: the client accepts no format we produce (XML, ...).
    #[error("{0}")]
    NotAcceptable(String),
    /// 415: a body in a format we do not read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 400: a malformed request (bad JSON, bad parameter, bad header).
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// The FHIRPath (or parameter) location, when there is one.
        expression: Option<String>,
    },
    /// 422: the resource does not validate; the validator's OperationOutcome.
    #[error("the resource is not valid")]
    Unprocessable(Value),
    /// 409: conflicts with the current state (or with itself, in a transaction).
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Match` mismatch, or a conditional interaction matching several resources.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413: body larger than the limit, or too many Bundle entries.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 503 `too-costly`: the search did not finish within the server's deadline.
    #[error("{0}")]
    Timeout(String),
    /// 503 `transient` with `Retry-After`: the store is overloaded or shutting down.
    #[error("{0}")]
    Busy(String),
    /// 501: a FHIR feature this server does not implement.
    #[error("{0}")]
    NotImplemented(String),
    /// 500: a bug or a storage failure.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 without location.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            expression: None,
        }
    }

    /// The same error with `prefix` before its message (`Bundle.entry[3]: ...`).
    pub fn with_context(self, prefix: &str) -> ApiError {
        let p = |m: String| format!("{prefix}: {m}");
        match self {
            ApiError::Unauthorized {
                message,
                bearer_error,
            } => ApiError::Unauthorized {
                message: p(message),
                bearer_error,
            },
            ApiError::Forbidden(m) => ApiError::Forbidden(p(m)),
            ApiError::NotFound(m) => ApiError::NotFound(p(m)),
            ApiError::Gone(m) => ApiError::Gone(p(m)),
            ApiError::MethodNotAllowed(m) => ApiError::MethodNotAllowed(p(m)),
            ApiError::NotAcceptable(m) => ApiError::NotAcceptable(p(m)),
            ApiError::UnsupportedMediaType(m) => ApiError::UnsupportedMediaType(p(m)),
            ApiError::BadRequest {
                message,
                expression,
            } => ApiError::BadRequest {
                message: p(message),
                expression,
            },
            ApiError::Unprocessable(mut outcome) => {
                if let Some(issues) = outcome.get_mut("issue").and_then(Value::as_array_mut) {
                    for issue in issues {
                        let d = issue
                            .get("diagnostics")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        issue["diagnostics"] = Value::from(p(d));
                    }
                }
                ApiError::Unprocessable(outcome)
            }
            ApiError::Conflict(m) => ApiError::Conflict(p(m)),
            ApiError::PreconditionFailed(m) => ApiError::PreconditionFailed(p(m)),
            ApiError::PayloadTooLarge(m) => ApiError::PayloadTooLarge(p(m)),
            ApiError::Timeout(m) => ApiError::Timeout(p(m)),
            ApiError::Busy(m) => ApiError::Busy(p(m)),
            ApiError::NotImplemented(m) => ApiError::NotImplemented(p(m)),
            ApiError::Internal(m) => ApiError::Internal(p(m)),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OperationOutcome `issue.code` (FHIR `issue-type`).
    pub fn issue_code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized { .. } => "login",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::Gone(_) => "deleted",
            ApiError::MethodNotAllowed(_)
            | ApiError::NotAcceptable(_)
            | ApiError::UnsupportedMediaType(_)
            | ApiError::NotImplemented(_) => "not-supported",
            ApiError::BadRequest { .. } => "invalid",
            ApiError::Unprocessable(_) => "processing",
            ApiError::Conflict(_) | ApiError::PreconditionFailed(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "too-long",
            ApiError::Timeout(_) => "too-costly",
            ApiError::Busy(_) => "transient",
            ApiError::Internal(_) => "exception",
        }
    }

    /// The OperationOutcome body.
    pub fn outcome(&self) -> Value {
        if let ApiError::Unprocessable(outcome) = self {
            return outcome.clone();
        }
        let mut issue = json!({
            "severity": if matches!(self, ApiError::Internal(_)) { "fatal" } else { "error" },
            "code": self.issue_code(),
            "diagnostics": self.to_string(),
        });
        if let ApiError::BadRequest {
            expression: Some(e),
            ..
        } = self
        {
            issue["expression"] = json!([e]);
        }
        json!({"resourceType": "OperationOutcome", "issue": [issue]})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = crate::http::fhir_response(self.status(), &self.outcome());
        let headers = resp.headers_mut();
        match &self {
            ApiError::Unauthorized { bearer_error, .. } => {
                let challenge = match bearer_error {
                    Some(code) => format!("Bearer realm=\"vigil\", error=\"{code}\""),
                    None => "Bearer realm=\"vigil\"".to_string(),
                };
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::Busy(_) | ApiError::Timeout(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let msg = e.to_string();
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound(msg),
            StoreError::Gone { .. } => ApiError::Gone(msg),
            StoreError::VersionConflict { .. } => ApiError::PreconditionFailed(msg),
            StoreError::Invalid(_) => ApiError::bad_request(msg),
            StoreError::Conflict(_) => ApiError::Conflict(msg),
            StoreError::Busy(_) => ApiError::Busy(msg),
            StoreError::Storage(_) => ApiError::Internal(msg),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        let expression = match &e {
            QueryError::InvalidValue { param, .. } | QueryError::InvalidParameter { param, .. } => {
                Some(param.clone())
            }
            _ => None,
        };
        ApiError::BadRequest {
            message: e.to_string(),
            expression,
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        if e.is_unauthorized() || matches!(e, AuthError::MissingToken) {
            ApiError::Unauthorized {
                message: e.to_string(),
                bearer_error: e.bearer_error_code(),
            }
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        ApiError::Forbidden(d.reason)
    }
}
