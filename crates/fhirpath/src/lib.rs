//! A FHIRPath 2.0 engine over FHIR R4 JSON.
//!
//! Expressions are parsed and checked once ([`Expression::compile`]) and evaluated many
//! times ([`Expression::evaluate`]) against resources borrowed from the caller: evaluation
//! allocates collections of [`Item`]s that point into the input JSON rather than copying it.
//!
//! ```
//! use vigil_fhirpath::{Expression, EvalContext};
//! let patient = serde_json::json!({"resourceType": "Patient", "birthDate": "1974-12-25",
//!     "name": [{"given": ["Peter", "James"]}]});
//! let expr = Expression::parse("Patient.name.given.first() & ' ' & birthDate.toString()").unwrap();
//! let out = expr.evaluate(&EvalContext::new(&patient)).unwrap();
//! assert_eq!(out[0].to_string(), "Peter 1974-12-25");
//! ```

mod ast;
mod check;
mod eval;
mod functions;
mod lookup;
mod parser;
pub mod temporal;
pub mod ucum;
mod value;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

pub use ast::{BinOp, Expr, ExprKind, Func, Lit, TypeSpec, UnOp};
pub use temporal::{DateTime, Precision, Time};
pub use value::{decimal_equivalent, Collection, Item, Node, NodeType, Quantity, Str};

/// An error from parsing, checking or evaluating an expression. Positions are 1-based.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("syntax error at {line}:{column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("semantic error at {line}:{column}: {message}")]
    Semantic {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("evaluation error at {line}:{column}: {message}")]
    Evaluation {
        line: usize,
        column: usize,
        message: String,
    },
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

impl Error {
    pub(crate) fn syntax(src: &str, offset: usize, message: impl Into<String>) -> Error {
        let (line, column) = line_col(src, offset);
        Error::Syntax {
            line,
            column,
            message: message.into(),
        }
    }

    pub(crate) fn semantic(src: &str, offset: usize, message: impl Into<String>) -> Error {
        let (line, column) = line_col(src, offset);
        Error::Semantic {
            line,
            column,
            message: message.into(),
        }
    }

    /// The 1-based line and column the error points at.
    pub fn position(&self) -> (usize, usize) {
        match self {
            Error::Syntax { line, column, .. }
            | Error::Semantic { line, column, .. }
            | Error::Evaluation { line, column, .. } => (*line, *column),
        }
    }
}

/// How an expression is compiled.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// The type of the context the expression will be evaluated on (a resource or type
    /// name, or an element path such as `Patient.contact`). When given, paths are checked
    /// against the model and an unknown element is a semantic error.
    pub context_type: Option<String>,
    /// Strict mode: choice elements must be reached through their base name
    /// (`value.ofType(Quantity)`, not `valueQuantity`), and functions that depend on
    /// order (`skip`, `take`, `first`, ...) are refused on unordered collections.
    pub strict: bool,
}

/// A compiled FHIRPath expression. Compile once, evaluate many times; it is `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
    root: Expr,
}

impl Expression {
    /// Parse and resolve functions, without checking paths against a type.
    pub fn parse(source: &str) -> Result<Expression, Error> {
        Expression::compile(source, &CompileOptions::default())
    }

    /// Parse, resolve functions and (with a context type) check paths against the model.
    pub fn compile(source: &str, options: &CompileOptions) -> Result<Expression, Error> {
        let ast = parser::Parser::parse(source)?;
        let root = check::resolve(source, ast, options)?;
        Ok(Expression {
            source: source.to_string(),
            root,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn ast(&self) -> &Expr {
        &self.root
    }

    /// Evaluate against a context.
    pub fn evaluate<'a>(&self, ctx: &EvalContext<'a>) -> Result<Collection<'a>, Error> {
        eval::evaluate(self, ctx).map_err(|e| {
            let (line, column) = line_col(&self.source, e.pos);
            Error::Evaluation {
                line,
                column,
                message: e.message,
            }
        })
    }

    /// Evaluate and interpret the result as a boolean (empty -> `None`), as invariants and
    /// `where` criteria do. A non-boolean singleton counts as `true`; several items are an error.
    pub fn evaluate_bool(&self, ctx: &EvalContext<'_>) -> Result<Option<bool>, Error> {
        let out = self.evaluate(ctx)?;
        match out.as_slice() {
            [] => Ok(None),
            [item] => Ok(Some(item.as_bool().unwrap_or(true))),
            _ => Err(Error::Evaluation {
                line: 1,
                column: 1,
                message: format!("expected a single boolean, got {} items", out.len()),
            }),
        }
    }
}

/// Where `trace()` output goes when captured: (label, items as JSON) per call.
pub(crate) type TraceSink = std::rc::Rc<std::cell::RefCell<Vec<(String, Vec<serde_json::Value>)>>>;

/// What an expression is evaluated against: the focus (`$this` at the top), the resource
/// (`%resource`), the root resource (`%rootResource`, e.g. the Bundle or container) and
/// user variables.
#[derive(Debug, Clone)]
pub struct EvalContext<'a> {
    pub(crate) focus: Collection<'a>,
    pub(crate) resource: Option<Item<'a>>,
    pub(crate) root_resource: Option<Item<'a>>,
    pub(crate) variables: HashMap<String, Collection<'a>>,
    pub(crate) trace: Option<TraceSink>,
    pub(crate) resolve_by_type: bool,
}

impl<'a> EvalContext<'a> {
    /// A context whose focus, `%resource`, `%context` and `%rootResource` are the resource.
    pub fn new(resource: &'a serde_json::Value) -> EvalContext<'a> {
        let item = Item::Node(Node::resource(resource));
        EvalContext {
            focus: vec![item.clone()],
            resource: Some(item.clone()),
            root_resource: Some(item),
            variables: HashMap::new(),
            trace: None,
            resolve_by_type: false,
        }
    }

    /// A context with no input (for expressions that only use literals and variables).
    pub fn empty() -> EvalContext<'a> {
        EvalContext {
            focus: vec![],
            resource: None,
            root_resource: None,
            variables: HashMap::new(),
            trace: None,
            resolve_by_type: false,
        }
    }

    /// Evaluate against another focus (an element inside the resource), keeping `%resource`.
    pub fn with_focus(mut self, focus: Collection<'a>) -> EvalContext<'a> {
        self.focus = focus;
        self
    }

    /// Set the resource `%resource` refers to (e.g. a contained resource's container is
    /// the root; the contained resource is the resource).
    pub fn with_resource(mut self, resource: &'a serde_json::Value) -> EvalContext<'a> {
        self.resource = Some(Item::Node(Node::resource(resource)));
        self
    }

    /// Set `%rootResource` (the Bundle or container `resolve()` searches).
    pub fn with_root_resource(mut self, root: &'a serde_json::Value) -> EvalContext<'a> {
        self.root_resource = Some(Item::Node(Node::resource(root)));
        self
    }

    /// Define `%name`.
    pub fn set_variable(&mut self, name: &str, value: Collection<'a>) {
        self.variables.insert(name.to_string(), value);
    }

    /// Let `resolve()` answer a reference it cannot find with a stand-in of the referenced
    /// type (the reference itself, typed as `Patient` for `Patient/123`), so that
    /// `resolve() is Patient` can be decided without the target — as search indexing needs.
    pub fn resolve_references_by_type(mut self, on: bool) -> EvalContext<'a> {
        self.resolve_by_type = on;
        self
    }

    /// Collect `trace()` output instead of discarding it.
    pub fn capture_trace(&mut self) -> TraceSink {
        let sink = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        self.trace = Some(sink.clone());
        sink
    }
}
