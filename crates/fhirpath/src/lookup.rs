//! Fast paths for the lookups evaluation repeats on every step: a node's child by JSON
//! property name, a type by name, subtype tests, and JSON object properties.
//!
//! The model answers these through `HashMap`s with SipHash and string-keyed walks
//! (`is_subtype` looks every ancestor up by name), and a serde_json object is an
//! `IndexMap` with SipHash too: profiling the benchmark workloads showed hashing as the
//! largest single cost of evaluation. The tables here are derived from the model once
//! (per node, on first use), keyed with a cheap non-cryptographic hash (the keys are
//! schema names, never attacker-chosen input), and carry what `children_named` would
//! otherwise recompute per step (the child's node, whether it is primitive, its `_name`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use serde_json::{Map, Value};
use vigil_fhir_model::{capitalize, ChildDef, ChildMatch, Model, NodeDef, NodeId, TypeKind};

/// The rustc "Fx" hash: a multiply-rotate per word. Good enough for short schema names
/// and several times cheaper than SipHash on them.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// How the values of a child element are typed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ChildKind {
    /// The base name of a choice element (`value` for `value[x]`): whichever typed
    /// property (`valueQuantity`, ...) is present.
    ChoiceBase,
    /// A `Resource`/`DomainResource` element: each value is typed by its `resourceType`.
    Resource,
    /// A single type (or one choice type, reached by its typed name): the node of that
    /// type, and whether it is a primitive (whose id and extensions sit in `_name`).
    Typed { id: Option<NodeId>, primitive: bool },
}

/// What a JSON property name means on a node.
#[derive(Debug, Clone)]
pub(crate) struct ChildEntry {
    pub m: ChildMatch<'static>,
    pub kind: ChildKind,
    /// `_` + the property name: where a primitive's id and extensions live.
    pub ext_name: Box<str>,
}

/// Classify a child match the way `children_named` treats it.
pub(crate) fn classify(model: &Model, m: &ChildMatch<'_>) -> ChildKind {
    if m.child.choice && m.choice_type.is_none() {
        return ChildKind::ChoiceBase;
    }
    let t: &str = m
        .choice_type
        .unwrap_or_else(|| m.child.types.first().map_or("", |t| &**t));
    if t == "Resource" || t == "DomainResource" {
        ChildKind::Resource
    } else {
        ChildKind::Typed {
            id: model.child_node(m.child, t),
            primitive: model.is_primitive(t),
        }
    }
}

/// The per-node table: every JSON property name the node's children answer to.
pub(crate) struct NodeTable {
    by_name: FxMap<Box<str>, u32>,
    entries: Vec<ChildEntry>,
    /// The node of the base type (`DomainResource` for `Patient`), by the base's name.
    base: Option<NodeId>,
    type_name: &'static str,
    /// The node's type name and its ancestors' (`Patient`, `DomainResource`, `Resource`),
    /// as `Model::is_subtype` walks them from the type name.
    ancestors: Vec<&'static str>,
}

impl NodeTable {
    fn build(model: &'static Model, def: &'static NodeDef) -> NodeTable {
        let mut by_name: FxMap<Box<str>, u32> = FxMap::default();
        let mut entries = Vec::new();
        let mut add = |json_name: String| {
            if by_name.contains_key(json_name.as_str()) {
                return;
            }
            // The model's own lookup decides what the name means, so the table cannot
            // disagree with it (e.g. when two children would claim one name).
            let Some(m) = def.child(&json_name) else {
                return;
            };
            let ext_name = format!("_{json_name}").into_boxed_str();
            let kind = classify(model, &m);
            by_name.insert(json_name.into_boxed_str(), entries.len() as u32);
            entries.push(ChildEntry { m, kind, ext_name });
        };
        for c in &def.children {
            add(c.name.to_string());
            if c.choice {
                for t in &c.types {
                    add(format!("{}{}", c.name, capitalize(t)));
                }
            }
        }
        // The same walk as `Model::is_subtype` (by name, at most 16 steps).
        let mut ancestors = Vec::new();
        let mut cur: Option<&'static str> = Some(&def.type_name);
        while let Some(t) = cur {
            if ancestors.len() >= 16 {
                break;
            }
            ancestors.push(t);
            cur = model.type_def(t).and_then(|d| d.base.as_deref());
        }
        NodeTable {
            by_name,
            entries,
            base: def.base.as_deref().and_then(|b| model.type_id(b)),
            type_name: &def.type_name,
            ancestors,
        }
    }

