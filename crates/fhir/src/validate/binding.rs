//! Required bindings: coded values must come from the bound value set (when the model could
//! expand it).

use serde_json::{Map, Value};
use std::collections::HashMap;

/// An expanded value set: codes by code system.
type ValueSet = HashMap<String, Vec<String>>;

/// Whether any system of the value set has the code (for `code` elements, which carry no
/// system).
pub(crate) fn contains_code(vs: &ValueSet, code: &str) -> bool {
    vs.values().any(|codes| codes.iter().any(|c| c == code))
}

pub(crate) fn not_in_value_set(code: &str, system: Option<&str>, url: &str) -> String {
    let code: String = code.chars().take(64).collect();
    match system {
        Some(s) => {
            format!("The code '{s}#{code}' is not in the value set {url} (required binding)")
        }
        None => format!("The code '{code}' is not in the value set {url} (required binding)"),
    }
}

enum Status<'a> {
    Match,
    NoCode,
    OtherSystem(&'a str),
    WrongCode(Option<&'a str>, &'a str),
}

fn coding_status<'a>(coding: &'a Map<String, Value>, vs: &ValueSet) -> Status<'a> {
    let Some(code) = coding.get("code").and_then(Value::as_str) else {
        return Status::NoCode;
    };
    match coding.get("system").and_then(Value::as_str) {
        Some(system) => match vs.get(system) {
            Some(codes) if codes.iter().any(|c| c == code) => Status::Match,
            Some(_) => Status::WrongCode(Some(system), code),
            None => Status::OtherSystem(system),
        },
        None if contains_code(vs, code) => Status::Match,
        None => Status::WrongCode(None, code),
    }
}

/// Check a Coding or CodeableConcept against a required value set. Returns the problems as
/// (path suffix relative to the element, message).
pub(crate) fn check_complex(
    ty: &str,
    obj: &Map<String, Value>,
    url: &str,
    vs: &ValueSet,
) -> Vec<(String, String)> {
    match ty {
        "Coding" => match coding_status(obj, vs) {
            Status::Match | Status::NoCode => Vec::new(),
            Status::WrongCode(system, code) => {
                vec![(String::new(), not_in_value_set(code, system, url))]
            }
            Status::OtherSystem(system) => vec![(String::new(), other_system(system, url))],
        },
        "CodeableConcept" => {
            let codings: &[Value] = match obj.get("coding") {
                Some(Value::Array(a)) => a,
                Some(_) => return Vec::new(), // a structure error, reported already
                None if obj.contains_key("text") => {
                    let msg = format!("No coding from the value set {url} (required binding); text alone is not enough");
                    return vec![(String::new(), msg)];
                }
                None => return Vec::new(), // only extensions (e.g. data-absent-reason)
            };
            let mut out = Vec::new();
            let mut matched = false;
            let mut systems = Vec::new();
            for (i, c) in codings.iter().enumerate() {
                let Some(c) = c.as_object() else { continue };
                match coding_status(c, vs) {
                    Status::Match => matched = true,
                    Status::WrongCode(system, code) => {
                        out.push((format!(".coding[{i}]"), not_in_value_set(code, system, url)));
                    }
                    Status::OtherSystem(system) => systems.push(system),
                    Status::NoCode => {}
                }
            }
            if !matched && out.is_empty() {
                let msg = if systems.is_empty() {
                    format!("No coding from the value set {url} (required binding)")
                } else {
                    format!(
                        "None of the codings is from the value set {url} (required binding); found only system(s) {}",
                        systems.join(", ")
                    )
                };
                out.push((String::new(), msg));
            }
            out
        }
        _ => Vec::new(),
    }
}

fn other_system(system: &str, url: &str) -> String {
    format!("The code system '{system}' is not part of the value set {url} (required binding)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vs() -> ValueSet {
        HashMap::from([(
            "http://s".to_string(),
            vec!["a".to_string(), "b".to_string()],
        )])
    }

    fn check(ty: &str, v: Value) -> Vec<(String, String)> {
        let Value::Object(o) = v else {
            return vec![("not an object".into(), String::new())];
        };
        check_complex(ty, &o, "http://vs", &vs())
    }

    #[test]
    fn coding() {
        assert!(check("Coding", json!({"system": "http://s", "code": "a"})).is_empty());
        assert!(check("Coding", json!({"code": "b"})).is_empty());
        assert!(check("Coding", json!({"display": "no code"})).is_empty());
        assert_eq!(
            check("Coding", json!({"system": "http://s", "code": "c"})).len(),
            1
        );
        let other = check("Coding", json!({"system": "http://other", "code": "a"}));
        assert!(other[0].1.contains("http://other"), "{other:?}");
    }

    #[test]
    fn codeable_concept() {
        let ok = json!({"coding": [{"system": "http://other", "code": "x"}, {"system": "http://s", "code": "a"}]});
        assert!(check("CodeableConcept", ok).is_empty());
        let bad = check(
            "CodeableConcept",
            json!({"coding": [{"system": "http://s", "code": "c"}]}),
        );
        assert_eq!(bad[0].0, ".coding[0]");
        assert_eq!(
            check(
                "CodeableConcept",
                json!({"coding": [{"system": "http://other", "code": "a"}]})
            )
            .len(),
            1
        );
        assert_eq!(
            check("CodeableConcept", json!({"text": "free text"})).len(),
            1
        );
        assert!(check(
            "CodeableConcept",
            json!({"extension": [{"url": "u", "valueCode": "unknown"}]})
        )
        .is_empty());
    }
}
