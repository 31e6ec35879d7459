//! Device templates (`CollectionContent`) and normalization of device messages into
//! measurements.

use std::borrow::Cow;
use std::cell::OnceCell;

use jmespath::Rcvar;
use serde_json::Value;

use crate::error::{Errs, TemplateErrors};
use crate::jmes::{self, JmesPath};
use crate::jsonpath::JsonPath;
use crate::sjson::{self, Node, Obj, V};
use crate::time::Instant;

/// A normalized measurement: one reading (or event) of one type from one device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Measurement {
    /// The device template's `typeName`.
    pub type_name: String,
    /// When it was measured, RFC 3339 UTC (`2019-02-01T22:46:01.875Z`).
    pub occurrence_time: String,
    /// The device id extracted from the message.
    pub device_id: String,
    /// The patient id, if the template extracts one.
    pub patient_id: Option<String>,
    /// The encounter id, if the template extracts one.
    pub encounter_id: Option<String>,
    /// The correlation id, if the template extracts one.
    pub correlation_id: Option<String>,
    /// `(valueName, value)` pairs, in template order; missing optional values are left out.
    pub properties: Vec<(String, String)>,
}

/// Why a message could not be normalized. The whole message fails (as in the reference).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// The message body is not JSON (the reference's `InvalidDataFormatException`).
    #[error("invalid data format: {message}")]
    InvalidDataFormat {
        /// What is wrong.
        message: String,
    },
    /// A required value is missing, blank or of the wrong kind (`IncompatibleDataException`).
    #[error("template {template_index} ('{template}'): unable to extract required value for [{field}] with '{expression}': {message}")]
    IncompatibleData {
        /// The template's typeName.
        template: String,
        /// Position of the template in the collection.
        template_index: usize,
        /// The field (`deviceIdExpression`, `timestampExpression`, … or a valueName).
        field: String,
        /// The expression that was evaluated.
        expression: String,
        /// Why the value is unusable.
        message: String,
    },
    /// An expression failed: several tokens where one was expected, or a JMESPath runtime
    /// error such as a custom-function argument error (`TemplateExpressionException`).
    #[error(
        "template {template_index} ('{template}'): expression '{expression}' failed: {message}"
    )]
    TemplateExpression {
        /// The template's typeName.
        template: String,
        /// Position of the template in the collection.
        template_index: usize,
        /// The expression that failed.
        expression: String,
        /// Why.
        message: String,
    },
}

impl NormalizeError {
    /// Stable name for metrics and logs: the reference's exception name.
    pub fn kind(&self) -> &'static str {
        match self {
            NormalizeError::InvalidDataFormat { .. } => "InvalidDataFormatException",
            NormalizeError::IncompatibleData { .. } => "IncompatibleDataException",
            NormalizeError::TemplateExpression { .. } => "TemplateExpressionException",
        }
    }
    /// The reference's `ErrorType` metric dimension.
    pub fn error_type(&self) -> &'static str {
        match self {
            NormalizeError::TemplateExpression { .. } => "DeviceTemplateError",
            _ => "DeviceMessageError",
        }
    }
}

/// Builds the reference's envelope `{"Body":…, "Properties":…, "SystemProperties":…}` from a
/// raw body (a leading UTF-8 BOM is ignored; an empty body becomes `null`).
pub fn envelope(
    body: &[u8],
    properties: Value,
    system_properties: Value,
) -> Result<Value, NormalizeError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let parsed = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| NormalizeError::InvalidDataFormat {
            message: format!("body is not JSON: {e}"),
        })?
    };
    let mut m = serde_json::Map::new();
    m.insert("Body".into(), parsed);
    m.insert("Properties".into(), properties);
    m.insert("SystemProperties".into(), system_properties);
    Ok(Value::Object(m))
}

/// Expression language of a CalculatedContent expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpressionLanguage {
    /// JSONPath (Json.NET semantics), the default.
    JsonPath,
    /// JMESPath with the reference's custom functions.
    JmesPath,
}

