//! Compact HS256 JWTs signed by the server.
//!
//! Only what the server itself issues is accepted: header `{"alg":"HS256","typ":"JWT"}`,
//! issuer [`ISSUER`], an `exp`. There is no algorithm negotiation — the header's `alg`
//! is checked to be HS256 before anything else, so `none` and asymmetric algorithms
//! (the classic RS256/HS256 confusion) are refused outright.

use crate::scope::ScopeSet;
use crate::{AuthError, SigningKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::Mac;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `iss` of every token this server issues (and the only one it accepts).
pub const ISSUER: &str = "vigil";

/// Clock skew tolerated on `exp` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 60;

/// Longest token accepted, in bytes: far above anything we issue, low enough that a
/// hostile header cannot make us decode and hash megabytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Default lifetime of an issued token.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// The serialized header; fixed, so every token we issue starts with the same segment.
const HEADER_JSON: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// The claims of a Vigil access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token was issued to (an operator, a service, a user id).
    pub sub: String,
    /// The granted SMART scopes, space-separated (parse with [`ScopeSet::parse`]).
    pub scope: String,
    /// The patient context: the id of the Patient whose compartment `patient/` scopes
    /// are limited to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// The FHIR resource representing the user (`Practitioner/123`), per SMART's
    /// `fhirUser` claim.
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    /// Unique token id (for audit logs and, later, revocation).
    pub jti: String,
    /// Issuer; always [`ISSUER`] for tokens that verify.
    pub iss: String,
}

/// What to put in a new token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The `sub` claim.
    pub subject: String,
    /// The granted scopes.
    pub scopes: ScopeSet,
    /// The patient context (required when `scopes` has `patient/` scopes).
    pub patient: Option<String>,
    /// The `fhirUser` claim.
    pub fhir_user: Option<String>,
    /// Lifetime from issue to expiry.
    pub ttl: Duration,
}

impl TokenRequest {
    /// A request for `subject` with `scopes`, no patient, no fhirUser, [`DEFAULT_TTL`].
    pub fn new(subject: impl Into<String>, scopes: ScopeSet) -> TokenRequest {
        TokenRequest {
            subject: subject.into(),
            scopes,
            patient: None,
            fhir_user: None,
            ttl: DEFAULT_TTL,
        }
    }

    /// With a patient context.
    pub fn patient(mut self, patient: impl Into<String>) -> TokenRequest {
        self.patient = Some(patient.into());
        self
    }

    /// With a `fhirUser` claim.
    pub fn fhir_user(mut self, fhir_user: impl Into<String>) -> TokenRequest {
        self.fhir_user = Some(fhir_user.into());
        self
    }

    /// With a lifetime.
    pub fn ttl(mut self, ttl: Duration) -> TokenRequest {
        self.ttl = ttl;
        self
    }

    /// Whether the request makes sense: a token with `patient/` scopes and no patient
    /// would grant nothing (and the reverse is harmless but surely a mistake); the
    /// subject and patient id must be non-empty. `vigil token issue` calls this before
    /// [`SigningKey::issue`].
    pub fn check(&self) -> Result<(), AuthError> {
        if self.subject.trim().is_empty() {
            return Err(AuthError::InvalidRequest("empty subject".into()));
        }
        if self.scopes.is_empty() {
            return Err(AuthError::InvalidRequest("no scopes".into()));
        }
        match (&self.patient, self.scopes.has_patient_scopes()) {
            (None, true) => Err(AuthError::InvalidRequest(
                "patient/ scopes require a patient id".into(),
            )),
            (Some(p), _) if !is_fhir_id(p) => Err(AuthError::InvalidRequest(format!(
                "patient id {p:?} is not a valid FHIR id"
            ))),
            (Some(_), false) => Err(AuthError::InvalidRequest(
                "a patient id is only meaningful with patient/ scopes".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// A FHIR `id`: 1-64 of `[A-Za-z0-9\-.]`.
pub(crate) fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token from an `Authorization` header value (`Bearer <token>`, scheme
/// case-insensitive per RFC 7235).
pub fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let header = header.map(str::trim).unwrap_or_default();
    if header.is_empty() {
        return Err(AuthError::MissingToken);
    }
    if header.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingToken);
    }
    let (scheme, token) = header.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

impl SigningKey {
    /// Issue a token for the request, now. See [`SigningKey::issue_at`].
    pub fn issue(&self, req: &TokenRequest) -> String {
        self.issue_at(req, unix_now())
    }

    /// Issue a compact JWT (`header.payload.signature`) valid from `now` (seconds since
    /// the Unix epoch) for `req.ttl`.
    ///
    /// Does not validate the request; see [`TokenRequest::check`].
    pub fn issue_at(&self, req: &TokenRequest, now: u64) -> String {
        let claims = Claims {
            sub: req.subject.clone(),
            scope: req.scopes.to_string(),
            patient: req.patient.clone(),
            fhir_user: req.fhir_user.clone(),
            iat: now,
            exp: now.saturating_add(req.ttl.as_secs()),
            jti: self.new_jti(now),
            iss: ISSUER.to_string(),
        };
        self.sign(&claims)
    }

    /// Sign arbitrary claims (tests use it to mint tokens with odd claims).
    pub fn sign(&self, claims: &Claims) -> String {
        // Serializing a struct of strings and integers cannot fail.
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let mut token = URL_SAFE_NO_PAD.encode(HEADER_JSON);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let mut mac = self.mac();
        mac.update(token.as_bytes());
        let sig = mac.finalize().into_bytes();
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig));
        token
    }

    /// A unique, unguessable token id without touching the random source (so issuing
    /// cannot fail): the MAC of the time, a process-wide counter and the pid.
    fn new_jti(&self, now: u64) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut mac = self.mac();
        mac.update(b"vigil-jti\0");
        mac.update(&now.to_be_bytes());
        mac.update(&nanos.to_be_bytes());
        mac.update(&n.to_be_bytes());
        mac.update(&std::process::id().to_be_bytes());
        let tag = mac.finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&tag[..16])
    }

