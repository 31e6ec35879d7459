//! The search-parameter registry: every R4 search parameter, and for every resource type
//! the list of compiled expressions to evaluate, prepared once.
//!
//! Preparation does the work that would otherwise be repeated per resource:
//! - a parameter shared by many types (`patient` has 30 bases, with the union
//!   `AllergyIntolerance.patient | CarePlan.subject.where(...) | ...`) is split at its
//!   top-level `|` and only the parts for the type at hand are kept, so indexing an
//!   Observation does not evaluate 29 paths that cannot match;
//! - `(x as T)` and `x.as(T)` become `x.ofType(T)` (see [`rewrite_as`]);
//! - each expression gets a *guard*: the top-level elements it starts from
//!   (`Observation.component.code` needs `component`), a bit mask checked against the
//!   elements present before evaluating, so the many parameters on absent elements cost
//!   nothing;
//! - expressions that are plain navigation are compiled into direct paths (see
//!   `search::path`), evaluated without the FHIRPath interpreter.

use super::path::{self, FastExpr, Start};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, OnceLock};
use vigil_fhir_model::{
    capitalize, Fnv, FnvHashMap, Model, NodeId, SearchParamDef, SearchParamType,
};
use vigil_fhirpath::{BinOp, CompileOptions, Expr, ExprKind, Expression, Func};

/// A search parameter of the registry.
#[derive(Debug)]
pub struct SearchParam {
    /// The definition from the specification.
    pub def: &'static SearchParamDef,
    /// How this parameter's values are produced.
    pub(crate) special: Special,
    /// For composites: each component's type and compiled expression (relative to each
    /// value of the composite's own expression).
    pub(crate) components: Vec<Component>,
}

#[derive(Debug)]
pub(crate) struct Component {
    pub(crate) param_type: SearchParamType,
    pub(crate) expr: Expression,
}

/// Parameters R4 defines without an expression, or with one that needs its own handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    None,
    /// `_text`: the narrative's text.
    Text,
    /// `_content`: all string content.
    Content,
    /// `near`: `Location.position` as a coordinate pair.
    Near,
    /// `_query` (named queries) and any other parameter that has nothing to index.
    NotIndexed,
}

impl SearchParam {
    /// The parameter's name in searches (`code`, `subject`, `_id`).
    pub fn code(&self) -> &'static str {
        &self.def.code
    }

    /// The canonical URL of the definition.
    pub fn url(&self) -> &'static str {
        &self.def.url
    }

    /// The parameter's type (token, reference, ...), which decides its values' kind.
    pub fn param_type(&self) -> SearchParamType {
        self.def.param_type
    }

    /// The types references may point to (reference parameters).
    pub fn target(&self) -> &'static [String] {
        &self.def.target
    }

    /// Whether extraction produces values for this parameter (`_query` has none).
    pub fn is_indexed(&self) -> bool {
        self.special != Special::NotIndexed
    }

    /// For composites: the component types, in order.
    pub fn component_types(&self) -> impl Iterator<Item = SearchParamType> + '_ {
        self.components.iter().map(|c| c.param_type)
    }
}

/// The evaluation plan of one parameter for one resource type.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) param: usize,
    /// The expression restricted to this type's union parts (`None` for specials
    /// without expression).
    pub(crate) expr: Option<Arc<Expression>>,
    /// The same as a direct path, when it is one (see [`super::path`]).
    pub(crate) fast: Option<FastExpr>,
    /// For composites: per type of the composite's items, each component as a direct
    /// path when it is one.
    pub(crate) component_fast: Vec<(NodeId, Vec<Option<FastExpr>>)>,
    /// The top-level elements (bits from [`TypePlans::element_bits`]) at least one of
    /// which must be present for the expression to produce anything; `None` when that
    /// cannot be known statically.
    pub(crate) guard: Option<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct TypePlans {
    pub(crate) plans: Vec<Plan>,
    /// JSON property name → bit of its element, to find the present elements with one
    /// lookup per property instead of one per guarded parameter.
    pub(crate) element_bits: HashMap<Box<str>, u64, BuildHasherDefault<Fnv>>,
    by_code: HashMap<&'static str, usize>,
}

/// A parameter expression that could not be prepared (a definition defect).
#[derive(Debug, Clone)]
pub struct PrepareProblem {
    /// The parameter's URL.
    pub url: String,
    /// The resource type it was prepared for (empty for component problems).
    pub resource_type: String,
    /// What went wrong.
    pub message: String,
}

