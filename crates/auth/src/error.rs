//! Errors of key handling, token verification and scope parsing.

use std::path::PathBuf;

/// Why a key could not be loaded, a token was rejected, or a scope string is invalid.
///
/// The token variants are distinct so the server can answer `401` with a precise
/// OperationOutcome message; none of them carries key material, and the token text is
/// never echoed back (it may be a valid credential for something else).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header, or an empty one.
    #[error("missing bearer token")]
    MissingToken,
    /// An `Authorization` header that is not `Bearer <token>`.
    #[error("authorization header is not a bearer token")]
    NotBearer,
    /// The token is not a well-formed compact JWT (or its claims are not ours).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm other than HS256 (including `none`).
    #[error("unsupported token algorithm {0:?} (only HS256 is accepted)")]
    UnsupportedAlgorithm(String),
    /// The signature does not match: the token was altered or signed with another key.
    #[error("invalid token signature")]
    BadSignature,
    /// The token's `exp` is in the past (beyond the allowed clock leeway).
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// The token's expiry, seconds since the Unix epoch.
        exp: u64,
        /// The verification time, seconds since the Unix epoch.
        now: u64,
    },
    /// The token's `iat` is in the future (beyond the allowed clock leeway).
    #[error("token issued in the future (iat {iat}, now {now})")]
    NotYetValid {
        /// The token's issue time, seconds since the Unix epoch.
        iat: u64,
        /// The verification time, seconds since the Unix epoch.
        now: u64,
    },
    /// The token was issued by someone else.
    #[error("token issuer {0:?} is not this server")]
    WrongIssuer(String),
    /// A scope that is not a SMART scope this server understands.
    #[error("invalid scope {scope:?}: {reason}")]
    InvalidScope {
        /// The offending scope, as written.
        scope: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A token request that cannot be issued (e.g. patient scopes without a patient).
    #[error("invalid token request: {0}")]
    InvalidRequest(String),
    /// Reading or writing the key file failed.
    #[error("signing key file {path}: {source}")]
    KeyIo {
        /// The file (or directory) involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but does not hold a valid key, or is readable by others.
    #[error("signing key file {path}: {reason}")]
    KeyInvalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The operating system's random source failed.
    #[error("random number generator failed: {0}")]
    Random(String),
}

impl AuthError {
    /// Whether this error means the request's credentials are missing or invalid, i.e.
    /// the server should answer `401 Unauthorized` (as opposed to a server-side failure).
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            AuthError::MissingToken
                | AuthError::NotBearer
                | AuthError::Malformed(_)
                | AuthError::UnsupportedAlgorithm(_)
                | AuthError::BadSignature
                | AuthError::Expired { .. }
                | AuthError::NotYetValid { .. }
                | AuthError::WrongIssuer(_)
                | AuthError::InvalidScope { .. }
        )
    }

    /// The RFC 6750 `error` code for a `WWW-Authenticate: Bearer` challenge, for the
    /// errors that are the client's (`None` for server-side failures, and for a missing
    /// token, where RFC 6750 §3.1 says to send no error code).
    pub fn bearer_error_code(&self) -> Option<&'static str> {
        match self {
            AuthError::MissingToken => None,
            AuthError::NotBearer => Some("invalid_request"),
            e if e.is_unauthorized() => Some("invalid_token"),
            _ => None,
        }
    }
}
