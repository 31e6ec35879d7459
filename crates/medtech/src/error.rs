//! Template validation errors: every problem of a template text at once, located.

use std::fmt;

/// One problem in a template: where it is (JSON path and line:column in the template text),
/// which field is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TemplateError {
    /// JSON path of the offending element, e.g. `$.template[2].template.deviceIdExpression`.
    pub path: String,
    /// 1-based line in the template text.
    pub line: u32,
    /// 1-based column in the template text.
    pub column: u32,
    /// The field that is missing, unknown or wrong (empty when the whole element is wrong).
    pub field: String,
    /// Human-readable reason.
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.line, self.column, self.path, self.message
        )
    }
}

/// All the problems found in a template text (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
pub struct TemplateErrors {
    /// The problems, in document order.
    pub errors: Vec<TemplateError>,
}

impl TemplateErrors {
    /// True when some error concerns `field` (exact name).
    pub fn has_field(&self, field: &str) -> bool {
        self.errors.iter().any(|e| e.field == field)
    }
}

impl fmt::Display for TemplateErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} template error(s)", self.errors.len())?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Collects errors while a template is read.
#[derive(Default)]
pub(crate) struct Errs(pub Vec<TemplateError>);

impl Errs {
    pub fn push(
        &mut self,
        node: &crate::sjson::Node,
        path: &str,
        field: &str,
        msg: impl Into<String>,
    ) {
        self.0.push(TemplateError {
            path: path.to_string(),
            line: node.line,
            column: node.col,
            field: field.to_string(),
            message: msg.into(),
        });
    }
}
