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
            data_survives_reopen,
            search_token_matches_oracle,
            search_string_matches_oracle,
            search_date_matches_oracle,
            search_number_quantity_matches_oracle,
            search_reference_uri_matches_oracle,
            search_composite_matches_oracle,
            search_chains_and_has,
            search_sort_orders,
            search_paging_with_concurrent_writes,
            search_includes,
            search_rejects_bad_input
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
    // So is creating under the id of a deleted one (its history stays its own).
    s.delete("Patient", &existing.id, None).unwrap();
    let reuse = WriteOp::Create {
        resource: patient("D"),
        id: Some(existing.id.clone()),
    };
    assert!(matches!(
        s.transaction(vec![reuse]),
        Err(StoreError::Conflict(_))
    ));
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

// ---------------------------------------------------------------------------------------
// Search

/// Parse a search of `rt` (panics on a malformed query: test input).
pub fn parse_search(rt: &str, qs: &str) -> vigil_fhir::search::SearchQuery {
    vigil_fhir::search::SearchQuery::parse(Some(rt), qs, vigil_fhir::search::SearchRegistry::r4())
        .unwrap_or_else(|e| panic!("{rt}?{qs}: {e}"))
}

/// All pages of a search, following cursors; checks no resource appears twice.
fn search_ids(s: &dyn FhirStore, rt: &str, qs: &str) -> Vec<String> {
    let q = parse_search(rt, qs);
    let mut page = SearchPage::default();
    let mut out: Vec<String> = Vec::new();
    for _ in 0..1000 {
        let r = s
            .search(&q, &page)
            .unwrap_or_else(|e| panic!("{rt}?{qs}: {e}"));
        assert!(r.matches.len() <= q.count.unwrap_or(DEFAULT_SEARCH_COUNT) as usize);
        for m in r.matches {
            assert_eq!(m.resource_type, rt, "{qs}");
            assert!(!m.deleted, "{qs}");
            assert!(!out.contains(&m.id), "{rt}?{qs}: {} twice", m.id);
            out.push(m.id);
        }
        match r.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => return out,
        }
    }
    panic!("{rt}?{qs}: no last page");
}

