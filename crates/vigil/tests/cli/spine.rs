//! The monitoring spine end to end on a real `vigil serve` process: device
//! registration, ingest, normalization, NEWS2, RiskAssessment, Flag, alert and its
//! acknowledgement; and durability of acknowledged readings across SIGKILL.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `vigil serve` on a free port.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .env("VIGIL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vigil serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("vigil serve exited before printing its URL")
                .unwrap();
            if let Some(rest) = line.split("serving on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, base }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(data_dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["token", "issue", "--data-dir"])
        .arg(data_dir)
        .args(["--scope", "system/*.cruds", "--subject", "nurse-jo"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

/// (status, JSON body) without turning 4xx/5xx into errors.
fn call(req: ureq::Request, body: Option<&Value>) -> (u16, Value) {
    let result = match body {
        Some(b) => req
            .set("Content-Type", "application/json")
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

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_patient(a: &ureq::Agent, base: &str, bearer: &str) -> String {
    let (status, body) = call(
        a.post(&format!("{base}/fhir/Patient"))
            .set("Authorization", bearer),
        Some(
            &json!({"resourceType": "Patient", "name": [{"family": "Okafor", "given": ["Ada"]}], "gender": "female", "birthDate": "1950-03-02"}),
        ),
    );
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

fn add_device(a: &ureq::Agent, base: &str, bearer: &str, patient: &str, kind: &str) -> String {
    let (status, body) = call(
        a.post(&format!("{base}/v1/devices"))
            .set("Authorization", bearer),
        Some(&json!({"patient": patient, "kind": kind})),
    );
    assert_eq!(status, 201, "{body}");
    assert!(body["secret"].as_str().unwrap().len() >= 40);
    format!("Bearer {}", body["credential"].as_str().unwrap())
}

fn ingest(a: &ureq::Agent, base: &str, credential: &str, body: &Value) -> (u16, Value) {
    call(
        a.post(&format!("{base}/ingest"))
            .set("Authorization", credential),
        Some(body),
    )
}

fn at(offset_min: i64) -> String {
    let ms = vigil_store_time::now() + offset_min * 60_000;
    vigil_store_time::format(ms)
}

/// Minimal time helpers (the test does not link the store crate).
mod vigil_store_time {
    pub fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }
    pub fn format(ms: i64) -> String {
        let secs = ms.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

fn open_alerts(a: &ureq::Agent, base: &str, bearer: &str, patient: &str) -> Vec<Value> {
    let (status, body) = call(
        a.get(&format!("{base}/v1/alerts?patient={patient}"))
            .set("Authorization", bearer),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body["alerts"].as_array().unwrap().clone()
}

#[test]
fn deteriorating_patient_reaches_the_care_team_and_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let bearer = format!("Bearer {}", token(dir.path()));
    let server = Server::start(dir.path());
    let base = server.base.clone();
    let a = agent();

    // Unauthenticated calls are refused.
    assert_eq!(call(a.get(&format!("{base}/fhir/Patient")), None).0, 401);
    assert_eq!(call(a.get(&format!("{base}/v1/alerts")), None).0, 401);
    let (status, body) = ingest(
        &a,
        &base,
        "Bearer nobody.nothing",
        &json!({"type": "thermometer"}),
    );
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        call(a.post(&format!("{base}/ingest")), Some(&json!({}))).0,
        401
    );

    let patient = create_patient(&a, &base, &bearer);
    let wearable = add_device(&a, &base, &bearer, &patient, "wearable");
    let oximeter = add_device(&a, &base, &bearer, &patient, "pulse-oximeter");
    let cuff = add_device(&a, &base, &bearer, &patient, "bp-cuff");
    let thermometer = add_device(&a, &base, &bearer, &patient, "thermometer");

    // Bad input gets a 4xx with the reason.
    let (status, body) = call(
        a.post(&format!("{base}/ingest"))
            .set("Authorization", &thermometer),
        None,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = ingest(&a, &base, &thermometer, &json!([1, 2]));
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("not an object"),
        "{body}"
    );

    // Sepsis-like readings: RR 28 (3), SpO2 90 (3), SBP 88 (3), HR 135 (3), T 39.5 (2),
    // on air (0); consciousness is not measured at home: NEWS2 14, high, partial.
    let t = at(-120);
    let (s, b) = ingest(
        &a,
        &base,
        &wearable,
        &json!({"type": "wearable", "heartRate": 135, "respiratoryRate": 28, "measuredAt": t, "messageId": "w1"}),
    );
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["accepted"], 1);
    // A retry with the same message id is accepted once.
    let (s, b) = ingest(
        &a,
        &base,
        &wearable,
        &json!({"type": "wearable", "heartRate": 135, "respiratoryRate": 28, "measuredAt": t, "messageId": "w1"}),
    );
    assert_eq!((s, b["duplicates"].clone()), (202, json!(1)));
    let nd = format!(
        "{}\n{}\n",
        json!({"type": "pulse-oximeter", "spo2": 90, "pulseRate": 134, "measuredAt": at(-119)}),
        json!({"type": "pulse-oximeter", "spo2": 90, "pulseRate": 135, "measuredAt": at(-118)})
    );
    let resp = a
        .post(&format!("{base}/ingest"))
        .set("Authorization", &oximeter)
        .set("Content-Type", "application/x-ndjson")
        .send_string(&nd)
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(ingest(&a, &base, &cuff, &json!({"type": "bp-cuff", "systolic": 88, "diastolic": 52, "pulseRate": 133, "measuredAt": at(-117)})).0, 202);
    assert_eq!(
        ingest(
            &a,
            &base,
            &thermometer,
            &json!({"type": "thermometer", "temperature": 39.5, "measuredAt": at(-116)})
        )
        .0,
        202
    );

    let alert = wait_for("an open alert", || {
        open_alerts(&a, &base, &bearer, &patient)
            .into_iter()
            .find(|al| al["status"] == "open" && al["score"] == 14)
    });
    assert_eq!(alert["band"], "high");
    assert_eq!(
        open_alerts(&a, &base, &bearer, &patient).len(),
        1,
        "one deterioration, one alert"
    );

    // The Observations, with LOINC codes and UCUM units.
    let (status, bundle) = call(
        a.get(&format!(
            "{base}/fhir/Observation?subject=Patient/{patient}&_count=100"
        ))
        .set("Authorization", &bearer),
        None,
    );
    assert_eq!(status, 200);
    let observations: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let has = |code: &str| {
        observations.iter().any(|o| {
            o["code"]["coding"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["system"] == "http://loinc.org" && c["code"] == code)
        })
    };
    for code in ["8867-4", "9279-1", "59408-5", "85354-9", "8310-5"] {
        assert!(has(code), "no Observation with LOINC {code}: {bundle}");
    }
    let bp = observations
        .iter()
        .find(|o| {
            o["code"]["coding"][0]["code"] == "85354-9"
                || o["code"]["coding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["code"] == "85354-9")
        })
        .unwrap();
    assert!(bp["component"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["valueQuantity"]["code"] == "mm[Hg]"));

    // The RiskAssessment: NEWS2 14, high, partial (consciousness missing).
    let (status, bundle) = call(
        a.get(&format!(
            "{base}/fhir/RiskAssessment?subject=Patient/{patient}&_count=100"
        ))
        .set("Authorization", &bearer),
        None,
    );
    assert_eq!(status, 200);
    let ras: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let worst = ras
        .iter()
        .find(|ra| ra["contained"][0]["valueQuantity"]["value"] == 14)
        .unwrap_or_else(|| panic!("no RiskAssessment with score 14: {bundle}"));
    let bands: Vec<&Value> = worst["prediction"][0]["qualitativeRisk"]["coding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["code"])
        .collect();
    assert!(bands.contains(&&json!("high")), "{worst}");
    assert!(
        worst["note"][0]["text"]
            .as_str()
            .unwrap()
            .contains("onsciousness"),
        "{worst}"
    );
    assert!(
        worst["occurrencePeriod"]["start"].is_string()
            && worst["occurrencePeriod"]["end"].is_string()
    );
    assert!(worst["basis"].as_array().unwrap().len() >= 5);

    // The active Flag.
    let flag_ref = alert["flag"].as_str().unwrap();
    let (status, flag) = call(
        a.get(&format!("{base}/fhir/{flag_ref}"))
            .set("Authorization", &bearer),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(flag["status"], "active");
    assert_eq!(flag["subject"]["reference"], format!("Patient/{patient}"));

    // More bad readings: still one alert.
    assert_eq!(
        ingest(
            &a,
            &base,
            &thermometer,
            &json!({"type": "thermometer", "temperature": 39.8, "measuredAt": at(-115)})
        )
        .0,
        202
    );

    // Acknowledge: who and when are recorded; a second acknowledgement conflicts.
    let id = alert["id"].as_str().unwrap();
    let (status, acked) = call(
        a.post(&format!("{base}/v1/alerts/{id}/ack"))
            .set("Authorization", &bearer),
        Some(&json!({"note": "called patient, ambulance dispatched"})),
    );
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["status"], "acknowledged");
    assert_eq!(acked["acknowledgedBy"], "nurse-jo");
    assert!(acked["acknowledgedAt"].is_string());
    let (status, _) = call(
        a.post(&format!("{base}/v1/alerts/{id}/ack"))
            .set("Authorization", &bearer),
        Some(&json!({})),
    );
    assert_eq!(status, 409);

    // Recovery: all parameters normal → the Flag becomes inactive; still one alert.
    assert_eq!(ingest(&a, &base, &wearable, &json!({"type": "wearable", "heartRate": 72, "respiratoryRate": 14, "measuredAt": at(-60)})).0, 202);
    assert_eq!(
        ingest(
            &a,
            &base,
            &oximeter,
            &json!({"type": "pulse-oximeter", "spo2": 97, "pulseRate": 72, "measuredAt": at(-59)})
        )
        .0,
        202
    );
    assert_eq!(ingest(&a, &base, &cuff, &json!({"type": "bp-cuff", "systolic": 124, "diastolic": 78, "pulseRate": 72, "measuredAt": at(-58)})).0, 202);
    let t57 = at(-57);
    assert_eq!(
        ingest(
            &a,
            &base,
            &thermometer,
            &json!({"type": "thermometer", "temperature": 36.8, "measuredAt": t57})
        )
        .0,
        202
    );
    // Low risk for 3 minutes is not yet a recovery (30 minutes by default): the flag stays.
    wait_for("the recovery to be scored", || {
        let (_, list) = call(
            a.get(&format!(
                "{base}/fhir/RiskAssessment?subject=Patient/{patient}&_count=200"
            ))
            .set("Authorization", &bearer),
            None,
        );
        let prefix = t57.trim_end_matches('Z');
        list["entry"]
            .as_array()?
            .iter()
            .any(|e| {
                e["resource"]["occurrencePeriod"]["end"]
                    .as_str()
                    .is_some_and(|end| end.starts_with(prefix))
                    && e["resource"]["prediction"][0]["qualitativeRisk"]["coding"][1]["code"]
                        == "low"
            })
            .then_some(())
    });
    let (_, flag) = call(
        a.get(&format!("{base}/fhir/{flag_ref}"))
            .set("Authorization", &bearer),
        None,
    );
    assert_eq!(
        flag["status"], "active",
        "lowered before the recovery period"
    );
    // Still low 37 minutes later: the flag is lowered.
    assert_eq!(ingest(&a, &base, &wearable, &json!({"type": "wearable", "heartRate": 70, "respiratoryRate": 15, "measuredAt": at(-20)})).0, 202);
    wait_for("the flag to become inactive", || {
        let (_, flag) = call(
            a.get(&format!("{base}/fhir/{flag_ref}"))
                .set("Authorization", &bearer),
            None,
        );
        (flag["status"] == "inactive").then_some(())
    });
    let alerts = open_alerts(&a, &base, &bearer, &patient);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["status"], "acknowledged");

    // Metrics are exposed.
    let metrics = a
        .get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(metrics.contains("vigil_flags_raised_total 1"), "{metrics}");
}

#[test]
fn acknowledged_readings_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let bearer = format!("Bearer {}", token(dir.path()));
    let server = Server::start(dir.path());
    let base = server.base.clone();
    let a = agent();
    let patient = create_patient(&a, &base, &bearer);
    let thermometer = add_device(&a, &base, &bearer, &patient, "thermometer");
    // Post readings and kill the server the instant the last 2xx arrives.
    let n = 150;
    let start = vigil_store_time::now() - 24 * 3600 * 1000;
    for i in 0..n {
        let t = vigil_store_time::format(start + i * 60_000);
        let (status, body) = ingest(
            &a,
            &base,
            &thermometer,
            &json!({"type": "thermometer", "temperature": 36.5, "measuredAt": t}),
        );
        assert_eq!(status, 202, "{body}");
    }
    server.kill9();

    let server = Server::start(dir.path());
    let base = server.base.clone();
    let count = || {
        let (status, body) = call(
            a.get(&format!(
                "{base}/fhir/Observation?subject=Patient/{patient}&_summary=count"
            ))
            .set("Authorization", &bearer),
            None,
        );
        assert_eq!(status, 200, "{body}");
        body["total"].as_i64().unwrap()
    };
    wait_for("every acknowledged reading", || {
        (count() == n).then_some(())
    });
}

/// The pipeline caches Device → Patient links; a Device re-linked through the FHIR
/// API is seen by the next reading (the FHIR server's write observer drops the cache).
#[test]
fn relinking_a_device_through_the_fhir_api_moves_its_next_readings() {
    let dir = tempfile::tempdir().unwrap();
    let bearer = format!("Bearer {}", token(dir.path()));
    let server = Server::start(dir.path());
    let base = server.base.clone();
    let a = agent();
    let first = create_patient(&a, &base, &bearer);
    let second = create_patient(&a, &base, &bearer);
    let credential = add_device(&a, &base, &bearer, &first, "thermometer");
    let device = credential
        .trim_start_matches("Bearer ")
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let observations = |patient: &str| {
        let (status, body) = call(
            a.get(&format!(
                "{base}/fhir/Observation?subject=Patient/{patient}"
            ))
            .set("Authorization", &bearer),
            None,
        );
        assert_eq!(status, 200, "{body}");
        body["entry"].as_array().cloned().unwrap_or_default()
    };
    let reading = |minutes: i64| json!({"type": "thermometer", "temperature": 37.1, "measuredAt": at(minutes)});
    assert_eq!(ingest(&a, &base, &credential, &reading(-30)).0, 202);
    wait_for("the first Observation", || {
        (observations(&first).len() == 1).then_some(())
    });

    // Re-link the Device to the second patient with a PUT through /fhir.
    let (status, mut d) = call(
        a.get(&format!("{base}/fhir/Device/{device}"))
            .set("Authorization", &bearer),
        None,
    );
    assert_eq!(status, 200, "{d}");
    d["patient"] = json!({"reference": format!("Patient/{second}")});
    let (status, body) = call(
        a.put(&format!("{base}/fhir/Device/{device}"))
            .set("Authorization", &bearer),
        Some(&d),
    );
    assert_eq!(status, 200, "{body}");

    assert_eq!(ingest(&a, &base, &credential, &reading(-20)).0, 202);
    let entries = wait_for("the Observation of the second patient", || {
        let e = observations(&second);
        (e.len() == 1).then_some(e)
    });
    let o = &entries[0]["resource"];
    assert_eq!(o["subject"]["reference"], format!("Patient/{second}"));
    assert_eq!(o["device"]["reference"], format!("Device/{device}"));
    assert_eq!(observations(&first).len(), 1);
}

#[test]
fn serve_refuses_unknown_identity_resolution_and_error_policy() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value, named) in [
        ("--identity-resolution", "Guess", "identity_resolution"),
        ("--error-policy", "retry", "error_policy"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args([flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(named) && err.contains(value), "{err}");
    }
}
