//! What the cache holds, and how a change reaches it: applied to the objects, pushed to the
//! history and sent to the watchers (the fan-out).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

use super::*;
use crate::server::store::{object_rv, set_rv, trigger_values, Change, EventType, Key, WatchEvent};

/// A channel of the in-process watchers' events.
type Sender = broadcast::Sender<Arc<WatchEvent>>;

/// The broadcast of events to the in-process watchers (the controllers): one channel for the
/// watches of every resource, and one per set of resources watched, so that a controller is sent
/// its kinds only: each event is matched here once per set, and a controller of pods is not
/// woken by the Lease renewals of 5000 nodes.
pub(super) struct Fanout {
    all: Sender,
    capacity: usize,
    /// Per set of resources (sorted), its channel.
    kinds: Mutex<Vec<(Box<[String]>, Sender)>>,
}

impl Fanout {
    pub(super) fn new(capacity: usize) -> Fanout {
        Fanout {
            all: broadcast::channel(capacity).0,
            capacity,
            kinds: Mutex::new(Vec::new()),
        }
    }

    /// A receiver of the events of `resources` (None: every resource).
    pub(super) fn subscribe(
        &self,
        resources: Option<&[&str]>,
    ) -> broadcast::Receiver<Arc<WatchEvent>> {
        let Some(resources) = resources else {
            return self.all.subscribe();
        };
        let mut set: Vec<String> = resources.iter().map(|r| r.to_string()).collect();
        set.sort();
        set.dedup();
        let mut kinds = lock(&self.kinds);
        // the channels no one receives from any more go
        kinds.retain(|(_, tx)| tx.receiver_count() > 0);
        if let Some((_, tx)) = kinds.iter().find(|(s, _)| **s == *set) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(self.capacity);
        kinds.push((set.into_boxed_slice(), tx));
        rx
    }

    /// Sends `event` to the watchers of every resource and of its own.
    pub(super) fn send(&self, event: Arc<WatchEvent>) {
        for (set, tx) in lock(&self.kinds).iter() {
            if set.contains(&event.resource) {
                // No receivers is fine.
                let _ = tx.send(event.clone());
            }
        }
        let _ = self.all.send(event);
    }
}

/// What the cache holds; shared with the task that applies a backend's feed.
pub(in crate::server::store) struct State {
    /// Taken before `history` when both are.
    pub(super) objects: Mutex<Objects>,
    /// Apart from `objects`, so that watchers reading it never wait on a write.
    pub(in crate::server::store) history: Mutex<History>,
    pub(super) tx: Fanout,
    pub(super) rv: watch::Sender<u64>,
    /// Per resource, its newest event's rv, for the watchers of that resource: a watcher of
    /// pods is not woken by every Lease renewal (with 5000 nodes, 10000 watchers woke on each).
    pub(super) by_resource: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Per indexed value (a node's name), the rv of its newest event: what a watcher of that
    /// node's pods waits on.
    pub(super) by_trigger: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl State {
    /// Tells the watchers of `resource` that the history has an event of it at `rv`.
    pub(super) fn wake(&self, event: &WatchEvent) {
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
    pub(super) fn apply(
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
        self.tx.send(event);
        self.advance(rv);
        Some(object)
    }

    pub(super) fn advance(&self, rv: u64) {
        self.rv
            .send_if_modified(|cur| std::mem::replace(cur, rv) != rv);
    }

    /// Replaces every object by `objects` at `rv` (the backend relisted: its history was
    /// compacted past the cache's): the history is forgotten, so a watch resumed from before `rv`
    /// is told 410 (kube-apiserver's cacher ends its watchers when it relists); the in-process
    /// watchers get the difference as events at `rv`, as a reflector's replace.
    pub(super) fn replace(&self, loaded: Vec<(Key, Value)>, rv: u64) {
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
            self.tx.send(Arc::new(e));
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
    pub(super) async fn follow(self: Arc<State>, mut feed: mpsc::Receiver<Change>) {
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
