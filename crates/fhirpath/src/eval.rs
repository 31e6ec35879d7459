//! The evaluator: navigation over FHIR JSON, operators, and dispatch to functions.

use crate::ast::{BinOp, Expr, ExprKind, Lit, TypeSpec, UnOp};
use crate::lookup::{self, ChildKind};
use crate::temporal::level;
use crate::value::{decimal_equivalent, Collection, Item, Node, NodeType, Quantity, Str};
use crate::{EvalContext, Expression};
use rust_decimal::prelude::*;
use serde_json::Value;
use std::cmp::Ordering;
use vigil_fhir_model::TypeKind;

#[derive(Debug)]
pub(crate) struct EvalError {
    pub pos: usize,
    pub message: String,
}

pub(crate) type R<T> = Result<T, EvalError>;

pub(crate) fn fail<T>(pos: usize, message: impl Into<String>) -> R<T> {
    Err(EvalError {
        pos,
        message: message.into(),
    })
}

/// The evaluation environment of one (sub)expression.
pub(crate) struct Env<'e, 'a> {
    pub ctx: &'e EvalContext<'a>,
    pub this: Option<&'e Item<'a>>,
    pub index: Option<usize>,
    pub total: Option<&'e Collection<'a>>,
}

pub(crate) fn evaluate<'a>(expr: &Expression, ctx: &EvalContext<'a>) -> R<Collection<'a>> {
    let env = Env {
        ctx,
        this: None,
        index: None,
        total: None,
    };
    eval(&expr.root, &ctx.focus, &env)
}

pub(crate) fn eval<'a>(e: &Expr, focus: &[Item<'a>], env: &Env<'_, 'a>) -> R<Collection<'a>> {
    match &e.kind {
        ExprKind::Empty => Ok(Vec::new()),
        ExprKind::Literal(l) => Ok(vec![literal(l)]),
        ExprKind::This => Ok(match env.this {
            Some(t) => vec![t.clone()],
            None => focus.to_vec(),
        }),
        ExprKind::IndexVar => Ok(env
            .index
            .map(|i| vec![Item::Integer(i as i64)])
            .unwrap_or_default()),
        ExprKind::Total => Ok(env.total.cloned().unwrap_or_default()),
        ExprKind::Var(name) => variable(name, e.pos, env),
        ExprKind::Ident(name) => {
            let mut out = Vec::new();
            for item in focus {
                if let Item::Node(n) = item {
                    if name.starts_with(|c: char| c.is_ascii_uppercase())
                        && is_of_type_name(n, name)
                    {
                        out.push(item.clone());
                        continue;
                    }
                    children_named(n, name, &mut out);
                }
            }
            Ok(out)
        }
        ExprKind::Member(target, name) => {
            let mut t = eval(target, focus, env)?;
            if let [Item::Node(n)] = t[..] {
                // One node (the usual case on a path): reuse its collection for the
                // children rather than allocating another.
                t.clear();
                children_named(&n, name, &mut t);
                return Ok(t);
            }
            let mut out = Vec::with_capacity(t.len());
            for item in &t {
                match item {
                    Item::Node(n) => children_named(n, name, &mut out),
                    Item::Type {
                        namespace,
                        name: type_name,
                    } => match name.as_str() {
                        "namespace" => out.push(Item::string(*namespace)),
                        "name" => out.push(Item::string(*type_name)),
                        _ => {}
                    },
                    _ => {}
                }
            }
            Ok(out)
        }
        ExprKind::Call { name, .. } => fail(e.pos, format!("unresolved function {name}")),
        ExprKind::Fn {
            target,
            func,
            args,
            types,
        } => {
            let input = fn_input(target.as_deref(), focus, env)?;
            crate::functions::call(
                *func,
                input,
                args,
                types.as_ref(),
                target.is_some(),
                focus,
                env,
                e.pos,
            )
        }
        ExprKind::Indexer(target, index) => {
            let t = eval(target, focus, env)?;
            let i = eval(index, focus, env)?;
            let idx = match singleton(&i, index.pos)? {
                None => return Ok(Vec::new()),
                Some(v) => v.as_integer().ok_or_else(|| EvalError {
                    pos: index.pos,
                    message: "index must be an integer".into(),
                })?,
            };
            Ok(usize::try_from(idx)
                .ok()
                .and_then(|i| t.get(i).cloned())
                .into_iter()
                .collect())
        }
        ExprKind::Unary(op, inner) => {
            let v = eval(inner, focus, env)?;
            let Some(item) = singleton(&v, e.pos)? else {
                return Ok(Vec::new());
            };
            if *op == UnOp::Pos {
                return Ok(vec![item.system()]);
            }
            Ok(match item.system() {
                Item::Integer(i) => vec![Item::Integer(-i)],
                Item::Long(i) => vec![Item::Long(-i)],
                Item::Decimal(d) => vec![Item::Decimal(-d)],
                Item::Quantity(q) => vec![Item::Quantity(Quantity {
                    value: -q.value,
                    unit: q.unit,
                })],
                other => return fail(e.pos, format!("cannot negate {}", other.type_info().1)),
            })
        }
        ExprKind::Binary(op, l, r) => binary(*op, l, r, focus, env, e.pos),
        ExprKind::Is(inner, ts) => {
            let v = eval(inner, focus, env)?;
            match singleton(&v, e.pos)? {
                None => Ok(Vec::new()),
                Some(item) => Ok(vec![Item::Boolean(is_type(item, ts))]),
            }
        }
        ExprKind::As(inner, ts) => {
            let v = eval(inner, focus, env)?;
            if v.len() > 1 {
                return fail(e.pos, "'as' needs a single item");
            }
            Ok(v.into_iter().filter(|i| is_exact_type(i, ts)).collect())
        }
    }
}

