//! Object storage behind the `ObjectStore` trait, and the watch fan-out.
//!
//! A store ([`Store`], `cache.rs`) is a watch cache over a [`Backend`]: SQLite (`sqlite.rs`, the
//! default, one server) or etcd (`etcd.rs`, several server replicas). Every write goes to the
//! backend with a compare (create: nothing there; update, delete: the expected
//! resourceVersion), then into an in-memory history of recent events that is broadcast to the
//! watchers. Reads are served from an in-memory copy of all objects, read from the backend at
//! start and kept current by the writes (SQLite) or by the backend's watch (etcd).
//!
//! Bounds, as etcd and kube-apiserver's watch cache keep them: an object larger than
//! [`MAX_OBJECT_BYTES`] encoded is refused as etcd refuses the request; the history keeps at most
//! a number of events and [`WATCH_HISTORY_BYTES`] of them (the oldest go first; resuming a watch
//! from before them is 410 Gone). HTTP watchers read the history from a cursor
//! ([`ObjectStore::events_after`]) and hold nothing of it while they wait, so a watcher that stops
//! reading costs no memory: it falls out of the history and is told 410.
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

use crate::server::encryption::{StorageKey, Transformer};

mod cache;
pub mod etcd;
mod sqlite;

pub use cache::Store;
pub use sqlite::{SqliteStore, RESTORE_BUMP};

