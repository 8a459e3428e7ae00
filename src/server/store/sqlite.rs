//! The SQLite backend: `DATA_DIR/state.db` (WAL mode, one table of objects and a counter), its
//! high-water mark, encryption at rest on the way in and out.
//!
//! Every write takes the next value of one global, persisted resourceVersion counter and is
//! stored in one SQLite transaction (object row and counter together: never half-stored). Only
//! this process writes the file, so the watch cache ([`Store`]) is fed by the writes themselves.
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::cache::{lock, Store};
use super::*;
use crate::server::encryption::{Identity, Transformer};

/// The store over SQLite.
pub type SqliteStore = Store;

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

struct Db {
    conn: Connection,
    rv: u64,
    /// What values pass through on their way into and out of SQLite (encryption at rest).
    transform: Arc<dyn Transformer>,
    /// See [`high_water_path`].
    high_water: std::path::PathBuf,
}

impl Drop for Db {
    /// A store closed cleanly notes where it got to.
    fn drop(&mut self) {
        note_high_water(&self.high_water, self.rv);
    }
}

impl Db {
    /// The resourceVersion of the object at `key`, if there is one.
    fn current(&self, key: &Key) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT resource_version FROM objects
                 WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
                params![key.resource, key.namespace, key.name],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|rv| rv.max(0) as u64))
    }

    /// One transaction: the object's row (`text` None: removed) and the counter, at the next
    /// resourceVersion, which it returns.
    fn commit(&mut self, key: &Key, text: Option<String>) -> Result<u64, StoreError> {
        let rv = self.rv + 1;
        let txn = self.conn.transaction()?;
        if let Some(text) = text {
            txn.execute(
                "INSERT INTO objects (resource, namespace, name, resource_version, json)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (resource, namespace, name)
                 DO UPDATE SET resource_version = excluded.resource_version, json = excluded.json",
                params![key.resource, key.namespace, key.name, rv as i64, text],
            )?;
        } else {
            txn.execute(
                "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
                params![key.resource, key.namespace, key.name],
            )?;
        }
        txn.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'resource_version'",
            params![rv as i64],
        )?;
        txn.commit()?;
        self.rv = rv;
        if rv.is_multiple_of(HIGH_WATER_EVERY) {
            note_high_water(&self.high_water, rv);
        }
        Ok(rv)
    }

    fn put(&mut self, key: &Key, mut value: Value, expect: Expect) -> Result<Value, StoreError> {
        expect.check(key, self.current(key)?)?;
        set_rv(&mut value, self.rv + 1);
        let text = encode(&*self.transform, key, &value)?;
        self.commit(key, Some(text))?;
        Ok(value)
    }

    fn delete(&mut self, key: &Key, expected_rv: Option<u64>) -> Result<u64, StoreError> {
        Expect::Present(expected_rv).check(key, self.current(key)?)?;
        self.commit(key, None)
    }
}

/// The SQLite backend of a [`Store`].
pub struct SqliteBackend {
    db: Arc<Mutex<Db>>,
}

impl SqliteBackend {
    /// Runs `f` on the database on a blocking thread.
    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&db)))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    async fn put(&self, key: &Key, value: Value, expect: Expect) -> Result<Value, StoreError> {
        let key = key.clone();
        self.with_db(move |db| db.put(&key, value, expect)).await
    }

    /// The object as last stored is the cache's (it saw every write).
    async fn delete(
        &self,
        key: &Key,
        expected_rv: Option<u64>,
    ) -> Result<(u64, Option<Value>), StoreError> {
        let key = key.clone();
        let rv = self.with_db(move |db| db.delete(&key, expected_rv)).await?;
        Ok((rv, None))
    }
}

impl Store {
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
        let mut objects = Vec::new();
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
                let key = Key {
                    resource,
                    namespace,
                    name,
                };
                let value = decode(&*transform, &key, text)?;
                objects.push((key, value));
            }
        }
        let backend = SqliteBackend {
            db: Arc::new(Mutex::new(Db {
                conn,
                rv,
                transform,
                high_water,
            })),
        };
        Ok(Store::new(
            Arc::new(backend),
            objects,
            rv,
            max_events,
            max_bytes,
        ))
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
            let history = lock(&store.state.history);
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
