//! Search-parameter extraction: the registry covers every R4 parameter, extraction works on
//! every official example, and the values are right for the cases search depends on.

use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::str::FromStr;
use vigil_fhir::search::*;
use vigil_fhir_model::Model;
use vigil_fhirpath::{CompileOptions, EvalContext, Expression};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fhir-r4-examples")
}

fn load(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(examples_dir().join(name)).unwrap()).unwrap()
}

fn examples() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let v = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            (f.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Milliseconds since the epoch of a UTC date-time.
fn ms(y: i32, mo: u8, d: u8, h: i64, mi: i64, s: i64) -> i64 {
    vigil_fhirpath::temporal::days_from_civil(y, mo, d) * 86_400_000
        + h * 3_600_000
        + mi * 60_000
        + s * 1000
}

fn tokens<'x>(x: &'x Extraction<'_, '_>, code: &'x str) -> Vec<&'x TokenValue<'x>> {
    x.values(code)
        .map(|v| match v {
            IndexValue::Token(t) => t,
            other => panic!("{code}: not a token: {other:?}"),
        })
        .collect()
}

fn strings<'x>(x: &'x Extraction<'_, '_>, code: &'x str) -> Vec<&'x StringValue<'x>> {
    x.values(code)
        .map(|v| match v {
            IndexValue::String(s) => s,
            other => panic!("{code}: not a string: {other:?}"),
        })
        .collect()
}

fn references<'x>(x: &'x Extraction<'_, '_>, code: &'x str) -> Vec<&'x ReferenceValue<'x>> {
    x.values(code)
        .map(|v| match v {
            IndexValue::Reference(r) => r,
            other => panic!("{code}: not a reference: {other:?}"),
        })
        .collect()
}

fn dates(x: &Extraction<'_, '_>, code: &str) -> Vec<DateValue> {
    x.values(code)
        .map(|v| match v {
            IndexValue::Date(d) => *d,
            other => panic!("{code}: not a date: {other:?}"),
        })
        .collect()
}

fn quantities<'x>(x: &'x Extraction<'_, '_>, code: &'x str) -> Vec<&'x QuantityValue<'x>> {
    x.values(code)
        .map(|v| match v {
            IndexValue::Quantity(q) => q,
            other => panic!("{code}: not a quantity: {other:?}"),
        })
        .collect()
}

fn has_token(x: &Extraction<'_, '_>, code: &str, system: Option<&str>, value: &str) -> bool {
    tokens(x, code)
        .iter()
        .any(|t| t.system.as_deref() == system && t.code.as_deref() == Some(value))
}

/// The extraction as a sorted list of `code value` lines, to compare extractions.
fn summary(x: &Extraction<'_, '_>) -> Vec<String> {
    let mut lines: Vec<String> = x
        .entries
        .iter()
        .map(|e| format!("{} {:?}", e.param.code(), e.value))
        .collect();
    lines.sort();
    lines
}

// --- the registry ----------------------------------------------------------------------

