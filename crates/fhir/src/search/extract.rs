//! Extraction: evaluate the prepared expressions on a resource and turn the items into
//! typed index values.
//!
//! Items whose type a parameter type cannot index (a `Reference` reached by a token
//! parameter, a `string` by a date parameter) are skipped and reported in
//! [`Extraction::skipped`]; `SampledData` reached by quantity parameters is ignored
//! silently (R4 lists it, but a series of samples has no single value to search on).
//! Empty elements (a Coding without system, code or display) give no value.

use super::path::Scratch;
use super::registry::{Plan, SearchParam, SearchRegistry, Special};
use super::text::{content_text, narrative_text};
use super::values::*;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::str::FromStr;
use vigil_fhir_model::{Model, SearchParamType};
use vigil_fhirpath::ucum::{self, Canonical};
use vigil_fhirpath::{EvalContext, Item, Node, NodeType, Str};

/// The most tuples one composite value may expand to (the product of its components'
/// value counts), so a pathological resource cannot blow the index up.
const MAX_COMPOSITE_TUPLES: usize = 64;

const UCUM: &str = "http://unitsofmeasure.org";
const CURRENCY: &str = "urn:iso:std:iso:4217";

/// One index value of one parameter. `'r` is the registry's lifetime, `'a` the indexed
/// resource's (text is borrowed from it; see [`IndexValue::into_owned`]).
#[derive(Debug, Clone)]
pub struct IndexEntry<'r, 'a> {
    /// The parameter (code, url, type).
    pub param: &'r SearchParam,
    /// One of its values.
    pub value: IndexValue<'a>,
}

/// An expression that failed to evaluate on a resource (none do on valid resources).
#[derive(Debug, Clone)]
pub struct ExtractProblem<'r> {
    /// The parameter whose expression failed.
    pub param: &'r SearchParam,
    /// The FHIRPath error.
    pub message: String,
}

/// An item the parameter's type cannot index, by its FHIR (or System) type name.
#[derive(Debug, Clone, Copy)]
pub struct Skipped<'r> {
    /// The parameter whose expression reached the item.
    pub param: &'r SearchParam,
    /// The item's type (`Attachment`, `string`, ...).
    pub item_type: &'static str,
}

/// The result of extracting the search values of one resource.
#[derive(Debug, Default)]
pub struct Extraction<'r, 'a> {
    /// The values, grouped by parameter in registry order; each parameter's values are
    /// distinct.
    pub entries: Vec<IndexEntry<'r, 'a>>,
    /// Evaluation failures, one per failed parameter; the other parameters are still
    /// extracted. Empty for valid resources.
    pub problems: Vec<ExtractProblem<'r>>,
    /// Items that were of a type the parameter type cannot index.
    pub skipped: Vec<Skipped<'r>>,
}

impl<'r, 'a> Extraction<'r, 'a> {
    /// The values of one parameter, by code.
    pub fn values<'s>(&'s self, code: &'s str) -> impl Iterator<Item = &'s IndexValue<'a>> + 's {
        self.entries
            .iter()
            .filter(move |e| e.param.code() == code)
            .map(|e| &e.value)
    }
}

/// Why a JSON value could not be indexed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// Not a JSON object with a string `resourceType`.
    #[error("not a FHIR resource: expected a JSON object with a resourceType")]
    NotAResource,
    /// A `resourceType` that is not a concrete R4 resource type.
    #[error("unknown resource type {0}")]
    UnknownResourceType(String),
}

/// Extract with the R4 registry; see [`SearchRegistry::extract`].
pub fn extract(resource: &Value) -> Result<Extraction<'static, '_>, ExtractError> {
    SearchRegistry::r4().extract(resource)
}

impl SearchRegistry {
    /// Every value of every search parameter that applies to the resource's type.
    ///
    /// Errors only when the JSON is not a resource of a known concrete type; a parameter
    /// whose expression fails on this resource is reported in
    /// [`Extraction::problems`] and the others are still extracted.
    pub fn extract<'r, 'a>(
        &'r self,
        resource: &'a Value,
    ) -> Result<Extraction<'r, 'a>, ExtractError> {
        self.extract_only(resource, |_| true)
    }

