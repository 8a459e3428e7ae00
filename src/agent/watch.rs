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
//! A store that goes back in time (restored from a backup: a resourceVersion older than one the
//! agent has seen) or that is another cluster's (another uid of the `kube-system` Namespace, the
//! identity real clusters are known by) is noticed by [`guard_history`], which makes every
//! reflector list afresh instead of trusting what it holds; until those lists complete, the store
//! is not synced (`daemonset-agent status` does not say "API in sync"). A watch resumed against
//! such a store would otherwise go on from the agent's resourceVersion and never tell it that the
//! objects it runs are gone.
//!
//! A cache written by an agent before the pod pipeline holds DaemonSets instead of Pods: it loads
//! as a cache without pods, and until the first list of the Pods the agent leaves the containers
//! it finds alone (`Store::pods_known`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::ListParams;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// How often [`guard_history`] asks the API for its resourceVersion and identity when nothing
/// else makes it look (a failed watch does at once).
pub const HISTORY_CHECK_PERIOD: Duration = Duration::from_secs(30);
/// How soon it asks again after the API did not answer.
const HISTORY_RETRY: Duration = Duration::from_secs(1);

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Told on every change the reconcile loop acts on: not on a DaemonSet's status-only
    /// update (see [`Store::wakes`]).
    pub changed: Notify,
    /// The generation of each DaemonSet (by uid) as last applied.
    generations: Mutex<BTreeMap<String, Option<i64>>>,
    /// Bumped on every change, so the cache is written only when something changed.
    pub version: AtomicU64,
    /// The highest resourceVersion of an object the watches delivered.
    seen_rv: AtomicU64,
    /// The uid of the API's `kube-system` Namespace, once known: the cluster's identity.
    cluster: Mutex<Option<String>>,
    /// Bumped when the reflectors must list afresh (the API's store went back in time).
    relists: tokio::sync::watch::Sender<u64>,
    /// Told when a watch failed: the API may have come back as another store.
    suspect: Notify,
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
            generations: Mutex::new(BTreeMap::new()),
            version: AtomicU64::new(0),
            seen_rv: AtomicU64::new(0),
            cluster: Mutex::new(None),
            relists: tokio::sync::watch::channel(0).0,
            suspect: Notify::new(),
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

    /// Whether the API's store went back in time: a list read at `rv` older than what the watches
    /// delivered before it was asked (`seen_before`), or another cluster (the `kube-system`
    /// Namespace's `uid`). Then the reason; what is seen from then on is measured against the
    /// new store.
    pub fn went_back(
        &self,
        seen_before: u64,
        rv: Option<u64>,
        uid: Option<&str>,
    ) -> Option<String> {
        let mut known = self.cluster.lock().unwrap_or_else(|e| e.into_inner());
        let mut reason = match (known.as_deref(), uid) {
            (Some(old), Some(new)) if old != new => Some(format!(
                "the API is another cluster: its kube-system namespace was {old}, is {new}"
            )),
            _ => None,
        };
        if let Some(uid) = uid {
            *known = Some(uid.to_string());
        }
        if let Some(rv) = rv.filter(|rv| *rv < seen_before) {
            reason.get_or_insert(format!(
                "the API's store went back in time (restored?): resourceVersion {rv}, {seen_before} seen before"
            ));
        }
        if reason.is_some() {
            self.seen_rv.store(rv.unwrap_or(0), Ordering::SeqCst);
        }
        reason
    }

    /// Makes every reflector list afresh; the store is not synced until they did.
    pub fn relist(&self) {
        for listed in &self.listed {
            listed.store(false, Ordering::SeqCst);
        }
        self.relists.send_modify(|n| *n += 1);
        self.version.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// The highest resourceVersion the watches delivered.
    pub fn seen_rv(&self) -> u64 {
        self.seen_rv.load(Ordering::SeqCst)
    }

    fn saw<K: Resource>(&self, ev: &Event<K>) {
        let obj = match ev {
            Event::Apply(o) | Event::Delete(o) | Event::InitApply(o) => o,
            Event::Init | Event::InitDone => return,
        };
        if let Some(rv) = obj
            .meta()
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
        {
            self.seen_rv.fetch_max(rv, Ordering::SeqCst);
        }
    }

    /// Whether event `ev` of `kind` wakes the reconcile loop. A DaemonSet's update that keeps
    /// its generation (its status, written by the controller on every pod change of the
    /// fleet: dozens a second in a rollout) changes nothing the loop does, yet woke every
    /// agent of the fleet into a round (two containerd listings each) for each of them, on the
    /// CPUs the rollout's own container starts need. The kubelet watches no DaemonSets at all;
    /// here they are only the pre-pull's seam, which looks at `version`.
    fn wakes<K: Resource>(&self, kind: Kind, ev: &Event<K>) -> bool {
        if kind != Kind::DaemonSets {
            return true;
        }
        let mut seen = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        match ev {
            Event::Apply(o) => {
                let uid = o.meta().uid.clone().unwrap_or_default();
                let generation = o.meta().generation;
                seen.insert(uid, generation) != Some(generation)
            }
            Event::Delete(o) => {
                seen.remove(o.meta().uid.as_deref().unwrap_or_default());
                true
            }
            Event::Init | Event::InitApply(_) | Event::InitDone => true,
        }
    }

    /// One event of `kind` was applied; `list_done` when it completed a list; `wake`: the
    /// reconcile loop is told.
    fn applied(&self, kind: Kind, list_done: bool, wake: bool) {
        if list_done {
            self.listed[kind as usize].store(true, Ordering::SeqCst);
        }
        self.version.fetch_add(1, Ordering::SeqCst);
        if wake {
            self.changed.notify_one();
        }
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
    mut writer: Writer<K>,
    events: impl Stream<Item = watcher::Result<Event<K>>> + Send,
) where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    apply(&store, kind, &mut writer, events).await
}

