//! A store for the controllers' tests that counts, per resource, the objects its reads give
//! out: the watch cache decodes each of them (its objects are kept encoded), so a count is what a
//! pass costs, and a test can say "a sync reads its own pods, not every pod".
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::server::auth::User;
use crate::server::kinds::NAMESPACES;
use crate::server::query::WriteOpts;
use crate::server::store::{
    EventsAfter, Indexed, ObjectStore, SqliteStore, StoreError, Watch, WatchFrom,
};
use crate::server::verbs::Api;

/// How many objects of one resource were read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reads {
    /// Whole objects (get, list, list_indexed, list_at).
    pub whole: usize,
    /// Objects cut to their metadata (list_metadata).
    pub metadata: usize,
}

/// A SQLite store that counts its reads.
pub struct Counting {
    pub inner: SqliteStore,
    reads: Mutex<HashMap<String, Reads>>,
}

impl Counting {
    pub fn open(dir: &tempfile::TempDir) -> Counting {
        Counting::with_history(dir, 1000)
    }

    /// A counting store under the verbs, with the namespace `default`, and a user for them.
    pub async fn with_api(dir: &tempfile::TempDir) -> (Arc<Counting>, Arc<Api>, User) {
        let store = Arc::new(Counting::open(dir));
        let api = Arc::new(Api::new(store.clone(), Default::default()));
        let user = User::internal("test");
        let ns = serde_json::json!({"metadata": {"name": "default"}});
        api.create(&user, &NAMESPACES, None, ns, WriteOpts::INTERNAL)
            .await
            .unwrap();
        (store, api, user)
    }

    /// A store whose watch history keeps `history` events.
    pub fn with_history(dir: &tempfile::TempDir, history: usize) -> Counting {
        Counting {
            inner: SqliteStore::open(&dir.path().join("s.db"), history).unwrap(),
            reads: Mutex::default(),
        }
    }

    fn add(&self, resource: &str, whole: usize, metadata: usize) {
        let mut reads = self.reads.lock().unwrap();
        let r = reads.entry(resource.to_string()).or_default();
        r.whole += whole;
        r.metadata += metadata;
    }

    /// The reads of `resource` since the last [`Counting::reset`].
    pub fn reads(&self, resource: &str) -> Reads {
        self.reads
            .lock()
            .unwrap()
            .get(resource)
            .copied()
            .unwrap_or_default()
    }

    /// The whole objects read of every resource.
    pub fn whole(&self) -> usize {
        self.reads.lock().unwrap().values().map(|r| r.whole).sum()
    }

    pub fn reset(&self) {
        self.reads.lock().unwrap().clear();
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    async fn get(&self, r: &str, ns: &str, n: &str) -> Result<Option<Arc<Value>>, StoreError> {
        let got = self.inner.get(r, ns, n).await?;
        self.add(r, usize::from(got.is_some()), 0);
        Ok(got)
    }
    async fn list(&self, r: &str, ns: Option<&str>) -> Result<(Vec<Arc<Value>>, u64), StoreError> {
        let got = self.inner.list(r, ns).await?;
        self.add(r, got.0.len(), 0);
        Ok(got)
    }
    async fn list_indexed(
        &self,
        r: &str,
        ns: Option<&str>,
        by: Indexed<'_>,
    ) -> Result<(Vec<Arc<Value>>, u64), StoreError> {
        let got = self.inner.list_indexed(r, ns, by).await?;
        self.add(r, got.0.len(), 0);
        Ok(got)
    }
    async fn list_metadata(
        &self,
        r: &str,
        ns: Option<&str>,
    ) -> Result<(Vec<Arc<Value>>, u64), StoreError> {
        let got = self.inner.list_metadata(r, ns).await?;
        self.add(r, 0, got.0.len());
        Ok(got)
    }
    async fn list_at(
        &self,
        r: &str,
        ns: Option<&str>,
        rv: u64,
    ) -> Result<Vec<Arc<Value>>, StoreError> {
        let got = self.inner.list_at(r, ns, rv).await?;
        self.add(r, got.len(), 0);
        Ok(got)
    }
    async fn create(&self, r: &str, ns: &str, n: &str, o: Value) -> Result<Arc<Value>, StoreError> {
        self.inner.create(r, ns, n, o).await
    }
    async fn update(
        &self,
        r: &str,
        ns: &str,
        n: &str,
        o: Value,
        rv: Option<u64>,
    ) -> Result<Arc<Value>, StoreError> {
        self.inner.update(r, ns, n, o, rv).await
    }
    async fn delete(
        &self,
        r: &str,
        ns: &str,
        n: &str,
        rv: Option<u64>,
    ) -> Result<Arc<Value>, StoreError> {
        self.inner.delete(r, ns, n, rv).await
    }
    async fn watch(
        &self,
        r: Option<&str>,
        ns: Option<&str>,
        from: WatchFrom,
    ) -> Result<Watch, StoreError> {
        self.inner.watch(r, ns, from).await
    }
    fn current_rv(&self) -> u64 {
        self.inner.current_rv()
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes()
    }
    fn changes_of(&self, r: &str) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes_of(r)
    }
    fn events_after(
        &self,
        rv: u64,
        r: &str,
        ns: Option<&str>,
        limit: usize,
    ) -> Result<EventsAfter, StoreError> {
        self.inner.events_after(rv, r, ns, limit)
    }
}