#[test]
fn every_expression_compiles_for_each_of_its_bases() {
    let model = Model::r4();
    let params = model.search_params();
    assert_eq!(params.len(), 1375);
    let without: Vec<&str> = params
        .iter()
        .filter(|p| p.expression.is_none())
        .map(|p| p.code.as_str())
        .collect();
    assert_eq!(without, ["_text", "_content", "_query"]);

    let mut compiled = 0;
    let mut errors = Vec::new();
    for p in params {
        let Some(expr) = &p.expression else { continue };
        for base in &p.base {
            // The parts of the union written for this base (or for no particular type).
            let parts: Vec<&str> = split_union(expr)
                .into_iter()
                .filter(|part| head_type(part).is_none_or(|h| h == base))
                .collect();
            assert!(!parts.is_empty(), "{} has no part for base {base}", p.url);
            let text = rewrite_as(&parts.join(" | "));
            let opts = CompileOptions {
                context_type: Some(base.clone()),
                strict: false,
            };
            match Expression::compile(&text, &opts) {
                Ok(_) => compiled += 1,
                Err(e) => errors.push(format!("{} on {base}: `{text}`: {e}", p.url)),
            }
        }
        for c in &p.component {
            if let Err(e) = Expression::parse(&rewrite_as(&c.expression)) {
                errors.push(format!("{} component `{}`: {e}", p.url, c.expression));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // 1,372 expressions; parameters shared by several types have one base each.
    let bases: usize = params
        .iter()
        .filter(|p| p.expression.is_some())
        .map(|p| p.base.len())
        .sum();
    assert_eq!(compiled, bases);
    assert!(bases > 1372, "{bases}");

    let registry = SearchRegistry::r4();
    assert!(registry.problems().is_empty(), "{:#?}", registry.problems());
    assert_eq!(registry.params().len(), 1375);
}

#[test]
fn registry_covers_every_base_and_inherited_parameters() {
    let model = Model::r4();
    let registry = SearchRegistry::r4();
    for p in model.search_params() {
        for base in &p.base {
            let types: Vec<&str> = if base == "Resource" || base == "DomainResource" {
                model
                    .resource_types()
                    .filter(|t| {
                        model.is_subtype(t, base) && !model.type_def(t).unwrap().is_abstract
                    })
                    .collect()
            } else {
                vec![base.as_str()]
            };
            for t in types {
                let found = registry
                    .param(t, &p.code)
                    .unwrap_or_else(|| panic!("{t}: {} missing", p.code));
                assert_eq!(found.url(), p.url);
            }
        }
    }
    // Observation: its own 38, the 9 of Resource, DomainResource's _text.
    assert_eq!(registry.params_for("Observation").count(), 38 + 8 + 1);
    assert!(registry.param("Observation", "_id").is_some());
    assert!(
        registry.param("Bundle", "_text").is_none(),
        "Bundle is not a DomainResource"
    );
    assert!(registry.param("Observation", "birthdate").is_none());
    assert!(!registry.param("Patient", "_query").unwrap().is_indexed());
    assert_eq!(registry.params_for("NoSuchType").count(), 0);
    // The union is split per type: Observation evaluates only its own part of `patient`.
    assert_eq!(
        registry.expression_for("Observation", "patient"),
        Some("Observation.subject.where(resolve() is Patient)")
    );
    assert_eq!(
        registry.expression_for("Observation", "value-quantity"),
        Some("Observation.value.ofType(Quantity) | Observation.value.ofType(SampledData)")
    );
    let composite = registry
        .param("Observation", "code-value-quantity")
        .unwrap();
    assert_eq!(
        composite.component_types().collect::<Vec<_>>(),
        [SearchParamType::Token, SearchParamType::Quantity]
    );
    // Nearly everything is evaluated as a direct path.
    let (fast, all) = registry.fast_path_count();
    assert!(fast * 100 / all >= 95, "{fast} of {all}");
}

#[test]
fn r4_as_casts_fail_on_repeating_elements_so_they_are_rewritten() {
    // Why `as` becomes `ofType`: FHIRPath requires a single item for `as`.
    let lib = json!({"resourceType": "Library", "status": "active", "type": {"text": "x"},
    "useContext": [
        {"code": {"code": "focus"}, "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}},
        {"code": {"code": "age"}, "valueQuantity": {"value": 5, "system": "http://unitsofmeasure.org", "code": "a"}},
        {"code": {"code": "venue"}, "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "2"}]}}
    ]});
    let raw = Expression::parse("(Library.useContext.value as CodeableConcept)").unwrap();
    assert!(raw.evaluate(&EvalContext::new(&lib)).is_err());

    let x = extract(&lib).unwrap();
    assert!(x.problems.is_empty(), "{:?}", x.problems);
    assert!(has_token(
        &x,
        "context",
        Some("http://snomed.info/sct"),
        "1"
    ));
    assert!(has_token(
        &x,
        "context",
        Some("http://snomed.info/sct"),
        "2"
    ));
    let q = quantities(&x, "context-quantity");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].value, Some(dec("5")));
    // The composites pair each useContext's code with its own value only.
    let pairs: Vec<(String, String)> = x
        .values("context-type-value")
        .map(|v| match v {
            IndexValue::Composite(c) => match (&c[0], &c[1]) {
                (IndexValue::Token(a), IndexValue::Token(b)) => (
                    a.code.as_deref().unwrap().to_string(),
                    b.code.as_deref().unwrap().to_string(),
                ),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("focus".to_string(), "1".to_string()),
            ("venue".to_string(), "2".to_string())
        ]
    );
}

// --- all official examples -------------------------------------------------------------

#[test]
fn every_official_example_extracts_without_problems() {
    let examples = examples();
    assert_eq!(examples.len(), 72);
    let mut total = 0;
    for (name, resource) in &examples {
        let x = extract(resource).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!x.entries.is_empty(), "{name}: no values");
        assert!(x.problems.is_empty(), "{name}: {:?}", x.problems);
        // The only item of an unindexable type: Consent.source[x] may be an Attachment,
        // which the reference parameter `source-reference` cannot index.
        for s in &x.skipped {
            assert_eq!(
                (name.as_str(), s.param.code(), s.item_type),
                ("consent-example.json", "source-reference", "Attachment")
            );
        }
        // Values are of the parameter's type; composites have one value per component.
        for e in &x.entries {
            let ok = match (&e.value, e.param.param_type()) {
                (IndexValue::Token(_), SearchParamType::Token)
                | (IndexValue::String(_), SearchParamType::String)
                | (IndexValue::Date(_), SearchParamType::Date)
                | (IndexValue::Number(_), SearchParamType::Number)
                | (IndexValue::Quantity(_), SearchParamType::Quantity)
                | (IndexValue::Reference(_), SearchParamType::Reference)
                | (IndexValue::Uri(_), SearchParamType::Uri)
                | (IndexValue::Position(_), SearchParamType::Special) => true,
                (IndexValue::Composite(c), SearchParamType::Composite) => {
                    c.len() == e.param.component_types().count()
                }
                _ => false,
            };
            assert!(ok, "{name}: {} got {:?}", e.param.code(), e.value);
        }
        total += x.entries.len();
    }
    assert!(total > 900, "{total}");
}

#[test]
fn direct_paths_give_the_same_values_as_fhirpath() {
    let reference = SearchRegistry::new(RegistryOptions { fast_paths: false });
    assert_eq!(reference.fast_path_count().0, 0);
    let fast = SearchRegistry::r4();
    let mut resources: Vec<(String, Value)> = examples();
    resources.push(("vital signs".into(), vital_signs()));
    resources.push(("contained".into(), with_contained_patient()));
    resources.push(("document bundle".into(), document_bundle()));
    resources.push(("references".into(), references_of_all_kinds()));
    for (name, r) in &resources {
        let a = fast.extract(r).unwrap();
        let b = reference.extract(r).unwrap();
        assert!(b.problems.is_empty(), "{name}: {:?}", b.problems);
        assert_eq!(summary(&a), summary(&b), "{name}");
    }
}

// --- specific values -------------------------------------------------------------------

#[test]
fn observation_example() {
    let obs = load("observation-example.json");
    let x = extract(&obs).unwrap();

    assert!(has_token(&x, "code", Some("http://loinc.org"), "29463-7"));
    assert!(has_token(
        &x,
        "code",
        Some("http://snomed.info/sct"),
        "27113001"
    ));
    let loinc = tokens(&x, "code")
        .into_iter()
        .find(|t| t.code.as_deref() == Some("29463-7"))
        .unwrap();
    assert_eq!(loinc.text.as_deref(), Some("Body Weight"));
    assert!(has_token(
        &x,
        "category",
        Some("http://terminology.hl7.org/CodeSystem/observation-category"),
        "vital-signs"
    ));
    assert!(has_token(&x, "status", None, "final"));
    assert!(has_token(&x, "_id", None, "example"));

    for code in ["subject", "patient"] {
        let r = references(&x, code);
        assert_eq!(r.len(), 1, "{code}");
        assert_eq!(r[0].kind, ReferenceKind::Local);
        assert_eq!(r[0].resource_type.as_deref(), Some("Patient"));
        assert_eq!(r[0].id.as_deref(), Some("example"));
        assert_eq!(r[0].reference.as_deref(), Some("Patient/example"));
        assert_eq!(
            r[0].absolute_url("http://vigil.example/fhir/").as_deref(),
            Some("http://vigil.example/fhir/Patient/example")
        );
    }
    assert_eq!(
        references(&x, "encounter")[0].resource_type.as_deref(),
        Some("Encounter")
    );

    // effectiveDateTime 2016-03-28: the whole day.
    let d = dates(&x, "date");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].low, Some(ms(2016, 3, 28, 0, 0, 0)));
    assert_eq!(d[0].high, Some(ms(2016, 3, 29, 0, 0, 0) - 1));
    assert_eq!(d[0].precision, Some(vigil_fhirpath::Precision::Day));

    // 185 [lb_av] is 185 × 453.59237 g.
    let q = quantities(&x, "value-quantity");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].value, Some(dec("185")));
    assert_eq!(
        (q[0].low, q[0].high),
        (Some(dec("184.5")), Some(dec("185.5")))
    );
    assert_eq!(q[0].system.as_deref(), Some("http://unitsofmeasure.org"));
    assert_eq!(q[0].code.as_deref(), Some("[lb_av]"));
    assert_eq!(q[0].unit.as_deref(), Some("lbs"));
    let c = q[0].canonical.as_ref().unwrap();
    assert_eq!(c.unit, "g");
    assert_eq!(c.value.unwrap().normalize(), dec("83914.58845"));
    assert!(c.low.unwrap() < c.value.unwrap() && c.value.unwrap() < c.high.unwrap());

    // The composite pairs each code with the value.
    let tuples: Vec<&Vec<IndexValue<'_>>> = x
        .values("code-value-quantity")
        .map(|v| match v {
            IndexValue::Composite(c) => c,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(tuples.len(), 4, "one per coding");
    for t in &tuples {
        assert!(matches!(&t[1], IndexValue::Quantity(q) if q.value == Some(dec("185"))));
    }
    assert!(tuples.iter().any(|t| matches!(&t[0],
        IndexValue::Token(tok) if tok.system.as_deref() == Some("http://loinc.org") && tok.code.as_deref() == Some("29463-7"))));
    // No value[x] of other types, no components.
    assert_eq!(x.values("value-concept").count(), 0);
    assert_eq!(x.values("code-value-concept").count(), 0);
    assert_eq!(x.values("component-code").count(), 0);

    // _text is the narrative's text; _content all string content.
    let text = strings(&x, "_text");
    assert!(
        text[0]
            .normalized
            .starts_with("generated narrative with details"),
        "{}",
        text[0].normalized
    );
    assert!(!text[0].exact.contains('<'));
    let content = strings(&x, "_content");
    assert!(content[0].normalized.contains("body weight measured"));
}

#[test]
fn patient_example() {
    let patient = load("patient-example.json");
    let x = extract(&patient).unwrap();

    let family: Vec<(&str, &str)> = strings(&x, "family")
        .iter()
        .map(|s| (&*s.exact, &*s.normalized))
        .collect();
    assert_eq!(family, [("Chalmers", "chalmers"), ("Windsor", "windsor")]);
    let name: Vec<&str> = strings(&x, "name").iter().map(|s| &*s.normalized).collect();
    for part in ["chalmers", "peter", "james", "jim", "windsor"] {
        assert!(name.contains(&part), "{name:?}");
    }
    assert_eq!(
        name.iter().filter(|n| **n == "peter").count(),
        1,
        "values are distinct per parameter"
    );
    assert!(strings(&x, "given").iter().any(|s| s.exact == "Jim"));

    let birth = dates(&x, "birthdate");
    assert_eq!(birth.len(), 1);
    assert_eq!(birth[0].low, Some(ms(1974, 12, 25, 0, 0, 0)));
    assert_eq!(birth[0].high, Some(ms(1974, 12, 25, 23, 59, 59) + 999));
    assert!(birth[0].contains(ms(1974, 12, 25, 14, 35, 45)));
    assert!(!birth[0].contains(ms(1974, 12, 26, 0, 0, 0)));

    assert_eq!(
        tokens(&x, "gender")
            .iter()
            .map(|t| t.code.as_deref())
            .collect::<Vec<_>>(),
        [Some("male")]
    );
    assert!(has_token(&x, "active", None, "true"));
    assert!(has_token(&x, "deceased", None, "false"));

    let ids = tokens(&x, "identifier");
    assert_eq!(ids.len(), 1);
    assert_eq!(
        ids[0].system.as_deref(),
        Some("urn:oid:1.2.36.146.595.217.0.1")
    );
    assert_eq!(ids[0].code.as_deref(), Some("12345"));
    // For :of-type (type system|type code|value).
    assert_eq!(ids[0].identifier_type.len(), 1);
    assert_eq!(
        ids[0].identifier_type[0].system.as_deref(),
        Some("http://terminology.hl7.org/CodeSystem/v2-0203")
    );
    assert_eq!(ids[0].identifier_type[0].code.as_deref(), Some("MR"));

    // telecom: every contact point with a value (the first has none); phone: system=phone.
    let telecom: Vec<&str> = tokens(&x, "telecom")
        .iter()
        .map(|t| t.code.as_deref().unwrap())
        .collect();
    assert_eq!(
        telecom,
        ["(03) 5555 6473", "(03) 3410 5613", "(03) 5555 8834"]
    );
    assert!(has_token(&x, "phone", Some("phone"), "(03) 5555 6473"));
    assert_eq!(x.values("email").count(), 0);

    let city: Vec<&str> = strings(&x, "address-city")
        .iter()
        .map(|s| &*s.normalized)
        .collect();
    assert_eq!(city, ["pleasantville"]);
    assert!(strings(&x, "address")
        .iter()
        .any(|s| s.exact == "534 Erewhon St"));
    assert!(has_token(&x, "address-use", None, "home"));
    let org = references(&x, "organization");
    assert_eq!(
        (org[0].resource_type.as_deref(), org[0].id.as_deref()),
        (Some("Organization"), Some("1"))
    );
    // Contact names are not the patient's names.
    assert!(!name.contains(&"du marche"));
    assert!(strings(&x, "_content")[0].normalized.contains("benedicte"));
}

#[test]
fn strings_are_normalized_and_exact() {
    assert_eq!(normalize("Zoë Müller"), "zoe muller");
    assert_eq!(normalize("  ÅSA\t\nÇelik  "), "asa celik");
    let p = json!({"resourceType": "Patient", "name": [{"family": "Müller", "given": ["Zoë"], "text": "Zoë  Müller"}]});
    let x = extract(&p).unwrap();
    let name: Vec<(&str, &str)> = strings(&x, "name")
        .iter()
        .map(|s| (&*s.exact, &*s.normalized))
        .collect();
    assert_eq!(
        name,
        [
            ("Müller", "muller"),
            ("Zoë", "zoe"),
            ("Zoë  Müller", "zoe muller")
        ]
    );
    // Text already in normal form is borrowed, not copied.
    let q = json!({"resourceType": "Patient", "name": [{"family": "smith"}]});
    let x = extract(&q).unwrap();
    assert!(matches!(
        strings(&x, "family")[0].normalized,
        std::borrow::Cow::Borrowed("smith")
    ));
}

#[test]
fn dates_cover_their_precision() {
    let year = DateValue::from_fhir("2013").unwrap();
    assert_eq!(year.low, Some(ms(2013, 1, 1, 0, 0, 0)));
    assert_eq!(year.high, Some(ms(2014, 1, 1, 0, 0, 0) - 1));
    assert_eq!(year.precision, Some(vigil_fhirpath::Precision::Year));
    let month = DateValue::from_fhir("2012-02").unwrap();
    assert_eq!(
        month.high,
        Some(ms(2012, 3, 1, 0, 0, 0) - 1),
        "leap February"
    );
    let second = DateValue::from_fhir("2013-06-08T10:57:34+02:00").unwrap();
    assert_eq!(
        (second.low, second.high),
        (
            Some(ms(2013, 6, 8, 8, 57, 34)),
            Some(ms(2013, 6, 8, 8, 57, 34) + 999)
        )
    );
    let millis = DateValue::from_fhir("2013-06-08T10:57:34.123Z").unwrap();
    assert_eq!(
        (millis.low, millis.high),
        (
            Some(ms(2013, 6, 8, 10, 57, 34) + 123),
            Some(ms(2013, 6, 8, 10, 57, 34) + 123)
        )
    );
    // Without a timezone: UTC.
    assert_eq!(
        DateValue::from_fhir("2013-06-08T10:57:34").unwrap().low,
        Some(ms(2013, 6, 8, 10, 57, 34))
    );
    assert!(DateValue::from_fhir("2013-13").is_none());

    // In a resource: a birthDate of 2013 covers the year; a Period open at the end is
    // unbounded; Timing events each give a value.
    let p = json!({"resourceType": "Patient", "birthDate": "2013"});
    let x = extract(&p).unwrap();
    assert_eq!(dates(&x, "birthdate"), [year]);

    let enc = json!({"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"},
        "period": {"start": "2024-01-05T10:00:00Z"}});
    let x = extract(&enc).unwrap();
    let d = dates(&x, "date");
    assert_eq!(
        (d[0].low, d[0].high),
        (Some(ms(2024, 1, 5, 10, 0, 0)), None)
    );
    assert_eq!(d[0].precision, None);

    let plan = json!({"resourceType": "CarePlan", "status": "active", "intent": "plan",
        "subject": {"reference": "Patient/1"},
        "activity": [{"detail": {"status": "scheduled", "scheduledTiming": {
            "event": ["2024-02-01", "2024-02-02T08:00:00Z"],
            "repeat": {"boundsPeriod": {"start": "2024-02-01", "end": "2024-02-10"}}}}}]});
    let x = extract(&plan).unwrap();
    let d = dates(&x, "activity-date");
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(d
        .iter()
        .any(|v| v.low == Some(ms(2024, 2, 2, 8, 0, 0)) && v.precision.is_some()));
    assert!(d
        .iter()
        .any(|v| v.low == Some(ms(2024, 2, 1, 0, 0, 0))
            && v.high == Some(ms(2024, 2, 11, 0, 0, 0) - 1)));
    // A string schedule has no date to index: skipped, and reported.
    let mut plan = plan;
    plan["activity"][0]["detail"] =
        json!({"status": "scheduled", "scheduledString": "every morning"});
    let x = extract(&plan).unwrap();
    assert_eq!(x.values("activity-date").count(), 0);
    assert_eq!(
        x.skipped
            .iter()
            .map(|s| (s.param.code(), s.item_type))
            .collect::<Vec<_>>(),
        [("activity-date", "string")]
    );
}