fn literal<'a>(l: &Lit) -> Item<'a> {
    match l {
        Lit::Boolean(b) => Item::Boolean(*b),
        Lit::Integer(i) => Item::Integer(*i),
        Lit::Long(i) => Item::Long(*i),
        Lit::Decimal(d) => Item::Decimal(*d),
        Lit::String(s) => Item::string(s.as_str()),
        Lit::Date(d) => Item::Date(*d),
        Lit::DateTime(d) => Item::DateTime(*d),
        Lit::Time(t) => Item::Time(*t),
        Lit::Quantity(v, u) => Item::Quantity(Quantity::new(*v, u)),
    }
}

fn variable<'a>(name: &str, pos: usize, env: &Env<'_, 'a>) -> R<Collection<'a>> {
    let ctx = env.ctx;
    if let Some(v) = ctx.variables.get(name) {
        return Ok(v.clone());
    }
    Ok(match name {
        "resource" => ctx.resource.clone().into_iter().collect(),
        "rootResource" => ctx
            .root_resource
            .clone()
            .or_else(|| ctx.resource.clone())
            .into_iter()
            .collect(),
        "context" => ctx.focus.clone(),
        "ucum" => vec![Item::string("http://unitsofmeasure.org")],
        "sct" => vec![Item::string("http://snomed.info/sct")],
        "loinc" => vec![Item::string("http://loinc.org")],
        _ => {
            if let Some(vs) = name.strip_prefix("vs-") {
                return Ok(vec![Item::string(format!(
                    "http://hl7.org/fhir/ValueSet/{vs}"
                ))]);
            }
            if let Some(ext) = name.strip_prefix("ext-") {
                return Ok(vec![Item::string(format!(
                    "http://hl7.org/fhir/StructureDefinition/{ext}"
                ))]);
            }
            return fail(pos, format!("undefined variable %{name}"));
        }
    })
}

/// The single item of a collection; an error for more than one.
pub(crate) fn singleton<'c, 'a>(c: &'c [Item<'a>], pos: usize) -> R<Option<&'c Item<'a>>> {
    match c {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => fail(pos, format!("expected a single item, got {}", c.len())),
    }
}

/// Whether a node's type is `name` or derives from it (used for `Patient.` at path start).
fn is_of_type_name(n: &Node<'_>, name: &str) -> bool {
    match n.ty {
        NodeType::Known(id) => lookup::tables().node_is_subtype(id, name),
        NodeType::Unknown => lookup::tables().is_subtype(n.type_name(), name),
    }
}

fn push_values<'a>(
    value: Option<&'a Value>,
    ext: Option<&'a Value>,
    ty: impl Fn(&'a Value) -> NodeType,
    out: &mut Collection<'a>,
) {
    match (value, ext) {
        (Some(Value::Array(vs)), ext) => {
            let exts = ext.and_then(Value::as_array);
            out.reserve(vs.len());
            for (i, v) in vs.iter().enumerate() {
                let e = exts.and_then(|a| a.get(i)).filter(|e| !e.is_null());
                let v = (!v.is_null()).then_some(v);
                if v.is_none() && e.is_none() {
                    continue;
                }
                out.push(Item::Node(Node {
                    value: v,
                    ext: e,
                    ty: v.map_or(NodeType::Unknown, &ty),
                }));
            }
        }
        (None, Some(Value::Array(es))) => {
            for e in es.iter().filter(|e| !e.is_null()) {
                out.push(Item::Node(Node {
                    value: None,
                    ext: Some(e),
                    ty: NodeType::Unknown,
                }));
            }
        }
        (Some(Value::Null), None) | (None, None) => {}
        (v, e) => {
            let v = v.filter(|v| !v.is_null());
            let t = v.map_or(NodeType::Unknown, &ty);
            out.push(Item::Node(Node {
                value: v,
                ext: e,
                ty: t,
            }));
        }
    }
}

pub(crate) fn resource_type(v: &Value) -> NodeType {
    v.as_object()
        .and_then(|o| lookup::get(o, "resourceType"))
        .and_then(Value::as_str)
        .and_then(|t| lookup::tables().type_id(t))
        .map_or(NodeType::Unknown, NodeType::Known)
}

/// The type of JSON the model does not describe: a resource if it says so, else unknown.
fn untyped(v: &Value) -> NodeType {
    if v.is_object() {
        resource_type(v)
    } else {
        NodeType::Unknown
    }
}