    /// The values of the parameters whose code `wanted` accepts: what a store keeps,
    /// when it answers some parameters otherwise (a union parameter from its sources'
    /// values), without evaluating those.
    pub fn extract_only<'r, 'a>(
        &'r self,
        resource: &'a Value,
        wanted: impl Fn(&'static str) -> bool,
    ) -> Result<Extraction<'r, 'a>, ExtractError> {
        let obj = resource.as_object().ok_or(ExtractError::NotAResource)?;
        let rt = obj
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or(ExtractError::NotAResource)?;
        let plans = self
            .plans(rt)
            .ok_or_else(|| ExtractError::UnknownResourceType(rt.to_string()))?;
        let ctx = EvalContext::new(resource).resolve_references_by_type(true);
        let model = Model::r4();
        let mut cx = Conv {
            resource: obj,
            model,
            memo: Vec::with_capacity(16),
            memo_values: Vec::with_capacity(32),
        };
        let root = Node::resource(resource);
        let mut out = Extraction {
            entries: Vec::with_capacity(64),
            ..Extraction::default()
        };
        let mut values = Vec::new();
        let mut items: Vec<Item<'_>> = Vec::new();
        let mut scratch = Scratch::default();
        let mut comp = CompositeScratch::default();
        // The elements present, as guard bits: one lookup per property of the resource.
        let present = obj.keys().fold(0u64, |acc, k| {
            acc | plans.element_bits.get(k.as_str()).copied().unwrap_or(0)
        });
        for plan in &plans.plans {
            if plan.guard.is_some_and(|g| g & present == 0) {
                continue;
            }
            let param = &self.params[plan.param];
            if !wanted(param.code()) {
                continue;
            }
            match param.special {
                Special::NotIndexed => continue,
                Special::Text => {
                    let div = obj
                        .get("text")
                        .and_then(|t| t.get("div"))
                        .and_then(Value::as_str);
                    if let Some(text) = div.map(narrative_text).filter(|t| !t.is_empty()) {
                        let normalized = Cow::Owned(super::normalize(&text));
                        let value = IndexValue::String(StringValue {
                            normalized,
                            exact: Cow::Owned(text),
                        });
                        out.entries.push(IndexEntry { param, value });
                    }
                    continue;
                }
                Special::Content => {
                    let text = content_text(resource);
                    if !text.is_empty() {
                        let normalized = Cow::Owned(super::normalize(&text));
                        let value = IndexValue::String(StringValue {
                            normalized,
                            exact: Cow::Owned(text),
                        });
                        out.entries.push(IndexEntry { param, value });
                    }
                    continue;
                }
                Special::None | Special::Near => {}
            }
            items.clear();
            match (&plan.fast, &plan.expr) {
                (Some(fast), _) => fast.eval(root, obj, model, &mut scratch, &mut items),
                (None, Some(expr)) => match expr.evaluate(&ctx) {
                    Ok(found) => items = found,
                    Err(e) => {
                        out.problems.push(ExtractProblem {
                            param,
                            message: e.to_string(),
                        });
                        continue;
                    }
                },
                (None, None) => continue,
            }
            let first = out.entries.len();
            if param.param_type() == SearchParamType::Composite {
                let env = CompositeEnv {
                    param,
                    plan,
                    ctx: &ctx,
                    resource: obj,
                };
                composite(&env, &mut cx, &items, &mut scratch, &mut comp, &mut out);
            } else {
                for item in &items {
                    if let Err(item_type) =
                        cx.convert(param.param_type(), param.special, param, item, &mut values)
                    {
                        out.skipped.push(Skipped { param, item_type });
                    }
                    out.entries
                        .extend(values.drain(..).map(|value| IndexEntry { param, value }));
                }
            }
            dedup_tail(&mut out.entries, first);
        }
        Ok(out)
    }
}

/// Remove repeated values of the parameter whose entries start at `first`: the index is
/// a set per parameter (a search matches if any value does), and unions such as
/// `Observation.code | Observation.component.code` often reach equal values.
/// Quadratic, so only for the usual handful of values.
fn dedup_tail(entries: &mut Vec<IndexEntry<'_, '_>>, first: usize) {
    const MAX: usize = 256;
    let n = entries.len() - first;
    if !(2..=MAX).contains(&n) {
        return;
    }
    let mut keep = first + 1;
    for i in first + 1..entries.len() {
        if !entries[first..keep]
            .iter()
            .any(|e| e.value == entries[i].value)
        {
            entries.swap(keep, i);
            keep += 1;
        }
    }
    entries.truncate(keep);
}

struct CompositeEnv<'e, 'r, 'a> {
    param: &'r SearchParam,
    plan: &'e Plan,
    ctx: &'e EvalContext<'a>,
    resource: &'a Map<String, Value>,
}

/// Buffers reused across the composites of one extraction.
#[derive(Default)]
struct CompositeScratch<'a> {
    items: Vec<Vec<Item<'a>>>,
    columns: Vec<Vec<IndexValue<'a>>>,
}

/// Composite values: for each item of the composite's expression, each component's
/// expression evaluated on that item; every combination of component values is a tuple.
/// An item missing any component gives no tuple, and is found so before any conversion.
fn composite<'r, 'a>(
    env: &CompositeEnv<'_, 'r, 'a>,
    cx: &mut Conv<'a>,
    roots: &[Item<'a>],
    scratch: &mut Scratch<'a>,
    buf: &mut CompositeScratch<'a>,
    out: &mut Extraction<'r, 'a>,
) {
    let param = env.param;
    let n = param.components.len();
    if n == 0 {
        return;
    }
    buf.items.resize_with(n, Vec::new);
    buf.columns.resize_with(n, Vec::new);
    'roots: for root in roots {
        // The direct paths compiled for this root's type, if any.
        let root_node = match root {
            Item::Node(node) => Some(*node),
            _ => None,
        };
        let fast = root_node.and_then(|node| match node.ty {
            NodeType::Known(id) => env
                .plan
                .component_fast
                .iter()
                .find(|(t, _)| *t == id)
                .map(|(_, f)| f),
            NodeType::Unknown => None,
        });
        let mut sub: Option<EvalContext<'a>> = None;
        for (i, c) in param.components.iter().enumerate() {
            let items = &mut buf.items[i];
            items.clear();
            match (
                fast.and_then(|f| f.get(i)).and_then(Option::as_ref),
                root_node,
            ) {
                (Some(f), Some(node)) => f.eval(node, env.resource, cx.model, scratch, items),
                _ => {
                    let sub =
                        sub.get_or_insert_with(|| env.ctx.clone().with_focus(vec![root.clone()]));
                    match c.expr.evaluate(sub) {
                        Ok(found) => *items = found,
                        Err(e) => {
                            out.problems.push(ExtractProblem {
                                param,
                                message: e.to_string(),
                            });
                            continue 'roots;
                        }
                    }
                }
            }
            if items.is_empty() {
                continue 'roots;
            }
        }
        for (i, c) in param.components.iter().enumerate() {
            let column = &mut buf.columns[i];
            column.clear();
            for item in &buf.items[i] {
                if let Err(item_type) = cx.convert(c.param_type, Special::None, param, item, column)
                {
                    out.skipped.push(Skipped { param, item_type });
                }
            }
            // A composite matches `system|code$value`: a CodeableConcept's text-only
            // token could never match, so it makes no tuple.
            column.retain(
                |v| !matches!(v, IndexValue::Token(t) if t.system.is_none() && t.code.is_none()),
            );
            if column.is_empty() {
                continue 'roots;
            }
        }
        let columns = &buf.columns[..n];
        // Odometer over the columns, bounded.
        let mut idx = vec![0usize; n];
        for _ in 0..MAX_COMPOSITE_TUPLES {
            let tuple = idx
                .iter()
                .zip(columns)
                .map(|(&i, col)| col[i].clone())
                .collect();
            out.entries.push(IndexEntry {
                param,
                value: IndexValue::Composite(tuple),
            });
            let mut k = n;
            loop {
                if k == 0 {
                    continue 'roots;
                }
                k -= 1;
                idx[k] += 1;
                if idx[k] < columns[k].len() {
                    break;
                }
                idx[k] = 0;
            }
        }
    }
}

