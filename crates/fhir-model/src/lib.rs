//! FHIR R4 definitions as compact, navigable tables.
//!
//! The tables are generated from the official 4.0.1 definitions by `tools/gen_fhir_tables.py`
//! and embedded in the binary; they are parsed once, on first use. The model answers the
//! questions FHIRPath, validation and search need: which children an element has, of which
//! types and cardinality, which JSON property names a choice element takes, which types
//! derive from which, the invariants and required bindings, and the search parameters.

use serde::Deserialize;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a: for the model's maps of short names (types, element names), looked up many
/// times per resource by validation and indexing; std's SipHash costs several times more
/// per lookup, and these keys come from the specification, not from requests.
#[derive(Default, Clone, Copy)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A `HashMap` hashed with [`Fnv`].
pub type FnvHashMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;
use std::sync::OnceLock;

mod search;
pub use search::{SearchComponentDef, SearchParamDef, SearchParamType};

/// Index of a [`NodeDef`] in the model.
pub type NodeId = u32;

/// What kind of type a definition describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeKind {
    Primitive,
    Complex,
    Resource,
    /// An anonymous BackboneElement (or Element) defined inline in a resource or type.
    Backbone,
}

/// A constraint (invariant) expressed in FHIRPath.
#[derive(Debug, Clone, Deserialize)]
pub struct Constraint {
    pub key: String,
    pub severity: String,
    pub human: String,
    pub expression: String,
}

/// A child element of a node, as reached from its parent.
#[derive(Debug, Clone)]
pub struct ChildDef {
    /// Element name without `[x]` (e.g. `value`).
    pub name: Box<str>,
    /// The full element path (e.g. `Observation.value[x]`).
    pub path: Box<str>,
    pub min: u32,
    /// `None` for unbounded (`*`).
    pub max: Option<u32>,
    /// The allowed type codes (several for choice elements).
    pub types: Vec<Box<str>>,
    /// For Reference/canonical types: the allowed target type names (empty = any).
    pub targets: Vec<Box<str>>,
    pub choice: bool,
    /// The node describing this element's children when it is an inline backbone element,
    /// or a content reference to one.
    pub backbone: Option<NodeId>,
    pub binding: Option<Box<str>>,
    pub constraints: Vec<Constraint>,
    pub summary: bool,
    pub modifier: bool,
}

impl ChildDef {
    pub fn is_array(&self) -> bool {
        self.max != Some(1) && self.max != Some(0)
    }
}

/// How a JSON property name maps onto a child element.
#[derive(Debug, Clone, Copy)]
pub struct ChildMatch<'m> {
    pub child: &'m ChildDef,
    /// For a choice element reached through its typed name (`valueQuantity`): the type.
    pub choice_type: Option<&'m str>,
}

/// A type (resource, datatype, primitive) or an inline backbone element.
#[derive(Debug)]
pub struct NodeDef {
    pub id: NodeId,
    /// The FHIR type name (`Patient`, `HumanName`, `string`, or `BackboneElement` / `Element`
    /// for inline elements).
    pub type_name: Box<str>,
    /// The definition path (`Patient`, `Patient.contact`).
    pub path: Box<str>,
    pub kind: TypeKind,
    pub is_abstract: bool,
    /// The base type's name (`DomainResource` for Patient).
    pub base: Option<Box<str>>,
    pub children: Vec<ChildDef>,
    /// Child lookup by JSON property name, including each typed choice name.
    by_name: FnvHashMap<Box<str>, (usize, Option<usize>)>,
    /// Invariants declared on this type or element itself (inherited ones live on the base).
    pub constraints: Vec<Constraint>,
    /// For primitives: the System type (`String`, `Date`, ...) and the lexical regex.
    pub system_type: Option<Box<str>>,
    pub regex: Option<Box<str>>,
}

