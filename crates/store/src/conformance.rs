//! The conformance suite every [`FhirStore`] backend must pass.
//!
//! Each check is a public function taking a store factory: `make(name)` opens the store
//! called `name` — a fresh, empty one the first time, the same data again after the
//! previous store of that name was dropped (for the persistence check). A backend's
//! test binary instantiates all checks as `#[test]`s with
//! [`store_conformance_tests!`](crate::store_conformance_tests):
//!
//! ```text
//! (as instantiated in crates/store/tests/store.rs)
//! vigil_store::store_conformance_tests!({
//!     let dir = TestDir::new();
//!     move |name: &str| -> Box<dyn FhirStore> {
//!         Box::new(SqliteStore::open(&dir.path().join(name)).unwrap())
//!     }
//! });
//! ```
//!
//! The expression is evaluated once per test, so it can own per-test resources
//! (a temporary directory, a database schema) that it releases when dropped.
//!
//! This module is test code compiled into the library so other backends' crates can
//! use it; it panics on failures like any test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A store factory: `make(name)` opens (creating or reopening) the store `name`.
pub type Make<'a> = &'a dyn Fn(&str) -> Box<dyn FhirStore>;

/// Generate one `#[test]` per conformance check for a backend; see
/// [`conformance`](crate::conformance).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@tests $make;
            create_assigns_id_and_meta,
            update_creates_versions,
            if_match_conflicts,
            update_as_create,
            invalid_writes_are_rejected,
            delete_gone_recreate,
            read_and_vread_not_found,
            history_order_and_paging,
            history_since_and_at,
            transaction_is_atomic,
            transaction_outcomes,
            batch_mates_are_isolated,
            concurrent_updates_lose_nothing,
            concurrent_creates,
            index_rows_match_extract,
            index_rows_follow_versions,
            data_survives_reopen
        );
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let make = $make;
                $crate::conformance::$name(&make);
            }
        )*
    };
}

fn patient(family: &str) -> Value {
    json!({"resourceType": "Patient", "active": true, "name": [{"family": family}],
           "identifier": [{"system": "urn:test", "value": family}]})
}

/// A heart-rate Observation for a patient.
pub fn observation(patient_id: &str, value: i64, when: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}], "text": "Heart rate"},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}})
}

fn found(s: &dyn FhirStore, rt: &str, id: &str) -> Stored {
    match s.read(rt, id).unwrap() {
        ReadOutcome::Found(x) => x,
        other => panic!("{rt}/{id}: expected Found, got {other:?}"),
    }
}

fn check_meta(s: &Stored) {
    assert_eq!(s.resource["id"], s.id.as_str());
    assert_eq!(s.resource["resourceType"], s.resource_type.as_str());
    assert_eq!(
        s.resource["meta"]["versionId"],
        s.version.to_string().as_str()
    );
    assert_eq!(
        s.resource["meta"]["lastUpdated"],
        s.last_updated_text.as_str()
    );
    assert_eq!(s.last_updated_text, format_rfc3339(s.last_updated));
}

/// Create assigns a new id (ignoring the body's), version 1 and the meta elements;
/// reads return the same.
pub fn create_assigns_id_and_meta(make: Make<'_>) {
    let s = make("create");
    let mut body = patient("Chalmers");
    body["id"] = json!("client-chosen");
    body["meta"] = json!({"versionId": "99", "tag": [{"code": "kept"}]});
    let before = now_millis();
    let c = s.create(body).unwrap();
    assert_ne!(c.id, "client-chosen");
    assert_eq!(
        (c.resource_type.as_str(), c.version, c.deleted),
        ("Patient", 1, false)
    );
    assert!(c.last_updated >= before - 1000 && c.last_updated <= now_millis() + 1000);
    check_meta(&c);
    assert_eq!(c.resource["meta"]["tag"][0]["code"], "kept");
    assert_eq!(c.resource["name"][0]["family"], "Chalmers");
    let r = found(&*s, "Patient", &c.id);
    assert_eq!(r, c);
    let other = s.create(patient("Other")).unwrap();
    assert_ne!(other.id, c.id);
}

