//! The controller loop, which owns the agent's decisions: on a watch event, a container exit, a
//! worker's report or a timer (a pod's requeue deadline, the resync), it lists our containers
//! once, computes the desired pods (pure, `core::plan::desired_pods`) and hands each pod's worker
//! its latest desired state. It counts its rounds, so that tests and the local API can wait for
//! a decision instead of sleeping.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tokio::sync::{mpsc, watch as tokio_watch};
use tracing::Instrument as _;

use crate::agent::config::Config;
use crate::agent::worker::{self, Report, Work};
use crate::agent::{localapi, node, podsync, watch};
use crate::core::plan::{self, DesiredPod, PodKey};
use crate::runtime::{labels, ContainerStatus};

/// What the rounds have done so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Rounds completed since the agent started.
    pub rounds: u64,
    /// The DaemonSets the last completed round decided from.
    pub daemonsets: Vec<Seen>,
}

/// A DaemonSet as a round saw it, and what it decided.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    /// The round wanted its pod on this node.
    pub runs_here: bool,
}

pub struct Controller {
    cfg: Config,
    ctx: Arc<worker::Context>,
    store: Arc<watch::Store>,
    workers: BTreeMap<PodKey, tokio_watch::Sender<Work>>,
    /// When each pod's worker wants to look again (unix ms).
    requeue: BTreeMap<PodKey, i64>,
    pod_tx: mpsc::UnboundedSender<podsync::Update>,
    ready_sent: bool,
    view: localapi::PodsView,
    progress: tokio_watch::Sender<Progress>,
}

impl Controller {
    pub fn new(
        cfg: Config,
        ctx: Arc<worker::Context>,
        store: Arc<watch::Store>,
        pod_tx: mpsc::UnboundedSender<podsync::Update>,
    ) -> Controller {
        Controller {
            cfg,
            ctx,
            store,
            workers: BTreeMap::new(),
            requeue: BTreeMap::new(),
            pod_tx,
            ready_sent: false,
            view: localapi::PodsView::default(),
            progress: tokio_watch::Sender::new(Progress::default()),
        }
    }

    /// The pods as their workers last reported them.
    pub fn view(&self) -> localapi::PodsView {
        self.view.clone()
    }

