//! Direct evaluation of the simple path expressions most search parameters are.
//!
//! About nine in ten R4 search expressions are plain navigation — `Observation.code`,
//! `(Observation.value as Quantity)`, `Observation.subject.where(resolve() is Patient)` —
//! for which a general FHIRPath evaluation spends its time on model lookups by name (and,
//! for a choice element, on trying every property of the object). Such expressions are
//! compiled here, from the FHIRPath AST, into steps whose JSON property names and FHIR
//! node types are resolved once; at extraction they are plain map lookups. Anything else
//! (`exists()`, indexers, `%resource`, `where` on other criteria) keeps the FHIRPath
//! evaluation, and a test checks that both give the same index values on every example.
//!
//! The items produced are the same `Node`s FHIRPath produces (same value and type), so
//! the same conversion code turns them into index values.

use serde_json::{Map, Value};
use vigil_fhir_model::{capitalize, Model, NodeDef, NodeId};
use vigil_fhirpath::{BinOp, Expr, ExprKind, Func, Item, Lit, Node, NodeType};

/// A compiled path expression: the union of its paths.
#[derive(Debug)]
pub(crate) struct FastExpr {
    paths: Vec<Vec<Step>>,
    /// The types the expression's items may have (for compiling composite components).
    pub(crate) result_types: Vec<NodeId>,
}

#[derive(Debug)]
enum Step {
    /// The children under this property.
    Child(Candidate),
    /// The children under whichever of these typed properties of a choice element
    /// (`valueQuantity`, `valueString`, ...) are present. Found by scanning the object's
    /// properties for the common prefix: cheaper than a lookup per possible type.
    Choice(Box<str>, Box<[Candidate]>),
    /// Keep the References whose target is of this type (or a subtype), as
    /// `where(resolve() is T)` decides it with references resolved by type.
    WhereResolveIs(Box<str>),
    /// Keep the elements whose (single, primitive) child `key` has this string value, as
    /// `where(system = 'phone')`.
    WhereEq(Box<str>, Box<str>),
}

/// A JSON property and the FHIR type of its values. The `_key` sibling of primitives
/// (their id and extensions) is not read: no index value depends on it.
#[derive(Debug)]
struct Candidate {
    key: Box<str>,
    ty: NodeType,
}

/// Where a path starts.
#[derive(Clone, Copy)]
pub(crate) enum Start<'m> {
    /// At the resource of this type: the path may begin with the type name.
    Resource(&'m str),
    /// At an element of this type (composite components).
    Node(NodeId),
}

/// Compile an expression's AST, or `None` when it is not a supported path.
pub(crate) fn compile(e: &Expr, start: Start<'_>, model: &'static Model) -> Option<FastExpr> {
    let mut paths = Vec::new();
    let mut result_types = Vec::new();
    compile_union(e, start, model, &mut paths, &mut result_types)?;
    result_types.sort_unstable();
    result_types.dedup();
    Some(FastExpr {
        paths,
        result_types,
    })
}

fn compile_union(
    e: &Expr,
    start: Start<'_>,
    model: &'static Model,
    paths: &mut Vec<Vec<Step>>,
    types: &mut Vec<NodeId>,
) -> Option<()> {
    if let ExprKind::Binary(op, l, r) = &e.kind {
        if *op != BinOp::Union {
            return None;
        }
        compile_union(l, start, model, paths, types)?;
        return compile_union(r, start, model, paths, types);
    }
    let mut steps = Vec::new();
    let tys = compile_path(e, start, model, &mut steps)?;
    types.extend(tys.iter().filter_map(|t| t.id));
    paths.push(steps);
    Some(())
}

/// A possible type of the items at some point of a path.
#[derive(Clone, Copy)]
struct Ty {
    name: &'static str,
    id: Option<NodeId>,
}

