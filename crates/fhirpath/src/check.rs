//! Compilation: resolve function names and arities, turn type arguments into type
//! specifiers, and (given a context type) check element paths against the FHIR model.

use crate::ast::{Expr, ExprKind, Func, TypeSpec};
use crate::{CompileOptions, Error};
use vigil_fhir_model::{Model, NodeId};

/// Static type of an expression, as far as the checker tracks it.
#[derive(Debug, Clone)]
enum Ty {
    /// Not tracked (System values, results of most functions): nothing is checked.
    Unknown,
    /// FHIR model nodes; `unordered` marks results of `children()`/`descendants()`.
    Nodes { ids: Vec<NodeId>, unordered: bool },
}

impl Ty {
    fn nodes(ids: Vec<NodeId>) -> Ty {
        Ty::Nodes {
            ids,
            unordered: false,
        }
    }
    fn unordered(&self) -> bool {
        matches!(
            self,
            Ty::Nodes {
                unordered: true,
                ..
            }
        )
    }
}

struct Checker<'s> {
    src: &'s str,
    model: &'static Model,
    check_paths: bool,
    strict: bool,
}

pub(crate) fn resolve(src: &str, ast: Expr, options: &CompileOptions) -> Result<Expr, Error> {
    let model = Model::r4();
    let mut c = Checker {
        src,
        model,
        check_paths: options.context_type.is_some(),
        strict: options.strict,
    };
    let root_ty = match &options.context_type {
        Some(t) => match context_node(model, t) {
            Some(id) => Ty::nodes(vec![id]),
            None => {
                return Err(Error::semantic(
                    src,
                    0,
                    format!("unknown context type '{t}'"),
                ))
            }
        },
        None => Ty::Unknown,
    };
    let (e, _) = c.expr(ast, &root_ty, &root_ty, true)?;
    Ok(e)
}

/// `Patient` or `Patient.contact` -> the model node.
fn context_node(model: &Model, path: &str) -> Option<NodeId> {
    let mut parts = path.split('.');
    let mut id = model.type_id(parts.next()?)?;
    for part in parts {
        let m = model.node(id).child(part)?;
        let ty = m
            .choice_type
            .or_else(|| m.child.types.first().map(|t| &**t))?;
        id = model.child_node(m.child, ty)?;
    }
    Some(id)
}

pub(crate) fn type_spec_of(e: &Expr) -> Option<TypeSpec> {
    match &e.kind {
        ExprKind::Ident(name) => Some(TypeSpec {
            namespace: None,
            name: name.clone(),
        }),
        ExprKind::Member(inner, name) => match &inner.kind {
            ExprKind::Ident(ns) => Some(TypeSpec {
                namespace: Some(ns.clone()),
                name: name.clone(),
            }),
            _ => None,
        },
        _ => None,
    }
}