/// The ids among `all` (current versions) that `matching::resource_matches` accepts.
fn oracle_ids(all: &[Stored], rt: &str, qs: &str) -> Vec<String> {
    let q = parse_search(rt, qs);
    let mut ids: Vec<String> = all
        .iter()
        .filter(|s| s.resource_type == rt && !s.deleted)
        .filter(|s| {
            let x = vigil_fhir::search::extract(&s.resource).unwrap();
            vigil_fhir::search::matching::resource_matches(
                &q,
                &x,
                &vigil_fhir::search::MatchContext::default(),
            )
            .unwrap_or_else(|e| panic!("{rt}?{qs}: {e}"))
        })
        .map(|s| s.id.clone())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The search dataset: Patients, Observations (codes, subjects, dates, quantities in
/// several units, comparators, components), a RiskAssessment and ValueSets; some
/// resources updated (old versions must not match) and deleted (must never match).
/// Returns the current versions, in write order.
pub fn search_dataset(s: &dyn FhirStore) -> Vec<Stored> {
    const UCUM: &str = "http://unitsofmeasure.org";
    const LOINC: &str = "http://loinc.org";
    let mut all: Vec<Stored> = Vec::new();
    let mut put = |rt: &str, id: &str, body: Value| {
        let (st, _) = s.update(rt, id, body, None).unwrap();
        all.retain(|x| !(x.resource_type == rt && x.id == id));
        all.push(st);
    };
    put(
        "Patient",
        "p1",
        json!({"resourceType": "Patient", "active": true, "gender": "male",
        "birthDate": "1974-12-25",
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "identifier": [{"system": "urn:mrn", "value": "12345",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Peter Chalmers</div>"}}),
    );
    put(
        "Patient",
        "p2",
        json!({"resourceType": "Patient", "active": false, "gender": "female",
        "birthDate": "1980-06", "name": [{"family": "Müller", "given": ["Zoë"]}],
        "identifier": [{"system": "urn:mrn", "value": "67890"}, {"value": "12345"}]}),
    );
    put(
        "Patient",
        "p3",
        json!({"resourceType": "Patient", "gender": "other", "birthDate": "2000",
        "name": [{"family": "Chalmerson"}]}),
    );
    put(
        "Patient",
        "p4",
        json!({"resourceType": "Patient", "gender": "unknown",
        "name": [{"family": "O'Brien", "given": ["'); DROP TABLE resource; --", "100%_x"]}]}),
    );
    put(
        "Patient",
        "p6",
        json!({"resourceType": "Patient", "name": [{"family": "Oldname"}],
        "birthDate": "1990-01-01"}),
    );
    put(
        "Patient",
        "p6",
        json!({"resourceType": "Patient", "name": [{"family": "Newname"}],
        "birthDate": "1991-01-01"}),
    );
    put(
        "Patient",
        "p5",
        json!({"resourceType": "Patient", "name": [{"family": "Chalmers"}],
        "gender": "male", "birthDate": "1974-12-25"}),
    );
    s.delete("Patient", "p5", None).unwrap();

    let obs = |subject: &str, code: &str, display: &str, when: Value, value: Value| {
        let mut o = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "subject": {"reference": subject}});
        match when {
            Value::String(d) => o["effectiveDateTime"] = json!(d),
            Value::Null => {}
            period => o["effectivePeriod"] = period,
        }
        if !value.is_null() {
            o["valueQuantity"] = value;
        }
        o
    };
    let hr = |v: Value| json!({"value": v, "unit": "beats/minute", "system": UCUM, "code": "/min"});
    put(
        "Observation",
        "o1",
        obs(
            "Patient/p1",
            "8867-4",
            "Heart rate",
            json!("2024-01-05T08:00:00Z"),
            hr(json!(72)),
        ),
    );
    put(
        "Observation",
        "o2",
        obs(
            "Patient/p1",
            "8867-4",
            "Heart rate",
            json!("2024-02-10T08:00:00Z"),
            hr(json!(65.5)),
        ),
    );
    put(
        "Observation",
        "o3",
        obs(
            "Patient/p1",
            "8867-4",
            "Heart rate",
            json!("2024-03-15"),
            hr(json!(80)),
        ),
    );
    put(
        "Observation",
        "o4",
        obs(
            "Patient/p1",
            "8867-4",
            "Heart rate",
            json!("2023-12-31T23:00:00Z"),
            hr(json!(100)),
        ),
    );
    put(
        "Observation",
        "o5",
        obs(
            "Patient/p2",
            "8867-4",
            "Pulse",
            json!("2024-01-15T12:30:00+02:00"),
            hr(json!(58)),
        ),
    );
    put(
        "Observation",
        "o6",
        obs(
            "Patient/p2",
            "29463-7",
            "Body weight",
            json!("2024-01-20"),
            json!({"value": 80, "unit": "kg", "system": UCUM, "code": "kg"}),
        ),
    );
    put(
        "Observation",
        "o7",
        obs(
            "Patient/p1",
            "29463-7",
            "Body weight",
            json!("2024-02"),
            json!({"value": 176.4, "unit": "lb", "system": UCUM, "code": "[lb_av]"}),
        ),
    );
    put(
        "Observation",
        "o8",
        obs(
            "Patient/p3",
            "29463-7",
            "Body weight",
            json!({"start": "2024-01-01"}),
            json!({"value": 79500, "unit": "g", "system": UCUM, "code": "g"}),
        ),
    );
    put(
        "Observation",
        "o9",
        obs(
            "Patient/p3",
            "29463-7",
            "Body weight",
            json!({"end": "2023-06-01"}),
            json!({"value": 5, "comparator": "<", "unit": "kg", "system": UCUM, "code": "kg"}),
        ),
    );
    put(
        "Observation",
        "o10",
        obs(
            "http://other.example/fhir/Patient/p1",
            "8867-4",
            "Heart rate",
            Value::Null,
            json!({"value": 70, "unit": "bpm"}),
        ),
    );
    let mut bp = obs(
        "Patient/p2",
        "85354-9",
        "Blood pressure",
        json!("2024-02-01T10:00:00Z"),
        Value::Null,
    );
    bp["component"] = json!([
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
         "valueQuantity": {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
         "valueQuantity": {"value": 80, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}}]);
    put("Observation", "o11", bp);
    let mut bp2 = obs(
        "Patient/p1",
        "85354-9",
        "Blood pressure",
        json!("2024-03-01T10:00:00Z"),
        Value::Null,
    );
    bp2["component"] = json!([
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
         "valueQuantity": {"value": 95, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}}]);
    bp2["code"]["text"] = json!("Blood pressure panel");
    put("Observation", "o12", bp2);
    put(
        "Observation",
        "o13",
        json!({"resourceType": "Observation", "status": "preliminary",
        "code": {"text": "Pulse rate"}}),
    );
    // Updated: the old version (p1, 2024) must not match; deleted: never matches.
    put(
        "Observation",
        "o14",
        obs(
            "Patient/p1",
            "8867-4",
            "Heart rate",
            json!("2024-01-07"),
            hr(json!(71)),
        ),
    );
    put(
        "Observation",
        "o14",
        obs(
            "Patient/p2",
            "8867-4",
            "Heart rate",
            json!("2022-01-07"),
            hr(json!(71)),
        ),
    );
    put(
        "Observation",
        "o15",
        obs(
            "Patient/p1",
            "8867-4",
            "Heart rate",
            json!("2024-01-08"),
            hr(json!(73)),
        ),
    );
    s.delete("Observation", "o15", None).unwrap();

    put(
        "RiskAssessment",
        "r1",
        json!({"resourceType": "RiskAssessment", "status": "final",
        "subject": {"reference": "Patient/p1"}, "prediction": [{"probabilityDecimal": 0.25}]}),
    );
    put(
        "RiskAssessment",
        "r2",
        json!({"resourceType": "RiskAssessment", "status": "final",
        "subject": {"reference": "Patient/p2"},
        "prediction": [{"probabilityRange": {"low": {"value": 0.1}, "high": {"value": 0.4}}}]}),
    );
    put(
        "RiskAssessment",
        "r3",
        json!({"resourceType": "RiskAssessment", "status": "final",
        "subject": {"reference": "Patient/p3"}, "prediction": [{"probabilityDecimal": 100}]}),
    );
    put(
        "ValueSet",
        "vs1",
        json!({"resourceType": "ValueSet", "status": "active",
        "url": "http://example.org/fhir/ValueSet/vitals", "version": "1.0"}),
    );
    put(
        "ValueSet",
        "vs2",
        json!({"resourceType": "ValueSet", "status": "active",
        "url": "http://example.org/fhir/ValueSet/labs"}),
    );
    put(
        "ValueSet",
        "vs3",
        json!({"resourceType": "ValueSet", "status": "draft",
        "url": "urn:uuid:0c8d6ee2-2a62-4b39-9c6b-0d7e2a3b1c11"}),
    );
    // The deleted ones.
    all.retain(|x| x.id != "p5" && x.id != "o15");
    all
}

fn assert_oracle(s: &dyn FhirStore, all: &[Stored], rt: &str, queries: &[&str]) {
    for qs in queries {
        let got = sorted(search_ids(s, rt, qs));
        assert_eq!(got, oracle_ids(all, rt, qs), "{rt}?{qs}");
    }
}

/// Token search (all system forms, `:not`, `:text`, `:of-type`, `:missing`) and `_id`
/// give exactly the resources the matcher accepts.
pub fn search_token_matches_oracle(make: Make<'_>) {
    let s = make("search-token");
    let all = search_dataset(&*s);
    assert_oracle(
        &*s,
        &all,
        "Patient",
        &[
            "gender=male",
            "gender=male,female",
            "gender:not=male",
            "gender:not=male,female",
            "gender=|male",
            "gender=http://hl7.org/fhir/administrative-gender|male",
            "identifier=12345",
            "identifier=urn:mrn|12345",
            "identifier=urn:mrn|",
            "identifier=|12345",
            "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345",
            "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|67890",
            "identifier:missing=true",
            "identifier:missing=false",
            "active=true",
            "active:not=true",
            "_id=p1",
            "_id=p1,p3,nope",
            "_id:not=p1",
            "_id=|p2",
            "_id=sys|p2",
            "_id:missing=false",
            "_count=2&gender=male,female,other,unknown",
        ],
    );
    assert_oracle(
        &*s,
        &all,
        "Observation",
        &[
            "code=8867-4",
            "code=http://loinc.org|8867-4",
            "code=http://loinc.org|",
            "code=|8867-4",
            "code=http://loinc.org|8867-4,http://loinc.org|29463-7",
            "code:not=8867-4",
            "code:not=http://loinc.org|8867-4,29463-7",
            "code:text=heart",
            "code:text=PULSE",
            "code:text=blood pressure pa",
            "code:missing=true",
            "status=final&code=8867-4",
            "combo-code=8480-6",
            "combo-code=http://loinc.org|8867-4,8480-6",
            "combo-code:not=8480-6",
            "combo-code:missing=true",
            "combo-code:missing=false",
            "combo-code:text=blood pressure",
            "component-code=http://loinc.org|8462-4",
            "_count=1&code:text=pulse",
        ],
    );
    let hits = search_ids(&*s, "Observation", "code:text=pulse");
    assert_eq!(sorted(hits), vec!["o13", "o5"]);
}

/// String search (normalized starts-with, `:exact`, `:contains`, wildcard characters),
/// `_text` and `_content`.
pub fn search_string_matches_oracle(make: Make<'_>) {
    let s = make("search-string");
    let all = search_dataset(&*s);
    assert_oracle(
        &*s,
        &all,
        "Patient",
        &[
            "name=chalm",
            "name=Chalmers",
            "name=CHALMERSON",
            "name:exact=Chalmers",
            "name:exact=chalmers",
            "name:contains=ALME",
            "name:contains=lmer,ller",
            "name=zoe",
            "name=Müller",
            "name=muller",
            "name:exact=Müller",
            "name:exact=Muller",
            "family=chalmers",
            "given=pet",
            "given=james",
            "name=oldname",
            "name=newname",
            "name=100%25",
            "name:contains=%25",
            "name:contains=_",
            "name:contains=0%25_",
            "name=o'b",
            "name:missing=true",
            "name=%27",
            "_text=peter",
            "_content=12345",
            "_content=chalmers 1974",
            "name=  peter   ",
            "phonetic=chalmers",
        ],
    );
    assert_eq!(search_ids(&*s, "Patient", "name=100%25_"), vec!["p4"]);
    assert_eq!(
        search_ids(&*s, "Patient", "name:contains=%25_X"),
        vec!["p4"]
    );
    assert!(search_ids(&*s, "Patient", "name:contains=%25%25").is_empty());
}

/// Date search: every prefix against instants, days, months, years, open Periods, and
/// `_lastUpdated`.
pub fn search_date_matches_oracle(make: Make<'_>) {
    let s = make("search-date");
    let all = search_dataset(&*s);
    let mut queries: Vec<String> = Vec::new();
    for p in ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"] {
        for v in [
            "2024",
            "2024-01",
            "2024-01-15",
            "2024-02-01T10:00:00Z",
            "2023-06-01",
            "2024-01-15T10:30:00%2B02:00",
        ] {
            queries.push(format!("date={p}{v}"));
        }
    }
    let q: Vec<&str> = queries.iter().map(String::as_str).collect();
    assert_oracle(&*s, &all, "Observation", &q);
    assert_oracle(
        &*s,
        &all,
        "Observation",
        &["date:missing=true", "date=2024-01,2024-03"],
    );
    let mut queries: Vec<String> = Vec::new();
    for p in ["", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"] {
        for v in [
            "1974",
            "1974-12-25",
            "1980",
            "1980-06",
            "1980-06-15",
            "2000",
        ] {
            queries.push(format!("birthdate={p}{v}"));
        }
    }
    let q: Vec<&str> = queries.iter().map(String::as_str).collect();
    assert_oracle(&*s, &all, "Patient", &q);
    assert_oracle(
        &*s,
        &all,
        "Patient",
        &[
            "birthdate:missing=true",
            "birthdate:missing=false",
            "_lastUpdated=gt2000-01-01",
            "_lastUpdated=lt2000-01-01",
            "_lastUpdated=ne2000",
            "_lastUpdated=sa2001",
        ],
    );
    assert_eq!(
        sorted(search_ids(
            &*s,
            "Observation",
            "date=ge2024-01-01&subject=Patient/p1"
        )),
        vec!["o1", "o12", "o2", "o3", "o7"]
    );
    assert_eq!(
        search_ids(&*s, "Patient", "_lastUpdated=gt2000-01-01").len(),
        5
    );
}

/// Number and quantity search: every prefix, units by system and code, canonical UCUM
/// comparison across units, comparators, `number||code`.
pub fn search_number_quantity_matches_oracle(make: Make<'_>) {
    let s = make("search-number");
    let all = search_dataset(&*s);
    let mut queries: Vec<String> = Vec::new();
    for p in ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"] {
        for v in ["0.25", "0.2", "0.3", "100", "1e2", "0.1"] {
            queries.push(format!("probability={p}{v}"));
        }
    }
    let q: Vec<&str> = queries.iter().map(String::as_str).collect();
    assert_oracle(&*s, &all, "RiskAssessment", &q);
    let mut queries: Vec<String> = Vec::new();
    for p in ["", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"] {
        for v in [
            "72",
            "65.5",
            "80",
            "70|http://unitsofmeasure.org|/min",
            "80|http://unitsofmeasure.org|kg",
            "79.5|http://unitsofmeasure.org|kg",
            "80000|http://unitsofmeasure.org|g",
            "176.4|http://unitsofmeasure.org|[lb_av]",
            "80||kg",
            "70||bpm",
            "5|http://unitsofmeasure.org|kg",
            "4|http://unitsofmeasure.org|kg",
            "80|http://unitsofmeasure.org|m",
            "80|urn:other|kg",
            "1.2|http://unitsofmeasure.org|/s",
        ] {
            queries.push(format!("value-quantity={p}{v}"));
        }
    }
    let q: Vec<&str> = queries.iter().map(String::as_str).collect();
    assert_oracle(&*s, &all, "Observation", &q);
    assert_oracle(
        &*s,
        &all,
        "Observation",
        &[
            "value-quantity:missing=true",
            "value-quantity=72,80",
            "component-value-quantity=gt100",
            "combo-value-quantity=lt90|http://unitsofmeasure.org|mm[Hg]",
        ],
    );
    assert_eq!(
        sorted(search_ids(
            &*s,
            "Observation",
            "value-quantity=ge79|http://unitsofmeasure.org|kg&code=29463-7"
        )),
        vec!["o6", "o7", "o8"]
    );
}

/// Reference search (id, Type/id, `:[type]`, absolute URLs, `:missing`, `:identifier`)
/// and uri search (equality, `url|version`, `:below`, `:above`).
pub fn search_reference_uri_matches_oracle(make: Make<'_>) {
    let s = make("search-reference");
    let all = search_dataset(&*s);
    assert_oracle(
        &*s,
        &all,
        "Observation",
        &[
            "subject=Patient/p1",
            "subject=p1",
            "subject:Patient=p1",
            "patient=p1",
            "patient=Patient/p2",
            "patient:Patient=p1",
            "patient=Group/p1",
            "patient:missing=true",
            "patient:missing=false",
            "patient=Patient/p1,Patient/p3",
            "subject=Patient/p1,Patient/p3",
            "subject=Group/p1",
            "subject=Patient/p1/_history/1",
            "subject=http://other.example/fhir/Patient/p1",
            "subject=http://other.example/fhir/Patient/p2",
            "subject=http://other.example/fhir/",
            "subject:missing=true",
            "subject:missing=false",
            "subject:identifier=urn:npi|42",
        ],
    );
    assert_oracle(
        &*s,
        &all,
        "RiskAssessment",
        &["subject=p2", "patient=Patient/p3"],
    );
    assert_oracle(
        &*s,
        &all,
        "ValueSet",
        &[
            "url=http://example.org/fhir/ValueSet/vitals",
            "url=http://example.org/fhir/ValueSet",
            "url=http://example.org/fhir/ValueSet/vitals|1.0",
            "url:below=http://example.org/fhir",
            "url:below=http://example.org/fhir/ValueSet/vitals",
            "url:below=urn:",
            "url:above=http://example.org/fhir/ValueSet/vitals/extra",
            "url:above=http://example.org/fhir",
            "url:missing=true",
            "version=1.0",
            "status=active",
        ],
    );
    assert_eq!(
        sorted(search_ids(&*s, "Observation", "subject=Patient/p1")),
        vec!["o1", "o12", "o2", "o3", "o4", "o7"]
    );
}

/// Composite search: one tuple whose every component matches.
pub fn search_composite_matches_oracle(make: Make<'_>) {
    let s = make("search-composite");
    let all = search_dataset(&*s);
    assert_oracle(
        &*s,
        &all,
        "Observation",
        &[
            "code-value-quantity=http://loinc.org|29463-7$gt70|http://unitsofmeasure.org|kg",
            "code-value-quantity=29463-7$80",
            "code-value-quantity=8867-4$lt70,29463-7$lt6|http://unitsofmeasure.org|kg",
            "component-code-value-quantity=http://loinc.org|8480-6$gt100",
            "component-code-value-quantity=8480-6$lt100|http://unitsofmeasure.org|mm[Hg]",
            "component-code-value-quantity=8462-4$gt100",
            "combo-code-value-quantity=8462-4$80",
            "code-value-date=8867-4$ge2024-02",
        ],
    );
    assert_eq!(
        search_ids(
            &*s,
            "Observation",
            "component-code-value-quantity=8480-6$lt100"
        ),
        vec!["o12"]
    );
}

/// Chained parameters and `_has`; deleted and superseded resources are not reached.
pub fn search_chains_and_has(make: Make<'_>) {
    let s = make("search-chain");
    search_dataset(&*s);
    let ids = |rt: &str, qs: &str| sorted(search_ids(&*s, rt, qs));
    assert_eq!(
        ids("Observation", "subject:Patient.name=chalmers"),
        vec!["o1", "o12", "o2", "o3", "o4", "o7", "o8", "o9"]
    );
    assert_eq!(
        ids("Observation", "subject.name:exact=Chalmers&code=29463-7"),
        vec!["o7"]
    );
    assert_eq!(
        ids("Observation", "patient.gender=female"),
        vec!["o11", "o14", "o5", "o6"]
    );
    assert_eq!(
        ids("Observation", "subject:Patient.birthdate:missing=true"),
        Vec::<String>::new()
    );
    assert_eq!(
        ids("RiskAssessment", "subject:Patient.identifier=urn:mrn|12345"),
        vec!["r1"]
    );
    assert_eq!(
        ids("Patient", "_has:Observation:subject:code=29463-7"),
        vec!["p1", "p2", "p3"]
    );
    assert_eq!(
        ids("Patient", "_has:Observation:patient:date=2022"),
        vec!["p2"]
    );
    assert_eq!(
        ids("Patient", "_has:Observation:subject:date=2024-01-08"),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(
            "Patient",
            "_has:RiskAssessment:subject:probability=gt0.2&gender=male"
        ),
        vec!["p1"]
    );
    assert_eq!(
        ids(
            "Observation",
            "subject:Patient._has:RiskAssessment:subject:probability=100"
        ),
        vec!["o8", "o9"]
    );
}

/// `_sort` on each kind of key, ascending and descending, missing values last, ties by
/// write order; pages of every size concatenate to the same order.
pub fn search_sort_orders(make: Make<'_>) {
    let s = make("search-sort");
    search_dataset(&*s);
    let ids = |rt: &str, qs: &str| search_ids(&*s, rt, qs);
    assert_eq!(
        ids("Patient", "_sort=birthdate"),
        vec!["p1", "p2", "p6", "p3", "p4"]
    );
    assert_eq!(
        ids("Patient", "_sort=-birthdate"),
        vec!["p3", "p6", "p2", "p1", "p4"]
    );
    assert_eq!(
        ids("Patient", "_sort=name"),
        // The smallest of all names (given ones too): p4's given name starts with `'`.
        vec!["p4", "p1", "p3", "p2", "p6"]
    );
    assert_eq!(
        ids("Patient", "_sort=-family"),
        vec!["p4", "p6", "p2", "p3", "p1"]
    );
    assert_eq!(
        ids("Patient", "_sort=gender,-_id"),
        vec!["p2", "p1", "p3", "p4", "p6"]
    );
    assert_eq!(
        ids("Patient", "_sort=-_id"),
        vec!["p6", "p4", "p3", "p2", "p1"]
    );
    assert_eq!(ids("Patient", ""), vec!["p1", "p2", "p3", "p4", "p6"]);
    assert_eq!(ids("Patient", "_sort=_lastUpdated"), ids("Patient", ""));
    assert_eq!(
        ids("RiskAssessment", "_sort=-probability"),
        vec!["r3", "r2", "r1"]
    );
    assert_eq!(
        ids("RiskAssessment", "_sort=probability"),
        vec!["r2", "r1", "r3"]
    );
    assert_eq!(
        ids("RiskAssessment", "_sort=-subject"),
        vec!["r3", "r2", "r1"]
    );
    assert_eq!(ids("ValueSet", "_sort=url"), vec!["vs2", "vs1", "vs3"]);
    assert_eq!(
        ids("Observation", "code=29463-7&_sort=-value-quantity"),
        // Canonical: 176.4 [lb_av] is 80.01 kg, above 80 kg.
        vec!["o7", "o6", "o8", "o9"]
    );
    // A union parameter (`value-quantity | component-value-quantity`) sorts the same.
    assert_eq!(
        ids("Observation", "code=29463-7&_sort=-combo-value-quantity"),
        vec!["o7", "o6", "o8", "o9"]
    );
    assert_eq!(
        ids("Observation", "code=8867-4&_sort=-date"),
        vec!["o3", "o2", "o5", "o1", "o4", "o14", "o10"]
    );
    assert_eq!(
        ids("Observation", "code=8867-4&_sort=date"),
        vec!["o14", "o4", "o1", "o5", "o2", "o3", "o10"]
    );
    for n in 1..=4 {
        for qs in [
            "_sort=-date",
            "_sort=code,date",
            "_sort=-code,-_lastUpdated",
            "_sort=status,-value-quantity",
        ] {
            assert_eq!(
                ids("Observation", &format!("{qs}&_count={n}")),
                ids("Observation", &format!("{qs}&_count=100")),
                "{qs} by {n}"
            );
        }
    }
    assert!(s
        .search(
            &parse_search("Observation", "_sort=code-value-quantity"),
            &SearchPage::default()
        )
        .is_err());
}

/// The issue's query pages in order with a cursor, stays correct when matching
/// resources are created and changed between pages, and reports `_total`.
pub fn search_paging_with_concurrent_writes(make: Make<'_>) {
    let s = make("search-paging");
    search_dataset(&*s);
    let q = parse_search(
        "Observation",
        "subject=Patient/p1&code=http://loinc.org|8867-4&date=ge2024-01-01&_sort=-date&_count=2&_total=accurate",
    );
    let p1 = s.search(&q, &SearchPage::default()).unwrap();
    let ids = |r: &SearchResult| r.matches.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&p1), vec!["o3", "o2"]);
    assert_eq!(p1.total, Some(3));
    let cursor = p1.next_cursor.clone().unwrap();
    // Between pages: a new match after the cursor, one before it (not shown: it belongs
    // to page 1's positions), and a non-match.
    s.update(
        "Observation",
        "n1",
        observation("p1", 60, "2024-01-20"),
        None,
    )
    .unwrap();
    s.update(
        "Observation",
        "n2",
        observation("p1", 61, "2024-04-01"),
        None,
    )
    .unwrap();
    s.update(
        "Observation",
        "n3",
        observation("p2", 62, "2024-01-21"),
        None,
    )
    .unwrap();
    let page = SearchPage {
        count: None,
        cursor: Some(cursor.clone()),
    };
    let p2 = s.search(&q, &page).unwrap();
    assert_eq!(ids(&p2), vec!["n1", "o1"]);
    assert_eq!(p2.total, Some(5));
    assert_eq!(p2.next_cursor, None);
    // The same cursor again gives the same page; a count override applies.
    let p2b = s
        .search(
            &q,
            &SearchPage {
                count: Some(1),
                cursor: Some(cursor),
            },
        )
        .unwrap();
    assert_eq!(ids(&p2b), vec!["n1"]);
    assert!(p2b.next_cursor.is_some());
    // _count=0: the total only.
    let z = s
        .search(
            &parse_search("Observation", "code=8867-4&_count=0&_total=accurate"),
            &SearchPage::default(),
        )
        .unwrap();
    assert!(z.matches.is_empty() && z.next_cursor.is_none());
    assert_eq!(z.total, Some(10));
    // Default page size 20, no total unless asked.
    for i in 0..25 {
        s.update(
            "Basic",
            &format!("b{i}"),
            json!({"resourceType": "Basic",
            "code": {"coding": [{"code": "x"}]}}),
            None,
        )
        .unwrap();
    }
    let b = s
        .search(&parse_search("Basic", "code=x"), &SearchPage::default())
        .unwrap();
    assert_eq!((b.matches.len(), b.total), (20, None));
    assert_eq!(search_ids(&*s, "Basic", "code=x&_count=7").len(), 25);
}

