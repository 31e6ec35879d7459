//! Bulk `$export` jobs: paging through the store in bounded pages, and surviving a
//! restart of the server (completed jobs still served, running ones reported failed,
//! expired ones deleted).

use super::bundles::{count_of, export};
use super::*;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use vigil_fhir::search::SearchQuery as Query;
use vigil_store::{
    HistoryPage, HistoryQuery, HistoryScope, OwnedIndexValue, ReadOutcome, SearchPage,
    SearchResult, Stored, WriteOp, WriteOutcome,
};

/// A store that calls `hook` before each search.
struct Hooked {
    inner: SqliteStore,
    hook: fn(&Query, &SearchPage),
}

impl FhirStore for Hooked {
    fn create(&self, resource: Value) -> vigil_store::Result<Stored> {
        self.inner.create(resource)
    }
    fn update(
        &self,
        t: &str,
        id: &str,
        resource: Value,
        if_match: Option<u64>,
    ) -> vigil_store::Result<(Stored, bool)> {
        self.inner.update(t, id, resource, if_match)
    }
    fn delete(
        &self,
        t: &str,
        id: &str,
        if_match: Option<u64>,
    ) -> vigil_store::Result<Option<Stored>> {
        self.inner.delete(t, id, if_match)
    }
    fn read(&self, t: &str, id: &str) -> vigil_store::Result<ReadOutcome> {
        self.inner.read(t, id)
    }
    fn vread(&self, t: &str, id: &str, v: u64) -> vigil_store::Result<ReadOutcome> {
        self.inner.vread(t, id, v)
    }
    fn history(&self, scope: HistoryScope, q: HistoryQuery) -> vigil_store::Result<HistoryPage> {
        self.inner.history(scope, q)
    }
    fn transaction(&self, ops: Vec<WriteOp>) -> vigil_store::Result<Vec<WriteOutcome>> {
        self.inner.transaction(ops)
    }
    fn search(&self, q: &Query, page: &SearchPage) -> vigil_store::Result<SearchResult> {
        (self.hook)(q, page);
        self.inner.search(q, page)
    }
    fn index_values(
        &self,
        t: &str,
        id: &str,
    ) -> vigil_store::Result<Vec<(String, OwnedIndexValue)>> {
        self.inner.index_values(t, id)
    }
}

static OBSERVATION_PAGES: AtomicU32 = AtomicU32::new(0);
static LARGEST_PAGE: AtomicU32 = AtomicU32::new(0);

fn counting(inner: SqliteStore) -> Arc<dyn FhirStore> {
    Arc::new(Hooked {
        inner,
        hook: |q, page| {
            if q.resource_type.as_deref() == Some("Observation") {
                OBSERVATION_PAGES.fetch_add(1, Ordering::SeqCst);
                LARGEST_PAGE.fetch_max(page.count.unwrap_or(u32::MAX), Ordering::SeqCst);
            }
        },
    })
}

