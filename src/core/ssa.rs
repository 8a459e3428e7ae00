//! Server-side apply and field ownership (`metadata.managedFields`), as kube-apiserver runs them
//! through structured-merge-diff: every write records which manager set which fields; an apply
//! merges the applied configuration into the live object by the schema's list types and map
//! keys, removes what the applier set before and dropped (unless someone else still owns it),
//! and refuses to change fields another manager owns unless forced.
//!
//! The structure comes from the kinds' patch schemas ([`Schema`]): a list merged by a key is an
//! associative list keyed by it (`ports` by `containerPort` and `protocol`, as Kubernetes'
//! OpenAPI declares), a list merged as primitives is a set, every other list is atomic; maps and
//! structs are granular except the atomic structs Kubernetes marks so (`LabelSelector`,
//! `NodeSelector`).
use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Map, Value};

use super::fieldpath::{FieldPathError, Path, PathElement, Set};
use super::patch::{ListRule, Schema};

#[derive(Debug, thiserror::Error)]
pub enum SsaError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("invalid managedFields: {0}")]
    ManagedFields(String),
    #[error("invalid managedFields entry {manager:?}")]
    FieldsV1 {
        manager: String,
        #[source]
        source: FieldPathError,
    },
    #[error("{0}")]
    Conflicts(Conflicts),
}

/// The annotation client-side `kubectl apply` keeps its last configuration in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The manager `kubectl apply --server-side` uses by default; only it upgrades client-side apply.
pub const KUBECTL_SSA: &str = "kubectl";
/// The Update manager that owns what an object held before its first apply.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Which part of the object a write tracks: the whole object, the main resource of a kind whose
/// status is a subresource (status left out), or the status subresource (only status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Whole,
    Main,
    Status,
}

/// The kind's structure and the part a write addresses.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub schema: &'static Schema,
    pub scope: Scope,
}

/// Structs Kubernetes marks `+structType=atomic`: owned and replaced as a whole.
const ATOMIC_STRUCTS: &[&str] = &["selector", "requiredDuringSchedulingIgnoredDuringExecution"];

/// A key field of an associative list, with the default the schema gives it.
struct KeyField {
    name: &'static str,
    default: Option<&'static str>,
}

/// Lists whose OpenAPI map keys are more than their patch merge key.
const PORT_KEYS: &[KeyField] = &[
    KeyField {
        name: "containerPort",
        default: None,
    },
    KeyField {
        name: "protocol",
        default: Some("TCP"),
    },
];
const SPREAD_KEYS: &[KeyField] = &[
    KeyField {
        name: "topologyKey",
        default: None,
    },
    KeyField {
        name: "whenUnsatisfiable",
        default: None,
    },
];

enum ListKind {
    Atomic,
    Set,
    Map(Vec<KeyField>),
}

fn list_kind(schema: &Schema, field: &str) -> (ListKind, &'static Schema) {
    let (rule, elem) = schema.list(field);
    let kind = match rule {
        ListRule::Replace => ListKind::Atomic,
        ListRule::MergePrimitive => ListKind::Set,
        ListRule::MergeByKey(key) => {
            let known = match key {
                "containerPort" => PORT_KEYS,
                "topologyKey" => SPREAD_KEYS,
                _ => &[],
            };
            if known.is_empty() {
                ListKind::Map(vec![KeyField {
                    name: key,
                    default: None,
                }])
            } else {
                ListKind::Map(
                    known
                        .iter()
                        .map(|k| KeyField {
                            name: k.name,
                            default: k.default,
                        })
                        .collect(),
                )
            }
        }
    };
    (kind, elem)
}

fn invalid(path: &[PathElement], message: impl Into<String>) -> SsaError {
    SsaError::Invalid {
        path: Path(path.to_vec()).to_string(),
        message: message.into(),
    }
}

/// The path element of an associative list's item.
fn item_key(
    keys: &[KeyField],
    item: &Value,
    at: &[PathElement],
    index: usize,
) -> Result<PathElement, SsaError> {
    let defaults: Vec<Value> = keys
        .iter()
        .map(|k| k.default.map(Value::from).unwrap_or(Value::Null))
        .collect();
    let mut fields: Vec<(&str, &Value)> = Vec::with_capacity(keys.len());
    for (k, default) in keys.iter().zip(&defaults) {
        match item.get(k.name).filter(|v| !v.is_null()) {
            Some(v) => fields.push((k.name, v)),
            None if k.default.is_some() => fields.push((k.name, default)),
            None if keys.len() > 1 => {}
            None => {
                return Err(invalid(
                    at,
                    format!(
                        "element {index}: associative list with keys has an element that omits key field {:?} (and doesn't have default value)",
                        k.name
                    ),
                ))
            }
        }
    }
    if fields.is_empty() {
        return Err(invalid(
            at,
            format!(
                "element {index}: associative list with keys has an element without any key field"
            ),
        ));
    }
    Ok(PathElement::key(&fields))
}