impl ExpressionLanguage {
    fn parse(s: &str) -> Option<ExpressionLanguage> {
        if s.eq_ignore_ascii_case("jsonpath") {
            Some(ExpressionLanguage::JsonPath)
        } else if s.eq_ignore_ascii_case("jmespath") {
            Some(ExpressionLanguage::JmesPath)
        } else {
            None
        }
    }
}

#[derive(Debug)]
enum Compiled {
    Json(JsonPath),
    Jmes(JmesPath),
}

/// A compiled template expression with its source text.
#[derive(Debug)]
pub struct Expression {
    src: String,
    compiled: Compiled,
}

impl Expression {
    /// Compiles `src` in `lang`.
    pub fn compile(src: &str, lang: ExpressionLanguage) -> Result<Expression, String> {
        let compiled = match lang {
            ExpressionLanguage::JsonPath => {
                Compiled::Json(JsonPath::compile(src).map_err(|e| e.to_string())?)
            }
            ExpressionLanguage::JmesPath => Compiled::Jmes(JmesPath::compile(src)?),
        };
        Ok(Expression {
            src: src.to_string(),
            compiled,
        })
    }
    /// The expression text.
    pub fn source(&self) -> &str {
        &self.src
    }
    /// The expression language.
    pub fn language(&self) -> ExpressionLanguage {
        match self.compiled {
            Compiled::Json(_) => ExpressionLanguage::JsonPath,
            Compiled::Jmes(_) => ExpressionLanguage::JmesPath,
        }
    }
}

/// The four content template kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceTemplateKind {
    /// `JsonPathContent`.
    JsonPath,
    /// `IotJsonPathContent`: device id and time from the IoT Hub system properties.
    IotJsonPath,
    /// `IotCentralJsonPathContent`: device id and time from an IoT Central export.
    IotCentralJsonPath,
    /// `CalculatedContent`: JSONPath or JMESPath, evaluated on the envelope + `matchedToken`.
    Calculated,
}

impl DeviceTemplateKind {
    fn parse(name: &str) -> Option<DeviceTemplateKind> {
        match normalize_type_name(name).as_str() {
            "jsonpathcontent" => Some(DeviceTemplateKind::JsonPath),
            "iotjsonpathcontent" => Some(DeviceTemplateKind::IotJsonPath),
            "iotcentraljsonpathcontent" => Some(DeviceTemplateKind::IotCentralJsonPath),
            "calculatedcontent" => Some(DeviceTemplateKind::Calculated),
            _ => None,
        }
    }
}

/// Template-type names match case-insensitively and the `Template` suffix is optional.
pub(crate) fn normalize_type_name(name: &str) -> String {
    let l = name.trim().to_ascii_lowercase();
    match l.strip_suffix("template") {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => l,
    }
}

/// One `values[]` entry.
#[derive(Debug)]
pub struct ValueExpression {
    /// The property name.
    pub name: String,
    /// How to extract it.
    pub expression: Expression,
    /// A required value that is missing fails the message.
    pub required: bool,
}

/// One device template.
#[derive(Debug)]
pub struct DeviceTemplate {
    /// Kind of template.
    pub kind: DeviceTemplateKind,
    /// Measurement type produced.
    pub type_name: String,
    type_match: Expression,
    device_id: Expression,
    timestamp: Expression,
    timestamp_fallback: Option<Expression>,
    patient_id: Option<Expression>,
    encounter_id: Option<Expression>,
    correlation_id: Option<Expression>,
    /// The values extracted.
    pub values: Vec<ValueExpression>,
}

/// A parsed `CollectionContent` device template set.
#[derive(Debug, Default)]
pub struct DeviceTemplateSet {
    /// The templates, in collection order.
    pub templates: Vec<DeviceTemplate>,
}

/// A fixed expression of the Iot* templates: `$.` followed by field names.
fn fixed(names: &[&str]) -> Expression {
    Expression {
        src: format!("$.{}", names.join(".")),
        compiled: Compiled::Json(JsonPath::fields(names)),
    }
}