    #[inline]
    pub(crate) fn child(&self, json_name: &str) -> Option<&ChildEntry> {
        self.by_name
            .get(json_name)
            .and_then(|&i| self.entries.get(i as usize))
    }
}

pub(crate) struct Tables {
    model: &'static Model,
    /// One slot per node id the model is known to have (ids are dense from 0); filled on
    /// first use. Ids past the end fall back to the model's own lookups.
    nodes: Vec<OnceLock<NodeTable>>,
    /// Type name -> node, for every type name reachable from the resources.
    types: FxMap<&'static str, NodeId>,
}

/// The tables for the R4 model.
pub(crate) fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| Tables::build(Model::r4()))
}

impl Tables {
    /// Walk every type and backbone node reachable from the resource types (through base
    /// types, element types and backbone elements) to learn the type names and how many
    /// nodes there are. Only ids and names are touched; per-node tables come later.
    fn build(model: &'static Model) -> Tables {
        let mut types: FxMap<&'static str, NodeId> = FxMap::default();
        let mut seen: Vec<bool> = Vec::new();
        let mut stack: Vec<NodeId> = Vec::new();
        let mut max_id: Option<NodeId> = None;
        let mark = |id: NodeId, seen: &mut Vec<bool>, stack: &mut Vec<NodeId>| {
            let i = id as usize;
            if seen.len() <= i {
                seen.resize(i + 1, false);
            }
            if !seen[i] {
                seen[i] = true;
                stack.push(id);
            }
        };
        let mut visit_type = |name: &'static str, seen: &mut Vec<bool>, stack: &mut Vec<NodeId>| {
            if types.contains_key(name) {
                return;
            }
            if let Some(id) = model.type_id(name) {
                types.insert(name, id);
                mark(id, seen, stack);
            }
        };
        for name in model.resource_types() {
            visit_type(name, &mut seen, &mut stack);
        }
        while let Some(id) = stack.pop() {
            max_id = Some(max_id.map_or(id, |m| m.max(id)));
            let def = model.node(id);
            if let Some(b) = def.base.as_deref() {
                visit_type(b, &mut seen, &mut stack);
            }
            for c in &def.children {
                for t in &c.types {
                    visit_type(t, &mut seen, &mut stack);
                }
                if let Some(b) = c.backbone {
                    mark(b, &mut seen, &mut stack);
                }
            }
        }
        let count = max_id.map_or(0, |m| m as usize + 1);
        Tables {
            model,
            nodes: (0..count).map(|_| OnceLock::new()).collect(),
            types,
        }
    }

    #[inline]
    pub(crate) fn node(&self, id: NodeId) -> Option<&NodeTable> {
        let slot = self.nodes.get(id as usize)?;
        Some(slot.get_or_init(|| NodeTable::build(self.model, self.model.node(id))))
    }

    #[inline]
    pub(crate) fn type_id(&self, name: &str) -> Option<NodeId> {
        match self.types.get(name) {
            Some(&id) => Some(id),
            None => self.model.type_id(name),
        }
    }

    pub(crate) fn is_resource_type(&self, name: &str) -> bool {
        self.type_id(name)
            .is_some_and(|id| self.model.node(id).kind == TypeKind::Resource)
    }

    /// `Model::is_subtype` (same walk by base type, same depth guard), without a string
    /// hash per ancestor.
    pub(crate) fn is_subtype(&self, ty: &str, ancestor: &str) -> bool {
        if ty == ancestor {
            return true;
        }
        let Some(mut id) = self.type_id(ty) else {
            return false;
        };
        for _ in 0..16 {
            let Some(table) = self.node(id) else {
                return self
                    .model
                    .is_subtype(self.model.node(id).type_name.as_ref(), ancestor);
            };
            let Some(base) = table.base else {
                return false;
            };
            let base_name = match self.node(base) {
                Some(t) => t.type_name,
                None => &self.model.node(base).type_name,
            };
            if base_name == ancestor {
                return true;
            }
            id = base;
        }
        false
    }

    /// `is_subtype(type name of node id, ancestor)` without looking the type up by name.
    #[inline]
    pub(crate) fn node_is_subtype(&self, id: NodeId, ancestor: &str) -> bool {
        match self.node(id) {
            Some(t) => t.ancestors.contains(&ancestor),
            None => self
                .model
                .is_subtype(&self.model.node(id).type_name, ancestor),
        }
    }

    /// A node's child by JSON property name; `None` when the node has no such child.
    /// The entry is owned when the node is outside the tables (then built on the spot).
    #[inline]
    pub(crate) fn child(&self, id: NodeId, json_name: &str) -> ChildLookup<'_> {
        match self.node(id) {
            Some(t) => match t.child(json_name) {
                Some(e) => ChildLookup::Found(e),
                None => ChildLookup::Missing,
            },
            None => match self.model.node(id).child(json_name) {
                Some(m) => ChildLookup::Built(ChildEntry {
                    m,
                    kind: classify(self.model, &m),
                    ext_name: format!("_{json_name}").into_boxed_str(),
                }),
                None => ChildLookup::Missing,
            },
        }
    }
}

