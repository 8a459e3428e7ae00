//! The watch cache: every object in memory, the bounded history of recent events, the watch
//! fan-out and the snapshots of `list_at`, fed by a [`Backend`].
//!
//! A backend only this process writes (SQLite) is fed by the writes themselves: they are
//! serialised here, so that events reach the history in resourceVersion order. A backend others
//! write too (etcd) brings every change, ours included, through its [`Backend::feed`]; a write
//! returns once the feed has brought it, so that a read after it sees it.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

use super::{
    index_values, indexed, object_rv, set_rv, trigger_values, Backend, Change, EventType,
    EventsAfter, Expect, Indexed, Key, ObjectStore, StoreError, Watch, WatchEvent, WatchFrom,
};

/// Per resource, its objects by (namespace, name).
pub(super) type ObjectMap = HashMap<String, BTreeMap<(String, String), Entry>>;

/// One object as the cache keeps it: its JSON, the bytes of its last event (a 4.9 KB pod is
/// 55 KB and 468 allocations as a `Value`: 100 000 of them did not fit the server's 1 GiB), and
/// the decoded object while anyone still holds it, so that readers share one decoding.
pub(super) struct Entry {
    json: Bytes,
    rv: u64,
    decoded: Weak<Value>,
    /// The object's [`index_values`], for an [`indexed`] resource.
    trigger: Box<str>,
    controller: Box<str>,
}

impl Entry {
    /// The entry of `object`, encoded as `json`.
    fn new(resource: &str, object: &Arc<Value>, json: Bytes) -> Entry {
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
    fn encode(resource: &str, object: &Arc<Value>) -> Entry {
        let json = serde_json::to_vec(&**object).unwrap_or_default();
        Entry::new(resource, object, Bytes::from(json))
    }

    /// The object, decoded when no one holds it any more.
    fn slot(&self) -> Slot {
        match self.decoded.upgrade() {
            Some(v) => Slot::Live(v),
            None => Slot::Json(self.json.clone()),
        }
    }

    /// The object, decoded again when no one held it (and kept while someone does).
    fn value(&mut self) -> Result<Arc<Value>, StoreError> {
        let v = self.slot().value()?;
        self.decoded = Arc::downgrade(&v);
        Ok(v)
    }
}

/// An object read from the cache under its lock, decoded (when it must be) after.
pub(super) enum Slot {
    Live(Arc<Value>),
    Json(Bytes),
}

impl Slot {
    fn value(self) -> Result<Arc<Value>, StoreError> {
        match self {
            Slot::Live(v) => Ok(v),
            Slot::Json(json) => Ok(Arc::new(serde_json::from_slice(&json)?)),
        }
    }
}

/// An object's parts a metadata-only read decodes (the others are skipped, not built).
#[derive(serde::Deserialize)]
struct MetadataOnly {
    #[serde(rename = "apiVersion")]
    api_version: Option<Value>,
    kind: Option<Value>,
    metadata: Option<serde_json::Map<String, Value>>,
}

impl Slot {
    /// The object cut to its metadata ([`super::metadata_of`]).
    fn metadata(self) -> Result<Arc<Value>, StoreError> {
        match self {
            Slot::Live(v) => Ok(Arc::new(super::metadata_of(&v))),
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
                super::strip_managed_fields(&mut out);
                Ok(Arc::new(Value::Object(out)))
            }
        }
    }
}

/// Decodes `slots` (outside the cache's lock).
fn values(slots: Vec<Slot>) -> Result<Vec<Arc<Value>>, StoreError> {
    slots.into_iter().map(Slot::value).collect()
}

/// Per index ([`Indexed`]) of a resource, per value, the objects (namespace, name).
#[derive(Default)]
pub(super) struct Indexes {
    trigger: HashMap<Box<str>, BTreeSet<(String, String)>>,
    controller: HashMap<Box<str>, BTreeSet<(String, String)>>,
}

impl Indexes {
    fn add(&mut self, k: &(String, String), e: &Entry) {
        self.trigger
            .entry(e.trigger.clone())
            .or_default()
            .insert(k.clone());
        self.controller
            .entry(e.controller.clone())
            .or_default()
            .insert(k.clone());
    }

    fn remove(&mut self, k: &(String, String), e: &Entry) {
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

    fn of(&self, by: Indexed<'_>) -> Option<&BTreeSet<(String, String)>> {
        match by {
            Indexed::Trigger(v) => self.trigger.get(v),
            Indexed::Controller(uid) => self.controller.get(uid),
        }
    }
}

/// How long a write to a shared backend waits for its feed to bring the write back before it
/// returns anyway (the object is stored; a read right after may not see it yet).
const FEED_WAIT: Duration = Duration::from_secs(10);

/// Recent events, bounded in number and in bytes.
pub(super) struct History {
    pub(super) events: VecDeque<Arc<WatchEvent>>,
    /// The sum of the events' [`WatchEvent::size`].
    pub(super) bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// Every event with rv > complete_after is in `events`.
    pub(super) complete_after: u64,
    /// Per resource, the rv of its newest event the bounds dropped: a watch of that resource
    /// resumes from any rv at or after it, whatever other resources' events were dropped since
    /// (kube-apiserver keeps a watch cache per resource: Lease churn never expires a pod watch).
    dropped: HashMap<String, u64>,
    /// Per indexed value ([`super::trigger_field`]: a node's name), the events of `events` that
    /// concern it, oldest first: what a node's watch of its own pods reads.
    triggered: HashMap<String, VecDeque<Arc<WatchEvent>>>,
    /// Per indexed value, the rv of its newest event the bounds dropped.
    dropped_triggered: HashMap<String, u64>,
    /// Nothing at or before this rv was kept for any resource (opened or relisted there).
    forgot_all_at: u64,
    /// The backend went back in time (restored from a backup): a resourceVersion beyond the
    /// store's is one given out before, which names nothing the store has.
    pub(super) went_back: bool,
}

impl History {
    pub(super) fn new(rv: u64, max_events: usize, max_bytes: usize) -> History {
        History {
            events: VecDeque::new(),
            bytes: 0,
            max_events: max_events.max(1),
            max_bytes,
            complete_after: rv,
            dropped: HashMap::new(),
            triggered: HashMap::new(),
            dropped_triggered: HashMap::new(),
            forgot_all_at: rv,
            went_back: false,
        }
    }

    /// Appends `event`, dropping the oldest past either bound (the newest is always kept).
    fn push(&mut self, event: Arc<WatchEvent>) {
        self.bytes += event.size();
        for value in trigger_values(&event) {
            match self.triggered.get_mut(value) {
                Some(q) => q.push_back(event.clone()),
                None => {
                    self.triggered
                        .insert(value.to_string(), VecDeque::from([event.clone()]));
                }
            }
        }
        self.events.push_back(event);
        while self.events.len() > self.max_events
            || (self.bytes > self.max_bytes && self.events.len() > 1)
        {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.bytes -= old.size();
            self.complete_after = old.rv;
            match self.dropped.get_mut(&old.resource) {
                Some(at) => *at = old.rv,
                None => {
                    self.dropped.insert(old.resource.clone(), old.rv);
                }
            }
            for value in trigger_values(&old) {
                // the oldest of the history is the oldest of each of its values
                if let Some(q) = self.triggered.get_mut(value) {
                    q.pop_front();
                    if q.is_empty() {
                        self.triggered.remove(value);
                    }
                }
                match self.dropped_triggered.get_mut(value) {
                    Some(at) => *at = old.rv,
                    None => {
                        self.dropped_triggered.insert(value.to_string(), old.rv);
                    }
                }
            }
        }
    }

