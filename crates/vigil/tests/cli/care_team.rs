//! Care-team rules of `vigil serve` for `user/` scopes: a token issued with `vigil
//! token issue --user <dashboard user>` reaches only the patients of that user's teams.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data_dir: &Path) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--default-team", "ward-a"])
        .env("VIGIL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vigil serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let server = Server(child);
    let base = loop {
        let line = lines.next().expect("vigil serve exited").unwrap();
        if let Some(rest) = line.split("serving on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (server, base)
}

fn vigil_ok(args: &[&str], data_dir: &Path, stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "vigil {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn call(req: ureq::Request, body: Option<&Value>) -> (u16, Value) {
    let req = req.timeout(Duration::from_secs(30));
    let result = match body {
        Some(b) => req
            .set("Content-Type", "application/fhir+json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn match_ids(bundle: &Value) -> Vec<String> {
    let mut ids: Vec<String> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn user_tokens_reach_only_their_care_teams_patients() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    vigil_ok(
        &[
            "users",
            "add",
            "--username",
            "jo",
            "--team",
            "ward-a",
            "--password-stdin",
        ],
        d,
        Some("a-long-password\n"),
    );
    vigil_ok(
        &[
            "users",
            "add",
            "--username",
            "lee",
            "--team",
            "ward-b",
            "--password-stdin",
        ],
        d,
        Some("a-long-password\n"),
    );
    let system = format!(
        "Bearer {}",
        vigil_ok(&["token", "issue", "--scope", "system/*.cruds"], d, None)
    );
    let jo = format!(
        "Bearer {}",
        vigil_ok(
            &["token", "issue", "--scope", "user/*.rs", "--user", "jo"],
            d,
            None
        )
    );
    let lee = format!(
        "Bearer {}",
        vigil_ok(
            &["token", "issue", "--scope", "user/*.rs", "--user", "lee"],
            d,
            None
        )
    );
    let (_server, base) = serve(d);
    let fhir = format!("{base}/fhir");

    // Patient A joins ward-a (the default team) when the pipeline first sees a reading
    // of its device; patient B has no team.
    let mut patients = Vec::new();
    for family in ["Teama", "Teamb"] {
        let (s, p) = call(
            ureq::post(&format!("{fhir}/Patient")).set("Authorization", &system),
            Some(&json!({"resourceType": "Patient", "name": [{"family": family}]})),
        );
        assert_eq!(s, 201, "{p}");
        patients.push(p["id"].as_str().unwrap().to_string());
    }
    let (pa, pb) = (patients[0].clone(), patients[1].clone());
    let (s, device) = call(
        ureq::post(&format!("{base}/v1/devices")).set("Authorization", &system),
        Some(&json!({"patient": pa, "kind": "thermometer"})),
    );
    assert_eq!(s, 201, "{device}");
    let credential = format!("Bearer {}", device["credential"].as_str().unwrap());
    let (s, r) = call(
        ureq::post(&format!("{base}/ingest")).set("Authorization", &credential),
        Some(
            &json!({"type": "thermometer", "temperature": 37.2, "measuredAt": "2024-05-01T08:00:00Z"}),
        ),
    );
    assert_eq!(s, 202, "{r}");
    let obs = |p: &str| {
        json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": format!("Patient/{p}")},
            "valueQuantity": {"value": 70, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
    };
    let (s, ob) = call(
        ureq::post(&format!("{fhir}/Observation")).set("Authorization", &system),
        Some(&obs(&pb)),
    );
    assert_eq!(s, 201, "{ob}");
    let ob = ob["id"].as_str().unwrap().to_string();

    // Wait until jo's search shows patient A's temperature (the pipeline has run).
    let deadline = Instant::now() + Duration::from_secs(60);
    let jo_obs = loop {
        let (s, b) = call(
            ureq::get(&format!("{fhir}/Observation")).set("Authorization", &jo),
            None,
        );
        assert_eq!(s, 200, "{b}");
        let ids = match_ids(&b);
        if !ids.is_empty() {
            break b;
        }
        assert!(Instant::now() < deadline, "patient A never reached ward-a");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Only patient A's resources.
    for e in jo_obs["entry"].as_array().unwrap() {
        assert_eq!(
            e["resource"]["subject"]["reference"],
            format!("Patient/{pa}"),
            "{jo_obs}"
        );
    }
    let (_, b) = call(
        ureq::get(&format!("{fhir}/Patient")).set("Authorization", &jo),
        None,
    );
    assert_eq!(match_ids(&b), vec![pa.clone()]);
    assert_eq!(
        call(
            ureq::get(&format!("{fhir}/Patient/{pa}")).set("Authorization", &jo),
            None
        )
        .0,
        200
    );
    let (s, r) = call(
        ureq::get(&format!("{fhir}/Patient/{pb}")).set("Authorization", &jo),
        None,
    );
    assert_eq!(s, 403, "{r}");
    assert_eq!(
        call(
            ureq::get(&format!("{fhir}/Observation/{ob}")).set("Authorization", &jo),
            None
        )
        .0,
        403
    );
    // lee's team has no patients.
    assert_eq!(
        call(
            ureq::get(&format!("{fhir}/Patient/{pa}")).set("Authorization", &lee),
            None
        )
        .0,
        403
    );
    // An operator puts patient B in ward-b's panel: lee reaches it from the next request.
    let out = vigil_ok(&["patients", "assign", "--team", "ward-b", &pb], d, None);
    assert!(
        out.contains(&format!("Patient/{pb}\tassigned to ward-b")),
        "{out}"
    );
    let (s, r) = call(
        ureq::get(&format!("{fhir}/Patient/{pb}")).set("Authorization", &lee),
        None,
    );
    assert_eq!(s, 200, "{r}");
    let (_, b) = call(
        ureq::get(&format!("{fhir}/Observation")).set("Authorization", &lee),
        None,
    );
    assert_eq!(match_ids(&b), vec![ob.clone()]);
    let listed = vigil_ok(&["patients", "list", "--team", "ward-b"], d, None);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.starts_with(&format!("Patient/{pb}\t")) && listed.ends_with("\tward-b"));
    let all = vigil_ok(&["patients", "list"], d, None);
    assert!(
        all.contains(&format!("Patient/{pa}\t")) && all.contains("ward-a"),
        "{all}"
    );
    // And takes it out again.
    vigil_ok(&["patients", "unassign", "--team", "ward-b", &pb], d, None);
    let (s, _) = call(
        ureq::get(&format!("{fhir}/Patient/{pb}")).set("Authorization", &lee),
        None,
    );
    assert_eq!(s, 403);
    // A patient the FHIR store does not have is refused with what to do.
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "patients",
            "assign",
            "--team",
            "ward-b",
            "no-such-patient",
            "--data-dir",
        ])
        .arg(d)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in the FHIR store"));

    // --user needs an existing user.
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "token",
            "issue",
            "--scope",
            "user/*.rs",
            "--user",
            "nobody",
            "--data-dir",
        ])
        .arg(d)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such user"));
}
