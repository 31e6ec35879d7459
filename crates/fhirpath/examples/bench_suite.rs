//! The Rust side of the FHIRPath benchmark against fhirpath.js (run both with
//! `tools/bench-fhirpath.sh`).
//!
//! ```text
//! cargo run --release -p vigil-fhirpath --example bench_suite -- run [suite|realistic|all] [--seconds S] [--warmup S] [--rounds N] [--only NAME]
//! cargo run --release -p vigil-fhirpath --example bench_suite -- per-case [suite|realistic] [--seconds S] [--only NAME]
//! cargo run --release -p vigil-fhirpath --example bench_suite -- candidates > /tmp/candidates.json
//! cargo run --release -p vigil-fhirpath --example bench_suite -- realistic > bench/fhirpath-js/realistic.json
//! ```
//!
//! `run` prints one JSON line per workload, in the format `bench/fhirpath-js/bench.js`
//! prints. `candidates` lists the suite's valid cases; `bench.js select` keeps those
//! fhirpath.js can run and writes `bench/fhirpath-js/cases.json`. `realistic` writes the
//! generated Bundle and the realistic expressions (deterministic: the same file each time).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/workloads.rs"]
mod workloads;

use serde_json::{json, Value};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("candidates") => candidates(),
        Some("per-case") => per_case(&args[1..]),
        Some("realistic") => {
            println!("{}", serde_json::to_string_pretty(&realistic_spec()).unwrap());
            Ok(())
        }
        _ => Err("usage: bench_suite run [suite|realistic|all] [--seconds S] [--warmup S] [--rounds N] [--only NAME] | per-case [suite|realistic] [--seconds S] [--only NAME] | candidates | realistic".into()),
    };
    if let Err(e) = result {
        eprintln!("bench_suite: {e}");
        std::process::exit(2);
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let mut which = "all";
    let mut seconds = 5.0;
    let mut warmup = 1.0;
    let mut rounds: Option<u64> = None;
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--only" => only = Some(it.next().ok_or("--only needs a case name")?.clone()),
            "--rounds" => {
                rounds = Some(
                    it.next()
                        .and_then(|s| s.parse().ok())
                        .ok_or("--rounds needs a number")?,
                )
            }
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seconds needs a number")?
            }
            "--warmup" => {
                warmup = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--warmup needs a number")?
            }
            "suite" | "realistic" | "all" => which = a,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let mut workloads = Vec::new();
    if which != "realistic" {
        workloads.push(workloads::suite()?);
    }
    if which != "suite" {
        workloads.push(workloads::realistic()?);
    }
    if let Some(name) = &only {
        for w in &mut workloads {
            w.cases.retain(|c| c.name == *name);
        }
        workloads.retain(|w| !w.cases.is_empty());
    }
    if let Some(n) = rounds {
        // A fixed amount of work and no timing: for counting instructions under
        // `valgrind --tool=callgrind`, which is immune to other load on the machine.
        for w in &workloads {
            let mut items = 0;
            for _ in 0..n {
                items += w.round().0;
            }
            println!(
                "{{\"workload\":\"{}\",\"rounds\":{n},\"result_items\":{items}}}",
                w.name
            );
        }
        return Ok(());
    }
    for w in &workloads {
        let report = w.measure(
            Duration::from_secs_f64(warmup),
            Duration::from_secs_f64(seconds),
        );
        println!("{}", report.json());
    }
    Ok(())
}

/// One JSON line per case (or per realistic expression): nanoseconds per evaluation, to
/// set beside `node bench.js per-case` and find where the engine is slowest.
fn per_case(args: &[String]) -> Result<(), String> {
    let mut seconds = 10.0;
    let mut which = "suite";
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seconds needs a number")?
            }
            "--only" => only = Some(it.next().ok_or("--only needs a case name")?.clone()),
            "suite" | "realistic" => which = a,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let mut w = if which == "suite" {
        workloads::suite()?
    } else {
        workloads::realistic()?
    };
    if let Some(name) = only {
        w.cases.retain(|c| c.name == name);
    }
    for (name, evaluations, ns) in w.per_case(Duration::from_secs_f64(seconds)) {
        println!(
            "{}",
            json!({ "name": name, "evaluations": evaluations, "ns_per_eval": ns.round() as u64 })
        );
    }
    Ok(())
}

