//! The FHIR base with and without a trailing slash (many clients post batches and
//! transactions to `[base]/`).

use super::*;

#[test]
fn base_with_trailing_slash() {
    let s = start();
    let e = json!({"resource": patient("Slash"), "request": {"method": "POST", "url": "Patient"}});
    for path in ["/", ""] {
        let r = s.post(
            path,
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": [e]}),
        );
        assert_eq!(r.status, 200, "POST {path:?}: {}", r.text);
        assert_eq!(r.body["type"], "transaction-response");
        let r = s.post(
            path,
            &json!({"resourceType": "Bundle", "type": "batch", "entry": [e]}),
        );
        assert_eq!(r.status, 200, "POST {path:?}: {}", r.text);
        assert_eq!(r.body["type"], "batch-response");
    }
    // System search at `[base]/?…`, query string kept.
    for path in ["/?_type=Patient&name=slash", "?_type=Patient&name=slash"] {
        let r = s.get(path);
        assert_eq!(r.status, 200, "GET {path:?}: {}", r.text);
        assert_eq!(entries(&r).len(), 4, "{}", r.text);
    }
    // Other paths are unchanged; the trailing slash needs a token like the rest.
    assert_eq!(s.get("/Patient/").status, 200);
    assert_eq!(s.call("GET", "/", None, &[], None).status, 401);
    assert_eq!(s.get("/metadata").status, 200);
}
