//! The HL7 FHIRPath R4 test suite (tests/fixtures/fhirpath-r4), run against the engine.
//!
//! Every case either passes or is listed, with its reason, in `known-failures.txt` beside
//! this file; the test fails if the pass rate drops below 98%, if a case fails that is not
//! listed, or if a listed case starts passing (so the list stays true).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use vigil_fhirpath::{CompileOptions, EvalContext, Expression, Item};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fhirpath-r4")
}

struct Case {
    name: String,
    input: Option<String>,
    expression: String,
    invalid: bool,
    strict: bool,
    predicate: bool,
    unordered: bool,
    outputs: Vec<(Option<String>, String)>,
}

fn load_cases() -> Vec<Case> {
    let xml = std::fs::read_to_string(fixtures().join("tests-fhir-r4.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let mut cases = Vec::new();
    for t in doc.descendants().filter(|n| n.has_tag_name("test")) {
        let expr = t.children().find(|c| c.has_tag_name("expression")).unwrap();
        let mode = t.attribute("mode").or(expr.attribute("mode"));
        cases.push(Case {
            name: t.attribute("name").unwrap().to_string(),
            input: t.attribute("inputfile").map(|f| {
                f.trim_end_matches(".xml")
                    .trim_end_matches(".json")
                    .to_string()
            }),
            expression: expr.text().unwrap_or("").to_string(),
            invalid: expr.attribute("invalid").is_some(),
            strict: mode == Some("strict"),
            predicate: t.attribute("predicate") == Some("true"),
            unordered: t.attribute("ordered") == Some("false"),
            outputs: t
                .children()
                .filter(|c| c.has_tag_name("output"))
                .map(|o| {
                    (
                        o.attribute("type").map(String::from),
                        o.text().unwrap_or("").to_string(),
                    )
                })
                .collect(),
        });
    }
    cases
}

fn matches_expected(item: &Item<'_>, ty: Option<&str>, text: &str) -> bool {
    let actual = item.to_string();
    let num = |s: &str| Decimal::from_str(s).ok();
    match ty {
        Some("boolean") | Some("string") | Some("code") | Some("id") | Some("uri") => {
            actual == text
        }
        Some("integer") | Some("decimal") => num(&actual).is_some() && num(&actual) == num(text),
        Some("date") | Some("dateTime") | Some("time") => {
            actual == text.trim_start_matches('@').trim_start_matches('T')
        }
        Some("Quantity") => quantity_eq(item, text),
        _ => {
            if let Some(d) = text.strip_prefix('@') {
                actual == d.trim_start_matches('T')
            } else if text.contains('\'') {
                quantity_eq(item, text)
            } else if let (Some(a), Some(b)) = (num(&actual), num(text)) {
                a == b
                    && matches!(
                        item.system(),
                        Item::Integer(_) | Item::Decimal(_) | Item::Long(_)
                    )
            } else {
                actual == text
            }
        }
    }
}

fn quantity_eq(item: &Item<'_>, text: &str) -> bool {
    let Some(q) = item.as_quantity() else {
        return false;
    };
    let (v, u) = text.split_once(' ').unwrap_or((text, ""));
    Decimal::from_str(v).ok() == Some(q.value) && u.trim_matches('\'') == &*q.unit
}

/// Ok(()) on pass, Err(description) on failure.
fn run_case(case: &Case, inputs: &HashMap<String, Value>) -> Result<(), String> {
    let resource = match &case.input {
        Some(name) => Some(
            inputs
                .get(name)
                .ok_or_else(|| format!("no JSON input for {name}"))?,
        ),
        None => None,
    };
    let options = CompileOptions {
        context_type: resource
            .and_then(|r| r.get("resourceType"))
            .and_then(Value::as_str)
            .map(String::from),
        strict: case.strict,
    };
    let compiled = Expression::compile(&case.expression, &options);
    let result = compiled.and_then(|e| {
        let ctx = match resource {
            Some(r) => EvalContext::new(r),
            None => EvalContext::empty(),
        };
        e.evaluate(&ctx)
            .map(|items| items.into_iter().map(|i| i.system()).collect::<Vec<_>>())
    });
    if case.invalid {
        return match result {
            Err(_) => Ok(()),
            Ok(items) => Err(format!("expected an error, got {} item(s)", items.len())),
        };
    }
    let items = result.map_err(|e| format!("unexpected error: {e}"))?;
    let items = if case.predicate {
        vec![Item::Boolean(!items.is_empty())]
    } else {
        items
    };
    let shown = || {
        items
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if items.len() != case.outputs.len() {
        return Err(format!(
            "expected {} item(s) {:?}, got [{}]",
            case.outputs.len(),
            case.outputs.iter().map(|o| &o.1).collect::<Vec<_>>(),
            shown()
        ));
    }
    let ok = if case.unordered {
        let mut used = vec![false; items.len()];
        case.outputs.iter().all(|(ty, text)| {
            let found = items
                .iter()
                .enumerate()
                .find(|(i, it)| !used[*i] && matches_expected(it, ty.as_deref(), text));
            found.map(|(i, _)| used[i] = true).is_some()
        })
    } else {
        items
            .iter()
            .zip(&case.outputs)
            .all(|(it, (ty, text))| matches_expected(it, ty.as_deref(), text))
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected {:?}, got [{}]",
            case.outputs.iter().map(|o| &o.1).collect::<Vec<_>>(),
            shown()
        ))
    }
}

fn known_failures() -> BTreeMap<String, String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/known-failures.txt");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, r)| (n.trim().to_string(), r.trim().to_string()))
        })
        .collect()
}

#[test]
fn fhirpath_r4_suite() {
    let mut inputs = HashMap::new();
    for entry in std::fs::read_dir(fixtures().join("input")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        inputs.insert(name, value);
    }
    let cases = load_cases();
    let known = known_failures();
    let mut passed = 0;
    let mut unexpected = Vec::new();
    let mut now_passing = Vec::new();
    let mut failing = BTreeMap::new();
    for case in &cases {
        match run_case(case, &inputs) {
            Ok(()) => {
                passed += 1;
                if known.contains_key(&case.name) {
                    now_passing.push(case.name.clone());
                }
            }
            Err(why) => {
                failing.insert(
                    case.name.clone(),
                    format!("{} -- {why}", case.expression.trim().replace('\n', " ")),
                );
                if !known.contains_key(&case.name) {
                    unexpected.push(format!(
                        "{}: `{}` {why}",
                        case.name,
                        case.expression.trim().replace('\n', " ")
                    ));
                }
            }
        }
    }
    let total = cases.len();
    let rate = passed as f64 * 100.0 / total as f64;
    println!("FHIRPath R4 suite: {passed} of {total} passed ({rate:.2}%)");
    for (name, why) in &failing {
        println!("  failing: {name}: {why}");
    }
    assert!(
        unexpected.is_empty(),
        "cases failing that known-failures.txt does not list:\n{}",
        unexpected.join("\n")
    );
    assert!(
        now_passing.is_empty(),
        "cases listed in known-failures.txt now pass; remove them: {now_passing:?}"
    );
    assert!(rate >= 98.0, "pass rate {rate:.2}% is below 98%");
}