/// Append the children called `name` of a node.
pub(crate) fn children_named<'a>(n: &Node<'a>, name: &str, out: &mut Collection<'a>) {
    let Some(obj) = node_object(n) else { return };
    let NodeType::Known(id) = n.ty else {
        // untyped JSON: plain property access
        let v = lookup::get(obj, name);
        let e = lookup::get_ext(obj, name, None);
        push_values(v, e, untyped, out);
        return;
    };
    let found = lookup::tables().child(id, name);
    model_children(obj, id, &found, name, out);
}

/// The JSON object holding a node's children: its value, or for a primitive the `_name`
/// sibling object with its id and extensions.
fn node_object<'a>(n: &Node<'a>) -> Option<&'a serde_json::Map<String, Value>> {
    if n.is_primitive() {
        n.ext.and_then(Value::as_object)
    } else {
        n.object()
    }
}

/// `children_named` on a typed node, with the child already looked up.
fn model_children<'a>(
    obj: &'a serde_json::Map<String, Value>,
    id: vigil_fhir_model::NodeId,
    found: &lookup::ChildLookup<'_>,
    name: &str,
    out: &mut Collection<'a>,
) {
    let tables = lookup::tables();
    let Some(entry) = found.entry() else {
        // Not in the model (e.g. content of a newer version): still reachable, untyped.
        if let Some(v) = lookup::get(obj, name) {
            push_values(Some(v), lookup::get_ext(obj, name, None), untyped, out);
        }
        return;
    };
    match entry.kind {
        ChildKind::ChoiceBase => {
            // `value` on `value[x]`: whichever typed property is present. Every typed
            // name starts with the base name, so other keys need no lookup.
            let m = entry.m;
            for (k, v) in obj {
                if k.len() <= name.len() || !lookup::has_prefix(k, name) {
                    continue;
                }
                let km = tables.child(id, k);
                let Some(ke) = km.entry() else { continue };
                if !lookup::same_child(ke.m.child, m.child) {
                    continue;
                }
                if let Some(t) = ke.m.choice_type {
                    let tid = match ke.kind {
                        ChildKind::Typed { id, .. } => id,
                        _ => lookup::tables_child_node(m.child, t),
                    };
                    let ext = lookup::get_ext(obj, k, Some(&ke.ext_name));
                    push_values(
                        Some(v),
                        ext,
                        |_| tid.map_or(NodeType::Unknown, NodeType::Known),
                        out,
                    );
                }
            }
            // primitives with only an extension (`_valueString`)
            for (k, e) in obj {
                let Some(base) = k.strip_prefix('_') else {
                    continue;
                };
                if !lookup::has_prefix(base, name) {
                    continue;
                }
                if lookup::contains(obj, base) {
                    continue;
                }
                let km = tables.child(id, base);
                if let Some(ke) = km.entry() {
                    if lookup::same_child(ke.m.child, m.child) {
                        push_values(None, Some(e), |_| NodeType::Unknown, out);
                    }
                }
            }
        }
        ChildKind::Resource => push_values(lookup::get(obj, name), None, resource_type, out),
        ChildKind::Typed { id, primitive } => {
            let v = lookup::get(obj, name);
            let e = if primitive {
                lookup::get_ext(obj, name, Some(&entry.ext_name))
            } else {
                None
            };
            push_values(v, e, |_| id.map_or(NodeType::Unknown, NodeType::Known), out);
        }
    }
}

/// The children called `name` of a node, as one item when there is one: a typed element
/// whose JSON value is not an array (the usual case for `code`, `status`, `system`...)
/// needs no collection.
enum Children<'a> {
    Empty,
    One(Item<'a>),
    Many(Collection<'a>),
}

fn child_single<'a>(n: &Node<'a>, name: &str) -> Children<'a> {
    let Some(obj) = node_object(n) else {
        return Children::Empty;
    };
    let NodeType::Known(id) = n.ty else {
        let mut out = Vec::new();
        children_named(n, name, &mut out);
        return Children::Many(out);
    };
    let found = lookup::tables().child(id, name);
    let Some(&lookup::ChildEntry {
        kind: ChildKind::Typed { id: tid, primitive },
        ref ext_name,
        ..
    }) = found.entry()
    else {
        let mut out = Vec::new();
        model_children(obj, id, &found, name, &mut out);
        return Children::Many(out);
    };
    let v = lookup::get(obj, name);
    let e = if primitive {
        lookup::get_ext(obj, name, Some(ext_name))
    } else {
        None
    };
    let ty = tid.map_or(NodeType::Unknown, NodeType::Known);
    // The same cases as `push_values`.
    match (v, e) {
        (Some(Value::Array(_)), _) | (None, Some(Value::Array(_))) => {
            let mut out = Vec::new();
            push_values(v, e, |_| ty, &mut out);
            Children::Many(out)
        }
        (Some(Value::Null), None) | (None, None) => Children::Empty,
        (v, e) => {
            let v = v.filter(|v| !v.is_null());
            let ty = if v.is_some() { ty } else { NodeType::Unknown };
            Children::One(Item::Node(Node {
                value: v,
                ext: e,
                ty,
            }))
        }
    }
}

