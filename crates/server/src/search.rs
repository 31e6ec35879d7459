//! Search: authorization constraints folded into store queries, paging across them,
//! the searchset Bundle, conditional-interaction lookups and Patient `$everything`.
//!
//! The store evaluates AND of clauses and OR within a clause, but a patient-compartment
//! restriction is an OR across parameters (`subject` or `performer` references the
//! patient). Such a search runs as several sub-queries, one per (grant, compartment
//! parameter), read one after the other; a match already returned by an earlier
//! sub-query is skipped (checked with an `_id` probe of that sub-query), and the paging
//! cursor is `m<sub-query>.<store cursor>`. Within each sub-query `_sort` holds; across
//! them the order is by sub-query.

use crate::api::{blocking, full_url, Ctx, Req};
use crate::error::ApiError;
use crate::http::{fhir_response, Prefer};
use crate::FhirApi;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::HashSet;
use vigil_auth::{Authorizer, Interaction, SearchConstraint};
use vigil_fhir::search::{SearchQuery, SearchRegistry, SummaryMode, TotalMode};
use vigil_fhir_model::Model;
use vigil_store::{FhirStore, SearchPage, Stored, MAX_SEARCH_COUNT};

/// One page across the sub-queries.
pub(crate) struct Page {
    pub matches: Vec<Stored>,
    pub included: Vec<Stored>,
    pub next: Option<String>,
    pub total: Option<u64>,
}

/// Extra clauses parsed for a type (auth restrictions, `_id` probes).
fn extra_clauses(
    t: &str,
    pairs: &[(String, String)],
) -> Result<Vec<vigil_fhir::search::Clause>, String> {
    let q =
        SearchQuery::from_pairs(Some(t), pairs, SearchRegistry::r4()).map_err(|e| e.to_string())?;
    if let Some((n, why)) = q.unknown.first() {
        return Err(format!("{n}: {why}"));
    }
    Ok(q.clauses)
}

/// The store queries whose union is what the caller may see of `q`.
pub(crate) fn build_subs(ctx: &Ctx, q: &SearchQuery) -> Result<Vec<SearchQuery>, ApiError> {
    let explicit: Vec<String> = match &q.resource_type {
        Some(t) => vec![t.clone()],
        None => q.types.clone(),
    };
    let implicit = explicit.is_empty();
    let types: Vec<String> = if implicit {
        Model::r4()
            .resource_types()
            .filter(|t| crate::api::is_type(t))
            .map(str::to_string)
            .collect()
    } else {
        explicit
    };
    let mut per_type: Vec<(String, Option<SearchConstraint>)> = Vec::new();
    for t in types {
        match ctx.access.search_constraint(&t) {
            Ok(c) => per_type.push((t, c)),
            Err(d) if !implicit => return Err(d.into()),
            Err(_) => {}
        }
    }
    if per_type.is_empty() {
        return Err(ApiError::Forbidden(
            "no granted scope allows searching any resource type".into(),
        ));
    }
    let mut base = q.clone();
    base.cursor = None;
    if per_type.iter().all(|(_, c)| c.is_none()) {
        if implicit && per_type.len() < Model::r4().resource_types().count() {
            // Some types are not searchable with this token: search the others only.
            base.types = per_type.into_iter().map(|(t, _)| t).collect();
        }
        return Ok(vec![base]);
    }
    let mut subs = Vec::new();
    for (t, constraint) in per_type {
        let mut sub = base.clone();
        sub.resource_type = Some(t.clone());
        sub.types = Vec::new();
        let Some(constraint) = constraint else {
            subs.push(sub);
            continue;
        };
        for r in constraint.any_of {
            let sets: Vec<Vec<(String, String)>> = match &r.compartment {
                None => vec![Vec::new()],
                Some(c) => {
                    let mut v: Vec<Vec<(String, String)>> = Vec::new();
                    if c.by_id {
                        v.push(vec![("_id".into(), c.patient.clone())]);
                    }
                    for p in &c.params {
                        v.push(vec![(p.clone(), format!("Patient/{}", c.patient))]);
                    }
                    v
                }
            };
            for mut set in sets {
                set.extend(
                    r.query
                        .iter()
                        .map(|qc| (qc.param.clone(), qc.value.clone())),
                );
                let clauses = extra_clauses(&t, &set).map_err(|why| {
                    ApiError::Forbidden(format!(
                        "the access restriction on {t} cannot be applied to a search: {why}"
                    ))
                })?;
                let mut s = sub.clone();
                s.clauses.extend(clauses);
                subs.push(s);
            }
        }
    }
    Ok(subs)
}