/// Updates create versions 2, 3, ...; vread returns each version as it was.
pub fn update_creates_versions(make: Make<'_>) {
    let s = make("versions");
    let c = s.create(patient("V1")).unwrap();
    let mut last = c.last_updated;
    for v in 2..=4u64 {
        let (u, created) = s
            .update("Patient", &c.id, patient(&format!("V{v}")), None)
            .unwrap();
        assert!(!created);
        assert_eq!(u.version, v);
        assert!(u.last_updated >= last);
        last = u.last_updated;
        check_meta(&u);
    }
    let r = found(&*s, "Patient", &c.id);
    assert_eq!(
        (r.version, r.resource["name"][0]["family"].clone()),
        (4, json!("V4"))
    );
    for v in 1..=4u64 {
        let ReadOutcome::Found(old) = s.vread("Patient", &c.id, v).unwrap() else {
            panic!("version {v} missing")
        };
        assert_eq!(old.version, v);
        assert_eq!(old.resource["name"][0]["family"], format!("V{v}").as_str());
        check_meta(&old);
    }
    assert_eq!(s.vread("Patient", &c.id, 5).unwrap(), ReadOutcome::NotFound);
}

/// If-Match must name the current version, for update and delete.
pub fn if_match_conflicts(make: Make<'_>) {
    let s = make("ifmatch");
    let c = s.create(patient("A")).unwrap();
    let (u, _) = s.update("Patient", &c.id, patient("B"), Some(1)).unwrap();
    assert_eq!(u.version, 2);
    assert_eq!(
        s.update("Patient", &c.id, patient("C"), Some(1))
            .unwrap_err(),
        StoreError::VersionConflict {
            expected: 1,
            actual: 2
        }
    );
    assert_eq!(
        s.delete("Patient", &c.id, Some(7)).unwrap_err(),
        StoreError::VersionConflict {
            expected: 7,
            actual: 2
        }
    );
    assert_eq!(
        s.update("Patient", "absent", patient("C"), Some(1))
            .unwrap_err(),
        StoreError::VersionConflict {
            expected: 1,
            actual: 0
        }
    );
    assert_eq!(found(&*s, "Patient", &c.id).version, 2);
    assert_eq!(s.read("Patient", "absent").unwrap(), ReadOutcome::NotFound);
    let d = s.delete("Patient", &c.id, Some(2)).unwrap().unwrap();
    assert_eq!(d.version, 3);
}

/// Update of an absent resource creates it under the given id.
pub fn update_as_create(make: Make<'_>) {
    let s = make("upcreate");
    let (u, created) = s.update("Patient", "p-1", patient("New"), None).unwrap();
    assert!(created);
    assert_eq!((u.id.as_str(), u.version), ("p-1", 1));
    check_meta(&u);
    let mut with_id = patient("New2");
    with_id["id"] = json!("p-1");
    let (u2, created) = s.update("Patient", "p-1", with_id, None).unwrap();
    assert!(!created);
    assert_eq!(u2.version, 2);
}