/// How a registry is prepared.
#[derive(Debug, Clone, Copy)]
pub struct RegistryOptions {
    /// Evaluate simple path expressions directly instead of with FHIRPath (default
    /// `true`). Turning it off gives the reference behaviour the direct paths are tested
    /// against.
    pub fast_paths: bool,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions { fast_paths: true }
    }
}

/// All search parameters, and per resource type what to evaluate.
#[derive(Debug)]
pub struct SearchRegistry {
    pub(crate) params: Vec<SearchParam>,
    pub(crate) types: HashMap<&'static str, TypePlans>,
    by_url: HashMap<&'static str, usize>,
    /// Parameter code → the codes whose values together are exactly its values (see
    /// [`SearchRegistry::union_sources`]).
    unions: FnvHashMap<&'static str, Vec<&'static str>>,
    /// Parameter code → its filtered-alias sources (see
    /// [`SearchRegistry::filtered_alias_source`]).
    aliases: FnvHashMap<&'static str, FilteredAlias>,
    /// Resource type → its (filtered alias, source) pairs.
    aliases_by_type: FnvHashMap<&'static str, Vec<(&'static str, &'static str)>>,
    problems: Vec<PrepareProblem>,
    expression_count: usize,
}

impl SearchRegistry {
    /// The registry of the R4 search parameters, prepared on first use (a few ms).
    pub fn r4() -> &'static SearchRegistry {
        static REGISTRY: OnceLock<SearchRegistry> = OnceLock::new();
        REGISTRY.get_or_init(|| SearchRegistry::new(RegistryOptions::default()))
    }

    /// Prepare a registry of the R4 parameters with the given options. Prefer the shared
    /// [`SearchRegistry::r4`]; this is for comparing options.
    pub fn new(options: RegistryOptions) -> SearchRegistry {
        SearchRegistry::build(Model::r4(), options)
    }

    fn build(model: &'static Model, options: RegistryOptions) -> SearchRegistry {
        let defs = model.search_params();
        let by_url: HashMap<&'static str, usize> = defs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.url.as_str(), i))
            .collect();
        let mut problems = Vec::new();
        let params: Vec<SearchParam> = defs
            .iter()
            .map(|def| {
                let special = match (def.code.as_str(), def.expression.as_deref(), def.param_type) {
                    ("_text", None, _) => Special::Text,
                    ("_content", None, _) => Special::Content,
                    (_, None, _) => Special::NotIndexed,
                    (_, Some(_), SearchParamType::Special) if def.code == "near" => Special::Near,
                    // No other special parameter exists in R4; one would need its own code.
                    (_, Some(_), SearchParamType::Special) => Special::NotIndexed,
                    _ => Special::None,
                };
                let mut components = Vec::new();
                for c in &def.component {
                    let Some(ci) = component_definition(def, c, defs, &by_url) else {
                        problems.push(PrepareProblem {
                            url: def.url.clone(),
                            resource_type: String::new(),
                            message: format!("component definition {} not found", c.definition),
                        });
                        continue;
                    };
                    let ci = *ci;
                    match Expression::parse(&rewrite_as(&c.expression)) {
                        Ok(expr) => components.push(Component {
                            param_type: defs[ci].param_type,
                            expr,
                        }),
                        Err(e) => problems.push(PrepareProblem {
                            url: def.url.clone(),
                            resource_type: String::new(),
                            message: format!("component `{}`: {e}", c.expression),
                        }),
                    }
                }
                SearchParam {
                    def,
                    special,
                    components,
                }
            })
            .collect();

        let resource_types: Vec<&'static str> = model
            .resource_types()
            .filter(|t| model.type_def(t).is_some_and(|d| !d.is_abstract))
            .collect();
        // Identical texts (`Resource.id` for every type) are compiled once and shared.
        let mut compiled: HashMap<String, Option<Arc<Expression>>> = HashMap::new();
        let mut types = HashMap::new();
        // (type, parameter index) → the parts of its expression for that type.
        let mut parts_of: HashMap<(&'static str, usize), Vec<String>> = HashMap::new();
        for &rt in &resource_types {
            let mut tp = TypePlans::default();
            if let Some(def) = model.type_def(rt) {
                tp.element_bits = element_bits(def);
            }
            for (pi, p) in params.iter().enumerate() {
                let Some(base) = p.def.base.iter().find(|b| model.is_subtype(rt, b)) else {
                    continue;
                };
                let expr = match (&p.def.expression, p.special) {
                    (_, Special::Text | Special::Content | Special::NotIndexed) | (None, _) => None,
                    (Some(src), _) => {
                        let text = specialize(src, rt, model);
                        if text.is_empty() {
                            continue;
                        }
                        if p.special == Special::None {
                            let parts = split_union(&text).into_iter().map(bare).collect();
                            parts_of.insert((rt, pi), parts);
                        }
                        let entry = compiled.entry(text.clone()).or_insert_with(|| {
                            // Check paths against the base the parts were written for.
                            let context = head_type(&text)
                                .filter(|h| model.is_subtype(rt, h))
                                .unwrap_or(base);
                            let opts = CompileOptions {
                                context_type: Some(context.to_string()),
                                strict: false,
                            };
                            let problem = |e: vigil_fhirpath::Error| PrepareProblem {
                                url: p.def.url.clone(),
                                resource_type: rt.to_string(),
                                message: format!("`{text}` (context {context}): {e}"),
                            };
                            match Expression::compile(&text, &opts) {
                                Ok(e) => Some(Arc::new(e)),
                                Err(e) => {
                                    // A path the checker rejects is a definition defect; it
                                    // is reported, and the unchecked expression still used.
                                    problems.push(problem(e));
                                    Expression::parse(&text).ok().map(Arc::new)
                                }
                            }
                        });
                        match entry {
                            Some(e) => Some(e.clone()),
                            None => continue,
                        }
                    }
                };
                let guard = expr.as_ref().and_then(|e| guard_of(e.ast(), rt, model));
                // Bundles resolve references against their entries: always FHIRPath.
                let fast = match &expr {
                    Some(e) if options.fast_paths && rt != "Bundle" => {
                        path::compile(e.ast(), Start::Resource(rt), model)
                    }
                    _ => None,
                };
                let component_fast = match &fast {
                    Some(f) if !p.components.is_empty() => f
                        .result_types
                        .iter()
                        .map(|&id| {
                            let comps = p
                                .components
                                .iter()
                                .map(|c| path::compile(c.expr.ast(), Start::Node(id), model))
                                .collect();
                            (id, comps)
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                tp.by_code.insert(p.def.code.as_str(), tp.plans.len());
                tp.plans.push(Plan {
                    param: pi,
                    expr,
                    fast,
                    component_fast,
                    guard,
                });
            }
            types.insert(rt, tp);
        }
        let expression_count = compiled.values().filter(|e| e.is_some()).count();
        let unions = union_parameters(&params, &types, &parts_of);
        let aliases = filtered_aliases(&params, &types, &parts_of);
        let mut aliases_by_type: FnvHashMap<&'static str, Vec<(&'static str, &'static str)>> =
            FnvHashMap::default();
        for (&code, alias) in &aliases {
            for &(rt, source) in &alias.by_type {
                aliases_by_type.entry(rt).or_default().push((code, source));
            }
        }
        aliases_by_type.values_mut().for_each(|v| v.sort_unstable());
        SearchRegistry {
            params,
            types,
            by_url,
            unions,
            aliases,
            aliases_by_type,
            problems,
            expression_count,
        }
    }

    /// All parameters of the specification (including ones that index nothing, such as
    /// `_query`), in definition order.
    pub fn params(&self) -> &[SearchParam] {
        &self.params
    }

    /// The parameters that apply to a resource type: those based on the type or on
    /// `Resource`/`DomainResource`. Empty for unknown or abstract types.
    pub fn params_for<'r>(
        &'r self,
        resource_type: &str,
    ) -> impl Iterator<Item = &'r SearchParam> + 'r {
        self.types
            .get(resource_type)
            .into_iter()
            .flat_map(|tp| tp.plans.iter())
            .map(|plan| &self.params[plan.param])
    }

    /// The resource types parameters are prepared for (concrete types), in no order.
    pub fn resource_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.types.keys().copied()
    }

    /// A parameter of a resource type by its code (`param("Observation", "code")`).
    pub fn param(&self, resource_type: &str, code: &str) -> Option<&SearchParam> {
        let tp = self.types.get(resource_type)?;
        let &i = tp.by_code.get(code)?;
        Some(&self.params[tp.plans[i].param])
    }

    /// A parameter by its canonical URL.
    pub fn param_by_url(&self, url: &str) -> Option<&SearchParam> {
        self.by_url.get(url).map(|&i| &self.params[i])
    }

    /// The expression evaluated for a parameter on a resource type, after splitting the
    /// union per type and rewriting `as` (for diagnostics and tests).
    pub fn expression_for(&self, resource_type: &str, code: &str) -> Option<&str> {
        let tp = self.types.get(resource_type)?;
        let &i = tp.by_code.get(code)?;
        tp.plans[i].expr.as_deref().map(Expression::source)
    }

    /// The parameters a *union parameter* is made of: for every type that has parameter
    /// `code`, its expression is the union of theirs (same parameter type, same
    /// components), each of theirs a strict part of it. R4's `combo-code` is `code |
    /// component-code`; its values are exactly theirs, so a store may keep only theirs
    /// and search `code` or `component-code` for it. `None` for every other parameter
    /// (on some type not such a union, or not known).
    pub fn union_sources(&self, code: &str) -> Option<&[&'static str]> {
        self.unions.get(code).map(Vec::as_slice)
    }

    /// All union parameters (see [`SearchRegistry::union_sources`]) with their sources.
    pub fn union_parameters(&self) -> impl Iterator<Item = (&'static str, &[&'static str])> {
        self.unions.iter().map(|(c, s)| (*c, s.as_slice()))
    }

    /// The parameter a *filtered alias* `code` narrows on `resource_type`: a reference
    /// parameter whose expression there is exactly another reference parameter's
    /// followed by `.where(resolve() is T)`, as R4's Observation `patient` is
    /// `Observation.subject.where(resolve() is Patient)` beside `subject` =
    /// `Observation.subject`. Its values are some of the source's values, so a store
    /// may mark the source's rows instead of keeping a second copy of them. `None` for
    /// every other parameter and type.
    pub fn filtered_alias_source(&self, resource_type: &str, code: &str) -> Option<&'static str> {
        self.filtered_aliases_of(resource_type)
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, s)| *s)
    }

    /// The (filtered alias, source) pairs of a resource type (see
    /// [`SearchRegistry::filtered_alias_source`]), sorted; empty for most types.
    pub fn filtered_aliases_of(&self, resource_type: &str) -> &[(&'static str, &'static str)] {
        self.aliases_by_type
            .get(resource_type)
            .map_or(&[], Vec::as_slice)
    }

    /// The sources of the filtered alias `code` on any type (distinct, sorted), or
    /// `None` when it is a filtered alias nowhere. Every parameter with such a code is a
    /// reference parameter.
    pub fn filtered_alias_sources(&self, code: &str) -> Option<&[&'static str]> {
        self.aliases.get(code).map(|a| a.sources.as_slice())
    }

    /// All filtered-alias codes with their sources (see
    /// [`SearchRegistry::filtered_alias_sources`]).
    pub fn filtered_alias_parameters(
        &self,
    ) -> impl Iterator<Item = (&'static str, &[&'static str])> {
        self.aliases.iter().map(|(c, a)| (*c, a.sources.as_slice()))
    }

    /// Expressions that failed to prepare. Empty for the R4 definitions (a test checks).
    pub fn problems(&self) -> &[PrepareProblem] {
        &self.problems
    }

    /// How many distinct expressions were compiled for all types.
    pub fn expression_count(&self) -> usize {
        self.expression_count
    }

    /// How many (type, parameter) expressions are evaluated as direct paths, of how many.
    pub fn fast_path_count(&self) -> (usize, usize) {
        let plans = self
            .types
            .values()
            .flat_map(|tp| tp.plans.iter())
            .filter(|p| p.expr.is_some());
        plans.fold((0, 0), |(fast, all), p| {
            (fast + usize::from(p.fast.is_some()), all + 1)
        })
    }

    pub(crate) fn plans(&self, resource_type: &str) -> Option<&TypePlans> {
        self.types.get(resource_type)
    }
}

