//! Everything the validator prepares once: compiled invariants per model node and the
//! anchored lexical regexes of the primitive types.

use super::outcome::Severity;
use regex::Regex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use vigil_fhir_model::{ChildDef, Constraint, Model, NodeId, TypeKind};
use vigil_fhirpath::{CompileOptions, Expression};

/// `ele-1` ("All FHIR elements must have a @value or children") applies to every element;
/// it is checked natively by the walker instead of through FHIRPath for speed.
pub(crate) const ELE_1: &str = "ele-1";

/// A compiled invariant.
#[derive(Debug)]
pub(crate) struct Rule {
    pub key: &'static str,
    pub severity: Severity,
    pub human: &'static str,
    pub expr: Expression,
}

/// What is checked at values of one model node (a type or an inline backbone element).
#[derive(Debug, Default)]
pub(crate) struct NodePlan {
    /// Invariants of the node: for a type, its own and its base types'; for a backbone
    /// element, those declared on the element that defines it.
    pub rules: Vec<Arc<Rule>>,
    /// Invariants declared on each child element (by child index) that are not already
    /// among the invariants of the child's type(s).
    pub child_rules: Vec<Vec<Arc<Rule>>>,
    /// For primitive types: the lexical regex, anchored.
    pub regex: Option<Regex>,
}

/// The prepared checks for the whole R4 model, indexed by node id.
#[derive(Debug)]
pub(crate) struct Plan {
    nodes: Vec<NodePlan>,
    /// Invariants whose expression does not compile, with the reason (known defects in the
    /// published definitions); they are not checked.
    #[cfg_attr(not(test), allow(dead_code))] // read by the tests
    pub skipped: Vec<(&'static str, String)>,
}

static EMPTY: NodePlan = NodePlan {
    rules: Vec::new(),
    child_rules: Vec::new(),
    regex: None,
};

impl Plan {
    /// The plan, built on first use (compiles every invariant of the model once).
    pub(crate) fn get() -> &'static Plan {
        static PLAN: OnceLock<Plan> = OnceLock::new();
        PLAN.get_or_init(|| Plan::build(Model::r4()))
    }

    pub(crate) fn node(&self, id: NodeId) -> &NodePlan {
        self.nodes.get(id as usize).unwrap_or(&EMPTY)
    }

    pub(crate) fn child_rules(&self, parent: NodeId, child: usize) -> &[Arc<Rule>] {
        self.node(parent)
            .child_rules
            .get(child)
            .map_or(&[], Vec::as_slice)
    }