    /// The rounds, as they complete.
    pub fn progress(&self) -> tokio_watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub async fn run(mut self, mut shutdown: tokio_watch::Receiver<bool>) {
        let (report_tx, mut reports) = mpsc::unbounded_channel();
        // containerd answers an event subscription only with its first event, so subscribe in
        // the background and never hold the loop on it.
        let (exit_tx, exit_rx) = mpsc::channel::<String>(256);
        let runtime = self.ctx.runtime.clone();
        tokio::spawn(async move {
            match runtime.subscribe_exits().await {
                Ok(mut rx) => {
                    while let Some(id) = rx.recv().await {
                        if exit_tx.send(id).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::runtime::chain(&e), "no exit events from containerd; relying on resync")
                }
            }
        });
        let mut exits = Some(exit_rx);
        let resync = Duration::from_secs(self.cfg.resync_seconds);
        let mut cached_version = u64::MAX;
        // glibc keeps freed heap: one quiet second after work, give it back to the system
        let mut trim_at: Option<tokio::time::Instant> = None;
        // WatchdogSec= of the unit: pinged from this loop, so a loop stuck in a round (or a
        // wedged runtime) stops the pings and systemd restarts the agent; containers keep running
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 4);
        let mut next_ping = tokio::time::Instant::now();
        loop {
            let next = self
                .requeue
                .values()
                .min()
                .map(|at| self.ctx.clock.until(*at))
                .unwrap_or(resync)
                .min(resync);
            tokio::select! {
                _ = tokio::time::sleep_until(next_ping), if watchdog.is_some() => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    next_ping = tokio::time::Instant::now() + watchdog.unwrap_or_default();
                    continue;
                }
                _ = self.store.changed.notified() => {}
                _ = tokio::time::sleep_until(trim_at.unwrap_or_else(tokio::time::Instant::now)), if trim_at.is_some() => {
                    trim_at = None;
                    // SAFETY: malloc_trim only releases free heap pages.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                    continue;
                }
                _ = tokio::time::sleep(next) => {}
                Some(id) = async { match exits.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    tracing::debug!(container_id = id, "container exited");
                }
                Some(r) = reports.recv() => {
                    let changed = self.on_report(r);
                    trim_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    if !changed {
                        // status only: nothing to reconcile
                        continue;
                    }
                }
                _ = shutdown.changed() => {
                    tracing::info!("agent stopping; containers keep running");
                    return;
                }
            }
            // drain whatever else is queued so one round covers it
            while let Ok(r) = reports.try_recv() {
                self.on_report(r);
            }
            let round = self.progress.borrow().rounds + 1;
            let span = tracing::info_span!("round", round, node = self.cfg.node_name.as_str());
            match self.round(round, &report_tx).instrument(span.clone()).await {
                Ok(daemonsets) => self.progress.send_modify(|p| {
                    p.rounds += 1;
                    p.daemonsets = daemonsets;
                }),
                Err(e) => {
                    span.in_scope(|| tracing::warn!(error = %crate::runtime::chain(e.as_ref()), "reconcile round failed; retrying"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    self.store.changed.notify_one();
                }
            }
            let v = self.store.version.load(std::sync::atomic::Ordering::SeqCst);
            if v != cached_version {
                cached_version = v;
                if let Some(cached) = self.store.cached() {
                    if let Err(e) = watch::save_cache(&self.cfg.state_dir, &cached) {
                        tracing::warn!(error = %crate::runtime::chain(&e), "could not write the desired-state cache");
                    }
                }
            }
            trim_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
        }
    }

    /// Handles a worker report; true when the controller should run a round.
    fn on_report(&mut self, r: Report) -> bool {
        match r {
            Report::Status {
                key,
                pod,
                status,
                requeue_at,
                changed,
                round,
            } => {
                match requeue_at {
                    Some(at) => self.requeue.insert(key.clone(), at),
                    None => self.requeue.remove(&key),
                };
                if let Ok(mut v) = self.view.lock() {
                    let reported = localapi::Reported {
                        pod: (*pod).clone(),
                        status: (*status).clone(),
                        round,
                    };
                    v.insert(key, reported);
                }
                let _ = self.pod_tx.send(podsync::Update::Status(pod, status));
                changed
            }
            Report::Gone { key } => {
                self.workers.remove(&key);
                self.requeue.remove(&key);
                if let Ok(mut v) = self.view.lock() {
                    v.remove(&key);
                }
                let _ = self.pod_tx.send(podsync::Update::Gone(key));
                true
            }
        }
    }

