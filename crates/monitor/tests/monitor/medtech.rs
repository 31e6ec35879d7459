//! MedTech-compatible behaviour of the running pipeline: the reference's sample template
//! sets end to end into the FHIR store, identity resolution modes, error kinds and
//! metrics, and the blocking error policy. Readings go through `POST /ingest` with a
//! device credential and the pipeline thread; results are read back from the store.

use super::*;
use std::time::{Duration, Instant};
use vigil_monitor::pipeline::DEAD_LETTER_TOPIC;
use vigil_monitor::{ErrorPolicy, IdentityResolutionType, PipelineConfig, PipelineHandle};

struct Rig {
    base: String,
    monitor: Arc<Monitor>,
    store: Arc<dyn FhirStore>,
    pipeline: Option<PipelineHandle>,
    _dir: tempfile::TempDir,
}

fn rig(set: &str, pipeline: PipelineConfig) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn FhirStore> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let log = Arc::new(FileLog::open(&dir.path().join("log"), FileLogOptions::default()).unwrap());
    let db = Arc::new(MonitorDb::open_in_memory().unwrap());
    let templates = vigil_monitor::load_templates(
        Some(&sample(set, "devicecontent.json")),
        Some(&sample(set, "fhirmapping.json")),
    )
    .unwrap();
    let options = MonitorOptions {
        pipeline,
        ..Default::default()
    };
    let monitor = Monitor::assemble(db, store.clone(), log, templates, options);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = monitor.router(Arc::new(SigningKey::from_bytes([7; 32])));
    std::thread::spawn(move || rt.block_on(async { axum::serve(listener, app).await.unwrap() }));
    let pipeline = Some(monitor.start());
    Rig {
        base,
        monitor,
        store,
        pipeline,
        _dir: dir,
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

impl Rig {
    /// A Patient carrying `identifier` (the business id the device messages name).
    fn patient(&self, identifier: &str) -> String {
        self.monitor
            .add_patient(
                json!({"resourceType": "Patient", "identifier": [{"system": "urn:test:mrn", "value": identifier}],
                       "name": [{"family": identifier}]}),
                &[],
            )
            .unwrap()
    }

    /// A registered device for `patient`, carrying `identifier`; returns (id, credential).
    fn device(&self, patient: &str, identifier: &str) -> (String, String) {
        let r = self.monitor.register_device(patient, "wearable").unwrap();
        let id = r.device.id.clone();
        self.edit_device(&id, |d| {
            d["identifier"] = json!([{"system": "urn:test:serial", "value": identifier}]);
        });
        (id, r.credential())
    }

    /// Changes a Device in the store as the FHIR API would (and tells the pipeline).
    fn edit_device(&self, id: &str, f: impl FnOnce(&mut Value)) {
        let mut d = match self.store.read("Device", id).unwrap() {
            vigil_store::ReadOutcome::Found(s) => (*s.resource).clone(),
            other => panic!("{other:?}"),
        };
        f(&mut d);
        self.store.update("Device", id, d, None).unwrap();
        self.monitor.resource_written("Device", id);
    }

    fn ingest(&self, credential: &str, body: &Value) {
        let r = ureq::post(&format!("{}/ingest", self.base))
            .set("Authorization", &format!("Bearer {credential}"))
            .send_json(body.clone())
            .unwrap();
        assert_eq!(r.status(), 202);
    }

    fn search(&self, t: &str, query: &str) -> Vec<Value> {
        let q = vigil_fhir::search::SearchQuery::parse(
            Some(t),
            query,
            vigil_fhir::search::SearchRegistry::r4(),
        )
        .unwrap();
        self.store
            .search(&q, &vigil_store::SearchPage::default())
            .unwrap()
            .matches
            .iter()
            .map(|s| (*s.resource).clone())
            .collect()
    }

    /// Waits until the patient has `n` Observations; returns them by first code.
    fn observations(&self, patient: &str, n: usize) -> Vec<Value> {
        let mut obs = wait_for(&format!("{n} Observations of {patient}"), || {
            let found = self.search("Observation", &format!("subject=Patient/{patient}"));
            (found.len() >= n).then_some(found)
        });
        assert_eq!(obs.len(), n, "{obs:#?}");
        obs.sort_by_key(|o| o["code"]["coding"][0]["code"].as_str().unwrap().to_string());
        obs
    }

    fn dead_letters(&self, n: usize) -> Vec<Value> {
        wait_for(&format!("{n} dead letters"), || {
            let found = self.monitor.log.read(DEAD_LETTER_TOPIC, 0, 100).unwrap();
            (found.len() >= n).then(|| {
                found
                    .iter()
                    .map(|r| serde_json::from_slice(&r.payload).unwrap())
                    .collect()
            })
        })
    }

    fn metrics(&self) -> String {
        self.monitor.metrics.render()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(p) = self.pipeline.take() {
            p.stop();
        }
    }
}

/// Checks the fields every sample Observation must have right.
fn check(o: &Value, code: &str, patient: &str, device: &str, start: &str) {
    assert_eq!(o["code"]["coding"][0]["code"], code, "{o:#}");
    assert_eq!(
        o["subject"]["reference"],
        format!("Patient/{patient}"),
        "{o:#}"
    );
    assert_eq!(
        o["device"]["reference"],
        format!("Device/{device}"),
        "{o:#}"
    );
    let effective = o["effectivePeriod"]["start"]
        .as_str()
        .or(o["effectiveDateTime"].as_str())
        .unwrap_or_default();
    assert!(effective.starts_with(start), "{start} vs {o:#}");
}

fn sampled(o: &Value) -> Vec<String> {
    o["valueSampledData"]["data"]
        .as_str()
        .unwrap()
        .split(' ')
        .map(str::to_string)
        .collect()
}

fn basic_payload(extra: Value) -> Value {
    let mut b = json!({"deviceid": "device1", "patientid": "patient1",
                       "measurementdatetime": "2019-03-01T10:10:00Z"});
    b.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    b
}

#[test]
fn basic_sample_end_to_end() {
    let r = rig("basic", PipelineConfig::default());
    let patient = r.patient("patient1");
    let (device, cred) = r.device(&patient, "device1");
    for body in [
        json!({"heartrate": "78"}),
        json!({"steps": "200"}),
        json!({"systolic": "120", "diastolic": "80"}),
        json!({"deviceWorn": "true"}),
    ] {
        r.ingest(&cred, &basic_payload(body));
    }
    let obs = r.observations(&patient, 4);
    // by code: 55423-8 steps, 85354-9 BP, 8867-4 HR, deviceEvent
    let hour = "2019-03-01T10:00:00";
    check(&obs[0], "55423-8", &patient, &device, hour);
    assert_eq!(sampled(&obs[0])[600], "200");
    check(&obs[1], "85354-9", &patient, &device, hour);
    let c = obs[1]["component"].as_array().unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(sampled(&c[0])[600], "80");
    assert_eq!(sampled(&c[1])[600], "120");
    check(&obs[2], "8867-4", &patient, &device, hour);
    let hr = sampled(&obs[2]);
    assert_eq!(
        (hr.len(), hr[600].as_str(), hr[601].as_str()),
        (3600, "78", "E")
    );
    assert_eq!(
        obs[2]["effectivePeriod"]["end"],
        "2019-03-01T10:59:59.9999999Z"
    );
    check(
        &obs[3],
        "deviceEvent",
        &patient,
        &device,
        "2019-03-01T10:10:00",
    );
    assert_eq!(obs[3]["valueCodeableConcept"]["text"], "Device Worn");

    // Reference metrics: 4 events, 4 measurements in 4 groups, 4 Observations created.
    let m = r.metrics();
    for line in [
        "vigil_medtech_device_events_total 4",
        "vigil_medtech_normalized_events_total 4",
        "vigil_medtech_dropped_events_total 0",
        "vigil_medtech_measurements_total 4",
        "vigil_medtech_measurement_groups_total 4",
        "vigil_medtech_fhir_resources_saved_total{resource_type=\"Observation\",operation=\"Created\"} 4",
        "vigil_medtech_device_event_processing_latency_seconds_count 4",
        "vigil_medtech_measurement_ingestion_latency_seconds_count 4",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} in\n{m}");
    }

    // The same reading again changes nothing; another one in the hour updates.
    r.ingest(&cred, &basic_payload(json!({"heartrate": "78"})));
    r.ingest(
        &cred,
        &basic_payload(json!({"heartrate": "90", "measurementdatetime": "2019-03-01T10:10:01Z"})),
    );
    let m = wait_for("the update", || {
        let m = r.metrics();
        m.contains("operation=\"Updated\"} 1").then_some(m)
    });
    assert!(m.contains("operation=\"NoOperation\"} 1"), "{m}");
    let obs = r.observations(&patient, 4);
    assert_eq!(sampled(&obs[2])[601], "90");
    assert_eq!(obs[2]["status"], "amended");
}

