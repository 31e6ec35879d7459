//! Care-team rules for `user/` scopes: with a policy, a user's `user/` grants reach only
//! the Patient compartments of the patients of their care teams.

use super::*;
use std::collections::HashSet;
use vigil_server::{CareTeamPolicy, PolicyError};

/// Team A's nurse sees the patients listed in `team_a`; `Practitioner/admin` sees all;
/// everyone else sees no one.
struct Teams {
    team_a: Vec<String>,
}

impl CareTeamPolicy for Teams {
    fn patients_for(&self, fhir_user: &str) -> Result<Option<HashSet<String>>, PolicyError> {
        Ok(match fhir_user {
            "Practitioner/nurse-a" => Some(self.team_a.iter().cloned().collect()),
            "Practitioner/admin" => None,
            "Practitioner/broken" => return Err(PolicyError("users.db is unreadable".into())),
            _ => Some(HashSet::new()),
        })
    }
}

fn user_token(s: &Server, fhir_user: Option<&str>) -> String {
    let mut req = TokenRequest::new("clinician", ScopeSet::parse("user/*.cruds").unwrap());
    if let Some(u) = fhir_user {
        req = req.fhir_user(u);
    }
    s.key.issue(&req)
}

fn search_ids(s: &Server, token: &str, path: &str) -> Vec<String> {
    let r = s.call("GET", path, Some(token), &[], None);
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    entries(&r)
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn user_scopes_reach_only_the_care_teams_patients() {
    let (pa, pb) = ("team-a-1".to_string(), "team-b-1".to_string());
    let policy = Arc::new(Teams {
        team_a: vec![pa.clone()],
    });
    let dir = tempfile::tempdir().unwrap();
    let (base, api, key) = launch(dir.path(), "fhir.db", |_| {}, None, Some(policy));
    let s = Server {
        base,
        api,
        key,
        dir,
    };
    // The data, written with a system/ token (which the policy does not touch).
    for id in [&pa, &pb] {
        let mut p = patient(id);
        p["id"] = json!(id);
        let r = s.put(&format!("/Patient/{id}"), &p, &[]);
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let mut obs = Vec::new();
    for (p, v) in [(&pa, 61.0), (&pa, 62.0), (&pb, 63.0)] {
        let r = s.post("/Observation", &observation(p, v));
        assert_eq!(r.status, 201, "{}", r.text);
        obs.push(r.body["id"].as_str().unwrap().to_string());
    }
    let org = s.post(
        "/Organization",
        &json!({"resourceType": "Organization", "name": "Ward 7"}),
    );
    assert_eq!(org.status, 201);
    let org = org.body["id"].as_str().unwrap().to_string();

    let nurse = user_token(&s, Some("Practitioner/nurse-a"));
    // Reads: team A's patient and its Observations; 403 on team B's.
    assert_eq!(
        s.call("GET", &format!("/Patient/{pa}"), Some(&nurse), &[], None)
            .status,
        200
    );
    assert_eq!(
        s.call(
            "GET",
            &format!("/Observation/{}", obs[0]),
            Some(&nurse),
            &[],
            None
        )
        .status,
        200
    );
    let r = s.call(
        "GET",
        &format!("/Observation/{}", obs[2]),
        Some(&nurse),
        &[],
        None,
    );
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(issue_code(&r), "forbidden");
    assert_eq!(
        s.call("GET", &format!("/Patient/{pb}"), Some(&nurse), &[], None)
            .status,
        403
    );
    assert_eq!(
        s.call(
            "GET",
            &format!("/Patient/{pb}/$everything"),
            Some(&nurse),
            &[],
            None
        )
        .status,
        403
    );
    // Searches are filtered to team A.
    assert_eq!(
        sorted(search_ids(&s, &nurse, "/Observation")),
        sorted(obs[..2].to_vec())
    );
    assert_eq!(search_ids(&s, &nurse, "/Patient"), vec![pa.clone()]);
    assert!(search_ids(&s, &nurse, &format!("/Observation?subject=Patient/{pb}")).is_empty());
    let r = s.call(
        "GET",
        "/Observation?_total=accurate",
        Some(&nurse),
        &[],
        None,
    );
    assert_eq!(r.body["total"], 2, "{}", r.text);
    // History is filtered the same way.
    let r = s.call("GET", "/Observation/_history", Some(&nurse), &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(entries(&r).len(), 2, "{}", r.text);
    // Writes: only into team A's compartments.
    let r = s.call(
        "POST",
        "/Observation",
        Some(&nurse),
        &[("Content-Type", "application/fhir+json")],
        Some(&observation(&pb, 70.0).to_string()),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = s.call(
        "POST",
        "/Observation",
        Some(&nurse),
        &[("Content-Type", "application/fhir+json")],
        Some(&observation(&pa, 70.0).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    // Types outside the Patient compartment stay type-level.
    assert_eq!(
        s.call(
            "GET",
            &format!("/Organization/{org}"),
            Some(&nurse),
            &[],
            None
        )
        .status,
        200
    );
    assert_eq!(search_ids(&s, &nurse, "/Organization"), vec![org.clone()]);

    // A user of no team, and a user/ token naming no user, reach no patient data.
    for t in [
        user_token(&s, Some("Practitioner/stranger")),
        user_token(&s, None),
    ] {
        assert_eq!(
            s.call("GET", &format!("/Patient/{pa}"), Some(&t), &[], None)
                .status,
            403
        );
        assert_eq!(
            s.call("GET", "/Observation", Some(&t), &[], None).status,
            403
        );
        assert_eq!(search_ids(&s, &t, "/Organization"), vec![org.clone()]);
    }
    // An administrator (no limit from the policy) and system/ tokens see everyone.
    let admin = user_token(&s, Some("Practitioner/admin"));
    assert_eq!(search_ids(&s, &admin, "/Observation").len(), 4);
    assert_eq!(search_ids(&s, &s.admin(), "/Patient").len(), 2);
    // A failing lookup is a server error, never a silent grant.
    let broken = user_token(&s, Some("Practitioner/broken"));
    assert_eq!(
        s.call("GET", "/Observation", Some(&broken), &[], None)
            .status,
        500
    );
}

#[test]
fn without_a_policy_user_scopes_stay_type_level() {
    let s = start();
    let pa = s.create_patient("Nopolicy1");
    let pb = s.create_patient("Nopolicy2");
    let t = user_token(&s, Some("Practitioner/nurse-a"));
    assert_eq!(
        sorted(search_ids(&s, &t, "/Patient")),
        sorted(vec![pa, pb.clone()])
    );
    assert_eq!(
        s.call("GET", &format!("/Patient/{pb}"), Some(&t), &[], None)
            .status,
        200
    );
}