    /// Forgets every event: nothing before `rv` can be resumed from any more.
    fn reset(&mut self, rv: u64) {
        self.events.clear();
        self.bytes = 0;
        self.complete_after = rv;
        self.dropped.clear();
        self.triggered.clear();
        self.dropped_triggered.clear();
        self.forgot_all_at = rv;
    }

    /// The events after `rv` of objects whose indexed field is or was `value` (at most `limit`),
    /// in `namespace` when given; the cursor passes every other event up to the newest.
    /// `Expired` when such an event after `rv` left the history.
    fn triggered_after(
        &self,
        rv: u64,
        value: &str,
        namespace: Option<&str>,
        limit: usize,
    ) -> Result<EventsAfter, StoreError> {
        self.resumable(rv, self.dropped_triggered.get(value))?;
        let newest = self.events.back().map_or(rv, |e| e.rv.max(rv));
        let mut found = EventsAfter {
            events: Vec::new(),
            through: newest,
        };
        let Some(q) = self.triggered.get(value) else {
            return Ok(found);
        };
        let first = q.partition_point(|e| e.rv <= rv);
        for (i, e) in q.range(first..).enumerate() {
            if i == limit {
                // the rest on the next call: read through the last one taken
                found.through = match i {
                    0 => rv,
                    _ => q[first + i - 1].rv,
                };
                break;
            }
            if namespace.is_none_or(|ns| ns == e.namespace) {
                found.events.push(e.clone());
            }
        }
        Ok(found)
    }

    pub(super) fn check(&self, rv: u64) -> Result<(), StoreError> {
        if rv < self.complete_after {
            return Err(StoreError::Expired {
                requested: rv,
                oldest: self.complete_after,
            });
        }
        Ok(())
    }

    /// [`History::check`] for a watch of `resource` only: `Expired` when events of that resource
    /// after `rv` left the history.
    pub(super) fn check_resource(&self, rv: u64, resource: &str) -> Result<(), StoreError> {
        self.resumable(rv, self.dropped.get(resource))
    }

    /// `Expired` when a watch from `rv` misses events: its newest one the bounds `dropped`, or
    /// anything the history forgot all of.
    fn resumable(&self, rv: u64, dropped: Option<&u64>) -> Result<(), StoreError> {
        let oldest = dropped.copied().unwrap_or(0).max(self.forgot_all_at);
        if rv < oldest {
            return Err(StoreError::Expired {
                requested: rv,
                oldest,
            });
        }
        Ok(())
    }

    /// [`History::check`], and [`History::went_back_past`].
    pub(super) fn check_at(&self, rv: u64, current: u64) -> Result<(), StoreError> {
        self.check(rv)?;
        self.went_back_past(rv, current)
    }

    /// For a store that went back in time, a resourceVersion beyond `current` (given out before
    /// it went back) is 410 too, not a wait.
    pub(super) fn went_back_past(&self, rv: u64, current: u64) -> Result<(), StoreError> {
        if self.went_back && rv > current {
            return Err(StoreError::Expired {
                requested: rv,
                oldest: self.complete_after,
            });
        }
        Ok(())
    }

