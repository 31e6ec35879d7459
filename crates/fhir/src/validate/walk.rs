//! The validator proper: one pass over the JSON, guided by the model, that checks structure,
//! cardinality, primitives and bindings at each element and evaluates the invariants that
//! apply there.

use super::binding;
use super::outcome::{Issue, IssueType, Severity};
use super::plan::{Plan, Rule, ELE_1};
use super::primitive;
use serde_json::{Map, Value};
use std::sync::Arc;
use vigil_fhir_model::{ChildDef, ChildMatch, Model, NodeDef, TypeKind};
use vigil_fhirpath::{EvalContext, Item, Node};

/// The resources an element belongs to, as invariants see them.
#[derive(Clone, Copy)]
pub(crate) struct Scope<'v> {
    /// `%resource`: the resource the element is part of.
    resource: &'v Value,
    /// `%rootResource`: the container of a contained resource, else the resource itself.
    root: &'v Value,
    contained: bool,
}

pub(crate) struct Walker {
    model: &'static Model,
    plan: &'static Plan,
    /// The FHIRPath location of the element being checked, grown and truncated in place.
    path: String,
    pub(crate) issues: Vec<Issue>,
}

impl Walker {
    pub(crate) fn new() -> Walker {
        Walker {
            model: Model::r4(),
            plan: Plan::get(),
            path: String::with_capacity(128),
            issues: Vec::new(),
        }
    }

    fn issue(&mut self, severity: Severity, code: IssueType, diagnostics: String) {
        self.issues.push(Issue {
            severity,
            code,
            diagnostics,
            expression: self.path.clone(),
            constraint: None,
        });
    }

    fn error(&mut self, code: IssueType, diagnostics: String) {
        self.issue(Severity::Error, code, diagnostics);
    }

    /// Report an error at a child location of the current path.
    fn error_at(&mut self, suffix: &str, code: IssueType, diagnostics: String) {
        let len = self.path.len();
        self.path.push_str(suffix);
        self.error(code, diagnostics);
        self.path.truncate(len);
    }

    fn ele_1(&mut self, what: &str) {
        self.issues.push(Issue {
            severity: Severity::Error,
            code: IssueType::Invariant,
            diagnostics: format!("Constraint failed: ele-1: All FHIR elements must have a @value or children ({what})"),
            expression: self.path.clone(),
            constraint: Some(ELE_1.to_string()),
        });
    }