fn def_of(t: &Ty, model: &'static Model) -> Option<&'static NodeDef> {
    t.id.map(|id| model.node(id))
}

fn compile_path(
    e: &Expr,
    start: Start<'_>,
    model: &'static Model,
    steps: &mut Vec<Step>,
) -> Option<Vec<Ty>> {
    match &e.kind {
        ExprKind::Ident(name) => {
            let start_def = match start {
                Start::Resource(rt) => {
                    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                        // The type name at the start of a path: the resource itself.
                        if !model.is_subtype(rt, name) {
                            return None;
                        }
                        let def = model.type_def(rt)?;
                        return Some(vec![Ty {
                            name: &def.type_name,
                            id: Some(def.id),
                        }]);
                    }
                    model.type_def(rt)?
                }
                Start::Node(id) => {
                    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                        return None;
                    }
                    model.node(id)
                }
            };
            child_step(start_def, name, model, steps)
        }
        ExprKind::Member(target, name) => {
            let tys = compile_path(target, start, model, steps)?;
            let [t] = tys.as_slice() else { return None };
            let def = def_of(t, model)?;
            child_step(def, name, model, steps)
        }
        ExprKind::Fn {
            target: Some(target),
            func: Func::OfType,
            types: Some(ts),
            ..
        } => {
            if ts.namespace.as_deref() == Some("System") {
                return None;
            }
            let tys = compile_path(target, start, model, steps)?;
            let keep = |t: &Ty| {
                if model.is_primitive(t.name) {
                    t.name == ts.name
                } else if def_of(t, model)
                    .is_some_and(|d| d.kind == vigil_fhir_model::TypeKind::Backbone)
                {
                    ts.name == "BackboneElement" || ts.name == "Element" || t.name == ts.name
                } else {
                    model.is_subtype(t.name, &ts.name)
                }
            };
            match steps.last_mut() {
                Some(Step::Choice(prefix, cands)) if tys.len() == cands.len() => {
                    // Filter the typed properties statically.
                    let mut kept: Vec<Candidate> = std::mem::take(cands)
                        .into_vec()
                        .into_iter()
                        .zip(&tys)
                        .filter(|(_, t)| keep(t))
                        .map(|(c, _)| c)
                        .collect();
                    if kept.len() == 1 {
                        // One type left: a plain lookup of its property.
                        if let Some(c) = kept.pop() {
                            *steps.last_mut()? = Step::Child(c);
                        }
                    } else {
                        let prefix = std::mem::take(prefix);
                        *steps.last_mut()? = Step::Choice(prefix, kept.into_boxed_slice());
                    }
                    Some(tys.into_iter().filter(keep).collect())
                }
                _ if tys.iter().all(keep) => Some(tys),
                Some(Step::Child(_)) if !tys.iter().any(keep) => {
                    // A non-choice element of another type: never anything.
                    *steps.last_mut()? = Step::Choice("".into(), Box::new([]));
                    Some(Vec::new())
                }
                _ => None,
            }
        }
        ExprKind::Fn {
            target: Some(target),
            func: Func::Where,
            args,
            ..
        } => {
            let tys = compile_path(target, start, model, steps)?;
            let [arg] = args.as_slice() else { return None };
            match &arg.kind {
                ExprKind::Is(inner, ts)
                    if matches!(
                        &inner.kind,
                        ExprKind::Fn {
                            target: None,
                            func: Func::Resolve,
                            ..
                        }
                    ) && ts.namespace.is_none()
                        && tys.iter().all(|t| t.name == "Reference") =>
                {
                    steps.push(Step::WhereResolveIs(ts.name.as_str().into()));
                    Some(tys)
                }
                ExprKind::Binary(BinOp::Eq, l, r) => {
                    let ExprKind::Ident(key) = &l.kind else {
                        return None;
                    };
                    // only plain code-like string literals compare like a token
                    let ExprKind::Literal(Lit::String(text)) = &r.kind else {
                        return None;
                    };
                    if !text
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    {
                        return None;
                    }
                    // Only a single-valued primitive child compares like a string.
                    let [t] = tys.as_slice() else { return None };
                    let child = def_of(t, model)?.child(key)?;
                    let ty = child.child.types.first()?;
                    if child.child.is_array() || child.child.choice || !model.is_primitive(ty) {
                        return None;
                    }
                    steps.push(Step::WhereEq(key.as_str().into(), text.as_str().into()));
                    Some(tys)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn child_step(
    def: &'static NodeDef,
    name: &str,
    model: &'static Model,
    steps: &mut Vec<Step>,
) -> Option<Vec<Ty>> {
    if def.kind == vigil_fhir_model::TypeKind::Primitive {
        // Children of primitives live in `_name` siblings: left to FHIRPath.
        return None;
    }
    let m = def.child(name)?;
    let child = m.child;
    let mut cands = Vec::new();
    let mut tys = Vec::new();
    let mut push = |key: String, t: &'static str| -> Option<()> {
        if t == "Resource" || t == "DomainResource" {
            // Typed from the JSON's resourceType: left to FHIRPath.
            return None;
        }
        let id = model.child_node(child, t);
        cands.push(Candidate {
            key: key.into(),
            ty: id.map_or(NodeType::Unknown, NodeType::Known),
        });
        // A type the model does not know cannot be navigated further.
        tys.push(Ty {
            name: id.map_or(t, |i| &*model.node(i).type_name),
            id,
        });
        Some(())
    };
    if child.choice && m.choice_type.is_none() {
        for t in &child.types {
            push(format!("{}{}", child.name, capitalize(t)), t)?;
        }
        steps.push(Step::Choice(child.name.clone(), cands.into_boxed_slice()));
    } else {
        let t: &'static str = m
            .choice_type
            .or_else(|| child.types.first().map(|t| &**t))?;
        push(name.to_string(), t)?;
        steps.push(Step::Child(cands.pop()?));
    }
    Some(tys)
}

/// Reused buffers, so evaluating a path allocates nothing in the steady state.
#[derive(Default)]
pub(crate) struct Scratch<'a> {
    cur: Vec<Node<'a>>,
    next: Vec<Node<'a>>,
}

impl FastExpr {
    /// Evaluate from `focus`, appending the items to `out`. `resource` is the indexed
    /// resource (for contained references).
    pub(crate) fn eval<'a>(
        &self,
        focus: Node<'a>,
        resource: &'a Map<String, Value>,
        model: &'static Model,
        scratch: &mut Scratch<'a>,
        out: &mut Vec<Item<'a>>,
    ) {
        for path in &self.paths {
            scratch.cur.clear();
            scratch.cur.push(focus);
            for step in path {
                scratch.next.clear();
                match step {
                    Step::Child(c) => {
                        for n in &scratch.cur {
                            if let Some(v) = n.value.and_then(|v| v.get(&*c.key)) {
                                push_values(v, c.ty, &mut scratch.next);
                            }
                        }
                    }
                    Step::Choice(prefix, cands) => {
                        for n in &scratch.cur {
                            let Some(obj) = n.value.and_then(Value::as_object) else {
                                continue;
                            };
                            for (k, v) in obj {
                                if !k.starts_with(&**prefix) {
                                    continue;
                                }
                                if let Some(c) = cands.iter().find(|c| *c.key == **k) {
                                    push_values(v, c.ty, &mut scratch.next);
                                }
                            }
                        }
                    }
                    Step::WhereResolveIs(ty) => {
                        for n in &scratch.cur {
                            if reference_type(n, resource).is_some_and(|t| model.is_subtype(t, ty))
                            {
                                scratch.next.push(*n);
                            }
                        }
                    }
                    Step::WhereEq(key, want) => {
                        for n in &scratch.cur {
                            let got = n.value.and_then(|v| v.get(&**key)).and_then(Value::as_str);
                            if got == Some(&**want) {
                                scratch.next.push(*n);
                            }
                        }
                    }
                }
                std::mem::swap(&mut scratch.cur, &mut scratch.next);
                if scratch.cur.is_empty() {
                    break;
                }
            }
            out.extend(scratch.cur.drain(..).map(Item::Node));
        }
    }
}

/// As FHIRPath pushes the value(s) of a property: each non-null element of an array, or
/// the value itself. (FHIRPath also yields extension-only primitives from `_name`; they
/// have no value, so they give no index value either.)
fn push_values<'a>(value: &'a Value, ty: NodeType, out: &mut Vec<Node<'a>>) {
    match value {
        Value::Array(vs) => {
            out.extend(vs.iter().filter(|v| !v.is_null()).map(|v| Node {
                value: Some(v),
                ext: None,
                ty,
            }));
        }
        Value::Null => {}
        v => out.push(Node {
            value: Some(v),
            ext: None,
            ty,
        }),
    }
}