async fn apply<K>(
    store: &Store,
    kind: Kind,
    writer: &mut Writer<K>,
    events: impl Stream<Item = watcher::Result<Event<K>>> + Send,
) where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut events = std::pin::pin!(events);
    while let Some(ev) = events.next().await {
        match ev {
            Ok(ev) => {
                if matches!(ev, Event::Init) {
                    // a (re)list, not a watch resumed from its resourceVersion (a fail-over's
                    // test counts these)
                    tracing::info!(kind = ?kind, "listing from the API");
                }
                writer.apply_watcher_event(&ev);
                store.saw(&ev);
                let wake = store.wakes(kind, &ev);
                store.applied(kind, matches!(ev, Event::InitDone), wake);
            }
            Err(e) => {
                tracing::warn!(kind = ?kind, error = %crate::runtime::chain(&e), "watch failed; retrying with back-off");
                store.suspect.notify_one();
            }
        }
    }
}

/// [`follow`] over the watchers `watch` makes: a new one (which lists first) each time the
/// store asks for a relist.
async fn follow_relisting<K, S>(
    store: Arc<Store>,
    kind: Kind,
    mut writer: Writer<K>,
    watch: impl Fn() -> S,
) where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
    S: Stream<Item = watcher::Result<Event<K>>> + Send,
{
    let mut relists = store.relists.subscribe();
    loop {
        relists.borrow_and_update();
        tokio::select! {
            _ = apply(&store, kind, &mut writer, watch()) => return,
            changed = relists.changed() => {
                if changed.is_err() {
                    return;
                }
                tracing::info!(kind = ?kind, "listing afresh");
            }
        }
    }
}

/// Watches for a store that went back in time ([`Store::went_back`]): asks the API for the
/// `kube-system` Namespace (its uid) and the list's resourceVersion every
/// [`HISTORY_CHECK_PERIOD`], and at once when a watch failed; makes the reflectors relist when
/// it did.
pub async fn guard_history(client: kube::Client, store: Arc<Store>) {
    let namespaces = Api::<Namespace>::all(client);
    let params = ListParams::default().fields("metadata.name=kube-system");
    loop {
        let seen_before = store.seen_rv();
        let wait = match namespaces.list(&params).await {
            Ok(list) => {
                let rv = list
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse().ok());
                let uid = list.items.first().and_then(|n| n.metadata.uid.as_deref());
                if let Some(reason) = store.went_back(seen_before, rv, uid) {
                    tracing::warn!(
                        reason = reason.as_str(),
                        "not trusting what the watches delivered: listing afresh"
                    );
                    store.relist();
                }
                HISTORY_CHECK_PERIOD
            }
            Err(e) => {
                tracing::debug!(error = %crate::runtime::chain(&e), "could not ask the API for its resourceVersion");
                HISTORY_RETRY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = store.suspect.notified() => {}
        }
    }
}