#[test]
fn quantities_have_a_canonical_form() {
    let obs = |value: &str, code: &str| {
        let v: Value = serde_json::from_str(&format!(
            r#"{{"resourceType": "Observation", "status": "final", "code": {{"text": "x"}},
                "valueQuantity": {{"value": {value}, "system": "http://unitsofmeasure.org", "code": "{code}"}}}}"#
        ))
        .unwrap();
        v
    };
    let (a, b) = (obs("5.4", "mg"), obs("0.0054", "g"));
    let (xa, xb) = (extract(&a).unwrap(), extract(&b).unwrap());
    let (qa, qb) = (
        quantities(&xa, "value-quantity")[0],
        quantities(&xb, "value-quantity")[0],
    );
    let (ca, cb) = (
        qa.canonical.as_ref().unwrap(),
        qb.canonical.as_ref().unwrap(),
    );
    assert_eq!(ca.unit, "g");
    assert_eq!(ca.unit, cb.unit);
    assert_eq!(ca.value.unwrap().normalize(), cb.value.unwrap().normalize());
    // The written precision is kept: 5.4 stands for [5.35, 5.45].
    assert_eq!((qa.low, qa.high), (Some(dec("5.35")), Some(dec("5.45"))));

    let resource = obs("37.5", "Cel");
    let x = extract(&resource).unwrap();
    let c = quantities(&x, "value-quantity")[0]
        .canonical
        .clone()
        .unwrap();
    assert_eq!((c.unit.as_ref(), c.value), ("K", Some(dec("310.65"))));
    let resource = obs("120", "mm[Hg]");
    let x = extract(&resource).unwrap();
    assert_eq!(
        quantities(&x, "value-quantity")[0]
            .canonical
            .as_ref()
            .unwrap()
            .unit,
        "m-1.s-2.g"
    );
    let resource = obs("3", "furlongs");
    let x = extract(&resource).unwrap();
    assert!(
        quantities(&x, "value-quantity")[0].canonical.is_none(),
        "not UCUM: no canonical form"
    );

    // Comparators open the range.
    let lt = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "valueQuantity": {"value": 5, "comparator": "<", "unit": "mmol/L"}});
    let x = extract(&lt).unwrap();
    let q = quantities(&x, "value-quantity")[0];
    assert_eq!(
        (q.comparator, q.low, q.high),
        (Some(Comparator::Lt), None, Some(dec("5")))
    );
    assert!(q.canonical.is_none() && q.system.is_none());

    // Money and Range.
    let ci = json!({"resourceType": "ChargeItem", "status": "billable", "code": {"text": "x"},
        "subject": {"reference": "Patient/1"}, "priceOverride": {"value": 40.00, "currency": "EUR"}});
    let x = extract(&ci).unwrap();
    let q = quantities(&x, "price-override")[0];
    assert_eq!(
        (q.value, q.system.as_deref(), q.code.as_deref()),
        (
            Some(dec("40.00")),
            Some("urn:iso:std:iso:4217"),
            Some("EUR")
        )
    );
    let cond = json!({"resourceType": "Condition", "subject": {"reference": "Patient/1"},
        "onsetRange": {"low": {"value": 1, "system": "http://unitsofmeasure.org", "code": "a"},
                       "high": {"value": 2, "system": "http://unitsofmeasure.org", "code": "a"}}});
    let x = extract(&cond).unwrap();
    let q = quantities(&x, "onset-age")[0];
    assert_eq!(
        (q.value, q.low, q.high),
        (None, Some(dec("1")), Some(dec("2")))
    );
    assert_eq!(q.canonical.as_ref().unwrap().unit, "s");
}