    /// One round; returns the DaemonSets it decided from.
    async fn round(
        &mut self,
        round: u64,
        report_tx: &mpsc::UnboundedSender<Report>,
    ) -> anyhow::Result<Vec<Seen>> {
        let listed_at = tokio::time::Instant::now();
        let containers =
            tokio::time::timeout(Duration::from_secs(30), self.ctx.runtime.list_containers())
                .await
                .context("containerd did not list the containers in 30 s")??;
        let mut by_pod: BTreeMap<PodKey, Vec<ContainerStatus>> = BTreeMap::new();
        let mut owners: BTreeMap<PodKey, String> = BTreeMap::new();
        for c in containers {
            if c.labels.get(labels::MANAGED_BY).map(String::as_str)
                != Some(labels::MANAGED_BY_VALUE)
            {
                continue;
            }
            let Some(key) = worker::pod_key_of(&c) else {
                continue;
            };
            if let Some(uid) = c.labels.get(labels::DAEMONSET_UID) {
                owners.insert(key.clone(), uid.clone());
            }
            by_pod.entry(key).or_default().push(c);
        }
        let present: BTreeSet<PodKey> = by_pod.keys().cloned().collect();
        let node = self
            .store
            .node()
            .unwrap_or_else(|| Arc::new(node::desired_node(&self.cfg)));
        let daemonsets = self.store.daemonsets();
        let synced = self.store.synced();
        let mut desired = plan::desired_pods(&node, daemonsets.iter().map(AsRef::as_ref), &present);
        plan::hold_for_old_revisions(&mut desired, &owners);
        let running_here: BTreeSet<String> = desired.iter().map(|d| d.owner.uid.clone()).collect();
        let mut desired: BTreeMap<PodKey, DesiredPod> =
            desired.into_iter().map(|d| (d.key.clone(), d)).collect();

        let keys: BTreeSet<PodKey> = desired
            .keys()
            .chain(by_pod.keys())
            .chain(self.workers.keys())
            .cloned()
            .collect();
        for key in keys {
            let work = Work {
                desired: desired.remove(&key),
                observed: by_pod.remove(&key).unwrap_or_default(),
                listed_at: Some(listed_at),
                round,
            };
            let tx = self
                .workers
                .entry(key.clone())
                .or_insert_with(|| worker::spawn(key.clone(), self.ctx.clone(), report_tx.clone()));
            if tx.send(work).is_err() {
                // the worker ended (its pod was gone); a new one takes the new state next round
                self.workers.remove(&key);
                self.store.changed.notify_one();
            }
        }
        // Pods the API has on this node for DaemonSets, that no worker accounts for.
        let orphans: Vec<PodKey> = self
            .store
            .pods()
            .unwrap_or_default()
            .iter()
            .filter(|p| owned_by_a_daemonset(p))
            .map(|p| PodKey {
                namespace: p.namespace().unwrap_or_default(),
                name: p.name_any(),
            })
            .filter(|k| !self.workers.contains_key(k))
            .collect();
        if !orphans.is_empty() {
            let _ = self.pod_tx.send(podsync::Update::Orphans(orphans));
        }
        if !self.ready_sent {
            self.ready_sent = true;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!(
            "{} pods; API {}",
            self.workers.len(),
            if synced { "in sync" } else { "not reached yet" }
        ))]);
        let mut seen: Vec<Seen> = daemonsets
            .iter()
            .map(|d| Seen {
                namespace: d.namespace().unwrap_or_default(),
                name: d.name_any(),
                generation: d.metadata.generation.unwrap_or_default(),
                runs_here: d
                    .metadata
                    .uid
                    .as_ref()
                    .is_some_and(|u| running_here.contains(u)),
            })
            .collect();
        seen.sort();
        Ok(seen)
    }
}

fn owned_by_a_daemonset(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|o| o.kind == "DaemonSet"))
}