fn parse_cursor(cursor: Option<&str>, subs: usize) -> Result<(usize, Option<String>), ApiError> {
    let Some(c) = cursor else {
        return Ok((0, None));
    };
    if subs == 1 {
        return Ok((0, Some(c.to_string())));
    }
    let bad = || ApiError::bad_request("invalid search cursor");
    let rest = c.strip_prefix('m').ok_or_else(bad)?;
    let (i, inner) = rest.split_once('.').ok_or_else(bad)?;
    let i: usize = i.parse().map_err(|_| bad())?;
    if i >= subs {
        return Err(bad());
    }
    Ok((i, (!inner.is_empty()).then(|| inner.to_string())))
}

/// Whether `m` (a match of sub-query `i`) was already a match of an earlier one.
fn seen_before(
    store: &dyn FhirStore,
    subs: &[SearchQuery],
    i: usize,
    m: &Stored,
) -> Result<bool, ApiError> {
    for sub in &subs[..i] {
        if sub.resource_type.as_deref() != Some(m.resource_type.as_str()) {
            continue;
        }
        let mut probe = sub.clone();
        probe.include.clear();
        probe.revinclude.clear();
        probe.sort.clear();
        probe.total = None;
        let id = extra_clauses(&m.resource_type, &[("_id".into(), m.id.clone())])
            .map_err(ApiError::Internal)?;
        probe.clauses.extend(id);
        let r = store.search(
            &probe,
            &SearchPage {
                count: Some(1),
                cursor: None,
            },
        )?;
        if !r.matches.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One page of the union of `subs` (blocking).
pub(crate) fn run_subs(
    store: &dyn FhirStore,
    subs: &[SearchQuery],
    count: u32,
    cursor: Option<&str>,
    want_total: bool,
) -> Result<Page, ApiError> {
    let (mut i, mut inner) = parse_cursor(cursor, subs.len())?;
    if subs.len() == 1 {
        let mut q = subs[0].clone();
        q.total = want_total.then_some(TotalMode::Accurate);
        let r = store.search(
            &q,
            &SearchPage {
                count: Some(count),
                cursor: inner,
            },
        )?;
        return Ok(Page {
            matches: r.matches,
            included: r.included,
            next: r.next_cursor,
            total: r.total,
        });
    }
    let mut page = Page {
        matches: Vec::new(),
        included: Vec::new(),
        next: None,
        total: None,
    };
    while i < subs.len() && (page.matches.len() as u32) < count {
        let mut q = subs[i].clone();
        q.total = None;
        let want = count - page.matches.len() as u32;
        let r = store.search(
            &q,
            &SearchPage {
                count: Some(want),
                cursor: inner.take(),
            },
        )?;
        for m in r.matches {
            if !seen_before(store, subs, i, &m)? {
                page.matches.push(m);
            }
        }
        page.included.extend(r.included);
        match r.next_cursor {
            Some(c) => inner = Some(c),
            None => i += 1,
        }
    }
    if i < subs.len() && count > 0 {
        page.next = Some(format!("m{i}.{}", inner.unwrap_or_default()));
    }
    if want_total {
        // Distinct matches over all sub-queries (bounded by what the caller may see,
        // e.g. one patient's compartment).
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for sub in subs {
            let mut q = sub.clone();
            q.include.clear();
            q.revinclude.clear();
            q.total = None;
            let mut cur = None;
            loop {
                let r = store.search(
                    &q,
                    &SearchPage {
                        count: Some(MAX_SEARCH_COUNT),
                        cursor: cur,
                    },
                )?;
                for m in r.matches {
                    seen.insert((m.resource_type, m.id));
                }
                match r.next_cursor {
                    Some(c) => cur = Some(c),
                    None => break,
                }
            }
        }
        page.total = Some(seen.len() as u64);
    }
    let mut dedup: HashSet<(String, String)> = HashSet::new();
    page.included
        .retain(|s| dedup.insert((s.resource_type.clone(), s.id.clone())));
    Ok(page)
}

/// Run `run_subs` on the blocking pool under the search deadline.
pub(crate) async fn run_with_deadline(
    api: &FhirApi,
    subs: Vec<SearchQuery>,
    count: u32,
    cursor: Option<String>,
    want_total: bool,
) -> Result<Page, ApiError> {
    let deadline = api.inner.config.search_timeout;
    let work = blocking(api, move |s| {
        run_subs(s, &subs, count, cursor.as_deref(), want_total)
    });
    match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
        // The blocking search goes on in the background and its result is dropped;
        // the client gets its answer now instead of a hanging request.
        Err(_) => Err(ApiError::Timeout(format!(
            "the search did not complete within {} ms; narrow the criteria",
            deadline.as_millis()
        ))),
    }
}

/// The page size for `_count` (`None`: the default), clamped.
fn page_size(api: &FhirApi, count: Option<u32>) -> u32 {
    let max = api
        .inner
        .config
        .max_page_size
        .min(MAX_SEARCH_COUNT as usize) as u32;
    count
        .unwrap_or(api.inner.config.default_page_size as u32)
        .min(max)
}

/// Only what the caller may read of included resources.
fn visible_include(ctx: &Ctx, s: &Stored) -> bool {
    ctx.access
        .check_type(&Interaction::Read, &s.resource_type)
        .is_ok()
        && ctx
            .access
            .check_resource(&Interaction::Read, &s.resource)
            .is_ok()
}

/// `GET [type]?...`, `POST [type]/_search`, `GET /?_type=...`.
pub(crate) async fn search(
    api: &FhirApi,
    ctx: &Ctx,
    t: Option<&str>,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
    path: &str,
) -> Result<Response, ApiError> {
    let q = SearchQuery::from_pairs(t, &pairs, SearchRegistry::r4())?;
    if Prefer::from_headers(headers).strict {
        if let Some(e) = q.strict_errors() {
            return Err(e.into());
        }
    }
    let subs = build_subs(ctx, &q)?;
    let summary_count = q.summary == Some(SummaryMode::Count);
    let count = if summary_count {
        0
    } else {
        page_size(api, q.count)
    };
    let want_total =
        summary_count || matches!(q.total, Some(TotalMode::Accurate | TotalMode::Estimate));
    let page = run_with_deadline(api, subs, count, q.cursor.clone(), want_total).await?;
    let bundle = searchset(api, ctx, &q, path, page);
    Ok(fhir_response(StatusCode::OK, &bundle))
}

fn link_url(api: &FhirApi, path: &str, qs: &str) -> String {
    let base = &api.inner.config.base_url;
    match (path.is_empty(), qs.is_empty()) {
        (true, true) => base.clone(),
        (true, false) => format!("{base}?{qs}"),
        (false, true) => format!("{base}/{path}"),
        (false, false) => format!("{base}/{path}?{qs}"),
    }
}

fn searchset(api: &FhirApi, ctx: &Ctx, q: &SearchQuery, path: &str, page: Page) -> Value {
    let mut links =
        vec![json!({"relation": "self", "url": link_url(api, path, &q.to_query_string())})];
    if let Some(next) = &page.next {
        let mut nq = q.clone();
        nq.cursor = Some(next.clone());
        links.push(json!({"relation": "next", "url": link_url(api, path, &nq.to_query_string())}));
    }
    let mut entries: Vec<Value> = Vec::new();
    for m in &page.matches {
        entries.push(json!({
            "fullUrl": full_url(api, &m.resource_type, &m.id),
            "resource": crate::subset::apply(&m.resource, q.summary, &q.elements),
            "search": {"mode": "match"},
        }));
    }
    for inc in page.included.iter().filter(|s| visible_include(ctx, s)) {
        entries.push(json!({
            "fullUrl": full_url(api, &inc.resource_type, &inc.id),
            "resource": crate::subset::apply(&inc.resource, q.summary, &q.elements),
            "search": {"mode": "include"},
        }));
    }
    if !q.unknown.is_empty() {
        let issues: Vec<Value> = q
            .unknown
            .iter()
            .map(|(n, why)| {
                json!({"severity": "warning", "code": "not-supported",
                    "diagnostics": format!("search parameter {n} was ignored: {why}"),
                    "expression": [n]})
            })
            .collect();
        entries.push(json!({
            "resource": {"resourceType": "OperationOutcome", "issue": issues},
            "search": {"mode": "outcome"},
        }));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": vigil_store::new_id(),
        "meta": {"lastUpdated": vigil_store::format_rfc3339(vigil_store::now_millis())},
        "type": "searchset",
    });
    if let Some(total) = page.total {
        bundle["total"] = json!(total);
    }
    bundle["link"] = json!(links);
    if !entries.is_empty() {
        // FHIR JSON has no empty arrays.
        bundle["entry"] = json!(entries);
    }
    bundle
}

