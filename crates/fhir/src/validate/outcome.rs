//! The result of validation: a list of issues, rendered as a FHIR R4 OperationOutcome.

use serde_json::{json, Map, Value};
use std::fmt;

/// How serious an issue is (FHIR `issue-severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Processing could not go on (e.g. the input is not a resource at all).
    Fatal,
    /// The resource is not valid.
    Error,
    /// The resource is valid but a rule of good practice is not followed.
    Warning,
    /// Nothing wrong.
    Information,
}

impl Severity {
    /// The FHIR code (`fatal`, `error`, `warning`, `information`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// What kind of problem an issue is (the subset of FHIR `issue-type` the validator uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssueType {
    /// The input is not a FHIR resource at all.
    Invalid,
    /// Unknown elements, wrong JSON kinds, arrays where singletons belong, too many values.
    Structure,
    /// A required element is missing.
    Required,
    /// A primitive value is malformed (bad date, empty string, out of range...).
    Value,
    /// An invariant (constraint) is violated.
    Invariant,
    /// A code is not in the value set of a required binding.
    CodeInvalid,
    /// The resource type is not an R4 resource.
    NotSupported,
    /// An invariant could not be evaluated.
    Processing,
    /// Informational only (used for "no issues").
    Informational,
}

impl IssueType {
    /// The FHIR code (`structure`, `code-invalid`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::Invariant => "invariant",
            IssueType::CodeInvalid => "code-invalid",
            IssueType::NotSupported => "not-supported",
            IssueType::Processing => "processing",
            IssueType::Informational => "informational",
        }
    }
}

/// One problem found in a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueType,
    /// A message for humans; for invariants it starts with the constraint key.
    pub diagnostics: String,
    /// The FHIRPath location of the problem (`Patient.name[0].given[1]`).
    pub expression: String,
    /// The key of the violated invariant (`obs-6`), if the issue is an invariant failure.
    pub constraint: Option<String>,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {}: {}",
            self.severity.as_str(),
            self.code.as_str(),
            self.expression,
            self.diagnostics
        )
    }
}

/// The outcome of validating a resource: every issue found, in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationOutcome {
    pub issues: Vec<Issue>,
}

impl OperationOutcome {
    /// Whether any issue makes the resource invalid (severity error or fatal).
    pub fn has_errors(&self) -> bool {
        self.issues.iter().any(|i| i.severity <= Severity::Error)
    }

    /// The issues of severity error or fatal.
    pub fn errors(&self) -> impl Iterator<Item = &Issue> {
        self.issues.iter().filter(|i| i.severity <= Severity::Error)
    }

    /// The outcome as a FHIR R4 OperationOutcome resource. An outcome without issues still
    /// carries one informational issue, since OperationOutcome requires at least one.
    pub fn to_json(&self) -> Value {
        let issues: Vec<Value> = if self.issues.is_empty() {
            vec![json!({
                "severity": "information",
                "code": "informational",
                "diagnostics": "No issues detected during validation",
            })]
        } else {
            self.issues.iter().map(issue_json).collect()
        };
        json!({ "resourceType": "OperationOutcome", "issue": issues })
    }
}

fn issue_json(issue: &Issue) -> Value {
    let mut m = Map::new();
    m.insert("severity".into(), Value::from(issue.severity.as_str()));
    m.insert("code".into(), Value::from(issue.code.as_str()));
    if !issue.diagnostics.is_empty() {
        m.insert(
            "diagnostics".into(),
            Value::from(issue.diagnostics.as_str()),
        );
    }
    if !issue.expression.is_empty() {
        m.insert("expression".into(), json!([issue.expression]));
    }
    Value::Object(m)
}
