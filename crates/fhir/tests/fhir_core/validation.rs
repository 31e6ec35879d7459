//! Validation: the official R4 examples are valid (except the listed genuine defects), each
//! resource of the invalid corpus is rejected with exactly its expected issue, and the
//! OperationOutcome has the FHIR shape.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vigil_fhir::validate::{validate, Issue, IssueType, OperationOutcome, Severity};

fn fixtures(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(dir)
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The resources of a fixture directory, by file name (`expected.json` is not one).
fn resources(dir: &Path) -> BTreeMap<String, Value> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .filter(|(name, _)| name != "expected.json")
        .map(|(name, p)| (name, load(&p)))
        .collect()
}

fn errors(outcome: &OperationOutcome) -> Vec<&Issue> {
    outcome.errors().collect()
}

fn show(issues: &[&Issue]) -> String {
    issues.iter().map(|i| format!("\n    {i}")).collect()
}

/// `crates/fhir/tests/validation-exceptions.txt`: official examples with a genuine defect, as
/// `file<TAB>constraint key or issue code<TAB>reason`.
fn exceptions() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validation-exceptions.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split('\t');
            let file = parts.next().unwrap().trim().to_string();
            let what = parts
                .next()
                .unwrap_or_else(|| panic!("no reason in {l:?}"))
                .trim()
                .to_string();
            assert!(
                parts.next().is_some_and(|r| !r.trim().is_empty()),
                "no explanation in {l:?}"
            );
            (file, what)
        })
        .collect()
}