#[test]
fn export_reads_the_store_page_by_page() {
    let s = start_with(|c| c.export_page_size = 10, Some(counting));
    let p = s.create_patient("Pages");
    let entries: Vec<Value> = (0..25)
        .map(|i| {
            json!({"resource": observation(&p, 50.0 + f64::from(i)),
            "request": {"method": "POST", "url": "Observation"}})
        })
        .collect();
    let r = s.post(
        "",
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    OBSERVATION_PAGES.store(0, Ordering::SeqCst);
    LARGEST_PAGE.store(0, Ordering::SeqCst);
    let admin = s.admin();
    let m = export(&s, &admin, "/$export?_type=Observation");
    assert_eq!(count_of(&m, "Observation"), 25);
    // Never more than a page in memory: 25 resources took three pages of at most 10.
    assert_eq!(LARGEST_PAGE.load(Ordering::SeqCst), 10);
    assert_eq!(OBSERVATION_PAGES.load(Ordering::SeqCst), 3);
    let url = m["output"][0]["url"].as_str().unwrap();
    let r = s.call("GET", url, Some(&admin), &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/fhir+ndjson");
    let ids: std::collections::HashSet<String> = r
        .text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 25);
}

static STALL: AtomicBool = AtomicBool::new(false);

/// Observation searches hang while `STALL` is set (an export caught mid-way).
fn stalling(inner: SqliteStore) -> Arc<dyn FhirStore> {
    Arc::new(Hooked {
        inner,
        hook: |q, _| {
            while q.resource_type.as_deref() == Some("Observation") && STALL.load(Ordering::SeqCst)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        },
    })
}

#[test]
fn export_jobs_survive_a_restart() {
    let a = start_with(|_| {}, Some(stalling));
    let admin = a.admin();
    let p = a.create_patient("Restart");
    assert_eq!(a.post("/Observation", &observation(&p, 70.0)).status, 201);
    // A completed job…
    let m = export(&a, &admin, "/$export?_type=Patient");
    assert_eq!(count_of(&m, "Patient"), 1);
    let file_url = m["output"][0]["url"].as_str().unwrap().to_string();
    let done_poll = file_url.split("/$export-file/").next().unwrap().to_string()
        + "/$export-poll/"
        + file_url
            .split("/$export-file/")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap();
    // …and one still running when the server goes away.
    STALL.store(true, Ordering::SeqCst);
    let r = a.call(
        "GET",
        "/$export?_type=Observation",
        Some(&admin),
        &[("Prefer", "respond-async")],
        None,
    );
    assert_eq!(r.status, 202);
    let running_poll = r.headers["content-location"].clone();
    assert_eq!(
        a.call("GET", &running_poll, Some(&admin), &[], None).status,
        202
    );
    let running_dir = a
        .dir
        .path()
        .join("export")
        .join(running_poll.rsplit('/').next().unwrap());
    assert!(running_dir.join("job.json").exists());

    // A new server on the same export directory (the first one stands for a crashed
    // process: its state is not shared).
    let (base, api, key) = launch(a.dir.path(), "b.db", |_| {}, None, None);
    let b = Server {
        base: base.clone(),
        api,
        key,
        dir: tempfile::tempdir().unwrap(),
    };
    let on_b = |url: &str| url.replacen(&a.base, &base, 1);
    let r = b.call("GET", &on_b(&done_poll), Some(&admin), &[], None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["output"][0]["type"], "Patient");
    assert_eq!(r.body["request"], m["request"]);
    assert_eq!(r.body["transactionTime"], m["transactionTime"]);
    let r = b.call("GET", &on_b(&file_url), Some(&admin), &[], None);
    assert_eq!(r.status, 200);
    let line: Value = serde_json::from_str(r.text.lines().next().unwrap()).unwrap();
    assert_eq!(line["id"], p.as_str());
    // Still only for the subject that started it.
    let other = b.key.issue(&TokenRequest::new(
        "someone-else",
        ScopeSet::parse("system/*.cruds").unwrap(),
    ));
    assert_eq!(
        b.call("GET", &on_b(&file_url), Some(&other), &[], None)
            .status,
        404
    );
    // The interrupted job is reported failed, per the Bulk Data spec, its partial
    // files gone.
    let r = b.call("GET", &on_b(&running_poll), Some(&admin), &[], None);
    assert_eq!(r.status, 500, "{}", r.text);
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    assert!(
        r.text.contains("stopped while this export was running"),
        "{}",
        r.text
    );
    assert!(!running_dir.join("Observation.ndjson").exists());

    // Cancel the failed job on B; a server with no retention deletes the other one.
    assert_eq!(
        b.call("DELETE", &on_b(&running_poll), Some(&admin), &[], None)
            .status,
        202
    );
    assert!(!running_dir.exists());
    let (base_c, api_c, key_c) = launch(
        a.dir.path(),
        "c.db",
        |c| c.export_retention = Duration::ZERO,
        None,
        None,
    );
    let c = Server {
        base: base_c.clone(),
        api: api_c,
        key: key_c,
        dir: tempfile::tempdir().unwrap(),
    };
    let on_c = done_poll.replacen(&a.base, &base_c, 1);
    assert_eq!(c.call("GET", &on_c, Some(&admin), &[], None).status, 404);
    let done_dir = a
        .dir
        .path()
        .join("export")
        .join(done_poll.rsplit('/').next().unwrap());
    assert!(!done_dir.exists());
    // Let the first server's stalled job finish; its directory is gone, so it leaves
    // nothing behind.
    STALL.store(false, Ordering::SeqCst);
}
