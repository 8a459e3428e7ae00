//! The Node authorizer's graph (plugin/pkg/auth/authorizer/node): which node may read which
//! Secret, ConfigMap and ServiceAccount, because a pod bound to it uses them
//! (`core::podrefs`). An index over the bound pods, kept current from the store's pod events as
//! they come ([`NodeGraph::populate`], upstream's `graph_populator`: edges added and removed per
//! pod event) and brought up to date on each question from the event history, so that a
//! question costs the pod changes since the last event applied, never a scan of the store. It
//! is built from a list once, and again only when the pod events it has not applied left the
//! history (each question long after the last one decoded every pod before the populator).
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::Value;

use crate::core::podrefs;
use crate::server::kinds::PODS;
use crate::server::store::{EventType, ObjectStore, StoreError};

/// The kinds of objects a node reaches through its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    Secret,
    ConfigMap,
    ServiceAccount,
}

impl Via {
    /// The kind of a core/v1 resource (plural), if the graph knows it.
    pub fn of(plural: &str) -> Option<Via> {
        match plural {
            "secrets" => Some(Via::Secret),
            "configmaps" => Some(Via::ConfigMap),
            "serviceaccounts" => Some(Via::ServiceAccount),
            _ => None,
        }
    }
}

type Target = (Via, String, String);

#[derive(Default)]
struct Index {
    /// Whether `through` is meaningful (a list was read).
    built: bool,
    /// The store's events are applied through this resourceVersion.
    through: u64,
    /// Each bound pod (namespace, name): its node and what it refers to.
    pods: HashMap<(String, String), (String, Vec<Target>)>,
    /// Each object: the nodes that reach it, with the number of pods through which.
    edges: HashMap<Target, HashMap<String, usize>>,
}

/// The index, shared by the requests.
#[derive(Default)]
pub struct NodeGraph {
    index: Mutex<Index>,
}

/// The node and targets of a stored pod (None: not bound).
fn pod_edges(pod: &Value) -> Option<(String, Vec<Target>)> {
    let node = pod
        .pointer("/spec/nodeName")?
        .as_str()
        .filter(|n| !n.is_empty())?;
    let ns = pod.pointer("/metadata/namespace")?.as_str()?;
    let spec: PodSpec = serde_json::from_value(pod.get("spec")?.clone()).ok()?;
    let refs = podrefs::references(&spec);
    let mut targets = vec![(Via::ServiceAccount, ns.to_string(), refs.service_account)];
    targets.extend(
        refs.secrets
            .into_iter()
            .map(|n| (Via::Secret, ns.to_string(), n)),
    );
    targets.extend(
        refs.config_maps
            .into_iter()
            .map(|n| (Via::ConfigMap, ns.to_string(), n)),
    );
    Some((node.to_string(), targets))
}

impl Index {
    fn remove(&mut self, key: &(String, String)) {
        let Some((node, targets)) = self.pods.remove(key) else {
            return;
        };
        for t in targets {
            if let Some(nodes) = self.edges.get_mut(&t) {
                if let Some(n) = nodes.get_mut(&node) {
                    *n -= 1;
                    if *n == 0 {
                        nodes.remove(&node);
                    }
                }
                if nodes.is_empty() {
                    self.edges.remove(&t);
                }
            }
        }
    }

    fn set(&mut self, key: (String, String), pod: Option<&Value>) {
        self.remove(&key);
        let Some((node, targets)) = pod.and_then(pod_edges) else {
            return;
        };
        for t in &targets {
            *self
                .edges
                .entry(t.clone())
                .or_default()
                .entry(node.clone())
                .or_default() += 1;
        }
        self.pods.insert(key, (node, targets));
    }

    fn reaches(&self, node: &str, via: Via, ns: &str, name: &str) -> bool {
        self.edges
            .get(&(via, ns.to_string(), name.to_string()))
            .is_some_and(|nodes| nodes.contains_key(node))
    }
}