impl DeviceTemplateSet {
    /// Parses a `CollectionContent` template text, reporting every problem at once.
    pub fn parse(json: &str) -> Result<DeviceTemplateSet, TemplateErrors> {
        let root = sjson::parse(json).map_err(|e| TemplateErrors { errors: vec![e] })?;
        let mut errs = Errs::default();
        let mut set = DeviceTemplateSet::default();
        if let Some(mut obj) = Obj::new(&root, "$", &mut errs) {
            let ty = obj.string("templateType", true, &mut errs);
            let tmpl = obj.get("template");
            obj.finish(&mut errs);
            match ty {
                Some(t) if normalize_type_name(&t) == "collectioncontent" => match tmpl {
                    Some(Node {
                        v: V::Arr(items), ..
                    }) => {
                        for (i, item) in items.iter().enumerate() {
                            if let Some(t) =
                                parse_item(item, &format!("$.template[{i}]"), &mut errs)
                            {
                                set.templates.push(t);
                            }
                        }
                    }
                    Some(n) => errs.push(
                        n,
                        "$.template",
                        "template",
                        format!(
                            "'template' must be an array of templates, found {}",
                            n.kind()
                        ),
                    ),
                    None => errs.push(
                        &root,
                        "$",
                        "template",
                        "required field 'template' is missing",
                    ),
                },
                Some(t) => errs.push(
                    &root,
                    "$.templateType",
                    "templateType",
                    format!("No match found for template type '{t}' (expected CollectionContent)"),
                ),
                None => {}
            }
        }
        if errs.0.is_empty() {
            Ok(set)
        } else {
            Err(TemplateErrors { errors: errs.0 })
        }
    }

    /// Normalizes one envelope `{"Body":…, "Properties":…, "SystemProperties":…}`: every
    /// template is applied, results concatenated in template order. No match gives an empty
    /// vector (a dropped event, not an error).
    pub fn normalize(&self, envelope: &Value) -> Result<Vec<Measurement>, NormalizeError> {
        let mut out = Vec::new();
        let env_var: OnceCell<Rcvar> = OnceCell::new();
        for (idx, t) in self.templates.iter().enumerate() {
            t.extract(idx, envelope, &env_var, &mut out)?;
        }
        Ok(out)
    }
}

fn parse_item(node: &Node, path: &str, errs: &mut Errs) -> Option<DeviceTemplate> {
    let mut obj = Obj::new(node, path, errs)?;
    let ty = obj.string("templateType", true, errs);
    let inner = obj.get("template");
    obj.finish(errs);
    let ty = ty?;
    let Some(kind) = DeviceTemplateKind::parse(&ty) else {
        errs.push(
            node,
            &format!("{path}.templateType"),
            "templateType",
            format!("No match found for template type '{ty}'"),
        );
        return None;
    };
    let Some(inner) = inner else {
        errs.push(
            node,
            path,
            "template",
            "required field 'template' is missing",
        );
        return None;
    };
    parse_template(kind, inner, &format!("{path}.template"), errs)
}

