//! `GET /metadata` (the CapabilityStatement) and `$validate`.

use crate::api::{check_type_matches, Ctx, Req};
use crate::error::ApiError;
use crate::http::{check_json_body, fhir_response, parse_resource};
use crate::FhirApi;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::OnceLock;
use vigil_auth::{Authorizer, Interaction};
use vigil_fhir::search::SearchRegistry;
use vigil_fhir_model::{Model, SearchParamType};

fn param_type(t: SearchParamType) -> &'static str {
    match t {
        SearchParamType::Number => "number",
        SearchParamType::Date => "date",
        SearchParamType::String => "string",
        SearchParamType::Token => "token",
        SearchParamType::Reference => "reference",
        SearchParamType::Composite => "composite",
        SearchParamType::Quantity => "quantity",
        SearchParamType::Uri => "uri",
        SearchParamType::Special => "special",
    }
}

/// The CapabilityStatement: what this server really implements (built once; only the
/// base URL varies).
pub(crate) fn statement(api: &FhirApi) -> Value {
    static RESOURCES: OnceLock<Vec<Value>> = OnceLock::new();
    let resources = RESOURCES.get_or_init(|| {
        let mut types: Vec<&str> = Model::r4()
            .resource_types()
            .filter(|t| crate::api::is_type(t))
            .collect();
        types.sort_unstable();
        types
            .into_iter()
            .map(|t| {
                let params: Vec<Value> = SearchRegistry::r4()
                    .params_for(t)
                    .filter(|p| p.is_indexed())
                    .map(|p| {
                        json!({"name": p.code(), "definition": p.url(),
                            "type": param_type(p.param_type())})
                    })
                    .collect();
                let mut ops = vec![json!({"name": "validate",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"})];
                if t == "Patient" {
                    ops.push(json!({"name": "everything",
                        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}));
                }
                let interactions: Vec<Value> = [
                    "read", "vread", "update", "patch", "delete", "history-instance",
                    "history-type", "create", "search-type",
                ]
                .iter()
                .map(|c| json!({"code": c}))
                .collect();
                json!({
                    "type": t,
                    "interaction": interactions,
                    "versioning": "versioned-update",
                    "readHistory": true,
                    "updateCreate": true,
                    "conditionalCreate": true,
                    "conditionalUpdate": true,
                    "conditionalDelete": "single",
                    "searchParam": params,
                    "operation": ops,
                })
            })
            .collect()
    });
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "software": {"name": "Vigil", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Vigil FHIR R4 server", "url": api.inner.config.base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "security": {
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
                "description": "Bearer tokens (HS256 JWT) issued by `vigil token issue`; SMART v1/v2 scopes; patient/ scopes limited to the token's patient compartment."
            },
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "search-system"}, {"code": "history-system"}],
            "operation": [{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}],
        }],
    })
}

/// `POST [type]/$validate` and `POST [type]/[id]/$validate`: the validator's outcome,
/// always 200 (the outcome says whether the resource is valid). The body is the
/// resource, or a Parameters with a `resource` parameter.
pub(crate) async fn validate_op(
    _api: &FhirApi,
    ctx: &Ctx,
    t: &str,
    id: Option<&str>,
    req: &Req,
) -> Result<Response, ApiError> {
    if req.method != axum::http::Method::POST {
        return Err(ApiError::MethodNotAllowed("$validate takes POST".into()));
    }
    ctx.access
        .check_type(&Interaction::Operation("validate".into()), t)?;
    check_json_body(&req.headers)?;
    let body = parse_resource(&req.body)?;
    let resource = if body["resourceType"] == "Parameters" && t != "Parameters" {
        body.get("parameter")
            .and_then(Value::as_array)
            .and_then(|ps| ps.iter().find(|p| p["name"] == "resource"))
            .and_then(|p| p.get("resource"))
            .cloned()
            .ok_or_else(|| ApiError::bad_request("Parameters without a resource parameter"))?
    } else {
        body
    };
    check_type_matches(&resource, t)?;
    if let Some(id) = id {
        if resource
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|r| r != id)
        {
            return Err(ApiError::bad_request(format!(
                "the resource's id does not match {t}/{id}"
            )));
        }
    }
    let outcome = vigil_fhir::validate::validate(&resource);
    Ok(fhir_response(StatusCode::OK, &outcome.to_json()))
}