/// Whether a path is one the field manager never tracks (server-owned metadata, and the part a
/// scope leaves to another endpoint).
fn ignored(path: &[PathElement], scope: Scope) -> bool {
    let name = |i: usize| match path.get(i) {
        Some(PathElement::Field(n)) => Some(n.as_str()),
        _ => None,
    };
    match name(0) {
        Some("apiVersion" | "kind") => return true,
        Some("metadata") => {
            if matches!(
                name(1),
                Some(
                    "name"
                        | "namespace"
                        | "creationTimestamp"
                        | "selfLink"
                        | "uid"
                        | "generation"
                        | "managedFields"
                        | "resourceVersion"
                )
            ) {
                return true;
            }
        }
        _ => {}
    }
    match scope {
        Scope::Whole => false,
        Scope::Main => name(0) == Some("status"),
        Scope::Status => name(0) != Some("status"),
    }
}

/// The leaves of an object (fields, list items, set items) with their values; an associative
/// list's item maps to Null, so an item is never "modified", only its fields are.
type Leaves = BTreeMap<Vec<PathElement>, Value>;

fn leaves(obj: &Value, shape: Shape) -> Result<Leaves, SsaError> {
    let mut out = Leaves::new();
    if let Value::Object(m) = obj {
        walk_map(m, shape.schema, &mut Vec::new(), &mut out)?;
    }
    out.retain(|p, _| !ignored(p, shape.scope));
    Ok(out)
}

fn walk_map(
    m: &Map<String, Value>,
    schema: &'static Schema,
    at: &mut Vec<PathElement>,
    out: &mut Leaves,
) -> Result<(), SsaError> {
    for (k, v) in m {
        at.push(PathElement::field(k));
        match v {
            Value::Object(inner) if !inner.is_empty() && !ATOMIC_STRUCTS.contains(&k.as_str()) => {
                walk_map(inner, schema.field(k), at, out)?
            }
            Value::Array(items) => {
                let (kind, elem) = list_kind(schema, k);
                match kind {
                    ListKind::Atomic => {
                        out.insert(at.clone(), v.clone());
                    }
                    ListKind::Set => {
                        for item in items {
                            at.push(PathElement::Value(item.to_string()));
                            out.insert(at.clone(), item.clone());
                            at.pop();
                        }
                    }
                    ListKind::Map(keys) => {
                        for (i, item) in items.iter().enumerate() {
                            let pe = item_key(&keys, item, at, i)?;
                            at.push(pe);
                            out.insert(at.clone(), Value::Null);
                            if let Value::Object(fields) = item {
                                walk_map(fields, elem, at, out)?;
                            }
                            at.pop();
                        }
                    }
                }
            }
            _ => {
                out.insert(at.clone(), v.clone());
            }
        }
        at.pop();
    }
    Ok(())
}

fn to_set(l: &Leaves) -> Set {
    let mut s = Set::new();
    for p in l.keys() {
        s.insert(p);
    }
    s
}

/// The fields an object sets, as the manager that wrote all of it would own them.
pub fn field_set(obj: &Value, shape: Shape) -> Result<Set, SsaError> {
    Ok(to_set(&leaves(obj, shape)?))
}

/// What changed from one object to another.
struct Comparison {
    added: Set,
    modified: Set,
    removed: Set,
}

fn compare(old: &Value, new: &Value, shape: Shape) -> Result<Comparison, SsaError> {
    let (a, b) = (leaves(old, shape)?, leaves(new, shape)?);
    let mut c = Comparison {
        added: Set::new(),
        modified: Set::new(),
        removed: Set::new(),
    };
    for (p, v) in &b {
        match a.get(p) {
            None => c.added.insert(p),
            Some(old_v) if old_v != v => c.modified.insert(p),
            Some(_) => {}
        }
    }
    for p in a.keys().filter(|p| !b.contains_key(*p)) {
        c.removed.insert(p);
    }
    Ok(c)
}

/// The two operations managedFields records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who wrote: a manager's name, how, at which apiVersion, through which subresource ("" for
/// the main resource). Appliers are one manager across apiVersions, updaters one per apiVersion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manager {
    pub name: String,
    pub operation: Operation,
    pub api_version: String,
    pub subresource: String,
}

impl Manager {
    fn same(&self, other: &Manager) -> bool {
        self.name == other.name
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    /// As kube-apiserver names a manager in a conflict.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.name);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub manager: Manager,
    pub time: Option<String>,
    pub fields: Set,
}

/// An object's `managedFields`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Managed {
    pub entries: Vec<Entry>,
}