/// The largest object stored, encoded: etcd's default request limit (`--max-request-bytes`, 1.5
/// MiB), which kube-apiserver reports as "etcdserver: request is too large".
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// What the watch history may hold, in bytes of events ([`WatchEvent::size`]), by default.
pub const WATCH_HISTORY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {resource} {namespace}/{name} already exists")]
    AlreadyExists {
        resource: String,
        namespace: String,
        name: String,
    },
    #[error("object {resource} {namespace}/{name} not found")]
    NotFound {
        resource: String,
        namespace: String,
        name: String,
    },
    #[error("object {resource} {namespace}/{name} has resourceVersion {current}, not {expected}")]
    Conflict {
        resource: String,
        namespace: String,
        name: String,
        current: u64,
        expected: u64,
    },
    #[error("too old resource version: {requested} (oldest kept is {oldest})")]
    Expired { requested: u64, oldest: u64 },
    /// etcd's answer to a request over its limit, in the words kube-apiserver passes on.
    #[error("etcdserver: request is too large")]
    TooLarge { size: usize, limit: usize },
    #[error("sqlite store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("etcd store: {0}")]
    Etcd(#[source] Box<etcd_client::Error>),
    /// The etcd options cannot be used (a file that cannot be read, a key without a certificate).
    #[error("etcd store: {0}")]
    Config(String),
    #[error("stored object is not valid json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("store worker failed: {0}")]
    Worker(String),
    /// A value the transformer (encryption at rest) could not turn into or out of storage.
    #[error(transparent)]
    Transform(#[from] crate::server::encryption::EncryptionError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, shared by all watchers; `line` is the serialized watch event (with newline),
/// encoded once for all of them, and `json` the object's part of it: the bytes the watch cache
/// keeps for the object (one copy for the cache, the history and every watcher).
#[derive(Debug)]
pub struct WatchEvent {
    pub rv: u64,
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub event_type: EventType,
    pub object: Arc<Value>,
    /// The object before this change (None for ADDED), so that filtered watches can turn a
    /// change that leaves or enters the selection into DELETED or ADDED, as Kubernetes does.
    pub prev: Option<Arc<Value>>,
    pub line: Bytes,
    /// `object` encoded: a slice of `line`.
    pub json: Bytes,
}

impl WatchEvent {
    pub fn new(
        event_type: EventType,
        rv: u64,
        resource: &str,
        namespace: &str,
        name: &str,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) -> WatchEvent {
        let json = serde_json::to_vec(&*object).unwrap_or_default();
        WatchEvent::encoded(
            event_type, rv, resource, namespace, name, object, &json, prev,
        )
    }

    /// [`WatchEvent::new`] for an object already encoded as `json`.
    #[allow(clippy::too_many_arguments)]
    pub fn encoded(
        event_type: EventType,
        rv: u64,
        resource: &str,
        namespace: &str,
        name: &str,
        object: Arc<Value>,
        json: &[u8],
        prev: Option<Arc<Value>>,
    ) -> WatchEvent {
        // what serde_json writes for {"type": .., "object": ..}, the object's bytes in place
        let head = format!("{{\"type\":\"{}\",\"object\":", event_type.as_str());
        let mut line = Vec::with_capacity(head.len() + json.len() + 2);
        line.extend_from_slice(head.as_bytes());
        line.extend_from_slice(json);
        line.extend_from_slice(b"}\n");
        let line = Bytes::from(line);
        WatchEvent {
            rv,
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            event_type,
            object,
            prev,
            json: line.slice(head.len()..head.len() + json.len()),
            line,
        }
    }

    /// What keeping this event costs, as the history counts it: its encoded line and the decoded
    /// object it was encoded from, taken to be as large.
    pub fn size(&self) -> usize {
        2 * self.line.len()
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// From now; with `initial`, the current objects first as ADDED events.
    Current { initial: bool },
    /// Every change after this resourceVersion.
    After(u64),
}

/// A started watch: the events to send first, then the live feed (all resources: filter).
pub struct Watch {
    pub initial: Vec<Arc<WatchEvent>>,
    pub rx: broadcast::Receiver<Arc<WatchEvent>>,
    /// The store's resourceVersion when the watch started.
    pub rv: u64,
}

/// What [`ObjectStore::events_after`] found.
#[derive(Debug, Default)]
pub struct EventsAfter {
    /// The matching events, oldest first.
    pub events: Vec<Arc<WatchEvent>>,
    /// The resourceVersion the history was read through (matching or not): the next cursor.
    pub through: u64,
}

/// The resourceVersion stored in an object's metadata.
pub fn object_rv(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Storage of API objects by (resource, namespace, name); cluster-scoped objects use namespace "".
#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    async fn get(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Value>>, StoreError>;
    /// Objects of `resource` (in `namespace`, or all), sorted by namespace and name, and the
    /// store's resourceVersion at the time of the list.
    async fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<Arc<Value>>, u64), StoreError>;
    /// The objects of `resource` (in `namespace`, or all) that `by` selects, sorted and with the
    /// resourceVersion as [`ObjectStore::list`] gives them: read through the watch cache's
    /// index for an [`indexed`] resource, instead of looking at every object.
    async fn list_indexed(
        &self,
        resource: &str,
        namespace: Option<&str>,
        by: Indexed<'_>,
    ) -> Result<(Vec<Arc<Value>>, u64), StoreError> {
        let (items, rv) = self.list(resource, namespace).await?;
        Ok((by.filter(items), rv))
    }
    /// [`ObjectStore::list`] with each object cut to its metadata (`apiVersion`, `kind`,
    /// `metadata` but `managedFields`), what kube-apiserver serves a metadata-only informer
    /// (`PartialObjectMetadata`): the garbage collector's passes read every object, and the
    /// objects whole are many times their size encoded.
    async fn list_metadata(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<Arc<Value>>, u64), StoreError> {
        let (items, rv) = self.list(resource, namespace).await?;
        Ok((items.iter().map(|o| Arc::new(metadata_of(o))).collect(), rv))
    }
    /// How many objects of `resource` the store holds: what `/metrics` reports
    /// (`apiserver_storage_objects`), each scrape. A watch cache counts its map without
    /// reading an object; this default reads their metadata.
    async fn count(&self, resource: &str) -> Result<usize, StoreError> {
        Ok(self.list_metadata(resource, None).await?.0.len())
    }
    /// Objects of `resource` (in `namespace`, or all) as they were at resourceVersion `rv` (at
    /// most the store's), sorted as [`ObjectStore::list`] sorts them: a consistent snapshot for
    /// the later pages of a paged list and for `resourceVersionMatch=Exact`. `Expired` when the
    /// store no longer holds every change after `rv` (compacted past it, as etcd).
    async fn list_at(
        &self,
        resource: &str,
        namespace: Option<&str>,
        rv: u64,
    ) -> Result<Vec<Arc<Value>>, StoreError>;
    /// Stores a new object; sets `metadata.resourceVersion`.
    async fn create(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        obj: Value,
    ) -> Result<Arc<Value>, StoreError>;
    /// Replaces an existing object if its resourceVersion is `expected_rv` (when given).
    async fn update(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        obj: Value,
        expected_rv: Option<u64>,
    ) -> Result<Arc<Value>, StoreError>;
    /// Removes an object; returns it as last stored, with the resourceVersion of the deletion.
    async fn delete(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        expected_rv: Option<u64>,
    ) -> Result<Arc<Value>, StoreError>;
    /// Starts a watch of `resource` (None: every resource) in `namespace` (None: all).
    async fn watch(
        &self,
        resource: Option<&str>,
        namespace: Option<&str>,
        from: WatchFrom,
    ) -> Result<Watch, StoreError>;
    /// Starts a watch of the resources `resources`, in every namespace, whose live feed is sent
    /// those resources' events only (the controllers' watches: each is sent its kinds, not every
    /// Lease renewal of the store). By default, a watch of every resource.
    async fn watch_kinds(&self, resources: &[&str], from: WatchFrom) -> Result<Watch, StoreError> {
        let _ = resources;
        self.watch(None, None, from).await
    }
    fn current_rv(&self) -> u64;
    /// Whether the store went back in time (its backend restored from a backup): a
    /// resourceVersion beyond [`ObjectStore::current_rv`] is then one given out before, told
    /// 410 (relist) rather than waited for.
    fn went_back(&self) -> bool {
        false
    }
    /// The store's resourceVersion as writes advance it (for watchers and for readers waiting
    /// for a resourceVersion the store has not reached yet).
    fn changes(&self) -> watch::Receiver<u64>;
    /// Changes when the history gets an event of `resource` (its rv): what a watcher of that
    /// resource waits on.
    fn changes_of(&self, resource: &str) -> watch::Receiver<u64> {
        let _ = resource;
        self.changes()
    }
    /// Events of `resource` (in `namespace`, or all) after `rv`, oldest first: at most `limit` of
    /// the history's events are looked at. `Expired` when events of `resource` after `rv` left
    /// the history (other resources' may have).
    fn events_after(
        &self,
        rv: u64,
        resource: &str,
        namespace: Option<&str>,
        limit: usize,
    ) -> Result<EventsAfter, StoreError>;
    /// [`ObjectStore::changes_of`] for the watchers of `resource` whose selector asks its
    /// [`trigger_field`] to equal `value`: woken by the events of such objects only.
    fn changes_of_trigger(&self, resource: &str, value: &str) -> watch::Receiver<u64> {
        let _ = value;
        self.changes_of(resource)
    }
    /// [`ObjectStore::events_after`] for those watchers: the events of objects whose
    /// [`trigger_field`] is (or was, before the event) `value`; the cursor returned passes the
    /// other objects' events without reading them. `Expired` only when events of such objects
    /// after `rv` left the history.
    fn events_after_trigger(
        &self,
        rv: u64,
        resource: &str,
        value: &str,
        namespace: Option<&str>,
        limit: usize,
    ) -> Result<EventsAfter, StoreError> {
        let _ = value;
        self.events_after(rv, resource, namespace, limit)
    }
}

/// The field the watches of `resource` are indexed by, kube-apiserver's indexed triggers: pods
/// by `spec.nodeName`. With 5000 nodes each watching its own pods, every pod event otherwise
/// woke 5000 watchers that each read it and tested their selector (the server spent most of
/// its time there while a DaemonSet's pods were created).
pub fn trigger_field(resource: &str) -> Option<&'static str> {
    (resource == "pods").then_some("spec.nodeName")
}

/// The values of `resource`'s [`trigger_field`] that `event` concerns: the object's and, when
/// it changed, the object's before the event. Empty values are not indexed.
pub(crate) fn trigger_values(event: &WatchEvent) -> impl Iterator<Item = &str> {
    fn value(obj: &Value) -> Option<&str> {
        obj.pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
    let indexed = trigger_field(&event.resource).is_some();
    let now = indexed.then(|| value(&event.object)).flatten();
    let before = indexed
        .then(|| event.prev.as_deref().and_then(value))
        .flatten()
        .filter(|b| Some(*b) != now);
    now.into_iter().chain(before)
}

/// An index of the watch cache over a resource's objects, as kube-apiserver's cacher and
/// client-go's informers index them: a node's pods (its agent lists them) and a controller's
/// pods (the DaemonSet and ReplicaSet controllers claim them), read without looking at every pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexed<'a> {
    /// The objects whose [`trigger_field`] is this value ("": not set).
    Trigger(&'a str),
    /// The objects whose controller (the ownerReference with `controller: true`) has this uid;
    /// "": the objects without a controller (the orphans a controller may adopt).
    Controller(&'a str),
}

impl Indexed<'_> {
    /// Whether `obj` is one of the objects this selects.
    pub fn selects(&self, obj: &Value) -> bool {
        let (trigger, controller) = index_values(obj);
        match self {
            Indexed::Trigger(v) => trigger == *v,
            Indexed::Controller(uid) => controller == *uid,
        }
    }

    /// The objects of `items` this selects.
    pub fn filter(&self, items: Vec<Arc<Value>>) -> Vec<Arc<Value>> {
        items.into_iter().filter(|o| self.selects(o)).collect()
    }
}

/// Whether the watch cache indexes the objects of `resource` ([`Indexed`]).
pub fn indexed(resource: &str) -> bool {
    trigger_field(resource).is_some()
}

/// `obj`'s values for the indexes: its trigger field's (`spec.nodeName`) and its controller's
/// uid, "" when not set.
pub fn index_values(obj: &Value) -> (&str, &str) {
    let trigger = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let controller = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        })
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or("");
    (trigger, controller)
}