/// All children of a node, in document order.
pub(crate) fn all_children<'a>(n: &Node<'a>, out: &mut Collection<'a>) {
    let obj = if n.is_primitive() {
        n.ext.and_then(Value::as_object)
    } else {
        n.object()
    };
    let Some(obj) = obj else { return };
    let tables = lookup::tables();
    for (k, v) in obj {
        if k == "resourceType" || k == "fhir_comments" {
            continue;
        }
        if let Some(base) = k.strip_prefix('_') {
            if !lookup::contains(obj, base) {
                push_values(None, Some(v), |_| NodeType::Unknown, out);
            }
            continue;
        }
        let found = match n.ty {
            NodeType::Known(id) => tables.child(id, k),
            NodeType::Unknown => lookup::ChildLookup::Missing,
        };
        let entry = found.entry();
        let ext = lookup::get_ext(obj, k, entry.map(|e| &*e.ext_name));
        match entry.map(|e| e.kind) {
            Some(ChildKind::Resource) => push_values(Some(v), None, resource_type, out),
            Some(ChildKind::Typed { id, .. }) => push_values(
                Some(v),
                ext,
                |_| id.map_or(NodeType::Unknown, NodeType::Known),
                out,
            ),
            Some(ChildKind::ChoiceBase) => {
                // A choice's base name as a JSON property (`"value": ...`) is not valid
                // FHIR JSON; typed as the model's first type, as the model lookup did.
                let m = entry.map(|e| e.m);
                let id = m.and_then(|m| {
                    let t = m.child.types.first().map_or("", |t| &**t);
                    lookup::tables_child_node(m.child, t)
                });
                let t = m.and_then(|m| m.child.types.first().map(|t| &**t));
                if matches!(t, Some("Resource") | Some("DomainResource")) {
                    push_values(Some(v), None, resource_type, out);
                } else {
                    push_values(
                        Some(v),
                        ext,
                        |_| id.map_or(NodeType::Unknown, NodeType::Known),
                        out,
                    );
                }
            }
            None => push_values(Some(v), ext, untyped, out),
        }
    }
}

/// `as` / `ofType` type test: like `is`, but a FHIR primitive matches only its own type
/// (`code.ofType(string)` is empty while `code is string` is true, as the suite requires).
pub(crate) fn is_exact_type(item: &Item<'_>, ts: &TypeSpec) -> bool {
    if let Item::Node(n) = item {
        if n.is_primitive() && ts.namespace.as_deref() != Some("System") {
            return n.type_name() == ts.name;
        }
    }
    is_type(item, ts)
}

/// `is` type test.
pub(crate) fn is_type(item: &Item<'_>, ts: &TypeSpec) -> bool {
    let (ns, name) = item.type_info();
    match ts.namespace.as_deref() {
        Some("System") => {
            if ns != "System" {
                return false;
            }
            name == ts.name
        }
        Some("FHIR") => ns == "FHIR" && fhir_is(item, &ts.name),
        _ => {
            if ns == "FHIR" {
                fhir_is(item, &ts.name)
            } else {
                name == ts.name
            }
        }
    }
}

fn fhir_is(item: &Item<'_>, name: &str) -> bool {
    let Item::Node(n) = item else { return false };
    if let Some(d) = n.def() {
        if d.kind == TypeKind::Backbone {
            return name == "BackboneElement" || name == "Element" || &*d.type_name == name;
        }
        return lookup::tables().node_is_subtype(d.id, name);
    }
    n.type_name() == name
}

/// A logical operand: a boolean as itself, any other single item as true (singleton
/// evaluation of collections).
fn to_bool_3(c: &[Item<'_>], pos: usize) -> R<Option<bool>> {
    match singleton(c, pos)? {
        None => Ok(None),
        Some(i) => Ok(Some(i.as_bool().unwrap_or(true))),
    }
}

/// Operators whose result is empty or a single Boolean: they can be computed without
/// building a collection, and their operands never reach the result.
pub(crate) fn is_boolean_op(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::And
            | BinOp::Or
            | BinOp::Xor
            | BinOp::Implies
            | BinOp::Eq
            | BinOp::Ne
            | BinOp::Equiv
            | BinOp::NotEquiv
            | BinOp::Lt
            | BinOp::Gt
            | BinOp::Le
            | BinOp::Ge
            | BinOp::In
            | BinOp::Contains
    )
}

