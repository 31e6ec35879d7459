//! `_summary` and `_elements`: reduced forms of a resource, tagged SUBSETTED.
//!
//! Only top-level elements are filtered (nested elements are kept whole): the result is
//! a superset of what the specification's summary view lists, never less.

use serde_json::{json, Map, Value};
use vigil_fhir::search::SummaryMode;
use vigil_fhir_model::Model;

/// Decides whether to keep an element: (name, is a summary element, is mandatory).
type KeepFn<'a> = Box<dyn Fn(&str, bool, bool) -> bool + 'a>;

const SUBSETTED: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// The resource as `_summary` / `_elements` ask (unchanged when neither applies).
pub fn apply(resource: &Value, summary: Option<SummaryMode>, elements: &[String]) -> Value {
    let Some(obj) = resource.as_object() else {
        return resource.clone();
    };
    let rt = obj
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(def) = Model::r4().type_def(rt) else {
        return resource.clone();
    };
    // Which top-level elements to keep, by element definition.
    let keep: KeepFn<'_> = match (summary, elements.is_empty()) {
        (Some(SummaryMode::True), _) => Box::new(|_, is_summary, _| is_summary),
        (Some(SummaryMode::Text), _) => Box::new(|name, _, mandatory| mandatory || name == "text"),
        (Some(SummaryMode::Data), _) => Box::new(|name, _, _| name != "text"),
        (_, false) => Box::new(|name, _, mandatory| {
            mandatory || elements.iter().any(|e| e.split('.').next() == Some(name))
        }),
        _ => return resource.clone(),
    };
    let mut out = Map::new();
    for (key, value) in obj {
        let bare = key.strip_prefix('_').unwrap_or(key);
        let kept = match bare {
            "resourceType" | "id" | "meta" => true,
            _ => match def.child(bare) {
                Some(m) => keep(&m.child.name, m.child.summary, m.child.min > 0),
                None => false,
            },
        };
        if kept {
            out.insert(key.clone(), value.clone());
        }
    }
    let meta = out.entry("meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Some(tags) = tags.as_array_mut() {
            tags.push(json!({"system": SUBSETTED, "code": "SUBSETTED"}));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_keep_mandatory_and_requested() {
        let obs = json!({"resourceType": "Observation", "id": "1", "status": "final",
            "code": {"text": "x"}, "valueQuantity": {"value": 1}, "note": [{"text": "n"}],
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}});
        let r = apply(&obs, None, &["value".to_string()]);
        assert!(r.get("valueQuantity").is_some());
        assert!(r.get("status").is_some() && r.get("code").is_some());
        assert!(r.get("note").is_none() && r.get("text").is_none());
        assert_eq!(r["meta"]["tag"][0]["code"], "SUBSETTED");
        let d = apply(&obs, Some(SummaryMode::Data), &[]);
        assert!(d.get("text").is_none() && d.get("note").is_some());
        assert_eq!(apply(&obs, None, &[]), obs);
    }
}