/// Writes the store cannot accept are `Invalid` and change nothing.
pub fn invalid_writes_are_rejected(make: Make<'_>) {
    let s = make("invalid");
    assert!(matches!(
        s.create(json!({"no": "type"})),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.update("Observation", "x", patient("A"), None),
        Err(StoreError::Invalid(_))
    ));
    let mut other_id = patient("A");
    other_id["id"] = json!("y");
    assert!(matches!(
        s.update("Patient", "x", other_id, None),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.update("Patient", "bad id!", patient("A"), None),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.read("Patient", "x").unwrap(), ReadOutcome::NotFound);
    let h = s
        .history(HistoryScope::System, HistoryQuery::default())
        .unwrap();
    assert!(h.entries.is_empty());
}

/// Delete keeps history: reads answer Gone, a second delete is a no-op, vread of the
/// delete is Gone and of older versions Found, and an update re-creates it with the
/// next version.
pub fn delete_gone_recreate(make: Make<'_>) {
    let s = make("delete");
    let c = s.create(patient("D")).unwrap();
    let d = s.delete("Patient", &c.id, None).unwrap().unwrap();
    assert!(d.deleted);
    assert_eq!(d.version, 2);
    check_meta(&d);
    assert_eq!(
        s.read("Patient", &c.id).unwrap(),
        ReadOutcome::Gone {
            version: 2,
            last_updated: d.last_updated
        }
    );
    assert_eq!(s.delete("Patient", &c.id, None).unwrap(), None);
    assert_eq!(s.delete("Patient", "never", None).unwrap(), None);
    assert!(matches!(
        s.vread("Patient", &c.id, 2).unwrap(),
        ReadOutcome::Gone { version: 2, .. }
    ));
    assert!(matches!(
        s.vread("Patient", &c.id, 1).unwrap(),
        ReadOutcome::Found(_)
    ));
    let (r, created) = s.update("Patient", &c.id, patient("D2"), None).unwrap();
    assert!(created);
    assert_eq!(r.version, 3);
    assert_eq!(found(&*s, "Patient", &c.id).version, 3);
    let h = s
        .history(
            HistoryScope::Instance("Patient".into(), c.id.clone()),
            HistoryQuery::default(),
        )
        .unwrap();
    let versions: Vec<_> = h.entries.iter().map(|e| (e.version, e.deleted)).collect();
    assert_eq!(versions, vec![(3, false), (2, true), (1, false)]);
}

/// Absent resources and versions are NotFound.
pub fn read_and_vread_not_found(make: Make<'_>) {
    let s = make("notfound");
    assert_eq!(s.read("Patient", "nope").unwrap(), ReadOutcome::NotFound);
    assert_eq!(
        s.vread("Patient", "nope", 1).unwrap(),
        ReadOutcome::NotFound
    );
    let c = s.create(patient("X")).unwrap();
    assert_eq!(s.read("Observation", &c.id).unwrap(), ReadOutcome::NotFound);
    assert_eq!(s.vread("Patient", &c.id, 0).unwrap(), ReadOutcome::NotFound);
    assert!(s.index_values("Patient", "nope").unwrap().is_empty());
}

fn all_pages(
    s: &dyn FhirStore,
    scope: HistoryScope,
    q: HistoryQuery,
    mid: &dyn Fn(),
) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut q = q;
    loop {
        let page = s.history(scope.clone(), q.clone()).unwrap();
        assert!(page.entries.len() <= q.count.unwrap_or(50));
        out.extend(page.entries);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
        mid();
    }
}

/// History is newest first at every scope; cursor paging returns each version exactly
/// once even when writes happen between pages.
pub fn history_order_and_paging(make: Make<'_>) {
    let s = make("history");
    let mut expected = Vec::new();
    for i in 0..7 {
        let p = s.create(patient(&format!("H{i}"))).unwrap();
        expected.push(("Patient".to_string(), p.id.clone(), 1u64));
        if i % 2 == 0 {
            let (u, _) = s.update("Patient", &p.id, patient("H"), None).unwrap();
            expected.push(("Patient".to_string(), p.id.clone(), u.version));
        }
        let o = s.create(observation(&p.id, 60 + i, "2024-01-01")).unwrap();
        expected.push(("Observation".to_string(), o.id.clone(), 1));
    }
    expected.reverse();
    let key = |e: &Stored| (e.resource_type.clone(), e.id.clone(), e.version);
    let written = AtomicU64::new(0);
    let mid = || {
        // Writes between pages must not shift or repeat later pages.
        s.create(patient("between")).unwrap();
        written.fetch_add(1, Ordering::Relaxed);
    };
    let q = HistoryQuery {
        count: Some(3),
        ..HistoryQuery::default()
    };
    let sys: Vec<_> = all_pages(&*s, HistoryScope::System, q.clone(), &mid)
        .iter()
        .map(key)
        .collect();
    assert_eq!(sys, expected);
    assert!(written.load(Ordering::Relaxed) >= 5);
    let before_type = written.load(Ordering::Relaxed);
    let obs: Vec<_> = all_pages(
        &*s,
        HistoryScope::Type("Observation".into()),
        q.clone(),
        &mid,
    )
    .iter()
    .map(key)
    .collect();
    let exp_obs: Vec<_> = expected
        .iter()
        .filter(|e| e.0 == "Observation")
        .cloned()
        .collect();
    assert_eq!(obs, exp_obs);
    assert!(written.load(Ordering::Relaxed) > before_type);
    // The whole history now also holds the patients written between pages, newest first.
    let all = all_pages(&*s, HistoryScope::System, HistoryQuery::default(), &|| {});
    assert_eq!(
        all.len() as u64,
        expected.len() as u64 + written.load(Ordering::Relaxed)
    );
    assert!(all
        .windows(2)
        .all(|w| w[0].last_updated >= w[1].last_updated));
    let p0 = &expected.last().unwrap().1;
    let inst: Vec<_> = all_pages(
        &*s,
        HistoryScope::Instance("Patient".into(), p0.clone()),
        HistoryQuery {
            count: Some(1),
            ..HistoryQuery::default()
        },
        &|| {},
    )
    .iter()
    .map(|e| e.version)
    .collect();
    assert_eq!(inst, vec![2, 1]);
    assert!(matches!(
        s.history(
            HistoryScope::System,
            HistoryQuery {
                cursor: Some("garbage".into()),
                ..HistoryQuery::default()
            }
        ),
        Err(StoreError::Invalid(_))
    ));
}