impl Managed {
    /// Reads `metadata.managedFields` (absent or null: none).
    pub fn decode(v: Option<&Value>) -> Result<Managed, SsaError> {
        let items = match v {
            None | Some(Value::Null) => return Ok(Managed::default()),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(SsaError::ManagedFields(format!("{other} is not a list"))),
        };
        let mut out = Managed::default();
        for item in items {
            let s = |k: &str| {
                item.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let operation = match s("operation").as_str() {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                other => {
                    return Err(SsaError::ManagedFields(format!(
                        "unknown operation {other:?}"
                    )))
                }
            };
            let ft = s("fieldsType");
            if ft != "FieldsV1" {
                return Err(SsaError::ManagedFields(format!(
                    "unknown fieldsType {ft:?}"
                )));
            }
            let manager = Manager {
                name: s("manager"),
                operation,
                api_version: s("apiVersion"),
                subresource: s("subresource"),
            };
            let fields = Set::from_fields_v1(item.get("fieldsV1").unwrap_or(&json!({}))).map_err(
                |source| SsaError::FieldsV1 {
                    manager: manager.name.clone(),
                    source,
                },
            )?;
            let time = item.get("time").and_then(Value::as_str).map(str::to_string);
            match out.entries.iter_mut().find(|e| e.manager.same(&manager)) {
                Some(e) => e.fields = e.fields.union(&fields),
                None => out.entries.push(Entry {
                    manager,
                    time,
                    fields,
                }),
            }
        }
        Ok(out)
    }

    /// The `managedFields` list, ordered as kube-apiserver orders it.
    pub fn encode(&self) -> Value {
        let mut entries: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .collect();
        entries.sort_by(|a, b| {
            (
                a.manager.operation,
                &a.time,
                &a.manager.name,
                &a.manager.api_version,
                &a.manager.subresource,
            )
                .cmp(&(
                    b.manager.operation,
                    &b.time,
                    &b.manager.name,
                    &b.manager.api_version,
                    &b.manager.subresource,
                ))
        });
        Value::Array(
            entries
                .into_iter()
                .map(|e| {
                    let mut m = Map::new();
                    m.insert("manager".into(), json!(e.manager.name));
                    m.insert("operation".into(), json!(e.manager.operation.as_str()));
                    m.insert("apiVersion".into(), json!(e.manager.api_version));
                    if let Some(t) = &e.time {
                        m.insert("time".into(), json!(t));
                    }
                    m.insert("fieldsType".into(), json!("FieldsV1"));
                    m.insert("fieldsV1".into(), e.fields.to_fields_v1());
                    if !e.manager.subresource.is_empty() {
                        m.insert("subresource".into(), json!(e.manager.subresource));
                    }
                    Value::Object(m)
                })
                .collect(),
        )
    }

    fn position(&self, who: &Manager) -> Option<usize> {
        self.entries.iter().position(|e| e.manager.same(who))
    }

    pub fn get(&self, who: &Manager) -> Option<&Entry> {
        self.position(who).map(|i| &self.entries[i])
    }

    fn drop_empty(&mut self) {
        self.entries.retain(|e| !e.fields.is_empty());
    }
}

/// Whether a write's managedFields ask for a reset (`[]` or `[{}]`), as kube-apiserver reads them.
pub fn is_reset(v: Option<&Value>) -> bool {
    match v.and_then(Value::as_array) {
        Some(items) if items.is_empty() => true,
        Some(items) => items.len() == 1 && items[0].as_object().is_some_and(Map::is_empty),
        None => false,
    }
}

/// Records an Update (create, update, any non-apply patch) by `who` from `live` to `new`: the
/// writer takes what it added or changed from everyone else, and fields that are gone are owned
/// by no one. `live` is `{}` for a create.
pub fn update(
    shape: Shape,
    live: &Value,
    new: &Value,
    mut managed: Managed,
    who: &Manager,
    now: &str,
) -> Result<Managed, SsaError> {
    let c = compare(live, new, shape)?;
    let taken = c.modified.union(&c.added);
    for e in &mut managed.entries {
        e.fields = e.fields.difference(&taken).difference(&c.removed);
    }
    if !taken.is_empty() {
        match managed.position(who) {
            Some(i) => {
                let e = &mut managed.entries[i];
                e.fields = e.fields.union(&taken);
                e.time = Some(now.to_string());
            }
            None => managed.entries.push(Entry {
                manager: who.clone(),
                time: Some(now.to_string()),
                fields: taken,
            }),
        }
    }
    managed.drop_empty();
    Ok(managed)
}

/// One field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: Manager,
    pub path: Path,
}

