//! Metadata, authentication, negotiation, CRUD, conditional interactions, patch, audit.

use super::*;

#[test]
fn metadata_is_public_and_truthful() {
    let s = start();
    let r = s.call("GET", "/metadata", None, &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["resourceType"], "CapabilityStatement");
    assert_eq!(r.body["fhirVersion"], "4.0.1");
    let res = r.body["rest"][0]["resource"].as_array().unwrap();
    let obs = res.iter().find(|x| x["type"] == "Observation").unwrap();
    assert!(obs["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "code" && p["type"] == "token"));
    let pat = res.iter().find(|x| x["type"] == "Patient").unwrap();
    assert!(pat["operation"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["name"] == "everything"));
    assert!(!res.iter().any(|x| x["type"] == "DomainResource"));
}

#[test]
fn authentication_and_authorization() {
    let s = start();
    let r = s.call("GET", "/Patient", None, &[], None);
    assert_eq!(r.status, 401);
    assert!(r.headers["www-authenticate"].starts_with("Bearer"));
    assert_eq!(issue_code(&r), "login");
    let r = s.call("GET", "/Patient", Some("not.a.token"), &[], None);
    assert_eq!(r.status, 401);
    assert!(r.headers["www-authenticate"].contains("invalid_token"));
    // Signed by another key.
    let other = SigningKey::from_bytes([1; 32]).issue(&TokenRequest::new(
        "x",
        ScopeSet::parse("system/*.cruds").unwrap(),
    ));
    assert_eq!(
        s.call("GET", "/Patient", Some(&other), &[], None).status,
        401
    );
    // Expired.
    let old = s.key.issue_at(
        &TokenRequest::new("x", ScopeSet::parse("system/*.cruds").unwrap())
            .ttl(Duration::from_secs(60)),
        1_000_000,
    );
    let r = s.call("GET", "/Patient", Some(&old), &[], None);
    assert_eq!(r.status, 401);
    assert!(r.body["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("expired"));
    // Scope without the interaction.
    let read_only = s.token("system/Patient.rs", None);
    let r = s.call(
        "POST",
        "/Patient",
        Some(&read_only),
        &[("Content-Type", "application/fhir+json")],
        Some(&patient("A").to_string()),
    );
    assert_eq!(r.status, 403);
    assert_eq!(issue_code(&r), "forbidden");
    assert_eq!(
        s.call("GET", "/Observation", Some(&read_only), &[], None)
            .status,
        403
    );
    assert_eq!(
        s.call("GET", "/Patient", Some(&read_only), &[], None)
            .status,
        200
    );
}

#[test]
fn content_negotiation() {
    let s = start();
    let t = s.admin();
    assert_eq!(
        s.call(
            "GET",
            "/Patient",
            Some(&t),
            &[("Accept", "application/fhir+xml")],
            None
        )
        .status,
        406
    );
    assert_eq!(
        s.call("GET", "/Patient?_format=xml", Some(&t), &[], None)
            .status,
        406
    );
    let r = s.call(
        "GET",
        "/Patient?_format=json",
        Some(&t),
        &[("Accept", "application/json")],
        None,
    );
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("application/fhir+json"));
    let r = s.call(
        "POST",
        "/Patient",
        Some(&t),
        &[("Content-Type", "application/fhir+xml")],
        Some("<Patient/>"),
    );
    assert_eq!(r.status, 415);
    assert_eq!(issue_code(&r), "not-supported");
    let r = s.call(
        "POST",
        "/Patient",
        Some(&t),
        &[("Content-Type", "application/json")],
        Some("{not json"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(s.get("/NoSuchType/1").status, 404);
}

#[test]
fn crud_with_versions_and_prefer() {
    let s = start();
    let r = s.post("/Patient", &patient("Smith"));
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.headers["etag"], "W/\"1\"");
    assert!(r.headers["last-modified"].ends_with("GMT"));
    assert_eq!(
        r.headers["location"],
        format!("{}/Patient/{id}/_history/1", s.base)
    );
    let r = s.get(&format!("/Patient/{id}"));
    assert_eq!(
        (r.status, r.body["name"][0]["family"].as_str()),
        (200, Some("Smith"))
    );
    let mut p = patient("Jones");
    p["id"] = json!(id);
    let r = s.put(&format!("/Patient/{id}"), &p, &[("If-Match", "W/\"1\"")]);
    assert_eq!((r.status, r.headers["etag"].as_str()), (200, "W/\"2\""));
    let r = s.put(&format!("/Patient/{id}"), &p, &[("If-Match", "W/\"1\"")]);
    assert_eq!(r.status, 412);
    assert_eq!(issue_code(&r), "conflict");
    let r = s.get(&format!("/Patient/{id}/_history/1"));
    assert_eq!(r.body["name"][0]["family"], "Smith");
    assert_eq!(s.get(&format!("/Patient/{id}/_history/9")).status, 404);
    // Update-as-create with a client id.
    let r = s.put("/Patient/client-1", &patient("New"), &[]);
    assert_eq!(r.status, 201);
    // Body id must match.
    let r = s.put(
        "/Patient/client-2",
        &json!({"resourceType": "Patient", "id": "other"}),
        &[],
    );
    assert_eq!(r.status, 400);
    // Prefer.
    let t = s.admin();
    let ct = ("Content-Type", "application/fhir+json");
    let r = s.call(
        "POST",
        "/Patient",
        Some(&t),
        &[ct, ("Prefer", "return=minimal")],
        Some(&patient("M").to_string()),
    );
    assert_eq!((r.status, r.text.as_str()), (201, ""));
    assert!(r.headers.contains_key("location"));
    let r = s.call(
        "POST",
        "/Patient",
        Some(&t),
        &[ct, ("Prefer", "return=OperationOutcome")],
        Some(&patient("O").to_string()),
    );
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    // Delete, then 410.
    let r = s.call("DELETE", &format!("/Patient/{id}"), Some(&t), &[], None);
    assert_eq!(r.status, 204);
    let r = s.get(&format!("/Patient/{id}"));
    assert_eq!((r.status, issue_code(&r).as_str()), (410, "deleted"));
    assert_eq!(s.get("/Patient/never").status, 404);
}

#[test]
fn invalid_resources_are_rejected_and_not_written() {
    let s = start();
    let bad = json!({"resourceType": "Patient", "gender": "sometimes", "birthDate": "2020-13-01"});
    let r = s.post("/Patient", &bad);
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.body["issue"].as_array().unwrap().len() >= 2);
    assert!(r.text.contains("Patient.gender"));
    let r = s.get("/Patient?_summary=count");
    assert_eq!(r.body["total"], 0);
    let r = s.post(
        "/Patient",
        &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
    );
    assert_eq!(r.status, 400);
    let r = s.post("/Patient", &json!({"name": "x"}));
    assert_eq!(r.status, 400);
}

#[test]
fn conditional_create_update_delete() {
    let s = start();
    let t = s.admin();
    let ct = ("Content-Type", "application/fhir+json");
    let create = |h: &str| {
        s.call(
            "POST",
            "/Patient",
            Some(&t),
            &[ct, ("If-None-Exist", h)],
            Some(&patient("C1").to_string()),
        )
    };
    let r1 = create("identifier=urn:mrn|C1");
    assert_eq!(r1.status, 201);
    let r2 = create("identifier=urn:mrn|C1");
    assert_eq!(r2.status, 200);
    assert_eq!(r2.body["id"], r1.body["id"]);
    s.create_patient("C2");
    s.create_patient("C2");
    assert_eq!(create("identifier=urn:mrn|C2").status, 412);
    assert_eq!(create("bogus-param=1").status, 400);
    // Conditional update: one match updates it, none creates.
    let mut p = patient("C1");
    p["active"] = json!(true);
    let r = s.put("/Patient?identifier=urn:mrn|C1", &p, &[]);
    assert_eq!((r.status, &r.body["id"]), (200, &r1.body["id"]));
    let r = s.put("/Patient?identifier=urn:mrn|C3", &patient("C3"), &[]);
    assert_eq!(r.status, 201);
    assert_eq!(
        s.put("/Patient?identifier=urn:mrn|C2", &patient("C2"), &[])
            .status,
        412
    );
    // Conditional delete.
    assert_eq!(
        s.call(
            "DELETE",
            "/Patient?identifier=urn:mrn|C2",
            Some(&t),
            &[],
            None
        )
        .status,
        412
    );
    assert_eq!(
        s.call(
            "DELETE",
            "/Patient?identifier=urn:mrn|C3",
            Some(&t),
            &[],
            None
        )
        .status,
        204
    );
    assert_eq!(
        s.get("/Patient?identifier=urn:mrn|C3&_summary=count").body["total"],
        0
    );
}

#[test]
fn json_patch() {
    let s = start();
    let id = s.create_patient("P");
    let t = s.admin();
    let ct = ("Content-Type", "application/json-patch+json");
    let patch = json!([{"op": "replace", "path": "/name/0/family", "value": "Q"}, {"op": "add", "path": "/active", "value": true}]);
    let r = s.call(
        "PATCH",
        &format!("/Patient/{id}"),
        Some(&t),
        &[ct, ("If-Match", "W/\"1\"")],
        Some(&patch.to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (
            r.body["name"][0]["family"].as_str(),
            r.body["active"].as_bool()
        ),
        (Some("Q"), Some(true))
    );
    assert_eq!(r.headers["etag"], "W/\"2\"");
    let r = s.call(
        "PATCH",
        &format!("/Patient/{id}"),
        Some(&t),
        &[ct, ("If-Match", "W/\"1\"")],
        Some(&patch.to_string()),
    );
    assert_eq!(r.status, 412);
    let r = s.call(
        "PATCH",
        &format!("/Patient/{id}"),
        Some(&t),
        &[("Content-Type", "application/fhir+json")],
        Some(&patch.to_string()),
    );
    assert_eq!(r.status, 415);
    let failing = json!([{"op": "test", "path": "/active", "value": false}]);
    assert_eq!(
        s.call(
            "PATCH",
            &format!("/Patient/{id}"),
            Some(&t),
            &[ct],
            Some(&failing.to_string())
        )
        .status,
        422
    );
    let invalid = json!([{"op": "add", "path": "/gender", "value": "sometimes"}]);
    assert_eq!(
        s.call(
            "PATCH",
            &format!("/Patient/{id}"),
            Some(&t),
            &[ct],
            Some(&invalid.to_string())
        )
        .status,
        422
    );
    assert_eq!(s.get(&format!("/Patient/{id}")).headers["etag"], "W/\"2\"");
}

#[test]
fn concurrent_if_match_updates_exactly_one_wins() {
    let s = Arc::new(start());
    let id = s.create_patient("Race");
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                let mut p = patient(&format!("R{i}"));
                p["id"] = json!(id);
                s.put(&format!("/Patient/{id}"), &p, &[("If-Match", "W/\"1\"")])
                    .status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|&&c| c == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&c| c == 412).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(s.get(&format!("/Patient/{id}")).headers["etag"], "W/\"2\"");
}

#[test]
fn body_limit() {
    let s = start_with(|c| c.max_body_bytes = 1_000, None);
    let mut p = patient("Big");
    p["name"][0]["given"] = json!(["x".repeat(2_000)]);
    let r = s.post("/Patient", &p);
    assert_eq!(r.status, 413);
    assert_eq!(issue_code(&r), "too-long");
}

#[test]
fn audit_trail_records_who_what_outcome() {
    let s = start();
    let id = s.create_patient("Audited");
    s.get(&format!("/Patient/{id}"));
    s.call("GET", "/Patient", None, &[], None);
    let recs = s.api.audit().recent();
    assert!(recs
        .iter()
        .any(|r| r.action == "create" && r.subject == "tester" && r.status == 201));
    assert!(recs
        .iter()
        .any(|r| r.action == "read" && r.target == format!("/Patient/{id}") && r.status == 200));
    assert!(recs
        .iter()
        .any(|r| r.subject == "anonymous" && r.status == 401));
    let file = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    let lines: Vec<Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), recs.len());
    assert!(lines
        .iter()
        .any(|l| l["action"] == "read" && l["sub"] == "tester" && l["outcome"] == "success"));
    // The admin endpoint, and its authorization.
    let r = s.get("/_audit?action=read");
    assert_eq!(r.status, 200);
    assert!(r.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["action"] == "read"));
    let patient_token = s.token("patient/*.rs", Some(&id));
    assert_eq!(
        s.call("GET", "/_audit", Some(&patient_token), &[], None)
            .status,
        403
    );
}