#[test]
fn numbers_keep_their_precision() {
    let resource = load("riskassessment-example.json");
    let x = extract(&resource).unwrap();
    let n: Vec<&NumberValue> = x
        .values("probability")
        .map(|v| match v {
            IndexValue::Number(n) => n,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(!n.is_empty());
    assert_eq!(implicit_range(dec("1.50")), (dec("1.495"), dec("1.505")));
    assert_eq!(implicit_range(dec("100")), (dec("99.5"), dec("100.5")));
    let v = NumberValue::exact(dec("0.02"));
    assert_eq!((v.low, v.high), (Some(dec("0.015")), Some(dec("0.025"))));
}

#[test]
fn composite_with_components() {
    let resource = vital_signs();
    let x = extract(&resource).unwrap();
    assert!(x.problems.is_empty());
    let pairs: Vec<(String, Decimal)> = x
        .values("component-code-value-quantity")
        .map(|v| match v {
            IndexValue::Composite(c) => match (&c[0], &c[1]) {
                (IndexValue::Token(t), IndexValue::Quantity(q)) => {
                    (t.code.as_deref().unwrap().to_string(), q.value.unwrap())
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("8480-6".to_string(), dec("128")),
            ("8462-4".to_string(), dec("84"))
        ]
    );
    // combo: the Observation's own code and value, and each component's (the code's
    // text-only token makes no tuple).
    assert_eq!(x.values("combo-code-value-quantity").count(), 3);
    assert!(has_token(
        &x,
        "component-code",
        Some("http://loinc.org"),
        "8480-6"
    ));
    assert!(has_token(
        &x,
        "combo-code",
        Some("http://loinc.org"),
        "85354-9"
    ));
    assert_eq!(quantities(&x, "component-value-quantity").len(), 2);
    let perf = references(&x, "performer");
    assert_eq!(perf[0].resource_type.as_deref(), Some("Practitioner"));
    assert_eq!(references(&x, "device")[0].id.as_deref(), Some("cuff-42"));
    let d = dates(&x, "date");
    assert_eq!(
        d[0].low,
        Some(ms(2024, 3, 1, 7, 15, 0)),
        "+01:00 is an hour ahead of UTC"
    );
    let profile: Vec<&IndexValue<'_>> = x.values("_profile").collect();
    assert_eq!(
        profile,
        [&IndexValue::Uri(UriValue {
            uri: "http://hl7.org/fhir/StructureDefinition/vitalsigns".into(),
            version: None
        })]
    );

    // value[x] as dateTime reaches code-value-date (R4 writes `value.as(DateTime)`).
    let obs = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "21112-8"}]}, "valueDateTime": "1970-05-04"});
    let x = extract(&obs).unwrap();
    assert_eq!(x.values("code-value-date").count(), 1);
    assert_eq!(
        dates(&x, "value-date")[0].low,
        Some(ms(1970, 5, 4, 0, 0, 0))
    );

    // DocumentReference.relationship: R4 swapped the component definitions; repaired.
    let resource = load("documentreference-example.json");
    let x = extract(&resource).unwrap();
    let rel: Vec<&IndexValue<'_>> = x.values("relationship").collect();
    assert_eq!(rel.len(), 1);
    let IndexValue::Composite(c) = rel[0] else {
        panic!()
    };
    assert!(matches!(&c[0], IndexValue::Token(t) if t.code.as_deref() == Some("appends")));
    assert!(matches!(&c[1], IndexValue::Reference(r) if r.id.as_deref() == Some("example")));
}