    /// Verify a token now. See [`SigningKey::verify`].
    pub fn verify_now(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify(token, unix_now())
    }

    /// Verify a compact JWT at `now` (seconds since the Unix epoch) and return its
    /// claims.
    ///
    /// Checks, in order: shape (three base64url segments, bounded length), header
    /// (`alg` exactly HS256, `typ` JWT if present, no `crit`), signature (constant-time
    /// HMAC comparison), claims (JSON of the expected shape), issuer, expiry and issue
    /// time with [`LEEWAY_SECS`] of skew. Never panics on any input.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let malformed = |why: &str| AuthError::Malformed(why.to_string());
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected three dot-separated segments"));
        };
        let header = URL_SAFE_NO_PAD
            .decode(h64)
            .map_err(|_| malformed("header is not base64url"))?;
        let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|_| malformed("header is not a JSON object"))?;
        match header.get("alg") {
            Some(serde_json::Value::String(alg)) if alg == "HS256" => {}
            Some(serde_json::Value::String(alg)) => {
                return Err(AuthError::UnsupportedAlgorithm(alg.clone()))
            }
            _ => return Err(malformed("header has no alg")),
        }
        match header.get("typ") {
            None => {}
            Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
            Some(_) => return Err(malformed("header typ is not JWT")),
        }
        // RFC 7515 §4.1.11: extensions marked critical that we do not understand must
        // make the token invalid; we understand none.
        if header.contains_key("crit") {
            return Err(malformed("header has critical extensions"));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s64)
            .map_err(|_| malformed("signature is not base64url"))?;
        let mut mac = self.mac();
        mac.update(h64.as_bytes());
        mac.update(b".");
        mac.update(p64.as_bytes());
        // verify_slice compares in constant time (and rejects wrong lengths).
        mac.verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(p64)
            .map_err(|_| malformed("payload is not base64url"))?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|e| AuthError::Malformed(format!("claims: {e}")))?;
        if claims.iss != ISSUER {
            return Err(AuthError::WrongIssuer(claims.iss));
        }
        if now > claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Expired {
                exp: claims.exp,
                now,
            });
        }
        if claims.iat > now.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::NotYetValid {
                iat: claims.iat,
                now,
            });
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_ids() {
        assert!(is_fhir_id("p1"));
        assert!(is_fhir_id("a-b.C9"));
        assert!(!is_fhir_id(""));
        assert!(!is_fhir_id("a/b"));
        assert!(!is_fhir_id("a b"));
        assert!(!is_fhir_id(&"x".repeat(65)));
    }

    #[test]
    fn issued_header_is_fixed() {
        let k = SigningKey::from_bytes([1; 32]);
        let t = k.issue_at(&TokenRequest::new("s", ScopeSet::default()), 0);
        assert!(t.starts_with(&format!("{}.", URL_SAFE_NO_PAD.encode(HEADER_JSON))));
        assert_eq!(t.split('.').count(), 3);
    }
}