    fn build(model: &'static Model) -> Plan {
        // Pass 1: every node reachable from the resources, and the element defining each
        // backbone (content references reuse the backbone of another element).
        let mut seen: HashMap<NodeId, ()> = HashMap::new();
        let mut order = Vec::new();
        let mut backbone_src: HashMap<NodeId, &'static ChildDef> = HashMap::new();
        let mut stack: Vec<NodeId> = model
            .resource_types()
            .filter_map(|t| model.type_id(t))
            .collect();
        while let Some(id) = stack.pop() {
            if seen.insert(id, ()).is_some() {
                continue;
            }
            order.push(id);
            let node = model.node(id);
            if let Some(base) = node.base.as_deref().and_then(|b| model.type_id(b)) {
                stack.push(base);
            }
            for child in &node.children {
                if let Some(b) = child.backbone {
                    if model.node(b).path == child.path {
                        backbone_src.insert(b, child);
                    }
                    stack.push(b);
                }
                stack.extend(child.types.iter().filter_map(|t| model.type_id(t)));
            }
        }

        let mut compiler = Compiler {
            model,
            cache: HashMap::new(),
            skipped: Vec::new(),
        };
        let max = order.iter().copied().max().unwrap_or(0) as usize;
        let mut nodes: Vec<NodePlan> = (0..=max).map(|_| NodePlan::default()).collect();
        // Type rules first: child rules are filtered against them.
        for &id in &order {
            let node = model.node(id);
            let rules = if node.kind == TypeKind::Backbone {
                match backbone_src.get(&id) {
                    Some(src) => compiler.compile_all(&src.constraints, context_path(&src.path)),
                    None => Vec::new(),
                }
            } else {
                compiler.type_rules(id)
            };
            let plan = &mut nodes[id as usize];
            plan.rules = rules;
            if node.kind == TypeKind::Primitive {
                plan.regex = node
                    .regex
                    .as_deref()
                    .and_then(|r| Regex::new(&anchored(r)).ok());
            }
        }
        for &id in &order {
            let node = model.node(id);
            let mut child_rules = Vec::with_capacity(node.children.len());
            for child in &node.children {
                // Backbone-defining elements' invariants are the backbone node's rules.
                let own_backbone = child
                    .backbone
                    .is_some_and(|b| model.node(b).path == child.path);
                if own_backbone || child.constraints.is_empty() {
                    child_rules.push(Vec::new());
                    continue;
                }
                let from_types = |key: &str| {
                    !child.types.is_empty()
                        && child.types.iter().all(|t| {
                            model.type_id(t).is_some_and(|tid| {
                                nodes
                                    .get(tid as usize)
                                    .is_some_and(|p| p.rules.iter().any(|r| r.key == key))
                            })
                        })
                };
                let wanted: Vec<&'static Constraint> = child
                    .constraints
                    .iter()
                    .filter(|c| !from_types(&c.key))
                    .collect();
                let ctx = context_path(&child.path);
                child_rules.push(
                    wanted
                        .into_iter()
                        .filter_map(|c| compiler.compile(c, ctx))
                        .collect(),
                );
            }
            nodes[id as usize].child_rules = child_rules;
        }
        Plan {
            nodes,
            skipped: compiler.skipped,
        }
    }
}

/// The FHIRPath context of an element path: `Observation.value[x]` -> `Observation.value`.
fn context_path(path: &str) -> &str {
    path.strip_suffix("[x]").unwrap_or(path)
}

struct Compiler {
    model: &'static Model,
    /// By context and key: inherited invariants are compiled once and shared.
    cache: HashMap<(&'static str, &'static str), Option<Arc<Rule>>>,
    skipped: Vec<(&'static str, String)>,
}

impl Compiler {
    /// The invariants of a type and its base types, except `ele-1`.
    fn type_rules(&mut self, id: NodeId) -> Vec<Arc<Rule>> {
        let mut out: Vec<Arc<Rule>> = Vec::new();
        let mut cur = Some(self.model.node(id));
        let mut depth = 0;
        while let Some(node) = cur {
            for c in &node.constraints {
                if out.iter().any(|r| r.key == c.key) {
                    continue;
                }
                if let Some(rule) = self.compile(c, &node.type_name) {
                    out.push(rule);
                }
            }
            depth += 1;
            cur = node
                .base
                .as_deref()
                .and_then(|b| self.model.type_def(b))
                .filter(|_| depth < 16);
        }
        out
    }

    fn compile_all(
        &mut self,
        constraints: &'static [Constraint],
        ctx: &'static str,
    ) -> Vec<Arc<Rule>> {
        constraints
            .iter()
            .filter_map(|c| self.compile(c, ctx))
            .collect()
    }

