//! The watch cache: every object in memory, the bounded history of recent events, the watch
//! fan-out and the snapshots of `list_at`, fed by a [`Backend`].
//!
//! A backend only this process writes (SQLite) is fed by the writes themselves: they are
//! serialised here, so that events reach the history in resourceVersion order. A backend others
//! write too (etcd) brings every change, ours included, through its [`Backend::feed`]; a write
//! returns once the feed has brought it, so that a read after it sees it.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::server::store::{
    indexed, object_rv, set_rv, Backend, EventType, EventsAfter, Expect, Indexed, Key, ObjectStore,
    StoreError, Watch, WatchEvent, WatchFrom,
};

mod history;
mod objects;
mod state;
mod turns;

use history::*;
use objects::*;
use state::*;
use turns::*;

/// How long a write to a shared backend waits for its feed to bring the write back before it
/// returns anyway (the object is stored; a read right after may not see it yet).
const FEED_WAIT: Duration = Duration::from_secs(10);

/// (the maps are updated after the backend's commit), so a poisoned lock is still usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    /// A watch of `resources` (None: every resource) in `namespace` (None: all); its live feed
    /// is sent those resources' events only.
    fn watch_of(
        &self,
        resources: Option<&[&str]>,
        namespace: Option<&str>,
        from: WatchFrom,
    ) -> Result<Watch, StoreError> {
        let objects = lock(&self.state.objects);
        let history = lock(&self.state.history);
        let matches = |r: &str, ns: &str| {
            resources.is_none_or(|x| x.contains(&r)) && namespace.is_none_or(|x| x == ns)
        };
        // the current objects, decoded (when they must be) once the locks are let go
        let mut current = Vec::new();
        let initial = match from {
            WatchFrom::Current { initial: false } => Vec::new(),
            WatchFrom::Current { initial: true } => {
                for (r, m) in &objects.map {
                    if resources.is_some_and(|x| !x.contains(&r.as_str())) {
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
                match resources {
                    Some(rs) => {
                        for r in rs {
                            history.check_resource(rv, r)?;
                        }
                    }
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
            rx: self.state.tx.subscribe(resources),
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
        let state = Arc::new(State {
            objects: Mutex::new(Objects::new(map, rv)),
            history: Mutex::new(History::new(rv, max_events, max_bytes)),
            tx: Fanout::new(max_events.max(16)),
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

    async fn count(&self, resource: &str) -> Result<usize, StoreError> {
        let objects = lock(&self.state.objects);
        Ok(objects.map.get(resource).map_or(0, |m| m.len()))
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
        self.watch_of(resource.as_ref().map(std::slice::from_ref), namespace, from)
    }

    async fn watch_kinds(&self, resources: &[&str], from: WatchFrom) -> Result<Watch, StoreError> {
        self.watch_of(Some(resources), None, from)
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
mod tests;
