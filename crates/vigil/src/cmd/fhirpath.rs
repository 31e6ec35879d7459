//! `vigil fhirpath '<expression>' [--input resource.json] [--var name=<json>]...`

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::io::Read;
use std::process::ExitCode;
use vigil_fhirpath::{CompileOptions, EvalContext, Expression, Item, Node};

#[derive(clap::Args)]
pub struct Args {
    /// The FHIRPath expression.
    expression: String,
    /// A FHIR resource (JSON) to evaluate against; `-` reads standard input.
    #[arg(long, short)]
    input: Option<String>,
    /// A variable for the expression, as `name=<json>` (used as `%name`); repeatable.
    /// A JSON array becomes a collection of its items.
    #[arg(long = "var", value_name = "NAME=JSON")]
    vars: Vec<String>,
    /// Strict mode: refuse `valueQuantity`-style choice names and order-dependent
    /// functions on unordered collections.
    #[arg(long)]
    strict: bool,
}

/// Exit status for expression errors (syntax, semantic, evaluation), as documented.
const EXPRESSION_ERROR: u8 = 2;

pub fn run(args: Args) -> ExitCode {
    match execute(&args) {
        Ok(Ok(json)) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Ok(Err(expr_error)) => {
            eprintln!("{expr_error}");
            ExitCode::from(EXPRESSION_ERROR)
        }
        Err(usage) => {
            eprintln!("error: {usage:#}");
            ExitCode::FAILURE
        }
    }
}

/// Outer error: bad input files or arguments. Inner error: the expression failed, already
/// formatted with its position.
fn execute(args: &Args) -> Result<std::result::Result<String, String>> {
    let resource = match args.input.as_deref() {
        None => None,
        Some(path) => Some(read_json(path)?),
    };
    let mut var_values = Vec::with_capacity(args.vars.len());
    for v in &args.vars {
        let (name, json) = v
            .split_once('=')
            .ok_or_else(|| anyhow!("--var {v:?}: expected name=<json>"))?;
        let value: Value = serde_json::from_str(json).with_context(|| {
            format!("--var {name}: the value is not JSON (quote strings: --var {name}='\"text\"')")
        })?;
        var_values.push((name.to_string(), value));
    }
    let options = CompileOptions {
        context_type: resource
            .as_ref()
            .and_then(|r| r.get("resourceType"))
            .and_then(Value::as_str)
            .map(String::from),
        strict: args.strict,
    };
    let expr = match Expression::compile(&args.expression, &options) {
        Ok(e) => e,
        Err(e) => return Ok(Err(describe(&args.expression, &e))),
    };
    let mut ctx = match &resource {
        Some(r) => EvalContext::new(r),
        None => EvalContext::empty(),
    };
    for (name, value) in &var_values {
        ctx.set_variable(name, json_collection(value));
    }
    match expr.evaluate(&ctx) {
        Ok(items) => {
            let out: Vec<Value> = items.iter().map(Item::to_json).collect();
            Ok(Ok(serde_json::to_string(&out)?))
        }
        Err(e) => Ok(Err(describe(&args.expression, &e))),
    }
}

fn read_json(path: &str) -> Result<Value> {
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("{path} is not valid JSON"))
}

/// A variable's JSON as a FHIRPath collection: resources and objects as nodes, scalars as
/// System values, arrays item by item.
fn json_collection(v: &Value) -> Vec<Item<'_>> {
    match v {
        Value::Array(items) => items.iter().flat_map(json_collection).collect(),
        Value::Null => Vec::new(),
        Value::Object(_) => vec![Item::Node(Node::resource(v))],
        scalar => vec![Item::Node(Node {
            value: Some(scalar),
            ext: None,
            ty: vigil_fhirpath::NodeType::Unknown,
        })
        .system()],
    }
}

/// The error with the expression and a caret under the position.
fn describe(expression: &str, e: &vigil_fhirpath::Error) -> String {
    let (line, column) = e.position();
    let text = expression.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let caret = format!("{}^", " ".repeat(column.saturating_sub(1)));
    format!("error: {e}\n  {text}\n  {caret}")
}
