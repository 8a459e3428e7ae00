//! What the agent knows of the API: the DaemonSets, its own Node and the Pods bound to it, each
//! kept by kube-runtime's reflector over its watcher (list, then watch from the resourceVersion;
//! relist on 410 Gone or a broken connection, with back-off).
//!
//! The last desired state (DaemonSets and Node) is cached on disk, so a node restarted without the
//! API keeps running what it had. The cache is applied to the reflectors' stores before their
//! watchers start; a reflector swaps in each complete list (Init ... InitDone) whole, so the
//! cached objects are what the agent runs from until the first complete list of their kind, and
//! are then replaced by it (a DaemonSet deleted while the agent was away goes).
//!
//! This replaced a hand-written relist store that did the same buffering. One difference: a Node
//! deleted from the API leaves the store without a Node (the old store kept the last one), so the
//! controller decides from the configured Node (`node::desired_node`), which is what the heartbeat
//! registers again at its next status post.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// The cache file's content: the desired state of the last run.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Cached {
    pub node: Option<Node>,
    /// By `namespace/name`.
    pub daemonsets: BTreeMap<String, DaemonSet>,
}

/// The kinds watched, each with its reflector.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    DaemonSets = 0,
    Node = 1,
    Pods = 2,
}

/// The shared view of the API: one reflector (one writer) per kind; readers take what they need
/// as cheap `Arc` clones.
pub struct Store {
    daemonsets: reflector::Store<DaemonSet>,
    node: reflector::Store<Node>,
    pods: reflector::Store<Pod>,
    /// Per `Kind`: a complete list came since the agent started.
    listed: [AtomicBool; 3],
    /// Told on every change.
    pub changed: Notify,
    /// Bumped on every change, so the cache is written only when something changed.
    pub version: AtomicU64,
}

/// The writing halves of the store's reflectors, handed to the watchers (`spawn`, `follow`).
pub struct Writers {
    pub daemonsets: Writer<DaemonSet>,
    pub node: Writer<Node>,
    pub pods: Writer<Pod>,
}

impl Store {
    /// Empty stores holding `cached` (the last run's desired state) until their first list.
    pub fn new(cached: Option<Cached>) -> (Arc<Store>, Writers) {
        let (daemonsets, mut ds_writer) = reflector::store();
        let (node, mut node_writer) = reflector::store();
        let (pods, pod_writer) = reflector::store();
        if let Some(c) = cached {
            for ds in c.daemonsets.into_values() {
                ds_writer.apply_watcher_event(&Event::Apply(ds));
            }
            if let Some(n) = c.node {
                node_writer.apply_watcher_event(&Event::Apply(n));
            }
        }
        let store = Store {
            daemonsets,
            node,
            pods,
            listed: Default::default(),
            changed: Notify::new(),
            version: AtomicU64::new(0),
        };
        let writers = Writers {
            daemonsets: ds_writer,
            node: node_writer,
            pods: pod_writer,
        };
        (Arc::new(store), writers)
    }

    /// This node's Node, as the API (or the cache) has it.
    pub fn node(&self) -> Option<Arc<Node>> {
        self.node.state().into_iter().next()
    }

    pub fn daemonsets(&self) -> Vec<Arc<DaemonSet>> {
        self.daemonsets.state()
    }

    /// The Pods the API has bound to this node; None until they were listed, and until the
    /// DaemonSets and the Node were (no pod can be judged an orphan before).
    pub fn pods(&self) -> Option<Vec<Arc<Pod>>> {
        (self.synced() && self.listed(Kind::Pods)).then(|| self.pods.state())
    }

    fn listed(&self, kind: Kind) -> bool {
        self.listed[kind as usize].load(Ordering::SeqCst)
    }

    /// Both the DaemonSets and the Node were listed from the API since the agent started.
    pub fn synced(&self) -> bool {
        self.listed(Kind::DaemonSets) && self.listed(Kind::Node)
    }

    /// What to cache, once the desired state came from the API.
    pub fn cached(&self) -> Option<Cached> {
        self.synced().then(|| Cached {
            node: self.node().map(|n| (*n).clone()),
            daemonsets: self
                .daemonsets()
                .into_iter()
                .map(|ds| (ds_key(&ds), (*ds).clone()))
                .collect(),
        })
    }

    /// One event of `kind` was applied; `list_done` when it completed a list.
    fn applied(&self, kind: Kind, list_done: bool) {
        if list_done {
            self.listed[kind as usize].store(true, Ordering::SeqCst);
        }
        self.version.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_one();
    }
}

fn ds_key(ds: &DaemonSet) -> String {
    format!("{}/{}", ds.namespace().unwrap_or_default(), ds.name_any())
}

