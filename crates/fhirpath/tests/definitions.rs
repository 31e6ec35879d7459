//! Every FHIRPath expression in the R4 definitions (invariants and search parameters)
//! compiles, with element paths checked against its context type.
#![allow(clippy::unwrap_used)]

use vigil_fhir_model::Model;
use vigil_fhirpath::{CompileOptions, Expression};

fn compile_in(expr: &str, ctx: &str) -> Result<Expression, String> {
    let opts = CompileOptions {
        context_type: Some(ctx.to_string()),
        strict: false,
    };
    Expression::compile(expr, &opts).map_err(|e| format!("{ctx}: `{expr}`: {e}"))
}

/// Invariants that are wrong in the published R4 definitions themselves.
const DEFINITION_DEFECTS: &[(&str, &str)] = &[
    ("cid-0", "ChargeItemDefinition has no `name` element in R4"),
    (
        "dom-r4b",
        "names R4B resource types (Citation, Evidence, ...) that R4 does not have",
    ),
];

#[test]
fn all_invariants_compile() {
    let model = Model::r4();
    let mut errors = Vec::new();
    let mut count = 0;
    for ty in
        model
            .resource_types()
            .chain(["Quantity", "Period", "Extension", "Narrative", "Reference"])
    {
        let def = model.type_def(ty).unwrap();
        for c in &def.constraints {
            count += 1;
            if let Err(e) = compile_in(&c.expression, ty) {
                if !DEFINITION_DEFECTS.iter().any(|(k, _)| *k == c.key) {
                    errors.push(format!("{}: {e}", c.key));
                }
            }
        }
        let mut stack = vec![def.id];
        while let Some(id) = stack.pop() {
            let node = model.node(id);
            for child in &node.children {
                if let Some(b) = child
                    .backbone
                    .filter(|b| *b != id && *model.node(*b).path == *child.path)
                {
                    stack.push(b);
                }
                for c in &child.constraints {
                    count += 1;
                    let ctx = child.path.trim_end_matches("[x]").to_string();
                    if let Err(e) = compile_in(&c.expression, &ctx) {
                        if !DEFINITION_DEFECTS.iter().any(|(k, _)| *k == c.key) {
                            errors.push(format!("{}: {e}", c.key));
                        }
                    }
                }
            }
        }
    }
    println!("{count} invariants compiled");
    assert!(
        errors.is_empty(),
        "{} of {count} failed:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn all_search_parameter_expressions_compile() {
    let model = Model::r4();
    let mut errors = Vec::new();
    for p in model.search_params() {
        let Some(expr) = &p.expression else { continue };
        if let Err(e) = Expression::parse(expr) {
            errors.push(format!("{}: {e}", p.url));
        }
        for c in &p.component {
            if let Err(e) = Expression::parse(&c.expression) {
                errors.push(format!("{} component: {e}", p.url));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