/// `obj` cut to its metadata ([`ObjectStore::list_metadata`]).
pub fn metadata_of(obj: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["apiVersion", "kind", "metadata"] {
        if let Some(v) = obj.get(k) {
            out.insert(k.to_string(), v.clone());
        }
    }
    strip_managed_fields(&mut out);
    Value::Object(out)
}

/// Removes `metadata.managedFields` of `obj`.
pub(crate) fn strip_managed_fields(obj: &mut serde_json::Map<String, Value>) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
}

/// Where a backend keeps one object: cluster-scoped objects have namespace "".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The resource's storage key (`pods`, `daemonsets.apps`).
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    fn storage_key(&self) -> StorageKey<'_> {
        StorageKey {
            resource: &self.resource,
            namespace: &self.namespace,
            name: &self.name,
        }
    }

    fn not_found(&self) -> StoreError {
        StoreError::NotFound {
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// What a write expects of what is stored at its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Nothing (a create).
    Absent,
    /// An object, at this resourceVersion when given (an update).
    Present(Option<u64>),
}

impl Expect {
    /// The error for a write that expected this of what is stored at `key`, which has
    /// resourceVersion `current` (None: nothing is); Ok when it holds.
    pub fn check(self, key: &Key, current: Option<u64>) -> Result<(), StoreError> {
        match (self, current) {
            (Expect::Absent, Some(_)) => Err(StoreError::AlreadyExists {
                resource: key.resource.clone(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
            }),
            (Expect::Present(_), None) => Err(key.not_found()),
            (Expect::Present(Some(expected)), Some(current)) if expected != current => {
                Err(StoreError::Conflict {
                    resource: key.resource.clone(),
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    current,
                    expected,
                })
            }
            _ => Ok(()),
        }
    }
}

/// A change a shared backend reports, in the order of its resourceVersions.
#[derive(Debug)]
pub enum Change {
    /// An object stored (its `metadata.resourceVersion` filled).
    Put { key: Key, value: Value },
    /// An object removed at `rv`; `prev` as last stored, when the backend still had it.
    Delete {
        key: Key,
        rv: u64,
        prev: Option<Value>,
    },
    /// Nothing changed up to `rv` (etcd's progress notification).
    Progress(u64),
    /// The backend's history was lost (compacted) before the feed caught up: everything, as
    /// it is at `rv`.
    Replace { objects: Vec<(Key, Value)>, rv: u64 },
}

/// Where the objects are kept: SQLite or etcd, under the watch cache ([`Store`]).
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Stores `value` at `key` if `expect` holds; the stored object, its
    /// `metadata.resourceVersion` the one the write was given.
    async fn put(&self, key: &Key, value: Value, expect: Expect) -> Result<Value, StoreError>;
    /// Removes the object at `key` if it is there (at `expected_rv` when given); the
    /// resourceVersion of the removal, and the object as last stored when the backend read it.
    async fn delete(
        &self,
        key: &Key,
        expected_rv: Option<u64>,
    ) -> Result<(u64, Option<Value>), StoreError>;
    /// The objects of `resource` (in `namespace`, or all) at `rv`, sorted by namespace and name,
    /// when the backend keeps past revisions (etcd: `Expired` when compacted); None when it keeps
    /// only the current objects.
    async fn list_at(
        &self,
        _resource: &str,
        _namespace: Option<&str>,
        _rv: u64,
    ) -> Option<Result<Vec<Value>, StoreError>> {
        None
    }
    /// Every change after `rv`, by anyone, when others may write the backend too (etcd);
    /// None when every write passes through this process (SQLite).
    fn feed(&self, _rv: u64) -> Option<mpsc::Receiver<Change>> {
        None
    }
}

/// Sets `metadata.resourceVersion` of `obj` to `rv`.
pub(super) fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    } else if let Some(o) = obj.as_object_mut() {
        o.insert(
            "metadata".into(),
            json!({"resourceVersion": rv.to_string()}),
        );
    }
}