impl NodeDef {
    /// Look a child up by JSON property name (`name`, `valueQuantity`, `value`).
    pub fn child(&self, json_name: &str) -> Option<ChildMatch<'_>> {
        let (idx, ty) = *self.by_name.get(json_name)?;
        let child = &self.children[idx];
        Some(ChildMatch {
            child,
            choice_type: ty.map(|t| &*child.types[t]),
        })
    }
}

/// The FHIR R4 model.
pub struct Model {
    nodes: Vec<NodeDef>,
    types: FnvHashMap<Box<str>, NodeId>,
    valuesets: HashMap<String, HashMap<String, Vec<String>>>,
    search_params: Vec<SearchParamDef>,
    patient_compartment: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct RawModel {
    types: HashMap<String, RawType>,
}

#[derive(Deserialize)]
struct RawType {
    name: String,
    kind: String,
    #[serde(rename = "abstract")]
    is_abstract: bool,
    base: Option<String>,
    constraints: Vec<(String, String, String, String)>,
    elements: Vec<RawElement>,
    system: Option<String>,
    regex: Option<String>,
}

#[derive(Deserialize)]
struct RawElement {
    path: String,
    min: u32,
    max: String,
    #[serde(default)]
    types: Vec<RawElementType>,
    #[serde(rename = "contentReference")]
    content_reference: Option<String>,
    binding: Option<String>,
    #[serde(default)]
    constraints: Vec<(String, String, String, String)>,
    #[serde(default)]
    summary: bool,
    #[serde(default)]
    modifier: bool,
}

#[derive(Deserialize)]
struct RawElementType {
    code: String,
    #[serde(default)]
    targets: Vec<String>,
}

fn constraints(raw: Vec<(String, String, String, String)>) -> Vec<Constraint> {
    raw.into_iter()
        .map(|(key, severity, human, expression)| Constraint {
            key,
            severity,
            human,
            expression,
        })
        .collect()
}

/// Uppercase the first character, as FHIR does for typed choice names (`valueDateTime`).
pub fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl Model {
    /// The embedded FHIR R4 model, parsed on first use.
    pub fn r4() -> &'static Model {
        static MODEL: OnceLock<Model> = OnceLock::new();
        MODEL.get_or_init(|| {
            Model::from_json(
                include_str!("../data/model.json"),
                include_str!("../data/valuesets.json"),
                include_str!("../data/search-parameters.json"),
                include_str!("../data/compartment-patient.json"),
            )
            // The tables are generated and embedded at build time; a failure here is a
            // build defect caught by the crate's tests, never a runtime input problem.
            .unwrap_or_else(|e| panic!("embedded FHIR model is corrupt: {e}"))
        })
    }