pub(crate) enum ChildLookup<'t> {
    Found(&'t ChildEntry),
    Built(ChildEntry),
    Missing,
}

impl ChildLookup<'_> {
    #[inline]
    pub(crate) fn entry(&self) -> Option<&ChildEntry> {
        match self {
            ChildLookup::Found(e) => Some(e),
            ChildLookup::Built(e) => Some(e),
            ChildLookup::Missing => None,
        }
    }
}

/// `Model::child_node` on the R4 model.
pub(crate) fn tables_child_node(child: &ChildDef, type_code: &str) -> Option<NodeId> {
    child.backbone.or_else(|| tables().type_id(type_code))
}

/// Whether two child matches are the same element definition.
#[inline]
pub(crate) fn same_child(a: &ChildDef, b: &ChildDef) -> bool {
    std::ptr::eq(a, b)
}

/// Objects up to this size are searched by a linear scan: FHIR objects are small and
/// comparing a few short keys is cheaper than hashing the key with SipHash.
const LINEAR_MAX: usize = 24;

/// String equality that rejects most non-matching keys on length and first byte before
/// comparing the rest: a linear scan compares a key with every property name, and a
/// full comparison is a call into `memcmp`.
#[inline(always)]
pub(crate) fn key_eq(k: &str, key: &str) -> bool {
    let (a, b) = (k.as_bytes(), key.as_bytes());
    a.len() == b.len() && a.first() == b.first() && a == b
}

/// `k.starts_with(prefix)`, cheap when the first byte already differs.
#[inline(always)]
pub(crate) fn has_prefix(k: &str, prefix: &str) -> bool {
    let (a, b) = (k.as_bytes(), prefix.as_bytes());
    a.len() >= b.len() && (b.is_empty() || a[0] == b[0]) && a.starts_with(b)
}

/// `obj.get(key)`, without hashing for small objects.
#[inline]
pub(crate) fn get<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    if obj.len() <= LINEAR_MAX {
        obj.iter().find(|(k, _)| key_eq(k, key)).map(|(_, v)| v)
    } else {
        obj.get(key)
    }
}

/// `obj.get("_" + name)`: the `_name` sibling holding a primitive's id and extensions.
/// `ext_name` is that key when the caller has it at hand.
#[inline]
pub(crate) fn get_ext<'v>(
    obj: &'v Map<String, Value>,
    name: &str,
    ext_name: Option<&str>,
) -> Option<&'v Value> {
    if obj.len() <= LINEAR_MAX {
        obj.iter()
            .find(|(k, _)| {
                let k = k.as_bytes();
                k.len() == name.len() + 1 && k[0] == b'_' && &k[1..] == name.as_bytes()
            })
            .map(|(_, v)| v)
    } else {
        match ext_name {
            Some(k) => obj.get(k),
            None => obj.get(&format!("_{name}")),
        }
    }
}

/// `a == b` on JSON values (the same answer as serde_json's `PartialEq`), faster: the
/// same value is equal without a walk, and objects look their keys up with `get`
/// rather than hashing each one with SipHash.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    if std::ptr::eq(a, b) {
        return true;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| get(y, k).is_some_and(|w| json_eq(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_eq(v, w))
        }
        _ => a == b,
    }
}