    /// Validate a resource. `container` is the root resource of a contained resource.
    pub(crate) fn resource<'v>(&mut self, value: &'v Value, container: Option<&'v Value>) {
        let Some(obj) = value.as_object() else {
            let sev = if self.path.is_empty() {
                Severity::Fatal
            } else {
                Severity::Error
            };
            self.issue(
                sev,
                IssueType::Invalid,
                "A resource must be a JSON object".to_string(),
            );
            return;
        };
        let rt = match obj.get("resourceType") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                self.error(
                    IssueType::Structure,
                    "resourceType must be a string".to_string(),
                );
                return;
            }
            None => {
                self.error(
                    IssueType::Structure,
                    "The resource has no resourceType".to_string(),
                );
                return;
            }
        };
        let def = match self.model.type_def(rt) {
            Some(d) if d.kind == TypeKind::Resource && !d.is_abstract => d,
            _ => {
                let shown: String = rt.chars().take(64).collect();
                self.error(
                    IssueType::NotSupported,
                    format!("'{shown}' is not a FHIR R4 resource type"),
                );
                return;
            }
        };
        let top = self.path.is_empty();
        if top {
            self.path.push_str(rt);
        }
        let scope = Scope {
            resource: value,
            root: container.unwrap_or(value),
            contained: container.is_some(),
        };
        self.object(obj, def, scope);
        let rules = &self.plan.node(def.id).rules;
        self.check_rules(rules, &[], Node::resource(value), scope);
        if top {
            self.path.clear();
        }
    }

    /// Check the properties of a JSON object against a model node.
    fn object<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        node: &'static NodeDef,
        scope: Scope<'v>,
    ) {
        let mut seen = Seen::new(node.children.len());
        // Choice elements present so far: (child index, JSON name), to reject a second type.
        let mut choices: Vec<(usize, &'v str)> = Vec::new();
        let has_ext_keys = obj.keys().any(|k| k.starts_with('_'));
        for (key, value) in obj {
            if key == "resourceType" && node.kind == TypeKind::Resource {
                continue;
            }
            let (name, is_ext) = match key.strip_prefix('_') {
                Some(base) => (base, true),
                None => (key.as_str(), false),
            };
            if is_ext && obj.contains_key(name) {
                continue; // checked together with its value
            }
            let Some(m) = node.child(name) else {
                self.unknown(node, key);
                continue;
            };
            let Some(idx) = child_index(node, m.child) else {
                continue;
            };
            let ty = self.element_type(node, m);
            if is_ext && !self.model.is_primitive(ty) {
                let msg =
                    format!("'{key}' is only allowed for primitive elements; {name} is a {ty}");
                self.error_at(&format!(".{key}"), IssueType::Structure, msg);
                continue;
            }
            if m.child.choice {
                if m.choice_type.is_none() {
                    let msg = format!(
                        "'{key}' must be named with its type (e.g. {key}{})",
                        choice_example(m.child)
                    );
                    self.error_at(&format!(".{key}"), IssueType::Structure, msg);
                    continue;
                }
                if let Some((_, first)) = choices.iter().find(|(i, _)| *i == idx) {
                    let msg = format!(
                        "Only one type of {}[x] is allowed: found both '{first}' and '{name}'",
                        m.child.name
                    );
                    self.error_at(&format!(".{name}"), IssueType::Structure, msg);
                    continue;
                }
                choices.push((idx, name));
            }
            seen.set(idx);
            let (val, ext) = if is_ext {
                (None, Some(value))
            } else if has_ext_keys {
                (Some(value), obj.get(&format!("_{key}")))
            } else {
                (Some(value), None)
            };
            self.element(node, idx, m.child, ty, name, val, ext, scope);
        }
        for (i, child) in node.children.iter().enumerate() {
            if child.min > 0 && !seen.get(i) {
                let suffix = if child.choice {
                    format!(".{}[x]", child.name)
                } else {
                    format!(".{}", child.name)
                };
                let msg = format!(
                    "Missing required element '{}' (minimum cardinality {})",
                    child.name, child.min
                );
                self.error_at(&suffix, IssueType::Required, msg);
            }
        }
    }

    /// The type of a child as found: the choice type, or the declared type (a resource's
    /// `id` is declared as a FHIRPath System.String in R4 but is of FHIR type `id`).
    fn element_type(&self, node: &'static NodeDef, m: ChildMatch<'static>) -> &'static str {
        if let Some(t) = m.choice_type {
            return t;
        }
        if node.kind == TypeKind::Resource && &*m.child.name == "id" {
            return "id";
        }
        match m.child.types.first().map(|t| &**t) {
            // xhtml's own `id` is declared with a FHIRPath System type
            Some(t) if t.starts_with("System.") => "string",
            Some(t) => t,
            None => "",
        }
    }

    fn unknown(&mut self, node: &'static NodeDef, key: &str) {
        let msg = match node
            .children
            .iter()
            .find(|c| c.choice && key.starts_with(&*c.name))
        {
            _ if key == "resourceType" => "resourceType may only appear on a resource".to_string(),
            Some(c) if !key.starts_with('_') => format!(
                "Unknown element '{key}': '{}' is not an allowed type of {}[x] ({})",
                &key[c.name.len()..],
                c.name,
                c.types.join(", ")
            ),
            _ if key.starts_with('_') => format!(
                "Unknown element '{key}': no primitive element '{}' here",
                &key[1..]
            ),
            _ => format!("Unknown element '{key}' in {}", node.path),
        };
        self.error_at(&format!(".{key}"), IssueType::Structure, msg);
    }

    /// Check an element (all its values) given its JSON value and `_name` sibling.
    #[allow(clippy::too_many_arguments)]
    fn element<'v>(
        &mut self,
        parent: &'static NodeDef,
        idx: usize,
        child: &'static ChildDef,
        ty: &'static str,
        name: &str,
        val: Option<&'v Value>,
        ext: Option<&'v Value>,
        scope: Scope<'v>,
    ) {
        let primitive = self.model.is_primitive(ty);
        let ext = if ext.is_some() && !primitive {
            let msg = format!("'_{name}' is only allowed for primitive elements; {name} is a {ty}");
            self.error_at(&format!("._{name}"), IssueType::Structure, msg);
            None
        } else {
            ext
        };
        let len = self.path.len();
        self.path.push('.');
        self.path.push_str(name);
        if child.is_array() {
            self.array(parent, idx, child, ty, primitive, val, ext, scope);
        } else {
            let mut ok = true;
            if let Some(Value::Array(a)) = val {
                let msg = if a.len() > 1 {
                    format!("'{name}' allows at most 1 value, found {}", a.len())
                } else {
                    format!("'{name}' has at most one value and must not be an array")
                };
                self.error(IssueType::Structure, msg);
                ok = false;
            }
            if let Some(Value::Array(_)) = ext {
                self.error(
                    IssueType::Structure,
                    format!("'_{name}' must be an object, not an array"),
                );
                ok = false;
            }
            if ok {
                match (val, ext) {
                    (Some(Value::Null), _) | (_, Some(Value::Null)) => {
                        self.error(
                            IssueType::Structure,
                            "null is not a valid value here".to_string(),
                        );
                    }
                    (val, ext) => {
                        self.item(parent, idx, child, ty, primitive, val, ext, scope);
                    }
                }
            }
        }
        self.path.truncate(len);
    }

    #[allow(clippy::too_many_arguments)]
    fn array<'v>(
        &mut self,
        parent: &'static NodeDef,
        idx: usize,
        child: &'static ChildDef,
        ty: &'static str,
        primitive: bool,
        val: Option<&'v Value>,
        ext: Option<&'v Value>,
        scope: Scope<'v>,
    ) {
        let vals = match val {
            Some(Value::Array(a)) => Some(a.as_slice()),
            Some(_) => {
                self.error(
                    IssueType::Structure,
                    format!(
                        "'{}' can have several values and must be an array",
                        child.name
                    ),
                );
                return;
            }
            None => None,
        };
        let exts = match ext {
            Some(Value::Array(a)) => Some(a.as_slice()),
            Some(_) => {
                self.error(
                    IssueType::Structure,
                    format!(
                        "'_{}' must be an array, aligned with the values",
                        child.name
                    ),
                );
                None
            }
            None => None,
        };
        let exts = match (vals, exts) {
            (Some(v), Some(e)) if v.len() != e.len() => {
                let msg = format!(
                    "'{0}' has {1} values but '_{0}' has {2}: the arrays must be aligned",
                    child.name,
                    v.len(),
                    e.len()
                );
                self.error(IssueType::Structure, msg);
                None
            }
            (_, e) => e,
        };
        let n = vals
            .map_or(0, <[Value]>::len)
            .max(exts.map_or(0, <[Value]>::len));
        if n == 0 {
            self.error(IssueType::Structure, "Arrays must not be empty".to_string());
            return;
        }
        if let Some(max) = child.max {
            if n > max as usize {
                let msg = format!(
                    "'{}' has {n} values, more than the maximum of {max}",
                    child.name
                );
                self.error(IssueType::Structure, msg);
            }
        }
        let len = self.path.len();
        for i in 0..n {
            use std::fmt::Write;
            let _ = write!(self.path, "[{i}]");
            let v = vals.and_then(|a| a.get(i));
            let e = exts.and_then(|a| a.get(i));
            // In primitive arrays a null value is a placeholder for a value that has only
            // an id or extensions in the aligned `_name` array (and vice versa).
            let v_null = v.is_none_or(Value::is_null);
            let e_null = e.is_none_or(Value::is_null);
            if v_null && e_null || (!primitive && v.is_some_and(Value::is_null)) {
                self.error(
                    IssueType::Structure,
                    "null is not a valid array value here".to_string(),
                );
            } else {
                let v = v.filter(|v| !v.is_null());
                let e = e.filter(|e| !e.is_null());
                self.item(parent, idx, child, ty, primitive, v, e, scope);
            }
            self.path.truncate(len);
        }
    }

    /// Check one value of an element (no nulls, no arrays of it).
    #[allow(clippy::too_many_arguments)]
    fn item<'v>(
        &mut self,
        parent: &'static NodeDef,
        idx: usize,
        child: &'static ChildDef,
        ty: &'static str,
        primitive: bool,
        val: Option<&'v Value>,
        ext: Option<&'v Value>,
        scope: Scope<'v>,
    ) {
        if primitive {
            self.primitive(parent, idx, child, ty, val, ext, scope);
            return;
        }
        let Some(v) = val else { return };
        if ty == "Resource" {
            // contained resources are checked in their container's scope; others (Bundle
            // entries, Parameters) are resources of their own
            let container = (&*child.name == "contained" && parent.kind == TypeKind::Resource)
                .then_some(scope.root);
            self.resource(v, container);
            return;
        }
        let Value::Object(obj) = v else {
            self.error(
                IssueType::Structure,
                format!("A {ty} value must be a JSON object"),
            );
            return;
        };
        if obj.is_empty() {
            self.error(
                IssueType::Structure,
                "Objects must not be empty".to_string(),
            );
            return;
        }
        let node = match child.backbone {
            Some(b) => self.model.node(b),
            None => match self.model.type_def(ty) {
                Some(d) => d,
                None => return, // a type the model does not describe: nothing to check against
            },
        };
        self.object(obj, node, scope);
        if obj.keys().all(|k| k == "id") {
            self.ele_1("only an id");
        }
        if let Some(url) = child.binding.as_deref() {
            if let Some(vs) = self.model.value_set(url) {
                for (suffix, msg) in binding::check_complex(ty, obj, url, vs) {
                    self.error_at(&suffix, IssueType::CodeInvalid, msg);
                }
            }
        }
        let rules = &self.plan.node(node.id).rules;
        let extra = self.plan.child_rules(parent.id, idx);
        self.check_rules(rules, extra, Node::with_def(Some(v), None, node.id), scope);
    }

    #[allow(clippy::too_many_arguments)]
    fn primitive<'v>(
        &mut self,
        parent: &'static NodeDef,
        idx: usize,
        child: &'static ChildDef,
        ty: &'static str,
        val: Option<&'v Value>,
        ext: Option<&'v Value>,
        scope: Scope<'v>,
    ) {
        let Some(def) = self.model.type_def(ty) else {
            return;
        };
        let plan = self.plan.node(def.id);
        if let Some(v) = val {
            match primitive::check(ty, plan.regex.as_ref(), v) {
                Err((code, msg)) => self.error(code, msg),
                Ok(()) => {
                    if let (Some(url), Value::String(s)) = (child.binding.as_deref(), v) {
                        if let Some(vs) = self.model.value_set(url) {
                            if !binding::contains_code(vs, s) {
                                let msg = binding::not_in_value_set(s, None, url);
                                self.error(IssueType::CodeInvalid, msg);
                            }
                        }
                    }
                }
            }
        }
        if let Some(e) = ext {
            match e {
                Value::Object(o) if o.is_empty() => {
                    self.error(
                        IssueType::Structure,
                        "Objects must not be empty".to_string(),
                    );
                }
                Value::Object(o) => {
                    self.object(o, def, scope);
                    if val.is_none() && o.keys().all(|k| k == "id") {
                        self.ele_1("a primitive with neither a value nor extensions");
                    }
                }
                _ => self.error(
                    IssueType::Structure,
                    "The '_' sibling of a primitive must be an object".to_string(),
                ),
            }
        }
        let extra = self.plan.child_rules(parent.id, idx);
        self.check_rules(&plan.rules, extra, Node::with_def(val, ext, def.id), scope);
    }

    /// Evaluate invariants at a node. Failures of error-severity invariants are errors,
    /// of warning-severity ones warnings.
    fn check_rules<'v>(
        &mut self,
        rules: &[Arc<Rule>],
        extra: &[Arc<Rule>],
        focus: Node<'v>,
        scope: Scope<'v>,
    ) {
        if rules.is_empty() && extra.is_empty() {
            return;
        }
        let ctx = EvalContext::new(scope.resource)
            .with_root_resource(scope.root)
            .with_focus(vec![Item::Node(focus)]);
        for rule in rules.iter().chain(extra) {
            // Narrative is expected on the container, not on each contained resource.
            if scope.contained && rule.key == "dom-6" {
                continue;
            }
            match rule.expr.evaluate_bool(&ctx) {
                Ok(Some(false)) => self.issues.push(Issue {
                    severity: rule.severity,
                    code: IssueType::Invariant,
                    diagnostics: format!("Constraint failed: {}: {}", rule.key, rule.human),
                    expression: self.path.clone(),
                    constraint: Some(rule.key.to_string()),
                }),
                Ok(_) => {}
                Err(e) => self.issues.push(Issue {
                    severity: Severity::Warning,
                    code: IssueType::Processing,
                    diagnostics: format!("Constraint {} could not be evaluated: {e}", rule.key),
                    expression: self.path.clone(),
                    constraint: Some(rule.key.to_string()),
                }),
            }
        }
    }
}

