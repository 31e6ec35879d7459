//! JMESPath with the reference's custom functions: `add`, `subtract`, `multiply`, `divide`,
//! `pow`, `insertString`, `fromUnixTimestamp`, `fromUnixTimestampMs`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use jmespath::ast::Ast;
use jmespath::functions::{ArgumentType, CustomFunction, Signature};
use jmespath::{Context, ErrorReason, JmespathError, Rcvar, Runtime, Variable};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::time::Instant;

/// The shared runtime: built-ins plus the custom functions. Compiled expressions borrow it,
/// so it lives for the whole program (leaked once: `Runtime` is `Sync` but not `Send`, so a
/// shared reference is what can sit in a static).
static RUNTIME: LazyLock<&'static Runtime> = LazyLock::new(|| Box::leak(Box::new(build_runtime())));

fn build_runtime() -> Runtime {
    let mut rt = Runtime::new();
    rt.register_builtin_functions();
    // Decimal arithmetic, so that 78 × 0.0254 is 1.9812 as in the reference's documentation,
    // not 1.9811999999999999.
    let math = |name: &'static str, f: fn(Decimal, Decimal) -> Option<Decimal>| {
        CustomFunction::new(
            Signature::new(vec![ArgumentType::Number, ArgumentType::Number], None),
            Box::new(move |args: &[Rcvar], ctx: &mut Context<'_>| {
                let r = decimal_arg(&args[0])
                    .zip(decimal_arg(&args[1]))
                    .and_then(|(a, b)| f(a, b));
                // The reference requires results to fit in a C# long.
                match r {
                    Some(r) if r.abs() <= Decimal::from(i64::MAX) => Ok(dec_var(r)),
                    _ => Err(fail(
                        ctx,
                        format!("{name}: mathematical error (overflow or division by zero)"),
                    )),
                }
            }),
        )
    };
    rt.register_function("add", Box::new(math("add", |a, b| a.checked_add(b))));
    rt.register_function(
        "subtract",
        Box::new(math("subtract", |a, b| a.checked_sub(b))),
    );
    rt.register_function(
        "multiply",
        Box::new(math("multiply", |a, b| a.checked_mul(b))),
    );
    rt.register_function("divide", Box::new(math("divide", |a, b| a.checked_div(b))));
    rt.register_function(
        "pow",
        Box::new(math("pow", |a, b| {
            let r = f64::try_from(a).ok()?.powf(f64::try_from(b).ok()?);
            if r.is_finite() && r.abs() <= i64::MAX as f64 {
                Decimal::try_from(r).ok()
            } else {
                None
            }
        })),
    );
    rt.register_function(
        "insertString",
        Box::new(CustomFunction::new(
            Signature::new(
                vec![
                    ArgumentType::String,
                    ArgumentType::String,
                    ArgumentType::Number,
                ],
                None,
            ),
            Box::new(|args: &[Rcvar], ctx: &mut Context<'_>| {
                let orig = args[0].as_string().cloned().unwrap_or_default();
                let ins = args[1].as_string().cloned().unwrap_or_default();
                let pos = args[2].as_number().unwrap_or(-1.0);
                let len = orig.chars().count();
                if pos < 0.0 || pos.fract() != 0.0 || pos > len as f64 {
                    return Err(fail(
                        ctx,
                        format!("insertString: position {pos} is out of range 0..={len}"),
                    ));
                }
                let at = orig
                    .char_indices()
                    .nth(pos as usize)
                    .map_or(orig.len(), |(i, _)| i);
                let mut s = orig;
                s.insert_str(at, &ins);
                Ok(Rcvar::new(Variable::String(s)))
            }),
        )),
    );
    let unix = |name: &'static str, per_unit: fn(i64) -> Option<Instant>| {
        CustomFunction::new(
            Signature::new(vec![ArgumentType::Number], None),
            Box::new(move |args: &[Rcvar], ctx: &mut Context<'_>| {
                let n = args[0].as_number().unwrap_or(f64::NAN);
                if !n.is_finite() || n.fract() != 0.0 || n.abs() > 9.2e18 {
                    return Err(fail(
                        ctx,
                        format!("{name}: {n} is not an integer timestamp"),
                    ));
                }
                match per_unit(n as i64) {
                    Some(t) => Ok(Rcvar::new(Variable::String(t.to_string()))),
                    None => Err(fail(ctx, format!("{name}: {n} is out of range"))),
                }
            }),
        )
    };
    // The built-in goes through serde (see `JmesPath`); numbers are parsed directly here.
    rt.register_function(
        "to_number",
        Box::new(CustomFunction::new(
            Signature::new(vec![ArgumentType::Any], None),
            Box::new(|args: &[Rcvar], _ctx: &mut Context<'_>| {
                Ok(match &*args[0] {
                    Variable::Number(_) => args[0].clone(),
                    Variable::String(s) => {
                        match serde_json::from_str::<serde_json::Number>(s.trim()) {
                            Ok(n) => Rcvar::new(Variable::Number(n)),
                            Err(_) => Rcvar::new(Variable::Null),
                        }
                    }
                    _ => Rcvar::new(Variable::Null),
                })
            }),
        )),
    );
    rt.register_function(
        "fromUnixTimestamp",
        Box::new(unix("fromUnixTimestamp", Instant::from_unix_seconds)),
    );
    rt.register_function(
        "fromUnixTimestampMs",
        Box::new(unix("fromUnixTimestampMs", Instant::from_unix_millis)),
    );
    rt
}

