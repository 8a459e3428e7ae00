//! What the agent knows of the API: the DaemonSets, its own Node and the Pods bound to it, kept
//! current by list+watch (kube-runtime's watcher: resumes from the resourceVersion, relists on 410
//! Gone or a broken connection, with back-off). The last desired state is cached on disk so a node
//! restarted without the API keeps running what it had.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::core::plan::PodKey;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub node: Option<Node>,
    pub daemonsets: BTreeMap<String, DaemonSet>,
    #[serde(skip)]
    pub pods: BTreeMap<PodKey, Pod>,
    /// Both the DaemonSets and the Node were listed from the API since the agent started.
    #[serde(skip)]
    pub synced: bool,
    #[serde(skip)]
    pub pods_synced: bool,
    #[serde(skip)]
    pub daemonsets_synced: bool,
    #[serde(skip)]
    pub node_synced: bool,
    #[serde(skip)]
    ds_relist: Option<BTreeMap<String, DaemonSet>>,
    #[serde(skip)]
    pod_relist: Option<BTreeMap<PodKey, Pod>>,
}

/// The shared store: one writer per kind, readers clone what they need.
#[derive(Default)]
pub struct Store {
    pub inner: Mutex<Snapshot>,
    pub changed: Notify,
    /// Bumped on every change, so the cache is written only when something changed.
    pub version: std::sync::atomic::AtomicU64,
}

impl Store {
    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        {
            let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut s);
            s.synced = s.daemonsets_synced && s.node_synced;
        }
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// Runs `f` on the current state under the lock (keep it short and free of I/O).
    pub fn read<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        f(&self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn synced(&self) -> bool {
        self.read(|s| s.synced)
    }
}

fn ds_key(ds: &DaemonSet) -> String {
    format!("{}/{}", ds.namespace().unwrap_or_default(), ds.name_any())
}

pub fn cache_path(state_dir: &Path) -> PathBuf {
    state_dir.join("desired.json")
}

/// Loads the cached desired state (DaemonSets and Node) of the last run, if any.
pub fn load_cache(state_dir: &Path) -> Option<Snapshot> {
    let text = std::fs::read(cache_path(state_dir)).ok()?;
    match serde_json::from_slice(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!(error = e.to_string(); "ignoring unreadable desired-state cache");
            None
        }
    }
}

/// Writes the cache (`Snapshot` serialized: DaemonSets and Node) atomically: temporary file +
/// rename.
pub fn save_cache(state_dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let path = cache_path(state_dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

/// Runs one watcher, applying its events to the store with `apply`.
async fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    store: Arc<Store>,
    what: &'static str,
    apply: fn(&mut Snapshot, Event<K>),
) where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(ev) => store.update(|s| apply(s, ev)),
            Err(e) => {
                log::warn!(kind = what, error = e.to_string(); "watch failed; retrying with back-off")
            }
        }
    }
}

fn apply_ds(s: &mut Snapshot, ev: Event<DaemonSet>) {
    match ev {
        Event::Init => s.ds_relist = Some(BTreeMap::new()),
        Event::InitApply(ds) => {
            s.ds_relist
                .get_or_insert_with(BTreeMap::new)
                .insert(ds_key(&ds), ds);
        }
        Event::InitDone => {
            // a complete list: it replaces what the cache or an earlier list said
            s.daemonsets = s.ds_relist.take().unwrap_or_default();
            s.daemonsets_synced = true;
        }
        Event::Apply(ds) => {
            s.daemonsets.insert(ds_key(&ds), ds);
        }
        Event::Delete(ds) => {
            s.daemonsets.remove(&ds_key(&ds));
        }
    }
}

fn apply_node(s: &mut Snapshot, ev: Event<Node>) {
    match ev {
        Event::Init | Event::Delete(_) => {}
        Event::InitApply(n) | Event::Apply(n) => s.node = Some(n),
        Event::InitDone => s.node_synced = true,
    }
}

fn apply_pod(s: &mut Snapshot, ev: Event<Pod>) {
    let key = |p: &Pod| PodKey {
        namespace: p.namespace().unwrap_or_default(),
        name: p.name_any(),
    };
    match ev {
        Event::Init => s.pod_relist = Some(BTreeMap::new()),
        Event::InitApply(p) => {
            s.pod_relist
                .get_or_insert_with(BTreeMap::new)
                .insert(key(&p), p);
        }
        Event::InitDone => {
            s.pods = s.pod_relist.take().unwrap_or_default();
            s.pods_synced = true;
        }
        Event::Apply(p) => {
            s.pods.insert(key(&p), p);
        }
        Event::Delete(p) => {
            s.pods.remove(&key(&p));
        }
    }
}

/// Starts the three watchers; they run until the process ends.
pub fn spawn(client: kube::Client, node_name: &str, store: Arc<Store>) {
    let by_name = format!("metadata.name={node_name}");
    let on_node = format!("spec.nodeName={node_name}");
    tokio::spawn(watch_kind(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
        store.clone(),
        "DaemonSet",
        apply_ds,
    ));
    tokio::spawn(watch_kind(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().fields(&by_name),
        store.clone(),
        "Node",
        apply_node,
    ));
    tokio::spawn(watch_kind(
        Api::<Pod>::all(client),
        watcher::Config::default().fields(&on_node),
        store,
        "Pod",
        apply_pod,
    ));
}