/// An evaluated operand of a boolean operator: a single item (a literal or `$this`,
/// without allocating a collection) or a collection.
enum Operand<'x> {
    One(Item<'x>),
    Many(Collection<'x>),
}

impl<'x> Operand<'x> {
    fn as_slice(&self) -> &[Item<'x>] {
        match self {
            Operand::One(i) => std::slice::from_ref(i),
            Operand::Many(c) => c,
        }
    }
}

/// Evaluate an operand whose items do not outlive the operator. A string literal is
/// borrowed from the expression: materialising it would allocate the string and a
/// collection on every evaluation (e.g. once per item inside `where(code = 'x')`).
fn operand<'x, 'a: 'x>(e: &'x Expr, focus: &[Item<'a>], env: &Env<'_, 'a>) -> R<Operand<'x>> {
    Ok(match &e.kind {
        ExprKind::Literal(Lit::String(s)) => Operand::One(Item::String(Str::Borrowed(s))),
        ExprKind::Literal(l) => Operand::One(literal(l)),
        ExprKind::This if env.this.is_some() => match env.this {
            Some(t) => Operand::One(t.clone()),
            None => Operand::Many(Vec::new()),
        },
        // An element of the single focus node: usually one value, taken without a
        // collection.
        ExprKind::Ident(_) => match single_element(e, focus) {
            Some(Children::One(item)) => Operand::One(item),
            Some(Children::Empty) => Operand::Many(Vec::new()),
            Some(Children::Many(v)) => Operand::Many(v),
            None => Operand::Many(eval(e, focus, env)?),
        },
        _ => Operand::Many(eval(e, focus, env)?),
    })
}

/// Whether an expression always yields empty or a single Boolean, which `truth`
/// computes without building a collection.
pub(crate) fn is_boolean_expr(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Binary(op, _, _) => is_boolean_op(*op),
        ExprKind::Fn { func, .. } => crate::functions::is_boolean_fn(*func),
        _ => false,
    }
}

/// An expression's value as a logical operand (`None` for empty), as `to_bool_3` reads
/// it, without building the collection when the expression is a boolean operator or
/// function. For those it is also the exact value (empty or one Boolean).
pub(crate) fn truth<'a>(e: &Expr, focus: &[Item<'a>], env: &Env<'_, 'a>) -> R<Option<bool>> {
    match &e.kind {
        ExprKind::Binary(op, l, r) if is_boolean_op(*op) => {
            boolean_op(*op, l, r, focus, env, e.pos)
        }
        ExprKind::Fn {
            target, func, args, ..
        } if crate::functions::is_boolean_fn(*func) => {
            let input = fn_input(target.as_deref(), focus, env)?;
            crate::functions::boolean_fn(*func, &input, args, focus, env, e.pos)
        }
        _ => to_bool_3(&eval(e, focus, env)?, e.pos),
    }
}

/// The input of a function call. Borrowed when it is `$this` or the focus, and a single
/// item when the target is an element that holds one value: most functions only read
/// their input, and building a collection for it on every call was a measurable cost.
pub(crate) enum Input<'s, 'a> {
    Borrowed(&'s [Item<'a>]),
    One(Item<'a>),
    Owned(Collection<'a>),
}

impl<'a> std::ops::Deref for Input<'_, 'a> {
    type Target = [Item<'a>];
    fn deref(&self) -> &[Item<'a>] {
        match self {
            Input::Borrowed(s) => s,
            Input::One(i) => std::slice::from_ref(i),
            Input::Owned(v) => v,
        }
    }
}

impl<'a> Input<'_, 'a> {
    /// The input as a collection of its own (copied only when borrowed).
    pub(crate) fn into_owned(self) -> Collection<'a> {
        match self {
            Input::Borrowed(s) => s.to_vec(),
            Input::One(i) => vec![i],
            Input::Owned(v) => v,
        }
    }
}

/// The input of a function call: its target's value, else `$this` or the focus.
fn fn_input<'s, 'a>(
    target: Option<&Expr>,
    focus: &'s [Item<'a>],
    env: &'s Env<'_, 'a>,
) -> R<Input<'s, 'a>> {
    Ok(match target {
        Some(t) => match single_element(t, focus) {
            Some(Children::One(item)) => Input::One(item),
            Some(Children::Empty) => Input::Owned(Vec::new()),
            Some(Children::Many(v)) => Input::Owned(v),
            None => Input::Owned(eval(t, focus, env)?),
        },
        None => match env.this {
            Some(t) => Input::Borrowed(std::slice::from_ref(t)),
            None => Input::Borrowed(focus),
        },
    })
}

/// An identifier on a single focus node (`code` in `code = 'x'` inside `where`), by
/// `child_single`; `None` for anything else, which the general evaluation handles.
/// Capitalised names may be type names (`Patient`), so they are left to it too.
fn single_element<'a>(e: &Expr, focus: &[Item<'a>]) -> Option<Children<'a>> {
    match (&e.kind, focus) {
        (ExprKind::Ident(name), [Item::Node(n)])
            if !name.starts_with(|c: char| c.is_ascii_uppercase()) =>
        {
            Some(child_single(n, name))
        }
        _ => None,
    }
}