pub fn cache_path(state_dir: &Path) -> PathBuf {
    state_dir.join("desired.json")
}

/// Loads the cached desired state (DaemonSets and Node) of the last run, if any.
pub fn load_cache(state_dir: &Path) -> Option<Cached> {
    let text = std::fs::read(cache_path(state_dir)).ok()?;
    match serde_json::from_slice(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %crate::runtime::chain(&e), "ignoring unreadable desired-state cache");
            None
        }
    }
}

/// Writes the cache atomically: temporary file + rename.
pub fn save_cache(state_dir: &Path, cached: &Cached) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(cached).map_err(std::io::Error::other)?;
    let path = cache_path(state_dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

/// Applies one kind's watch events to its reflector until the stream ends, telling the store
/// of each change. The agent feeds it a kube watcher (`spawn`); tests feed it events of their own.
pub async fn follow<K>(
    store: Arc<Store>,
    kind: Kind,
    writer: Writer<K>,
    events: impl Stream<Item = watcher::Result<Event<K>>> + Send,
) where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut stream = std::pin::pin!(reflector::reflector(writer, events));
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => store.applied(kind, matches!(ev, Event::InitDone)),
            Err(e) => {
                tracing::warn!(kind = ?kind, error = %crate::runtime::chain(&e), "watch failed; retrying with back-off")
            }
        }
    }
}

/// Starts the three watchers; they run until the process ends.
pub fn spawn(client: kube::Client, node_name: &str, store: Arc<Store>, writers: Writers) {
    let by_name = format!("metadata.name={node_name}");
    let on_node = format!("spec.nodeName={node_name}");
    tokio::spawn(follow(
        store.clone(),
        Kind::DaemonSets,
        writers.daemonsets,
        watcher::watcher(
            Api::<DaemonSet>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    ));
    tokio::spawn(follow(
        store.clone(),
        Kind::Node,
        writers.node,
        watcher::watcher(
            Api::<Node>::all(client.clone()),
            watcher::Config::default().fields(&by_name),
        )
        .default_backoff(),
    ));
    tokio::spawn(follow(
        store,
        Kind::Pods,
        writers.pods,
        watcher::watcher(
            Api::<Pod>::all(client),
            watcher::Config::default().fields(&on_node),
        )
        .default_backoff(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ds(name: &str) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(store: &Store) -> Vec<String> {
        let mut v: Vec<String> = store.daemonsets().iter().map(|d| d.name_any()).collect();
        v.sort();
        v
    }

    /// The cache is what the agent runs from until the first complete list, which replaces it;
    /// watch events then apply one by one, and the cache written is the listed state.
    #[tokio::test]
    async fn the_cache_holds_until_the_first_complete_list_replaces_it() {
        let cached = Cached {
            node: None,
            daemonsets: [("default/old", ds("old")), ("default/kept", ds("kept"))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        let (store, writers) = Store::new(Some(cached));
        assert_eq!(names(&store), ["kept", "old"]);
        assert!(
            store.cached().is_none(),
            "nothing listed: no cache to write"
        );
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let task = tokio::spawn(follow(
            store.clone(),
            Kind::DaemonSets,
            writers.daemonsets,
            rx,
        ));
        let send = |ev| tx.unbounded_send(Ok(ev)).unwrap();
        let settled = |v: u64| {
            let store = store.clone();
            async move {
                while store.version.load(Ordering::SeqCst) < v {
                    store.changed.notified().await;
                }
            }
        };
        // a list in progress changes nothing yet
        send(Event::Init);
        send(Event::InitApply(ds("kept")));
        send(Event::InitApply(ds("new")));
        settled(3).await;
        assert_eq!(names(&store), ["kept", "old"]);
        send(Event::InitDone);
        settled(4).await;
        assert_eq!(names(&store), ["kept", "new"]);
        assert!(!store.synced(), "the Node is not listed yet");
        send(Event::Delete(ds("kept")));
        send(Event::Apply(ds("later")));
        settled(6).await;
        assert_eq!(names(&store), ["later", "new"]);
        drop(tx);
        task.await.unwrap();
    }

    #[test]
    fn the_cache_file_round_trips_and_a_broken_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_cache(dir.path()).is_none());
        let cached = Cached {
            node: None,
            daemonsets: [("default/a".to_string(), ds("a"))].into_iter().collect(),
        };
        save_cache(dir.path(), &cached).unwrap();
        let back = load_cache(dir.path()).unwrap();
        assert_eq!(back.daemonsets.keys().collect::<Vec<_>>(), ["default/a"]);
        std::fs::write(cache_path(dir.path()), b"{not json").unwrap();
        assert!(load_cache(dir.path()).is_none());
    }
}