#[test]
fn references_of_every_kind() {
    let resource = references_of_all_kinds();
    let x = extract(&resource).unwrap();
    let by_ref = |s: &str| -> ReferenceValue<'static> {
        references(&x, "subject")
            .into_iter()
            .chain(references(&x, "based-on"))
            .chain(references(&x, "performer"))
            .chain(references(&x, "has-member"))
            .chain(references(&x, "derived-from"))
            .chain(references(&x, "part-of"))
            .find(|r| r.reference.as_deref() == Some(s) || (s.is_empty() && r.reference.is_none()))
            .unwrap_or_else(|| panic!("{s} not found"))
            .clone()
            .into_owned()
    };
    let abs = by_ref("http://other.example/fhir/Patient/9/_history/3");
    assert_eq!(abs.kind, ReferenceKind::Absolute);
    assert_eq!(abs.base_url.as_deref(), Some("http://other.example/fhir"));
    assert_eq!(
        (
            abs.resource_type.as_deref(),
            abs.id.as_deref(),
            abs.version.as_deref()
        ),
        (Some("Patient"), Some("9"), Some("3"))
    );
    let local = by_ref("ServiceRequest/sr1/_history/2");
    assert_eq!(
        (local.kind, local.version.as_deref()),
        (ReferenceKind::Local, Some("2"))
    );
    let urn = by_ref("urn:uuid:8f3c2e1a-1111-4c2e-9a55-000000000001");
    assert_eq!((urn.kind, urn.resource_type), (ReferenceKind::Urn, None));
    let logical = by_ref("");
    assert_eq!(logical.kind, ReferenceKind::Logical);
    assert_eq!(
        logical.resource_type.as_deref(),
        Some("Practitioner"),
        "from Reference.type"
    );
    let ident = logical.identifier.unwrap();
    assert_eq!(
        (ident.system.as_deref(), ident.code.as_deref()),
        (Some("http://nppes.example"), Some("1234567890"))
    );
    let bad = by_ref("not a reference");
    assert_eq!((bad.kind, bad.resource_type), (ReferenceKind::Other, None));
    // `patient` only takes the subject that is a Patient (by type, without resolving).
    let patients = references(&x, "patient");
    assert_eq!(patients.len(), 1);
    assert_eq!(patients[0].id.as_deref(), Some("9"));
}