/// The resources a conditional interaction's criteria match (at most 2: enough to tell
/// none, one and several apart), among those the caller may search.
pub(crate) async fn conditional_matches(
    api: &FhirApi,
    ctx: &Ctx,
    t: &str,
    criteria: &str,
) -> Result<Vec<Stored>, ApiError> {
    let criteria = criteria.trim_start_matches('?');
    let criteria = criteria.strip_prefix(&format!("{t}?")).unwrap_or(criteria);
    let q = SearchQuery::parse(Some(t), criteria, SearchRegistry::r4())?;
    if let Some(e) = q.strict_errors() {
        // A conditional write that silently ignored a criterion could hit the wrong
        // resource: unknown parameters are errors here.
        return Err(e.into());
    }
    if q.clauses.is_empty() {
        return Err(ApiError::bad_request(format!(
            "conditional criteria {criteria:?} select nothing specific"
        )));
    }
    let subs = build_subs(ctx, &q)?;
    let page = run_with_deadline(api, subs, 2, None, false).await?;
    Ok(page.matches)
}

/// `GET Patient/{id}/$everything`: the patient and every resource of its compartment
/// the caller may read, paged.
pub(crate) async fn everything(
    api: &FhirApi,
    ctx: &Ctx,
    id: &str,
    req: &Req,
) -> Result<Response, ApiError> {
    let op = Interaction::Operation("everything".into());
    ctx.access.check_type(&op, "Patient")?;
    let Some(patient) = crate::api::current(api, "Patient", id).await? else {
        return Err(ApiError::NotFound(format!("Patient/{id} not found")));
    };
    ctx.access.check_resource(&op, &patient.resource)?;
    let mut cursor = None;
    let mut count = None;
    for (n, v) in req.pairs()? {
        match n.as_str() {
            "_cursor" => cursor = Some(v),
            "_count" => {
                count = Some(v.parse::<u32>().map_err(|_| ApiError::BadRequest {
                    message: format!("_count={v} is not a non-negative integer"),
                    expression: Some("_count".into()),
                })?)
            }
            _ => {}
        }
    }
    let reg = SearchRegistry::r4();
    let mut subs = Vec::new();
    let id_q = SearchQuery::from_pairs(Some("Patient"), &[("_id", id)], reg)?;
    subs.push(id_q);
    let reference = format!("Patient/{id}");
    for t in Model::r4().resource_types() {
        if !crate::api::is_type(t) || ctx.access.check_type(&Interaction::Read, t).is_err() {
            continue;
        }
        for p in Model::r4().patient_compartment_params(t) {
            subs.push(SearchQuery::from_pairs(
                Some(t),
                &[(p.as_str(), reference.as_str())],
                reg,
            )?);
        }
    }
    let size = page_size(api, count);
    let page = run_with_deadline(api, subs, size, cursor.clone(), false).await?;
    let base = &api.inner.config.base_url;
    let path = format!("Patient/{id}/$everything");
    let url = |c: Option<&str>| {
        let mut pairs = Vec::new();
        if let Some(n) = count {
            pairs.push(("_count".to_string(), n.to_string()));
        }
        if let Some(c) = c {
            pairs.push(("_cursor".to_string(), c.to_string()));
        }
        let qs = crate::api::encode_pairs(&pairs);
        if qs.is_empty() {
            format!("{base}/{path}")
        } else {
            format!("{base}/{path}?{qs}")
        }
    };
    let mut links = vec![json!({"relation": "self", "url": url(cursor.as_deref())})];
    if let Some(n) = &page.next {
        links.push(json!({"relation": "next", "url": url(Some(n))}));
    }
    let entries: Vec<Value> = page
        .matches
        .iter()
        .filter(|s| visible_include(ctx, s))
        .map(|s| {
            json!({"fullUrl": full_url(api, &s.resource_type, &s.id),
                "resource": &*s.resource, "search": {"mode": "match"}})
        })
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": vigil_store::new_id(),
        "meta": {"lastUpdated": vigil_store::format_rfc3339(vigil_store::now_millis())},
        "type": "searchset",
        "link": links,
    });
    if !entries.is_empty() {
        bundle["entry"] = json!(entries);
    }
    Ok(fhir_response(StatusCode::OK, &bundle))
}