fn fail(ctx: &Context<'_>, msg: String) -> JmespathError {
    // Custom failures travel as `Parse` reasons; `describe` prints them as they are.
    JmespathError::from_ctx(ctx, ErrorReason::Parse(msg))
}

/// One-line description (the crate's Display draws a multi-line caret diagram).
fn describe(e: &JmespathError, at_eval: bool) -> String {
    match &e.reason {
        ErrorReason::Parse(m) if at_eval => m.clone(),
        ErrorReason::Parse(m) => format!("{m} (column {})", e.column),
        ErrorReason::Runtime(r) => format!("{r} (column {})", e.column),
    }
}

fn decimal_arg(v: &Rcvar) -> Option<Decimal> {
    let Variable::Number(n) = &**v else {
        return None;
    };
    let t = n.to_string();
    Decimal::from_str_exact(&t)
        .or_else(|_| Decimal::from_scientific(&t))
        .ok()
        .or_else(|| n.as_f64().and_then(|f| Decimal::try_from(f).ok()))
}

fn dec_var(r: Decimal) -> Rcvar {
    // Normalized: integral results print as integers ("20", not "20.0"), like the reference.
    let t = r.normalize().to_string();
    Rcvar::new(
        serde_json::from_str::<serde_json::Number>(&t).map_or(Variable::Null, Variable::Number),
    )
}

/// A compiled JMESPath expression.
///
/// The crate feeds inputs and literals through serde, which turns serde_json's
/// arbitrary-precision numbers (enabled workspace-wide) into objects. So literals are fixed
/// once after parsing, and the input is injected as a literal (`<input>.(expr)`), which the
/// interpreter returns as it is.
pub struct JmesPath {
    src: String,
    ast: Ast,
}

impl std::fmt::Debug for JmesPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JmesPath({:?})", self.src)
    }
}

const SERDE_NUMBER_KEY: &str = "$serde_json::private::Number";

/// Undoes serde's mangling of an arbitrary-precision number into `{"$serde_json…": "1.5"}`.
fn fix_var(v: &Rcvar) -> Rcvar {
    match &**v {
        Variable::Object(m) => {
            if let (1, Some(Variable::String(t))) = (m.len(), m.get(SERDE_NUMBER_KEY).map(|x| &**x))
            {
                if let Ok(n) = serde_json::from_str::<serde_json::Number>(t) {
                    return Rcvar::new(Variable::Number(n));
                }
            }
            Rcvar::new(Variable::Object(
                m.iter().map(|(k, x)| (k.clone(), fix_var(x))).collect(),
            ))
        }
        Variable::Array(a) => Rcvar::new(Variable::Array(a.iter().map(fix_var).collect())),
        _ => v.clone(),
    }
}