#[test]
fn contained_references_are_marked() {
    let resource = with_contained_patient();
    let x = extract(&resource).unwrap();
    let subject = references(&x, "subject");
    assert_eq!(subject.len(), 1);
    assert!(subject[0].is_contained());
    assert_eq!(subject[0].reference.as_deref(), Some("#p1"));
    assert_eq!(
        (
            subject[0].resource_type.as_deref(),
            subject[0].id.as_deref()
        ),
        (Some("Patient"), Some("p1"))
    );
    assert_eq!(subject[0].absolute_url("http://x"), None);
    // `where(resolve() is Patient)` resolves the contained resource.
    assert_eq!(references(&x, "patient").len(), 1);
    // The contained resource's own values are not the container's.
    assert_eq!(x.values("family").count(), 0);
}

#[test]
fn bundles_index_only_their_own_parameters() {
    let bundle = document_bundle();
    let x = extract(&bundle).unwrap();
    assert!(x.problems.is_empty());
    let codes: std::collections::BTreeSet<&str> =
        x.entries.iter().map(|e| e.param.code()).collect();
    assert_eq!(
        codes.into_iter().collect::<Vec<_>>(),
        [
            "_content",
            "_id",
            "composition",
            "identifier",
            "timestamp",
            "type"
        ]
    );
    assert!(has_token(&x, "type", None, "document"));
    let comp = references(&x, "composition");
    assert_eq!(
        (comp[0].resource_type.as_deref(), comp[0].id.as_deref()),
        (Some("Composition"), Some("c1"))
    );
    assert_eq!(comp[0].reference.as_deref(), Some("Composition/c1"));
    assert_eq!(
        x.values("message").count(),
        0,
        "entry[0] is not a MessageHeader"
    );
    // The Patient entry gives the Bundle no Patient values.
    assert!(x
        .entries
        .iter()
        .all(|e| registry_param_of("Bundle", e.param.code())));

    let mut message = bundle.clone();
    message["type"] = json!("message");
    message["entry"][0]["resource"] = json!({"resourceType": "MessageHeader", "id": "m1",
        "eventCoding": {"code": "x"}, "source": {"endpoint": "http://x"}});
    let x = extract(&message).unwrap();
    assert_eq!(references(&x, "message")[0].id.as_deref(), Some("m1"));
    assert_eq!(x.values("composition").count(), 0);
}

