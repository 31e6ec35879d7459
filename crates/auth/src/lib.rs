//! Vigil authentication and authorization: bearer tokens the server signs itself (HS256
//! JWTs under a key kept in `DATA_DIR/auth/signing.key`) and SMART on FHIR scope
//! decisions (v2 `patient/Observation.rs?category=vital-signs`, v1 `user/*.read`).
//!
//! ```
//! use vigil_auth::{AccessContext, Authorizer, Interaction, ScopeSet, SigningKey, TokenRequest};
//! let key = SigningKey::from_bytes([7; 32]);
//! let scopes = ScopeSet::parse("patient/Observation.rs launch/patient").unwrap();
//! let token = key.issue(&TokenRequest::new("app-1", scopes).patient("p1"));
//! let claims = key.verify_now(&token).unwrap();
//! let access = AccessContext::from_claims(&claims).unwrap();
//! let obs = serde_json::json!({"resourceType": "Observation", "status": "final",
//!     "code": {"text": "pulse"}, "subject": {"reference": "Patient/p1"}});
//! assert!(access.check_resource(&Interaction::Read, &obs).is_ok());
//! assert!(access.check_type(&Interaction::Create, "Observation").is_err());
//! ```
//!
//! Pure logic apart from reading and writing the key file; no network, no clock except
//! where a `*_now` function says so.

mod authz;
mod error;
mod key;
mod scope;
mod token;

pub use authz::{
    AccessContext, Authorizer, CompartmentRestriction, Denied, SearchConstraint, SearchRestriction,
    UserAccess,
};
pub use error::AuthError;
pub use key::{SigningKey, KEY_FILE, KEY_LEN};
pub use scope::{
    Interaction, Permission, Permissions, QueryConstraint, ResourceScope, Scope, ScopeContext,
    ScopeSet,
};
pub use token::{
    bearer_token, unix_now, Claims, TokenRequest, DEFAULT_TTL, ISSUER, LEEWAY_SECS, MAX_TOKEN_LEN,
};