/// A union part without surrounding whitespace and redundant outer parentheses, to
/// compare parts of different parameters.
fn bare(part: &str) -> String {
    let mut p = part.trim();
    while let Some(inner) = p.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
        // Only when the parentheses enclose the whole part: `(a).b | (c)` keeps its own.
        if split_union(inner).len() != 1 || !balanced(inner) {
            break;
        }
        p = inner.trim();
    }
    p.to_string()
}

/// Whether parentheses balance within `s` without ever closing more than opened.
fn balanced(s: &str) -> bool {
    let mut depth = 0i32;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

/// Find the union parameters (see [`SearchRegistry::union_sources`]): per type, a
/// parameter of several parts whose parts are exactly covered by other parameters of
/// the same type and kind with fewer parts; kept only if that holds, with the same
/// sources, on every type having the code, so a store can map a code to its sources
/// whatever the types a search spans.
fn union_parameters(
    params: &[SearchParam],
    types: &HashMap<&'static str, TypePlans>,
    parts_of: &HashMap<(&'static str, usize), Vec<String>>,
) -> FnvHashMap<&'static str, Vec<&'static str>> {
    let same_kind = |a: &SearchParam, b: &SearchParam| {
        a.def.param_type == b.def.param_type
            && a.components.len() == b.components.len()
            && a.components
                .iter()
                .zip(&b.components)
                .all(|(x, y)| x.param_type == y.param_type && x.expr.source() == y.expr.source())
    };
    // Per code: the sources on each type having it (None where it is no union).
    let mut per_code: HashMap<&'static str, Vec<Option<Vec<&'static str>>>> = HashMap::new();
    for (&rt, tp) in types {
        for plan in &tp.plans {
            let p = &params[plan.param];
            let found = parts_of.get(&(rt, plan.param)).and_then(|parts| {
                if parts.len() < 2 {
                    return None;
                }
                let mut sources: Vec<&'static str> = Vec::new();
                let mut covered = vec![false; parts.len()];
                for other in &tp.plans {
                    let q = &params[other.param];
                    if other.param == plan.param || !same_kind(p, q) {
                        continue;
                    }
                    let Some(qparts) = parts_of.get(&(rt, other.param)) else {
                        continue;
                    };
                    let within: Option<Vec<usize>> = qparts
                        .iter()
                        .map(|qp| parts.iter().position(|pp| pp == qp))
                        .collect();
                    match within {
                        // Disjoint from what is covered already: no value counted twice.
                        Some(at)
                            if qparts.len() < parts.len() && at.iter().all(|&i| !covered[i]) =>
                        {
                            at.iter().for_each(|&i| covered[i] = true);
                            sources.push(q.code());
                        }
                        _ => {}
                    }
                }
                covered.iter().all(|&c| c).then(|| {
                    sources.sort_unstable();
                    sources
                })
            });
            per_code.entry(p.code()).or_default().push(found);
        }
    }
    let mut unions: FnvHashMap<&'static str, Vec<&'static str>> = per_code
        .into_iter()
        .filter_map(|(code, all)| {
            let first = all.first()?.clone()?;
            all.iter()
                .all(|s| s.as_ref() == Some(&first))
                .then_some((code, first))
        })
        .collect();
    // A source must be stored itself: drop unions built on other unions.
    let derived: Vec<&'static str> = unions.keys().copied().collect();
    unions.retain(|_, sources| !sources.iter().any(|s| derived.contains(s)));
    unions
}

/// Where a filtered alias (see [`SearchRegistry::filtered_alias_source`]) takes its
/// values from.
#[derive(Debug, Default)]
struct FilteredAlias {
    /// (resource type, source parameter code), for the types where it is an alias.
    by_type: Vec<(&'static str, &'static str)>,
    /// The distinct source codes, sorted.
    sources: Vec<&'static str>,
}

/// Find the filtered aliases: per type, a reference parameter of one part
/// `X.where(resolve() is T)` where `X` is the one part of another reference parameter
/// of that type. Kept only for codes that are reference parameters on every type.
fn filtered_aliases(
    params: &[SearchParam],
    types: &HashMap<&'static str, TypePlans>,
    parts_of: &HashMap<(&'static str, usize), Vec<String>>,
) -> FnvHashMap<&'static str, FilteredAlias> {
    let is_ref = |p: &SearchParam| p.def.param_type == SearchParamType::Reference;
    let mut found: FnvHashMap<&'static str, FilteredAlias> = FnvHashMap::default();
    let mut not_reference: Vec<&'static str> = Vec::new();
    for (&rt, tp) in types {
        for plan in &tp.plans {
            let p = &params[plan.param];
            if !is_ref(p) {
                not_reference.push(p.code());
                continue;
            }
            let Some([part]) = parts_of.get(&(rt, plan.param)).map(Vec::as_slice) else {
                continue;
            };
            let Some(inner) = part
                .strip_suffix(')')
                .and_then(|x| x.rsplit_once(".where(resolve() is "))
                .filter(|(_, t)| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric()))
                .map(|(x, _)| x)
            else {
                continue;
            };
            let source = tp.plans.iter().find(|other| {
                other.param != plan.param
                    && is_ref(&params[other.param])
                    && parts_of
                        .get(&(rt, other.param))
                        .is_some_and(|q| q.len() == 1 && q[0] == inner)
            });
            if let Some(source) = source {
                let entry = found.entry(p.code()).or_default();
                entry.by_type.push((rt, params[source.param].code()));
            }
        }
    }
    found.retain(|code, _| !not_reference.contains(code));
    // A source must be stored itself: no alias of an alias.
    let codes: Vec<&'static str> = found.keys().copied().collect();
    found.retain(|_, a| !a.by_type.iter().any(|(_, s)| codes.contains(s)));
    for a in found.values_mut() {
        a.by_type.sort_unstable();
        a.sources = a.by_type.iter().map(|(_, s)| *s).collect();
        a.sources.sort_unstable();
        a.sources.dedup();
    }
    found
}

/// The definition giving a composite component its type.
///
/// Normally the component's `definition`; but R4's `DocumentReference-relationship` has
/// its two definitions swapped (component `code` points at `relatesto`, the reference
/// parameter on `relatesTo.target`, and `target` at the token `relation`), which would
/// index nothing. So when the component's full path (`{composite}.{component}`) is
/// exactly the expression of another component's definition, that one is used.
fn component_definition<'d>(
    def: &SearchParamDef,
    c: &vigil_fhir_model::SearchComponentDef,
    defs: &'d [SearchParamDef],
    by_url: &'d HashMap<&'static str, usize>,
) -> Option<&'d usize> {
    let declared = by_url.get(c.definition.as_str())?;
    let full = def
        .expression
        .as_deref()
        .map(|e| format!("{e}.{}", c.expression));
    let path_of = |i: &usize| defs[*i].expression.as_deref();
    if full.is_some() && path_of(declared) != full.as_deref() {
        for other in &def.component {
            if let Some(oi) = by_url.get(other.definition.as_str()) {
                if path_of(oi) == full.as_deref() {
                    return Some(oi);
                }
            }
        }
    }
    Some(declared)
}

