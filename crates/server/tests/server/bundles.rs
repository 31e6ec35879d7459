//! Batch and transaction Bundles.

use super::*;

#[test]
fn transaction_resolves_urn_uuids_atomically() {
    let s = start();
    let mut obs = observation("x", 72.0);
    obs["subject"] = json!({"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"});
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", "resource": obs,
         "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "resource": patient("T"),
         "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient?identifier=urn:mrn|T"}}
    ]});
    let r = s.post("", &bundle);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["type"], "transaction-response");
    let e = entries(&r);
    assert_eq!(e.len(), 3);
    assert_eq!(e[0]["response"]["status"], "201 Created");
    let pid = e[1]["resource"]["id"].as_str().unwrap();
    assert_eq!(
        e[0]["resource"]["subject"]["reference"],
        format!("Patient/{pid}")
    );
    assert!(e[1]["response"]["location"]
        .as_str()
        .unwrap()
        .starts_with(&format!("Patient/{pid}/_history/1")));
    assert_eq!(e[2]["resource"]["entry"].as_array().unwrap().len(), 1);
    // Conditional reference + If-None-Exist.
    let mut obs2 = observation("x", 80.0);
    obs2["subject"] = json!({"reference": "Patient?identifier=urn:mrn|T"});
    let b2 = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": obs2, "request": {"method": "POST", "url": "Observation"}},
        {"resource": patient("T"), "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|T"}}
    ]});
    let r = s.post("", &b2);
    assert_eq!(r.status, 200, "{}", r.text);
    let e = entries(&r);
    assert_eq!(
        e[0]["resource"]["subject"]["reference"],
        format!("Patient/{pid}")
    );
    assert_eq!(e[1]["response"]["status"], "200 OK");
    assert_eq!(s.get("/Patient?_summary=count").body["total"], 1);
    // One invalid entry fails everything.
    let b3 = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("U"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": "x"}, "request": {"method": "POST", "url": "Patient"}}
    ]});
    let r = s.post("", &b3);
    assert_eq!(r.status, 422);
    assert!(r.text.contains("Bundle.entry[1]"));
    assert_eq!(s.get("/Patient?_summary=count").body["total"], 1);
    // Unresolvable conditional reference.
    let mut obs4 = observation("x", 1.0);
    obs4["subject"] = json!({"reference": "Patient?identifier=urn:mrn|nobody"});
    let b4 = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": obs4, "request": {"method": "POST", "url": "Observation"}}]});
    assert_eq!(s.post("", &b4).status, 412);
    // Update and delete in one transaction; the same resource twice is a conflict.
    let mut p = patient("T");
    p["id"] = json!(pid);
    p["active"] = json!(true);
    let b5 = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": p, "request": {"method": "PUT", "url": format!("Patient/{pid}"), "ifMatch": "W/\"1\""}},
        {"request": {"method": "DELETE", "url": format!("Patient/{pid}")}}]});
    assert_eq!(s.post("", &b5).status, 409);
    let b6 = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": p, "request": {"method": "PUT", "url": format!("Patient/{pid}"), "ifMatch": "W/\"1\""}}]});
    let r = s.post("", &b6);
    assert_eq!(entries(&r)[0]["response"]["etag"], "W/\"2\"");
}