#[test]
fn healthkit_sample_end_to_end() {
    let r = rig("healthkitOnFhir", PipelineConfig::default());
    let patient = r.patient("hk-patient");
    let (device, cred) = r.device(&patient, "hk-device");
    let hk = |extra: Value| {
        let mut b = json!({"uuid": "0D8E4A6C", "startDate": "2020-05-01T08:00:00Z",
                           "endDate": "2020-05-01T08:00:05Z", "deviceId": "hk-device"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    r.ingest(
        &cred,
        &json!([
            hk(json!({"heartRate": 72, "unit": "count/min"})),
            hk(json!({"stepCount": 12})),
            hk(json!({"bodyMass": 81.2, "unit": "kg"})),
            hk(json!({"height": 1.8})),
        ]),
    );
    let obs = r.observations(&patient, 4);
    // by code: 29463-7 body mass, 55423-8 steps, 8302-2 height, 8867-4 HR
    check(&obs[0], "29463-7", &patient, &device, "2020-05-01T08:00:05");
    assert_eq!(obs[0]["valueQuantity"]["value"].to_string(), "81.2");
    check(&obs[1], "55423-8", &patient, &device, "2020-05-01T08:00:00");
    // SampledData every 5 s from the hour: endDate 08:00:05 is slot 1.
    assert_eq!(sampled(&obs[1])[1], "12");
    check(&obs[2], "8302-2", &patient, &device, "2020-05-01T08:00:05");
    assert_eq!(obs[2]["valueQuantity"]["value"].to_string(), "1.8");
    check(&obs[3], "8867-4", &patient, &device, "2020-05-01T08:00:00");
    assert_eq!(sampled(&obs[3])[..3], ["E", "72", "E"]);
    assert_eq!(
        obs[3]["code"]["coding"][1]["code"],
        "HKQuantityTypeIdentifierHeartRate"
    );
}

#[test]
fn sandbox_sample_end_to_end() {
    let r = rig("sandbox", PipelineConfig::default());
    // The IoT Central export names device and patient by the IoT Central device id.
    let patient = r.patient("1qsi9p8t5l2");
    let (device, cred) = r.device(&patient, "1qsi9p8t5l2");
    let export: Value = serde_json::from_str(
        std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
                "../../tests/fixtures/medtech-iomt-fhir/test/Microsoft.Health.Fhir.Ingest.Template.UnitTests/TestInput/data_IotCentralPayloadExampleMultipleMessages.json",
            ),
        )
        .unwrap()
        .trim_start_matches('\u{feff}'),
    )
    .unwrap();
    let message = export["Body"][0].clone();
    assert_eq!(message["deviceId"], "1qsi9p8t5l2");
    r.ingest(&cred, &message);
    // heart rate, respiratory rate, HRV, body temperature, blood pressure
    let obs = r.observations(&patient, 5);
    let hour = "2021-06-08T19:00:00";
    let codes: Vec<&str> = obs
        .iter()
        .map(|o| o["code"]["coding"][0]["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["80404-7", "8310-5", "85354-9", "8867-4", "9279-1"]);
    for o in &obs {
        check(
            o,
            o["code"]["coding"][0]["code"].as_str().unwrap(),
            &patient,
            &device,
            hour,
        );
    }
    // Timestamp: the IoT Central enqueuedTime, 19:45:20.202; a slot every 30 s → 90.
    assert_eq!(sampled(&obs[3])[90], "75");
    assert_eq!(sampled(&obs[4])[90], "15");
    let bp = obs[2]["component"].as_array().unwrap();
    assert_eq!(
        (sampled(&bp[0])[90].as_str(), sampled(&bp[1])[90].as_str()),
        ("30", "62")
    );
}

#[test]
fn create_mode_creates_the_patient_and_links_the_device() {
    let config = PipelineConfig {
        identity: IdentityResolutionType::Create,
        ..Default::default()
    };
    let r = rig("basic", config);
    let placeholder = r.patient("someone-else");
    let (device, cred) = r.device(&placeholder, "device1");
    // An unassigned device (registered before it was handed to a patient).
    r.edit_device(&device, |d| {
        d.as_object_mut().unwrap().remove("patient");
    });
    r.ingest(&cred, &basic_payload(json!({"heartrate": "61"})));
    let created = vigil_medtech::resource_id("", "patient1");
    let obs = r.observations(&created, 1);
    check(&obs[0], "8867-4", &created, &device, "2019-03-01T10:00:00");
    let p = r.search("Patient", "identifier=patient1");
    assert_eq!((p.len(), p[0]["id"].as_str()), (1, Some(created.as_str())));
    let d = r.search("Device", &format!("_id={device}"));
    assert_eq!(d[0]["patient"]["reference"], format!("Patient/{created}"));
    // On the worklist.
    assert!(r.monitor.db.patient(&created).unwrap().is_some());
    assert!(r
        .metrics()
        .contains("vigil_medtech_fhir_resources_saved_total{resource_type=\"Patient\",operation=\"Created\"} 1"));

    // The linked device now belongs to patient1: another patient id is a mismatch.
    r.ingest(
        &cred,
        &basic_payload(json!({"heartrate": "62", "patientid": "patient2"})),
    );
    let dl = r.dead_letters(1);
    assert_eq!(
        dl[0]["errorKind"], "PatientDeviceMismatchException",
        "{dl:?}"
    );
    // Without a patient id, Create cannot make one.
    r.edit_device(&device, |d| {
        d.as_object_mut().unwrap().remove("patient");
    });
    let mut body = basic_payload(json!({"heartrate": "63"}));
    body.as_object_mut().unwrap().remove("patientid");
    r.ingest(&cred, &body);
    let dl = r.dead_letters(2);
    assert_eq!(dl[1]["errorKind"], "ResourceIdentityNotDefinedException");
}

#[test]
fn lookup_errors_are_dead_lettered_and_counted_by_type_and_severity() {
    let r = rig("basic", PipelineConfig::default());
    let patient = r.patient("patient1");
    let (device, cred) = r.device(&patient, "device1");
    let other = r.patient("patient2");
    let (_, _) = r.device(&other, "device2");
    // Two devices carrying the same identifier: the lookup is ambiguous.
    let (_, _) = r.device(&other, "shared");
    r.edit_device(&device, |d| {
        d["identifier"] = json!([{"value": "device1"}, {"value": "shared"}]);
    });
    let cases = [
        (
            json!({"heartrate": "70", "deviceid": "device2"}),
            "DeviceMismatch",
        ),
        (
            json!({"heartrate": "70", "deviceid": "shared"}),
            "MultipleResourceFoundException",
        ),
        (
            json!({"heartrate": "70", "patientid": "patient2"}),
            "PatientDeviceMismatchException",
        ),
        (json!({"heartrate": ""}), "IncompatibleDataException"),
        (json!({"nothing": 1}), "TemplateNotFound"),
    ];
    for (body, _) in &cases {
        r.ingest(&cred, &basic_payload(body.clone()));
    }
    let dl = r.dead_letters(cases.len());
    let kinds: Vec<&str> = dl
        .iter()
        .map(|d| d["errorKind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, cases.iter().map(|c| c.1).collect::<Vec<_>>());
    // A device with no patient in Lookup mode: the Patient is not found.
    r.edit_device(&device, |d| {
        d.as_object_mut().unwrap().remove("patient");
    });
    r.ingest(&cred, &basic_payload(json!({"heartrate": "70"})));
    let dl = r.dead_letters(cases.len() + 1);
    assert_eq!(
        dl[cases.len()]["errorKind"],
        "FhirResourceNotFoundException"
    );
    let m = r.metrics();
    for line in [
        "vigil_medtech_errors_total{name=\"MultipleResourceFoundException\",error_type=\"FHIRResourceError\",severity=\"non-blocking\",stage=\"fhir-conversion\"} 1",
        "vigil_medtech_errors_total{name=\"IncompatibleDataException\",error_type=\"DeviceMessageError\",severity=\"non-blocking\",stage=\"normalization\"} 1",
        "vigil_medtech_dropped_events_total 1",
        "vigil_medtech_device_events_total 6",
        "vigil_dead_letters_total{error=\"DeviceMismatch\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} in\n{m}");
    }
    assert!(r.search("Observation", "_count=10").is_empty());
}

#[test]
fn lookup_with_encounter_needs_a_known_encounter() {
    let config = PipelineConfig {
        identity: IdentityResolutionType::LookupWithEncounter,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    // basic's heartrate template plus an encounter id from the message.
    let device = std::fs::read_to_string(sample("basic", "devicecontent.json"))
        .unwrap()
        .replacen(
            "\"patientIdExpression\": \"$.patientid\",",
            "\"patientIdExpression\": \"$.patientid\",\n        \"encounterIdExpression\": \"$.encounterid\",",
            1,
        );
    assert!(device.contains("encounterIdExpression"));
    std::fs::write(dir.path().join("devicecontent.json"), device).unwrap();
    let r = rig("basic", config);
    r.monitor.pipeline.set_templates(
        vigil_monitor::load_templates(
            Some(&dir.path().join("devicecontent.json")),
            Some(&sample("basic", "fhirmapping.json")),
        )
        .unwrap(),
    );
    let patient = r.patient("patient1");
    let (_, cred) = r.device(&patient, "device1");
    let enc = r
        .store
        .create(json!({"resourceType": "Encounter", "status": "in-progress",
                       "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
                       "identifier": [{"value": "visit-9"}],
                       "subject": {"reference": format!("Patient/{patient}")}}))
        .unwrap();
    r.ingest(&cred, &basic_payload(json!({"heartrate": "70"})));
    r.ingest(
        &cred,
        &basic_payload(json!({"heartrate": "71", "encounterid": "visit-1"})),
    );
    r.ingest(
        &cred,
        &basic_payload(json!({"heartrate": "72", "encounterid": "visit-9"})),
    );
    let obs = r.observations(&patient, 1);
    assert_eq!(
        obs[0]["encounter"]["reference"],
        format!("Encounter/{}", enc.id)
    );
    assert_eq!(sampled(&obs[0])[600], "72");
    let dl = r.dead_letters(2);
    assert_eq!(dl[0]["errorKind"], "ResourceIdentityNotDefinedException");
    assert_eq!(dl[1]["errorKind"], "FhirResourceNotFoundException");
    assert!(dl[1]["error"].as_str().unwrap().contains("visit-1"));
}

#[test]
fn relinking_a_device_moves_new_readings_to_the_new_patient() {
    let r = rig("basic", PipelineConfig::default());
    let first = r.patient("patient1");
    let second = r.patient("patient2");
    let (device, cred) = r.device(&first, "device1");
    let mut body = basic_payload(json!({"heartrate": "70"}));
    body.as_object_mut().unwrap().remove("patientid");
    r.ingest(&cred, &body);
    r.observations(&first, 1);
    // Re-linked (the pipeline's cache is told, as the FHIR API's write observer does).
    r.edit_device(&device, |d| {
        d["patient"] = json!({"reference": format!("Patient/{second}")});
    });
    body["measurementdatetime"] = json!("2019-03-01T11:10:00Z");
    r.ingest(&cred, &body);
    let obs = r.observations(&second, 1);
    check(&obs[0], "8867-4", &second, &device, "2019-03-01T11:00:00");
    assert_eq!(r.observations(&first, 1).len(), 1);
}

#[test]
fn block_policy_holds_the_stream_until_the_message_succeeds() {
    let config = PipelineConfig {
        error_policy: ErrorPolicy::Block,
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(50),
        ..Default::default()
    };
    let r = rig("basic", config);
    let patient = r.patient("patient1");
    let (device, cred) = r.device(&patient, "device1");
    // Not linked to a patient yet: fails (Lookup), and holds back the next reading.
    r.edit_device(&device, |d| {
        d.as_object_mut().unwrap().remove("patient");
    });
    r.ingest(&cred, &basic_payload(json!({"heartrate": "70"})));
    r.ingest(&cred, &basic_payload(json!({"steps": "5"})));
    let (offset, _) = wait_for("several retries", || {
        r.monitor
            .pipeline
            .blocked_at()
            .filter(|(_, attempts)| *attempts >= 3)
    });
    assert_eq!(offset, 0);
    assert!(r.search("Observation", "_count=10").is_empty());
    assert!(r
        .monitor
        .log
        .read(DEAD_LETTER_TOPIC, 0, 10)
        .unwrap()
        .is_empty());
    let m = r.metrics();
    assert!(
        m.lines().any(|l| l
            .starts_with("vigil_pipeline_retries_total{error=\"FhirResourceNotFoundException\"}")),
        "{m}"
    );
    assert!(m.lines().any(|l| l == "vigil_medtech_errors_total{name=\"FhirResourceNotFoundException\",error_type=\"FHIRResourceError\",severity=\"non-blocking\",stage=\"fhir-conversion\"} 1"), "{m}");
    // Fixed: both readings go through, in order.
    r.edit_device(&device, |d| {
        d["patient"] = json!({"reference": format!("Patient/{patient}")});
    });
    let obs = r.observations(&patient, 2);
    assert_eq!(sampled(&obs[0])[600], "5");
    assert_eq!(sampled(&obs[1])[600], "70");
    assert_eq!(r.monitor.pipeline.blocked_at(), None);
    assert!(r
        .monitor
        .log
        .read(DEAD_LETTER_TOPIC, 0, 10)
        .unwrap()
        .is_empty());
}

#[test]
fn fhir_conversion_errors_are_dead_lettered_with_the_reference_kinds() {
    let r = rig("healthkitOnFhir", PipelineConfig::default());
    let patient = r.patient("hk-patient");
    let (_, cred) = r.device(&patient, "hk-device");
    // A Quantity needs a number.
    r.ingest(
        &cred,
        &json!({"endDate": "2020-05-01T08:00:05Z", "deviceId": "hk-device", "bodyMass": "heavy"}),
    );
    let dl = r.dead_letters(1);
    assert_eq!(
        dl[0]["errorKind"], "InvalidQuantityFhirValueException",
        "{dl:?}"
    );
    // Device templates producing a type the FHIR templates lack.
    r.monitor.pipeline.set_templates(
        vigil_monitor::load_templates(
            Some(&sample("basic", "devicecontent.json")),
            Some(&sample("healthkitOnFhir", "fhirmapping.json")),
        )
        .unwrap(),
    );
    r.ingest(
        &cred,
        &json!({"deviceid": "hk-device", "measurementdatetime": "2020-05-01T08:00:00Z", "hrv": "41"}),
    );
    let dl = r.dead_letters(2);
    assert_eq!(dl[1]["errorKind"], "TemplateNotFoundException", "{dl:?}");
    let m = r.metrics();
    assert!(m.lines().any(|l| l == "vigil_medtech_errors_total{name=\"TemplateNotFoundException\",error_type=\"GeneralError\",severity=\"non-blocking\",stage=\"fhir-conversion\"} 1"), "{m}");
}