fn wait_for_next_ms(after: i64) {
    while now_millis() <= after + 1 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// `_since` keeps versions written at or after the instant; `_at` the versions current
/// at the instant.
pub fn history_since_and_at(make: Make<'_>) {
    let s = make("since");
    let a1 = s.create(patient("A")).unwrap();
    wait_for_next_ms(a1.last_updated);
    let b1 = s.create(patient("B")).unwrap();
    wait_for_next_ms(b1.last_updated);
    let (a2, _) = s.update("Patient", &a1.id, patient("A2"), None).unwrap();
    wait_for_next_ms(a2.last_updated);
    let bd = s.delete("Patient", &b1.id, None).unwrap().unwrap();
    let ids = |q: HistoryQuery| -> Vec<(String, u64)> {
        all_pages(&*s, HistoryScope::System, q, &|| {})
            .into_iter()
            .map(|e| (e.id, e.version))
            .collect()
    };
    let since = |t| HistoryQuery {
        since: Some(t),
        ..HistoryQuery::default()
    };
    let at = |t| HistoryQuery {
        at: Some(t),
        count: Some(1),
        ..HistoryQuery::default()
    };
    assert_eq!(
        ids(since(a2.last_updated)),
        vec![(b1.id.clone(), 2), (a1.id.clone(), 2)]
    );
    assert_eq!(ids(since(bd.last_updated + 1)), vec![]);
    assert_eq!(ids(since(a1.last_updated)).len(), 4);
    assert_eq!(ids(at(a1.last_updated - 1)), vec![]);
    assert_eq!(ids(at(a1.last_updated)), vec![(a1.id.clone(), 1)]);
    assert_eq!(
        ids(at(b1.last_updated)),
        vec![(b1.id.clone(), 1), (a1.id.clone(), 1)]
    );
    assert_eq!(
        ids(at(a2.last_updated)),
        vec![(a1.id.clone(), 2), (b1.id.clone(), 1)]
    );
    assert_eq!(
        ids(at(bd.last_updated)),
        vec![(b1.id.clone(), 2), (a1.id.clone(), 2)]
    );
    let inst = s
        .history(
            HistoryScope::Instance("Patient".into(), a1.id.clone()),
            HistoryQuery {
                at: Some(b1.last_updated),
                ..HistoryQuery::default()
            },
        )
        .unwrap();
    assert_eq!(inst.entries.len(), 1);
    assert_eq!(inst.entries[0].version, 1);
}

/// One failing operation rolls the whole transaction back.
pub fn transaction_is_atomic(make: Make<'_>) {
    let s = make("tx-atomic");
    let existing = s.create(patient("E")).unwrap();
    let new_id = crate::new_id();
    let ops = vec![
        WriteOp::Create {
            resource: patient("T"),
            id: Some(new_id.clone()),
        },
        WriteOp::Update {
            resource_type: "Patient".into(),
            id: existing.id.clone(),
            resource: patient("E2"),
            if_match: None,
        },
        WriteOp::Create {
            resource: observation(&new_id, 70, "2024-02-02"),
            id: None,
        },
        WriteOp::Delete {
            resource_type: "Patient".into(),
            id: "other".into(),
            if_match: Some(3),
        },
    ];
    assert_eq!(
        s.transaction(ops).unwrap_err(),
        StoreError::VersionConflict {
            expected: 3,
            actual: 0
        }
    );
    assert_eq!(s.read("Patient", &new_id).unwrap(), ReadOutcome::NotFound);
    let e = found(&*s, "Patient", &existing.id);
    assert_eq!(
        (e.version, e.resource["name"][0]["family"].clone()),
        (1, json!("E"))
    );
    assert!(s.index_values("Patient", &new_id).unwrap().is_empty());
    let h = all_pages(&*s, HistoryScope::System, HistoryQuery::default(), &|| {});
    assert_eq!(h.len(), 1);
    // The same resource twice is a conflict, and also changes nothing.
    let dup = vec![
        WriteOp::Update {
            resource_type: "Patient".into(),
            id: existing.id.clone(),
            resource: patient("X"),
            if_match: None,
        },
        WriteOp::Delete {
            resource_type: "Patient".into(),
            id: existing.id.clone(),
            if_match: None,
        },
    ];
    assert!(matches!(s.transaction(dup), Err(StoreError::Conflict(_))));
    assert_eq!(found(&*s, "Patient", &existing.id).version, 1);
    // Creating under an id that exists is a conflict.
    let clash = vec![WriteOp::Create {
        resource: patient("C"),
        id: Some(existing.id.clone()),
    }];
    assert!(matches!(s.transaction(clash), Err(StoreError::Conflict(_))));
}

/// A successful transaction returns one outcome per operation, in order.
pub fn transaction_outcomes(make: Make<'_>) {
    let s = make("tx-ok");
    let existing = s.create(patient("E")).unwrap();
    let gone = s.create(patient("G")).unwrap();
    let pid = crate::new_id();
    let out = s
        .transaction(vec![
            WriteOp::Create {
                resource: patient("T"),
                id: Some(pid.clone()),
            },
            WriteOp::Create {
                resource: observation(&pid, 80, "2024-03-03"),
                id: None,
            },
            WriteOp::Update {
                resource_type: "Patient".into(),
                id: existing.id.clone(),
                resource: patient("E2"),
                if_match: Some(1),
            },
            WriteOp::Update {
                resource_type: "Patient".into(),
                id: "fresh".into(),
                resource: patient("F"),
                if_match: None,
            },
            WriteOp::Delete {
                resource_type: "Patient".into(),
                id: gone.id.clone(),
                if_match: None,
            },
            WriteOp::Delete {
                resource_type: "Patient".into(),
                id: "never-there".into(),
                if_match: None,
            },
        ])
        .unwrap();
    assert_eq!(out.len(), 6);
    assert!(matches!(&out[0], WriteOutcome::Created(s) if s.id == pid));
    let WriteOutcome::Created(obs) = &out[1] else {
        panic!("{:?}", out[1])
    };
    assert_eq!(obs.resource_type, "Observation");
    assert!(matches!(&out[2], WriteOutcome::Updated(s) if s.version == 2));
    assert!(matches!(&out[3], WriteOutcome::Created(s) if s.id == "fresh"));
    assert!(matches!(&out[4], WriteOutcome::Deleted(Some(s)) if s.version == 2 && s.deleted));
    assert_eq!(out[5], WriteOutcome::Deleted(None));
    found(&*s, "Observation", &obs.id);
    found(&*s, "Patient", &pid);
    assert!(s.transaction(Vec::new()).unwrap().is_empty());
}

/// Requests written concurrently (and so possibly group-committed together) succeed or
/// fail on their own.
pub fn batch_mates_are_isolated(make: Make<'_>) {
    let s: Arc<dyn FhirStore> = Arc::from(make("isolated"));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                for i in 0..25 {
                    if (t + i) % 3 == 0 {
                        // Fails in the middle: its first create must not survive.
                        let id = crate::new_id();
                        let r = s.transaction(vec![
                            WriteOp::Create {
                                resource: patient("doomed"),
                                id: Some(id.clone()),
                            },
                            WriteOp::Update {
                                resource_type: "Patient".into(),
                                id: "no-such".into(),
                                resource: patient("x"),
                                if_match: Some(1),
                            },
                        ]);
                        assert!(r.is_err());
                        assert_eq!(s.read("Patient", &id).unwrap(), ReadOutcome::NotFound);
                    } else {
                        ok.push(s.create(patient("kept")).unwrap().id);
                    }
                }
                ok
            })
        })
        .collect();
    let ids: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    for id in &ids {
        found(&*s, "Patient", id);
    }
    let h = all_pages(&*s, HistoryScope::System, HistoryQuery::default(), &|| {});
    assert_eq!(h.len(), ids.len());
}