/// Conversion of items to index values, with access to the indexed resource (for
/// contained references) and a memo of conversions already made.
struct Conv<'a> {
    resource: &'a Map<String, Value>,
    model: &'static Model,
    /// Conversions of complex elements already made in this extraction, by the element's
    /// address and the parameter type: the same element usually feeds several parameters
    /// (`Observation.code` is `code`, `combo-code` and a component of several composites)
    /// and its conversion (UCUM, normalization) need not be redone.
    memo: Vec<(usize, SearchParamType, u32, u32)>,
    memo_values: Vec<IndexValue<'a>>,
}

fn get_str<'v>(o: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    o.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn get_cow<'v>(o: &'v Map<String, Value>, key: &str) -> Option<Cow<'v, str>> {
    get_str(o, key).map(Cow::Borrowed)
}

fn get_obj<'v>(o: &'v Map<String, Value>, key: &str) -> Option<&'v Map<String, Value>> {
    o.get(key).and_then(Value::as_object)
}

/// The elements of a repeating property (or the single value of a non-repeating one).
fn each<'v>(o: &'v Map<String, Value>, key: &str) -> impl Iterator<Item = &'v Value> {
    let (one, many) = match o.get(key) {
        Some(Value::Array(a)) => (None, a.as_slice()),
        Some(v) => (Some(v), &[][..]),
        None => (None, &[][..]),
    };
    one.into_iter().chain(many)
}

/// A JSON number as a Decimal, keeping its written scale (`1.50` → scale 2).
fn decimal(v: &Value) -> Option<Decimal> {
    let Value::Number(n) = v else { return None };
    let text = n.to_string();
    Decimal::from_str(&text)
        .ok()
        .or_else(|| Decimal::from_scientific(&text).ok())
}

/// The text of a primitive node: strings as they are, booleans and numbers as written.
fn primitive_text<'a>(n: &Node<'a>) -> Option<Cow<'a, str>> {
    match n.value? {
        Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s.as_str())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Number(num) => Some(Cow::Owned(num.to_string())),
        _ => None,
    }
}

/// A FHIRPath string as text: borrowed when it points into the resource.
fn str_cow<'a>(s: &Str<'a>) -> Cow<'a, str> {
    match s {
        Str::Borrowed(b) => Cow::Borrowed(b),
        Str::Shared(rc) => Cow::Owned(rc.to_string()),
    }
}

/// Keeps only `[A-Za-z0-9.-]{1,64}`, the FHIR id syntax.
fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

type Converted = Result<(), &'static str>;

impl<'a> Conv<'a> {
    fn is_quantity(&self, type_name: &str) -> bool {
        self.model.is_subtype(type_name, "Quantity")
    }

    /// Convert one item for a parameter type, pushing zero or more values; `Err` with
    /// the item's type name when the type cannot be indexed by this parameter type.
    fn convert(
        &mut self,
        ty: SearchParamType,
        special: Special,
        param: &SearchParam,
        item: &Item<'a>,
        out: &mut Vec<IndexValue<'a>>,
    ) -> Converted {
        // Memoize complex elements (objects); resources are not memoized, their
        // conversion depends on the parameter's targets.
        let key = match item {
            Item::Node(n) if special == Special::None && !n.is_resource() => match n.value {
                Some(v @ Value::Object(_)) => Some(std::ptr::from_ref(v) as usize),
                _ => None,
            },
            _ => None,
        };
        if let Some(key) = key {
            if let Some(&(_, _, start, end)) = self.memo.iter().find(|m| m.0 == key && m.1 == ty) {
                out.extend(
                    self.memo_values[start as usize..end as usize]
                        .iter()
                        .cloned(),
                );
                return Ok(());
            }
        }
        let before = out.len();
        let result = self.convert_uncached(ty, special, param, item, out);
        if let (Some(key), Ok(())) = (key, &result) {
            let start = self.memo_values.len();
            self.memo_values.extend(out[before..].iter().cloned());
            if let (Ok(start), Ok(end)) =
                (u32::try_from(start), u32::try_from(self.memo_values.len()))
            {
                self.memo.push((key, ty, start, end));
            }
        }
        result
    }