// ---------------------------------------------------------------------------------------
// Expression text handling

/// Split an expression at its top-level `|` (outside parentheses, brackets, braces and
/// string/identifier quotes).
pub fn split_union(src: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in src.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' | '`' => quote = Some(c),
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '|' if depth == 0 => {
                parts.push(src[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(src[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The type name a union part starts from (`(Observation.value as Quantity)` →
/// `Observation`); `None` for parts on the implicit focus (`name`, `%resource.x`).
pub fn head_type(part: &str) -> Option<&str> {
    let s = part.trim_start_matches(|c: char| c == '(' || c.is_whitespace());
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    let head = &s[..end];
    head.starts_with(|c: char| c.is_ascii_uppercase())
        .then_some(head)
}

/// The parts of a (union) expression that apply to `resource_type`, rewritten and joined.
fn specialize(src: &str, resource_type: &str, model: &Model) -> String {
    let parts: Vec<&str> = split_union(src)
        .into_iter()
        .filter(|p| head_type(p).is_none_or(|h| model.is_subtype(resource_type, h)))
        .collect();
    rewrite_as(&parts.join(" | "))
}

/// Rewrite the `as` type casts of R4 search expressions into `ofType`.
///
/// `x as T` and `x.as(T)` are errors in FHIRPath when `x` has several items, and R4
/// applies them to repeating elements (`(ActivityDefinition.useContext.value as
/// CodeableConcept)`, one per useContext). `ofType(T)` filters the same way (exact type
/// match for primitives, subtypes for complex types) without the singleton rule; R5's
/// search parameters made this same change. The R4 component `value.as(DateTime)` names
/// the System type where the FHIR primitive is meant (it would match nothing), so the
/// System primitive names are mapped to their FHIR primitives.
pub fn rewrite_as(src: &str) -> String {
    static PAREN_AS: OnceLock<Option<regex::Regex>> = OnceLock::new();
    static FN_AS: OnceLock<Option<regex::Regex>> = OnceLock::new();
    let paren_as = PAREN_AS.get_or_init(|| {
        regex::Regex::new(r"\(([^()'`]*?)\s+as\s+([A-Za-z][A-Za-z0-9_.]*)\s*\)").ok()
    });
    let fn_as = FN_AS.get_or_init(|| {
        regex::Regex::new(r"\.(?:as|ofType)\(\s*([A-Za-z][A-Za-z0-9_.]*)\s*\)").ok()
    });
    let mut out = src.to_string();
    if let Some(re) = paren_as {
        // Repeat: a rewrite can expose an enclosing cast.
        for _ in 0..4 {
            let next = re.replace_all(&out, "$1.ofType($2)").into_owned();
            if next == out {
                break;
            }
            out = next;
        }
    }
    if let Some(re) = fn_as {
        out = re
            .replace_all(&out, |c: &regex::Captures<'_>| {
                let ty = &c[1];
                let ty = match ty {
                    "Boolean" => "boolean",
                    "String" => "string",
                    "Integer" => "integer",
                    "Decimal" => "decimal",
                    "Date" => "date",
                    "DateTime" => "dateTime",
                    "Time" => "time",
                    other => other,
                };
                format!(".ofType({ty})")
            })
            .into_owned();
    }
    out
}

// ---------------------------------------------------------------------------------------
// Guards

/// The top-level elements an expression starts from, as a bit mask of their indices in
/// the resource's definition, if every path of it starts at the resource and only
/// passes through operations that give nothing on nothing. `Patient.deceased.exists()
/// and ...` has no guard: it yields `false` on a resource without `deceased`, which is a
/// value to index.
fn guard_of(e: &Expr, resource_type: &str, model: &Model) -> Option<u64> {
    let mut names = Vec::new();
    if !root_elements(e, resource_type, model, &mut names) {
        return None;
    }
    let def = model.type_def(resource_type)?;
    let mut mask = 0u64;
    for name in names {
        let child = def.child(&name)?.child;
        let index = def.children.iter().position(|c| std::ptr::eq(c, child))?;
        mask |= 1u64.checked_shl(u32::try_from(index).ok()?)?;
    }
    (mask != 0).then_some(mask)
}

/// For each JSON property name a resource of this type may have (`status`, `_status`,
/// `valueQuantity`, ...), the bit of its element in guards.
fn element_bits(
    def: &vigil_fhir_model::NodeDef,
) -> HashMap<Box<str>, u64, BuildHasherDefault<Fnv>> {
    let mut bits = HashMap::default();
    for (i, child) in def.children.iter().enumerate() {
        let Some(bit) = u32::try_from(i).ok().and_then(|i| 1u64.checked_shl(i)) else {
            continue;
        };
        let mut names = vec![child.name.to_string()];
        if child.choice {
            names.extend(
                child
                    .types
                    .iter()
                    .map(|t| format!("{}{}", child.name, capitalize(t))),
            );
        }
        for n in names {
            bits.insert(format!("_{n}").into(), bit);
            bits.insert(n.into(), bit);
        }
    }
    bits
}

fn root_elements(e: &Expr, resource_type: &str, model: &Model, out: &mut Vec<String>) -> bool {
    match &e.kind {
        ExprKind::Binary(BinOp::Union, l, r) => {
            root_elements(l, resource_type, model, out)
                && root_elements(r, resource_type, model, out)
        }
        ExprKind::Member(target, name) => match &target.kind {
            ExprKind::Ident(head) if is_type_head(head, resource_type, model) => {
                out.push(name.clone());
                true
            }
            _ => root_elements(target, resource_type, model, out),
        },
        ExprKind::Ident(name) if !is_type_head(name, resource_type, model) => {
            out.push(name.clone());
            true
        }
        ExprKind::Fn {
            target: Some(target),
            func,
            ..
        } if passes_empty(*func) => root_elements(target, resource_type, model, out),
        ExprKind::Indexer(target, _) | ExprKind::As(target, _) => {
            root_elements(target, resource_type, model, out)
        }
        _ => false,
    }
}

fn is_type_head(name: &str, resource_type: &str, model: &Model) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase()) && model.is_subtype(resource_type, name)
}