    fn compile(&mut self, c: &'static Constraint, ctx: &'static str) -> Option<Arc<Rule>> {
        if c.key == ELE_1 {
            return None;
        }
        if let Some(hit) = self.cache.get(&(ctx, c.key.as_str())) {
            return hit.clone();
        }
        let options = CompileOptions {
            context_type: Some(ctx.to_string()),
            strict: false,
        };
        let source = corrected_expression(c);
        let rule = match Expression::compile(&source, &options) {
            Ok(expr) => Some(Arc::new(Rule {
                key: &c.key,
                severity: if c.severity == "warning" {
                    Severity::Warning
                } else {
                    Severity::Error
                },
                human: &c.human,
                expr,
            })),
            Err(e) => {
                self.skipped.push((&c.key, format!("{ctx}: {e}")));
                None
            }
        };
        self.cache.insert((ctx, &c.key), rule.clone());
        rule
    }
}

/// The expression to evaluate for an invariant. R4's `dom-3` applies the `as()` function to
/// `descendants()`, a collection of many items, which FHIRPath defines as an error; it means
/// to filter by type, which is `ofType()` (the wording later versions adopted). Others are used
/// as published.
fn corrected_expression(c: &Constraint) -> std::borrow::Cow<'_, str> {
    if c.key == "dom-3" {
        c.expression
            .replace(".as(", ".ofType(")
            .replace("where(as(", "where(ofType(")
            .into()
    } else {
        c.expression.as_str().into()
    }
}

/// The definitions' regexes are XML-Schema/Java style: anchor them as a full match and give
/// `\s`/`\S` their ASCII meaning (Rust's are Unicode-aware, so would reject e.g. a
/// non-breaking space in a string, which FHIR allows).
pub(crate) fn anchored(re: &str) -> String {
    const WS: &str = r" \t\n\x0B\f\r";
    let mut out = String::with_capacity(re.len() + 32);
    out.push_str("^(?:");
    let mut in_class = 0usize;
    let mut chars = re.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('s') if in_class > 0 => out.push_str(WS),
                Some('s') => {
                    out.push('[');
                    out.push_str(WS);
                    out.push(']');
                }
                Some('S') => {
                    out.push_str("[^");
                    out.push_str(WS);
                    out.push(']');
                }
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '[' => {
                in_class += 1;
                out.push(c);
            }
            ']' if in_class > 0 => {
                in_class -= 1;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push_str(")$");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_the_known_definition_defects_are_skipped() {
        let plan = Plan::get();
        let mut keys: Vec<&str> = plan.skipped.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys, ["cid-0", "dom-r4b"], "{:?}", plan.skipped);
    }

    #[test]
    fn every_primitive_regex_compiles() {
        let model = Model::r4();
        for name in [
            "string",
            "code",
            "id",
            "date",
            "dateTime",
            "instant",
            "time",
            "decimal",
            "uri",
            "base64Binary",
        ] {
            let def = model.type_def(name).unwrap();
            assert!(Plan::get().node(def.id).regex.is_some(), "{name}");
        }
    }

    #[test]
    fn regexes_use_ascii_whitespace() {
        let string = Regex::new(&anchored(r"[ \r\n\t\S]+")).unwrap();
        assert!(string.is_match("a\u{a0}b"));
        assert!(!string.is_match("a\u{b}b"));
        assert!(!string.is_match(""));
        let code = Regex::new(&anchored(r"[^\s]+(\s[^\s]+)*")).unwrap();
        assert!(code.is_match("a b"));
        assert!(!code.is_match("a  b"));
        assert!(!code.is_match(" a"));
        let unsigned = Regex::new(&anchored("[0]|([1-9][0-9]*)")).unwrap();
        assert!(!unsigned.is_match("01"));
    }

    #[test]
    fn backbone_rules_follow_content_references() {
        let model = Model::r4();
        let obs = model.type_def("Observation").unwrap();
        let rr = obs.child("referenceRange").unwrap().child.backbone.unwrap();
        assert!(Plan::get().node(rr).rules.iter().any(|r| r.key == "obs-3"));
        let ext = model.type_def("Extension").unwrap();
        assert!(Plan::get()
            .node(ext.id)
            .rules
            .iter()
            .any(|r| r.key == "ext-1"));
        let patient = model.type_def("Patient").unwrap();
        let keys: Vec<&str> = Plan::get()
            .node(patient.id)
            .rules
            .iter()
            .map(|r| r.key)
            .collect();
        assert!(keys.contains(&"dom-2") && keys.contains(&"dom-6") && !keys.contains(&"ele-1"));
    }
}