    fn convert_uncached(
        &self,
        ty: SearchParamType,
        special: Special,
        param: &SearchParam,
        item: &Item<'a>,
        out: &mut Vec<IndexValue<'a>>,
    ) -> Converted {
        match ty {
            SearchParamType::Token => self.token(item, out),
            SearchParamType::String => self.string(item, out),
            SearchParamType::Date => self.date(item, out),
            SearchParamType::Number => self.number(item, out),
            SearchParamType::Quantity => self.quantity(item, out),
            SearchParamType::Reference => self.reference(item, param, out),
            SearchParamType::Uri => self.uri(item, out),
            SearchParamType::Special if special == Special::Near => self.position(item, out),
            // Composites are handled by `composite`; other specials have nothing to index.
            SearchParamType::Composite | SearchParamType::Special => Err(item.type_info().1),
        }
    }

    // --- token -------------------------------------------------------------------------

    fn token(&self, item: &Item<'a>, out: &mut Vec<IndexValue<'a>>) -> Converted {
        let n = match item {
            Item::Node(n) => n,
            Item::Boolean(b) => {
                return push_code(out, Cow::Borrowed(if *b { "true" } else { "false" }))
            }
            Item::String(s) => return push_code(out, str_cow(s)),
            Item::Integer(i) | Item::Long(i) => return push_code(out, Cow::Owned(i.to_string())),
            Item::Decimal(d) => return push_code(out, Cow::Owned(d.to_string())),
            other => return Err(other.type_info().1),
        };
        let type_name = n.type_name();
        let Some(o) = n.object() else {
            if n.is_primitive()
                && !matches!(
                    type_name,
                    "date" | "dateTime" | "instant" | "time" | "base64Binary"
                )
            {
                if let Some(text) = primitive_text(n) {
                    out.push(IndexValue::Token(TokenValue {
                        code: Some(text),
                        ..TokenValue::default()
                    }));
                }
                return Ok(());
            }
            return if n.value.is_none() {
                Ok(())
            } else {
                Err(type_name)
            };
        };
        match type_name {
            "Coding" => push_token(out, coding_token(o)),
            "CodeableConcept" => {
                for c in each(o, "coding").filter_map(Value::as_object) {
                    push_token(out, coding_token(c));
                }
                if let Some(text) = get_cow(o, "text") {
                    push_token(
                        out,
                        TokenValue {
                            text: Some(text),
                            ..TokenValue::default()
                        },
                    );
                }
            }
            "Identifier" => {
                let ty = get_obj(o, "type");
                let identifier_type = ty
                    .into_iter()
                    .flat_map(|t| each(t, "coding"))
                    .filter_map(Value::as_object)
                    .map(|c| Coding {
                        system: get_cow(c, "system"),
                        code: get_cow(c, "code"),
                    })
                    .filter(|c| c.system.is_some() || c.code.is_some())
                    .collect();
                push_token(
                    out,
                    TokenValue {
                        system: get_cow(o, "system"),
                        code: get_cow(o, "value"),
                        text: ty.and_then(|t| get_cow(t, "text")),
                        identifier_type,
                    },
                );
            }
            "ContactPoint" => {
                if let Some(value) = get_cow(o, "value") {
                    let system = get_cow(o, "system");
                    out.push(IndexValue::Token(TokenValue {
                        system,
                        code: Some(value),
                        ..TokenValue::default()
                    }));
                }
            }
            t if self.is_quantity(t) => {
                push_token(
                    out,
                    TokenValue {
                        system: get_cow(o, "system"),
                        code: get_cow(o, "code"),
                        ..TokenValue::default()
                    },
                );
            }
            t => return Err(t),
        }
        Ok(())
    }

    // --- string ------------------------------------------------------------------------

    fn string(&self, item: &Item<'a>, out: &mut Vec<IndexValue<'a>>) -> Converted {
        let n = match item {
            Item::Node(n) => n,
            Item::String(Str::Borrowed(s)) => {
                push_string(out, s);
                return Ok(());
            }
            Item::String(s @ Str::Shared(_)) => {
                if !s.trim().is_empty() {
                    let exact = s.to_string();
                    out.push(IndexValue::String(StringValue {
                        normalized: Cow::Owned(super::normalize(&exact)),
                        exact: Cow::Owned(exact),
                    }));
                }
                return Ok(());
            }
            other => return Err(other.type_info().1),
        };
        let type_name = n.type_name();
        let Some(o) = n.object() else {
            return match n.value {
                Some(Value::String(s)) => {
                    push_string(out, s);
                    Ok(())
                }
                None => Ok(()),
                Some(_) => Err(type_name),
            };
        };
        let fields: &[&str] = match type_name {
            "HumanName" => &["family", "given", "prefix", "suffix", "text"],
            "Address" => &[
                "line",
                "city",
                "district",
                "state",
                "postalCode",
                "country",
                "text",
            ],
            t => return Err(t),
        };
        for f in fields {
            for v in each(o, f) {
                if let Value::String(s) = v {
                    push_string(out, s);
                }
            }
        }
        Ok(())
    }