/// `json_eq` on optional values.
pub(crate) fn json_opt_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => json_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// `obj.contains_key(key)`, without hashing for small objects.
#[inline]
pub(crate) fn contains(obj: &Map<String, Value>, key: &str) -> bool {
    get(obj, key).is_some()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The tables are a cache of the model: every answer must be the model's own.
    #[test]
    fn tables_agree_with_the_model() {
        let model = Model::r4();
        let t = tables();
        // Types come first in the model's numbering, inline backbone elements after them.
        assert!(
            t.nodes.len() > t.types.len() + 100,
            "only {} nodes reached",
            t.nodes.len()
        );
        for id in 0..t.nodes.len() as NodeId {
            let def = model.node(id);
            let table = t.node(id).unwrap();
            for c in &def.children {
                let mut names = vec![c.name.to_string()];
                if c.choice {
                    names.extend(
                        c.types
                            .iter()
                            .map(|ty| format!("{}{}", c.name, capitalize(ty))),
                    );
                }
                for n in names {
                    let m = def.child(&n).unwrap();
                    let e = table.child(&n).unwrap();
                    assert!(same_child(e.m.child, m.child), "{}: {n}", def.path);
                    assert_eq!(e.m.choice_type, m.choice_type, "{}: {n}", def.path);
                    assert_eq!(&*e.ext_name, format!("_{n}"));
                }
            }
            assert!(table.child("noSuchElement").is_none());
        }
        let names: Vec<&str> = t.types.keys().copied().collect();
        for a in &names {
            assert_eq!(t.type_id(a), model.type_id(a));
            assert_eq!(t.is_resource_type(a), model.is_resource_type(a));
            for b in &names {
                assert_eq!(t.is_subtype(a, b), model.is_subtype(a, b), "{a} is {b}");
            }
        }
        for id in 0..t.nodes.len() as NodeId {
            let ty = &model.node(id).type_name;
            for b in &names {
                assert_eq!(
                    t.node_is_subtype(id, b),
                    model.is_subtype(ty, b),
                    "{ty} is {b}"
                );
            }
        }
        assert!(t.is_subtype("Patient", "Resource"));
        assert!(t.is_subtype("Age", "Quantity"));
        assert!(!t.is_subtype("Quantity", "Age"));
        assert_eq!(t.type_id("NoSuchType"), None);
    }

    /// Small objects are scanned, large ones hashed: both must find the same properties.
    #[test]
    fn property_lookup_small_and_large_objects() {
        for size in [3, LINEAR_MAX, LINEAR_MAX + 1, 40] {
            let mut obj = Map::new();
            for i in 0..size {
                obj.insert(format!("k{i}"), Value::from(i));
                obj.insert(format!("_k{i}"), Value::from(-(i as i64)));
            }
            for i in 0..size {
                let k = format!("k{i}");
                assert_eq!(get(&obj, &k), Some(&Value::from(i)));
                assert_eq!(get_ext(&obj, &k, None), Some(&Value::from(-(i as i64))));
                let ext = format!("_{k}");
                assert_eq!(
                    get_ext(&obj, &k, Some(&ext)),
                    Some(&Value::from(-(i as i64)))
                );
                assert!(contains(&obj, &k));
            }
            assert_eq!(get(&obj, "missing"), None);
            assert_eq!(get_ext(&obj, "missing", None), None);
            assert_eq!(get(&obj, "k"), None);
        }
    }

    #[test]
    fn json_equality_matches_serde_json() {
        let vals = [
            serde_json::json!({"a": 1, "b": [1, 2, {"c": "x"}]}),
            serde_json::json!({"b": [1, 2, {"c": "x"}], "a": 1}),
            serde_json::json!({"a": 1, "b": [1, 2, {"c": "y"}]}),
            serde_json::json!({"a": 1.0, "b": [1, 2, {"c": "x"}]}),
            serde_json::json!({"a": 1}),
            serde_json::json!([1, 2]),
            serde_json::json!([2, 1]),
            serde_json::json!("x"),
            serde_json::json!(null),
            serde_json::from_str::<Value>("1.50").unwrap(),
            serde_json::from_str::<Value>("1.5").unwrap(),
        ];
        for a in &vals {
            for b in &vals {
                assert_eq!(json_eq(a, b), a == b, "{a} vs {b}");
            }
        }
    }
}