/// A boolean operator (`is_boolean_op`); `None` is the empty result.
pub(crate) fn boolean_op<'a>(
    op: BinOp,
    l: &Expr,
    r: &Expr,
    focus: &[Item<'a>],
    env: &Env<'_, 'a>,
    pos: usize,
) -> R<Option<bool>> {
    // Logical operators: three-valued, with short-circuit where the answer is known.
    if let BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies = op {
        let a = truth(l, focus, env)?;
        let short = match (op, a) {
            (BinOp::And, Some(false)) => Some(false),
            (BinOp::Or, Some(true)) => Some(true),
            (BinOp::Implies, Some(false)) => Some(true),
            _ => None,
        };
        if short.is_some() {
            return Ok(short);
        }
        let b = truth(r, focus, env)?;
        return Ok(match op {
            BinOp::And => match (a, b) {
                (Some(true), Some(true)) => Some(true),
                (_, Some(false)) => Some(false),
                _ => None,
            },
            BinOp::Or => match (a, b) {
                (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            BinOp::Xor => match (a, b) {
                (Some(x), Some(y)) => Some(x != y),
                _ => None,
            },
            _ => match (a, b) {
                (Some(true), b) => b,
                (None, Some(true)) => Some(true),
                _ => None,
            },
        });
    }
    let a = operand(l, focus, env)?;
    let b = operand(r, focus, env)?;
    let (a, b) = (a.as_slice(), b.as_slice());
    match op {
        BinOp::Eq | BinOp::Ne => {
            if a.is_empty() || b.is_empty() {
                return Ok(None);
            }
            Ok(collections_equal(a, b).map(|e| if op == BinOp::Eq { e } else { !e }))
        }
        BinOp::Equiv | BinOp::NotEquiv => {
            let eq = collections_equivalent(a, b);
            Ok(Some(if op == BinOp::Equiv { eq } else { !eq }))
        }
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
            let (Some(x), Some(y)) = (singleton(a, l.pos)?, singleton(b, r.pos)?) else {
                return Ok(None);
            };
            let Some(ord) = compare(x, y, pos)? else {
                return Ok(None);
            };
            Ok(Some(match op {
                BinOp::Lt => ord == Ordering::Less,
                BinOp::Gt => ord == Ordering::Greater,
                BinOp::Le => ord != Ordering::Greater,
                _ => ord != Ordering::Less,
            }))
        }
        _ => {
            // In / Contains
            let (elem, coll, epos) = if op == BinOp::In {
                (a, b, l.pos)
            } else {
                (b, a, r.pos)
            };
            Ok(singleton(elem, epos)?.map(|x| coll.iter().any(|c| equals(x, c) == Some(true))))
        }
    }
}

fn binary<'a>(
    op: BinOp,
    l: &Expr,
    r: &Expr,
    focus: &[Item<'a>],
    env: &Env<'_, 'a>,
    pos: usize,
) -> R<Collection<'a>> {
    if is_boolean_op(op) {
        return Ok(boolean_op(op, l, r, focus, env, pos)?
            .map(Item::Boolean)
            .into_iter()
            .collect());
    }
    let a = eval(l, focus, env)?;
    let b = eval(r, focus, env)?;
    match op {
        BinOp::Union => {
            // Deduplicate the left operand in place (keeping first occurrences, in
            // order), then append what is new from the right: no third collection.
            let mut out = a;
            let mut kept = 0;
            for j in 0..out.len() {
                if !out[..kept].iter().any(|o| equals(o, &out[j]) == Some(true)) {
                    out.swap(kept, j);
                    kept += 1;
                }
            }
            out.truncate(kept);
            out.reserve(b.len());
            for i in b {
                if !out.iter().any(|o| equals(o, &i) == Some(true)) {
                    out.push(i);
                }
            }
            Ok(out)
        }
        BinOp::Concat => {
            let s = |c: &[Item<'a>], p| -> R<String> {
                Ok(match singleton(c, p)? {
                    None => String::new(),
                    Some(i) => i.as_str().map(|s| s.to_string()).ok_or_else(|| EvalError {
                        pos: p,
                        message: "& needs strings".into(),
                    })?,
                })
            };
            Ok(vec![Item::string(s(&a, l.pos)? + &s(&b, r.pos)?)])
        }
        _ => {
            let (Some(x), Some(y)) = (singleton(&a, l.pos)?, singleton(&b, r.pos)?) else {
                return Ok(Vec::new());
            };
            arithmetic(op, &x.system(), &y.system(), pos)
        }
    }
}

fn to_dec(i: &Item<'_>) -> Option<Decimal> {
    match i {
        Item::Integer(v) | Item::Long(v) => Some(Decimal::from(*v)),
        Item::Decimal(d) => Some(*d),
        _ => None,
    }
}