    // --- date --------------------------------------------------------------------------

    fn date(&self, item: &Item<'a>, out: &mut Vec<IndexValue<'a>>) -> Converted {
        let n = match item {
            Item::Node(n) => n,
            Item::Date(d) | Item::DateTime(d) => {
                out.extend(DateValue::from_datetime(d).map(IndexValue::Date));
                return Ok(());
            }
            other => return Err(other.type_info().1),
        };
        let type_name = n.type_name();
        match type_name {
            "date" | "dateTime" | "instant" => {
                if let Some(Value::String(s)) = n.value {
                    out.extend(DateValue::from_fhir(s).map(IndexValue::Date));
                }
                Ok(())
            }
            "Period" => {
                out.extend(n.object().and_then(period).map(IndexValue::Date));
                Ok(())
            }
            "Timing" => {
                let Some(o) = n.object() else { return Ok(()) };
                for e in each(o, "event") {
                    out.extend(
                        e.as_str()
                            .and_then(DateValue::from_fhir)
                            .map(IndexValue::Date),
                    );
                }
                let bounds = get_obj(o, "repeat").and_then(|r| get_obj(r, "boundsPeriod"));
                out.extend(bounds.and_then(period).map(IndexValue::Date));
                Ok(())
            }
            t => Err(t),
        }
    }

    // --- number ------------------------------------------------------------------------

    fn number(&self, item: &Item<'a>, out: &mut Vec<IndexValue<'a>>) -> Converted {
        let n = match item {
            Item::Node(n) => n,
            Item::Integer(i) | Item::Long(i) => {
                out.push(IndexValue::Number(NumberValue::exact(Decimal::from(*i))));
                return Ok(());
            }
            Item::Decimal(d) => {
                out.push(IndexValue::Number(NumberValue::exact(*d)));
                return Ok(());
            }
            other => return Err(other.type_info().1),
        };
        let type_name = n.type_name();
        match (type_name, n.value) {
            (_, Some(v @ Value::Number(_))) => {
                out.extend(decimal(v).map(|d| IndexValue::Number(NumberValue::exact(d))));
                Ok(())
            }
            (_, None) => Ok(()),
            ("Range", Some(Value::Object(o))) => {
                let bound = |k: &str| get_obj(o, k).and_then(|q| q.get("value")).and_then(decimal);
                let (low, high) = (bound("low"), bound("high"));
                if low.is_some() || high.is_some() {
                    out.push(IndexValue::Number(NumberValue {
                        value: None,
                        low,
                        high,
                    }));
                }
                Ok(())
            }
            (t, Some(Value::Object(o))) if self.is_quantity(t) => {
                out.extend(
                    o.get("value")
                        .and_then(decimal)
                        .map(|d| IndexValue::Number(NumberValue::exact(d))),
                );
                Ok(())
            }
            (t, _) => Err(t),
        }
    }

    // --- quantity ----------------------------------------------------------------------

    fn quantity(&self, item: &Item<'a>, out: &mut Vec<IndexValue<'a>>) -> Converted {
        let n = match item {
            Item::Node(n) => n,
            Item::Quantity(q) => {
                let unit = q.unit.to_string();
                let is_ucum = !is_calendar_word(&unit) && ucum::is_valid(&unit);
                out.extend(
                    quantity_value(
                        q.value,
                        None,
                        is_ucum.then_some(Cow::Borrowed(UCUM)),
                        Some(Cow::Owned(unit.clone())),
                        Some(Cow::Owned(unit)),
                    )
                    .map(IndexValue::Quantity),
                );
                return Ok(());
            }
            Item::Integer(i) | Item::Long(i) => {
                out.extend(
                    quantity_value(Decimal::from(*i), None, None, None, None)
                        .map(IndexValue::Quantity),
                );
                return Ok(());
            }
            Item::Decimal(d) => {
                out.extend(quantity_value(*d, None, None, None, None).map(IndexValue::Quantity));
                return Ok(());
            }
            other => return Err(other.type_info().1),
        };
        let type_name = n.type_name();
        let Some(o) = n.object() else {
            return match n.value {
                Some(v @ Value::Number(_)) => {
                    out.extend(
                        decimal(v)
                            .and_then(|d| quantity_value(d, None, None, None, None))
                            .map(IndexValue::Quantity),
                    );
                    Ok(())
                }
                None => Ok(()),
                Some(_) => Err(type_name),
            };
        };
        match type_name {
            "Money" => {
                let Some(value) = o.get("value").and_then(decimal) else {
                    return Ok(());
                };
                let currency = get_cow(o, "currency");
                out.extend(
                    quantity_value(
                        value,
                        None,
                        Some(Cow::Borrowed(CURRENCY)),
                        currency.clone(),
                        currency,
                    )
                    .map(IndexValue::Quantity),
                );
                Ok(())
            }
            "Range" => {
                out.extend(range_quantity(o).map(IndexValue::Quantity));
                Ok(())
            }
            // A series of samples has no single value to compare: deliberately ignored.
            "SampledData" => Ok(()),
            t if self.is_quantity(t) => {
                out.extend(quantity_of(o).map(IndexValue::Quantity));
                Ok(())
            }
            t => Err(t),
        }
    }

    // --- reference ---------------------------------------------------------------------