/// The index of a child in its node, from the reference the model hands out.
fn child_index(node: &NodeDef, child: &ChildDef) -> Option<usize> {
    let base = node.children.as_ptr() as usize;
    let offset = (child as *const ChildDef as usize).checked_sub(base)?;
    let idx = offset / std::mem::size_of::<ChildDef>();
    (idx < node.children.len()).then_some(idx)
}

fn choice_example(child: &ChildDef) -> String {
    child
        .types
        .first()
        .map_or_else(String::new, |t| vigil_fhir_model::capitalize(t))
}

/// Which children of a node are present: a bit set that does not allocate for nodes of up
/// to 128 children (all but the largest resources).
enum Seen {
    Small(u128),
    Large(Vec<bool>),
}

impl Seen {
    fn new(n: usize) -> Seen {
        if n <= 128 {
            Seen::Small(0)
        } else {
            Seen::Large(vec![false; n])
        }
    }

    fn set(&mut self, i: usize) {
        match self {
            Seen::Small(bits) if i < 128 => *bits |= 1 << i,
            Seen::Small(_) => {}
            Seen::Large(v) => {
                if let Some(b) = v.get_mut(i) {
                    *b = true;
                }
            }
        }
    }

    fn get(&self, i: usize) -> bool {
        match self {
            Seen::Small(bits) => i < 128 && bits & (1 << i) != 0,
            Seen::Large(v) => v.get(i).copied().unwrap_or(false),
        }
    }
}