fn parse_template(
    kind: DeviceTemplateKind,
    node: &Node,
    path: &str,
    errs: &mut Errs,
) -> Option<DeviceTemplate> {
    let before = errs.0.len();
    let mut o = Obj::new(node, path, errs)?;
    let calculated = kind == DeviceTemplateKind::Calculated;
    let mut lang = ExpressionLanguage::JsonPath;
    if calculated {
        if let Some(l) = o.string("defaultExpressionLanguage", false, errs) {
            match ExpressionLanguage::parse(&l) {
                Some(x) => lang = x,
                None => {
                    let n = o.get("defaultExpressionLanguage").unwrap_or(node);
                    errs.push(
                        n,
                        &o.field_path("defaultExpressionLanguage"),
                        "defaultExpressionLanguage",
                        format!("unknown expression language '{l}' (JsonPath or JmesPath)"),
                    );
                }
            }
        }
    }
    let type_name = o.non_blank("typeName", true, errs);
    let expr =
        |o: &mut Obj<'_>, name: &str, required: bool, errs: &mut Errs| -> Option<Expression> {
            let n = o.get(name);
            let Some(n) = n else {
                if required {
                    o.missing(name, errs);
                }
                return None;
            };
            read_expression(n, &o.field_path(name), name, calculated, lang, errs)
        };
    let type_match = expr(&mut o, "typeMatchExpression", true, errs);
    let (device_id, timestamp, fallback) = match kind {
        DeviceTemplateKind::JsonPath | DeviceTemplateKind::Calculated => (
            expr(&mut o, "deviceIdExpression", true, errs),
            expr(&mut o, "timestampExpression", true, errs),
            None,
        ),
        DeviceTemplateKind::IotJsonPath => (
            Some(fixed(&["SystemProperties", "iothub-connection-device-id"])),
            Some(fixed(&["Properties", "iothub-creation-time-utc"])),
            Some(fixed(&["SystemProperties", "iothub-enqueuedtime"])),
        ),
        DeviceTemplateKind::IotCentralJsonPath => (
            Some(fixed(&["deviceId"])),
            Some(fixed(&["enqueuedTime"])),
            None,
        ),
    };
    let patient_id = expr(&mut o, "patientIdExpression", false, errs);
    let encounter_id = expr(&mut o, "encounterIdExpression", false, errs);
    let correlation_id = expr(&mut o, "correlationIdExpression", false, errs);
    let mut values = Vec::new();
    match o.get("values") {
        None => {}
        Some(Node {
            v: V::Arr(items), ..
        }) => {
            for (i, item) in items.iter().enumerate() {
                let vpath = format!("{}.values[{i}]", path);
                let Some(mut vo) = Obj::new(item, &vpath, errs) else {
                    continue;
                };
                let name = vo.non_blank("valueName", true, errs);
                let e = match vo.get("valueExpression") {
                    Some(n) => read_expression(
                        n,
                        &vo.field_path("valueExpression"),
                        "valueExpression",
                        calculated,
                        lang,
                        errs,
                    ),
                    None => {
                        vo.missing("valueExpression", errs);
                        None
                    }
                };
                let required = match vo.get("required") {
                    None => false,
                    Some(Node { v: V::Bool(b), .. }) => *b,
                    Some(n @ Node { v: V::Str(s), .. }) => {
                        match s.trim().to_ascii_lowercase().as_str() {
                            "true" => true,
                            "false" => false,
                            _ => {
                                errs.push(
                                    n,
                                    &vo.field_path("required"),
                                    "required",
                                    format!("'required' must be true or false, found '{s}'"),
                                );
                                false
                            }
                        }
                    }
                    Some(n) => {
                        errs.push(
                            n,
                            &vo.field_path("required"),
                            "required",
                            format!("'required' must be a boolean, found {}", n.kind()),
                        );
                        false
                    }
                };
                vo.finish(errs);
                if let (Some(name), Some(expression)) = (name, e) {
                    values.push(ValueExpression {
                        name,
                        expression,
                        required,
                    });
                }
            }
        }
        Some(n) => errs.push(
            n,
            &o.field_path("values"),
            "values",
            format!("'values' must be an array, found {}", n.kind()),
        ),
    }
    o.finish(errs);
    if errs.0.len() != before {
        return None;
    }
    Some(DeviceTemplate {
        kind,
        type_name: type_name?,
        type_match: type_match?,
        device_id: device_id?,
        timestamp: timestamp?,
        timestamp_fallback: fallback,
        patient_id,
        encounter_id,
        correlation_id,
        values,
    })
}