    fn reference(
        &self,
        item: &Item<'a>,
        param: &SearchParam,
        out: &mut Vec<IndexValue<'a>>,
    ) -> Converted {
        let n = match item {
            Item::Node(n) => n,
            Item::String(s) => {
                out.push(IndexValue::Reference(canonical_reference(
                    str_cow(s),
                    self.model,
                )));
                return Ok(());
            }
            other => return Err(other.type_info().1),
        };
        let type_name = n.type_name();
        if n.is_resource() {
            // `Bundle.entry[0].resource` (Bundle's composition/message): a reference to
            // the entry's resource, when it is of a type the parameter targets.
            let Some(o) = n.object() else { return Ok(()) };
            let target = param.target();
            if !target.is_empty() && !target.iter().any(|t| t == type_name) {
                return Ok(());
            }
            let id = get_cow(o, "id");
            let mut r = ReferenceValue::empty(if id.is_some() {
                ReferenceKind::Local
            } else {
                ReferenceKind::Other
            });
            r.reference = id
                .as_ref()
                .map(|id| Cow::Owned(format!("{type_name}/{id}")));
            r.resource_type = Some(Cow::Borrowed(type_name));
            r.id = id;
            out.push(IndexValue::Reference(r));
            return Ok(());
        }
        match (type_name, n.value) {
            ("Reference", Some(Value::Object(o))) => {
                out.extend(self.reference_of(o).map(IndexValue::Reference));
                Ok(())
            }
            ("canonical" | "uri" | "url" | "oid" | "uuid", Some(Value::String(s))) => {
                out.push(IndexValue::Reference(canonical_reference(
                    Cow::Borrowed(s),
                    self.model,
                )));
                Ok(())
            }
            (_, None) => Ok(()),
            (t, _) => Err(t),
        }
    }

    fn reference_of(&self, o: &'a Map<String, Value>) -> Option<ReferenceValue<'a>> {
        let identifier = get_obj(o, "identifier").and_then(|i| {
            let t = TokenValue {
                system: get_cow(i, "system"),
                code: get_cow(i, "value"),
                ..TokenValue::default()
            };
            (t.system.is_some() || t.code.is_some()).then_some(t)
        });
        // `Reference.type` is a type name or a StructureDefinition URL for one.
        let declared = get_str(o, "type").map(|t| Cow::Borrowed(t.rsplit('/').next().unwrap_or(t)));
        let mut r = match get_str(o, "reference") {
            Some(s) => self.parse_reference(s),
            None if identifier.is_some() => ReferenceValue::empty(ReferenceKind::Logical),
            // A display alone cannot be searched on.
            None => return None,
        };
        if r.resource_type.is_none() {
            r.resource_type = declared;
        }
        r.identifier = identifier;
        r.display = get_cow(o, "display");
        Some(r)
    }

    /// Parse `Reference.reference`.
    fn parse_reference(&self, s: &'a str) -> ReferenceValue<'a> {
        let mut r = ReferenceValue::empty(ReferenceKind::Other);
        r.reference = Some(Cow::Borrowed(s));
        if let Some(id) = s.strip_prefix('#') {
            r.kind = ReferenceKind::Contained;
            if id.is_empty() {
                // `#` is the container itself.
                r.resource_type = get_cow(self.resource, "resourceType");
                return r;
            }
            r.id = Some(Cow::Borrowed(id));
            r.resource_type = each(self.resource, "contained")
                .filter_map(Value::as_object)
                .find(|c| get_str(c, "id") == Some(id))
                .and_then(|c| get_cow(c, "resourceType"));
            return r;
        }
        if s.starts_with("urn:") {
            r.kind = ReferenceKind::Urn;
            r.url = Some(Cow::Borrowed(s));
            return r;
        }
        if s.contains(['?', '#']) {
            // Conditional references are resolved (or rejected) before storage.
            return r;
        }
        let absolute = s.contains("://");
        // From the end: `Type/id` or `Type/id/_history/vid`, and what precedes them.
        let mut rest = s;
        let take_last = |rest: &mut &'a str| -> Option<&'a str> {
            let (head, last) = match rest.rfind('/') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => ("", *rest),
            };
            let had_slash = rest.len() != last.len();
            *rest = head;
            (had_slash || !last.is_empty()).then_some(last)
        };
        let mut last = take_last(&mut rest);
        let mut prev = take_last(&mut rest);
        if prev == Some("_history") {
            let version = last.filter(|v| is_id(v));
            let (id, ty) = (take_last(&mut rest), take_last(&mut rest));
            if version.is_some() && ty.is_some() {
                r.version = version.map(Cow::Borrowed);
                last = id;
                prev = ty;
            } else {
                return r;
            }
        }
        let (Some(id), Some(ty)) = (last, prev) else {
            return r;
        };
        if !is_id(id) || !self.model.is_resource_type(ty) {
            r.version = None;
            if absolute {
                r.url = Some(Cow::Borrowed(s));
            }
            return r;
        }
        if absolute {
            if rest.is_empty() {
                r.version = None;
                return r;
            }
            r.kind = ReferenceKind::Absolute;
            r.base_url = Some(Cow::Borrowed(rest));
            r.url = Some(Cow::Borrowed(s));
        } else if rest.is_empty() && !s.starts_with('/') {
            r.kind = ReferenceKind::Local;
        } else {
            r.version = None;
            return r;
        }
        r.resource_type = Some(Cow::Borrowed(ty));
        r.id = Some(Cow::Borrowed(id));
        r
    }

    // --- uri ---------------------------------------------------------------------------

    fn uri(&self, item: &Item<'a>, out: &mut Vec<IndexValue<'a>>) -> Converted {
        let n = match item {
            Item::Node(n) => n,
            Item::String(s) => {
                out.push(IndexValue::Uri(UriValue {
                    uri: str_cow(s),
                    version: None,
                }));
                return Ok(());
            }
            other => return Err(other.type_info().1),
        };
        match (n.type_name(), n.value) {
            ("canonical", Some(Value::String(s))) => {
                let (uri, version) = match s.split_once('|') {
                    Some((u, v)) => (u, Some(Cow::Borrowed(v))),
                    None => (s.as_str(), None),
                };
                out.push(IndexValue::Uri(UriValue {
                    uri: Cow::Borrowed(uri),
                    version,
                }));
                Ok(())
            }
            (_, Some(Value::String(s))) if n.is_primitive() => {
                out.push(IndexValue::Uri(UriValue {
                    uri: Cow::Borrowed(s),
                    version: None,
                }));
                Ok(())
            }
            (_, None) => Ok(()),
            (t, _) => Err(t),
        }
    }

    // --- special: near -----------------------------------------------------------------

    fn position(&self, item: &Item<'a>, out: &mut Vec<IndexValue<'a>>) -> Converted {
        let Item::Node(n) = item else {
            return Err(item.type_info().1);
        };
        let Some(o) = n.object() else {
            return Err(n.type_name());
        };
        let lat = o.get("latitude").and_then(decimal);
        let lon = o.get("longitude").and_then(decimal);
        if let (Some(latitude), Some(longitude)) = (lat, lon) {
            out.push(IndexValue::Position(PositionValue {
                latitude,
                longitude,
            }));
        }
        Ok(())
    }
}

/// FHIRPath calendar duration keywords (`4 days`), which are not UCUM units.
fn is_calendar_word(u: &str) -> bool {
    matches!(
        u.trim_end_matches('s'),
        "year" | "month" | "week" | "day" | "hour" | "minute" | "second" | "millisecond"
    )
}

fn push_code<'a>(out: &mut Vec<IndexValue<'a>>, code: Cow<'a, str>) -> Converted {
    if !code.is_empty() {
        out.push(IndexValue::Token(TokenValue {
            code: Some(code),
            ..TokenValue::default()
        }));
    }
    Ok(())
}

