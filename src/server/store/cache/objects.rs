//! The objects of the watch cache: each kept as its encoded JSON with its index keys, decoded
//! on read (and shared while a reader holds it).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use serde_json::Value;

use crate::server::store::{index_values, indexed, object_rv, Indexed, StoreError};

/// Per resource, its objects by (namespace, name).
pub(in crate::server::store) type ObjectMap = HashMap<String, BTreeMap<(String, String), Entry>>;

/// One object as the cache keeps it: its JSON, the bytes of its last event (a 4.9 KB pod is
/// 55 KB and 468 allocations as a `Value`: 100 000 of them did not fit the server's 1 GiB), and
/// the decoded object while anyone still holds it, so that readers share one decoding.
pub(in crate::server::store) struct Entry {
    pub(super) json: Bytes,
    pub(super) rv: u64,
    pub(super) decoded: Weak<Value>,
    /// The object's [`index_values`], for an [`indexed`] resource.
    pub(super) trigger: Box<str>,
    pub(super) controller: Box<str>,
}

impl Entry {
    /// The entry of `object`, encoded as `json`.
    pub(super) fn new(resource: &str, object: &Arc<Value>, json: Bytes) -> Entry {
        let (trigger, controller) = match indexed(resource) {
            true => index_values(object),
            false => ("", ""),
        };
        Entry {
            json,
            rv: object_rv(object),
            decoded: Arc::downgrade(object),
            trigger: trigger.into(),
            controller: controller.into(),
        }
    }

    /// The entry of `object`, encoding it.
    pub(super) fn encode(resource: &str, object: &Arc<Value>) -> Entry {
        let json = serde_json::to_vec(&**object).unwrap_or_default();
        Entry::new(resource, object, Bytes::from(json))
    }

    /// The object, decoded when no one holds it any more.
    pub(super) fn slot(&self) -> Slot {
        match self.decoded.upgrade() {
            Some(v) => Slot::Live(v),
            None => Slot::Json(self.json.clone()),
        }
    }

    /// The object, decoded again when no one held it (and kept while someone does).
    pub(super) fn value(&mut self) -> Result<Arc<Value>, StoreError> {
        let v = self.slot().value()?;
        self.decoded = Arc::downgrade(&v);
        Ok(v)
    }
}

/// An object read from the cache under its lock, decoded (when it must be) after.
pub(in crate::server::store) enum Slot {
    Live(Arc<Value>),
    Json(Bytes),
}

impl Slot {
    pub(super) fn value(self) -> Result<Arc<Value>, StoreError> {
        match self {
            Slot::Live(v) => Ok(v),
            Slot::Json(json) => Ok(Arc::new(serde_json::from_slice(&json)?)),
        }
    }
}

/// An object's parts a metadata-only read decodes (the others are skipped, not built).
#[derive(serde::Deserialize)]
pub(super) struct MetadataOnly {
    #[serde(rename = "apiVersion")]
    pub(super) api_version: Option<Value>,
    pub(super) kind: Option<Value>,
    pub(super) metadata: Option<serde_json::Map<String, Value>>,
}

impl Slot {
    /// The object cut to its metadata ([`crate::server::store::metadata_of`]).
    pub(super) fn metadata(self) -> Result<Arc<Value>, StoreError> {
        match self {
            Slot::Live(v) => Ok(Arc::new(crate::server::store::metadata_of(&v))),
            Slot::Json(json) => {
                let m: MetadataOnly = serde_json::from_slice(&json)?;
                let mut out = serde_json::Map::new();
                let parts = [
                    ("apiVersion", m.api_version),
                    ("kind", m.kind),
                    ("metadata", m.metadata.map(Value::Object)),
                ];
                for (k, v) in parts {
                    if let Some(v) = v {
                        out.insert(k.to_string(), v);
                    }
                }
                crate::server::store::strip_managed_fields(&mut out);
                Ok(Arc::new(Value::Object(out)))
            }
        }
    }
}

/// Decodes `slots` (outside the cache's lock).
pub(super) fn values(slots: Vec<Slot>) -> Result<Vec<Arc<Value>>, StoreError> {
    slots.into_iter().map(Slot::value).collect()
}