    /// The index of the first event after `rv`.
    fn first_after(&self, rv: u64) -> usize {
        self.events.partition_point(|e| e.rv <= rv)
    }
}

/// Locks `m`. A panic while holding one of the store's locks cannot leave half-written state
/// (the maps are updated after the backend's commit), so a poisoned lock is still usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The objects and the resourceVersion they are at, changed together.
pub(super) struct Objects {
    map: ObjectMap,
    rv: u64,
    /// Per [`indexed`] resource, its indexes over `map`.
    indexes: HashMap<String, Indexes>,
}

impl Objects {
    fn new(map: ObjectMap, rv: u64) -> Objects {
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
    fn insert(&mut self, resource: &str, k: (String, String), entry: Entry) -> Option<Entry> {
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
    fn remove(&mut self, resource: &str, k: &(String, String)) -> Option<Entry> {
        let prev = self.map.get_mut(resource)?.remove(k)?;
        if let Some(index) = self.indexes.get_mut(resource) {
            index.remove(k, &prev);
        }
        Some(prev)
    }

    fn get_mut(&mut self, resource: &str, k: &(String, String)) -> Option<&mut Entry> {
        self.map.get_mut(resource)?.get_mut(k)
    }

    /// The objects of `resource` in `namespace` (or all), in order.
    fn slots(&self, resource: &str, namespace: Option<&str>) -> Vec<Slot> {
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
    fn indexed_slots(&self, resource: &str, namespace: Option<&str>, by: Indexed<'_>) -> Vec<Slot> {
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

/// What the cache holds; shared with the task that applies a backend's feed.
pub(super) struct State {
    /// Taken before `history` when both are.
    objects: Mutex<Objects>,
    /// Apart from `objects`, so that watchers reading it never wait on a write.
    pub(super) history: Mutex<History>,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    rv: watch::Sender<u64>,
    /// Per resource, its newest event's rv, for the watchers of that resource: a watcher of
    /// pods is not woken by every Lease renewal (with 5000 nodes, 10000 watchers woke on each).
    by_resource: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Per indexed value (a node's name), the rv of its newest event: what a watcher of that
    /// node's pods waits on.
    by_trigger: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl State {
    /// Tells the watchers of `resource` that the history has an event of it at `rv`.
    fn wake(&self, event: &WatchEvent) {
        if let Some(tx) = lock(&self.by_resource).get(&event.resource) {
            tx.send_replace(event.rv);
        }
        let mut values = trigger_values(event).peekable();
        if values.peek().is_some() {
            let by_trigger = lock(&self.by_trigger);
            for value in values {
                if let Some(tx) = by_trigger.get(value) {
                    tx.send_replace(event.rv);
                }
            }
        }
    }

    /// Applies one change at `rv`: `value` None removes the object (`gone` is the object as last
    /// stored when the backend read it, for a removal the cache did not know of). Returns the
    /// object of the event (for a removal: as last stored, at `rv`).
    fn apply(
        &self,
        key: &Key,
        value: Option<Arc<Value>>,
        rv: u64,
        gone: Option<Value>,
    ) -> Option<Arc<Value>> {
        let mut objects = lock(&self.objects);
        let k = (key.namespace.clone(), key.name.clone());
        // the object before: the event carries it decoded (filtered watches and the
        // controllers compare it with the new one)
        let before = |objects: &mut Objects| {
            objects
                .get_mut(&key.resource, &k)
                .and_then(|e| e.value().ok())
        };
        let event = match value {
            Some(v) => {
                let prev = before(&mut objects);
                let t = if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                let event = WatchEvent::new(
                    t,
                    rv,
                    &key.resource,
                    &key.namespace,
                    &key.name,
                    v.clone(),
                    prev,
                );
                let entry = Entry::new(&key.resource, &v, event.json.clone());
                objects.insert(&key.resource, k, entry);
                event
            }
            None => {
                let prev = before(&mut objects);
                objects.remove(&key.resource, &k);
                let mut last = match (&prev, gone) {
                    (Some(p), _) => (**p).clone(),
                    (None, Some(g)) => g,
                    (None, None) => {
                        objects.rv = objects.rv.max(rv);
                        drop(objects);
                        self.advance(rv);
                        return None;
                    }
                };
                set_rv(&mut last, rv);
                WatchEvent::new(
                    EventType::Deleted,
                    rv,
                    &key.resource,
                    &key.namespace,
                    &key.name,
                    Arc::new(last),
                    prev,
                )
            }
        };
        objects.rv = objects.rv.max(rv);
        let event = Arc::new(event);
        let object = event.object.clone();
        lock(&self.history).push(event.clone());
        drop(objects);
        self.wake(&event);
        // No receivers is fine.
        let _ = self.tx.send(event);
        self.advance(rv);
        Some(object)
    }

    fn advance(&self, rv: u64) {
        self.rv
            .send_if_modified(|cur| std::mem::replace(cur, rv) != rv);
    }

    /// Replaces every object by `objects` at `rv` (the backend relisted: its history was
    /// compacted past the cache's): the history is forgotten, so a watch resumed from before `rv`
    /// is told 410 (kube-apiserver's cacher ends its watchers when it relists); the in-process
    /// watchers get the difference as events at `rv`, as a reflector's replace.
    fn replace(&self, loaded: Vec<(Key, Value)>, rv: u64) {
        let mut objects = lock(&self.objects);
        let mut fresh: ObjectMap = HashMap::new();
        let mut events = Vec::new();
        for (k, v) in loaded {
            let v = Arc::new(v);
            let at = (k.namespace, k.name);
            let old = objects.get_mut(&k.resource, &at);
            let entry = match old {
                Some(o) if o.rv == object_rv(&v) => Entry::encode(&k.resource, &v),
                _ => {
                    let prev = old.and_then(|o| o.value().ok());
                    let t = if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    let e = WatchEvent::new(t, rv, &k.resource, &at.0, &at.1, v.clone(), prev);
                    let entry = Entry::new(&k.resource, &v, e.json.clone());
                    events.push(e);
                    entry
                }
            };
            fresh.entry(k.resource).or_default().insert(at, entry);
        }
        let mut gone = Vec::new();
        for (resource, map) in &objects.map {
            for ((ns, name), e) in map {
                if fresh
                    .get(resource)
                    .is_none_or(|m| !m.contains_key(&(ns.clone(), name.clone())))
                {
                    gone.push((resource.clone(), ns.clone(), name.clone(), e.slot()));
                }
            }
        }
        for (resource, ns, name, slot) in gone {
            let Ok(v) = slot.value() else { continue };
            let mut last = (*v).clone();
            set_rv(&mut last, rv);
            events.push(WatchEvent::new(
                EventType::Deleted,
                rv,
                &resource,
                &ns,
                &name,
                Arc::new(last),
                Some(v),
            ));
        }
        let back = rv < objects.rv;
        *objects = Objects::new(fresh, rv);
        let mut history = lock(&self.history);
        history.reset(rv);
        history.went_back |= back;
        drop(history);
        drop(objects);
        tracing::warn!(
            rv,
            changes = events.len(),
            "the store was relisted: watches from before are told 410"
        );
        for e in events {
            let _ = self.tx.send(Arc::new(e));
        }
        for tx in lock(&self.by_resource).values() {
            tx.send_replace(rv);
        }
        for tx in lock(&self.by_trigger).values() {
            tx.send_replace(rv);
        }
        self.rv.send_replace(rv);
    }

    /// Applies a backend's feed until it ends.
    async fn follow(self: Arc<State>, mut feed: mpsc::Receiver<Change>) {
        while let Some(change) = feed.recv().await {
            match change {
                Change::Put { key, value } => {
                    let rv = object_rv(&value);
                    self.apply(&key, Some(Arc::new(value)), rv, None);
                }
                Change::Delete { key, rv, prev } => {
                    self.apply(&key, None, rv, prev);
                }
                Change::Progress(rv) => {
                    let mut objects = lock(&self.objects);
                    if rv > objects.rv {
                        objects.rv = rv;
                        drop(objects);
                        self.advance(rv);
                    }
                }
                Change::Replace { objects, rv } => self.replace(objects, rv),
            }
        }
    }
}

/// Whether a write is a heartbeat: a node's Lease (`kube-node-lease`) or a leader election's
/// (`kube-system`), what kube-apiserver's API Priority and Fairness puts in the `node-high` and
/// `leader-election` priority levels (its `system-nodes` and `system-leader-election` flow
/// schemas) so that a flood of other writes cannot starve them: a Lease not renewed in time
/// makes a node NotReady or a leader step down. (Told by the object, not by the user as
/// upstream's flow schemas do: only nodes and the server itself may write those Leases.)
pub(super) fn is_heartbeat(key: &Key) -> bool {
    key.resource == "leases.coordination.k8s.io"
        && matches!(key.namespace.as_str(), "kube-node-lease" | "kube-system")
}

/// The turns of the writes to a backend only this process writes: one at a time, in order of
/// arrival within each lane. Heartbeats ([`is_heartbeat`]) wait for the store only; every other
/// write first waits for the client lane, so at most one of them is ever queued for the store: a
/// heartbeat waits for the write being stored, at most one other and the heartbeats before it,
/// however many client writes are waiting (both locks are first come, first served).
#[derive(Default)]
struct Turns {
    clients: Arc<tokio::sync::Mutex<()>>,
    store: Arc<tokio::sync::Mutex<()>>,
}

/// A write's turn: held while it is stored and applied to the cache (owned, so the write's own
/// task holds it when its caller has gone).
struct Turn {
    _store: tokio::sync::OwnedMutexGuard<()>,
    _lane: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Turns {
    async fn take(&self, key: &Key) -> Turn {
        let lane = match is_heartbeat(key) {
            true => None,
            false => Some(self.clients.clone().lock_owned().await),
        };
        Turn {
            _store: self.store.clone().lock_owned().await,
            _lane: lane,
        }
    }
}

/// Runs a write to the backend and its application to the cache to the end on a task of its
/// own: a caller that goes away in between (a client that reset its stream, a timed-out
/// request: hyper drops the handler's future) would otherwise leave the backend written and the
/// cache without it, and every later update of the object refused with 409 against the stale
/// resourceVersion the cache still serves.
async fn to_the_end<T: Send + 'static>(
    write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(write)
        .await
        .map_err(|e| StoreError::Worker(format!("a store write's task failed: {e}")))?
}

/// A store: a [`Backend`] and its watch cache.
pub struct Store {
    backend: Arc<dyn Backend>,
    pub(super) state: Arc<State>,
    /// Serialises the writes to a backend only this process writes.
    writes: Turns,
    /// Whether the backend has a feed (others write it too): writes then wait for it.
    fed: bool,
    /// The tasks that end with the store (the feed's, the backend's own).
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Store {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Store {
    /// A cache of `loaded` (everything the backend holds at `rv`), with a history of at most
    /// `max_events` and `max_bytes`, fed by the backend's feed when it has one (which needs a
    /// tokio runtime).
    pub(super) fn new(
        backend: Arc<dyn Backend>,
        loaded: Vec<(Key, Value)>,
        rv: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Store {
        let mut map: ObjectMap = HashMap::new();
        for (k, v) in loaded {
            let entry = Entry::encode(&k.resource, &Arc::new(v));
            map.entry(k.resource)
                .or_default()
                .insert((k.namespace, k.name), entry);
        }
        let (tx, _) = broadcast::channel(max_events.max(16));
        let state = Arc::new(State {
            objects: Mutex::new(Objects::new(map, rv)),
            history: Mutex::new(History::new(rv, max_events, max_bytes)),
            tx,
            rv: watch::channel(rv).0,
            by_resource: Mutex::new(HashMap::new()),
            by_trigger: Mutex::new(HashMap::new()),
        });
        let feeder = backend
            .feed(rv)
            .map(|feed| tokio::spawn(state.clone().follow(feed)).abort_handle());
        Store {
            backend,
            state,
            writes: Turns::default(),
            fed: feeder.is_some(),
            tasks: feeder.into_iter().collect(),
        }
    }

    /// Marks the store as gone back in time (its backend behind the resourceVersions given out
    /// before: restored from a backup), see [`History::went_back`].
    pub(super) fn went_back(&self) {
        lock(&self.state.history).went_back = true;
    }

    /// Ends `task` with the store.
    pub(super) fn also_stop(&mut self, task: Option<tokio::task::AbortHandle>) {
        self.tasks.extend(task);
    }

    /// What `read` takes of the objects, and their resourceVersion, under the lock (decoded
    /// after it).
    fn slots(&self, read: impl FnOnce(&Objects) -> Vec<Slot>) -> (Vec<Slot>, u64) {
        let objects = lock(&self.state.objects);
        (read(&objects), objects.rv)
    }

    /// Waits until the feed brought `rv` (a write of ours).
    async fn fed(&self, rv: u64) {
        let mut changes = self.state.rv.subscribe();
        if tokio::time::timeout(FEED_WAIT, changes.wait_for(|cur| *cur >= rv))
            .await
            .is_err()
        {
            tracing::warn!(
                rv,
                "the store's watch has not brought a write back yet: a read right after it may not see it"
            );
        }
    }

    async fn put(&self, key: Key, obj: Value, expect: Expect) -> Result<Arc<Value>, StoreError> {
        if self.fed {
            let stored = self.backend.put(&key, obj, expect).await?;
            self.fed(object_rv(&stored)).await;
            return Ok(Arc::new(stored));
        }
        let turn = self.writes.take(&key).await;
        let (backend, state) = (self.backend.clone(), self.state.clone());
        to_the_end(async move {
            let _turn = turn;
            let stored = Arc::new(backend.put(&key, obj, expect).await?);
            let rv = object_rv(&stored);
            state.apply(&key, Some(stored.clone()), rv, None);
            Ok(stored)
        })
        .await
    }
}

fn key(resource: &str, namespace: &str, name: &str) -> Key {
    Key {
        resource: resource.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

#[async_trait::async_trait]
impl ObjectStore for Store {
    async fn get(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Value>>, StoreError> {
        let mut objects = lock(&self.state.objects);
        let k = (namespace.to_string(), name.to_string());
        objects.get_mut(resource, &k).map(Entry::value).transpose()
    }

    async fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<Arc<Value>>, u64), StoreError> {
        let (slots, rv) = self.slots(|o| o.slots(resource, namespace));
        Ok((values(slots)?, rv))
    }

    async fn list_metadata(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<Arc<Value>>, u64), StoreError> {
        let (slots, rv) = self.slots(|o| o.slots(resource, namespace));
        let items = slots
            .into_iter()
            .map(Slot::metadata)
            .collect::<Result<_, _>>()?;
        Ok((items, rv))
    }

    async fn list_indexed(
        &self,
        resource: &str,
        namespace: Option<&str>,
        by: Indexed<'_>,
    ) -> Result<(Vec<Arc<Value>>, u64), StoreError> {
        if !indexed(resource) {
            let (items, rv) = self.list(resource, namespace).await?;
            return Ok((by.filter(items), rv));
        }
        let (slots, rv) = self.slots(|o| o.indexed_slots(resource, namespace, by));
        Ok((values(slots)?, rv))
    }

    /// The current objects with the history's changes after `rv` undone, newest first: each
    /// change puts back the object before it (or removes one it added). Before the history, the
    /// backend's own snapshot when it keeps old revisions (etcd).
    async fn list_at(
        &self,
        resource: &str,
        namespace: Option<&str>,
        rv: u64,
    ) -> Result<Vec<Arc<Value>>, StoreError> {
        let oldest = {
            let objects = lock(&self.state.objects);
            let history = lock(&self.state.history);
            match history.check_at(rv, objects.rv) {
                Ok(()) => {
                    let slots = undo_after(&objects.map, &history, resource, namespace, rv);
                    drop(history);
                    drop(objects);
                    return values(slots);
                }
                Err(_) => history.complete_after,
            }
        };
        match self.backend.list_at(resource, namespace, rv).await {
            Some(Ok(items)) => Ok(items.into_iter().map(Arc::new).collect()),
            Some(Err(StoreError::Expired { .. })) | None => Err(StoreError::Expired {
                requested: rv,
                oldest,
            }),
            Some(Err(e)) => Err(e),
        }
    }

    async fn create(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        obj: Value,
    ) -> Result<Arc<Value>, StoreError> {
        self.put(key(resource, namespace, name), obj, Expect::Absent)
            .await
    }

    async fn update(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        obj: Value,
        expected_rv: Option<u64>,
    ) -> Result<Arc<Value>, StoreError> {
        self.put(
            key(resource, namespace, name),
            obj,
            Expect::Present(expected_rv),
        )
        .await
    }

    async fn delete(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        expected_rv: Option<u64>,
    ) -> Result<Arc<Value>, StoreError> {
        let key = key(resource, namespace, name);
        let not_found = || StoreError::NotFound {
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        if self.fed {
            let (rv, last) = self.backend.delete(&key, expected_rv).await?;
            self.fed(rv).await;
            let mut last = last.ok_or_else(not_found)?;
            set_rv(&mut last, rv);
            return Ok(Arc::new(last));
        }
        let turn = self.writes.take(&key).await;
        let (backend, state) = (self.backend.clone(), self.state.clone());
        let applied = to_the_end(async move {
            let _turn = turn;
            let (rv, last) = backend.delete(&key, expected_rv).await?;
            Ok(state.apply(&key, None, rv, last))
        })
        .await?;
        applied.ok_or_else(not_found)
    }

    async fn watch(
        &self,
        resource: Option<&str>,
        namespace: Option<&str>,
        from: WatchFrom,
    ) -> Result<Watch, StoreError> {
        let objects = lock(&self.state.objects);
        let history = lock(&self.state.history);
        let matches = |r: &str, ns: &str| {
            resource.is_none_or(|x| x == r) && namespace.is_none_or(|x| x == ns)
        };
        // the current objects, decoded (when they must be) once the locks are let go
        let mut current = Vec::new();
        let initial = match from {
            WatchFrom::Current { initial: false } => Vec::new(),
            WatchFrom::Current { initial: true } => {
                for (r, m) in &objects.map {
                    if resource.is_some_and(|x| x != r) {
                        continue;
                    }
                    for ((ns, name), e) in m {
                        if matches(r, ns) {
                            current.push((
                                r.clone(),
                                ns.clone(),
                                name.clone(),
                                e.rv,
                                e.slot(),
                                e.json.clone(),
                            ));
                        }
                    }
                }
                Vec::new()
            }
            WatchFrom::After(rv) => {
                match resource {
                    Some(r) => history.check_resource(rv, r)?,
                    None => history.check(rv)?,
                }
                history.went_back_past(rv, objects.rv)?;
                history
                    .events
                    .range(history.first_after(rv)..)
                    .filter(|e| matches(&e.resource, &e.namespace))
                    .cloned()
                    .collect()
            }
        };
        let watch = Watch {
            initial,
            rx: self.state.tx.subscribe(),
            rv: objects.rv,
        };
        drop(history);
        drop(objects);
        let mut watch = watch;
        for (r, ns, name, rv, slot, json) in current {
            let object = slot.value()?;
            watch.initial.push(Arc::new(WatchEvent::encoded(
                EventType::Added,
                rv,
                &r,
                &ns,
                &name,
                object,
                &json,
                None,
            )));
        }
        Ok(watch)
    }

    fn current_rv(&self) -> u64 {
        *self.state.rv.borrow()
    }

    fn went_back(&self) -> bool {
        lock(&self.state.history).went_back
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.state.rv.subscribe()
    }

    fn changes_of(&self, resource: &str) -> watch::Receiver<u64> {
        let rv = self.current_rv();
        lock(&self.state.by_resource)
            .entry(resource.to_string())
            .or_insert_with(|| watch::channel(rv).0)
            .subscribe()
    }

    fn changes_of_trigger(&self, resource: &str, value: &str) -> watch::Receiver<u64> {
        if super::trigger_field(resource).is_none() || value.is_empty() {
            return self.changes_of(resource);
        }
        let rv = self.current_rv();
        let mut by_trigger = lock(&self.state.by_trigger);
        // channels without watchers go (nodes come and go): looked for when the map is about
        // to grow past a power of two, so the look costs O(1) per new value over time
        let len = by_trigger.len();
        if len >= 64 && len.is_power_of_two() && !by_trigger.contains_key(value) {
            by_trigger.retain(|_, tx| tx.receiver_count() > 0);
        }
        by_trigger
            .entry(value.to_string())
            .or_insert_with(|| watch::channel(rv).0)
            .subscribe()
    }

    fn events_after_trigger(
        &self,
        rv: u64,
        resource: &str,
        value: &str,
        namespace: Option<&str>,
        limit: usize,
    ) -> Result<EventsAfter, StoreError> {
        if super::trigger_field(resource).is_none() || value.is_empty() {
            return self.events_after(rv, resource, namespace, limit);
        }
        let history = lock(&self.state.history);
        history.went_back_past(rv, *self.state.rv.borrow())?;
        history.triggered_after(rv, value, namespace, limit)
    }

    fn events_after(
        &self,
        rv: u64,
        resource: &str,
        namespace: Option<&str>,
        limit: usize,
    ) -> Result<EventsAfter, StoreError> {
        let history = lock(&self.state.history);
        history.check_resource(rv, resource)?;
        history.went_back_past(rv, *self.state.rv.borrow())?;
        let mut found = EventsAfter {
            events: Vec::new(),
            through: rv,
        };
        for e in history.events.range(history.first_after(rv)..).take(limit) {
            found.through = e.rv;
            if e.resource == resource && namespace.is_none_or(|ns| ns == e.namespace) {
                found.events.push(e.clone());
            }
        }
        Ok(found)
    }
}

/// The objects of `resource` in `map` with the changes of `history` after `rv` undone.
fn undo_after(
    map: &ObjectMap,
    history: &History,
    resource: &str,
    namespace: Option<&str>,
    rv: u64,
) -> Vec<Slot> {
    let mut items: BTreeMap<(String, String), Slot> = map
        .get(resource)
        .map(|m| {
            m.iter()
                .filter(|((ns, _), _)| namespace.is_none_or(|x| x == ns))
                .map(|(k, e)| (k.clone(), e.slot()))
                .collect()
        })
        .unwrap_or_default();
    let changes = history.events.range(history.first_after(rv)..).rev();
    for e in
        changes.filter(|e| e.resource == resource && namespace.is_none_or(|ns| ns == e.namespace))
    {
        let key = (e.namespace.clone(), e.name.clone());
        match &e.prev {
            Some(before) => items.insert(key, Slot::Live(before.clone())),
            None => items.remove(&key),
        };
    }
    items.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A backend others write: only its feed, which the test drives.
    struct Driven {
        feed: Mutex<Option<mpsc::Receiver<Change>>>,
    }

    #[async_trait::async_trait]
    impl Backend for Driven {
        async fn put(&self, _: &Key, _: Value, _: Expect) -> Result<Value, StoreError> {
            Err(StoreError::Worker("read only".into()))
        }
        async fn delete(
            &self,
            _: &Key,
            _: Option<u64>,
        ) -> Result<(u64, Option<Value>), StoreError> {
            Err(StoreError::Worker("read only".into()))
        }
        fn feed(&self, _: u64) -> Option<mpsc::Receiver<Change>> {
            lock(&self.feed).take()
        }
    }

    /// A backend only this process writes whose writes are stored when the test lets them: it
    /// notes the order they were stored in.
    struct Gated {
        open: tokio::sync::Semaphore,
        entered: std::sync::atomic::AtomicUsize,
        stored: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Backend for Gated {
        async fn put(&self, key: &Key, mut value: Value, _: Expect) -> Result<Value, StoreError> {
            self.entered
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.open.acquire().await.expect("open").forget();
            let mut stored = lock(&self.stored);
            stored.push(key.name.clone());
            set_rv(&mut value, stored.len() as u64);
            Ok(value)
        }
        async fn delete(
            &self,
            _: &Key,
            _: Option<u64>,
        ) -> Result<(u64, Option<Value>), StoreError> {
            Err(StoreError::Worker("not in this test".into()))
        }
    }

    /// A node's Lease renewal and the leader's are not queued behind a flood of client writes
    /// (what made the 1000-node scale run's nodes and leader lose their Leases): with 200 client
    /// writes waiting, each is stored after at most the write being stored and one other.
    #[tokio::test]
    async fn heartbeats_are_not_queued_behind_a_flood_of_client_writes() {
        use std::sync::atomic::Ordering::SeqCst;
        const FLOOD: usize = 200;
        let backend = Arc::new(Gated {
            open: tokio::sync::Semaphore::new(0),
            entered: Default::default(),
            stored: Default::default(),
        });
        let store = Arc::new(Store::new(backend.clone(), vec![], 0, 1000, 1 << 20));
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let write = |resource: &'static str, ns: &'static str, name: String| {
            let (store, asked) = (store.clone(), asked.clone());
            tokio::spawn(async move {
                asked.fetch_add(1, SeqCst);
                let obj = json!({"metadata": {"name": name.clone()}});
                store.create(resource, ns, &name, obj).await.map(|_| ())
            })
        };
        let mut writes: Vec<_> = (0..FLOOD)
            .map(|i| write("configmaps", "default", format!("cm-{i}")))
            .collect();
        // every client write has asked (each is queued the moment it asks: this runtime has one
        // thread) and the first is being stored
        while asked.load(SeqCst) < FLOOD || backend.entered.load(SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        writes.push(write(
            "leases.coordination.k8s.io",
            "kube-node-lease",
            "node-1".into(),
        ));
        writes.push(write(
            "leases.coordination.k8s.io",
            "kube-system",
            "daemonset-agent-controllers".into(),
        ));
        while asked.load(SeqCst) < FLOOD + 2 {
            tokio::task::yield_now().await;
        }
        backend.open.add_permits(FLOOD + 2);
        for w in writes {
            w.await.expect("the write's task").expect("stored");
        }
        let stored = lock(&backend.stored).clone();
        assert_eq!(stored.len(), FLOOD + 2);
        let at = |name: &str| stored.iter().position(|n| n == name).expect(name);
        assert!(
            at("node-1") <= 2,
            "the node's Lease stored {}th",
            at("node-1")
        );
        assert!(
            at("daemonset-agent-controllers") <= 3,
            "the leader's Lease stored {}th",
            at("daemonset-agent-controllers")
        );
        // the client writes in the order they came
        let clients: Vec<&String> = stored.iter().filter(|n| n.starts_with("cm-")).collect();
        let want: Vec<String> = (0..FLOOD).map(|i| format!("cm-{i}")).collect();
        assert_eq!(clients, want.iter().collect::<Vec<_>>());
    }

    /// A write whose caller goes away while the backend stores it (a client that reset its
    /// stream: hyper drops the handler's future) still reaches the cache: the cache left behind
    /// made every later patch of that object a 409 (the fault matrix's partition, then a node's
    /// Lease never renewed again).
    #[tokio::test]
    async fn a_write_whose_caller_went_away_still_reaches_the_cache() {
        use std::sync::atomic::Ordering::SeqCst;
        let backend = Arc::new(Gated {
            open: tokio::sync::Semaphore::new(0),
            entered: Default::default(),
            stored: Default::default(),
        });
        let store = Arc::new(Store::new(backend.clone(), vec![], 0, 1000, 1 << 20));
        let caller = {
            let store = store.clone();
            tokio::spawn(async move {
                let obj = json!({"metadata": {"name": "n2"}, "spec": {"renewTime": "t1"}});
                store
                    .create("leases.coordination.k8s.io", "kube-node-lease", "n2", obj)
                    .await
            })
        };
        while backend.entered.load(SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        backend.open.add_permits(2);
        // the backend stored it (rv 1): the cache must come to hold it, at that rv
        let mut seen = None;
        for _ in 0..1000 {
            seen = store
                .get("leases.coordination.k8s.io", "kube-node-lease", "n2")
                .await
                .unwrap();
            if seen.is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let seen = seen.expect("the cache never saw the stored write");
        assert_eq!(object_rv(&seen), 1);
        assert_eq!(lock(&backend.stored).clone(), ["n2"]);
        // and the next write takes its turn after it (the turn went with the write's task)
        let obj = json!({"metadata": {"name": "n3"}});
        store
            .create("leases.coordination.k8s.io", "kube-node-lease", "n3", obj)
            .await
            .unwrap();
        assert_eq!(lock(&backend.stored).clone(), ["n2", "n3"]);
    }

    fn node(name: &str, rv: u64) -> (Key, Value) {
        (
            key("nodes", "", name),
            json!({"kind": "Node", "metadata": {"name": name, "resourceVersion": rv.to_string()}}),
        )
    }

    async fn next(rx: &mut broadcast::Receiver<Arc<WatchEvent>>) -> (EventType, String, u64) {
        let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event")
            .expect("the feed is open");
        (e.event_type, e.name.clone(), e.rv)
    }

    fn lease(name: &str, rv: u64) -> (Key, Value) {
        (
            key("leases.coordination.k8s.io", "kube-node-lease", name),
            json!({"kind": "Lease", "metadata": {"name": name, "resourceVersion": rv.to_string()}}),
        )
    }

    /// A watch of one resource is woken by that resource's events only, and resumes past other
    /// resources' events the history's bounds dropped (the scale benchmark: 5000 nodes' Lease
    /// renewals woke every pod and DaemonSet watcher, and pushed their cursors out of the history).
    #[tokio::test]
    async fn a_resource_watch_is_not_woken_nor_expired_by_other_resources() {
        let (tx, rx) = mpsc::channel(64);
        let backend = Driven {
            feed: Mutex::new(Some(rx)),
        };
        let store = Store::new(Arc::new(backend), vec![node("a", 1)], 1, 3, 1 << 20);
        let mut nodes_changed = store.changes_of("nodes");
        let mut all = store.changes();
        for rv in 2..=9 {
            let (k, v) = lease(&format!("l{rv}"), rv);
            tx.send(Change::Put { key: k, value: v }).await.unwrap();
        }
        all.wait_for(|rv| *rv == 9).await.unwrap();
        assert!(!nodes_changed.has_changed().unwrap(), "woken by leases");
        // the history holds leases 7..=9 only; no node event after 1 was dropped
        let found = store.events_after(1, "nodes", None, 10).unwrap();
        assert!(found.events.is_empty());
        assert_eq!(found.through, 9);
        assert!(matches!(
            store.events_after(1, "leases.coordination.k8s.io", None, 10),
            Err(StoreError::Expired {
                requested: 1,
                oldest: 6
            })
        ));
        let mut w = store
            .watch(Some("nodes"), None, WatchFrom::After(1))
            .await
            .unwrap();
        assert!(w.initial.is_empty());
        let (k, v) = node("b", 10);
        tx.send(Change::Put { key: k, value: v }).await.unwrap();
        assert_eq!(next(&mut w.rx).await, (EventType::Added, "b".into(), 10));
        nodes_changed.changed().await.unwrap();
        assert_eq!(*nodes_changed.borrow_and_update(), 10);
        let found = store.events_after(1, "nodes", None, 10).unwrap();
        assert_eq!(found.events.len(), 1);
        // once node events are dropped too, a node watch from before them is expired
        for rv in 11..=13 {
            let (k, v) = lease(&format!("l{rv}"), rv);
            tx.send(Change::Put { key: k, value: v }).await.unwrap();
        }
        all.wait_for(|rv| *rv == 13).await.unwrap();
        assert!(matches!(
            store.events_after(9, "nodes", None, 10),
            Err(StoreError::Expired {
                requested: 9,
                oldest: 10
            })
        ));
        assert!(store.events_after(10, "nodes", None, 10).is_ok());
    }

    fn pod(name: &str, node: &str, rv: u64) -> (Key, Value) {
        (
            key("pods", "default", name),
            json!({"kind": "Pod", "metadata": {"name": name, "namespace": "default",
                "resourceVersion": rv.to_string()}, "spec": {"nodeName": node}}),
        )
    }

    /// A watch of one node's pods (the indexed trigger on spec.nodeName) is woken by that node's
    /// pods only, reads only their events while its cursor passes the others', gets an event
    /// of a pod that moved away from its node, and is expired only when one of its node's
    /// events left the history, not by other nodes' pod churn.
    #[tokio::test]
    async fn a_node_pod_watch_reads_its_own_pods_events_only() {
        let (tx, rx) = mpsc::channel(64);
        let backend = Driven {
            feed: Mutex::new(Some(rx)),
        };
        let store = Store::new(Arc::new(backend), vec![], 1, 4, 1 << 20);
        let mut a_changed = store.changes_of_trigger("pods", "a");
        let mut all = store.changes();
        let (k, v) = pod("pa", "a", 2);
        tx.send(Change::Put { key: k, value: v }).await.unwrap();
        a_changed.changed().await.unwrap();
        assert_eq!(*a_changed.borrow_and_update(), 2);
        // three pods of node b: a's watch is not woken
        for rv in 3..=5 {
            let (k, v) = pod(&format!("pb{rv}"), "b", rv);
            tx.send(Change::Put { key: k, value: v }).await.unwrap();
        }
        all.wait_for(|rv| *rv == 5).await.unwrap();
        assert!(!a_changed.has_changed().unwrap(), "woken by node b's pods");
        let found = store
            .events_after_trigger(1, "pods", "a", None, 10)
            .unwrap();
        let names: Vec<_> = found.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!((names, found.through), (vec!["pa"], 5));
        // nothing more for a: the cursor passes b's events without them
        let found = store
            .events_after_trigger(2, "pods", "a", None, 10)
            .unwrap();
        assert_eq!((found.events.len(), found.through), (0, 5));
        // b's churn pushes a's only event out of the history (bounds: 4 events): a watch of a
        // from before it is expired, from after it is not
        for rv in 6..=8 {
            let (k, v) = pod(&format!("pb{rv}"), "b", rv);
            tx.send(Change::Put { key: k, value: v }).await.unwrap();
        }
        all.wait_for(|rv| *rv == 8).await.unwrap();
        assert!(matches!(
            store.events_after_trigger(1, "pods", "a", None, 10),
            Err(StoreError::Expired {
                requested: 1,
                oldest: 2
            })
        ));
        let found = store
            .events_after_trigger(2, "pods", "a", None, 10)
            .unwrap();
        assert_eq!((found.events.len(), found.through), (0, 8));
        // a pod moved from b to a, then from a to c: both concern a's watch
        let (k, v) = pod("pb8", "a", 9);
        tx.send(Change::Put { key: k, value: v }).await.unwrap();
        let (k, v) = pod("pb8", "c", 10);
        tx.send(Change::Put { key: k, value: v }).await.unwrap();
        all.wait_for(|rv| *rv == 10).await.unwrap();
        assert!(a_changed.has_changed().unwrap());
        let found = store
            .events_after_trigger(8, "pods", "a", None, 10)
            .unwrap();
        let rvs: Vec<_> = found.events.iter().map(|e| e.rv).collect();
        assert_eq!((rvs, found.through), (vec![9, 10], 10));
        // at most `limit` at a time, the cursor stopping at the last one given
        let found = store.events_after_trigger(8, "pods", "a", None, 1).unwrap();
        assert_eq!((found.events.len(), found.through), (1, 9));
        // a namespace that is not theirs, and a resource without an index, read as before
        let found = store
            .events_after_trigger(8, "pods", "a", Some("other"), 10)
            .unwrap();
        assert_eq!((found.events.len(), found.through), (0, 10));
        assert!(store
            .events_after_trigger(8, "nodes", "a", None, 10)
            .unwrap()
            .events
            .is_empty());
    }

    fn owned(name: &str, node: &str, controller: Option<&str>, rv: u64) -> (Key, Value) {
        let (k, mut v) = pod(name, node, rv);
        v["metadata"]["labels"] = json!({"app": "x"});
        if let Some(uid) = controller {
            v["metadata"]["ownerReferences"] =
                json!([{"kind": "DaemonSet", "name": "d", "uid": uid, "controller": true}]);
        }
        (k, v)
    }

    fn names(items: &[Arc<Value>]) -> Vec<&str> {
        items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect()
    }

    /// The cache keeps an object as its JSON and gives it back decoded, the same object (shared
    /// while someone holds it, decoded again after); its indexes follow the writes (a pod bound
    /// to another node, adopted, deleted); a watch resumed from a resourceVersion replays the
    /// history's events, whose lines hold the same bytes.
    #[tokio::test]
    async fn objects_are_kept_encoded_and_indexed() {
        let (tx, rx) = mpsc::channel(64);
        let backend = Driven {
            feed: Mutex::new(Some(rx)),
        };
        let store = Store::new(
            Arc::new(backend),
            vec![owned("p1", "a", Some("u1"), 1), node("n", 1)],
            1,
            100,
            1 << 20,
        );
        let mut all = store.changes();
        // round trip: what was loaded, decoded again on each read no one else holds
        let want = owned("p1", "a", Some("u1"), 1).1;
        let got = store.get("pods", "default", "p1").await.unwrap().unwrap();
        assert_eq!(*got, want);
        let again = store.get("pods", "default", "p1").await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&got, &again), "decoded twice while held");
        drop((got, again));
        assert_eq!(
            *store.get("pods", "default", "p1").await.unwrap().unwrap(),
            want
        );

        for (k, v) in [
            owned("p2", "b", Some("u1"), 2),
            owned("p3", "a", None, 3),
            owned("p4", "", Some("u2"), 4),
        ] {
            tx.send(Change::Put { key: k, value: v }).await.unwrap();
        }
        all.wait_for(|rv| *rv == 4).await.unwrap();
        let by = |by| {
            let store = &store;
            async move { store.list_indexed("pods", None, by).await.unwrap().0 }
        };
        assert_eq!(names(&by(Indexed::Trigger("a")).await), ["p1", "p3"]);
        assert_eq!(names(&by(Indexed::Trigger("")).await), ["p4"]);
        assert_eq!(names(&by(Indexed::Controller("u1")).await), ["p1", "p2"]);
        assert_eq!(names(&by(Indexed::Controller("")).await), ["p3"]);
        let (in_other, _) = store
            .list_indexed("pods", Some("other"), Indexed::Trigger("a"))
            .await
            .unwrap();
        assert!(in_other.is_empty());
        // a resource without indexes is filtered as a list would be
        let (nodes, _) = store
            .list_indexed("nodes", None, Indexed::Controller(""))
            .await
            .unwrap();
        assert_eq!(names(&nodes), ["n"]);

        // p3 adopted by u1 and bound to b, p1 deleted
        let (k, v) = owned("p3", "b", Some("u1"), 5);
        tx.send(Change::Put { key: k, value: v }).await.unwrap();
        tx.send(Change::Delete {
            key: key("pods", "default", "p1"),
            rv: 6,
            prev: None,
        })
        .await
        .unwrap();
        all.wait_for(|rv| *rv == 6).await.unwrap();
        assert!(by(Indexed::Trigger("a")).await.is_empty());
        assert_eq!(names(&by(Indexed::Trigger("b")).await), ["p2", "p3"]);
        assert_eq!(names(&by(Indexed::Controller("u1")).await), ["p2", "p3"]);
        assert!(by(Indexed::Controller("")).await.is_empty());
        let (items, rv) = store.list("pods", Some("default")).await.unwrap();
        assert_eq!((names(&items), rv), (vec!["p2", "p3", "p4"], 6));

        // resumed from 4: the adoption (with the pod before it) and the deletion
        let w = store
            .watch(Some("pods"), None, WatchFrom::After(4))
            .await
            .unwrap();
        let got: Vec<_> = w
            .initial
            .iter()
            .map(|e| (e.event_type, e.name.as_str(), e.rv))
            .collect();
        assert_eq!(
            got,
            [
                (EventType::Modified, "p3", 5),
                (EventType::Deleted, "p1", 6)
            ]
        );
        let adopted = &w.initial[0];
        assert_eq!(adopted.prev.as_deref(), Some(&owned("p3", "a", None, 3).1));
        let line: Value = serde_json::from_slice(&adopted.line).unwrap();
        assert_eq!(line["object"], *adopted.object);
        let json: Value = serde_json::from_slice(&adopted.json).unwrap();
        assert_eq!(json, *adopted.object);
        // the cache reads back what the event carried
        let cached = store.get("pods", "default", "p3").await.unwrap().unwrap();
        assert_eq!(*cached, *adopted.object);
        // the initial events of a watch from now: the objects as stored
        let w = store
            .watch(Some("pods"), None, WatchFrom::Current { initial: true })
            .await
            .unwrap();
        let objects: Vec<Value> = w.initial.iter().map(|e| (*e.object).clone()).collect();
        let lines: Vec<Value> = w
            .initial
            .iter()
            .map(|e| serde_json::from_slice::<Value>(&e.line).unwrap()["object"].clone())
            .collect();
        assert_eq!(objects, lines);
        assert_eq!(objects.len(), 3);
        // metadata only: from the bytes and from a live object alike, managedFields cut
        drop((w, cached));
        let mut p = owned("p5", "b", Some("u1"), 7).1;
        p["metadata"]["managedFields"] = json!([{"manager": "m"}]);
        let want = json!({"kind": "Pod", "metadata": p["metadata"].clone()});
        let mut want = want;
        want["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        tx.send(Change::Put {
            key: key("pods", "default", "p5"),
            value: p,
        })
        .await
        .unwrap();
        all.wait_for(|rv| *rv == 7).await.unwrap();
        let (meta, rv) = store.list_metadata("pods", None).await.unwrap();
        assert_eq!(rv, 7);
        assert_eq!(meta.len(), 4);
        assert_eq!(*meta[3], want);
        assert!(meta.iter().all(|m| m.get("spec").is_none()));
        let held = store.get("pods", "default", "p5").await.unwrap().unwrap();
        let (meta, _) = store.list_metadata("pods", None).await.unwrap();
        assert_eq!(*meta[3], want);
        drop(held);
    }

    /// A metadata-only list of objects no one holds decodes them from their bytes, cut as one
    /// of a held object is.
    #[tokio::test]
    async fn metadata_only_lists_cut_objects_from_their_bytes() {
        let (_tx, rx) = mpsc::channel(1);
        let backend = Driven {
            feed: Mutex::new(Some(rx)),
        };
        let (k, mut p) = owned("p", "a", None, 1);
        p["apiVersion"] = json!("v1");
        p["metadata"]["managedFields"] = json!([{"manager": "m"}]);
        let store = Store::new(Arc::new(backend), vec![(k, p.clone())], 1, 10, 1 << 20);
        let (from_bytes, _) = store.list_metadata("pods", None).await.unwrap();
        let held = store.get("pods", "default", "p").await.unwrap().unwrap();
        let (from_held, _) = store.list_metadata("pods", None).await.unwrap();
        assert_eq!(from_bytes, from_held);
        let mut want = json!({"apiVersion": "v1", "kind": "Pod", "metadata": p["metadata"]});
        want["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(*from_bytes[0], want);
        assert_eq!(*held, p);
    }

    /// A shared backend's feed drives the cache: changes become events in order, progress
    /// advances the resourceVersion, and a relist (the backend's history was compacted) ends
    /// every resumable watch with 410 while in-process watchers get the difference.
    #[tokio::test]
    async fn the_feed_drives_the_cache_and_a_relist_expires_the_history() {
        let (tx, rx) = mpsc::channel(16);
        let backend = Driven {
            feed: Mutex::new(Some(rx)),
        };
        let store = Store::new(
            Arc::new(backend),
            vec![node("a", 1), node("b", 2)],
            2,
            100,
            1 << 20,
        );
        let mut w = store
            .watch(Some("nodes"), None, WatchFrom::After(2))
            .await
            .unwrap();
        let (k, v) = node("c", 3);
        tx.send(Change::Put { key: k, value: v }).await.unwrap();
        assert_eq!(next(&mut w.rx).await, (EventType::Added, "c".into(), 3));
        tx.send(Change::Progress(4)).await.unwrap();
        let mut changes = store.changes();
        changes.wait_for(|rv| *rv == 4).await.unwrap();
        assert_eq!(
            store
                .events_after(2, "nodes", None, 10)
                .unwrap()
                .events
                .len(),
            1
        );

        // a unchanged, b changed, c gone, d new
        tx.send(Change::Replace {
            objects: vec![node("a", 1), node("b", 5), node("d", 6)],
            rv: 7,
        })
        .await
        .unwrap();
        let mut got = vec![
            next(&mut w.rx).await,
            next(&mut w.rx).await,
            next(&mut w.rx).await,
        ];
        got.sort_by(|x, y| x.1.cmp(&y.1));
        assert_eq!(
            got,
            [
                (EventType::Modified, "b".into(), 7),
                (EventType::Deleted, "c".into(), 7),
                (EventType::Added, "d".into(), 7),
            ]
        );
        assert!(matches!(
            store.events_after(3, "nodes", None, 10),
            Err(StoreError::Expired {
                requested: 3,
                oldest: 7
            })
        ));
        let (items, rv) = store.list("nodes", None).await.unwrap();
        let names: Vec<&str> = items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!((names, rv), (vec!["a", "b", "d"], 7));

        // a removal the cache knew of carries the object as last stored, at the removal's rv
        tx.send(Change::Delete {
            key: key("nodes", "", "d"),
            rv: 8,
            prev: None,
        })
        .await
        .unwrap();
        assert_eq!(next(&mut w.rx).await, (EventType::Deleted, "d".into(), 8));
        let found = store.events_after(7, "nodes", None, 10).unwrap();
        assert_eq!(object_rv(&found.events[0].object), 8);
        assert_eq!(store.current_rv(), 8);
    }
}