/// Many threads updating one resource with If-Match never lose an update: the final
/// version equals the number of successful updates.
pub fn concurrent_updates_lose_nothing(make: Make<'_>) {
    let s: Arc<dyn FhirStore> = Arc::from(make("concurrent"));
    let successes = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            let successes = successes.clone();
            std::thread::spawn(move || {
                let mut done = 0;
                while done < 20 {
                    let (current, count) = match s.read("Patient", "shared").unwrap() {
                        ReadOutcome::Found(p) => (
                            Some(p.version),
                            p.resource["multipleBirthInteger"].as_u64().unwrap(),
                        ),
                        _ => (None, 0),
                    };
                    let mut body = patient(&format!("thread{t}"));
                    body["multipleBirthInteger"] = json!(count + 1);
                    match s.update("Patient", "shared", body, current) {
                        Ok(_) => {
                            successes.fetch_add(1, Ordering::Relaxed);
                            done += 1;
                        }
                        Err(StoreError::VersionConflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let p = found(&*s, "Patient", "shared");
    let n = successes.load(Ordering::Relaxed);
    assert_eq!(n, 160);
    assert_eq!(p.version, n);
    // Every successful read-modify-write saw its predecessor: the counter counts them.
    // (The very first writes may race as creates without If-Match; the counter is then
    // still version-consistent because only one create can become version 1.)
    assert!(p.resource["multipleBirthInteger"].as_u64().unwrap() <= n);
    let h = all_pages(
        &*s,
        HistoryScope::Instance("Patient".into(), "shared".into()),
        HistoryQuery::default(),
        &|| {},
    );
    let versions: Vec<u64> = h.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=n).rev().collect::<Vec<_>>());
}

/// Concurrent creates all get distinct ids and are all readable.
pub fn concurrent_creates(make: Make<'_>) {
    let s: Arc<dyn FhirStore> = Arc::from(make("creates"));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| s.create(observation("p", i, "2024-01-01")).unwrap().id)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 400);
    for id in &ids {
        found(&*s, "Observation", id);
    }
}

fn sorted_index(v: impl IntoIterator<Item = (String, crate::OwnedIndexValue)>) -> Vec<String> {
    let mut out: Vec<String> = v.into_iter().map(|(p, v)| format!("{p} {v:?}")).collect();
    out.sort();
    out
}

fn extracted(resource: &Value) -> Vec<String> {
    let x = vigil_fhir::search::extract(resource).unwrap();
    sorted_index(
        x.entries
            .into_iter()
            .map(|e| (e.param.code().to_string(), e.value.into_owned())),
    )
}

/// The stored index rows are exactly what `vigil_fhir::search::extract` gives for the
/// stored resource (with its meta), for every kind of value.
pub fn index_rows_match_extract(make: Make<'_>) {
    let s = make("index");
    let bodies = vec![
        observation("p1", 72, "2024-05-01T10:00:00+02:00"),
        json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": "http://other.example/fhir/Patient/9", "display": "Nine"},
            "effectivePeriod": {"start": "2024-01-01"},
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": {"value": 120.50, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                 "valueQuantity": {"value": 80, "comparator": "<", "system": "http://unitsofmeasure.org", "code": "mg"}}]}),
        json!({"resourceType": "Patient", "active": true, "birthDate": "1970-03",
            "name": [{"family": "Müller", "given": ["Ann"]}],
            "identifier": [{"system": "urn:mrn", "value": "123",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}], "text": "MRN"}}],
            "generalPractitioner": [{"identifier": {"system": "urn:npi", "value": "42"}}],
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Ann Müller</div>"}}),
        json!({"resourceType": "Location", "name": "Ward",
            "position": {"latitude": 52.5200, "longitude": 13.405}}),
        json!({"resourceType": "RiskAssessment", "status": "final",
            "subject": {"reference": "Patient/p1"},
            "prediction": [{"probabilityDecimal": 0.25}]}),
        json!({"resourceType": "ValueSet", "status": "active",
            "url": "http://example.org/vs", "version": "1.0"}),
    ];
    for body in bodies {
        let c = s.create(body).unwrap();
        let rows = sorted_index(s.index_values(&c.resource_type, &c.id).unwrap());
        assert!(!rows.is_empty(), "{}", c.resource_type);
        assert_eq!(rows, extracted(&c.resource), "{}", c.resource_type);
    }
}