fn key_of(pod: &Value) -> (String, String) {
    let s = |p: &str| {
        pod.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

impl NodeGraph {
    /// Whether a pod bound to `node` uses the object `name` (of `via`) in `ns`.
    pub async fn reaches(
        &self,
        store: &dyn ObjectStore,
        node: &str,
        via: Via,
        ns: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let index = self.up_to_date(store).await?;
        Ok(index.reaches(node, via, ns, name))
    }

    /// Applies the store's pod events as they come, until the store goes: a question then
    /// finds the index current (or nearly), however long after the last one it comes.
    pub async fn populate(self: Arc<Self>, store: Weak<dyn ObjectStore>) {
        let Some(mut changes) = store.upgrade().map(|s| s.changes_of(&PODS.key())) else {
            return;
        };
        loop {
            let Some(s) = store.upgrade() else {
                return;
            };
            if let Err(e) = self.up_to_date(&*s).await {
                tracing::warn!(error = %e, "the node authorizer's graph cannot read the pods");
            }
            drop(s);
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// The index with every pod event of `store` applied: from the history, or from a list
    /// when it was never built or the history lost events it had not applied.
    async fn up_to_date(
        &self,
        store: &dyn ObjectStore,
    ) -> Result<MutexGuard<'_, Index>, StoreError> {
        loop {
            let built = {
                let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
                if index.built && catch_up(&mut index, store)? {
                    return Ok(index);
                }
                index.built
            };
            // (re)build from a list, outside the lock
            let (pods, rv) = store.list(&PODS.key(), None).await?;
            let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            if built && index.built && index.through >= rv {
                continue;
            }
            *index = Index::default();
            for pod in &pods {
                index.set(key_of(pod), Some(pod));
            }
            index.built = true;
            index.through = rv;
        }
    }
}

/// Applies the pod events after `index.through`; false when the history lost some of them.
fn catch_up(index: &mut Index, store: &dyn ObjectStore) -> Result<bool, StoreError> {
    let target = store.current_rv();
    while index.through < target {
        let after = match store.events_after(index.through, &PODS.key(), None, 10_000) {
            Ok(a) => a,
            Err(StoreError::Expired { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        for ev in &after.events {
            // the same pod on the same node: what it refers to is immutable (a status write,
            // most of a pod's events), as upstream's graph_populator skips such updates
            let same = |p: &Value, ptr: &str| p.pointer(ptr) == ev.object.pointer(ptr);
            let unchanged = ev.event_type == EventType::Modified
                && ev
                    .prev
                    .as_deref()
                    .is_some_and(|p| same(p, "/spec/nodeName") && same(p, "/metadata/uid"));
            if unchanged {
                continue;
            }
            let key = (ev.namespace.clone(), ev.name.clone());
            match ev.event_type {
                EventType::Deleted => index.set(key, None),
                _ => index.set(key, Some(&ev.object)),
            }
        }
        if after.through <= index.through {
            break;
        }
        index.through = after.through;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::server::store::SqliteStore;

    fn pod(name: &str, node: &str, secret: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "d"},
            "spec": {"nodeName": node, "serviceAccountName": "sa",
                "volumes": [{"name": "v", "secret": {"secretName": secret}}],
                "containers": [{"name": "c", "env": [{"name": "E",
                    "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}]}})
    }

    #[tokio::test]
    async fn nodes_reach_what_their_pods_use_and_nothing_once_they_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(SqliteStore::open(&dir.path().join("s.db"), 4).unwrap());
        let graph = NodeGraph::default();
        let pods = PODS.key();
        store
            .create(&pods, "d", "p1", pod("p1", "a", "s1"))
            .await
            .unwrap();
        store
            .create(&pods, "d", "p2", pod("p2", "b", "s2"))
            .await
            .unwrap();
        store
            .create(&pods, "d", "p3", pod("p3", "", "s3"))
            .await
            .unwrap();
        // (node, via, namespace, name, reaches)
        let cases = [
            ("a", Via::Secret, "d", "s1", true),
            ("a", Via::Secret, "d", "s2", false),
            ("b", Via::Secret, "d", "s2", true),
            ("a", Via::Secret, "d", "s3", false),
            ("a", Via::ConfigMap, "d", "cm", true),
            ("a", Via::ConfigMap, "other", "cm", false),
            ("a", Via::ServiceAccount, "d", "sa", true),
            ("a", Via::ServiceAccount, "d", "default", false),
        ];
        for (node, via, ns, name, want) in cases {
            let got = graph.reaches(&*store, node, via, ns, name).await.unwrap();
            assert_eq!(got, want, "{node} {via:?} {ns}/{name}");
        }
        // p1 comes back using another secret (a pod's references cannot change: a new pod);
        // p2 goes; a status write changes nothing: caught up from the history
        store.delete(&pods, "d", "p1", None).await.unwrap();
        store
            .create(&pods, "d", "p1", pod("p1", "a", "s9"))
            .await
            .unwrap();
        let mut running = pod("p1", "a", "s9");
        running["status"] = json!({"phase": "Running"});
        store.update(&pods, "d", "p1", running, None).await.unwrap();
        store.delete(&pods, "d", "p2", None).await.unwrap();
        assert!(graph
            .reaches(&*store, "a", Via::Secret, "d", "s9")
            .await
            .unwrap());
        assert!(!graph
            .reaches(&*store, "a", Via::Secret, "d", "s1")
            .await
            .unwrap());
        assert!(!graph
            .reaches(&*store, "b", Via::Secret, "d", "s2")
            .await
            .unwrap());
        // more changes than the history keeps (4): rebuilt from a list
        for i in 0..6 {
            let name = format!("q{i}");
            store
                .create(&pods, "d", &name, pod(&name, "b", &format!("t{i}")))
                .await
                .unwrap();
        }
        assert!(graph
            .reaches(&*store, "b", Via::Secret, "d", "t0")
            .await
            .unwrap());
        assert!(graph
            .reaches(&*store, "b", Via::Secret, "d", "t5")
            .await
            .unwrap());
    }

    /// Followed by its populator, the graph answers a question after more pod changes than the
    /// history keeps without listing the pods (it decoded every pod for such a question).
    #[tokio::test]
    async fn a_populated_graph_answers_late_questions_without_a_list() {
        use crate::server::controllers::counting::Counting;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting::with_history(&dir, 4));
        let graph = NodeGraph::default();
        let pods = PODS.key();
        store
            .create(&pods, "d", "p1", pod("p1", "a", "s1"))
            .await
            .unwrap();
        assert!(graph
            .reaches(&*store, "a", Via::Secret, "d", "s1")
            .await
            .unwrap());
        assert_eq!(store.reads(&pods).whole, 1, "built from a list");
        store.reset();
        for i in 0..6 {
            let name = format!("q{i}");
            store
                .create(&pods, "d", &name, pod(&name, "b", &format!("t{i}")))
                .await
                .unwrap();
            // the populator's turn on the store's pod change
            drop(graph.up_to_date(&*store).await.unwrap());
        }
        store.delete(&pods, "d", "p1", None).await.unwrap();
        drop(graph.up_to_date(&*store).await.unwrap());
        for (node, name, want) in [("b", "t0", true), ("b", "t5", true), ("a", "s1", false)] {
            let got = graph.reaches(&*store, node, Via::Secret, "d", name).await;
            assert_eq!(got.unwrap(), want, "{node} {name}");
        }
        assert_eq!(store.reads(&pods).whole, 0, "no list");
    }

    /// The populator follows the store's pod changes until the store goes.
    #[tokio::test]
    async fn the_populator_ends_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(SqliteStore::open(&dir.path().join("s.db"), 4).unwrap());
        let graph = Arc::new(NodeGraph::default());
        let task = tokio::spawn(graph.clone().populate(Arc::downgrade(&store)));
        store
            .create(&PODS.key(), "d", "p1", pod("p1", "a", "s1"))
            .await
            .unwrap();
        assert!(graph
            .reaches(&*store, "a", Via::Secret, "d", "s1")
            .await
            .unwrap());
        drop(store);
        task.await.unwrap();
    }
}