impl Conflict {
    /// The message of the conflict's `StatusCause`.
    pub fn message(&self) -> String {
        format!("conflict with {}", self.manager.describe())
    }
}

/// The conflicts of a refused apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflicts(pub Vec<Conflict>);

impl fmt::Display for Conflicts {
    /// As kube-apiserver words the 409's message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [c] = self.0.as_slice() {
            return write!(
                f,
                "Apply failed with 1 conflict: {}: {}",
                c.message(),
                c.path
            );
        }
        let mut lines = Vec::new();
        let mut last: Option<&Manager> = None;
        for c in &self.0 {
            if last != Some(&c.manager) {
                lines.push(format!("conflicts with {}:", c.manager.describe()));
                last = Some(&c.manager);
            }
            lines.push(format!("- {}", c.path));
        }
        write!(
            f,
            "Apply failed with {} conflicts: {}",
            self.0.len(),
            lines.join("\n")
        )
    }
}

/// Merges `config` into `live` (config wins) by the schema's structure.
fn merge_map(
    live: &Map<String, Value>,
    config: &Map<String, Value>,
    schema: &'static Schema,
    at: &mut Vec<PathElement>,
) -> Result<Map<String, Value>, SsaError> {
    let mut out = live.clone();
    for (k, cv) in config {
        at.push(PathElement::field(k));
        let merged = match cv {
            Value::Null => None,
            Value::Object(cm) if !ATOMIC_STRUCTS.contains(&k.as_str()) => {
                let empty = Map::new();
                let lm = match live.get(k) {
                    Some(Value::Object(lm)) => lm,
                    _ => &empty,
                };
                Some(Value::Object(merge_map(lm, cm, schema.field(k), at)?))
            }
            Value::Array(ci) => {
                let (kind, elem) = list_kind(schema, k);
                let li = match live.get(k) {
                    Some(Value::Array(li)) => li.as_slice(),
                    _ => &[],
                };
                Some(match kind {
                    ListKind::Atomic => cv.clone(),
                    ListKind::Set => {
                        let mut items = li.to_vec();
                        for v in ci {
                            if !items.contains(v) {
                                items.push(v.clone());
                            }
                        }
                        Value::Array(items)
                    }
                    ListKind::Map(keys) => Value::Array(merge_items(li, ci, &keys, elem, at)?),
                })
            }
            other => Some(other.clone()),
        };
        at.pop();
        match merged {
            Some(v) => {
                out.insert(k.clone(), v);
            }
            None => {
                out.remove(k);
            }
        }
    }
    Ok(out)
}