/// `_include` and `_revinclude` (also `:iterate`) add the referenced and referring
/// resources of the page, each once.
pub fn search_includes(make: Make<'_>) {
    let s = make("search-include");
    let all = search_dataset(&*s);
    let run = |rt: &str, qs: &str| {
        let r = s
            .search(&parse_search(rt, qs), &SearchPage::default())
            .unwrap();
        let m: Vec<String> = r.matches.iter().map(|m| m.id.clone()).collect();
        let inc: Vec<String> = sorted(
            r.included
                .iter()
                .map(|m| format!("{}/{}", m.resource_type, m.id))
                .collect(),
        );
        (m, inc)
    };
    assert_eq!(
        run("Observation", "_id=o1,o2&_include=Observation:subject"),
        (
            vec!["o1".into(), "o2".into()],
            vec!["Patient/p1".to_string()]
        )
    );
    assert_eq!(
        run("Observation", "_id=o5&_include=Observation:subject:Group").1,
        Vec::<String>::new()
    );
    assert_eq!(
        run("Observation", "_id=o10&_include=*").1,
        Vec::<String>::new()
    );
    assert_eq!(
        run("Patient", "_id=p2&_revinclude=Observation:subject").1,
        vec![
            "Observation/o11",
            "Observation/o14",
            "Observation/o5",
            "Observation/o6"
        ]
    );
    assert_eq!(
        run("Patient", "_id=p1,p3&_revinclude=RiskAssessment:subject").1,
        vec!["RiskAssessment/r1", "RiskAssessment/r3"]
    );
    assert_eq!(
        run(
            "RiskAssessment",
            "_id=r3&_include=RiskAssessment:subject&_revinclude:iterate=Observation:subject"
        )
        .1,
        vec!["Observation/o8", "Observation/o9", "Patient/p3"]
    );
    // `patient` (the Patients among `subject`) answers like `subject` for Patients.
    assert_eq!(
        run("Patient", "_id=p2&_revinclude=Observation:patient"),
        run("Patient", "_id=p2&_revinclude=Observation:subject")
    );
    assert_eq!(
        run("Observation", "_id=o1,o2&_include=Observation:patient").1,
        vec!["Patient/p1".to_string()]
    );
    // Wildcards: every live resource with a local reference to the Patient, found from
    // the stored index values.
    let referring = |source_type: Option<&str>, target: &str| {
        let mut out: Vec<String> = all
            .iter()
            .filter(|x| source_type.is_none_or(|t| t == x.resource_type))
            .filter(|x| {
                s.index_values(&x.resource_type, &x.id)
                    .unwrap()
                    .iter()
                    .any(|(_, v)| match v {
                        vigil_fhir::search::IndexValue::Reference(r) => {
                            r.kind == vigil_fhir::search::ReferenceKind::Local
                                && r.resource_type.as_deref() == Some("Patient")
                                && r.id.as_deref() == Some(target)
                        }
                        _ => false,
                    })
            })
            .map(|x| format!("{}/{}", x.resource_type, x.id))
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let everything = referring(None, "p2");
    assert!(everything.len() > 4, "{everything:?}");
    assert_eq!(run("Patient", "_id=p2&_revinclude=*").1, everything);
    assert_eq!(
        run("Patient", "_id=p2&_revinclude=Observation:*").1,
        referring(Some("Observation"), "p2")
    );
    // Deleted targets are not included.
    s.delete("Patient", "p3", None).unwrap();
    assert_eq!(
        run("RiskAssessment", "_id=r3&_include=RiskAssessment:subject").1,
        Vec::<String>::new()
    );
}

/// Hostile input: values with SQL syntax are data, tampered cursors are clean errors,
/// criteria the store cannot evaluate are errors, deleted resources never match.
pub fn search_rejects_bad_input(make: Make<'_>) {
    let s = make("search-bad");
    let all = search_dataset(&*s);
    for v in [
        "'); DROP TABLE resource; --",
        "x' OR '1'='1",
        "\"; DELETE FROM idx_token; --",
    ] {
        let e = percent(v);
        for qs in [
            format!("name={e}"),
            format!("name:exact={e}"),
            format!("name:contains={e}"),
            format!("gender={e}"),
            format!("_id={e}"),
            format!("identifier={e}|{e}"),
            format!("_text={e}"),
        ] {
            let got = sorted(search_ids(&*s, "Patient", &qs));
            assert_eq!(got, oracle_ids(&all, "Patient", &qs), "{qs}");
        }
    }
    assert_eq!(
        search_ids(&*s, "Patient", "given=%27%29%3B%20drop"),
        vec!["p4"]
    );
    assert_eq!(search_ids(&*s, "Patient", "_id=p1"), vec!["p1"]);
    let q = parse_search("Patient", "_sort=name&_count=1");
    let first = s.search(&q, &SearchPage::default()).unwrap();
    let good = first.next_cursor.unwrap();
    let mut bad = vec![
        "".to_string(),
        "!!!".into(),
        "e30".into(),
        format!("{good}x"),
        good[..good.len() - 2].to_string(),
        "'); DROP TABLE resource; --".into(),
    ];
    bad.push(good.chars().rev().collect());
    for c in bad {
        let r = s.search(
            &q,
            &SearchPage {
                count: None,
                cursor: Some(c.clone()),
            },
        );
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{c:?}: {r:?}");
    }
    // A cursor of another sort does not apply.
    let other = parse_search("Patient", "_sort=-name&_count=1");
    assert!(matches!(
        s.search(
            &other,
            &SearchPage {
                count: None,
                cursor: Some(good)
            }
        ),
        Err(StoreError::Invalid(_))
    ));
    for qs in [
        "code:in=http://example.org/vs",
        "code:below=http://loinc.org|8867-4",
    ] {
        assert!(
            matches!(
                s.search(&parse_search("Observation", qs), &SearchPage::default()),
                Err(StoreError::Invalid(_))
            ),
            "{qs}"
        );
    }
    assert_eq!(
        sorted(search_ids(&*s, "Patient", "name=chalmers")),
        vec!["p1", "p3"]
    );
    assert!(search_ids(&*s, "Patient", "_id=p5").is_empty());
    assert!(search_ids(&*s, "Observation", "_id=o15").is_empty());
    assert_eq!(found(&*s, "Patient", "p1").version, 1);
}

fn percent(v: &str) -> String {
    vigil_fhir::search::query::percent_encode(&vigil_fhir::search::query::escape(v))
}
