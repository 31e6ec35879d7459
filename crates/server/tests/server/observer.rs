//! The write observer: told about every successful write, through every write path.

use super::*;
use std::sync::Mutex;

#[test]
fn write_observer_sees_every_successful_write() {
    let s = start();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let _ = s.api.clone().on_write(Arc::new(move |t: &str, id: &str| {
        log.lock().unwrap().push(format!("{t}/{id}"));
    }));
    let take = || std::mem::take(&mut *seen.lock().unwrap());

    let pid = s.create_patient("Obs");
    assert_eq!(take(), [format!("Patient/{pid}")]);

    let device = json!({"resourceType": "Device", "id": "d1",
        "patient": {"reference": format!("Patient/{pid}")}});
    assert_eq!(s.put("/Device/d1", &device, &[]).status, 201);
    assert_eq!(take(), ["Device/d1"]);

    let r = s.call(
        "PATCH",
        "/Device/d1",
        Some(&s.admin()),
        &[("Content-Type", "application/json-patch+json")],
        Some(r#"[{"op": "remove", "path": "/patient"}]"#),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(take(), ["Device/d1"]);

    // A refused write is not reported.
    let r = s.put(
        "/Device/d1",
        &json!({"resourceType": "Device", "id": "d1", "status": "nope"}),
        &[],
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(take().is_empty());

    // Each entry of a transaction.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": device, "request": {"method": "PUT", "url": "Device/d1"}},
        {"resource": patient("Tx"), "request": {"method": "POST", "url": "Patient"}}
    ]});
    let r = s.post("", &bundle);
    assert_eq!(r.status, 200, "{}", r.text);
    // (in the transaction's processing order: POSTs before PUTs)
    let mut got = take();
    got.sort();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], "Device/d1");
    assert!(got[1].starts_with("Patient/"), "{got:?}");

    // Batch entries go through the single-resource paths.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "DELETE", "url": "Device/d1"}}
    ]});
    let r = s.post("", &batch);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(take(), ["Device/d1"]);
}