fn read_expression(
    n: &Node,
    path: &str,
    field: &str,
    calculated: bool,
    default: ExpressionLanguage,
    errs: &mut Errs,
) -> Option<Expression> {
    let (src, lang, at) = match &n.v {
        V::Str(s) => (s.clone(), default, n),
        V::Obj(_) if calculated => {
            let mut o = Obj::new(n, path, errs)?;
            let value = o.string("value", true, errs);
            let lang_node = o.get("language");
            let lang = match lang_node.map(|l| &l.v) {
                None => Some(default),
                Some(V::Str(l)) => {
                    let parsed = ExpressionLanguage::parse(l);
                    if parsed.is_none() {
                        errs.push(
                            lang_node.unwrap_or(n),
                            &format!("{path}.language"),
                            "language",
                            format!("unknown expression language '{l}' (JsonPath or JmesPath)"),
                        );
                    }
                    parsed
                }
                Some(_) => {
                    errs.push(
                        lang_node.unwrap_or(n),
                        &format!("{path}.language"),
                        "language",
                        "'language' must be a string",
                    );
                    None
                }
            };
            let vnode = o.get("value").unwrap_or(n);
            o.finish(errs);
            (value?, lang?, vnode)
        }
        _ => {
            let expected = if calculated {
                "a string or {\"value\", \"language\"}"
            } else {
                "a string"
            };
            errs.push(
                n,
                path,
                field,
                format!("'{field}' must be {expected}, found {}", n.kind()),
            );
            return None;
        }
    };
    if src.trim().is_empty() {
        errs.push(at, path, field, format!("'{field}' must not be empty"));
        return None;
    }
    match Expression::compile(&src, lang) {
        Ok(e) => Some(e),
        Err(m) => {
            errs.push(
                at,
                path,
                field,
                format!("invalid {lang:?} expression '{src}': {m}"),
            );
            None
        }
    }
}

/// Evaluation context: JSON (for JSONPath) and, on demand, its JMESPath form.
struct Ctx<'a> {
    json: Cow<'a, Value>,
    var: OnceCell<Rcvar>,
}

impl Ctx<'_> {
    fn var(&self) -> &Rcvar {
        self.var.get_or_init(|| jmes::to_var(&self.json))
    }
}

impl DeviceTemplate {
    fn expr_err(&self, idx: usize, e: &Expression, message: String) -> NormalizeError {
        NormalizeError::TemplateExpression {
            template: self.type_name.clone(),
            template_index: idx,
            expression: e.src.clone(),
            message,
        }
    }
    fn incompatible(
        &self,
        idx: usize,
        field: &str,
        e: &Expression,
        message: &str,
    ) -> NormalizeError {
        NormalizeError::IncompatibleData {
            template: self.type_name.clone(),
            template_index: idx,
            field: field.to_string(),
            expression: e.src.clone(),
            message: message.to_string(),
        }
    }