/// Index rows follow the current version: replaced on update, removed on delete,
/// back on re-create.
pub fn index_rows_follow_versions(make: Make<'_>) {
    let s = make("index-versions");
    let c = s.create(observation("p1", 60, "2024-01-01")).unwrap();
    let (u, _) = s
        .update(
            "Observation",
            &c.id,
            observation("p2", 61, "2024-01-02"),
            None,
        )
        .unwrap();
    let rows = s.index_values("Observation", &c.id).unwrap();
    assert_eq!(sorted_index(rows.clone()), extracted(&u.resource));
    let text = format!("{rows:?}");
    assert!(text.contains("\"p2\"") && !text.contains("\"p1\""));
    s.delete("Observation", &c.id, None).unwrap();
    assert!(s.index_values("Observation", &c.id).unwrap().is_empty());
    let (r, _) = s
        .update(
            "Observation",
            &c.id,
            observation("p3", 62, "2024-01-03"),
            None,
        )
        .unwrap();
    assert_eq!(
        sorted_index(s.index_values("Observation", &c.id).unwrap()),
        extracted(&r.resource)
    );
    // A resource of a type the extractor does not know is stored, just not indexed.
    let odd = s
        .create(json!({"resourceType": "NotAType", "x": 1}))
        .unwrap();
    assert!(s.index_values("NotAType", &odd.id).unwrap().is_empty());
    found(&*s, "NotAType", &odd.id);
}