/// The loop's decisions, against the fake runtime and watch events of the tests' own, on tokio's
/// paused time: the resync is an hour, so anything that happens sooner was caused by the event
/// under test, and the fake runtime records the (paused) wall time of each container run.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::clock::Clock;
    use crate::agent::config::{self, FileConfig, Flags};
    use crate::agent::prober::fake::FakeProber;
    use crate::agent::worker::fake::FakeRuntime;
    use futures::channel::mpsc as fmpsc;
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::Node;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::{self, Event};

    const BASE_MS: i64 = 1_700_000_000_000;
    const NODE: &str = "node-1";

    type Feed<K> = fmpsc::UnboundedSender<watcher::Result<Event<K>>>;

    struct Rig {
        rt: Arc<FakeRuntime>,
        store: Arc<watch::Store>,
        daemonsets: Feed<DaemonSet>,
        node: Feed<Node>,
        pods: Feed<Pod>,
        updates: mpsc::UnboundedReceiver<podsync::Update>,
        /// The podsync updates sent so far.
        sent: Vec<podsync::Update>,
        progress: tokio_watch::Receiver<Progress>,
        view: localapi::PodsView,
        dir: tempfile::TempDir,
        _shutdown: tokio_watch::Sender<bool>,
    }

    impl Rig {
        fn start(cached: Option<watch::Cached>) -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let flags = Flags {
                node_name: Some(NODE.into()),
                state_dir: Some(dir.path().to_path_buf()),
                ..Default::default()
            };
            let file = FileConfig {
                resync_seconds: Some(3600),
                ..Default::default()
            };
            let cfg = config::merge(file, &flags, "host").unwrap();
            let clock = Clock::starting_at(BASE_MS);
            let rt = Arc::new(FakeRuntime {
                clock: Some(clock.clone()),
                ..Default::default()
            });
            let ctx = Arc::new(worker::Context {
                runtime: rt.clone(),
                prober: Arc::new(FakeProber::default()),
                state_dir: dir.path().to_path_buf(),
                host_ip: None,
                node: "host".into(),
                started: None,
                clock,
            });
            let (store, writers) = watch::Store::new(cached);
            let daemonsets = feed(&store, watch::Kind::DaemonSets, writers.daemonsets);
            let node = feed(&store, watch::Kind::Node, writers.node);
            let pods = feed(&store, watch::Kind::Pods, writers.pods);
            let (pod_tx, updates) = mpsc::unbounded_channel();
            let controller = Controller::new(cfg, ctx, store.clone(), pod_tx);
            let (progress, view) = (controller.progress(), controller.view());
            let (shutdown, shutdown_rx) = tokio_watch::channel(false);
            tokio::spawn(controller.run(shutdown_rx));
            Rig {
                rt,
                store,
                daemonsets,
                node,
                pods,
                updates,
                sent: Vec::new(),
                progress,
                view,
                dir,
                _shutdown: shutdown,
            }
        }

        /// Waits, round by round, until `f` holds after a round (at most a day of paused time:
        /// the resync makes a round every hour, so a wait that is not met fails, never hangs).
        async fn until(&mut self, what: &str, f: impl Fn(&Rig) -> bool) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(86_400);
            loop {
                while let Ok(u) = self.updates.try_recv() {
                    self.sent.push(u);
                }
                if f(self) {
                    return;
                }
                let changed = tokio::time::timeout_at(deadline, self.progress.changed()).await;
                assert!(matches!(changed, Ok(Ok(()))), "never: {what}");
            }
        }

        fn running(&self) -> Vec<String> {
            self.rt
                .containers
                .lock()
                .unwrap()
                .values()
                .filter(|c| matches!(c.state, crate::runtime::TaskState::Running { .. }))
                .map(|c| c.id.clone())
                .collect()
        }

        fn orphans(&self) -> Vec<PodKey> {
            let mut keys: Vec<PodKey> = self
                .sent
                .iter()
                .flat_map(|u| match u {
                    podsync::Update::Orphans(keys) => keys.clone(),
                    _ => vec![],
                })
                .collect();
            keys.sort();
            keys.dedup();
            keys
        }

        fn now_ms(&self) -> i64 {
            self.rt.clock.as_ref().unwrap().now_ms()
        }
    }

    /// A watcher stand-in for one kind: what the test sends is what the store's reflector gets.
    fn feed<K>(store: &Arc<watch::Store>, kind: watch::Kind, writer: Writer<K>) -> Feed<K>
    where
        K: kube::Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        let (tx, rx) = fmpsc::unbounded();
        tokio::spawn(watch::follow(store.clone(), kind, writer, rx));
        tx
    }

    fn send<K>(feed: &Feed<K>, events: impl IntoIterator<Item = Event<K>>) {
        for e in events {
            feed.unbounded_send(Ok(e)).unwrap();
        }
    }

    /// A complete list of `objects`, as a watcher reports it.
    fn list<K>(objects: Vec<K>) -> Vec<Event<K>> {
        let mut v = vec![Event::Init];
        v.extend(objects.into_iter().map(Event::InitApply));
        v.push(Event::InitDone);
        v
    }

    fn node(labels: serde_json::Value) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": NODE, "labels": labels}
        }))
        .unwrap()
    }

    /// A DaemonSet selecting nodes labelled role=worker.
    fn daemonset(name: &str) -> DaemonSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "generation": 3},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "nodeSelector": {"role": "worker"},
                        "containers": [{"name": "main", "image": "busybox:v1"}]
                    }
                }
            }
        }))
        .unwrap()
    }

    fn pod_key(ds: &DaemonSet) -> PodKey {
        let d = plan::desired_pods(
            &node(serde_json::json!({"role": "worker"})),
            [ds],
            &BTreeSet::new(),
        );
        d[0].key.clone()
    }

    fn container_of(key: &PodKey, restarts: u32) -> String {
        worker::container_id(key, "main", restarts)
    }

    #[tokio::test(start_paused = true)]
    async fn a_daemonset_runs_where_the_node_labels_select_it() {
        let mut rig = Rig::start(None);
        let ds = daemonset("mon");
        let key = pod_key(&ds);
        send(
            &rig.node,
            list(vec![node(serde_json::json!({"role": "edge"}))]),
        );
        send(&rig.daemonsets, list(vec![ds.clone()]));
        let seen = |runs_here| Seen {
            namespace: "default".into(),
            name: "mon".into(),
            generation: 3,
            runs_here,
        };
        rig.until("the DaemonSet seen by a round", |r| {
            r.progress.borrow().daemonsets == [seen(false)]
        })
        .await;
        assert!(rig.rt.run_ids().is_empty(), "an edge node runs nothing");
        assert!(rig.view.lock().unwrap().is_empty());

        // the node becomes a worker: its pod runs, at once
        send(
            &rig.node,
            [Event::Apply(node(serde_json::json!({"role": "worker"})))],
        );
        rig.until("the pod running", |r| !r.running().is_empty())
            .await;
        assert_eq!(rig.running(), [container_of(&key, 0)]);
        assert_eq!(rig.rt.runs.lock().unwrap()[0].1, BASE_MS);
        assert_eq!(rig.progress.borrow().daemonsets, [seen(true)]);
        rig.until("the pod reported", |r| {
            r.view.lock().unwrap().contains_key(&key)
        })
        .await;
        assert!(rig
            .sent
            .iter()
            .any(|u| matches!(u, podsync::Update::Status(d, _) if d.key == key)));

        // the label goes: the container and the pod go, in the API too
        send(
            &rig.node,
            [Event::Apply(node(serde_json::json!({"role": "edge"})))],
        );
        rig.until("the pod gone", |r| {
            r.rt.containers.lock().unwrap().is_empty() && r.view.lock().unwrap().is_empty()
        })
        .await;
        assert!(rig
            .sent
            .iter()
            .any(|u| matches!(u, podsync::Update::Gone(k) if *k == key)));
        let calls = rig.rt.calls.lock().unwrap().clone();
        assert!(
            calls.contains(&format!("stop {}", container_of(&key, 0))),
            "{calls:?}"
        );
        assert_eq!(
            rig.now_ms(),
            BASE_MS,
            "all of it without waiting for a resync"
        );
    }

    /// An exit is a round: the first restart comes at once; the second waits out the 10 s
    /// back-off, to the millisecond, on the worker's requeue deadline (the resync is an hour).
    #[tokio::test(start_paused = true)]
    async fn exits_are_rounds_and_restarts_wait_for_the_back_off() {
        let mut rig = Rig::start(None);
        let ds = daemonset("crash");
        let key = pod_key(&ds);
        send(
            &rig.node,
            list(vec![node(serde_json::json!({"role": "worker"}))]),
        );
        send(&rig.daemonsets, list(vec![ds]));
        rig.until("running", |r| r.running().len() == 1).await;
        tokio::time::advance(Duration::from_millis(1_500)).await;
        rig.rt.exit(&container_of(&key, 0), 1).await;
        rig.until("restarted", |r| r.rt.run_ids().len() == 2).await;
        let runs = rig.rt.runs.lock().unwrap().clone();
        assert_eq!(runs[1], (container_of(&key, 1), BASE_MS + 1_500));

        tokio::time::advance(Duration::from_millis(500)).await;
        rig.rt.exit(&container_of(&key, 1), 1).await;
        rig.until("restarted again", |r| r.rt.run_ids().len() == 3)
            .await;
        let runs = rig.rt.runs.lock().unwrap().clone();
        assert_eq!(runs[2], (container_of(&key, 2), BASE_MS + 1_500 + 10_000));
    }

    /// Offline: the cached DaemonSets and Node run the pods before any list, and no API pod is
    /// judged an orphan; the first complete list then replaces the cache (the DaemonSet was
    /// deleted meanwhile) and the cache written is what the API said.
    #[tokio::test(start_paused = true)]
    async fn an_offline_start_runs_from_the_cache_until_the_first_list() {
        let ds = daemonset("offline");
        let key = pod_key(&ds);
        let cached = watch::Cached {
            node: Some(node(serde_json::json!({"role": "worker"}))),
            daemonsets: [("default/offline".to_string(), ds)].into_iter().collect(),
        };
        let mut rig = Rig::start(Some(cached));
        rig.until("the cached pod running", |r| !r.running().is_empty())
            .await;
        assert_eq!(rig.running(), [container_of(&key, 0)]);
        assert!(!rig.store.synced());
        assert!(
            !watch::cache_path(rig.dir.path()).exists(),
            "no list: the cache stays"
        );

        send(
            &rig.node,
            list(vec![node(serde_json::json!({"role": "worker"}))]),
        );
        send(&rig.daemonsets, list(vec![]));
        send(&rig.pods, list(vec![]));
        rig.until("the pod gone with its DaemonSet", |r| {
            r.rt.containers.lock().unwrap().is_empty()
        })
        .await;
        assert!(rig.store.synced());
        assert!(rig.orphans().is_empty());
        rig.until("the cache written", |r| {
            watch::load_cache(r.dir.path()).is_some_and(|c| c.daemonsets.is_empty())
        })
        .await;
    }

    /// Pods the API binds to this node for a DaemonSet, with no worker: deleted through podsync,
    /// once the API state is complete. A pod of ours and a pod without a DaemonSet are left.
    #[tokio::test(start_paused = true)]
    async fn orphaned_api_pods_are_deleted() {
        let mut rig = Rig::start(None);
        let ds = daemonset("mine");
        let key = pod_key(&ds);
        let api_pod = |name: &str, owner: Option<&str>| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": name, "namespace": "default",
                    "ownerReferences": owner.map(|o| vec![serde_json::json!({
                        "apiVersion": "apps/v1", "kind": o, "name": "x", "uid": "u"
                    })]),
                },
                "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "i"}]}
            }))
            .unwrap()
        };
        send(
            &rig.node,
            list(vec![node(serde_json::json!({"role": "worker"}))]),
        );
        send(&rig.daemonsets, list(vec![ds]));
        rig.until("ours running", |r| !r.running().is_empty()).await;
        send(
            &rig.pods,
            list(vec![
                api_pod(&key.name, Some("DaemonSet")),
                api_pod("left-behind-abcde", Some("DaemonSet")),
                api_pod("static", None),
                api_pod("replica", Some("ReplicaSet")),
            ]),
        );
        rig.until("an orphan sent", |r| !r.orphans().is_empty())
            .await;
        assert_eq!(
            rig.orphans(),
            [PodKey {
                namespace: "default".into(),
                name: "left-behind-abcde".into()
            }]
        );
        assert_eq!(
            rig.now_ms(),
            BASE_MS,
            "decided on the list, not on a resync"
        );
    }
}
