//! Object storage behind the `ObjectStore` trait (SQLite now, etcd later) and the watch fan-out.
//!
//! Every write takes the next value of one global, persisted resourceVersion counter, is stored in
//! one SQLite transaction (object row and counter together: never half-stored) and then appended
//! to an in-memory ring of recent events and broadcast to the watchers. Reads are served from an
//! in-memory copy of all objects, which is loaded from SQLite at start.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use tokio::sync::broadcast;

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
    #[error("sqlite store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored object is not valid json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("store worker failed: {0}")]
    Worker(String),
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
/// encoded once for all of them.
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
        let mut line =
            serde_json::to_vec(&json!({"type": event_type.as_str(), "object": &*object}))
                .unwrap_or_default();
        line.push(b'\n');
        WatchEvent {
            rv,
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            event_type,
            object,
            prev,
            line: Bytes::from(line),
        }
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
    fn current_rv(&self) -> u64;
}

type ObjectMap = HashMap<String, BTreeMap<(String, String), Arc<Value>>>;

struct Inner {
    conn: Connection,
    rv: u64,
    objects: ObjectMap,
    ring: VecDeque<Arc<WatchEvent>>,
    /// Every event with rv > complete_after is in the ring.
    complete_after: u64,
    ring_size: usize,
}

enum WriteMode {
    Create,
    Update(Option<u64>),
    Delete(Option<u64>),
}

/// The SQLite store: `DATA_DIR/state.db`, WAL mode, one table of objects and a counter.
pub struct SqliteStore {
    inner: Arc<Mutex<Inner>>,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    rv: Arc<std::sync::atomic::AtomicU64>,
}

impl SqliteStore {
    pub fn open(path: &Path, ring_size: usize) -> Result<SqliteStore, StoreError> {
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
                let value: Value = serde_json::from_str(&text)?;
                objects
                    .entry(resource)
                    .or_default()
                    .insert((namespace, name), Arc::new(value));
            }
        }
        let (tx, _) = broadcast::channel(ring_size.max(16));
        Ok(SqliteStore {
            inner: Arc::new(Mutex::new(Inner {
                conn,
                rv,
                objects,
                ring: VecDeque::with_capacity(ring_size),
                complete_after: rv,
                ring_size: ring_size.max(1),
            })),
            tx,
            rv: Arc::new(std::sync::atomic::AtomicU64::new(rv)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave half-written state (SQLite rolls back an
        // uncommitted transaction), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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
        let tx = self.tx.clone();
        let rv_cell = self.rv.clone();
        let (resource, namespace, name) = (
            resource.to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock().unwrap_or_else(|e| e.into_inner());
            let result = write_locked(&mut guard, &tx, &resource, &namespace, &name, obj, mode);
            rv_cell.store(guard.rv, std::sync::atomic::Ordering::SeqCst);
            result
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

fn write_locked(
    inner: &mut Inner,
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
    let txn = inner.conn.transaction()?;
    if event_type == EventType::Deleted {
        txn.execute(
            "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
            params![resource, namespace, name],
        )?;
    } else {
        let text = serde_json::to_string(&stored)?;
        txn.execute(
            "INSERT INTO objects (resource, namespace, name, resource_version, json)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (resource, namespace, name)
             DO UPDATE SET resource_version = excluded.resource_version, json = excluded.json",
            params![resource, namespace, name, rv as i64, text],
        )?;
    }
    txn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'resource_version'",
        params![rv as i64],
    )?;
    txn.commit()?;
    inner.rv = rv;
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
    inner.ring.push_back(event.clone());
    while inner.ring.len() > inner.ring_size {
        if let Some(old) = inner.ring.pop_front() {
            inner.complete_after = old.rv;
        }
    }
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
                if rv < inner.complete_after {
                    return Err(StoreError::Expired {
                        requested: rv,
                        oldest: inner.complete_after,
                    });
                }
                inner
                    .ring
                    .iter()
                    .filter(|e| e.rv > rv && matches(&e.resource, &e.namespace))
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
        self.rv.load(std::sync::atomic::Ordering::SeqCst)
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
}