/// Everything written is there after the store is closed and opened again.
pub fn data_survives_reopen(make: Make<'_>) {
    let (a, b, before) = {
        let s = make("reopen");
        let a = s.create(patient("A")).unwrap();
        s.update("Patient", &a.id, patient("A2"), None).unwrap();
        let b = s.create(observation(&a.id, 70, "2024-01-01")).unwrap();
        s.delete("Observation", &b.id, None).unwrap();
        let before = all_pages(&*s, HistoryScope::System, HistoryQuery::default(), &|| {});
        (a, b, before)
    };
    let s = make("reopen");
    let r = found(&*s, "Patient", &a.id);
    assert_eq!(
        (r.version, r.resource["name"][0]["family"].clone()),
        (2, json!("A2"))
    );
    assert!(matches!(
        s.read("Observation", &b.id).unwrap(),
        ReadOutcome::Gone { version: 2, .. }
    ));
    let after = all_pages(&*s, HistoryScope::System, HistoryQuery::default(), &|| {});
    assert_eq!(after, before);
    assert_eq!(
        sorted_index(s.index_values("Patient", &a.id).unwrap()),
        extracted(&r.resource)
    );
    // Timestamps keep increasing after the reopen.
    let (n, _) = s.update("Patient", &a.id, patient("A3"), None).unwrap();
    assert_eq!(n.version, 3);
    assert!(n.last_updated >= r.last_updated);
}