fn arithmetic<'a>(op: BinOp, x: &Item<'a>, y: &Item<'a>, pos: usize) -> R<Collection<'a>> {
    use Item::*;
    let out: Option<Item<'a>> = match (x, y) {
        (Integer(a), Integer(b))
        | (Long(a), Long(b))
        | (Integer(a), Long(b))
        | (Long(a), Integer(b)) => {
            let long = matches!(x, Long(_)) || matches!(y, Long(_));
            let wrap = |v: Option<i64>| -> Option<Item<'a>> {
                let v = v?;
                if long {
                    Some(Long(v))
                } else {
                    i32::try_from(v).ok().map(|v| Integer(i64::from(v)))
                }
            };
            match op {
                BinOp::Add => wrap(a.checked_add(*b)),
                BinOp::Sub => wrap(a.checked_sub(*b)),
                BinOp::Mul => wrap(a.checked_mul(*b)),
                BinOp::Div => {
                    if *b == 0 {
                        None
                    } else {
                        wrap(a.checked_div(*b))
                    }
                }
                BinOp::Mod => {
                    if *b == 0 {
                        None
                    } else {
                        wrap(a.checked_rem(*b))
                    }
                }
                BinOp::DivDec => {
                    if *b == 0 {
                        None
                    } else {
                        rust_decimal::Decimal::from(*a)
                            .checked_div(rust_decimal::Decimal::from(*b))
                            .map(|d| Decimal(d.normalize()))
                    }
                }
                _ => None,
            }
        }
        (Integer(_) | Long(_) | Decimal(_), Integer(_) | Long(_) | Decimal(_)) => {
            let (a, b) = (to_dec(x).unwrap_or_default(), to_dec(y).unwrap_or_default());
            match op {
                BinOp::Add => a.checked_add(b).map(Decimal),
                BinOp::Sub => a.checked_sub(b).map(Decimal),
                BinOp::Mul => a.checked_mul(b).map(Decimal),
                BinOp::DivDec => {
                    if b.is_zero() {
                        None
                    } else {
                        a.checked_div(b).map(|d| Decimal(d.normalize()))
                    }
                }
                BinOp::Div => {
                    if b.is_zero() {
                        None
                    } else {
                        a.checked_div(b)
                            .and_then(|d| d.trunc().to_i64())
                            .map(Integer)
                    }
                }
                BinOp::Mod => {
                    if b.is_zero() {
                        None
                    } else {
                        a.checked_rem(b).map(Decimal)
                    }
                }
                _ => None,
            }
        }
        (String(a), String(b)) if op == BinOp::Add => {
            Some(Item::string(format!("{}{}", &**a, &**b)))
        }
        (Date(d), Quantity(q)) | (DateTime(d), Quantity(q)) => {
            let sign = match op {
                BinOp::Add => 1.0,
                BinOp::Sub => -1.0,
                _ => return fail(pos, "only + and - apply to dates"),
            };
            // UCUM years and months ('a', 'mo') are mean lengths, not calendar units
            if !is_time_unit(&q.unit) || &*q.unit == "a" || &*q.unit == "mo" {
                return fail(
                    pos,
                    format!(
                        "cannot add '{}' to a date: use a calendar duration (year, month, ...)",
                        q.unit
                    ),
                );
            }
            let v = q.value.to_f64().unwrap_or(0.0) * sign;
            d.add(v, &q.unit).map(|r| {
                if matches!(x, Date(_)) {
                    Date(r)
                } else {
                    DateTime(r)
                }
            })
        }
        (Time(t), Quantity(q)) => {
            let sign = match op {
                BinOp::Add => 1.0,
                BinOp::Sub => -1.0,
                _ => return fail(pos, "only + and - apply to times"),
            };
            t.add(q.value.to_f64().unwrap_or(0.0) * sign, &q.unit)
                .map(Time)
        }
        (Quantity(a), Quantity(b)) => quantity_arith(op, a, b),
        (Quantity(a), Integer(_) | Long(_) | Decimal(_)) => {
            let n = to_dec(y).unwrap_or_default();
            match op {
                BinOp::Mul => a.value.checked_mul(n).map(|v| {
                    Quantity(crate::Quantity {
                        value: v,
                        unit: a.unit.clone(),
                    })
                }),
                BinOp::DivDec if !n.is_zero() => a.value.checked_div(n).map(|v| {
                    Quantity(crate::Quantity {
                        value: v.normalize(),
                        unit: a.unit.clone(),
                    })
                }),
                BinOp::DivDec => None,
                _ => return fail(pos, "invalid quantity arithmetic"),
            }
        }
        (Integer(_) | Long(_) | Decimal(_), Quantity(b)) if op == BinOp::Mul => {
            let n = to_dec(x).unwrap_or_default();
            n.checked_mul(b.value).map(|v| {
                Quantity(crate::Quantity {
                    value: v,
                    unit: b.unit.clone(),
                })
            })
        }
        _ => {
            return fail(
                pos,
                format!(
                    "cannot apply {:?} to {} and {}",
                    op,
                    x.type_info().1,
                    y.type_info().1
                ),
            )
        }
    };
    Ok(out.into_iter().collect())
}

fn is_time_unit(u: &str) -> bool {
    crate::temporal::calendar_unit(u).is_some()
}

fn quantity_arith<'a>(op: BinOp, a: &Quantity, b: &Quantity) -> Option<Item<'a>> {
    match op {
        BinOp::Add | BinOp::Sub => {
            let bv = if a.unit == b.unit {
                b.value
            } else {
                crate::ucum::convert(b.value, &b.unit, &a.unit)?
            };
            let v = if op == BinOp::Add {
                a.value.checked_add(bv)?
            } else {
                a.value.checked_sub(bv)?
            };
            Some(Item::Quantity(Quantity {
                value: v,
                unit: a.unit.clone(),
            }))
        }
        BinOp::Mul => {
            let v = a.value.checked_mul(b.value)?;
            let unit = match (&*a.unit, &*b.unit) {
                ("1", u) | (u, "1") => u.to_string(),
                (x, y) => format!("{x}.{y}"),
            };
            Some(Item::Quantity(Quantity::new(v, &unit)))
        }
        BinOp::DivDec => {
            if b.value.is_zero() {
                return None;
            }
            let (bv, unit) = if a.unit == b.unit {
                (b.value, "1".to_string())
            } else if let Some(c) = crate::ucum::convert(b.value, &b.unit, &a.unit) {
                (c, "1".to_string())
            } else {
                (b.value, format!("({})/({})", a.unit, b.unit))
            };
            Some(Item::Quantity(Quantity::new(
                a.value.checked_div(bv)?.normalize(),
                &unit,
            )))
        }
        _ => None,
    }
}