    fn from_json(
        model: &str,
        valuesets: &str,
        params: &str,
        compartment: &str,
    ) -> Result<Model, serde_json::Error> {
        let raw: RawModel = serde_json::from_str(model)?;
        let valuesets = serde_json::from_str(valuesets)?;
        let search_params: Vec<SearchParamDef> = serde_json::from_str(params)?;
        let patient_compartment = serde_json::from_str(compartment)?;
        let mut m = Model {
            nodes: Vec::new(),
            types: FnvHashMap::default(),
            valuesets,
            search_params,
            patient_compartment,
        };
        let mut names: Vec<String> = raw.types.keys().cloned().collect();
        names.sort();
        // Pass 1: a node for each type root, so element types can be resolved by name.
        for name in &names {
            let t = &raw.types[name];
            let kind = match t.kind.as_str() {
                "primitive-type" => TypeKind::Primitive,
                "resource" => TypeKind::Resource,
                _ => TypeKind::Complex,
            };
            let id = m.push_node(&t.name, &t.name, kind);
            let node = &mut m.nodes[id as usize];
            node.is_abstract = t.is_abstract;
            node.base = t.base.as_deref().map(Into::into);
            node.constraints = constraints(t.constraints.clone());
            node.system_type = t.system.as_deref().map(Into::into);
            node.regex = t.regex.as_deref().map(Into::into);
            m.types.insert(t.name.as_str().into(), id);
        }
        // Pass 2: elements, creating backbone nodes on the way.
        let mut raw_types = raw.types;
        for name in &names {
            let Some(t) = raw_types.remove(name) else {
                continue;
            };
            let root = m.types[name.as_str()];
            let mut by_path: HashMap<String, NodeId> = HashMap::new();
            by_path.insert(String::new(), root);
            let mut content_refs: Vec<(NodeId, usize, String)> = Vec::new();
            for el in t.elements {
                let (parent_path, child_name) = match el.path.rfind('.') {
                    Some(i) => (el.path[..i].to_string(), &el.path[i + 1..]),
                    None => (String::new(), el.path.as_str()),
                };
                let Some(&parent) = by_path.get(&parent_path) else {
                    continue;
                };
                let choice = child_name.ends_with("[x]");
                let base_name = child_name.trim_end_matches("[x]");
                let types: Vec<Box<str>> =
                    el.types.iter().map(|t| t.code.as_str().into()).collect();
                let targets: Vec<Box<str>> = el
                    .types
                    .iter()
                    .flat_map(|t| t.targets.iter().map(|s| s.as_str().into()))
                    .collect();
                let full_path = format!("{}.{}", t.name, el.path);
                let backbone = if types.len() == 1
                    && (&*types[0] == "BackboneElement" || &*types[0] == "Element")
                    && el.content_reference.is_none()
                {
                    let id = m.push_node(&types[0], &full_path, TypeKind::Backbone);
                    by_path.insert(el.path.clone(), id);
                    Some(id)
                } else {
                    None
                };
                let child = ChildDef {
                    name: base_name.into(),
                    path: full_path.into(),
                    min: el.min,
                    max: if el.max == "*" {
                        None
                    } else {
                        el.max.parse().ok()
                    },
                    types,
                    targets,
                    choice,
                    backbone,
                    binding: el.binding.map(Into::into),
                    constraints: constraints(el.constraints),
                    summary: el.summary,
                    modifier: el.modifier,
                };
                let parent_node = &mut m.nodes[parent as usize];
                let idx = parent_node.children.len();
                if choice {
                    parent_node.by_name.insert(base_name.into(), (idx, None));
                    for (ti, ty) in child.types.iter().enumerate() {
                        let typed = format!("{}{}", base_name, capitalize(ty));
                        parent_node.by_name.insert(typed.into(), (idx, Some(ti)));
                    }
                } else {
                    parent_node.by_name.insert(base_name.into(), (idx, None));
                }
                parent_node.children.push(child);
                if let Some(cr) = el.content_reference {
                    content_refs.push((parent, idx, cr));
                }
            }
            for (parent, idx, target) in content_refs {
                // "Questionnaire.item" -> relative "item"
                let rel = target.split_once('.').map(|(_, r)| r).unwrap_or("");
                if let Some(&node) = by_path.get(rel) {
                    let type_name = m.nodes[node as usize].type_name.clone();
                    let child = &mut m.nodes[parent as usize].children[idx];
                    child.backbone = Some(node);
                    child.types = vec![type_name];
                }
            }
        }
        Ok(m)
    }

    fn push_node(&mut self, type_name: &str, path: &str, kind: TypeKind) -> NodeId {
        let id = self.nodes.len() as NodeId;
        self.nodes.push(NodeDef {
            id,
            type_name: type_name.into(),
            path: path.into(),
            kind,
            is_abstract: false,
            base: None,
            children: Vec::new(),
            by_name: FnvHashMap::default(),
            constraints: Vec::new(),
            system_type: None,
            regex: None,
        });
        id
    }

    pub fn node(&self, id: NodeId) -> &NodeDef {
        &self.nodes[id as usize]
    }

    /// The definition of a named type (`Patient`, `Quantity`, `date`).
    pub fn type_def(&self, name: &str) -> Option<&NodeDef> {
        self.types.get(name).map(|&id| &self.nodes[id as usize])
    }

