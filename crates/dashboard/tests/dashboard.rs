//! Dashboard integration tests: the real router over real HTTP on 127.0.0.1, with an
//! in-memory `CareData`, plus the users CLI and a real-browser test.
// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use vigil_dashboard::*;

// ---------------------------------------------------------------- fake clinical data

const HOUR: i64 = 3_600_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Unix ms as RFC 3339 UTC (civil-from-days, Howard Hinnant's algorithm).
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn parse_rfc3339_ms(s: &str) -> i64 {
    // Only the format produced by `rfc3339` above.
    let y: i64 = s[0..4].parse().unwrap();
    let m: i64 = s[5..7].parse().unwrap();
    let d: i64 = s[8..10].parse().unwrap();
    let hh: i64 = s[11..13].parse().unwrap();
    let mm: i64 = s[14..16].parse().unwrap();
    let ss: i64 = s[17..19].parse().unwrap();
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000
}

struct FakePatient {
    row: WorklistRow,
    team: String,
    series: Vec<VitalSeries>,
    scores: Vec<ScorePoint>,
}

/// In-memory `CareData`: patients belong to one team; admins see all.
struct Fake {
    patients: Mutex<Vec<FakePatient>>,
    alerts: Mutex<Vec<Alert>>,
    tx: broadcast::Sender<Update>,
}

fn visible(viewer: &Viewer, team: &str) -> bool {
    viewer.role == Role::Admin || viewer.teams.iter().any(|t| t == team)
}

impl Fake {
    fn team_of(&self, patient_id: &str) -> Option<String> {
        self.patients
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.row.patient_id == patient_id)
            .map(|p| p.team.clone())
    }

    fn alert(&self, id: &str) -> Alert {
        self.alerts
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.id == id)
            .unwrap()
            .clone()
    }

    fn open_alert_count(&self, patient_id: &str) -> u32 {
        self.alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.patient_id == patient_id && a.status == AlertStatus::Open)
            .count() as u32
    }
}

impl CareData for Fake {
    fn worklist(&self, viewer: &Viewer) -> Result<Vec<WorklistRow>, CareDataError> {
        Ok(self
            .patients
            .lock()
            .unwrap()
            .iter()
            .filter(|p| visible(viewer, &p.team))
            .map(|p| {
                let mut row = p.row.clone();
                row.open_alerts = self.open_alert_count(&row.patient_id);
                row
            })
            .collect())
    }

    fn patient(
        &self,
        viewer: &Viewer,
        patient_id: &str,
        since_ms: Option<i64>,
    ) -> Result<Option<PatientDetail>, CareDataError> {
        let patients = self.patients.lock().unwrap();
        let Some(p) = patients
            .iter()
            .find(|p| p.row.patient_id == patient_id && visible(viewer, &p.team))
        else {
            return Ok(None);
        };
        let since = since_ms.unwrap_or(i64::MIN);
        let keep = |t: &str| parse_rfc3339_ms(t) >= since;
        let mut summary = p.row.clone();
        summary.open_alerts = self.open_alert_count(patient_id);
        Ok(Some(PatientDetail {
            summary,
            series: p
                .series
                .iter()
                .map(|s| VitalSeries {
                    points: s.points.iter().filter(|q| keep(&q.t)).cloned().collect(),
                    ..s.clone()
                })
                .collect(),
            scores: p.scores.iter().filter(|s| keep(&s.t)).cloned().collect(),
            alerts: self
                .alerts
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.patient_id == patient_id)
                .cloned()
                .collect(),
        }))
    }

    fn alerts(
        &self,
        viewer: &Viewer,
        status: Option<AlertStatus>,
    ) -> Result<Vec<Alert>, CareDataError> {
        let list: Vec<Alert> = self.alerts.lock().unwrap().clone();
        Ok(list
            .into_iter()
            .filter(|a| status.is_none_or(|s| a.status == s))
            .filter(|a| {
                self.team_of(&a.patient_id)
                    .is_some_and(|t| visible(viewer, &t))
            })
            .collect())
    }

    fn acknowledge(
        &self,
        viewer: &Viewer,
        alert_id: &str,
        note: Option<&str>,
    ) -> Result<Alert, CareDataError> {
        let patient_id = self
            .alerts
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.id == alert_id)
            .map(|a| a.patient_id.clone());
        let Some(patient_id) =
            patient_id.filter(|pid| self.team_of(pid).is_some_and(|t| visible(viewer, &t)))
        else {
            return Err(CareDataError::NotFound(format!(
                "alert {alert_id} not found"
            )));
        };
        let updated = {
            let mut alerts = self.alerts.lock().unwrap();
            let a = alerts.iter_mut().find(|a| a.id == alert_id).unwrap();
            if a.status != AlertStatus::Open {
                return Err(CareDataError::Conflict(format!(
                    "alert {alert_id} is already {}",
                    if a.status == AlertStatus::Acknowledged {
                        "acknowledged"
                    } else {
                        "resolved"
                    }
                )));
            }
            a.status = AlertStatus::Acknowledged;
            a.acknowledged_by = Some(viewer.display_name.clone());
            a.acknowledged_at = Some(rfc3339(now_ms()));
            a.note = note.map(str::to_string);
            a.clone()
        };
        let _ = self.tx.send(Update::Alert {
            alert_id: alert_id.to_string(),
            patient_id,
        });
        Ok(updated)
    }

    fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.tx.subscribe()
    }

    fn can_view(&self, viewer: &Viewer, patient_id: &str) -> bool {
        self.team_of(patient_id)
            .is_some_and(|t| visible(viewer, &t))
    }

    /// A canned mapping-debugger answer that echoes the payload's heart rate, so the
    /// browser test sees its own input come back.
    fn test_templates(
        &self,
        request: serde_json::Value,
    ) -> Result<serde_json::Value, CareDataError> {
        let payload = request["payloads"]
            .get(0)
            .ok_or_else(|| CareDataError::Invalid("\"payloads\" is empty".into()))?;
        let hr = payload["heartrate"].to_string();
        Ok(serde_json::json!({
            "ok": true,
            "results": [{
                "payload": "payloads[0]",
                "measurements": [{
                    "type": "heartrate", "occurrenceTime": "2024-05-01T08:00:00Z",
                    "deviceId": "fake-device", "patientId": "p-fake",
                    "encounterId": null, "correlationId": null,
                    "properties": [{"name": "hr", "value": hr}],
                }],
                "observations": [{"resourceType": "Observation", "status": "final"}],
                "errors": [],
            }],
            "warnings": ["device typeName 'steps' has no FHIR template"],
        }))
    }
}