    /// The single token selected, `None` when nothing (or JSON null) is selected.
    fn single<'c>(
        &self,
        idx: usize,
        e: &Expression,
        ctx: &'c Ctx<'_>,
    ) -> Result<Option<Cow<'c, Value>>, NormalizeError> {
        match &e.compiled {
            Compiled::Json(p) => {
                if let Some(r) = p.select_plain(&ctx.json) {
                    return Ok(r.filter(|v| !v.is_null()).map(Cow::Borrowed));
                }
                let mut r = p.select(&ctx.json);
                match r.len() {
                    0 => Ok(None),
                    1 => Ok(Some(Cow::Borrowed(r.remove(0))).filter(|v| !v.is_null())),
                    n => Err(self.expr_err(
                        idx,
                        e,
                        format!("the path selected {n} tokens where one was expected"),
                    )),
                }
            }
            Compiled::Jmes(p) => {
                let r = p.search(ctx.var()).map_err(|m| self.expr_err(idx, e, m))?;
                let v = match r.as_array() {
                    Some(a) if a.is_empty() => return Ok(None),
                    Some(a) if a.len() == 1 => jmes::from_var(&a[0]),
                    Some(a) => {
                        return Err(self.expr_err(
                            idx,
                            e,
                            format!(
                                "the expression returned {} values where one was expected",
                                a.len()
                            ),
                        ))
                    }
                    None => jmes::from_var(&r),
                };
                Ok(Some(Cow::<Value>::Owned(v)).filter(|v| !v.is_null()))
            }
        }
    }

    /// A string value; `Ok(None)` when absent or blank.
    fn text(
        &self,
        idx: usize,
        field: &str,
        e: &Expression,
        ctx: &Ctx<'_>,
    ) -> Result<Option<String>, NormalizeError> {
        let Some(v) = self.single(idx, e, ctx)? else {
            return Ok(None);
        };
        let s = match v.as_ref() {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(self.incompatible(
                    idx,
                    field,
                    e,
                    &format!("expected a scalar value, found {}", kind_of(&v)),
                ))
            }
        };
        Ok(if s.trim().is_empty() { None } else { Some(s) })
    }

    fn required_text(
        &self,
        idx: usize,
        field: &str,
        e: &Expression,
        ctx: &Ctx<'_>,
    ) -> Result<String, NormalizeError> {
        self.text(idx, field, e, ctx)?
            .ok_or_else(|| self.incompatible(idx, field, e, "value is missing, null or blank"))
    }

    fn extract(
        &self,
        idx: usize,
        envelope: &Value,
        env_var: &OnceCell<Rcvar>,
        out: &mut Vec<Measurement>,
    ) -> Result<(), NormalizeError> {
        let tokens: Vec<Cow<'_, Value>> = match &self.type_match.compiled {
            Compiled::Json(p) => p.select(envelope).into_iter().map(Cow::Borrowed).collect(),
            Compiled::Jmes(p) => {
                let input = env_var.get_or_init(|| jmes::to_var(envelope));
                let r = p
                    .search(input)
                    .map_err(|m| self.expr_err(idx, &self.type_match, m))?;
                match r.as_array() {
                    Some(a) => a.iter().map(|x| Cow::Owned(jmes::from_var(x))).collect(),
                    None if r.is_null() => Vec::new(),
                    None => vec![Cow::Owned(jmes::from_var(&r))],
                }
            }
        };
        for tok in tokens {
            let ctx = if self.kind == DeviceTemplateKind::Calculated {
                let mut m = envelope.as_object().cloned().unwrap_or_default();
                m.insert("matchedToken".into(), tok.into_owned());
                Ctx {
                    json: Cow::Owned(Value::Object(m)),
                    var: OnceCell::new(),
                }
            } else {
                // The legacy templates evaluate the other expressions on the matched token.
                Ctx {
                    json: tok,
                    var: OnceCell::new(),
                }
            };
            out.push(self.measurement(idx, &ctx)?);
        }
        Ok(())
    }

    fn measurement(&self, idx: usize, ctx: &Ctx<'_>) -> Result<Measurement, NormalizeError> {
        let device_id = self.required_text(idx, "deviceIdExpression", &self.device_id, ctx)?;
        let mut ts_expr = &self.timestamp;
        let mut ts = self.text(idx, "timestampExpression", ts_expr, ctx)?;
        if let (None, Some(fb)) = (&ts, &self.timestamp_fallback) {
            ts_expr = fb;
            ts = self.text(idx, "timestampExpression", fb, ctx)?;
        }
        let ts = ts.ok_or_else(|| {
            self.incompatible(
                idx,
                "timestampExpression",
                ts_expr,
                "value is missing, null or blank",
            )
        })?;
        let Some(when) = Instant::parse(&ts) else {
            return Err(self.incompatible(
                idx,
                "timestampExpression",
                ts_expr,
                &format!("'{ts}' is not an ISO 8601 date-time"),
            ));
        };
        let opt = |e: &Option<Expression>, field: &str| -> Result<Option<String>, NormalizeError> {
            match e {
                Some(e) => self.text(idx, field, e, ctx),
                None => Ok(None),
            }
        };
        let patient_id = opt(&self.patient_id, "patientIdExpression")?;
        let encounter_id = opt(&self.encounter_id, "encounterIdExpression")?;
        let correlation_id = match &self.correlation_id {
            Some(e) => Some(self.required_text(idx, "correlationIdExpression", e, ctx)?),
            None => None,
        };
        let mut properties = Vec::with_capacity(self.values.len());
        for v in &self.values {
            let val = if v.required {
                Some(self.required_text(idx, &v.name, &v.expression, ctx)?)
            } else {
                self.text(idx, &v.name, &v.expression, ctx)?
            };
            if let Some(val) = val {
                properties.push((v.name.clone(), val));
            }
        }
        Ok(Measurement {
            type_name: self.type_name.clone(),
            occurrence_time: when.to_string(),
            device_id,
            patient_id,
            encounter_id,
            correlation_id,
            properties,
        })
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
