//! The turns of the writes to a backend only this process writes, and writes that run to the
//! end.
use std::future::Future;
use std::sync::Arc;

use crate::server::store::{Key, StoreError};

/// Whether a write is a heartbeat: a node's Lease (`kube-node-lease`) or a leader election's
/// (`kube-system`), what kube-apiserver's API Priority and Fairness puts in the `node-high` and
/// `leader-election` priority levels (its `system-nodes` and `system-leader-election` flow
/// schemas) so that a flood of other writes cannot starve them: a Lease not renewed in time
/// makes a node NotReady or a leader step down. (Told by the object, not by the user as
/// upstream's flow schemas do: only nodes and the server itself may write those Leases.)
pub(in crate::server::store) fn is_heartbeat(key: &Key) -> bool {
    key.resource == "leases.coordination.k8s.io"
        && matches!(key.namespace.as_str(), "kube-node-lease" | "kube-system")
}

/// The turns of the writes to a backend only this process writes: one at a time, in order of
/// arrival within each lane. Heartbeats ([`is_heartbeat`]) wait for the store only; every other
/// write first waits for the client lane, so at most one of them is ever queued for the store: a
/// heartbeat waits for the write being stored, at most one other and the heartbeats before it,
/// however many client writes are waiting (both locks are first come, first served).
#[derive(Default)]
pub(super) struct Turns {
    clients: Arc<tokio::sync::Mutex<()>>,
    store: Arc<tokio::sync::Mutex<()>>,
}

/// A write's turn: held while it is stored and applied to the cache (owned, so the write's own
/// task holds it when its caller has gone).
pub(super) struct Turn {
    _store: tokio::sync::OwnedMutexGuard<()>,
    _lane: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Turns {
    pub(super) async fn take(&self, key: &Key) -> Turn {
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
pub(super) async fn to_the_end<T: Send + 'static>(
    write: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(write)
        .await
        .map_err(|e| StoreError::Worker(format!("a store write's task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::{json, Value};

    use super::*;
    use crate::server::store::cache::{lock, Store};
    use crate::server::store::{object_rv, set_rv, Backend, Expect, ObjectStore};

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
}