fn merge_items(
    live: &[Value],
    config: &[Value],
    keys: &[KeyField],
    elem: &'static Schema,
    at: &mut Vec<PathElement>,
) -> Result<Vec<Value>, SsaError> {
    let live_keys = live
        .iter()
        .enumerate()
        .map(|(i, v)| item_key(keys, v, at, i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = live.to_vec();
    for (i, item) in config.iter().enumerate() {
        let key = item_key(keys, item, at, i)?;
        let cm = item
            .as_object()
            .ok_or_else(|| invalid(at, format!("element {i}: {item} is not an object")))?;
        at.push(key.clone());
        match live_keys.iter().position(|k| *k == key) {
            Some(j) => {
                let empty = Map::new();
                let lm = out[j].as_object().unwrap_or(&empty).clone();
                out[j] = Value::Object(merge_map(&lm, cm, elem, at)?);
            }
            None => out.push(Value::Object(merge_map(&Map::new(), cm, elem, at)?)),
        }
        at.pop();
    }
    Ok(out)
}

/// Removes from `obj` what `remove` names, unless `owned` still holds something at or below it;
/// the key fields of a kept list item stay.
fn prune_map(
    m: &mut Map<String, Value>,
    remove: &Set,
    owned: &Set,
    schema: &'static Schema,
    keep: &[&str],
) -> Result<(), SsaError> {
    let empty = Set::new();
    let names: Vec<String> = m.keys().cloned().collect();
    for k in names {
        let pe = PathElement::field(&k);
        if keep.contains(&k.as_str()) {
            continue;
        }
        if remove.has_member(&pe) && !owned.touches(&pe) {
            m.remove(&k);
            continue;
        }
        let Some(below) = remove.child(&pe) else {
            continue;
        };
        let owned_below = owned.child(&pe).unwrap_or(&empty);
        match m.get_mut(&k) {
            Some(Value::Object(inner)) => {
                prune_map(inner, below, owned_below, schema.field(&k), &[])?
            }
            Some(Value::Array(items)) => {
                let (kind, elem) = list_kind(schema, &k);
                let mut kept = Vec::with_capacity(items.len());
                for (i, mut item) in std::mem::take(items).into_iter().enumerate() {
                    let ipe = match &kind {
                        ListKind::Atomic => {
                            kept.push(item);
                            continue;
                        }
                        ListKind::Set => PathElement::Value(item.to_string()),
                        ListKind::Map(keys) => item_key(keys, &item, &[], i)?,
                    };
                    if below.has_member(&ipe) && !owned_below.touches(&ipe) {
                        continue;
                    }
                    if let (Some(ib), ListKind::Map(keys), Value::Object(fields)) =
                        (below.child(&ipe), &kind, &mut item)
                    {
                        let key_names: Vec<&str> = keys.iter().map(|k| k.name).collect();
                        let ob = owned_below.child(&ipe).unwrap_or(&empty);
                        prune_map(fields, ib, ob, elem, &key_names)?;
                    }
                    kept.push(item);
                }
                *items = kept;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The fields of the last client-side apply, if the live object still holds exactly them: the
/// conflicts `kubectl apply --server-side` may take over when it upgrades from client-side apply.
fn last_applied_fields(live: &Value, shape: Shape) -> Option<Set> {
    let text = live
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED)?
        .as_str()?;
    let last: Value = serde_json::from_str(text).ok()?;
    let (last_leaves, live_leaves) = (leaves(&last, shape).ok()?, leaves(live, shape).ok()?);
    // An empty map kubectl wrote (`annotations: {}`) holds what was added since.
    let empty_map = |v: &Value| v.as_object().is_some_and(Map::is_empty);
    last_leaves
        .iter()
        .all(|(p, v)| empty_map(v) || live_leaves.get(p) == Some(v))
        .then(|| to_set(&last_leaves))
}

/// The config with what a scope does not write dropped (status from a main apply, everything
/// but status from a status apply).
fn scoped(config: &Value, scope: Scope) -> Value {
    let mut c = config.clone();
    if let Some(m) = c.as_object_mut() {
        match scope {
            Scope::Whole => {}
            Scope::Main => {
                m.remove("status");
            }
            Scope::Status => {
                m.retain(|k, _| matches!(k.as_str(), "status" | "apiVersion" | "kind" | "metadata"))
            }
        }
        if scope == Scope::Status {
            if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace"));
            }
        }
    }
    c
}

/// The result of an apply: the merged object (before defaulting and validation) and its
/// managedFields.
#[derive(Debug)]
pub struct Applied {
    pub object: Value,
    pub managed: Managed,
}

/// Server-side apply of `config` by `who` to `live` (`{}` when the object does not exist yet).
/// `managed` is the live object's managedFields; `now` the time the applier's entry gets.
pub fn apply(
    shape: Shape,
    live: &Value,
    config: &Value,
    mut managed: Managed,
    who: &Manager,
    force: bool,
    now: &str,
) -> Result<Applied, SsaError> {
    let config = scoped(config, shape.scope);
    let config_map = config
        .as_object()
        .ok_or_else(|| invalid(&[], "the applied configuration is not an object"))?;
    if managed.entries.is_empty() {
        let existing = field_set(live, shape)?;
        if !existing.is_empty() {
            managed.entries.push(Entry {
                manager: Manager {
                    name: BEFORE_FIRST_APPLY.into(),
                    operation: Operation::Update,
                    api_version: who.api_version.clone(),
                    subresource: who.subresource.clone(),
                },
                time: Some(now.to_string()),
                fields: existing,
            });
        }
    }
    let empty = Map::new();
    let live_map = live.as_object().unwrap_or(&empty);
    let mut merged = merge_map(live_map, config_map, shape.schema, &mut Vec::new())?;

    let applied_set = field_set(&config, shape)?;
    let last_set = managed
        .get(who)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let old_entry = managed.get(who).cloned();
    match managed.position(who) {
        Some(i) => managed.entries[i].fields = applied_set.clone(),
        None => managed.entries.push(Entry {
            manager: who.clone(),
            time: None,
            fields: applied_set.clone(),
        }),
    }
    let owned = managed
        .entries
        .iter()
        .fold(Set::new(), |acc, e| acc.union(&e.fields));
    let remove = last_set.difference(&owned);
    prune_map(&mut merged, &remove, &owned, shape.schema, &[])?;
    let mut merged = Value::Object(merged);

    let c = compare(live, &merged, shape)?;
    let changed = c.modified.union(&c.added);
    let mut conflicts = Vec::new();
    for e in managed.entries.iter().filter(|e| !e.manager.same(who)) {
        for path in e.fields.intersection(&changed).paths() {
            conflicts.push(Conflict {
                manager: e.manager.clone(),
                path,
            });
        }
    }
    conflicts.sort_by(|a, b| {
        a.manager
            .name
            .cmp(&b.manager.name)
            .then(a.path.cmp(&b.path))
    });
    let upgrading = who.name == KUBECTL_SSA && who.operation == Operation::Apply;
    if !force && !conflicts.is_empty() {
        let allowed = if upgrading {
            last_applied_fields(live, shape)
        } else {
            None
        };
        let all_allowed = allowed.is_some_and(|a| conflicts.iter().all(|c| a.contains(&c.path.0)));
        if !all_allowed {
            return Err(SsaError::Conflicts(Conflicts(conflicts)));
        }
    }
    for e in managed.entries.iter_mut() {
        if !e.manager.same(who) {
            e.fields = e.fields.difference(&changed);
        }
        e.fields = e.fields.difference(&c.removed);
    }
    if let Some(i) = managed.position(who) {
        let e = &mut managed.entries[i];
        let unchanged = old_entry.as_ref().is_some_and(|o| o.fields == e.fields) && merged == *live;
        e.time = if unchanged {
            old_entry.and_then(|o| o.time)
        } else {
            Some(now.to_string())
        };
    }
    managed.drop_empty();
    if upgrading {
        let has_last = live
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(LAST_APPLIED))
            .is_some();
        if has_last {
            let mut last = config.clone();
            if let Some(a) = last
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
            {
                a.remove(LAST_APPLIED);
            }
            merged["metadata"]["annotations"][LAST_APPLIED] = json!(last.to_string());
        }
    }
    Ok(Applied {
        object: merged,
        managed,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::patch::DAEMONSET;
    use super::*;

    const NOW: &str = "2026-11-26T07:00:00Z";
    const SHAPE: Shape = Shape {
        schema: &DAEMONSET,
        scope: Scope::Main,
    };

    fn ds(containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "d", "namespace": "default", "labels": {"app": "d"}},
            "spec": {"selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": containers}}},
            "status": {"numberReady": 0}})
    }

    fn who(name: &str, operation: Operation) -> Manager {
        Manager {
            name: name.into(),
            operation,
            api_version: "apps/v1".into(),
            subresource: String::new(),
        }
    }

    /// The paths one manager owns, as strings.
    fn owned(m: &Managed, name: &str) -> Vec<String> {
        m.entries
            .iter()
            .find(|e| e.manager.name == name)
            .map(|e| e.fields.paths().iter().map(Path::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_create_is_an_update_owning_every_field_but_the_servers() {
        let obj = ds(json!([{"name": "c", "image": "i:1", "ports": [{"containerPort": 80}]}]));
        let m = update(
            SHAPE,
            &json!({}),
            &obj,
            Managed::default(),
            &who("kubectl-create", Operation::Update),
            NOW,
        )
        .unwrap();
        let enc = m.encode();
        assert_eq!(
            enc,
            json!([{"manager": "kubectl-create", "operation": "Update", "apiVersion": "apps/v1",
                "time": NOW, "fieldsType": "FieldsV1", "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:selector": {}, "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {},
                        "f:name": {}, "f:ports": {
                            "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {},
                                "f:containerPort": {}}}}}}}}}}])
        );
        assert_eq!(Managed::decode(Some(&enc)).unwrap(), m, "round trip");
    }

    #[test]
    fn updates_take_what_they_change_and_drop_what_is_gone() {
        let v1 = ds(json!([{"name": "c", "image": "i:1"}, {"name": "s", "image": "s:1"}]));
        let csa = who("kubectl-client-side-apply", Operation::Update);
        let m = update(SHAPE, &json!({}), &v1, Managed::default(), &csa, NOW).unwrap();
        let v2 = ds(json!([{"name": "c", "image": "i:2"}]));
        let set = who("kubectl-set", Operation::Update);
        let m = update(SHAPE, &v1, &v2, m, &set, "2026-11-26T07:01:00Z").unwrap();
        assert_eq!(
            owned(&m, "kubectl-set"),
            [".spec.template.spec.containers[name=\"c\"].image"]
        );
        let csa_owns = owned(&m, "kubectl-client-side-apply");
        assert!(
            !csa_owns.iter().any(|p| p.contains("name=\"s\"")),
            "{csa_owns:?}"
        );
        assert!(
            !csa_owns.iter().any(|p| p.ends_with("].image")),
            "{csa_owns:?}"
        );
        let same = update(SHAPE, &v2, &v2, m.clone(), &set, "2026-11-26T08:00:00Z").unwrap();
        assert_eq!(
            same, m,
            "a write that changes nothing changes no entry or time"
        );
        assert!(is_reset(Some(&json!([]))) && is_reset(Some(&json!([{}]))));
        assert!(!is_reset(None) && !is_reset(Some(&json!([{"manager": "x"}]))));
    }

    /// (case, live's containers, owner of the live object, applied containers, force,
    ///  Ok(containers after) or Err(the 409's message))
    type ApplyCase = (
        &'static str,
        Value,
        &'static str,
        Value,
        bool,
        Result<Value, &'static str>,
    );

    #[test]
    fn apply_merges_conflicts_and_forces_as_kube_apiserver() {
        let cases: Vec<ApplyCase> = vec![
            (
                "another manager's image: conflict",
                json!([{"name": "c", "image": "i:1"}]),
                "kubectl-client-side-apply",
                json!([{"name": "c", "image": "i:2"}]),
                false,
                Err("Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.template.spec.containers[name=\"c\"].image"),
            ),
            (
                "forced: taken",
                json!([{"name": "c", "image": "i:1"}]),
                "kubectl-client-side-apply",
                json!([{"name": "c", "image": "i:2"}]),
                true,
                Ok(json!([{"name": "c", "image": "i:2"}])),
            ),
            (
                "the same value: shared, no conflict",
                json!([{"name": "c", "image": "i:1", "args": ["a"]}]),
                "other",
                json!([{"name": "c", "image": "i:1"}]),
                false,
                Ok(json!([{"name": "c", "image": "i:1", "args": ["a"]}])),
            ),
            (
                "a new container merges by name, the other's stays",
                json!([{"name": "c", "image": "i:1"}]),
                "other",
                json!([{"name": "s", "image": "s:1"}]),
                false,
                Ok(json!([{"name": "c", "image": "i:1"}, {"name": "s", "image": "s:1"}])),
            ),
            (
                "ports are keyed by port and protocol (TCP by default)",
                json!([{"name": "c", "image": "i", "ports": [{"containerPort": 80, "name": "a"}]}]),
                "other",
                json!([{"name": "c", "ports": [{"containerPort": 80, "protocol": "UDP"}]}]),
                false,
                Ok(json!([{"name": "c", "image": "i", "ports": [{"containerPort": 80, "name": "a"},
                    {"containerPort": 80, "protocol": "UDP"}]}])),
            ),
            (
                "an atomic list (args) changed: conflict on the whole list",
                json!([{"name": "c", "image": "i", "args": ["a"]}]),
                "other",
                json!([{"name": "c", "args": ["b"]}]),
                false,
                Err("Apply failed with 1 conflict: conflict with \"other\" using apps/v1: .spec.template.spec.containers[name=\"c\"].args"),
            ),
        ];
        for (name, live_c, owner, applied_c, force, want) in cases {
            let live = ds(live_c);
            let m = update(
                SHAPE,
                &json!({}),
                &live,
                Managed::default(),
                &who(owner, Operation::Update),
                NOW,
            )
            .unwrap();
            let mut config = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "d"},
                "spec": {"template": {"spec": {"containers": applied_c}}}});
            config["status"] = json!({"numberReady": 9});
            let applier = who("kubectl", Operation::Apply);
            let got = apply(SHAPE, &live, &config, m, &applier, force, NOW);
            match (got, want) {
                (Ok(a), Ok(containers)) => {
                    assert_eq!(
                        a.object["spec"]["template"]["spec"]["containers"], containers,
                        "{name}"
                    );
                    assert_eq!(
                        a.object["status"],
                        json!({"numberReady": 0}),
                        "{name}: status is not applied"
                    );
                    let mine = owned(&a.managed, "kubectl");
                    assert!(
                        mine.iter().all(|p| !p.starts_with(".status")),
                        "{name}: {mine:?}"
                    );
                    if force {
                        let theirs = owned(&a.managed, owner);
                        assert!(
                            !theirs.iter().any(|p| p.ends_with("].image")),
                            "{name}: {theirs:?}"
                        );
                    }
                }
                (Err(SsaError::Conflicts(c)), Err(msg)) => {
                    assert_eq!(c.to_string(), msg, "{name}");
                    assert_eq!(
                        c.0[0].message(),
                        format!("conflict with \"{owner}\" using apps/v1")
                    );
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_reapply_removes_what_the_applier_dropped_unless_someone_else_owns_it() {
        let applier = who("mgr", Operation::Apply);
        let config = |labels: Value, containers: Value| {
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d", "labels": labels},
                "spec": {"template": {"spec": {"containers": containers}}}})
        };
        let first = apply(
            SHAPE,
            &json!({}),
            &config(
                json!({"a": "1", "b": "2"}),
                json!([{"name": "c", "image": "i"}, {"name": "s", "image": "s"}]),
            ),
            Managed::default(),
            &applier,
            false,
            NOW,
        )
        .unwrap();
        assert_eq!(
            first.managed.entries.len(),
            1,
            "no before-first-apply for a new object"
        );
        // Someone else relabels b and sets s's args.
        let mut labelled = first.object.clone();
        labelled["metadata"]["labels"]["b"] = json!("3");
        labelled["spec"]["template"]["spec"]["containers"][1]["args"] = json!(["x"]);
        let m = update(
            SHAPE,
            &first.object,
            &labelled,
            first.managed,
            &who("kubectl-label", Operation::Update),
            NOW,
        )
        .unwrap();
        let again = apply(
            SHAPE,
            &labelled,
            &config(json!({}), json!([{"name": "c", "image": "i"}])),
            m,
            &applier,
            false,
            NOW,
        )
        .unwrap();
        assert_eq!(
            again.object["metadata"]["labels"],
            json!({"b": "3"}),
            "a dropped, b kept for kubectl-label"
        );
        let containers = &again.object["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            *containers,
            json!([{"name": "c", "image": "i"}, {"name": "s", "args": ["x"]}]),
            "s stays for its other owner, with its key"
        );
    }

    #[test]
    fn kubectl_upgrades_from_client_side_apply_without_conflicts() {
        let last = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "d", "annotations": {}},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        let mut live = ds(json!([{"name": "c", "image": "i:1"}]));
        live["metadata"]["annotations"] = json!({LAST_APPLIED: last.to_string()});
        let csa = who("kubectl-client-side-apply", Operation::Update);
        let m = update(SHAPE, &json!({}), &live, Managed::default(), &csa, NOW).unwrap();
        let mut config = last.clone();
        config["spec"]["template"]["spec"]["containers"][0]["image"] = json!("i:2");
        let other = apply(
            SHAPE,
            &live,
            &config,
            m.clone(),
            &who("someone", Operation::Apply),
            false,
            NOW,
        );
        assert!(
            matches!(other, Err(SsaError::Conflicts(_))),
            "only kubectl upgrades"
        );
        let a = apply(
            SHAPE,
            &live,
            &config,
            m,
            &who(KUBECTL_SSA, Operation::Apply),
            false,
            NOW,
        )
        .unwrap();
        assert_eq!(
            a.object["spec"]["template"]["spec"]["containers"][0]["image"],
            "i:2"
        );
        let annotation: Value = serde_json::from_str(
            a.object["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            annotation, config,
            "the annotation follows the applied configuration"
        );
        assert!(owned(&a.managed, "kubectl-client-side-apply")
            .iter()
            .any(|p| p.contains(LAST_APPLIED)));
    }

    #[test]
    fn first_apply_to_an_untracked_object_keeps_its_fields_owned() {
        let live = ds(json!([{"name": "c", "image": "i:1"}]));
        let config = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i:2"}]}}}});
        let e = apply(
            SHAPE,
            &live,
            &config,
            Managed::default(),
            &who("m", Operation::Apply),
            false,
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: .spec.template.spec.containers[name=\"c\"].image"
        );
        let bad = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let e = apply(
            SHAPE,
            &live,
            &bad,
            Managed::default(),
            &who("m", Operation::Apply),
            true,
            NOW,
        )
        .unwrap_err();
        assert!(matches!(e, SsaError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("omits key field \"name\""), "{e}");
    }

    #[test]
    fn managed_fields_sort_and_merge_as_kube_apiserver() {
        let entry = |m: &str, op: &str, t: &str| {
            json!({"manager": m, "operation": op, "apiVersion": "apps/v1", "time": t,
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:x": {}}}})
        };
        let v = json!([
            entry("b", "Update", "2026-01-02T00:00:00Z"),
            entry("z", "Apply", "2026-01-03T00:00:00Z"),
            entry("a", "Update", "2026-01-02T00:00:00Z"),
            entry("a", "Update", "2026-01-01T00:00:00Z")
        ]);
        let m = Managed::decode(Some(&v)).unwrap();
        assert_eq!(
            m.entries.len(),
            3,
            "one entry per manager, operation and apiVersion"
        );
        let names: Vec<String> = m
            .encode()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}/{}",
                    e["manager"].as_str().unwrap(),
                    e["operation"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(names, ["z/Apply", "a/Update", "b/Update"]);
        for bad in [
            json!({}),
            json!([{"operation": "Delete", "fieldsType": "FieldsV1"}]),
            json!([{"operation": "Apply", "fieldsType": "FieldsV2"}]),
        ] {
            assert!(Managed::decode(Some(&bad)).is_err(), "{bad}");
        }
    }
}
