//! Behaviour the HL7 suite does not cover: resolve() in Bundles and contained resources,
//! clinical unit comparisons, exact decimals, variables, error positions.
#![allow(clippy::unwrap_used)]

use crate::{CompileOptions, Error, EvalContext, Expression, Item};
use serde_json::{json, Value};

fn eval_on(expr: &str, resource: &Value) -> Vec<String> {
    let e = Expression::parse(expr).unwrap();
    e.evaluate(&EvalContext::new(resource))
        .unwrap()
        .iter()
        .map(|i| i.to_string())
        .collect()
}

fn eval(expr: &str) -> Vec<String> {
    eval_on(expr, &json!({"resourceType": "Basic"}))
}

#[test]
fn resolve_in_bundles_and_contained_resources() {
    let bundle = json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [
            {"fullUrl": "http://x.org/fhir/Patient/p1",
             "resource": {"resourceType": "Patient", "id": "p1", "gender": "female"}},
            {"fullUrl": "urn:uuid:0b5f4c2e-0000-4000-8000-000000000001",
             "resource": {"resourceType": "Observation", "id": "o1", "status": "final",
                          "code": {"text": "hr"},
                          "subject": {"reference": "Patient/p1"},
                          "performer": [{"reference": "#dev"}],
                          "contained": [{"resourceType": "Practitioner", "id": "dev", "active": true}]}}
        ]
    });
    assert_eq!(
        eval_on(
            "Bundle.entry.resource.ofType(Observation).subject.resolve().gender",
            &bundle
        ),
        ["female"]
    );
    assert_eq!(
        eval_on(
            "Bundle.entry.resource.ofType(Observation).subject.resolve() is Patient",
            &bundle
        ),
        ["true"]
    );
    // a contained reference resolves within the containing resource
    let obs = &bundle["entry"][1]["resource"];
    assert_eq!(
        eval_on("Observation.performer.resolve().active", obs),
        ["true"]
    );
    // unresolvable references are empty unless search indexing asks for typed stand-ins
    let lone = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "Patient/123"}});
    assert!(eval_on("subject.resolve()", &lone).is_empty());
    let e = Expression::parse("subject.where(resolve() is Patient)").unwrap();
    let out = e
        .evaluate(&EvalContext::new(&lone).resolve_references_by_type(true))
        .unwrap();
    assert_eq!(out.len(), 1);
}

#[test]
fn clinical_units_compare_across_ucum() {
    assert_eq!(eval("120 'mm[Hg]' > 15 'kPa'"), ["true"]);
    assert_eq!(eval("38.5 'Cel' > 101 '[degF]'"), ["true"]);
    assert_eq!(eval("70 'kg' = 70000 'g'"), ["true"]);
    assert_eq!(eval("90 '/min' = 1.5 '/s'"), ["true"]);
    assert_eq!(
        eval("5.5 'mmol/L' = 99 'mg/dL'"),
        Vec::<String>::new(),
        "not commensurable: empty"
    );
    assert_eq!(eval("2 'h' = 120 'min'"), ["true"]);
    assert_eq!(eval("(95 '%').value"), Vec::<String>::new());
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "w"},
        "valueQuantity": {"value": 185, "unit": "lbs", "system": "http://unitsofmeasure.org", "code": "[lb_av]"}});
    assert_eq!(eval_on("Observation.value > 80 'kg'", &obs), ["true"]);
}

#[test]
fn decimals_keep_their_written_precision() {
    let obs: Value = serde_json::from_str(
        r#"{"resourceType": "Observation", "status": "final", "code": {"text": "t"},
            "valueQuantity": {"value": 37.50, "unit": "Cel"}}"#,
    )
    .unwrap();
    assert_eq!(
        eval_on("Observation.value.ofType(Quantity).value", &obs),
        ["37.50"]
    );
    assert_eq!(
        eval_on("Observation.value.ofType(Quantity).value.precision()", &obs),
        ["2"]
    );
    assert_eq!(eval("0.1 + 0.2 = 0.3"), ["true"]);
    assert_eq!(eval("1.0 / 3 * 3 > 0.99"), ["true"]);
}

#[test]
fn variables_and_environment() {
    let patient = json!({"resourceType": "Patient", "id": "p", "birthDate": "1980-02-29"});
    let e = Expression::parse("%resource.id & '-' & %limit.toString() & '-' & %ucum").unwrap();
    let mut ctx = EvalContext::new(&patient);
    ctx.set_variable("limit", vec![Item::Integer(3)]);
    let out: Vec<String> = e
        .evaluate(&ctx)
        .unwrap()
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(out, ["p-3-http://unitsofmeasure.org"]);
    let err = Expression::parse("%nope")
        .unwrap()
        .evaluate(&EvalContext::new(&patient))
        .unwrap_err();
    assert!(matches!(err, Error::Evaluation { .. }), "{err}");
    // leap-day arithmetic clamps to the month's end
    assert_eq!(eval_on("birthDate + 1 year", &patient), ["1981-02-28"]);
}

#[test]
fn errors_point_at_the_offending_token() {
    let err = Expression::parse("name.given.where(\n  use = 'x' and )").unwrap_err();
    assert_eq!(err.position(), (2, 17));
    assert!(err.to_string().contains("unexpected ')'"), "{err}");
    let err = Expression::parse("name.foo()").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Semantic {
                line: 1,
                column: 6,
                ..
            }
        ),
        "{err}"
    );
    let opts = CompileOptions {
        context_type: Some("Observation".into()),
        strict: false,
    };
    let err = Expression::compile("Observation.valueQuantity.value", &opts).unwrap_err();
    assert!(err.to_string().contains("value.ofType(Quantity)"), "{err}");
}

#[test]
fn compiled_expressions_are_reusable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Expression>();
    let e = std::sync::Arc::new(Expression::parse("Patient.name.given.count()").unwrap());
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let e = e.clone();
            std::thread::spawn(move || {
                let p = json!({"resourceType": "Patient", "name": [{"given": vec!["a"; i + 1]}]});
                e.evaluate(&EvalContext::new(&p)).unwrap()[0].to_string()
            })
        })
        .collect();
    let counts: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(counts, ["1", "2"]);
}