#[test]
fn official_examples_are_valid() {
    let examples = resources(&fixtures("fhir-r4-examples"));
    assert!(examples.len() >= 72, "examples missing: {}", examples.len());
    let exceptions = exceptions();
    let mut failures = Vec::new();
    for (name, resource) in &examples {
        let outcome = validate(resource);
        let errs = errors(&outcome);
        match exceptions.get(name) {
            // Every error must be the documented defect, and there must be one.
            Some(what) => {
                let expected =
                    |i: &&Issue| i.constraint.as_deref() == Some(what) || i.code.as_str() == what;
                if errs.is_empty() || !errs.iter().all(expected) {
                    failures.push(format!(
                        "{name}: expected only '{what}' errors, got:{}",
                        show(&errs)
                    ));
                }
            }
            None if !errs.is_empty() => failures.push(format!("{name}:{}", show(&errs))),
            None => {}
        }
    }
    for name in exceptions.keys() {
        assert!(
            examples.contains_key(name),
            "exception for a missing example {name}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} examples misjudged:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn invalid_corpus_is_rejected() {
    let dir = fixtures("invalid-resources");
    let corpus = resources(&dir);
    let expected: BTreeMap<String, Value> =
        serde_json::from_value(load(&dir.join("expected.json"))).unwrap();
    assert!(corpus.len() >= 50, "corpus too small: {}", corpus.len());
    assert_eq!(
        corpus.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "expected.json out of date"
    );
    let mut failures = Vec::new();
    for (name, resource) in &corpus {
        let want = &expected[name];
        let code = want["code"].as_str().unwrap();
        let prefix = want["expression"].as_str().unwrap();
        let key = want.get("constraint").and_then(Value::as_str);
        let msg = want.get("diagnostics").and_then(Value::as_str);
        let outcome = validate(resource);
        let errs = errors(&outcome);
        let matches = |i: &&Issue| {
            i.code.as_str() == code
                && i.expression.starts_with(prefix)
                && key
                    .is_none_or(|k| i.constraint.as_deref() == Some(k) && i.diagnostics.contains(k))
                && msg.is_none_or(|m| i.diagnostics.contains(m))
        };
        // One deliberate defect: one error (unless the definitions give the defect several
        // invariants, as txt-1/txt-2 share an expression), and the expected one.
        let count = want.get("errors").and_then(Value::as_u64).unwrap_or(1) as usize;
        if errs.len() != count || !errs.iter().any(matches) {
            failures.push(format!("{name}: expected {want}, got:{}", show(&errs)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} misjudged:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

#[test]
fn every_check_kind_is_covered_by_the_corpus() {
    let expected = load(&fixtures("invalid-resources").join("expected.json"));
    let obj = expected.as_object().unwrap();
    let codes: Vec<&str> = obj.values().filter_map(|v| v["code"].as_str()).collect();
    for code in [
        "structure",
        "required",
        "value",
        "code-invalid",
        "invariant",
        "not-supported",
    ] {
        assert!(codes.contains(&code), "no corpus case for {code}");
    }
    let keys: Vec<&str> = obj
        .values()
        .filter_map(|v| v.get("constraint").and_then(Value::as_str))
        .collect();
    for key in [
        "per-1", "obs-6", "obs-7", "qty-3", "dom-2", "dom-3", "dom-4", "dom-5", "ext-1", "ele-1",
        "ref-1",
    ] {
        assert!(keys.contains(&key), "no corpus case for {key}");
    }
}

fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/1"},
        "effectiveDateTime": "2024-05-01T08:15:00Z",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
    })
}

#[test]
fn valid_resource_has_only_the_narrative_warning() {
    let outcome = validate(&observation());
    assert!(!outcome.has_errors(), "{:?}", outcome.issues);
    assert_eq!(outcome.issues.len(), 1);
    let warning = &outcome.issues[0];
    assert_eq!(warning.severity, Severity::Warning);
    assert_eq!(warning.code, IssueType::Invariant);
    assert_eq!(warning.constraint.as_deref(), Some("dom-6"));
    assert_eq!(warning.expression, "Observation");
}

#[test]
fn all_problems_are_reported_in_document_order() {
    let mut obs = observation();
    obs["status"] = json!("done");
    obs["effectiveDateTime"] = json!("2024-02-30");
    obs["valueQuantity"]["value"] = json!("72");
    obs["bogus"] = json!(1);
    obs.as_object_mut().unwrap().shift_remove("code");
    let outcome = validate(&obs);
    let got: Vec<(&str, &str)> = outcome
        .errors()
        .map(|i| (i.code.as_str(), i.expression.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("code-invalid", "Observation.status"),
            ("value", "Observation.effectiveDateTime"),
            ("structure", "Observation.valueQuantity.value"),
            ("structure", "Observation.bogus"),
            ("required", "Observation.code"),
        ]
    );
}

#[test]
fn primitive_extensions_and_null_placeholders() {
    let mut p = json!({
        "resourceType": "Patient",
        "text": {"status": "empty", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">-</div>"},
        "name": [{"given": ["Anna", null], "_given": [null, {"extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}]}],
        "_birthDate": {"id": "bd", "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "asked-unknown"}]}
    });
    let outcome = validate(&p);
    assert!(outcome.issues.is_empty(), "{:?}", outcome.issues);
    // an extension sibling with neither value nor extensions is empty content (ele-1)
    p["_birthDate"] = json!({"id": "bd"});
    let outcome = validate(&p);
    let errs = errors(&outcome);
    assert_eq!(errs.len(), 1, "{}", show(&errs));
    assert_eq!(errs[0].constraint.as_deref(), Some("ele-1"));
    assert_eq!(errs[0].expression, "Patient.birthDate");
}

#[test]
fn contained_resources_see_their_container() {
    // ref-1 inside a contained resource resolves against the container's contained list
    let obs = json!({
        "resourceType": "Observation",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">BP</div>"},
        "contained": [
            {"resourceType": "Patient", "id": "p", "generalPractitioner": [{"reference": "#o"}]},
            {"resourceType": "Organization", "id": "o", "name": "Clinic"}
        ],
        "status": "final",
        "code": {"text": "BP"},
        "subject": {"reference": "#p"}
    });
    let outcome = validate(&obs);
    assert!(outcome.issues.is_empty(), "{:?}", outcome.issues);
}

#[test]
fn inputs_that_are_not_resources_do_not_panic() {
    for v in [
        json!(null),
        json!(1),
        json!("Patient"),
        json!([]),
        json!({}),
        json!({"resourceType": 3}),
    ] {
        let outcome = validate(&v);
        assert!(outcome.has_errors(), "{v}");
    }
    let outcome = validate(&json!(["x"]));
    assert_eq!(outcome.issues[0].severity, Severity::Fatal);
    assert_eq!(outcome.issues[0].code, IssueType::Invalid);
    // deep garbage: every kind of JSON at every element of an Observation
    let garbage = [
        json!(null),
        json!(true),
        json!(-1.5e300),
        json!(""),
        json!([]),
        json!({}),
        json!([null]),
        json!({"": 1}),
    ];
    let keys: Vec<String> = observation().as_object().unwrap().keys().cloned().collect();
    for key in keys.iter().filter(|k| *k != "resourceType") {
        for g in &garbage {
            let mut obs = observation();
            obs[key.as_str()] = g.clone();
            obs[format!("_{key}").as_str()] = g.clone();
            assert!(validate(&obs).has_errors(), "{key} = {g}");
        }
    }
}

#[test]
fn bundle_entries_are_resources_of_their_own() {
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:3f1c1e2a-6a7b-4c89-9d0e-1f2a3b4c5d6e", "resource": observation()},
            {"fullUrl": "urn:uuid:4f1c1e2a-6a7b-4c89-9d0e-1f2a3b4c5d6e",
             "resource": {"resourceType": "Patient", "gender": "f"}}
        ]
    });
    let outcome = validate(&bundle);
    let errs = errors(&outcome);
    assert_eq!(errs.len(), 1, "{}", show(&errs));
    assert_eq!(errs[0].expression, "Bundle.entry[1].resource.gender");
    // dom-6 applies to each entry resource
    assert!(outcome
        .issues
        .iter()
        .any(|i| i.expression == "Bundle.entry[0].resource"
            && i.constraint.as_deref() == Some("dom-6")));
}

#[test]
fn operation_outcome_json_shape() {
    let mut obs = observation();
    obs["status"] = json!("done");
    let outcome = validate(&obs);
    let oo = outcome.to_json();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    let issues = oo["issue"].as_array().unwrap();
    assert_eq!(issues.len(), outcome.issues.len());
    let first = &issues[0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["code"], "code-invalid");
    assert_eq!(first["expression"], json!(["Observation.status"]));
    assert!(first["diagnostics"].as_str().unwrap().contains("'done'"));
    let warning = &issues[1];
    assert_eq!(warning["severity"], "warning");
    assert_eq!(warning["code"], "invariant");
    assert!(warning["diagnostics"]
        .as_str()
        .unwrap()
        .starts_with("Constraint failed: dom-6:"));
    // the outcome is itself a valid resource
    let check = validate(&oo);
    assert!(
        check
            .issues
            .iter()
            .all(|i| i.constraint.as_deref() == Some("dom-6")),
        "{:?}",
        check.issues
    );
}

#[test]
fn empty_operation_outcome_is_still_valid_fhir() {
    let oo = OperationOutcome::default().to_json();
    assert_eq!(
        oo,
        json!({"resourceType": "OperationOutcome", "issue": [{
            "severity": "information", "code": "informational",
            "diagnostics": "No issues detected during validation"}]})
    );
    assert!(!validate(&oo).has_errors());
    assert!(!OperationOutcome::default().has_errors());
}

#[test]
fn issue_display_is_one_line() {
    let mut p = json!({"resourceType": "Patient", "gender": "f"});
    p["text"] = json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"});
    let outcome = validate(&p);
    assert_eq!(outcome.issues.len(), 1);
    let line = outcome.issues[0].to_string();
    assert!(
        line.starts_with("error [code-invalid] Patient.gender: "),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

/// JSON pointers of every value in a document.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, c)| pointers(c, format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| pointers(c, format!("{at}/{i}"), out)),
        _ => {}
    }
    out.push(at);
}

#[test]
fn mutated_examples_never_panic() {
    let garbage = [
        json!(null),
        json!(""),
        json!([{}]),
        json!({"resourceType": "Patient", "x": [1]}),
        json!(1e-7),
    ];
    let mut rejected = 0;
    let mut total = 0;
    for (name, example) in resources(&fixtures("fhir-r4-examples")) {
        let mut ptrs = Vec::new();
        pointers(&example, String::new(), &mut ptrs);
        // a few spread-out places per example, at every depth
        let step = (ptrs.len() / 6).max(1);
        for ptr in ptrs
            .iter()
            .step_by(step)
            .filter(|p| !p.is_empty() && *p != "/resourceType")
        {
            for g in &garbage {
                let mut m = example.clone();
                *m.pointer_mut(ptr).unwrap() = g.clone();
                total += 1;
                if validate(&m).has_errors() {
                    rejected += 1;
                } else {
                    // the few mutations that stay valid: a string that may be any string, ...
                    assert!(
                        g.is_object() || g.is_number() || g.is_array(),
                        "{name} {ptr} = {g} accepted"
                    );
                }
            }
        }
    }
    assert!(
        rejected * 10 > total * 9,
        "only {rejected} of {total} mutations rejected"
    );
}
