//! Throughput of normalization + FHIR transformation on the reference's `basic` sample
//! templates: messages → measurements → groups → Observations. Reports measurements/s.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};
use vigil_medtech::{group, DeviceTemplateSet, FhirTemplateSet, Identity};

fn fixture(rel: &str) -> String {
    let p = format!(
        "{}/../../tests/fixtures/medtech-iomt-fhir/{rel}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// IoT Hub envelopes: heart rate, steps and blood pressure from 10 devices. `dense`: 3,000
/// readings within one hour (the per-second streams the hourly SampledData templates are made
/// for); otherwise 1,000 readings spread over a day (about two readings per Observation).
fn messages(dense: bool) -> Vec<Value> {
    let n = if dense { 3000 } else { 1000 };
    (0..n)
        .map(|i| {
            let t = if dense {
                format!("2019-03-01T10:{:02}:{:02}Z", (i / 60) % 60, i % 60)
            } else {
                format!("2019-03-01T{:02}:{:02}:{:02}Z", (i / 60) % 24, i % 60, (i * 7) % 60)
            };
            let body = match i % 3 {
                0 => json!({"heartrate": (60 + i % 40).to_string()}),
                1 => json!({"steps": (i % 100).to_string()}),
                _ => json!({"systolic": (110 + i % 30).to_string(), "diastolic": (70 + i % 20).to_string()}),
            };
            let mut b = body.as_object().cloned().unwrap_or_default();
            b.insert("deviceid".into(), json!(format!("device{}", i % 10)));
            b.insert("patientid".into(), json!(format!("patient{}", i % 10)));
            b.insert("measurementdatetime".into(), json!(t));
            json!({"Body": b, "Properties": {}, "SystemProperties": {"iothub-connection-device-id": format!("device{}", i % 10), "iothub-enqueuedtime": t}})
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let device = DeviceTemplateSet::parse(&fixture("sample/templates/basic/devicecontent.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let fhir = FhirTemplateSet::parse(&fixture("sample/templates/basic/fhirmapping.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let id = Identity {
        patient_id: "p".into(),
        device_id: "d".into(),
        encounter_id: None,
    };
    for dense in [true, false] {
        let msgs = messages(dense);
        let count: usize = msgs
            .iter()
            .map(|m| device.normalize(m).map(|v| v.len()).unwrap_or(0))
            .sum();

        let mut g = c.benchmark_group(if dense { "basic-dense" } else { "basic-sparse" });
        g.throughput(Throughput::Elements(count as u64));
        g.bench_function("normalize", |b| {
            b.iter(|| {
                let mut n = 0;
                for m in &msgs {
                    n += device.normalize(m).map(|v| v.len()).unwrap_or(0);
                }
                n
            })
        });
        g.bench_function("normalize+group+observations", |b| {
            b.iter(|| {
                let mut ms = Vec::with_capacity(count);
                for m in &msgs {
                    ms.extend(device.normalize(m).unwrap_or_default());
                }
                let groups = group(&ms, &fhir);
                groups
                    .groups
                    .iter()
                    .filter_map(|g| fhir.observation_for(g, &id, None).ok())
                    .count()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