/// Starts the three watchers and the guard of their history; they run until the process ends.
pub fn spawn(client: kube::Client, node_name: &str, store: Arc<Store>, writers: Writers) {
    let by_name = format!("metadata.name={node_name}");
    let on_node = format!("spec.nodeName={node_name}");
    let daemonsets = Api::<DaemonSet>::all(client.clone());
    tokio::spawn(follow_relisting(
        store.clone(),
        Kind::DaemonSets,
        writers.daemonsets,
        move || watcher::watcher(daemonsets.clone(), watcher::Config::default()).default_backoff(),
    ));
    let nodes = Api::<Node>::all(client.clone());
    tokio::spawn(follow_relisting(
        store.clone(),
        Kind::Node,
        writers.node,
        move || {
            watcher::watcher(nodes.clone(), watcher::Config::default().fields(&by_name))
                .default_backoff()
        },
    ));
    let pods = Api::<Pod>::all(client.clone());
    tokio::spawn(follow_relisting(
        store.clone(),
        Kind::Pods,
        writers.pods,
        move || {
            watcher::watcher(pods.clone(), watcher::Config::default().fields(&on_node))
                .default_backoff()
        },
    ));
    tokio::spawn(guard_history(client, store));
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

    /// A DaemonSet's status-only update bumps the version (the pre-pull looks at it) without
    /// waking the reconcile loop; a new one, a template change (generation) or a delete do.
    #[test]
    fn only_a_daemonsets_generation_wakes_the_loop() {
        use futures::FutureExt;
        let (store, _writers) = Store::new(None);
        let ds = |generation: i64, ready: i32| DaemonSet {
            metadata: ObjectMeta {
                name: Some("mon".into()),
                namespace: Some("default".into()),
                uid: Some("ds-uid".into()),
                generation: Some(generation),
                ..Default::default()
            },
            status: Some(k8s_openapi::api::apps::v1::DaemonSetStatus {
                number_ready: ready,
                ..Default::default()
            }),
            ..Default::default()
        };
        let cases = [
            ("new", Event::Apply(ds(1, 0)), true),
            ("status only", Event::Apply(ds(1, 3)), false),
            ("status only again", Event::Apply(ds(1, 4)), false),
            ("template changed", Event::Apply(ds(2, 4)), true),
            ("deleted", Event::Delete(ds(2, 4)), true),
            ("made again", Event::Apply(ds(1, 0)), true),
        ];
        for (i, (what, ev, wakes)) in cases.into_iter().enumerate() {
            let wake = store.wakes(Kind::DaemonSets, &ev);
            store.applied(Kind::DaemonSets, false, wake);
            assert_eq!(wake, wakes, "{what}");
            assert_eq!(store.version.load(Ordering::SeqCst), i as u64 + 1, "{what}");
            let woken = store.changed.notified().now_or_never().is_some();
            assert_eq!(woken, wakes, "{what}");
        }
        assert!(
            store.wakes(Kind::Pods, &Event::Apply(pod("p"))),
            "every pod event wakes"
        );
    }

    fn pod_at(name: &str, rv: u64) -> Pod {
        let mut p = pod(name);
        p.metadata.resource_version = Some(rv.to_string());
        p
    }

    async fn until(store: &Store, cond: impl Fn() -> bool) {
        while !cond() {
            store.changed.notified().await;
        }
    }

    /// A restored store (an older resourceVersion than seen) or another cluster (another
    /// kube-system uid) is listed afresh: the pods it no longer has go, and the store is not
    /// synced until the new list completed.
    #[tokio::test]
    async fn a_store_that_went_back_in_time_is_listed_afresh() {
        type Feed = futures::channel::mpsc::UnboundedSender<watcher::Result<Event<Pod>>>;
        let (store, writers) = Store::new(None);
        // each watcher the follower makes reads its own channel
        let mut feeds: Vec<Feed> = Vec::new();
        let mut streams = std::collections::VecDeque::new();
        for _ in 0..2 {
            let (tx, rx) = futures::channel::mpsc::unbounded();
            feeds.push(tx);
            streams.push_back(rx);
        }
        let streams = Mutex::new(streams);
        let made = Arc::new(AtomicU64::new(0));
        let counted = made.clone();
        let task = tokio::spawn(follow_relisting(
            store.clone(),
            Kind::Pods,
            writers.pods,
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
                streams
                    .lock()
                    .unwrap()
                    .pop_front()
                    .expect("a watcher to make")
            },
        ));
        let list = |feed: &Feed, pod: Pod| {
            for ev in [Event::Init, Event::InitApply(pod), Event::InitDone] {
                feed.unbounded_send(Ok(ev)).unwrap();
            }
        };
        list(&feeds[0], pod_at("ds-a", 120));
        until(&store, || store.listed(Kind::Pods)).await;
        assert_eq!(names(&store), ["ds-a"]);
        assert_eq!(store.seen_rv(), 120);
        // the same store, ahead: nothing to do
        assert_eq!(store.went_back(120, Some(130), Some("uid-1")), None);
        // restored from a backup
        let reason = store.went_back(120, Some(100), Some("uid-1")).unwrap();
        assert!(
            reason.contains("resourceVersion 100, 120 seen before"),
            "{reason}"
        );
        assert_eq!(store.seen_rv(), 100);
        store.relist();
        assert!(!store.listed(Kind::Pods) && !store.synced());
        list(&feeds[1], pod_at("other", 90));
        until(&store, || store.listed(Kind::Pods)).await;
        assert_eq!(names(&store), ["other"]);
        // a new watcher listed; the old one is dropped
        assert_eq!(made.load(Ordering::SeqCst), 2);
        assert!(feeds[0].is_closed());
        // another cluster, even one further ahead
        let reason = store.went_back(100, Some(500), Some("uid-2")).unwrap();
        assert!(reason.contains("another cluster"), "{reason}");
        assert_eq!(store.went_back(500, Some(501), Some("uid-2")), None);
        task.abort();
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
