//! Search, paging, result parameters, patient compartments, timeouts, history,
//! $validate and $everything.

use super::*;

#[test]
fn search_paging_and_result_parameters() {
    let s = start();
    let p = s.create_patient("S");
    for v in [60.0, 70.0, 80.0, 90.0, 100.0] {
        assert_eq!(s.post("/Observation", &observation(&p, v)).status, 201);
    }
    let r = s.get("/Observation?code=http://loinc.org|8867-4&_count=2&_total=accurate");
    assert_eq!(r.status, 200);
    assert_eq!(
        (r.body["type"].as_str(), r.body["total"].as_u64()),
        (Some("searchset"), Some(5))
    );
    assert_eq!(entries(&r).len(), 2);
    assert!(entries(&r).iter().all(|e| e["search"]["mode"] == "match"));
    let mut seen: Vec<String> = entries(&r)
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    let mut next = link(&r, "next");
    assert!(next.as_deref().unwrap().contains("_cursor="));
    while let Some(url) = next {
        let r = s.get(&url);
        assert_eq!(r.status, 200, "{}", r.text);
        seen.extend(
            entries(&r)
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string()),
        );
        next = link(&r, "next");
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);
    // POST _search with a form body.
    let r = s.call(
        "POST",
        "/Observation/_search",
        Some(&s.admin()),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some("value-quantity=gt75&_total=accurate"),
    );
    assert_eq!((r.status, r.body["total"].as_u64()), (200, Some(3)));
    // _summary=count, _elements, _include.
    let r = s.get("/Observation?_summary=count");
    assert_eq!((r.body["total"].as_u64(), entries(&r).len()), (Some(5), 0));
    let r = s.get("/Observation?_elements=subject&_count=1");
    let res = &entries(&r)[0]["resource"];
    assert!(
        res.get("valueQuantity").is_none()
            && res.get("subject").is_some()
            && res.get("status").is_some()
    );
    assert_eq!(res["meta"]["tag"][0]["code"], "SUBSETTED");
    let r = s.get("/Observation?_include=Observation:subject&_count=10");
    let inc: Vec<&Value> = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .collect();
    assert_eq!(inc.len(), 1);
    assert_eq!(inc[0]["resource"]["id"], p.as_str());
    // Unknown parameters: reported, or 400 under handling=strict.
    let r = s.get("/Observation?frobnicate=1&_count=1");
    assert_eq!(r.status, 200);
    let outcome = entries(&r)
        .into_iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .unwrap();
    assert!(outcome["resource"]["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("frobnicate"));
    let r = s.call(
        "GET",
        "/Observation?frobnicate=1",
        Some(&s.admin()),
        &[("Prefer", "handling=strict")],
        None,
    );
    assert_eq!(r.status, 400);
    // Malformed values are 400 with the parameter as expression.
    let r = s.get("/Observation?date=notadate");
    assert_eq!(r.status, 400);
    assert_eq!(r.body["issue"][0]["expression"][0], "date");
    // System search.
    let r = s.get("?_type=Patient,Observation&_total=accurate");
    assert_eq!(r.body["total"], 6, "{}", r.text);
    // A tampered cursor is a clean 400.
    assert_eq!(s.get("/Observation?_cursor=garbage").status, 400);
}

#[test]
fn patient_scopes_are_limited_to_the_compartment() {
    let s = start();
    let p1 = s.create_patient("One");
    let p2 = s.create_patient("Two");
    let o1 = s.post("/Observation", &observation(&p1, 60.0)).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o2 = s.post("/Observation", &observation(&p2, 70.0)).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    // p1 as performer of an observation about nobody in particular.
    let mut perf = observation(&p2, 80.0);
    perf["subject"] = json!({"reference": "Group/g"});
    perf["performer"] = json!([{"reference": format!("Patient/{p1}")}]);
    let o3 = s.post("/Observation", &perf).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = s.token("patient/*.rs patient/Observation.c", Some(&p1));
    let r = s.call("GET", "/Observation?_total=accurate", Some(&t), &[], None);
    assert_eq!(r.status, 200, "{}", r.text);
    let mut ids: Vec<String> = entries(&r)
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut want = vec![o1.clone(), o3.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(r.body["total"], 2);
    // Paging one at a time through the sub-queries gives the same set.
    let mut paged = Vec::new();
    let mut url = Some("/Observation?_count=1".to_string());
    while let Some(u) = url {
        let r = s.call("GET", &u, Some(&t), &[], None);
        paged.extend(
            entries(&r)
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string()),
        );
        url = link(&r, "next");
    }
    paged.sort();
    assert_eq!(paged, want);
    assert_eq!(
        s.call("GET", &format!("/Observation/{o1}"), Some(&t), &[], None)
            .status,
        200
    );
    assert_eq!(
        s.call("GET", &format!("/Observation/{o2}"), Some(&t), &[], None)
            .status,
        403
    );
    let r = s.call("GET", "/Patient", Some(&t), &[], None);
    assert_eq!(entries(&r).len(), 1);
    let ct = ("Content-Type", "application/fhir+json");
    let r = s.call(
        "POST",
        "/Observation",
        Some(&t),
        &[ct],
        Some(&observation(&p2, 1.0).to_string()),
    );
    assert_eq!(r.status, 403);
    let r = s.call(
        "POST",
        "/Observation",
        Some(&t),
        &[ct],
        Some(&observation(&p1, 1.0).to_string()),
    );
    assert_eq!(r.status, 201);
    // $everything under the patient token: only p1's data.
    let r = s.call(
        "GET",
        &format!("/Patient/{p1}/$everything"),
        Some(&t),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let all: Vec<Value> = entries(&r);
    assert_eq!(all.len(), 4, "{}", r.text);
    assert!(all.iter().all(|e| e["resource"]["id"] != o2.as_str()));
    assert_eq!(
        s.call(
            "GET",
            &format!("/Patient/{p2}/$everything"),
            Some(&t),
            &[],
            None
        )
        .status,
        403
    );
}

fn slow(store: SqliteStore) -> Arc<dyn FhirStore> {
    Arc::new(Slow(store))
}

/// A store whose searches on `_id=slow` take two seconds.
struct Slow(SqliteStore);

impl FhirStore for Slow {
    fn create(&self, r: Value) -> vigil_store::Result<vigil_store::Stored> {
        self.0.create(r)
    }
    fn update(
        &self,
        t: &str,
        id: &str,
        r: Value,
        m: Option<u64>,
    ) -> vigil_store::Result<(vigil_store::Stored, bool)> {
        self.0.update(t, id, r, m)
    }
    fn delete(
        &self,
        t: &str,
        id: &str,
        m: Option<u64>,
    ) -> vigil_store::Result<Option<vigil_store::Stored>> {
        self.0.delete(t, id, m)
    }
    fn read(&self, t: &str, id: &str) -> vigil_store::Result<vigil_store::ReadOutcome> {
        self.0.read(t, id)
    }
    fn vread(&self, t: &str, id: &str, v: u64) -> vigil_store::Result<vigil_store::ReadOutcome> {
        self.0.vread(t, id, v)
    }
    fn history(
        &self,
        s: vigil_store::HistoryScope,
        q: vigil_store::HistoryQuery,
    ) -> vigil_store::Result<vigil_store::HistoryPage> {
        self.0.history(s, q)
    }
    fn transaction(
        &self,
        ops: Vec<vigil_store::WriteOp>,
    ) -> vigil_store::Result<Vec<vigil_store::WriteOutcome>> {
        self.0.transaction(ops)
    }
    fn search(
        &self,
        q: &SearchQuery,
        p: &vigil_store::SearchPage,
    ) -> vigil_store::Result<vigil_store::SearchResult> {
        if q.to_query_string().contains("_id=slow") {
            std::thread::sleep(Duration::from_secs(2));
        }
        self.0.search(q, p)
    }
    fn index_values(
        &self,
        t: &str,
        id: &str,
    ) -> vigil_store::Result<Vec<(String, vigil_store::OwnedIndexValue)>> {
        self.0.index_values(t, id)
    }
}

#[test]
fn slow_searches_time_out_with_503() {
    let s = start_with(
        |c| c.search_timeout = Duration::from_millis(200),
        Some(slow),
    );
    let started = std::time::Instant::now();
    let r = s.get("/Patient?_id=slow");
    assert_eq!(r.status, 503);
    assert_eq!(issue_code(&r), "too-costly");
    assert!(
        started.elapsed() < Duration::from_millis(1_900),
        "the request waited for the store"
    );
    assert_eq!(s.get("/Patient?_id=fast").status, 200);
}

#[test]
fn history_instance_type_system() {
    let s = start();
    let id = s.create_patient("H");
    let mut p = patient("H2");
    p["id"] = json!(id);
    assert_eq!(s.put(&format!("/Patient/{id}"), &p, &[]).status, 200);
    assert_eq!(
        s.call(
            "DELETE",
            &format!("/Patient/{id}"),
            Some(&s.admin()),
            &[],
            None
        )
        .status,
        204
    );
    let r = s.get(&format!("/Patient/{id}/_history"));
    assert_eq!((r.status, r.body["type"].as_str()), (200, Some("history")));
    let e = entries(&r);
    assert_eq!(e.len(), 3);
    assert_eq!(e[0]["request"]["method"], "DELETE");
    assert!(e[0].get("resource").is_none());
    assert_eq!(e[1]["request"]["method"], "PUT");
    assert_eq!(e[1]["response"]["etag"], "W/\"2\"");
    assert_eq!(e[2]["request"]["method"], "POST");
    assert_eq!(e[2]["response"]["status"], "201 Created");
    let since = e[1]["response"]["lastModified"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.get(&format!("/Patient/{id}/_history?_since={since}"));
    assert_eq!(entries(&r).len(), 2);
    let r = s.get(&format!(
        "/Patient/{id}/_history?_at={}",
        e[2]["response"]["lastModified"].as_str().unwrap()
    ));
    assert_eq!(entries(&r).len(), 1);
    s.create_patient("H3");
    let r = s.get("/Patient/_history?_count=2");
    assert_eq!(entries(&r).len(), 2);
    let next = link(&r, "next").unwrap();
    let r2 = s.get(&next);
    assert_eq!(entries(&r2).len(), 2);
    assert!(link(&r2, "next").is_none());
    assert_eq!(entries(&s.get("/_history")).len(), 4);
    assert_eq!(s.get("/Patient/_history?_since=yesterday").status, 400);
    assert_eq!(s.get("/Patient/nope/_history").status, 404);
}

#[test]
fn validate_operation() {
    let s = start();
    let r = s.post(
        "/Patient/$validate",
        &json!({"resourceType": "Patient", "gender": "x"}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body["issue"][0]["severity"], "error");
    let r = s.post("/Patient/$validate", &json!({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient("V")}]}));
    assert_eq!(r.status, 200);
    assert!(
        r.body["issue"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["severity"] != "error"),
        "{}",
        r.text
    );
    let r = s.post("/Patient/abc/$validate", &patient("V"));
    assert_eq!(r.status, 200);
    // Nothing was written.
    assert_eq!(s.get("/Patient?_summary=count").body["total"], 0);
}