/// The suite's valid cases (those not marked `invalid`), with their JSON input file.
fn candidates() -> Result<(), String> {
    let path = workloads::suite_dir().join("tests-fhir-r4.xml");
    let xml = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc = roxmltree::Document::parse(&xml).map_err(|e| e.to_string())?;
    let mut cases = Vec::new();
    let mut invalid = 0;
    for t in doc.descendants().filter(|n| n.has_tag_name("test")) {
        let Some(expr) = t.children().find(|c| c.has_tag_name("expression")) else {
            continue;
        };
        if expr.attribute("invalid").is_some() {
            invalid += 1;
            continue;
        }
        let mode = t.attribute("mode").or(expr.attribute("mode"));
        // The suite names XML inputs; their JSON forms sit in input/ with the same stem.
        let input = t.attribute("inputfile").map(|f| {
            let stem = f.trim_end_matches(".xml").trim_end_matches(".json");
            format!("{stem}.json")
        });
        cases.push(json!({
            "name": t.attribute("name").unwrap_or(""),
            "expression": expr.text().unwrap_or(""),
            "input": input,
            "strict": mode == Some("strict"),
        }));
    }
    let out =
        json!({ "suite_cases": cases.len() + invalid, "invalid_cases": invalid, "cases": cases });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// A small deterministic generator (64-bit LCG), so `realistic.json` is reproducible.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    /// A value with one decimal place between lo and hi, as a JSON number.
    fn decimal(&mut self, lo: u64, hi: u64) -> Value {
        let tenths = self.range(lo * 10, hi * 10);
        serde_json::from_str(&format!("{}.{}", tenths / 10, tenths % 10)).unwrap()
    }
}

fn quantity(value: Value, unit: &str, code: &str) -> Value {
    json!({ "value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": code })
}

fn loinc(code: &str, display: &str) -> Value {
    json!({ "coding": [{ "system": "http://loinc.org", "code": code, "display": display }], "text": display })
}