    pub fn type_id(&self, name: &str) -> Option<NodeId> {
        self.types.get(name).copied()
    }

    /// The node describing values of a child element of the given type: the backbone node
    /// for inline elements, otherwise the named type.
    pub fn child_node(&self, child: &ChildDef, type_code: &str) -> Option<NodeId> {
        child.backbone.or_else(|| self.type_id(type_code))
    }

    pub fn is_resource_type(&self, name: &str) -> bool {
        self.type_def(name)
            .is_some_and(|t| t.kind == TypeKind::Resource)
    }

    pub fn is_primitive(&self, name: &str) -> bool {
        self.type_def(name)
            .is_some_and(|t| t.kind == TypeKind::Primitive)
    }

    /// Whether `ty` is `ancestor` or derives from it (`Patient` is a `DomainResource`,
    /// `Age` is a `Quantity`, `code` is a `string`).
    pub fn is_subtype(&self, ty: &str, ancestor: &str) -> bool {
        let mut cur = Some(ty);
        let mut guard = 0;
        while let Some(t) = cur {
            if t == ancestor {
                return true;
            }
            guard += 1;
            if guard > 16 {
                return false;
            }
            cur = self.type_def(t).and_then(|d| d.base.as_deref());
        }
        false
    }

    /// All resource type names.
    pub fn resource_types(&self) -> impl Iterator<Item = &str> {
        self.nodes
            .iter()
            .filter(|n| n.kind == TypeKind::Resource)
            .map(|n| &*n.type_name)
    }

    /// The codes of an expanded required value set, by code system; `None` when the value
    /// set could not be expanded from the definitions (such bindings are not checked).
    pub fn value_set(&self, url: &str) -> Option<&HashMap<String, Vec<String>>> {
        let url = url.split('|').next().unwrap_or(url);
        self.valuesets.get(url)
    }

    /// The search parameters that put a resource of this type in a patient's compartment
    /// (`Observation` -> `subject`, `performer`); empty if the type is not in it.
    pub fn patient_compartment_params(&self, resource_type: &str) -> &[String] {
        self.patient_compartment
            .get(resource_type)
            .map_or(&[], Vec::as_slice)
    }

    /// All search parameters of the specification.
    pub fn search_params(&self) -> &[SearchParamDef] {
        &self.search_params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_loads_and_navigates() {
        let m = Model::r4();
        let obs = m.type_def("Observation").unwrap();
        assert_eq!(obs.kind, TypeKind::Resource);
        let vq = obs.child("valueQuantity").unwrap();
        assert_eq!(vq.choice_type, Some("Quantity"));
        assert!(vq.child.choice);
        let comp = obs.child("component").unwrap();
        let comp_node = m.node(comp.child.backbone.unwrap());
        assert_eq!(&*comp_node.path, "Observation.component");
        assert!(comp_node.child("valueString").is_some());
        assert!(m.is_subtype("Patient", "Resource"));
        assert!(m.is_subtype("Age", "Quantity"));
        assert!(!m.is_subtype("Quantity", "Age"));
        // content references: Questionnaire.item.item has the item's children
        let q = m.type_def("Questionnaire").unwrap();
        let item = m.node(q.child("item").unwrap().child.backbone.unwrap());
        let nested = item.child("item").unwrap();
        assert_eq!(nested.child.backbone, Some(item.id));
        // 146 concrete resources plus Resource, DomainResource and Parameters-like abstract bases
        assert_eq!(m.resource_types().count(), 149);
        assert_eq!(m.search_params().len(), 1375);
        assert!(m
            .value_set("http://hl7.org/fhir/ValueSet/administrative-gender")
            .is_some());
        assert_eq!(
            m.patient_compartment_params("Observation"),
            ["subject", "performer"]
        );
        assert_eq!(m.patient_compartment_params("Patient"), ["link"]);
        assert!(m.patient_compartment_params("Organization").is_empty());
    }
}