fn push_token<'a>(out: &mut Vec<IndexValue<'a>>, t: TokenValue<'a>) {
    if t.system.is_some() || t.code.is_some() || t.text.is_some() || !t.identifier_type.is_empty() {
        out.push(IndexValue::Token(t));
    }
}

fn coding_token(c: &Map<String, Value>) -> TokenValue<'_> {
    TokenValue {
        system: get_cow(c, "system"),
        code: get_cow(c, "code"),
        text: get_cow(c, "display"),
        identifier_type: Vec::new(),
    }
}

fn push_string<'a>(out: &mut Vec<IndexValue<'a>>, s: &'a str) {
    if !s.trim().is_empty() {
        out.push(IndexValue::String(StringValue::new(s)));
    }
}

/// A Period's range: start's low to end's high, open ends unbounded. `None` when the
/// period has no (valid) bound at all or a bound is not a valid dateTime.
fn period(o: &Map<String, Value>) -> Option<DateValue> {
    let bound = |k: &str| -> Option<Option<DateValue>> {
        match o.get(k) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => DateValue::from_fhir(s).map(Some),
            Some(_) => None,
        }
    };
    let (start, end) = (bound("start")?, bound("end")?);
    if start.is_none() && end.is_none() {
        return None;
    }
    Some(DateValue {
        low: start.and_then(|s| s.low),
        high: end.and_then(|e| e.high),
        precision: None,
    })
}

/// The text form of a canonical unit: base units with their exponents, `.`-separated
/// (`g`, `m.s-2`, `g.m-3`); `1` when dimensionless.
pub fn canonical_unit(c: &Canonical) -> String {
    const NAMES: [&str; 7] = ["m", "s", "g", "rad", "K", "C", "cd"];
    let mut parts: Vec<String> = Vec::new();
    for (name, &e) in NAMES.iter().zip(c.dims.iter()) {
        match e {
            0 => {}
            1 => parts.push((*name).to_string()),
            e => parts.push(format!("{name}{e}")),
        }
    }
    for (name, e) in &c.arbitrary {
        match e {
            1 => parts.push(name.clone()),
            e => parts.push(format!("{name}{e}")),
        }
    }
    if parts.is_empty() {
        "1".to_string()
    } else {
        parts.join(".")
    }
}

/// A UCUM unit's size in base units (`num / den`) and its canonical unit text, from a
/// small per-thread cache: data uses few distinct units, and parsing one costs more
/// than the rest of a quantity's conversion.
fn unit_factor(code: &str) -> Option<(Decimal, Decimal, String)> {
    type Cache = Vec<(Box<str>, Option<(Decimal, Decimal, String)>)>;
    thread_local! {
        static CACHE: std::cell::RefCell<Cache> = const { std::cell::RefCell::new(Vec::new()) };
    }
    const CAPACITY: usize = 64;
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((_, hit)) = cache.iter().find(|(k, _)| **k == *code) {
            return hit.clone();
        }
        let parsed = ucum::parse(code).map(|c| (c.num, c.den, canonical_unit(&c)));
        if cache.len() >= CAPACITY {
            cache.clear();
        }
        cache.push((code.into(), parsed.clone()));
        parsed
    })
}