/// A Bundle with one Patient and 100 vital-sign Observations (heart rate, blood pressure
/// panels with components, body weight, temperature, SpO2, glucose), and the expressions.
fn realistic_spec() -> Value {
    let mut rng = Lcg(0x5eed_f00d);
    let patient = json!({
        "resourceType": "Patient",
        "id": "p1",
        "meta": { "lastUpdated": "2024-03-01T08:00:00Z" },
        "identifier": [{ "system": "http://hospital.example.org/mrn", "value": "MRN-000123" }],
        "active": true,
        "name": [
            { "use": "official", "family": "Chalmers", "given": ["Peter", "James"] },
            { "use": "usual", "given": ["Jim"] }
        ],
        "telecom": [{ "system": "phone", "value": "(03) 5555 6473", "use": "mobile" }],
        "gender": "male",
        "birthDate": "1974-12-25",
        "address": [{ "use": "home", "line": ["534 Erewhon St"], "city": "PleasantVille", "postalCode": "3999" }]
    });
    let mut entries = vec![json!({ "fullUrl": "urn:uuid:patient-p1", "resource": patient })];
    for i in 0..100u64 {
        let day = 1 + i % 28;
        let month = 2 + (i / 28) % 3;
        let when = format!(
            "2024-{month:02}-{day:02}T{:02}:{:02}:00+01:00",
            rng.range(6, 21),
            rng.range(0, 59)
        );
        let status = if rng.range(0, 9) == 0 {
            "preliminary"
        } else {
            "final"
        };
        let mut obs = json!({
            "resourceType": "Observation",
            "id": format!("obs-{i}"),
            "meta": { "profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"] },
            "status": status,
            "category": [{ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs", "display": "Vital Signs" }] }],
            "subject": { "reference": "Patient/p1" },
            "effectiveDateTime": when,
            "performer": [{ "reference": "Practitioner/nurse-7" }],
        });
        let kind = i % 6;
        let (code, value_or_components) = match kind {
            0 => (
                loinc("8867-4", "Heart rate"),
                Some(quantity(json!(rng.range(50, 140)), "beats/minute", "/min")),
            ),
            1 => (loinc("85354-9", "Blood pressure panel"), None),
            2 => (
                loinc("29463-7", "Body weight"),
                Some(quantity(rng.decimal(55, 110), "kg", "kg")),
            ),
            3 => (
                loinc("8310-5", "Body temperature"),
                Some(quantity(rng.decimal(36, 40), "Cel", "Cel")),
            ),
            4 => (
                loinc("59408-5", "Oxygen saturation"),
                Some(quantity(json!(rng.range(88, 100)), "%", "%")),
            ),
            _ => (
                loinc("2339-0", "Glucose"),
                Some(quantity(json!(rng.range(70, 200)), "mg/dL", "mg/dL")),
            ),
        };
        obs["code"] = code;
        match value_or_components {
            Some(v) => obs["valueQuantity"] = v,
            None => {
                obs["component"] = json!([
                    { "code": loinc("8480-6", "Systolic blood pressure"),
                      "valueQuantity": quantity(json!(rng.range(100, 180)), "mmHg", "mm[Hg]") },
                    { "code": loinc("8462-4", "Diastolic blood pressure"),
                      "valueQuantity": quantity(json!(rng.range(60, 110)), "mmHg", "mm[Hg]") }
                ]);
            }
        }
        if kind == 0 && rng.range(0, 4) == 0 {
            obs["interpretation"] = json!([{ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "H" }] }]);
        }
        entries.push(json!({ "fullUrl": format!("urn:uuid:obs-{i}"), "resource": obs }));
    }
    let bundle =
        json!({ "resourceType": "Bundle", "id": "vitals", "type": "collection", "entry": entries });
    json!({
        "about": "Generated by `cargo run -p vigil-fhirpath --example bench_suite -- realistic`. bundle_expressions are evaluated once over the Bundle; resource_expressions once over each entry's resource. One evaluation = one expression over one input.",
        "bundle_expressions": [
            "Bundle.entry.resource.ofType(Observation).where(code.coding.exists(system='http://loinc.org' and code='8867-4')).value.ofType(Quantity).value",
            "Bundle.entry.resource.ofType(Observation).where(status = 'final').count()",
            "Bundle.entry.resource.ofType(Patient).name.where(use='official').given.first()",
            "Bundle.entry.resource.ofType(Observation).component.where(code.coding.code = '8480-6').value.ofType(Quantity).where(value > 140).exists()",
            "Bundle.entry.resource.ofType(Observation).where(effective.ofType(dateTime) >= @2024-03-01).count()",
            "Bundle.entry.where(fullUrl.startsWith('urn:uuid:obs-')).resource.id.count()"
        ],
        "resource_expressions": [
            "Observation.value.ofType(Quantity).value > 100",
            "Patient.name.where(use='official').given.first()",
            "Observation.code | Observation.component.code",
            "(Observation.value as Quantity) | (Observation.value as SampledData)",
            "Observation.category.coding.exists(system='http://terminology.hl7.org/CodeSystem/observation-category' and code='vital-signs')",
            "Observation.subject.where(reference.startsWith('Patient/')).reference",
            "dataAbsentReason.empty() or value.empty()",
            "value.empty() or component.code.where(coding.intersect(%resource.code.coding).exists()).empty()"
        ],
        "bundle": bundle
    })
}