fn fix_literals(ast: &mut Ast) {
    match ast {
        Ast::Literal { value, .. } => *value = fix_var(value),
        Ast::Function { args, .. } => args.iter_mut().for_each(fix_literals),
        Ast::Comparison { lhs, rhs, .. }
        | Ast::And { lhs, rhs, .. }
        | Ast::Or { lhs, rhs, .. }
        | Ast::Subexpr { lhs, rhs, .. }
        | Ast::Projection { lhs, rhs, .. } => {
            fix_literals(lhs);
            fix_literals(rhs);
        }
        Ast::Condition {
            predicate, then, ..
        } => {
            fix_literals(predicate);
            fix_literals(then);
        }
        Ast::Expref { ast, .. }
        | Ast::Flatten { node: ast, .. }
        | Ast::Not { node: ast, .. }
        | Ast::ObjectValues { node: ast, .. } => fix_literals(ast),
        Ast::MultiList { elements, .. } => elements.iter_mut().for_each(fix_literals),
        Ast::MultiHash { elements, .. } => elements
            .iter_mut()
            .for_each(|kv| fix_literals(&mut kv.value)),
        _ => {}
    }
}

impl JmesPath {
    /// Compiles an expression; unknown functions are reported at evaluation by the crate, so
    /// they are checked here too.
    pub fn compile(src: &str) -> Result<JmesPath, String> {
        let expr = RUNTIME.compile(src).map_err(|e| describe(&e, false))?;
        check_functions(expr.as_ast())?;
        let mut ast = expr.as_ast().clone();
        fix_literals(&mut ast);
        Ok(JmesPath {
            src: src.to_string(),
            ast,
        })
    }

    /// Evaluates against a prepared input.
    pub fn search(&self, input: &Rcvar) -> Result<Rcvar, String> {
        let wrapped = Ast::Subexpr {
            offset: 0,
            lhs: Box::new(Ast::Literal {
                offset: 0,
                value: input.clone(),
            }),
            rhs: Box::new(self.ast.clone()),
        };
        jmespath::Expression::new(self.src.as_str(), wrapped, &RUNTIME)
            .search(())
            .map_err(|e| describe(&e, true))
    }
}

fn check_functions(ast: &Ast) -> Result<(), String> {
    match ast {
        Ast::Function { name, args, offset } => {
            if RUNTIME.get_function(name).is_none() {
                return Err(format!("unknown function '{name}' at offset {offset}"));
            }
            args.iter().try_for_each(check_functions)
        }
        Ast::Comparison { lhs, rhs, .. }
        | Ast::And { lhs, rhs, .. }
        | Ast::Or { lhs, rhs, .. }
        | Ast::Subexpr { lhs, rhs, .. }
        | Ast::Projection { lhs, rhs, .. } => {
            check_functions(lhs)?;
            check_functions(rhs)
        }
        Ast::Condition {
            predicate, then, ..
        } => {
            check_functions(predicate)?;
            check_functions(then)
        }
        Ast::Expref { ast, .. }
        | Ast::Flatten { node: ast, .. }
        | Ast::Not { node: ast, .. }
        | Ast::ObjectValues { node: ast, .. } => check_functions(ast),
        Ast::MultiList { elements, .. } => elements.iter().try_for_each(check_functions),
        Ast::MultiHash { elements, .. } => elements
            .iter()
            .try_for_each(|kv| check_functions(&kv.value)),
        _ => Ok(()),
    }
}

/// Converts JSON to a JMESPath value (numbers are shared as they are; the crate's generic
/// serde path would mangle arbitrary-precision numbers).
pub fn to_var(v: &Value) -> Rcvar {
    Rcvar::new(match v {
        Value::Null => Variable::Null,
        Value::Bool(b) => Variable::Bool(*b),
        Value::Number(n) => Variable::Number(n.clone()),
        Value::String(s) => Variable::String(s.clone()),
        Value::Array(a) => Variable::Array(a.iter().map(to_var).collect()),
        Value::Object(m) => Variable::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), to_var(v)))
                .collect::<BTreeMap<_, _>>(),
        ),
    })
}

/// Converts a JMESPath value back to JSON.
pub fn from_var(v: &Variable) -> Value {
    match v {
        Variable::Null | Variable::Expref(_) => Value::Null,
        Variable::Bool(b) => Value::Bool(*b),
        Variable::Number(n) => Value::Number(n.clone()),
        Variable::String(s) => Value::String(s.clone()),
        Variable::Array(a) => Value::Array(a.iter().map(|x| from_var(x)).collect()),
        Variable::Object(m) => {
            Value::Object(m.iter().map(|(k, x)| (k.clone(), from_var(x))).collect())
        }
    }
}