/// Per index ([`Indexed`]) of a resource, per value, the objects (namespace, name).
#[derive(Default)]
pub(in crate::server::store) struct Indexes {
    pub(super) trigger: HashMap<Box<str>, BTreeSet<(String, String)>>,
    pub(super) controller: HashMap<Box<str>, BTreeSet<(String, String)>>,
}

impl Indexes {
    pub(super) fn add(&mut self, k: &(String, String), e: &Entry) {
        self.trigger
            .entry(e.trigger.clone())
            .or_default()
            .insert(k.clone());
        self.controller
            .entry(e.controller.clone())
            .or_default()
            .insert(k.clone());
    }

    pub(super) fn remove(&mut self, k: &(String, String), e: &Entry) {
        for (index, value) in [
            (&mut self.trigger, &e.trigger),
            (&mut self.controller, &e.controller),
        ] {
            if let Some(set) = index.get_mut(value) {
                set.remove(k);
                if set.is_empty() {
                    index.remove(value);
                }
            }
        }
    }

    pub(super) fn of(&self, by: Indexed<'_>) -> Option<&BTreeSet<(String, String)>> {
        match by {
            Indexed::Trigger(v) => self.trigger.get(v),
            Indexed::Controller(uid) => self.controller.get(uid),
        }
    }
}

/// The objects and the resourceVersion they are at, changed together.
pub(in crate::server::store) struct Objects {
    pub(super) map: ObjectMap,
    pub(super) rv: u64,
    /// Per [`indexed`] resource, its indexes over `map`.
    pub(super) indexes: HashMap<String, Indexes>,
}

impl Objects {
    pub(super) fn new(map: ObjectMap, rv: u64) -> Objects {
        let mut indexes: HashMap<String, Indexes> = HashMap::new();
        for (resource, m) in &map {
            if indexed(resource) {
                let index = indexes.entry(resource.clone()).or_default();
                for (k, e) in m {
                    index.add(k, e);
                }
            }
        }
        Objects { map, rv, indexes }
    }

    /// Stores `entry` at `k`; the entry it replaces.
    pub(super) fn insert(
        &mut self,
        resource: &str,
        k: (String, String),
        entry: Entry,
    ) -> Option<Entry> {
        let map = match self.map.get_mut(resource) {
            Some(m) => m,
            None => self.map.entry(resource.to_string()).or_default(),
        };
        let prev = map.insert(k.clone(), entry);
        if indexed(resource) {
            let index = self.indexes.entry(resource.to_string()).or_default();
            if let Some(p) = &prev {
                index.remove(&k, p);
            }
            index.add(&k, &map[&k]);
        }
        prev
    }

    /// Removes the entry at `k`.
    pub(super) fn remove(&mut self, resource: &str, k: &(String, String)) -> Option<Entry> {
        let prev = self.map.get_mut(resource)?.remove(k)?;
        if let Some(index) = self.indexes.get_mut(resource) {
            index.remove(k, &prev);
        }
        Some(prev)
    }

    pub(super) fn get_mut(&mut self, resource: &str, k: &(String, String)) -> Option<&mut Entry> {
        self.map.get_mut(resource)?.get_mut(k)
    }

    /// The objects of `resource` in `namespace` (or all), in order.
    pub(super) fn slots(&self, resource: &str, namespace: Option<&str>) -> Vec<Slot> {
        let Some(m) = self.map.get(resource) else {
            return Vec::new();
        };
        match namespace {
            None => m.values().map(Entry::slot).collect(),
            Some(ns) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, e)| e.slot())
                .collect(),
        }
    }

    /// The objects of `resource` in `namespace` (or all) that `by` selects, in order.
    pub(super) fn indexed_slots(
        &self,
        resource: &str,
        namespace: Option<&str>,
        by: Indexed<'_>,
    ) -> Vec<Slot> {
        let (Some(index), Some(m)) = (self.indexes.get(resource), self.map.get(resource)) else {
            return Vec::new();
        };
        let Some(keys) = index.of(by) else {
            return Vec::new();
        };
        let keys: Box<dyn Iterator<Item = &(String, String)>> = match namespace {
            None => Box::new(keys.iter()),
            Some(ns) => Box::new(
                keys.range((ns.to_string(), String::new())..)
                    .take_while(move |(n, _)| n == ns),
            ),
        };
        keys.filter_map(|k| m.get(k)).map(Entry::slot).collect()
    }
}