/// The type `resolve()` gives a reference with references resolved by type: the
/// contained resource's type for `#id` (the container's for `#`), else the type segment
/// of the (relative or absolute, possibly versioned) URL when it names a resource type.
/// Bundles resolve against their entries and are never compiled here.
fn reference_type<'a>(n: &Node<'a>, resource: &'a Map<String, Value>) -> Option<&'a str> {
    let reference = match n.value? {
        Value::Object(o) => o.get("reference")?.as_str()?,
        Value::String(s) => s.as_str(),
        _ => return None,
    };
    if let Some(id) = reference.strip_prefix('#') {
        let found = resource
            .get("contained")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
            });
        return match found {
            Some(c) => c.get("resourceType").and_then(Value::as_str),
            None if id.is_empty() => resource.get("resourceType").and_then(Value::as_str),
            None => None,
        };
    }
    let path = reference.split(['?', '#']).next().unwrap_or(reference);
    // From the end: `Type/id` or `Type/id/_history/vid`.
    let mut parts = path.trim_end_matches('/').rsplit('/');
    let _last = parts.next()?;
    let mut ty = parts.next()?;
    if ty == "_history" {
        let _id = parts.next()?;
        ty = parts.next()?;
    }
    Model::r4().is_resource_type(ty).then_some(ty)
}