fn registry_param_of(resource_type: &str, code: &str) -> bool {
    SearchRegistry::r4().param(resource_type, code).is_some()
}

#[test]
fn special_parameters() {
    let resource = load("location-example.json");
    let x = extract(&resource).unwrap();
    let near: Vec<&IndexValue<'_>> = x.values("near").collect();
    assert_eq!(
        near,
        [&IndexValue::Position(PositionValue {
            latitude: dec("42.25475478"),
            longitude: dec("-83.6945691")
        })]
    );
    assert_eq!(
        strings(&x, "_text")[0].exact,
        "Burgers UMC, South Wing, second floor"
    );
    // Parameters (a Resource, not a DomainResource) has no _text; _content still applies.
    let resource = load("parameters-example.json");
    let x = extract(&resource).unwrap();
    assert_eq!(x.values("_text").count(), 0);
    assert_eq!(x.values("_content").count(), 1);
    assert_eq!(
        narrative_text("<div><p>a&amp;b</p><p>c&#233;</p></div>"),
        "a&b cé"
    );
}

#[test]
fn canonical_and_uri_values() {
    let vs = json!({"resourceType": "ValueSet", "status": "active", "url": "http://example.org/ValueSet/v",
        "meta": {"profile": ["http://example.org/StructureDefinition/p|1.2"]},
        "compose": {"include": [{"system": "http://loinc.org"}, {"valueSet": ["http://example.org/ValueSet/w|2"]}]}});
    let x = extract(&vs).unwrap();
    let profile: Vec<&IndexValue<'_>> = x.values("_profile").collect();
    assert_eq!(
        profile,
        [&IndexValue::Uri(UriValue {
            uri: "http://example.org/StructureDefinition/p".into(),
            version: Some("1.2".into())
        })]
    );
    assert!(x
        .values("url")
        .any(|v| matches!(v, IndexValue::Uri(u) if u.uri == "http://example.org/ValueSet/v")));
    assert!(x
        .values("reference")
        .any(|v| matches!(v, IndexValue::Uri(u) if u.uri == "http://loinc.org")));

    // A canonical reference: URL, version and the type from the URL.
    let pd = json!({"resourceType": "PlanDefinition", "status": "active",
        "action": [{"definitionCanonical": "http://example.org/fhir/ActivityDefinition/ad1|3"}]});
    let x = extract(&pd).unwrap();
    let r = references(&x, "definition");
    assert_eq!(r[0].kind, ReferenceKind::Canonical);
    assert_eq!(
        (r[0].url.as_deref(), r[0].version.as_deref()),
        (
            Some("http://example.org/fhir/ActivityDefinition/ad1"),
            Some("3")
        )
    );
    assert_eq!(r[0].resource_type.as_deref(), Some("ActivityDefinition"));
}

#[test]
fn errors_only_for_non_resources() {
    assert_eq!(
        extract(&json!([1, 2])).unwrap_err(),
        ExtractError::NotAResource
    );
    assert_eq!(
        extract(&json!({"id": "x"})).unwrap_err(),
        ExtractError::NotAResource
    );
    assert_eq!(
        extract(&json!({"resourceType": "Nope"})).unwrap_err(),
        ExtractError::UnknownResourceType("Nope".into())
    );
    assert_eq!(
        extract(&json!({"resourceType": "DomainResource"})).unwrap_err(),
        ExtractError::UnknownResourceType("DomainResource".into())
    );
    // Odd but parseable content never fails: wrong JSON types are skipped.
    let odd = json!({"resourceType": "Observation", "status": 5, "code": "x", "subject": {"reference": 7},
        "effectiveDateTime": "yesterday", "valueQuantity": {"value": "12"}, "component": [null, {"code": []}]});
    let x = extract(&odd).unwrap();
    assert!(x.problems.is_empty(), "{:?}", x.problems);
}

#[test]
fn values_can_outlive_the_resource() {
    let owned: Vec<IndexValue<'static>> = {
        let obs = load("observation-example.json");
        let x = extract(&obs).unwrap();
        x.entries
            .into_iter()
            .map(|e| e.value.into_owned())
            .collect()
    };
    assert!(owned
        .iter()
        .any(|v| matches!(v, IndexValue::Token(t) if t.code.as_deref() == Some("29463-7"))));
}

// --- test resources --------------------------------------------------------------------