/// A Quantity-typed JSON object.
fn quantity_of(o: &Map<String, Value>) -> Option<QuantityValue<'_>> {
    let value = o.get("value").and_then(decimal)?;
    let comparator = get_str(o, "comparator").and_then(Comparator::parse);
    quantity_value(
        value,
        comparator,
        get_cow(o, "system"),
        get_cow(o, "code"),
        get_cow(o, "unit"),
    )
}

fn quantity_value<'a>(
    value: Decimal,
    comparator: Option<Comparator>,
    system: Option<Cow<'a, str>>,
    code: Option<Cow<'a, str>>,
    unit: Option<Cow<'a, str>>,
) -> Option<QuantityValue<'a>> {
    let (low, high) = implicit_range(value);
    let (low, high) = match comparator {
        None => (Some(low), Some(high)),
        Some(Comparator::Lt | Comparator::Le) => (None, Some(value)),
        Some(Comparator::Gt | Comparator::Ge) => (Some(value), None),
    };
    let canonical = match (system.as_deref(), code.as_deref()) {
        // Offset scales (Cel, [degF]) need `to_canonical`'s special cases for each bound.
        (Some(UCUM), Some(code @ ("Cel" | "[degF]"))) => {
            ucum::to_canonical(value, code).map(|(cv, c)| {
                let conv = |d: Option<Decimal>| {
                    d.and_then(|d| ucum::to_canonical(d, code)).map(|(v, _)| v)
                };
                CanonicalQuantity {
                    value: Some(cv),
                    low: conv(low),
                    high: conv(high),
                    unit: Cow::Owned(canonical_unit(&c)),
                }
            })
        }
        // Otherwise a factor: parse the unit once for the value and both bounds.
        (Some(UCUM), Some(code)) => unit_factor(code).and_then(|(num, den, unit)| {
            // As `ucum::to_canonical` does: the unit's size is num/den base units.
            let to_base = |d: Decimal| d.checked_mul(num).and_then(|v| v.checked_div(den));
            let conv = |d: Option<Decimal>| d.and_then(to_base);
            Some(CanonicalQuantity {
                value: Some(to_base(value)?),
                low: conv(low),
                high: conv(high),
                unit: Cow::Owned(unit),
            })
        }),
        _ => None,
    };
    Some(QuantityValue {
        value: Some(value),
        low,
        high,
        comparator,
        system,
        code,
        unit,
        canonical,
    })
}

/// A Range as a quantity: its bounds (inclusive), units from whichever bound has them.
fn range_quantity(o: &Map<String, Value>) -> Option<QuantityValue<'_>> {
    let low = get_obj(o, "low").and_then(quantity_of);
    let high = get_obj(o, "high").and_then(quantity_of);
    let unit_src = low.as_ref().or(high.as_ref())?;
    let (system, code, unit) = (
        unit_src.system.clone(),
        unit_src.code.clone(),
        unit_src.unit.clone(),
    );
    let canonical = match (&low, &high) {
        (Some(l), Some(h)) => match (&l.canonical, &h.canonical) {
            (Some(lc), Some(hc)) if lc.unit == hc.unit => Some(CanonicalQuantity {
                value: None,
                low: lc.value,
                high: hc.value,
                unit: lc.unit.clone(),
            }),
            _ => None,
        },
        (Some(l), None) => l.canonical.as_ref().map(|c| CanonicalQuantity {
            value: None,
            low: c.value,
            high: None,
            unit: c.unit.clone(),
        }),
        (None, Some(h)) => h.canonical.as_ref().map(|c| CanonicalQuantity {
            value: None,
            low: None,
            high: c.value,
            unit: c.unit.clone(),
        }),
        (None, None) => None,
    };
    Some(QuantityValue {
        value: None,
        low: low.and_then(|l| l.value),
        high: high.and_then(|h| h.value),
        comparator: None,
        system,
        code,
        unit,
        canonical,
    })
}

/// A canonical (or uri used as a reference): the URL, its `|version`, and the resource
/// type when the URL has the RESTful `.../Type/id` shape.
fn canonical_reference<'a>(s: Cow<'a, str>, model: &Model) -> ReferenceValue<'a> {
    let mut r = ReferenceValue::empty(ReferenceKind::Canonical);
    let split = |s: &str| -> (usize, Option<usize>) {
        match s.find('|') {
            Some(i) => (i, Some(i + 1)),
            None => (s.len(), None),
        }
    };
    let (url_end, version_start) = split(&s);
    let resource_type = {
        let url = &s[..url_end];
        let mut segs = url.trim_end_matches('/').rsplit('/');
        match (segs.next(), segs.next()) {
            (Some(_id), Some(ty)) if model.is_resource_type(ty) => Some(ty.to_string()),
            _ => None,
        }
    };
    match &s {
        Cow::Borrowed(b) => {
            r.url = Some(Cow::Borrowed(&b[..url_end]));
            r.version = version_start.map(|v| Cow::Borrowed(&b[v..]));
        }
        Cow::Owned(o) => {
            r.url = Some(Cow::Owned(o[..url_end].to_string()));
            r.version = version_start.map(|v| Cow::Owned(o[v..].to_string()));
        }
    }
    r.resource_type = resource_type.map(Cow::Owned);
    r.reference = Some(s);
    r
}
