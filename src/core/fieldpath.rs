//! Field paths and sets of them, as structured-merge-diff's `fieldpath` package has them: the
//! unit of ownership of server-side apply, serialized in `metadata.managedFields` as `FieldsV1`
//! (`f:name` for a field, `k:{"name":"c"}` for an item of a list keyed by its fields, `v:"x"` for
//! an item of a set, `.` for an item that is itself owned as well as some of its fields).
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum FieldPathError {
    #[error("invalid FieldsV1: {0}")]
    Invalid(String),
    #[error("invalid FieldsV1 key {key:?}")]
    Key {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One step of a path. Key and set values are kept as their compact JSON, which orders and
/// compares them the way the serialized form does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of a struct or an entry of a map.
    Field(String),
    /// An item of an associative list, by its key fields (sorted by name) and their JSON values.
    Key(Vec<(String, String)>),
    /// An item of a set (a list of scalars), by its JSON value.
    Value(String),
    /// An item of a list by position (lists of unknown shape).
    Index(usize),
}

impl PathElement {
    pub fn field(name: &str) -> PathElement {
        PathElement::Field(name.to_string())
    }

    /// The key element of a list item from its key fields' values.
    pub fn key(fields: &[(&str, &Value)]) -> PathElement {
        let mut kv: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        kv.sort();
        PathElement::Key(kv)
    }

    /// How `FieldsV1` spells this element.
    fn to_fields_v1(&self) -> String {
        match self {
            PathElement::Field(n) => format!("f:{n}"),
            PathElement::Key(kv) => {
                let body: Vec<String> = kv
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
                    .collect();
                format!("k:{{{}}}", body.join(","))
            }
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn from_fields_v1(s: &str) -> Result<PathElement, FieldPathError> {
        let bad_key = |source| FieldPathError::Key {
            key: s.to_string(),
            source,
        };
        match s.split_at_checked(2) {
            Some(("f:", name)) => Ok(PathElement::Field(name.to_string())),
            Some(("k:", body)) => {
                let m: Map<String, Value> = serde_json::from_str(body).map_err(bad_key)?;
                let fields: Vec<(&str, &Value)> = m.iter().map(|(k, v)| (k.as_str(), v)).collect();
                Ok(PathElement::key(&fields))
            }
            Some(("v:", body)) => {
                let v: Value = serde_json::from_str(body).map_err(bad_key)?;
                Ok(PathElement::Value(v.to_string()))
            }
            Some(("i:", n)) => n
                .parse()
                .map(PathElement::Index)
                .map_err(|_| FieldPathError::Invalid(format!("bad index in {s:?}"))),
            _ => Err(FieldPathError::Invalid(format!("unknown key {s:?}"))),
        }
    }
}

impl fmt::Display for PathElement {
    /// As structured-merge-diff prints paths in conflicts: `.name`, `[name="c"]`, `[="x"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(n) => write!(f, ".{n}"),
            PathElement::Key(kv) => {
                let parts: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path from the object's root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Path(pub Vec<PathElement>);

impl Path {
    /// A path of field names (`["spec", "selector"]`).
    pub fn fields(names: &[&str]) -> Path {
        Path(names.iter().map(|n| PathElement::field(n)).collect())
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for pe in &self.0 {
            write!(f, "{pe}")?;
        }
        Ok(())
    }
}

/// A set of paths, as a tree: the elements owned at this level (`members`) and the sets below
/// each element (`children`); an element can be both (a list item and some of its fields).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Set {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, Set>,
}

impl Set {
    pub fn new() -> Set {
        Set::default()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(Set::is_empty)
    }

    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// The set below `pe` (empty when there is none).
    pub fn child(&self, pe: &PathElement) -> Option<&Set> {
        self.children.get(pe)
    }

    /// Whether `pe` is a member here (owned itself).
    pub fn has_member(&self, pe: &PathElement) -> bool {
        self.members.contains(pe)
    }

    /// Whether anything at or below `pe` is in the set.
    pub fn touches(&self, pe: &PathElement) -> bool {
        self.members.contains(pe) || self.children.get(pe).is_some_and(|c| !c.is_empty())
    }

    pub fn union(&self, other: &Set) -> Set {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out.prune();
        out
    }

    pub fn difference(&self, other: &Set) -> Set {
        let mut out = Set {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            let rest = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), rest);
        }
        out.prune();
        out
    }

    pub fn intersection(&self, other: &Set) -> Set {
        let mut out = Set {
            members: self.members.intersection(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                out.children.insert(pe.clone(), c.intersection(o));
            }
        }
        out.prune();
        out
    }

    /// This set without anything at or below the paths of `other`'s members (what
    /// structured-merge-diff calls a recursive difference).
    pub fn without_subtrees(&self, other: &Set) -> Set {
        let mut out = Set {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if other.members.contains(pe) {
                continue;
            }
            let rest = match other.children.get(pe) {
                Some(o) => c.without_subtrees(o),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), rest);
        }
        out.prune();
        out
    }

    /// Only what lies at or below `pe` (the rest of the tree dropped).
    pub fn only_under(&self, pe: &PathElement) -> Set {
        let mut out = Set::new();
        if self.members.contains(pe) {
            out.members.insert(pe.clone());
        }
        if let Some(c) = self.children.get(pe) {
            out.children.insert(pe.clone(), c.clone());
        }
        out.prune();
        out
    }

    fn prune(&mut self) {
        self.children.retain(|_, c| !c.is_empty());
    }

    /// Every member path, members of a level before the levels below (structured-merge-diff's
    /// `Iterate`).
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Path>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(Path(p));
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `FieldsV1` form.
    pub fn to_fields_v1(&self) -> Value {
        let mut keys: BTreeSet<&PathElement> = self.members.iter().collect();
        keys.extend(self.children.keys());
        let mut m = Map::new();
        for pe in keys {
            let mut inner = match self.children.get(pe) {
                Some(c) => match c.to_fields_v1() {
                    Value::Object(o) => o,
                    _ => Map::new(),
                },
                None => Map::new(),
            };
            if self.members.contains(pe) && !inner.is_empty() {
                let mut with_dot = Map::new();
                with_dot.insert(".".into(), Value::Object(Map::new()));
                with_dot.extend(inner);
                inner = with_dot;
            }
            m.insert(pe.to_fields_v1(), Value::Object(inner));
        }
        Value::Object(m)
    }

    /// Reads the `FieldsV1` form.
    pub fn from_fields_v1(v: &Value) -> Result<Set, FieldPathError> {
        let m = v
            .as_object()
            .ok_or_else(|| FieldPathError::Invalid(format!("{v} is not an object")))?;
        let mut out = Set::new();
        for (k, inner) in m {
            if k == "." {
                continue;
            }
            let pe = PathElement::from_fields_v1(k)?;
            let inner_map = inner
                .as_object()
                .ok_or_else(|| FieldPathError::Invalid(format!("{k}: {inner} is not an object")))?;
            if inner_map.is_empty() || inner_map.contains_key(".") {
                out.members.insert(pe.clone());
            }
            let child = Set::from_fields_v1(inner)?;
            if !child.is_empty() {
                out.children.insert(pe, child);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(elems: &[PathElement]) -> Vec<PathElement> {
        elems.to_vec()
    }

    fn f(n: &str) -> PathElement {
        PathElement::field(n)
    }

    #[test]
    fn fields_v1_round_trips_in_the_kubernetes_spelling() {
        let c = PathElement::key(&[("name", &json!("c"))]);
        let port = PathElement::key(&[("protocol", &json!("TCP")), ("containerPort", &json!(80))]);
        let mut s = Set::new();
        let containers = [f("spec"), f("template"), f("spec"), f("containers")];
        let mut item = containers.to_vec();
        item.push(c.clone());
        s.insert(&item);
        for leaf in ["image", "name"] {
            let mut l = item.clone();
            l.push(f(leaf));
            s.insert(&l);
        }
        let mut ports = item.clone();
        ports.extend([f("ports"), port.clone()]);
        s.insert(&ports);
        s.insert(&p(&[
            f("metadata"),
            f("finalizers"),
            PathElement::Value("\"x\"".into()),
        ]));
        s.insert(&p(&[f("spec"), f("selector")]));
        let v = s.to_fields_v1();
        assert_eq!(
            v,
            json!({"f:metadata": {"f:finalizers": {"v:\"x\"": {}}},
                "f:spec": {"f:selector": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}}}}}}}})
        );
        assert_eq!(
            serde_json::to_string(&v["f:spec"]["f:template"]["f:spec"]["f:containers"]).unwrap(),
            "{\"k:{\\\"name\\\":\\\"c\\\"}\":{\".\":{},\"f:image\":{},\"f:name\":{},\"f:ports\":{\"k:{\\\"containerPort\\\":80,\\\"protocol\\\":\\\"TCP\\\"}\":{}}}}",
            "keys in Kubernetes' order"
        );
        assert_eq!(Set::from_fields_v1(&v).unwrap(), s);
        let mut image = item.clone();
        image.push(f("image"));
        assert_eq!(
            Path(image).to_string(),
            ".spec.template.spec.containers[name=\"c\"].image"
        );
        assert_eq!(
            Path(ports).to_string(),
            ".spec.template.spec.containers[name=\"c\"].ports[containerPort=80,protocol=\"TCP\"]"
        );
        for bad in [
            json!({"x:a": {}}),
            json!({"f:a": 1}),
            json!({"k:{": {}}),
            json!([]),
        ] {
            assert!(Set::from_fields_v1(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_algebra() {
        let set = |paths: &[&[&str]]| {
            let mut s = Set::new();
            for path in paths {
                let pe: Vec<PathElement> = path.iter().map(|n| f(n)).collect();
                s.insert(&pe);
            }
            s
        };
        let a = set(&[&["a"], &["b", "c"], &["b", "d"]]);
        let b = set(&[&["b", "c"], &["e"]]);
        // (operation, result)
        let cases = [
            (
                a.union(&b),
                set(&[&["a"], &["b", "c"], &["b", "d"], &["e"]]),
            ),
            (a.difference(&b), set(&[&["a"], &["b", "d"]])),
            (a.intersection(&b), set(&[&["b", "c"]])),
            (a.without_subtrees(&set(&[&["b"]])), set(&[&["a"]])),
            (a.only_under(&f("b")), set(&[&["b", "c"], &["b", "d"]])),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        assert!(a.difference(&a).is_empty());
        assert!(a.contains(&[f("b"), f("c")]) && !a.contains(&[f("b")]));
        let paths: Vec<String> = a.paths().iter().map(Path::to_string).collect();
        assert_eq!(paths, [".a", ".b.c", ".b.d"]);
    }
}