#[test]
fn batch_entries_are_independent() {
    let s = start();
    let id = s.create_patient("B");
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient("B2"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": "x"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": format!("Patient/{id}")}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"request": {"method": "DELETE", "url": format!("Patient/{id}")}}
    ]});
    let r = s.post("", &bundle);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["type"], "batch-response");
    let st: Vec<String> = entries(&r)
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap()[..3].to_string())
        .collect();
    assert_eq!(st, ["201", "422", "200", "404", "204"]);
    assert_eq!(
        entries(&r)[1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(s.get(&format!("/Patient/{id}")).status, 410);
}

#[test]
fn bundle_entry_limit_and_type() {
    let s = start_with(|c| c.max_bundle_entries = 2, None);
    let e = json!({"resource": patient("L"), "request": {"method": "POST", "url": "Patient"}});
    let r = s.post(
        "",
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": [e, e, e]}),
    );
    assert_eq!(r.status, 413);
    let r = s.post("", &json!({"resourceType": "Bundle", "type": "collection"}));
    assert_eq!(r.status, 400);
}

/// Kick off an export and poll it to its manifest.
pub(crate) fn export(s: &Server, token: &str, path: &str) -> Value {
    let r = s.call(
        "GET",
        path,
        Some(token),
        &[("Prefer", "respond-async")],
        None,
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let poll = r.headers["content-location"].clone();
    for _ in 0..200 {
        let r = s.call("GET", &poll, Some(token), &[], None);
        match r.status {
            202 => std::thread::sleep(Duration::from_millis(25)),
            200 => return r.body,
            other => panic!("poll answered {other}: {}", r.text),
        }
    }
    panic!("export did not finish");
}

pub(crate) fn count_of(manifest: &Value, t: &str) -> u64 {
    manifest["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == t)
        .map_or(0, |o| o["count"].as_u64().unwrap())
}

#[test]
fn bulk_export() {
    let s = start_with(|_| {}, None);
    let p1 = s.create_patient("E1");
    let p2 = s.create_patient("E2");
    for (p, v) in [(&p1, 60.0), (&p1, 80.0), (&p2, 90.0)] {
        assert_eq!(s.post("/Observation", &observation(p, v)).status, 201);
    }
    let admin = s.admin();
    assert_eq!(
        s.call("GET", "/$export", Some(&admin), &[], None).status,
        400
    );
    let m = export(&s, &admin, "/$export?_type=Patient,Observation");
    assert_eq!(
        (count_of(&m, "Patient"), count_of(&m, "Observation")),
        (2, 3)
    );
    assert_eq!(m["requiresAccessToken"], true);
    let url = m["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "Observation")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.call("GET", &url, Some(&admin), &[], None);
    assert_eq!(r.status, 200);
    let lines: Vec<Value> = r
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["resourceType"] == "Observation"));
    // Another subject cannot read the files.
    let other = s.key.issue(&TokenRequest::new(
        "someone-else",
        ScopeSet::parse("system/*.cruds").unwrap(),
    ));
    assert_eq!(s.call("GET", &url, Some(&other), &[], None).status, 404);
    // _typeFilter, and a patient token only exports its compartment.
    let m = export(
        &s,
        &admin,
        "/$export?_type=Observation&_typeFilter=Observation%3Fvalue-quantity%3Dgt75",
    );
    assert_eq!(count_of(&m, "Observation"), 2);
    let pt = s.token("patient/*.rs", Some(&p1));
    let m = export(&s, &pt, "/Patient/$export?_type=Patient,Observation");
    assert_eq!(
        (count_of(&m, "Patient"), count_of(&m, "Observation")),
        (1, 2)
    );
    // Group export and cancel.
    let g = s.post(
        "/Group",
        &json!({"resourceType": "Group", "type": "person", "actual": true,
        "member": [{"entity": {"reference": format!("Patient/{p2}")}}]}),
    );
    assert_eq!(g.status, 201, "{}", g.text);
    let gid = g.body["id"].as_str().unwrap();
    let m = export(
        &s,
        &admin,
        &format!("/Group/{gid}/$export?_type=Observation"),
    );
    assert_eq!(count_of(&m, "Observation"), 1);
    let r = s.call(
        "GET",
        "/$export",
        Some(&admin),
        &[("Prefer", "respond-async")],
        None,
    );
    let poll = r.headers["content-location"].clone();
    assert_eq!(s.call("DELETE", &poll, Some(&admin), &[], None).status, 202);
    assert_eq!(s.call("GET", &poll, Some(&admin), &[], None).status, 404);
}