impl Checker<'_> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> Error {
        Error::semantic(self.src, pos, msg)
    }

    /// Types reached by `name` from the given nodes.
    fn member(&self, ty: &Ty, name: &str, pos: usize) -> Result<Ty, Error> {
        let Ty::Nodes { ids, .. } = ty else {
            return Ok(Ty::Unknown);
        };
        let mut out = Vec::new();
        let mut found = false;
        for &id in ids {
            let node = self.model.node(id);
            if node.kind == vigil_fhir_model::TypeKind::Primitive
                && name != "id"
                && name != "extension"
            {
                continue;
            }
            let Some(m) = node.child(name) else { continue };
            found = true;
            if (self.strict || self.check_paths) && m.choice_type.is_some() {
                return Err(self.err(pos, format!(
                    "'{name}' names one type of the choice element '{}'; in strict mode use '{}.ofType({})'",
                    m.child.name,
                    m.child.name,
                    m.choice_type.unwrap_or("")
                )));
            }
            let types: Vec<&str> = match m.choice_type {
                Some(t) => vec![t],
                None => m.child.types.iter().map(|t| &**t).collect(),
            };
            for t in types {
                if t == "Resource" || t == "DomainResource" {
                    return Ok(Ty::Unknown); // the concrete type comes from resourceType
                }
                if let Some(n) = self.model.child_node(m.child, t) {
                    out.push(n);
                }
            }
        }
        if !found {
            let all_complex = ids
                .iter()
                .all(|&id| self.model.node(id).kind != vigil_fhir_model::TypeKind::Primitive);
            if self.check_paths && all_complex && !ids.is_empty() {
                let names: Vec<&str> = ids.iter().map(|&id| &*self.model.node(id).path).collect();
                return Err(self.err(
                    pos,
                    format!("'{name}' is not an element of {}", names.join(" | ")),
                ));
            }
            return Ok(Ty::Unknown);
        }
        Ok(Ty::nodes(out))
    }

    /// A type specifier must name a System or FHIR type.
    fn known_type(&self, ts: &TypeSpec, pos: usize) -> Result<(), Error> {
        if !self.check_paths && !self.strict {
            return Ok(()); // unchecked: an unknown type simply never matches
        }
        const SYSTEM: &[&str] = &[
            "Boolean", "String", "Integer", "Long", "Decimal", "Date", "DateTime", "Time",
            "Quantity",
        ];
        let ok = match ts.namespace.as_deref() {
            // an unknown System type is simply never matched
            Some("System") => true,
            Some("FHIR") => self.model.type_id(&ts.name).is_some(),
            None => SYSTEM.contains(&ts.name.as_str()) || self.model.type_id(&ts.name).is_some(),
            Some(_) => false,
        };
        if ok {
            Ok(())
        } else {
            let full = ts
                .namespace
                .as_ref()
                .map_or(ts.name.clone(), |n| format!("{n}.{}", ts.name));
            Err(self.err(pos, format!("unknown type '{full}'")))
        }
    }

    fn fhir_type(&self, ts: &TypeSpec) -> Ty {
        if ts.namespace.as_deref() == Some("System") {
            return Ty::Unknown;
        }
        match self.model.type_id(&ts.name) {
            Some(id) => Ty::nodes(vec![id]),
            None => Ty::Unknown,
        }
    }

    /// Resolve and check `e`. `this` is the type of the implicit focus; `at_root` is true
    /// where an identifier may name the context's type.
    fn expr(&mut self, e: Expr, this: &Ty, root: &Ty, at_root: bool) -> Result<(Expr, Ty), Error> {
        let pos = e.pos;
        let (kind, ty) = match e.kind {
            ExprKind::Ident(name) => {
                let ty = self.ident(&name, this, pos, at_root)?;
                (ExprKind::Ident(name), ty)
            }
            ExprKind::Member(target, name) => {
                let (t, tt) = self.expr(*target, this, root, at_root)?;
                let ty = self.member(&tt, &name, pos)?;
                (ExprKind::Member(Box::new(t), name), ty)
            }
            ExprKind::Call { target, name, args } => {
                return self.call(target, name, args, pos, this, root, at_root)
            }
            ExprKind::Indexer(t, i) => {
                let (t, tt) = self.expr(*t, this, root, at_root)?;
                if self.strict && tt.unordered() {
                    return Err(self.err(pos, "indexing an unordered collection"));
                }
                let (i, _) = self.expr(*i, this, root, at_root)?;
                (ExprKind::Indexer(Box::new(t), Box::new(i)), tt)
            }
            ExprKind::Unary(op, inner) => {
                let (i, _) = self.expr(*inner, this, root, at_root)?;
                (ExprKind::Unary(op, Box::new(i)), Ty::Unknown)
            }
            ExprKind::Binary(op, l, r) => {
                let (l, lt) = self.expr(*l, this, root, at_root)?;
                let (r, rt) = self.expr(*r, this, root, at_root)?;
                let ty = match (op, lt, rt) {
                    (
                        crate::ast::BinOp::Union,
                        Ty::Nodes { ids: mut a, .. },
                        Ty::Nodes { ids: b, .. },
                    ) => {
                        a.extend(b);
                        Ty::nodes(a)
                    }
                    _ => Ty::Unknown,
                };
                (ExprKind::Binary(op, Box::new(l), Box::new(r)), ty)
            }
            ExprKind::Is(inner, ts) => {
                self.known_type(&ts, pos)?;
                let (i, _) = self.expr(*inner, this, root, at_root)?;
                (ExprKind::Is(Box::new(i), ts), Ty::Unknown)
            }
            ExprKind::As(inner, ts) => {
                self.known_type(&ts, pos)?;
                let (i, _) = self.expr(*inner, this, root, at_root)?;
                let ty = self.fhir_type(&ts);
                (ExprKind::As(Box::new(i), ts), ty)
            }
            ExprKind::This => (ExprKind::This, this.clone()),
            ExprKind::Var(v) => {
                let ty = if v == "context" {
                    root.clone()
                } else {
                    Ty::Unknown
                };
                (ExprKind::Var(v), ty)
            }
            other => (other, Ty::Unknown),
        };
        Ok((Expr { kind, pos }, ty))
    }

    fn ident(&self, name: &str, this: &Ty, pos: usize, at_root: bool) -> Result<Ty, Error> {
        // A type name at the start of a path filters the context by type.
        if name.starts_with(|c: char| c.is_ascii_uppercase()) {
            if let Some(id) = self.model.type_id(name) {
                if let Ty::Nodes { ids, .. } = this {
                    if ids
                        .iter()
                        .any(|&i| self.model.is_subtype(&self.model.node(i).type_name, name))
                    {
                        return Ok(this.clone());
                    }
                    if ids
                        .iter()
                        .any(|&i| self.model.node(i).child(name).is_some())
                    {
                        return self.member(this, name, pos);
                    }
                }
                if at_root {
                    return Ok(Ty::nodes(vec![id]));
                }
                return Ok(Ty::Unknown);
            }
        }
        self.member(this, name, pos)
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        target: Option<Box<Expr>>,
        name: String,
        args: Vec<Expr>,
        pos: usize,
        this: &Ty,
        root: &Ty,
        at_root: bool,
    ) -> Result<(Expr, Ty), Error> {
        let func = Func::lookup(&name)
            .ok_or_else(|| self.err(pos, format!("unknown function '{name}'")))?;
        let (min, max) = func.arity();
        if args.len() < min || args.len() > max {
            let expected = if min == max {
                format!("{min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(self.err(
                pos,
                format!("{name}() takes {expected} argument(s), got {}", args.len()),
            ));
        }
        let (target, input_ty) = match target {
            Some(t) => {
                let (t, tt) = self.expr(*t, this, root, at_root)?;
                (Some(Box::new(t)), tt)
            }
            None => (None, this.clone()),
        };
        if self.strict
            && input_ty.unordered()
            && matches!(
                func,
                Func::Skip | Func::Take | Func::First | Func::Last | Func::Tail | Func::Single
            )
        {
            return Err(self.err(
                pos,
                format!("{name}() depends on order, but its input is unordered"),
            ));
        }
        let mut types = None;
        let mut out_args = Vec::with_capacity(args.len());
        if matches!(func, Func::Is | Func::As | Func::OfType) {
            let ts = args
                .first()
                .and_then(type_spec_of)
                .ok_or_else(|| self.err(pos, format!("{name}() takes a type name")))?;
            self.known_type(&ts, pos)?;
            types = Some(ts);
        } else {
            for (i, a) in args.into_iter().enumerate() {
                let arg_this = if func.is_lambda(i) { &input_ty } else { this };
                let (a, _) = self.expr(a, arg_this, root, false)?;
                out_args.push(a);
            }
        }
        let ty = match func {
            Func::Where
            | Func::First
            | Func::Last
            | Func::Tail
            | Func::Skip
            | Func::Take
            | Func::Single
            | Func::Distinct
            | Func::Trace
            | Func::Intersect
            | Func::Exclude => input_ty.clone(),
            Func::OfType | Func::As => types.as_ref().map_or(Ty::Unknown, |t| self.fhir_type(t)),
            Func::Extension => self
                .model
                .type_id("Extension")
                .map_or(Ty::Unknown, |id| Ty::nodes(vec![id])),
            Func::Children | Func::Descendants => Ty::Nodes {
                ids: vec![],
                unordered: true,
            },
            Func::Select => {
                // the type of the projection is not tracked further
                Ty::Unknown
            }
            _ => Ty::Unknown,
        };
        // results of children() are nodes of unknown type: keep only the order flag
        let ty = match (&ty, func) {
            (Ty::Nodes { ids, .. }, Func::Children | Func::Descendants) if ids.is_empty() => {
                Ty::Nodes {
                    ids: vec![],
                    unordered: true,
                }
            }
            _ => ty,
        };
        Ok((
            Expr {
                kind: ExprKind::Fn {
                    target,
                    func,
                    args: out_args,
                    types,
                },
                pos,
            },
            ty,
        ))
    }
}