/// `obj` as stored at `key`: JSON within [`MAX_OBJECT_BYTES`], through `transform`.
pub(super) fn encode(
    transform: &dyn Transformer,
    key: &Key,
    obj: &Value,
) -> Result<String, StoreError> {
    let text = serde_json::to_string(obj)?;
    if text.len() > MAX_OBJECT_BYTES {
        return Err(StoreError::TooLarge {
            size: text.len(),
            limit: MAX_OBJECT_BYTES,
        });
    }
    Ok(transform.transform_to_storage(key.storage_key(), text)?)
}

/// The object stored at `key` as `text`, read back through `transform`.
pub(super) fn decode(
    transform: &dyn Transformer,
    key: &Key,
    text: String,
) -> Result<Value, StoreError> {
    Ok(serde_json::from_str(
        &transform.transform_from_storage(key.storage_key(), text)?,
    )?)
}

/// Waits up to `within` for the store to reach `rv`, as kube-apiserver's watch cache waits for a
/// resourceVersion it has not seen yet; the store's resourceVersion when it gives up.
pub async fn wait_for_rv(
    store: &dyn ObjectStore,
    rv: u64,
    within: std::time::Duration,
) -> Result<(), u64> {
    let mut changes = store.changes();
    let reached = tokio::time::timeout(within, changes.wait_for(|cur| *cur >= rv)).await;
    match reached {
        Ok(Ok(_)) => Ok(()),
        _ => Err(store.current_rv()),
    }
}