/// Functions whose result is empty when their input is empty.
fn passes_empty(f: Func) -> bool {
    matches!(
        f,
        Func::Where
            | Func::Select
            | Func::OfType
            | Func::As
            | Func::First
            | Func::Last
            | Func::Tail
            | Func::Skip
            | Func::Take
            | Func::Single
            | Func::Distinct
            | Func::Resolve
            | Func::Extension
            | Func::Children
            | Func::Descendants
            | Func::Repeat
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r4_filtered_aliases_are_the_where_resolve_parameters() {
        let r = SearchRegistry::r4();
        let mut codes: Vec<(&str, Vec<&str>)> = r
            .filtered_alias_parameters()
            .map(|(c, s)| (c, s.to_vec()))
            .collect();
        codes.sort();
        assert_eq!(
            codes,
            vec![
                ("patient", vec!["actor", "link", "subject", "target"]),
                ("practitioner", vec!["actor", "link", "participant"]),
                ("relatedperson", vec!["link"]),
            ]
        );
        assert_eq!(
            r.filtered_alias_source("Observation", "patient"),
            Some("subject")
        );
        assert_eq!(
            r.filtered_alias_source("RiskAssessment", "patient"),
            Some("subject")
        );
        // `AllergyIntolerance.patient` is a path of its own, no filter.
        assert_eq!(
            r.filtered_alias_source("AllergyIntolerance", "patient"),
            None
        );
        assert_eq!(r.filtered_alias_source("Observation", "subject"), None);
        for (code, sources) in &codes {
            for rt in r.resource_types() {
                if let Some(p) = r.param(rt, code) {
                    assert_eq!(p.param_type(), SearchParamType::Reference, "{rt}.{code}");
                }
                if let Some(source) = r.filtered_alias_source(rt, code) {
                    assert!(sources.contains(&source));
                    let (alias, src) = (
                        r.expression_for(rt, code).unwrap_or_default(),
                        r.expression_for(rt, source).unwrap_or_default(),
                    );
                    assert!(
                        alias.contains(".where(resolve() is "),
                        "{rt}.{code}: {alias}"
                    );
                    assert!(!src.contains("where("), "{rt}.{source}: {src}");
                }
            }
        }
    }

    #[test]
    fn r4_union_parameters_are_the_observation_combos() {
        let r = SearchRegistry::r4();
        let mut unions: Vec<(&str, Vec<&str>)> =
            r.union_parameters().map(|(c, s)| (c, s.to_vec())).collect();
        unions.sort();
        assert_eq!(
            unions,
            vec![
                ("combo-code", vec!["code", "component-code"]),
                (
                    "combo-code-value-concept",
                    vec!["code-value-concept", "component-code-value-concept"]
                ),
                (
                    "combo-code-value-quantity",
                    vec!["code-value-quantity", "component-code-value-quantity"]
                ),
                (
                    "combo-data-absent-reason",
                    vec!["component-data-absent-reason", "data-absent-reason"]
                ),
                (
                    "combo-value-concept",
                    vec!["component-value-concept", "value-concept"]
                ),
                (
                    "combo-value-quantity",
                    vec!["component-value-quantity", "value-quantity"]
                ),
            ]
        );
        assert_eq!(r.union_sources("code"), None);
        assert_eq!(bare(" ((A.b | C)) "), "(A.b | C)");
        assert_eq!(bare("(A.b as X)"), "A.b as X");
        assert_eq!(bare("(A).b | (C)"), "(A).b | (C)");
    }

    #[test]
    fn splits_unions() {
        assert_eq!(
            split_union("A.b | C.d.where(e | f) | 'x|y'"),
            vec!["A.b", "C.d.where(e | f)", "'x|y'"]
        );
        assert_eq!(
            head_type("(Observation.value as Quantity)"),
            Some("Observation")
        );
        assert_eq!(head_type("name"), None);
        assert_eq!(head_type("%resource.x"), None);
    }

    #[test]
    fn rewrites_as() {
        assert_eq!(
            rewrite_as("(Observation.value as CodeableConcept).text | (A.b as Quantity)"),
            "Observation.value.ofType(CodeableConcept).text | A.b.ofType(Quantity)"
        );
        assert_eq!(
            rewrite_as("value.as(DateTime) | value.as(Period)"),
            "value.ofType(dateTime) | value.ofType(Period)"
        );
    }
}