fn vital_signs() -> Value {
    json!({
        "resourceType": "Observation", "id": "bp-4711",
        "meta": {"lastUpdated": "2024-03-01T08:15:02.120Z", "profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]},
        "identifier": [{"system": "urn:vigil:device-reading", "value": "4711-20240301-0815"}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}], "text": "Blood pressure"},
        "subject": {"reference": "Patient/p-123"},
        "encounter": {"reference": "Encounter/e-9"},
        "effectiveDateTime": "2024-03-01T08:15:00+01:00",
        "performer": [{"reference": "Practitioner/pr-7"}],
        "device": {"reference": "Device/cuff-42"},
        "valueQuantity": {"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": {"value": 128, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
             "valueQuantity": {"value": 84, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
        ]
    })
}

fn with_contained_patient() -> Value {
    json!({"resourceType": "Observation", "id": "o1",
        "contained": [{"resourceType": "Patient", "id": "p1", "name": [{"family": "Contained"}]}],
        "status": "final", "code": {"text": "x"}, "subject": {"reference": "#p1"}})
}

fn references_of_all_kinds() -> Value {
    json!({"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "http://other.example/fhir/Patient/9/_history/3"},
        "basedOn": [{"reference": "ServiceRequest/sr1/_history/2"}],
        "performer": [{"type": "Practitioner", "identifier": {"system": "http://nppes.example", "value": "1234567890"}},
                      {"display": "a display alone is not indexed"}],
        "hasMember": [{"reference": "urn:uuid:8f3c2e1a-1111-4c2e-9a55-000000000001"}],
        "derivedFrom": [{"reference": "not a reference"}],
        "partOf": [{"reference": "Procedure?identifier=x"}]})
}

fn document_bundle() -> Value {
    json!({"resourceType": "Bundle", "id": "b1", "type": "document",
    "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"},
    "timestamp": "2024-03-01T09:00:00Z",
    "entry": [
        {"fullUrl": "http://vigil.example/fhir/Composition/c1",
         "resource": {"resourceType": "Composition", "id": "c1", "status": "final", "type": {"text": "Summary"},
                      "subject": {"reference": "Patient/p1"}, "date": "2024-03-01", "author": [{"reference": "Practitioner/x"}],
                      "title": "Summary"}},
        {"fullUrl": "http://vigil.example/fhir/Patient/p1",
         "resource": {"resourceType": "Patient", "id": "p1", "gender": "female", "name": [{"family": "Entry"}]}}
    ]})
}

/// Replace every value of one JSON kind throughout a resource (except `resourceType`).
fn mutate(v: &Value, how: usize) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        if k == "resourceType" {
                            v.clone()
                        } else {
                            mutate(v, how)
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(a) if how == 3 => a.first().map_or(Value::Null, |f| mutate(f, how)),
        Value::Array(a) => Value::Array(a.iter().map(|x| mutate(x, how)).collect()),
        Value::String(s) => match how {
            0 => json!(42),
            1 => json!(format!("{s}/_history/x|#?")),
            2 => json!(["a", {"b": s}]),
            _ => v.clone(),
        },
        Value::Number(_) if how == 1 => json!("1e999999"),
        Value::Bool(_) if how == 2 => json!({"value": true}),
        _ => v.clone(),
    }
}

#[test]
fn malformed_content_never_panics() {
    for (_, resource) in examples() {
        for how in 0..4 {
            let bad = mutate(&resource, how);
            // Ok or Err, with or without problems: but no panic.
            if let Ok(x) = extract(&bad) {
                let _ = x.entries.len();
            }
        }
    }
}

/// A union parameter's values are exactly its sources' values (without repeats), on the
/// official Observation examples and on ones whose code repeats as a component code:
/// what lets a store keep only the sources' rows.
#[test]
fn union_parameters_have_exactly_their_sources_values() {
    let registry = SearchRegistry::r4();
    let mut resources: Vec<(String, Value)> = examples()
        .into_iter()
        .filter(|(_, r)| r["resourceType"] == "Observation")
        .collect();
    assert!(resources.len() >= 2, "{}", resources.len());
    resources.push(("vital signs".into(), vital_signs()));
    let concept = |code: &str| json!({"coding": [{"system": "http://snomed.info/sct", "code": code}], "text": code});
    resources.push((
        "concepts and absent data".into(),
        json!({"resourceType": "Observation", "status": "final",
            "code": concept("363788007"),
            "valueCodeableConcept": concept("260385009"),
            "component": [
                {"code": concept("1"), "valueCodeableConcept": concept("2")},
                {"code": concept("3"), "dataAbsentReason": concept("asked-unknown")},
                {"code": concept("1"), "valueCodeableConcept": concept("2")}]}),
    ));
    resources.push((
        "absent value".into(),
        json!({"resourceType": "Observation", "status": "final",
            "code": concept("4"), "dataAbsentReason": concept("not-performed"),
            "component": [{"code": concept("4"), "dataAbsentReason": concept("not-performed")}]}),
    ));
    resources.push((
        "code repeated as component".into(),
        json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "valueQuantity": {"value": 60, "system": "http://unitsofmeasure.org", "code": "/min"},
            "component": [{
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "valueQuantity": {"value": 60, "system": "http://unitsofmeasure.org", "code": "/min"}}]}),
    ));
    let values = |x: &Extraction<'_, '_>, code: &str| -> Vec<String> {
        let mut v: Vec<String> = x
            .entries
            .iter()
            .filter(|e| e.param.code() == code)
            .map(|e| format!("{:?}", e.value))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let mut checked = 0;
    for (name, r) in &resources {
        let x = registry.extract(r).unwrap();
        for (code, sources) in registry.union_parameters() {
            let mut expected: Vec<String> = sources.iter().flat_map(|s| values(&x, s)).collect();
            expected.sort();
            expected.dedup();
            let own = values(&x, code);
            // Values are distinct per parameter, so no repeats to lose in the comparison.
            assert_eq!(
                x.entries.iter().filter(|e| e.param.code() == code).count(),
                own.len()
            );
            assert_eq!(own, expected, "{name}: {code}");
            checked += usize::from(!own.is_empty());
        }
    }
    assert!(checked >= 15, "{checked}");
}
