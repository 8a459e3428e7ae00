//! What the agent knows of the API: the Pods bound to its node (what it runs), its own Node, and
//! the DaemonSets (reported by its local API, and the seam of pre-pulling a DaemonSet's next
//! revision), each kept by kube-runtime's reflector over its watcher (list, then watch from the
//! resourceVersion; relist on 410 Gone or a broken connection, with back-off).
//!
//! The bound Pods and the Node of the last complete list are cached on disk, so a node restarted
//! without the API keeps running (and healing) what it had. The cache is applied to the
//! reflectors' stores before their watchers start; a reflector swaps in each complete list
//! (Init ... InitDone) whole, so the cached objects are what the agent runs from until the first
//! complete list of their kind, and are then replaced by it (a pod deleted while the agent was
//! away goes).
//!
//! A cache written by an agent before the pod pipeline holds DaemonSets instead of Pods: it loads
//! as a cache without pods, and until the first list of the Pods the agent leaves the containers
//! it finds alone (`Store::pods_known`).
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

/// The cache file's content: what the last run was told to run.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Cached {
    pub node: Option<Node>,
    /// The Pods bound to the node, by `namespace/name`; None in the cache of an agent before the
    /// pod pipeline.
    #[serde(default)]
    pub pods: Option<BTreeMap<String, Pod>>,
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
    /// The cache held the bound Pods.
    pods_cached: bool,
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
    /// Empty stores holding `cached` (what the last run was told) until their first list.
    pub fn new(cached: Option<Cached>) -> (Arc<Store>, Writers) {
        let (daemonsets, ds_writer) = reflector::store();
        let (node, mut node_writer) = reflector::store();
        let (pods, mut pod_writer) = reflector::store();
        let mut pods_cached = false;
        if let Some(c) = cached {
            if let Some(n) = c.node {
                node_writer.apply_watcher_event(&Event::Apply(n));
            }
            if let Some(cached_pods) = c.pods {
                pods_cached = true;
                for p in cached_pods.into_values() {
                    pod_writer.apply_watcher_event(&Event::Apply(p));
                }
            }
        }
        let store = Store {
            daemonsets,
            node,
            pods,
            pods_cached,
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

    /// The Pods bound to this node, as the API (or the cache) has them.
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.pods.state()
    }

    /// The bound Pods are known (listed from the API, or cached by an agent that listed them): a
    /// container no such pod accounts for may be stopped.
    pub fn pods_known(&self) -> bool {
        self.pods_cached || self.listed(Kind::Pods)
    }

    fn listed(&self, kind: Kind) -> bool {
        self.listed[kind as usize].load(Ordering::SeqCst)
    }

    /// Both the Pods bound to this node and the Node were listed from the API since the agent
    /// started.
    pub fn synced(&self) -> bool {
        self.listed(Kind::Pods) && self.listed(Kind::Node)
    }

    /// What to cache, once it came from the API.
    pub fn cached(&self) -> Option<Cached> {
        self.synced().then(|| Cached {
            node: self.node().map(|n| (*n).clone()),
            pods: Some(
                self.pods()
                    .into_iter()
                    .map(|p| (key(&*p), (*p).clone()))
                    .collect(),
            ),
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

fn key<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

pub fn cache_path(state_dir: &Path) -> PathBuf {
    state_dir.join("desired.json")
}

/// Loads the cache of the last run (bound Pods and Node), if any.
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

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(store: &Store) -> Vec<String> {
        let mut v: Vec<String> = store.pods().iter().map(|p| p.name_any()).collect();
        v.sort();
        v
    }

    fn cache_of(names: &[&str]) -> Cached {
        Cached {
            node: None,
            pods: Some(
                names
                    .iter()
                    .map(|n| (format!("default/{n}"), pod(n)))
                    .collect(),
            ),
        }
    }

    /// The cache is what the agent runs from until the first complete list, which replaces it;
    /// watch events then apply one by one, and the cache written is the listed state.
    #[tokio::test]
    async fn the_cache_holds_until_the_first_complete_list_replaces_it() {
        let (store, writers) = Store::new(Some(cache_of(&["old", "kept"])));
        assert_eq!(names(&store), ["kept", "old"]);
        assert!(store.pods_known(), "the cache knew the bound pods");
        assert!(
            store.cached().is_none(),
            "nothing listed: no cache to write"
        );
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let task = tokio::spawn(follow(store.clone(), Kind::Pods, writers.pods, rx));
        let (node_tx, node_rx) = futures::channel::mpsc::unbounded();
        let node_task = tokio::spawn(follow(store.clone(), Kind::Node, writers.node, node_rx));
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
        send(Event::InitApply(pod("kept")));
        send(Event::InitApply(pod("new")));
        settled(3).await;
        assert_eq!(names(&store), ["kept", "old"]);
        send(Event::InitDone);
        settled(4).await;
        assert_eq!(names(&store), ["kept", "new"]);
        assert!(!store.synced(), "the Node is not listed yet");
        send(Event::Delete(pod("kept")));
        send(Event::Apply(pod("later")));
        settled(6).await;
        assert_eq!(names(&store), ["later", "new"]);
        for ev in [Event::Init, Event::InitDone] {
            node_tx.unbounded_send(Ok(ev)).unwrap();
        }
        settled(8).await;
        assert!(store.synced());
        let cached = store.cached().unwrap();
        let keys: Vec<&String> = cached.pods.as_ref().unwrap().keys().collect();
        assert_eq!(keys, ["default/later", "default/new"]);
        drop((tx, node_tx));
        task.await.unwrap();
        node_task.await.unwrap();
    }

    #[test]
    fn the_cache_file_round_trips_and_a_broken_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_cache(dir.path()).is_none());
        save_cache(dir.path(), &cache_of(&["a"])).unwrap();
        let back = load_cache(dir.path()).unwrap();
        let keys: Vec<&String> = back.pods.as_ref().unwrap().keys().collect();
        assert_eq!(keys, ["default/a"]);
        std::fs::write(cache_path(dir.path()), b"{not json").unwrap();
        assert!(load_cache(dir.path()).is_none());
    }

    /// The cache of an agent before the pod pipeline (DaemonSets, no Pods) loads without pods:
    /// until the Pods are listed, the agent does not know what it may stop.
    #[test]
    fn a_cache_of_the_previous_agent_knows_no_pods() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            cache_path(dir.path()),
            br#"{"node": null, "daemonsets": {"default/d": {"metadata": {"name": "d"}}}}"#,
        )
        .unwrap();
        let old = load_cache(dir.path()).unwrap();
        assert!(old.pods.is_none());
        let (store, _writers) = Store::new(Some(old));
        assert!(store.pods().is_empty());
        assert!(!store.pods_known());
    }
}
