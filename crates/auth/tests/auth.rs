//! Integration tests of vigil-auth: tokens, the key file, scopes and decisions.
#![allow(clippy::unwrap_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use vigil_auth::*;

const NOW: u64 = 1_700_000_000;

fn key() -> SigningKey {
    SigningKey::from_bytes([42; 32])
}

fn scopes(s: &str) -> ScopeSet {
    ScopeSet::parse(s).unwrap()
}

fn token(scope: &str, patient: Option<&str>) -> String {
    let mut req = TokenRequest::new("tester", scopes(scope)).ttl(Duration::from_secs(600));
    if let Some(p) = patient {
        req = req.patient(p);
    }
    key().issue_at(&req, NOW)
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn parts(t: &str) -> Vec<String> {
    t.split('.').map(str::to_string).collect()
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vigil-auth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

// ---- tokens ----

#[test]
fn round_trip() {
    let req = TokenRequest::new("svc", scopes("patient/Observation.rs openid"))
        .patient("p1")
        .fhir_user("Practitioner/9")
        .ttl(Duration::from_secs(300));
    req.check().unwrap();
    let t = key().issue_at(&req, NOW);
    let header = URL_SAFE_NO_PAD.decode(parts(&t)[0].as_bytes()).unwrap();
    assert_eq!(header, br#"{"alg":"HS256","typ":"JWT"}"#);
    let c = key().verify(&t, NOW + 10).unwrap();
    assert_eq!(c.sub, "svc");
    assert_eq!(c.scope, "patient/Observation.rs openid");
    assert_eq!(c.patient.as_deref(), Some("p1"));
    assert_eq!(c.fhir_user.as_deref(), Some("Practitioner/9"));
    assert_eq!((c.iat, c.exp), (NOW, NOW + 300));
    assert_eq!(c.iss, ISSUER);
    assert!(!c.jti.is_empty());
    // Every token gets its own id.
    let t2 = key().issue_at(&req, NOW);
    assert_ne!(key().verify(&t2, NOW).unwrap().jti, c.jti);
    // The fhirUser claim uses SMART's name.
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts(&t)[1].as_bytes()).unwrap()).unwrap();
    assert_eq!(payload["fhirUser"], "Practitioner/9");
}

#[test]
fn issue_now_verifies_now() {
    let t = key().issue(&TokenRequest::new("x", scopes("system/*.cruds")));
    assert!(key().verify_now(&t).is_ok());
}

#[test]
fn other_key_is_bad_signature() {
    let t = token("user/*.cruds", None);
    let other = SigningKey::from_bytes([43; 32]);
    assert!(matches!(
        other.verify(&t, NOW),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn tampered_payload() {
    let t = token("patient/Observation.rs", Some("p1"));
    let p = parts(&t);
    let mut claims = key().verify(&t, NOW).unwrap();
    claims.patient = Some("p2".into());
    let forged = format!(
        "{}.{}.{}",
        p[0],
        b64(&serde_json::to_value(&claims).unwrap()),
        p[2]
    );
    assert!(matches!(
        key().verify(&forged, NOW),
        Err(AuthError::BadSignature)
    ));
    // Swapping the scope for more privilege, same signature.
    claims.scope = "user/*.cruds".into();
    let forged = format!(
        "{}.{}.{}",
        p[0],
        b64(&serde_json::to_value(&claims).unwrap()),
        p[2]
    );
    assert!(matches!(
        key().verify(&forged, NOW),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn tampered_signature() {
    let t = token("user/*.cruds", None);
    let p = parts(&t);
    let mut sig = URL_SAFE_NO_PAD.decode(p[2].as_bytes()).unwrap();
    sig[0] ^= 1;
    let forged = format!("{}.{}.{}", p[0], p[1], URL_SAFE_NO_PAD.encode(&sig));
    assert!(matches!(
        key().verify(&forged, NOW),
        Err(AuthError::BadSignature)
    ));
    // Truncated signature, empty signature.
    let short = format!("{}.{}.{}", p[0], p[1], URL_SAFE_NO_PAD.encode(&sig[..16]));
    assert!(matches!(
        key().verify(&short, NOW),
        Err(AuthError::BadSignature)
    ));
    let empty = format!("{}.{}.", p[0], p[1]);
    assert!(matches!(
        key().verify(&empty, NOW),
        Err(AuthError::BadSignature)
    ));
}

#[test]
fn alg_none_and_others_rejected() {
    let t = token("user/*.cruds", None);
    let p = parts(&t);
    for alg in ["none", "None", "HS512", "RS256", "ES256", "hs256"] {
        let h = b64(&json!({"alg": alg, "typ": "JWT"}));
        for sig in ["", p[2].as_str()] {
            let forged = format!("{h}.{}.{sig}", p[1]);
            match key().verify(&forged, NOW) {
                Err(AuthError::UnsupportedAlgorithm(a)) => assert_eq!(a, alg),
                other => panic!("{alg}: {other:?}"),
            }
        }
    }
    // No alg, non-string alg, crit, wrong typ: malformed.
    for h in [
        json!({"typ": "JWT"}),
        json!({"alg": null}),
        json!({"alg": ["HS256"]}),
        json!({"alg": "HS256", "crit": ["exp"]}),
        json!({"alg": "HS256", "typ": "JOSE+JSON"}),
    ] {
        let forged = format!("{}.{}.{}", b64(&h), p[1], p[2]);
        assert!(
            matches!(key().verify(&forged, NOW), Err(AuthError::Malformed(_))),
            "{h}"
        );
    }
}

#[test]
fn validly_signed_header_variants_accepted() {
    // A token we did not mint ourselves but signed with our key, header without typ.
    let k = key();
    let claims = k.verify(&token("user/*.read", None), NOW).unwrap();
    let h = b64(&json!({"alg": "HS256"}));
    let p = b64(&serde_json::to_value(&claims).unwrap());
    let sig = hmac_check::sign(&[42; 32], &format!("{h}.{p}"));
    let t = format!("{h}.{p}.{sig}");
    assert_eq!(k.verify(&t, NOW).unwrap(), claims);
}

/// An HS256 signer independent of `SigningKey`, to sign headers and payloads the
/// crate would never produce.
mod hmac_check {
    pub fn sign(secret: &[u8; 32], signing_input: &str) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).unwrap();
        mac.update(signing_input.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

#[test]
fn expired_and_not_yet_valid() {
    let t = token("user/*.read", None); // iat NOW, exp NOW + 600
    assert!(key().verify(&t, NOW + 600).is_ok());
    assert!(key().verify(&t, NOW + 600 + LEEWAY_SECS).is_ok(), "leeway");
    match key().verify(&t, NOW + 601 + LEEWAY_SECS) {
        Err(AuthError::Expired { exp, now }) => {
            assert_eq!((exp, now), (NOW + 600, NOW + 601 + LEEWAY_SECS))
        }
        other => panic!("{other:?}"),
    }
    assert!(key().verify(&t, NOW - LEEWAY_SECS).is_ok());
    assert!(matches!(
        key().verify(&t, NOW - LEEWAY_SECS - 1),
        Err(AuthError::NotYetValid { .. })
    ));
    let e = key().verify(&t, NOW + 10_000).unwrap_err();
    assert!(e.is_unauthorized());
    assert_eq!(e.bearer_error_code(), Some("invalid_token"));
    assert!(e.to_string().contains("expired"), "{e}");
}

#[test]
fn wrong_issuer_and_bad_claims() {
    let k = key();
    let mut c = k.verify(&token("user/*.read", None), NOW).unwrap();
    c.iss = "someone-else".into();
    assert!(
        matches!(k.verify(&k.sign(&c), NOW), Err(AuthError::WrongIssuer(i)) if i == "someone-else")
    );
    // Signed but with claims of the wrong shape.
    let h = b64(&json!({"alg": "HS256", "typ": "JWT"}));
    for payload in [
        json!({"sub": "x"}),
        json!([1, 2]),
        json!({"sub": "x", "scope": "", "iat": "soon", "exp": 1, "jti": "j", "iss": "vigil"}),
    ] {
        let p = b64(&payload);
        let sig = hmac_check::sign(&[42; 32], &format!("{h}.{p}"));
        let t = format!("{h}.{p}.{sig}");
        assert!(
            matches!(k.verify(&t, NOW), Err(AuthError::Malformed(_))),
            "{payload}"
        );
    }
    // Signed payload that is not JSON at all.
    let p = URL_SAFE_NO_PAD.encode(b"\xff\xfe not json");
    let sig = hmac_check::sign(&[42; 32], &format!("{h}.{p}"));
    assert!(matches!(
        k.verify(&format!("{h}.{p}.{sig}"), NOW),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn garbage_tokens_never_panic() {
    let k = key();
    let good = token("user/*.read", None);
    let p = parts(&good);
    let mut inputs: Vec<String> = vec![
        "".into(),
        ".".into(),
        "..".into(),
        "...".into(),
        "a.b.c".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "Bearer x".into(),
        "====.====.====".into(),
        "\0\0\0".into(),
        "é.ü.ß".into(),
        "🦀.🦀.🦀".into(),
        format!("{}.{}", p[0], p[1]),
        format!("{}.{}.{}.", p[0], p[1], p[2]),
        format!("{}=.{}.{}", p[0], p[1], p[2]),
        format!("{}.{}.{}=", p[0], p[1], p[2]),
        format!(" {good}"),
        format!("{good} "),
        format!("{}.{}.{}", p[0].replace('e', "+"), p[1], p[2]),
        format!("{}.{}.{}", p[0], p[1].to_uppercase(), p[2]),
        "x".repeat(MAX_TOKEN_LEN + 1),
        format!("{}.{}.{}", b64(&json!("HS256")), p[1], p[2]),
        format!("{}.{}.{}", b64(&json!(null)), p[1], p[2]),
        format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("{"), p[1], p[2]),
        format!("{}.{}.{}", URL_SAFE_NO_PAD.encode([0xff, 0xfe]), p[1], p[2]),
    ];
    // Every truncation and every single-character change of a good token.
    for i in 0..good.len() {
        inputs.push(good[..i].to_string());
        let mut b = good.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        inputs.push(String::from_utf8(b).unwrap());
    }
    for t in &inputs {
        if t == &good {
            continue;
        }
        let r = std::panic::catch_unwind(|| k.verify(t, NOW));
        let r = r.unwrap_or_else(|_| panic!("panicked on {t:?}"));
        assert!(r.is_err(), "accepted {t:?}");
    }
    assert!(k.verify(&good, NOW).is_ok());
}

#[test]
fn bearer_header() {
    assert!(matches!(bearer_token(None), Err(AuthError::MissingToken)));
    assert!(matches!(
        bearer_token(Some("  ")),
        Err(AuthError::MissingToken)
    ));
    assert!(matches!(
        bearer_token(Some("Bearer ")),
        Err(AuthError::MissingToken)
    ));
    assert!(matches!(
        bearer_token(Some("Basic dXNlcjpwdw==")),
        Err(AuthError::NotBearer)
    ));
    assert!(matches!(
        bearer_token(Some("abc")),
        Err(AuthError::NotBearer)
    ));
    assert_eq!(bearer_token(Some("Bearer a.b.c")).unwrap(), "a.b.c");
    assert_eq!(bearer_token(Some("bearer  a.b.c ")).unwrap(), "a.b.c");
    assert_eq!(AuthError::MissingToken.bearer_error_code(), None);
    assert_eq!(
        AuthError::NotBearer.bearer_error_code(),
        Some("invalid_request")
    );
}

#[test]
fn token_request_check() {
    assert!(TokenRequest::new("a", scopes("patient/Observation.rs"))
        .check()
        .is_err());
    assert!(TokenRequest::new("a", scopes("patient/Observation.rs"))
        .patient("p1")
        .check()
        .is_ok());
    assert!(TokenRequest::new("a", scopes("patient/Observation.rs"))
        .patient("bad id!")
        .check()
        .is_err());
    assert!(TokenRequest::new("a", scopes("user/*.read"))
        .patient("p1")
        .check()
        .is_err());
    assert!(TokenRequest::new("", scopes("user/*.read"))
        .check()
        .is_err());
    assert!(TokenRequest::new("a", scopes("")).check().is_err());
    assert!(TokenRequest::new("a", scopes("system/*.rs"))
        .check()
        .is_ok());
}

// ---- key file ----

#[test]
fn key_file_created_private_and_reused() {
    let dir = tmp_dir("keyfile");
    let k1 = SigningKey::load_or_create(&dir).unwrap();
    let path = dir.join("auth").join("signing.key");
    assert_eq!(SigningKey::path(&dir), path);
    assert!(path.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let dmode = std::fs::metadata(dir.join("auth"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o077, 0, "{dmode:o}");
    }
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(dir.join("auth"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["signing.key"]);
    // Reused: a token of the first key verifies with the reloaded one.
    let t = k1.issue_at(&TokenRequest::new("a", scopes("user/*.read")), NOW);
    let k2 = SigningKey::load_or_create(&dir).unwrap();
    assert!(k2.verify(&t, NOW).is_ok());
    // Another data dir gets another key.
    let other = SigningKey::load_or_create(&tmp_dir("keyfile-other")).unwrap();
    assert!(matches!(
        other.verify(&t, NOW),
        Err(AuthError::BadSignature)
    ));
    // Debug never shows the key.
    assert_eq!(format!("{k1:?}"), "SigningKey(<redacted>)");
}

#[cfg(unix)]
#[test]
fn key_file_too_open_or_corrupt_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tmp_dir("keyperm");
    SigningKey::load_or_create(&dir).unwrap();
    let path = SigningKey::path(&dir);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = SigningKey::load_or_create(&dir).unwrap_err();
    assert!(matches!(e, AuthError::KeyInvalid { .. }), "{e}");
    assert!(e.to_string().contains("too open"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, "not a key\n").unwrap();
    assert!(matches!(
        SigningKey::load_or_create(&dir),
        Err(AuthError::KeyInvalid { .. })
    ));
    std::fs::write(&path, "AAAA\n").unwrap();
    let e = SigningKey::load_or_create(&dir).unwrap_err();
    assert!(e.to_string().contains("32 bytes"), "{e}");
    assert!(!e.is_unauthorized());
}

#[test]
fn concurrent_creation_agrees_on_one_key() {
    let dir = tmp_dir("keyrace");
    let keys: Vec<SigningKey> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| SigningKey::load_or_create(&dir)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let t = keys[0].issue_at(&TokenRequest::new("a", scopes("user/*.read")), NOW);
    for k in &keys {
        assert!(k.verify(&t, NOW).is_ok());
    }
}

// ---- scopes ----

fn rscope(s: &str) -> ResourceScope {
    Scope::parse(s).unwrap().as_resource().unwrap().clone()
}

#[test]
fn scope_parsing_v2() {
    let s = rscope("patient/Observation.rs");
    assert_eq!(s.context, ScopeContext::Patient);
    assert_eq!(s.resource_type.as_deref(), Some("Observation"));
    assert_eq!(s.permissions.to_string(), "rs");
    assert!(!s.v1 && s.constraints.is_empty());
    let s = rscope("user/*.cruds");
    assert_eq!((s.context, s.resource_type), (ScopeContext::User, None));
    assert_eq!(s.permissions, Permissions::ALL);
    let s = rscope("system/Patient.r");
    assert_eq!(s.context, ScopeContext::System);
    assert!(s.permissions.contains(Permission::Read));
    assert!(!s.permissions.contains(Permission::Search));
    for (text, letters) in [
        ("c", "c"),
        ("cd", "cd"),
        ("rs", "rs"),
        ("us", "us"),
        ("cruds", "cruds"),
    ] {
        assert_eq!(
            rscope(&format!("user/Patient.{text}"))
                .permissions
                .to_string(),
            letters
        );
    }
}

#[test]
fn scope_parsing_v1() {
    let s = rscope("user/Observation.read");
    assert!(s.v1);
    assert_eq!(s.permissions, Permissions::READ);
    assert_eq!(s.permissions.to_string(), "rs");
    assert_eq!(rscope("patient/*.write").permissions.to_string(), "cud");
    assert_eq!(rscope("system/*.*").permissions.to_string(), "cruds");
}

#[test]
fn scope_parsing_simple_and_sets() {
    let set = scopes(
        "openid fhirUser launch/patient offline_access profile launch online_access launch/encounter",
    );
    assert!(set.contains(&Scope::OpenId));
    assert!(set.contains(&Scope::LaunchPatient));
    assert_eq!(set.resource_scopes().count(), 0);
    let set = scopes("  patient/Observation.rs   openid patient/Observation.rs ");
    assert_eq!(
        set.iter().count(),
        2,
        "duplicates removed, whitespace tolerated"
    );
    assert_eq!(set.to_string(), "patient/Observation.rs openid");
    assert!(set.has_patient_scopes() && !set.has_user_scopes());
    assert!(scopes("").is_empty());
    // Round trip through Display.
    for s in [
        "user/*.read",
        "patient/Observation.rs?category=vital-signs&code=8867-4",
        "system/*.*",
        "user/Patient.cud",
    ] {
        assert_eq!(Scope::parse(s).unwrap().to_string(), s);
    }
}

#[test]
fn scope_parsing_invalid_names_the_scope() {
    let cases = [
        ("admin", "unknown scope"),
        ("patient/Observation", "Type.permissions"),
        ("doctor/Observation.rs", "unknown context"),
        ("patient/Observaton.rs", "not an R4 resource type"),
        ("patient/Resource.rs", "not an R4 resource type"),
        ("patient/observation.rs", "not an R4 resource type"),
        ("patient/Observation.sr", "order"),
        ("patient/Observation.rr", "order"),
        ("patient/Observation.x", "unknown permission"),
        ("patient/Observation.", "no permission letters"),
        ("patient/Observation.READ", "unknown permission"),
        ("patient/Observation.read?category=x", "v2 permissions"),
        ("patient/Observation.rs?", "empty query"),
        ("patient/Observation.rs?category", "not name=value"),
        ("patient/Observation.rs?category=", "empty name or value"),
        ("patient/Observation.rs?category=%zz", "percent-encoding"),
        ("patient/Observation.rs?category=%+1", "percent-encoding"),
        ("patient/Obs\"ervation.rs", "not allowed"),
    ];
    for (scope, why) in cases {
        match ScopeSet::parse(&format!("openid {scope} fhirUser")) {
            Err(AuthError::InvalidScope { scope: s, reason }) => {
                assert_eq!(s, scope);
                assert!(reason.contains(why), "{scope}: {reason}");
            }
            other => panic!("{scope}: {other:?}"),
        }
    }
    let e = ScopeSet::parse("user/Foo.rs").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid scope \"user/Foo.rs\": \"Foo\" is not an R4 resource type"
    );
}

#[test]
fn scope_v2_query_constraints() {
    let s = rscope("patient/Observation.rs?category=vital-signs");
    assert_eq!(
        s.constraints,
        [QueryConstraint {
            param: "category".into(),
            value: "vital-signs".into()
        }]
    );
    let s = rscope(
        "user/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory&code%3Ain=http%3A%2F%2Fx%2Fvs",
    );
    assert_eq!(s.constraints.len(), 2);
    assert_eq!(
        s.constraints[0].value,
        "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    );
    assert_eq!(s.constraints[1].param, "code:in");
    assert_eq!(s.constraints[1].value, "http://x/vs");
}

#[test]
fn permission_mapping() {
    use Interaction as I;
    let cases = [
        (I::Create, 'c'),
        (I::Read, 'r'),
        (I::Vread, 'r'),
        (I::History, 'r'),
        (I::Update, 'u'),
        (I::Patch, 'u'),
        (I::Delete, 'd'),
        (I::Search, 's'),
        (I::HistoryType, 's'),
        (I::Operation("everything".into()), 'r'),
        (I::Operation("$meta-add".into()), 'u'),
    ];
    for (i, letter) in cases {
        assert_eq!(i.permission().letter(), letter, "{i}");
    }
    assert!(I::Create.is_write() && I::Delete.is_write() && !I::Search.is_write());
    // v1 read = rs, write = cud.
    let read = rscope("user/Patient.read");
    assert!(read.grants(Permission::Read, "Patient") && read.grants(Permission::Search, "Patient"));
    assert!(
        !read.grants(Permission::Create, "Patient")
            && !read.grants(Permission::Read, "Observation")
    );
    let write = rscope("user/*.write");
    assert!(write.grants(Permission::Create, "Observation"));
    assert!(
        write.grants(Permission::Update, "Observation")
            && write.grants(Permission::Delete, "Observation")
    );
    assert!(
        !write.grants(Permission::Read, "Observation")
            && !write.grants(Permission::Search, "Observation")
    );
}

// ---- decisions ----

fn observation(id: &str, patient: &str, category: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": 72, "unit": "/min"}
    })
}

fn patient(id: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": "Doe"}]})
}

fn ctx(scope: &str, patient: Option<&str>) -> AccessContext {
    // Through a real token, as the server will do it.
    let t = token(scope, patient);
    AccessContext::from_claims(&key().verify(&t, NOW).unwrap()).unwrap()
}

#[test]
fn patient_context_observation() {
    let p1 = ctx("patient/Observation.rs", Some("p1"));
    let p2 = ctx("patient/Observation.rs", Some("p2"));
    let obs = observation("o1", "p1", "vital-signs");
    assert!(p1.check_type(&Interaction::Read, "Observation").is_ok());
    assert!(p1.check_resource(&Interaction::Read, &obs).is_ok());
    assert!(p1.check_resource(&Interaction::Vread, &obs).is_ok());
    let d = p2.check_resource(&Interaction::Read, &obs).unwrap_err();
    assert!(
        d.reason
            .contains("Observation/o1 is not in the compartment of Patient/p2"),
        "{d}"
    );
    // No write permission at all.
    let d = p1
        .check_type(&Interaction::Create, "Observation")
        .unwrap_err();
    assert!(d.reason.contains("patient/Observation.c"), "{d}");
    // Other types not granted.
    assert!(p1.check_type(&Interaction::Read, "Condition").is_err());
    // performer is a compartment param too, but only Patient references count.
    let by_performer = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "performer": [{"reference": "Patient/p1"}]});
    assert!(p1.check_resource(&Interaction::Read, &by_performer).is_ok());
    // An absolute reference to some server's Patient/p1 is not ours.
    let absolute = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "http://elsewhere.example/fhir/Patient/p1"}});
    assert!(p1.check_resource(&Interaction::Read, &absolute).is_err());
    // Not a resource.
    assert!(p1
        .check_resource(&Interaction::Read, &json!({"id": "x"}))
        .is_err());
}

#[test]
fn patient_context_patient_resource() {
    let p1 = ctx("patient/Patient.r", Some("p1"));
    assert!(p1
        .check_resource(&Interaction::Read, &patient("p1"))
        .is_ok());
    assert!(p1
        .check_resource(&Interaction::Read, &patient("p2"))
        .is_err());
    // A Patient that links to p1 is in p1's compartment (R4 CompartmentDefinition).
    let linked = json!({"resourceType": "Patient", "id": "p3",
        "link": [{"other": {"reference": "Patient/p1"}, "type": "seealso"}]});
    assert!(p1.check_resource(&Interaction::Read, &linked).is_ok());
    assert!(p1.check_type(&Interaction::Search, "Patient").is_err());
}

#[test]
fn patient_context_writes() {
    let p1 = ctx("patient/Observation.cruds", Some("p1"));
    let own = observation("o1", "p1", "vital-signs");
    let other = observation("o2", "p2", "vital-signs");
    assert!(p1.check_resource(&Interaction::Create, &own).is_ok());
    let d = p1.check_resource(&Interaction::Create, &other).unwrap_err();
    assert!(
        d.reason
            .contains("can only write resources that reference its own patient"),
        "{d}"
    );
    assert!(p1.check_resource(&Interaction::Update, &other).is_err());
    assert!(p1.check_resource(&Interaction::Delete, &other).is_err());
    assert!(p1.check_resource(&Interaction::Delete, &own).is_ok());
    // Without a subject at all: not in anyone's compartment.
    let orphan = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    assert!(p1.check_resource(&Interaction::Create, &orphan).is_err());
}

#[test]
fn patient_scopes_without_patient_grant_nothing() {
    let access = AccessContext::new(scopes("patient/*.cruds"), None);
    let d = access
        .check_type(&Interaction::Read, "Observation")
        .unwrap_err();
    assert!(d.reason.contains("without a patient context"), "{d}");
    assert!(access.search_constraint("Observation").is_err());
}

#[test]
fn patient_context_outside_compartment() {
    let p1 = ctx("patient/*.cruds", Some("p1"));
    // Shared reference data: readable, not writable.
    let org = json!({"resourceType": "Organization", "id": "org1", "name": "Clinic"});
    assert!(p1.check_resource(&Interaction::Read, &org).is_ok());
    assert_eq!(p1.search_constraint("Organization").unwrap(), None);
    let d = p1
        .check_type(&Interaction::Update, "Organization")
        .unwrap_err();
    assert!(d.reason.contains("shared data"), "{d}");
    // Types outside the compartment that may hold anyone's data: nothing.
    let d = p1.check_type(&Interaction::Read, "Binary").unwrap_err();
    assert!(d.reason.contains("not in the patient compartment"), "{d}");
}

#[test]
fn user_wildcard_allows_everything() {
    let u = ctx("user/*.cruds", None);
    for i in [
        Interaction::Create,
        Interaction::Read,
        Interaction::Update,
        Interaction::Delete,
        Interaction::Search,
        Interaction::History,
        Interaction::HistoryType,
    ] {
        for ty in ["Observation", "Patient", "Binary", "Organization"] {
            assert!(u.check_type(&i, ty).is_ok(), "{i} {ty}");
        }
        assert!(u
            .check_resource(&i, &observation("o", "p2", "laboratory"))
            .is_ok());
        assert!(u.check_resource(&i, &patient("p9")).is_ok());
    }
    assert_eq!(u.search_constraint("Observation").unwrap(), None);
    assert!(u.user().is_some());
    assert!(ctx("system/*.rs", None).user().is_none());
}

#[test]
fn user_hook_carries_fhir_user() {
    let req = TokenRequest::new("dr", scopes("user/*.rs")).fhir_user("Practitioner/7");
    let claims = key().verify(&key().issue_at(&req, NOW), NOW).unwrap();
    let access = AccessContext::from_claims(&claims).unwrap();
    assert_eq!(access.user().unwrap().fhir_user, Some("Practitioner/7"));
}

#[test]
fn system_patient_read_only() {
    let s = ctx("system/Patient.r", None);
    assert!(s.check_type(&Interaction::Read, "Patient").is_ok());
    assert!(s
        .check_resource(&Interaction::Read, &patient("anyone"))
        .is_ok());
    assert!(s.check_type(&Interaction::Vread, "Patient").is_ok());
    let d = s.check_type(&Interaction::Search, "Patient").unwrap_err();
    assert!(d.reason.contains("search on Patient"), "{d}");
    assert!(s.search_constraint("Patient").is_err());
    for i in [
        Interaction::Create,
        Interaction::Update,
        Interaction::Delete,
        Interaction::Patch,
    ] {
        assert!(s.check_type(&i, "Patient").is_err(), "{i}");
    }
    assert!(s.check_type(&Interaction::Read, "Observation").is_err());
}

#[test]
fn search_constraints() {
    let p1 = ctx("patient/Observation.rs", Some("p1"));
    let c = p1.search_constraint("Observation").unwrap().unwrap();
    let comp = c.common_compartment().unwrap();
    assert_eq!(comp.patient, "p1");
    assert_eq!(comp.params, ["subject", "performer"]);
    assert!(!comp.by_id);
    assert!(c.any_of[0].query.is_empty());

    let pp = ctx("patient/Patient.rs", Some("p1"));
    let c = pp.search_constraint("Patient").unwrap().unwrap();
    let comp = c.common_compartment().unwrap();
    assert!(comp.by_id);
    assert_eq!(comp.params, ["link"]);

    // v2 query constraint is passed on with the compartment.
    let v = ctx("patient/Observation.rs?category=vital-signs", Some("p1"));
    let c = v.search_constraint("Observation").unwrap().unwrap();
    assert_eq!(c.any_of.len(), 1);
    assert_eq!(c.any_of[0].query[0].to_string(), "category=vital-signs");
    assert!(c.any_of[0].compartment.is_some());

    // An unconstrained scope subsumes a constrained one.
    let both = ctx(
        "patient/Observation.rs?category=vital-signs patient/Observation.rs",
        Some("p1"),
    );
    let c = both.search_constraint("Observation").unwrap().unwrap();
    assert_eq!(c.any_of.len(), 1);
    assert!(c.any_of[0].query.is_empty());

    // Two different constraints: alternatives.
    let two = ctx(
        "user/Observation.rs?category=vital-signs user/Observation.rs?category=laboratory",
        None,
    );
    let c = two.search_constraint("Observation").unwrap().unwrap();
    assert_eq!(c.any_of.len(), 2);
    assert!(c.common_compartment().is_none());

    // user/ with patient/: the user grant is unrestricted.
    let mixed = ctx("patient/Observation.rs user/Observation.s", Some("p1"));
    assert_eq!(mixed.search_constraint("Observation").unwrap(), None);
}

#[test]
fn query_constraints_on_resources() {
    let v = ctx("patient/Observation.rs?category=vital-signs", Some("p1"));
    assert!(v
        .check_resource(&Interaction::Read, &observation("o1", "p1", "vital-signs"))
        .is_ok());
    let d = v
        .check_resource(&Interaction::Read, &observation("o2", "p1", "laboratory"))
        .unwrap_err();
    assert!(
        d.reason
            .contains("does not match the constraint category=vital-signs"),
        "{d}"
    );

    let sys = ctx(
        "user/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory,imaging",
        None,
    );
    assert!(sys
        .check_resource(&Interaction::Read, &observation("o", "p", "laboratory"))
        .is_ok());
    assert!(sys
        .check_resource(&Interaction::Read, &observation("o", "p", "imaging"))
        .is_ok());
    assert!(sys
        .check_resource(&Interaction::Read, &observation("o", "p", "vital-signs"))
        .is_err());

    // Reference and string constraints.
    let r = ctx("user/Observation.rs?subject=Patient/p7", None);
    assert!(r
        .check_resource(&Interaction::Read, &observation("o", "p7", "x"))
        .is_ok());
    assert!(r
        .check_resource(&Interaction::Read, &observation("o", "p8", "x"))
        .is_err());
    let s = ctx("user/Patient.rs?family=do", None);
    assert!(s.check_resource(&Interaction::Read, &patient("a")).is_ok());

    // Unknown parameters and modifiers cannot be checked: denied, with the reason.
    let bad = ctx("user/Observation.rs?nonsense=1", None);
    let d = bad
        .check_resource(&Interaction::Read, &observation("o", "p", "x"))
        .unwrap_err();
    assert!(
        d.reason.contains("not a search parameter of Observation"),
        "{d}"
    );
    let modi = ctx("user/Observation.rs?code:in=http://x/vs", None);
    let d = modi
        .check_resource(&Interaction::Read, &observation("o", "p", "x"))
        .unwrap_err();
    assert!(d.reason.contains("cannot be checked"), "{d}");

    // Another scope without constraints grants anyway.
    let either = ctx(
        "user/Observation.rs?category=laboratory user/Observation.r",
        None,
    );
    assert!(either
        .check_resource(&Interaction::Read, &observation("o", "p", "vital-signs"))
        .is_ok());
}

#[test]
fn non_data_scopes_grant_nothing() {
    let a = ctx("openid fhirUser launch/patient offline_access", Some("p1"));
    assert!(a.check_type(&Interaction::Read, "Patient").is_err());
    assert!(a
        .check_resource(&Interaction::Read, &patient("p1"))
        .is_err());
}

#[test]
fn invalid_scope_in_token_is_unauthorized() {
    let mut c = key().verify(&token("user/*.read", None), NOW).unwrap();
    c.scope = "user/*.read admin".into();
    let e = AccessContext::from_claims(&c).unwrap_err();
    assert!(e.is_unauthorized());
    assert!(e.to_string().contains("\"admin\""), "{e}");
}