fn band_of(score: u32) -> &'static str {
    match score {
        7.. => "high",
        5..=6 => "medium",
        _ => "low",
    }
}

/// Deterministic wobble for generated readings.
fn wobble(i: i64, k: f64) -> f64 {
    ((i as f64) * k).sin()
}

struct Spec {
    id: &'static str,
    name: &'static str,
    birth: &'static str,
    gender: &'static str,
    team: &'static str,
    score: Option<(u32, &'static str)>,
    /// 0 = stable, 1 = deteriorating over the last day.
    trend: f64,
    partial: bool,
    flag: bool,
}

fn make_patient(s: &Spec, now: i64) -> FakePatient {
    let mut hr = Vec::new();
    let mut rr = Vec::new();
    let mut spo2 = Vec::new();
    let mut bp = Vec::new();
    let mut temp = Vec::new();
    let mut scores = Vec::new();
    // A reading every 2 hours for 3 days, deteriorating over the last 24 h if `trend`.
    for i in 0..=36 {
        let t = now - (72 - 2 * i) * HOUR - 7 * 60_000;
        let ts = rfc3339(t);
        let d = s.trend * ((i - 24).max(0) as f64 / 12.0);
        hr.push(Point {
            t: ts.clone(),
            v: (76.0 + 4.0 * wobble(i, 0.9) + 40.0 * d).round(),
            v2: None,
        });
        if !(s.partial && i > 30) {
            rr.push(Point {
                t: ts.clone(),
                v: (15.0 + wobble(i, 1.3) + 10.0 * d).round(),
                v2: None,
            });
        }
        spo2.push(Point {
            t: ts.clone(),
            v: (97.0 + wobble(i, 0.7) - 6.0 * d).round(),
            v2: None,
        });
        bp.push(Point {
            t: ts.clone(),
            v: (128.0 + 6.0 * wobble(i, 0.5) - 30.0 * d).round(),
            v2: Some((80.0 + 4.0 * wobble(i, 0.6) - 15.0 * d).round()),
        });
        temp.push(Point {
            t: ts.clone(),
            v: ((36.8 + 0.2 * wobble(i, 1.1) + 1.6 * d) * 10.0).round() / 10.0,
            v2: None,
        });
        if let Some((last_score, last_band)) = s.score {
            // The series climbs with the deterioration and ends on the current score.
            let (sc, band) = if i == 36 {
                (last_score, last_band.to_string())
            } else {
                let sc = (1.0 + 8.0 * d).round() as u32;
                (sc, band_of(sc).to_string())
            };
            scores.push(ScorePoint {
                t: ts,
                score: sc,
                band,
                partial: s.partial && i > 30,
                missing: if s.partial && i > 30 {
                    vec!["respiratory-rate".into()]
                } else {
                    vec![]
                },
            });
        }
    }
    let series = vec![
        VitalSeries {
            vital: "heart-rate".into(),
            label: "Heart rate".into(),
            unit: "/min".into(),
            points: hr,
        },
        VitalSeries {
            vital: "respiratory-rate".into(),
            label: "Respiratory rate".into(),
            unit: "/min".into(),
            points: rr,
        },
        VitalSeries {
            vital: "spo2".into(),
            label: "SpO₂".into(),
            unit: "%".into(),
            points: spo2,
        },
        VitalSeries {
            vital: "blood-pressure".into(),
            label: "Blood pressure".into(),
            unit: "mmHg".into(),
            points: bp,
        },
        VitalSeries {
            vital: "temperature".into(),
            label: "Temperature".into(),
            unit: "°C".into(),
            points: temp,
        },
    ];
    let latest = series
        .iter()
        .filter_map(|s| {
            s.points.last().map(|p| VitalLatest {
                vital: s.vital.clone(),
                label: s.label.clone(),
                value: p.v,
                value2: p.v2,
                unit: s.unit.clone(),
                time: p.t.clone(),
            })
        })
        .collect();
    FakePatient {
        row: WorklistRow {
            patient_id: s.id.into(),
            name: s.name.into(),
            birth_date: Some(s.birth.into()),
            gender: Some(s.gender.into()),
            risk: s.score.map(|(score, band)| RiskSummary {
                score,
                band: band.into(),
                partial: s.partial,
                missing: if s.partial {
                    vec!["respiratory-rate".into(), "consciousness".into()]
                } else {
                    vec![]
                },
                time: rfc3339(now - 7 * 60_000),
            }),
            latest,
            open_alerts: 0,
            flag_active: s.flag,
        },
        team: s.team.into(),
        series,
        scores,
    }
}

fn alert(id: &str, p: &Spec, age_min: i64, score: u32, band: &str, reason: &str) -> Alert {
    Alert {
        id: id.into(),
        patient_id: p.id.into(),
        patient_name: p.name.into(),
        status: AlertStatus::Open,
        opened_at: rfc3339(now_ms() - age_min * 60_000),
        score,
        band: band.into(),
        reason: reason.into(),
        acknowledged_by: None,
        acknowledged_at: None,
        note: None,
        resolved_at: None,
    }
}

/// The worklist order the care-team user of "ward-a" must see.
const EXPECTED_ORDER: &[&str] = &[
    "p-thompson", // high 8
    "p-bennett",  // medium 5
    "p-sharma",   // low-medium 3 (band beats a higher low score)
    "p-okafor",   // low 4
    "p-hughes",   // low 1, 1 open alert
    "p-clarke",   // low 1, no alert, name A
    "p-davies",   // low 1, no alert, name D
    "p-price",    // no score
];

fn fake() -> Arc<Fake> {
    let now = now_ms();
    let spec = |id, name, birth, gender, team, score, trend, partial, flag| Spec {
        id,
        name,
        birth,
        gender,
        team,
        score,
        trend,
        partial,
        flag,
    };
    // Deliberately not in risk order: the dashboard sorts.
    let specs = [
        spec(
            "p-davies",
            "Gareth Davies",
            "1958-01-30",
            "male",
            "ward-a",
            Some((1, "low")),
            0.0,
            false,
            false,
        ),
        spec(
            "p-price",
            "Eleanor Price",
            "1950-11-02",
            "female",
            "ward-a",
            None,
            0.0,
            false,
            false,
        ),
        spec(
            "p-okafor",
            "David Okafor",
            "1975-06-21",
            "male",
            "ward-a",
            Some((4, "low")),
            0.2,
            false,
            false,
        ),
        spec(
            "p-bennett",
            "Arthur Bennett",
            "1941-09-14",
            "male",
            "ward-a",
            Some((5, "medium")),
            0.5,
            true,
            false,
        ),
        spec(
            "p-hidden",
            "Other Ward Patient",
            "1960-01-01",
            "female",
            "ward-b",
            Some((9, "high")),
            1.0,
            false,
            true,
        ),
        spec(
            "p-clarke",
            "Aaron Clarke",
            "1969-04-08",
            "male",
            "ward-a",
            Some((1, "low")),
            0.0,
            false,
            false,
        ),
        spec(
            "p-thompson",
            "Margaret Thompson",
            "1948-03-12",
            "female",
            "ward-a",
            Some((8, "high")),
            1.0,
            false,
            true,
        ),
        spec(
            "p-sharma",
            "Priya Sharma",
            "1962-12-05",
            "female",
            "ward-a",
            Some((3, "low-medium")),
            0.3,
            false,
            false,
        ),
        spec(
            "p-hughes",
            "Siân Hughes",
            "1955-07-19",
            "female",
            "ward-a",
            Some((1, "low")),
            0.0,
            false,
            false,
        ),
    ];
    let by_id = |id: &str| specs.iter().find(|s| s.id == id).unwrap();
    let mut alerts = vec![
        alert(
            "a-1",
            by_id("p-thompson"),
            12,
            8,
            "high",
            "NEWS2 8 (high): RR 25, SpO₂ 91 %, HR 116",
        ),
        alert(
            "a-2",
            by_id("p-thompson"),
            190,
            6,
            "medium",
            "NEWS2 6 (medium), rising from 3",
        ),
        alert(
            "a-3",
            by_id("p-bennett"),
            35,
            5,
            "medium",
            "NEWS2 5 (medium): RR not recorded for 4 h",
        ),
        alert(
            "a-4",
            by_id("p-hughes"),
            50,
            3,
            "low-medium",
            "Single parameter 3: SpO₂ 91 %",
        ),
        alert("a-9", by_id("p-hidden"), 5, 9, "high", "NEWS2 9 (high)"),
    ];
    let mut old = alert(
        "a-0",
        by_id("p-thompson"),
        40 * 60,
        5,
        "medium",
        "NEWS2 5 (medium)",
    );
    old.status = AlertStatus::Acknowledged;
    old.acknowledged_by = Some("Dr Amara Singh".into());
    old.acknowledged_at = Some(rfc3339(now - 39 * HOUR));
    old.note = Some("Reviewed by phone; diuretic increased".into());
    old.resolved_at = None;
    alerts.push(old);
    let (tx, _) = broadcast::channel(64);
    Arc::new(Fake {
        patients: Mutex::new(specs.iter().map(|s| make_patient(s, now)).collect()),
        alerts: Mutex::new(alerts),
        tx,
    })
}

// ---------------------------------------------------------------- harness

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "dashboard-{tag}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const PASSWORD: &str = "correct horse battery";

struct Server {
    addr: SocketAddr,
    data: Arc<Fake>,
}

async fn start(config: DashboardConfig) -> Server {
    let dir = temp_dir("srv");
    let users = Arc::new(UserStore::open(&dir).unwrap());
    users
        .add_user(
            "nurse",
            "Nurse Jo Park",
            PASSWORD,
            Role::CareTeam,
            &["ward-a".into()],
        )
        .unwrap();
    users
        .add_user("admin", "Admin Lee", PASSWORD, Role::Admin, &[])
        .unwrap();
    let data = fake();
    let app = router(users, data.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { addr, data }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    /// The `vigil_session=...` pair of Set-Cookie.
    fn session_cookie(&self) -> String {
        self.header("set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = body.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("response within 30 s")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        headers,
        body,
    }
}

const CSRF: (&str, &str) = ("X-Requested-With", "vigil");

async fn login(addr: SocketAddr, user: &str, password: &str) -> Resp {
    let body = serde_json::json!({ "username": user, "password": password }).to_string();
    http(addr, "POST", "/api/login", &[CSRF], Some(&body)).await
}

async fn session(addr: SocketAddr, user: &str) -> String {
    let r = login(addr, user, PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.session_cookie()
}

async fn get(addr: SocketAddr, path: &str, cookie: &str) -> Resp {
    http(addr, "GET", path, &[("Cookie", cookie)], None).await
}

async fn post(addr: SocketAddr, path: &str, cookie: &str, body: Option<&str>) -> Resp {
    http(addr, "POST", path, &[("Cookie", cookie), CSRF], body).await
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_me_logout() {
    let s = start(DashboardConfig::default()).await;
    let r = http(s.addr, "GET", "/api/me", &[], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "not signed in or session expired");

    let r = login(s.addr, "nurse", "wrong password").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "wrong username or password");
    assert!(r.header("set-cookie").is_none());
    let r = login(s.addr, "nobody", PASSWORD).await;
    assert_eq!(r.status, 401);

    let r = login(s.addr, "nurse", PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let user = &r.json()["user"];
    assert_eq!(user["username"], "nurse");
    assert_eq!(user["display_name"], "Nurse Jo Park");
    assert_eq!(user["role"], "care-team");
    let set_cookie = r.header("set-cookie").unwrap().to_string();
    assert!(set_cookie.starts_with("vigil_session="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(set_cookie.contains("Path=/"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    let token = r.session_cookie()["vigil_session=".len()..].to_string();
    assert_eq!(token.len(), 64, "256-bit token as hex");
    let cookie = r.session_cookie();

    let r = get(s.addr, "/api/me", &cookie).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["user"]["teams"], serde_json::json!(["ward-a"]));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let r = post(s.addr, "/api/logout", &cookie, None).await;
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = get(s.addr, "/api/me", &cookie).await;
    assert_eq!(r.status, 401, "session deleted by logout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_cookie_flag_is_configurable() {
    let s = start(DashboardConfig {
        secure_cookies: true,
        ..DashboardConfig::default()
    })
    .await;
    let r = login(s.addr, "nurse", PASSWORD).await;
    assert!(r.header("set-cookie").unwrap().contains("; Secure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requires_a_valid_session() {
    let s = start(DashboardConfig::default()).await;
    let bogus = format!("vigil_session={}", "ab".repeat(32));
    for cookie in ["", "vigil_session=garbage", bogus.as_str()] {
        for path in [
            "/api/me",
            "/api/worklist",
            "/api/patients/p-thompson",
            "/api/alerts?status=open",
            "/api/events",
        ] {
            let r = get(s.addr, path, cookie).await;
            assert_eq!(r.status, 401, "{path} with {cookie:?}");
            assert!(r.json()["error"].is_string());
        }
        let r = post(s.addr, "/api/alerts/a-1/ack", cookie, None).await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(s.data.alert("a-1").status, AlertStatus::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_need_the_csrf_header() {
    let s = start(DashboardConfig::default()).await;
    let body = serde_json::json!({ "username": "nurse", "password": PASSWORD }).to_string();
    let r = http(s.addr, "POST", "/api/login", &[], Some(&body)).await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("X-Requested-With"));
    assert!(r.header("set-cookie").is_none());

    let cookie = session(s.addr, "nurse").await;
    let r = http(
        s.addr,
        "POST",
        "/api/alerts/a-1/ack",
        &[("Cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(s.data.alert("a-1").status, AlertStatus::Open);
    let r = http(
        s.addr,
        "POST",
        "/api/alerts/a-1/ack",
        &[("Cookie", &cookie), ("X-Requested-With", "other")],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_per_username() {
    let s = start(DashboardConfig::default()).await;
    for i in 0..5 {
        let r = login(s.addr, "nurse", "bad password").await;
        assert_eq!(r.status, 401, "failure {i}");
    }
    let r = login(s.addr, "nurse", "bad password").await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Even the right password is refused while limited, and case does not evade it.
    assert_eq!(login(s.addr, "nurse", PASSWORD).await.status, 429);
    assert_eq!(login(s.addr, "NURSE", PASSWORD).await.status, 429);
    // Other users are unaffected.
    assert_eq!(login(s.addr, "admin", PASSWORD).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worklist_is_sorted_by_risk_and_limited_to_the_viewers_teams() {
    let s = start(DashboardConfig::default()).await;
    let cookie = session(s.addr, "nurse").await;
    let r = get(s.addr, "/api/worklist", &cookie).await;
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.json()["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["patient_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, EXPECTED_ORDER);
    let first = &r.json()["patients"][0];
    assert_eq!(first["risk"]["band"], "high");
    assert_eq!(first["open_alerts"], 2);
    assert_eq!(first["flag_active"], true);

    // The admin sees the other ward's score-9 patient first.
    let admin = session(s.addr, "admin").await;
    let r = get(s.addr, "/api/worklist", &admin).await;
    let patients = r.json()["patients"].as_array().unwrap().clone();
    assert_eq!(patients.len(), EXPECTED_ORDER.len() + 1);
    assert_eq!(patients[0]["patient_id"], "p-hidden");
}

#[test]
fn sort_order_tie_breaks() {
    let row = |id: &str, name: &str, risk: Option<(u32, &str)>, alerts: u32| WorklistRow {
        patient_id: id.into(),
        name: name.into(),
        birth_date: None,
        gender: None,
        risk: risk.map(|(score, band)| RiskSummary {
            score,
            band: band.into(),
            partial: false,
            missing: vec![],
            time: "2026-01-01T00:00:00Z".into(),
        }),
        latest: vec![],
        open_alerts: alerts,
        flag_active: false,
    };
    let mut rows = vec![
        row("none", "Anna", None, 9),
        row("low0", "Zed", Some((0, "low")), 0),
        row("med6", "Bob", Some((6, "medium")), 0),
        row("med5a", "Carl", Some((5, "medium")), 1),
        row("med5b", "alice", Some((5, "medium")), 1),
        row("high7", "Dan", Some((7, "high")), 0),
        row("lm3", "Eve", Some((3, "low-medium")), 0),
    ];
    sort_worklist(&mut rows);
    let ids: Vec<&str> = rows.iter().map(|r| r.patient_id.as_str()).collect();
    assert_eq!(
        ids,
        ["high7", "med6", "med5b", "med5a", "lm3", "low0", "none"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_detail_since_and_404s() {
    let s = start(DashboardConfig::default()).await;
    let cookie = session(s.addr, "nurse").await;
    let r = get(s.addr, "/api/patients/p-thompson", &cookie).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let all = r.json();
    assert_eq!(all["summary"]["name"], "Margaret Thompson");
    let hr_all = all["series"][0]["points"].as_array().unwrap().len();
    assert_eq!(hr_all, 37);
    assert!(
        all["series"][3]["points"][0]["v2"].is_number(),
        "BP has diastolic"
    );
    assert_eq!(all["alerts"].as_array().unwrap().len(), 3);

    let since = now_ms() - 24 * HOUR;
    let r = get(
        s.addr,
        &format!("/api/patients/p-thompson?since={since}"),
        &cookie,
    )
    .await;
    assert_eq!(r.status, 200);
    let hr_day = r.json()["series"][0]["points"].as_array().unwrap().len();
    assert_eq!(hr_day, 12, "readings every 2 h in the last 24 h");

    let r = get(s.addr, "/api/patients/p-thompson?since=yesterday", &cookie).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("since"));
    let r = get(s.addr, "/api/patients/no-such", &cookie).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    // Another team's patient is indistinguishable from a missing one.
    let r = get(s.addr, "/api/patients/p-hidden", &cookie).await;
    assert_eq!(r.status, 404);
    let r = get(s.addr, "/api/nonsense", &cookie).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no such API endpoint");
    let r = get(s.addr, "/api/login", &cookie).await;
    assert_eq!(r.status, 405);
    assert!(r.json()["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_acknowledgement_flow() {
    let s = start(DashboardConfig::default()).await;
    let cookie = session(s.addr, "nurse").await;
    let r = get(s.addr, "/api/alerts?status=open", &cookie).await;
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.json()["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        ["a-1", "a-2", "a-3", "a-4"],
        "open alerts of ward-a only"
    );
    let r = get(s.addr, "/api/alerts", &cookie).await;
    assert_eq!(r.json()["alerts"].as_array().unwrap().len(), 5);
    let r = get(s.addr, "/api/alerts?status=closed", &cookie).await;
    assert_eq!(r.status, 400);

    let r = post(
        s.addr,
        "/api/alerts/a-1/ack",
        &cookie,
        Some(r#"{"note":"  Called patient, ambulance requested  "}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let a = r.json();
    assert_eq!(a["status"], "acknowledged");
    assert_eq!(a["acknowledged_by"], "Nurse Jo Park");
    assert_eq!(a["note"], "Called patient, ambulance requested");
    assert!(a["acknowledged_at"].is_string());

    let r = post(s.addr, "/api/alerts/a-1/ack", &cookie, None).await;
    assert_eq!(r.status, 409);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("already acknowledged"));
    let r = post(s.addr, "/api/alerts/a-404/ack", &cookie, None).await;
    assert_eq!(r.status, 404);
    let r = post(s.addr, "/api/alerts/a-9/ack", &cookie, None).await;
    assert_eq!(r.status, 404, "other team's alert");
    assert_eq!(s.data.alert("a-9").status, AlertStatus::Open);
    let r = post(s.addr, "/api/alerts/a-2/ack", &cookie, Some("{not json")).await;
    assert_eq!(r.status, 400);
    assert_eq!(s.data.alert("a-2").status, AlertStatus::Open);

    let r = get(s.addr, "/api/alerts?status=open", &cookie).await;
    assert_eq!(r.json()["alerts"].as_array().unwrap().len(), 3);
    let r = get(s.addr, "/api/worklist", &cookie).await;
    assert_eq!(r.json()["patients"][0]["open_alerts"], 1);
}

/// Reads an SSE response until `needle` appears (or 10 s pass); returns what was read.
async fn read_until(s: &mut TcpStream, buf: &mut String, needle: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 4096];
    while !buf.contains(needle) {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_visible_updates_with_keep_alives() {
    let s = start(DashboardConfig {
        keep_alive: Duration::from_millis(200),
        ..DashboardConfig::default()
    })
    .await;
    let cookie = session(s.addr, "nurse").await;
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "GET /api/events HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n",
        s.addr
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    assert!(read_until(&mut sock, &mut buf, "\r\n\r\n").await, "{buf}");
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    assert!(buf
        .to_lowercase()
        .contains("content-type: text/event-stream"));

    // The subscription exists once the headers are sent. An update about another team's
    // patient must not be delivered; the next one must.
    s.data
        .tx
        .send(Update::Patient {
            patient_id: "p-hidden".into(),
        })
        .unwrap();
    s.data
        .tx
        .send(Update::Alert {
            alert_id: "a-3".into(),
            patient_id: "p-bennett".into(),
        })
        .unwrap();
    assert!(read_until(&mut sock, &mut buf, "p-bennett").await, "{buf}");
    assert!(buf.contains("event: update"), "{buf}");
    assert!(
        buf.contains(r#"data: {"kind":"alert","alert_id":"a-3","patient_id":"p-bennett"}"#),
        "{buf}"
    );
    assert!(
        !buf.contains("p-hidden"),
        "other team's update leaked: {buf}"
    );

    s.data
        .tx
        .send(Update::Patient {
            patient_id: "p-sharma".into(),
        })
        .unwrap();
    assert!(
        read_until(
            &mut sock,
            &mut buf,
            r#"{"kind":"patient","patient_id":"p-sharma"}"#
        )
        .await,
        "{buf}"
    );
    assert!(
        read_until(&mut sock, &mut buf, ": keep-alive").await,
        "{buf}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_streams_end_on_shutdown() {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let s = start(DashboardConfig {
        shutdown: Some(stopped),
        ..DashboardConfig::default()
    })
    .await;
    let cookie = session(s.addr, "nurse").await;
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "GET /api/events HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
        s.addr
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    assert!(read_until(&mut sock, &mut buf, "\r\n\r\n").await, "{buf}");
    stop.send(true).unwrap();
    // The chunked body's terminating chunk: the server ended the stream.
    assert!(
        read_until(&mut sock, &mut buf, "\r\n0\r\n\r\n").await,
        "{buf}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_assets() {
    let s = start(DashboardConfig::default()).await;
    let r = http(s.addr, "GET", "/", &[], None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("/assets/login.js"),
        "login page without session"
    );
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));

    let cookie = session(s.addr, "nurse").await;
    for path in ["/", "/patients/p-thompson"] {
        let r = get(s.addr, path, &cookie).await;
        assert_eq!(r.status, 200);
        assert!(r.body.contains("/assets/app.js"), "app for {path}");
    }
    let r = http(s.addr, "GET", "/patients/p-thompson", &[], None).await;
    assert!(r.body.contains("/assets/login.js"));

    for (name, mime) in [
        ("app.js", "text/javascript"),
        ("charts.js", "text/javascript"),
        ("app.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let r = http(s.addr, "GET", &format!("/assets/{name}"), &[], None).await;
        assert_eq!(r.status, 200, "{name}");
        assert!(
            r.header("content-type").unwrap().starts_with(mime),
            "{name}"
        );
        assert!(!r.body.is_empty());
    }
    let r = http(s.addr, "GET", "/assets/secret.db", &[], None).await;
    assert_eq!(r.status, 404);
}

// ---------------------------------------------------------------- users, passwords, CLI

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(clap::Subcommand)]
enum Top {
    Users(UsersArgs),
}

fn run_cli(args: &[&str], stdin: &str) -> Result<String, DashboardError> {
    let mut argv = vec!["vigil"];
    argv.extend_from_slice(args);
    let Top::Users(users) = Cli::try_parse_from(argv).unwrap().cmd;
    let mut input = std::io::Cursor::new(stdin.as_bytes().to_vec());
    let mut out = Vec::new();
    run_users(&users, &mut input, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn users_cli_add_list_set_password() {
    let dir = temp_dir("cli");
    let d = dir.to_str().unwrap();
    let out = run_cli(
        &[
            "users",
            "add",
            "--data-dir",
            d,
            "--username",
            "jo",
            "--display-name",
            "Jo Park",
            "--team",
            "ward-a",
            "--team",
            "ward-b",
            "--password-stdin",
        ],
        "s3cret-password\n",
    )
    .unwrap();
    assert_eq!(out, "added user jo\n");
    let out = run_cli(
        &[
            "users",
            "add",
            "--data-dir",
            d,
            "--username",
            "boss",
            "--role",
            "admin",
        ],
        "",
    )
    .unwrap();
    let generated = out
        .strip_prefix("added user boss with password: ")
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(generated.len(), 20);

    let store = UserStore::open(&dir).unwrap();
    let jo = store
        .verify_password("jo", "s3cret-password")
        .unwrap()
        .unwrap();
    assert_eq!(jo.display_name, "Jo Park");
    assert_eq!(jo.role, Role::CareTeam);
    assert_eq!(jo.teams, ["ward-a", "ward-b"]);
    let boss = store.verify_password("boss", &generated).unwrap().unwrap();
    assert_eq!(boss.role, Role::Admin);
    assert_eq!(boss.display_name, "boss");

    let out = run_cli(&["users", "list", "--data-dir", d], "").unwrap();
    assert_eq!(
        out,
        "USERNAME\tROLE\tTEAMS\tDISPLAY NAME\nboss\tadmin\t-\tboss\njo\tcare-team\tward-a,ward-b\tJo Park\n"
    );
    let out = run_cli(&["users", "list", "--data-dir", d, "--json"], "").unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[1]["teams"], serde_json::json!(["ward-a", "ward-b"]));
    assert!(!out.contains("argon2"), "list never shows hashes");

    // Errors: duplicate, short password, empty stdin, bad username, unknown role.
    let e = run_cli(
        &[
            "users",
            "add",
            "--data-dir",
            d,
            "--username",
            "jo",
            "--password",
            "another-password",
        ],
        "",
    )
    .unwrap_err();
    assert!(matches!(e, DashboardError::UserExists(_)), "{e}");
    let e = run_cli(
        &[
            "users",
            "add",
            "--data-dir",
            d,
            "--username",
            "kim",
            "--password",
            "short",
        ],
        "",
    )
    .unwrap_err();
    assert!(e.to_string().contains("at least 8"), "{e}");
    let e = run_cli(
        &[
            "users",
            "add",
            "--data-dir",
            d,
            "--username",
            "kim",
            "--password-stdin",
        ],
        "",
    )
    .unwrap_err();
    assert!(e.to_string().contains("no password"), "{e}");
    let e = run_cli(
        &[
            "users",
            "add",
            "--data-dir",
            d,
            "--username",
            "bad name",
            "--password",
            "long-enough",
        ],
        "",
    )
    .unwrap_err();
    assert!(e.to_string().contains("invalid username"), "{e}");
    let bad_role = Cli::try_parse_from([
        "vigil",
        "users",
        "add",
        "--data-dir",
        d,
        "--username",
        "x",
        "--role",
        "doctor",
    ]);
    assert!(bad_role.is_err());

    // set-password replaces the password and ends the user's sessions.
    let sess = store.create_session("jo", Duration::from_secs(60)).unwrap();
    assert!(store.lookup_session(&sess.token).unwrap().is_some());
    let out = run_cli(
        &[
            "users",
            "set-password",
            "--data-dir",
            d,
            "--username",
            "jo",
            "--password-stdin",
        ],
        "brand-new-password\n",
    )
    .unwrap();
    assert_eq!(out, "password of jo changed\n");
    assert!(store
        .verify_password("jo", "s3cret-password")
        .unwrap()
        .is_none());
    assert!(store
        .verify_password("jo", "brand-new-password")
        .unwrap()
        .is_some());
    assert!(store.lookup_session(&sess.token).unwrap().is_none());
    let e = run_cli(
        &[
            "users",
            "set-password",
            "--data-dir",
            d,
            "--username",
            "ghost",
            "--password",
            "whatever-long",
        ],
        "",
    )
    .unwrap_err();
    assert!(matches!(e, DashboardError::UnknownUser(_)), "{e}");
}

#[test]
fn passwords_are_argon2id_and_sessions_are_hashed_and_expire() {
    let dir = temp_dir("hash");
    let store = UserStore::open(&dir).unwrap();
    store
        .add_user("a", "A", "same-password", Role::CareTeam, &[])
        .unwrap();
    store
        .add_user("b", "B", "same-password", Role::CareTeam, &[])
        .unwrap();
    let ha = store.password_hash("a").unwrap().unwrap();
    let hb = store.password_hash("b").unwrap().unwrap();
    assert!(ha.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{ha}");
    assert_ne!(ha, hb, "random salts");
    assert!(!ha.contains("same-password"));
    assert!(store
        .verify_password("a", "same-password")
        .unwrap()
        .is_some());
    assert!(store
        .verify_password("a", "Same-password")
        .unwrap()
        .is_none());
    assert!(store
        .verify_password("zz", "same-password")
        .unwrap()
        .is_none());

    let s = store.create_session("a", Duration::from_secs(60)).unwrap();
    assert_eq!(
        store
            .lookup_session(&s.token)
            .unwrap()
            .unwrap()
            .viewer
            .username,
        "a"
    );
    // Only the SHA-256 of the token is stored.
    let db = std::fs::read(dir.join("users.db")).unwrap();
    let wal = std::fs::read(dir.join("users.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(!bytes
            .windows(s.token.len())
            .any(|w| w == s.token.as_bytes()));
    }
    store.delete_session(&s.token).unwrap();
    assert!(store.lookup_session(&s.token).unwrap().is_none());

    let expired = store.create_session("a", Duration::ZERO).unwrap();
    assert!(store.lookup_session(&expired.token).unwrap().is_none());
    assert!(store.lookup_session("not-a-token").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_debugger_endpoint_needs_a_session_and_passes_the_request_through() {
    let s = start(DashboardConfig::default()).await;
    let body = r#"{"payloads":[{"heartrate":77}]}"#;
    let r = http(s.addr, "POST", "/api/templates/test", &[CSRF], Some(body)).await;
    assert_eq!(r.status, 401);
    let cookie = session(s.addr, "nurse").await;
    let r = http(
        s.addr,
        "POST",
        "/api/templates/test",
        &[("Cookie", &cookie)],
        Some(body),
    )
    .await;
    assert_eq!(r.status, 403, "the CSRF header is required");
    let r = post(s.addr, "/api/templates/test", &cookie, Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        v["results"][0]["measurements"][0]["properties"][0]["value"],
        "77"
    );
    let r = post(
        s.addr,
        "/api/templates/test",
        &cookie,
        Some(r#"{"payloads":[]}"#),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("payloads"));
    let r = post(s.addr, "/api/templates/test", &cookie, Some("{not json")).await;
    assert_eq!(r.status, 400);
    let r = get(s.addr, "/mapping", &cookie).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Mapping debugger"));
}

// ---------------------------------------------------------------- real browser

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_worklist_patient_charts_acknowledge() {
    let root = repo_root();
    let script = root.join("tests/browser/dashboard.mjs");
    let chromium = Path::new("/usr/bin/chromium");
    let mut missing = Vec::new();
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        missing.push("node (apt-get install -y nodejs npm)");
    }
    if !chromium.exists() {
        missing.push("/usr/bin/chromium (apt-get install -y chromium)");
    }
    if !root
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        missing.push("tests/browser/node_modules (npm ci --prefix tests/browser)");
    }
    assert!(
        missing.is_empty(),
        "the browser test needs: {}; .ci/run installs them",
        missing.join(", ")
    );

    let s = start(DashboardConfig::default()).await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let shot = shots.join("dashboard-patient.png");
    let worklist_shot = shots.join("dashboard-worklist.png");
    let _ = std::fs::remove_file(&shot);
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script)
        .current_dir(&root)
        .env("VIGIL_URL", format!("http://{}", s.addr))
        .env("VIGIL_USERNAME", "nurse")
        .env("VIGIL_PASSWORD", PASSWORD)
        .env("VIGIL_SCREENSHOT", &shot)
        .env("VIGIL_SCREENSHOT_WORKLIST", &worklist_shot)
        .env("VIGIL_SCREENSHOT_LOGIN", shots.join("dashboard-login.png"))
        .env(
            "VIGIL_SCREENSHOT_MAPPING",
            shots.join("dashboard-mapping.png"),
        )
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("browser test finished within 180 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("browser test passed"), "{stdout}");

    // The acknowledgement reached the data layer, with who and the note.
    let acked: Vec<Alert> = s
        .data
        .alerts
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.patient_id == "p-thompson" && a.status == AlertStatus::Acknowledged)
        .filter(|a| a.note.as_deref() == Some("Phoned patient; repeat observations in 1 h"))
        .cloned()
        .collect();
    assert_eq!(
        acked.len(),
        1,
        "exactly one alert acknowledged from the browser"
    );
    assert_eq!(acked[0].acknowledged_by.as_deref(), Some("Nurse Jo Park"));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
}
