//! Search query parsing and the matching semantics, on the official examples.

use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::str::FromStr;
use vigil_fhir::search::matching::{clause_matches, resource_matches, value_matches};
use vigil_fhir::search::*;

fn load(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/fhir-r4-examples")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn parse(rt: &str, qs: &str) -> SearchQuery {
    SearchQuery::parse(Some(rt), qs, SearchRegistry::r4()).unwrap_or_else(|e| panic!("{qs}: {e}"))
}

fn parse_err(rt: &str, qs: &str) -> String {
    SearchQuery::parse(Some(rt), qs, SearchRegistry::r4())
        .expect_err(qs)
        .to_string()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Whether the resource matches the query's (unchained) clauses.
fn matches(resource: &Value, qs: &str) -> bool {
    let rt = resource["resourceType"].as_str().unwrap();
    let q = parse(rt, qs);
    let x = extract(resource).unwrap();
    let ctx = MatchContext {
        base_url: Some("http://vigil.example/fhir"),
        now: None,
    };
    resource_matches(&q, &x, &ctx).unwrap_or_else(|e| panic!("{qs}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Parsing

#[test]
fn parses_each_parameter_type() {
    let q = parse(
        "Observation",
        "code=http://loinc.org|29463-7&value-quantity=gt80|http://unitsofmeasure.org|kg\
         &date=ge2013-01-14T10:00&subject=Patient/example&status=final",
    );
    assert_eq!(q.clauses.len(), 5);
    let c = &q.clauses[0];
    assert_eq!(c.param.code, "code");
    assert_eq!(c.param.param_type, SearchParamType::Token);
    assert_eq!(
        c.values,
        vec![SearchValue::Token(TokenQuery {
            system: TokenSystem::Is("http://loinc.org".into()),
            code: Some("29463-7".into()),
        })]
    );
    let SearchValue::Quantity(v) = &q.clauses[1].values[0] else {
        panic!()
    };
    assert_eq!(v.number.prefix, Prefix::Gt);
    assert_eq!(v.number.value, dec("80"));
    assert_eq!(v.system.as_deref(), Some("http://unitsofmeasure.org"));
    assert_eq!(v.code.as_deref(), Some("kg"));
    let SearchValue::Date(d) = &q.clauses[2].values[0] else {
        panic!()
    };
    assert_eq!(d.prefix, Prefix::Ge);
    // No timezone: UTC; minute precision covers the minute.
    let start = DateValue::from_fhir("2013-01-14T10:00:00Z")
        .unwrap()
        .low
        .unwrap();
    assert_eq!(d.range.low, Some(start));
    assert_eq!(d.range.high, Some(start + 59_999));
    let SearchValue::Reference(r) = &q.clauses[3].values[0] else {
        panic!()
    };
    assert_eq!(r.kind, ReferenceQueryKind::Local);
    assert_eq!(
        (r.resource_type.as_deref(), r.id.as_deref()),
        (Some("Patient"), Some("example"))
    );

    // number, string, uri, composite
    let q = parse("RiskAssessment", "probability=0.8");
    let SearchValue::Number(n) = &q.clauses[0].values[0] else {
        panic!()
    };
    assert_eq!((n.low, n.high), (dec("0.75"), dec("0.85")));
    let q = parse("Patient", "name=Peter&family:exact=Chalmers");
    assert_eq!(
        q.clauses[0].values,
        vec![SearchValue::String("Peter".into())]
    );
    assert_eq!(q.clauses[1].modifier, Some(Modifier::Exact));
    let q = parse("ValueSet", "url=http://hl7.org/fhir/ValueSet/example");
    assert_eq!(
        q.clauses[0].values,
        vec![SearchValue::Uri(
            "http://hl7.org/fhir/ValueSet/example".into()
        )]
    );
    let q = parse(
        "Observation",
        "code-value-quantity=http://loinc.org|8480-6$lt60",
    );
    let SearchValue::Composite(parts) = &q.clauses[0].values[0] else {
        panic!()
    };
    assert!(matches!(&parts[0], SearchValue::Token(_)));
    assert!(matches!(&parts[1], SearchValue::Quantity(q) if q.number.prefix == Prefix::Lt));
    let q = parse("Patient", "_text=cough&_content=chalmers");
    assert!(matches!(&q.clauses[0].values[0], SearchValue::FullText(_)));
}

#[test]
fn parses_common_parameters() {
    let q = parse(
        "Patient",
        "_id=example&_lastUpdated=gt2020&_tag=http://x|y&_profile=http://p&_security=R&_source=http://s",
    );
    let types: Vec<_> = q.clauses.iter().map(|c| c.param.param_type).collect();
    assert_eq!(
        types,
        vec![
            SearchParamType::Token,
            SearchParamType::Date,
            SearchParamType::Token,
            SearchParamType::Uri,
            SearchParamType::Token,
            SearchParamType::Uri,
        ]
    );
    // System-level search resolves the common parameters.
    let q = SearchQuery::parse(None, "_id=1&_lastUpdated=2020", SearchRegistry::r4()).unwrap();
    assert_eq!(q.clauses.len(), 2);
    let q = SearchQuery::parse(
        None,
        "_type=Patient,Practitioner&name=x",
        SearchRegistry::r4(),
    )
    .unwrap();
    assert_eq!(q.types, vec!["Patient", "Practitioner"]);
    assert_eq!(q.clauses[0].param.param_type, SearchParamType::String);
}

#[test]
fn prefixes_and_precision() {
    for (p, prefix) in [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ] {
        let q = parse("Patient", &format!("birthdate={p}2013"));
        let SearchValue::Date(d) = &q.clauses[0].values[0] else {
            panic!()
        };
        assert_eq!(d.prefix, prefix);
        assert_eq!(d.text, "2013");
    }
    let q = parse("Patient", "birthdate=2013");
    let SearchValue::Date(d) = &q.clauses[0].values[0] else {
        panic!()
    };
    assert_eq!(d.range, DateValue::from_fhir("2013").unwrap());
    // Timezones, a `+` that arrived as a space, and an encoded `+`.
    for qs in [
        "birthdate=2013-01-14T10:00%2B10:00",
        "birthdate=2013-01-14T10:00+10:00",
    ] {
        let q = parse("Patient", qs);
        let SearchValue::Date(d) = &q.clauses[0].values[0] else {
            panic!()
        };
        assert_eq!(d.text, "2013-01-14T10:00+10:00");
        assert_eq!(
            d.range.low,
            DateValue::from_fhir("2013-01-14T00:00:00Z").unwrap().low
        );
    }
    // Exponents: precision from the mantissa.
    let q = parse("RiskAssessment", "probability=1e2");
    let SearchValue::Number(n) = &q.clauses[0].values[0] else {
        panic!()
    };
    assert_eq!(
        (n.value, n.low, n.high),
        (dec("100"), dec("95"), dec("105"))
    );
    let q = parse("RiskAssessment", "probability=100.00");
    let SearchValue::Number(n) = &q.clauses[0].values[0] else {
        panic!()
    };
    assert_eq!((n.low, n.high), (dec("99.995"), dec("100.005")));
}

#[test]
fn tokens_distinguish_absent_and_empty_system() {
    let tok = |qs: &str| {
        let q = parse("Patient", qs);
        match &q.clauses[0].values[0] {
            SearchValue::Token(t) => t.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(tok("gender=male").system, TokenSystem::Any);
    assert_eq!(tok("gender=|male").system, TokenSystem::NoSystem);
    let t = tok("identifier=urn:oid:1.2|");
    assert_eq!(t.system, TokenSystem::Is("urn:oid:1.2".into()));
    assert_eq!(t.code, None);
    assert!(parse_err("Patient", "gender=|").contains("empty token"));
    assert!(parse_err("Patient", "gender=a|b|c").contains("`gender`"));
}

#[test]
fn or_and_escaping() {
    let q = parse("Patient", "gender=male,female&gender=other");
    assert_eq!(q.clauses.len(), 2, "repeated parameters are AND-ed");
    assert_eq!(q.clauses[0].values.len(), 2, "commas are OR-ed");
    let q = parse("Patient", r"name=Smith\,John,Doe");
    assert_eq!(
        q.clauses[0].values,
        vec![
            SearchValue::String("Smith,John".into()),
            SearchValue::String("Doe".into())
        ]
    );
    let q = parse("Patient", r"identifier=http://a\|b|x\$y\\z");
    assert_eq!(
        q.clauses[0].values,
        vec![SearchValue::Token(TokenQuery {
            system: TokenSystem::Is("http://a|b".into()),
            code: Some(r"x$y\z".into()),
        })]
    );
    // Percent-encoded separators are separators; empty values are ignored.
    let q = parse("Patient", "gender=male%2Cfemale&name=&family=,x,");
    assert_eq!(q.clauses.len(), 2);
    assert_eq!(q.clauses[0].values.len(), 2);
    assert_eq!(q.clauses[1].values, vec![SearchValue::String("x".into())]);
    // `+` is a space (form encoding), `%2B` a plus.
    let q = parse("Patient", "name=van+der%2B");
    assert_eq!(
        q.clauses[0].values,
        vec![SearchValue::String("van der+".into())]
    );
    // Form bodies and decoded pairs.
    let f = SearchQuery::parse_form(Some("Patient"), "name=a+b", SearchRegistry::r4()).unwrap();
    let p =
        SearchQuery::from_pairs(Some("Patient"), &[("name", "a b")], SearchRegistry::r4()).unwrap();
    assert_eq!(f, p);
    assert!(matches!(
        SearchQuery::parse(Some("Patient"), "name=%zz", SearchRegistry::r4()),
        Err(QueryError::Encoding(_))
    ));
}

#[test]
fn modifiers() {
    let m = |qs: &str| parse("Patient", qs).clauses[0].modifier.clone();
    assert_eq!(m("name:contains=eve"), Some(Modifier::Contains));
    assert_eq!(m("gender:not=male"), Some(Modifier::Not));
    assert_eq!(m("gender:missing=true"), Some(Modifier::Missing));
    assert_eq!(m("language:text=dutch"), Some(Modifier::Text));
    assert_eq!(
        m("language:in=http://hl7.org/fhir/ValueSet/languages"),
        Some(Modifier::In)
    );
    assert_eq!(m("language:not-in=http://x"), Some(Modifier::NotIn));
    assert_eq!(m("language:below=http://x|y"), Some(Modifier::Below));
    assert_eq!(
        m("identifier:of-type=http://t|MR|1"),
        Some(Modifier::OfType)
    );
    assert_eq!(
        m("general-practitioner:Practitioner=1"),
        Some(Modifier::Type("Practitioner".into()))
    );
    assert_eq!(
        m("organization:identifier=http://x|1"),
        Some(Modifier::Identifier)
    );
    let q = parse("Patient", "general-practitioner:Practitioner=1");
    let SearchValue::Reference(r) = &q.clauses[0].values[0] else {
        panic!()
    };
    assert_eq!(r.resource_type.as_deref(), Some("Practitioner"));
    let q = parse("Patient", "organization:identifier=http://x|1");
    assert!(matches!(q.clauses[0].values[0], SearchValue::Token(_)));
    let q = parse("ValueSet", "url:below=http://hl7.org/fhir");
    assert_eq!(q.clauses[0].modifier, Some(Modifier::Below));
    assert!(parse_err("Patient", "gender:missing=maybe").contains("true or false"));
    assert!(parse_err("Patient", "identifier:of-type=a|b").contains("[identifier value]"));
}

#[test]
fn references() {
    let r = |qs: &str| {
        let q = parse("Observation", qs);
        match &q.clauses[0].values[0] {
            SearchValue::Reference(r) => r.clone(),
            other => panic!("{other:?}"),
        }
    };
    let x = r("subject=23");
    assert_eq!(
        (x.kind, x.id.as_deref()),
        (ReferenceQueryKind::Id, Some("23"))
    );
    let x = r("subject=Patient/23/_history/2");
    assert_eq!(x.version.as_deref(), Some("2"));
    let x = r("subject=http://other.org/fhir/Patient/23");
    assert_eq!(x.kind, ReferenceQueryKind::Absolute);
    assert_eq!(x.base_url.as_deref(), Some("http://other.org/fhir"));
    assert_eq!(x.resource_type.as_deref(), Some("Patient"));
    let q = parse(
        "PlanDefinition",
        "definition=http://example.org/fhir/ActivityDefinition/x|1.0",
    );
    let SearchValue::Reference(x) = &q.clauses[0].values[0] else {
        panic!()
    };
    assert_eq!(x.kind, ReferenceQueryKind::Canonical);
    assert_eq!(x.version.as_deref(), Some("1.0"));
    assert!(parse_err("Observation", "subject=Nonsense/1/2").contains("reference"));
    assert!(parse_err("Observation", "subject:Patient=Group/1").contains("Group"));
}

#[test]
fn chains_and_reverse_chains() {
    let q = parse("Observation", "subject:Patient.name=peter");
    let c = &q.clauses[0];
    assert!(c.is_chained());
    assert_eq!(c.param.code, "name");
    let Hop::Chain {
        param,
        type_modifier,
        target_types,
    } = &c.hops[0]
    else {
        panic!()
    };
    assert_eq!(param.code, "subject");
    assert_eq!(type_modifier.as_deref(), Some("Patient"));
    assert_eq!(target_types, &vec!["Patient".to_string()]);
    assert_eq!(c.name(), "subject:Patient.name");

    // Without a type: the targets that define the next parameter.
    let q = parse("Observation", "subject.organization.name:exact=Acme");
    let c = &q.clauses[0];
    assert_eq!(c.hops.len(), 2);
    let Hop::Chain { target_types, .. } = &c.hops[0] else {
        panic!()
    };
    assert!(target_types.contains(&"Patient".to_string()));
    assert!(target_types.contains(&"Device".to_string()));
    assert!(
        !target_types.contains(&"Group".to_string()),
        "Group has no organization"
    );
    assert_eq!(c.modifier, Some(Modifier::Exact));

    let q = parse("Patient", "_has:Observation:patient:code=1234-5");
    let c = &q.clauses[0];
    let [Hop::Has {
        resource_type,
        param,
    }] = c.hops.as_slice()
    else {
        panic!("{:?}", c.hops)
    };
    assert_eq!(
        (resource_type.as_str(), param.code.as_str()),
        ("Observation", "patient")
    );
    assert_eq!(c.param.code, "code");
    assert_eq!(c.name(), "_has:Observation:patient:code");
    // Nested.
    let q = parse(
        "Patient",
        "_has:Observation:patient:_has:AuditEvent:entity:agent=MyUserId",
    );
    assert_eq!(q.clauses[0].hops.len(), 2);
    assert_eq!(q.clauses[0].param.code, "agent");

    assert!(parse_err("Observation", "status.name=x").contains("not a reference"));
    assert!(parse_err("Patient", "_has:Observation:patient").contains("_has:"));
    assert!(parse_err("Patient", "_has:Observation:code:status=x").contains("not a reference"));
}

#[test]
fn result_parameters() {
    let q = parse(
        "Observation",
        "_sort=-date,status&_count=10&_total=accurate&_summary=count&_elements=status,code\
         &_include=Observation:subject:Patient&_include:iterate=Patient:organization\
         &_revinclude=Provenance:target&_include=*&_contained=both&_containedType=contained\
         &_cursor=abc123&_format=json",
    );
    assert_eq!(q.sort.len(), 2);
    assert!(q.sort[0].descending && q.sort[0].param.code == "date");
    assert!(!q.sort[1].descending);
    assert_eq!(q.count, Some(10));
    assert_eq!(q.total, Some(TotalMode::Accurate));
    assert_eq!(q.summary, Some(SummaryMode::Count));
    assert_eq!(q.elements, vec!["status", "code"]);
    assert_eq!(
        q.include[0],
        Include {
            source_type: "Observation".into(),
            param: Some("subject".into()),
            target_type: Some("Patient".into()),
            iterate: false
        }
    );
    assert!(q.include[1].iterate);
    assert_eq!(q.include[2].source_type, "*");
    assert_eq!(q.revinclude[0].param.as_deref(), Some("target"));
    assert_eq!(q.contained, Some(ContainedMode::Both));
    assert_eq!(q.contained_type, Some(ContainedType::Contained));
    assert_eq!(q.cursor.as_deref(), Some("abc123"));
    assert!(q.unknown.is_empty());
    let q = parse("Patient", "_include:recurse=Patient:link");
    assert!(q.include[0].iterate);

    assert!(parse_err("Patient", "_sort=nonsense").contains("nonsense"));
    assert!(parse_err("Patient", "_count=-1").contains("_count"));
    assert!(parse_err("Patient", "_count=1&_count=2").contains("more than once"));
    assert!(parse_err("Patient", "_total=all").contains("accurate"));
    assert!(parse_err("Patient", "_summary=yes").contains("_summary"));
}

#[test]
fn errors_name_parameter_and_value() {
    let e = parse_err("Patient", "birthdate=2013-13");
    assert!(
        e.contains("`birthdate`") && e.contains("`2013-13`") && e.contains("not a date"),
        "{e}"
    );
    let e = parse_err("Patient", "birthdate=xx2013");
    assert!(e.contains("unknown prefix `xx`"), "{e}");
    let e = parse_err("RiskAssessment", "probability=gtabc");
    assert!(e.contains("not a number"), "{e}");
    let e = parse_err("Observation", "value-quantity=5|kg");
    assert!(e.contains("value-quantity"), "{e}");
    let e = parse_err("Observation", "code-value-quantity=a");
    assert!(e.contains("2 `$`-separated"), "{e}");
    assert!(matches!(
        SearchQuery::parse(Some("Nope"), "", SearchRegistry::r4()),
        Err(QueryError::UnknownResourceType(_))
    ));
}

#[test]
fn unknown_parameters_are_collected() {
    let q = parse(
        "Patient",
        "nonsense=1&gender:exact=male&name:below=x&_query=q&birthdate:Patient=1&gender=male",
    );
    assert_eq!(q.clauses.len(), 1);
    let names: Vec<&str> = q.unknown.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "nonsense",
            "gender:exact",
            "name:below",
            "_query",
            "birthdate:Patient"
        ]
    );
    assert!(q.unknown[1].1.contains("not supported on token"));
    let strict = q.strict_errors().unwrap().to_string();
    assert!(
        strict.contains("nonsense") && strict.contains("gender:exact"),
        "{strict}"
    );
    assert!(parse("Patient", "gender=male").strict_errors().is_none());
    // Unknown _include targets are collected too.
    let q = parse("Patient", "_include=Patient:nonsense");
    assert_eq!(q.unknown.len(), 1);
}

#[test]
fn round_trips_through_query_string() {
    for qs in [
        "code=http://loinc.org|29463-7,|x,http://s|&value-quantity=gt80|http://unitsofmeasure.org|kg",
        "date=ge2013-01-14T10:00%2B10:00&date=lt2014&subject:Patient.name:exact=Peter%20J",
        r"combo-code=a\,b\|c&code-value-quantity=http://loinc.org|8480-6$lt60||mm[Hg]",
        "_has:Observation:has-member:status=final",
        "subject=http://other.org/fhir/Patient/1/_history/2,Patient/3,4&focus:missing=true",
        "_sort=-date,status&_count=5&_total=none&_summary=data&_elements=code\
         &_include:iterate=Observation:subject&_revinclude=*&_contained=true\
         &_containedType=container&_format=json&_cursor=x+y",
        "value-quantity=ap1e2&code:not=a&code:text=Body%20weight&code:in=http://vs",
    ] {
        let q = parse("Observation", qs);
        assert!(q.unknown.is_empty(), "{qs}: {:?}", q.unknown);
        let s = q.to_query_string();
        let again = parse("Observation", &s);
        assert_eq!(again, q, "{qs} → {s}");
        assert_eq!(again.to_query_string(), s);
    }
    let q = parse("Observation", "date=eq2013&value-quantity=eq5");
    assert_eq!(q.to_query_string(), "date=2013&value-quantity=5");
    // `%2C` is a separator once decoded; an escaped comma stays escaped.
    let q = parse("Patient", r"name=a%2Cb,c\\d&family=x\,y");
    assert_eq!(q.to_query_string(), r"name=a,b,c%5C%5Cd&family=x%5C,y");
}

// ---------------------------------------------------------------------------------------
// Matching on the official examples

#[test]
fn observation_example() {
    let obs = load("observation-example.json");
    assert!(matches(&obs, "code=http://loinc.org|29463-7"));
    assert!(matches(&obs, "code=29463-7"));
    assert!(!matches(&obs, "code=|29463-7"));
    assert!(matches(&obs, "code=http://loinc.org|"));
    assert!(!matches(&obs, "code=http://snomed.info/sct|29463-7"));
    assert!(matches(&obs, "code:not=1234-5"));
    assert!(!matches(&obs, "code:not=29463-7"));
    assert!(!matches(&obs, "code:not=1234-5,29463-7"));
    assert!(matches(&obs, "code:text=body wei"));
    // 185 [lb_av] = 83.9 kg
    assert!(matches(
        &obs,
        "value-quantity=gt80|http://unitsofmeasure.org|kg"
    ));
    assert!(!matches(
        &obs,
        "value-quantity=gt90|http://unitsofmeasure.org|kg"
    ));
    assert!(matches(
        &obs,
        "value-quantity=ap84|http://unitsofmeasure.org|kg"
    ));
    assert!(matches(
        &obs,
        "value-quantity=185|http://unitsofmeasure.org|[lb_av]"
    ));
    assert!(matches(&obs, "value-quantity=185||[lb_av]"));
    assert!(matches(&obs, "value-quantity=185||lbs"));
    assert!(matches(&obs, "value-quantity=185"));
    assert!(!matches(
        &obs,
        "value-quantity=185|http://unitsofmeasure.org|m"
    ));
    assert!(!matches(&obs, "value-quantity=185||kg"));
    assert!(matches(&obs, "date=2016"));
    assert!(matches(&obs, "date=2016-03-28"));
    assert!(!matches(&obs, "date=lt2016-03-28"));
    assert!(matches(&obs, "date=le2016-03-28"));
    assert!(!matches(&obs, "date=2016-03-28T10:00"));
    assert!(matches(&obs, "date=sa2016-03-27&date=eb2016-03-29"));
    assert!(!matches(&obs, "date=sa2016-03-28"));
    assert!(matches(&obs, "subject=Patient/example"));
    assert!(matches(&obs, "subject=example"));
    assert!(matches(&obs, "subject:Patient=example"));
    assert!(!matches(&obs, "subject:Group=example"));
    assert!(matches(
        &obs,
        "subject=http://vigil.example/fhir/Patient/example"
    ));
    assert!(!matches(
        &obs,
        "subject=http://other.example/fhir/Patient/example"
    ));
    assert!(matches(&obs, "subject:missing=false&focus:missing=true"));
    assert!(matches(&obs, "status=final&_id=example"));
    assert!(matches(
        &obs,
        "code-value-quantity=http://loinc.org|29463-7$gt180"
    ));
    assert!(!matches(
        &obs,
        "code-value-quantity=http://loinc.org|29463-7$lt180"
    ));
    // Chained clauses are left to the caller.
    assert!(matches(&obs, "subject:Patient.name=nobody"));
}

#[test]
fn patient_example() {
    let p = load("patient-example.json");
    assert!(matches(&p, "name=peter"));
    assert!(matches(&p, "name=PET"));
    assert!(!matches(&p, "name=eter"));
    assert!(matches(&p, "name:exact=Peter"));
    assert!(!matches(&p, "name:exact=peter"));
    assert!(matches(&p, "family:contains=halm"));
    assert!(matches(&p, "family=chalmers,nobody"));
    assert!(!matches(&p, "family=nobody"));
    assert!(matches(&p, "birthdate=1974-12"));
    assert!(matches(&p, "birthdate=1974"));
    assert!(!matches(&p, "birthdate=1974-11"));
    assert!(matches(&p, "birthdate=gt1974-12-24&birthdate=lt1974-12-26"));
    assert!(matches(&p, "birthdate=ge1974-12-25&birthdate=le1974-12-25"));
    assert!(!matches(&p, "birthdate=ne1974-12-25"));
    assert!(matches(&p, "gender=male"));
    assert!(!matches(&p, "gender=female"));
    assert!(matches(&p, "gender:not=female"));
    assert!(matches(
        &p,
        "identifier=urn:oid:1.2.36.146.595.217.0.1|12345"
    ));
    assert!(matches(&p, "identifier=12345"));
    assert!(!matches(
        &p,
        "identifier=urn:oid:1.2.36.146.595.217.0.1|54321"
    ));
    assert!(matches(
        &p,
        "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345"
    ));
    assert!(!matches(
        &p,
        "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|SS|12345"
    ));
    assert!(matches(&p, "_id=example"));
    assert!(!matches(&p, "_id=other"));
    assert!(matches(&p, "organization=Organization/1"));
    assert!(matches(&p, "_content=chalmers peter"));
}

#[test]
fn date_prefixes_at_precision_edges() {
    let p = json!({"resourceType": "Patient", "birthDate": "2013-06-15"});
    let m = |qs: &str| matches(&p, qs);
    assert!(m("birthdate=2013") && m("birthdate=2013-06") && m("birthdate=2013-06-15"));
    assert!(
        !m("birthdate=2013-06-15T10:00Z"),
        "a day is not within an hour"
    );
    assert!(m("birthdate=ne2013-07"));
    assert!(m("birthdate=gt2013-06-14") && !m("birthdate=gt2013-06-15"));
    assert!(m("birthdate=lt2013-06-16") && !m("birthdate=lt2013-06-15"));
    // The day extends past the start of noon: gt and lt both hold at a finer precision.
    assert!(m("birthdate=gt2013-06-15T12:00Z") && m("birthdate=lt2013-06-15T12:00Z"));
    assert!(m("birthdate=ge2013-06-15") && m("birthdate=le2013-06-15"));
    assert!(m("birthdate=sa2013-06-14") && !m("birthdate=sa2013-06"));
    assert!(m("birthdate=eb2013-07") && !m("birthdate=eb2013-06"));
    assert!(m("birthdate=ap2013-06-15") && !m("birthdate=ap2013-06-16"));
    // A period with an open end.
    let e = json!({"resourceType": "Encounter", "status": "in-progress", "class": {"code": "x"},
        "period": {"start": "2020-01-01T10:00:00Z"}});
    assert!(matches(&e, "date=gt2030"));
    assert!(
        !matches(&e, "date=2020"),
        "an open period is not within a year"
    );
    assert!(!matches(&e, "date=sa2030"));
    assert!(matches(&e, "date=sa2019"));
    // ap on dates widens by 10% of the distance to now.
    let ctx = MatchContext {
        base_url: None,
        now: DateValue::from_fhir("2023-01-01").unwrap().low,
    };
    let q = parse("Patient", "birthdate=ap2014");
    let x = extract(&p).unwrap();
    assert!(resource_matches(&q, &x, &ctx).unwrap());
    assert!(!resource_matches(&q, &x, &MatchContext::default()).unwrap());
}

#[test]
fn number_prefixes_at_precision_edges() {
    let n = |v: &str| IndexValue::Number(NumberValue::exact(dec(v)));
    let check = |qs: &str, v: &str| {
        let q = parse("RiskAssessment", qs);
        let c = &q.clauses[0];
        clause_matches(c, &[&n(v)], &MatchContext::default()).unwrap()
    };
    assert!(check("probability=100", "99.5") && check("probability=100", "100.5"));
    assert!(!check("probability=100", "100.6") && !check("probability=100", "99.4"));
    assert!(!check("probability=100.00", "100.01") && check("probability=100.00", "100.004"));
    assert!(check("probability=1e2", "104") && !check("probability=1e2", "106"));
    assert!(check("probability=ne100", "101") && !check("probability=ne100", "100.2"));
    // Precision is ignored for the order prefixes.
    assert!(check("probability=gt100", "100.1") && !check("probability=gt100", "100"));
    assert!(check("probability=ge100", "100") && !check("probability=ge100", "99.9"));
    assert!(check("probability=lt100", "99.9") && !check("probability=lt100", "100"));
    assert!(check("probability=le100", "100") && !check("probability=le100", "100.1"));
    assert!(check("probability=sa100", "100.1") && !check("probability=sa100", "100"));
    assert!(check("probability=eb100", "99.9") && !check("probability=eb100", "100"));
    assert!(check("probability=ap100", "110") && !check("probability=ap100", "111"));
    assert!(check("probability=ap100", "90") && !check("probability=ap100", "89"));
    assert!(check("probability=ap0", "0.4"));
    // Ranges: a Range [5, 10].
    let range = IndexValue::Number(NumberValue {
        value: None,
        low: Some(dec("5")),
        high: Some(dec("10")),
    });
    let q = |qs: &str| parse("RiskAssessment", qs).clauses[0].clone();
    let r = |qs: &str| clause_matches(&q(qs), &[&range], &MatchContext::default()).unwrap();
    assert!(r("probability=gt9") && r("probability=lt6") && !r("probability=gt10"));
    assert!(r("probability=sa4") && !r("probability=sa5") && r("probability=eb11"));
    assert!(r("probability=ap11") && !r("probability=ap12"));
    assert!(!r("probability=7"), "a range is not within 7's precision");
}

#[test]
fn references_tokens_uris_and_terminology() {
    let ctx = MatchContext {
        base_url: Some("http://vigil.example/fhir"),
        now: None,
    };
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "http://vigil.example/fhir/Patient/7/_history/3"},
        "performer": [{"reference": "http://elsewhere.org/fhir/Practitioner/9"},
                      {"identifier": {"system": "http://npi", "value": "123"}},
                      {"reference": "#c1"}],
        "contained": [{"resourceType": "Practitioner", "id": "c1"}]});
    let x = extract(&obs).unwrap();
    let m = |qs: &str| resource_matches(&parse("Observation", qs), &x, &ctx).unwrap();
    assert!(m("subject=Patient/7") && m("subject=7") && m("subject=Patient/7/_history/3"));
    assert!(!m("subject=Patient/7/_history/2"));
    assert!(m("subject=http://vigil.example/fhir/Patient/7"));
    assert!(m("performer=http://elsewhere.org/fhir/Practitioner/9"));
    assert!(
        !m("performer=9"),
        "an id alone only matches this server's references"
    );
    assert!(
        !m("performer=c1"),
        "contained references are not searchable by id"
    );
    assert!(m("performer:identifier=http://npi|123") && !m("performer:identifier=http://npi|1"));
    assert!(m("code:text=x"));

    // Terminology-dependent modifiers are reported, not guessed.
    let q = parse("Observation", "code:in=http://vs");
    assert!(matches!(
        resource_matches(&q, &x, &ctx),
        Err(MatchError::Clause { .. })
    ));
    let q = parse("Observation", "code:below=http://loinc.org|1");
    assert!(value_matches(
        &q.clauses[0].values[0],
        q.clauses[0].modifier.as_ref(),
        &[],
        &ctx
    )
    .is_err());

    let vs = load("valueset-example.json");
    let url = vs["url"].as_str().unwrap().to_string();
    let v = vs["version"].as_str().unwrap_or("").to_string();
    let xs = extract(&vs).unwrap();
    let m = |qs: &str| resource_matches(&parse("ValueSet", qs), &xs, &ctx).unwrap();
    assert!(m(&format!("url={url}")));
    assert!(m("url:below=http://hl7.org/fhir/ValueSet/"));
    assert!(!m("url:below=http://other.org/"));
    assert!(m(&format!("url:above={url}/sub/path")));
    assert!(!m("url=http://hl7.org/fhir/ValueSet/other"));
    if !v.is_empty() {
        assert!(m(&format!("version={v}")));
    }
}

#[test]
fn quantity_canonical_and_comparators() {
    let ctx = MatchContext::default();
    let o = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "valueQuantity": {"value": 5.4, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}});
    let x = extract(&o).unwrap();
    let m = |qs: &str| resource_matches(&parse("Observation", qs), &x, &ctx).unwrap();
    assert!(m("value-quantity=0.0054|http://unitsofmeasure.org|g"));
    assert!(m("value-quantity=5.4|http://unitsofmeasure.org|mg"));
    assert!(m("value-quantity=5400|http://unitsofmeasure.org|ug"));
    assert!(!m("value-quantity=5.4|http://unitsofmeasure.org|mL"));
    assert!(m("value-quantity=lt1|http://unitsofmeasure.org|g"));
    let o = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "valueQuantity": {"value": 5, "comparator": "<", "system": "http://unitsofmeasure.org", "code": "mg"}});
    let x = extract(&o).unwrap();
    let m = |qs: &str| resource_matches(&parse("Observation", qs), &x, &ctx).unwrap();
    assert!(m("value-quantity=lt3|http://unitsofmeasure.org|mg"));
    assert!(!m("value-quantity=gt6|http://unitsofmeasure.org|mg"));
    assert!(
        !m("value-quantity=5|http://unitsofmeasure.org|mg"),
        "<5 is not within 5"
    );
}
