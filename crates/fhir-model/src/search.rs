//! Search parameter definitions (from the specification's search-parameters.json).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SearchComponentDef {
    /// Canonical URL of the component's search parameter.
    pub definition: String,
    /// FHIRPath expression, relative to the composite's value.
    pub expression: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SearchParamDef {
    pub url: String,
    pub code: String,
    pub base: Vec<String>,
    #[serde(rename = "type")]
    pub param_type: SearchParamType,
    /// FHIRPath expression; absent for a few special parameters (`_text`, `_content`).
    pub expression: Option<String>,
    #[serde(default)]
    pub target: Vec<String>,
    #[serde(default)]
    pub component: Vec<SearchComponentDef>,
}
