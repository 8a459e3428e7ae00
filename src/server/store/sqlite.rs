//! The SQLite store: `DATA_DIR/state.db`, its high-water mark, encryption at rest on the way in
//! and out.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

use super::cache::{lock, History, ObjectMap};
use super::*;
use crate::server::encryption::{Identity, StorageKey, Transformer};


/// How far the resourceVersion jumps when the store opens behind the highest one it gave out
/// before (its file was restored from a backup), as `etcdutl snapshot restore --bump-revision
/// --mark-compacted` does for etcd: past every resourceVersion a client may hold, with the
/// history compacted there, so every watch resumed from before is told 410 and relists instead
/// of taking the restored objects for the ones it knew.
pub const RESTORE_BUMP: u64 = 1_000_000;

/// The highest resourceVersion given out is noted beside the database (`FILE.high-water`) at
/// open, at close and every this many writes: a crash loses at most this many, which
/// [`RESTORE_BUMP`] covers (a backup restored after a crash may then go unnoticed by the server,
/// not by the agents: see `agent::watch`).
const HIGH_WATER_EVERY: u64 = 1000;

/// Where the high-water mark of the store at `db` is kept: outside the database, so that a
/// restored database file does not bring its old mark back.
fn high_water_path(db: &Path) -> std::path::PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".high-water");
    db.with_file_name(name)
}

fn note_high_water(path: &Path, rv: u64) {
    // an in-memory database (tests) has no file to be restored over, nor a place for a mark
    if path.starts_with(":memory:") || path.as_os_str().to_string_lossy().starts_with(":memory:") {
        return;
    }
    if let Err(e) = std::fs::write(path, rv.to_string()) {
        tracing::warn!(path = %path.display(), error = %e, "could not note the highest resourceVersion");
    }
}

struct Inner {
    conn: Connection,
    rv: u64,
    objects: ObjectMap,
    /// What values pass through on their way into and out of SQLite (encryption at rest).
    transform: Arc<dyn Transformer>,
    /// See [`high_water_path`].
    high_water: std::path::PathBuf,
}

impl Drop for Inner {
    /// A store closed cleanly notes where it got to.
    fn drop(&mut self) {
        note_high_water(&self.high_water, self.rv);
    }
}

enum WriteMode {
    Create,
    Update(Option<u64>),
    Delete(Option<u64>),
}

/// The SQLite store: `DATA_DIR/state.db`, WAL mode, one table of objects and a counter.
pub struct SqliteStore {
    /// Taken before `history` when both are.
    inner: Arc<Mutex<Inner>>,
    /// Apart from `inner`, so that watchers reading it never wait on a SQLite transaction.
    history: Arc<Mutex<History>>,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    rv: Arc<watch::Sender<u64>>,
}