/// Three-valued equality of two items (`None` when unknown, e.g. differing precision).
pub(crate) fn equals(a: &Item<'_>, b: &Item<'_>) -> Option<bool> {
    use Item::*;
    let (x, y) = (a.system(), b.system());
    match (&x, &y) {
        (Node(n), Node(m)) => Some(
            lookup::json_opt_eq(n.value, m.value)
                && (n.value.is_some() || lookup::json_opt_eq(n.ext, m.ext)),
        ),
        (Node(_), Quantity(_)) | (Quantity(_), Node(_)) => {
            let (p, q) = (a.as_quantity()?, b.as_quantity()?);
            p.compare(&q).map(|o| o == Ordering::Equal)
        }
        (Quantity(p), Quantity(q)) => p.compare(q).map(|o| o == Ordering::Equal),
        (Boolean(p), Boolean(q)) => Some(p == q),
        (String(p), String(q)) => Some(**p == **q),
        (Date(p) | DateTime(p), Date(q) | DateTime(q)) => {
            p.compare(q).map(|o| o == Ordering::Equal)
        }
        (Time(p), Time(q)) => p.compare(q).map(|o| o == Ordering::Equal),
        _ => match (to_dec(&x), to_dec(&y)) {
            (Some(p), Some(q)) => Some(p == q),
            _ => Some(false),
        },
    }
}

pub(crate) fn equivalent(a: &Item<'_>, b: &Item<'_>) -> bool {
    use Item::*;
    let (x, y) = (a.system(), b.system());
    match (&x, &y) {
        (String(p), String(q)) => normalize_ws(p) == normalize_ws(q),
        (Decimal(_), _) | (_, Decimal(_)) => match (to_dec(&x), to_dec(&y)) {
            (Some(p), Some(q)) => decimal_equivalent(p, q),
            _ => false,
        },
        (Date(p) | DateTime(p), Date(q) | DateTime(q)) => {
            level(p.precision) == level(q.precision) && p.compare(q) == Some(Ordering::Equal)
        }
        (Time(p), Time(q)) => {
            level(p.precision) == level(q.precision) && p.compare(q) == Some(Ordering::Equal)
        }
        (Quantity(_), _) | (_, Quantity(_)) => match (a.as_quantity(), b.as_quantity()) {
            (Some(p), Some(q)) => p.equivalent(&q),
            _ => false,
        },
        (Node(n), Node(m)) => match (n.object(), m.object()) {
            (Some(o1), Some(o2)) => {
                // equivalent when every child is equivalent (ignoring ids)
                let keys1: Vec<&std::string::String> = o1.keys().filter(|k| *k != "id").collect();
                let keys2: Vec<&std::string::String> = o2.keys().filter(|k| *k != "id").collect();
                if keys1.len() != keys2.len() {
                    return false;
                }
                let mut ca = Vec::new();
                let mut cb = Vec::new();
                all_children(n, &mut ca);
                all_children(m, &mut cb);
                collections_equivalent(&ca, &cb)
            }
            _ => lookup::json_opt_eq(n.value, m.value),
        },
        _ => equals(a, b) == Some(true),
    }
}

fn normalize_ws(s: &str) -> std::string::String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

pub(crate) fn collections_equal(a: &[Item<'_>], b: &[Item<'_>]) -> Option<bool> {
    if a.len() != b.len() {
        return Some(false);
    }
    let mut unknown = false;
    for (x, y) in a.iter().zip(b) {
        match equals(x, y) {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown {
        None
    } else {
        Some(true)
    }
}

pub(crate) fn collections_equivalent(a: &[Item<'_>], b: &[Item<'_>]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut used = vec![false; b.len()];
    'outer: for x in a {
        for (j, y) in b.iter().enumerate() {
            if !used[j] && equivalent(x, y) {
                used[j] = true;
                continue 'outer;
            }
        }
        return false;
    }
    true
}

/// Ordering for `<`, `>`, `sort`: `None` when unknown; an error for incomparable types.
pub(crate) fn compare(a: &Item<'_>, b: &Item<'_>, pos: usize) -> R<Option<Ordering>> {
    use Item::*;
    let (x, y) = (a.system(), b.system());
    Ok(match (&x, &y) {
        (String(p), String(q)) => Some((**p).cmp(&**q)),
        (Date(p) | DateTime(p), Date(q) | DateTime(q)) => p.compare(q),
        (Time(p), Time(q)) => p.compare(q),
        (Quantity(_) | Node(_), Quantity(_) | Node(_)) => {
            match (a.as_quantity(), b.as_quantity()) {
                (Some(p), Some(q)) => p.compare(&q),
                _ => return fail(pos, "cannot compare these values"),
            }
        }
        _ => match (to_dec(&x), to_dec(&y)) {
            (Some(p), Some(q)) => Some(p.cmp(&q)),
            _ => {
                return fail(
                    pos,
                    format!(
                        "cannot compare {} with {}",
                        x.type_info().1,
                        y.type_info().1
                    ),
                );
            }
        },
    })
}

/// A String item's text, or an error naming the function.
pub(crate) fn string_of<'a>(item: &Item<'a>, func: &str, pos: usize) -> R<Str<'a>> {
    item.as_str().ok_or_else(|| EvalError {
        pos,
        message: format!("{func}() needs a string, got {}", item.type_info().1),
    })
}