impl SqliteStore {
    /// Opens (or creates) the store; the watch history keeps at most `ring_size` events and
    /// [`WATCH_HISTORY_BYTES`].
    pub fn open(path: &Path, ring_size: usize) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, ring_size, WATCH_HISTORY_BYTES)
    }

    /// Opens the store with a history of at most `max_events` and `max_bytes`.
    pub fn open_with(
        path: &Path,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_transformed(path, max_events, max_bytes, Arc::new(Identity))
    }

    /// Opens the store with values passing through `transform` (encryption at rest): every
    /// stored value is read back through it now, so a key that is missing fails here.
    pub fn open_transformed(
        path: &Path,
        max_events: usize,
        max_bytes: usize,
        transform: Arc<dyn Transformer>,
    ) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (
                resource TEXT NOT NULL,
                namespace TEXT NOT NULL,
                name TEXT NOT NULL,
                resource_version INTEGER NOT NULL,
                json TEXT NOT NULL,
                PRIMARY KEY (resource, namespace, name)
            );
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            INSERT OR IGNORE INTO meta (key, value) VALUES ('resource_version', 0);",
        )?;
        let rv: u64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'resource_version'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .unwrap_or(0)
            .max(0) as u64;
        let high_water = high_water_path(path);
        let mark: Option<u64> = std::fs::read_to_string(&high_water)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        let rv = match mark {
            Some(mark) if rv < mark => {
                let bumped = mark + RESTORE_BUMP;
                tracing::warn!(
                    stored = rv,
                    given_out = mark,
                    now = bumped,
                    "the store is behind the resourceVersions it gave out (restored from a backup?): resourceVersions jump ahead and watches from before are told 410"
                );
                conn.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'resource_version'",
                    params![bumped as i64],
                )?;
                bumped
            }
            _ => rv,
        };
        note_high_water(&high_water, rv);
        let mut objects: ObjectMap = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT resource, namespace, name, json FROM objects")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            for row in rows {
                let (resource, namespace, name, text) = row?;
                let key = StorageKey {
                    resource: &resource,
                    namespace: &namespace,
                    name: &name,
                };
                let value: Value =
                    serde_json::from_str(&transform.transform_from_storage(key, text)?)?;
                objects
                    .entry(resource)
                    .or_default()
                    .insert((namespace, name), Arc::new(value));
            }
        }
        let (tx, _) = broadcast::channel(max_events.max(16));
        Ok(SqliteStore {
            inner: Arc::new(Mutex::new(Inner {
                conn,
                rv,
                objects,
                high_water,
                transform,
            })),
            history: Arc::new(Mutex::new(History::new(rv, max_events, max_bytes))),
            tx,
            rv: Arc::new(watch::channel(rv).0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    async fn write(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        obj: Option<Value>,
        mode: WriteMode,
    ) -> Result<Arc<Value>, StoreError> {
        let inner = self.inner.clone();
        let history = self.history.clone();
        let tx = self.tx.clone();
        let rv_cell = self.rv.clone();
        let (resource, namespace, name) = (
            resource.to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&inner);
            let result = write_locked(
                &mut guard, &history, &tx, &resource, &namespace, &name, obj, mode,
            );
            let rv = guard.rv;
            drop(guard);
            rv_cell.send_if_modified(|cur| std::mem::replace(cur, rv) != rv);
            result
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

#[allow(clippy::too_many_arguments)]
fn write_locked(
    inner: &mut Inner,
    history: &Mutex<History>,
    tx: &broadcast::Sender<Arc<WatchEvent>>,
    resource: &str,
    namespace: &str,
    name: &str,
    obj: Option<Value>,
    mode: WriteMode,
) -> Result<Arc<Value>, StoreError> {
    let key = (namespace.to_string(), name.to_string());
    let existing = inner
        .objects
        .get(resource)
        .and_then(|m| m.get(&key))
        .cloned();
    let not_found = || StoreError::NotFound {
        resource: resource.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let check = |expected: Option<u64>, current: &Value| match expected {
        Some(expected) if expected != object_rv(current) => Err(StoreError::Conflict {
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            current: object_rv(current),
            expected,
        }),
        _ => Ok(()),
    };
    let event_type = match (&mode, &existing) {
        (WriteMode::Create, Some(_)) => {
            return Err(StoreError::AlreadyExists {
                resource: resource.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
        }
        (WriteMode::Create, None) => EventType::Added,
        (WriteMode::Update(_) | WriteMode::Delete(_), None) => return Err(not_found()),
        (WriteMode::Update(expected), Some(cur)) => {
            check(*expected, cur)?;
            EventType::Modified
        }
        (WriteMode::Delete(expected), Some(cur)) => {
            check(*expected, cur)?;
            EventType::Deleted
        }
    };
    let rv = inner.rv + 1;
    let mut stored = match (obj, &existing) {
        (Some(v), _) => v,
        (None, Some(cur)) => (**cur).clone(),
        (None, None) => return Err(not_found()),
    };
    if let Some(meta) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    } else if let Some(o) = stored.as_object_mut() {
        o.insert(
            "metadata".into(),
            json!({"resourceVersion": rv.to_string()}),
        );
    }
    let text = match event_type {
        EventType::Deleted => None,
        _ => Some(serde_json::to_string(&stored)?),
    };
    if let Some(size) = text.as_ref().map(String::len) {
        if size > MAX_OBJECT_BYTES {
            return Err(StoreError::TooLarge {
                size,
                limit: MAX_OBJECT_BYTES,
            });
        }
    }
    let storage_key = StorageKey {
        resource,
        namespace,
        name,
    };
    let text = text
        .map(|t| inner.transform.transform_to_storage(storage_key, t))
        .transpose()?;
    let txn = inner.conn.transaction()?;
    if let Some(text) = text {
        txn.execute(
            "INSERT INTO objects (resource, namespace, name, resource_version, json)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (resource, namespace, name)
             DO UPDATE SET resource_version = excluded.resource_version, json = excluded.json",
            params![resource, namespace, name, rv as i64, text],
        )?;
    } else {
        txn.execute(
            "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
            params![resource, namespace, name],
        )?;
    }
    txn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'resource_version'",
        params![rv as i64],
    )?;
    txn.commit()?;
    inner.rv = rv;
    if rv.is_multiple_of(HIGH_WATER_EVERY) {
        note_high_water(&inner.high_water, rv);
    }
    let stored = Arc::new(stored);
    let map = inner.objects.entry(resource.to_string()).or_default();
    if event_type == EventType::Deleted {
        map.remove(&key);
    } else {
        map.insert(key, stored.clone());
    }
    let event = Arc::new(WatchEvent::new(
        event_type,
        rv,
        resource,
        namespace,
        name,
        stored.clone(),
        existing,
    ));
    lock(history).push(event.clone());
    // No receivers is fine.
    let _ = tx.send(event);
    Ok(stored)
}

#[async_trait::async_trait]
impl ObjectStore for SqliteStore {
    async fn get(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Value>>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .objects
            .get(resource)
            .and_then(|m| m.get(&(namespace.to_string(), name.to_string())))
            .cloned())
    }

    async fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<Arc<Value>>, u64), StoreError> {
        let inner = self.lock();
        let items = match inner.objects.get(resource) {
            None => Vec::new(),
            Some(m) => match namespace {
                None => m.values().cloned().collect(),
                Some(ns) => m
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
            },
        };
        Ok((items, inner.rv))
    }

    /// The current objects with the history's changes after `rv` undone, newest first: each
    /// change puts back the object before it (or removes one it added).
    async fn list_at(
        &self,
        resource: &str,
        namespace: Option<&str>,
        rv: u64,
    ) -> Result<Vec<Arc<Value>>, StoreError> {
        let inner = self.lock();
        let history = lock(&self.history);
        history.check(rv)?;
        let mut items: BTreeMap<(String, String), Arc<Value>> = inner
            .objects
            .get(resource)
            .map(|m| {
                m.iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|x| x == ns))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let changes = history.events.range(history.first_after(rv)..).rev();
        for e in changes
            .filter(|e| e.resource == resource && namespace.is_none_or(|ns| ns == e.namespace))
        {
            let key = (e.namespace.clone(), e.name.clone());
            match &e.prev {
                Some(before) => items.insert(key, before.clone()),
                None => items.remove(&key),
            };
        }
        Ok(items.into_values().collect())
    }

    async fn create(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        obj: Value,
    ) -> Result<Arc<Value>, StoreError> {
        self.write(resource, namespace, name, Some(obj), WriteMode::Create)
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
        self.write(
            resource,
            namespace,
            name,
            Some(obj),
            WriteMode::Update(expected_rv),
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
        self.write(
            resource,
            namespace,
            name,
            None,
            WriteMode::Delete(expected_rv),
        )
        .await
    }

    async fn watch(
        &self,
        resource: Option<&str>,
        namespace: Option<&str>,
        from: WatchFrom,
    ) -> Result<Watch, StoreError> {
        let inner = self.lock();
        let history = lock(&self.history);
        let matches = |r: &str, ns: &str| {
            resource.is_none_or(|x| x == r) && namespace.is_none_or(|x| x == ns)
        };
        let initial = match from {
            WatchFrom::Current { initial: false } => Vec::new(),
            WatchFrom::Current { initial: true } => {
                let mut out = Vec::new();
                for (r, m) in &inner.objects {
                    if resource.is_some_and(|x| x != r) {
                        continue;
                    }
                    for ((ns, name), obj) in m {
                        if matches(r, ns) {
                            out.push(Arc::new(WatchEvent::new(
                                EventType::Added,
                                object_rv(obj),
                                r,
                                ns,
                                name,
                                obj.clone(),
                                None,
                            )));
                        }
                    }
                }
                out
            }
            WatchFrom::After(rv) => {
                history.check(rv)?;
                history
                    .events
                    .range(history.first_after(rv)..)
                    .filter(|e| matches(&e.resource, &e.namespace))
                    .cloned()
                    .collect()
            }
        };
        Ok(Watch {
            initial,
            rx: self.tx.subscribe(),
            rv: inner.rv,
        })
    }

    fn current_rv(&self) -> u64 {
        *self.rv.borrow()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.rv.subscribe()
    }

    fn events_after(
        &self,
        rv: u64,
        resource: &str,
        namespace: Option<&str>,
        limit: usize,
    ) -> Result<EventsAfter, StoreError> {
        let history = lock(&self.history);
        history.check(rv)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str) -> Value {
        json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": name}})
    }

    #[tokio::test]
    async fn writes_are_versioned_watchable_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path, 4).unwrap();
        let a = store.create("nodes", "", "a", obj("a")).await.unwrap();
        assert_eq!(object_rv(&a), 1);
        assert!(matches!(
            store.create("nodes", "", "a", obj("a")).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        assert!(matches!(
            store.update("nodes", "", "a", obj("a"), Some(7)).await,
            Err(StoreError::Conflict { .. })
        ));
        let a2 = store
            .update("nodes", "", "a", obj("a"), Some(1))
            .await
            .unwrap();
        assert_eq!(object_rv(&a2), 2);
        store
            .create("pods", "default", "p", obj("p"))
            .await
            .unwrap();
        let w = store
            .watch(Some("nodes"), None, WatchFrom::After(0))
            .await
            .unwrap();
        let types: Vec<_> = w.initial.iter().map(|e| (e.event_type, e.rv)).collect();
        assert_eq!(types, vec![(EventType::Added, 1), (EventType::Modified, 2)]);
        for i in 0..5 {
            store
                .create("nodes", "", &format!("n{i}"), obj("n"))
                .await
                .unwrap();
        }
        // The ring keeps 4 events: resuming from rv 1 is too old now.
        assert!(matches!(
            store.watch(Some("nodes"), None, WatchFrom::After(1)).await,
            Err(StoreError::Expired { .. })
        ));
        let deleted = store.delete("nodes", "", "a", None).await.unwrap();
        assert_eq!(object_rv(&deleted), 9);
        drop(store);
        let store = SqliteStore::open(&path, 4).unwrap();
        assert_eq!(store.current_rv(), 9);
        assert!(store.get("nodes", "", "a").await.unwrap().is_none());
        let (nodes, rv) = store.list("nodes", None).await.unwrap();
        assert_eq!((nodes.len(), rv), (5, 9));
        let (pods, _) = store.list("pods", Some("default")).await.unwrap();
        assert_eq!(pods.len(), 1);
        let n = store.create("nodes", "", "b", obj("b")).await.unwrap();
        assert_eq!(object_rv(&n), 10);
        let w = store
            .watch(Some("nodes"), None, WatchFrom::Current { initial: true })
            .await
            .unwrap();
        assert_eq!(w.initial.len(), 6);
    }

    fn big(name: &str, bytes: usize) -> Value {
        json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": name},
            "spec": {"podCIDR": "x".repeat(bytes)}})
    }

    #[tokio::test]
    async fn an_object_over_etcds_limit_is_refused_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), 100).unwrap();
        store.create("nodes", "", "a", obj("a")).await.unwrap();
        let e = store
            .create("nodes", "", "b", big("b", MAX_OBJECT_BYTES))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::TooLarge {
                    limit: MAX_OBJECT_BYTES,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "etcdserver: request is too large");
        let e = store
            .update("nodes", "", "a", big("a", MAX_OBJECT_BYTES), None)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::TooLarge { .. }), "{e:?}");
        assert_eq!(store.current_rv(), 1);
        assert!(store.get("nodes", "", "b").await.unwrap().is_none());
        // just under the limit is stored
        store
            .create("nodes", "", "c", big("c", MAX_OBJECT_BYTES - 200))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_history_is_bounded_in_bytes_and_read_from_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        // 100 events, but only about 3 events of 100 KB
        let store = SqliteStore::open_with(&dir.path().join("s.db"), 100, 700_000).unwrap();
        let mut changes = store.changes();
        store
            .create("nodes", "", "small", obj("small"))
            .await
            .unwrap();
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), 1);
        let found = store.events_after(0, "nodes", None, 10).unwrap();
        assert_eq!((found.events.len(), found.through), (1, 1));
        for i in 0..5 {
            store
                .create("nodes", "", &format!("n{i}"), big("n", 100_000))
                .await
                .unwrap();
        }
        store.create("pods", "ns", "p", obj("p")).await.unwrap();
        let oldest = {
            let history = lock(&store.history);
            assert!(history.bytes <= 700_000, "{}", history.bytes);
            assert_eq!(history.events.len(), 4, "three big nodes and the pod");
            history.complete_after
        };
        assert_eq!(oldest, 3);
        assert!(matches!(
            store.events_after(2, "nodes", None, 10),
            Err(StoreError::Expired {
                requested: 2,
                oldest: 3
            })
        ));
        assert!(matches!(
            store.watch(Some("nodes"), None, WatchFrom::After(1)).await,
            Err(StoreError::Expired { .. })
        ));
        let found = store.events_after(3, "nodes", None, 10).unwrap();
        let rvs: Vec<u64> = found.events.iter().map(|e| e.rv).collect();
        assert_eq!((rvs, found.through), (vec![4, 5, 6], 7));
        // a limit looks at that many events, matching or not
        let found = store.events_after(3, "pods", Some("ns"), 2).unwrap();
        assert_eq!((found.events.len(), found.through), (0, 5));
        let found = store.events_after(5, "pods", Some("ns"), 2).unwrap();
        assert_eq!((found.events.len(), found.through), (1, 7));
        let found = store.events_after(7, "pods", None, 2).unwrap();
        assert_eq!((found.events.len(), found.through), (0, 7));
    }

    fn names(items: &[Arc<Value>]) -> Vec<String> {
        items
            .iter()
            .map(|o| {
                format!(
                    "{}@{}",
                    o["metadata"]["name"].as_str().unwrap(),
                    object_rv(o)
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_list_at_a_past_resource_version_undoes_the_changes_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), 6).unwrap();
        for n in ["a", "b", "c"] {
            store.create("nodes", "", n, obj(n)).await.unwrap();
        }
        store.create("pods", "ns", "p", obj("p")).await.unwrap();
        // at 4: a@1 b@2 c@3; then b changes, c goes, d comes
        store
            .update("nodes", "", "b", obj("b"), None)
            .await
            .unwrap();
        store.delete("nodes", "", "c", None).await.unwrap();
        store.create("nodes", "", "d", obj("d")).await.unwrap();
        let at4 = store.list_at("nodes", None, 4).await.unwrap();
        assert_eq!(names(&at4), ["a@1", "b@2", "c@3"]);
        let now = store.list_at("nodes", None, 7).await.unwrap();
        assert_eq!(names(&now), ["a@1", "b@5", "d@7"]);
        assert_eq!(
            names(&store.list("nodes", None).await.unwrap().0),
            names(&now)
        );
        let pods = store.list_at("pods", Some("ns"), 3).await.unwrap();
        assert!(pods.is_empty(), "p came at 4");
        assert!(store
            .list_at("pods", Some("other"), 7)
            .await
            .unwrap()
            .is_empty());
        // the history keeps 6 events: 1 is compacted away
        store.create("nodes", "", "e", obj("e")).await.unwrap();
        assert!(matches!(
            store.list_at("nodes", None, 1).await,
            Err(StoreError::Expired {
                requested: 1,
                oldest: 2
            })
        ));
        let at2 = store.list_at("nodes", None, 2).await.unwrap();
        assert_eq!(names(&at2), ["a@1", "b@2"]);
    }

    /// A database file put back from a backup is behind the resourceVersions the store gave
    /// out: they jump ahead, and a watch or list from before is 410.
    #[tokio::test]
    async fn a_restored_file_bumps_the_resource_version_past_what_was_given_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let backup = dir.path().join("backup.db");
        let store = SqliteStore::open(&path, 100).unwrap();
        store.create("nodes", "", "a", obj("a")).await.unwrap();
        drop(store);
        std::fs::copy(&path, &backup).unwrap();
        let store = SqliteStore::open(&path, 100).unwrap();
        for n in ["b", "c"] {
            store.create("nodes", "", n, obj(n)).await.unwrap();
        }
        drop(store);
        // a plain reopen changes nothing
        let store = SqliteStore::open(&path, 100).unwrap();
        assert_eq!(store.current_rv(), 3);
        drop(store);
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.path().join(format!("state.db{suffix}")));
        }
        std::fs::copy(&backup, &path).unwrap();
        let store = SqliteStore::open(&path, 100).unwrap();
        let bumped = 3 + RESTORE_BUMP;
        assert_eq!(store.current_rv(), bumped);
        let (nodes, rv) = store.list("nodes", None).await.unwrap();
        assert_eq!((nodes.len(), rv), (1, bumped));
        assert!(matches!(
            store.watch(Some("nodes"), None, WatchFrom::After(3)).await,
            Err(StoreError::Expired { .. })
        ));
        assert!(matches!(
            store.events_after(1, "nodes", None, 10),
            Err(StoreError::Expired { .. })
        ));
        let d = store.create("nodes", "", "d", obj("d")).await.unwrap();
        assert_eq!(object_rv(&d), bumped + 1);
        drop(store);
        // and it stays bumped
        assert_eq!(
            SqliteStore::open(&path, 100).unwrap().current_rv(),
            bumped + 1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_resource_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("s.db"), 100).unwrap());
        let within = std::time::Duration::from_secs(3);
        assert_eq!(wait_for_rv(&*store, 0, within).await, Ok(()));
        let start = tokio::time::Instant::now();
        assert_eq!(wait_for_rv(&*store, 2, within).await, Err(0));
        assert_eq!(start.elapsed(), within);
        let writer = store.clone();
        let waiter = tokio::spawn(async move { wait_for_rv(&*writer, 2, within).await });
        store.create("nodes", "", "a", obj("a")).await.unwrap();
        store.create("nodes", "", "b", obj("b")).await.unwrap();
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }
}
